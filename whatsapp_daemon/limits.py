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


# Longest wait imposed on one recipient after repeated pair-rate errors.
MAX_RECIPIENT_BACKOFF = 3600.0


class RecipientPacer:
    """Meta's pair rate: one message to the same recipient every ``interval``.

    Each recipient has the time from which its next message may leave. A
    message first reserves its recipient (:meth:`reserve`), before it waits
    for its turn at the gate, so that a recipient's other messages are put
    back at once instead of spending turns; the interval then counts from
    the moment the request actually leaves (:meth:`sent`). An error 131056
    pushes the time back by 4^X seconds (X: the recipient's errors in a row,
    Meta's advice), never less than the interval; a message accepted for the
    recipient resets X. Other recipients are not affected.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._next: dict[str, float] = {}
        self._strikes: dict[str, int] = {}
        self._reserved: set[str] = set()

    def seed(self, last_attempts: Iterable[tuple[str, float]]) -> None:
        """Take each recipient's last attempt (e.g. read from the database)."""
        for recipient, at in last_attempts:
            self._next[recipient] = max(
                self._next.get(recipient, 0.0), at + self.interval
            )

    def free_at(self, recipient: str) -> float:
        """Return when the next message to ``recipient`` may leave."""
        return self._next.get(recipient, 0.0)

    def reserve(self, recipient: str, now: float) -> float:
        """Reserve ``recipient`` for one message; return the wait if not free.

        Returns 0 when the recipient is free and now reserved, until
        :meth:`sent` or :meth:`release`. Otherwise returns the seconds to
        wait, and nothing is reserved: the time left, or one interval when
        another message holds the reservation.
        """
        if self.interval <= 0:  # no pacing, only the waits after 131056
            return max(0.0, self.free_at(recipient) - now)
        if recipient in self._reserved:
            return max(self.interval, self.free_at(recipient) - now)
        wait = self.free_at(recipient) - now
        if wait > 0:
            return wait
        self._reserved.add(recipient)
        return 0.0

    def sent(self, recipient: str, at: float) -> None:
        """The reserved message's request leaves at ``at``: the interval starts."""
        if self.interval <= 0:
            return
        self._next[recipient] = max(self.free_at(recipient), at + self.interval)
        self._forget_old(at)

    def release(self, recipient: str) -> None:
        """End a reservation (sent or not); the recipient's time is kept."""
        self._reserved.discard(recipient)

    def back_off(self, recipient: str, now: float) -> float:
        """After a pair-rate error: push the recipient back; return until when."""
        strikes = self._strikes.get(recipient, 0)
        self._strikes[recipient] = strikes + 1
        wait = min(MAX_RECIPIENT_BACKOFF, max(self.interval, 4.0**strikes))
        self._next[recipient] = max(self.free_at(recipient), now + wait)
        return self._next[recipient]

    def accepted(self, recipient: str) -> None:
        """A message to ``recipient`` was accepted: its errors are forgotten."""
        self._strikes.pop(recipient, None)

    def _forget_old(self, now: float) -> None:
        """Keep the map small: drop recipients long free and without errors."""
        if len(self._next) < 10_000:
            return
        for recipient, free in list(self._next.items()):
            if free < now and not (
                recipient in self._strikes or recipient in self._reserved
            ):
                del self._next[recipient]
