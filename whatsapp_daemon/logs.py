"""The log file, in the format of the PHP job it replaces (Monolog's line).

``[2025-01-26 10:00:01] whatsapp_queue.INFO: Message envoyé avec succès
{"messageId":"wamid.X","recipient":"+225…"}``: local time, channel
``whatsapp_queue``, the level, the message in French, then the context as
compact JSON (left out when empty). Rotation by newsyslog or by hand is
handled by reopening the file when its inode changes.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .phones import mask
from .settings import MIN_SECRET_LENGTH

CHANNEL = "whatsapp_queue"
logger = logging.getLogger(CHANNEL)


class MonologFormatter(logging.Formatter):
    """Formats records as Monolog lines; masks recipients if asked.

    ``secret`` (one string, or several: the access token, the app secret,
    the webhook's verify token) is replaced with ``***`` in the finished
    line, so that it is hidden even inside an exception's traceback. One
    shorter than MIN_SECRET_LENGTH is not: it would mask common words.
    """

    def __init__(
        self, *, mask_recipients: bool = True, secret: str | Sequence[str] = ""
    ) -> None:
        super().__init__()
        self.mask_recipients = mask_recipients
        self.secrets = _secrets(secret)

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        # One record, one line: a line break in a message (a bad row's
        # content, say) must not forge a second log line.
        message = " ".join(record.getMessage().splitlines())
        line = f"[{stamp}] {CHANNEL}.{record.levelname}: {message}"
        context = self._context(record)
        if context:
            line += " " + json.dumps(context, ensure_ascii=False, separators=(",", ":"))
        if record.exc_info:
            line += " " + json.dumps(
                {"exception": self.formatException(record.exc_info)},
                ensure_ascii=False,
                separators=(",", ":"),
            )
        for secret in self.secrets:
            line = line.replace(secret, "***")
        return line

    def _context(self, record: logging.LogRecord) -> dict[str, Any]:
        context = dict(getattr(record, "context", None) or {})
        recipient = context.get("recipient")
        if self.mask_recipients and isinstance(recipient, str):
            context["recipient"] = mask(recipient)
        return context


def _secrets(secret: str | Sequence[str]) -> tuple[str, ...]:
    """The secrets long enough to mask, longest first (one may contain another)."""
    found = [secret] if isinstance(secret, str) else list(secret)
    kept = {s for s in found if len(s) >= MIN_SECRET_LENGTH}
    return tuple(sorted(kept, key=len, reverse=True))


def ctx(**context: Any) -> dict[str, Mapping[str, Any]]:
    """Build the ``extra`` argument carrying a record's JSON context."""
    return {"context": context}


def setup(
    log_path: Path,
    *,
    level: str = "INFO",
    mask_recipients: bool = True,
    secret: str | Sequence[str] = "",
    echo: bool = False,
) -> None:
    """Send the channel's records to ``log_path`` (and stderr if ``echo``)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    formatter = MonologFormatter(mask_recipients=mask_recipients, secret=secret)
    handlers: list[logging.Handler] = [
        logging.handlers.WatchedFileHandler(log_path, encoding="utf-8")
    ]
    if echo:
        handlers.append(logging.StreamHandler(sys.stderr))
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    for handler in handlers:
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
