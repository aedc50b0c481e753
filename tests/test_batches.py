"""Batches as an operation: pause, resume, cancel, requeue, scheduled imports.

The batch commands and imports run as the real command (a subprocess); the
daemon runs in the test's event loop against the sandbox on 127.0.0.1, with
a clock the test can move forward when a message is scheduled later.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import StartSandbox, until
from test_sending import (  # noqa: F401 (local_only is an autouse fixture)
    insert_raw,
    local_only,
    log_lines,
    log_to,
    rows,
    running_daemon,
)

from whatsapp_daemon.api import WhatsAppQueue, text_message
from whatsapp_daemon.cli import Exit
from whatsapp_daemon.queue import QueueDB
from whatsapp_daemon.settings import Settings

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def command_env(settings: Settings) -> dict[str, str]:
    """The environment that points the command at the test's files."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("WHATSAPP_") and not k.lower().endswith("_proxy")
    }
    env["WHATSAPP_DATABASE_PATH"] = str(settings.database_path)
    env["WHATSAPP_LOG_PATH"] = str(settings.log_path)
    return env


@pytest.fixture
def cli(tmp_path: Path, command_env: dict[str, str]) -> Run:
    """Run ``whatsapp-daemon ARGS`` in ``tmp_path``; ``env=`` adds variables."""

    def run(*args: Any, env: dict[str, str] | None = None) -> Any:
        return subprocess.run(
            [sys.executable, "-m", "whatsapp_daemon", *map(str, args)],
            cwd=tmp_path,
            env={**command_env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    return run


class Clock:
    """Wall-clock time plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def queue_batch(settings: Settings, batch: str, *recipients: str) -> list[int]:
    messages = [
        text_message(r, f"Bonjour {i}", batch_id=batch)
        for i, r in enumerate(recipients)
    ]
    return WhatsAppQueue(settings.database_path).add(messages)


def numbers(count: int, start: int = 0) -> list[str]:
    return [f"+22507{start + i:08d}" for i in range(count)]


def statuses(settings: Settings) -> dict[int, str]:
    return {i: row["status"] for i, row in rows(settings.database_path).items()}


# -- pause, resume, cancel, requeue ------------------------------------------


async def test_a_paused_batch_waits_while_others_go_out_then_resumes(
    settings: Settings, start_sandbox: StartSandbox, cli: Run
) -> None:
    """Pausing holds one batch; the other is sent; resuming sends the held one."""
    sandbox = await start_sandbox()
    settings = settings.model_copy(update={"api_base_url": sandbox.url})
    held = queue_batch(settings, "noel", *numbers(3))
    other = queue_batch(settings, "relance", *numbers(2, start=10))

    paused = cli("batch", "pause", "noel")
    assert paused.returncode == Exit.OK, paused.stderr
    assert "batch noel paused: 3 unsent messages held" in paused.stdout

    async with running_daemon(settings) as run:
        await run.until(
            lambda: all(statuses(settings)[i] == "sent" for i in other),
            what="the active batch to be sent",
        )
        # Two more polls: the paused batch must still be untouched.
        beats = len(await sandbox.requests())
        await _polls(run, settings, 2)
        assert [statuses(settings)[i] for i in held] == ["pending"] * 3
        assert len(await sandbox.requests()) == beats
        table = cli("batch", "list")
        assert table.returncode == Exit.OK, table.stderr
        [line] = [li for li in table.stdout.splitlines() if li.startswith("noel")]
        assert line.split()[1:5] == ["paused", "3", "3", "0"]

        resumed = cli("batch", "resume", "noel")
        assert resumed.returncode == Exit.OK, resumed.stderr
        await run.until(
            lambda: all(statuses(settings)[i] == "sent" for i in held),
            what="the resumed batch to be sent",
        )

    logged = log_lines(settings.log_path)
    assert any("INFO: Lot mis en pause" in m and '"noel"' in m for m in logged)
    assert any("INFO: Lot repris" in m and '"noel"' in m for m in logged)


async def _polls(run: Any, settings: Settings, count: int) -> None:
    """Wait until the daemon has written ``count`` more heartbeats."""
    db = QueueDB.open(settings.database_path, migrate=False)
    try:
        for _ in range(count):
            before = db.get_state("heartbeat")
            await run.until(lambda b=before: db.get_state("heartbeat") != b)
    finally:
        db.close()


async def test_pausing_mid_batch_hands_back_claimed_messages_before_they_leave(
    make_settings: Callable[..., Settings], start_sandbox: StartSandbox, cli: Run
) -> None:
    """Messages already claimed go back to pending with no attempt spent."""
    sandbox = await start_sandbox()
    # Four sends a second: the pause lands while most of the batch is claimed.
    settings = make_settings(api_base_url=sandbox.url, rate_per_minute=240)
    ids = queue_batch(settings, "lent", *numbers(12))

    async with running_daemon(settings) as run:
        await run.until(
            lambda: sum(s == "sent" for s in statuses(settings).values()) >= 2,
            what="the first sends",
        )
        assert cli("batch", "pause", "lent").returncode == Exit.OK
        await run.until(
            lambda: "processing" not in statuses(settings).values(),
            what="the claimed messages to be handed back",
        )
        table = rows(settings.database_path)
        held = [i for i in ids if table[i]["status"] == "pending"]
        assert held, "the pause came after the whole batch was sent"
        assert all(table[i]["attempts"] == 0 for i in held)
        sent_before = len(await sandbox.requests())
        await _polls(run, settings, 2)
        assert len(await sandbox.requests()) == sent_before

        assert cli("batch", "resume", "lent").returncode == Exit.OK
        await run.until(
            lambda: set(statuses(settings).values()) == {"sent"},
            timeout=20,
            what="the whole batch to be sent",
        )
    sent_to = [r["to"] for r in await sandbox.requests()]
    assert sorted(sent_to) == sorted(n.lstrip("+") for n in numbers(12))


async def test_cancel_stops_pending_messages_and_keeps_the_others(
    make_settings: Callable[..., Settings], start_sandbox: StartSandbox, cli: Run
) -> None:
    """Cancel turns pending into cancelled (with a reason); sent and failed stay."""
    sandbox = await start_sandbox()
    settings = make_settings(api_base_url=sandbox.url)
    QueueDB.open(settings.database_path).close()
    sent = insert_raw(
        settings.database_path,
        recipient=numbers(1)[0],
        body="x",
        batch_id="promo",
        status="sent",
        wamid="wamid.X",
    )
    failed = insert_raw(
        settings.database_path,
        recipient=numbers(1, 1)[0],
        body="x",
        batch_id="promo",
        status="failed",
        error_message="numéro invalide",
    )
    pending = queue_batch(settings, "promo", *numbers(3, start=2))

    done = cli("batch", "cancel", "promo")

    assert done.returncode == Exit.OK, done.stderr
    assert "batch promo cancelled: 3 pending messages" in done.stdout
    table = rows(settings.database_path)
    assert [table[i]["status"] for i in pending] == ["cancelled"] * 3
    assert all("lot annulé" in table[i]["error_message"] for i in pending)
    assert (table[sent]["status"], table[failed]["status"]) == ("sent", "failed")
    async with running_daemon(settings) as run:
        await _polls(run, settings, 2)
    assert await sandbox.requests() == []
    refused = cli("batch", "resume", "promo")
    assert refused.returncode == Exit.DATA
    assert "batch 'promo' is cancelled" in refused.stderr


async def test_cancel_while_sending_cancels_claimed_messages_at_their_turn(
    make_settings: Callable[..., Settings], start_sandbox: StartSandbox, cli: Run
) -> None:
    """A message claimed before the cancel is cancelled, not sent, at its turn."""
    sandbox = await start_sandbox()
    settings = make_settings(api_base_url=sandbox.url, rate_per_minute=240)
    queue_batch(settings, "stop", *numbers(20))

    async with running_daemon(settings) as run:
        await run.until(
            lambda: "sent" in statuses(settings).values(), what="a first send"
        )
        assert cli("batch", "cancel", "stop").returncode == Exit.OK
        await run.until(
            lambda: (
                "processing" not in statuses(settings).values()
                and "pending" not in statuses(settings).values()
            ),
            what="every message to be settled",
        )
    final = statuses(settings).values()
    assert set(final) == {"sent", "cancelled"}
    assert sum(s == "sent" for s in final) == len(await sandbox.requests()) < 20


async def test_requeue_failed_sends_failed_messages_again_with_fresh_attempts(
    settings: Settings, start_sandbox: StartSandbox, cli: Run
) -> None:
    """requeue-failed resets attempts and errors; the daemon then sends them."""
    sandbox = await start_sandbox()
    settings = settings.model_copy(update={"api_base_url": sandbox.url})
    QueueDB.open(settings.database_path).close()
    failed = [
        insert_raw(
            settings.database_path,
            recipient=number,
            body="Bonjour",
            batch_id="retry",
            status="failed",
            attempts=3,
            error_code=131000,
            error_message="erreur temporaire chez Meta",
        )
        for number in numbers(2)
    ]

    done = cli("batch", "requeue-failed", "retry")

    assert done.returncode == Exit.OK, done.stderr
    assert "batch retry requeued: 2 failed messages" in done.stdout
    table = rows(settings.database_path)
    for i in failed:
        assert (table[i]["status"], table[i]["attempts"]) == ("pending", 0)
        assert table[i]["error_code"] is None and table[i]["error_message"] is None
    async with running_daemon(settings) as run:
        await run.until(lambda: set(statuses(settings).values()) == {"sent"})
    assert len(await sandbox.requests()) == 2


def test_batch_commands_name_an_unknown_batch(settings: Settings, cli: Run) -> None:
    """An unknown batch id exits 65 with one line naming it and the way out."""
    queue_batch(settings, "existe", *numbers(1))

    for action in ("pause", "resume", "cancel", "requeue-failed"):
        done = cli("batch", action, "inconnu")
        assert done.returncode == Exit.DATA, action
        [line] = done.stderr.splitlines()
        assert "batch 'inconnu' does not exist" in line
        assert "batch list" in line


def test_batch_list_json_counts_each_status(settings: Settings, cli: Run) -> None:
    """``batch list --json`` gives each batch's state, counts and next due time."""
    queue_batch(settings, "a", *numbers(2))
    QueueDB.open(settings.database_path).close()
    insert_raw(
        settings.database_path,
        recipient=numbers(1, 5)[0],
        body="x",
        batch_id="a",
        status="sent",
    )
    queue_batch(settings, "b", *numbers(1, 9))
    assert cli("batch", "pause", "b").returncode == Exit.OK

    done = cli("batch", "list", "--json")

    assert done.returncode == Exit.OK, done.stderr
    listed = {b["batch"]: b for b in json.loads(done.stdout)}
    assert listed["a"]["state"] == "active"
    assert listed["a"]["counts"] == {"pending": 2, "sent": 1}
    assert listed["a"]["next_due"] is not None
    assert (listed["b"]["state"], listed["b"]["total"]) == ("paused", 1)


# -- scheduling -----------------------------------------------------------------


CAMPAIGN = (
    "nom;téléphone;montant\r\n"
    "Koné Aïcha;07 01 02 03 04;15 000 FCFA\r\n"
    "Éric N'Guessan;+225 05 01 02 03 05;7 500 FCFA\r\n"
    "Bamba Mariam 🌺;00225 01 02 03 04 06;2 000 FCFA\r\n"
)


async def test_imported_campaign_is_sent_at_its_time_with_each_rows_parameters(
    settings: Settings,
    start_sandbox: StartSandbox,
    cli: Run,
    tmp_path: Path,
) -> None:
    """A scheduled import waits for its time, then each number gets its own row."""
    sandbox = await start_sandbox()
    settings = settings.model_copy(update={"api_base_url": sandbox.url})
    path = tmp_path / "noel.csv"
    path.write_text(CAMPAIGN, encoding="utf-8")
    at = datetime.now(UTC) + timedelta(hours=2)

    done = cli(
        "import",
        path,
        "--batch",
        "noel",
        "--template",
        "rappel_paiement",
        "--param",
        "nom",
        "--param",
        "montant",
        "--at",
        at.strftime("%Y-%m-%d %H:%M"),
    )

    assert done.returncode == Exit.OK, done.stderr
    due = at.replace(second=0, microsecond=0).strftime("%Y-%m-%d %H:%M:%S")
    assert {row["scheduled_at"] for row in rows(settings.database_path).values()} == {
        due
    }
    shown = cli("status")
    assert shown.returncode == Exit.OK, shown.stderr
    assert f"Next scheduled message: #1, at {due} UTC" in shown.stdout
    assert "Oldest due message: none" in shown.stdout
    [line] = [li for li in shown.stdout.splitlines() if li.strip().startswith("noel")]
    assert line.split()[1:4] == ["active", "3", "3"]
    clock = Clock()
    async with running_daemon(settings, clock=clock) as run:
        await _polls(run, settings, 2)
        assert await sandbox.requests() == []
        clock.offset = (at - datetime.now(UTC)).total_seconds() - 90
        await _polls(run, settings, 2)
        assert await sandbox.requests() == [], "sent before its time"
        clock.offset += 120
        await run.until(
            lambda: set(statuses(settings).values()) == {"sent"},
            what="the campaign to be sent once due",
        )
    sent = {
        r["to"]: r["body"]["template"]["components"][0]["parameters"]
        for r in await sandbox.requests()
    }
    assert {to: [p["text"] for p in params] for to, params in sent.items()} == {
        "2250701020304": ["Koné Aïcha", "15 000 FCFA"],
        "2250501020305": ["Éric N'Guessan", "7 500 FCFA"],
        "2250102030406": ["Bamba Mariam 🌺", "2 000 FCFA"],
    }


async def test_text_campaign_fills_each_rows_columns_into_the_text(
    settings: Settings, start_sandbox: StartSandbox, cli: Run, tmp_path: Path
) -> None:
    """--text with {column} placeholders sends each customer their own text."""
    sandbox = await start_sandbox()
    settings = settings.model_copy(update={"api_base_url": sandbox.url})
    path = tmp_path / "clients.csv"
    path.write_bytes(CAMPAIGN.encode("utf-8-sig"))

    done = cli(
        "import",
        path,
        "--batch",
        "texte",
        "--text",
        "Bonjour {nom}, votre solde est de {montant}.",
    )

    assert done.returncode == Exit.OK, done.stderr
    async with running_daemon(settings) as run:
        await run.until(lambda: set(statuses(settings).values()) == {"sent"})
    bodies = {r["to"]: r["body"]["text"]["body"] for r in await sandbox.requests()}
    assert bodies["2250501020305"] == (
        "Bonjour Éric N'Guessan, votre solde est de 7 500 FCFA."
    )
    assert bodies["2250102030406"].startswith("Bonjour Bamba Mariam 🌺,")


def _next(month: int, day: int | None = None) -> datetime:
    """The next date (within a year) of ``day``/``month``, or of the last
    Sunday of ``month`` when ``day`` is None (when European clocks change)."""
    today = datetime.now(UTC)
    for year in (today.year, today.year + 1):
        if day is None:
            last = max(
                d for d in range(25, 32) if datetime(year, month, d).weekday() == 6
            )
            candidate = datetime(year, month, last, tzinfo=UTC)
        else:
            candidate = datetime(year, month, day, tzinfo=UTC)
        if candidate > today + timedelta(days=1):
            return candidate
    raise AssertionError("unreachable")


WINTER, SUMMER = _next(1, 24), _next(7, 14)
CLOCKS_BACK, CLOCKS_FORWARD = _next(10), _next(3)


@pytest.mark.parametrize(
    ("zone", "at", "stored"),
    [
        pytest.param(
            "Africa/Abidjan",
            WINTER.strftime("%Y-%m-%d 08:00"),
            WINTER.strftime("%Y-%m-%d 08:00:00"),
            id="abidjan-is-utc",
        ),
        pytest.param(
            "Europe/Paris",
            WINTER.strftime("%Y-%m-%d 08:00"),
            WINTER.strftime("%Y-%m-%d 07:00:00"),
            id="paris-winter",
        ),
        pytest.param(
            "Europe/Paris",
            SUMMER.strftime("%Y-%m-%d 08:00"),
            SUMMER.strftime("%Y-%m-%d 06:00:00"),
            id="paris-summer",
        ),
        pytest.param(
            "Europe/Paris",
            CLOCKS_BACK.strftime("%Y-%m-%d 02:30"),
            CLOCKS_BACK.strftime("%Y-%m-%d 01:30:00"),
            id="paris-clocks-back-takes-the-later",
        ),
        pytest.param(
            "Europe/Paris",
            WINTER.strftime("%d/%m/%Y 08h00"),
            WINTER.strftime("%Y-%m-%d 07:00:00"),
            id="french-writing",
        ),
    ],
)
def test_at_is_read_in_the_configured_zone_and_stored_in_utc(
    settings: Settings, cli: Run, zone: str, at: str, stored: str
) -> None:
    """--at means the zone's wall clock whatever the host's own time zone is."""
    done = cli(
        "enqueue",
        "--to",
        "0701020304",
        "--text",
        "Joyeux Noël",
        "--at",
        at,
        env={"WHATSAPP_TIMEZONE": zone, "TZ": "America/New_York"},
    )

    assert done.returncode == Exit.OK, done.stderr
    [row] = rows(settings.database_path).values()
    assert row["scheduled_at"] == stored
    assert zone in done.stdout


@pytest.mark.parametrize(
    ("zone", "at", "says"),
    [
        pytest.param(
            "Europe/Paris",
            "2099-03-29 02:30",
            "does not exist",
            id="skipped-by-clocks-forward",
        ),
        pytest.param("Africa/Abidjan", "2020-01-01 08:00", "is past", id="past"),
        pytest.param("Africa/Abidjan", "demain 8h", "write the date", id="unreadable"),
    ],
)
def test_a_send_time_that_cannot_be_kept_is_refused(
    settings: Settings, cli: Run, zone: str, at: str, says: str
) -> None:
    """A time that does not exist, is past or is unreadable queues nothing."""
    done = cli(
        "enqueue",
        "--to",
        "0701020304",
        "--text",
        "Bonjour",
        "--at",
        at,
        env={"WHATSAPP_TIMEZONE": zone},
    )

    assert done.returncode == Exit.DATA
    [line] = done.stderr.splitlines()
    assert f"--at {at!r}" in line and says in line
    assert not settings.database_path.exists() or rows(settings.database_path) == {}


def test_an_unknown_time_zone_is_a_configuration_error(cli: Run) -> None:
    """WHATSAPP_TIMEZONE is checked: exit 78 naming the key and the fix."""
    done = cli(
        "enqueue",
        "--to",
        "0701020304",
        "--text",
        "Bonjour",
        env={"WHATSAPP_TIMEZONE": "Abidjan"},
    )

    assert done.returncode == Exit.CONFIG
    assert "WHATSAPP_TIMEZONE" in done.stderr and "Africa/Abidjan" in done.stderr


# -- large imports: chunks, interruption ---------------------------------------


def big_csv(path: Path, count: int) -> Path:
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("telephone;nom\r\n")
        for i in range(count):
            out.write(f"07{i:08d};Client {i}\r\n")
    return path


def start_import(cli_env: dict[str, str], cwd: Path, *args: Any) -> Any:
    return subprocess.Popen(
        [sys.executable, "-m", "whatsapp_daemon", "import", *map(str, args)],
        cwd=cwd,
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def imported_rows(settings: Settings) -> int:
    with contextlib.closing(sqlite3.connect(settings.database_path)) as conn:
        try:
            row = conn.execute(
                "SELECT count(*) FROM whatsapp_queue WHERE import_id IS NOT NULL"
            ).fetchone()
        except sqlite3.OperationalError:
            return 0
    return int(row[0])


async def test_rows_of_an_import_under_way_are_not_sent_and_writers_are_not_stalled(
    settings: Settings,
    start_sandbox: StartSandbox,
    command_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """While a large file is imported, nothing of it is due and others can write.

    A writer with a short busy timeout inserts throughout the import: chunked
    commits never hold the write lock long enough to make it fail.
    """
    sandbox = await start_sandbox()
    settings = settings.model_copy(update={"api_base_url": sandbox.url})
    QueueDB.open(settings.database_path).close()
    path = big_csv(tmp_path / "big.csv", 60_000)
    process = start_import(
        command_env, tmp_path, path, "--batch", "gros", "--text", "Bonjour {nom}"
    )
    writes = 0
    with contextlib.closing(
        sqlite3.connect(settings.database_path, timeout=2.0, isolation_level=None)
    ) as writer:
        await until(lambda: imported_rows(settings) > 0, 30, "the first chunk")
        while process.poll() is None:
            writer.execute("BEGIN")  # one snapshot for both reads
            state = writer.execute("SELECT state FROM whatsapp_imports").fetchone()
            due = QueueDB(writer).count_due(datetime.now(UTC))
            writer.execute("COMMIT")
            if state == ("importing",):
                assert due == writes, "rows of an unfinished import are due"
            writer.execute("BEGIN IMMEDIATE")
            writer.execute(
                "INSERT INTO whatsapp_queue (recipient, body, batch_id)"
                " VALUES ('+2250701020304', 'PHP', 'php')"
            )
            writer.execute("COMMIT")
            writes += 1
    _, err = process.communicate()
    assert process.returncode == Exit.OK, err
    assert writes > 3, "the import finished before the writer could test it"
    assert imported_rows(settings) == 60_000
    db = QueueDB.open(settings.database_path)
    try:
        assert db.count_due(datetime.now(UTC)) == 60_000 + writes
    finally:
        db.close()


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM], ids=["int", "term"])
def test_an_interrupted_import_leaves_nothing_behind(
    settings: Settings,
    command_env: dict[str, str],
    tmp_path: Path,
    how: signal.Signals,
) -> None:
    """Ctrl-C or SIGTERM in the middle removes every row already written."""
    QueueDB.open(settings.database_path).close()
    path = big_csv(tmp_path / "big.csv", 100_000)
    process = start_import(
        command_env, tmp_path, path, "--batch", "coupe", "--text", "Bonjour"
    )
    deadline = time.monotonic() + 30
    while imported_rows(settings) == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert imported_rows(settings) > 0, "no chunk was written"

    process.send_signal(how)
    _, err = process.communicate(timeout=60)

    assert process.returncode == Exit.INTERRUPTED, err
    assert "interrupted; nothing was changed" in err
    assert rows(settings.database_path) == {}
    with contextlib.closing(sqlite3.connect(settings.database_path)) as conn:
        assert conn.execute("SELECT count(*) FROM whatsapp_imports").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM whatsapp_batches").fetchone() == (0,)


async def test_an_import_killed_outright_is_never_sent_and_is_swept(
    settings: Settings,
    start_sandbox: StartSandbox,
    command_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """After kill -9 mid-import, the daemon sends none of it and removes it."""
    sandbox = await start_sandbox()
    settings = settings.model_copy(update={"api_base_url": sandbox.url})
    QueueDB.open(settings.database_path).close()
    path = big_csv(tmp_path / "big.csv", 100_000)
    process = start_import(
        command_env, tmp_path, path, "--batch", "tue", "--text", "Bonjour"
    )
    await until(lambda: imported_rows(settings) > 0, 30, "the first chunk")
    process.kill()
    process.communicate()
    assert imported_rows(settings) > 0

    with log_to(tmp_path / "daemon.log") as log:
        async with running_daemon(settings) as run:
            await run.until(
                lambda: imported_rows(settings) == 0,
                what="the abandoned import's rows",
            )
    assert await sandbox.requests() == []
    assert any("Import interrompu retiré" in m for m in log_lines(log))
