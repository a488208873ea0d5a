"""Loopback helpers for tests of servers: a free port, and what is listening (read from /proc/net)."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(pid: int | None = None) -> list[str]:
    """``address:port`` of every listening TCP socket in this network namespace, or only those of ``pid``."""
    inodes = None
    if pid is not None:
        inodes = set()
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd) if fd.is_symlink() else ""
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or (inodes is not None and fields[9] not in inodes):  # 0A: LISTEN
                continue
            hexaddr, hexport = fields[1].split(":")
            raw = bytes.fromhex(hexaddr)
            words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # per 32-bit word, host order
            address = socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, words)
            found.append(f"{address}:{int(hexport, 16)}")
    return found
