"""The request-body limit, enforced in Ray Serve's HTTP proxy, where a body first arrives.

Ray Serve's proxy reads whatever a client sends into its own queue, and the ingress replica fetches
that queue in the background, both unbounded: a limit checked only in the ingress answers 413 but lets
the whole body through both processes' memory first. So the limit runs as an ASGI middleware inside
the proxy (Ray's ``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`` hook, set by ``python -m serve`` before
Ray starts): a declared length above it is refused before any body is read; otherwise at most the limit
is held, then either replayed to Ray (the body fits) or answered 413 with the rest never read (the
server closes the connection under the client).
"""

from __future__ import annotations

import os

from starlette.middleware import Middleware

CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
CALLBACK = "serve.limits:proxy_middlewares"
LIMIT_ENV = "DDPM_DEPLOY_MAX_BODY_BYTES"


def message(limit: int) -> str:
    return f"the request body exceeds {limit} bytes, the most this service reads"


class BodyLimit:
    """Pure ASGI middleware: bodies above ``limit`` bytes get 413 and one line; the rest pass unchanged."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def _refuse(self, send) -> None:
        body = (message(self.limit) + "\n").encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(send)
        chunks, size, more = [], 0, True
        while more:
            event = await receive()
            if event["type"] != "http.request":  # the client went away
                return await self.app(scope, _replay([event]), send)
            size += len(event.get("body", b""))
            if size > self.limit:
                return await self._refuse(send)
            chunks.append(event.get("body", b""))
            more = event.get("more_body", False)
        return await self.app(scope, _replay([{"type": "http.request", "body": b"".join(chunks), "more_body": False}], receive),
                              send)


def _replay(events, then=None):
    """An ASGI receive that gives ``events`` first, then defers to ``then`` (disconnect notices)."""
    pending = list(events)

    async def receive():
        if pending:
            return pending.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive


def proxy_middlewares() -> list[Middleware]:
    """Ray Serve calls this in each HTTP proxy (see CALLBACK_ENV)."""
    limit = os.environ.get(LIMIT_ENV, "")
    return [Middleware(BodyLimit, limit=int(limit))] if limit.isdigit() else []
