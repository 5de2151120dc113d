"""atheris harness for the mbr target of fuzz/targets.py: python fuzz/atheris_mbr.py -max_total_time=600"""
from atheris_run import main

if __name__ == "__main__":
    main("mbr")
