"""atheris harness for the qcow2 target of fuzz/targets.py: python fuzz/atheris_qcow2.py -max_total_time=600"""
from atheris_run import main

if __name__ == "__main__":
    main("qcow2")
