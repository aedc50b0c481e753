"""Pacing of HTTP attempts: at most N in any 60 seconds, restarts included.

``AsyncLimiter(rate, 60)`` alone is a leaky bucket that starts empty: it lets
a burst of ``rate`` through, then one more per drip, so nearly twice the rate
can pass in one minute, and a restart starts a fresh burst. So the gate pairs
a burst-free pacer, ``AsyncLimiter(1, 60 / rate)``, with a sliding log of
attempt times seeded from the database at start-up, and a shared pause that
throughput errors extend for the whole sender.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable

from aiolimiter import AsyncLimiter

WINDOW = 60.0  # seconds: the span in which at most ``rate`` attempts go out
# Seconds added to the window so that network jitter between two attempts
# 60 s apart cannot make Meta see them inside one 60-second span.
WINDOW_MARGIN = 0.5

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
Prepare = Callable[[float], Awaitable[object]]


def busiest_window(times: Iterable[float], span: float) -> int:
    """Return the most ``times`` that fall inside one span ``[t, t + span)``."""
    ordered = sorted(times)
    best = start = 0
    for end, moment in enumerate(ordered):
        while moment - ordered[start] >= span:
            start += 1
        best = max(best, end - start + 1)
    return best


class SendingStopped(Exception):
    """The gate is closed: the daemon is stopping or sending is halted."""


class RateWindow:
    """A sliding log of event times allowing ``limit`` per ``period`` seconds."""

    def __init__(self, limit: int, period: float = WINDOW + WINDOW_MARGIN) -> None:
        self.limit = limit
        self.period = period
        self._times: deque[float] = deque()

    def seed(self, times: Iterable[float]) -> None:
        """Add past events (wall-clock seconds), e.g. read from the database."""
        self._times.extend(sorted(times))

    def count(self, now: float) -> int:
        """Return how many events fall in the window ending at ``now``."""
        self._prune(now)
        return len(self._times)

    def delay(self, now: float) -> float:
        """Return how long to wait before one more event fits (0 if it does)."""
        if self.count(now) < self.limit:
            return 0.0
        return self._times[len(self._times) - self.limit] + self.period - now

    def record(self, now: float) -> None:
        self._times.append(now)

    def _prune(self, now: float) -> None:
        while self._times and self._times[0] <= now - self.period:
            self._times.popleft()


class SendGate:
    """Every HTTP attempt passes here first, retries included."""

    def __init__(
        self,
        rate: int,
        *,
        period: float = WINDOW,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        """Allow ``rate`` attempts per ``period`` seconds (tests shrink it)."""
        self.rate = rate
        self.window = RateWindow(rate, period + WINDOW_MARGIN * period / WINDOW)
        self._pacer = AsyncLimiter(1, period / rate)
        self._turn = asyncio.Lock()
        self._clock = clock
        self._sleep = sleep
        self._paused_until = 0.0
        self.closed_reason: str | None = None

    def pause(self, seconds: float) -> None:
        """Hold every attempt for ``seconds`` from now (longest pause wins)."""
        until = self._clock() + seconds
        self._paused_until = max(self._paused_until, until)

    def paused_for(self) -> float:
        """Return the seconds left of the current pause (0 if none)."""
        return max(0.0, self._paused_until - self._clock())

    def close(self, reason: str) -> None:
        """Refuse every further attempt until :meth:`reopen`."""
        self.closed_reason = reason

    def reopen(self) -> None:
        self.closed_reason = None

    async def acquire(self, prepare: Prepare | None = None) -> float:
        """Wait for a turn and return its wall-clock time, already recorded.

        ``prepare(time)`` runs before the turn is handed to the next caller
        (the daemon writes the attempt to the database there), and the window
        records the time it ends: a slow write cannot let attempts pile up
        and leave together. Raises SendingStopped if the gate is or becomes
        closed meanwhile.
        """
        async with self._turn:
            await self._pacer.acquire()
            while True:
                if self.closed_reason is not None:
                    raise SendingStopped(self.closed_reason)
                now = self._clock()
                wait = max(self._paused_until - now, self.window.delay(now))
                if wait <= 0:
                    break
                await self._sleep(min(wait, 1.0))
            if prepare is not None:
                await prepare(now)
            self.window.record(max(now, self._clock()))
            return now
