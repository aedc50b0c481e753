"""Batches (campaigns) and the imports that fill them.

A batch is the set of rows sharing a ``batch_id``. Its row in
``whatsapp_batches`` says whether it is ``active``, ``paused`` or
``cancelled``; a batch the PHP application created has no such row and is
active. An import adds its rows under its own ``whatsapp_imports`` row,
``importing`` until the last chunk is written: the daemon sends none of them
before the import flips to ``done`` in one short transaction.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from .errors import InvalidMessageError
from .queue import SCHEDULED, QueueDB
from .times import fmt

_BATCH_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class BatchState(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    CANCELLED = "cancelled"


@dataclass
class BatchSummary:
    """One line of ``whatsapp-daemon batch list``."""

    batch_id: str
    state: str
    source: str | None
    created_at: str | None
    counts: dict[str, int] = field(default_factory=dict)
    importing: int = 0  # rows of imports still running, not yet sendable
    next_due: str | None = None  # earliest scheduled time of a pending row

    @property
    def total(self) -> int:
        return sum(self.counts.values())


# What a batch id is made of, as the fix of an error that refuses one.
BATCH_ID_RULE = (
    "use 1 to 64 letters, digits, '.', '_' or '-' (starting with a letter or"
    " digit), e.g. noel-2026"
)


def check_batch_id(value: str) -> str:
    """Refuse a batch id that would not read well in a file name or a log."""
    if not is_batch_id(value):
        raise InvalidMessageError(f"--batch {value!r}: {BATCH_ID_RULE}")
    return value


def is_batch_id(value: object) -> bool:
    """Whether ``value`` is a batch id :func:`check_batch_id` keeps."""
    return isinstance(value, str) and _BATCH_ID.fullmatch(value) is not None


def exists(db: QueueDB, batch_id: str) -> bool:
    return _exists(db.conn, batch_id)


def state_of(db: QueueDB, batch_id: str) -> BatchState:
    return _state(db.conn, batch_id)


def _exists(conn: Any, batch_id: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM whatsapp_queue WHERE batch_id = ?"
        " UNION ALL SELECT 1 FROM whatsapp_batches WHERE batch_id = ? LIMIT 1",
        (batch_id, batch_id),
    ).fetchone()
    return row is not None


def _state(conn: Any, batch_id: str) -> BatchState:
    row = conn.execute(
        "SELECT state FROM whatsapp_batches WHERE batch_id = ?", (batch_id,)
    ).fetchone()
    return BatchState(row[0]) if row else BatchState.ACTIVE


def list_batches(db: QueueDB) -> list[BatchSummary]:
    """Every batch, oldest first, with its rows counted by status."""
    summaries: dict[str, BatchSummary] = {}
    for row in db.conn.execute(
        "SELECT batch_id, state, source, created_at FROM whatsapp_batches"
        " ORDER BY created_at, batch_id"
    ):
        summaries[row[0]] = BatchSummary(row[0], row[1], row[2], row[3])
    for row in db.conn.execute(
        "SELECT batch_id, status, COUNT(*), MIN(created_at),"
        " SUM(import_id IN (SELECT id FROM whatsapp_imports"
        "                   WHERE state = 'importing')),"
        f" MIN(CASE WHEN status = 'pending' THEN {SCHEDULED} END)"
        " FROM whatsapp_queue WHERE batch_id IS NOT NULL"
        " GROUP BY batch_id, status ORDER BY MIN(id)"
    ):
        batch_id, status, count, created, importing, due = row
        summary = summaries.setdefault(
            batch_id, BatchSummary(batch_id, BatchState.ACTIVE, None, created)
        )
        summary.counts[str(status)] = int(count)
        summary.importing += int(importing or 0)
        if due and (summary.next_due is None or due < summary.next_due):
            summary.next_due = due
    return sorted(summaries.values(), key=lambda s: (s.created_at or "", s.batch_id))


# -- operations on a batch ----------------------------------------------------


def pause(db: QueueDB, batch_id: str, now: datetime) -> int:
    """Hold the batch's unsent messages; return how many are held.

    Those the daemon has claimed go back to pending before their attempt.
    """
    _require(db, batch_id, refuse=(BatchState.CANCELLED,))
    with db.write() as conn:
        _set_state(conn, batch_id, BatchState.PAUSED, now)
        return _count(conn, batch_id, "pending") + _count(conn, batch_id, "processing")


def resume(db: QueueDB, batch_id: str, now: datetime) -> int:
    """Let a paused batch go on; return how many messages are pending."""
    _require(db, batch_id, refuse=(BatchState.CANCELLED,))
    with db.write() as conn:
        _set_state(conn, batch_id, BatchState.ACTIVE, now)
        return _count(conn, batch_id, "pending")


def cancel(db: QueueDB, batch_id: str, now: datetime) -> tuple[int, int]:
    """Cancel the batch's unsent messages; return (cancelled, being sent).

    Sent, failed and unknown messages keep their status. A message the
    daemon has claimed is cancelled before its next attempt; one whose
    request is already under way may still reach Meta.
    """
    _require(db, batch_id, refuse=())
    sweep_abandoned(db, now)  # a dead import's rows must not block the cancel
    stamp = fmt(now)
    with db.write() as conn:
        running = _running_import(conn, batch_id)
        if running is not None:
            raise InvalidMessageError(
                f"batch {batch_id!r}: an import into it is under way (process"
                f" {running}); wait for it to finish, or stop it (Ctrl-C),"
                " then cancel"
            )
        _set_state(conn, batch_id, BatchState.CANCELLED, now)
        cancelled = conn.execute(
            "UPDATE whatsapp_queue SET status = 'cancelled', error_message = ?,"
            " updated_at = ? WHERE batch_id = ? AND status = 'pending'",
            (f"lot annulé le {stamp} UTC", stamp, batch_id),
        ).rowcount
        return int(cancelled), _count(conn, batch_id, "processing")


def requeue_failed(db: QueueDB, batch_id: str, now: datetime) -> int:
    """Queue the batch's failed messages again, with fresh attempts."""
    _require(db, batch_id, refuse=(BatchState.CANCELLED,))
    stamp = fmt(now)
    with db.write() as conn:
        return int(
            conn.execute(
                "UPDATE whatsapp_queue SET status = 'pending', attempts = 0,"
                " scheduled_at = ?, updated_at = ?, error_code = NULL,"
                " error_message = NULL, error_details = NULL"
                " WHERE batch_id = ? AND status = 'failed'",
                (stamp, stamp, batch_id),
            ).rowcount
        )


def _require(db: QueueDB, batch_id: str, *, refuse: tuple[BatchState, ...]) -> None:
    if not exists(db, batch_id):
        raise InvalidMessageError(
            f"batch {batch_id!r} does not exist; 'whatsapp-daemon batch list'"
            " shows the batches"
        )
    state = state_of(db, batch_id)
    if state in refuse:
        raise InvalidMessageError(
            f"batch {batch_id!r} is {state.value}; a cancelled batch cannot be"
            " changed (import the file again under a new batch id)"
        )


def _set_state(conn: Any, batch_id: str, state: BatchState, now: datetime) -> None:
    stamp = fmt(now)
    conn.execute(
        "INSERT INTO whatsapp_batches (batch_id, state, created_at, updated_at)"
        " VALUES (?, ?, ?, ?) ON CONFLICT (batch_id) DO UPDATE"
        " SET state = excluded.state, updated_at = excluded.updated_at",
        (batch_id, state.value, stamp, stamp),
    )


def _count(conn: Any, batch_id: str, status: str) -> int:
    """Rows of the batch in ``status``, not counting imports under way."""
    row = conn.execute(
        "SELECT COUNT(*) FROM whatsapp_queue WHERE batch_id = ? AND status = ?"
        " AND (import_id IS NULL OR import_id NOT IN"
        "      (SELECT id FROM whatsapp_imports WHERE state = 'importing'))",
        (batch_id, status),
    ).fetchone()
    return int(row[0])


# -- imports --------------------------------------------------------------


def check_target(conn: Any, batch_id: str, *, append: bool) -> None:
    """Refuse to add messages to a cancelled batch, or, without ``append``,
    to a batch that exists."""
    if not append and _exists(conn, batch_id):
        raise InvalidMessageError(
            f"--batch {batch_id}: this batch already exists; choose another"
            " id (or pass --append to add to it)"
        )
    if _state(conn, batch_id) is BatchState.CANCELLED:
        raise InvalidMessageError(
            f"--batch {batch_id}: this batch was cancelled; use a new batch id"
        )


def begin_import(
    db: QueueDB, batch_id: str, source: str, now: datetime, *, append: bool
) -> int:
    """Register an import in progress (creating its batch); return its id.

    Checked in the same transaction, so that two imports started together
    cannot both create a batch: without ``append`` the batch must be new;
    with it, the batch must not be cancelled; and no other import into the
    batch may be under way.
    """
    stamp = fmt(now)
    with db.write() as conn:
        check_target(conn, batch_id, append=append)
        running = _running_import(conn, batch_id)
        if running is not None:
            raise InvalidMessageError(
                f"--batch {batch_id}: another import into this batch is under way"
                f" (process {running}); wait for it to finish"
            )
        conn.execute(
            "INSERT INTO whatsapp_batches (batch_id, state, source, created_at,"
            " updated_at) VALUES (?, 'active', ?, ?, ?)"
            " ON CONFLICT (batch_id) DO UPDATE SET updated_at = excluded.updated_at",
            (batch_id, source, stamp, stamp),
        )
        cursor = conn.execute(
            "INSERT INTO whatsapp_imports (batch_id, state, pid, source, started_at,"
            " updated_at) VALUES (?, 'importing', ?, ?, ?, ?)",
            (batch_id, os.getpid(), source, stamp, stamp),
        )
    return int(cursor.lastrowid or 0)


def finish_import(db: QueueDB, import_id: int, now: datetime) -> None:
    """Make every row of the import sendable at once."""
    with db.write() as conn:
        _require_import(conn, import_id)
        conn.execute(
            "UPDATE whatsapp_imports SET state = 'done', updated_at = ? WHERE id = ?",
            (fmt(now), import_id),
        )


def touch_import(db: QueueDB, import_id: int, now: datetime) -> None:
    """Show that the import is alive; fail if it was swept meanwhile."""
    with db.write() as conn:
        _require_import(conn, import_id)
        conn.execute(
            "UPDATE whatsapp_imports SET updated_at = ? WHERE id = ?",
            (fmt(now), import_id),
        )


def _running_import(conn: Any, batch_id: str) -> int | None:
    """The process id of an import into the batch still under way, if any."""
    row = conn.execute(
        "SELECT pid FROM whatsapp_imports WHERE batch_id = ? AND state = 'importing'",
        (batch_id,),
    ).fetchone()
    return int(row[0]) if row is not None else None


def _require_import(conn: Any, import_id: int) -> None:
    row = conn.execute(
        "SELECT state FROM whatsapp_imports WHERE id = ?", (import_id,)
    ).fetchone()
    if row is None or row[0] != "importing":
        raise InvalidMessageError(
            "the import was removed while it ran (its process was taken for"
            " dead); nothing of it is queued, import the file again"
        )


def abort_import(
    db: QueueDB, import_id: int, batch_id: str | None = None, *, chunk: int = 5000
) -> int:
    """Remove what an unfinished import wrote, in short transactions.

    ``batch_id`` forgets the batch too if the import created it and nothing
    else uses it (known to the importer even if its import row is gone).
    """
    removed = 0
    while True:
        with db.write() as conn:
            deleted = conn.execute(
                "DELETE FROM whatsapp_queue WHERE id IN (SELECT id FROM whatsapp_queue"
                " WHERE import_id = ? LIMIT ?)",
                (import_id, chunk),
            ).rowcount
            removed += deleted
            if deleted == 0:
                row = conn.execute(
                    "DELETE FROM whatsapp_imports WHERE id = ? RETURNING batch_id",
                    (import_id,),
                ).fetchone()
                batch = row[0] if row is not None else batch_id
                if batch is not None:
                    _drop_if_empty(conn, batch)
                return removed


def _drop_if_empty(conn: Any, batch_id: str) -> None:
    """Forget a batch row that an aborted import created and nothing uses."""
    conn.execute(
        "DELETE FROM whatsapp_batches WHERE batch_id = ? AND state = 'active'"
        " AND NOT EXISTS (SELECT 1 FROM whatsapp_queue WHERE batch_id = ?)"
        " AND NOT EXISTS (SELECT 1 FROM whatsapp_imports WHERE batch_id = ?)",
        (batch_id, batch_id, batch_id),
    )


def sweep_abandoned(
    db: QueueDB,
    now: datetime,
    *,
    alive: Callable[[int], bool] | None = None,
) -> int:
    """Remove the rows of imports whose process died before finishing.

    Only a process that no longer exists counts as dead: an import that is
    merely slow (or a Mac asleep) keeps its rows. Returns the number of
    abandoned imports removed.
    """
    is_alive = alive or pid_alive
    rows = db.conn.execute(
        "SELECT id, pid FROM whatsapp_imports WHERE state = 'importing'"
    ).fetchall()
    swept = 0
    for import_id, pid in rows:
        if pid != os.getpid() and not is_alive(pid):
            abort_import(db, import_id)
            swept += 1
    return swept


def settle_cancelled(db: QueueDB, now: datetime) -> int:
    """Cancel pending rows of cancelled batches; return how many.

    Rows that were being sent when their batch was cancelled come back to
    pending if the daemon stops first, and a program may still insert into
    a cancelled batch: they are cancelled here rather than left waiting.
    """
    stamp = fmt(now)
    with db.write() as conn:
        return int(
            conn.execute(
                "UPDATE whatsapp_queue SET status = 'cancelled', error_message = ?,"
                " updated_at = ? WHERE status = 'pending' AND batch_id IN"
                " (SELECT batch_id FROM whatsapp_batches WHERE state = 'cancelled')",
                (f"lot annulé (constaté le {stamp} UTC)", stamp),
            ).rowcount
        )


def pid_alive(pid: int) -> bool:
    """Tell whether a process with this id exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe(summary: BatchSummary) -> dict[str, Any]:
    """A batch as plain data (``batch list --json``)."""
    return {
        "batch": summary.batch_id,
        "state": summary.state,
        "source": summary.source,
        "created_at": summary.created_at,
        "next_due": summary.next_due,
        "importing": summary.importing,
        "total": summary.total,
        "counts": summary.counts,
    }
