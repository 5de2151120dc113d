"""atheris harness for the pack target of fuzz/targets.py: python fuzz/atheris_pack.py -max_total_time=600"""
from atheris_run import main

if __name__ == "__main__":
    main("pack")
