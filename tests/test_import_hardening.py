"""``whatsapp-daemon import`` against what goes wrong in real use.

Each test runs the command itself (``python -m whatsapp_daemon``) in
``tmp_path``, with an environment holding only ``WHATSAPP_DATABASE_PATH``
and ``WHATSAPP_LOG_PATH`` (plus what the test is about: a time zone, an
access token), against a real SQLite file. The name and docstring of each
test state the behaviour it holds the command to: broken quotes, a report
written over the file read, imports racing into one batch, a stopped or
signalled import, encodings, shifted columns, workbooks as other programs
write them, the text and template checked before any line, send times,
and the access token kept out of everything the command writes.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import sqlite3
import stat
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import openpyxl
import pytest

from whatsapp_daemon import batches
from whatsapp_daemon.cli import Exit
from whatsapp_daemon.queue import QueueDB

TOKEN = "test-secret-value-123456"  # made up: the configured access token
BIG = 40_000  # lines: the import takes seconds, long enough to meet it
TEXT = ("--text", "Bonjour {nom}")
TEMPLATE = ("--template", "rappel_paiement", "--param", "nom")
Done = subprocess.CompletedProcess[str]


class Home:
    """A folder with its own queue database and log, and the command run there."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.database = folder / "var" / "database.sqlite"
        self.log = folder / "var" / "logs" / "whatsapp_queue.log"
        self.env = {
            "WHATSAPP_DATABASE_PATH": str(self.database),
            "WHATSAPP_LOG_PATH": str(self.log),
        }
        self.started: list[subprocess.Popen[str]] = []

    def _command(self, args: tuple[Any, ...]) -> list[str]:
        return [sys.executable, "-m", "whatsapp_daemon", *map(str, args)]

    def run(self, *args: Any, env: dict[str, str] | None = None) -> Done:
        """Run ``whatsapp-daemon ARGS`` to the end."""
        return subprocess.run(
            self._command(args),
            cwd=self.folder,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=60,
            check=False,
        )

    def start(self, *args: Any) -> subprocess.Popen[str]:
        """Start ``whatsapp-daemon ARGS`` without waiting for it."""
        process = subprocess.Popen(
            self._command(args),
            cwd=self.folder,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        self.started.append(process)
        return process

    def stop_started(self) -> None:
        """Kill, by its id, a process started here that a failed test left."""
        for process in self.started:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGCONT)
                process.kill()
                process.communicate(timeout=60)

    def write(self, name: str, text: str, encoding: str = "utf-8") -> Path:
        path = self.folder / name
        path.write_bytes(text.encode(encoding))
        return path

    def big_csv(self, name: str = "big.csv", count: int = BIG) -> Path:
        """A file of ``count`` distinct valid numbers, written at once."""
        lines = "".join(f"07{n:08d};Client {n}\n" for n in range(count))
        return self.write(name, "telephone;nom\n" + lines)

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of a query; none while the database does not exist."""
        if not self.database.exists():
            return []
        with contextlib.closing(sqlite3.connect(self.database, timeout=10)) as conn:
            return conn.execute(sql, params).fetchall()

    def recipients(self, batch: str | None = None) -> list[str]:
        """The recipients queued (in one batch), in insertion order."""
        if batch is None:
            rows = self.query("SELECT recipient FROM whatsapp_queue ORDER BY id")
        else:
            rows = self.query(
                "SELECT recipient FROM whatsapp_queue WHERE batch_id = ? ORDER BY id",
                (batch,),
            )
        return [row[0] for row in rows]

    def params(self) -> list[list[str]]:
        rows = self.query("SELECT template_params FROM whatsapp_queue ORDER BY id")
        return [json.loads(row[0]) for row in rows]

    def bodies(self) -> list[str]:
        rows = self.query("SELECT body FROM whatsapp_queue ORDER BY id")
        return [row[0] for row in rows]

    def count(self) -> int:
        return int(self.query("SELECT COUNT(*) FROM whatsapp_queue")[0][0])

    def assert_nothing_left(self) -> None:
        """No row, no import and no batch: as if the command never ran."""
        assert self.query("SELECT COUNT(*) FROM whatsapp_queue") in ([], [(0,)])
        assert self.query("SELECT * FROM whatsapp_imports") == []
        assert self.query("SELECT * FROM whatsapp_batches") == []


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    folder = Home(tmp_path)
    yield folder
    folder.stop_started()


def explain(done: Done) -> str:
    return f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"


def refusal(done: Done, *pieces: str) -> str:
    """The one error line of a command that exited 65; each piece is in it."""
    assert done.returncode == Exit.DATA, explain(done)
    assert "Traceback" not in done.stderr + done.stdout
    [line] = done.stderr.splitlines()
    assert line.startswith("whatsapp-daemon: invalid input: "), line
    for piece in pieces:
        assert piece in line, (piece, line)
    return line


def succeeded(done: Done) -> None:
    assert done.returncode == Exit.OK, explain(done)
    assert done.stderr == ""


def wait_for(probe: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Poll ``probe`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while not (value := probe()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)
    return value


def importing(home: Home) -> bool:
    """An import is registered and has written at least one chunk."""
    try:
        imports = home.query("SELECT id FROM whatsapp_imports")
        return bool(imports) and home.count() > 0
    except sqlite3.OperationalError:  # the tables are being created
        return False


@contextlib.contextmanager
def stopped_outside_a_write(
    home: Home, process: subprocess.Popen[str]
) -> Iterator[sqlite3.Connection]:
    """Stop ``process`` (SIGSTOP) at a moment it holds no write transaction.

    Yields a connection inside ``BEGIN IMMEDIATE``, committed on leaving;
    the process stays stopped until the caller sends SIGCONT.
    """
    conn = sqlite3.connect(home.database, timeout=0.05, isolation_level=None)
    try:
        while True:
            os.kill(process.pid, signal.SIGSTOP)
            os.waitpid(process.pid, os.WUNTRACED)  # until it is stopped
            try:
                conn.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError:  # stopped inside a write: again
                os.kill(process.pid, signal.SIGCONT)
                time.sleep(0.005)
        yield conn
        conn.execute("COMMIT")
    finally:
        conn.close()


def finish(process: subprocess.Popen[str]) -> Done:
    out, err = process.communicate(timeout=60)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


# -- 1. quotes -----------------------------------------------------------------


@pytest.mark.parametrize("campaign", [TEXT, TEMPLATE], ids=["text", "template"])
def test_unterminated_quote_refuses_the_file_naming_the_line_it_opens_on(
    home: Home, campaign: tuple[str, ...]
) -> None:
    """A quote never closed: exit 65, one line naming the line and the quote.

    The quote opens after more than one chunk of valid lines: what was
    written of the import is removed, nothing stays queued.
    """
    valid = "".join(f"0101{n:06d};Client {n};1 000\n" for n in range(600))
    path = home.write(
        "clients.csv",
        "telephone;nom;montant\n"
        + valid
        + '0701020304;"Aya;15 000\n0501020304;Bakary;20 000\n',
    )

    done = home.run("import", path, "--batch", "B-1", *campaign, "--skip-rejected")

    refusal(done, "line 602", "quote")
    home.assert_nothing_left()


# -- 2. a report written over what must be kept ---------------------------------


@pytest.mark.parametrize("target", ["input", "database", "log"])
def test_report_over_the_input_the_database_or_the_log_is_refused(
    home: Home, target: str
) -> None:
    """--report naming the file read, the database or the log: exit 65.

    The file, the database (with its earlier rows) and the log are kept
    byte for byte; each is named another way than the setting names it.
    """
    first = home.write("first.csv", "telephone;nom\n0701020304;Aya\n")
    succeeded(home.run("import", first, "--batch", "B-1", *TEXT))
    path = home.write("second.csv", "telephone;nom\n0501020304;Bakary\nabc;x\n")
    report, what = {
        "input": ("./second.csv", "the file being imported"),
        "database": ("var/../var/database.sqlite", "the queue database"),
        "log": (str(home.log.parent / ".." / "logs" / home.log.name), "the log"),
    }[target]
    kept = {p: p.read_bytes() for p in (path, home.database, home.log)}

    done = home.run(
        "import", path, "--batch", "B-2", *TEXT, "--skip-rejected", "--report", report
    )

    refusal(done, "--report ", f"this is {what}")
    assert {p: p.read_bytes() for p in kept} == kept
    assert home.recipients() == ["+2250701020304"]
    assert home.query("SELECT batch_id FROM whatsapp_batches") == [("B-1",)]


# -- 3. two imports into one batch at once --------------------------------------


def test_two_imports_creating_one_batch_at_once_one_is_refused(home: Home) -> None:
    """Both started before either ends: one queues, the other exits 65.

    The table holds every recipient of the file once. (The database exists
    already: see the next test for two commands creating it.)
    """
    other = home.write("other.csv", "telephone;nom\n0500000001;Autre\n")
    succeeded(home.run("import", other, "--batch", "B-0", *TEXT))
    path = home.big_csv()
    first = home.start("import", path, "--batch", "B-1", *TEXT)
    second = home.start("import", path, "--batch", "B-1", *TEXT)
    assert first.poll() is None and second.poll() is None

    done = sorted([finish(first), finish(second)], key=lambda d: d.returncode)

    succeeded(done[0])
    line = refusal(done[1])
    assert "already exists" in line or "another import into this batch" in line
    assert home.count() == 1 + BIG
    assert (
        home.query(
            "SELECT recipient FROM whatsapp_queue"
            " GROUP BY recipient HAVING COUNT(*) > 1"
        )
        == []
    )


def test_an_import_waits_for_a_writer_while_the_database_is_not_in_wal_mode(
    home: Home,
) -> None:
    """A database another program created (rollback journal) is being written:
    the import waits for the write to end instead of failing at once.

    Two first commands started together meet the same way: the one that
    does not create the database must wait, not fail with "database is
    locked" (exit 74).
    """
    home.database.parent.mkdir(parents=True)
    writer = sqlite3.connect(home.database, isolation_level=None)
    try:
        writer.execute("CREATE TABLE sessions (id INTEGER)")
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("INSERT INTO sessions VALUES (1)")
        path = home.write("clients.csv", "telephone;nom\n0701020304;Aya\n")
        process = home.start("import", path, "--batch", "B-1", *TEXT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=1.5)  # it must still be waiting
        writer.execute("COMMIT")
    finally:
        writer.close()

    succeeded(finish(process))
    assert home.recipients() == ["+2250701020304"]


def test_two_appends_into_one_batch_at_once_one_is_refused(home: Home) -> None:
    """Two --append into an existing batch together: one is refused (65).

    It is told another import into the batch is under way; no number is
    queued twice (the batch's own number, also in the file, neither).
    """
    small = home.write("small.csv", "telephone;nom\n0700000001;Client 1\n")
    succeeded(home.run("import", small, "--batch", "B-1", *TEXT))
    path = home.big_csv()
    first = home.start("import", path, "--batch", "B-1", *TEXT, "--append")
    second = home.start("import", path, "--batch", "B-1", *TEXT, "--append")
    assert first.poll() is None and second.poll() is None

    done = sorted([finish(first), finish(second)], key=lambda d: d.returncode)

    succeeded(done[0])
    refusal(done[1], "another import into this batch is under way")
    assert home.count() == BIG
    assert (
        home.query(
            "SELECT recipient FROM whatsapp_queue"
            " GROUP BY recipient HAVING COUNT(*) > 1"
        )
        == []
    )


# -- 4. an import that is alive but silent ---------------------------------------


def test_a_stopped_import_is_never_swept_and_finishes_when_continued(
    home: Home,
) -> None:
    """SIGSTOP, no sign of life for 2 hours: sweep_abandoned keeps its rows.

    Its process still exists, so it is not dead; continued, it ends with
    exit 0 and every row of the file.
    """
    process = home.start("import", home.big_csv(), "--batch", "B-1", *TEXT)
    wait_for(lambda: importing(home), "the import's first rows")
    with stopped_outside_a_write(home, process) as conn:
        two_hours_ago = datetime.now(UTC) - timedelta(hours=2)
        conn.execute(
            "UPDATE whatsapp_imports SET updated_at = ?",
            (two_hours_ago.strftime("%Y-%m-%d %H:%M:%S"),),
        )
    try:
        written = home.count()
        db = QueueDB.open(home.database)
        try:
            assert batches.sweep_abandoned(db, datetime.now(UTC)) == 0
        finally:
            db.close()
        assert home.count() == written
        assert home.query("SELECT state FROM whatsapp_imports") == [("importing",)]
    finally:
        os.kill(process.pid, signal.SIGCONT)

    succeeded(finish(process))
    assert home.count() == BIG
    assert home.query("SELECT state FROM whatsapp_imports") == [("done",)]


def test_an_import_whose_row_is_removed_while_it_runs_exits_65_queueing_nothing(
    home: Home,
) -> None:
    """Its import row deleted while it is stopped: continued, it aborts.

    Exit 65 saying the import was removed; none of its rows stays queued.
    """
    process = home.start("import", home.big_csv(), "--batch", "B-1", *TEXT)
    wait_for(lambda: importing(home), "the import's first rows")
    with stopped_outside_a_write(home, process) as conn:
        conn.execute("DELETE FROM whatsapp_imports")
    os.kill(process.pid, signal.SIGCONT)

    done = finish(process)

    refusal(done, "the import was removed while it ran")
    assert home.count() == 0


def test_an_import_removed_while_it_ran_can_be_run_again_as_it_says(
    home: Home,
) -> None:
    """The refusal says to import the file again: the same command then works.

    The batch the removed import created must not be left behind, empty,
    refusing the batch id as "already exists".
    """
    path = home.big_csv(count=10_000)
    process = home.start("import", path, "--batch", "B-1", *TEXT)
    wait_for(lambda: importing(home), "the import's first rows")
    with stopped_outside_a_write(home, process) as conn:
        conn.execute("DELETE FROM whatsapp_imports")
    os.kill(process.pid, signal.SIGCONT)
    refusal(finish(process), "import the file again")

    again = home.run("import", path, "--batch", "B-1", *TEXT)

    succeeded(again)
    assert home.count() == 10_000


# -- 5. encodings -------------------------------------------------------------------


def test_utf8_file_with_one_stray_latin1_byte_names_the_line_and_encoding(
    home: Home,
) -> None:
    """A UTF-8 file (accents) with one Latin-1 byte: exit 65, its line named."""
    text = "telephone;nom\n0701020304;Aïcha\n0501020304;Noël\n0101020304;Zoé\n"
    path = home.folder / "melange.csv"
    path.write_bytes(
        text.encode("utf-8") + b"0701020305;Ren\xe9e\n" + "0701020306;Gérard\n".encode()
    )

    done = home.run("import", path, "--batch", "B-1", *TEXT)

    refusal(done, "line 5", "--encoding")
    home.assert_nothing_left()


def test_cp1252_with_typographic_quotes_dash_and_ellipsis_is_detected(
    home: Home,
) -> None:
    """Curly quotes, dash, ellipsis, apostrophe and accents in Windows-1252:
    detected as cp1252, the parameter intact."""
    name = "\u201cLe Café\u201d \u2013 Noël à Abidjan\u2026 d\u2019or"
    path = home.write("cp1252.csv", f"telephone;nom\n0701020304;{name}\n", "cp1252")

    done = home.run("import", path, "--batch", "B-1", *TEMPLATE)

    succeeded(done)
    assert "(CSV, cp1252, semicolon; phone column 'telephone')" in done.stdout
    assert home.params() == [[name]]


def test_mac_roman_with_accents_and_apostrophe_is_detected(home: Home) -> None:
    """é è à ç and a curly apostrophe in Mac Roman, CR line ends: mac-roman."""
    name = "Sébastien Kè à ça d\u2019Abidjan"
    path = home.write(
        "mac.csv", f"telephone;nom\r0701020304;{name}\r0501020304;Çà\r", "mac_roman"
    )

    done = home.run("import", path, "--batch", "B-1", *TEMPLATE)

    succeeded(done)
    assert "(CSV, mac-roman, semicolon; phone column 'telephone')" in done.stdout
    assert home.params() == [[name], ["Çà"]]


@pytest.mark.parametrize("encoding", ["utf-8", "rot13", "base64", "nope"])
def test_an_encoding_that_cannot_read_the_file_is_refused_in_one_line(
    home: Home, encoding: str
) -> None:
    """--encoding wrong for the file, not a text encoding, or unknown: exit 65."""
    path = home.write("cp1252.csv", "telephone;nom\n0701020304;Noël\n", "cp1252")

    done = home.run("import", path, "--batch", "B-1", *TEXT, "--encoding", encoding)

    refusal(done, encoding)
    home.assert_nothing_left()


# -- 6. shifted columns ---------------------------------------------------------


def test_a_line_with_fewer_cells_than_the_header_is_rejected(home: Home) -> None:
    """A missing cell would shift the values: the line is rejected, not queued."""
    path = home.write(
        "clients.csv",
        "montant;nom;telephone\n10 000;Aya;0701020304\n20 000;0501020304\n",
    )

    done = home.run(
        "import",
        path,
        "--batch",
        "B-1",
        "--template",
        "rappel_paiement",
        "--param",
        "nom",
        "--param",
        "montant",
        "--skip-rejected",
    )

    succeeded(done)
    assert (
        "  line 3: '': ligne incomplète : 2 colonnes au lieu de 3, les valeurs"
        " seraient décalées"
    ) in done.stdout.splitlines()
    assert home.recipients() == ["+2250701020304"]
    assert home.params() == [["Aya", "10 000"]]


def test_header_ending_with_a_separator_and_an_extra_filled_cell(home: Home) -> None:
    """A header ending with ``;`` has no more columns; a filled extra cell
    (a separator inside a value) rejects its line; an empty one does not."""
    path = home.write(
        "clients.csv",
        "telephone;nom;montant;\n"
        "0701020304;Aya;10 000\n"
        "0501020304;Bakary;20 000;\n"
        "0101020304;Koné; Drissa;30 000\n",
    )

    done = home.run(
        "import",
        path,
        "--batch",
        "B-1",
        "--template",
        "rappel_paiement",
        "--param",
        "nom",
        "--param",
        "montant",
        "--skip-rejected",
    )

    succeeded(done)
    assert (
        "  line 4: '0101020304': 4 colonnes au lieu de 3 : un séparateur dans une"
        " valeur sans guillemets ?"
    ) in done.stdout.splitlines()
    assert home.recipients() == ["+2250701020304", "+2250501020304"]
    assert home.params() == [["Aya", "10 000"], ["Bakary", "20 000"]]


# -- 7. workbooks -----------------------------------------------------------------


def save(workbook: Any, path: Path) -> Path:
    workbook.save(path)
    return path


def clients_sheet(sheet: Any, rows: list[list[Any]]) -> None:
    sheet.append(["telephone", "nom", "montant"])
    for row in rows:
        sheet.append(row)


def test_xlsx_whose_dimension_is_wrong_has_every_row_read(home: Home) -> None:
    """A sheet saying it spans A1:B2 while it holds 11 rows: all are read."""
    workbook = openpyxl.Workbook()
    clients_sheet(
        workbook.active, [[f"07010203{n:02d}", f"Client {n}", n] for n in range(10)]
    )
    raw = io.BytesIO()
    workbook.save(raw)
    path = home.folder / "clients.xlsx"
    with (
        zipfile.ZipFile(raw) as source,
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for entry in source.infolist():
            data = source.read(entry)
            if entry.filename == "xl/worksheets/sheet1.xml":
                data, found = re.subn(
                    rb'<dimension ref="[^"]*"', b'<dimension ref="A1:B2"', data
                )
                assert found == 1
            target.writestr(entry, data)

    done = home.run("import", path, "--batch", "B-1", *TEMPLATE)

    succeeded(done)
    assert home.recipients() == [f"+22507010203{n:02d}" for n in range(10)]
    assert home.params()[-1] == ["Client 9"]


def hidden_first_sheet(path: Path) -> Path:
    workbook = openpyxl.Workbook()
    hidden = workbook.active
    hidden.title = "Brouillon"
    clients_sheet(hidden, [["0501020304", "Caché", 1]])
    hidden.sheet_state = "hidden"
    clients_sheet(workbook.create_sheet("Clients"), [["0701020304", "Visible", 2]])
    clients_sheet(workbook.create_sheet("Relances"), [["0101020304", "Autre", 3]])
    workbook.active = 1
    return save(workbook, path)


def test_xlsx_with_a_hidden_first_sheet_imports_the_first_visible_one(
    home: Home,
) -> None:
    """The sheet a person sees first is imported, not a hidden one."""
    path = hidden_first_sheet(home.folder / "clients.xlsx")

    done = home.run("import", path, "--batch", "B-1", *TEMPLATE)

    succeeded(done)
    assert "(Excel workbook, sheet 'Clients'; phone column" in done.stdout
    assert home.params() == [["Visible"]]


def test_xlsx_sheet_option_picks_another_sheet(home: Home) -> None:
    """--sheet NAME imports that sheet."""
    path = hidden_first_sheet(home.folder / "clients.xlsx")

    done = home.run("import", path, "--batch", "B-1", *TEMPLATE, "--sheet", "Relances")

    succeeded(done)
    assert "(Excel workbook, sheet 'Relances'; phone column" in done.stdout
    assert home.recipients() == ["+2250101020304"]


def test_xlsx_error_cell_in_a_parameter_column_rejects_its_line(home: Home) -> None:
    """A formula error (#N/A, an error cell) is no parameter: line rejected."""
    workbook = openpyxl.Workbook()
    clients_sheet(workbook.active, [["0701020304", "Aya", 1], ["0501020304", None, 2]])
    cell = workbook.active.cell(row=3, column=2, value="#N/A")
    assert cell.data_type == "e"
    path = save(workbook, home.folder / "clients.xlsx")

    done = home.run("import", path, "--batch", "B-1", *TEMPLATE, "--skip-rejected")

    succeeded(done)
    assert (
        "  line 3: '0501020304': colonne nom : erreur de formule Excel #N/A,"
        " corriger la cellule"
    ) in done.stdout.splitlines()
    assert home.params() == [["Aya"]]


def test_xlsx_float_1e16_parameter_is_written_in_full(home: Home) -> None:
    """A whole float of 17 digits is written as its digits, not 1e+16."""
    workbook = openpyxl.Workbook()
    clients_sheet(workbook.active, [["0701020304", "Aya", 1e16]])
    path = save(workbook, home.folder / "clients.xlsx")

    done = home.run("import", path, "--batch", "B-1", *TEMPLATE, "--param", "montant")

    succeeded(done)
    assert home.params() == [["Aya", "10000000000000000"]]


def test_xlsx_renamed_csv_is_read_as_a_workbook(home: Home) -> None:
    """A workbook saved under a .csv name is read as the workbook it is."""
    workbook = openpyxl.Workbook()
    clients_sheet(workbook.active, [["0701020304", "Aya", 1]])
    path = save(workbook, home.folder / "clients.xlsx").rename(
        home.folder / "clients.csv"
    )

    done = home.run("import", path, "--batch", "B-1", *TEMPLATE)

    succeeded(done)
    assert "(Excel workbook, sheet 'Sheet'; phone column 'telephone')" in done.stdout
    assert home.params() == [["Aya"]]


def test_french_excel_error_values_in_a_csv_reject_their_line(home: Home) -> None:
    """A CSV saved by French-language Excel holds the errors as it shows them.

    #VALEUR!, #NOMBRE!, #NOM? and #NUL! are formula errors just as #VALUE!,
    #NUM!, #NAME? and #NULL! are: each rejects its line.
    """
    errors = ["#VALEUR!", "#NOMBRE!", "#NOM?", "#NUL!"]
    lines = [f"050102030{n};{error}" for n, error in enumerate(errors)]
    path = home.write(
        "clients.csv", "\n".join(["telephone;nom", "0701020304;Aya", *lines]) + "\n"
    )

    done = home.run("import", path, "--batch", "B-1", *TEMPLATE, "--skip-rejected")

    succeeded(done)
    assert home.params() == [["Aya"]]


# -- 8. a report that cannot be written ---------------------------------------------


@pytest.fixture
def full_device(tmp_path: Path) -> Path:
    """A file every write to fails with "no space left", as /dev/full.

    As root, a private node of the same device in ``tmp_path``: an import
    that fails to write its report deletes it, and root could delete the
    system's /dev/full.
    """
    system = Path("/dev/full")
    if not system.exists():
        pytest.skip("/dev/full is absent")
    if os.geteuid() != 0:
        return system
    node = tmp_path / "full"
    try:
        os.mknod(node, stat.S_IFCHR | 0o666, system.stat().st_rdev)
    except OSError as exc:
        pytest.skip(f"root cannot make a private full device here: {exc}")
    return node


def rejected_lines_csv(home: Home, count: int = 2000) -> Path:
    """Valid lines, each followed by a rejected one: a long details CSV."""
    lines = [f"07{n:08d};Client {n}\nabc{n};x\n" for n in range(count)]
    return home.write("clients.csv", "telephone;nom\n" + "".join(lines))


def test_report_that_cannot_be_written_fails_the_import_queueing_nothing(
    home: Home,
) -> None:
    """A report that fails after chunks were written: exit 74, nothing queued."""
    valid = "".join(f"07{n:08d};Client {n}\n" for n in range(1500))
    path = home.write("clients.csv", "telephone;nom\n" + valid + "abc;x\n")
    blocker = home.write("pas-un-dossier", "a file where a folder should be")

    done = home.run(
        "import",
        path,
        "--batch",
        "B-1",
        *TEXT,
        "--skip-rejected",
        "--report",
        blocker / "lignes.csv",
    )

    assert done.returncode == Exit.DATABASE, explain(done)
    assert "Traceback" not in done.stderr
    home.assert_nothing_left()


def test_report_on_a_device_is_refused_and_the_device_kept(
    home: Home, full_device: Path
) -> None:
    """--report naming a device (not a regular file) is refused; it stays."""
    path = rejected_lines_csv(home)

    done = home.run(
        "import", path, "--batch", "B-1", *TEXT, "--skip-rejected",
        "--report", full_device,
    )  # fmt: skip

    assert done.returncode == Exit.DATA, explain(done)
    assert "not a regular file" in done.stderr
    assert full_device.exists()


# -- 9. the text and the template, checked before any line -----------------------


def template_file(home: Home, content: str) -> tuple[str, ...]:
    path = home.write("modele.json", content)
    return ("--template-file", str(path))


CAMPAIGNS: dict[str, Callable[[Home], tuple[str, ...]]] = {
    "unclosed-brace": lambda h: ("--text", "Bonjour {nom"),
    "format-spec": lambda h: ("--text", "{nom:>10}"),
    "conversion": lambda h: ("--text", "{nom!r}"),
    "attribute": lambda h: ("--text", "{nom.upper}"),
    "blank-text": lambda h: ("--text", "  "),
    "blank-template": lambda h: ("--template", "  "),
    "template-with-capitals-and-space": lambda h: ("--template", "Rappel Paiement"),
    "empty-language": lambda h: ("--template", "rappel_paiement", "--language", ""),
    "template-file-name-null": lambda h: template_file(h, '{"name": null}'),
    "template-file-name-list": lambda h: template_file(h, '{"name": ["a"]}'),
    "template-file-params-number": lambda h: template_file(
        h, '{"name": "rappel_paiement", "params": [1]}'
    ),
    "template-file-not-json": lambda h: template_file(h, "name: rappel_paiement"),
}


@pytest.mark.parametrize("campaign", CAMPAIGNS.values(), ids=CAMPAIGNS.keys())
def test_a_text_or_template_meta_would_refuse_stops_the_import(
    home: Home, campaign: Callable[[Home], tuple[str, ...]]
) -> None:
    """Checked before any line: exit 65, one line, no traceback, nothing queued."""
    path = home.write("clients.csv", "telephone;nom\n0701020304;Aya\n")

    done = home.run("import", path, "--batch", "B-1", *campaign(home))

    refusal(done)
    home.assert_nothing_left()


def test_template_and_text_together_are_refused_by_the_command_line(
    home: Home,
) -> None:
    """--template with --text: argparse refuses (exit 2), nothing queued."""
    path = home.write("clients.csv", "telephone;nom\n0701020304;Aya\n")

    done = home.run("import", path, "--batch", "B-1", "--template", "x", "--text", "y")

    assert done.returncode == Exit.USAGE, explain(done)
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1].endswith(
        "argument --text: not allowed with argument --template"
    )
    assert not home.database.exists()


def test_a_missing_template_file_is_bad_input_not_a_database_error(
    home: Home,
) -> None:
    """--template-file naming no file: exit 65 (bad input) naming the file."""
    path = home.write("clients.csv", "telephone;nom\n0701020304;Aya\n")

    done = home.run("import", path, "--batch", "B-1", "--template-file", "absent.json")

    refusal(done, "absent.json")
    home.assert_nothing_left()


# -- 10. send times ---------------------------------------------------------------


AT_REFUSED = [
    pytest.param("9999-12-31 23:59", "America/New_York", id="year-9999-new-york"),
    pytest.param("0001-01-01 00:00", "Europe/Paris", id="year-1-paris"),
    pytest.param("in-a-year-and-a-month", "Africa/Abidjan", id="over-a-year"),
]


def at_text(text: str, zone: str, ahead: timedelta) -> str:
    """``text``, or the wall-clock time ``ahead`` of now in ``zone``."""
    if text != "in-a-year-and-a-month":
        return text
    moment = datetime.now(UTC) + ahead
    return moment.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M")


def with_at(home: Home, command: str, at: str) -> tuple[str, ...]:
    if command == "enqueue":
        return ("enqueue", "--to", "0701020304", "--text", "Bonjour", "--at", at)
    path = home.write("clients.csv", "telephone;nom\n0701020304;Aya\n")
    return ("import", str(path), "--batch", "B-1", *TEXT, "--at", at)


@pytest.mark.parametrize("command", ["enqueue", "import"])
@pytest.mark.parametrize(("text", "zone"), AT_REFUSED)
def test_send_time_out_of_range_is_refused_in_one_line(
    home: Home, command: str, text: str, zone: str
) -> None:
    """Year 9999, year 1 or over a year ahead: exit 65, one line, no row."""
    at = at_text(text, zone, timedelta(days=400))

    done = home.run(*with_at(home, command, at), env={"WHATSAPP_TIMEZONE": zone})

    refusal(done, f"--at {at!r}")
    home.assert_nothing_left()


@pytest.mark.parametrize("command", ["enqueue", "import"])
def test_send_time_an_hour_ahead_is_accepted(home: Home, command: str) -> None:
    """An hour ahead in the configured zone: queued for that time in UTC."""
    zone = "America/New_York"
    moment = (datetime.now(UTC) + timedelta(hours=1)).replace(second=0, microsecond=0)
    at = moment.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M")

    done = home.run(*with_at(home, command, at), env={"WHATSAPP_TIMEZONE": zone})

    succeeded(done)
    stamp = moment.strftime("%Y-%m-%d %H:%M:%S")
    assert home.query("SELECT recipient, scheduled_at FROM whatsapp_queue") == [
        ("+2250701020304", stamp)
    ]


def test_send_time_in_year_1_is_called_past_not_too_far_ahead(home: Home) -> None:
    """0001-01-01 in Europe/Paris is in the past: the refusal says so."""
    done = home.run(
        *with_at(home, "enqueue", "0001-01-01 00:00"),
        env={"WHATSAPP_TIMEZONE": "Europe/Paris"},
    )

    line = refusal(done, "this time is past")
    assert "more than a year ahead" not in line


# -- 11. interrupted --------------------------------------------------------------


def test_two_quick_sigterms_leave_nothing_behind(home: Home) -> None:
    """A second SIGTERM 150 ms after the first does not cut the clean-up.

    Exit 130; no row, no import and no batch is left.
    """
    process = home.start("import", home.big_csv(), "--batch", "B-1", *TEXT)
    wait_for(lambda: importing(home), "the import's first rows")
    process.send_signal(signal.SIGTERM)
    time.sleep(0.15)
    process.send_signal(signal.SIGTERM)

    done = finish(process)

    assert done.returncode == Exit.INTERRUPTED, explain(done)
    assert "Traceback" not in done.stderr
    home.assert_nothing_left()


# -- 12. the access token ---------------------------------------------------------


def token_outputs(home: Home, done: Done, report: Path) -> str:
    """Everything the command wrote that a person may read or send on."""
    written = [done.stdout, done.stderr]
    for path in (report, home.log):
        if path.exists():
            written.append(path.read_text(encoding="utf-8-sig"))
    return "\n".join(written)


ENV_FILES = {
    "token-line-first": (
        f"WHATSAPP_ACCESS_TOKEN={TOKEN}\nWHATSAPP_PHONE_NUMBER_ID=106540352242922\n"
    ),
    "token-line-second": (
        f"WHATSAPP_PHONE_NUMBER_ID=106540352242922\nWHATSAPP_ACCESS_TOKEN={TOKEN}\n"
    ),
    "token-in-a-row": (
        f"telephone;nom\nWHATSAPP_ACCESS_TOKEN={TOKEN};x\n0701020304;{TOKEN}\n"
    ),
}


@pytest.mark.parametrize("content", ENV_FILES.values(), ids=ENV_FILES.keys())
@pytest.mark.parametrize("campaign", [TEXT, ("--text", "Bonjour")], ids=["nom", "no"])
def test_the_access_token_in_an_imported_file_is_never_written_out(
    home: Home, content: str, campaign: tuple[str, ...]
) -> None:
    """A .env imported by mistake: the token is in no output, report or log."""
    path = home.write("env.csv", content)
    report = home.folder / "lignes.csv"

    done = home.run(
        "import",
        path,
        "--batch",
        "B-1",
        *campaign,
        "--skip-rejected",
        "--report",
        report,
        env={"WHATSAPP_ACCESS_TOKEN": TOKEN},
    )

    assert "Traceback" not in done.stderr
    assert TOKEN not in token_outputs(home, done, report)


def token_piece(written: str, shortest: int = 8) -> str:
    """The longest piece of the token (``shortest`` characters or more) in
    ``written``; "" when there is none."""
    pieces = (
        TOKEN[start:end]
        for start in range(len(TOKEN))
        for end in range(start + shortest, len(TOKEN) + 1)
    )
    return max((piece for piece in pieces if piece in written), key=len, default="")


def test_no_piece_of_the_token_shows_in_a_column_name_cut_short(
    home: Home,
) -> None:
    """Column names are cut to 40 characters in messages: after masking."""
    path = home.write("env.csv", f"WHATSAPP_ACCESS_TOKEN={TOKEN};telephone\n")

    done = home.run(
        "import",
        path,
        "--batch",
        "B-1",
        *TEXT,
        "--phone-column",
        "portable",
        env={"WHATSAPP_ACCESS_TOKEN": TOKEN},
    )

    refusal(done, "--phone-column portable")
    assert token_piece(done.stdout + done.stderr) == ""


def test_no_piece_of_the_token_shows_in_a_report_cell_cut_short(
    home: Home,
) -> None:
    """Report cells are cut to 200 characters: the token is masked first."""
    padding = "x" * 185
    path = home.write("env.csv", f"telephone;nom\nabc;{padding} {TOKEN}\n")
    report = home.folder / "lignes.csv"

    done = home.run(
        "import",
        path,
        "--batch",
        "B-1",
        *TEXT,
        "--report",
        report,
        env={"WHATSAPP_ACCESS_TOKEN": TOKEN},
    )

    refusal(done, "1 lines rejected")
    assert token_piece(token_outputs(home, done, report)) == ""


# -- 13. --append and numbers stored by another program -----------------------------


def test_append_finds_the_numbers_another_program_stored_unnormalised(
    home: Home,
) -> None:
    """Rows stored as ``07 01 02 03 04`` or ``2250501020304`` by plain SQL:
    the same people in the file are "déjà dans le lot", not queued again."""
    db = QueueDB.open(home.database)
    try:
        db.conn.execute(
            "INSERT INTO whatsapp_queue (recipient, message_type, body, batch_id)"
            " VALUES ('07 01 02 03 04', 'text', 'Bonjour', 'php-1'),"
            " ('2250501020304', 'text', 'Bonjour', 'php-1')"
        )
    finally:
        db.close()
    path = home.write(
        "clients.csv",
        "telephone;nom\n0701020304;Aya\n+225 05 01 02 03 04;Bakary\n0101020304;Zoé\n",
    )
    report = home.folder / "lignes.csv"

    done = home.run(
        "import", path, "--batch", "php-1", *TEXT, "--append", "--report", report
    )

    succeeded(done)
    assert home.recipients("php-1") == [
        "07 01 02 03 04",
        "2250501020304",
        "+2250101020304",
    ]
    assert re.search(
        r"^\s+2 numbers already in the batch, skipped$", done.stdout, re.MULTILINE
    )
    decisions = [
        line.split(";")[:3]
        for line in report.read_text(encoding="utf-8-sig").splitlines()[1:]
    ]
    assert decisions == [
        ["2", '"=""0701020304"""', "déjà dans le lot"],
        ["3", '"=""+225 05 01 02 03 04"""', "déjà dans le lot"],
    ]


# -- 14. a cancelled batch whose rows come back pending -----------------------------


def test_rows_back_to_pending_in_a_cancelled_batch_are_cancelled_again(
    home: Home,
) -> None:
    """A daemon stopping mid-send puts a row back to pending after the cancel:
    settle_cancelled cancels it."""
    path = home.write("clients.csv", "telephone;nom\n0701020304;Aya\n0501020304;Bak\n")
    succeeded(home.run("import", path, "--batch", "B-1", *TEXT))
    cancelled = home.run("batch", "cancel", "B-1")
    succeeded(cancelled)
    with contextlib.closing(sqlite3.connect(home.database)) as conn, conn:
        conn.execute(
            "UPDATE whatsapp_queue SET status = 'pending'"
            " WHERE id = (SELECT MIN(id) FROM whatsapp_queue)"
        )

    db = QueueDB.open(home.database)
    try:
        settled = batches.settle_cancelled(db, datetime.now(UTC))
    finally:
        db.close()

    assert settled == 1
    assert home.query("SELECT status FROM whatsapp_queue") == [
        ("cancelled",),
        ("cancelled",),
    ]


# -- 15. a title above the header ---------------------------------------------------


TITLE = "Liste des clients - décembre 2026"


def titled_csv(home: Home) -> Path:
    return home.write(
        "clients.csv", f"{TITLE}\n\ntelephone;nom\n0701020304;Aya\n0501020304;Bak\n"
    )


def titled_xlsx(home: Home) -> Path:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append([TITLE])
    sheet.append([])
    for row in (["telephone", "nom"], ["0701020304", "Aya"], ["0501020304", "Bak"]):
        sheet.append(row)
    return save(workbook, home.folder / "clients.xlsx")


@pytest.mark.parametrize("make", [titled_csv, titled_xlsx], ids=["csv", "xlsx"])
def test_a_title_line_above_the_header_is_skipped(
    home: Home, make: Callable[[Home], Path]
) -> None:
    """A title, a blank line, then the header: imported, header on line 3."""
    done = home.run("import", make(home), "--batch", "B-1", *TEXT)

    succeeded(done)
    assert "; phone column 'telephone', header on line 3)" in done.stdout
    assert home.bodies() == ["Bonjour Aya", "Bonjour Bak"]


def test_a_file_with_no_recognisable_header_names_the_first_lines(
    home: Home,
) -> None:
    """No header among the first lines: exit 65, the message says where to look."""
    path = home.write(
        "clients.csv", f"{TITLE}\n\nqui;quoi\n0701020304;Aya\n0501020304;Bak\n"
    )

    done = home.run("import", path, "--batch", "B-1", *TEXT)

    line = refusal(done, "no phone column")
    assert "title" in line and "first 5 lines" in line
    home.assert_nothing_left()


# -- second round ------------------------------------------------------------------


def test_xlsx_rows_with_an_empty_last_cell_are_not_taken_as_shifted(
    home: Home,
) -> None:
    """A workbook row stops at its last filled cell: the rest is empty, not lost."""
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["Téléphone", "Nom", "Remarque"])
    sheet.append(["0701020304", "Aya"])
    sheet.append(["0501020304", "Koffi", "vip"])
    path = save(workbook, home.folder / "clients.xlsx")

    done = home.run("import", path, "--batch", "B-1", "--template",
                    "rappel_paiement", "--param", "Nom")  # fmt: skip

    succeeded(done)
    assert home.recipients() == ["+2250701020304", "+2250501020304"]
    assert home.params() == [["Aya"], ["Koffi"]]


def test_a_column_named_by_digits_can_be_a_placeholder(home: Home) -> None:
    """``{2026}`` names the column 2026: filled, never a positional field."""
    path = home.write("n.csv", "telephone;2026;0\n0701020304;Aya;zéro\n")

    done = home.run("import", path, "--batch", "B-1", "--text", "x {2026} {0}")

    succeeded(done)
    assert home.bodies() == ["x Aya zéro"]


def test_a_batch_cannot_be_cancelled_while_an_import_fills_it(home: Home) -> None:
    """Cancel during an import is refused; the import ends whole."""
    path = home.big_csv()
    process = home.start("import", path, "--batch", "B-1", *TEXT)
    wait_for(lambda: importing(home), "the first chunk")

    cancel = home.run("batch", "cancel", "B-1")
    done = finish(process)

    refusal(cancel, "an import into it is under way", "wait for it to finish")
    succeeded(done)
    assert home.count() == BIG
    assert home.query("SELECT DISTINCT status FROM whatsapp_queue") == [("pending",)]


def test_a_killed_import_does_not_block_a_cancel(home: Home) -> None:
    """After kill -9 of an import, cancel removes its rows and cancels the rest."""
    home.run("enqueue", "--to", "0701020399", "--text", "avant", "--batch", "B-1")
    path = home.big_csv()
    process = home.start("import", path, "--batch", "B-1", "--append", *TEXT)
    wait_for(lambda: importing(home), "the first chunk")
    process.kill()
    finish(process)

    cancel = home.run("batch", "cancel", "B-1")

    succeeded(cancel)
    assert "cancelled: 1 pending messages" in cancel.stdout
    assert home.query("SELECT status FROM whatsapp_queue") == [("cancelled",)]


def test_a_line_without_end_is_refused_without_reading_it_whole(home: Home) -> None:
    """A 3 MB line: refused as not a spreadsheet, one line, exit 65."""
    path = home.write("long.csv", "telephone;nom\n0701020304;" + "x" * 3_000_000)

    done = home.run("import", path, "--batch", "B-1", *TEXT)

    refusal(done, "line 2: longer than 1,048,576 characters")


def test_a_value_beyond_the_field_limit_is_named_as_such(home: Home) -> None:
    """A 200,000-character value: the message says a value is too long."""
    path = home.write("wide.csv", "telephone;nom\n0701020304;" + "x" * 200_000 + "\n")

    done = home.run("import", path, "--batch", "B-1", *TEXT)

    refusal(done, "a value longer than 131,072 characters")


@pytest.mark.parametrize("title", ["Campagne WhatsApp décembre", "Contacts"])
def test_a_title_naming_whatsapp_or_contacts_is_still_a_title(
    home: Home, title: str
) -> None:
    """A one-cell title above the header is skipped even if it names a column."""
    path = home.write(
        "t.csv", f"{title};;\n\ntelephone;nom;montant\n0701020304;Aya;10 000\n"
    )

    done = home.run("import", path, "--batch", "B-1", *TEMPLATE)

    succeeded(done)
    assert "header on line 3" in done.stdout
    assert home.params() == [["Aya"]]


def test_a_deeply_nested_template_file_is_bad_input(home: Home) -> None:
    """JSON nested too deep to read: exit 65, one line, no traceback."""
    spec = home.write("t.json", '{"name": "a", "params": ' + "[" * 100_000 + "]}")
    path = home.write("c.csv", "telephone;nom\n0701020304;Aya\n")

    done = home.run("import", path, "--batch", "B-1", "--template-file", spec)

    refusal(done, "--template-file", "not JSON")


@pytest.mark.parametrize("declared", ['sep="', "sep=0", "sep=a"])
def test_a_sep_line_naming_no_separator_is_refused(home: Home, declared: str) -> None:
    """``sep=0`` would split numbers: refused, naming the line and the fix."""
    path = home.write("s.csv", f"{declared}\ntelephone0nom\n0701020304;Aya\n")

    done = home.run("import", path, "--batch", "B-1", *TEXT)

    refusal(done, "not a separator Excel writes", "sep=;")


@pytest.mark.parametrize("command", ["enqueue", "import"])
def test_a_send_time_on_a_day_that_does_not_exist_says_so(
    home: Home, command: str
) -> None:
    """30 February is written in the right form: the refusal names the date."""
    done = home.run(*with_at(home, command, "2027-02-30 08:00"))

    line = refusal(done, "--at '2027-02-30 08:00': no such date")
    assert line.endswith("check the day and month"), line
    home.assert_nothing_left()
