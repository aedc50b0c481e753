"""Measure how many requests pass in the busiest window, per limiter.

``AsyncLimiter(rate, period)`` alone against the daemon's ``SendGate`` at the
same rate, under continuous demand, with the minute scaled down to
``PERIOD`` seconds so that the run takes a few seconds. Also times the gate's
overhead per acquisition at a rate high enough not to wait.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from aiolimiter import AsyncLimiter

from whatsapp_daemon.limits import SendGate, busiest_window

RATE = 100  # requests allowed per period
PERIOD = 2.0  # seconds standing in for the 60-second minute
RUN = 3 * PERIOD  # seconds of continuous demand


async def drive(acquire: Callable[[], Awaitable[object]]) -> list[float]:
    """Acquire continuously from 20 workers for RUN seconds; return the times."""
    times: list[float] = []
    deadline = time.monotonic() + RUN

    async def worker() -> None:
        while time.monotonic() < deadline:
            await acquire()
            times.append(time.monotonic())

    await asyncio.gather(*(worker() for _ in range(20)))
    return sorted(times)


async def overhead(count: int = 20_000) -> float:
    """Microseconds per acquisition of a gate that never has to wait."""
    gate = SendGate(10**9, period=1.0)
    started = time.perf_counter()
    for _ in range(count):
        await gate.acquire()
    return (time.perf_counter() - started) / count * 1e6


async def main() -> None:
    bucket = AsyncLimiter(RATE, PERIOD)
    gate = SendGate(RATE, period=PERIOD)
    for name, acquire in (
        (f"AsyncLimiter({RATE}, {PERIOD})", bucket.acquire),
        (f"SendGate({RATE}, period={PERIOD})", gate.acquire),
    ):
        times = await drive(acquire)
        peak = busiest_window(times, PERIOD)
        print(f"{name:<30} busiest {PERIOD:g} s window: {peak:4d} (allowed {RATE})")
    print(f"SendGate overhead: {await overhead():.1f} µs per acquisition")


if __name__ == "__main__":
    asyncio.run(main())
