"""``whatsapp-daemon import`` and ``enqueue``, run as the command itself.

Each test runs ``python -m whatsapp_daemon`` in ``tmp_path`` with only
``WHATSAPP_DATABASE_PATH`` set, and reads the queue it left behind.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_sending import rows

from whatsapp_daemon.cli import Exit

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_FILE = ROOT / "examples" / "template.json"
CAMPAIGN = ROOT / "examples" / "campaign.csv"

MIXED_CSV = """nom,telephone,montant
Aya,07 01 02 03 04,10 000
Bakary,+225 07.01.02.03.05,20 000
Chantal,00225 0701020306,30 000
Drissa,2250701020307,40 000
Aya bis,+2250701020304,10 000
Ehouman,01 02 03 04,50 000
Fanta,abc,60 000
Gnamien,,70 000
"""
ACCEPTED = ["+2250701020304", "+2250701020305", "+2250701020306", "+2250701020307"]
REJECTED = {
    7: ("01 02 03 04", "ancien numéro à 8 chiffres"),
    8: ("abc", "caractères non numériques"),
    9: ("", "numéro vide"),
}

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "var" / "database.sqlite"


@pytest.fixture
def cli(tmp_path: Path, database: Path) -> Run:
    """Run ``whatsapp-daemon ARGS`` in ``tmp_path`` against ``database``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("WHATSAPP_") and not k.lower().endswith("_proxy")
    }
    env["WHATSAPP_DATABASE_PATH"] = str(database)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "whatsapp_daemon", *map(str, args)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    return run


@pytest.fixture
def mixed_csv(tmp_path: Path) -> Path:
    path = tmp_path / "clients.csv"
    path.write_text(MIXED_CSV, encoding="utf-8")
    return path


def queued(database: Path) -> list[dict[str, Any]]:
    return sorted(rows(database).values(), key=lambda row: row["id"])


# -- import ------------------------------------------------------------------------


def test_import_queues_each_valid_number_once_in_e164(
    cli: Run, mixed_csv: Path, database: Path
) -> None:
    """Mixed spellings become E.164, a duplicate is skipped, the rest are reported."""
    done = cli(
        "import",
        mixed_csv,
        "--batch",
        "B-1",
        "--template-file",
        TEMPLATE_FILE,
        "--skip-rejected",
    )

    assert done.returncode == Exit.OK, done.stderr
    table = queued(database)
    assert [row["recipient"] for row in table] == ACCEPTED
    first = table[0]
    assert (first["message_type"], first["template_name"]) == (
        "template",
        "rappel_paiement",
    )
    assert json.loads(first["template_params"]) == ["Aya", "10 000"]
    assert {row["batch_id"] for row in table} == {"B-1"}
    assert {row["status"] for row in table} == {"pending"}
    for line, (value, reason) in REJECTED.items():
        pattern = rf"^  line {line}: {re.escape(repr(value))}: {reason}"
        assert re.search(pattern, done.stdout, re.MULTILINE), (line, done.stdout)
    assert "1 duplicates" in done.stdout
    assert "queued 4 messages in batch B-1" in done.stdout


def test_reimporting_a_batch_is_refused_unless_appending(
    cli: Run, mixed_csv: Path, tmp_path: Path, database: Path
) -> None:
    """The same batch id twice exits 65 and queues nothing; --append adds to it."""
    cli(
        "import",
        mixed_csv,
        "--batch",
        "B-1",
        "--template-file",
        TEMPLATE_FILE,
        "--skip-rejected",
    )
    more = tmp_path / "more.csv"
    more.write_text("nom,telephone,montant\nHawa,0501020309,5 000\n", encoding="utf-8")

    refused = cli("import", more, "--batch", "B-1", "--template-file", TEMPLATE_FILE)
    assert refused.returncode == Exit.DATA
    assert "--batch B-1" in refused.stderr
    assert len(queued(database)) == 4

    appended = cli(
        "import", more, "--batch", "B-1", "--template-file", TEMPLATE_FILE, "--append"
    )
    assert appended.returncode == Exit.OK, appended.stderr
    assert queued(database)[-1]["recipient"] == "+2250501020309"
    assert len(queued(database)) == 5


def test_append_skips_the_numbers_the_batch_already_has(
    cli: Run, mixed_csv: Path, tmp_path: Path, database: Path
) -> None:
    """--append queues only new numbers; the others are "déjà dans le lot".

    They are counted on screen apart from the duplicates of the file, and
    listed in the details CSV with the number they were read as.
    """
    cli(
        "import",
        mixed_csv,
        "--batch",
        "B-1",
        "--template-file",
        TEMPLATE_FILE,
        "--skip-rejected",
    )
    more = tmp_path / "more.csv"
    more.write_text(
        "nom,telephone,montant\n"
        "Aya,07.01.02.03.04,10 000\n"
        "Hawa,0501020309,5 000\n"
        "Drissa,+225 07 01 02 03 07,40 000\n",
        encoding="utf-8",
    )
    report = tmp_path / "lignes.csv"

    done = cli(
        "import",
        more,
        "--batch",
        "B-1",
        "--template-file",
        TEMPLATE_FILE,
        "--append",
        "--report",
        report,
    )

    assert done.returncode == Exit.OK, done.stderr
    assert [row["recipient"] for row in queued(database)] == [
        *ACCEPTED,
        "+2250501020309",
    ]
    assert re.search(
        r"^\s+2 numbers already in the batch, skipped$", done.stdout, re.MULTILINE
    )
    assert re.search(r"^\s+0 duplicates ", done.stdout, re.MULTILINE)
    assert "queued 1 messages in batch B-1" in done.stdout
    with report.open(encoding="utf-8-sig", newline="") as stream:
        header, *lines = csv.reader(stream, delimiter=";")
    assert header == [
        "ligne", "valeur", "decision", "numero", "raison", "nom", "telephone",
        "montant",
    ]  # fmt: skip
    assert [line[:4] for line in lines] == [
        ["2", '="07.01.02.03.04"', "déjà dans le lot", '="+2250701020304"'],
        ["4", '="+225 07 01 02 03 07"', "déjà dans le lot", '="+2250701020307"'],
    ]
    assert lines[0][5:] == ['="Aya"', '="07.01.02.03.04"', '="10 000"']


def test_screen_lists_twenty_rejected_lines_and_counts_the_others(
    cli: Run, tmp_path: Path
) -> None:
    """Past 20 rejected lines the screen says how many more; the CSV has all."""
    path = tmp_path / "numeros.csv"
    long = "9" * 100_000  # cut on the screen, whole in the CSV
    lines = ["telephone", "0701020304", long, *(f"abc{n}" for n in range(25))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = tmp_path / "lignes.csv"

    done = cli(
        "import",
        path,
        "--batch",
        "B-2",
        "--text",
        "Bonjour",
        "--skip-rejected",
        "--report",
        report,
    )

    assert done.returncode == Exit.OK, done.stderr
    shown = done.stdout.splitlines()
    start = shown.index("Rejected lines (first 20):")
    listed = shown[start + 1 : start + 21]
    assert listed[0].startswith("  line 3: '9999") and "…: " in listed[0]
    assert len(listed[0]) < 200
    assert listed[1:] == [
        f"  line {n + 4}: 'abc{n}': caractères non numériques" for n in range(19)
    ]
    assert shown[start + 21] == "  ... and 6 more"
    with report.open(encoding="utf-8-sig", newline="") as stream:
        assert len(list(csv.reader(stream, delimiter=";"))) == 1 + 26


def test_dry_run_reports_but_queues_nothing(
    cli: Run, mixed_csv: Path, database: Path
) -> None:
    """--dry-run prints the same report and leaves the table empty."""
    done = cli(
        "import",
        mixed_csv,
        "--batch",
        "B-1",
        "--template-file",
        TEMPLATE_FILE,
        "--dry-run",
        "--skip-rejected",
    )

    assert done.returncode == Exit.OK, done.stderr
    assert "would queue 4 messages in batch B-1" in done.stdout
    assert "line 8: 'abc'" in done.stdout
    assert queued(database) == []


def test_semicolon_cp1252_file_with_accented_header_is_read(
    cli: Run, tmp_path: Path, database: Path
) -> None:
    """An Excel-style export (';', Windows-1252, 'téléphone') imports as well."""
    path = tmp_path / "excel.csv"
    path.write_bytes(
        "nom;téléphone;montant\r\nKoné Aïcha;07 01 02 03 08;15 000\r\n".encode("cp1252")
    )

    done = cli("import", path, "--batch", "X-1", "--template-file", TEMPLATE_FILE)

    assert done.returncode == Exit.OK, done.stderr
    [row] = queued(database)
    assert row["recipient"] == "+2250701020308"
    assert json.loads(row["template_params"]) == ["Koné Aïcha", "15 000"]


@pytest.mark.skipif(not CAMPAIGN.exists(), reason="examples/campaign.csv is absent")
def test_example_campaign_imports_over_a_thousand_rows(
    cli: Run, database: Path
) -> None:
    """The shipped example campaign imports with more than 1000 recipients."""
    done = cli(
        "import",
        CAMPAIGN,
        "--batch",
        "demo",
        "--template-file",
        TEMPLATE_FILE,
        "--skip-rejected",
    )

    assert done.returncode == Exit.OK, done.stderr
    table = queued(database)
    assert len(table) > 1000
    assert all(re.fullmatch(r"\+225\d{10}", row["recipient"]) for row in table)


# -- enqueue ------------------------------------------------------------------------


def test_enqueue_text_queues_one_normalised_row(cli: Run, database: Path) -> None:
    """``enqueue --to --text`` queues a text row for the E.164 number."""
    done = cli("enqueue", "--to", "07 01 02 03 04", "--text", "Bonjour Aïcha")

    assert done.returncode == Exit.OK, done.stderr
    [row] = queued(database)
    assert (row["recipient"], row["message_type"], row["body"]) == (
        "+2250701020304",
        "text",
        "Bonjour Aïcha",
    )
    assert f"queued message {row['id']} for +2250701020304" in done.stdout


def test_enqueue_template_keeps_parameters_in_order(cli: Run, database: Path) -> None:
    """``--template`` with repeated ``--param`` stores the parameters in order."""
    done = cli(
        "enqueue",
        "--to",
        "+2250501020304",
        "--template",
        "rappel_paiement",
        "--param",
        "Aïcha",
        "--param",
        "52 000",
        "--batch",
        "B-9",
    )

    assert done.returncode == Exit.OK, done.stderr
    [row] = queued(database)
    assert (row["template_name"], row["template_language"]) == ("rappel_paiement", "fr")
    assert json.loads(row["template_params"]) == ["Aïcha", "52 000"]
    assert row["batch_id"] == "B-9"


@pytest.mark.parametrize(
    "number",
    [
        pytest.param("123", id="too-short"),
        pytest.param("01 02 03 04", id="old-8-digit"),
        pytest.param("abc", id="letters"),
    ],
)
def test_enqueue_invalid_number_exits_65_naming_the_value(
    cli: Run, database: Path, number: str
) -> None:
    """A bad number exits 65 with one stderr line naming ``to`` and the value."""
    done = cli("enqueue", "--to", number, "--text", "Bonjour")

    assert done.returncode == Exit.DATA
    [line] = done.stderr.splitlines()
    assert f'to: "{number}"' in line
    assert "Traceback" not in done.stderr
    assert not database.exists() or queued(database) == []
