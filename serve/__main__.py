"""``python -m serve``: start the image service (Ray Serve) and block until SIGINT/SIGTERM, then drain it
(new requests get 503, those in flight up to ``shutdown_grace_s`` to finish) and stop.

    python -m serve config [--config serve.json] [--engine ...] --out deploy/   (serve/deploy.py)
    python -m serve [--config serve.json] [--engine engines/unet.onnx] [--host 127.0.0.1] [--port 8000]
                    [--address auto] [--node-ip 127.0.0.1] [--pid-file build/serve.pid]

Without --address a local Ray instance is started on this machine; with ``--address auto`` (or a
head's address) the service joins a running cluster (``ray start`` on each node). The HTTP ingress
binds 127.0.0.1 unless --host says otherwise; Ray's node address is passed explicitly, its dashboard
is off and its usage statistics are off (RAY_USAGE_STATS_ENABLED=0).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from runtime.cli import ArgumentParser, run, setup_logging
from runtime.errors import BackendUnavailableError

from .config import ServiceConfig

PROG = "serve"
log = logging.getLogger(PROG)


def start(config: ServiceConfig, address: str | None = None, node_ip: str = "127.0.0.1", num_cpus: int | None = None,
          name: str = "ddpm", route_prefix: str = "/") -> str:
    """Starts (or joins) Ray, then Serve and the application; returns the service's URL."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # Ray would report usage to the internet
    try:
        import ray
        from ray import serve
    except ImportError:
        raise BackendUnavailableError("Ray Serve is not installed: pip install 'ddpm-deploy[cpu,serve]' (or make serve-deps)") from None
    from .app import build_app
    from .application import prepare, proxy_env

    prepared = prepare(config)
    # The body limit runs in Ray's HTTP proxies (serve/limits.py); they take it from the environment Ray starts with.
    os.environ.update(proxy_env(prepared))
    if not ray.is_initialized():  # else: the caller connected (a test's cluster, a notebook)
        kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=True, logging_level=logging.WARNING)
        if address is None:
            # "local": a new instance, never one a previous run left behind (/tmp/ray names the last one)
            ray.init(address="local", _node_ip_address=node_ip, num_cpus=num_cpus, _metrics_export_port=config.metrics_port,
                     **kwargs)
        else:
            ray.init(address=address, _node_ip_address=node_ip, **kwargs)
    serve.start(http_options={"host": config.host, "port": config.port}, logging_config={"log_level": "WARNING"})
    serve.run(build_app(prepared, name), name=name, route_prefix=route_prefix)
    log.info("%s: %s, request bodies up to %d bytes", name,
             f"{len(prepared.key_digests)} API key(s)" if prepared.key_digests else "no API keys (open)", prepared.body_limit)
    return public_url(config, route_prefix)


def public_url(config: ServiceConfig, route_prefix: str = "/") -> str:
    """Where a client on this machine reaches the service (a wildcard host through 127.0.0.1)."""
    host = "127.0.0.1" if config.host in ("0.0.0.0", "::") else config.host
    return f"http://{host}:{config.port}{route_prefix.rstrip('/')}"


@contextlib.contextmanager
def serving(args, url: str, line: str | None):
    """While the service serves: SIGINT/SIGTERM set the yielded event; the pid file (--pid-file), the line on stdout
    and the ready file (--ready-file, holding ``url``) are written, the files removed afterwards."""
    from runtime.atomic import atomic_write_bytes

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    files = [Path(f) for f in (args.pid_file, args.ready_file) if f]
    try:
        if args.pid_file:
            Path(args.pid_file).parent.mkdir(parents=True, exist_ok=True)
            Path(args.pid_file).write_text(f"{os.getpid()}\n")
        if line is not None:
            print(line, flush=True)
        if args.ready_file:
            atomic_write_bytes(args.ready_file, f"{url}\n".encode())
        yield stop
    finally:
        for done in files:
            done.unlink(missing_ok=True)


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=None, help="a JSON service config (serve/config.py: engine, replicas, limits, ...)")
    p.add_argument("--engine", default=None, help="the engine file, or an engines folder (overrides the config's)")
    p.add_argument("--host", default=None, help="HTTP address (default 127.0.0.1; 0.0.0.0 opens it to the network)")
    p.add_argument("--port", type=int, default=None, help="HTTP port (default 8000)")
    p.add_argument("--address", default=None, help="a running Ray cluster (auto, or HEAD:6379); default: start one here")
    p.add_argument("--node-ip", default="127.0.0.1", help="this node's address for Ray (default 127.0.0.1)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray instance (default: all)")
    p.add_argument("--pid-file", default=None, help="write this process's id here while it serves (make serve-stop)")
    p.add_argument("--ready-file", default=None, help="write the service's URL here once it serves (make serve waits for it)")
    p.add_argument("--expose-ray", action="store_true",
                   help="run Ray in this network namespace (its ports listen on every interface; see README: Ray's ports); "
                        "default: a namespace of its own with only the ingress forwarded")
    p.add_argument("--forward-from", default=None, help=argparse.SUPPRESS)  # inside the namespace: the ingress socket
    p.add_argument("-v", "--verbose", action="store_true")
    return p


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def isolated(args, argv: list[str], config: ServiceConfig) -> int:
    """Ray and the service in a network namespace of their own (serve/netns.py), the ingress forwarded to
    --host:--port (serve/forward.py): nothing else Ray opens can be reached. Returns the service's exit status."""
    import subprocess
    import tempfile

    import psutil

    from runtime.errors import InputError

    from . import netns
    from .forward import Forwarder, to_unix

    private = Path(tempfile.mkdtemp(prefix="ddpm-serve-"))
    socket_path, inner_ready = private / "ingress.sock", private / "ready"
    inner = [sys.executable, "-m", "serve", *strip_options(argv, ("--pid-file", "--ready-file", "--host")),
             "--host", "127.0.0.1", "--forward-from", str(socket_path), "--ready-file", str(inner_ready)]
    child = subprocess.Popen(netns.isolate(inner))
    while not inner_ready.exists() and child.poll() is None:
        time.sleep(0.2)
    if child.poll() is not None:
        return child.returncode
    try:
        forwarder = Forwarder(to_unix(str(socket_path)), tcp=(config.host, config.port)).start()
    except OSError as exc:
        child.terminate()
        child.wait()
        raise InputError(f"cannot listen on {config.host}:{config.port} ({exc.strerror}); choose another --port") from None
    url = public_url(config)
    line = (f"serving {config.engine} at {url}/v1/images (health: {url}/healthz); Ray runs in a network namespace of its "
            f"own, only {config.host}:{config.port} is reachable; stop with Ctrl-C")
    try:
        with serving(args, url, line) as stop:
            while not stop.wait(0.5) and child.poll() is None:
                pass
            if child.poll() is None:  # the service inside drains (its own SIGTERM handling) while this one forwards
                for proc in psutil.Process(child.pid).children(recursive=True):
                    try:
                        if "--forward-from" in proc.cmdline():
                            proc.send_signal(signal.SIGTERM)
                    except psutil.Error:  # gone meanwhile
                        pass
            return child.wait()
    finally:
        forwarder.stop()
        socket_path.unlink(missing_ok=True)
        inner_ready.unlink(missing_ok=True)
        private.rmdir()


def strip_options(argv: list[str], names: tuple[str, ...]) -> list[str]:
    """``argv`` without the options ``names`` and their values (``--name value`` or ``--name=value``)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in names:
            skip = True
        elif not arg.startswith(tuple(f"{n}=" for n in names)):
            out.append(arg)
    return out


def config_parser() -> ArgumentParser:
    p = ArgumentParser(prog=f"{PROG} config", description="write the Serve config file, the node environment and a "
                       "KubeRay RayService (with a NetworkPolicy) from a service config (serve/deploy.py)")
    p.add_argument("--config", default=None, help="a JSON service config (serve/config.py)")
    p.add_argument("--engine", default=None, help="the engine file, or an engines folder (overrides the config's)")
    p.add_argument("--host", default=None, help="HTTP address in serve_config.yaml (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="HTTP port in serve_config.yaml (default 8000)")
    p.add_argument("--out", required=True, help="folder for serve_config.yaml, serve.env, kubernetes/rayservice.yaml")
    p.add_argument("--name", default="ddpm", help="the application's and the RayService's name (default ddpm)")
    p.add_argument("--image", default="ddpm-deploy:0.1.0", help="the container image (the wheel with [cpu,serve])")
    p.add_argument("--engines-claim", default="ddpm-engines", help="the PersistentVolumeClaim holding the engines folder")
    p.add_argument("--api-keys-secret", default="ddpm-api-keys", help="the Secret whose key `keys` holds the API keys "
                   "(comma-separated); 'none': an open service")
    p.add_argument("--operator-namespace", default="ray-system", help="the KubeRay operator's namespace (it reaches the "
                   "head's dashboard port)")
    return p


def write_config(argv: list[str]) -> int:
    from . import deploy
    from .application import prepare

    args = config_parser().parse_args(argv)
    config = ServiceConfig.load(args.config, engine=args.engine, host=args.host, port=args.port)
    prepared = prepare(config)
    secret = None if args.api_keys_secret == "none" else args.api_keys_secret
    for path in deploy.write(prepared, args.out, name=args.name, image=args.image, engines_claim=args.engines_claim,
                             keys_secret=secret, operator_namespace=args.operator_namespace):
        print(path)
    # --address local: a new Ray here, not the one an earlier `ray start` left in /tmp/ray/ray_current_cluster
    print(f"run: env $(cat {Path(args.out) / 'serve.env'}) serve run --address local {Path(args.out) / 'serve_config.yaml'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["config"]:
        return write_config(argv[1:])
    if argv[:1] == ["listeners"]:  # every listening socket in this network namespace, its process and what it carries
        from .listeners import markdown, table

        port = int(argv[1]) if len(argv) > 1 and argv[1].isdigit() else None  # python -m serve listeners [INGRESS_PORT]
        print(markdown(table(port)))
        return 0
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    config = ServiceConfig.load(args.config, engine=args.engine, host=args.host, port=args.port)  # errors before any start
    if args.forward_from is None and not args.expose_ray and args.address is None:
        from . import netns

        why = netns.available()
        if why is None:
            return isolated(args, argv, config)
        if config.host not in LOOPBACK:
            from runtime.errors import InputError

            raise InputError(f"Ray cannot run in a network namespace of its own here ({why}), so its ports would be "
                             f"reachable from the network beside {config.host}:{config.port}; pass --expose-ray to serve "
                             "anyway (and firewall every Ray port but the ingress: README, Ray's ports), or --host 127.0.0.1")
        log.warning("Ray runs in this network namespace (%s): its ports listen on every interface; python -m serve "
                    "listeners prints them", why)
    url = start(config, args.address, args.node_ip, args.num_cpus)
    forwarder = None
    if args.forward_from:  # inside the namespace: the ingress, reachable through a Unix socket
        from .forward import Forwarder, to_tcp

        forwarder = Forwarder(to_tcp("127.0.0.1", config.port), unix=args.forward_from).start()
    elif args.expose_ray or config.host not in LOOPBACK:
        from .listeners import exposed, table

        for row in exposed(table(config.port, os.getpid())):
            log.warning("exposed: %s:%d (%s, %s)", row["address"], row["port"], row["process"], row["carries"])
    line = None if forwarder else f"serving {config.engine} at {url}/v1/images (health: {url}/healthz); stop with Ctrl-C"
    with serving(args, url, line) as stop:
        try:
            stop.wait()
            drained = drain(config.shutdown_grace_s)
            print(f"stopping: {drained}", flush=True)
        finally:
            from ray import serve

            serve.shutdown()
    return 0


def drain(grace_s: float, name: str = "ddpm") -> str:
    """New requests get 503 from now on; those in flight get up to ``grace_s`` seconds to finish."""
    from ray import serve

    try:
        ingress = serve.get_app_handle(name)
        ingress.drain.remote().result(timeout_s=10)
        deadline = time.monotonic() + grace_s
        while (left := ingress.requests_in_flight.remote().result(timeout_s=10)) and time.monotonic() < deadline:
            time.sleep(0.2)
    except Exception as exc:  # a dying cluster: stop anyway
        return f"could not drain ({type(exc).__name__}: {exc})"
    return f"{left} request(s) still in flight after {grace_s:g} s" if left else "no request in flight"


def cli() -> None:
    sys.exit(run(main, PROG))


if __name__ == "__main__":
    cli()
