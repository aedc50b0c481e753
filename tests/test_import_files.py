"""``whatsapp-daemon import`` on real spreadsheet files, as documented.

Each ``[[case]]`` of ``tests/data/imports/cases.toml`` names a file of that
folder, the command's options, and what the import must give: exit status,
the screen report, the rows queued and the details CSV. The command runs as
a subprocess (``python -m whatsapp_daemon``) once per case, against a fresh
SQLite database; the tests below each check one part of the outcome.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import sqlite3
import subprocess
import sys
import tomllib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from whatsapp_daemon.cli import Exit

DATA = Path(__file__).resolve().parent / "data" / "imports"
MANIFEST = DATA / "cases.toml"
GENERATOR = DATA / "make_files.py"
NOT_DATA = {"cases.toml", "make_files.py", "README.md"}
TEMPLATE = "rappel_paiement"

CASES: list[dict[str, Any]] = tomllib.loads(MANIFEST.read_text(encoding="utf-8"))[
    "case"
]


@dataclass
class Outcome:
    """What one run of the command left: output, queue and details CSV."""

    case: dict[str, Any]
    done: subprocess.CompletedProcess[str]
    queue: list[dict[str, Any]]
    batches: list[dict[str, Any]]
    imports: list[dict[str, Any]]
    details: Path

    @property
    def batch(self) -> str:
        args: list[str] = self.case["args"]
        return args[args.index("--batch") + 1]

    @property
    def dry_run(self) -> bool:
        return "--dry-run" in self.case["args"]

    def explain(self) -> str:
        return f"stdout:\n{self.done.stdout}\nstderr:\n{self.done.stderr}"


def table(database: Path, name: str) -> list[dict[str, Any]]:
    """Every row of a table, in insertion order; none if there is no base."""
    if not database.exists():
        return []
    with contextlib.closing(sqlite3.connect(database)) as conn:
        conn.row_factory = sqlite3.Row
        found = conn.execute(f"SELECT * FROM {name} ORDER BY rowid").fetchall()
    return [dict(row) for row in found]


def run_import(case: dict[str, Any], folder: Path) -> Outcome:
    """Run ``whatsapp-daemon import`` on the case's file inside ``folder``."""
    database = folder / "var" / "database.sqlite"
    details = folder / "lignes.csv"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("WHATSAPP_") and not k.lower().endswith("_proxy")
    }
    env["WHATSAPP_DATABASE_PATH"] = str(database)
    env["WHATSAPP_LOG_PATH"] = str(folder / "logs" / "whatsapp_queue.log")
    command = [
        sys.executable,
        "-m",
        "whatsapp_daemon",
        "import",
        str(DATA / case["file"]),
        *case["args"],
        "--report",
        str(details),
    ]
    done = subprocess.run(
        command,
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        check=False,
    )
    return Outcome(
        case,
        done,
        table(database, "whatsapp_queue"),
        table(database, "whatsapp_batches"),
        table(database, "whatsapp_imports"),
        details,
    )


@pytest.fixture(scope="module", params=CASES, ids=[case["id"] for case in CASES])
def outcome(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Outcome:
    """The command run once per case; every test of the case reads it."""
    case: dict[str, Any] = request.param
    return run_import(case, tmp_path_factory.mktemp(case["id"]))


# -- the screen report, parsed ---------------------------------------------------

_COUNTS = {
    "queued": r"^\s+(\d+) messages (?:queued|to queue) in batch ",
    "duplicates": r"^\s+(\d+) duplicates \(same number as an earlier line\)$",
    "differing": (
        r"^\s+of which (\d+) with a different message:"
        r" only the first line's is sent$"
    ),
    "in_batch": r"^\s+(\d+) numbers already in the batch, skipped$",
    "rejected": r"^\s+(\d+) lines rejected$",
    "converted": r"^\s+(\d+) old 8-digit numbers converted$",
    "rows_read": r": (\d+) lines read \(",
}
# Counts the report shows only when they are not 0.
_SHOWN_IF_ANY = ("differing", "in_batch", "converted")


def screen_counts(stdout: str) -> dict[str, int]:
    """The counts the screen report shows; one shown only if not 0 is 0."""
    counts = dict.fromkeys(_SHOWN_IF_ANY, 0)
    for name, pattern in _COUNTS.items():
        found = re.search(pattern, stdout, re.MULTILINE)
        if found:
            counts[name] = int(found.group(1))
    return counts


def screen_tally(stdout: str, title: str) -> dict[str, int]:
    """A ``title: A 2, B 1`` line of the report as a dict; {} if absent."""
    found = re.search(rf"^  {re.escape(title)}: (.*)$", stdout, re.MULTILINE)
    if found is None:
        return {}
    pairs = (item.rsplit(" ", 1) for item in found.group(1).split(", "))
    return {name: int(count) for name, count in pairs}


DETAILS_HEADER = ["ligne", "valeur", "decision", "numero", "raison"]


@dataclass
class DetailsRow:
    """One row of the details CSV: its own five cells, then the file's line."""

    line: int
    value: str
    decision: str
    number: str
    reason: str
    cells: list[str]


def details_csv(path: Path) -> tuple[list[str], list[DetailsRow]]:
    """The header and rows of the details CSV, read as Excel would.

    Read by position: the file's own header may repeat one of the five
    names (a column ``numero``).
    """
    with path.open(encoding="utf-8-sig", newline="") as stream:
        header, *rows = csv.reader(stream, delimiter=";")
    return header, [
        DetailsRow(int(row[0]), row[1], row[2], row[3], row[4], row[5:]) for row in rows
    ]


def excel_text(cell: str) -> str:
    """The value of a ``="..."`` cell, the form Excel shows as written."""
    if cell == "":
        return ""
    found = re.fullmatch(r'="(.*)"', cell, re.DOTALL)
    assert found, f'{cell!r} is not written as ="..."'
    return found.group(1).replace('""', '"')


# -- the tests, once per case -------------------------------------------------------


def test_exit_status_and_error_line_are_as_documented(outcome: Outcome) -> None:
    """The command exits as the manifest says; a refusal names its cause once."""
    case = outcome.case
    assert outcome.done.returncode == case["exit"], outcome.explain()
    assert "Traceback" not in outcome.done.stderr
    if case["exit"] == Exit.OK:
        assert outcome.done.stderr == ""
    else:
        [line] = outcome.done.stderr.splitlines()
        assert line.startswith("whatsapp-daemon: invalid input: ")
        assert case["stderr"] in line


def test_screen_report_counts_match_the_manifest(outcome: Outcome) -> None:
    """Lines read, queued, duplicates (differing), rejected, converted as documented."""
    case = outcome.case
    shown = screen_counts(outcome.done.stdout)
    for name in ("rows_read", "queued", "duplicates", "rejected"):
        if name in case:
            assert shown.get(name) == case[name], (name, outcome.explain())
    if "queued" in case:
        for name in _SHOWN_IF_ANY:
            assert shown[name] == case.get(name, 0), (name, outcome.explain())
        committed = case["exit"] == Exit.OK and not outcome.dry_run
        verb = "queued" if committed else "to queue"
        assert f"messages {verb} in batch {outcome.batch}" in outcome.done.stdout
    for piece in case.get("stdout", []):
        assert piece in outcome.done.stdout, outcome.explain()
    if "queued" not in case:  # refused as a whole: no report at all
        assert outcome.done.stdout == ""


def test_report_names_how_the_file_was_read(outcome: Outcome) -> None:
    """The first line names the encoding, separator and phone column found."""
    case = outcome.case
    if "kind" in case:
        assert f"({case['kind']}; phone column " in outcome.done.stdout
    if "phone_column" in case:
        line = case.get("header_line", 1)
        title = f", header on line {line}" if line > 1 else ""
        expected = f"; phone column {case['phone_column']!r}{title})"
        assert expected in outcome.done.stdout, outcome.explain()
    if "queued" in case and "header_line" not in case:
        assert "header on line" not in outcome.done.stdout


def test_report_shows_the_first_message_as_it_will_be_sent(
    outcome: Outcome,
) -> None:
    """``First message:`` gives the recipient, the template and its parameters."""
    case = outcome.case
    if "first_message" not in case:
        assert "First message:" not in outcome.done.stdout
        return
    lines = outcome.done.stdout.splitlines()
    assert f"First message: {case['first_message']}" in lines, outcome.explain()


def test_recipients_are_counted_by_country_and_operator(outcome: Outcome) -> None:
    """The by-country and by-operator lines count the queued numbers."""
    case = outcome.case
    stdout = outcome.done.stdout
    if "by_country" in case:
        assert screen_tally(stdout, "by country") == case["by_country"]
    if "by_operator" in case:
        tally = screen_tally(stdout, "Ivorian mobiles by operator")
        assert tally == case["by_operator"]


def test_queue_holds_exactly_the_documented_rows(outcome: Outcome) -> None:
    """The table holds the recipients in file order; nothing when refused."""
    case = outcome.case
    assert [row["recipient"] for row in outcome.queue] == case["recipients"]
    committed = case["exit"] == Exit.OK and not outcome.dry_run
    if not committed:
        assert outcome.queue == []
        assert outcome.batches == [], "a refused import left its batch behind"
        assert outcome.imports == [], "a refused import left its import behind"
        return
    assert {row["batch_id"] for row in outcome.queue} == {outcome.batch}
    assert {row["status"] for row in outcome.queue} == {"pending"}
    assert [row["batch_id"] for row in outcome.batches] == [outcome.batch]
    assert [row["state"] for row in outcome.imports] == ["done"]


def test_queued_messages_carry_the_documented_content(outcome: Outcome) -> None:
    """Template parameters or text come out of the file intact (accents, emoji)."""
    by_recipient = {row["recipient"]: row for row in outcome.queue}
    for expected in outcome.case.get("messages", []):
        row = by_recipient[expected["recipient"]]
        if "text" in expected:
            assert (row["message_type"], row["body"]) == ("text", expected["text"])
        else:
            assert (row["message_type"], row["template_name"]) == (
                "template",
                TEMPLATE,
            )
            assert row["template_language"] == "fr"
            assert json.loads(row["template_params"]) == expected["params"]


def test_details_csv_lists_every_line_not_simply_queued(outcome: Outcome) -> None:
    """The details CSV has one row per rejected, duplicate or converted line.

    Its header is ``ligne;valeur;decision;numero;raison`` then the file's
    own header; each row ends with all the cells of its line (a cell beyond
    the header included), so that a person can find it and see what is wrong.
    Values, numbers and cells are written ``="..."`` so that Excel keeps them
    as written (no lost zero, no ``2,25E+12``).
    """
    expected: list[dict[str, Any]] = outcome.case.get("details", [])
    if not expected:
        assert not outcome.details.exists()
        return
    assert outcome.details.read_bytes().startswith(b"\xef\xbb\xbf")  # BOM, for Excel
    columns: list[str] = outcome.case["columns"]
    header, written = details_csv(outcome.details)
    assert header == DETAILS_HEADER + columns
    assert [(row.line, row.decision) for row in written] == [
        (line["line"], line["decision"]) for line in expected
    ]
    phone = columns.index(outcome.case["phone_column"])
    for row, line in zip(written, expected, strict=True):
        assert line["reason"] in row.reason, (row, line)
        value, number = excel_text(row.value), excel_text(row.number)
        cells = [excel_text(cell) for cell in row.cells]
        assert (cells[phone] if phone < len(cells) else "").strip() == value
        if "value" in line:
            assert value == line["value"]
        if "cells" in line:
            assert cells == line["cells"]
        if "number" in line:
            assert number == line["number"]
        elif line["decision"] == "rejetée":
            assert row.number == ""


def test_details_csv_agrees_with_the_screen_counts(outcome: Outcome) -> None:
    """As many rows of each decision as the report counts on screen."""
    if not outcome.details.exists():
        return
    _, written = details_csv(outcome.details)
    decisions = Counter(row.decision for row in written)
    shown = screen_counts(outcome.done.stdout)
    assert decisions["rejetée"] == shown["rejected"]
    assert decisions["doublon"] == shown["duplicates"]
    assert decisions["convertie"] == shown["converted"]
    assert decisions["déjà dans le lot"] == shown["in_batch"]
    differing = [row for row in written if "avec un autre message" in row.reason]
    assert len(differing) == shown["differing"]
    assert {row.decision for row in differing} <= {"doublon"}


def test_rejected_lines_are_shown_on_screen_with_their_reason(
    outcome: Outcome,
) -> None:
    """Each rejected line is printed as ``line N: 'value': reason``."""
    for line in outcome.case.get("details", []):
        if line["decision"] != "rejetée":
            continue
        value = re.escape(repr(line["value"])) if "value" in line else ".*"
        pattern = rf"^  line {line['line']}: {value}: .*{re.escape(line['reason'])}"
        assert re.search(pattern, outcome.done.stdout, re.MULTILINE), (
            pattern,
            outcome.explain(),
        )


# -- the folder itself ------------------------------------------------------------


def data_files(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.name not in NOT_DATA:
            yield path


def test_every_file_of_the_folder_has_a_case_and_a_readme_line() -> None:
    """No file sits in the folder untested, and the README names each one."""
    names = {path.name for path in data_files(DATA)}
    assert names == {case["file"] for case in CASES}
    readme = (DATA / "README.md").read_text(encoding="utf-8")
    for name in names:
        assert f"`{name}`" in readme, name
    ids = [case["id"] for case in CASES]
    assert len(ids) == len(set(ids))


def test_make_files_regenerates_the_folder_byte_for_byte(tmp_path: Path) -> None:
    """The generator rebuilds every committed file with the same bytes."""
    done = subprocess.run(
        [sys.executable, str(GENERATOR), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    made = {path.name: path.read_bytes() for path in data_files(tmp_path)}
    committed = {path.name: path.read_bytes() for path in data_files(DATA)}
    assert sorted(made) == sorted(committed)
    differ = [name for name in made if made[name] != committed[name]]
    assert differ == [], (
        "run tests/data/imports/make_files.py and review the diff (an openpyxl"
        f" upgrade changes the .xlsx bytes): {differ}"
    )
