"""``whatsapp-daemon doctor``: check an installation before loading the agent.

Each check gives one line: ``ok``, ``note`` (worth knowing) or ``PROBLEM``
with its fix. Settings are checked for presence and shape only: no value
of ``.env`` is ever printed.
"""

from __future__ import annotations

import difflib
import os
import plistlib
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from dotenv import dotenv_values

from . import launchd
from .errors import ConfigError
from .lock import holder_pid, is_locked
from .settings import ENV_FILE, ENV_PREFIX, Settings, env_key, load_settings

AGENT_PATH = Path.home() / "Library" / "LaunchAgents" / f"{launchd.LABEL}.plist"
# Folders macOS protects (TCC): a LaunchAgent cannot read them without
# Full Disk Access, and fails with "Operation not permitted".
PROTECTED = ("Desktop", "Documents", "Downloads", "Library/Mobile Documents")
VENV_PYTHON = Path(".venv") / "bin" / "python"


@dataclass(frozen=True)
class Finding:
    topic: str
    text: str
    fix: str = ""
    problem: bool = False
    note: bool = False

    def line(self) -> str:
        mark = "PROBLEM" if self.problem else "note" if self.note else "ok"
        fix = f"; fix: {self.fix}" if self.fix else ""
        return f"[{mark}] {self.topic}: {self.text}{fix}"


def examine(project: Path, *, agent: Path = AGENT_PATH) -> list[Finding]:
    """Run every check for the checkout in ``project``."""
    project = project.resolve()
    findings = [_python(project), _folder(project)]
    findings += _env_file(project)
    try:
        settings = load_settings(project / ENV_FILE)
    except ConfigError as exc:
        findings.append(
            Finding("settings", str(exc), "correct .env (see .env.example)", True)
        )
        settings = None
    if settings is not None:
        findings += _sending_keys(settings)
        findings += [
            _database(_absolute(project, settings.database_path)),
            _logs(_absolute(project, settings.log_path)),
            _lock(settings.lock_path),
        ]
    findings.append(_agent(project, agent))
    return findings


def _absolute(project: Path, path: Path) -> Path:
    return path if path.is_absolute() else project / path


# -- Python and the checkout ----------------------------------------------------


def _python(project: Path) -> Finding:
    python = project / VENV_PYTHON
    if not python.exists():
        return Finding(
            "python", f"{python} does not exist", "run make install", problem=True
        )
    try:
        done = subprocess.run(
            [str(python), "-c", "import sys, whatsapp_daemon; print(sys.version)"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except OSError as exc:
        return Finding(
            "python", f"{python} cannot run ({exc})", "make clean; make install", True
        )
    if done.returncode != 0:
        return Finding(
            "python",
            f"{python} cannot import whatsapp_daemon",
            "make clean; make install",
            problem=True,
        )
    version = done.stdout.split()[0] if done.stdout else "?"
    return Finding("python", f"{python} (Python {version}) runs the daemon")


def _folder(project: Path) -> Finding:
    home = Path.home().resolve()
    for name in PROTECTED:
        if project.is_relative_to(home / name):
            return Finding(
                "folder",
                f"{project} is under ~/{name}, which macOS keeps from a"
                " LaunchAgent without Full Disk Access",
                "move the project out (e.g. ~/whatsapp_daemon) and run make clean"
                f" install there, or give Full Disk Access to {project / VENV_PYTHON}"
                " in System Settings",
                problem=True,
            )
    if project.is_relative_to("/Volumes"):
        return Finding(
            "folder",
            f"{project} is on another volume, which a LaunchAgent may not read"
            " before login or without Full Disk Access",
            "keep the project on the startup disk, e.g. ~/whatsapp_daemon",
            problem=True,
        )
    return Finding("folder", f"{project} is readable by a LaunchAgent")


# -- settings --------------------------------------------------------------------


def _env_file(project: Path) -> list[Finding]:
    path = project / ENV_FILE
    if path.exists() and not path.is_file():
        return [
            Finding(
                ".env",
                f"{path} is not a file; the settings in it are not read",
                f"remove it, then cp .env.example {path}",
                problem=True,
            )
        ]
    if not path.exists():
        return [
            Finding(
                ".env",
                f"{path} does not exist",
                "cp .env.example .env, then fill WHATSAPP_ACCESS_TOKEN and"
                " WHATSAPP_PHONE_NUMBER_ID",
                problem=True,
            )
        ]
    try:
        keys = [k for k in dotenv_values(path) if k.startswith(ENV_PREFIX)]
    except UnicodeDecodeError:
        return [Finding(".env", "not UTF-8 text", "save it as UTF-8", problem=True)]
    known = [env_key(name) for name in Settings.model_fields]
    findings = [Finding(".env", f"{path} holds {len(keys)} WHATSAPP_ keys")]
    for key in keys:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]}?" if close else "see .env.example"
            findings.append(
                Finding(
                    ".env",
                    f"{key} is not a setting and is ignored",
                    hint,
                    problem=True,
                )
            )
    return findings


def _sending_keys(settings: Settings) -> list[Finding]:
    """The two keys needed to send: present, and shaped as Meta's are."""
    findings = []
    token = settings.access_token.get_secret_value() if settings.access_token else ""
    key = env_key("access_token")
    if not token:
        findings.append(
            Finding("token", f"{key} is not set", "paste it in .env", problem=True)
        )
    elif not token.startswith("EAA"):
        findings.append(
            Finding(
                "token",
                f"{key} is set ({len(token)} characters) but does not start"
                " with EAA like Meta's tokens",
                "fine for the sandbox; for Meta, paste the token again",
                note=True,
            )
        )
    else:
        findings.append(Finding("token", f"{key} is set ({len(token)} characters)"))
    number_id = settings.phone_number_id or ""
    key = env_key("phone_number_id")
    if not number_id:
        findings.append(
            Finding(
                "phone number id",
                f"{key} is not set",
                "copy it from WhatsApp Manager > Phone numbers",
                problem=True,
            )
        )
    elif not number_id.isdigit():
        findings.append(
            Finding(
                "phone number id",
                f"{key} is not only digits",
                "copy the Phone number ID (digits), not the phone number",
                problem=True,
            )
        )
    else:
        findings.append(Finding("phone number id", f"{key} is set"))
    return findings


# -- files -------------------------------------------------------------------------


def _database(path: Path) -> Finding:
    folder = path.parent
    if path.exists() and not path.is_file():
        return Finding(
            "database",
            f"{path} is not a file",
            "set WHATSAPP_DATABASE_PATH to the application's SQLite file",
            problem=True,
        )
    if not path.exists():
        if _writable_folder(folder):
            return Finding("database", f"{path} will be created at the first run")
        return Finding(
            "database",
            f"{folder} cannot be written",
            f"mkdir -p {folder} and check its owner",
            problem=True,
        )
    if not os.access(path, os.R_OK | os.W_OK) or not _writable_folder(folder):
        return Finding(
            "database",
            f"{path} (or its folder, for the -wal and -shm files) is not writable",
            f"chown $(whoami) {path} {folder}",
            problem=True,
        )
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            result = conn.execute("PRAGMA quick_check").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return Finding(
            "database", f"{path} cannot be read ({exc})", "restore a backup", True
        )
    if result is None or result[0] != "ok":
        return Finding(
            "database", f"{path} is damaged ({result})", "restore a backup", True
        )
    return Finding("database", f"{path} is readable and writable")


def _logs(path: Path) -> Finding:
    folder = path.parent
    if not folder.exists():
        return Finding(
            "logs", f"{folder} does not exist", f"mkdir -p {folder}", problem=True
        )
    if not _writable_folder(folder) or (path.exists() and not os.access(path, os.W_OK)):
        return Finding(
            "logs",
            f"{path} cannot be written",
            f"chown $(whoami) {folder} {path}",
            problem=True,
        )
    return Finding("logs", f"{path} can be written")


def _lock(path: Path) -> Finding:
    if path.exists() and not path.is_file():
        return Finding(
            "lock",
            f"{path} is not a file; the daemon cannot lock it",
            "remove it, or set WHATSAPP_LOCK_PATH to a file path",
            problem=True,
        )
    if not path.exists():
        if _writable_folder(path.parent):
            return Finding("lock", f"{path} is free")
        return Finding(
            "lock",
            f"{path.parent} cannot be written",
            "choose WHATSAPP_LOCK_PATH",
            True,
        )
    if is_locked(path):
        return Finding(
            "lock",
            f"{path} is held by PID {holder_pid(path)}: a daemon (or the old"
            " cron job) is running",
            "make unload, or remove the crontab line, before loading",
            note=True,
        )
    if not os.access(path, os.R_OK | os.W_OK):
        return Finding(
            "lock",
            f"{path} belongs to another user (uid {path.stat().st_uid})",
            f"remove it (sudo rm {path}): it is free, nothing holds it",
            problem=True,
        )
    return Finding("lock", f"{path} exists and is free (left by an earlier run)")


def _writable_folder(folder: Path) -> bool:
    return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)


# -- the LaunchAgent -------------------------------------------------------------


def _agent(project: Path, agent: Path) -> Finding:
    if sys.platform != "darwin" and not agent.exists():
        return Finding("agent", "not on macOS: no LaunchAgent to check", note=True)
    if agent.exists() and not agent.is_file():
        return Finding(
            "agent",
            f"{agent} is not a file",
            "remove it, then make install-agent",
            True,
        )
    if not agent.exists():
        return Finding(
            "agent",
            f"{agent} is not installed",
            "make install-agent, then make load",
            note=True,
        )
    try:
        installed = plistlib.loads(agent.read_bytes())
        if not isinstance(installed, dict):
            raise ConfigError("its top level is not a dictionary")
        launchd.validate(installed)
    except Exception as exc:  # plistlib fails in many ways on a damaged file
        return Finding(
            "agent",
            f"{agent} is not a valid agent ({type(exc).__name__}: {exc})",
            "make install-agent",
            problem=True,
        )
    expected = plistlib.loads(launchd.render(project, project / VENV_PYTHON))
    for key in ("ProgramArguments", "WorkingDirectory", "StandardOutPath"):
        if installed.get(key) != expected.get(key):
            return Finding(
                "agent",
                f"{agent} runs {installed.get(key)!r} as {key}, not this checkout's"
                f" {expected.get(key)!r}",
                "make unload; make install-agent; make load",
                problem=True,
            )
    return Finding("agent", f"{agent} runs this checkout")
