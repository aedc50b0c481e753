"""Read a send time the way people write it, in the configured time zone.

Times are stored in UTC and compared with the clock in UTC, so neither the
host's own time zone nor its daylight-saving changes move a message.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from .errors import InvalidMessageError

HORIZON = timedelta(days=366)  # a send time further away is a typo

FORMATS = (
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%dT%H:%M:%S",
    "%d/%m/%Y %H:%M",
    "%d/%m/%Y %Hh%M",
)


def parse_at(text: str, zone: ZoneInfo, now: datetime) -> datetime:
    """Return the UTC time meant by ``text``, a wall-clock time in ``zone``.

    A time that does not exist in the zone (skipped when clocks go forward)
    is refused; one that happens twice (clocks go back) means the later, so
    that nothing leaves early. A time already past, or more than a year
    ahead, is refused.
    """
    naive = _parse(text.strip(), zone)
    first = naive.replace(tzinfo=zone, fold=0)
    later = naive.replace(tzinfo=zone, fold=1)
    try:
        skipped = first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != naive
        moment = max(first.astimezone(UTC), later.astimezone(UTC))
    except OverflowError:  # year 1 or 9999: past or too far, by the calendar
        skipped = False
        moment = (
            now - HORIZON if naive < now.replace(tzinfo=None) else now + 2 * HORIZON
        )
    if skipped:
        raise InvalidMessageError(
            f"--at {text!r}: this time does not exist in {zone.key} (the clocks"
            " skip it); choose another time"
        )
    if moment > now + HORIZON:
        raise InvalidMessageError(
            f"--at {text!r}: more than a year ahead; check the year"
        )
    if moment <= now:
        local_now = now.astimezone(zone).strftime("%Y-%m-%d %H:%M")
        raise InvalidMessageError(
            f"--at {text!r}: this time is past (now {local_now} {zone.key});"
            " give a future time, or leave --at out to send now"
        )
    return moment


def describe(moment: datetime, zone: ZoneInfo) -> str:
    """``2026-12-24 08:00 Africa/Abidjan (08:00 UTC)`` for a report."""
    local = moment.astimezone(zone).strftime("%Y-%m-%d %H:%M")
    utc = moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
    return f"{local} {zone.key} ({utc} UTC)"


def _parse(text: str, zone: ZoneInfo) -> datetime:
    impossible = ""
    for pattern in FORMATS:
        try:
            return datetime.strptime(text, pattern)
        except ValueError as exc:
            if "out of range" in str(exc):  # the form fits, the date does not
                impossible = str(exc)
    if impossible:
        raise InvalidMessageError(
            f"--at {text!r}: no such date ({impossible}); check the day and month"
        )
    raise InvalidMessageError(
        f"--at {text!r}: write the date and time as 2026-12-24 08:00"
        f" (read in {zone.key}, the WHATSAPP_TIMEZONE setting)"
    )
