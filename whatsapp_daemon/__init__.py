"""whatsapp_daemon: drains a SQLite queue of WhatsApp messages through Meta's
Cloud API, as a long-running asyncio service kept alive by launchd."""

from __future__ import annotations

from .api import WhatsAppQueue, template_message, text_message
from .models import MessageType, NewMessage, Status
from .settings import Settings, load_settings

__all__ = [
    "MessageType",
    "NewMessage",
    "Settings",
    "Status",
    "WhatsAppQueue",
    "load_settings",
    "template_message",
    "text_message",
]
__version__ = "0.1.0"
