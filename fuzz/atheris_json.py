"""atheris harness for the json target of fuzz/targets.py: python fuzz/atheris_json.py -max_total_time=600"""
from atheris_run import main

if __name__ == "__main__":
    main("json")
