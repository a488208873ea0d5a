"""A TCP or Unix-socket forwarder (asyncio): how the ingress reaches out of the service's network namespace.

``python -m serve`` runs Ray in a namespace with nothing but loopback and forwards one port: outside, a TCP
listener on ``--host:--port`` → a Unix socket in a private folder (filesystem paths cross network namespaces) →
inside, a listener on that socket → the HTTP proxy on 127.0.0.1:port. Nothing else Ray opens can be reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable

log = logging.getLogger("ddpm_deploy.serve")
Connect = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]
CHUNK = 64 << 10


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


def handler(connect: Connect):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await connect()
        except OSError as exc:
            log.warning("the ingress inside the service's namespace does not answer (%s)", exc)
            writer.close()
            return
        await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
        for w in (writer, upstream_writer):
            with contextlib.suppress(OSError):
                w.close()
    return handle


def to_tcp(host: str, port: int) -> Connect:
    return lambda: asyncio.open_connection(host, port)


def to_unix(path: str) -> Connect:
    return lambda: asyncio.open_unix_connection(path)


class Forwarder:
    """Listens (``tcp=(host, port)`` or ``unix=path``) in a thread of its own and forwards each connection."""

    def __init__(self, connect: Connect, tcp: tuple[str, int] | None = None, unix: str | None = None):
        self.connect, self.tcp, self.unix = connect, tcp, unix
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="ingress-forwarder", daemon=True)

    def start(self) -> Forwarder:
        self.thread.start()
        self.ready.wait()
        if self.error is not None:
            raise self.error
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            if self.tcp is not None:
                server = self.loop.run_until_complete(asyncio.start_server(handler(self.connect), *self.tcp))
            else:
                server = self.loop.run_until_complete(asyncio.start_unix_server(handler(self.connect), self.unix))
        except OSError as exc:
            self.error = exc
            self.ready.set()
            return
        self.ready.set()
        try:
            self.loop.run_forever()
        finally:
            server.close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
