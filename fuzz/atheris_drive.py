"""atheris harness for the drive target of fuzz/targets.py: python fuzz/atheris_drive.py -max_total_time=600"""
from atheris_run import main

if __name__ == "__main__":
    main("drive")
