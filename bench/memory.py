"""Peak memory of a command: the summed resident memory of its whole process tree, and wall time."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SAMPLE_SECONDS = 0.01


@dataclass(frozen=True)
class Measured:
    returncode: int
    seconds: float
    peak_tree_rss: int  # bytes: the largest sum of VmRSS over the process and its descendants, sampled
    peak_process_rss: int  # bytes: the largest VmHWM of any one process in the tree (kernel-exact)
    stderr: str

    @property
    def peak_rss(self) -> int:
        """What to report: a short spike between samples still shows in the per-process maximum."""
        return max(self.peak_tree_rss, self.peak_process_rss)


def _children(pid: int) -> list[int]:
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            out += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    except OSError:
        pass
    return out


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def run_measured(cmd: list[str], cwd: str | Path | None = None, env: dict | None = None) -> Measured:
    """Runs ``cmd`` to completion (stdout passes through, stderr is captured) and samples its process tree."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stderr=subprocess.PIPE, text=True)
    peak_tree, peak_process = 0, 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak_tree, peak_process
        while not stop.is_set():
            pids, i = [proc.pid], 0
            while i < len(pids):
                pids += _children(pids[i])
                i += 1
            peak_tree = max(peak_tree, sum(_status_kb(p, "VmRSS") for p in pids) * 1024)
            peak_process = max([peak_process] + [_status_kb(p, "VmHWM") * 1024 for p in pids])
            stop.wait(SAMPLE_SECONDS)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = proc.communicate()
    stop.set()
    sampler.join()
    return Measured(proc.returncode, time.perf_counter() - started, peak_tree, peak_process, stderr)
