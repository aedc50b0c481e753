"""From the PHP cron job to the daemon, the way the README says to switch.

The PHP job (``process_whatsapp_queue.php``, run by cron every minute) left
a ``whatsapp_queue`` table of its own making and took an exclusive ``flock``
on ``/tmp/whatsapp_queue_processor.lock``. These tests start the real daemon
(``python -m whatsapp_daemon run --wait-for-lock``, the LaunchAgent's own
arguments) as a subprocess on such a table, against the sandbox Graph API on
127.0.0.1, and play the last cron run with a separate process holding the
lock through flock(2), which is what PHP's ``flock()`` calls. The lock file
is always in ``tmp_path``; the real one in /tmp is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import plistlib
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import (
    PHONE_NUMBER_ID,
    ROOT,
    TOKEN,
    Sandbox,
    StartSandbox,
    daemon_env,
    until,
)

from whatsapp_daemon import launchd
from whatsapp_daemon.cli import LOCK_RETRY, Exit
from whatsapp_daemon.queue import COLUMNS
from whatsapp_daemon.settings import Settings

PHP_LOCK = Path("/tmp/whatsapp_queue_processor.lock")  # the PHP runbook's lock
LOCK_BUSY = "Une autre instance détient le verrou"
RECOVERED = "Messages repris après un arrêt brutal"
PROXY_VARS = re.compile(r"(?i)^(http|https|all|no)_proxy$")

# The queue table as the PHP application created it. Its core columns carry
# the daemon's names (the daemon reads recipient, message_type, body, ...;
# see test_php_columns_under_other_names_are_not_guessed); it lacks the
# daemon's bookkeeping columns and has three of its own: the PHP job's
# message id column, a campaign reference and a priority.
PHP_SCHEMA = """
CREATE TABLE whatsapp_queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient VARCHAR(20) NOT NULL,
    message_type VARCHAR(20) NOT NULL DEFAULT 'text',
    body TEXT,
    template_name VARCHAR(255),
    template_language VARCHAR(10),
    template_params TEXT,
    batch_id VARCHAR(64),
    status VARCHAR(20) NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    message_id VARCHAR(128),
    error_message TEXT,
    campaign_ref TEXT,
    priority INTEGER NOT NULL DEFAULT 0,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    updated_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    sent_at DATETIME
);
CREATE INDEX idx_whatsapp_queue_status ON whatsapp_queue (status);
"""
PHP_ONLY = ("message_id", "campaign_ref", "priority")

# A process that takes the lock the way the PHP job does
# (fopen + flock(LOCK_EX | LOCK_NB) + its PID written in the file), reports
# "locked", then "works" until a line arrives on stdin; with "nb" as its
# second argument and the lock busy, it prints "busy" and exits 1.
CRON_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    print("busy", flush=True)
    sys.exit(1)
os.ftruncate(fd, 0)
os.write(fd, f"{os.getpid()}\\n".encode())
print("locked", flush=True)
sys.stdin.readline()
"""


# -- helpers ----------------------------------------------------------------


def stamp(ago: timedelta = timedelta()) -> str:
    """A UTC time ``ago`` in the past, as PHP's CURRENT_TIMESTAMP writes it."""
    return (datetime.now(UTC) - ago).strftime("%Y-%m-%d %H:%M:%S")


def agent_arguments() -> list[str]:
    """The LaunchAgent's ProgramArguments for this interpreter."""
    agent = plistlib.loads(launchd.render(ROOT, Path(sys.executable)))
    arguments: list[str] = agent["ProgramArguments"]
    assert arguments[1:] == ["-m", "whatsapp_daemon", "run", "--wait-for-lock"]
    return arguments


def clean_env(env: dict[str, str]) -> dict[str, str]:
    """Drop proxy variables so that everything talks to 127.0.0.1 directly."""
    return {k: v for k, v in env.items() if not PROXY_VARS.match(k)}


def create_php_table(path: Path, rows: list[dict[str, Any]]) -> None:
    """Create the PHP-era table and insert ``rows`` by plain SQL."""
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.executescript(PHP_SCHEMA)
        for row in rows:
            names = ", ".join(row)
            marks = ", ".join("?" for _ in row)
            conn.execute(
                f"INSERT INTO whatsapp_queue ({names}) VALUES ({marks})",
                tuple(row.values()),
            )


def table(path: Path) -> dict[int, dict[str, Any]]:
    """Every row of the queue, by id."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.row_factory = sqlite3.Row
        found = conn.execute("SELECT * FROM whatsapp_queue").fetchall()
    return {row["id"]: dict(row) for row in found}


def columns(path: Path) -> list[tuple[str, str]]:
    """The queue's columns, in order, with their declared types."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        info = conn.execute("PRAGMA table_info(whatsapp_queue)").fetchall()
    return [(str(row[1]), str(row[2])) for row in info]


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


async def sent_ids(sandbox: Sandbox) -> Counter[int]:
    """How many send requests the sandbox got for each row id."""
    return Counter(
        int(request["body"]["biz_opaque_callback_data"])
        for request in await sandbox.requests()
    )


def log_lines(settings: Settings) -> list[str]:
    if not settings.log_path.exists():
        return []
    return settings.log_path.read_text(encoding="utf-8").splitlines()


class Process:
    """A subprocess with its output in files, killed at teardown if still up."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path, base: Path):
        self.out = base.with_suffix(".out")
        self.err = base.with_suffix(".err")
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.popen = subprocess.Popen(
                args,
                cwd=cwd,
                env=clean_env(env),
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stdout(self) -> str:
        return self.out.read_text(encoding="utf-8")

    def stderr(self) -> str:
        return self.err.read_text(encoding="utf-8")

    def running(self) -> bool:
        """True while alive; fail at once, with its stderr, if it died."""
        code = self.popen.poll()
        if code is not None:
            raise AssertionError(f"exited {code}; stderr:\n{self.stderr()}")
        return True

    def finish_work(self) -> None:
        """Let a CRON_LOCK process end its run (and release the lock)."""
        assert self.popen.stdin is not None
        self.popen.stdin.write(b"done\n")
        self.popen.stdin.close()

    async def exited(self, timeout: float) -> int:
        await until(lambda: self.popen.poll() is not None, timeout, "the exit")
        return self.popen.returncode

    def stop(self) -> None:
        if self.popen.stdin is not None:
            with contextlib.suppress(OSError):
                self.popen.stdin.close()
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)


Spawn = Callable[..., Process]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """Start subprocesses in ``tmp_path``; any still running are killed after."""
    started: list[Process] = []

    def start(args: list[str], env: dict[str, str] | None = None) -> Process:
        base = tmp_path / f"process-{len(started)}"
        process = Process(args, env or dict(os.environ), tmp_path, base)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def cron_run(spawn: Spawn, lock: Path) -> Process:
    """Start a "cron run" that takes the lock as the PHP job does."""
    return spawn([sys.executable, "-c", CRON_LOCK, str(lock)])


async def cron_sends(sandbox: Sandbox, database: Path, ids: list[int]) -> None:
    """Do what a PHP run does with ``ids``: claim, send, record the message id."""
    with contextlib.closing(sqlite3.connect(database)) as conn, conn:
        conn.executemany(
            "UPDATE whatsapp_queue SET status = 'processing', updated_at = ?"
            " WHERE id = ?",
            [(stamp(), i) for i in ids],
        )
    url = f"{sandbox.url}/v23.0/{PHONE_NUMBER_ID}/messages"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(trust_env=False) as client:
        for row_id in ids:
            row = table(database)[row_id]
            response = await client.post(
                url,
                headers=headers,
                json={
                    "messaging_product": "whatsapp",
                    "to": row["recipient"].removeprefix("+"),
                    "type": "text",
                    "text": {"body": row["body"]},
                    "biz_opaque_callback_data": str(row_id),
                },
            )
            response.raise_for_status()
            wamid = response.json()["messages"][0]["id"]
            with contextlib.closing(sqlite3.connect(database)) as conn, conn:
                conn.execute(
                    "UPDATE whatsapp_queue SET status = 'sent', attempts = 1,"
                    " message_id = ?, sent_at = ?, updated_at = ? WHERE id = ?",
                    (wamid, stamp(), stamp(), row_id),
                )


def text_row(n: int, **fields: Any) -> dict[str, Any]:
    """A PHP-era text row for recipient number ``n``; ``fields`` override."""
    row: dict[str, Any] = {
        "recipient": f"+22507010203{n:02d}",
        "body": f"Bonjour client {n}",
        "campaign_ref": f"CAMP-{n:03d}",
        "priority": n % 3,
        "batch_id": "relance-php",
        "created_at": stamp(timedelta(minutes=30)),
        "updated_at": stamp(timedelta(minutes=30)),
    }
    row.update(fields)
    return row


# -- a. the daemon on the PHP job's table ----------------------------------------


async def test_daemon_migrates_the_php_table_and_sends_only_what_is_due(
    start_sandbox: StartSandbox,
    make_settings: Callable[..., Settings],
    spawn: Spawn,
) -> None:
    """On the PHP job's table the daemon adds its columns and changes no value.

    Unknown columns and their values stay. Exactly the pending rows and the
    rows a crashed cron run left ``processing`` are sent, once each: PHP
    records no "request in flight" marker (``sending_since``), so those rows
    go back to pending, as the README warns, even with attempts counted;
    their attempt count carries over, so one left with every attempt spent
    is failed unsent. Rows already ``sent`` or ``failed`` are never touched
    nor resent; only finished rows older than the 30-day retention are
    deleted, as the PHP job did.
    """
    sandbox = await start_sandbox()
    settings = make_settings(api_base_url=sandbox.url)
    month_ago = timedelta(days=40)
    php_rows = {
        "pending": text_row(1),
        "pending template": text_row(
            2,
            message_type="template",
            body=None,
            template_name="rappel_paiement",
            template_language="fr",
            template_params='["Aya","15 000"]',
        ),
        "pending, one failed try": text_row(
            3, attempts=1, error_message="cURL error 28: Operation timed out"
        ),
        "pending since 40 days": text_row(
            4, created_at=stamp(month_ago), updated_at=stamp(month_ago)
        ),
        "processing, no attempt": text_row(5, status="processing"),
        "processing, attempt counted": text_row(6, status="processing", attempts=1),
        "processing, attempts spent": text_row(7, status="processing", attempts=3),
        "sent": text_row(
            8,
            status="sent",
            attempts=1,
            message_id="wamid.HBgMMjI1MDcwMTAyMDMwOBUCABEYEjQ0",
            sent_at=stamp(timedelta(minutes=29)),
            updated_at=stamp(timedelta(minutes=29)),
        ),
        "failed": text_row(
            9,
            status="failed",
            attempts=3,
            error_message="(#131026) Message undeliverable",
        ),
        "sent 40 days ago": text_row(
            10,
            status="sent",
            attempts=1,
            message_id="wamid.HBgMMjI1MDcwMTAyMDMxMBUCABEYEjQ1",
            created_at=stamp(month_ago),
            updated_at=stamp(month_ago),
            sent_at=stamp(month_ago),
        ),
    }
    create_php_table(settings.database_path, list(php_rows.values()))
    ids = dict(zip(php_rows, sorted(table(settings.database_path)), strict=True))
    php_columns = columns(settings.database_path)
    before = table(settings.database_path)
    to_send = [ids[k] for k in php_rows if k.startswith(("pending", "processing, "))]
    to_send.remove(ids["processing, attempts spent"])

    daemon = spawn(agent_arguments(), daemon_env(settings))

    def settled() -> bool:
        statuses = {row["status"] for row in table(settings.database_path).values()}
        return (
            daemon.running()
            and heartbeat_pid(settings.database_path) == daemon.pid
            and not statuses & {"pending", "processing"}
        )

    await until(settled, 15, "the PHP queue to be drained")
    after = table(settings.database_path)
    assert await sent_ids(sandbox) == Counter(to_send)

    # The PHP columns are all still there, first and in order, with their
    # declared types; the daemon's are added after them; none is lost.
    new_columns = columns(settings.database_path)
    assert new_columns[: len(php_columns)] == php_columns
    assert {name for name, _ in new_columns} == {"id"} | set(COLUMNS) | set(PHP_ONLY)
    with contextlib.closing(sqlite3.connect(settings.database_path)) as conn:
        indexes = {r[1] for r in conn.execute("PRAGMA index_list(whatsapp_queue)")}
    assert "idx_whatsapp_queue_status" in indexes

    # Finished rows: every value as PHP wrote it, the PHP message id kept.
    old_sent = ids.pop("sent 40 days ago")
    assert old_sent not in after  # the daily clean-up, 30 days by default
    for key in ("sent", "failed"):
        row = after[ids[key]]
        assert {name: row[name] for name in before[ids[key]]} == before[ids[key]]
        assert row["wamid"] is None and row["claimed_by"] is None

    # Sent rows: only the outcome columns changed; unknown columns intact.
    outcome = {"status", "attempts", "updated_at", "sent_at", "error_message"}
    for row_id in to_send:
        row, old = after[row_id], before[row_id]
        assert {k: v for k, v in row.items() if k in old and k not in outcome} == {
            k: v for k, v in old.items() if k not in outcome
        }
        assert row["status"] == "sent"
        assert row["wamid"].startswith("wamid.")
        assert row["attempts"] == old["attempts"] + 1
        assert row["error_message"] is None
        assert row["message_id"] is None  # the PHP job's column is left to it
    assert after[ids["processing, attempt counted"]]["attempts"] == 2

    spent = after[ids["processing, attempts spent"]]
    assert (spent["status"], spent["attempts"]) == ("failed", 3)
    assert spent["error_message"] == "tentatives épuisées"
    assert spent["campaign_ref"] == "CAMP-007"

    recovered = [line for line in log_lines(settings) if RECOVERED in line]
    assert len(recovered) == 1
    assert '"requeued":3,"unknown":0' in recovered[0]

    daemon.popen.send_signal(signal.SIGTERM)
    assert await daemon.exited(10) == Exit.OK
    assert daemon.stderr() == ""


async def test_php_columns_under_other_names_stop_the_daemon_with_the_fix(
    start_sandbox: StartSandbox,
    make_settings: Callable[..., Settings],
    spawn: Spawn,
) -> None:
    """A table with rows but no ``recipient``/``body`` columns is refused.

    The daemon reads ``recipient`` and ``body`` only; it does not guess that
    ``phone`` and ``message`` hold them. Rather than add empty columns and
    fail every row, it exits 78 with one line naming the columns it found and
    the fix (``ALTER TABLE whatsapp_queue RENAME COLUMN phone TO recipient``),
    leaving the table untouched.
    """
    sandbox = await start_sandbox()
    settings = make_settings(api_base_url=sandbox.url)
    with contextlib.closing(sqlite3.connect(settings.database_path)) as conn, conn:
        conn.execute(
            "CREATE TABLE whatsapp_queue (id INTEGER PRIMARY KEY AUTOINCREMENT,"
            " phone TEXT NOT NULL, message TEXT NOT NULL,"
            " status TEXT NOT NULL DEFAULT 'pending',"
            " attempts INTEGER NOT NULL DEFAULT 0, created_at TEXT, updated_at TEXT)"
        )
        conn.execute(
            "INSERT INTO whatsapp_queue (phone, message, created_at, updated_at)"
            " VALUES ('+2250701020304', 'Bonjour', ?, ?)",
            (stamp(), stamp()),
        )
    before = table(settings.database_path)

    daemon = spawn(agent_arguments(), daemon_env(settings))

    assert await daemon.exited(15) == 78
    [line] = [li for li in daemon.stderr().splitlines() if li.strip()]
    assert "no recipient or body column" in line
    assert "RENAME COLUMN phone TO recipient" in line
    assert table(settings.database_path) == before
    assert await sandbox.requests() == []


# -- b. the switch: the last cron run still holds the lock -------------------------


async def test_switch_from_the_cron_sends_every_message_exactly_once(
    start_sandbox: StartSandbox,
    make_settings: Callable[..., Settings],
    spawn: Spawn,
) -> None:
    """Started while a cron run holds the lock, the agent waits, then takes over.

    While the "cron" holds the lock (longer than one retry of
    ``--wait-for-lock``) and sends three rows itself, the daemon sends
    nothing and logs once, naming the cron's PID, that it waits. Once the
    cron run ends, the daemon sends every row still pending, including one
    the application queued meanwhile, and none the cron sent: each message
    goes out exactly once.
    """
    sandbox = await start_sandbox()
    settings = make_settings(api_base_url=sandbox.url)
    create_php_table(settings.database_path, [text_row(n) for n in range(1, 7)])
    cron_ids, daemon_ids = [1, 2, 3], [4, 5, 6]

    cron = cron_run(spawn, settings.lock_path)
    await until(lambda: cron.running() and cron.stdout() == "locked\n", 10, "cron")
    daemon = spawn(agent_arguments(), daemon_env(settings))

    def waiting() -> list[str]:
        return [line for line in log_lines(settings) if LOCK_BUSY in line]

    [line] = await until(lambda: daemon.running() and waiting(), 15, "the wait")
    first_refusal = time.monotonic()
    assert f'"pid":{cron.pid}' in line

    await cron_sends(sandbox, settings.database_path, cron_ids)
    with contextlib.closing(sqlite3.connect(settings.database_path)) as conn, conn:
        conn.execute(
            "INSERT INTO whatsapp_queue (recipient, body) VALUES (?, ?)",
            ("+2250501020399", "Queued during the switch"),
        )
    daemon_ids.append(7)
    # Keep the lock past the daemon's next try: it must stay idle.
    await asyncio.sleep(max(0.0, LOCK_RETRY + 0.5 - (time.monotonic() - first_refusal)))
    assert daemon.running()
    assert await sent_ids(sandbox) == Counter(cron_ids)
    assert {i: r["status"] for i, r in table(settings.database_path).items()} == {
        **dict.fromkeys(cron_ids, "sent"),
        **dict.fromkeys(daemon_ids, "pending"),
    }

    cron.finish_work()
    assert await cron.exited(5) == 0
    await until(
        lambda: (
            daemon.running()
            and all(
                r["status"] == "sent" for r in table(settings.database_path).values()
            )
        ),
        LOCK_RETRY + 10,
        "the daemon to take over",
    )
    assert await sent_ids(sandbox) == Counter(cron_ids + daemon_ids)
    after = table(settings.database_path)
    assert all(after[i]["message_id"] and not after[i]["wamid"] for i in cron_ids)
    assert all(after[i]["wamid"] and not after[i]["message_id"] for i in daemon_ids)
    assert len(waiting()) == 1  # logged once, not at every retry
    assert settings.lock_path.read_text() == f"{daemon.pid}\n"

    daemon.popen.send_signal(signal.SIGTERM)
    assert await daemon.exited(10) == Exit.OK


# -- c. the overlap guard ----------------------------------------------------------

FLOCK = shutil.which("flock")


def cron_try_command(kind: str, lock: Path) -> list[str]:
    """A cron run that gives up at once when the lock is held (LOCK_NB)."""
    if kind == "flock(1)":
        if FLOCK is None:
            pytest.skip("flock(1) from util-linux is not installed")
        return [FLOCK, "-n", str(lock), "-c", "echo got it"]
    return [sys.executable, "-c", CRON_LOCK + "print('got it')", str(lock)]


@pytest.mark.parametrize("kind", ["flock(1)", "php-like fcntl.flock"])
async def test_a_cron_run_cannot_take_the_lock_while_the_daemon_runs(
    start_sandbox: StartSandbox,
    make_settings: Callable[..., Settings],
    spawn: Spawn,
    kind: str,
) -> None:
    """While the daemon runs, a LOCK_NB cron run and a second ``run`` both give up.

    The cron run's non-blocking flock(2) fails (exit 1, it never gets to
    send); ``whatsapp-daemon run`` without ``--wait-for-lock`` exits 75
    naming the daemon's PID. Once the daemon has stopped, the cron run gets
    the lock: the leftover file is harmless.
    """
    sandbox = await start_sandbox()
    settings = make_settings(api_base_url=sandbox.url)
    create_php_table(settings.database_path, [text_row(1)])
    daemon = spawn(agent_arguments(), daemon_env(settings))
    await until(
        lambda: (
            daemon.running()
            and heartbeat_pid(settings.database_path) == daemon.pid
            and table(settings.database_path)[1]["status"] == "sent"
        ),
        15,
        "the daemon's first cycle",
    )
    command = cron_try_command(kind, settings.lock_path)

    refused = subprocess.run(
        command, input="\n", capture_output=True, text=True, timeout=10, check=False
    )
    assert refused.returncode != 0
    assert "got it" not in refused.stdout
    assert settings.lock_path.read_text() == f"{daemon.pid}\n"

    second = subprocess.run(
        [sys.executable, "-m", "whatsapp_daemon", "run"],
        cwd=settings.database_path.parent,
        env=clean_env(daemon_env(settings)),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert second.returncode == Exit.RUNNING == 75
    [line] = second.stderr.splitlines()
    assert f"PID {daemon.pid}" in line
    assert await sent_ids(sandbox) == Counter([1])

    daemon.popen.send_signal(signal.SIGTERM)
    assert await daemon.exited(10) == Exit.OK
    taken = subprocess.run(
        command, input="\n", capture_output=True, text=True, timeout=10, check=False
    )
    assert taken.returncode == 0, taken.stderr
    assert "got it" in taken.stdout


def test_default_lock_is_the_php_runbooks(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no WHATSAPP_LOCK_PATH, the daemon locks the PHP job's lock file.

    Only the default is read; the real file in /tmp is not opened.
    """
    monkeypatch.delenv("WHATSAPP_LOCK_PATH", raising=False)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.lock_path == PHP_LOCK
    assert Settings.model_fields["lock_path"].default == PHP_LOCK
    example = (ROOT / ".env.example").read_text(encoding="utf-8")
    assert f"WHATSAPP_LOCK_PATH={PHP_LOCK}\n" in example


async def test_a_php_table_with_nullable_attempts_is_sent(
    start_sandbox: StartSandbox,
    make_settings: Callable[..., Settings],
    spawn: Spawn,
) -> None:
    """``attempts`` NULL (a column without default) counts as no attempt yet."""
    sandbox = await start_sandbox()
    settings = make_settings(api_base_url=sandbox.url)
    with contextlib.closing(sqlite3.connect(settings.database_path)) as conn, conn:
        conn.execute(
            "CREATE TABLE whatsapp_queue (id INTEGER PRIMARY KEY AUTOINCREMENT,"
            " recipient TEXT, body TEXT, status TEXT DEFAULT 'pending',"
            " attempts INTEGER, created_at TEXT)"
        )
        conn.execute(
            "INSERT INTO whatsapp_queue (recipient, body) VALUES"
            " ('+2250701020321', 'Bonjour')"
        )

    daemon = spawn(agent_arguments(), daemon_env(settings))
    await until(
        lambda: table(settings.database_path)[1]["status"] == "sent",
        15,
        "the row to be sent",
    )
    row = table(settings.database_path)[1]
    assert row["attempts"] == 1
    assert [r["to"] for r in await sandbox.requests()] == ["2250701020321"]
    daemon.popen.send_signal(signal.SIGTERM)
    assert await daemon.exited(10) == Exit.OK


async def test_a_table_without_an_id_column_stops_the_daemon_untouched(
    make_settings: Callable[..., Settings], spawn: Spawn
) -> None:
    """No ``id``: exit 78 with one line, and no column added to the table."""
    settings = make_settings()
    with contextlib.closing(sqlite3.connect(settings.database_path)) as conn, conn:
        conn.execute(
            "CREATE TABLE whatsapp_queue (recipient TEXT, body TEXT,"
            " status TEXT DEFAULT 'pending', attempts INTEGER DEFAULT 0)"
        )
        conn.execute(
            "INSERT INTO whatsapp_queue (recipient, body)"
            " VALUES ('+2250701020321', 'a')"
        )
    before = columns(settings.database_path)

    daemon = spawn(agent_arguments(), daemon_env(settings))

    assert await daemon.exited(15) == 78
    [line] = [li for li in daemon.stderr().splitlines() if li.strip()]
    assert "no id column" in line
    assert columns(settings.database_path) == before
