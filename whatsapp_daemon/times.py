"""Times as the queue's tables store them: UTC text, as SQLite writes it.

``YYYY-MM-DD HH:MM:SS`` (SQLite's own ``datetime('now')`` format); the
attempt log adds milliseconds.
"""

from __future__ import annotations

from datetime import UTC, datetime

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
ATTEMPT_FORMAT = "%Y-%m-%d %H:%M:%S.%f"  # trimmed to milliseconds


def fmt(moment: datetime) -> str:
    """Format an aware datetime as the table's UTC text."""
    return moment.astimezone(UTC).strftime(TIME_FORMAT)


def fmt_attempt(moment: datetime) -> str:
    """Format an aware datetime for the attempt log (milliseconds)."""
    return moment.astimezone(UTC).strftime(ATTEMPT_FORMAT)[:-3]


def parse(text: str) -> datetime:
    """Read a time written by :func:`fmt` (or by SQLite) as an aware datetime.

    A time without an offset is UTC; one with an offset (PHP's ``date('c')``)
    is converted. ValueError if it is not a time, or one whose UTC moment
    falls outside the calendar (9999-12-31T23:59:59-05:00).
    """
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{text!r} is outside the calendar in UTC") from None
