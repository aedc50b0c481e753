"""Read the rows of a spreadsheet as people save them: CSV or ``.xlsx``.

A CSV file is streamed: its encoding is found in one pass over the bytes
(UTF-8 with or without BOM, UTF-16 as Excel's "Unicode text", else
Windows-1252 or Mac Roman, whichever reads as more French), its separator
from the header line (``,``, ``;`` or tab, or Excel's ``sep=`` line), and
rows are read one at a time with the line number where each starts.
An ``.xlsx`` workbook is read in openpyxl's read-only mode, which also
streams; its line numbers are the sheet's row numbers.
"""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time
from itertools import chain, islice
from pathlib import Path
from typing import Any

from .errors import InvalidMessageError

DELIMITERS = ",;\t"
DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab"}
SAMPLE_BYTES = 1 << 20  # bytes read at a time while checking the encoding
PEEK_ROWS = 50  # rows looked at for separators inside a single column
# Characters of French text above ASCII, to tell Windows-1252 from Mac Roman:
# the same byte is a French letter in one and a rare sign in the other.
# Lower-case letters weigh more: an accent mostly sits inside a word.
_FRENCH_LOWER = frozenset("àâäçéèêëîïôöùûüÿœæ\u2019«»€°")
_FRENCH_UPPER = frozenset("ÀÂÄÇÉÈÊËÎÏÔÖÙÛÜŸŒÆ")
# The delimiter given to the csv module for a file with a single column: a
# control character no spreadsheet writes, so that no value is split.
_NO_DELIMITER = "\x1f"
_SEP_LINE = re.compile(r"^\ufeff?sep=(.)\s*$")

Row = tuple[int, list[str]]  # (line number where the row starts, its cells)


@dataclass
class Table:
    """A file's header and a one-pass iterator over its data rows."""

    path: Path
    header: list[str]
    rows: Iterator[Row]
    kind: str  # how the file was read, for the report
    _closers: list[Any] = field(default_factory=list)

    def close(self) -> None:
        for closer in self._closers:
            closer()


def open_table(path: Path, *, encoding: str | None = None) -> Table:
    """Open a CSV or ``.xlsx`` file; raise InvalidMessageError if unreadable."""
    if not path.is_file():
        raise InvalidMessageError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        return _open_xlsx(path)
    if suffix in (".xls", ".ods", ".numbers"):
        raise InvalidMessageError(
            f"{path}: {suffix} files cannot be read; save the sheet as .xlsx"
            " or as CSV (UTF-8)"
        )
    return _open_csv(path, encoding)


# -- CSV --------------------------------------------------------------------


def detect_encoding(path: Path) -> str:
    """Name the encoding of a text file (see the module's docstring)."""
    with path.open("rb") as stream:
        head = stream.read(4)
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if _decodes(path, "utf-8"):
        return "utf-8"
    sample = _high_bytes_sample(path)
    if not _decodes(path, "cp1252"):
        return "mac-roman"
    windows = _frenchness(sample.decode("cp1252"))
    mac = _frenchness(sample.decode("mac_roman"))
    return "mac-roman" if mac > windows else "cp1252"


def _frenchness(text: str) -> int:
    return sum(
        2 if char in _FRENCH_LOWER else 1 if char in _FRENCH_UPPER else 0
        for char in text
        if ord(char) > 0x7F
    )


def _decodes(path: Path, encoding: str) -> bool:
    decoder = codecs.getincrementaldecoder(encoding)()
    try:
        with path.open("rb") as stream:
            while chunk := stream.read(SAMPLE_BYTES):
                decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _high_bytes_sample(path: Path) -> bytes:
    """Return the first chunk of the file holding bytes above 0x7F."""
    with path.open("rb") as stream:
        while chunk := stream.read(SAMPLE_BYTES):
            if any(byte > 0x7F for byte in chunk):
                return chunk
    return b""


def _open_csv(path: Path, encoding: str | None) -> Table:
    try:
        encoding = codecs.lookup(encoding or detect_encoding(path)).name
    except LookupError:
        raise InvalidMessageError(
            f"--encoding {encoding}: unknown encoding; use utf-8, cp1252,"
            " latin-1 or mac_roman"
        ) from None
    stream = path.open(encoding=encoding, newline="", errors="strict")
    try:
        delimiter = _delimiter(stream)
        stream.seek(0)
        reader = csv.reader(stream, delimiter=delimiter or _NO_DELIMITER)
        rows = _csv_rows(path, reader, encoding)
        header = _csv_header(path, rows, delimiter or _NO_DELIMITER)
        if delimiter is None:
            rows = _single_column(path, header, rows)
    except BaseException:
        stream.close()
        raise
    name = DELIMITER_NAMES.get(delimiter or "", "one column")
    kind = f"CSV, {encoding}, {name}"
    return Table(path, header, rows, kind, [stream.close])


def _delimiter(stream: Any) -> str | None:
    """Pick the separator the header line uses most, outside quotes."""
    line = ""
    for line in stream:
        if line.strip():
            break
    declared = _SEP_LINE.match(line.strip("\r\n"))
    if declared:
        return declared.group(1)
    counts = dict.fromkeys(DELIMITERS, 0)
    quoted = False
    for char in line:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in counts:
            counts[char] += 1
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else None


def _csv_rows(path: Path, reader: Any, encoding: str) -> Iterator[Row]:
    previous = 0
    try:
        for values in reader:
            start = previous + 1
            previous = reader.line_num
            yield start, values
    except UnicodeDecodeError as exc:
        raise InvalidMessageError(
            f"{path}, after line {previous}: byte {exc.object[exc.start]:#x} is not"
            f" {encoding}; give the file's encoding with --encoding (cp1252,"
            " mac_roman, ...)"
        ) from None
    except csv.Error as exc:
        raise InvalidMessageError(
            f"{path}, line {previous + 1}: {exc}; a quote opened and never closed?"
        ) from None


def _csv_header(path: Path, rows: Iterator[Row], delimiter: str) -> list[str]:
    for _, values in rows:
        if _SEP_LINE.match(delimiter.join(values)):
            continue  # Excel's "sep=;" line
        if any(value.strip() for value in values):
            return [value.strip().lstrip("\ufeff") for value in values]
    raise InvalidMessageError(f"{path}: the file is empty; it needs a header line")


def _single_column(path: Path, header: list[str], rows: Iterator[Row]) -> Iterator[Row]:
    """Refuse a file that reads as one column of lines holding separators.

    That is a file whose lines were quoted whole, or whose header uses
    another separator than its rows. It shows in the header cell, or in
    most of the first rows; a single value with a comma is only a value.
    """
    peeked = list(islice(rows, PEEK_ROWS))
    filled = [(line, values[0]) for line, values in peeked if values]
    for delimiter in DELIMITERS:
        holding = [(line, cell) for line, cell in filled if delimiter in cell]
        if delimiter in header[0] or (filled and len(holding) * 2 > len(filled)):
            line, cell = (1, header[0]) if delimiter in header[0] else holding[0]
            raise InvalidMessageError(
                f"{path}, line {line}: the file reads as one column, yet {cell!r}"
                f" holds {DELIMITER_NAMES[delimiter]}s; each line must not be"
                " quoted whole, and the header must use the same separator"
            )
    return chain(peeked, rows)


# -- xlsx -------------------------------------------------------------------


def _open_xlsx(path: Path) -> Table:
    import openpyxl  # imported here: only .xlsx files need it

    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many kinds for a bad file
        raise InvalidMessageError(
            f"{path}: not a readable .xlsx workbook ({type(exc).__name__});"
            " open it in Excel and save it again"
        ) from None
    try:
        sheet = workbook.worksheets[0]
        rows = (
            (number, [cell_text(value) for value in values])
            for number, values in enumerate(sheet.iter_rows(values_only=True), 1)
        )
        header: list[str] | None = None
        for _, values in rows:
            if any(value.strip() for value in values):
                header = [value.strip() for value in values]
                break
        if header is None:
            raise InvalidMessageError(f"{path}: the first sheet is empty")
        while header and not header[-1]:
            header.pop()
    except BaseException:
        workbook.close()
        raise
    kind = f"Excel workbook, sheet {sheet.title!r}"
    return Table(path, header, rows, kind, [workbook.close])


def cell_text(value: Any) -> str:
    """A cell as text, the way a French-language spreadsheet shows it.

    Whole numbers lose their ``.0`` (a number stored as a number keeps its
    digits exactly; a leading zero it lost stays lost). Decimals use a
    comma, dates read day/month/year.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "VRAI" if value else "FAUX"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value).replace(".", ",")
    if isinstance(value, datetime):
        if value.time() == time(0):
            return value.strftime("%d/%m/%Y")
        return value.strftime("%d/%m/%Y %H:%M")
    if isinstance(value, date):
        return value.strftime("%d/%m/%Y")
    if isinstance(value, time):
        return value.strftime("%H:%M")
    return str(value)
