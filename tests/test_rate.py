"""Pacing: at most ``rate`` HTTP attempts in any window, restarts included."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from aiolimiter import AsyncLimiter
from conftest import StartSandbox
from test_sending import (
    A,
    B,
    C,
    D,
    E,
    all_finished,
    enqueue_texts,
    requests_to,
    rows,
    running_daemon,
)

from whatsapp_daemon import outcomes
from whatsapp_daemon.limits import RateWindow, SendGate, busiest_window
from whatsapp_daemon.queue import QueueDB
from whatsapp_daemon.settings import Settings
from whatsapp_daemon.times import fmt_attempt

# Timer slack: asyncio and aiolimiter measure time on the loop's monotonic
# clock, the gate returns wall-clock times; the two may disagree by a hair.
SLACK = 0.005  # seconds


# -- the gate on its own ---------------------------------------------------------


async def test_gate_never_lets_more_than_rate_through_in_one_period() -> None:
    """Sixty concurrent acquires: never more than 20 in any second, evenly spaced."""
    gate = SendGate(20, period=1.0)

    times = await asyncio.gather(*(gate.acquire() for _ in range(60)))

    assert busiest_window(times, 1.0) <= 20
    ordered = sorted(times)
    gaps = [later - earlier for earlier, later in itertools.pairwise(ordered)]
    assert min(gaps) >= 1.0 / 20 - SLACK


async def test_aiolimiter_alone_lets_a_burst_of_nearly_twice_the_rate() -> None:
    """AsyncLimiter(20, 1.0) passes more than 20 in one second: why the gate exists."""
    limiter = AsyncLimiter(20, 1.0)
    loop = asyncio.get_running_loop()

    async def timed() -> float:
        await limiter.acquire()
        return loop.time()

    times = await asyncio.gather(*(timed() for _ in range(45)))

    burst = busiest_window(times, 1.0)
    assert burst > 20
    assert burst >= 35  # 20 at once, then one more every 50 ms


async def test_gate_pause_holds_every_attempt() -> None:
    """A pause delays the next acquire, whoever asks, until it runs out."""
    gate = SendGate(1000, period=1.0)
    gate.pause(0.3)

    started = time.time()
    granted = await gate.acquire()

    assert granted - started >= 0.3 - SLACK
    assert gate.paused_for() == 0.0


# -- the sliding window's arithmetic --------------------------------------------


def test_rate_window_counts_seeded_events_inside_the_period() -> None:
    """Seeded times count until they are one period old."""
    window = RateWindow(3, period=10.0)
    window.seed([102.0, 100.0, 101.0])

    assert window.count(105.0) == 3
    assert window.count(110.0) == 2  # 100 is exactly one period old
    assert window.count(112.5) == 0


@pytest.mark.parametrize(
    ("now", "delay"),
    [
        pytest.param(105.0, 5.0, id="full-waits-for-oldest"),
        pytest.param(109.5, 0.5, id="full-almost-free"),
        pytest.param(110.0, 0.0, id="oldest-expired"),
    ],
)
def test_rate_window_delay_is_time_until_the_oldest_leaves(
    now: float, delay: float
) -> None:
    """A full window waits until its oldest event is one period old."""
    window = RateWindow(3, period=10.0)
    window.seed([100.0, 101.0, 102.0])

    assert window.delay(now) == pytest.approx(delay)


def test_rate_window_records_new_events() -> None:
    """Recorded events fill the window like seeded ones."""
    window = RateWindow(2, period=10.0)
    window.record(0.0)
    assert window.delay(1.0) == 0.0
    window.record(1.0)

    assert window.count(1.0) == 2
    assert window.delay(1.0) == pytest.approx(9.0)


# -- the daemon -------------------------------------------------------------------


def seed_attempts(settings: Settings, count: int) -> None:
    """Log ``count`` HTTP attempts made in the last few seconds."""
    now = datetime.now(UTC)
    db = QueueDB.open(settings.database_path)
    with contextlib.closing(db.conn) as conn:
        conn.executemany(
            "INSERT INTO whatsapp_attempts (attempted_at, message_id) VALUES (?, 0)",
            [(fmt_attempt(now - timedelta(seconds=1 + i)),) for i in range(count)],
        )


async def test_restart_with_a_full_window_waits_before_sending(
    start_sandbox: StartSandbox, make_settings: Callable[..., Settings]
) -> None:
    """Attempts logged before a restart count: a full window sends nothing."""
    sandbox = await start_sandbox()
    settings = make_settings(api_base_url=sandbox.url, rate_per_minute=5)
    seed_attempts(settings, 5)
    enqueue_texts(settings.database_path, A, B)

    async with running_daemon(settings):
        await asyncio.sleep(2.0)
        assert await sandbox.requests() == []

    assert {row["status"] for row in rows(settings.database_path).values()} == {
        "pending"
    }


def test_an_attempt_is_dated_once_the_write_lock_is_held(
    make_settings: Callable[..., Settings],
) -> None:
    """Another writer holds the database for a second: the attempt is dated
    after that wait, when the request can leave, not when its turn came;
    otherwise a restart would count the window from too early a time."""
    settings = make_settings()
    [row_id] = enqueue_texts(settings.database_path, A)
    db = QueueDB.open(settings.database_path)
    turn = datetime.now(UTC)
    db.claim(turn, 1, "test", timedelta(minutes=5))
    locked, released = threading.Event(), []

    def hold() -> None:
        with contextlib.closing(
            sqlite3.connect(settings.database_path, isolation_level=None)
        ) as other:
            other.execute("BEGIN IMMEDIATE")
            locked.set()
            time.sleep(1.0)
            released.append(datetime.now(UTC))
            other.execute("COMMIT")

    holder = threading.Thread(target=hold)
    holder.start()
    locked.wait(10)
    try:
        db.begin_attempt(row_id, turn, lambda: datetime.now(UTC))
    finally:
        holder.join(10)
    [stamp] = [
        row[0] for row in db.conn.execute("SELECT attempted_at FROM whatsapp_attempts")
    ]
    db.close()

    assert stamp >= fmt_attempt(released[0])


@pytest.mark.parametrize(
    "logged", [pytest.param(0, id="empty-log"), pytest.param(4, id="one-slot-left")]
)
async def test_restart_with_room_in_the_window_sends_at_once(
    start_sandbox: StartSandbox, make_settings: Callable[..., Settings], logged: int
) -> None:
    """With fewer than ``rate`` recent attempts logged, a message leaves at once."""
    sandbox = await start_sandbox()
    settings = make_settings(api_base_url=sandbox.url, rate_per_minute=5)
    seed_attempts(settings, logged)
    [row_id] = enqueue_texts(settings.database_path, A)

    async with running_daemon(settings) as run:
        # A full window would hold it for about 55 s.
        await run.until(all_finished(settings.database_path), 10.0, "the send")

    assert rows(settings.database_path)[row_id]["status"] == "sent"


async def test_demo_sized_run_stays_under_the_rate(
    start_sandbox: StartSandbox, make_settings: Callable[..., Settings]
) -> None:
    """Sixty messages at 600 per minute: all sent, paced, within the limit."""
    sandbox = await start_sandbox()
    settings = make_settings(api_base_url=sandbox.url, rate_per_minute=600)
    recipients = [f"+225070102{i:04d}" for i in range(60)]
    enqueue_texts(settings.database_path, *recipients)

    async with running_daemon(settings) as run:
        await run.until(all_finished(settings.database_path), 20, "the campaign")

    stats = await sandbox.stats()
    assert (stats["accepted"], stats["total"]) == (60, 60)
    assert stats["max_in_any_60s"] <= 600
    with contextlib.closing(sqlite3.connect(settings.database_path)) as conn:
        logged = [
            datetime.fromisoformat(row[0]).timestamp()
            for row in conn.execute(
                "SELECT attempted_at FROM whatsapp_attempts ORDER BY attempted_at"
            )
        ]
    gaps = [later - earlier for earlier, later in itertools.pairwise(logged)]
    assert min(gaps) >= 0.1 - 0.002  # 60 s / 600, to the log's millisecond


async def test_throughput_error_pauses_every_recipient(
    start_sandbox: StartSandbox,
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a 130429 answer, no request for anyone leaves during the pause."""
    pause = 1.0
    throttle = outcomes.RULES[130429]._replace(pause=pause)
    monkeypatch.setitem(outcomes.RULES, 130429, throttle)
    sandbox = await start_sandbox(script={A: [130429, "ok"]})
    # 300 per minute spaces attempts 0.2 s apart: the 130429 answer is back
    # long before the next recipient's turn.
    settings = make_settings(api_base_url=sandbox.url, rate_per_minute=300)
    enqueue_texts(settings.database_path, A, B, C, D, E)

    async with running_daemon(settings) as run:
        await run.until(all_finished(settings.database_path), what="the sends")

    requests = sorted(await sandbox.requests(), key=lambda r: r["at"])
    throttled, *after = requests
    assert (throttled["to"], throttled["code"]) == (A.lstrip("+"), 130429)
    assert len(after) == 5
    assert min(r["at"] for r in after) - throttled["at"] >= pause - SLACK
    assert [r["code"] for r in await requests_to(sandbox, A)] == [130429, None]
    assert {row["status"] for row in rows(settings.database_path).values()} == {"sent"}
