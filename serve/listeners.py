"""What the service listens on: every listening TCP socket in this network namespace, with its process and what
it carries (``python -m serve --listeners`` prints the table; tests/serve checks it).

Ray listens on all interfaces whatever it is told (its GCS, raylet, agents, every worker's gRPC server), and every
Ray Serve replica opens an inter-deployment gRPC server on ``[::]`` that takes handle calls (guarded by Ray's token
authentication, on by default for a local Ray since 2.58; ray-project/ray#59908). ``python -m serve`` therefore runs
Ray in a network namespace of its own and forwards only the ingress (serve/forward.py).
"""

from __future__ import annotations

import re

import psutil

# (a substring of the process's name or command line, what its listeners carry), first match wins
CARRIES = (
    ("ServeReplica:", "Serve replica: core worker gRPC (actor calls)"),
    ("ProxyActor", "Serve HTTP proxy: core worker gRPC"),
    ("ServeController", "Serve controller: core worker gRPC"),
    ("gcs_server", "GCS: cluster metadata, actor and job control (gRPC)"),
    ("raylet", "raylet: node manager and object transfer (gRPC)"),
    ("DashboardAgent", "dashboard agent: HTTP, gRPC, metrics export"),
    ("RuntimeEnvAgent", "runtime-env agent (HTTP, gRPC)"),
    ("dashboard.py", "dashboard (HTTP)"),
    ("log_monitor", "log monitor"),
    ("monitor.py", "autoscaler monitor"),
    ("ray::", "Ray core worker gRPC (task and actor calls)"),
    ("default_worker.py", "Ray core worker gRPC (task and actor calls)"),
    ("-m serve", "python -m serve, the Ray driver: core worker gRPC"),
)
INTER_DEPLOYMENT = "Serve replica: inter-deployment gRPC (handle calls, pickled arguments; Ray's token authentication)"
FORWARDED = "the HTTP ingress, forwarded into the service's own network namespace"
INGRESS = "Serve HTTP proxy: the HTTP ingress (the service's API)"


def _describe(pid: int | None) -> tuple[str, str]:
    try:
        proc = psutil.Process(pid)
        name = proc.name()
        cmdline = " ".join(proc.cmdline())
    except (psutil.Error, TypeError):
        return "?", "unknown"
    shown = name if name.startswith("ray::") or not cmdline else re.sub(r"\S*/(site-packages|bin)/", "", cmdline)[:90]
    for marker, carries in CARRIES:
        if marker in name or marker in cmdline:
            return shown, carries
    return shown, "unknown"


def table(ingress_port: int | None = None, driver_pid: int | None = None) -> list[dict]:
    """Every listening TCP socket here: pid, process, address, port, carries. ``ingress_port``: the service's HTTP
    port (a ``python -m serve`` listening there forwards it); ``driver_pid``: a process that runs Ray's driver."""
    rows = []
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status != psutil.CONN_LISTEN:
            continue
        process, carries = _describe(conn.pid)
        if conn.laddr.port == ingress_port:
            carries = FORWARDED if "-m serve" in process else INGRESS
        elif conn.pid == driver_pid:
            carries = "the Ray driver: core worker gRPC"
        elif carries.startswith("Serve replica") and conn.laddr.ip in ("::", "0.0.0.0"):
            carries = INTER_DEPLOYMENT  # ray/serve/_private/replica.py: add_port_to_grpc_server(server, "[::]:0")
        rows.append({"pid": conn.pid, "process": process, "address": conn.laddr.ip, "port": conn.laddr.port, "carries": carries})
    return sorted(rows, key=lambda r: (r["carries"], r["port"]))


def markdown(rows: list[dict]) -> str:
    lines = ["| process | address | port | carries |", "|---|---|---|---|"]
    lines += [f"| {r['process']} | {r['address']} | {r['port']} | {r['carries']} |" for r in rows]
    return "\n".join(lines)


def exposed(rows: list[dict]) -> list[dict]:
    """The listeners another machine could reach: not bound to a loopback address."""
    return [r for r in rows if r["address"] not in ("127.0.0.1", "::1") and not r["address"].startswith("127.")]
