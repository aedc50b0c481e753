"""The LaunchAgent: render ``launchd/com.whatsapp-daemon.plist.in`` for a
checkout and check that the result is what launchd expects."""

from __future__ import annotations

import plistlib
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from .errors import ConfigError

LABEL = "com.whatsapp-daemon"
TEMPLATE = Path("launchd") / f"{LABEL}.plist.in"
# The webhook's agent (whatsapp-daemon webhook), rendered the same way.
WEBHOOK_LABEL = f"{LABEL}.webhook"
WEBHOOK_TEMPLATE = Path("launchd") / f"{WEBHOOK_LABEL}.plist.in"

# Keys of the agent and the type launchd requires for each.
REQUIRED: dict[str, type | tuple[type, ...]] = {
    "Label": str,
    "ProgramArguments": list,
    "WorkingDirectory": str,
    "EnvironmentVariables": dict,
    "RunAtLoad": bool,
    "KeepAlive": (bool, dict),
    "ThrottleInterval": int,
    "ExitTimeOut": int,
    "StandardOutPath": str,
    "StandardErrorPath": str,
}


def render(project_dir: Path, python: Path, template: Path | None = None) -> bytes:
    """Fill the template with absolute paths and validate the result."""
    project_dir = project_dir.resolve()
    source = (template or project_dir / TEMPLATE).read_text(encoding="utf-8")
    text = source.replace("@PROJECT_DIR@", escape(str(project_dir)))
    text = text.replace("@PYTHON@", escape(str(python.absolute())))
    data = text.encode("utf-8")
    validate(plistlib.loads(data))
    return data


def validate(agent: dict[str, Any]) -> None:
    """Raise ConfigError unless every key launchd needs has the right type."""
    for key, kind in REQUIRED.items():
        value = agent.get(key)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(f"plist key {key} is missing or has the wrong type")
    arguments = agent["ProgramArguments"]
    if not arguments or not all(isinstance(a, str) for a in arguments):
        raise ConfigError("plist ProgramArguments must be a list of strings")
    for key in ("WorkingDirectory", "StandardOutPath", "StandardErrorPath"):
        if not agent[key].startswith("/"):
            raise ConfigError(f"plist {key} must be an absolute path")
    if not arguments[0].startswith("/"):
        raise ConfigError(
            "plist ProgramArguments[0] must be an absolute interpreter path"
        )
    for key in ("SoftResourceLimits", "HardResourceLimits"):  # the webhook's
        limits = agent.get(key, {})
        if not isinstance(limits, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in limits.values()
        ):
            raise ConfigError(f"plist {key} must map limits to integers")
