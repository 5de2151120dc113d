"""atheris harness for the compress target of fuzz/targets.py: python fuzz/atheris_compress.py -max_total_time=600"""
from atheris_run import main

if __name__ == "__main__":
    main("compress")
