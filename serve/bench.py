"""Moved to ``bench/serve.py``: ``python -m bench.serve`` (this name keeps working from a checkout)."""

import runpy

if __name__ == "__main__":
    runpy.run_module("bench.serve", run_name="__main__", alter_sys=True)
