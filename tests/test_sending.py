"""Sending: what goes to the Graph API and what each answer does to the row.

Every test runs the real :class:`Daemon` in the test's event loop against the
sandbox Graph API on 127.0.0.1, with a real SQLite file in ``tmp_path``.
The helpers at the top are shared with the other daemon-level test modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import TOKEN, StartSandbox, daemon_env, until

from whatsapp_daemon import logs, outcomes, status
from whatsapp_daemon.api import WhatsAppQueue, template_message, text_message
from whatsapp_daemon.daemon import Daemon
from whatsapp_daemon.lock import InstanceLock
from whatsapp_daemon.settings import Settings

A, B, C = "+2250701020304", "+2250501020305", "+2250102030406"
D, E = "+2250701020307", "+2250501020308"
NEW_TOKEN = "EAA-new-token-after-renewal-000000000000"  # made up, never valid
FINISHED = ("sent", "failed", "unknown")
LOG_LINE = r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] whatsapp_queue\.(\w+): (.+)$"


# -- helpers shared with test_rate, test_queue and test_logs ------------------


class DaemonRun:
    """A :class:`Daemon` running as a task of the test's event loop."""

    def __init__(self, daemon: Daemon, task: asyncio.Task[None]) -> None:
        self.daemon = daemon
        self.task = task

    async def until(
        self, probe: Callable[[], Any], timeout: float = 10.0, what: str = "it"
    ) -> Any:
        """Like :func:`until`, but fail at once if the daemon died."""

        def alive_probe() -> Any:
            if self.task.done():
                self.task.result()  # raises what killed it
                raise AssertionError("the daemon returned before being stopped")
            return probe()

        return await until(alive_probe, timeout, what)


@contextlib.asynccontextmanager
async def running_daemon(
    settings: Settings, **options: Any
) -> AsyncIterator[DaemonRun]:
    """Run a daemon under the instance lock; stop it cleanly on exit."""
    options.setdefault("env_file", None)
    lock = InstanceLock(settings.lock_path)
    lock.acquire()
    stop = asyncio.Event()
    daemon = Daemon(settings, lock, **options)
    task = asyncio.create_task(daemon.run(stop))
    try:
        yield DaemonRun(daemon, task)
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, 15)
        finally:
            lock.release()


def rows(path: Path) -> dict[int, dict[str, Any]]:
    """Read every row of the queue, by id, on a connection of our own."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.row_factory = sqlite3.Row
        found = conn.execute("SELECT * FROM whatsapp_queue").fetchall()
    return {row["id"]: dict(row) for row in found}


def all_finished(path: Path) -> Callable[[], bool]:
    """A probe: every row of the queue has reached a final status."""
    return lambda: all(row["status"] in FINISHED for row in rows(path).values())


def insert_raw(path: Path, **columns: Any) -> int:
    """Insert a row with plain SQL, the way the PHP application does."""
    names = ", ".join(columns)
    marks = ", ".join("?" for _ in columns)
    with contextlib.closing(sqlite3.connect(path, timeout=60)) as conn:
        cursor = conn.execute(
            f"INSERT INTO whatsapp_queue ({names}) VALUES ({marks})",
            tuple(columns.values()),
        )
        conn.commit()
    return int(cursor.lastrowid or 0)


def enqueue_texts(path: Path, *recipients: str) -> list[int]:
    """Queue one text message per recipient; return the row ids."""
    messages = [text_message(r, f"Bonjour {i}") for i, r in enumerate(recipients)]
    return WhatsAppQueue(path).add(messages)


async def requests_to(sandbox: Any, recipient: str) -> list[dict[str, Any]]:
    """The requests the sandbox answered for one E.164 recipient."""
    digits = recipient.lstrip("+")
    return [r for r in await sandbox.requests() if r["to"] == digits]


@contextlib.contextmanager
def log_to(path: Path, **options: Any) -> Iterator[Path]:
    """Write the ``whatsapp_queue`` log to ``path``; undo it afterwards."""
    logs.setup(path, **options)
    try:
        yield path
    finally:
        for handler in list(logs.logger.handlers):
            logs.logger.removeHandler(handler)
            handler.close()
        logs.logger.setLevel(logging.NOTSET)
        logs.logger.propagate = True


def log_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


@pytest.fixture(autouse=True)
def local_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep HTTP on loopback and settings out of the outer environment."""
    for key in list(os.environ):
        if key.lower().endswith("_proxy") or key.startswith("WHATSAPP_"):
            monkeypatch.delenv(key)


@pytest.fixture
def log_file(make_settings: Callable[..., Settings]) -> Iterator[Path]:
    """The daemon's log file, configured as ``whatsapp-daemon run`` does."""
    with log_to(make_settings().log_path, secret=TOKEN) as path:
        yield path


# -- what is sent ---------------------------------------------------------------


async def test_text_message_is_sent_with_meta_body_and_its_wamid_stored(
    start_sandbox: StartSandbox, make_settings: Callable[..., Settings]
) -> None:
    """A text row becomes a Cloud API text body; the row ends sent with its wamid."""
    sandbox = await start_sandbox()
    settings = make_settings(api_base_url=sandbox.url)
    [row_id] = enqueue_texts(settings.database_path, A)

    async with running_daemon(settings) as run:
        await run.until(all_finished(settings.database_path), what="the send")

    [request] = await sandbox.requests()
    assert request["body"] == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "2250701020304",
        "biz_opaque_callback_data": str(row_id),
        "type": "text",
        "text": {"body": "Bonjour 0", "preview_url": False},
    }
    row = rows(settings.database_path)[row_id]
    assert (row["status"], row["attempts"]) == ("sent", 1)
    assert row["wamid"] == request["message_id"]
    assert row["wamid"].startswith("wamid.")
    assert row["sent_at"] is not None


async def test_template_message_sends_body_parameters_in_order(
    start_sandbox: StartSandbox, make_settings: Callable[..., Settings]
) -> None:
    """A template row sends its name, language and body parameters in order."""
    sandbox = await start_sandbox()
    settings = make_settings(api_base_url=sandbox.url)
    message = template_message(B, "rappel_paiement", "fr", ["Aïcha", "52 000"])
    [row_id] = WhatsAppQueue(settings.database_path).add([message])

    async with running_daemon(settings) as run:
        await run.until(all_finished(settings.database_path), what="the send")

    [request] = await sandbox.requests()
    body = request["body"]
    assert (body["to"], body["type"]) == ("2250501020305", "template")
    assert body["biz_opaque_callback_data"] == str(row_id)
    assert body["template"] == {
        "name": "rappel_paiement",
        "language": {"code": "fr"},
        "components": [
            {
                "type": "body",
                "parameters": [
                    {"type": "text", "text": "Aïcha"},
                    {"type": "text", "text": "52 000"},
                ],
            }
        ],
    }
    row = rows(settings.database_path)[row_id]
    assert (row["status"], row["wamid"]) == ("sent", request["message_id"])


# -- retries and errors -----------------------------------------------------


async def test_transient_error_is_retried_then_sent(
    start_sandbox: StartSandbox, make_settings: Callable[..., Settings]
) -> None:
    """One 131000 answer is retried; the row is sent with two attempts counted."""
    sandbox = await start_sandbox(script={A: [131000, "ok"]})
    settings = make_settings(api_base_url=sandbox.url)
    [row_id] = enqueue_texts(settings.database_path, A)

    async with running_daemon(settings) as run:
        await run.until(all_finished(settings.database_path), what="the send")

    codes = [r["code"] for r in await sandbox.requests()]
    assert codes == [131000, None]
    row = rows(settings.database_path)[row_id]
    assert (row["status"], row["attempts"]) == ("sent", 2)


async def test_three_transient_errors_fail_the_row_with_meta_error(
    start_sandbox: StartSandbox, make_settings: Callable[..., Settings]
) -> None:
    """After three 131000 answers the row fails, keeping Meta's code and trace id."""
    sandbox = await start_sandbox(script={A: ["always:131000"]})
    settings = make_settings(api_base_url=sandbox.url)
    [row_id] = enqueue_texts(settings.database_path, A)

    async with running_daemon(settings) as run:
        await run.until(all_finished(settings.database_path), what="the failure")

    assert len(await sandbox.requests()) == 3
    row = rows(settings.database_path)[row_id]
    assert (row["status"], row["attempts"], row["error_code"]) == ("failed", 3, 131000)
    assert "Something went wrong" in row["error_message"]
    details = json.loads(row["error_details"])
    assert details["code"] == 131000
    assert details["fbtrace_id"]


async def test_attempts_made_before_a_restart_still_count(
    start_sandbox: StartSandbox, make_settings: Callable[..., Settings]
) -> None:
    """A row that already used two attempts gets only the third one."""
    sandbox = await start_sandbox(script={A: ["always:131000"]})
    settings = make_settings(api_base_url=sandbox.url)
    [row_id] = enqueue_texts(settings.database_path, A)
    with contextlib.closing(sqlite3.connect(settings.database_path)) as conn:
        conn.execute("UPDATE whatsapp_queue SET attempts = 2 WHERE id = ?", (row_id,))
        conn.commit()

    async with running_daemon(settings) as run:
        await run.until(all_finished(settings.database_path), what="the failure")

    assert len(await sandbox.requests()) == 1
    row = rows(settings.database_path)[row_id]
    assert (row["status"], row["attempts"]) == ("failed", 3)


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        pytest.param(131026, "Message Undeliverable", id="131026-undeliverable"),
        pytest.param(132000, "paramètres", id="132000-parameter-count"),
        pytest.param(131047, "template", id="131047-needs-a-template"),
    ],
)
async def test_permanent_error_fails_at_once_without_retry(
    start_sandbox: StartSandbox,
    make_settings: Callable[..., Settings],
    code: int,
    reason: str,
) -> None:
    """A permanent error fails the row after its single attempt."""
    sandbox = await start_sandbox(script={A: [f"always:{code}"]})
    settings = make_settings(api_base_url=sandbox.url)
    [row_id] = enqueue_texts(settings.database_path, A)

    async with running_daemon(settings) as run:
        await run.until(all_finished(settings.database_path), what="the failure")
        await asyncio.sleep(3 * settings.poll_interval)  # room for a wrong retry

    assert len(await sandbox.requests()) == 1
    row = rows(settings.database_path)[row_id]
    assert (row["status"], row["attempts"], row["error_code"]) == ("failed", 1, code)
    assert reason in row["error_message"]


async def test_throughput_error_is_retried_without_spending_an_attempt(
    start_sandbox: StartSandbox,
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 130429 answer is refunded: the row is sent with one attempt counted."""
    throttle = outcomes.RULES[130429]._replace(pause=0.2)
    monkeypatch.setitem(outcomes.RULES, 130429, throttle)
    sandbox = await start_sandbox(script={A: [130429, "ok"]})
    settings = make_settings(api_base_url=sandbox.url)
    ids = enqueue_texts(settings.database_path, A, B, C)

    async with running_daemon(settings) as run:
        await run.until(all_finished(settings.database_path), what="the sends")

    assert [r["code"] for r in await requests_to(sandbox, A)] == [130429, None]
    queue = rows(settings.database_path)
    assert {queue[i]["status"] for i in ids} == {"sent"}
    assert queue[ids[0]]["attempts"] == 1


# -- account-level stop ---------------------------------------------------------


async def test_expired_token_stops_sending_until_a_new_token_is_written(
    start_sandbox: StartSandbox,
    make_settings: Callable[..., Settings],
    log_file: Path,
    tmp_path: Path,
) -> None:
    """Error 190 halts every send and keeps rows pending; a new token resumes."""
    sandbox = await start_sandbox(access_token=NEW_TOKEN)
    settings = make_settings(api_base_url=sandbox.url, concurrency=1)
    ids = enqueue_texts(settings.database_path, A, B, C, D, E)
    env_file = tmp_path / ".env"

    async with running_daemon(settings, env_file=str(env_file)) as run:
        stopped = await run.until(
            lambda: status.gather(settings, datetime.now(UTC))["sending_stopped"],
            what="the stop to be recorded",
        )
        await asyncio.sleep(3 * settings.poll_interval)  # room for wrong sends

        assert stopped["code"] == 190
        assert len(await sandbox.requests()) == 1
        queue = rows(settings.database_path)
        assert {(queue[i]["status"], queue[i]["attempts"]) for i in ids} == {
            ("pending", 0)
        }
        assert any(".CRITICAL: " in line for line in log_lines(log_file))

        env_file.write_text(f"WHATSAPP_ACCESS_TOKEN={NEW_TOKEN}\n", encoding="utf-8")
        await run.until(all_finished(settings.database_path), what="the resume")

    queue = rows(settings.database_path)
    assert {queue[i]["status"] for i in ids} == {"sent"}
    assert status.gather(settings, datetime.now(UTC))["sending_stopped"] is None


# -- uncertain outcomes and bad rows ----------------------------------------------


async def test_read_timeout_marks_row_unknown_and_never_resends_it(
    start_sandbox: StartSandbox, make_settings: Callable[..., Settings]
) -> None:
    """A request that timed out may have reached Meta: unknown, sent only once."""
    sandbox = await start_sandbox(script={A: ["hang"]}, hang_seconds=1.5)
    settings = make_settings(api_base_url=sandbox.url, http_timeout=0.5)
    [row_id] = enqueue_texts(settings.database_path, A)

    async with running_daemon(settings) as run:
        await run.until(all_finished(settings.database_path), what="the timeout")
        # The sandbox records a hung request when its wait ends.
        await run.until(lambda: requests_to(sandbox, A), what="the hang to end")
        await asyncio.sleep(3 * settings.poll_interval)  # room for a wrong resend

    assert len(await requests_to(sandbox, A)) == 1
    row = rows(settings.database_path)[row_id]
    assert (row["status"], row["attempts"]) == ("unknown", 1)
    assert "inconnu" in row["error_message"]


BAD_ROWS = {
    "recipient 123": ({"recipient": "123", "body": "Bonjour"}, "trop court"),
    "a million digits": (
        {"recipient": "9" * 1_000_000, "body": "x"},
        "numéro trop long",
    ),
    "empty body": ({"recipient": B, "body": "  "}, "texte vide"),
    "unknown type": (
        {"recipient": C, "message_type": "carousel", "body": "x"},
        "message_type inconnu",
    ),
    "params not JSON": (
        {
            "recipient": D,
            "message_type": "template",
            "template_name": "rappel_paiement",
            "template_language": "fr",
            "template_params": "Aïcha, 52 000",
        },
        "template_params n'est pas du JSON",
    ),
}


async def test_bad_rows_fail_with_a_reason_and_the_daemon_goes_on(
    start_sandbox: StartSandbox, make_settings: Callable[..., Settings]
) -> None:
    """Malformed rows are failed with a reason; the good row of the batch is sent."""
    sandbox = await start_sandbox()
    settings = make_settings(api_base_url=sandbox.url)
    enqueue_texts(settings.database_path)  # creates the table
    bad = {
        name: insert_raw(settings.database_path, **columns)
        for name, (columns, _) in BAD_ROWS.items()
    }
    good = insert_raw(settings.database_path, recipient=A, body="Bonjour")

    async with running_daemon(settings) as run:
        await run.until(all_finished(settings.database_path), what="the batch")
        await asyncio.sleep(2 * settings.poll_interval)
        assert not run.task.done()

    queue = rows(settings.database_path)
    for name, row_id in bad.items():
        reason = BAD_ROWS[name][1]
        assert queue[row_id]["status"] == "failed", name
        assert reason in queue[row_id]["error_message"], name
        assert queue[row_id]["attempts"] == 0, name
    assert queue[good]["status"] == "sent"
    assert [r["to"] for r in await sandbox.requests()] == ["2250701020304"]


# -- secrets ------------------------------------------------------------------


async def test_access_token_is_never_written_to_log_database_or_status(
    start_sandbox: StartSandbox,
    make_settings: Callable[..., Settings],
    log_file: Path,
    tmp_path: Path,
) -> None:
    """The token appears in no log line, no database byte, no status output."""
    sandbox = await start_sandbox(
        script={A: [131000, "ok"], B: ["always:131026"], C: ["always:131000"]}
    )
    settings = make_settings(api_base_url=sandbox.url, log_level="DEBUG")
    logs.logger.setLevel("DEBUG")
    enqueue_texts(settings.database_path, A, B, C, D)

    async with running_daemon(settings) as run:
        await run.until(all_finished(settings.database_path), what="the sends")

    shown = subprocess.run(
        [sys.executable, "-m", "whatsapp_daemon", "status", "--json"],
        cwd=tmp_path,
        env=daemon_env(settings),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert json.loads(shown.stdout)["counts"]["sent"] == 2
    assert TOKEN not in shown.stdout + shown.stderr
    assert TOKEN not in log_file.read_text(encoding="utf-8")
    assert len(log_lines(log_file)) > 5
    for path in tmp_path.glob("database.sqlite*"):
        assert TOKEN.encode() not in path.read_bytes(), path.name
