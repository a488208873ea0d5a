"""Moved to ``bench/load.py``: ``python -m bench.load`` (this name keeps working from a checkout)."""

import runpy

if __name__ == "__main__":
    runpy.run_module("bench.load", run_name="__main__", alter_sys=True)
