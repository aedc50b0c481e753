"""The systemd user unit: rendered, checked against the LaunchAgent, and replayed.

``systemd/whatsapp-daemon.service.in`` is rendered here by replacing
@PROJECT_DIR@ and @PYTHON@, as the install commands in its header do. Its
settings must say what the LaunchAgent says. systemd itself is not needed
(``systemd-analyze verify`` is used when present); its contract is replayed
by hand: the ExecStart argv in WorkingDirectory with only the Environment=
values plus a minimal PATH and HOME, output appended to the StandardOutput
file, KillSignal to stop, and an exit before TimeoutStopSec.
"""

from __future__ import annotations

import asyncio
import contextlib
import plistlib
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import PHONE_NUMBER_ID, ROOT, TOKEN, StartSandbox

from whatsapp_daemon import launchd
from whatsapp_daemon.api import WhatsAppQueue, text_message
from whatsapp_daemon.cli import Exit
from whatsapp_daemon.settings import Settings

TEMPLATE = Path("systemd") / "whatsapp-daemon.service.in"
UNIT_NAME = "whatsapp-daemon.service"
USER_PATH = "/usr/local/bin:/usr/bin:/bin"  # a user manager's minimal PATH
CRON_LOG = "var/logs/whatsapp_queue_cron.log"
RECIPIENT = "+2250701020304"

Unit = dict[str, list[tuple[str, str]]]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A checkout copy with the unit and LaunchAgent templates."""
    folder = tmp_path / "phone-numbers-seg" / "whatsapp_daemon"
    for template in (TEMPLATE, launchd.TEMPLATE):
        (folder / template).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / template, folder / template)
    return folder


def render(project: Path, python: Path | None = None) -> str:
    """The unit as ``whatsapp-daemon systemd-unit`` prints it for ``project``."""
    python = python or Path(sys.executable)
    done = subprocess.run(
        [sys.executable, "-m", "whatsapp_daemon", "systemd-unit",
         "--project-dir", str(project), "--python", str(python)],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return done.stdout


def test_unit_paths_are_escaped_and_unusable_ones_refused(tmp_path: Path) -> None:
    """A "%" is doubled for systemd; a path with a space is refused in one line."""
    odd = tmp_path / "100%" / "whatsapp_daemon"
    (odd / TEMPLATE).parent.mkdir(parents=True)
    shutil.copy(ROOT / TEMPLATE, odd / TEMPLATE)
    unit = parse(render(odd))
    [(_, folder)] = [(k, v) for k, v in unit["Service"] if k == "WorkingDirectory"]
    assert folder == str(odd.resolve()).replace("%", "%%")

    spaced = tmp_path / "mes projets"
    done = subprocess.run(
        [sys.executable, "-m", "whatsapp_daemon", "systemd-unit",
         "--project-dir", str(spaced)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 78
    [line] = done.stderr.splitlines()
    assert "mes projets" in line and "plain path" in line


def parse(text: str) -> Unit:
    """Read a unit file: each section's (key, value) pairs, in order.

    Comments (``#``, ``;``) and blank lines are skipped, a trailing
    backslash continues a line, and repeated keys are all kept.
    """
    unit: Unit = {}
    section: list[tuple[str, str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = (pending + raw.strip()) if pending else raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], [])
            continue
        key, sep, value = line.partition("=")
        assert section is not None and sep, f"not a setting: {line!r}"
        section.append((key.strip(), value.strip()))
    assert not pending, "the last line ends with a backslash"
    return unit


def one(unit: Unit, section: str, key: str) -> str:
    """The value of a key that must appear exactly once in ``section``."""
    values = [v for k, v in unit.get(section, []) if k == key]
    assert len(values) == 1, f"[{section}] {key}= appears {len(values)} times"
    return values[0]


def environment(unit: Unit) -> dict[str, str]:
    """The variables set by every Environment= line of [Service]."""
    variables: dict[str, str] = {}
    for key, value in unit["Service"]:
        if key == "Environment":
            for assignment in shlex.split(value):
                name, _, setting = assignment.partition("=")
                variables[name] = setting
    return variables


def agent_for(project: Path, python: Path | None = None) -> dict[str, Any]:
    """The LaunchAgent rendered for the same checkout and interpreter."""
    data = launchd.render(project, python or Path(sys.executable))
    agent: dict[str, Any] = plistlib.loads(data)
    return agent


def append_path(setting: str) -> Path:
    """The file of a ``StandardOutput=append:FILE`` setting."""
    kind, _, path = setting.partition(":")
    assert kind == "append", setting
    return Path(path)


async def until(probe: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``probe`` until it returns a truthy value."""
    deadline = time.monotonic() + timeout
    while not (value := probe()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)
    return value


def test_template_has_the_placeholders_and_the_install_commands() -> None:
    """The template names both placeholders and tells how to install and watch."""
    text = (ROOT / TEMPLATE).read_text(encoding="utf-8")
    assert "@PROJECT_DIR@" in text
    assert "@PYTHON@" in text
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    for command in (
        "systemctl --user daemon-reload",
        "systemctl --user enable --now whatsapp-daemon",
        'loginctl enable-linger "$USER"',
        "journalctl --user -u whatsapp-daemon",
    ):
        assert command in header
    assert f"~/.config/systemd/user/{UNIT_NAME}" in header
    assert "make install-unit" in header
    assert TEMPLATE.name.removesuffix(".in") == UNIT_NAME


def test_rendered_unit_says_what_the_launch_agent_says(project: Path) -> None:
    """Command, folder, environment, restart and stop match the LaunchAgent's."""
    python = project / ".venv" / "bin" / "python"
    unit = parse(render(project, python))
    for _, value in (pair for pairs in unit.values() for pair in pairs):
        assert "@PROJECT_DIR@" not in value and "@PYTHON@" not in value
    agent = agent_for(project, python)

    assert list(unit) == ["Unit", "Service", "Install"]
    assert shlex.split(one(unit, "Service", "ExecStart")) == agent["ProgramArguments"]
    assert agent["ProgramArguments"][0] == str(python)
    assert one(unit, "Service", "WorkingDirectory") == agent["WorkingDirectory"]
    assert Path(agent["WorkingDirectory"]) == project.resolve()
    assert environment(unit) == agent["EnvironmentVariables"]

    # Restart only after a failure, at most once per launchd throttle.
    assert agent["KeepAlive"] == {"SuccessfulExit": False}
    assert one(unit, "Service", "Restart") == "on-failure"
    assert int(one(unit, "Service", "RestartSec")) == agent["ThrottleInterval"] == 60

    # SIGTERM, then SIGKILL after the same timeout, above the longest grace.
    assert one(unit, "Service", "KillSignal") == "SIGTERM"
    stop_timeout = int(one(unit, "Service", "TimeoutStopSec"))
    assert stop_timeout == agent["ExitTimeOut"] == 30
    grace = Settings.model_fields["shutdown_grace"]
    [longest] = [c.le for c in grace.metadata if hasattr(c, "le")]
    assert isinstance(longest, int | float)
    assert grace.default < longest < stop_timeout

    for key, plist_key in (
        ("StandardOutput", "StandardOutPath"),
        ("StandardError", "StandardErrorPath"),
    ):
        path = append_path(one(unit, "Service", key))
        assert str(path) == agent[plist_key] == f"{project.resolve()}/{CRON_LOG}"
    assert one(unit, "Install", "WantedBy") == "default.target"


SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def verify(unit_file: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``systemd-analyze --user verify`` in a private runtime folder."""
    assert SYSTEMD_ANALYZE is not None
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return subprocess.run(
        [SYSTEMD_ANALYZE, "--user", "verify", str(unit_file)],
        env={"PATH": USER_PATH, "HOME": str(home), "XDG_RUNTIME_DIR": str(runtime)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verifies_the_rendered_unit(
    project: Path, tmp_path: Path
) -> None:
    """``systemd-analyze --user verify`` accepts the unit without a warning.

    It exits 0 even for an unknown key or a bad signal name, so its output
    must be empty; a deliberately broken copy shows the check would see one.
    """
    units = tmp_path / "units"
    units.mkdir()
    unit_file = units / UNIT_NAME
    unit_file.write_text(render(project), encoding="utf-8")

    result = verify(unit_file, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""

    unit_file.write_text(
        render(project).replace("KillSignal=SIGTERM", "KillSignal=SIGTERMINATE"),
        encoding="utf-8",
    )
    broken = verify(unit_file, tmp_path)
    assert "SIGTERMINATE" in broken.stdout + broken.stderr


def write_dotenv(project: Path, lock: Path, *lines: str) -> None:
    (project / ".env").write_text(
        "\n".join(
            [
                "APP_ENV=prod",
                f"WHATSAPP_PHONE_NUMBER_ID={PHONE_NUMBER_ID}",
                f"WHATSAPP_LOCK_PATH={lock}",
                "WHATSAPP_POLL_INTERVAL=0.2",
                *lines,
            ]
        )
        + "\n",
        encoding="utf-8",
    )


def start_as_systemd(unit: Unit, home: Path) -> subprocess.Popen[bytes]:
    """Start ExecStart as the user manager would (minus cgroups and journal)."""
    env = {**environment(unit), "PATH": USER_PATH, "HOME": str(home)}
    out = append_path(one(unit, "Service", "StandardOutput"))
    err = append_path(one(unit, "Service", "StandardError"))
    with out.open("ab") as stdout, err.open("ab") as stderr:
        return subprocess.Popen(
            shlex.split(one(unit, "Service", "ExecStart")),
            cwd=one(unit, "Service", "WorkingDirectory"),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
        )


async def test_daemon_started_as_systemd_does_sends_and_stops_cleanly(
    start_sandbox: StartSandbox, project: Path, tmp_path: Path
) -> None:
    """Run as the unit says, the daemon sends, then exits 0 on KillSignal in time.

    Exit 0 within TimeoutStopSec means systemd never needs SIGKILL and
    Restart=on-failure does not start it again.
    """
    sandbox = await start_sandbox()
    lock = tmp_path / "whatsapp_queue_processor.lock"
    write_dotenv(
        project,
        lock,
        f"WHATSAPP_ACCESS_TOKEN={TOKEN}",
        f"WHATSAPP_API_BASE_URL={sandbox.url}",
    )
    (project / "var" / "logs").mkdir(parents=True)  # as `make install` does
    database = project / "var" / "database.sqlite"
    [row_id] = WhatsAppQueue(database).add([text_message(RECIPIENT, "Bonjour")])
    unit = parse(render(project))
    cron_log = append_path(one(unit, "Service", "StandardOutput"))
    home = tmp_path / "home"
    home.mkdir()

    daemon = start_as_systemd(unit, home)
    try:

        def sent() -> bool:
            if daemon.poll() is not None:
                output = cron_log.read_text("utf-8")
                raise AssertionError(f"exited {daemon.returncode}:\n{output}")
            return _status(database, row_id) == "sent"

        await until(sent, 15, "the queued message to be sent")
        assert lock.read_text() == f"{daemon.pid}\n"
        requests = await sandbox.requests()
        assert [r["to"] for r in requests] == [RECIPIENT.removeprefix("+")]

        timeout = int(one(unit, "Service", "TimeoutStopSec"))
        daemon.send_signal(signal.Signals[one(unit, "Service", "KillSignal")])
        stopped_at = time.monotonic()
        await until(lambda: daemon.poll() is not None, timeout, "a clean exit")
        assert daemon.returncode == Exit.OK  # success: on-failure won't restart
        assert time.monotonic() - stopped_at < timeout
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(10)

    output = cron_log.read_text("utf-8")
    assert "Traceback" not in output
    assert TOKEN not in output
    daemon_log = (project / "var" / "logs" / "whatsapp_queue.log").read_text("utf-8")
    assert "Message envoyé avec succès" in daemon_log
    assert "Arrêt du processeur de queue WhatsApp" in daemon_log


async def test_configuration_error_is_a_failure_systemd_restarts(
    project: Path, tmp_path: Path
) -> None:
    """Without a token the daemon exits 78 and says why in the cron log.

    A non-zero exit is what Restart=on-failure restarts, RestartSec later,
    as launchd does with KeepAlive SuccessfulExit=false.
    """
    write_dotenv(project, tmp_path / "whatsapp_queue_processor.lock")
    (project / "var" / "logs").mkdir(parents=True)
    unit = parse(render(project))
    cron_log = append_path(one(unit, "Service", "StandardError"))
    cron_log.write_text("earlier output\n", encoding="utf-8")
    home = tmp_path / "home"
    home.mkdir()

    daemon = start_as_systemd(unit, home)
    try:
        await until(lambda: daemon.poll() is not None, 15, "the exit")
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(10)

    assert daemon.returncode == Exit.CONFIG != 0
    assert one(unit, "Service", "Restart") == "on-failure"
    lines = cron_log.read_text("utf-8").splitlines()
    assert lines[0] == "earlier output"  # appended, never truncated
    assert len(lines) == 2
    assert "WHATSAPP_ACCESS_TOKEN is missing" in lines[1]
    assert not (project / "var" / "database.sqlite").exists()


def _status(database: Path, row_id: int) -> str | None:
    with contextlib.closing(sqlite3.connect(database)) as conn:
        found = conn.execute(
            "SELECT status FROM whatsapp_queue WHERE id = ?", (row_id,)
        ).fetchone()
    return str(found[0]) if found else None
