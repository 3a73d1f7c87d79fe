"""Failed operator sign-ins counted per client address, so the token cannot be guessed at
the speed of the network (routes/studio_operator.py asks before it checks a token).

`MONDRIAN_SIGN_IN_ATTEMPTS` failures within `MONDRIAN_SIGN_IN_WINDOW_S` seconds from one
address refuse that address's next attempts, 429 with `Retry-After` (when its oldest
counted failure leaves the window), whether or not the token they carry is right; a
successful sign-in forgets the address's failures. The counts live in the process: each
replica of a shared queue (docs/storage.md) counts its own, and a restart forgets them.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque

from mondrian.service.errors import RateLimited

# Addresses remembered at once: a flood from many addresses cannot grow the table without
# bound; past it the addresses whose last failure is oldest are forgotten first.
MAX_ADDRESSES = 10_000


class SignInLimit:
    """Failures per address within a sliding window of `window_s` seconds."""

    def __init__(self, attempts: int, window_s: float) -> None:
        self.attempts = attempts
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, address: str, now: float | None = None) -> None:
        """`RateLimited` while `address` has used up its failures in the window."""
        now = time.monotonic() if now is None else now
        with self._lock:
            failures = self._recent(address, now)
            if len(failures) < self.attempts:
                return
            wait = max(1, math.ceil(failures[0] + self.window_s - now))
        raise RateLimited(
            f"too many failed sign-ins from this address: at most {self.attempts} in "
            f"{self.window_s:g} s; retry in {wait} s",
            retry_after=wait,
        )

    def failed(self, address: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            failures = self._recent(address, now)
            failures.append(now)
            self._failures[address] = failures
            if len(self._failures) > MAX_ADDRESSES:
                self._forget_oldest(now)

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._failures.pop(address, None)

    def _recent(self, address: str, now: float) -> deque[float]:
        """The address's failures still in the window (the lock is held)."""
        failures = self._failures.get(address, deque())
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()
        if not failures:
            self._failures.pop(address, None)
        return failures

    def _forget_oldest(self, now: float) -> None:
        for address in list(self._failures):
            self._recent(address, now)  # drops the addresses with no failure left
        excess = len(self._failures) - MAX_ADDRESSES
        if excess > 0:
            by_last = sorted(self._failures, key=lambda a: self._failures[a][-1])
            for address in by_last[:excess]:
                del self._failures[address]
