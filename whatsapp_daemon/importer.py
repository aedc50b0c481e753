"""Import a campaign from a CSV file: one queued message per recipient.

Numbers are normalised to E.164 (the default region reads numbers written
without a country code); duplicates are queued once; every rejected line is
reported with its line number, value and reason. The file is queued whole
or not at all.
"""

from __future__ import annotations

import csv
import io
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from . import phones
from .errors import InvalidMessageError
from .models import MessageType, NewMessage
from .queue import QueueDB

# Header names (accents and case ignored) that hold the phone number.
PHONE_HEADERS = (
    "telephone",
    "tel",
    "phone",
    "numero",
    "mobile",
    "portable",
    "gsm",
    "contact",
    "whatsapp",
    "msisdn",
    "number",
    "phone_number",
)
DELIMITERS = ",;\t"
ENCODINGS = ("utf-8-sig", "cp1252")


@dataclass(frozen=True)
class Rejected:
    line: int  # line number in the file, the header being line 1
    value: str
    reason: str


@dataclass
class ImportReport:
    """What an import did with each line."""

    messages: list[NewMessage] = field(default_factory=list)
    duplicates: list[Rejected] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The report for a person, one line per fact."""
        out = [
            f"{len(self.messages)} messages to queue, {len(self.duplicates)}"
            f" duplicates skipped, {len(self.rejected)} lines rejected",
        ]
        out += [f"  line {r.line}: {r.value!r}: {r.reason}" for r in self.rejected]
        out += [f"  line {r.line}: {r.value!r}: {r.reason}" for r in self.duplicates]
        return out


@dataclass(frozen=True)
class Campaign:
    """What to send to every recipient of the file."""

    template_name: str | None = None
    language: str | None = None
    param_columns: Sequence[str] = ()
    text: str | None = None  # free-form text with {column} placeholders


def read_rows(path: Path) -> tuple[list[str], Iterator[tuple[int, dict[str, str]]]]:
    """Return the header and (line number, row) pairs of a CSV file."""
    text = _decode(path.read_bytes(), path)
    header_line = text.splitlines()[0] if text.strip() else ""
    delimiter = max(DELIMITERS, key=header_line.count)
    if header_line.count(delimiter) == 0:
        raise InvalidMessageError(
            f"{path}: the first line has no column separator (, ; or tab);"
            " the file needs a header such as telephone,nom"
        )
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = [name.strip() for name in reader.fieldnames or []]
    reader.fieldnames = header
    rows = ((reader.line_num, row) for row in reader)
    return header, rows


def _decode(data: bytes, path: Path) -> str:
    for encoding in ENCODINGS:
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise InvalidMessageError(f"{path}: unreadable text encoding")  # pragma: no cover


def _key(name: str) -> str:
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return plain.strip().lower().replace(" ", "_").replace("-", "_")


def phone_column(header: Sequence[str]) -> str:
    """Find the column holding phone numbers, by its name."""
    for wanted in PHONE_HEADERS:
        for name in header:
            if _key(name) == wanted:
                return name
    raise InvalidMessageError(
        f"no phone column among {', '.join(header)}; name it telephone or phone"
    )


def plan(
    path: Path, campaign: Campaign, *, batch_id: str, region: str = "CI"
) -> ImportReport:
    """Read the file and decide the fate of every line, queueing nothing."""
    header, rows = read_rows(path)
    phone = phone_column(header)
    _check_columns(header, campaign)
    report = ImportReport()
    seen: dict[str, int] = {}
    for line, row in rows:
        raw = (row.get(phone) or "").strip()
        if not any(
            (value or "").strip() for value in row.values() if isinstance(value, str)
        ):
            continue  # a blank line
        try:
            recipient = phones.normalize(raw, region)
            message = _message(campaign, row, recipient, batch_id)
        except InvalidMessageError as exc:
            report.rejected.append(Rejected(line, raw, str(exc)))
            continue
        if recipient in seen:
            reason = f"doublon de la ligne {seen[recipient]} ({recipient})"
            report.duplicates.append(Rejected(line, raw, reason))
            continue
        seen[recipient] = line
        report.messages.append(message)
    return report


def _check_columns(header: Sequence[str], campaign: Campaign) -> None:
    missing = [name for name in campaign.param_columns if name not in header]
    if missing:
        raise InvalidMessageError(
            f"--param {missing[0]}: no such column; the file has {', '.join(header)}"
        )


def _message(
    campaign: Campaign, row: dict[str, str], recipient: str, batch_id: str
) -> NewMessage:
    if campaign.text is not None:
        try:
            body = campaign.text.format_map(
                {k: (v or "").strip() for k, v in row.items()}
            )
        except KeyError as exc:
            raise InvalidMessageError(f"--text: no column {exc} in the file") from None
        return NewMessage(recipient, MessageType.TEXT, body=body, batch_id=batch_id)
    params = []
    for column in campaign.param_columns:
        value = (row.get(column) or "").strip()
        if not value:
            raise InvalidMessageError(f"paramètre vide (colonne {column})")
        params.append(value)
    return NewMessage(
        recipient,
        MessageType.TEMPLATE,
        template_name=campaign.template_name,
        template_language=campaign.language,
        template_params=tuple(params),
        batch_id=batch_id,
    )


def import_file(
    db: QueueDB,
    path: Path,
    campaign: Campaign,
    *,
    batch_id: str,
    region: str = "CI",
    dry_run: bool = False,
    append: bool = False,
) -> ImportReport:
    """Plan the import, then queue every accepted line in one transaction."""
    if not append and _batch_exists(db, batch_id):
        raise InvalidMessageError(
            f"--batch {batch_id}: this batch is already queued; choose another id"
            " (or pass --append to add to it)"
        )
    report = plan(path, campaign, batch_id=batch_id, region=region)
    if not report.messages:
        raise InvalidMessageError(f"{path}: no valid recipient, nothing queued")
    if not dry_run:
        report.ids = db.enqueue(report.messages, datetime.now(UTC))
    return report


def _batch_exists(db: QueueDB, batch_id: str) -> bool:
    row = db.conn.execute(
        "SELECT 1 FROM whatsapp_queue WHERE batch_id = ? LIMIT 1", (batch_id,)
    ).fetchone()
    return row is not None
