"""Run one memory-heavy export stage in a child process, so that everything it held goes back to the OS
when it ends: the next stage's peak then does not add to this one's.

``DDPM_DEPLOY_STAGES_IN_PROCESS=1`` runs the stages in the calling process instead (arguments and result still
pickled, the working folder restored): no fresh interpreter per stage (about 3 s each, importing torch), but
every stage's memory stays with the caller. The test suite sets it (tests/conftest.py); its tests of memory
limits and killed exports run the real child processes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import pickle
import signal
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from runtime.cli import setup_logging
from runtime.errors import DeployError

PR_SET_PDEATHSIG = 1
IN_PROCESS_ENV = "DDPM_DEPLOY_STAGES_IN_PROCESS"


def call_in_child(what: str, fn, *args):
    """``fn(*args)`` in a fresh (spawned) interpreter; its exceptions are raised here. ``fn``, its arguments
    and its result must pickle. ``what`` names the stage in the error if the child dies (e.g. OOM-killed)."""
    if os.environ.get(IN_PROCESS_ENV) == "1":
        return _in_process(fn, args)
    verbose = logging.getLogger("export").isEnabledFor(logging.DEBUG)
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            return pool.submit(_run, os.getpid(), verbose, fn, args).result()
        except BrokenProcessPool:
            raise DeployError(f"the process running {what} died (out of memory?); free memory and run it again") from None


def _in_process(fn, args):
    """``fn(*args)`` here, under the child's contract: what crosses goes through pickle, the working folder stays."""
    cwd = os.getcwd()
    fn, args = pickle.loads(pickle.dumps((fn, args)))
    try:
        return pickle.loads(pickle.dumps(fn(*args)))
    finally:
        os.chdir(cwd)


def _run(parent: int, verbose: bool, fn, args):
    _die_with(parent)
    setup_logging(verbose)
    return fn(*args)


def _die_with(parent: int) -> None:
    """Linux: this process gets SIGKILL when its parent dies (a killed export leaves no stage running on)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError, TypeError):  # not Linux/glibc: the stage ends on its own
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)
