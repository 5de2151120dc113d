"""atheris harness for the probe target of fuzz/targets.py: python fuzz/atheris_probe.py -max_total_time=600"""
from atheris_run import main

if __name__ == "__main__":
    main("probe")
