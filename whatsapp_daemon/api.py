"""Queueing messages from Python: validate, normalise, insert.

>>> from whatsapp_daemon import WhatsAppQueue
>>> queue = WhatsAppQueue("var/database.sqlite")
>>> queue.add_text("07 01 02 03 04", "Bonjour !")  # doctest: +SKIP

Every function checks the message with :func:`messages.check`, the very
checks the daemon runs again before sending, and raises
:class:`InvalidMessageError` with one line naming the field, the value and
the fix; so does an argument of the wrong type (a number for a text, a
text for a list). Each takes ``reply_to`` (the wamid of a message this one
answers, sent as ``context.message_id``), ``batch_id`` and ``at`` (the send
time).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import batches, messages, phones
from .errors import InvalidMessageError
from .models import MessageType, NewMessage
from .queue import QueueDB
from .times import fmt

Region = str | None
FIRST_YEAR = 1000  # the first year of a send time the table can hold
# The kinds whose whole object is given as ``content`` (``--kind`` in the CLI).
CONTENT_KINDS = tuple(
    kind.value
    for kind in MessageType
    if kind not in (MessageType.TEXT, MessageType.TEMPLATE)
)


def message(
    to: str,
    kind: str,
    *,
    content: Any = None,
    body: str | None = None,
    template_name: str | None = None,
    template_language: str | None = None,
    params: Sequence[str] = (),
    reply_to: str | None = None,
    batch_id: str | None = None,
    region: Region = "CI",
    at: datetime | None = None,
) -> NewMessage:
    """Validate a message of any kind given as its columns.

    ``content`` is the kind's object as Meta expects it (see the README's
    *Message kinds*), as Python values; it is stored as JSON. Columns a
    text or a template does not use are ignored, as the daemon ignores them
    in a stored row, and not stored.
    """
    recipient = _recipient(to, region)
    scheduled_at = _send_time(at)
    if not isinstance(kind, str) or kind not in messages.KINDS:
        raise InvalidMessageError(
            f"message_type: {messages.show(kind)} is not a kind of message; write"
            f" one of {', '.join(messages.KINDS)}"
        )
    if kind == MessageType.TEXT:
        template_name = template_language = None
        params = ()
    elif kind == MessageType.TEMPLATE:
        body = None
    unused = f"None: a {kind} message does not use it"
    if kind == MessageType.TEXT:
        _optional_text(body, "text", "the message's text")
    else:
        _optional_text(body, "body", unused)
    template = kind == MessageType.TEMPLATE
    _optional_text(
        template_name, "template_name", "its name as approved" if template else unused
    )
    _optional_text(
        template_language,
        "template_language",
        "the code it was approved in, such as fr" if template else unused,
    )
    _optional_text(reply_to, "reply_to", "the wamid.… of the message, or None")
    _check_batch(batch_id)
    _check_params(params)
    stored = _json("content", content)
    template_params = _json("params", list(params)) if params else None
    messages.check(
        kind,
        body=body,
        template_name=template_name,
        template_language=template_language,
        template_params=template_params,
        content=stored,
        reply_to=reply_to,
    )
    return NewMessage(
        recipient,
        MessageType(kind),
        body=body,
        template_name=template_name.strip() if template_name else None,
        template_language=template_language.strip() if template_language else None,
        template_params=tuple(params),
        batch_id=batch_id,
        scheduled_at=scheduled_at,
        content=stored,
        reply_to=reply_to,
    )


def text_message(
    to: str,
    body: str,
    *,
    preview_url: bool = False,
    reply_to: str | None = None,
    batch_id: str | None = None,
    region: Region = "CI",
    at: datetime | None = None,
) -> NewMessage:
    """Validate a free-form text; ``preview_url`` shows a link's preview."""
    if not isinstance(preview_url, bool):
        raise InvalidMessageError(
            f"preview_url: {messages.show(preview_url)} is not True or False;"
            " give True to show a link's preview, or False"
        )
    return message(
        to,
        MessageType.TEXT,
        body=body,
        content={"preview_url": True} if preview_url else None,
        reply_to=reply_to,
        batch_id=batch_id,
        region=region,
        at=at,
    )


def template_message(
    to: str,
    name: str,
    language: str,
    params: Sequence[str] = (),
    *,
    components: Sequence[Mapping[str, Any]] | None = None,
    language_policy: str | None = None,
    reply_to: str | None = None,
    batch_id: str | None = None,
    region: Region = "CI",
    at: datetime | None = None,
) -> NewMessage:
    """Validate a message using an approved template.

    ``params`` are the body's text parameters in order; ``components``
    (Meta's list of header, body and button components) replaces them for
    any other parameter. ``language_policy`` is ``"deterministic"`` or None.
    """
    if components is not None and not _is_list(components):
        raise InvalidMessageError(
            f"components: {messages.show(components)} is not a list; give the"
            ' list of components, as [{"type": "body", "parameters": [...]}]'
        )
    content: Any = None if components is None else list(components)
    if language_policy is not None:
        content = {"language_policy": language_policy}
        if components is not None:
            content["components"] = components
    return message(
        to,
        MessageType.TEMPLATE,
        template_name=name,
        template_language=language,
        params=params,
        content=content,
        reply_to=reply_to,
        batch_id=batch_id,
        region=region,
        at=at,
    )


def media_message(
    to: str,
    kind: str,
    *,
    link: str | None = None,
    media_id: str | None = None,
    caption: str | None = None,
    filename: str | None = None,
    reply_to: str | None = None,
    batch_id: str | None = None,
    region: Region = "CI",
    at: datetime | None = None,
) -> NewMessage:
    """Validate an image, document, audio, video or sticker.

    Give the media by ``link`` (http or https) or by ``media_id`` (from
    Meta's media upload); ``caption`` only for an image, video or document,
    ``filename`` only for a document.
    """
    if not isinstance(kind, str) or kind not in messages.MEDIA_EXTRAS:
        raise InvalidMessageError(
            f"kind: {messages.show(kind)} is not a media kind; write one of"
            f" {', '.join(messages.MEDIA_EXTRAS)}"
        )
    fields = {"id": media_id, "link": link, "caption": caption, "filename": filename}
    content = {key: value for key, value in fields.items() if value is not None}
    return message(
        to,
        kind,
        content=content,
        reply_to=reply_to,
        batch_id=batch_id,
        region=region,
        at=at,
    )


def location_message(
    to: str,
    latitude: float,
    longitude: float,
    *,
    name: str | None = None,
    address: str | None = None,
    reply_to: str | None = None,
    batch_id: str | None = None,
    region: Region = "CI",
    at: datetime | None = None,
) -> NewMessage:
    """Validate a place: latitude -90..90, longitude -180..180, in degrees."""
    content: dict[str, Any] = {"latitude": latitude, "longitude": longitude}
    if name is not None:
        content["name"] = name
    if address is not None:
        content["address"] = address
    return message(
        to,
        MessageType.LOCATION,
        content=content,
        reply_to=reply_to,
        batch_id=batch_id,
        region=region,
        at=at,
    )


def contacts_message(
    to: str,
    contacts: Sequence[Mapping[str, Any]],
    *,
    reply_to: str | None = None,
    batch_id: str | None = None,
    region: Region = "CI",
    at: datetime | None = None,
) -> NewMessage:
    """Validate 1 to 5 contact cards, as Meta's contact objects."""
    if not _is_list(contacts):
        raise InvalidMessageError(
            f"contacts: {messages.show(contacts)} is not a list of contact cards;"
            ' give a list, as [{"name": {"formatted_name": "Aya Kouassi"}}]'
        )
    return message(
        to,
        MessageType.CONTACTS,
        content=list(contacts),
        reply_to=reply_to,
        batch_id=batch_id,
        region=region,
        at=at,
    )


def reaction_message(
    to: str,
    message_id: str,
    emoji: str,
    *,
    reply_to: str | None = None,
    batch_id: str | None = None,
    region: Region = "CI",
    at: datetime | None = None,
) -> NewMessage:
    """Validate a reaction to ``message_id`` (a wamid); ``""`` removes one."""
    return message(
        to,
        MessageType.REACTION,
        content={"message_id": message_id, "emoji": emoji},
        reply_to=reply_to,
        batch_id=batch_id,
        region=region,
        at=at,
    )


def interactive_message(
    to: str,
    interactive: Mapping[str, Any],
    *,
    reply_to: str | None = None,
    batch_id: str | None = None,
    region: Region = "CI",
    at: datetime | None = None,
) -> NewMessage:
    """Validate an interactive message given as Meta's ``interactive`` object.

    Its ``type`` is one of button, list, cta_url, flow, product,
    product_list, catalog_message, order_details and order_status.
    """
    if not isinstance(interactive, Mapping):
        raise InvalidMessageError(
            f"interactive: {messages.show(interactive)} is not an object; give"
            ' Meta\'s interactive object as a dict, as {"type": "button", ...}'
        )
    return message(
        to,
        MessageType.INTERACTIVE,
        content=dict(interactive),
        reply_to=reply_to,
        batch_id=batch_id,
        region=region,
        at=at,
    )


def buttons_message(
    to: str,
    body: str,
    buttons: Sequence[tuple[str, str]],
    *,
    header: str | Mapping[str, Any] | None = None,
    footer: str | None = None,
    reply_to: str | None = None,
    batch_id: str | None = None,
    region: Region = "CI",
    at: datetime | None = None,
) -> NewMessage:
    """Validate 1 to 3 reply buttons, given as ``(id, title)`` pairs.

    ``header`` is a text, or Meta's header object for an image, video or
    document (``{"type": "image", "image": {"link": "https://…"}}``).
    """
    if not _is_list(buttons):
        raise InvalidMessageError(
            f"buttons: {messages.show(buttons)} is not a list; give the buttons as"
            ' (id, title) pairs, as [("oui", "Oui"), ("non", "Non")]'
        )
    for number, pair in enumerate(buttons):
        if not _is_list(pair) or len(pair) != 2:
            raise InvalidMessageError(
                f"buttons[{number}]: {messages.show(pair)} is not an (id, title)"
                ' pair; give each button as ("oui", "Oui")'
            )
    action = {
        "buttons": [
            {"type": "reply", "reply": {"id": button_id, "title": title}}
            for button_id, title in buttons
        ]
    }
    return interactive_message(
        to,
        _interactive("button", body, action, header, footer),
        reply_to=reply_to,
        batch_id=batch_id,
        region=region,
        at=at,
    )


def list_message(
    to: str,
    body: str,
    button: str,
    sections: Sequence[Mapping[str, Any]],
    *,
    header: str | None = None,
    footer: str | None = None,
    reply_to: str | None = None,
    batch_id: str | None = None,
    region: Region = "CI",
    at: datetime | None = None,
) -> NewMessage:
    """Validate a list: ``button`` opens it; Meta's ``sections`` of ``rows``.

    A section is ``{"title": "…", "rows": [{"id": "…", "title": "…",
    "description": "…"}]}``; 10 rows at most in all.
    """
    if not _is_list(sections):
        raise InvalidMessageError(
            f"sections: {messages.show(sections)} is not a list; give a list of"
            ' sections, as [{"title": "…", "rows": [{"id": "…", "title": "…"}]}]'
        )
    for number, section in enumerate(sections):
        if not isinstance(section, Mapping):
            raise InvalidMessageError(
                f"sections[{number}]: {messages.show(section)} is not an object;"
                ' give each section as {"title": "…", "rows": [...]}'
            )
    action = {"button": button, "sections": [dict(s) for s in sections]}
    return interactive_message(
        to,
        _interactive("list", body, action, header, footer),
        reply_to=reply_to,
        batch_id=batch_id,
        region=region,
        at=at,
    )


def _interactive(
    kind: str,
    body: str,
    action: dict[str, Any],
    header: str | Mapping[str, Any] | None,
    footer: str | None,
) -> dict[str, Any]:
    interactive: dict[str, Any] = {"type": kind}
    if isinstance(header, str):
        interactive["header"] = {"type": "text", "text": header}
    elif isinstance(header, Mapping):
        interactive["header"] = dict(header)
    elif header is not None:
        raise InvalidMessageError(
            f"header: {messages.show(header)} is neither a text nor an object;"
            ' give a text, or Meta\'s header object, as {"type": "image",'
            ' "image": {"link": "https://…"}}'
        )
    interactive["body"] = {"text": body}
    if footer is not None:
        interactive["footer"] = {"text": footer}
    interactive["action"] = action
    return interactive


def _json(name: str, value: Any) -> str | None:
    """Write ``value`` as JSON for its column; None stays None."""
    if value is None:
        return None
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError) as exc:
        problem = messages.printable(str(exc)) if str(exc) else type(exc).__name__
        raise InvalidMessageError(
            f"{name}: {messages.show(value)} cannot be written as JSON ({problem});"
            " give only dicts, lists, strings, numbers, booleans and None"
        ) from None


def _recipient(to: str, region: Region) -> str:
    _check_region(region)
    if not isinstance(to, str):
        raise InvalidMessageError(
            f"to: {messages.show(to)} is not a text; write the number as a text,"
            ' with its country code, as "+2250701020304"'
        )
    try:
        return phones.normalize(to, region)
    except InvalidMessageError as exc:
        raise InvalidMessageError(
            f"to: {messages.show(to)} is not a valid number ({exc}); write it"
            " with its country code, as +2250701020304"
        ) from None


def _check_region(region: Region) -> None:
    if region is not None and not isinstance(region, str):
        raise InvalidMessageError(
            f"region: {messages.show(region)} is not a text; give a two-letter"
            ' country code, as "CI", or None to refuse numbers without a'
            " country code"
        )


def _send_time(at: datetime | None) -> str | None:
    """The table's UTC text for ``at``, a send time with its time zone."""
    if at is None:
        return None
    if not isinstance(at, datetime):
        raise InvalidMessageError(
            f"at: {messages.show(at)} is not a datetime; give an aware datetime,"
            " e.g. datetime(2026, 12, 24, 8, 0, tzinfo=ZoneInfo('Africa/Abidjan'))"
        )
    if at.utcoffset() is None:
        raise InvalidMessageError(
            f"at: {at:%Y-%m-%d %H:%M} has no time zone, so its moment is unknown;"
            " give an aware datetime, e.g. tzinfo=ZoneInfo('Africa/Abidjan')"
        )
    try:
        utc = at.astimezone(UTC)
    except (OverflowError, ValueError):
        utc = None
    # The table writes a year in four digits: before 1000 it would not be
    # read as a time, and the row would fail.
    if utc is None or utc.year < FIRST_YEAR:
        raise InvalidMessageError(
            f"at: {at.isoformat()} is out of range once in UTC; give a time"
            f" between the years {FIRST_YEAR} and 9999"
        )
    return fmt(utc)


def _check_batch(batch_id: str | None) -> None:
    """Refuse what the command line's ``--batch`` refuses."""
    if batch_id is not None and not batches.is_batch_id(batch_id):
        raise InvalidMessageError(
            f"batch_id: {messages.show(batch_id)} is not a batch id;"
            f" {batches.BATCH_ID_RULE}"
        )


def _optional_text(value: Any, name: str, what: str) -> None:
    """Refuse a value that is neither a text nor None; ``what`` is the fix."""
    if value is not None and not isinstance(value, str):
        raise InvalidMessageError(
            f"{name}: {messages.show(value)} is not a text; give {what}"
        )


def _check_params(params: Any) -> None:
    """Refuse anything but a list or tuple of texts (a text is not one)."""
    if not _is_list(params):
        raise InvalidMessageError(
            f"params: {messages.show(params)} is not a list; give the body's"
            ' parameters as a list of texts, as ["Aya", "15 000"], or () for none'
        )
    for index, value in enumerate(params, start=1):
        if not isinstance(value, str):
            raise InvalidMessageError(
                f"param {index}: {messages.show(value)} is not a text; write each"
                ' parameter as a text, as "15 000"'
            )


def _kind_of(value: Any) -> str:
    """A value quoted, or its type's name when it is a message."""
    if isinstance(value, NewMessage):
        return "a NewMessage"
    return messages.show(value)


def _is_list(value: Any) -> bool:
    """A list or a tuple: text and bytes, sequences of characters, are not."""
    return isinstance(value, list | tuple)


class WhatsAppQueue:
    """The queue table, for programs that add messages to it.

    Each ``add_*`` method takes the arguments of the module function of the
    same kind (``add_media`` those of :func:`media_message`, and so on),
    without ``region``, and returns the new row's id.
    """

    def __init__(self, path: Path | str, *, region: Region = "CI") -> None:
        _check_region(region)
        if not isinstance(path, str | os.PathLike):
            raise InvalidMessageError(
                f"path: {_kind_of(path)} is not a path; give the daemon's"
                " database, as var/database.sqlite"
            )
        self.path = Path(path)
        self.region = region

    def add(self, messages: Iterable[NewMessage]) -> list[int]:
        """Insert messages in one transaction; return their row ids.

        Each is a :class:`NewMessage` made by a function of this module;
        anything else is refused before a row is written.
        """
        if isinstance(messages, NewMessage) or not isinstance(messages, Iterable):
            raise InvalidMessageError(
                f"messages: {_kind_of(messages)} is not a list of messages; give a"
                " list, as [text_message(...)], even for one message"
            )
        made = list(messages)
        for number, item in enumerate(made):
            if not isinstance(item, NewMessage):
                raise InvalidMessageError(
                    f"messages[{number}]: {_kind_of(item)} is not a message; make"
                    " each with a function of whatsapp_daemon.api, such as"
                    " text_message"
                )
        self._check_place()
        db = QueueDB.open(self.path)
        try:
            return db.enqueue(made, datetime.now(UTC))
        finally:
            db.close()

    def _check_place(self) -> None:
        """Refuse a path the daemon cannot be reading: a mistyped folder
        would otherwise be created, and the messages queued where no one
        sends them. The database itself may not exist yet."""
        shown = messages.printable(str(self.path))
        if self.path.is_dir():
            raise InvalidMessageError(
                f"path: {shown} is a folder; give the database file in it, as"
                " var/database.sqlite"
            )
        if not self.path.parent.is_dir():
            raise InvalidMessageError(
                f"path: the folder of {shown} does not exist; give the daemon's"
                " database (WHATSAPP_DATABASE_PATH, var/database.sqlite by default)"
            )

    def add_message(self, to: str, kind: str, **options: Any) -> int:
        """Queue one message of any kind given as columns (see :func:`message`)."""
        return self.add([message(to, kind, region=self.region, **options)])[0]

    def add_text(self, to: str, body: str, **options: Any) -> int:
        """Queue one text message; return its row id."""
        return self._one(text_message(to, body, region=self.region, **options))

    def add_template(
        self,
        to: str,
        name: str,
        language: str,
        params: Sequence[str] = (),
        **options: Any,
    ) -> int:
        """Queue one template message; return its row id."""
        made = template_message(
            to, name, language, params, region=self.region, **options
        )
        return self._one(made)

    def add_media(self, to: str, kind: str, **options: Any) -> int:
        """Queue one image, document, audio, video or sticker."""
        return self._one(media_message(to, kind, region=self.region, **options))

    def add_location(
        self, to: str, latitude: float, longitude: float, **options: Any
    ) -> int:
        """Queue one location."""
        made = location_message(to, latitude, longitude, region=self.region, **options)
        return self._one(made)

    def add_contacts(
        self, to: str, contacts: Sequence[Mapping[str, Any]], **options: Any
    ) -> int:
        """Queue 1 to 5 contact cards."""
        return self._one(contacts_message(to, contacts, region=self.region, **options))

    def add_reaction(self, to: str, message_id: str, emoji: str, **options: Any) -> int:
        """Queue a reaction to a message (``""`` removes it)."""
        made = reaction_message(to, message_id, emoji, region=self.region, **options)
        return self._one(made)

    def add_buttons(
        self, to: str, body: str, buttons: Sequence[tuple[str, str]], **options: Any
    ) -> int:
        """Queue a message with 1 to 3 reply buttons."""
        made = buttons_message(to, body, buttons, region=self.region, **options)
        return self._one(made)

    def add_list(
        self,
        to: str,
        body: str,
        button: str,
        sections: Sequence[Mapping[str, Any]],
        **options: Any,
    ) -> int:
        """Queue a list message."""
        made = list_message(to, body, button, sections, region=self.region, **options)
        return self._one(made)

    def add_interactive(
        self, to: str, interactive: Mapping[str, Any], **options: Any
    ) -> int:
        """Queue an interactive message of any subtype."""
        made = interactive_message(to, interactive, region=self.region, **options)
        return self._one(made)

    def _one(self, made: NewMessage) -> int:
        return self.add([made])[0]
