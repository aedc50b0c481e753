"""The daemon as a process: start, lock, signals, crash recovery, configuration.

Every test runs ``python -m whatsapp_daemon run`` as a real subprocess, with a
real SQLite file in ``tmp_path`` and the sandbox Graph API on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    PHONE_NUMBER_ID,
    TOKEN,
    Sandbox,
    StartSandbox,
    daemon_env,
    until,
)

from whatsapp_daemon.api import WhatsAppQueue, text_message
from whatsapp_daemon.cli import Exit
from whatsapp_daemon.settings import Settings

A, B, C = "+2250701020304", "+2250501020304", "+2250102030405"
D, E, F = "+2250701020305", "+2250501020307", "+2250102030408"
G, H = "+2250707070707", "+2250505050505"

RECOVERED = "Messages repris après un arrêt brutal"
LOCK_BUSY = "Une autre instance détient le verrou"
PROXY_VARS = re.compile(r"(?i)^(http|https|all|no)_proxy$")


# -- helpers ----------------------------------------------------------------


def clean_env(env: dict[str, str]) -> dict[str, str]:
    """Drop proxy variables so the daemon talks to 127.0.0.1 directly."""
    return {k: v for k, v in env.items() if not PROXY_VARS.match(k)}


class DaemonProcess:
    """One ``whatsapp-daemon run`` subprocess, its output kept in files."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path, base: Path):
        self.out = base.with_suffix(".out")
        self.err = base.with_suffix(".err")
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.popen = subprocess.Popen(
                args,
                cwd=cwd,
                env=clean_env(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stderr(self) -> str:
        return self.err.read_text(encoding="utf-8")

    def running(self) -> bool:
        """True while alive; fail at once, with its stderr, if it died."""
        code = self.popen.poll()
        if code is not None:
            raise AssertionError(f"daemon exited {code}; stderr:\n{self.stderr()}")
        return True

    def signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    async def exited(self, timeout: float) -> int:
        await until(lambda: self.popen.poll() is not None, timeout, "the exit")
        return self.popen.returncode

    def stop(self) -> None:
        """Kill it if still running (teardown only)."""
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)


Spawn = Callable[..., DaemonProcess]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """Start daemon subprocesses; any still running are killed afterwards."""
    started: list[DaemonProcess] = []

    def start(env: dict[str, str], *args: str, cwd: Path = tmp_path) -> DaemonProcess:
        command = [sys.executable, "-m", "whatsapp_daemon", "run", *args]
        base = tmp_path / f"daemon-{len(started)}"
        process = DaemonProcess(command, env, cwd, base)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def enqueue(path: Path, *recipients: str) -> list[int]:
    """Queue one text message per recipient; return the row ids."""
    messages = [text_message(r, f"Bonjour {i}") for i, r in enumerate(recipients)]
    return WhatsAppQueue(path).add(messages)


def rows(path: Path) -> dict[int, dict[str, Any]]:
    """Read every row of the queue, by id."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.row_factory = sqlite3.Row
        return {
            row["id"]: dict(row) for row in conn.execute("SELECT * FROM whatsapp_queue")
        }


def statuses(path: Path) -> dict[int, str]:
    return {i: row["status"] for i, row in rows(path).items()}


def heartbeat_pid(path: Path) -> int | None:
    """The PID of the last daemon that finished a cycle on this queue."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        try:
            found = conn.execute(
                "SELECT value FROM whatsapp_daemon_state WHERE key = 'heartbeat'"
            ).fetchone()
        except sqlite3.OperationalError:  # not created yet
            return None
    return int(json.loads(found[0])["pid"]) if found else None


async def ready(process: DaemonProcess, settings: Settings) -> None:
    """Wait until ``process`` holds the lock and has finished one cycle."""
    await until(
        lambda: (
            process.running() and heartbeat_pid(settings.database_path) == process.pid
        ),
        15,
        "the daemon's first cycle",
    )


async def seen(sandbox: Sandbox) -> Counter[str]:
    """How many requests the sandbox answered per recipient (E.164)."""
    return Counter("+" + str(r["to"]).lstrip("+") for r in await sandbox.requests())


def log_lines(settings: Settings) -> list[str]:
    if not settings.log_path.exists():
        return []
    return settings.log_path.read_text(encoding="utf-8").splitlines()


def run_once(
    env: dict[str, str], cwd: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """Run the command to completion (for commands that must fail fast)."""
    return subprocess.run(
        [sys.executable, "-m", "whatsapp_daemon", "run", *args],
        cwd=cwd,
        env=clean_env(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


# -- running and stopping ---------------------------------------------------


async def test_sends_queue_and_exits_zero_on_sigterm(
    start_sandbox: StartSandbox, make_settings: Callable[..., Settings], spawn: Spawn
) -> None:
    """A daemon sends the queued messages, holds its PID in the lock, exits 0."""
    sandbox = await start_sandbox()
    settings = make_settings(api_base_url=sandbox.url)
    ids = enqueue(settings.database_path, A, B, C)
    daemon = spawn(daemon_env(settings))

    await until(
        lambda: (
            daemon.running()
            and statuses(settings.database_path) == dict.fromkeys(ids, "sent")
        ),
        15,
        "every message sent",
    )
    assert settings.lock_path.read_text() == f"{daemon.pid}\n"
    assert await seen(sandbox) == Counter({A: 1, B: 1, C: 1})
    assert all(row["wamid"] for row in rows(settings.database_path).values())

    daemon.signal(signal.SIGTERM)
    assert await daemon.exited(10) == Exit.OK
    assert settings.lock_path.exists()  # never deleted
    assert daemon.stderr() == ""
    assert any("Arrêt du processeur" in line for line in log_lines(settings))


async def test_second_instance_exits_75_naming_the_holder(
    start_sandbox: StartSandbox, make_settings: Callable[..., Settings], spawn: Spawn
) -> None:
    """A plain second ``run`` exits 75, names the holder's PID and sends nothing."""
    sandbox = await start_sandbox()
    first = spawn(daemon_env(make_settings(api_base_url=sandbox.url, poll_interval=30)))
    settings = make_settings(api_base_url=sandbox.url)
    await ready(first, settings)
    [row_id] = enqueue(settings.database_path, A)  # the first sleeps until 30 s
    before = len(await sandbox.requests())

    second = spawn(daemon_env(settings))
    assert await second.exited(15) == Exit.RUNNING

    stderr = second.stderr().splitlines()
    assert len(stderr) == 1, stderr
    assert f"PID {first.pid}" in stderr[0]
    assert "nothing was sent" in stderr[0]
    assert any(
        LOCK_BUSY in line and f'"pid":{first.pid}' in line
        for line in log_lines(settings)
    )
    assert len(await sandbox.requests()) == before
    row = rows(settings.database_path)[row_id]
    assert (row["status"], row["attempts"]) == ("pending", 0)
    assert settings.lock_path.read_text() == f"{first.pid}\n"
    assert first.running()

    first.signal(signal.SIGTERM)
    assert await first.exited(10) == Exit.OK


async def test_wait_for_lock_takes_over_after_the_first_stops(
    start_sandbox: StartSandbox, make_settings: Callable[..., Settings], spawn: Spawn
) -> None:
    """``run --wait-for-lock`` waits idle, then takes over when the first stops."""
    sandbox = await start_sandbox()
    first = spawn(daemon_env(make_settings(api_base_url=sandbox.url, poll_interval=30)))
    settings = make_settings(api_base_url=sandbox.url)
    await ready(first, settings)
    [early] = enqueue(settings.database_path, A)

    second = spawn(daemon_env(settings), "--wait-for-lock")
    await until(
        lambda: (
            second.running()
            and any(
                LOCK_BUSY in line and f'"pid":{first.pid}' in line
                for line in log_lines(settings)
            )
        ),
        15,
        "the second instance to find the lock busy",
    )
    await asyncio.sleep(0.5)  # a few of its poll intervals: it must stay idle
    assert second.running()
    assert await sandbox.requests() == []
    assert statuses(settings.database_path) == {early: "pending"}

    first.signal(signal.SIGTERM)
    assert await first.exited(10) == Exit.OK
    await until(
        lambda: (
            second.running() and statuses(settings.database_path) == {early: "sent"}
        ),
        15,
        "the second instance to take over",
    )
    assert settings.lock_path.read_text() == f"{second.pid}\n"

    [later] = enqueue(settings.database_path, B)
    await until(
        lambda: second.running() and statuses(settings.database_path)[later] == "sent",
        10,
        "the message queued later",
    )
    assert await seen(sandbox) == Counter({A: 1, B: 1})
    second.signal(signal.SIGTERM)
    assert await second.exited(10) == Exit.OK


# -- crashes and stops mid-send ----------------------------------------------


async def test_restart_after_kill_9_recovers_claimed_rows(
    start_sandbox: StartSandbox, make_settings: Callable[..., Settings], spawn: Spawn
) -> None:
    """After kill -9, rows mid-request become unknown (never resent), the rest go."""
    sandbox = await start_sandbox(script={A: ["slow:3"], B: ["slow:3"]})
    settings = make_settings(api_base_url=sandbox.url, concurrency=2, batch_size=10)
    ids = enqueue(settings.database_path, A, B, C, D, E, F)
    mid_request, waiting = ids[:2], ids[2:]
    daemon = spawn(daemon_env(settings))

    def crash_point() -> bool:
        table = rows(settings.database_path)
        return all(
            table[i]["status"] == "processing" and table[i]["sending_since"]
            for i in mid_request
        ) and all(
            table[i]["status"] == "processing" and not table[i]["sending_since"]
            for i in waiting
        )

    await until(lambda: daemon.running() and crash_point(), 15, "two sends in flight")
    await asyncio.sleep(0.3)  # let both requests reach the sandbox
    daemon.signal(signal.SIGKILL)
    assert await daemon.exited(10) == -signal.SIGKILL
    assert set(statuses(settings.database_path).values()) == {"processing"}

    restarted = spawn(daemon_env(settings))
    await until(
        lambda: (
            restarted.running()
            and "pending" not in statuses(settings.database_path).values()
            and "processing" not in statuses(settings.database_path).values()
        ),
        15,
        "the queue to settle",
    )
    table = rows(settings.database_path)
    assert {i: table[i]["status"] for i in mid_request} == dict.fromkeys(
        mid_request, "unknown"
    )
    assert {i: table[i]["status"] for i in waiting} == dict.fromkeys(waiting, "sent")
    assert all(table[i]["attempts"] == 1 for i in ids)

    # The killed requests are answered once their 3 s are up; none is resent.
    await until(
        lambda: _both_seen(sandbox), 10, "the interrupted requests to be answered"
    )
    assert await seen(sandbox) == Counter(dict.fromkeys([A, B, C, D, E, F], 1))
    recovery = [line for line in log_lines(settings) if RECOVERED in line]
    assert len(recovery) == 1
    assert '"requeued":4,"unknown":2' in recovery[0]

    restarted.signal(signal.SIGTERM)
    assert await restarted.exited(10) == Exit.OK
    assert statuses(settings.database_path)[mid_request[0]] == "unknown"


async def _both_seen(sandbox: Sandbox) -> bool:
    counts = await seen(sandbox)
    return counts[A] >= 1 and counts[B] >= 1


async def test_sigterm_lets_sends_in_flight_finish_and_requeues_the_rest(
    start_sandbox: StartSandbox, make_settings: Callable[..., Settings], spawn: Spawn
) -> None:
    """On SIGTERM, sends in flight end as sent; those not started go back pending."""
    # Four slow sends, one passing the gate every 0.5 s: at least two are in
    # flight from 0.5 s to 2.5 s, and the last four wait (gate or semaphore).
    slow = {key: ["slow:1"] for key in (A, B, C, D)}
    sandbox = await start_sandbox(script=slow)
    settings = make_settings(
        api_base_url=sandbox.url,
        concurrency=4,
        rate_per_minute=120,  # one attempt every 0.5 s: the rest wait at the gate
        shutdown_grace=10.0,
    )
    ids = enqueue(settings.database_path, A, B, C, D, E, F, G, H)
    daemon = spawn(daemon_env(settings))

    def sending() -> set[int]:
        return {
            i for i, row in rows(settings.database_path).items() if row["sending_since"]
        }

    in_flight = await until(
        lambda: daemon.running() and len(sending()) >= 2 and sending(),
        15,
        "two sends in flight",
    )
    daemon.signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    assert await daemon.exited(10) == Exit.OK
    assert time.monotonic() - stopped_at < 3.0  # far below the 10 s grace

    table = rows(settings.database_path)
    counts = await seen(sandbox)
    assert {table[i]["status"] for i in in_flight} == {"sent"}
    for row in table.values():
        assert row["status"] in ("sent", "pending"), row
        if row["status"] == "sent":
            assert (row["attempts"], counts[row["recipient"]]) == (1, 1)
        else:
            assert (row["attempts"], counts[row["recipient"]]) == (0, 0)
            assert row["claimed_by"] is None and row["sending_since"] is None
    assert sum(row["status"] == "pending" for row in table.values()) >= 2
    assert set(table) == set(ids)
    assert any(
        "Messages non envoyés remis en attente" in x for x in log_lines(settings)
    )


async def test_sigterm_during_a_hung_request_marks_it_unknown(
    start_sandbox: StartSandbox, make_settings: Callable[..., Settings], spawn: Spawn
) -> None:
    """A request outlasting shutdown_grace is abandoned: exit 0, row unknown."""
    sandbox = await start_sandbox(script={A: ["hang"]}, hang_seconds=20.0)
    settings = make_settings(
        api_base_url=sandbox.url, shutdown_grace=1.0, http_timeout=30.0
    )
    [row_id] = enqueue(settings.database_path, A)
    daemon = spawn(daemon_env(settings))

    await until(
        lambda: (
            daemon.running() and rows(settings.database_path)[row_id]["sending_since"]
        ),
        15,
        "the request to start",
    )
    await asyncio.sleep(0.2)  # let it reach the sandbox
    daemon.signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    assert await daemon.exited(10) == Exit.OK
    assert 0.9 <= time.monotonic() - stopped_at < settings.shutdown_grace + 2

    row = rows(settings.database_path)[row_id]
    assert (row["status"], row["attempts"]) == ("unknown", 1)
    assert row["claimed_by"] is None and row["sending_since"] is None
    assert any("Envois interrompus par l'arrêt" in x for x in log_lines(settings))


# -- configuration ------------------------------------------------------------


MISPLACED_TOKEN = f"WHATSAPP_ACCESS_TOKEN={TOKEN}\nWHATSAPP_API_VERSION={TOKEN}\n"

# id: (environment changes (None removes), .env text, key named, hint shown)
CONFIG_CASES: dict[str, tuple[dict[str, str | None], str | None, str, str]] = {
    "rate-not-a-number": (
        {"WHATSAPP_RATE_PER_MINUTE": "cent"},
        None,
        "WHATSAPP_RATE_PER_MINUTE",
        '"cent"',
    ),
    "bad-max-attempts-with-token": (
        {"WHATSAPP_MAX_ATTEMPTS": "trois"},
        None,
        "WHATSAPP_MAX_ATTEMPTS",
        '"trois"',
    ),
    "missing-phone-number-id": (
        {"WHATSAPP_PHONE_NUMBER_ID": None},
        None,
        "WHATSAPP_PHONE_NUMBER_ID",
        "missing",
    ),
    "token-pasted-into-another-key": (
        {"WHATSAPP_MAX_ATTEMPTS": TOKEN},
        None,
        "WHATSAPP_MAX_ATTEMPTS",
        '"***"',
    ),
    "token-pasted-into-another-key-in-dotenv": (
        {"WHATSAPP_ACCESS_TOKEN": None, "WHATSAPP_API_VERSION": None},
        MISPLACED_TOKEN,
        "WHATSAPP_API_VERSION",
        '"***"',
    ),
}


@pytest.mark.parametrize(
    ("changes", "dotenv", "key", "hint"),
    CONFIG_CASES.values(),
    ids=CONFIG_CASES.keys(),
)
def test_bad_setting_exits_78_in_one_line_without_the_token(
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    changes: dict[str, str | None],
    dotenv: str | None,
    key: str,
    hint: str,
) -> None:
    """A bad setting exits 78 with one stderr line naming it, never the token."""
    env = daemon_env(make_settings())
    for name, value in changes.items():
        if value is None:
            del env[name]
        else:
            env[name] = value
    if dotenv is not None:
        (tmp_path / ".env").write_text(dotenv, encoding="utf-8")

    result = run_once(env, tmp_path)

    assert result.returncode == Exit.CONFIG, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("whatsapp-daemon: configuration error: ")
    assert key in lines[0]
    assert hint in lines[0]
    assert "Traceback" not in result.stderr
    assert TOKEN not in result.stderr + result.stdout
    assert not (tmp_path / "database.sqlite").exists()  # stopped before anything


def test_dotenv_not_in_utf8_exits_78_in_one_line(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """A ``.env`` saved in Latin-1 exits 78 with one line, not a traceback."""
    env = daemon_env(make_settings())
    del env["WHATSAPP_ACCESS_TOKEN"]
    (tmp_path / ".env").write_bytes(
        f"# Cl\xe9 d'acc\xe8s\nWHATSAPP_ACCESS_TOKEN={TOKEN}\n".encode("latin-1")
    )

    result = run_once(env, tmp_path)

    assert result.returncode == Exit.CONFIG, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert ".env" in lines[0]
    assert "UTF-8" in lines[0]
    assert TOKEN not in result.stderr


async def test_dotenv_is_read_and_foreign_keys_are_ignored(
    start_sandbox: StartSandbox, tmp_path: Path, spawn: Spawn
) -> None:
    """The working directory's ``.env`` configures the daemon; other keys go unseen."""
    sandbox = await start_sandbox()
    lock = tmp_path / "whatsapp_queue_processor.lock"
    settings_lines = [
        "APP_ENV=prod",
        "DB_PASSWORD=hunter2",
        f"WHATSAPP_ACCESS_TOKEN={TOKEN}",
        f"WHATSAPP_PHONE_NUMBER_ID={PHONE_NUMBER_ID}",
        f"WHATSAPP_API_BASE_URL={sandbox.url}",
        f"WHATSAPP_LOCK_PATH={lock}",
        "WHATSAPP_POLL_INTERVAL=0.2",
        "WHATSAPP_SHUTDOWN_GRACE=2",
    ]
    (tmp_path / ".env").write_text("\n".join(settings_lines) + "\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHATSAPP_")}
    database = tmp_path / "var" / "database.sqlite"  # the default, relative path
    (tmp_path / "var" / "logs").mkdir(parents=True)  # as a checkout has it
    [row_id] = enqueue(database, A)

    daemon = spawn(env)
    await until(
        lambda: daemon.running() and statuses(database) == {row_id: "sent"},
        15,
        "the message to be sent with the .env settings",
    )
    assert lock.read_text() == f"{daemon.pid}\n"
    daemon.signal(signal.SIGTERM)
    assert await daemon.exited(10) == Exit.OK

    log = (tmp_path / "var" / "logs" / "whatsapp_queue.log").read_text("utf-8")
    assert "Message envoyé avec succès" in log
    output = log + daemon.stderr() + daemon.out.read_text("utf-8")
    for secret in ("hunter2", "DB_PASSWORD", "APP_ENV", TOKEN):
        assert secret not in output

    # A bad WHATSAPP_ value next to them: named alone, the others not echoed.
    (tmp_path / ".env").write_text(
        "\n".join([*settings_lines, "WHATSAPP_BATCH_SIZE=beaucoup"]) + "\n",
        encoding="utf-8",
    )
    result = run_once(env, tmp_path)
    assert result.returncode == Exit.CONFIG
    [line] = result.stderr.splitlines()
    assert "WHATSAPP_BATCH_SIZE" in line
    assert '"beaucoup"' in line
    for secret in ("hunter2", "DB_PASSWORD", "APP_ENV", TOKEN):
        assert secret not in result.stderr + result.stdout
