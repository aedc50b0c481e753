"""Rows, files and commands as they come in real life, and the daemon holding up."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import StartSandbox
from test_sending import (
    A,
    B,
    C,
    all_finished,
    enqueue_texts,
    insert_raw,
    local_only,  # noqa: F401  # autouse fixture: loopback only, clean environment
    log_lines,
    log_to,
    rows,
    running_daemon,
)

from whatsapp_daemon.daemon import Daemon, LockLostError
from whatsapp_daemon.lock import InstanceLock
from whatsapp_daemon.settings import Settings


async def test_a_row_not_stored_as_utf8_fails_alone(
    start_sandbox: StartSandbox, make_settings: Callable[..., Settings]
) -> None:
    """Latin-1 bytes in one body fail that row; the rows around it are sent."""
    sandbox = await start_sandbox()
    settings = make_settings(api_base_url=sandbox.url)
    first = enqueue_texts(settings.database_path, A)[0]
    with contextlib.closing(sqlite3.connect(settings.database_path)) as conn:
        conn.execute(
            "INSERT INTO whatsapp_queue (recipient, body)"
            " VALUES (?, CAST(X'4361666520E9' AS TEXT))",
            (B,),
        )
        conn.commit()
    last = enqueue_texts(settings.database_path, C)[0]

    def drained() -> bool:
        with contextlib.closing(sqlite3.connect(settings.database_path)) as conn:
            return not conn.execute(
                "SELECT 1 FROM whatsapp_queue WHERE status IN ('pending', 'processing')"
            ).fetchone()

    async with running_daemon(settings) as run:
        await run.until(drained, what="the queue")

    with contextlib.closing(sqlite3.connect(settings.database_path)) as conn:
        found = dict(
            (row_id, (status, reason))
            for row_id, status, reason in conn.execute(
                "SELECT id, status, error_message FROM whatsapp_queue"
            )
        )
    assert found[first][0] == found[last][0] == "sent"
    bad = next(v for k, v in found.items() if k not in (first, last))
    assert bad[0] == "failed"
    assert "UTF-8" in bad[1]


async def test_iso_scheduled_time_with_a_t_is_due(
    start_sandbox: StartSandbox, make_settings: Callable[..., Settings]
) -> None:
    """A time written as 2026-12-04T10:00:00 (PHP's date('c')) is sent when due."""
    sandbox = await start_sandbox()
    settings = make_settings(api_base_url=sandbox.url)
    enqueue_texts(settings.database_path)
    past = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S")
    row = insert_raw(settings.database_path, recipient=A, body="x", scheduled_at=past)

    async with running_daemon(settings) as run:
        await run.until(all_finished(settings.database_path), what="the row")

    assert rows(settings.database_path)[row]["status"] == "sent"


@pytest.mark.parametrize(
    "stored", [pytest.param(-5, id="minus-5"), pytest.param(-9e999, id="minus-inf")]
)
async def test_negative_attempts_do_not_buy_extra_tries(
    start_sandbox: StartSandbox, make_settings: Callable[..., Settings], stored: float
) -> None:
    """A row stored with attempts = -5, or SQLite's -Inf, still gets at most
    max_attempts requests, and fails with Meta's reason, not an internal one."""
    sandbox = await start_sandbox(script={A: ["always:131000"]})
    settings = make_settings(api_base_url=sandbox.url)
    enqueue_texts(settings.database_path)
    row = insert_raw(settings.database_path, recipient=A, body="x", attempts=stored)

    async with running_daemon(settings) as run:
        await run.until(all_finished(settings.database_path), what="the row")

    assert rows(settings.database_path)[row]["status"] == "failed"
    assert "erreur interne" not in rows(settings.database_path)[row]["error_message"]
    assert len(await sandbox.requests()) == settings.max_attempts


async def test_a_long_lock_held_by_another_writer_never_fails_a_message(
    start_sandbox: StartSandbox,
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Writes that time out while the app holds the database leave rows to retry."""
    monkeypatch.setattr("whatsapp_daemon.queue.BUSY_TIMEOUT", 0.3)
    sandbox = await start_sandbox(latency=(0.05, 0.05))
    settings = make_settings(api_base_url=sandbox.url, rate_per_minute=600)
    ids = enqueue_texts(settings.database_path, A, B, C)
    release = threading.Event()

    def hold() -> None:
        with contextlib.closing(sqlite3.connect(settings.database_path)) as conn:
            conn.isolation_level = None
            conn.execute("BEGIN IMMEDIATE")
            release.wait(10)
            conn.execute("COMMIT")

    async with running_daemon(settings) as run:
        await asyncio.sleep(0.15)  # the first sends leave, then the app locks
        holder = threading.Thread(target=hold)
        holder.start()
        await asyncio.sleep(1.5)
        release.set()
        holder.join()
        await run.until(all_finished(settings.database_path), 15, "the queue")

    queue = rows(settings.database_path)
    assert all(queue[i]["status"] in ("sent", "unknown") for i in ids)
    accepted = {r["to"] for r in await sandbox.requests() if r["message_id"]}
    for row_id in ids:
        if queue[row_id]["status"] == "sent":
            assert queue[row_id]["recipient"].lstrip("+") in accepted


def test_a_line_break_in_a_message_stays_on_one_log_line(tmp_path: Path) -> None:
    """Content of a bad row cannot forge a second log line."""
    with log_to(tmp_path / "q.log") as path:
        from whatsapp_daemon.logs import logger

        logger.error(
            "Échec : %s", "video\n[2026-01-01 00:00:00] whatsapp_queue.INFO: x"
        )
    assert len(log_lines(path)) == 1


def test_sandbox_subcommand_takes_its_options(tmp_path: Path) -> None:
    """`whatsapp-daemon sandbox --port 0 --port-file F` serves, SIGTERM stops it."""
    port_file = tmp_path / "port"
    command = [sys.executable, "-m", "whatsapp_daemon", "sandbox", "--port", "0"]
    process = subprocess.Popen(
        [*command, "--port-file", str(port_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while not (port_file.exists() and port_file.read_text().strip()):
            assert process.poll() is None, "the sandbox exited"
            assert time.monotonic() < deadline, "the sandbox did not start"
            time.sleep(0.05)
    finally:
        process.terminate()
        assert process.wait(10) == 0


def test_status_refuses_a_database_that_does_not_exist(tmp_path: Path) -> None:
    """A mistyped WHATSAPP_DATABASE_PATH is reported, not replaced by an empty queue."""
    missing = tmp_path / "nope" / "database.sqlite"
    result = subprocess.run(
        [sys.executable, "-m", "whatsapp_daemon", "status"],
        env={"WHATSAPP_DATABASE_PATH": str(missing), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 78
    assert "WHATSAPP_DATABASE_PATH" in result.stderr
    assert not missing.parent.exists()


async def test_a_daemon_whose_lock_file_is_taken_stops_sending_within_seconds(
    start_sandbox: StartSandbox, make_settings: Callable[..., Settings]
) -> None:
    """Deleting the lock file mid-drain and locking a new one stops the first daemon."""
    sandbox = await start_sandbox()
    settings = make_settings(api_base_url=sandbox.url, rate_per_minute=120)
    enqueue_texts(settings.database_path, *[f"+225070102{i:04d}" for i in range(40)])
    lock = InstanceLock(settings.lock_path)
    lock.acquire()
    daemon = Daemon(settings, lock, env_file=None)
    task = asyncio.create_task(daemon.run(asyncio.Event()))
    try:
        await asyncio.sleep(1.0)
        settings.lock_path.unlink()
        intruder = InstanceLock(settings.lock_path)
        intruder.acquire()
        with pytest.raises(LockLostError):
            await asyncio.wait_for(task, 5)
        seen = len(await sandbox.requests())
        await asyncio.sleep(1.0)
        assert len(await sandbox.requests()) == seen
        intruder.release()
    finally:
        lock.release()
    queue = rows(settings.database_path)
    assert not [r for r in queue.values() if r["status"] == "processing"]


def test_every_setting_is_documented_in_env_example() -> None:
    """``.env.example`` names every key the daemon reads."""
    example = (Path(__file__).resolve().parent.parent / ".env.example").read_text(
        encoding="utf-8"
    )
    keys = {line.split("=")[0].lstrip("# ") for line in example.splitlines()}
    missing = [
        f"WHATSAPP_{name.upper()}"
        for name in Settings.model_fields
        if f"WHATSAPP_{name.upper()}" not in keys
    ]
    assert missing == []


def test_an_empty_default_region_refuses_numbers_without_a_country_code(
    tmp_path: Path,
) -> None:
    """With WHATSAPP_DEFAULT_REGION empty, only +… and 00… numbers are queued."""
    env = {
        "PATH": "/usr/bin:/bin",
        "WHATSAPP_DATABASE_PATH": str(tmp_path / "queue.sqlite"),
        "WHATSAPP_DEFAULT_REGION": "",
    }

    def enqueue(number: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "whatsapp_daemon", "enqueue", "--to", number,
             "--text", "Bonjour"],
            cwd=tmp_path, env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip

    local = enqueue("07 01 02 03 04")
    assert local.returncode == 65
    assert "WHATSAPP_DEFAULT_REGION" in local.stderr
    assert enqueue("+225 07 01 02 03 04").returncode == 0
    assert enqueue("00225 07 01 02 03 05").returncode == 0
    assert len(rows(tmp_path / "queue.sqlite")) == 2
