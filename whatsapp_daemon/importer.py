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
import os
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
from .messages import LANGUAGE_CODE, TEMPLATE_NAME
from .models import MessageType, NewMessage
from .queue import QueueDB
from .tables import Row, Table, open_table
from .times import fmt

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
PARAM_LIMIT = 1024  # characters of a template parameter (a body's own limit)
# What a formula shows when it fails; such a cell is never a real value.
EXCEL_ERRORS = frozenset(
    {
        "#N/A", "#VALUE!", "#REF!", "#DIV/0!", "#NUM!", "#NAME?", "#NULL!",
        "#SPILL!", "#CALC!", "#FIELD!", "#GETTING_DATA",
        # as a French-language Excel writes them
        "#VALEUR!", "#NOMBRE!", "#NOM?", "#NUL!", "#PROPAGATION!", "#CHAMP!",
    }
)  # fmt: skip
SCREEN_LINES = 20  # rejected lines shown on screen; all are in the CSV report
TEXT_CELL_LIMIT = 200  # characters of a value kept in the report (Excel: 255)


class Decision:
    REJECTED = "rejetée"
    DUPLICATE = "doublon"
    IN_BATCH = "déjà dans le lot"
    CONVERTED = "convertie"


@dataclass(frozen=True)
class Line:
    """What the import did with one line of the file (other than queue it)."""

    line: int  # line (or sheet row) number in the file, the header included
    value: str  # the phone number as written
    decision: str
    reason: str
    number: str = ""  # the E.164 number, when there is one
    cells: tuple[str, ...] = ()  # the whole line, to find it in the file


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
    sheet: str | None = None  # the sheet of an .xlsx file; default: first visible
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
    header_line: int = 1
    rows: int = 0  # data lines read, blank lines not counted
    queued: int = 0
    duplicates: int = 0  # the same number as an earlier line of the file
    differing: int = 0  # ... of which with another message: only one is sent
    in_batch: int = 0  # numbers the batch already had (--append)
    rejected: int = 0
    converted: int = 0
    by_country: Counter[str] = field(default_factory=Counter)
    by_operator: Counter[str] = field(default_factory=Counter)
    shown: list[Line] = field(default_factory=list)
    example: NewMessage | None = None
    details_path: Path | None = None
    committed: bool = False

    def note(self, line: Line) -> None:
        if line.decision == Decision.REJECTED:
            self.rejected += 1
            if len(self.shown) < SCREEN_LINES:
                self.shown.append(line)
        elif line.decision == Decision.DUPLICATE:
            self.duplicates += 1
        elif line.decision == Decision.IN_BATCH:
            self.in_batch += 1
        else:
            self.converted += 1

    def lines(self) -> list[str]:
        """The report for a person, in the order they need it."""
        header = f", header on line {self.header_line}" if self.header_line > 1 else ""
        out = [
            f"{self.path.name}: {self.rows} lines read ({self.kind};"
            f" phone column {self.phone_column!r}{header})",
            f"  {self.queued:>7} messages {'queued' if self.committed else 'to queue'}"
            f" in batch {self.batch_id}",
            f"  {self.duplicates:>7} duplicates (same number as an earlier line)",
        ]
        if self.differing:
            out.append(
                f"  {'':>7} of which {self.differing} with a different message:"
                " only the first line's is sent"
            )
        if self.in_batch:
            out.append(f"  {self.in_batch:>7} numbers already in the batch, skipped")
        out.append(f"  {self.rejected:>7} lines rejected")
        if self.converted:
            out.append(f"  {self.converted:>7} old 8-digit numbers converted")
        if self.by_country:
            counts = ", ".join(f"{c} {n}" for c, n in self.by_country.most_common())
            out.append(f"  by country: {counts}")
        if self.by_operator:
            counts = ", ".join(f"{o} {n}" for o, n in self.by_operator.most_common())
            out.append(f"  Ivorian mobiles by operator: {counts}")
        if self.example is not None:
            out.append(f"First message: {describe(self.example)}")
        if self.shown:
            more = (
                f" (first {len(self.shown)})" if self.rejected > len(self.shown) else ""
            )
            out.append(f"Rejected lines{more}:")
            out += [f"  line {r.line}: {_cut(r.value)}: {r.reason}" for r in self.shown]
            if self.rejected > len(self.shown):
                out.append(f"  ... and {self.rejected - len(self.shown)} more")
        if self.details_path is not None:
            out.append(
                "Every line not queued as written (rejected, duplicate, already"
                f" in the batch, converted): {self.details_path}"
            )
        return out


# The longest rejected value the summary shows; the CSV report has more.
SHOWN_VALUE = 60


def _cut(value: str) -> str:
    """A rejected value as the summary shows it: quoted, one line, short."""
    shown = repr(value)
    return shown if len(shown) <= SHOWN_VALUE else shown[: SHOWN_VALUE - 1] + "…"


def describe(message: NewMessage) -> str:
    """One message as the recipient's phone will get it, for the report."""
    if message.message_type is MessageType.TEXT:
        return f"{message.recipient}: {message.body!r}"
    params = ", ".join(
        f"{{{{{i}}}}}={value!r}"
        for i, value in enumerate(message.template_params, start=1)
    )
    return (
        f"{message.recipient}: template {message.template_name}"
        f" ({message.template_language}) {params}".rstrip()
    )


class NoPhoneColumnError(InvalidMessageError):
    """No column of the header can hold the numbers."""


class AmbiguousColumnError(InvalidMessageError):
    """Several columns could hold the numbers: the user must choose."""


class ImportRefused(InvalidMessageError):
    """Nothing was queued; the report says which lines to look at."""

    def __init__(self, report: ImportReport, message: str) -> None:
        super().__init__(message)
        self.report = report

    @classmethod
    def rejected_lines(cls, report: ImportReport) -> ImportRefused:
        if report.queued:
            way_out = (
                f"or pass --skip-rejected to queue the {report.queued} valid lines only"
            )
        else:
            way_out = "no line is valid"
        return cls(
            report,
            f"{report.rejected} lines rejected, nothing queued; fix them (see the"
            f" report) and import again, {way_out}",
        )

    @classmethod
    def nothing_to_queue(cls, report: ImportReport) -> ImportRefused:
        return cls(
            report,
            f"{report.path}: no message to queue (every line was rejected, a"
            " duplicate or already in the batch); nothing queued",
        )


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
            raise AmbiguousColumnError(
                f"several columns may hold the number ({names});"
                " choose one with --phone-column"
            )
    columns = _names(header)
    raise NoPhoneColumnError(
        f"no phone column among {columns}; name it telephone or phone, or give"
        " --phone-column"
    )


def _names(header: Sequence[str], limit: int = 20) -> str:
    """The column names for a message, shortened for a very wide file."""
    names = ", ".join(repr(name[:40]) for name in header[:limit])
    return names + (f" and {len(header) - limit} more" if len(header) > limit else "")


def looks_like_header(wanted: str | None) -> Callable[[list[str]], int]:
    """Rate a line as the header (2), maybe the header (1), or not (0).

    A header names the phone column; a title above it ("Campagne WhatsApp
    décembre") may too, but it is a single cell, so a line with several
    named columns wins.
    """

    def test(cells: list[str]) -> int:
        try:
            phone_column(cells, wanted)
        except AmbiguousColumnError:
            pass  # a header, whose column the user must name
        except InvalidMessageError:
            return 0
        named = sum(1 for cell in cells if cell)
        return 2 if named >= 2 else 1

    return test


def _column_index(header: Sequence[str], wanted: str, option: str) -> int:
    exact = [i for i, name in enumerate(header) if name == wanted]
    matches = exact or [i for i, name in enumerate(header) if key(name) == key(wanted)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise InvalidMessageError(
            f"{option} {wanted}: {len(matches)} columns have this name;"
            " rename all but one in the file"
        )
    columns = _names(header)
    raise InvalidMessageError(
        f"{option} {wanted}: no such column; the file has {columns}"
    )


class _Composer:
    """Turns one row into the message for its recipient."""

    def __init__(self, campaign: Campaign, header: Sequence[str], batch_id: str):
        check_campaign(campaign)
        self.campaign = campaign
        self.batch_id = batch_id
        self.params = [
            (name, _column_index(header, name, "--param"))
            for name in campaign.param_columns
        ]
        self.fields: dict[str, int] = {}
        self.parsed: list[tuple[str, str | None, str | None, str | None]] = []
        if campaign.text is not None:
            self.parsed = _parse_text(campaign.text)
            self.fields = _placeholders(campaign.text, self.parsed, header)

    def compose(
        self, values: list[str], recipient: str, scheduled_at: str | None
    ) -> NewMessage:
        def cell(index: int) -> str:
            return values[index].strip() if index < len(values) else ""

        if self.campaign.text is not None:
            filled = {name: cell(index) for name, index in self.fields.items()}
            for name, value in filled.items():
                _check_value(name, value)
            body = "".join(
                literal + (filled[name] if name is not None else "")
                for literal, name, _, _ in self.parsed
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
            _check_value(name, value)
            if "\n" in value or "\r" in value or "\t" in value:
                raise InvalidMessageError(
                    f"retour à la ligne ou tabulation dans la colonne {name}"
                    " (refusé par Meta dans un paramètre)"
                )
            if "     " in value:
                raise InvalidMessageError(
                    f"plus de 4 espaces de suite dans la colonne {name}"
                    " (refusé par Meta dans un paramètre)"
                )
            if len(value) > PARAM_LIMIT:
                raise InvalidMessageError(
                    f"colonne {name} : {len(value)} caractères, plus que les"
                    f" {PARAM_LIMIT} d'un modèle"
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


def check_campaign(campaign: Campaign) -> None:
    """Refuse a campaign that Meta would refuse for every recipient."""
    if campaign.text is not None:
        if not campaign.text.strip():
            raise InvalidMessageError("--text: the text is empty; write the message")
        if len(campaign.text) > payloads.TEXT_LIMIT:
            raise InvalidMessageError(
                f"--text: {len(campaign.text)} characters, more than Meta's"
                f" {payloads.TEXT_LIMIT}; shorten it"
            )
        return
    name = campaign.template_name or ""
    if not TEMPLATE_NAME.fullmatch(name):
        raise InvalidMessageError(
            f"--template {name!r}: a template name is lower-case letters, digits"
            " and underscores, as approved in WhatsApp Manager (rappel_paiement)"
        )
    language = campaign.language or ""
    if not LANGUAGE_CODE.fullmatch(language):
        raise InvalidMessageError(
            f"--language {language!r}: give the template's language code as"
            " approved, such as fr, en or en_US"
        )


def _check_value(column: str, value: str) -> None:
    """Refuse a cell a message cannot be made of."""
    if not value:
        raise InvalidMessageError(f"colonne {column} vide")
    if value in EXCEL_ERRORS:
        raise InvalidMessageError(
            f"colonne {column} : erreur de formule Excel {value}, corriger la cellule"
        )
    if any(
        unicodedata.category(char) in ("Cc", "Zl", "Zp") and char not in "\t\n\r"
        for char in value
    ):
        raise InvalidMessageError(
            f"colonne {column} : caractère de contrôle invisible, retaper la valeur"
        )


def _parse_text(text: str) -> list[tuple[str, str | None, str | None, str | None]]:
    """``--text`` cut into (literal, placeholder, spec, conversion) pieces."""
    try:
        return list(string.Formatter().parse(text))
    except ValueError as exc:
        raise InvalidMessageError(
            f"--text {text!r}: {exc}; a placeholder is {{column}}, and a brace"
            " itself is written {{ or }}"
        ) from None


def _placeholders(
    text: str,
    parsed: list[tuple[str, str | None, str | None, str | None]],
    header: Sequence[str],
) -> dict[str, int]:
    """Check the {column} placeholders of ``--text``; map each to its column."""
    fields: dict[str, int] = {}
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name or spec or conversion or any(c in name for c in ".[]"):
            raise InvalidMessageError(
                f"--text {text!r}: write only a column name between braces,"
                " such as {nom}"
            )
        fields[name] = _column_index(header, name, "--text {...}:")
    return fields


class _Details:
    """The CSV of every line that was not simply queued, written as it goes.

    Semicolon-separated with a BOM, so that Excel on a French-language
    computer opens it in columns with the accents right. Numbers are written
    ``="0701020304"``, which Excel shows as that text instead of dropping
    the zero or turning ``+2250701020304`` into ``2,25E+12`` (and which the
    import reads back as the number). It is written beside its place under
    a temporary name and moved there once complete, so that a failed import
    never leaves half a report, nor removes a file that was there before.
    """

    HEADER = ("ligne", "valeur", "decision", "numero", "raison")

    def __init__(
        self, path: Path | None, columns: Sequence[str] = (), *, secret: str = ""
    ) -> None:
        self.path = path
        self.secret = secret  # the access token, never written
        self.columns = tuple(columns)  # already masked by the caller
        self._partial: Path | None = None
        self._stream: TextIO | None = None
        self._writer: Any = None

    def write(self, line: Line) -> None:
        if self.path is None:
            return
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._partial = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            self._stream = self._partial.open("w", encoding="utf-8-sig", newline="")
            self._writer = csv.writer(self._stream, delimiter=";")
            self._writer.writerow(self.HEADER + self.columns)
        self._writer.writerow(
            (
                str(line.line),
                as_text(self._hide(line.value)),
                line.decision,
                as_text(line.number),
                self._hide(line.reason),
                *(as_text(self._hide(cell)) for cell in line.cells),
            )
        )

    def _hide(self, text: str) -> str:
        return text.replace(self.secret, "[jeton masqué]") if self.secret else text

    @property
    def written(self) -> bool:
        return self._writer is not None

    def close(self) -> None:
        """Finish the report and move it into place."""
        if self._stream is not None and not self._stream.closed:
            self._stream.close()
            assert self._partial is not None and self.path is not None
            os.replace(self._partial, self.path)

    def discard(self) -> None:
        """Drop the report of an import that did not happen."""
        if self._stream is not None and not self._stream.closed:
            self._stream.close()
        if self._partial is not None:
            self._partial.unlink(missing_ok=True)


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
    secret: str = "",
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
        batches.check_target(db.conn, batch_id, append=options.append)
    table = open_table(
        path,
        encoding=options.encoding,
        sheet=options.sheet,
        is_header=looks_like_header(options.phone_column),
    )
    if secret:
        table.header = [name.replace(secret, "[jeton masqué]") for name in table.header]
    details = _Details(details_path, table.header, secret=secret)
    report = ImportReport(
        path, batch_id, kind=table.kind, header_line=table.header_line
    )
    import_id: int | None = None
    try:
        phone = _phone_column_of(table, options.phone_column)
        report.phone_column = table.header[phone]
        composer = _Composer(campaign, table.header, batch_id)
        writing = db is not None and not options.dry_run
        if writing:
            assert db is not None
            import_id = batches.begin_import(
                db, batch_id, str(path), now(), append=options.append
            )
        known = (
            _batch_numbers(db, batch_id, options.region)
            if options.append and db
            else set()
        )
        _read(db, table, phone, composer, options, report, details, import_id, known)
        details.close()  # a report that cannot be written stops the import
        if report.rejected and not options.skip_rejected:
            raise ImportRefused.rejected_lines(report)
        if not report.queued:
            raise ImportRefused.nothing_to_queue(report)
        if writing:
            assert db is not None and import_id is not None
            batches.finish_import(db, import_id, now())
            report.committed = True
    except BaseException as exc:
        if import_id is not None:
            assert db is not None
            batches.abort_import(db, import_id, batch_id)
        if not isinstance(exc, InvalidMessageError):
            details.discard()  # interrupted: no report of an import not made
        raise
    finally:
        table.close()
        details.close()
        if details.written:
            report.details_path = details_path
    return report


def _phone_column_of(table: Table, wanted: str | None) -> int:
    try:
        return phone_column(table.header, wanted)
    except NoPhoneColumnError as exc:
        if table.header_line == 1:
            raise NoPhoneColumnError(
                f"{exc} (if line 1 is a title, the header must be among the"
                " first 5 lines)"
            ) from None
        raise


def _read(
    db: QueueDB | None,
    table: Table,
    phone: int,
    composer: _Composer,
    options: Options,
    report: ImportReport,
    details: _Details,
    import_id: int | None,
    known: set[int],
) -> None:
    """Decide every line; write accepted ones in chunks while none is rejected.

    ``known`` holds the numbers the batch already has (``--append``).
    """
    scheduled = fmt(options.scheduled_at) if options.scheduled_at else None
    width = len(table.header)
    while width and not table.header[width - 1]:
        width -= 1  # a header ending with separators has no more columns
    # E.164 digits -> (first line, hash of its message): what grows with the
    # number of recipients (ints are compact).
    seen: dict[int, tuple[int, int]] = {}
    chunk: list[NewMessage] = []

    def flush() -> None:
        sending = not report.rejected or options.skip_rejected
        if chunk and db is not None and import_id is not None and sending:
            db.enqueue(chunk, datetime.now(UTC), import_id=import_id)
            batches.touch_import(db, import_id, datetime.now(UTC))
        chunk.clear()

    for number, values in _data_rows(table.rows):
        report.rows += 1
        if table.ragged and len(values) < width:
            values = values + [""] * (width - len(values))
        raw = values[phone].strip() if phone < len(values) else ""
        try:
            if len(values) > width and any(v.strip() for v in values[width:]):
                raise InvalidMessageError(
                    f"{len(values)} colonnes au lieu de {width} : un séparateur dans"
                    " une valeur sans guillemets ?"
                )
            if len(values) < width:
                raise InvalidMessageError(
                    f"ligne incomplète : {len(values)} colonnes au lieu de {width},"
                    " les valeurs seraient décalées"
                )
            found = phones.read(raw, options.region, convert_old=options.convert_old)
            message = composer.compose(values, found.e164, scheduled)
        except InvalidMessageError as exc:
            line = Line(number, raw, Decision.REJECTED, str(exc), cells=tuple(values))
            _note(report, details, line)
            continue
        digits = int(found.e164[1:])
        content = hash((message.body, message.template_params))
        if digits in seen:
            first, first_content = seen[digits]
            reason = f"même numéro qu'à la ligne {first}"
            if content != first_content:
                report.differing += 1
                reason += (
                    ", avec un autre message : seul celui de la ligne"
                    f" {first} est envoyé"
                )
            line = Line(
                number, raw, Decision.DUPLICATE, reason, found.e164, tuple(values)
            )
            _note(report, details, line)
            continue
        if digits in known:
            reason = "ce numéro a déjà un message dans ce lot"
            line = Line(
                number, raw, Decision.IN_BATCH, reason, found.e164, tuple(values)
            )
            _note(report, details, line)
            continue
        seen[digits] = (number, content)
        if found.old_number is not None:
            reason = f"ancien numéro {found.old_number} converti (règle de 2021)"
            line = Line(
                number, raw, Decision.CONVERTED, reason, found.e164, tuple(values)
            )
            _note(report, details, line)
        report.queued += 1
        if report.example is None:
            report.example = message
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


def _batch_numbers(db: QueueDB, batch_id: str, region: str | None) -> set[int]:
    """The numbers the batch already has, however they were stored."""
    numbers: set[int] = set()
    for (raw,) in db.conn.execute(
        "SELECT recipient FROM whatsapp_queue WHERE batch_id = ?", (batch_id,)
    ):
        try:
            numbers.add(int(phones.normalize(str(raw or ""), region).lstrip("+")))
        except InvalidMessageError:
            continue
    return numbers


def _note(report: ImportReport, details: _Details, line: Line) -> None:
    report.note(line)
    details.write(line)


def default_details_path(folder: Path, batch_id: str, now: datetime) -> Path:
    """Where the CSV of rejected lines goes unless the user names a file."""
    return folder / f"{batch_id}-{now.strftime('%Y%m%d-%H%M%S')}-lignes.csv"
