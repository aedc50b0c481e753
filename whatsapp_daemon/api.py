"""Queueing messages from Python: validate, normalise, insert.

>>> from whatsapp_daemon import WhatsAppQueue
>>> queue = WhatsAppQueue("var/database.sqlite")
>>> queue.add_text("07 01 02 03 04", "Bonjour !")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from . import payloads, phones
from .errors import InvalidMessageError
from .models import MessageType, NewMessage
from .queue import QueueDB, fmt


def text_message(
    to: str,
    body: str,
    *,
    batch_id: str | None = None,
    region: str | None = "CI",
    at: datetime | None = None,
) -> NewMessage:
    """Validate a free-form text message; raise InvalidMessageError if bad."""
    recipient = _recipient(to, region)
    if not body.strip():
        raise InvalidMessageError("text: the message is empty; give some text")
    if len(body) > payloads.TEXT_LIMIT:
        raise InvalidMessageError(
            f"text: {len(body)} characters, more than Meta's {payloads.TEXT_LIMIT};"
            " shorten it"
        )
    return NewMessage(
        recipient,
        MessageType.TEXT,
        body=body,
        batch_id=batch_id,
        scheduled_at=fmt(at) if at else None,
    )


def template_message(
    to: str,
    name: str,
    language: str,
    params: Sequence[str] = (),
    *,
    batch_id: str | None = None,
    region: str | None = "CI",
    at: datetime | None = None,
) -> NewMessage:
    """Validate a message using an approved template and its body parameters."""
    recipient = _recipient(to, region)
    if not name.strip():
        raise InvalidMessageError("template: no template name; give the approved name")
    if not language.strip():
        raise InvalidMessageError("language: no language code; give one such as fr")
    for index, value in enumerate(params, start=1):
        if not value.strip():
            raise InvalidMessageError(
                f"param {index}: empty value; Meta refuses empty template parameters"
            )
    return NewMessage(
        recipient,
        MessageType.TEMPLATE,
        template_name=name.strip(),
        template_language=language.strip(),
        template_params=tuple(params),
        batch_id=batch_id,
        scheduled_at=fmt(at) if at else None,
    )


def _recipient(to: str, region: str | None) -> str:
    try:
        return phones.normalize(to, region)
    except InvalidMessageError as exc:
        raise InvalidMessageError(
            f'to: "{to}" is not a valid number ({exc}); write it as +225XXXXXXXXXX'
        ) from None


class WhatsAppQueue:
    """The queue table, for programs that add messages to it."""

    def __init__(self, path: Path | str, *, region: str | None = "CI") -> None:
        self.path = Path(path)
        self.region = region

    def add(self, messages: Iterable[NewMessage]) -> list[int]:
        """Insert messages in one transaction; return their row ids."""
        db = QueueDB.open(self.path)
        try:
            return db.enqueue(messages, datetime.now(UTC))
        finally:
            db.close()

    def add_text(self, to: str, body: str, *, batch_id: str | None = None) -> int:
        """Queue one text message; return its row id."""
        message = text_message(to, body, batch_id=batch_id, region=self.region)
        return self.add([message])[0]

    def add_template(
        self,
        to: str,
        name: str,
        language: str,
        params: Sequence[str] = (),
        *,
        batch_id: str | None = None,
    ) -> int:
        """Queue one template message; return its row id."""
        message = template_message(
            to, name, language, params, batch_id=batch_id, region=self.region
        )
        return self.add([message])[0]
