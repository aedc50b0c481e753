"""Exceptions raised by whatsapp_daemon.

The tree::

    WhatsAppDaemonError          base of everything raised on purpose
    ├── ConfigError              a setting is missing or has a bad value
    ├── InvalidMessageError      a message cannot be queued or sent as it is
    ├── AlreadyRunningError      another process holds the instance lock
    └── SendError                one HTTP attempt to the Graph API failed
        ├── GraphAPIError        Meta answered with an error body
        └── TransportError       no usable answer (connection, timeout)
"""

from __future__ import annotations

import json
from typing import Any


class WhatsAppDaemonError(Exception):
    """Base class of the package's exceptions."""


class ConfigError(WhatsAppDaemonError):
    """A setting is missing or invalid; the message names it and the fix."""


class InvalidMessageError(WhatsAppDaemonError):
    """A message is malformed: bad recipient, missing text, bad parameters."""


class AlreadyRunningError(WhatsAppDaemonError):
    """Another process holds the instance lock."""

    def __init__(self, path: str, holder_pid: int | None) -> None:
        self.path = path
        self.holder_pid = holder_pid
        who = f"PID {holder_pid}" if holder_pid else "an unknown process"
        super().__init__(f"the lock {path} is held by {who}")


class SendError(WhatsAppDaemonError):
    """One HTTP attempt to send a message failed."""


class GraphAPIError(SendError):
    """Meta's Graph API answered with an error body (or an unreadable one).

    Carries what an operator needs: Meta's code and subcode, the title and
    details, the trace id for a support ticket, and the HTTP status.
    """

    def __init__(
        self,
        *,
        http_status: int,
        code: int | None,
        subcode: int | None = None,
        title: str = "",
        details: str = "",
        fbtrace_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.http_status = http_status
        self.code = code
        self.subcode = subcode
        self.title = title
        self.details = details
        self.fbtrace_id = fbtrace_id
        self.retry_after = retry_after
        super().__init__(self.summary())

    def summary(self) -> str:
        """Return ``(#code) title: details`` in one line."""
        head = (
            f"(#{self.code})" if self.code is not None else f"HTTP {self.http_status}"
        )
        text = " ".join(part for part in (head, self.title) if part)
        return f"{text}: {self.details}" if self.details else text

    def as_json(self) -> str:
        """Return the error as the JSON stored with a failed message."""
        fields: dict[str, Any] = {
            "http_status": self.http_status,
            "code": self.code,
            "subcode": self.subcode,
            "title": self.title,
            "details": self.details,
            "fbtrace_id": self.fbtrace_id,
        }
        return json.dumps(fields, ensure_ascii=False)


class TransportError(SendError):
    """The request got no usable answer.

    ``maybe_delivered`` is true when the request may have reached Meta (a
    read timeout, a dropped connection after sending): resending could
    deliver the message twice.
    """

    def __init__(self, message: str, *, maybe_delivered: bool) -> None:
        self.maybe_delivered = maybe_delivered
        super().__init__(message)
