"""Import a campaign from a spreadsheet: one queued message per recipient.

Every line gets a decision: queued, duplicate (the same number written
another way), converted (an old eight-digit number, on request) or rejected
with a reason. By default the file is queued whole or not at all: one
rejected line and nothing is queued. The file is streamed and written in
short transactions under an import that the daemon ignores until the last
one is written; an interrupted import removes what it wrote.
"""

from __future__ import annotations

import csv
import string
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from . import batches, payloads, phones
from .errors import InvalidMessageError
from .models import MessageType, NewMessage
from .queue import QueueDB, fmt
from .tables import Row, Table, open_table

# How the phone column is found, in tiers: a header holding a WhatsApp word
# wins over one holding a phone word, which wins over a header that is only
# "contact" or "numéro" (words that also name other things: "Numéro de
# facture"). Accents, case and punctuation are ignored, and a plural "s".
# Two candidates in the first tier that has any: the user must choose.
WHATSAPP_WORDS = frozenset({"whatsapp", "wa"})
PHONE_WORDS = frozenset(
    {
        "telephone", "tel", "phone", "mobile", "portable", "cellulaire",
        "cel", "cell", "gsm", "msisdn", "mob",
    }
)  # fmt: skip
PHONE_HEADERS = frozenset({"contact", "number", "numero", "num"})

CHUNK_ROWS = 500  # rows written per transaction
SCREEN_LINES = 20  # rejected lines shown on screen; all are in the CSV report
TEXT_CELL_LIMIT = 200  # characters of a value kept in the report (Excel: 255)


class Decision:
    REJECTED = "rejetée"
    DUPLICATE = "doublon"
    CONVERTED = "convertie"


@dataclass(frozen=True)
class Line:
    """What the import did with one line of the file (other than queue it)."""

    line: int  # line (or sheet row) number in the file, the header included
    value: str  # the phone number as written
    decision: str
    reason: str
    number: str = ""  # the E.164 number, when there is one


@dataclass(frozen=True)
class Campaign:
    """What to send to every recipient of the file."""

    template_name: str | None = None
    language: str | None = None
    param_columns: Sequence[str] = ()
    text: str | None = None  # free-form text with {column} placeholders


@dataclass(frozen=True)
class Options:
    """How to read the file and what to do with it."""

    phone_column: str | None = None
    encoding: str | None = None
    region: str | None = "CI"
    convert_old: bool = False
    skip_rejected: bool = False  # queue the valid lines even if some are rejected
    dry_run: bool = False
    append: bool = False
    scheduled_at: datetime | None = None  # aware; None sends at once
    chunk_rows: int = CHUNK_ROWS


@dataclass
class ImportReport:
    """What an import did, counted, with the lines a person must look at."""

    path: Path
    batch_id: str
    kind: str = ""
    phone_column: str = ""
    rows: int = 0  # data lines read, blank lines not counted
    queued: int = 0
    duplicates: int = 0
    rejected: int = 0
    converted: int = 0
    by_country: Counter[str] = field(default_factory=Counter)
    by_operator: Counter[str] = field(default_factory=Counter)
    shown: list[Line] = field(default_factory=list)
    details_path: Path | None = None
    committed: bool = False

    def note(self, line: Line) -> None:
        if line.decision == Decision.REJECTED:
            self.rejected += 1
            if len([s for s in self.shown if s.decision == line.decision]) < (
                SCREEN_LINES
            ):
                self.shown.append(line)
        elif line.decision == Decision.DUPLICATE:
            self.duplicates += 1
        else:
            self.converted += 1

    def lines(self) -> list[str]:
        """The report for a person, in the order they need it."""
        out = [
            f"{self.path.name}: {self.rows} lines read ({self.kind};"
            f" phone column {self.phone_column!r})",
            f"  {self.queued:>7} messages {'queued' if self.committed else 'to queue'}"
            f" in batch {self.batch_id}",
            f"  {self.duplicates:>7} duplicates (a number already met in the file)",
            f"  {self.rejected:>7} lines rejected",
        ]
        if self.converted:
            out.append(f"  {self.converted:>7} old 8-digit numbers converted")
        if self.by_country:
            counts = ", ".join(f"{c} {n}" for c, n in self.by_country.most_common())
            out.append(f"  by country: {counts}")
        if self.by_operator:
            counts = ", ".join(f"{o} {n}" for o, n in self.by_operator.most_common())
            out.append(f"  Ivorian mobiles by operator: {counts}")
        rejected = [s for s in self.shown if s.decision == Decision.REJECTED]
        if rejected:
            more = f" (first {len(rejected)})" if self.rejected > len(rejected) else ""
            out.append(f"Rejected lines{more}:")
            out += [f"  line {r.line}: {r.value!r}: {r.reason}" for r in rejected]
        if self.details_path is not None:
            out.append(
                f"Every rejected, duplicate and converted line: {self.details_path}"
            )
        return out


class ImportRefused(InvalidMessageError):
    """Rejected lines stopped an all-or-nothing import; nothing was queued."""

    def __init__(self, report: ImportReport) -> None:
        super().__init__(
            f"{report.rejected} lines rejected, nothing queued; fix them and import"
            " again, or pass --skip-rejected to queue the"
            f" {report.queued} valid lines only"
        )
        self.report = report


def key(name: str) -> str:
    """A column name without accents, case, punctuation or extra spaces."""
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    words = "".join(c if c.isalnum() else " " for c in plain.lower()).split()
    return "_".join(words)


def phone_column(header: Sequence[str], wanted: str | None = None) -> int:
    """Find the index of the column holding phone numbers."""
    if wanted is not None:
        return _column_index(header, wanted, "--phone-column")
    words = [{w.removesuffix("s") for w in key(name).split("_")} for name in header]
    tiers = (
        [i for i, names in enumerate(words) if names & WHATSAPP_WORDS],
        [i for i, names in enumerate(words) if names & PHONE_WORDS],
        [
            i
            for i, names in enumerate(words)
            if len(names) == 1 and names & PHONE_HEADERS
        ],
    )
    for found in tiers:
        if len(found) == 1:
            return found[0]
        if found:
            names = ", ".join(repr(header[i]) for i in found)
            raise InvalidMessageError(
                f"several columns may hold the number ({names});"
                " choose one with --phone-column"
            )
    columns = ", ".join(repr(name) for name in header)
    raise InvalidMessageError(
        f"no phone column among {columns}; name it telephone or phone, or give"
        " --phone-column"
    )


def _column_index(header: Sequence[str], wanted: str, option: str) -> int:
    for index, name in enumerate(header):
        if name == wanted:
            return index
    matches = [i for i, name in enumerate(header) if key(name) == key(wanted)]
    if len(matches) == 1:
        return matches[0]
    columns = ", ".join(repr(name) for name in header)
    raise InvalidMessageError(
        f"{option} {wanted}: no such column; the file has {columns}"
    )


class _Composer:
    """Turns one row into the message for its recipient."""

    def __init__(self, campaign: Campaign, header: Sequence[str], batch_id: str):
        self.campaign = campaign
        self.batch_id = batch_id
        self.params = [
            (name, _column_index(header, name, "--param"))
            for name in campaign.param_columns
        ]
        self.fields: dict[str, int] = {}
        if campaign.text is not None:
            for _, name, _, _ in string.Formatter().parse(campaign.text):
                if name is not None:
                    if not name:
                        raise InvalidMessageError(
                            "--text: {} without a column name; write {nom}"
                        )
                    self.fields[name] = _column_index(header, name, "--text {...}:")

    def compose(
        self, values: list[str], recipient: str, scheduled_at: str | None
    ) -> NewMessage:
        def cell(index: int) -> str:
            return values[index].strip() if index < len(values) else ""

        if self.campaign.text is not None:
            body = self.campaign.text.format_map(
                {name: cell(index) for name, index in self.fields.items()}
            )
            if len(body) > payloads.TEXT_LIMIT:
                raise InvalidMessageError(
                    f"texte de {len(body)} caractères, plus que les"
                    f" {payloads.TEXT_LIMIT} admis par Meta"
                )
            return NewMessage(
                recipient,
                MessageType.TEXT,
                body=body,
                batch_id=self.batch_id,
                scheduled_at=scheduled_at,
            )
        params = []
        for name, index in self.params:
            value = cell(index)
            if not value:
                raise InvalidMessageError(f"paramètre vide (colonne {name})")
            if "\n" in value or "\r" in value or "\t" in value:
                raise InvalidMessageError(
                    f"retour à la ligne ou tabulation dans la colonne {name}"
                    " (refusé par Meta dans un paramètre)"
                )
            params.append(value)
        return NewMessage(
            recipient,
            MessageType.TEMPLATE,
            template_name=self.campaign.template_name,
            template_language=self.campaign.language,
            template_params=tuple(params),
            batch_id=self.batch_id,
            scheduled_at=scheduled_at,
        )


class _Details:
    """The CSV of every line that was not simply queued, written as it goes.

    Semicolon-separated with a BOM, so that Excel on a French-language
    computer opens it in columns with the accents right. Numbers are written
    ``="0701020304"``, which Excel shows as that text instead of dropping
    the zero or turning ``+2250701020304`` into ``2,25E+12`` (and which the
    import reads back as the number).
    """

    HEADER = ("ligne", "valeur", "decision", "numero", "raison")

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._stream: TextIO | None = None
        self._writer: Any = None

    def write(self, line: Line) -> None:
        if self.path is None:
            return
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._stream = self.path.open("w", encoding="utf-8-sig", newline="")
            self._writer = csv.writer(self._stream, delimiter=";")
            self._writer.writerow(self.HEADER)
        self._writer.writerow(
            (
                line.line,
                as_text(line.value),
                line.decision,
                as_text(line.number),
                line.reason,
            )
        )

    @property
    def written(self) -> bool:
        return self._writer is not None

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()


def as_text(value: str) -> str:
    """A cell that Excel shows exactly as written, never as a number or formula."""
    if not value:
        return ""
    if len(value) > TEXT_CELL_LIMIT:
        value = value[: TEXT_CELL_LIMIT - 1] + "\u2026"
    return '="' + value.replace('"', '""') + '"'


def import_file(
    db: QueueDB | None,
    path: Path,
    campaign: Campaign,
    *,
    batch_id: str,
    options: Options = Options(),
    details_path: Path | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> ImportReport:
    """Read ``path`` and queue its messages in ``db`` (None: report only).

    Raises ImportRefused when lines were rejected and ``skip_rejected`` is
    off, InvalidMessageError when the file or the options are wrong. In
    every failure, nothing stays queued.
    """
    batches.check_batch_id(batch_id)
    if db is not None:
        batches.sweep_abandoned(db, now())
        _check_batch(db, batch_id, append=options.append)
    table = open_table(path, encoding=options.encoding)
    details = _Details(details_path)
    report = ImportReport(path, batch_id, kind=table.kind)
    import_id: int | None = None
    try:
        phone = phone_column(table.header, options.phone_column)
        report.phone_column = table.header[phone]
        composer = _Composer(campaign, table.header, batch_id)
        writing = db is not None and not options.dry_run
        if writing:
            assert db is not None
            import_id = batches.begin_import(db, batch_id, str(path), now())
        _read(db, table, phone, composer, options, report, details, import_id)
        if report.rejected and not options.skip_rejected:
            raise ImportRefused(report)
        if not report.queued:
            raise InvalidMessageError(f"{path}: no valid recipient, nothing queued")
        if writing:
            assert db is not None and import_id is not None
            batches.finish_import(db, import_id, now())
            report.committed = True
    except BaseException:
        if import_id is not None:
            assert db is not None
            batches.abort_import(db, import_id)
        raise
    finally:
        table.close()
        details.close()
        if details.written:
            report.details_path = details_path
    return report


def _check_batch(db: QueueDB, batch_id: str, *, append: bool) -> None:
    if not batches.exists(db, batch_id):
        return
    if not append:
        raise InvalidMessageError(
            f"--batch {batch_id}: this batch already exists; choose another id"
            " (or pass --append to add to it)"
        )
    if batches.state_of(db, batch_id) is batches.BatchState.CANCELLED:
        raise InvalidMessageError(
            f"--batch {batch_id}: this batch was cancelled; import under a new id"
        )


def _read(
    db: QueueDB | None,
    table: Table,
    phone: int,
    composer: _Composer,
    options: Options,
    report: ImportReport,
    details: _Details,
    import_id: int | None,
) -> None:
    """Decide every line; write accepted ones in chunks while none is rejected."""
    scheduled = fmt(options.scheduled_at) if options.scheduled_at else None
    width = len(table.header)
    # E.164 digits -> first line: what grows with the file (ints are compact).
    seen: dict[int, int] = {}
    chunk: list[NewMessage] = []

    def flush() -> None:
        sending = not report.rejected or options.skip_rejected
        if chunk and db is not None and import_id is not None and sending:
            db.enqueue(chunk, datetime.now(UTC), import_id=import_id)
            batches.touch_import(db, import_id, datetime.now(UTC))
        chunk.clear()

    for number, values in _data_rows(table.rows):
        report.rows += 1
        raw = values[phone].strip() if phone < len(values) else ""
        try:
            if len(values) > width and any(v.strip() for v in values[width:]):
                raise InvalidMessageError(
                    f"{len(values)} colonnes au lieu de {width} : un séparateur dans"
                    " une valeur sans guillemets ?"
                )
            found = phones.read(raw, options.region, convert_old=options.convert_old)
            message = composer.compose(values, found.e164, scheduled)
        except InvalidMessageError as exc:
            _note(report, details, Line(number, raw, Decision.REJECTED, str(exc)))
            continue
        first = seen.get(int(found.e164[1:]))
        reason = f"même numéro qu'à la ligne {first}"
        if first is None and options.append and db is not None:
            reason = "numéro déjà dans le lot"
            first = 0 if _in_batch(db, composer.batch_id, found.e164) else None
        if first is not None:
            line = Line(number, raw, Decision.DUPLICATE, reason, found.e164)
            _note(report, details, line)
            continue
        seen[int(found.e164[1:])] = number
        if found.old_number is not None:
            reason = f"ancien numéro {found.old_number} converti (règle de 2021)"
            line = Line(number, raw, Decision.CONVERTED, reason, found.e164)
            _note(report, details, line)
        report.queued += 1
        report.by_country[found.country] += 1
        if found.operator and found.is_mobile:
            report.by_operator[found.operator] += 1
        chunk.append(message)
        if len(chunk) >= options.chunk_rows:
            flush()
    flush()


def _data_rows(rows: Iterator[Row]) -> Iterator[Row]:
    """Skip blank lines, those Excel leaves at the end included (``;;;``)."""
    for number, values in rows:
        if any(value.strip() for value in values):
            yield number, values


def _in_batch(db: QueueDB, batch_id: str, recipient: str) -> bool:
    """Tell whether the batch already held ``recipient`` before this import."""
    row = db.conn.execute(
        "SELECT 1 FROM whatsapp_queue WHERE batch_id = ? AND recipient = ? LIMIT 1",
        (batch_id, recipient),
    ).fetchone()
    return row is not None


def _note(report: ImportReport, details: _Details, line: Line) -> None:
    report.note(line)
    details.write(line)


def default_details_path(folder: Path, batch_id: str, now: datetime) -> Path:
    """Where the CSV of rejected lines goes unless the user names a file."""
    return folder / f"{batch_id}-{now.strftime('%Y%m%d-%H%M%S')}-lignes.csv"
