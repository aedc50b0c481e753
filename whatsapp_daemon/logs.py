"""The log file, in the format of the PHP job it replaces (Monolog's line).

``[2025-01-26 10:00:01] whatsapp_queue.INFO: Message envoyé avec succès
{"messageId":"wamid.X","recipient":"+225…"}``: local time, channel
``whatsapp_queue``, the level, the message in French, then the context as
compact JSON (left out when empty). Rotation by newsyslog or by hand is
handled by reopening the file when its inode changes.
"""

from __future__ import annotations

import functools
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
            line += " " + json.dumps(
                context, ensure_ascii=False, separators=(",", ":"), default=_plain
            )
        if record.exc_info:
            line += " " + json.dumps(
                {"exception": self.formatException(record.exc_info)},
                ensure_ascii=False,
                separators=(",", ":"),
            )
        return redact(line, self.secrets, "***")

    def add_secret(self, secret: str) -> None:
        """Hide one more secret from now on (a token read again from .env)."""
        self.secrets = _secrets([*self.secrets, secret])

    def _context(self, record: logging.LogRecord) -> dict[str, Any]:
        context = dict(getattr(record, "context", None) or {})
        recipient = context.get("recipient")
        if isinstance(recipient, bytes):  # a BLOB column
            recipient = context["recipient"] = _plain(recipient)
        if self.mask_recipients and isinstance(recipient, str):
            context["recipient"] = mask(recipient)
        return context


def _plain(value: Any) -> str:
    """What JSON cannot write, as text: bytes from a BLOB column, say."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return repr(value)


def _secrets(secret: str | Sequence[str]) -> tuple[str, ...]:
    """The secrets long enough to mask, longest first (one may contain another)."""
    found = [secret] if isinstance(secret, str) else list(secret)
    kept = {s for s in found if len(s) >= MIN_SECRET_LENGTH}
    return tuple(sorted(kept, key=len, reverse=True))


# Any run of this many characters of a secret is masked: values are cut
# short for display (``messages.show``, a reason's first 200 characters),
# Meta may quote a token cut in its own way, and a token's beginning or
# end is as good as half of it. A secret shorter than this is masked whole.
SECRET_HEAD = 12


def redact(text: str, secrets: Sequence[str], replacement: str) -> str:
    """``text`` with every secret replaced, however much of it appears.

    Each secret is looked for as is and escaped as JSON writes it (once or
    twice: a ``"`` or ``\\`` in a token); every stretch of the text made
    of runs of :data:`SECRET_HEAD` characters found in one of those forms
    becomes one ``replacement``.
    """
    grams = _grams(tuple(secrets))
    if not grams or not text:
        return text
    hidden = bytearray(len(text))
    for size, found in grams.items():
        for at in range(len(text) - size + 1):
            if text[at : at + size] in found:
                hidden[at : at + size] = b"\x01" * size
    if not any(hidden):
        return text
    pieces = []
    at = 0
    while at < len(text):
        end = at
        while end < len(text) and hidden[end] == hidden[at]:
            end += 1
        pieces.append(replacement if hidden[at] else text[at:end])
        at = end
    return "".join(pieces)


@functools.lru_cache(maxsize=16)
def _grams(secrets: tuple[str, ...]) -> dict[int, frozenset[str]]:
    """Every run of SECRET_HEAD characters of each form of each secret."""
    runs: dict[int, set[str]] = {}
    for secret in secrets:
        once = json.dumps(secret, ensure_ascii=False)[1:-1]
        forms = {
            secret,
            once,
            json.dumps(secret)[1:-1],
            json.dumps(once, ensure_ascii=False)[1:-1],
        }
        for form in forms:
            size = min(SECRET_HEAD, len(form))
            if size:
                found = runs.setdefault(size, set())
                found.update(form[i : i + size] for i in range(len(form) - size + 1))
    return {size: frozenset(found) for size, found in runs.items()}


def hide(secret: str) -> None:
    """Mask ``secret`` in every line the log writes from now on."""
    if len(secret) < MIN_SECRET_LENGTH:
        return
    for handler in logger.handlers:
        if isinstance(handler.formatter, MonologFormatter):
            handler.formatter.add_secret(secret)


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
        # Text UTF-8 cannot carry (half an emoji) is escaped, not a lost line.
        logging.handlers.WatchedFileHandler(
            log_path, encoding="utf-8", errors="backslashreplace"
        )
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
