"""atheris harness for the disk target of fuzz/targets.py: python fuzz/atheris_disk.py -max_total_time=600"""
from atheris_run import main

if __name__ == "__main__":
    main("disk")
