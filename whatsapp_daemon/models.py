"""The values passed between layers: message states and queue rows."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    """The ``status`` column of ``whatsapp_queue``, readable in ``sqlite3``."""

    PENDING = "pending"  # waiting for its time or for a retry
    PROCESSING = "processing"  # claimed by the running daemon
    SENT = "sent"  # accepted by Meta; ``wamid`` holds Meta's message id
    DELIVERED = "delivered"  # Meta's webhook: on the recipient's phone
    READ = "read"  # Meta's webhook: opened by the recipient (or played)
    FAILED = "failed"  # given up; ``error_code``/``error_message`` say why
    UNKNOWN = "unknown"  # the request may have reached Meta; never resent alone
    CANCELLED = "cancelled"  # its batch was cancelled before it was sent


class MessageType(StrEnum):
    """What a row sends, in the ``message_type`` column."""

    TEXT = "text"  # free-form text in ``body``
    TEMPLATE = "template"  # an approved template with ``template_params``
    IMAGE = "image"  # the media kinds: ``content`` holds the media object
    DOCUMENT = "document"
    AUDIO = "audio"
    VIDEO = "video"
    STICKER = "sticker"
    LOCATION = "location"
    CONTACTS = "contacts"
    INTERACTIVE = "interactive"  # reply buttons or a list
    REACTION = "reaction"


@dataclass(frozen=True)
class NewMessage:
    """A message to queue; ``recipient`` is already E.164 (``+225…``)."""

    recipient: str
    message_type: MessageType
    body: str | None = None
    template_name: str | None = None
    template_language: str | None = None
    template_params: tuple[str, ...] = ()
    batch_id: str | None = None
    scheduled_at: str | None = None  # UTC "YYYY-MM-DD HH:MM:SS"; None = now
    content: str | None = None  # JSON of the kind's object (see payloads)
    reply_to: str | None = None  # wamid of the message this one answers


@dataclass(frozen=True)
class QueuedMessage:
    """A row claimed for sending, as read from the table (not yet validated)."""

    id: int
    recipient: str
    message_type: str
    body: str | None
    template_name: str | None
    template_language: str | None
    template_params: str | None  # JSON array of strings, as stored
    batch_id: str | None
    attempts: int  # attempts already made before this claim
    content: str | None = None  # JSON of the kind's object, as stored
    reply_to: str | None = None  # wamid quoted as the message's context


@dataclass
class CycleReport:
    """What one drain cycle did, for its summary log line."""

    processed: int = 0  # sent, failed or of unknown outcome
    success: int = 0
    failed: int = 0
