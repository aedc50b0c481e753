"""Meta's webhook notifications: delivery statuses and customers' messages.

A 200 from the send endpoint means Meta accepted a message; what became of
it arrives later, by webhook, as statuses ``sent``, ``delivered``, ``read``
(``played`` for a voice message) or ``failed``. Each status is first stored
in ``whatsapp_statuses`` (so the same notification twice changes nothing),
then applied to its ``whatsapp_queue`` row, forward only: ``sent`` <
``failed`` < ``delivered`` < ``read``, whatever order they come in.

A status can arrive before the daemon has stored the send's response (the
row is still ``processing`` and has no ``wamid``): it stays stored, and
:func:`apply_stored` applies it in the transaction that records the wamid.

Meta's other status names (``deleted``, ``warning``) are logged at INFO
and move no row. A malformed ``entry`` or ``change`` is logged and skipped;
the rest of the notification is recorded.

Inbound messages only record, per sender, when they last wrote
(``whatsapp_contacts``, never later than the time it is received): that
opens WhatsApp's 24-hour service window (:func:`window_open`). Their
contents and profile names are not stored.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from . import logs
from .outcomes import explanation
from .times import fmt, parse

if TYPE_CHECKING:
    from .queue import QueueDB

SERVICE_WINDOW = timedelta(hours=24)

# How far along each status is; a row only ever moves to a higher rank.
RANKS: dict[str, int] = {
    "unknown": 0,
    "sent": 1,
    "failed": 2,
    "delivered": 3,
    "read": 4,
}
# Meta's status names and the queue status each becomes.
STATUSES: dict[str, str] = {
    "sent": "sent",
    "delivered": "delivered",
    "read": "read",
    "played": "read",  # a voice message listened to
    "failed": "failed",
}
# Statuses Meta also sends that say nothing of delivery: logged, not applied.
OTHER_STATUSES = frozenset({"deleted", "warning"})
_ROW_ID = re.compile(r"[0-9]{1,18}")  # ASCII digits only, not any Unicode \d
_DIGITS = re.compile(r"[0-9]+")


class BadItem(ValueError):
    """One status or message of a notification cannot be used; says why."""


@dataclass
class Summary:
    """What one notification did, for the log and the tests."""

    applied: int = 0  # statuses that moved a row (or set its dates)
    kept: int = 0  # statuses stored, waiting for their message's wamid
    duplicates: int = 0  # statuses already stored before
    ignored: int = 0  # stored, but behind the row's status
    other: int = 0  # deleted, warning: logged, not applied
    inbound: int = 0  # customers' messages recorded
    errors: int = 0  # value.errors[] entries logged
    bad: list[str] = field(default_factory=list)  # why items were skipped
    stopped: bool = False  # the caller asked to stop before the last item

    @property
    def handled(self) -> int:
        """How many items were recorded or logged (bad ones aside)."""
        return (
            self.applied
            + self.kept
            + self.duplicates
            + self.ignored
            + self.other
            + self.inbound
            + self.errors
        )


def _unix(value: Any) -> str:
    """Meta's ``timestamp`` (unix seconds, as a string) as the queue's UTC text."""
    text = str(value).strip() if isinstance(value, str | int) else ""
    if not _DIGITS.fullmatch(text):
        raise BadItem(f"timestamp {value!r} is not unix seconds")
    try:
        return fmt(datetime.fromtimestamp(int(text), UTC))
    except (OverflowError, OSError, ValueError):
        raise BadItem(f"timestamp {value!r} is out of range") from None


# -- the notification ----------------------------------------------------------


def handle(
    db: QueueDB, payload: Any, now: datetime, stop: threading.Event | None = None
) -> Summary:
    """Record one webhook notification (parsed JSON); on the database thread.

    Each status and each inbound message is its own transaction: one bad
    item is logged and skipped, the others are recorded; so is a malformed
    entry or change. Raises BadItem when nothing in the notification is
    shaped like Meta's. Once ``stop`` is set, the items not yet recorded are
    left (the caller did not acknowledge the notification; Meta sends it
    again, and what was recorded is recognised then).
    """
    summary = Summary()
    for value in _values(payload, summary):
        for error in _items(summary, value, "errors", single=True):
            summary.errors += 1
            _log_value_error(error)
        for key, record in (("statuses", _status), ("messages", _inbound)):
            for item in _items(summary, value, key):
                if stop is not None and stop.is_set():
                    summary.stopped = True
                    return summary
                _one(
                    summary,
                    lambda item=item, record=record: record(db, item, now, summary),
                )
    return summary


def _values(payload: Any, summary: Summary) -> list[dict[str, Any]]:
    """The ``entry[].changes[].value`` objects of a notification.

    A malformed entry or change is logged and skipped; BadItem if the
    notification has no entry list, or nothing but malformed ones.
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("entry"), list):
        raise BadItem("not a notification: no entry list")
    values: list[dict[str, Any]] = []
    bad: list[str] = []
    for entry in payload["entry"]:
        changes = entry.get("changes") if isinstance(entry, dict) else None
        if not isinstance(changes, list):
            bad.append(f"entry {_name(entry)} has no changes list")
            continue
        for change in changes:
            value = change.get("value") if isinstance(change, dict) else None
            if not isinstance(value, dict):
                bad.append(f"a change of entry {_name(entry)} has no value object")
                continue
            values.append(value)
    if bad and not values:
        raise BadItem("; ".join(bad))
    for reason in bad:
        _skipped(summary, reason)
    return values


def _name(entry: Any) -> str:
    """An entry's id for the log (Meta's WhatsApp Business Account id)."""
    found = entry.get("id") if isinstance(entry, dict) else None
    return repr(str(found)[:40]) if isinstance(found, str | int) else "without id"


def _items(
    summary: Summary, value: dict[str, Any], key: str, *, single: bool = False
) -> list[Any]:
    """``value[key]`` as a list; anything else but nothing is logged.

    With ``single``, one object in place of the list counts as one item.
    """
    items = value.get(key)
    if items is None or isinstance(items, list):
        return items or []
    if single and isinstance(items, dict):
        return [items]
    _skipped(summary, f"{key} is a {type(items).__name__}, not a list")
    return []


def _skipped(summary: Summary, reason: str) -> None:
    summary.bad.append(reason)
    logs.logger.error(
        "Notification du webhook ignorée en partie", extra=logs.ctx(reason=reason)
    )


def _one(summary: Summary, work: Any) -> None:
    """Run one item's work; log and count a bad item, then go on.

    A database error is not the item's fault: it is raised, so that the
    webhook answers 500 and Meta sends the notification again.
    """
    try:
        work()
    except (BadItem, ValueError, TypeError, KeyError) as exc:
        _skipped(summary, str(exc))


def _log_value_error(error: Any) -> None:
    """An error not tied to a message (``value.errors[]``)."""
    error = error if isinstance(error, dict) else {}
    code = error.get("code")
    data = error.get("error_data")
    logs.logger.error(
        "Erreur signalée par Meta (webhook)",
        extra=logs.ctx(
            code=code,
            meaning=explanation(code) if isinstance(code, int) else None,
            title=error.get("title") or error.get("message"),
            details=data.get("details") if isinstance(data, dict) else None,
        ),
    )


# -- statuses ----------------------------------------------------------------


@dataclass(frozen=True)
class _Status:
    """One ``statuses[]`` item, checked."""

    wamid: str
    status: str  # Meta's name (played stays played)
    happened_at: str
    recipient: str | None
    row_id: int | None  # biz_opaque_callback_data, when it is a row id
    errors: str | None  # JSON of Meta's errors[], as received

    @property
    def target(self) -> str:
        """The queue status it leads to."""
        return STATUSES[self.status]


def _parse_status(item: Any) -> _Status:
    if not isinstance(item, dict):
        raise BadItem("a status is not an object")
    wamid = item.get("id")
    if not isinstance(wamid, str) or not wamid.strip() or len(wamid) > 512:
        raise BadItem("a status has no message id")
    status = item.get("status")
    if status not in STATUSES:
        raise BadItem(
            f"status {str(status)[:40]!r} of {wamid} is not one the daemon knows"
        )
    opaque = item.get("biz_opaque_callback_data")
    row_id = (
        int(opaque) if isinstance(opaque, str) and _ROW_ID.fullmatch(opaque) else None
    )
    recipient = item.get("recipient_id")
    errors = item.get("errors")
    if isinstance(errors, dict):  # one error object in place of the list
        errors = [errors]
    return _Status(
        wamid=wamid.strip(),
        status=str(status),
        happened_at=_unix(item.get("timestamp")),
        recipient=str(recipient) if isinstance(recipient, str | int) else None,
        row_id=row_id,
        errors=json.dumps(errors, ensure_ascii=False) if errors else None,
    )


def _status(db: QueueDB, item: Any, now: datetime, summary: Summary) -> None:
    if isinstance(item, dict) and item.get("status") in OTHER_STATUSES:
        summary.other += 1
        wamid = item.get("id")
        logs.logger.info(
            "Statut de Meta sans effet sur la remise, ignoré",
            extra=logs.ctx(
                messageId=wamid if isinstance(wamid, str) else None,
                status=item["status"],
            ),
        )
        return
    status = _parse_status(item)
    stamp = fmt(now)
    with db.write() as conn:
        inserted = conn.execute(
            "INSERT OR IGNORE INTO whatsapp_statuses (wamid, status, message_id,"
            " recipient, happened_at, errors, received_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                status.wamid,
                status.status,
                status.row_id,
                status.recipient,
                status.happened_at,
                status.errors,
                stamp,
            ),
        ).rowcount
        if not inserted:
            summary.duplicates += 1
            logs.logger.debug(
                "Statut déjà reçu",
                extra=logs.ctx(messageId=status.wamid, status=status.status),
            )
            return
        row = _row_for(conn, status)
        if row is None:
            summary.kept += 1
            logs.logger.debug(  # usual when Meta is faster than its answer
                "Statut reçu avant l'identifiant du message, conservé",
                extra=logs.ctx(
                    messageId=status.wamid, status=status.status, id=status.row_id
                ),
            )
            return
        if _apply(conn, row, status, stamp):
            summary.applied += 1
        else:
            summary.ignored += 1


def _row_for(conn: sqlite3.Connection, status: _Status) -> sqlite3.Row | None:
    """The queue row a status belongs to, if it is known yet.

    By wamid; else by the row id Meta echoed, but only for a row whose
    request may have reached Meta without its answer being stored (status
    ``unknown``, no wamid): the status proves Meta accepted it. A row still
    ``processing`` gets its statuses when the daemon stores the wamid.
    """
    row: sqlite3.Row | None = conn.execute(
        "SELECT id, status, wamid FROM whatsapp_queue WHERE wamid = ?"
        " ORDER BY id LIMIT 1",
        (status.wamid,),
    ).fetchone()
    if row is None and status.row_id is not None:
        row = conn.execute(
            "SELECT id, status, wamid FROM whatsapp_queue"
            " WHERE id = ? AND wamid IS NULL AND status = 'unknown'",
            (status.row_id,),
        ).fetchone()
    return row


def _apply(
    conn: sqlite3.Connection, row: sqlite3.Row, status: _Status, stamp: str
) -> bool:
    """Move the row forward (never back); return whether anything changed."""
    current = str(row["status"])
    if current not in RANKS:  # processing, pending, cancelled...: not ours
        return False
    target = status.target
    forward = RANKS[target] > RANKS[current]
    # Any report proves the message left by then: the earliest one wins, so
    # sent_at is never later than delivered_at or read_at.
    sets = [
        "wamid = coalesce(wamid, ?)",
        "sent_at = CASE WHEN sent_at IS NULL OR sent_at > ? THEN ? ELSE sent_at END",
    ]
    args: list[Any] = [status.wamid, status.happened_at, status.happened_at]
    if target in ("delivered", "read"):
        # The earliest report wins: a read implies it was delivered by then.
        sets.append(
            "delivered_at = CASE WHEN delivered_at IS NULL OR delivered_at > ?"
            " THEN ? ELSE delivered_at END"
        )
        args += [status.happened_at, status.happened_at]
    if target == "read":
        sets.append(
            "read_at = CASE WHEN read_at IS NULL OR read_at > ? THEN ? ELSE read_at END"
        )
        args += [status.happened_at, status.happened_at]
    if forward:
        sets.append("status = ?")
        args.append(target)
        if target == "failed":
            code, message, details = _failure(status)
            sets.append("error_code = ?, error_message = ?, error_details = ?")
            args += [code, message, details]
        else:
            sets.append("error_code = NULL, error_message = NULL, error_details = NULL")
    changed = conn.execute(
        f"UPDATE whatsapp_queue SET {', '.join(sets)}, updated_at = ? WHERE id = ?",
        (*args, stamp, row["id"]),
    ).rowcount
    conn.execute(
        "UPDATE whatsapp_statuses SET applied_at = ?, message_id = ?"
        " WHERE wamid = ? AND status = ?",
        (stamp, row["id"], status.wamid, status.status),
    )
    _log_applied(row, status, forward)
    return bool(changed) and (forward or target in ("delivered", "read"))


def _log_applied(row: sqlite3.Row, status: _Status, forward: bool) -> None:
    context = logs.ctx(
        id=row["id"],
        messageId=status.wamid,
        status=status.status,
        recipient=f"+{status.recipient}" if status.recipient else None,
    )
    if status.target == "failed" and forward:
        code, message, _ = _failure(status)
        context["context"] = {**context["context"], "code": code, "reason": message}
        logs.logger.warning("Message non remis (statut failed de Meta)", extra=context)
    elif forward:
        logs.logger.debug("Statut de remise appliqué", extra=context)
    else:
        logs.logger.debug("Statut de remise en retard, sans effet", extra=context)


def _failure(status: _Status) -> tuple[int | None, str, str | None]:
    """The error code, the reason in French (never empty) and the details."""
    errors = json.loads(status.errors) if status.errors else []
    first = errors[0] if isinstance(errors, list) and errors else {}
    first = first if isinstance(first, dict) else {}
    raw_code = first.get("code")
    code = (
        raw_code
        if isinstance(raw_code, int) and not isinstance(raw_code, bool)
        else None
    )
    data = first.get("error_data")
    details = data.get("details") if isinstance(data, dict) else None
    title = first.get("title") or first.get("message")
    parts = [str(part) for part in (title, details) if part]
    meta = f"(#{code}) " if code is not None else ""
    meta += " — ".join(parts) if parts else "échec signalé par Meta sans détail"
    plain = explanation(code)
    reason = f"{plain} — {meta}" if plain else meta
    stored = {
        "code": code,
        "title": first.get("title"),
        "message": first.get("message"),
        "details": details,
        "href": first.get("href"),
        "source": "webhook",
    }
    return code, reason, json.dumps(stored, ensure_ascii=False)


def apply_stored(
    conn: sqlite3.Connection, message_id: int, wamid: str | None, now: datetime
) -> int:
    """Apply the statuses that arrived before the row's wamid was stored.

    Called inside the transaction that records the send's answer
    (``QueueDB.mark_sent``, with the wamid; ``mark_unknown``, without one:
    then the row id Meta echoed proves the message was accepted). Returns
    how many statuses were applied.
    """
    stamp = fmt(now)
    if wamid is None:
        first = conn.execute(
            "SELECT wamid FROM whatsapp_statuses WHERE message_id = ?"
            " AND applied_at IS NULL ORDER BY received_at, rowid LIMIT 1",
            (message_id,),
        ).fetchone()
        if first is None:
            return 0
        wamid = str(first[0])
    stored = conn.execute(
        "SELECT wamid, status, message_id, recipient, happened_at, errors"
        " FROM whatsapp_statuses WHERE wamid = ? AND applied_at IS NULL",
        (wamid,),
    ).fetchall()
    applied = 0
    for found in sorted(stored, key=lambda s: RANKS[STATUSES.get(s[1], "unknown")]):
        if found[1] not in STATUSES:
            continue
        row = conn.execute(
            "SELECT id, status, wamid FROM whatsapp_queue WHERE id = ?"
            " AND (wamid IS NULL OR wamid = ?)",
            (message_id, wamid),
        ).fetchone()
        if row is None:
            break
        status = _Status(
            wamid=str(found[0]),
            status=str(found[1]),
            happened_at=str(found[4]),
            recipient=found[3],
            row_id=message_id,
            errors=found[5],
        )
        _apply(conn, row, status, stamp)
        applied += 1
    return applied


# -- inbound messages ------------------------------------------------------------


def _inbound(db: QueueDB, item: Any, now: datetime, summary: Summary) -> None:
    """Record when a customer last wrote (the latest time wins)."""
    if not isinstance(item, dict):
        raise BadItem("an inbound message is not an object")
    sender = _wa_id(item.get("from"))
    if sender is None:
        raise BadItem("an inbound message has no sender")
    at = _unix(item.get("timestamp"))
    stamp = fmt(now)
    if at > stamp:  # a time ahead of ours would hold the window open
        logs.logger.debug(
            "Heure d'un message reçu dans le futur, ramenée à maintenant",
            extra=logs.ctx(recipient=f"+{sender}", given=at, at=stamp),
        )
        at = stamp
    with db.write() as conn:
        conn.execute(
            "INSERT INTO whatsapp_contacts (wa_id, last_inbound_at, updated_at)"
            " VALUES (?, ?, ?) ON CONFLICT (wa_id) DO UPDATE SET"
            " last_inbound_at = max(last_inbound_at, excluded.last_inbound_at),"
            " updated_at = excluded.updated_at",
            (sender, at, stamp),
        )
    summary.inbound += 1
    logs.logger.debug(
        "Message reçu d'un client", extra=logs.ctx(recipient=f"+{sender}", at=at)
    )


def _wa_id(value: Any) -> str | None:
    """A WhatsApp id (the number's digits), from ``+225…`` or digits."""
    text = str(value) if isinstance(value, str | int) else ""
    digits = re.sub(r"[\s+\-().]", "", text)
    return digits if _DIGITS.fullmatch(digits) and 6 <= len(digits) <= 20 else None


def window_open(conn: sqlite3.Connection, recipient: str, now: datetime) -> bool:
    """Whether ``recipient`` wrote to us less than 24 hours before ``now``.

    ``recipient`` is E.164 (``+2250701020304``) or digits. Only messages
    the webhook received count; with none recorded the window is closed.
    """
    wa_id = _wa_id(recipient)
    if wa_id is None:
        return False
    row = conn.execute(
        "SELECT last_inbound_at FROM whatsapp_contacts WHERE wa_id = ?", (wa_id,)
    ).fetchone()
    if row is None or not row[0]:
        return False
    try:
        last = parse(str(row[0]))
    except ValueError:
        return False
    return now - last < SERVICE_WINDOW  # a time ahead of our clock: open
