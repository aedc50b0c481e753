"""The LaunchAgent: the rendered plist, and the daemon started the way launchd does.

launchd itself is macOS-only; here its contract is replayed by hand: the
plist's ProgramArguments run in its WorkingDirectory with only its
EnvironmentVariables (plus launchd's minimal PATH and HOME), output appended
to StandardOutPath, and SIGTERM to stop, SIGKILL after ExitTimeOut.
"""

from __future__ import annotations

import asyncio
import contextlib
import plistlib
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
from whatsapp_daemon.errors import ConfigError
from whatsapp_daemon.settings import Settings

LAUNCHD_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"  # what launchd gives an agent
CRON_LOG = "var/logs/whatsapp_queue_cron.log"
RECIPIENT = "+2250701020304"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A checkout copy with the plist template, in a folder that needs escaping."""
    folder = tmp_path / "Mes projets & co" / "whatsapp"
    (folder / "launchd").mkdir(parents=True)
    shutil.copy(ROOT / launchd.TEMPLATE, folder / launchd.TEMPLATE)
    return folder


def render(project: Path, python: Path | None = None) -> dict[str, Any]:
    data = launchd.render(project, python or Path(sys.executable))
    agent: dict[str, Any] = plistlib.loads(data)
    return agent


async def until(probe: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``probe`` until it returns a truthy value."""
    deadline = time.monotonic() + timeout
    while not (value := probe()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)
    return value


def test_rendered_plist_has_the_keys_launchd_needs(project: Path) -> None:
    """The rendered agent has every key launchd reads, with the right types."""
    python = Path(sys.executable)
    agent = render(project, python)

    assert agent["Label"] == launchd.LABEL == "com.whatsapp-daemon"
    arguments = agent["ProgramArguments"]
    assert isinstance(arguments, list)
    assert all(isinstance(a, str) for a in arguments)
    assert arguments[0] == str(python.absolute())
    assert arguments[1:] == ["-m", "whatsapp_daemon", "run", "--wait-for-lock"]
    assert Path(arguments[0]).is_absolute()
    assert agent["WorkingDirectory"] == str(project.resolve())
    assert Path(agent["WorkingDirectory"]).is_absolute()
    assert agent["RunAtLoad"] is True
    assert agent["KeepAlive"] == {"SuccessfulExit": False}
    assert agent["KeepAlive"]["SuccessfulExit"] is False
    grace = Settings.model_fields["shutdown_grace"].default
    assert type(agent["ExitTimeOut"]) is int
    assert agent["ExitTimeOut"] > grace
    assert type(agent["ThrottleInterval"]) is int
    assert agent["ThrottleInterval"] > 0
    for key in ("StandardOutPath", "StandardErrorPath"):
        assert agent[key] == f"{project.resolve()}/{CRON_LOG}"
    assert all(isinstance(v, str) for v in agent["EnvironmentVariables"].values())


def test_validate_rejects_a_string_where_launchd_wants_a_bool(project: Path) -> None:
    """``<string>true</string>`` for RunAtLoad is refused, in render and validate."""
    template = project / launchd.TEMPLATE
    source = template.read_text(encoding="utf-8")
    assert "<key>RunAtLoad</key>\n    <true/>" in source
    broken = project / "broken.plist.in"
    broken.write_text(
        source.replace(
            "<key>RunAtLoad</key>\n    <true/>",
            "<key>RunAtLoad</key>\n    <string>true</string>",
        ),
        encoding="utf-8",
    )

    with pytest.raises(ConfigError, match="RunAtLoad"):
        launchd.render(project, Path(sys.executable), broken)
    agent = render(project)
    agent["RunAtLoad"] = "true"
    with pytest.raises(ConfigError, match="RunAtLoad"):
        launchd.validate(agent)


def test_validate_rejects_a_relative_interpreter(project: Path) -> None:
    """A ProgramArguments[0] that is not absolute is refused."""
    agent = render(project)
    agent["ProgramArguments"][0] = "python3"
    with pytest.raises(ConfigError, match="absolute"):
        launchd.validate(agent)


async def test_daemon_started_as_launchd_does_sends_and_stops_on_sigterm(
    start_sandbox: StartSandbox, project: Path, tmp_path: Path
) -> None:
    """Run as the agent says, the daemon sends from ``.env`` settings and exits 0."""
    sandbox = await start_sandbox()
    lock = tmp_path / "whatsapp_queue_processor.lock"
    (project / ".env").write_text(
        "\n".join(
            [
                "APP_ENV=prod",
                f"WHATSAPP_ACCESS_TOKEN={TOKEN}",
                f"WHATSAPP_PHONE_NUMBER_ID={PHONE_NUMBER_ID}",
                f"WHATSAPP_API_BASE_URL={sandbox.url}",
                f"WHATSAPP_LOCK_PATH={lock}",
                "WHATSAPP_POLL_INTERVAL=0.2",
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    (project / "var" / "logs").mkdir(parents=True)  # as `make install-agent` does
    database = project / "var" / "database.sqlite"
    [row_id] = WhatsAppQueue(database).add([text_message(RECIPIENT, "Bonjour")])

    agent = render(project, Path(sys.executable))
    home = tmp_path / "home"
    home.mkdir()
    env = {**agent["EnvironmentVariables"], "PATH": LAUNCHD_PATH, "HOME": str(home)}
    assert agent["StandardOutPath"] == agent["StandardErrorPath"]
    with open(agent["StandardOutPath"], "ab") as output:
        daemon = subprocess.Popen(
            agent["ProgramArguments"],
            cwd=agent["WorkingDirectory"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
        )
    try:

        def sent() -> bool:
            if daemon.poll() is not None:
                log = Path(agent["StandardOutPath"]).read_text("utf-8")
                raise AssertionError(f"exited {daemon.returncode}:\n{log}")
            return _status(database, row_id) == "sent"

        await until(sent, 15, "the queued message to be sent")
        assert lock.read_text() == f"{daemon.pid}\n"
        requests = await sandbox.requests()
        assert [r["to"] for r in requests] == [RECIPIENT.removeprefix("+")]

        daemon.send_signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        await until(
            lambda: daemon.poll() is not None, agent["ExitTimeOut"], "a clean exit"
        )
        assert daemon.returncode == Exit.OK
        assert time.monotonic() - stopped_at < agent["ExitTimeOut"]
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(10)

    cron_log = Path(agent["StandardOutPath"]).read_text("utf-8")
    assert "Traceback" not in cron_log
    assert TOKEN not in cron_log
    daemon_log = (project / "var" / "logs" / "whatsapp_queue.log").read_text("utf-8")
    assert "Message envoyé avec succès" in daemon_log
    assert "Arrêt du processeur de queue WhatsApp" in daemon_log


def _status(database: Path, row_id: int) -> str | None:
    with contextlib.closing(sqlite3.connect(database)) as conn:
        found = conn.execute(
            "SELECT status FROM whatsapp_queue WHERE id = ?", (row_id,)
        ).fetchone()
    return str(found[0]) if found else None


def test_plist_command_prints_a_valid_agent(project: Path, tmp_path: Path) -> None:
    """``whatsapp-daemon plist`` (make install-agent) prints an agent that validates."""
    python = project / ".venv" / "bin" / "python"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "whatsapp_daemon",
            "plist",
            "--project-dir",
            str(project),
            "--python",
            str(python),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert result.returncode == Exit.OK, result.stderr
    assert result.stderr == ""
    agent = plistlib.loads(result.stdout.encode("utf-8"))
    launchd.validate(agent)
    assert agent["ProgramArguments"][0] == str(python)
    assert agent["WorkingDirectory"] == str(project.resolve())
    assert agent["StandardOutPath"] == f"{project.resolve()}/{CRON_LOG}"
    assert result.stdout.encode("utf-8") == launchd.render(project, python)
    assert "&amp;" in result.stdout  # the folder's "&" is escaped in the XML
