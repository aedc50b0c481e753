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
from collections.abc import Callable, Iterator
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
SNIFF_LINES = 10  # lines looked at to find the separator
SNIFF_CHARS = 1 << 16  # ... within this many characters
LINE_LIMIT = 1 << 20  # characters of one line of a CSV file
DECLARABLE = ",;\t|"  # separators a "sep=" first line may name
TITLE_ROWS = 5  # non-blank lines looked at to find the header below a title
MIXED_UTF8 = 3  # valid UTF-8 letters that make a file "UTF-8 with damage"
# Characters of French text above ASCII, to tell Windows-1252 from Mac Roman:
# the same byte is a French letter in one and a rare sign in the other.
# Lower-case letters weigh more: an accent mostly sits inside a word.
_FRENCH_LOWER = frozenset("àâäçéèêëîïôöùûüÿœæ") | frozenset(
    "\u2019\u201c\u201d\u2013\u2026«»€°"  # quotes, dash, ellipsis, signs
)
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
    header_line: int = 1  # lines above it (a title) are skipped
    # Rows may stop at their last filled cell (a workbook); shorter rows
    # then mean empty cells, not missing separators.
    ragged: bool = False
    _closers: list[Any] = field(default_factory=list)

    def close(self) -> None:
        for closer in self._closers:
            closer()


# How much a line looks like the header: 0 not at all, 1 maybe, 2 surely.
HeaderTest = Callable[[list[str]], int]


def open_table(
    path: Path,
    *,
    encoding: str | None = None,
    sheet: str | None = None,
    is_header: HeaderTest = lambda cells: 2,
) -> Table:
    """Open a CSV or ``.xlsx`` file; InvalidMessageError if it is unreadable
    as a table, OSError if it cannot be opened.

    The header is, among the first few non-blank lines, the first that
    ``is_header`` rates 2, else the first it rates 1, else the first line
    (a title above the header is skipped).
    """
    # Files that cannot be opened are an OSError, as for the database.
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder; give the file in it")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; check the path")
    suffix = path.suffix.lower()
    with path.open("rb") as stream:
        zipped = stream.read(4) == b"PK\x03\x04"
    if suffix in (".xlsx", ".xlsm") or (zipped and suffix in (".csv", ".txt")):
        return _open_xlsx(path, sheet, is_header)
    if suffix in (".xls", ".ods", ".numbers"):
        raise InvalidMessageError(
            f"{path}: {suffix} files cannot be read; save the sheet as .xlsx"
            " or as CSV (UTF-8)"
        )
    return _open_csv(path, encoding, is_header)


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
    mixed = _utf8_mixed(path)
    if mixed is not None:
        raise InvalidMessageError(
            f"{path}, line {mixed}: this line is not UTF-8 while the rest of the"
            " file is (two encodings mixed); retype its accented letters, or give"
            " --encoding"
        )
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


def _utf8_mixed(path: Path) -> int | None:
    """The first line that is not UTF-8 in a file that otherwise is, or None.

    A file in Windows-1252 or Mac Roman hardly ever holds a valid UTF-8
    sequence; one that holds several and also bytes that are not UTF-8 was
    pasted together from two sources and cannot be read whole either way.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    valid = 0
    first_bad: int | None = None
    line = 1
    with path.open("rb") as stream:
        while chunk := stream.read(SAMPLE_BYTES):
            text = decoder.decode(chunk)
            valid += sum(1 for char in text if ord(char) > 0x7F and char != "\ufffd")
            if first_bad is None and "\ufffd" in text:
                first_bad = line + text[: text.index("\ufffd")].count("\n")
            line += text.count("\n")
    return first_bad if valid >= MIXED_UTF8 else None


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


def _open_csv(path: Path, encoding: str | None, is_header: HeaderTest) -> Table:
    given = encoding
    try:
        encoding = codecs.lookup(encoding or detect_encoding(path)).name
        stream = path.open(encoding=encoding, newline="", errors="strict")
    except LookupError:
        raise InvalidMessageError(
            f"--encoding {given}: not a text encoding; use utf-8, cp1252,"
            " latin-1 or mac_roman"
        ) from None
    try:
        delimiter, declared = _delimiter(stream)
        stream.seek(0)
        reader = csv.reader(
            _bounded_lines(path, stream),
            delimiter=delimiter or _NO_DELIMITER,
            strict=True,
        )
        rows = _csv_rows(path, reader, encoding)
        if declared:
            # Excel reads the "sep=" line as a setting and does not show it:
            # number the lines as Excel shows them.
            next(rows)
            rows = ((number - 1, values) for number, values in rows)
        line, header, rows = _find_header(path, rows, is_header)
        if delimiter is None:
            rows = _single_column(path, header, rows)
    except UnicodeError:
        stream.close()
        raise _not_encoded(path, None, encoding) from None
    except BaseException:
        stream.close()
        raise
    name = DELIMITER_NAMES.get(delimiter or "", "one column")
    if delimiter and delimiter not in DELIMITER_NAMES:
        name = f"separator {delimiter!r}"
    kind = f"CSV, {encoding}, {name}"
    return Table(path, header, rows, kind, line, _closers=[stream.close])


def _delimiter(stream: Any) -> tuple[str | None, bool]:
    """Pick the separator of the file: (separator or None, declared by sep=).

    Excel's ``sep=;`` first line says it; otherwise the separator found, outside
    quotes, on most of the first non-blank lines (a title line above the
    header may hold none, or a stray comma).
    """
    sample = stream.read(SNIFF_CHARS)
    lines = [line for line in sample.splitlines()[:SNIFF_LINES] if line.strip()]
    if lines:
        declared = _SEP_LINE.match(lines[0].strip("\r\n"))
        if declared:
            if declared.group(1) not in DECLARABLE:
                raise InvalidMessageError(
                    f"first line {lines[0].strip()!r}: not a separator Excel writes;"
                    " write sep=; (or sep=, ) or remove that line"
                )
            return declared.group(1), True
    holding = dict.fromkeys(DELIMITERS, 0)  # lines holding each separator
    counts = dict.fromkeys(DELIMITERS, 0)
    for line in lines:
        found: set[str] = set()
        quoted = False
        for char in line:
            if char == '"':
                quoted = not quoted
            elif not quoted and char in counts:
                counts[char] += 1
                found.add(char)
        for char in found:
            holding[char] += 1
    best = max(DELIMITERS, key=lambda d: (holding[d], counts[d]))
    # A separator shows on most lines; one comma in one value is not one.
    return (best if holding[best] * 2 > len(lines) else None), False


def _bounded_lines(path: Path, stream: Any) -> Iterator[str]:
    """The file's lines, refusing one too long to be a line of a spreadsheet.

    Reading line by line, a file without line breaks would otherwise be read
    whole into memory.
    """
    number = 0
    while line := stream.readline(LINE_LIMIT):
        number += 1
        if len(line) == LINE_LIMIT and not line.endswith(("\n", "\r")):
            raise InvalidMessageError(
                f"{path}, line {number}: longer than {LINE_LIMIT:,} characters;"
                " this is not a spreadsheet saved as CSV"
            )
        yield line


def _csv_rows(path: Path, reader: Any, encoding: str) -> Iterator[Row]:
    previous = 0
    try:
        for values in reader:
            start = previous + 1
            previous = reader.line_num
            yield start, [value.lstrip("\ufeff") for value in values]
    except UnicodeError:
        raise _not_encoded(path, previous + 1, encoding) from None
    except csv.Error as exc:
        if "field larger than field limit" in str(exc):
            raise InvalidMessageError(
                f"{path}, line {previous + 1}: a value longer than"
                f" {csv.field_size_limit():,} characters, or a quote opened and"
                " never closed; fix that line"
            ) from None
        raise InvalidMessageError(
            f"{path}, line {previous + 1}: {exc} (a quote opened and never"
            " closed?); fix the quotes of that line"
        ) from None


def _not_encoded(path: Path, line: int | None, encoding: str) -> InvalidMessageError:
    where = f"{path}, from line {line}" if line else f"{path}, in the first lines"
    return InvalidMessageError(
        f"{where}: the text is not {encoding}; give the file's encoding with"
        " --encoding (utf-8, cp1252, mac_roman, ...)"
    )


def _find_header(
    path: Path,
    rows: Iterator[Row],
    is_header: HeaderTest,
    empty: str = "the file is empty; it needs a header line",
) -> tuple[int, list[str], Iterator[Row]]:
    """Return (line, header, the rows after it); see :func:`open_table`."""
    seen: list[tuple[int, list[str], list[str], int]] = []  # + values, score
    for number, values in rows:
        if not any(value.strip() for value in values):
            continue
        cells = [value.strip() for value in values]
        score = is_header(cells)
        seen.append((number, cells, values, score))
        if score >= 2 or len(seen) == TITLE_ROWS:
            break
    if not seen:
        raise InvalidMessageError(f"{path}: {empty}")
    best = max(range(len(seen)), key=lambda i: (seen[i][3], -i))
    if seen[best][3] == 0:
        best = 0
    number, cells, _, _ = seen[best]
    later = [(n, values) for n, _, values, _ in seen[best + 1 :]]
    return number, cells, chain(later, rows)


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


def _open_xlsx(path: Path, wanted: str | None, is_header: HeaderTest) -> Table:
    import openpyxl  # imported here: only .xlsx files need it

    # An open file, so that a workbook saved under another name still opens.
    stream = path.open("rb")
    try:
        workbook = openpyxl.load_workbook(stream, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many kinds for a bad file
        stream.close()
        raise InvalidMessageError(
            f"{path}: not a readable .xlsx workbook ({type(exc).__name__});"
            " open it in Excel and save it again"
        ) from None
    try:
        sheet = _sheet(path, workbook, wanted)
        # Some programs write a wrong size in the sheet; read it all.
        sheet.reset_dimensions()
        rows = _xlsx_rows(path, sheet)
        line, header, rows = _find_header(
            path, rows, is_header, f"the sheet {sheet.title!r} is empty"
        )
        while header and not header[-1]:
            header.pop()
    except BaseException:
        workbook.close()
        stream.close()
        raise
    kind = f"Excel workbook, sheet {sheet.title!r}"
    return Table(
        path, header, rows, kind, line, ragged=True,
        _closers=[workbook.close, stream.close],
    )  # fmt: skip


def _sheet(path: Path, workbook: Any, wanted: str | None) -> Any:
    """The sheet named ``wanted``, else the first one a person sees."""
    sheets = [s for s in workbook.worksheets if hasattr(s, "iter_rows")]
    if wanted is not None:
        for sheet in sheets:
            if sheet.title == wanted:
                return sheet
        names = ", ".join(repr(sheet.title) for sheet in sheets)
        raise InvalidMessageError(
            f"--sheet {wanted}: no such sheet; {path} has {names}"
        )
    visible = [s for s in sheets if s.sheet_state == "visible"]
    if not visible:
        raise InvalidMessageError(f"{path}: the workbook has no visible sheet")
    return visible[0]


def _xlsx_rows(path: Path, sheet: Any) -> Iterator[Row]:
    number = 0
    try:
        for number, values in enumerate(sheet.iter_rows(values_only=True), 1):
            yield number, [cell_text(value).lstrip("\ufeff") for value in values]
    except Exception as exc:  # a damaged cell or sheet, in many forms
        raise InvalidMessageError(
            f"{path}, row {number + 1}: unreadable cell ({type(exc).__name__});"
            " open the workbook in Excel and save it again"
        ) from None


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
        # Excel keeps 15 significant digits; a whole number within them is
        # exactly what was typed, one beyond them has lost its last digits.
        if value.is_integer() and float(f"{value:.15g}") == value:
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
