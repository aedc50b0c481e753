"""``whatsapp-daemon status``: is it working, and what is the queue doing?

The first line answers the question in one word (HEALTHY, WARNING or
CRITICAL) and says why; ``status --check`` prints only that line and exits
0, 1 or 2, for any monitor. Read-only apart from creating the tables on a
fresh install. Never shows the access token.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import shutil
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import IntEnum
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .limits import WINDOW
from .lock import holder_pid, is_locked
from .models import Status
from .outcomes import explanation
from .queue import DUE, HALT_KEY, HEARTBEAT_KEY, HELD_BY, SCHEDULED, TABLES, QueueDB
from .settings import Settings
from .times import fmt, fmt_attempt, parse

# A cycle this many poll intervals old (plus a minute for a long batch) is late.
LATE_POLLS = 3
BAR_WIDTH = 20
CLOCK_SLACK = 120  # seconds a heartbeat may be ahead of this clock


class Health(IntEnum):
    """The answer of ``status --check``, as its exit status."""

    HEALTHY = 0
    WARNING = 1
    CRITICAL = 2


@dataclass(frozen=True)
class Verdict:
    health: Health
    reason: str

    def line(self) -> str:
        return f"{self.health.name}: {self.reason}"


def gather(settings: Settings, now: datetime) -> dict[str, Any]:
    """Collect the status as plain data (what ``--json`` prints)."""
    running = is_locked(settings.lock_path)
    if not settings.database_path.exists():
        raise ConfigError(
            f"WHATSAPP_DATABASE_PATH: {settings.database_path} does not exist;"
            " check the path (the daemon creates it when it first runs)"
        )
    db = _open(settings.database_path)
    try:
        report: dict[str, Any] = {
            "daemon": {
                "running": running,
                "pid": holder_pid(settings.lock_path) if running else None,
                "lock_path": str(settings.lock_path),
                "last_cycle": _state(db, HEARTBEAT_KEY),
            },
            "sending_stopped": _state(db, HALT_KEY),
            "counts": _counts(db),
            "batches": _batches(db, now, settings.rate_per_minute),
            "oldest_due": _oldest_due(db, now),
            "due_count": db.count_due(now),
            "next_scheduled": _next_scheduled(db, now),
            "last_sent": _last_sent(db, now),
            "failures": _failures(db),
            "held_templates": db.holds(),
            "failed_last_hour": _failed_since(db, now - timedelta(hours=1)),
            "rate": {
                "attempts_last_60s": _recent_attempts(db, now),
                "limit_per_60s": settings.rate_per_minute,
            },
            "disk": _disk(settings),
            "webhook": _webhook(db, now),
        }
    finally:
        db.close()
    if report["sending_stopped"] or not running:
        for batch in report["batches"]:  # nothing leaves: no time to give
            batch["finish_estimate"] = None
    found = verdict(report, settings, now)
    report["health"] = {
        "health": found.health.name,
        "exit": int(found.health),
        "reason": found.reason,
        "warnings": _warnings(report, settings),
    }
    return report


def check(settings: Settings, now: datetime) -> Verdict:
    """The verdict alone; a database that cannot be read is critical.

    It never raises: whatever goes wrong is itself a critical answer, so that
    a monitor never mistakes a broken check for a warning.
    """
    try:
        return verdict(gather(settings, now), settings, now)
    except (ConfigError, sqlite3.Error, OSError) as exc:
        return Verdict(Health.CRITICAL, f"database unreadable: {exc}")
    except Exception as exc:  # a bug must still give one critical line
        return Verdict(Health.CRITICAL, f"status failed: {type(exc).__name__}: {exc}")


STATUS_WAIT = 5.0  # seconds the status waits for a database another writer locks


def _open(path: Path) -> QueueDB:
    """Open for reading, without taking the write lock unless tables are missing.

    The status must answer within seconds even while the daemon or the
    application writes; it creates the daemon's tables only on a database
    that has never had them (a fresh install).
    """
    conn = sqlite3.connect(str(path), timeout=STATUS_WAIT, isolation_level=None)
    try:
        tables = {
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
            )
        }
    finally:
        conn.close()
    db = blobs_as_text(QueueDB.open(path, migrate=not tables.issuperset(TABLES)))
    db.conn.execute(f"PRAGMA busy_timeout = {int(STATUS_WAIT * 1000)}")
    return db


def blobs_as_text(db: QueueDB) -> QueueDB:
    """Have ``db`` read every BLOB as text; return it.

    Another program may bind bytes where the daemon writes text (a batch
    id, an error message, a time): whatever the table holds, what is shown
    and what ``--json`` prints is then text.
    """
    db.conn.row_factory = _text_row
    return db


def as_text(value: Any) -> Any:
    """A BLOB as UTF-8 text, each byte it cannot decode as ``\\xNN``;
    any other value as it is."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return value


def _text_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> sqlite3.Row:
    return sqlite3.Row(cursor, tuple(as_text(value) for value in row))


def verdict(report: dict[str, Any], settings: Settings, now: datetime) -> Verdict:
    """Decide HEALTHY, WARNING or CRITICAL, with the first reason found."""
    daemon = report["daemon"]
    if not daemon["running"]:
        return Verdict(
            Health.CRITICAL,
            f"not running (lock {daemon['lock_path']} is free); start it (make"
            " load, or make run to try it by hand)",
        )
    beat = daemon["last_cycle"] or {}
    if daemon["pid"] is None or beat.get("pid") != daemon["pid"]:
        holder = f"PID {daemon['pid']}" if daemon["pid"] else "an unknown process"
        return Verdict(
            Health.CRITICAL,
            f"not sending: the lock {daemon['lock_path']} is held by {holder}"
            " that is not a running daemon (the old cron job?); see make doctor",
        )
    stopped = report["sending_stopped"]
    if stopped:
        return Verdict(
            Health.CRITICAL,
            f"sending stopped since {stopped.get('since', '?')} UTC:"
            f" {stopped.get('reason', '?')}",
        )
    running = _running_line(daemon, now)
    cycle = daemon["last_cycle"] or {}
    age = _age(cycle.get("at"), now)
    try:
        poll = float(cycle.get("poll_interval", settings.poll_interval))
    except (TypeError, ValueError, OverflowError):
        poll = settings.poll_interval
    if not 0 < poll < math.inf:  # NaN too: the heartbeat is another program's
        poll = settings.poll_interval
    ahead = _age(cycle.get("at"), now, signed=True)
    if ahead is not None and ahead < -CLOCK_SLACK:
        return Verdict(
            Health.WARNING,
            f"clock: the last cycle is dated {cycle.get('at')} UTC, in the future;"
            " check the Mac's date and time",
        )
    if age is None or age > LATE_POLLS * poll + 60:
        seen = f"{_duration(age)} ago" if age is not None else "never"
        return Verdict(
            Health.WARNING,
            f"late: running, PID {daemon['pid']}, but its last cycle was {seen}"
            " (see the log)",
        )
    warnings = _warnings(report, settings)
    if len(warnings) > 1:
        others = len(warnings) - 1
        plural = "s" if others > 1 else ""
        more = f" (and {others} more warning{plural}: see whatsapp-daemon status)"
        return Verdict(Health.WARNING, f"{warnings[0]}{more}; {running}")
    if warnings:
        return Verdict(Health.WARNING, f"{warnings[0]}; {running}")
    return Verdict(Health.HEALTHY, running)


def _warnings(report: dict[str, Any], settings: Settings) -> list[str]:
    found = []
    known = {status.value for status in Status}
    strange = {k: v for k, v in report["counts"].items() if k not in known and v}
    if strange:
        names = ", ".join(f"{name!r} ({count})" for name, count in strange.items())
        found.append(
            f"rows with a status the daemon does not know, never sent: {names};"
            " set them to 'pending' or 'failed'"
        )
    unknown = report["counts"].get("unknown", 0)
    if unknown:
        found.append(
            f"{unknown} messages with an unknown outcome need checking"
            " (whatsapp-daemon resolve ID --as sent|resend|failed)"
        )
    for hold in (h for h in report["held_templates"] if h["waiting"]):
        where = _hold_scope(hold)
        found.append(
            f"{hold['waiting']} messages held: template {hold['template_name']!r}"
            f" ({hold['template_language']}) {where},"
            f" {hold['reason'].rstrip('.')}; fix it, then"
            f" whatsapp-daemon template release {hold['template_name']}"
            " (or cancel the batch)"
        )
    oldest = report["oldest_due"]
    limit = settings.check_backlog_minutes
    # A large campaign keeps its last messages waiting while it drains at
    # the rate: that much waiting is expected, beyond it is a backlog.
    draining = report["due_count"] / settings.rate_per_minute * 60
    if oldest and (oldest["age_seconds"] or 0) > limit * 60 + draining:
        found.append(
            f"backlog: message #{oldest['id']} has waited"
            f" {_duration(oldest['age_seconds'])} (threshold {limit} min)"
        )
    failed = report["failed_last_hour"]
    if failed > settings.check_failures_per_hour:
        found.append(
            f"{failed} messages failed in the last hour (threshold"
            f" {settings.check_failures_per_hour})"
        )
    for place in report["disk"]:
        if place["free_mb"] < settings.check_disk_mb:
            found.append(
                f"disk low: {place['free_mb']} MB free for {place['what']}"
                f" ({place['path']}; threshold {settings.check_disk_mb} MB)"
            )
    return found


def _running_line(daemon: dict[str, Any], now: datetime) -> str:
    cycle = daemon["last_cycle"] or {}
    started = cycle.get("started")
    since = f" since {started} UTC" if isinstance(started, str) else ""
    age = _age(cycle.get("at"), now)
    last = f", last cycle {_duration(age)} ago" if age is not None else ""
    return f"running, PID {daemon['pid']}{since}{last}"


# -- reading -----------------------------------------------------------------


def _state(db: QueueDB, key: str) -> dict[str, Any] | None:
    """A JSON object of the daemon's state; anything else reads as its text."""
    value = db.get_state(key)
    if not value:
        return None
    try:
        data = json.loads(value)
    except (ValueError, RecursionError):  # RecursionError: nested too deep
        data = value
    if isinstance(data, dict):
        return data
    return {"reason": str(data), "since": "?", "at": None}


def _counts(db: QueueDB) -> dict[str, int]:
    """Rows by status; one the daemon's SQL cannot match (a BLOB, a number)
    is named with its type, so that it counts as a status it does not know."""
    counts = {status.value: 0 for status in Status}
    for status, kind, count in db.conn.execute(
        "SELECT status, typeof(status), COUNT(*) FROM whatsapp_queue GROUP BY status"
    ):
        name = str(status) if kind in ("text", "null") else f"{status} ({kind})"
        counts[name] = counts.get(name, 0) + int(count)
    return counts


# The statuses a message ends in (unknown: sent or not, a person decides).
FINISHED = ("sent", "delivered", "read", "failed", "cancelled", "unknown")


def _batches(db: QueueDB, now: datetime, rate: int) -> list[dict[str, Any]]:
    rows = db.conn.execute(
        "SELECT q.batch_id AS batch, COUNT(*) AS total,"
        " coalesce(b.state, 'active') AS state,"
        " SUM(q.status = 'pending') AS pending,"
        " SUM(q.status = 'processing') AS processing,"
        " SUM(q.status = 'sent') AS sent, SUM(q.status = 'failed') AS failed,"
        " SUM(q.status = 'delivered') AS delivered, SUM(q.status = 'read') AS read,"
        " SUM(q.status = 'unknown') AS unknown,"
        " SUM(q.status = 'cancelled') AS cancelled,"
        f" MIN(CASE WHEN q.status = 'pending' THEN {SCHEDULED} END) AS next_due,"
        " SUM(q.status = 'pending' AND EXISTS"
        f"  (SELECT 1 FROM whatsapp_holds h WHERE {HELD_BY})) AS held"
        " FROM whatsapp_queue q LEFT JOIN whatsapp_batches b"
        " ON b.batch_id = q.batch_id GROUP BY q.batch_id ORDER BY MIN(q.id)"
    )
    batches = []
    for row in rows:
        batch = {
            k: v if k in ("next_due", "batch") else (v or 0)
            for k, v in dict(row).items()
        }
        batch["batch"] = batch["batch"] or None
        left = batch["pending"] + batch["processing"]
        # Rows in a status the daemon does not know are left alone: not done.
        batch["done"] = sum(batch[s] for s in FINISHED)
        batch["finish_estimate"] = _finish(left - batch["held"], batch, now, rate)
        batches.append(batch)
    return batches


def _finish(left: int, batch: dict[str, Any], now: datetime, rate: int) -> str | None:
    """When the batch's last message should leave at the configured rate.

    Other batches share the rate, so this is the earliest possible time.
    """
    if not left or batch["state"] != "active":
        return None
    start = now
    if batch["next_due"]:
        with contextlib.suppress(ValueError):
            start = max(now, parse(batch["next_due"]))
    try:
        return fmt(start + timedelta(minutes=left / rate))
    except OverflowError:  # due at the end of the calendar (9999-12-31)
        return None


def _oldest_due(db: QueueDB, now: datetime) -> dict[str, Any] | None:
    row = db.conn.execute(
        f"SELECT id, {SCHEDULED} AS scheduled_at FROM whatsapp_queue"
        f" WHERE status = 'pending' AND {DUE} ORDER BY {SCHEDULED}, id LIMIT 1",
        (fmt(now),),
    ).fetchone()
    if row is None:
        return None
    age = _age(row["scheduled_at"], now)
    return {"id": row["id"], "scheduled_at": row["scheduled_at"], "age_seconds": age}


def _next_scheduled(db: QueueDB, now: datetime) -> dict[str, Any] | None:
    """The first pending message whose time has not come yet."""
    row = db.conn.execute(
        f"SELECT id, {SCHEDULED} AS scheduled_at FROM whatsapp_queue"
        f" WHERE status = 'pending' AND {SCHEDULED} > ?"
        f" ORDER BY {SCHEDULED}, id LIMIT 1",
        (fmt(now),),
    ).fetchone()
    if row is None:
        return None
    return {"id": row["id"], "scheduled_at": row["scheduled_at"]}


def _last_sent(db: QueueDB, now: datetime) -> dict[str, Any] | None:
    row = db.conn.execute(
        "SELECT id, sent_at FROM whatsapp_queue"
        " WHERE status IN ('sent', 'delivered', 'read')"
        " AND sent_at IS NOT NULL ORDER BY sent_at DESC, id DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    return {
        "id": row["id"],
        "sent_at": row["sent_at"],
        "age_seconds": _age(row["sent_at"], now),
    }


def _failures(db: QueueDB) -> list[dict[str, Any]]:
    """Failed messages grouped by Meta's error code, with what each means.

    A code is one group, whether Meta refused the send or reported the
    failure later by webhook; ``after_acceptance`` counts the latter (the
    message has a wamid). Without a code, the two are told apart, since
    nothing else says what went wrong.
    """
    rows = db.conn.execute(
        "SELECT error_code, CASE WHEN error_code IS NULL THEN wamid IS NOT NULL"
        " END AS accepted, COUNT(*) AS count,"
        " SUM(wamid IS NOT NULL) AS after_acceptance, MAX(updated_at) AS last,"
        " (SELECT error_message FROM whatsapp_queue q2"
        "  WHERE q2.status = 'failed' AND q2.error_code IS q.error_code"
        "  AND (q.error_code IS NOT NULL"
        "   OR (q2.wamid IS NOT NULL) = (q.wamid IS NOT NULL))"
        "  ORDER BY q2.updated_at DESC LIMIT 1) AS example"
        " FROM whatsapp_queue q WHERE status = 'failed'"
        " GROUP BY error_code, accepted ORDER BY count DESC, error_code"
    )
    failures = []
    for row in rows:
        code = row["error_code"]
        if code is None and row["accepted"]:
            meaning = "échec après acceptation par Meta, sans code d'erreur"
        elif code is None:
            meaning = "refusé avant l'envoi (numéro, contenu ou heure invalide)"
        else:
            known = explanation(code) if isinstance(code, int) else None
            meaning = known or str(row["example"] or "")
        failures.append(
            {
                "code": code,
                "count": row["count"],
                "after_acceptance": int(row["after_acceptance"] or 0),
                "last": row["last"],
                "meaning": meaning,
                "example": row["example"],
            }
        )
    return failures


def _webhook(db: QueueDB, now: datetime) -> dict[str, Any]:
    """Whether the webhook receives: its last notification, statuses waiting."""
    row = db.conn.execute(
        "SELECT (SELECT MAX(received_at) FROM whatsapp_statuses) AS status_at,"
        " (SELECT MAX(updated_at) FROM whatsapp_contacts) AS inbound_at,"
        " (SELECT COUNT(*) FROM whatsapp_statuses WHERE applied_at IS NULL) AS kept"
    ).fetchone()
    times = [t for t in (row["status_at"], row["inbound_at"]) if t]
    last = max(times) if times else None
    return {
        "last_notification_at": last,
        "age_seconds": _age(last, now),
        "last_status_at": row["status_at"],
        "last_inbound_at": row["inbound_at"],
        "statuses_waiting": int(row["kept"] or 0),
    }


def _failed_since(db: QueueDB, since: datetime) -> int:
    row = db.conn.execute(
        "SELECT COUNT(*) FROM whatsapp_queue WHERE status = 'failed'"
        " AND updated_at >= ?",
        (fmt(since),),
    ).fetchone()
    return int(row[0])


def _recent_attempts(db: QueueDB, now: datetime) -> int:
    since = fmt_attempt(now - timedelta(seconds=WINDOW))
    row = db.conn.execute(
        "SELECT COUNT(*) FROM whatsapp_attempts WHERE attempted_at > ?", (since,)
    ).fetchone()
    return int(row[0])


def _disk(settings: Settings) -> list[dict[str, Any]]:
    """Free space where the log and the queue live (one entry per device)."""
    places: list[dict[str, Any]] = []
    seen: set[int] = set()
    for what, path in (
        ("the logs", settings.log_path.parent),
        ("the queue", settings.database_path.parent),
    ):
        folder = _existing(path)
        device = folder.stat().st_dev
        if device in seen:
            places[-1]["what"] += f" and {what}"
            continue
        seen.add(device)
        free = shutil.disk_usage(folder).free // 2**20
        places.append({"what": what, "path": str(folder), "free_mb": free})
    return places


def _existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _age(text: Any, now: datetime, *, signed: bool = False) -> int | None:
    """Seconds since ``text`` (None if it is not a time); never negative
    unless ``signed``."""
    if not isinstance(text, str) or not text:
        return None
    try:
        seconds = int((now - parse(text)).total_seconds())
    except (ValueError, OverflowError):  # not a time; beyond the calendar
        return None
    return seconds if signed else max(0, seconds)


# -- rendering ---------------------------------------------------------------


# C0, DEL, C1, and the Unicode line and paragraph separators.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def printable(value: Any) -> Any:
    """``value`` with control characters in its texts shown as escapes.

    Texts come from the database (batch names, Meta's error titles): a line
    break or a terminal escape sequence in them must not reach the screen.
    """
    if isinstance(value, str):
        return _CONTROL.sub(lambda m: repr(m.group())[1:-1], value)
    if isinstance(value, dict):
        return {key: printable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [printable(item) for item in value]
    return value


_JSON_CONTROL = re.compile(r"[\x7f-\x9f\u2028\u2029]")


def to_json(data: Any, *, indent: int | None = None) -> str:
    """``data`` as JSON, accents as they are, every control character escaped.

    ``json`` escapes those below U+0020 but lets DEL and the C1 characters
    (U+0080 to U+009F, a terminal's escape sequences) through: they become
    ``\\u`` escapes too.
    """
    text = json.dumps(data, indent=indent, ensure_ascii=False)
    return _JSON_CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def render(status: dict[str, Any]) -> str:
    """The status for a person in a terminal (UTC times)."""
    status = printable(status)
    health = status["health"]
    lines = [f"{health['health']}: {health['reason']}"]
    stopped = status["sending_stopped"]
    if stopped and not health["reason"].startswith("sending stopped"):
        lines.append(
            f"SENDING STOPPED since {stopped.get('since', '?')} UTC:"
            f" {stopped.get('reason', '?')}"
        )
    others = [w for w in health["warnings"] if not health["reason"].startswith(w)]
    if others:
        lines.append("")
        lines.append("Warnings:")
        lines += [f"  - {warning}" for warning in others]
    lines.append("")
    lines.append("Queue by status:")
    for name, count in status["counts"].items():
        lines.append(f"  {name:<11}{count:>8}")
    if status["counts"].get("unknown"):
        lines.append(
            "  (unknown: the request may have reached Meta; see README,"
            " 'Messages with an unknown outcome')"
        )
    sending = status["daemon"]["running"] and not stopped
    lines += _render_batches(status["batches"], sending)
    lines += _render_failures(status["failures"])
    lines += _render_holds(status["held_templates"])
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
    for place in status["disk"]:
        lines.append(
            f"Disk: {place['free_mb']} MB free for {place['what']} ({place['path']})"
        )
    lines.append(_webhook_line(status["webhook"]))
    return "\n".join(lines)


def _render_batches(batches: list[dict[str, Any]], sending: bool) -> list[str]:
    if not batches:
        return []
    lines = [
        "",
        "By batch:",
        f"  {'batch':<24}{'state':<11}{'total':>7}{'pending':>9}{'sending':>9}"
        f"{'sent':>7}{'deliv.':>7}{'read':>7}{'failed':>8}{'cancel.':>8}"
        f"{'unknown':>8}",
    ]
    for b in batches:
        lines.append(
            f"  {(b['batch'] or '(none)'):<24}{b['state']:<11}{b['total']:>7}"
            f"{b['pending']:>9}{b['processing']:>9}{b['sent']:>7}"
            f"{b['delivered']:>7}{b['read']:>7}{b['failed']:>8}"
            f"{b['cancelled']:>8}{b['unknown']:>8}"
        )
        done = b["done"] / b["total"] if b["total"] else 1.0
        filled = round(done * BAR_WIDTH)
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        finish = b["finish_estimate"]
        if finish:
            eta = f", done about {finish} UTC at the configured rate"
        elif b["pending"] + b["processing"]:
            own_state = b["state"] != "active" or sending
            eta = (
                f" ({b['state']})"
                if own_state
                else " (nothing leaves: see the first line)"
            )
        else:
            eta = ""
        if b["held"]:
            eta += f"; {b['held']} held with their template (see below)"
        lines.append(f"  {'':<24}[{bar}] {done:4.0%}{eta}")
    return lines


def _render_failures(failures: list[dict[str, Any]]) -> list[str]:
    if not failures:
        return []
    lines = ["", "Failures by error code:"]
    for failure in failures:
        code = failure["code"] if failure["code"] is not None else "-"
        line = f"  {code!s:>7} {failure['count']:>7}  {failure['meaning']}"
        later = failure["after_acceptance"]
        if failure["code"] is not None and later:
            line += f" ({later} after Meta accepted the message)"
        lines.append(line)
    return lines


def _render_holds(holds: list[dict[str, Any]]) -> list[str]:
    if not holds:
        return []
    lines = ["", "Held templates (whatsapp-daemon template release NAME):"]
    for hold in holds:
        lines.append(
            f"  {hold['template_name']} ({hold['template_language']})"
            f" {_hold_scope(hold)}: {hold['waiting']} messages waiting since"
            f" {hold['created_at']} UTC"
        )
        lines.append(f"    why: {hold['reason']}")
    return lines


def _hold_scope(hold: dict[str, Any]) -> str:
    batch = hold["batch_id"]
    if hold["every_batch"]:
        return "in every batch"
    return f"in batch {batch!r}" if batch else "outside batches"


def _webhook_line(webhook: dict[str, Any]) -> str:
    last = webhook["last_notification_at"]
    if last is None:
        return (
            "Webhook: no notification received yet (whatsapp-daemon webhook;"
            " see README, 'Delivery statuses: the webhook')"
        )
    waiting = webhook["statuses_waiting"]
    kept = f"; {waiting} statuses waiting for their message" if waiting else ""
    return (
        f"Webhook: last notification at {last} UTC"
        f" ({_duration(webhook['age_seconds'])} ago){kept}"
    )


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
