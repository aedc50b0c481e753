"""The Graph API client: one ``httpx.AsyncClient``, errors turned into ours.

This is the one place where httpx exceptions become :class:`SendError`
subclasses, so that the rest of the daemon never imports httpx.
"""

from __future__ import annotations

import email.utils
import json
import time
from typing import Any

import httpx

from .errors import GraphAPIError, TransportError
from .messages import printable
from .settings import Settings

CONNECT_TIMEOUT = 10.0  # seconds to open a connection
USER_AGENT = "whatsapp-daemon"

# Failures that happen before the request can have reached Meta.
_NOT_SENT = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.LocalProtocolError,
)


def make_http_client(settings: Settings) -> httpx.AsyncClient:
    """Build the daemon's one HTTP client, with the token in its headers."""
    token = settings.access_token.get_secret_value() if settings.access_token else ""
    limits = httpx.Limits(
        max_connections=settings.concurrency,
        max_keepalive_connections=settings.concurrency,
        keepalive_expiry=30.0,
    )
    return httpx.AsyncClient(
        headers={"Authorization": f"Bearer {token}", "User-Agent": USER_AGENT},
        timeout=httpx.Timeout(settings.http_timeout, connect=CONNECT_TIMEOUT),
        limits=limits,
    )


class GraphClient:
    """Sends message bodies to ``POST /{version}/{phone-number-id}/messages``."""

    def __init__(self, client: httpx.AsyncClient, url: str) -> None:
        self._client = client
        self._url = url

    def set_token(self, token: str) -> None:
        """Use a new access token from the next request on."""
        self._client.headers["Authorization"] = f"Bearer {token}"

    async def send(self, payload: dict[str, Any]) -> str:
        """Send one message; return Meta's message id (``wamid``).

        Raises GraphAPIError when Meta answers with an error, TransportError
        when no usable answer came back.
        """
        try:
            response = await self._client.post(self._url, json=payload)
        except _NOT_SENT as exc:
            raise TransportError(_describe(exc), maybe_delivered=False) from exc
        except httpx.TransportError as exc:
            raise TransportError(_describe(exc), maybe_delivered=True) from exc
        if response.is_success:
            return _message_id(response)
        raise _graph_error(response)


def _describe(exc: httpx.TransportError) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _message_id(response: httpx.Response) -> str:
    """Read ``messages[0].id``; a 2xx without it is an unknown outcome."""
    try:
        return _storable(response.json()["messages"][0]["id"])
    except (ValueError, KeyError, IndexError, TypeError):
        raise TransportError(
            f"HTTP {response.status_code} without a message id",
            maybe_delivered=True,
        ) from None


def _graph_error(response: httpx.Response) -> GraphAPIError:
    """Build the error from Meta's body (``{"error": {...}}``) and headers."""
    try:
        error = response.json().get("error")
    except ValueError:
        error = None
    if not isinstance(error, dict):
        error = {}
    data = error.get("error_data")
    details = data.get("details", "") if isinstance(data, dict) else ""
    trace = error.get("fbtrace_id") or response.headers.get("x-fb-trace-id")
    return GraphAPIError(
        http_status=response.status_code,
        code=_int(error.get("code")),
        subcode=_int(error.get("error_subcode")),
        title=_title(_storable(error.get("message", ""))),
        details=_storable(details or error.get("error_user_msg", "")),
        fbtrace_id=_storable(trace) if trace else None,
        retry_after=_retry_after(response),
    )


def _storable(value: Any) -> str:
    """A text from Meta, with what UTF-8 cannot carry written as escapes.

    JSON may hold half an emoji (``"\\ud83d"``): stored or logged as is,
    it would fail the write and lose the error it describes.
    """
    return printable(str(value))


def _title(message: str) -> str:
    """Strip the ``(#130429) `` prefix Graph puts before the title."""
    if message.startswith("(#") and ") " in message:
        return message.split(") ", 1)[1]
    return message


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _retry_after(response: httpx.Response) -> float | None:
    """Read how long Meta asks us to wait, if it says.

    ``Retry-After`` (seconds or an HTTP date) first, then the minutes of
    ``estimated_time_to_regain_access`` in ``X-Business-Use-Case-Usage``.
    """
    value = response.headers.get("retry-after")
    if not value:
        return _regain_access(response.headers.get("x-business-use-case-usage"))
    if value.strip().isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _regain_access(usage: str | None) -> float | None:
    """Seconds from the usage header's ``estimated_time_to_regain_access``.

    The header maps a business id to a list of usage objects; the wait is
    given in minutes, and 0 means no wait.
    """
    if not usage:
        return None
    try:
        data = json.loads(usage)
    except ValueError:
        return None
    minutes = [
        entry.get("estimated_time_to_regain_access")
        for entries in (data.values() if isinstance(data, dict) else [])
        for entry in (entries if isinstance(entries, list) else [])
        if isinstance(entry, dict)
    ]
    waits = [float(m) for m in minutes if isinstance(m, int | float) and m > 0]
    return max(waits) * 60 if waits else None
