"""``python -m bench.load``: an open-loop Poisson stream of mixed requests against the service, bounded.

    python -m bench.load --url http://127.0.0.1:8000 [--rate 2] [--requests 40] [--duration 120]
                         [--mix ddim:10,ddim:20,dpmpp-2m:10,dpmpp-2m:20,ddpm:30] [--seed 0]
                         [--compare-url URL] [--out docs/serve-load] [--label ...] [--jobs] [--api-key KEY]

Arrivals are exponential with mean 1/rate (seeded: two targets get the very same stream); each request
is a sampler:steps pair from --mix, in turn, with its own seed. Stops sending after --requests or
--duration seconds, whichever comes first, and waits for what was sent (at most --duration more).
With --jobs each request is a job (POST /v1/jobs, its event stream followed to the end, GET .../result, then
DELETE): the latency is to the result. Prints, per target: throughput, p50/p95/p99 latency, errors by status; with --out writes OUT.md (a
table) and OUT.png (latency over the run). Loopback only: refuses any host but 127.0.0.1 / localhost.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from runtime.cli import ArgumentParser, require, run, setup_logging
from runtime.errors import InputError

PROG = "bench.load"
LOOPBACK = ("127.0.0.1", "localhost")


@dataclass
class Result:
    label: str
    url: str
    sent: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # answered with 200
    finish_times: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    replicas: dict[str, int] = field(default_factory=dict)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) if self.latencies else float("nan")

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def summary(self) -> dict:
        return {"label": self.label, "sent": self.sent, "ok": len(self.latencies), "seconds": round(self.seconds, 3),
                "throughput_rps": round(self.throughput, 4), "p50_s": round(self.percentile(50), 4),
                "p95_s": round(self.percentile(95), 4), "p99_s": round(self.percentile(99), 4),
                "statuses": self.statuses, "replicas": self.replicas}


def parse_mix(text: str) -> list[tuple[str, int]]:
    try:
        return [(name, int(steps)) for name, steps in (part.split(":") for part in text.split(","))]
    except ValueError:
        raise InputError(f"--mix must look like ddim:10,dpmpp-2m:20, got {text!r}") from None


def schedule(rate: float, count: int, seed: int) -> np.ndarray:
    """Arrival times (seconds from the start) of a Poisson stream."""
    return np.cumsum(np.random.default_rng(seed).exponential(1.0 / rate, count))


async def run_job(client, url: str, body: dict, timeout: float):
    """One job: created, its server-sent events read until "done", its result fetched, then deleted."""
    r = await client.post(f"{url}/v1/jobs", content=json.dumps(body), timeout=timeout)
    if r.status_code != 202:
        return r
    job = f"{url}/v1/jobs/{r.json()['id']}"
    async with client.stream("GET", f"{job}/events", timeout=timeout) as events:
        async for line in events.aiter_lines():
            if line == "event: done":
                break
    r = await client.get(f"{job}/result", timeout=timeout)
    await client.delete(job, timeout=timeout)
    return r


async def run_stream(url: str, label: str, arrivals: np.ndarray, mix: list[tuple[str, int]], duration: float,
                     seed: int, timeout: float, jobs: bool = False, api_key: str | None = None) -> Result:
    import httpx

    result = Result(label, url)
    started = time.perf_counter()
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None

    async def one(client: httpx.AsyncClient, i: int) -> None:
        scheduler, steps = mix[i % len(mix)]
        body = {"seed": seed + i, "steps": steps, "scheduler": scheduler}
        t0 = time.perf_counter()
        try:
            if jobs:
                r = await run_job(client, url, body, timeout)
            else:
                r = await client.post(f"{url}/v1/images", content=json.dumps(body), timeout=timeout)
            status = str(r.status_code)
            if r.status_code == 200:
                result.latencies.append(time.perf_counter() - t0)
                result.finish_times.append(time.perf_counter() - started)
                replica = r.headers.get("x-replica", "?")
                result.replicas[replica] = result.replicas.get(replica, 0) + 1
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        result.statuses[status] = result.statuses.get(status, 0) + 1

    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=1000), headers=headers) as client:
        tasks = []
        for i, at in enumerate(arrivals):
            if at > duration:
                break
            delay = at - (time.perf_counter() - started)
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(client, i)))
        result.sent = len(tasks)
        await asyncio.gather(*tasks)
    result.seconds = time.perf_counter() - started
    return result


def write_report(results: list[Result], out: Path, args, machine: str) -> None:
    rows = [f"| {r.label} | {args.rate:g} | {r.sent} | {len(r.latencies)} | {r.throughput:.3f} | {r.percentile(50):.2f} | "
            f"{r.percentile(95):.2f} | {r.percentile(99):.2f} | {', '.join(f'{k}: {v}' for k, v in sorted(r.statuses.items()) if k != '200') or 'none'} |"
            for r in results]
    base = results[-1] if len(results) > 1 else None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join([
        f"# Service under load: {args.label or 'bench.load'}",
        "",
        f"Machine: {machine}. Stream: Poisson arrivals at {args.rate:g} req/s (seed {args.seed}), at most {args.requests} "
        f"requests or {args.duration:g} s, mix {args.mix}; every target got the same stream, one after another, in one run.",
        "",
        "| target | rate (req/s) | sent | ok | throughput (req/s) | p50 s | p95 s | p99 s | errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        *([f"Throughput vs {base.label}: " + ", ".join(f"{r.label} {r.throughput / base.throughput:.2f}x" for r in results[:-1]),
           ""] if base and base.throughput else []),
    ]))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for r in results:
        ax.plot(r.finish_times, r.latencies, "o", ms=3, label=r.label)
    ax.set(xlabel="seconds into the run (response time)", ylabel="latency s", title=f"Poisson {args.rate:g} req/s")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=100)


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True, help="the service, e.g. http://127.0.0.1:8000")
    p.add_argument("--compare-url", default=None, help="a second target for the same stream (e.g. one-at-a-time)")
    p.add_argument("--label", default=None)
    p.add_argument("--rate", type=float, default=2.0, help="requests per second (default 2)")
    p.add_argument("--requests", type=int, default=40, help="at most this many requests (default 40)")
    p.add_argument("--duration", type=float, default=120.0, help="stop sending after this many seconds (default 120)")
    p.add_argument("--mix", default="ddim:10,ddim:20,dpmpp-2m:10,dpmpp-2m:20,ddpm:30")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write OUT.md and OUT.png")
    p.add_argument("--jobs", action="store_true", help="send each request as a job (/v1/jobs) and follow it to its result")
    p.add_argument("--api-key", default=None, help="send Authorization: Bearer KEY")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def check_loopback(url: str) -> None:
    if urlparse(url).hostname not in LOOPBACK:
        raise InputError(f"{url}: bench.load talks to 127.0.0.1 only")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    require(PROG, {"httpx": "serve", **({"matplotlib": "bench"} if args.out else {})})
    setup_logging(args.verbose)
    targets = [(args.url, "batched (StepBatcher)" if args.compare_url else (args.label or args.url))]
    if args.compare_url:
        targets.append((args.compare_url, "one request at a time"))
    for url, _ in targets:
        check_loopback(url)
    if not (args.rate > 0 and args.requests >= 1 and args.duration > 0):
        raise InputError("--rate and --duration must be > 0, --requests >= 1")
    mix = parse_mix(args.mix)
    arrivals = schedule(args.rate, args.requests, args.seed)
    results = [asyncio.run(run_stream(url.rstrip("/"), label, arrivals, mix, args.duration, args.seed, timeout=args.duration * 2,
                                      jobs=args.jobs, api_key=args.api_key))
               for url, label in targets]
    for r in results:
        print(json.dumps(r.summary()))
    if args.out:
        from . import machine

        write_report(results, Path(args.out), args, machine.describe())
        print(f"wrote {Path(args.out).with_suffix('.md')} and .png")
    return 0


def cli() -> None:
    sys.exit(run(main, PROG))


if __name__ == "__main__":
    cli()
