"""Pure ASGI middleware: a cap on request bodies, request metrics, and arrival tickets.

The body cap keeps an oversized upload from being read at all: a `Content-Length` over
the cap is answered 413 before the app runs, and a body without one (chunked) is
counted as it arrives and cut off at the cap. The form parser would otherwise spool any
size to a temporary file before the handler's own size check ever ran. Both answers
close the connection, so the rest of the body is never read. A body that takes longer
than its deadline to arrive (a slow client holding a request thread) is answered 408.
"""

from __future__ import annotations

import asyncio
import time

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mondrian.service.errors import error_body
from mondrian.service.metrics import ServiceMetrics


class BodyTooLarge(HTTPException):
    """An HTTPException so that FastAPI's body parsing re-raises it as is (it turns any
    other exception there into a 400), and the HTTP error handler answers it."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            status_code=413,
            detail=f"over the limit of {limit} bytes",
            headers={"Connection": "close"},
        )


class BodyTooSlow(HTTPException):
    def __init__(self, seconds: float) -> None:
        super().__init__(
            status_code=408,
            detail=f"the request body did not arrive within {seconds:g} s",
            headers={"Connection": "close"},
        )


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _content_length(scope)
        if length is not None and length > self.max_bytes:
            response = JSONResponse(
                error_body(
                    "file_too_large",
                    f"the request body is {length} bytes; the limit is {self.max_bytes}",
                ),
                status_code=413,
                headers={"Connection": "close"},
            )
            await response(scope, receive, send)
            return
        received = 0
        deadline: float | None = None

        async def limited() -> Message:
            nonlocal received, deadline
            if self.timeout_s is None:
                message = await receive()
            else:
                # The whole body has one deadline, counted from the app's first read: a
                # client trickling a byte a second gets no longer than a stalled one.
                loop = asyncio.get_running_loop()
                deadline = deadline or loop.time() + self.timeout_s
                try:
                    async with asyncio.timeout_at(deadline):
                        message = await receive()
                except TimeoutError:
                    raise BodyTooSlow(self.timeout_s) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


# Methods a label may name; any other (a client may send any token) is counted as "other",
# so invented methods cannot grow the series without bound.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


def metric_method(method: str) -> str:
    return method if method in KNOWN_METHODS else "other"


class RequestMetrics:
    """Counts every answered request and times it, labelled by the route template."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app dies before it answers

        async def tracking(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        finally:
            route = scope.get("route")
            # Templates, not paths: '/jobs/{job_id}', so ids never become label values.
            name = getattr(route, "path", None) or "unmatched"
            method = metric_method(scope.get("method", ""))
            self.metrics.requests.labels(name, method, str(status)).inc()
            self.metrics.request_seconds.labels(name, method).observe(time.perf_counter() - started)


class Arrivals:
    """Takes the worker's Arrival ticket for each POST that can become a job, before its
    upload is read (the form is parsed before any endpoint runs), and closes it when the
    request ends; the job's start closes it sooner. A batch being filled waits for open
    tickets, so a burst of uploads lands in one batch (service/worker.py)."""

    PATHS = ("/analyze", "/jobs")

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        running = getattr(scope.get("app"), "state", None)
        worker = getattr(getattr(running, "mondrian", None), "worker", None)
        if (
            scope["type"] != "http"
            or scope.get("method") != "POST"
            or scope.get("path") not in self.PATHS
            or worker is None
        ):
            await self.app(scope, receive, send)
            return
        arrival = worker.arrival()
        scope.setdefault("state", {})["arrival"] = arrival
        try:
            await self.app(scope, receive, send)
        finally:
            arrival.close()
