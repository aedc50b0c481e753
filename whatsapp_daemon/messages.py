"""Check a message of any kind and build the object Meta expects for it.

One validator serves both ends of the queue: :mod:`whatsapp_daemon.api`
runs it before a row is written, and :mod:`whatsapp_daemon.payloads` runs
it again on the row as stored, since the PHP application writes rows with
plain SQL. A failed rule raises :class:`Problem`, which carries the same
complaint twice: in English with the fix, for the person queueing, and in
French, for the ``error_message`` of a failed row.

The limits are those of Meta's Cloud API documentation (which wins over
its OpenAPI specification where they differ). What the ``content`` column
holds for each kind is described in the README (*Message kinds*).
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .errors import InvalidMessageError
from .models import MessageType

TEXT_LIMIT = 4096  # characters of a text body
CAPTION_LIMIT = 1024  # characters of an image, video or document caption
TEMPLATE_NAME = re.compile(r"[a-z0-9_]{1,512}")  # as approved in WhatsApp Manager
LANGUAGE_CODE = re.compile(r"[a-z]{2,3}(?:_[A-Z]{2})?")  # fr, en_US, fil
WAMID = re.compile(r"wamid\.[A-Za-z0-9+/=_.\-]+")  # Meta's message ids
SHOWN = 40  # characters of a value quoted in an error
DEPTH = 32  # levels of lists and objects in ``content``, far more than Meta needs
REPLACEMENT = "\ufffd"  # what a reader puts where bytes were not UTF-8

# What ``content`` may hold for each media kind, besides ``id`` or ``link``.
MEDIA_EXTRAS: dict[str, frozenset[str]] = {
    "image": frozenset({"caption"}),
    "video": frozenset({"caption"}),
    "document": frozenset({"caption", "filename"}),
    "audio": frozenset(),
    "sticker": frozenset(),
}


class Problem(InvalidMessageError):
    """A message breaks a rule: ``english`` has the fix, ``french`` the reason.

    Its text is the English one, so that a caller who does not catch it
    shows the person queueing the fix.
    """

    def __init__(self, english: str, french: str) -> None:
        english, french = printable(english), printable(french)
        super().__init__(english)
        self.english = english
        self.french = french


@dataclass(frozen=True)
class Built:
    """A checked message: Meta's ``type``, its object and the quoted wamid."""

    kind: str
    value: Any
    reply_to: str | None


# -- quoting values and raising problems -----------------------------------------


def printable(text: str) -> str:
    """Return ``text`` with what UTF-8 cannot encode written as ``\\udXXX``."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def show(value: Any) -> str:
    """Quote a value on one line, cut to a readable length, always encodable."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=True)
    except (TypeError, ValueError, RecursionError):
        try:
            text = repr(value)
        except (RecursionError, ValueError):  # too deep, or too many digits
            text = f"<{type(value).__name__}>"
    text = printable(text)
    if len(text) > SHOWN:
        text = text[: SHOWN - 1] + "…"
    return text


def _fail(path: str, english: str, french: str) -> Problem:
    return Problem(f"{path}: {english}", f"{path} : {french}")


def _missing(path: str, hint: str) -> Problem:
    return _fail(path, f"missing; {hint}", "manquant")


def _too_long(path: str, value: str, limit: int) -> Problem:
    return _fail(
        path,
        f"{show(value)} is {len(value):,} characters, more than Meta's {limit:,};"
        " shorten it",
        f"{len(value)} caractères (max {limit})",
    )


def _count(path: str, size: int, low: int, high: int | None) -> Problem:
    if high is None:
        return _fail(
            path,
            f"{size} items; Meta takes at least {low}, give that many",
            f"{size} éléments (au moins {low})",
        )
    return _fail(
        path,
        f"{size} items; Meta takes {low} to {high}, give that many",
        f"{size} éléments (de {low} à {high})",
    )


def _not_finite(path: str, value: float) -> Problem:
    return _fail(
        path,
        f"{show(value)} is not a number JSON can carry; write a finite number",
        f"{show(value)} n'est pas un nombre JSON (NaN et Infinity sont refusés)",
    )


def _duplicate(path: str, value: Any) -> Problem:
    return _fail(
        path,
        f"{show(value)} is used twice; make each one unique",
        f"{show(value)} en double (doit être unique)",
    )


# -- generic checks ------------------------------------------------------------


def encodable(text: str, path: str) -> str:
    """Refuse text that UTF-8 cannot carry, or that was read from bad UTF-8.

    A lone surrogate (half of an emoji's UTF-16 pair, or a byte that was not
    UTF-8 in a command-line argument) cannot be stored or sent; U+FFFD is
    what a reader leaves where the bytes were not UTF-8.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        char = printable(text[exc.start])
        raise _fail(
            path,
            f"{show(text)} holds {char}, which is not a character (half of a"
            " UTF-16 pair, or a byte that was not UTF-8); write the text in UTF-8",
            f"caractère invalide {char} (pas de l'UTF-8)",
        ) from None
    if REPLACEMENT in text:
        raise _fail(
            path,
            f"{show(text)} holds U+FFFD, left where the text was not UTF-8;"
            " fix its encoding and give it again",
            "texte mal encodé (pas en UTF-8) : corriger la ligne et la renvoyer",
        )
    return text


def strict_json(value: Any, path: str) -> None:
    """Refuse, naming its place, what strict JSON in UTF-8 cannot carry.

    That is NaN and Infinity (which Python's JSON reader takes but no
    strict writer sends), text :func:`encodable` refuses, keys included,
    and lists or objects nested more than :data:`DEPTH` deep. The walk
    keeps its own stack, so no nesting can exhaust Python's.
    """
    stack: list[tuple[Any, str, int]] = [(value, path, 0)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, str):
            encodable(item, where)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise _not_finite(where, item)
        elif isinstance(item, dict | list):
            if depth >= DEPTH:
                raise _fail(
                    where,
                    f"nested more than {DEPTH} levels deep; flatten it",
                    f"plus de {DEPTH} niveaux d'imbrication",
                )
            children: list[tuple[str, Any]] = []
            if isinstance(item, dict):
                for key, child in item.items():
                    spot = f"{where}.{key}"
                    encodable(_typed(key, spot, str), spot)
                    children.append((spot, child))
            else:
                children = [(f"{where}[{n}]", child) for n, child in enumerate(item)]
            stack.extend((child, spot, depth + 1) for spot, child in reversed(children))


TYPE_NAMES = {
    dict: ("an object", "un objet"),
    list: ("a list", "une liste"),
    str: ("a string", "un texte"),
    bool: ("true or false", "true ou false"),
}


def _typed(value: Any, path: str, expected: type) -> Any:
    if isinstance(value, expected) and not (
        expected is not bool and isinstance(value, bool)
    ):
        return value
    english, french = TYPE_NAMES[expected]
    raise _fail(
        path,
        f"{show(value)} is not {english}; write {english}",
        f"{french} attendu, reçu {show(value)}",
    )


def _object(
    value: Any,
    path: str,
    *,
    required: Sequence[str] = (),
    optional: Sequence[str] = (),
    open_ended: bool = False,
) -> dict[str, Any]:
    """Check an object's keys: every required one, nothing unknown."""
    found: dict[str, Any] = _typed(value, path, dict)
    allowed = [*required, *optional]
    if not open_ended:
        for key, item in found.items():
            if key not in allowed:
                raise _fail(
                    f"{path}.{key}",
                    f"{show(item)} is not allowed here; {path} takes only"
                    f" {', '.join(allowed)}: remove it or correct the key",
                    f"clé inconnue (admises : {', '.join(allowed)})",
                )
    for key in required:
        if key not in found:
            raise _missing(f"{path}.{key}", f"give {path}.{key}")
    return found


def _text(
    value: Any,
    path: str,
    limit: int | None = None,
    *,
    strict: bool = False,
    needs: str = "some text",
) -> str:
    """A non-blank string of at most ``limit`` characters.

    ``strict`` also refuses spaces around it (ids Meta compares as given);
    ``needs`` says what to give instead of an empty one.
    """
    text: str = _typed(value, path, str)
    encodable(text, path)
    if not text.strip():
        raise _fail(path, f"empty; give {needs}", "vide")
    if strict and text != text.strip():
        raise _fail(
            path,
            f"{show(text)} has spaces around it; remove them",
            "espaces en début ou en fin",
        )
    if limit is not None and len(text) > limit:
        raise _too_long(path, text, limit)
    return text


def _choice(value: Any, path: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise _fail(
            path,
            f"{show(value)} is not one of {', '.join(choices)}; write one of them",
            f"{show(value)} au lieu de {', '.join(choices)}",
        )
    return str(value)


def _list(value: Any, path: str, low: int, high: int | None = None) -> list[Any]:
    items: list[Any] = _typed(value, path, list)
    if len(items) < low or (high is not None and len(items) > high):
        raise _count(path, len(items), low, high)
    return items


def _number(value: Any, path: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(
            path,
            f"{show(value)} is not a number; write it without quotes, like 5.36",
            f"nombre attendu, reçu {show(value)}",
        )
    # A whole number is compared as it is: converting one of hundreds of
    # digits to a float would overflow.
    if isinstance(value, float) and not math.isfinite(value):
        raise _not_finite(path, value)
    if not low <= value <= high:
        raise _fail(
            path,
            f"{show(value)} is outside {low:g}..{high:g}; give a value between"
            f" {low:g} and {high:g}",
            f"{show(value)} hors de {low:g}..{high:g}",
        )
    return float(value)


def _integer(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(
            path,
            f"{show(value)} is not a whole number; write one without quotes",
            f"nombre entier attendu, reçu {show(value)}",
        )
    return value


def _link(value: Any, path: str) -> str:
    link = _text(value, path, strict=True)
    parts = urlsplit(link)
    unprintable = any(char.isspace() or not char.isprintable() for char in link)
    if parts.scheme not in ("http", "https") or not parts.netloc or unprintable:
        raise _fail(
            path,
            f"{show(link)} is not an http:// or https:// address; give the full URL",
            f"{show(link)} n'est pas une adresse http:// ou https://",
        )
    return link


def _wamid(value: Any, path: str) -> str:
    text = _text(value, path, needs="the wamid.… of the message")
    if not WAMID.fullmatch(text):
        raise _fail(
            path,
            f"{show(text)} is not a WhatsApp message id; give the wamid.… of"
            " the message",
            f"{show(text)} n'est pas un identifiant de message (wamid.…)",
        )
    return text


def _unique(values: Sequence[Any], path: str) -> None:
    seen: set[Any] = set()
    for value in values:
        if value in seen:
            raise _duplicate(path, value)
        seen.add(value)


# -- text, media, location, contacts, reaction ----------------------------------


def check_text(body: Any, content: Any) -> dict[str, Any]:
    """A text message: the ``body`` column, ``content`` ``{"preview_url": …}``."""
    text = encodable(body, "text").strip() if isinstance(body, str) else ""
    if not text:
        raise Problem(
            "text: the message is empty; give some text", "texte vide (colonne body)"
        )
    if len(text) > TEXT_LIMIT:
        raise Problem(
            f"text: {len(text):,} characters, more than Meta's {TEXT_LIMIT:,};"
            " shorten it",
            f"texte de {len(text)} caractères (max {TEXT_LIMIT})",
        )
    preview = False
    if content is not None:
        options = _object(content, "content", optional=("preview_url",))
        preview = _typed(options.get("preview_url", False), "preview_url", bool)
    return {"body": text, "preview_url": preview}


def check_media(value: Any, path: str, extras: frozenset[str]) -> dict[str, Any]:
    """A media object: exactly one of ``id`` and ``link``, then ``extras``."""
    media = _object(value, path, optional=("id", "link", *sorted(extras)))
    if ("id" in media) == ("link" in media):
        raise _fail(
            path,
            "give exactly one of id (an uploaded media) and link (an http(s) URL)",
            "il faut soit id soit link, pas les deux ni aucun",
        )
    if "id" in media:
        _text(media["id"], f"{path}.id", strict=True, needs="the id of the upload")
    else:
        _link(media["link"], f"{path}.link")
    if "caption" in media:
        _text(media["caption"], f"{path}.caption", CAPTION_LIMIT)
    if "filename" in media:
        _text(media["filename"], f"{path}.filename")
    return media


def check_location(value: Any, path: str = "location") -> dict[str, Any]:
    """A place: latitude and longitude in degrees, an optional name and address."""
    place = _object(
        value, path, required=("latitude", "longitude"), optional=("name", "address")
    )
    _number(place["latitude"], f"{path}.latitude", -90, 90)
    _number(place["longitude"], f"{path}.longitude", -180, 180)
    for key in ("name", "address"):
        if key in place:
            _text(place[key], f"{path}.{key}")
    return place


# The parts of a contact card: key -> (fields, the required one, list or not).
CONTACT_PARTS: dict[str, tuple[tuple[str, ...], str | None, bool]] = {
    "name": (
        (
            "formatted_name",
            "first_name",
            "last_name",
            "middle_name",
            "suffix",
            "prefix",
        ),
        "formatted_name",
        False,
    ),
    "org": (("company", "department", "title"), None, False),
    "addresses": (
        ("street", "city", "state", "zip", "country", "country_code", "type"),
        None,
        True,
    ),
    "emails": (("email", "type"), "email", True),
    "phones": (("phone", "wa_id", "type"), "phone", True),
    "urls": (("url", "type"), "url", True),
}
# The ``type`` of a phone (Meta's documentation) and of the other lists.
CONTACT_TYPES = {
    "phones": ("CELL", "MAIN", "IPHONE", "HOME", "WORK"),
    "addresses": ("HOME", "WORK"),
    "emails": ("HOME", "WORK"),
    "urls": ("HOME", "WORK"),
}
BIRTHDAY = re.compile(r"\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])")


def check_contacts(value: Any) -> list[Any]:
    """One to five contact cards, each with ``name.formatted_name``."""
    cards = _list(value, "contacts", 1, 5)
    for number, card in enumerate(cards):
        path = f"contacts[{number}]"
        _object(card, path, required=("name",), optional=(*CONTACT_PARTS, "birthday"))
        if "birthday" in card and not BIRTHDAY.fullmatch(
            _text(card["birthday"], f"{path}.birthday")
        ):
            raise _fail(
                f"{path}.birthday",
                f"{show(card['birthday'])} is not a date; write YYYY-MM-DD",
                f"{show(card['birthday'])} n'est pas une date AAAA-MM-JJ",
            )
        for part, (fields, needed, many) in CONTACT_PARTS.items():
            if part not in card:
                continue
            entries = _list(card[part], f"{path}.{part}", 1) if many else [card[part]]
            for index, entry in enumerate(entries):
                where = f"{path}.{part}[{index}]" if many else f"{path}.{part}"
                _object(
                    entry,
                    where,
                    required=(needed,) if needed else (),
                    optional=[f for f in fields if f != needed],
                )
                for key, item in entry.items():
                    if key == "type":
                        _choice(item, f"{where}.type", CONTACT_TYPES[part])
                    else:
                        _text(item, f"{where}.{key}")
    return cards


EMOJI_RANGES = (
    (0x1F000, 0x1FAFF),
    (0x2600, 0x27BF),
    (0x2300, 0x23FF),
    (0x2B00, 0x2BFF),
    (0x2190, 0x21FF),
    (0x25A0, 0x25FF),
    (0x2900, 0x297F),
    (0x3030, 0x3030),
    (0x303D, 0x303D),
    (0x3297, 0x3299),
    (0x00A9, 0x00AE),
    (0x203C, 0x2049),
    (0x2122, 0x2139),
    (0x24C2, 0x24C2),
)
ZWJ, VS16, KEYCAP = "\u200d", "\ufe0f", "\u20e3"


def _is_emoji_char(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in EMOJI_RANGES)


def is_single_emoji(text: str) -> bool:
    """Whether ``text`` is one emoji: a pictograph with its modifiers, a flag,
    a keycap, or such emoji joined by zero-width joiners (👩‍👩‍👧)."""
    if len(text) > 20:
        return False
    if len(text) == 2 and all(0x1F1E6 <= ord(c) <= 0x1F1FF for c in text):
        return True  # a country flag: two regional indicators
    if re.fullmatch(f"[0-9#*]{VS16}?{KEYCAP}", text):
        return True
    for part in text.split(ZWJ):
        if not part or not _is_emoji_char(part[0]):
            return False
        for char in part[1:]:
            code = ord(char)
            modifier = 0x1F3FB <= code <= 0x1F3FF or char == VS16
            if not (modifier or 0xE0020 <= code <= 0xE007F):  # or a flag tag
                return False
    return True


def check_reaction(value: Any) -> dict[str, Any]:
    """A reaction: the wamid reacted to and one emoji ("" removes it)."""
    reaction = _object(value, "reaction", required=("message_id", "emoji"))
    _wamid(reaction["message_id"], "reaction.message_id")
    emoji = _typed(reaction["emoji"], "reaction.emoji", str)
    if emoji and not is_single_emoji(emoji):
        raise _fail(
            "reaction.emoji",
            f'{show(emoji)} is not a single emoji; give one, or "" to remove'
            " the reaction",
            f"{show(emoji)} n'est pas un seul emoji",
        )
    return reaction


# -- interactive messages -----------------------------------------------------------


def _reply_buttons(action: dict[str, Any], path: str) -> None:
    buttons = _list(action["buttons"], f"{path}.buttons", 1, 3)
    ids, titles = [], []
    for index, button in enumerate(buttons):
        where = f"{path}.buttons[{index}]"
        _object(button, where, required=("type", "reply"))
        _choice(button["type"], f"{where}.type", ("reply",))
        reply = _object(button["reply"], f"{where}.reply", required=("id", "title"))
        ids.append(_text(reply["id"], f"{where}.reply.id", 256, strict=True))
        titles.append(_text(reply["title"], f"{where}.reply.title", 20))
    _unique(ids, f"{path}.buttons[].reply.id")
    _unique(titles, f"{path}.buttons[].reply.title")


def _list_sections(action: dict[str, Any], path: str) -> None:
    _text(action["button"], f"{path}.button", 20)
    sections = _list(action["sections"], f"{path}.sections", 1, 10)
    ids: list[str] = []
    for index, section in enumerate(sections):
        where = f"{path}.sections[{index}]"
        _object(section, where, required=("rows",), optional=("title",))
        _section_title(section, where, len(sections))
        rows = _list(section["rows"], f"{where}.rows", 1, 10)
        for number, row in enumerate(rows):
            spot = f"{where}.rows[{number}]"
            _object(row, spot, required=("id", "title"), optional=("description",))
            ids.append(_text(row["id"], f"{spot}.id", 200, strict=True))
            _text(row["title"], f"{spot}.title", 24)
            if "description" in row:
                _text(row["description"], f"{spot}.description", 72)
    if len(ids) > 10:
        raise _fail(
            f"{path}.sections",
            f"{len(ids)} rows in all; Meta takes at most 10, remove some",
            f"{len(ids)} lignes en tout (max 10)",
        )
    _unique(ids, f"{path}.sections[].rows[].id")


def _section_title(section: dict[str, Any], where: str, sections: int) -> None:
    if "title" in section:
        _text(section["title"], f"{where}.title", 24)
    elif sections > 1:
        raise _missing(
            f"{where}.title", "give every section a title when there are several"
        )


def _named(action: dict[str, Any], path: str, name: str) -> dict[str, Any]:
    _choice(action["name"], f"{path}.name", (name,))
    params: dict[str, Any] = _typed(action["parameters"], f"{path}.parameters", dict)
    return params


def _cta_url(action: dict[str, Any], path: str) -> None:
    params = _named(action, path, "cta_url")
    _object(params, f"{path}.parameters", required=("display_text", "url"))
    _text(params["display_text"], f"{path}.parameters.display_text", 20)
    _link(params["url"], f"{path}.parameters.url")


FLOW_KEYS = (
    "flow_message_version",
    "flow_cta",
    "flow_id",
    "flow_name",
    "mode",
    "flow_token",
    "flow_action",
    "flow_action_payload",
)


def _flow(action: dict[str, Any], path: str) -> None:
    params = _named(action, path, "flow")
    where = f"{path}.parameters"
    _object(params, where, required=FLOW_KEYS[:2], optional=FLOW_KEYS[2:])
    _choice(params["flow_message_version"], f"{where}.flow_message_version", ("3",))
    _text(params["flow_cta"], f"{where}.flow_cta", 30)
    if ("flow_id" in params) == ("flow_name" in params):
        raise _fail(
            where,
            "give exactly one of flow_id and flow_name",
            "il faut soit flow_id soit flow_name",
        )
    for key in ("flow_id", "flow_name", "flow_token"):
        if key in params:
            _text(params[key], f"{where}.{key}")
    if "mode" in params:
        _choice(params["mode"], f"{where}.mode", ("draft", "published"))
    if "flow_action" in params:
        _choice(
            params["flow_action"], f"{where}.flow_action", ("navigate", "data_exchange")
        )
    if "flow_action_payload" in params:
        spot = f"{where}.flow_action_payload"
        payload = _object(
            params["flow_action_payload"], spot, optional=("screen", "data")
        )
        if "screen" in payload:
            _text(payload["screen"], f"{spot}.screen")
        if "data" in payload and not _typed(payload["data"], f"{spot}.data", dict):
            raise _fail(
                f"{spot}.data",
                "empty; give the screen's data or leave data out",
                "objet vide",
            )


def _product(action: dict[str, Any], path: str) -> None:
    _object(action, path, required=("catalog_id", "product_retailer_id"))
    _text(action["catalog_id"], f"{path}.catalog_id")
    _text(action["product_retailer_id"], f"{path}.product_retailer_id")


def _product_list(action: dict[str, Any], path: str) -> None:
    _text(action["catalog_id"], f"{path}.catalog_id")
    sections = _list(action["sections"], f"{path}.sections", 1, 10)
    total = 0
    for index, section in enumerate(sections):
        where = f"{path}.sections[{index}]"
        _object(section, where, required=("product_items",), optional=("title",))
        _section_title(section, where, len(sections))
        items = _list(section["product_items"], f"{where}.product_items", 1, 30)
        for number, item in enumerate(items):
            spot = f"{where}.product_items[{number}]"
            _object(item, spot, required=("product_retailer_id",))
            _text(item["product_retailer_id"], f"{spot}.product_retailer_id")
        total += len(items)
    if total > 30:
        raise _fail(
            f"{path}.sections",
            f"{total} products in all; Meta takes at most 30, remove some",
            f"{total} produits en tout (max 30)",
        )


def _catalog(action: dict[str, Any], path: str) -> None:
    _choice(action["name"], f"{path}.name", ("catalog_message",))
    if "parameters" in action:
        where = f"{path}.parameters"
        params = _object(
            action["parameters"], where, optional=("thumbnail_product_retailer_id",)
        )
        if "thumbnail_product_retailer_id" in params:
            _text(
                params["thumbnail_product_retailer_id"],
                f"{where}.thumbnail_product_retailer_id",
            )


def _amount(value: Any, path: str) -> None:
    amount = _object(value, path, required=("value", "offset"), open_ended=True)
    _integer(amount["value"], f"{path}.value")
    _integer(amount["offset"], f"{path}.offset")


def _order_details(action: dict[str, Any], path: str) -> None:
    params = _named(action, path, "review_and_pay")
    where = f"{path}.parameters"
    _object(
        params,
        where,
        required=("reference_id", "type", "currency", "total_amount", "order"),
        open_ended=True,
    )
    _text(params["reference_id"], f"{where}.reference_id", 35)
    _text(params["type"], f"{where}.type")
    _text(params["currency"], f"{where}.currency", 3)
    _amount(params["total_amount"], f"{where}.total_amount")
    order = _object(
        params["order"],
        f"{where}.order",
        required=("status", "items", "subtotal"),
        open_ended=True,
    )
    _text(order["status"], f"{where}.order.status")
    _amount(order["subtotal"], f"{where}.order.subtotal")
    for index, item in enumerate(_list(order["items"], f"{where}.order.items", 1)):
        spot = f"{where}.order.items[{index}]"
        _object(
            item,
            spot,
            required=("retailer_id", "name", "amount", "quantity"),
            open_ended=True,
        )
        _text(item["name"], f"{spot}.name")
        _amount(item["amount"], f"{spot}.amount")
        _integer(item["quantity"], f"{spot}.quantity")


ORDER_STATUSES = (
    "pending",
    "processing",
    "partially_shipped",
    "shipped",
    "completed",
    "canceled",
)


def _order_status(action: dict[str, Any], path: str) -> None:
    params = _named(action, path, "review_order")
    where = f"{path}.parameters"
    _object(params, where, required=("reference_id", "order"))
    _text(params["reference_id"], f"{where}.reference_id", 35)
    order = _object(
        params["order"],
        f"{where}.order",
        required=("status",),
        optional=("description",),
    )
    _choice(order["status"], f"{where}.order.status", ORDER_STATUSES)
    if "description" in order:
        _text(order["description"], f"{where}.order.description", 120)


@dataclass(frozen=True)
class Interactive:
    """What one interactive subtype takes besides its ``action``."""

    action_keys: tuple[tuple[str, ...], tuple[str, ...]]  # required, optional
    check_action: Callable[[dict[str, Any], str], None]
    headers: tuple[str, ...] = ()  # header types allowed, () for none
    header_required: bool = False
    body_required: bool = True
    body_limit: int = 1024  # characters of the body's text


ANY_HEADER = ("text", "image", "video", "document")
INTERACTIVE: dict[str, Interactive] = {
    "button": Interactive((("buttons",), ()), _reply_buttons, ANY_HEADER),
    "list": Interactive(
        (("button", "sections"), ()), _list_sections, ("text",), body_limit=4096
    ),
    "cta_url": Interactive((("name", "parameters"), ()), _cta_url, ANY_HEADER),
    "flow": Interactive((("name", "parameters"), ()), _flow, ANY_HEADER),
    "product": Interactive(
        (("catalog_id", "product_retailer_id"), ()), _product, body_required=False
    ),
    "product_list": Interactive(
        (("catalog_id", "sections"), ()), _product_list, ("text",), header_required=True
    ),
    "catalog_message": Interactive((("name",), ("parameters",)), _catalog),
    "order_details": Interactive(
        (("name", "parameters"), ()), _order_details, ("image",)
    ),
    "order_status": Interactive((("name", "parameters"), ()), _order_status),
}


def _header(value: Any, path: str, kinds: tuple[str, ...]) -> None:
    header = _typed(value, path, dict)
    kind = _choice(header.get("type"), f"{path}.type", kinds)
    if kind == "text":
        _object(header, path, required=("type", "text"))
        _text(header["text"], f"{path}.text", 60)
    else:
        _object(header, path, required=("type", kind))
        extras = frozenset({"filename"}) if kind == "document" else frozenset()
        check_media(header[kind], f"{path}.{kind}", extras)


def check_interactive(value: Any) -> dict[str, Any]:
    """An interactive object: a ``type`` of :data:`INTERACTIVE` and its parts."""
    path = "interactive"
    message = _object(
        value, path, required=("type", "action"), optional=("header", "body", "footer")
    )
    kind = _choice(message["type"], f"{path}.type", tuple(INTERACTIVE))
    rules = INTERACTIVE[kind]
    if "header" in message:
        if not rules.headers:
            raise _fail(
                f"{path}.header",
                f"a {kind} message has no header; remove it",
                f"pas d'en-tête pour un message {kind}",
            )
        _header(message["header"], f"{path}.header", rules.headers)
    elif rules.header_required:
        raise _missing(f"{path}.header", f"a {kind} message needs a text header")
    if "body" in message:
        body = _object(message["body"], f"{path}.body", required=("text",))
        _text(body["text"], f"{path}.body.text", rules.body_limit)
    elif rules.body_required:
        raise _missing(f"{path}.body", 'give {"text": "…"}')
    if "footer" in message:
        footer = _object(message["footer"], f"{path}.footer", required=("text",))
        _text(footer["text"], f"{path}.footer.text", 60)
    required, optional = rules.action_keys
    action = _object(
        message["action"], f"{path}.action", required=required, optional=optional
    )
    rules.check_action(action, f"{path}.action")
    return message


# -- templates ------------------------------------------------------------------------

# Parameter types each component takes; a button's by its sub_type.
PARAMETERS_OF = {
    "header": (
        "text",
        "currency",
        "date_time",
        "image",
        "video",
        "document",
        "location",
    ),
    "body": ("text", "currency", "date_time"),
}
BUTTON_PARAMETERS = {
    "quick_reply": ("payload",),
    "url": ("text",),
    "copy_code": ("coupon_code",),
    "catalog": ("action",),
    "mpm": ("action",),
    "flow": ("action",),
    "voice_call": (),
}
# Characters of a text parameter; a button's (a URL's variable part) has no
# documented limit of its own.
PARAM_TEXT_LIMIT = {"header": 60, "body": 1024, "button": None}
MAX_BUTTONS = 10


def _template_text(value: Any, path: str, component: str) -> None:
    text = _text(value, path, PARAM_TEXT_LIMIT[component])
    if component != "body":
        return
    if any(char in text for char in "\n\r\t") or "     " in text:
        raise _fail(
            path,
            f"{show(text)} has a line break, a tab or more than 4 spaces in a row,"
            " which Meta refuses in a parameter; remove them",
            "retour à la ligne, tabulation ou plus de 4 espaces de suite"
            " (refusé par Meta dans un paramètre)",
        )


def _parameter(value: Any, path: str, component: str, allowed: Sequence[str]) -> None:
    param = _typed(value, path, dict)
    kind = _choice(param.get("type"), f"{path}.type", allowed)
    optional = ("parameter_name",) if kind == "text" else ()
    _object(param, path, required=("type", kind), optional=optional)
    if "parameter_name" in param:
        name = _text(param["parameter_name"], f"{path}.parameter_name")
        if not re.fullmatch(r"[a-z0-9_]+", name):
            raise _fail(
                f"{path}.parameter_name",
                f"{show(name)} is not a variable name; write it as in the"
                " template, lower-case letters, digits and _",
                f"{show(name)} n'est pas un nom de variable",
            )
    where = f"{path}.{kind}"
    item = param[kind]
    if kind in ("text", "payload", "coupon_code"):
        limit = 15 if kind == "coupon_code" else None
        if kind == "text":
            _template_text(item, where, component)
        else:
            _text(item, where, limit)
    elif kind == "currency":
        money = _object(item, where, required=("fallback_value", "code", "amount_1000"))
        _text(money["fallback_value"], f"{where}.fallback_value")
        _text(money["code"], f"{where}.code", 3)
        _integer(money["amount_1000"], f"{where}.amount_1000")
    elif kind == "date_time":
        moment = _object(item, where, required=("fallback_value",), open_ended=True)
        _text(moment["fallback_value"], f"{where}.fallback_value")
    elif kind == "location":
        check_location(item, where)
    elif kind == "action":
        _typed(item, where, dict)
    else:
        extras = frozenset({"filename"}) if kind == "document" else frozenset()
        check_media(item, where, extras)


def _component(value: Any, path: str) -> tuple[str, Any]:
    component = _typed(value, path, dict)
    kind = _choice(component.get("type"), f"{path}.type", ("header", "body", "button"))
    if kind != "button":
        _object(component, path, required=("type",), optional=("parameters",))
        allowed = PARAMETERS_OF[kind]
        most = 1 if kind == "header" else None
    else:
        _object(
            component,
            path,
            required=("type", "sub_type", "index"),
            optional=("parameters",),
        )
        sub_type = component["sub_type"]
        if not isinstance(sub_type, str) or sub_type.lower() not in BUTTON_PARAMETERS:
            _choice(sub_type, f"{path}.sub_type", tuple(BUTTON_PARAMETERS))
        allowed = BUTTON_PARAMETERS[str(sub_type).lower()]
        most = 1
        index = component["index"]
        if isinstance(index, bool) or str(index) not in [str(n) for n in range(10)]:
            raise _fail(
                f"{path}.index",
                f"{show(index)} is not a button position; give 0 to 9",
                f"{show(index)} au lieu de 0 à 9",
            )
    if not allowed and component.get("parameters"):
        raise _fail(
            f"{path}.parameters",
            f"a {str(component['sub_type']).lower()} button takes no parameters;"
            " remove them",
            "ce bouton ne prend pas de paramètre",
        )
    parameters = _list(component.get("parameters", []), f"{path}.parameters", 0, most)
    for number, param in enumerate(parameters):
        _parameter(param, f"{path}.parameters[{number}]", kind, allowed)
    return kind, str(component.get("index"))


def check_components(value: Any, path: str = "components") -> list[Any]:
    """A template's ``components``: header, body and up to 10 buttons."""
    components = _list(value, path, 1)
    kinds = [_component(item, f"{path}[{n}]") for n, item in enumerate(components)]
    for single in ("header", "body"):
        if sum(kind == single for kind, _ in kinds) > 1:
            raise _duplicate(f"{path}[].type", single)
    buttons = [index for kind, index in kinds if kind == "button"]
    if len(buttons) > MAX_BUTTONS:
        raise _fail(
            path,
            f"{len(buttons)} buttons; Meta takes at most {MAX_BUTTONS}, remove some",
            f"{len(buttons)} boutons (max {MAX_BUTTONS})",
        )
    _unique(buttons, f"{path}[].index")
    return components


def check_template(
    name: Any, language: Any, params: Any, content: Any
) -> dict[str, Any]:
    """A template: its name, language code, and parameters or components."""
    if not isinstance(name, str) or not TEMPLATE_NAME.fullmatch(name.strip()):
        raise _fail(
            "template_name",
            f"{show(name)} is not a template name; give"
            " it as approved, lower-case letters, digits and _",
            f"{show(name)} n'est pas un nom de modèle",
        )
    if not isinstance(language, str) or not LANGUAGE_CODE.fullmatch(language.strip()):
        raise _fail(
            "template_language",
            f"{show(language)} is not a language code;"
            " give the code the template was approved with, such as fr or"
            " en_US",
            f"{show(language)} n'est pas un code de langue",
        )
    template: dict[str, Any] = {
        "name": name.strip(),
        "language": {"code": language.strip()},
    }
    if content is not None:
        if params:
            raise _fail(
                "content",
                "components and template_params both given; keep one of them",
                "components et template_params à la fois",
            )
        if isinstance(content, dict):
            options = _object(
                content, "content", optional=("components", "language_policy")
            )
            if "language_policy" in options:
                policy = _choice(
                    options["language_policy"], "language_policy", ("deterministic",)
                )
                template["language"]["policy"] = policy
            content = options.get("components")
        if content is not None:
            template["components"] = check_components(content)
    elif params:
        for index, value in enumerate(params, start=1):
            _template_text(value, f"param {index}", "body")
        parameters = [{"type": "text", "text": value} for value in params]
        template["components"] = [{"type": "body", "parameters": parameters}]
    return template


# -- the whole message ----------------------------------------------------------------


# What ``json.loads`` raises on text it cannot read: JSONDecodeError, a
# number of more digits than Python converts, a key twice in one object
# (DuplicateKey), bytes that are not in the encoding it detects
# (UnicodeDecodeError), or nesting deeper than its stack.
JSON_ERRORS = (ValueError, RecursionError)


class DuplicateKey(ValueError):
    """One object of a JSON text names the same key twice."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Build an object, refusing a key given twice.

    Python's reader keeps the last value, Meta's may keep another: the
    message sent would not be the one that was checked.
    """
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise DuplicateKey(key)
        seen[key] = value
    return seen


def why_not_json(error: Exception, fix: str) -> tuple[str, str, str]:
    """Say why ``json.loads`` refused a text: the reason, the fix, in French.

    ``fix`` is the advice for a syntax error; the other errors have their own.
    """
    if isinstance(error, json.JSONDecodeError):
        where = f" at line {error.lineno} column {error.colno}"
        return error.msg + where, fix, error.msg
    if isinstance(error, DuplicateKey):
        key = show(error.key)
        return (
            f"the key {key} appears twice in one object",
            "keep only one of them",
            f"clé {key} en double dans un objet",
        )
    if isinstance(error, RecursionError):
        return (
            "nested too deeply to be read",
            "nest fewer lists and objects",
            "imbrication trop profonde",
        )
    if isinstance(error, UnicodeDecodeError):
        byte, at = _bad_byte(error)
        return (
            f"not UTF-8 text: byte 0x{byte:02x} at offset {at}",
            "save it as UTF-8",
            f"pas du texte UTF-8 : octet 0x{byte:02x} en position {at}",
        )
    if "integer string conversion" in str(error):
        digits = sys.get_int_max_str_digits()
        return (
            f"a number has more than {digits:,} digits",
            "write it with fewer digits, or as a string",
            f"nombre de plus de {digits} chiffres",
        )
    reason = printable(str(error)) or type(error).__name__
    return reason, fix, reason


def _bad_byte(error: UnicodeDecodeError) -> tuple[int, int]:
    """The first byte a decoder refused, and its offset."""
    return error.object[error.start], error.start


def stored_text(value: Any, column: str, *, numbers: bool = False) -> str | None:
    """Read a text column of a stored row: its text, or None when NULL.

    SQLite returns a BLOB as bytes, whatever the column's declared type (the
    queue's connection decodes TEXT values only), and a number as a number
    in a column declared without the TEXT type. A BLOB holding UTF-8 text is
    that text; any other BLOB (another encoding, such as UTF-16, which puts
    NUL bytes in the text) is refused, naming the column, and so is a number
    unless ``numbers`` (a phone number) reads it as written by ``str``.
    """
    if value is None or isinstance(value, str):
        return value
    if numbers and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, bytes):
        decoded = _decode_blob(value)
        if isinstance(decoded, str):
            return decoded
        raise _not_utf8(column, value, *decoded)
    if isinstance(value, int | float):
        raise _not_utf8(column, value, "a number", "un nombre")
    raise _not_utf8(column, value, type(value).__name__, type(value).__name__)


def blob_text(value: Any) -> Any:
    """Return a BLOB that :func:`stored_text` reads as that text; any other
    value (text, None, a number, a BLOB it refuses) as it is, to be refused
    with its column named when the row is checked."""
    if isinstance(value, bytes):
        decoded = _decode_blob(value)
        return decoded if isinstance(decoded, str) else value
    return value


def _decode_blob(blob: bytes) -> str | tuple[str, str]:
    """A BLOB's UTF-8 text, or why it is not UTF-8 text, in English and French."""
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError as exc:
        byte, at = _bad_byte(exc)
        return (
            f"a BLOB: byte 0x{byte:02x} at offset {at}",
            f"BLOB, octet 0x{byte:02x} en position {at}",
        )
    if "\x00" in text:
        at = blob.index(0)
        return (
            f"a BLOB: a NUL byte at offset {at}, as in UTF-16",
            f"BLOB, octet nul en position {at}, comme en UTF-16",
        )
    return text


def _not_utf8(column: str, value: Any, english: str, french: str) -> Problem:
    return _fail(
        column,
        f"{show(value)} is not UTF-8 text ({english}); store the text in UTF-8",
        f"pas du texte UTF-8 ({french})",
    )


def _load(raw: str, column: str, fix: str) -> Any:
    try:
        return json.loads(raw, object_pairs_hook=unique_keys)
    except JSON_ERRORS as exc:
        reason, advice, french = why_not_json(exc, fix)
        raise Problem(
            f"{column}: {show(raw)} is not JSON ({reason}); {advice}",
            f"{column} n'est pas du JSON ({french})",
        ) from None


def parse_params(raw: str | None) -> list[str]:
    """Read the ``template_params`` column: a JSON array of strings."""
    if raw is None or not raw.strip():
        return []
    values = _load(raw, "template_params", "write a JSON array of texts")
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise Problem(
            f"template_params: {show(raw)} is not an array of texts; write"
            ' ["Aya", "15 000"]',
            "template_params doit être un tableau JSON de textes",
        )
    return values


def parse_content(raw: str | None) -> Any:
    """Read the ``content`` column: JSON, or None when empty."""
    if raw is None or not raw.strip():
        return None
    return _load(raw, "content", "write valid JSON")


KINDS = tuple(kind.value for kind in MessageType)


def check(
    message_type: Any,
    *,
    body: Any,
    template_name: Any,
    template_language: Any,
    template_params: Any,
    content: Any,
    reply_to: Any,
) -> Built:
    """Check the stored columns of one message and build Meta's object.

    Each column is as SQLite returns it: text, None, or, from a row another
    program wrote, a BLOB's bytes or a number, which :func:`stored_text`
    reads or refuses. Columns a text or a template row does not use (a
    text's template columns, a template's ``body``) are ignored, as they
    always were, whatever they hold; the other kinds refuse them. The object
    built is strict JSON in UTF-8.
    """
    if isinstance(message_type, bytes):
        message_type = stored_text(message_type, "message_type")
    kind = message_type if isinstance(message_type, str) else ""
    if kind not in KINDS:
        raise Problem(
            f"message_type: {show(message_type)} is not a kind of message; write"
            f" one of {', '.join(KINDS)}",
            f"message_type inconnu « {message_type} » ({', '.join(KINDS)})",
        )
    reply_to = stored_text(reply_to, "reply_to")
    quoted = None if reply_to is None or not reply_to.strip() else reply_to
    if quoted is not None:
        _wamid(quoted, "reply_to")
    value = parse_content(stored_text(content, "content"))
    for path, part in _content_parts(kind, value):
        strict_json(part, path)
    if kind != MessageType.TEXT:
        template_name = stored_text(template_name, "template_name")
        template_language = stored_text(template_language, "template_language")
        template_params = stored_text(template_params, "template_params")
    if kind != MessageType.TEMPLATE:
        body = stored_text(body, "body")
    if kind == MessageType.TEMPLATE:
        params = parse_params(template_params)
        built = check_template(template_name, template_language, params, value)
        return _sendable(Built(kind, built, quoted))
    if kind == MessageType.TEXT:
        return _sendable(Built(kind, check_text(body, value), quoted))
    params = parse_params(template_params)
    _unused(
        kind,
        body=body,
        template_name=template_name,
        template_language=template_language,
        template_params=params,
    )
    if value is None:
        raise _missing("content", f"give the {kind} object as JSON in content")
    if kind in MEDIA_EXTRAS:
        built = check_media(value, kind, MEDIA_EXTRAS[kind])
    else:
        built = KIND_CHECKS[kind](value)
    return _sendable(Built(kind, built, quoted))


def _content_parts(kind: str, value: Any) -> list[tuple[str, Any]]:
    """The parts of ``content``, each with the path its errors start with."""
    if value is None:
        return []
    if kind == MessageType.TEXT:
        return [("content", value)]
    if kind != MessageType.TEMPLATE:
        return [(kind, value)]
    if not isinstance(value, dict):
        return [("components", value)]
    known = ("components", "language_policy")
    return [
        (key if key in known else f"content.{key}", part) for key, part in value.items()
    ]


def _sendable(built: Built) -> Built:
    """Refuse an object that cannot be written as strict JSON in UTF-8."""
    try:
        json.dumps(built.value, allow_nan=False, ensure_ascii=False).encode()
    except (ValueError, TypeError, RecursionError) as exc:
        raise _fail(
            built.kind,
            f"cannot be written as strict JSON ({exc}); correct the message",
            f"impossible à écrire en JSON strict ({exc})",
        ) from None
    return built


KIND_CHECKS: Mapping[str, Callable[[Any], Any]] = {
    MessageType.LOCATION: check_location,
    MessageType.CONTACTS: check_contacts,
    MessageType.REACTION: check_reaction,
    MessageType.INTERACTIVE: check_interactive,
}


def _unused(kind: str, **columns: Any) -> None:
    for column, value in columns.items():
        if value and (not isinstance(value, str) or value.strip()):
            raise _fail(
                column,
                f"{show(value)} is not used by a {kind} message; leave it empty",
                f"inutilisé pour un message {kind}, à laisser vide",
            )
