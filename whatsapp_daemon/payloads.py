"""Build the JSON body of ``POST /{version}/{phone-number-id}/messages``."""

from __future__ import annotations

from typing import Any

from . import messages, phones
from .errors import InvalidMessageError
from .models import QueuedMessage

TEXT_LIMIT = messages.TEXT_LIMIT  # characters in a text body, Meta's limit


def build(message: QueuedMessage, region: str | None) -> dict[str, Any]:
    """Return the request body for a queued row, or raise InvalidMessageError.

    The row goes through the same checks as a message queued from Python
    or the command line (:func:`messages.check`); a row that fails them
    raises with the reason in French, for the row's ``error_message``.
    The row's id travels in ``biz_opaque_callback_data`` so that Meta's
    status notifications can be matched to the row.
    """
    recipient = phones.normalize(str(message.recipient or ""), region)
    _check_encoding(message)
    try:
        built = messages.check(
            message.message_type,
            body=message.body,
            template_name=message.template_name,
            template_language=message.template_language,
            template_params=message.template_params,
            content=message.content,
            reply_to=message.reply_to,
        )
    except messages.Problem as problem:
        raise InvalidMessageError(problem.french) from None
    payload: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": recipient.removeprefix("+"),
        "biz_opaque_callback_data": str(message.id),
    }
    if built.reply_to is not None:
        payload["context"] = {"message_id": built.reply_to}
    payload["type"] = built.kind
    payload[built.kind] = built.value
    return payload


def _check_encoding(message: QueuedMessage) -> None:
    """Refuse text that was not stored as UTF-8 (read with U+FFFD)."""
    columns = (
        message.body,
        message.template_params,
        message.template_name,
        message.content,
        message.reply_to,
    )
    for value in columns:
        if isinstance(value, str) and "\ufffd" in value:
            raise InvalidMessageError(
                "texte mal encodé (pas en UTF-8) : corriger la ligne et la renvoyer"
            )
