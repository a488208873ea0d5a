"""Commands in a network namespace of their own with only loopback up (Linux, as root: ``unshare -n``),
and a PID namespace, so that nothing they start outlives them.

Ray listens on all interfaces and on the machine's outward address whatever it is told; inside such a
namespace the only interface is loopback, so nothing it opens can be reached from outside, and
nothing inside can reach out.
"""

from __future__ import annotations

import os
import shutil
import subprocess

ENV_FLAG = "DDPM_DEPLOY_NETNS"  # set inside: a command need not wrap itself twice


def _unshare() -> list[str]:
    # -p -f: a PID namespace too, whose first process is cmd: when it exits, everything it started (Ray's
    # daemons included) is killed with it; --mount-proc: /proc shows that namespace (Ray looks itself up there);
    # -r (not root): a user namespace of its own, where this user is root
    return ["unshare", *([] if os.geteuid() == 0 else ["-r"]), "-n", "-p", "-f", "--mount-proc"]


def available() -> str | None:
    """None where namespaces can be made here (as root, or in a user namespace), else why not."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare and ip (util-linux, iproute2) are needed"
    r = subprocess.run([*_unshare(), "true"], capture_output=True, text=True)
    return None if r.returncode == 0 else f"cannot create a network namespace here ({r.stderr.strip() or 'not permitted'})"


def isolate(cmd: list[str]) -> list[str]:
    """``cmd`` run in a new loopback-only network namespace (and PID namespace), always."""
    return [*_unshare(), "--kill-child", "sh", "-c", f'ip link set lo up && {ENV_FLAG}=1 exec "$@"', "sh", *cmd]


def wrap(cmd: list[str]) -> list[str]:
    """``cmd`` run in a new loopback-only network namespace (a no-op inside one already)."""
    return list(cmd) if os.environ.get(ENV_FLAG) == "1" else isolate(cmd)
