"""The systemd user unit: render ``systemd/whatsapp-daemon.service.in`` for a
checkout, the Linux counterpart of the LaunchAgent (see :mod:`launchd`)."""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigError

UNIT = "whatsapp-daemon.service"
TEMPLATE = Path("systemd") / f"{UNIT}.in"
_UNSAFE = set(" \"'\\")


def render(project_dir: Path, python: Path, template: Path | None = None) -> str:
    """Fill the template with absolute paths, escaped as systemd reads them."""
    project_dir = project_dir.resolve()
    python = python.absolute()
    for path in (project_dir, python):
        if _UNSAFE & set(str(path)) or "\n" in str(path):
            raise ConfigError(
                f"{path}: a path with spaces, quotes or backslashes cannot go in"
                " the unit; move the project to a plain path such as"
                " ~/whatsapp_daemon"
            )
    source = (template or project_dir / TEMPLATE).read_text(encoding="utf-8")

    # In a unit file "%" starts a specifier and "$" a variable: double them.
    def escape(path: Path) -> str:
        return str(path).replace("%", "%%").replace("$", "$$")

    text = source.replace("@PROJECT_DIR@", escape(project_dir))
    return text.replace("@PYTHON@", escape(python))
