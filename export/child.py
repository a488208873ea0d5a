"""Run one memory-heavy export stage in a child process, so that everything it held goes back to the OS
when it ends: the next stage's peak then does not add to this one's."""

from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from runtime.cli import setup_logging
from runtime.errors import DeployError


def call_in_child(what: str, fn, *args):
    """``fn(*args)`` in a fresh (spawned) interpreter; its exceptions are raised here. ``fn``, its arguments
    and its result must pickle. ``what`` names the stage in the error if the child dies (e.g. OOM-killed)."""
    verbose = logging.getLogger("export").isEnabledFor(logging.DEBUG)
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            return pool.submit(_run, verbose, fn, args).result()
        except BrokenProcessPool:
            raise DeployError(f"the process running {what} died (out of memory?); free memory and run it again") from None


def _run(verbose: bool, fn, args):
    setup_logging(verbose)
    return fn(*args)
