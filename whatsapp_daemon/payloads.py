"""Build the JSON body of ``POST /{version}/{phone-number-id}/messages``."""

from __future__ import annotations

import json
from typing import Any

from . import phones
from .errors import InvalidMessageError
from .models import MessageType, QueuedMessage

TEXT_LIMIT = 4096  # characters in a text body, Meta's limit


def build(message: QueuedMessage, region: str | None) -> dict[str, Any]:
    """Return the request body for a queued row, or raise InvalidMessageError.

    The row's id travels in ``biz_opaque_callback_data`` so that Meta's
    status notifications can be matched to the row.
    """
    recipient = phones.normalize(str(message.recipient or ""), region)
    _check_encoding(message)
    payload: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": recipient.removeprefix("+"),
        "biz_opaque_callback_data": str(message.id),
    }
    if message.message_type == MessageType.TEXT:
        payload.update(type="text", text=_text(message))
    elif message.message_type == MessageType.TEMPLATE:
        payload.update(type="template", template=_template(message))
    else:
        raise InvalidMessageError(
            f"message_type inconnu « {message.message_type} » (text ou template)"
        )
    return payload


def _check_encoding(message: QueuedMessage) -> None:
    """Refuse text that was not stored as UTF-8 (read with U+FFFD)."""
    for value in (message.body, message.template_params, message.template_name):
        if isinstance(value, str) and "\ufffd" in value:
            raise InvalidMessageError(
                "texte mal encodé (pas en UTF-8) : corriger la ligne et la renvoyer"
            )


def _text(message: QueuedMessage) -> dict[str, Any]:
    body = str(message.body or "").strip()
    if not body:
        raise InvalidMessageError("texte vide (colonne body)")
    if len(body) > TEXT_LIMIT:
        raise InvalidMessageError(f"texte de {len(body)} caractères (max {TEXT_LIMIT})")
    return {"body": body, "preview_url": False}


def _template(message: QueuedMessage) -> dict[str, Any]:
    if not message.template_name or not message.template_language:
        raise InvalidMessageError("modèle sans template_name ou template_language")
    template: dict[str, Any] = {
        "name": message.template_name,
        "language": {"code": message.template_language},
    }
    params = parse_params(message.template_params)
    if params:
        parameters = [{"type": "text", "text": value} for value in params]
        template["components"] = [{"type": "body", "parameters": parameters}]
    return template


def parse_params(raw: str | None) -> list[str]:
    """Read the ``template_params`` column: a JSON array of strings."""
    if raw is None or not raw.strip():
        return []
    try:
        values = json.loads(raw)
    except json.JSONDecodeError:
        raise InvalidMessageError("template_params n'est pas du JSON") from None
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise InvalidMessageError("template_params doit être un tableau JSON de textes")
    return values
