"""The ``whatsapp_queue`` table: schema, migration, claims, runbook, cleanup.

Real SQLite files in ``tmp_path``; other programs (the PHP application, the
runbook's ``sqlite3`` commands) are played by plain ``sqlite3`` connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import StartSandbox
from test_sending import (
    A,
    B,
    C,
    all_finished,
    insert_raw,
    log_lines,
    log_to,
    rows,
    running_daemon,
)

from whatsapp_daemon import deliveries, payloads
from whatsapp_daemon import status as queue_status
from whatsapp_daemon.models import MessageType, NewMessage
from whatsapp_daemon.queue import COLUMNS, QueueDB
from whatsapp_daemon.settings import Settings
from whatsapp_daemon.times import fmt

LEASE = timedelta(minutes=10)
UTC_TEXT = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
RUNBOOK_QUERIES = [
    "SELECT status, COUNT(*) FROM whatsapp_queue GROUP BY status",
    "SELECT * FROM whatsapp_queue ORDER BY updated_at DESC LIMIT 10",
    "SELECT batch_id, COUNT(*) FROM whatsapp_queue GROUP BY batch_id",
]
# The table as an older PHP application created it: fewer columns than
# ours, and one of its own.
PHP_TABLE = """
CREATE TABLE whatsapp_queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient TEXT NOT NULL,
    body TEXT,
    status TEXT NOT NULL DEFAULT 'pending',
    created_at TEXT DEFAULT CURRENT_TIMESTAMP,
    php_campaign_ref TEXT
)
"""


def columns(path: Path, table: str = "whatsapp_queue") -> list[str]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


def schema(path: Path) -> list[tuple[str, str]]:
    """Every object of the database with its SQL, to compare two states."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(
            "SELECT name, sql FROM sqlite_master ORDER BY name"
        ).fetchall()


def php_database(path: Path) -> Path:
    """Create the PHP application's table with two rows in it."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(PHP_TABLE)
        conn.executemany(
            "INSERT INTO whatsapp_queue (recipient, body, status, php_campaign_ref)"
            " VALUES (?, ?, ?, ?)",
            [(A, "Déjà envoyé", "sent", "C-1"), (B, "En attente", "pending", "C-2")],
        )
        conn.commit()
    return path


def text(recipient: str, batch: str | None = None) -> NewMessage:
    return NewMessage(recipient, MessageType.TEXT, body="Bonjour", batch_id=batch)


# -- schema and migration ----------------------------------------------------------


def test_new_file_gets_the_tables_in_wal_mode(tmp_path: Path) -> None:
    """Opening a new file creates the three tables and turns WAL on."""
    path = tmp_path / "var" / "database.sqlite"
    QueueDB.open(path).close()

    tables = {name for name, sql in schema(path) if sql and "TABLE" in sql}
    assert {"whatsapp_queue", "whatsapp_attempts", "whatsapp_daemon_state"} <= tables
    assert set(COLUMNS) <= set(columns(path))
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_migration_keeps_php_rows_and_columns_and_adds_ours(tmp_path: Path) -> None:
    """A PHP-made table keeps its rows and extra column and gains ours."""
    path = php_database(tmp_path / "database.sqlite")

    QueueDB.open(path).close()

    found = columns(path)
    assert "php_campaign_ref" in found
    assert set(COLUMNS) <= set(found)
    by_recipient = {row["recipient"]: row for row in rows(path).values()}
    assert by_recipient[A]["php_campaign_ref"] == "C-1"
    assert (by_recipient[B]["status"], by_recipient[B]["attempts"]) == ("pending", 0)
    assert by_recipient[B]["message_type"] == "text"


def test_migrating_twice_changes_nothing(tmp_path: Path) -> None:
    """A second migration leaves the schema and the rows as they were."""
    path = php_database(tmp_path / "database.sqlite")
    QueueDB.open(path).close()
    before = (schema(path), rows(path))

    QueueDB.open(path).close()

    assert (schema(path), rows(path)) == before


# -- rows written by other programs -------------------------------------------------


@pytest.mark.parametrize(
    "made_by", [pytest.param("daemon", id="our-table"), pytest.param("php", id="php")]
)
def test_plain_insert_by_another_program_is_claimed(
    tmp_path: Path, made_by: str
) -> None:
    """An INSERT of just recipient and body is due and builds a text message."""
    path = tmp_path / "database.sqlite"
    if made_by == "php":
        php_database(path)
    db = QueueDB.open(path)
    db.conn.execute("DELETE FROM whatsapp_queue")
    row_id = insert_raw(path, recipient=C, body="Bonjour de PHP")

    [claimed] = db.claim(datetime.now(UTC), 10, "test", LEASE)
    db.close()

    assert claimed.id == row_id
    payload = payloads.build(claimed, "CI")
    assert (payload["to"], payload["text"]["body"]) == (
        "2250102030406",
        "Bonjour de PHP",
    )


async def test_daemon_sends_a_row_inserted_with_plain_sql(
    start_sandbox: StartSandbox, make_settings: Callable[..., Settings]
) -> None:
    """The daemon sends a row another program inserted with two columns."""
    sandbox = await start_sandbox()
    settings = make_settings(api_base_url=sandbox.url)
    QueueDB.open(settings.database_path).close()
    row_id = insert_raw(settings.database_path, recipient=A, body="Bonjour")

    async with running_daemon(settings) as run:
        await run.until(all_finished(settings.database_path), what="the send")

    assert rows(settings.database_path)[row_id]["status"] == "sent"
    assert [r["to"] for r in await sandbox.requests()] == ["2250701020304"]


# -- concurrency ------------------------------------------------------------------


def claim_all(
    path: Path, owner: str, done: threading.Event, started: threading.Barrier
) -> list[int]:
    """Claim small batches on a connection of our own until nothing is left.

    Each claimer waits at `started` after its first batch, so that both are
    known to hold rows before they race freely; without it, a busy machine
    may run one thread to the end before the other is scheduled.
    """
    db = QueueDB.open(path)
    claimed: list[int] = []
    try:
        while True:
            batch = db.claim(datetime.now(UTC), 7, owner, LEASE)
            claimed += [message.id for message in batch]
            if len(claimed) == len(batch):
                started.wait(30)
            if not batch and done.is_set() and not db.has_due(datetime.now(UTC)):
                return claimed
            # Leave the lock free a moment, as the daemon does between
            # batches; a tight loop would starve SQLite's busy waiters.
            time.sleep(0.001)
    finally:
        db.close()


def php_writer(path: Path, count: int, errors: list[BaseException]) -> None:
    """Insert rows one transaction each, with PHP PDO's 60 s busy timeout."""
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=60)) as conn:
            for i in range(count):
                conn.execute(
                    "INSERT INTO whatsapp_queue (recipient, body) VALUES (?, ?)",
                    (f"+225070102{i:04d}", f"Message {i}"),
                )
                conn.commit()
    except BaseException as exc:
        errors.append(exc)


def test_concurrent_claims_never_share_a_row_and_never_lock_out_a_writer(
    tmp_path: Path,
) -> None:
    """Two claimers and a 500-row writer: each row claimed once, no lock error."""
    path = tmp_path / "database.sqlite"
    db = QueueDB.open(path)
    db.enqueue([text(f"+225050102{i:04d}") for i in range(200)], datetime.now(UTC))
    db.close()
    done, started, errors = threading.Event(), threading.Barrier(2), []
    results: dict[str, list[int]] = {}

    def claimer(owner: str) -> None:
        try:
            results[owner] = claim_all(path, owner, done, started)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=claimer, args=(n,)) for n in ("one", "two")]
    writer = threading.Thread(target=php_writer, args=(path, 500, errors))
    for thread in [*workers, writer]:
        thread.start()
    writer.join(60)
    done.set()
    for thread in workers:
        thread.join(60)

    assert errors == []
    one, two = results["one"], results["two"]
    assert set(one).isdisjoint(two)
    assert len(one) + len(two) == len(set(one) | set(two)) == 700
    assert one and two


# -- the runbook and the stored times --------------------------------------------


def test_runbook_queries_run_unchanged(db: QueueDB, tmp_path: Path) -> None:
    """The three queries of the runbook work on the daemon's table."""
    db.enqueue([text(A, "B-1"), text(B, "B-1"), text(C)], datetime.now(UTC))
    path = tmp_path / "database.sqlite"

    with contextlib.closing(sqlite3.connect(path)) as conn:
        by_status, latest, by_batch = (
            conn.execute(query).fetchall() for query in RUNBOOK_QUERIES
        )

    assert by_status == [("pending", 3)]
    assert len(latest) == 3
    assert sorted(by_batch, key=str) == sorted([(None, 1), ("B-1", 2)], key=str)


@pytest.mark.skipif(shutil.which("sqlite3") is None, reason="no sqlite3 CLI here")
@pytest.mark.parametrize(
    "query", [pytest.param(q, id=q.split("FROM")[0].strip()) for q in RUNBOOK_QUERIES]
)
def test_runbook_queries_run_in_the_sqlite3_command(
    db: QueueDB, tmp_path: Path, query: str
) -> None:
    """The runbook's ``sqlite3 var/database.sqlite "..."`` lines work as written."""
    db.enqueue([text(A, "B-1"), text(B)], datetime.now(UTC))

    shown = subprocess.run(
        ["sqlite3", str(tmp_path / "database.sqlite"), query],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )

    assert shown.stderr == ""
    assert shown.stdout.strip()


def test_times_are_stored_in_utc_as_sqlite_text(db: QueueDB, tmp_path: Path) -> None:
    """Times written by us or by SQLite defaults are UTC ``YYYY-MM-DD HH:MM:SS``."""
    in_paris = datetime(2026, 3, 2, 13, 0, 5, tzinfo=timezone(timedelta(hours=1)))
    [ours] = db.enqueue([text(A)], in_paris)
    theirs = insert_raw(tmp_path / "database.sqlite", recipient=B, body="Bonjour")
    before = datetime.now(UTC).replace(microsecond=0)

    row = db.get(ours)
    assert row is not None
    assert row["created_at"] == row["scheduled_at"] == "2026-03-02 12:00:05"
    plain = db.get(theirs)
    assert plain is not None
    for name in ("created_at", "updated_at", "scheduled_at"):
        assert UTC_TEXT.match(plain[name]), name
        stored = datetime.fromisoformat(plain[name]).replace(tzinfo=UTC)
        assert abs(stored - before) < timedelta(seconds=5), name


# -- cleanup and recovery -----------------------------------------------------


def aged_rows(db: QueueDB, now: datetime) -> dict[str, int]:
    """One row per case, its last update set relative to ``now``."""
    cases = {
        "old sent": ("sent", 31),
        "old failed": ("failed", 45),
        "old pending": ("pending", 40),
        "old unknown": ("unknown", 40),
        "recent sent": ("sent", 29.5),
        "recent failed": ("failed", 1),
    }
    ids = db.enqueue([text(A) for _ in cases], now)
    for row_id, (status, days) in zip(ids, cases.values(), strict=True):
        # Pending rows are scheduled far ahead so that a daemon leaves them.
        db.conn.execute(
            "UPDATE whatsapp_queue SET status = ?, updated_at = ?,"
            " scheduled_at = '2999-01-01 00:00:00' WHERE id = ?",
            (status, fmt(now - timedelta(days=days)), row_id),
        )
    return dict(zip(cases, ids, strict=True))


def test_cleanup_deletes_only_old_finished_rows(db: QueueDB) -> None:
    """Sent and failed rows past the retention go; pending, unknown, recent stay."""
    now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    ids = aged_rows(db, now)

    deleted = db.cleanup(now, retention_days=30)

    assert deleted == 2
    left = {name for name, row_id in ids.items() if db.get(row_id)}
    assert left == {"old pending", "old unknown", "recent sent", "recent failed"}


async def test_daemon_cleans_up_once_a_day_and_logs_it(
    make_settings: Callable[..., Settings], db: QueueDB
) -> None:
    """The daemon cleans at start, not again that day, then after one day."""
    settings = make_settings(poll_interval=0.05)
    clock = [datetime(2026, 5, 1, 12, 0, tzinfo=UTC).timestamp()]
    ids = aged_rows(db, datetime.fromtimestamp(clock[0], UTC))
    cleaned = "whatsapp_queue.INFO: Nettoyage des anciens messages"

    with log_to(settings.log_path) as log:
        async with running_daemon(settings, clock=lambda: clock[0]) as run:
            await run.until(lambda: any(cleaned in x for x in log_lines(log)))
            await asyncio.sleep(5 * settings.poll_interval)  # same-day cycles
            assert sum(cleaned in x for x in log_lines(log)) == 1
            clock[0] += timedelta(days=1, seconds=1).total_seconds()
            await run.until(
                lambda: sum(cleaned in x for x in log_lines(log)) == 2,
                what="the next day's cleanup",
            )
        lines = [x for x in log_lines(log) if cleaned in x]

    assert lines[0].endswith(' {"deleted":2,"retentionDays":30}')
    assert lines[1].endswith(' {"deleted":1,"retentionDays":30}')
    assert db.get(ids["recent sent"]) is None
    assert db.get(ids["recent failed"]) is not None


def test_recover_requeues_claims_and_flags_interrupted_sends(db: QueueDB) -> None:
    """A claim with no request under way goes back; one mid-request is unknown."""
    now = datetime.now(UTC)
    idle, sending = db.enqueue([text(A), text(B)], now)
    db.claim(now, 10, "pid:1", LEASE)
    db.begin_attempt(sending, now)

    assert db.recover(now) == (1, 1)

    idle_row, sending_row = db.get(idle), db.get(sending)
    assert idle_row is not None and sending_row is not None
    assert (idle_row["status"], idle_row["claimed_by"]) == ("pending", None)
    assert (sending_row["status"], sending_row["attempts"]) == ("unknown", 1)
    assert "inconnu" in sending_row["error_message"]


def test_statuses_received_during_a_crashed_request_settle_the_row_at_restart(
    db: QueueDB,
) -> None:
    """A request under way when the daemon died, but Meta reported it read:
    the recovery stores the wamid and the status instead of ``unknown``."""
    now = datetime.now(UTC)
    [message_id] = db.enqueue(
        [NewMessage("+2250701020304", MessageType.TEXT, "x")], now
    )
    [claimed] = db.claim(now, 1, "pid:1", timedelta(minutes=10))
    db.begin_attempt(claimed.id, now)
    wamid = "wamid.CRASHED0001"
    notification = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "1",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "statuses": [
                                {
                                    "id": wamid,
                                    "status": status,
                                    "timestamp": str(int(now.timestamp()) + i),
                                    "recipient_id": "2250701020304",
                                    "biz_opaque_callback_data": str(message_id),
                                }
                                for i, status in enumerate(("sent", "read"))
                            ]
                        },
                    }
                ],
            }
        ],
    }
    deliveries.handle(db, notification, now)
    assert db.get(message_id)["status"] == "processing"  # kept, not applied

    assert db.recover(now) == (0, 1)

    row = db.get(message_id)
    assert (row["status"], row["wamid"]) == ("read", wamid)


async def test_times_with_an_offset_are_due_at_their_utc_moment(
    start_sandbox: StartSandbox, make_settings: Callable[..., Settings]
) -> None:
    """PHP's date('c') writes offsets: +02:00 is not sent two hours late,
    -05:00 not five hours early; an unreadable time fails its row."""
    box = await start_sandbox()
    settings = make_settings(api_base_url=box.url)
    QueueDB.open(settings.database_path).close()
    now = datetime.now(UTC)
    soon = (now + timedelta(seconds=2)).astimezone(timezone(timedelta(hours=2)))
    later = (now + timedelta(hours=1)).astimezone(timezone(timedelta(hours=-5)))
    path = settings.database_path
    soon_id = insert_raw(path, recipient=A, body="x", scheduled_at=soon.isoformat())
    later_id = insert_raw(path, recipient=B, body="y", scheduled_at=later.isoformat())
    bad_id = insert_raw(path, recipient=C, body="z", scheduled_at="demain 8h")
    # SQLite alone would read these as a Julian day and as a day in 2000.
    number_id = insert_raw(path, recipient=C, body="n", scheduled_at="2461500")
    time_id = insert_raw(path, recipient=C, body="t", scheduled_at="23:59")
    # ... and this one as 2 March.
    day_id = insert_raw(path, recipient=C, body="d", scheduled_at="2026-02-30 08:00")

    async with running_daemon(settings) as run:
        await run.until(lambda: rows(path)[soon_id]["status"] == "sent", what="send")
        await run.until(lambda: rows(path)[bad_id]["status"] == "failed", what="fail")
        report = queue_status.gather(settings, datetime.now(UTC))

    sent_at = datetime.fromisoformat(rows(path)[soon_id]["sent_at"]).replace(tzinfo=UTC)
    assert sent_at >= soon.replace(microsecond=0)
    assert rows(path)[later_id]["status"] == "pending"
    assert "heure d'envoi illisible" in rows(path)[bad_id]["error_message"]
    assert "demain 8h" in rows(path)[bad_id]["error_message"]
    assert rows(path)[number_id]["status"] == rows(path)[time_id]["status"] == "failed"
    assert rows(path)[day_id]["status"] == "failed"
    assert "illisible ou impossible" in rows(path)[day_id]["error_message"]
    upcoming = report["next_scheduled"]
    assert upcoming["id"] == later_id
    # A fraction of a second counts as the next second.
    due = later.astimezone(UTC) + timedelta(seconds=0.999)
    assert upcoming["scheduled_at"] == due.strftime("%Y-%m-%d %H:%M:%S")
