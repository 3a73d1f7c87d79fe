"""Running the app under uvicorn with bounds on what one client can hold.

uvicorn's own options bound the total (`limit_concurrency`: more connections get 503),
idle kept-alive connections (`timeout_keep_alive`), the size of a request head
(`h11_max_incomplete_event_size`) and the shutdown (`timeout_graceful_shutdown`). Two
bounds it lacks are added by a subclass of its h11 protocol:

- a header deadline: a connection that has not sent a whole request head within
  `header_timeout_s` (of connecting, or of its previous answer) is closed. uvicorn's
  keep-alive timer restarts on every byte, so a client trickling a header a byte at a
  time would otherwise hold its connection forever (slowloris);
- connections per client address: past `max_connections_per_client`, a new connection
  from that address waits, unread, until one of that client's others closes; so one
  client cannot take every slot, and a burst from one client is served in turn rather
  than dropped. (The total stays bounded by `limit_concurrency`, answered 503.)

The body deadline is the app's (service/middleware.py, `BodyLimit`).
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from typing import Any, ClassVar

from uvicorn.protocols.http.h11_impl import H11Protocol

from mondrian.config import Settings

# A request head (request line and headers) larger than this is refused by h11 (400).
MAX_HEAD_BYTES = 64 * 1024


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus a header deadline and a per-client connection bound.
    Configured by subclassing (`protocol_for`): uvicorn instantiates the class itself."""

    header_timeout_s: ClassVar[float] = 10.0
    max_per_client: ClassVar[int] = 32
    open_by_client: ClassVar[Counter[str]]  # connections being served, by address
    waiting: ClassVar[dict[str, deque[GuardedH11Protocol]]]  # the rest, in arrival order

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._address = ""
        self._served = False
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._address = self.client[0] if self.client else ""
        if self.open_by_client[self._address] < self.max_per_client:
            self._serve()
            return
        # Not read until the client's other connections make room (no header deadline
        # runs meanwhile: it starts when the connection is served).
        transport.pause_reading()
        self.waiting.setdefault(self._address, deque()).append(self)

    def _serve(self) -> None:
        self.open_by_client[self._address] += 1
        self._served = True
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        queue = self.waiting.get(self._address)
        if self._served:
            self._served = False
            self.open_by_client[self._address] -= 1
            if self.open_by_client[self._address] <= 0:
                del self.open_by_client[self._address]
            while queue:  # the next of this client's waiting connections, if still open
                follower = queue.popleft()
                if not follower.transport.is_closing():
                    follower.transport.resume_reading()
                    follower._serve()
                    break
        elif queue is not None and self in queue:
            queue.remove(self)
        if queue is not None and not queue:
            self.waiting.pop(self._address, None)
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_timer()  # the next request's head has its own deadline

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(
            self.header_timeout_s, self._header_deadline, self.cycle
        )

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_deadline(self, cycle_then: object) -> None:
        # A new request began since the timer was armed: its head arrived in time.
        if self.cycle is not cycle_then or self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request is being answered (its body has the app's own deadline)
        self.logger.info("closing a connection that sent no request head in time")
        self.transport.close()


def protocol_for(settings: Settings) -> type[GuardedH11Protocol]:
    """A protocol class with this service's bounds (and its own count of connections)."""
    return type(
        "MondrianH11Protocol",
        (GuardedH11Protocol,),
        {
            "header_timeout_s": settings.header_timeout_s,
            "max_per_client": settings.max_connections_per_client,
            "open_by_client": Counter(),
            "waiting": {},
        },
    )


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The uvicorn.Config keywords that bound connections and time, from the settings."""
    return {
        "http": protocol_for(settings),
        "timeout_keep_alive": settings.keep_alive_timeout_s,
        "limit_concurrency": settings.max_connections,
        "timeout_graceful_shutdown": max(1, round(settings.shutdown_grace_s)),
        "h11_max_incomplete_event_size": MAX_HEAD_BYTES,
    }
