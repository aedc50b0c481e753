"""The French runbook, ``docs/exploitation-macos.md``, played command by command.

Every command of its ``bash`` blocks runs, in the order of the document, in
a copy of the project (the real virtual environment, its own ``.env``,
database, logs, lock and ``HOME``), with the daemon talking to the sandbox
on 127.0.0.1. A command must succeed; those that run until stopped
(``make run``, ``tail -f``) are stopped as a person would, with Ctrl-C. The
commands that exist only on macOS (``launchctl``, ``sudo``, ``crontab``,
``log show``, and ``make load``/``unload`` which call ``launchctl``) are
checked for shell syntax, and each of their blocks must be followed by the
output they show. So the document cannot drift from the code.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import PHONE_NUMBER_ID, ROOT

from whatsapp_daemon.api import WhatsAppQueue, text_message
from whatsapp_daemon.queue import QueueDB

RUNBOOK = ROOT / "docs" / "exploitation-macos.md"
TOKEN = "EAA" + "d" * 40  # made up, shaped like Meta's; the sandbox wants it
MACOS_ONLY = ("launchctl", "sudo", "crontab", "log", "make load", "make unload")
LONG_RUNNING = ("make run", "tail -f")
FENCE = re.compile(r"^( *)```(\w*)\n(.*?)^\1```", re.S | re.M)
# Files a checkout holds that the commands use.
PROJECT_FILES = (
    "Makefile",
    "pyproject.toml",
    "README.md",
    ".env.example",
    "launchd",
    "scripts",
    "systemd",
    "examples",
)


@dataclass(frozen=True)
class Block:
    language: str
    commands: tuple[str, ...]
    index: int  # position among the document's fenced blocks


def blocks(text: str) -> list[Block]:
    """The fenced blocks, with the commands of each (comments left out)."""
    found = []
    for index, (_, language, body) in enumerate(FENCE.findall(text)):
        commands = []
        pending = ""
        for raw in body.splitlines():
            line = pending + raw.strip()
            pending = ""
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            if line and not line.startswith("#"):
                commands.append(line)
        found.append(Block(language, tuple(commands), index))
    return found


def macos_only(command: str) -> bool:
    return command.startswith(MACOS_ONLY)


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[int]:
    """The sandbox Graph API in its own process, as ``make demo`` starts it."""
    port_file = tmp_path / "sandbox.port"
    process = subprocess.Popen(
        [
            sys.executable, "-m", "whatsapp_daemon", "sandbox", "--port", "0",
            "--port-file", str(port_file), "--access-token", TOKEN,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            assert time.monotonic() < deadline, "the sandbox did not start"
            assert process.poll() is None, "the sandbox exited"
            time.sleep(0.05)
        yield int(port_file.read_text())
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def project(tmp_path: Path, sandbox: int) -> Path:
    """A copy of the checkout, configured for the sandbox, with a history.

    The queue holds messages of every kind, one of them left ``processing``
    as a crash would leave it, so that the runbook's recovery shows up.
    """
    folder = tmp_path / "phone-numbers-seg" / "whatsapp_daemon"
    folder.mkdir(parents=True)
    for name in PROJECT_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, folder / name)
        else:
            shutil.copy2(source, folder / name)
    (folder / ".venv").symlink_to(Path(sys.prefix))
    (folder / ".env").write_text(
        f"WHATSAPP_ACCESS_TOKEN={TOKEN}\n"
        f"WHATSAPP_PHONE_NUMBER_ID={PHONE_NUMBER_ID}\n"
        f"WHATSAPP_API_BASE_URL=http://127.0.0.1:{sandbox}\n"
        f"WHATSAPP_LOCK_PATH={tmp_path / 'whatsapp_queue_processor.lock'}\n"
        "WHATSAPP_POLL_INTERVAL=1\n",
        encoding="utf-8",
    )
    logs = folder / "var" / "logs"
    logs.mkdir(parents=True)
    (logs / "whatsapp_queue_cron.log").touch()  # launchd creates it
    database = folder / "var" / "database.sqlite"
    messages = [
        text_message(f"+22507010203{n:02d}", f"Bonjour {n}", batch_id="relance")
        for n in range(5)
    ]
    [*_, left] = WhatsAppQueue(database).add(messages)
    db = QueueDB.open(database)
    try:
        db.conn.execute(
            "UPDATE whatsapp_queue SET status = 'processing', claimed_by = 'pid:1'"
            " WHERE id = ?",
            (left,),
        )
    finally:
        db.close()
    return folder


def environment(project: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("WHATSAPP_") and not k.lower().endswith("_proxy")
    }
    home = project.parent.parent / "home"
    home.mkdir(exist_ok=True)
    env.update(HOME=str(home), PATH=f"{shim_folder(project)}:{env['PATH']}")
    return env


def shim_folder(project: Path) -> Path:
    """Where a ``sqlite3`` stand-in goes if the machine has no sqlite3 shell.

    The stand-in runs the same SQL on the same file through Python's sqlite3
    module (the SQLite library itself) and prints rows the way the shell
    does, ``|``-separated. The real shell is used whenever it is installed.
    """
    folder = project.parent / "bin"
    if shutil.which("sqlite3") is None and not folder.exists():
        folder.mkdir()
        shim = folder / "sqlite3"
        shim.write_text(
            f"#!{sys.executable}\n"
            "import sqlite3, sys\n"
            "conn = sqlite3.connect(sys.argv[1])\n"
            "for row in conn.execute(sys.argv[2]):\n"
            "    print('|'.join('' if v is None else str(v) for v in row))\n",
            encoding="utf-8",
        )
        shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    return folder


def run_long(command: str, cwd: Path, env: dict[str, str]) -> None:
    """Start a command that runs until stopped; stop it as Ctrl-C does."""
    process = subprocess.Popen(
        ["bash", "-c", command],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    log = cwd / "var" / "logs" / "whatsapp_queue.log"
    deadline = time.monotonic() + 30
    if command == "make run":
        # Until the daemon has sent what was due, as the runbook expects.
        while "Traitement terminé" not in _text(log):
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline, "make run sent nothing"
            time.sleep(0.1)
    else:
        time.sleep(0.5)
        assert process.poll() is None, process.communicate()[0]
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: the whole foreground group
    output, _ = process.communicate(timeout=40)
    assert process.returncode in (0, 2, -signal.SIGINT, 128 + signal.SIGINT), output
    if command == "make run":
        assert "Arrêt du processeur de queue WhatsApp" in _text(log), output


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.exists() else ""


def test_every_command_of_the_runbook_works_as_written(project: Path) -> None:
    """Each runnable command exits 0 in a copy of the project, in order."""
    env = environment(project)
    ran = []
    for block in blocks(RUNBOOK.read_text(encoding="utf-8")):
        if block.language != "bash":
            continue
        for command in block.commands:
            if macos_only(command):
                continue
            if command.startswith(LONG_RUNNING):
                run_long(command, project, env)
            else:
                done = subprocess.run(
                    ["bash", "-c", command], cwd=project, env=env,
                    capture_output=True, text=True, timeout=120, check=False,
                )  # fmt: skip
                assert done.returncode == 0, (command, done.stdout, done.stderr)
                assert "Traceback" not in done.stderr, (command, done.stderr)
            ran.append(command)
    assert "make doctor" in ran and "scripts/rotate_whatsapp_logs.sh" in ran
    assert sum(command.startswith("sqlite3 ") for command in ran) >= 5
    # What the runbook promises after it all: recovery logged, nothing stuck.
    log = _text(project / "var" / "logs" / "whatsapp_queue.log")
    archives = list((project / "var" / "logs").glob("whatsapp_queue.log.*"))
    log += "".join(
        subprocess.run(
            ["gzip", "-dc", str(a)], capture_output=True, text=True, check=True
        ).stdout
        for a in archives
        if a.suffix == ".gz"
    )
    assert "Messages repris après un arrêt brutal" in log
    with sqlite3.connect(project / "var" / "database.sqlite") as conn:
        statuses = dict(
            conn.execute("SELECT status, COUNT(*) FROM whatsapp_queue GROUP BY status")
        )
    assert statuses == {"sent": 5}


def test_macos_only_commands_are_valid_shell_and_show_their_output() -> None:
    """``launchctl``, ``sudo``, ``crontab``, ``log``: syntax, then an output block."""
    found = blocks(RUNBOOK.read_text(encoding="utf-8"))
    checked = 0
    for position, block in enumerate(found):
        mac = [c for c in block.commands if macos_only(c)]
        if block.language != "bash" or not mac:
            continue
        for command in mac:
            syntax = subprocess.run(
                ["bash", "-n", "-c", command], capture_output=True, text=True
            )
            assert syntax.returncode == 0, (command, syntax.stderr)
            checked += 1
        following = found[position + 1] if position + 1 < len(found) else None
        assert following is not None and following.language == "text", mac
    assert checked >= 8


def test_the_runbook_covers_every_section_of_the_old_one() -> None:
    """Installation, manual test, agent, monitoring, format, SMS, errors,
    maintenance, rotation, troubleshooting and useful commands are all there."""
    text = RUNBOOK.read_text(encoding="utf-8")
    headings = re.findall(r"^#+ (.+)$", text, re.M)
    for wanted in (
        "Installation",
        "Tester manuellement",
        "Charger l'agent (au lieu du crontab)",
        "Supervision",
        "Format des logs",
        "Différences avec le cron SMS",
        "Gestion des erreurs",
        "Maintenance",
        "Rotation des logs",
        "Dépannage",
        "Messages bloqués en « processing »",
        "Commandes utiles",
    ):
        assert any(wanted in heading for heading in headings), wanted
    stuck = text.split("### Messages bloqués en « processing »")[1]
    assert stuck.lstrip().startswith("**Rien à faire.**")
