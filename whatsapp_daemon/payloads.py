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
    raises with the reason in French, for the row's ``error_message``,
    before any request is made: text not stored as UTF-8, NaN or Infinity
    and JSON that cannot be read are among those reasons.
    The row's id travels in ``biz_opaque_callback_data`` so that Meta's
    status notifications can be matched to the row.
    """
    try:
        raw = messages.stored_text(message.recipient, "recipient", numbers=True)
        recipient = phones.normalize(raw or "", region)
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
