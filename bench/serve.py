"""``python -m bench.serve``: the service under a Poisson load, step-level batching against one request at a time.

Runs itself inside a loopback-only network namespace (serve.netns), starts a local Ray instance with two
applications on the same engine (the shipped demo model unless --engine): ``/`` batching up to 8 rows
per UNet call, ``/serial`` with max_batch 1 (each request alone, as a plain per-request service would),
and sends the very same seeded stream to each, one after the other (bench.load). Writes
``docs/bench-serve.md`` and ``.png``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from runtime.cli import require, run

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="bench.serve", description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", default=str(ROOT / "build" / "demo" / "engines" / "unet.onnx"))
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench-serve"))
    args = ap.parse_args(argv)
    require("bench.serve", {"ray": "serve", "httpx": "serve", "matplotlib": "bench"})
    from serve import netns

    if os.environ.get(netns.ENV_FLAG) != "1":
        why = netns.available()
        if why:
            raise SystemExit(f"bench.serve: {why}; it runs the service in a loopback-only network namespace")
        return subprocess.call(netns.wrap([sys.executable, "-m", "bench.serve", *sys.argv[1:]]), cwd=ROOT)
    from serve.__main__ import start
    from serve.config import ServiceConfig

    from .load import main as load_main

    batched = ServiceConfig(engine=args.engine, max_batch=8, max_queue=256, port=8000, metrics_port=8080, timeout_s=300)
    serial = ServiceConfig(**{**batched.to_dict(), "max_batch": 1, "max_count": 1})
    url = start(batched, num_cpus=2)
    start(serial, name="serial", route_prefix="/serial")
    return load_main(["--url", url, "--compare-url", f"{url}/serial", "--rate", str(args.rate), "--requests", str(args.requests),
                      "--duration", str(args.duration), "--label", f"demo model ({Path(args.engine).name}), 2 CPUs",
                      "--out", args.out])


if __name__ == "__main__":
    sys.exit(run(main, "bench.serve"))
