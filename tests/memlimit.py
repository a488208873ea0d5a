"""Run a command under a hard memory limit: a memory cgroup of its own (v2 or v1), created below this
process's cgroup and removed afterwards. Page cache counts towards the limit but is reclaimed before
anything is killed, so only resident memory the command cannot give back makes it fail."""

from __future__ import annotations

import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import child_stages_env

V2_ROOT = Path("/sys/fs/cgroup")
V1_ROOT = Path("/sys/fs/cgroup/memory")


@dataclass(frozen=True)
class LimitedRun:
    returncode: int
    stdout: str
    stderr: str
    oom_killed: bool
    peak_bytes: int  # as the cgroup counts it (resident + page cache)


def _own_cgroup(controller: str) -> str | None:
    """This process's cgroup path for a v1 ``controller``, or the v2 one for ``""``."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if (controller in controllers.split(",")) if controller else controllers == "":
            return path
    return None


def _create(limit: int) -> tuple[Path, str]:
    """(cgroup folder, 'v1' | 'v2'); raises OSError (the caller skips) where none can be made."""
    controllers = V2_ROOT / "cgroup.controllers"
    if controllers.is_file() and "memory" in controllers.read_text().split():
        folder = V2_ROOT / (_own_cgroup("") or "/").lstrip("/") / f"ddpm-test-{uuid.uuid4().hex[:8]}"
        folder.mkdir()
        (folder / "memory.max").write_text(str(limit))
        if (folder / "memory.swap.max").exists():
            (folder / "memory.swap.max").write_text("0")
        return folder, "v2"
    own = _own_cgroup("memory")
    if own is None or not V1_ROOT.is_dir():
        raise OSError("no memory cgroup controller")
    folder = V1_ROOT / own.lstrip("/") / f"ddpm-test-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    (folder / "memory.limit_in_bytes").write_text(str(limit))
    if (folder / "memory.memsw.limit_in_bytes").exists():
        (folder / "memory.memsw.limit_in_bytes").write_text(str(limit))
    return folder, "v1"


def available() -> str | None:
    """None where a limited cgroup can be made here, else why not (for a skip reason)."""
    try:
        folder, _ = _create(1 << 30)
    except OSError as exc:
        return f"cannot create a memory cgroup here ({exc}); needs root and a cgroup memory controller"
    folder.rmdir()
    return None


def run_limited(cmd: list[str], limit_bytes: int, cwd: str | Path | None = None, timeout: float = 900) -> LimitedRun:
    folder, version = _create(limit_bytes)
    try:
        wrapped = ["sh", "-c", f'echo $$ > {folder / "cgroup.procs"} && exec "$@"', "sh", *cmd]
        proc = subprocess.run(wrapped, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=child_stages_env())  # a limit is about what each stage's process holds
        if version == "v2":
            events = dict(line.split() for line in (folder / "memory.events").read_text().splitlines())
            oom, peak_file = int(events.get("oom_kill", 0)) > 0, folder / "memory.peak"
        else:
            control = dict(line.split() for line in (folder / "memory.oom_control").read_text().splitlines())
            oom, peak_file = int(control.get("oom_kill", 0)) > 0, folder / "memory.max_usage_in_bytes"
        peak = int(peak_file.read_text()) if peak_file.exists() else -1
        return LimitedRun(proc.returncode, proc.stdout, proc.stderr, oom or proc.returncode == -9, peak)
    finally:
        for _ in range(50):
            try:
                folder.rmdir()
                break
            except OSError:  # processes still leaving
                time.sleep(0.1)
