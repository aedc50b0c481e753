"""The ``whatsapp_queue`` table in SQLite: schema, claims and outcomes.

Every time is stored in UTC as ``YYYY-MM-DD HH:MM:SS`` (SQLite's own
``datetime('now')`` format); the attempt log adds milliseconds. Every
read-then-write transaction starts with ``BEGIN IMMEDIATE`` so that a
concurrent writer (the PHP application) waits instead of failing with
"database is locked", and no transaction is held across an HTTP call.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from . import deliveries, messages
from .errors import ConfigError
from .models import NewMessage, QueuedMessage, Status
from .times import fmt, fmt_attempt, parse

BUSY_TIMEOUT = 60.0  # seconds a write waits for another writer (PHP's PDO default)
ATTEMPT_LOG_DAYS = 2  # how long the attempt log keeps its lines

# Keys of whatsapp_daemon_state, written by the daemon, read by the status.
HALT_KEY = "halt"  # why sending is stopped (JSON), while it is
HEARTBEAT_KEY = "heartbeat"  # the daemon's PID and the time of its last cycle
CLEANUP_KEY = "last_cleanup"  # when old messages were last removed

# Columns the daemon needs, with their declarations. A table created by
# another program gets the missing ones added; its extra columns are kept.
COLUMNS: dict[str, str] = {
    "recipient": "TEXT NOT NULL DEFAULT ''",
    "message_type": "TEXT NOT NULL DEFAULT 'text'",
    "body": "TEXT",
    "template_name": "TEXT",
    "template_language": "TEXT",
    "template_params": "TEXT",
    "batch_id": "TEXT",
    "status": "TEXT NOT NULL DEFAULT 'pending'",
    "attempts": "INTEGER NOT NULL DEFAULT 0",
    "scheduled_at": "TEXT",
    "created_at": "TEXT",
    "updated_at": "TEXT",
    "claimed_by": "TEXT",
    "lease_until": "TEXT",
    "sending_since": "TEXT",
    "last_attempt_at": "TEXT",
    "sent_at": "TEXT",
    "wamid": "TEXT",
    "error_code": "INTEGER",
    "error_message": "TEXT",
    "error_details": "TEXT",
    "import_id": "INTEGER",
    "content": "TEXT",
    "reply_to": "TEXT",
    "delivered_at": "TEXT",
    "read_at": "TEXT",
}

# A row's due time as UTC text in SQLite's format: '' when none is given
# (due at once), NULL when it cannot be read (such rows are failed, see
# QueueDB.fail_unreadable_times). It must start with a date: SQLite would
# read a bare number as a Julian day and a bare time as a day in 2000. The
# date must exist: SQLite would move 2026-02-30 to 2 March, so it is
# compared with itself once normalised. ISO 8601 with a "T" or an offset,
# as PHP's date('c') writes, is converted to UTC by datetime(); a fraction
# of a second counts as the next second, so that a message never leaves
# before its time.
SCHEDULED = (
    "(CASE WHEN coalesce(scheduled_at, '') = '' THEN ''"
    " WHEN scheduled_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*'"
    " AND date(substr(scheduled_at, 1, 10), '+0 days')"
    " = substr(scheduled_at, 1, 10)"
    " THEN datetime(scheduled_at, '+0.999 seconds') END)"
)

# A hold ``h`` in force that keeps back the message ``q`` (table aliases):
# the same template and language, in every batch or in the message's (see
# ALL_BATCHES for how ``batch_id`` names them).
HELD_BY = (
    "h.released_at IS NULL AND q.message_type = 'template'"
    " AND h.template_name = q.template_name"
    " AND h.template_language = q.template_language"
    " AND h.batch_id IN ('*', ':' || coalesce(q.batch_id, ''))"
)

# A pending message is due once its time has come, unless its batch is
# paused or cancelled, its template is held, or the import that adds it has
# not finished.
DUE = (
    SCHEDULED + " <= ?"
    " AND NOT EXISTS (SELECT 1 FROM whatsapp_imports"
    "   WHERE whatsapp_imports.id = whatsapp_queue.import_id"
    "     AND whatsapp_imports.state = 'importing')"
    " AND NOT EXISTS (SELECT 1 FROM whatsapp_batches"
    "   WHERE whatsapp_batches.batch_id = whatsapp_queue.batch_id"
    "     AND whatsapp_batches.state != 'active')"
    " AND NOT EXISTS (SELECT 1 FROM whatsapp_holds h, whatsapp_queue q"
    "   WHERE q.id = whatsapp_queue.id AND " + HELD_BY + ")"
)

P = ParamSpec("P")
T = TypeVar("T")

_NOW = "strftime('%Y-%m-%d %H:%M:%S', 'now')"

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS whatsapp_queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient TEXT NOT NULL,
    message_type TEXT NOT NULL DEFAULT 'text',
    body TEXT,
    template_name TEXT,
    template_language TEXT,
    template_params TEXT,
    batch_id TEXT,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    scheduled_at TEXT NOT NULL DEFAULT ({_NOW}),
    created_at TEXT NOT NULL DEFAULT ({_NOW}),
    updated_at TEXT NOT NULL DEFAULT ({_NOW}),
    claimed_by TEXT,
    lease_until TEXT,
    sending_since TEXT,
    last_attempt_at TEXT,
    sent_at TEXT,
    wamid TEXT,
    error_code INTEGER,
    error_message TEXT,
    error_details TEXT,
    import_id INTEGER,
    content TEXT,
    reply_to TEXT,
    delivered_at TEXT,
    read_at TEXT
);
CREATE TABLE IF NOT EXISTS whatsapp_batches (
    batch_id TEXT PRIMARY KEY,
    state TEXT NOT NULL DEFAULT 'active',
    source TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS whatsapp_imports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_id TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'importing',
    pid INTEGER NOT NULL,
    source TEXT,
    started_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS whatsapp_attempts (
    attempted_at TEXT NOT NULL,
    message_id INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS whatsapp_daemon_state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS whatsapp_holds (
    template_name TEXT NOT NULL,
    template_language TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    code INTEGER,
    reason TEXT NOT NULL,
    created_at TEXT NOT NULL,
    released_at TEXT,
    PRIMARY KEY (template_name, template_language, batch_id)
);
CREATE TABLE IF NOT EXISTS whatsapp_statuses (
    wamid TEXT NOT NULL,
    status TEXT NOT NULL,
    message_id INTEGER,
    recipient TEXT,
    happened_at TEXT,
    errors TEXT,
    received_at TEXT NOT NULL,
    applied_at TEXT,
    PRIMARY KEY (wamid, status)
);
CREATE TABLE IF NOT EXISTS whatsapp_contacts (
    wa_id TEXT PRIMARY KEY,
    last_inbound_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
"""

# The tables SCHEMA creates.
TABLES = frozenset(
    {
        "whatsapp_queue",
        "whatsapp_batches",
        "whatsapp_imports",
        "whatsapp_attempts",
        "whatsapp_daemon_state",
        "whatsapp_holds",
        "whatsapp_statuses",
        "whatsapp_contacts",
    }
)

# Holds of a template: ``batch_id`` holds ALL_BATCHES for every message with
# that template, else ":" and the batch held (":" alone: the messages
# without a batch), so that no batch name can mean every batch. A hold is in
# force until ``released_at`` is set.
ALL_BATCHES = "*"
# Identical template failures older than this do not count towards a hold.
TEMPLATE_FAILURE_WINDOW = timedelta(days=1)

INDEXES = """
CREATE INDEX IF NOT EXISTS whatsapp_queue_due
    ON whatsapp_queue (status, scheduled_at);
CREATE INDEX IF NOT EXISTS whatsapp_queue_batch_recipient
    ON whatsapp_queue (batch_id, recipient);
CREATE INDEX IF NOT EXISTS whatsapp_queue_import ON whatsapp_queue (import_id);
CREATE INDEX IF NOT EXISTS whatsapp_attempts_at ON whatsapp_attempts (attempted_at);
CREATE INDEX IF NOT EXISTS whatsapp_queue_wamid ON whatsapp_queue (wamid);
CREATE INDEX IF NOT EXISTS whatsapp_statuses_message
    ON whatsapp_statuses (message_id);
"""

# A row's attempts as a count, whatever another program stored there (NULL,
# text, a negative number, -Inf): the daemon reads and updates it so.
ATTEMPTS = "max(0, coalesce(CAST(attempts AS INTEGER), 0))"

_CLAIMED = (
    "id, coalesce(recipient, '') AS recipient, message_type, body, template_name,"
    f" template_language, template_params, batch_id, {ATTEMPTS} AS attempts,"
    " content, reply_to"
)


class BatchHeld(Exception):
    """The message's batch is paused or cancelled: do not send it now."""

    def __init__(self, state: str) -> None:
        super().__init__(state)
        self.state = state


class QueueDB:
    """One SQLite connection to the queue; use it from a single thread."""

    def __init__(
        self, conn: sqlite3.Connection, busy_timeout: float = BUSY_TIMEOUT
    ) -> None:
        self.conn = conn
        self.busy_timeout = busy_timeout

    @classmethod
    def open(
        cls,
        path: Path | str,
        *,
        migrate: bool = True,
        busy_timeout: float = BUSY_TIMEOUT,
    ) -> QueueDB:
        """Open (creating the folder and file if needed) and migrate.

        ``busy_timeout``: seconds a statement waits for another writer.
        """
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), timeout=busy_timeout, isolation_level=None)
        conn.row_factory = sqlite3.Row
        # Text another program stored in another encoding must not stop the
        # queue: it reads with U+FFFD in place of bad bytes, and the sender
        # refuses such a message.
        conn.text_factory = _decode
        db = cls(conn, busy_timeout)
        if migrate:
            db.migrate()
        return db

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """Run a block in one ``BEGIN IMMEDIATE`` transaction."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def migrate(self) -> None:
        """Create the tables, or add the columns an older table lacks."""
        self._use_wal()
        with self.write() as conn:
            _execute_all(conn, SCHEMA)
            present = {
                row["name"] for row in conn.execute("PRAGMA table_info(whatsapp_queue)")
            }
            _check_essential(conn, present)
            for name, declaration in COLUMNS.items():
                if name not in present:
                    conn.execute(
                        f"ALTER TABLE whatsapp_queue ADD COLUMN {name} {declaration}"
                    )
            holds = {
                row[1] for row in conn.execute("PRAGMA table_info(whatsapp_holds)")
            }
            if "released_at" not in holds:  # a table from before releases were kept
                conn.execute("ALTER TABLE whatsapp_holds ADD COLUMN released_at TEXT")
            _execute_all(conn, INDEXES)

    def _use_wal(self) -> None:
        """Switch to WAL, waiting like any write while another process works.

        Changing the journal mode does not wait on the busy timeout: two
        programs opening a new database at once would see "database is
        locked" at once.
        """
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                row = self.conn.execute("PRAGMA journal_mode").fetchone()
                if row is None or str(row[0]).lower() != "wal":
                    self.conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    # -- queueing -------------------------------------------------------

    def enqueue(
        self,
        messages: Iterable[NewMessage],
        now: datetime,
        *,
        import_id: int | None = None,
    ) -> list[int]:
        """Insert messages in one transaction; return their ids."""
        stamp = fmt(now)
        ids: list[int] = []
        with self.write() as conn:
            for message in messages:
                cursor = conn.execute(
                    "INSERT INTO whatsapp_queue (recipient, message_type, body,"
                    " template_name, template_language, template_params, batch_id,"
                    " status, scheduled_at, created_at, updated_at, import_id,"
                    " content, reply_to)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?)",
                    (
                        message.recipient,
                        message.message_type.value,
                        message.body,
                        message.template_name,
                        message.template_language,
                        _params_json(message.template_params),
                        message.batch_id,
                        message.scheduled_at or stamp,
                        stamp,
                        stamp,
                        import_id,
                        message.content,
                        message.reply_to,
                    ),
                )
                ids.append(int(cursor.lastrowid or 0))
        return ids

    # -- the send cycle ------------------------------------------------

    def claim(
        self, now: datetime, limit: int, owner: str, lease: timedelta
    ) -> list[QueuedMessage]:
        """Take up to ``limit`` due messages for ``owner``, oldest first.

        A message is due when pending and its time has come, or when a
        previous claim's lease ran out without an attempt in flight.
        """
        stamp = fmt(now)
        with self.write() as conn:
            rows = conn.execute(
                "UPDATE whatsapp_queue SET status = 'processing', claimed_by = ?,"
                " lease_until = ?, updated_at = ?"
                " WHERE id IN (SELECT id FROM whatsapp_queue"
                "   WHERE (status = 'pending' AND " + DUE + ")"
                "      OR (status = 'processing' AND lease_until < ?"
                "          AND sending_since IS NULL)"
                f"   ORDER BY {SCHEDULED}, id LIMIT ?)"
                f" RETURNING {_CLAIMED}",
                (owner, fmt(now + lease), stamp, stamp, stamp, limit),
            ).fetchall()
        # The connection decodes TEXT values only: a BLOB another program
        # wrote is read here as the UTF-8 text it holds, or stays bytes for
        # payloads.build to refuse, naming its column.
        claimed = [
            QueuedMessage(
                **{key: messages.blob_text(v) for key, v in dict(row).items()}
            )
            for row in rows
        ]
        return sorted(claimed, key=lambda message: message.id)

    def begin_attempt(
        self,
        message_id: int,
        now: datetime,
        clock: Callable[[], datetime] | None = None,
    ) -> int:
        """Record an HTTP attempt about to start; return the attempt number.

        If the message's batch was paused or cancelled since the claim, or
        its template was held, no attempt is recorded: the row goes back to
        pending (paused, held) or becomes cancelled, and BatchHeld is raised.

        With ``clock``, the time recorded is read once the write lock is
        held: waiting for another writer must not date the attempt earlier
        than the request leaves, or a restart would count the rate's window
        from too early a time.
        """
        with self.write() as conn:
            if clock is not None:
                now = max(now, clock())
            stamp = fmt(now)
            held = conn.execute(
                "SELECT b.state FROM whatsapp_queue q JOIN whatsapp_batches b"
                " ON b.batch_id = q.batch_id WHERE q.id = ? AND b.state != 'active'"
                " UNION ALL SELECT 'held' FROM whatsapp_queue q"
                f" JOIN whatsapp_holds h ON {HELD_BY} WHERE q.id = ?",
                (message_id, message_id),
            ).fetchone()
            if held is None:
                conn.execute(
                    "INSERT INTO whatsapp_attempts (attempted_at, message_id)"
                    " VALUES (?, ?)",
                    (fmt_attempt(now), message_id),
                )
                row = conn.execute(
                    f"UPDATE whatsapp_queue SET attempts = {ATTEMPTS} + 1,"
                    " sending_since = ?, last_attempt_at = ?, updated_at = ?"
                    " WHERE id = ? RETURNING attempts",
                    (stamp, stamp, stamp, message_id),
                ).fetchone()
                return int(row["attempts"])
            cancelled = held[0] == Status.CANCELLED.value
            conn.execute(
                "UPDATE whatsapp_queue SET status = ?, error_message = ?,"
                " claimed_by = NULL, lease_until = NULL, sending_since = NULL,"
                " updated_at = ? WHERE id = ?",
                (
                    Status.CANCELLED.value if cancelled else Status.PENDING.value,
                    f"lot annulé le {stamp} UTC" if cancelled else None,
                    stamp,
                    message_id,
                ),
            )
        raise BatchHeld(str(held[0]))

    def end_attempt(self, message_id: int, *, refund: bool, now: datetime) -> None:
        """Close an attempt that will be retried; ``refund`` gives it back."""
        with self.write() as conn:
            conn.execute(
                "UPDATE whatsapp_queue SET sending_since = NULL, updated_at = ?,"
                f" attempts = max(0, {ATTEMPTS} - ?) WHERE id = ?",
                (fmt(now), 1 if refund else 0, message_id),
            )

    def mark_sent(self, message_id: int, wamid: str, now: datetime) -> None:
        """Record Meta's acceptance, and the statuses that came before it."""
        stamp = fmt(now)
        self._finish(
            message_id,
            "status = 'sent', wamid = ?, sent_at = ?, error_code = NULL,"
            " error_message = NULL, error_details = NULL",
            (wamid, stamp),
            now,
            then=lambda conn: deliveries.apply_stored(conn, message_id, wamid, now),
        )

    def mark_failed(
        self,
        message_id: int,
        reason: str,
        now: datetime,
        *,
        code: int | None = None,
        details: str | None = None,
    ) -> None:
        self._finish(
            message_id,
            "status = 'failed', error_code = ?, error_message = ?, error_details = ?",
            (code, reason, details),
            now,
        )

    def defer(self, message_id: int, until: datetime, now: datetime) -> None:
        """Put a claimed message back to pending, due again at ``until``."""
        self._finish(
            message_id, "status = 'pending', scheduled_at = ?", (fmt(until),), now
        )

    def mark_unknown(self, message_id: int, reason: str, now: datetime) -> None:
        self._finish(
            message_id,
            "status = 'unknown', error_message = ?",
            (reason,),
            now,
            # A status Meta already sent for it proves it was accepted.
            then=lambda conn: deliveries.apply_stored(conn, message_id, None, now),
        )

    def release(self, message_id: int, now: datetime, *, refund: bool = False) -> None:
        """Put a claimed message back to pending (``refund``: its last attempt)."""
        self._finish(
            message_id,
            f"status = 'pending', attempts = max(0, {ATTEMPTS} - ?)",
            (1 if refund else 0,),
            now,
        )

    def _finish(
        self,
        message_id: int,
        assignments: str,
        params: tuple[Any, ...],
        now: datetime,
        *,
        then: Callable[[sqlite3.Connection], object] | None = None,
    ) -> None:
        """Update the row and release its claim; ``then`` runs in the same
        transaction."""
        with self.write() as conn:
            conn.execute(
                f"UPDATE whatsapp_queue SET {assignments}, claimed_by = NULL,"
                " lease_until = NULL, sending_since = NULL, updated_at = ?"
                " WHERE id = ?",
                (*params, fmt(now), message_id),
            )
            if then is not None:
                then(conn)

    def fail_unreadable_times(self, now: datetime) -> list[int]:
        """Fail pending rows whose ``scheduled_at`` is not a time; return them.

        Such a row would otherwise wait forever: it is never due.
        """
        with self.write() as conn:
            rows = conn.execute(
                "UPDATE whatsapp_queue SET status = 'failed', error_code = NULL,"
                " error_message = 'heure d''envoi illisible ou impossible"
                " (scheduled_at = « '"
                "  || substr(scheduled_at, 1, 40) || ' ») : écrire AAAA-MM-JJ"
                " HH:MM:SS en UTC, puis remettre le message en attente',"
                " claimed_by = NULL, lease_until = NULL, updated_at = ?"
                f" WHERE status = 'pending' AND {SCHEDULED} IS NULL RETURNING id",
                (fmt(now),),
            ).fetchall()
        return sorted(int(row[0]) for row in rows)

    def recover(self, now: datetime, owner: str | None = None) -> tuple[int, int]:
        """Settle messages left ``processing`` (by ``owner``, or by anyone).

        A claimed message with no attempt in flight goes back to pending; one
        whose request was under way becomes ``unknown``, since Meta may have
        accepted it, unless a status Meta sent meanwhile proves it did.
        Returns (back to pending, unknown or proven).
        """
        where = "status = 'processing'" + (" AND claimed_by = ?" if owner else "")
        args: tuple[Any, ...] = (owner,) if owner else ()
        stamp = fmt(now)
        reason = "envoi interrompu : résultat inconnu, à vérifier avant de renvoyer"
        with self.write() as conn:
            pending = conn.execute(
                "UPDATE whatsapp_queue SET status = 'pending', claimed_by = NULL,"
                " lease_until = NULL, updated_at = ?"
                f" WHERE {where} AND sending_since IS NULL",
                (stamp, *args),
            ).rowcount
            unknown = conn.execute(
                "UPDATE whatsapp_queue SET status = 'unknown', claimed_by = NULL,"
                " lease_until = NULL, sending_since = NULL, error_message = ?,"
                f" updated_at = ? WHERE {where} AND sending_since IS NOT NULL"
                " RETURNING id",
                (reason, stamp, *args),
            ).fetchall()
            for row in unknown:
                deliveries.apply_stored(conn, int(row[0]), None, now)
        return pending, len(unknown)

    # -- template holds ---------------------------------------------------

    def hold_template(
        self,
        name: str,
        language: str,
        batch: str | None,
        *,
        code: int | None,
        reason: str,
        now: datetime,
        every_batch: bool = False,
    ) -> bool:
        """Hold messages with a template: in ``batch`` (None: the messages
        without a batch), or in every batch.

        A released hold is put in force again. Returns False if that hold
        was already in force.
        """
        with self.write() as conn:
            cursor = conn.execute(
                "INSERT INTO whatsapp_holds (template_name, template_language,"
                " batch_id, code, reason, created_at) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (template_name, template_language, batch_id)"
                " DO UPDATE SET code = excluded.code, reason = excluded.reason,"
                " created_at = excluded.created_at, released_at = NULL"
                " WHERE whatsapp_holds.released_at IS NOT NULL",
                (name, language, _scope(batch, every_batch), code, reason, fmt(now)),
            )
        return cursor.rowcount > 0

    def template_failures(
        self,
        batch_id: str | None,
        name: str,
        language: str,
        code: int,
        now: datetime,
    ) -> int:
        """Count recent failures of one batch with this template and code.

        Only failures of the last TEMPLATE_FAILURE_WINDOW count, and none
        from before the template was last released in that batch.
        """
        row = self.conn.execute(
            "SELECT COUNT(*) FROM whatsapp_queue WHERE status = 'failed'"
            " AND batch_id IS ? AND message_type = 'template'"
            " AND template_name = ? AND template_language = ? AND error_code = ?"
            " AND updated_at >= max(?, coalesce((SELECT max(released_at)"
            "  FROM whatsapp_holds WHERE template_name = ? AND template_language = ?"
            "  AND batch_id IN ('*', ?)), ''))",  # every batch, or this one
            (
                batch_id,
                name,
                language,
                code,
                fmt(now - TEMPLATE_FAILURE_WINDOW),
                name,
                language,
                _scope(batch_id),
            ),
        ).fetchone()
        return int(row[0])

    def holds(self) -> list[dict[str, Any]]:
        """Every hold, with the number of pending messages it keeps back."""
        rows = self.conn.execute(
            "SELECT h.*, (SELECT COUNT(*) FROM whatsapp_queue q"
            f"  WHERE q.status = 'pending' AND {HELD_BY})"
            " AS waiting FROM whatsapp_holds h WHERE h.released_at IS NULL"
            " ORDER BY h.created_at, h.template_name"
        )
        holds = []
        for row in rows:
            hold = dict(row)
            scope = str(hold["batch_id"])
            hold["every_batch"] = scope == ALL_BATCHES
            hold["batch_id"] = None if hold["every_batch"] else scope[1:] or None
            holds.append(hold)
        return holds

    def release_holds(
        self,
        name: str,
        now: datetime,
        language: str | None = None,
        batch: str | None = None,
    ) -> int:
        """Lift the holds of a template (one language, one batch, or all).

        The hold is kept as released: failures from before the release no
        longer count towards holding the template again.
        """
        with self.write() as conn:
            return conn.execute(
                "UPDATE whatsapp_holds SET released_at = ? WHERE template_name = ?"
                " AND template_language = coalesce(?, template_language)"
                " AND batch_id = coalesce(?, batch_id) AND released_at IS NULL",
                (fmt(now), name, language, None if batch is None else _scope(batch)),
            ).rowcount

    # -- reading --------------------------------------------------------

    def next_scheduled(self, now: datetime) -> datetime | None:
        """Return the earliest time a pending message is due after ``now``."""
        row = self.conn.execute(
            f"SELECT min({SCHEDULED}) FROM whatsapp_queue"
            f" WHERE status = 'pending' AND {SCHEDULED} > ?",
            (fmt(now),),
        ).fetchone()
        if row is None or row[0] is None:
            return None
        try:
            return parse(str(row[0]))
        except ValueError:
            return None

    def last_attempts_by_recipient(self, since: datetime) -> list[tuple[str, datetime]]:
        """Return each recipient's last HTTP attempt since ``since``."""
        rows = self.conn.execute(
            "SELECT q.recipient, max(a.attempted_at) FROM whatsapp_attempts a"
            " JOIN whatsapp_queue q ON q.id = a.message_id"
            " WHERE a.attempted_at >= ? GROUP BY q.recipient",
            (fmt_attempt(since),),
        )
        return [(str(row[0]), parse(row[1])) for row in rows]

    def attempt_times(self, since: datetime) -> list[datetime]:
        """Return the times of HTTP attempts made since ``since``, oldest first."""
        rows = self.conn.execute(
            "SELECT attempted_at FROM whatsapp_attempts WHERE attempted_at >= ?"
            " ORDER BY attempted_at",
            (fmt_attempt(since),),
        )
        return [parse(row[0]) for row in rows]

    def has_due(self, now: datetime) -> bool:
        row = self.conn.execute(
            "SELECT 1 FROM whatsapp_queue WHERE status = 'pending'"
            " AND " + DUE + " LIMIT 1",
            (fmt(now),),
        ).fetchone()
        return row is not None

    def count_due(self, now: datetime) -> int:
        row = self.conn.execute(
            "SELECT count(*) FROM whatsapp_queue WHERE status = 'pending' AND " + DUE,
            (fmt(now),),
        ).fetchone()
        return int(row[0])

    def get(self, message_id: int) -> dict[str, Any] | None:
        row = self.conn.execute(
            "SELECT * FROM whatsapp_queue WHERE id = ?", (message_id,)
        ).fetchone()
        return dict(row) if row else None

    # -- maintenance -------------------------------------------------------

    def cleanup(self, now: datetime, retention_days: int) -> int:
        """Delete finished messages older than the retention; return how many."""
        cutoff = fmt(now - timedelta(days=retention_days))
        attempts_cutoff = fmt_attempt(now - timedelta(days=ATTEMPT_LOG_DAYS))
        with self.write() as conn:
            deleted = conn.execute(
                "DELETE FROM whatsapp_queue"
                " WHERE status IN"
                " ('sent', 'delivered', 'read', 'failed', 'cancelled')"
                " AND updated_at < ?",
                (cutoff,),
            ).rowcount
            conn.execute(
                "DELETE FROM whatsapp_attempts WHERE attempted_at < ?",
                (attempts_cutoff,),
            )
            conn.execute(
                "DELETE FROM whatsapp_imports WHERE state = 'done' AND updated_at < ?",
                (cutoff,),
            )
            conn.execute(
                "DELETE FROM whatsapp_statuses WHERE received_at < ?", (cutoff,)
            )
            conn.execute(
                "DELETE FROM whatsapp_holds WHERE coalesce(released_at, created_at) < ?"
                " AND NOT EXISTS"
                " (SELECT 1 FROM whatsapp_queue q WHERE q.status = 'pending'"
                "  AND q.message_type = 'template'"
                "  AND q.template_name = whatsapp_holds.template_name"
                "  AND q.template_language = whatsapp_holds.template_language)",
                (cutoff,),
            )
            conn.execute(
                "DELETE FROM whatsapp_contacts WHERE last_inbound_at < ?", (cutoff,)
            )
            conn.execute(
                "DELETE FROM whatsapp_batches WHERE updated_at < ? AND NOT EXISTS"
                " (SELECT 1 FROM whatsapp_queue"
                "  WHERE whatsapp_queue.batch_id = whatsapp_batches.batch_id)",
                (cutoff,),
            )
        return deleted

    def get_state(self, key: str) -> str | None:
        row = self.conn.execute(
            "SELECT value FROM whatsapp_daemon_state WHERE key = ?", (key,)
        ).fetchone()
        return str(row[0]) if row else None

    def set_state(self, key: str, value: str | None, now: datetime) -> None:
        """Store (or with ``None`` remove) one value of the daemon's state."""
        with self.write() as conn:
            if value is None:
                conn.execute("DELETE FROM whatsapp_daemon_state WHERE key = ?", (key,))
                return
            conn.execute(
                "INSERT INTO whatsapp_daemon_state (key, value, updated_at)"
                " VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE"
                " SET value = excluded.value, updated_at = excluded.updated_at",
                (key, value, fmt(now)),
            )

    def settle(self, message_id: int, status: Status, now: datetime) -> None:
        """Set a message's status by hand; back to pending means a fresh start."""
        attempts = 0 if status is Status.PENDING else None
        sent_at = fmt(now) if status is Status.SENT else None
        self._finish(
            message_id,
            "status = ?, attempts = coalesce(?, attempts),"
            " sent_at = coalesce(?, sent_at)",
            (status.value, attempts, sent_at),
            now,
        )


def _scope(batch: str | None, every_batch: bool = False) -> str:
    """The ``batch_id`` of a hold (see ALL_BATCHES)."""
    return ALL_BATCHES if every_batch else ":" + (batch or "")


# Columns a table with rows must already have: adding them empty would fail
# every row ("numéro vide") instead of sending it.
ESSENTIAL = ("recipient", "body")


def _check_essential(conn: sqlite3.Connection, present: set[str]) -> None:
    if "id" not in present:
        raise ConfigError(
            "whatsapp_queue has no id column; the daemon needs one (id INTEGER"
            " PRIMARY KEY) to track each message: recreate the table with it"
            " (see README, 'The queue table')"
        )
    missing = [name for name in ESSENTIAL if name not in present]
    if not missing:
        return
    rows = conn.execute("SELECT COUNT(*) FROM whatsapp_queue").fetchone()[0]
    if rows:
        others = ", ".join(sorted(present))
        raise ConfigError(
            f"whatsapp_queue has {rows} rows but no {' or '.join(missing)} column"
            f" (it has {others}); rename the application's columns first, e.g."
            f" ALTER TABLE whatsapp_queue RENAME COLUMN phone TO {missing[0]}"
        )


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _execute_all(conn: sqlite3.Connection, script: str) -> None:
    """Run each statement of ``script`` inside the current transaction.

    ``executescript`` would commit first, breaking the migration's atomicity.
    """
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def _params_json(params: tuple[str, ...]) -> str | None:
    return json.dumps(list(params), ensure_ascii=False) if params else None


class AsyncQueue:
    """Runs :class:`QueueDB` methods on one thread that owns the connection.

    Every call is shielded: once started, a write completes even if the
    awaiting task is cancelled, so an outcome is never half-recorded.
    """

    def __init__(self, path: Path | str, busy_timeout: float = BUSY_TIMEOUT) -> None:
        self._path = path
        self._busy_timeout = busy_timeout
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="whatsapp-sqlite")
        self._db: QueueDB | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        job = functools.partial(
            QueueDB.open, self._path, busy_timeout=self._busy_timeout
        )
        self._db = await loop.run_in_executor(self._executor, job)

    async def close(self) -> None:
        if self._db is not None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._executor, self._db.close)
            self._db = None
        self._executor.shutdown(wait=True)

    async def call(
        self,
        method: Callable[Concatenate[QueueDB, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run ``method(db, *args, **kwargs)`` on the database thread."""
        if self._db is None:
            raise RuntimeError("AsyncQueue.open() was not awaited")
        loop = asyncio.get_running_loop()
        job = functools.partial(method, self._db, *args, **kwargs)
        return await asyncio.shield(loop.run_in_executor(self._executor, job))
