"""Monitoring: the status's first line, ``status --check`` and ``doctor``.

Every check runs the real command in a subprocess against a real SQLite
file; "running" is a real ``flock`` on the lock file held by this test (or
a real daemon in the test's loop), and the daemon's heartbeat is the row it
writes itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import plistlib
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, StartSandbox
from test_sending import (  # noqa: F401 (local_only is an autouse fixture)
    enqueue_texts,
    insert_raw,
    local_only,
    running_daemon,
)

from whatsapp_daemon import launchd, status
from whatsapp_daemon.lock import InstanceLock
from whatsapp_daemon.models import MessageType, NewMessage
from whatsapp_daemon.queue import HALT_KEY, HEARTBEAT_KEY, QueueDB
from whatsapp_daemon.settings import Settings
from whatsapp_daemon.times import fmt

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def settings(make_settings: Callable[..., Settings], tmp_path: Path) -> Settings:
    made = make_settings()
    QueueDB.open(made.database_path).close()
    return made


@pytest.fixture
def cli(tmp_path: Path, settings: Settings) -> Run:
    """Run ``whatsapp-daemon ARGS`` with the test's paths; ``env=`` adds keys."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("WHATSAPP_") and not k.lower().endswith("_proxy")
    }
    base.update(
        WHATSAPP_DATABASE_PATH=str(settings.database_path),
        WHATSAPP_LOG_PATH=str(settings.log_path),
        WHATSAPP_LOCK_PATH=str(settings.lock_path),
    )

    def run(*args: Any, env: dict[str, str] | None = None, cwd: Path = tmp_path) -> Any:
        return subprocess.run(
            [sys.executable, "-m", "whatsapp_daemon", *map(str, args)],
            cwd=cwd,
            env={**base, **(env or {})},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    return run


@pytest.fixture
def holding(settings: Settings) -> Iterator[InstanceLock]:
    """The instance lock, held as a running daemon holds it."""
    lock = InstanceLock(settings.lock_path)
    lock.acquire()
    yield lock
    lock.release()


def beat(settings: Settings, age: timedelta, **extra: Any) -> None:
    """Write the heartbeat a daemon writes every cycle, ``age`` ago."""
    at = datetime.now(UTC) - age
    value = {
        "pid": os.getpid(),
        "at": fmt(at),
        "started": fmt(at - timedelta(hours=2)),
        "poll_interval": 60,
        **extra,
    }
    db = QueueDB.open(settings.database_path)
    try:
        db.set_state(HEARTBEAT_KEY, json.dumps(value), datetime.now(UTC))
    finally:
        db.close()


def set_halt(settings: Settings, reason: str) -> None:
    db = QueueDB.open(settings.database_path)
    try:
        value = {"code": 190, "reason": reason, "since": "2026-12-04 08:00:00"}
        db.set_state(HALT_KEY, json.dumps(value), datetime.now(UTC))
    finally:
        db.close()


# -- the first line and --check ----------------------------------------------


def test_not_running_is_critical_in_the_first_line_and_exit_2(cli: Run) -> None:
    """A free lock: CRITICAL, why, and how to start it; --check exits 2."""
    shown = cli("status")
    check = cli("status", "--check")

    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[0].startswith("CRITICAL: not running (lock ")
    assert "make load" in shown.stdout.splitlines()[0]
    assert check.returncode == 2
    assert check.stdout == shown.stdout.splitlines()[0] + "\n"


def test_a_running_daemon_with_a_fresh_cycle_is_healthy(
    cli: Run, settings: Settings, holding: InstanceLock
) -> None:
    """HEALTHY with the PID, since when, and how long ago the last cycle was."""
    beat(settings, timedelta(seconds=5))

    check = cli("status", "--check")

    assert check.returncode == 0, check.stdout
    line = check.stdout.strip()
    assert line.startswith(f"HEALTHY: running, PID {os.getpid()} since ")
    assert "last cycle 5 s ago" in line or "last cycle 6 s ago" in line


def test_a_cycle_older_than_three_polls_is_late(
    cli: Run, settings: Settings, holding: InstanceLock
) -> None:
    """Running but silent for 10 minutes (poll 60 s): WARNING late, exit 1."""
    beat(settings, timedelta(minutes=10))

    check = cli("status", "--check")

    assert check.returncode == 1
    assert check.stdout.startswith("WARNING: late: running, PID ")
    assert "last cycle was 10 min ago" in check.stdout


def test_sending_stopped_is_critical_with_meta_s_reason(
    cli: Run, settings: Settings, holding: InstanceLock
) -> None:
    """An account-level stop (expired token) is CRITICAL even while running."""
    beat(settings, timedelta(seconds=1))
    set_halt(settings, "jeton d'accès expiré ou invalide")
    insert_raw(
        settings.database_path, recipient="+2250701020304", body="x", batch_id="noel"
    )

    check = cli("status", "--check")
    shown = cli("status").stdout
    as_json = json.loads(cli("status", "--json").stdout)

    assert check.returncode == 2
    assert check.stdout.startswith("CRITICAL: sending stopped since 2026-12-04")
    assert "jeton d'accès expiré" in check.stdout
    # Nothing leaves, so the batch has no finish time.
    assert "done about" not in shown
    assert "0% (nothing leaves: see the first line)" in shown
    assert [b["finish_estimate"] for b in as_json["batches"]] == [None]


def test_an_old_backlog_is_a_warning(
    cli: Run, settings: Settings, holding: InstanceLock
) -> None:
    """A due message older than WHATSAPP_CHECK_BACKLOG_MINUTES: WARNING, exit 1."""
    beat(settings, timedelta(seconds=1))
    old = fmt(datetime.now(UTC) - timedelta(minutes=45))
    row = insert_raw(
        settings.database_path, recipient="+2250701020304", body="x", scheduled_at=old
    )

    check = cli("status", "--check")
    relaxed = cli("status", "--check", env={"WHATSAPP_CHECK_BACKLOG_MINUTES": "60"})

    assert check.returncode == 1
    assert check.stdout.startswith(f"WARNING: backlog: message #{row} has waited 45")
    assert "(threshold 30 min)" in check.stdout
    assert relaxed.returncode == 0, relaxed.stdout


def fail_now(settings: Settings, count: int) -> None:
    """Insert ``count`` messages that failed just now."""
    now = fmt(datetime.now(UTC))
    for i in range(count):
        insert_raw(
            settings.database_path, recipient=f"+22507010203{i:02d}", body="x",
            status="failed", error_code=131026, updated_at=now,
        )  # fmt: skip


def test_many_recent_failures_are_a_warning(
    cli: Run, settings: Settings, holding: InstanceLock
) -> None:
    """More failures in the last hour than the threshold: WARNING, exit 1."""
    beat(settings, timedelta(seconds=1))
    fail_now(settings, 4)

    check = cli("status", "--check", env={"WHATSAPP_CHECK_FAILURES_PER_HOUR": "3"})

    assert check.returncode == 1
    assert check.stdout.startswith("WARNING: 4 messages failed in the last hour")


def test_every_warning_is_listed_and_the_first_line_counts_the_others(
    cli: Run, settings: Settings, holding: InstanceLock
) -> None:
    """A backlog and many failures: the first line gives the first and says
    one more; the status lists that one too."""
    beat(settings, timedelta(seconds=1))
    old = fmt(datetime.now(UTC) - timedelta(minutes=45))
    row = insert_raw(
        settings.database_path, recipient="+2250701020304", body="x", scheduled_at=old
    )
    fail_now(settings, 4)
    limits = {"WHATSAPP_CHECK_FAILURES_PER_HOUR": "3"}

    check = cli("status", "--check", env=limits)
    shown = cli("status", env=limits)
    as_json = json.loads(cli("status", "--json", env=limits).stdout)

    assert check.returncode == 1
    first = check.stdout.splitlines()[0]
    assert first.startswith(f"WARNING: backlog: message #{row} has waited 45")
    assert "(and 1 more warning: see whatsapp-daemon status); running" in first
    lines = shown.stdout.splitlines()
    # The two runs may be a second apart: the cycle's age may differ.
    assert lines[0].split("; running")[0] == first.split("; running")[0]
    at = lines.index("Warnings:")
    assert lines[at + 1].startswith("  - 4 messages failed in the last hour")
    assert len(as_json["health"]["warnings"]) == 2


def test_low_disk_space_is_a_warning(
    cli: Run, settings: Settings, holding: InstanceLock
) -> None:
    """Less free space than WHATSAPP_CHECK_DISK_MB where logs and queue live."""
    beat(settings, timedelta(seconds=1))

    check = cli("status", "--check", env={"WHATSAPP_CHECK_DISK_MB": str(10**12)})

    assert check.returncode == 1
    assert check.stdout.startswith("WARNING: disk low: ")
    assert "MB free for the logs" in check.stdout


@pytest.mark.parametrize("damage", ["garbage", "missing"])
def test_an_unreadable_database_is_critical(
    cli: Run, settings: Settings, damage: str
) -> None:
    """A database that is not SQLite, or absent, gives CRITICAL and exit 2."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{settings.database_path}{suffix}").unlink(missing_ok=True)
    if damage == "garbage":
        settings.database_path.write_bytes(b"not a database at all" * 100)

    check = cli("status", "--check")

    assert check.returncode == 2
    assert check.stdout.startswith("CRITICAL: database unreadable: ")
    assert len(check.stdout.splitlines()) == 1


def test_check_json_is_one_object_for_scripts(cli: Run) -> None:
    """``--check --json`` prints the verdict as JSON with the same exit status."""
    check = cli("status", "--check", "--json")

    assert check.returncode == 2
    assert json.loads(check.stdout) == {
        "health": "CRITICAL",
        "exit": 2,
        "reason": json.loads(check.stdout)["reason"],
    }


async def test_a_real_daemon_is_healthy_and_its_batches_show_progress(
    cli: Run, settings: Settings, start_sandbox: StartSandbox
) -> None:
    """Against a running daemon: HEALTHY, and the full status shows the rest."""
    sandbox = await start_sandbox()
    settings = settings.model_copy(update={"api_base_url": sandbox.url})
    enqueue_texts(settings.database_path, "+2250701020304", "+2250501020305")
    insert_raw(
        settings.database_path, recipient="+2250701020399", body="x",
        batch_id="noel", status="failed", error_code=131026,
        error_message="numéro injoignable sur WhatsApp — (#131026)",
    )  # fmt: skip
    later = fmt(datetime.now(UTC) + timedelta(hours=3))
    insert_raw(
        settings.database_path, recipient="+2250701020398", body="x",
        batch_id="noel", scheduled_at=later,
    )  # fmt: skip
    async with running_daemon(settings) as run:
        await run.until(lambda: cli("status", "--check").returncode == 0)
        shown = cli("status")

    lines = shown.stdout.splitlines()
    assert lines[0].startswith("HEALTHY: running, PID ")
    assert "Failures by error code:" in lines
    assert any("131026" in li and "non distribuable" in li for li in lines)
    bars = [li.strip() for li in lines if li.strip().startswith("[")]
    assert any(" 50%" in bar and "done about" in bar for bar in bars), lines
    assert f"Next scheduled message: #4, at {later} UTC" in lines
    assert any(li.startswith("Disk: ") and "MB free" in li for li in lines)


def test_status_into_a_closed_pipe_is_quiet(settings: Settings, cli: Run) -> None:
    """``status | head -1`` ends without a broken-pipe traceback."""
    env = {
        **os.environ,
        "WHATSAPP_DATABASE_PATH": str(settings.database_path),
        "WHATSAPP_LOCK_PATH": str(settings.lock_path),
    }
    done = subprocess.run(
        f"'{sys.executable}' -m whatsapp_daemon status | head -1",
        shell=True, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip

    assert done.stdout.startswith("CRITICAL: ")
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr


# -- doctor ----------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A checkout: the real virtual environment, the plist template, a .env."""
    folder = tmp_path / "projet"
    (folder / "launchd").mkdir(parents=True)
    (folder / "launchd" / launchd.TEMPLATE.name).write_bytes(
        (ROOT / launchd.TEMPLATE).read_bytes()
    )
    (folder / ".venv").symlink_to(Path(sys.prefix))
    (folder / "var" / "logs").mkdir(parents=True)
    return folder


def doctor(project: Path, home: Path, *args: Any) -> Any:
    """Run ``doctor`` in ``project`` as its user would: settings from .env only."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("WHATSAPP_") and not k.lower().endswith("_proxy")
    }
    env["HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "whatsapp_daemon", "doctor", *map(str, args)],
        cwd=project, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


TOKEN = "EAA" + "x" * 40  # made up: shaped like Meta's, valid nowhere


def test_doctor_passes_a_sound_installation_and_never_prints_the_token(
    cli: Run, project: Path, tmp_path: Path
) -> None:
    """Everything in place: exit 0, each check ok, no value of .env shown."""
    (project / ".env").write_text(
        f"WHATSAPP_ACCESS_TOKEN={TOKEN}\nWHATSAPP_PHONE_NUMBER_ID=106540352242922\n"
        f"WHATSAPP_LOCK_PATH={tmp_path / 'doctor.lock'}\n",
        encoding="utf-8",
    )
    agent = tmp_path / "agent.plist"
    agent.write_bytes(launchd.render(project, project / ".venv" / "bin" / "python"))

    done = doctor(project, tmp_path / "home", "--agent", agent)

    assert done.returncode == 0, done.stdout
    assert "no problem found" in done.stdout
    assert "[ok] agent:" in done.stdout and "runs this checkout" in done.stdout
    assert TOKEN not in done.stdout + done.stderr
    assert "106540352242922" not in done.stdout


def test_doctor_names_each_problem_with_its_fix(
    cli: Run, project: Path, tmp_path: Path
) -> None:
    """A misspelled key, a missing id, another checkout's agent: exit 1."""
    (project / ".env").write_text(
        f"WHATSAPP_ACCESS_TOKEN={TOKEN}\nWHATSAPP_RATE_PER_MNUTE=100\n"
        f"WHATSAPP_LOCK_PATH={tmp_path / 'doctor.lock'}\n",
        encoding="utf-8",
    )
    elsewhere = tmp_path / "ancien"
    agent = tmp_path / "agent.plist"
    agent.write_bytes(
        launchd.render(elsewhere, elsewhere / "python", ROOT / launchd.TEMPLATE)
    )

    done = doctor(project, tmp_path / "home", "--agent", agent)

    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert any(
        "WHATSAPP_RATE_PER_MNUTE is not a setting" in li
        and "did you mean WHATSAPP_RATE_PER_MINUTE?" in li
        for li in lines
    )
    assert any(
        li.startswith("[PROBLEM] phone number id: WHATSAPP_PHONE_NUMBER_ID is not set")
        for li in lines
    )
    assert any(
        li.startswith("[PROBLEM] agent:") and "make install-agent" in li for li in lines
    )
    assert lines[-1] == "3 problem(s) found"


@pytest.mark.parametrize("protected", ["Desktop", "Documents", "Downloads"])
def test_doctor_warns_of_a_project_in_a_folder_macos_protects(
    cli: Run, tmp_path: Path, protected: str
) -> None:
    """Under ~/Documents (etc.) a LaunchAgent cannot read without Full Disk Access."""
    home = tmp_path / "home"
    project = home / protected / "projet"
    project.mkdir(parents=True)
    (project / ".venv").symlink_to(Path(sys.prefix))

    done = doctor(project, home)

    [line] = [
        li for li in done.stdout.splitlines() if li.startswith("[PROBLEM] folder")
    ]
    assert f"under ~/{protected}" in line and "Full Disk Access" in line
    assert done.returncode == 1


def test_doctor_reports_a_lock_held_by_a_running_daemon(
    cli: Run, project: Path, tmp_path: Path
) -> None:
    """A held lock is a note naming the PID: unload or retire the cron first."""
    lock_path = tmp_path / "held.lock"
    (project / ".env").write_text(
        f"WHATSAPP_ACCESS_TOKEN={TOKEN}\nWHATSAPP_PHONE_NUMBER_ID=1065403522\n"
        f"WHATSAPP_LOCK_PATH={lock_path}\n",
        encoding="utf-8",
    )
    lock = InstanceLock(lock_path)
    lock.acquire()
    try:
        done = doctor(project, tmp_path / "home")
    finally:
        lock.release()

    [line] = [li for li in done.stdout.splitlines() if " lock: " in li]
    assert line.startswith("[note] lock:") and f"PID {os.getpid()}" in line


def test_make_doctor_runs_the_doctor() -> None:
    """The Makefile's doctor target calls the command."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "\ndoctor: install" in makefile
    assert "whatsapp-daemon doctor" in makefile
    plistlib.loads(launchd.render(ROOT, Path(sys.executable)))


# -- odd states, odd files ---------------------------------------------------------


def set_raw_state(settings: Settings, key: str, value: str) -> None:
    db = QueueDB.open(settings.database_path)
    try:
        db.set_state(key, value, datetime.now(UTC))
    finally:
        db.close()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (HEARTBEAT_KEY, "not json"),
        (HEARTBEAT_KEY, "[1, 2]"),
        (HEARTBEAT_KEY, '{"at": 123}'),
        (HEARTBEAT_KEY, '{"at": "2026-12-04 10:00:00", "poll_interval": "abc"}'),
        (HALT_KEY, '"x"'),
        (HALT_KEY, "true"),
    ],
)
def test_check_never_crashes_on_odd_stored_state(
    cli: Run, settings: Settings, holding: InstanceLock, key: str, value: str
) -> None:
    """Whatever the state table holds, --check gives one line, never exit 1 by
    a traceback."""
    set_raw_state(settings, key, value)

    check = cli("status", "--check")
    shown = cli("status")

    assert "Traceback" not in check.stderr + shown.stderr
    assert len(check.stdout.splitlines()) == 1
    assert check.returncode in (1, 2)
    assert check.stdout.startswith(("WARNING: ", "CRITICAL: "))
    assert shown.returncode == 0


def test_a_text_error_code_does_not_break_the_status(
    cli: Run, settings: Settings, holding: InstanceLock
) -> None:
    """A PHP table may store error codes as text: shown as they are."""
    beat(settings, timedelta(seconds=1))
    insert_raw(
        settings.database_path, recipient="+2250701020304", body="x",
        status="failed", error_code="abc", error_message="ancienne erreur",
    )  # fmt: skip

    shown = cli("status")

    assert shown.returncode == 0, shown.stderr
    assert any(
        "abc" in li and "ancienne erreur" in li for li in shown.stdout.splitlines()
    )


def test_check_answers_within_seconds_while_another_writer_holds_the_database(
    cli: Run, settings: Settings, holding: InstanceLock
) -> None:
    """An exclusive writer does not make the check wait a minute."""
    beat(settings, timedelta(seconds=1))
    writer = sqlite3.connect(settings.database_path, isolation_level=None)
    try:
        writer.execute("BEGIN EXCLUSIVE")
        started = time.monotonic()
        check = cli("status", "--check")
        took = time.monotonic() - started
    finally:
        writer.execute("ROLLBACK")
        writer.close()

    assert took < 15, took
    assert check.returncode in (0, 2), check.stdout
    assert len(check.stdout.splitlines()) == 1


def test_a_heartbeat_from_the_future_is_a_clock_warning(
    cli: Run, settings: Settings, holding: InstanceLock
) -> None:
    """A last cycle dated ahead of the clock means a wrong clock: WARNING."""
    beat(settings, -timedelta(hours=3))

    check = cli("status", "--check")

    assert check.returncode == 1
    assert check.stdout.startswith("WARNING: clock: the last cycle is dated ")


def test_rows_in_an_unknown_status_are_a_warning(
    cli: Run, settings: Settings, holding: InstanceLock
) -> None:
    """``Pending`` is not ``pending``: such rows are never sent, so say so;
    nor do they count as the progress of their batch."""
    beat(settings, timedelta(seconds=1))
    insert_raw(settings.database_path, recipient="+2250701020304", body="x",
               status="Pending")  # fmt: skip

    check = cli("status", "--check")
    [batch] = json.loads(cli("status", "--json").stdout)["batches"]

    assert check.returncode == 1
    assert "a status the daemon does not know" in check.stdout
    assert "'Pending' (1)" in check.stdout
    assert (batch["total"], batch["done"]) == (1, 0)


def test_the_token_never_shows_in_the_status_even_from_a_stored_reason(
    cli: Run, settings: Settings, holding: InstanceLock
) -> None:
    """A halt reason quoting the token: status, --json and --check mask it."""
    token = "EAA" + "s" * 30
    beat(settings, timedelta(seconds=1))
    set_halt(settings, f"Malformed access token {token}")
    env = {"WHATSAPP_ACCESS_TOKEN": token}

    outputs = [
        cli("status", env=env).stdout,
        cli("status", "--json", env=env).stdout,
        cli("status", "--check", env=env).stdout,
    ]

    for output in outputs:
        assert token not in output
        assert "[jeton masqué]" in output


@pytest.mark.parametrize("what", ["agent-dir", "agent-array", "lock-dir", "env-dir"])
def test_doctor_names_odd_files_without_a_traceback(
    project: Path, tmp_path: Path, what: str
) -> None:
    """A directory where a file should be, a plist that is an array: PROBLEM."""
    lock = tmp_path / "lock"
    env_file = project / ".env"
    if what == "env-dir":
        env_file.mkdir()
    else:
        env_file.write_text(
            f"WHATSAPP_ACCESS_TOKEN={TOKEN}\nWHATSAPP_PHONE_NUMBER_ID=1065403522\n"
            f"WHATSAPP_LOCK_PATH={lock}\n",
            encoding="utf-8",
        )
    agent = tmp_path / "agent.plist"
    if what == "agent-dir":
        agent.mkdir()
    elif what == "agent-array":
        agent.write_bytes(plistlib.dumps(["not", "an", "agent"]))
    if what == "lock-dir":
        lock.mkdir()

    done = doctor(project, tmp_path / "home", "--agent", agent)

    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 1, done.stdout
    topic = {"agent-dir": "agent", "agent-array": "agent", "lock-dir": "lock",
             "env-dir": ".env"}[what]  # fmt: skip
    assert any(li.startswith(f"[PROBLEM] {topic}:") for li in done.stdout.splitlines())


def test_a_lock_held_by_another_program_is_not_a_running_daemon(
    cli: Run, settings: Settings
) -> None:
    """The old cron holding the lock (an earlier daemon's PID still in the
    file): CRITICAL, not sending, and no dead PID named."""
    beat(settings, timedelta(seconds=1), pid=999_999_999)
    settings.lock_path.write_text("999999999\n")  # a PID no process has
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, sys, time\n"
         f"fd = os.open({str(settings.lock_path)!r}, os.O_RDWR)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\n"
         "print('locked', flush=True)\n"
         "time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        check = cli("status", "--check")
        run = cli("run", env={"WHATSAPP_ACCESS_TOKEN": TOKEN,
                              "WHATSAPP_PHONE_NUMBER_ID": "1065403522"})  # fmt: skip
    finally:
        holder.kill()
        holder.communicate()

    assert check.returncode == 2
    assert check.stdout.startswith("CRITICAL: not sending: the lock ")
    assert "held by an unknown process" in check.stdout
    assert "999999999" not in check.stdout
    assert run.returncode == 75
    assert "999999999" not in run.stderr


def test_messages_of_unknown_outcome_are_a_warning(
    cli: Run, settings: Settings, holding: InstanceLock
) -> None:
    """An ``unknown`` row needs a person: WARNING naming the command."""
    beat(settings, timedelta(seconds=1))
    insert_raw(settings.database_path, recipient="+2250701020304", body="x",
               status="unknown")  # fmt: skip

    check = cli("status", "--check")

    assert check.returncode == 1
    assert "1 messages with an unknown outcome need checking" in check.stdout
    assert "resolve" in check.stdout


def test_a_campaign_draining_at_the_rate_is_not_a_backlog(
    cli: Run, settings: Settings, holding: InstanceLock
) -> None:
    """Messages due 40 min ago behind 5,000 others (50 min at 100/min) are
    expected to wait: no backlog warning; with 100 only, there is one."""
    beat(settings, timedelta(seconds=1))
    old = fmt(datetime.now(UTC) - timedelta(minutes=40))
    db = QueueDB.open(settings.database_path)
    try:
        with db.write() as conn:
            conn.executemany(
                "INSERT INTO whatsapp_queue (recipient, body, scheduled_at)"
                " VALUES (?, 'x', ?)",
                [(f"+2250701{n:06d}", old) for n in range(5000)],
            )
    finally:
        db.close()
    env = {"WHATSAPP_RATE_PER_MINUTE": "100"}

    busy = cli("status", "--check", env=env)
    slow = cli("status", "--check", env={"WHATSAPP_RATE_PER_MINUTE": "10000"})

    assert busy.returncode == 0, busy.stdout
    assert slow.returncode == 1 and "backlog" in slow.stdout


def test_control_characters_from_the_database_never_reach_the_terminal(
    make_settings: Callable[..., Settings],
) -> None:
    """A batch name or Meta's error text with an escape sequence or a line
    break is shown escaped, on its own line."""
    settings = make_settings()
    db = QueueDB.open(settings.database_path)
    try:
        now = datetime.now(UTC)
        [row_id] = db.enqueue(
            [
                NewMessage(
                    "+2250701020304", MessageType.TEXT, "x", batch_id="lot\x1b[31mx"
                )
            ],
            now,
        )
        db.mark_failed(
            row_id, "titre\nfausse ligne\x1b[0m\u2028suite", now, code=999999
        )
    finally:
        db.close()

    text = status.render(status.gather(settings, datetime.now(UTC)))

    assert "\x1b" not in text and "fausse ligne" in text
    assert "\u2028" not in text and "\\u2028suite" in text
    assert "\u2028" not in status.to_json({"reason": "a\u2028b"})
    assert not any(line.startswith("fausse ligne") for line in text.splitlines())
    assert "lot\\x1b[31mx" in text


# -- values no status should trip on ---------------------------------------------


def test_a_batch_scheduled_at_the_end_of_time_has_no_finish_estimate(
    cli: Run, settings: Settings, holding: InstanceLock
) -> None:
    """Pending rows due on 9999-12-31: no finish time can be given, and the
    status, --json and --check answer without a crash."""
    beat(settings, timedelta(seconds=1))
    for i in range(5):  # more than a second's worth at the rate
        insert_raw(
            settings.database_path, recipient=f"+22507010203{i:02d}", body="x",
            batch_id="noel", scheduled_at="9999-12-31 23:59:59",
        )  # fmt: skip

    env = {"WHATSAPP_RATE_PER_MINUTE": "60"}
    shown = cli("status", env=env)
    as_json = cli("status", "--json", env=env)
    check = cli("status", "--check", env=env)

    assert shown.returncode == 0, shown.stderr
    assert as_json.returncode == 0, as_json.stderr
    assert "Traceback" not in shown.stderr + as_json.stderr + check.stderr
    assert "done about" not in shown.stdout
    assert [b["finish_estimate"] for b in json.loads(as_json.stdout)["batches"]] == [
        None
    ]
    assert check.returncode == 0, check.stdout
    assert "status failed" not in check.stdout


def test_blobs_in_the_queue_are_shown_as_text(
    cli: Run, settings: Settings, holding: InstanceLock
) -> None:
    """A BLOB batch id, error code, error message or time (the PHP side may
    bind bytes): the status, --json, --check and batch list show it as text."""
    beat(settings, timedelta(seconds=1))
    path = settings.database_path
    now = fmt(datetime.now(UTC)).encode()
    insert_raw(path, recipient="+2250701020304", body="x", batch_id=b"ABCD")
    insert_raw(
        path, recipient="+2250701020305", body="x", batch_id=b"ABCD",
        status="failed", error_code=b"\xff13", error_message=b"titre \xe9\x1b[2J",
        updated_at=now,
    )  # fmt: skip
    insert_raw(
        path, recipient="+2250701020306", body="x", status="sent", sent_at=now,
        updated_at=now,
    )  # fmt: skip

    shown = cli("status")
    as_json = cli("status", "--json")
    check = cli("status", "--check")
    listed = cli("batch", "list")
    listed_json = cli("batch", "list", "--json")

    for done in (shown, as_json, check, listed, listed_json):
        assert "Traceback" not in done.stderr, done.stderr
    assert shown.returncode == 0 and as_json.returncode == 0
    assert any(li.strip().startswith("ABCD ") for li in shown.stdout.splitlines())
    assert "\\xff13" in shown.stdout and "titre \\xe9\\x1b[2J" in shown.stdout
    assert "\x1b" not in shown.stdout
    report = json.loads(as_json.stdout)
    assert report["batches"][0]["batch"] == "ABCD"
    [failure] = report["failures"]
    assert failure["code"] == "\\xff13"
    assert failure["example"] == "titre \\xe9\x1b[2J"
    assert failure["last"] == now.decode()
    assert report["last_sent"]["sent_at"] == now.decode()
    assert check.returncode == 0, check.stdout
    assert listed.returncode == 0
    assert listed.stdout.splitlines()[1].startswith("ABCD ")
    assert listed_json.returncode == 0
    assert [b["batch"] for b in json.loads(listed_json.stdout)] == ["ABCD"]


@pytest.mark.parametrize("key", [HEARTBEAT_KEY, HALT_KEY])
def test_deeply_nested_json_in_the_state_reads_as_unreadable(
    cli: Run, settings: Settings, holding: InstanceLock, key: str
) -> None:
    """100,000 '[' in a state value is bad JSON like any other, not a crash."""
    set_raw_state(settings, key, "[" * 100_000)

    check = cli("status", "--check")
    shown = cli("status")
    as_json = cli("status", "--json")

    assert "Traceback" not in check.stderr + shown.stderr + as_json.stderr
    assert "status failed" not in check.stdout
    assert len(check.stdout.splitlines()) == 1
    assert check.returncode in (1, 2)
    assert shown.returncode == 0 and as_json.returncode == 0
    json.loads(as_json.stdout)


def hold_template(settings: Settings, reason: str) -> None:
    """Hold template ``promo`` outside batches, with one message waiting."""
    db = QueueDB.open(settings.database_path)
    try:
        db.hold_template(
            "promo", "fr", None, code=132001, reason=reason, now=datetime.now(UTC)
        )
    finally:
        db.close()
    insert_raw(
        settings.database_path, recipient="+2250701020304", message_type="template",
        template_name="promo", template_language="fr",
    )  # fmt: skip


@pytest.mark.parametrize("where", ["halt", "hold"])
def test_control_characters_never_reach_the_terminal_from_check_or_json(
    cli: Run, settings: Settings, holding: InstanceLock, where: str
) -> None:
    """Meta's title with ESC, C1 and DEL characters, as a stop reason or a
    held template's reason: --check escapes them, --json too (\\u escapes),
    and French accents stay readable."""
    beat(settings, timedelta(seconds=1))
    reason = "modèle refusé \x1b[2J\x9b31m\x85\x7f fin"
    if where == "halt":
        set_halt(settings, reason)
    else:
        hold_template(settings, reason)

    check = cli("status", "--check")
    check_json = cli("status", "--check", "--json")
    as_json = cli("status", "--json")

    assert check.returncode == (2 if where == "halt" else 1), check.stdout
    assert "modèle refusé \\x1b[2J\\x9b31m\\x85\\x7f fin" in check.stdout
    for output in (check.stdout, check_json.stdout, as_json.stdout):
        assert not any(
            (ord(char) < 0x20 and char != "\n") or 0x7F <= ord(char) <= 0x9F
            for char in output
        ), repr(output)
        assert "modèle refusé" in output
    assert reason in json.loads(check_json.stdout)["reason"]
    report = json.loads(as_json.stdout)
    if where == "halt":
        assert report["sending_stopped"]["reason"] == reason
    else:
        assert report["held_templates"][0]["reason"] == reason


def test_resolve_an_id_too_large_for_sqlite_is_one_line(cli: Run) -> None:
    """An id beyond SQLite's integers names the id, the value and the fix."""
    done = cli("resolve", "99999999999999999999999", "--as", "sent")

    assert done.returncode == 65, done.stderr
    assert "Traceback" not in done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith("whatsapp-daemon: invalid input: id 99999999999999999999999")
    assert "whatsapp_queue" in line


def test_a_content_file_name_with_control_characters_is_escaped(
    cli: Run, tmp_path: Path
) -> None:
    """``--content @FILE`` whose name holds a line break or ESC: the one-line
    error shows the name escaped, for a missing file and for bad JSON."""
    bad = tmp_path / "contenu\nfaux\x1b[2J.json"
    bad.write_text("{pas du json", encoding="utf-8")
    missing = tmp_path / "absent\n\x1b[31m.json"
    expected = {
        bad: "contenu\\nfaux\\x1b[2J.json is not JSON",
        missing: "absent\\n\\x1b[31m.json cannot be read",
    }

    for path, shown in expected.items():
        done = cli(
            "enqueue", "--to", "+2250701020304", "--kind", "location",
            "--content", f"@{path}",
        )  # fmt: skip

        assert done.returncode == 65, done.stderr
        [line] = done.stderr.splitlines()
        assert line.startswith("whatsapp-daemon: invalid input: --content: ")
        assert shown in line and "\x1b" not in line


@pytest.mark.parametrize(
    "odd",
    [
        pytest.param(
            "UPDATE whatsapp_queue SET status = 'sent',"
            " sent_at = '9999-12-31T23:59:59-05:00'",
            id="sent-after-the-calendar-in-utc",
        ),
        pytest.param(
            "INSERT INTO whatsapp_statuses (wamid, status, received_at)"
            " VALUES ('wamid.X', 'read', '0001-01-01T00:00:00+01:00')",
            id="notification-before-the-calendar-in-utc",
        ),
        pytest.param("beat:at", id="heartbeat-after-the-calendar-in-utc"),
        pytest.param("beat:poll", id="heartbeat-poll-of-320-digits"),
    ],
)
def test_times_and_numbers_beyond_range_never_crash_the_status(
    cli: Run, settings: Settings, holding: InstanceLock, odd: str
) -> None:
    """Values another program may write, whose UTC time or float does not
    exist: each is read as unreadable, and every form of status answers."""
    beat(settings, timedelta(seconds=1))
    insert_raw(settings.database_path, recipient="+2250701020304", body="x")
    if odd == "beat:at":
        beat(settings, timedelta(seconds=1), at="9999-12-31T23:59:59-01:00")
    elif odd == "beat:poll":
        beat(settings, timedelta(seconds=1), poll_interval=10**320)
    else:
        with contextlib.closing(sqlite3.connect(settings.database_path)) as conn:
            conn.execute(odd)
            conn.commit()

    for args in (["status"], ["status", "--json"], ["status", "--check"]):
        done = cli(*args)
        assert "Traceback" not in done.stderr, (args, done.stderr)
        assert "status failed" not in done.stdout, (args, done.stdout)
        assert done.returncode in (0, 1, 2), (args, done.stderr)


def test_a_status_stored_as_a_blob_is_a_status_the_daemon_does_not_know(
    cli: Run, settings: Settings, holding: InstanceLock
) -> None:
    """'pending' written as a BLOB is never due (the daemon compares text):
    it is not counted as pending, and the first line warns of it."""
    beat(settings, timedelta(seconds=1))
    row = insert_raw(settings.database_path, recipient="+2250701020304", body="x")
    with contextlib.closing(sqlite3.connect(settings.database_path)) as conn:
        conn.execute(
            "UPDATE whatsapp_queue SET status = CAST('pending' AS BLOB) WHERE id = ?",
            (row,),
        )
        conn.commit()

    check = cli("status", "--check")
    counts = json.loads(cli("status", "--json").stdout)["counts"]

    assert check.returncode == 1
    assert "status the daemon does not know" in check.stdout
    assert "'pending (blob)' (1)" in check.stdout
    assert (counts["pending"], counts["pending (blob)"]) == (0, 1)


def test_command_line_errors_escape_control_characters(cli: Run) -> None:
    """A file name holding an escape sequence is shown escaped, on one line."""
    done = cli("import", "f\x1b[2J\nx.csv", "--text", "Bonjour", "--batch", "b")

    assert done.returncode != 0
    [line] = done.stderr.splitlines()
    assert "\x1b" not in line and "f\\x1b[2J\\nx.csv" in line, line


def test_import_names_a_folder_or_a_missing_file(cli: Run, tmp_path: Path) -> None:
    """Each in one line, with the fix; exit 74, a file that cannot be opened."""
    folder = cli("import", tmp_path, "--text", "Bonjour", "--batch", "b")
    missing = cli(
        "import", tmp_path / "absent.csv", "--text", "Bonjour", "--batch", "b"
    )

    assert folder.stderr.strip().endswith(
        f"{tmp_path}: is a folder; give the file in it"
    )
    assert missing.stderr.strip().endswith("absent.csv: no such file; check the path")
    assert folder.returncode == missing.returncode == 74
