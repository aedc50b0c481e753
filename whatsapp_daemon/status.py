"""``whatsapp-daemon status``: what the queue and the daemon are doing.

Read-only apart from creating the tables on a fresh install. Never shows
the access token.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from .errors import ConfigError
from .limits import WINDOW
from .lock import holder_pid, is_locked
from .models import Status
from .queue import DUE, HALT_KEY, HEARTBEAT_KEY, QueueDB, fmt, fmt_attempt, parse
from .settings import Settings


def gather(settings: Settings, now: datetime) -> dict[str, Any]:
    """Collect the status as plain data (what ``--json`` prints)."""
    running = is_locked(settings.lock_path)
    if not settings.database_path.exists():
        raise ConfigError(
            f"WHATSAPP_DATABASE_PATH: {settings.database_path} does not exist;"
            " check the path (the daemon creates it when it first runs)"
        )
    db = QueueDB.open(settings.database_path)
    try:
        return {
            "daemon": {
                "running": running,
                "pid": holder_pid(settings.lock_path) if running else None,
                "lock_path": str(settings.lock_path),
                "last_cycle": _state(db, HEARTBEAT_KEY),
            },
            "sending_stopped": _state(db, HALT_KEY),
            "counts": _counts(db),
            "batches": _batches(db),
            "oldest_due": _oldest_due(db, now),
            "next_scheduled": _next_scheduled(db, now),
            "last_sent": _last_sent(db, now),
            "rate": {
                "attempts_last_60s": _recent_attempts(db, now),
                "limit_per_60s": settings.rate_per_minute,
            },
        }
    finally:
        db.close()


def _state(db: QueueDB, key: str) -> Any:
    value = db.get_state(key)
    return json.loads(value) if value else None


def _counts(db: QueueDB) -> dict[str, int]:
    counts = {status.value: 0 for status in Status}
    for status, count in db.conn.execute(
        "SELECT status, COUNT(*) FROM whatsapp_queue GROUP BY status"
    ):
        counts[str(status)] = int(count)
    return counts


def _batches(db: QueueDB) -> list[dict[str, Any]]:
    rows = db.conn.execute(
        "SELECT coalesce(q.batch_id, '') AS batch, COUNT(*) AS total,"
        " coalesce(b.state, 'active') AS state,"
        " SUM(q.status = 'pending') AS pending,"
        " SUM(q.status = 'processing') AS processing,"
        " SUM(q.status = 'sent') AS sent, SUM(q.status = 'failed') AS failed,"
        " SUM(q.status = 'unknown') AS unknown,"
        " SUM(q.status = 'cancelled') AS cancelled"
        " FROM whatsapp_queue q LEFT JOIN whatsapp_batches b"
        " ON b.batch_id = q.batch_id GROUP BY q.batch_id ORDER BY MIN(q.id)"
    )
    return [dict(row) for row in rows]


def _oldest_due(db: QueueDB, now: datetime) -> dict[str, Any] | None:
    row = db.conn.execute(
        "SELECT id, scheduled_at FROM whatsapp_queue WHERE status = 'pending'"
        " AND " + DUE + " ORDER BY scheduled_at, id LIMIT 1",
        (fmt(now),),
    ).fetchone()
    if row is None:
        return None
    age = _age(row["scheduled_at"], now)
    return {"id": row["id"], "scheduled_at": row["scheduled_at"], "age_seconds": age}


def _next_scheduled(db: QueueDB, now: datetime) -> dict[str, Any] | None:
    """The first pending message whose time has not come yet."""
    row = db.conn.execute(
        "SELECT id, scheduled_at FROM whatsapp_queue WHERE status = 'pending'"
        " AND replace(scheduled_at, 'T', ' ') > ?"
        " ORDER BY replace(scheduled_at, 'T', ' '), id LIMIT 1",
        (fmt(now),),
    ).fetchone()
    if row is None:
        return None
    return {"id": row["id"], "scheduled_at": row["scheduled_at"]}


def _last_sent(db: QueueDB, now: datetime) -> dict[str, Any] | None:
    row = db.conn.execute(
        "SELECT id, sent_at FROM whatsapp_queue WHERE status = 'sent'"
        " AND sent_at IS NOT NULL ORDER BY sent_at DESC, id DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    return {
        "id": row["id"],
        "sent_at": row["sent_at"],
        "age_seconds": _age(row["sent_at"], now),
    }


def _recent_attempts(db: QueueDB, now: datetime) -> int:
    since = fmt_attempt(now - timedelta(seconds=WINDOW))
    row = db.conn.execute(
        "SELECT COUNT(*) FROM whatsapp_attempts WHERE attempted_at > ?", (since,)
    ).fetchone()
    return int(row[0])


def _age(text: str | None, now: datetime) -> int | None:
    if not text:
        return None
    try:
        return max(0, int((now - parse(text)).total_seconds()))
    except ValueError:
        return None


def render(status: dict[str, Any]) -> str:
    """The status for a person in a terminal (UTC times)."""
    daemon = status["daemon"]
    lines = [_headline(status)]
    if daemon["last_cycle"]:
        lines.append(f"Last cycle: {daemon['last_cycle']['at']} UTC")
    stopped = status["sending_stopped"]
    if stopped:
        lines.append(
            f"SENDING STOPPED since {stopped['since']} UTC: {stopped['reason']}"
        )
    lines.append("")
    lines.append("Queue by status:")
    for name, count in status["counts"].items():
        lines.append(f"  {name:<11}{count:>8}")
    if status["counts"].get("unknown"):
        lines.append(
            "  (unknown: the request may have reached Meta; see README,"
            " 'Messages with an unknown outcome')"
        )
    lines += _render_batches(status["batches"])
    lines.append("")
    lines.append(_oldest_line(status["oldest_due"]))
    upcoming = status["next_scheduled"]
    if upcoming:
        lines.append(
            f"Next scheduled message: #{upcoming['id']}, at"
            f" {upcoming['scheduled_at']} UTC"
        )
    lines.append(_last_sent_line(status["last_sent"]))
    rate = status["rate"]
    lines.append(
        f"Attempts in the last 60 s: {rate['attempts_last_60s']}"
        f" / {rate['limit_per_60s']} allowed"
    )
    return "\n".join(lines)


def _headline(status: dict[str, Any]) -> str:
    daemon = status["daemon"]
    if not daemon["running"]:
        return f"Daemon: not running (lock {daemon['lock_path']} is free)"
    state = "sending stopped" if status["sending_stopped"] else "running"
    return f"Daemon: {state}, PID {daemon['pid']} holds {daemon['lock_path']}"


def _render_batches(batches: list[dict[str, Any]]) -> list[str]:
    if not batches:
        return []
    lines = [
        "",
        "By batch:",
        f"  {'batch':<24}{'state':<11}{'total':>7}{'pending':>9}{'sending':>9}"
        f"{'sent':>7}{'failed':>8}{'cancel.':>8}{'unknown':>8}",
    ]
    for b in batches:
        lines.append(
            f"  {(b['batch'] or '(none)'):<24}{b['state']:<11}{b['total']:>7}"
            f"{b['pending'] or 0:>9}{b['processing'] or 0:>9}{b['sent'] or 0:>7}"
            f"{b['failed'] or 0:>8}{b['cancelled'] or 0:>8}{b['unknown'] or 0:>8}"
        )
    return lines


def _oldest_line(oldest: dict[str, Any] | None) -> str:
    if oldest is None:
        return "Oldest due message: none"
    return (
        f"Oldest due message: #{oldest['id']}, due {oldest['scheduled_at']} UTC"
        f" ({_duration(oldest['age_seconds'])} ago)"
    )


def _last_sent_line(last: dict[str, Any] | None) -> str:
    if last is None:
        return "Last successful send: none"
    return (
        f"Last successful send: #{last['id']} at {last['sent_at']} UTC"
        f" ({_duration(last['age_seconds'])} ago)"
    )


def _duration(seconds: int | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"
