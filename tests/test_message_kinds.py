"""Every kind of message: checked when queued, built as Meta's spec describes.

The request bodies are checked against Meta's own OpenAPI specification of
the Cloud API (tests/data/meta), with a small patch for its known quirks,
and against the specification's example requests: each example a business
sends is queued through the public API, claimed, built, and compared.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import StartSandbox
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from test_sending import (
    all_finished,
    insert_raw,
    log_lines,
    log_to,
    rows,
    running_daemon,
)

from whatsapp_daemon import api, batches, messages, payloads
from whatsapp_daemon.api import WhatsAppQueue
from whatsapp_daemon.cli import Exit
from whatsapp_daemon.errors import InvalidMessageError
from whatsapp_daemon.messages import show
from whatsapp_daemon.models import NewMessage, QueuedMessage
from whatsapp_daemon.queue import QueueDB
from whatsapp_daemon.settings import Settings

META = Path(__file__).parent / "data" / "meta"
SPEC = META / "business-messaging-api_v23.0.yaml"
EXAMPLES = META / "examples" / "send-requests"
SEND_PATH = "/{Version}/{Phone-Number-ID}/messages"
SPEC_URI = "urn:meta:business-messaging-api:v23.0"

TO = "+2250701020304"
WAMID = "wamid.HBgMMjI1MDcwMTAyMDMwNBUCABEYEjQzRkVCQkQ0MjcwQUQzRTM1QQA="
LINK = "https://example.com/media"
LEASE = timedelta(minutes=5)


# -- Meta's specification, patched for its known quirks ---------------------------


def _patch_spec(spec: dict[str, Any]) -> None:
    """Correct the specification where Meta's documentation says otherwise.

    Each change is one known quirk (tests/data/meta/README.md) or a kind the
    documentation describes and the specification lacks; nothing else of
    the schema is relaxed.
    """
    schemas = spec["components"]["schemas"]
    base = schemas["BaseMessageProperties"]
    # 1. Every XMessage is allOf [BaseMessageProperties, {additionalProperties:
    #    false, ...}]; inside allOf, additionalProperties sees only its own
    #    branch, so messaging_product, to, context... would all be refused.
    #    Draft 2020-12's unevaluatedProperties at the allOf level is what was
    #    meant: unknown keys stay refused.
    patched = []
    for name, schema in schemas.items():
        branches = schema.get("allOf", [])
        if not name.endswith("Message") or len(branches) != 2:
            continue
        if branches[1].pop("additionalProperties", True) is False:
            schema["unevaluatedProperties"] = False
            patched.append(name)
    assert "TextMessage" in patched and "InteractiveMessage" in patched, patched
    # 2. biz_opaque_callback_data is a documented field of every message
    #    (at most 512 characters) that the specification leaves out.
    base["properties"]["biz_opaque_callback_data"] = {
        "type": "string",
        "maxLength": 512,
    }
    # 3. language.policy is marked required; the documentation has it optional.
    schemas["LanguageObject"]["required"] = ["code"]
    # 4. TemplateComponent.index has a malformed pattern (^[2-6, 11-14]$
    #    refuses "0"); the examples give it as "0" or 0: a position 0-9.
    component = schemas["TemplateComponent"]["properties"]
    component["index"] = {
        "anyOf": [
            {"type": "string", "pattern": "^[0-9]$"},
            {"type": "integer", "minimum": 0, "maximum": 9},
        ]
    }
    # 5. Button sub_types: the examples use "CATALOG" and "flow"; the
    #    documentation adds copy_code, mpm and voice_call.
    component["sub_type"]["enum"] += [
        "CATALOG",
        "flow",
        "copy_code",
        "mpm",
        "voice_call",
    ]
    # 6. LocationMessage types latitude and longitude as strings; they are
    #    numbers (the examples send 37.758056).
    location = schemas["LocationMessage"]["allOf"][1]["properties"]["location"]
    for axis in ("latitude", "longitude"):
        location["properties"][axis]["type"] = "number"
    # 7. A list message's body may hold 4,096 characters (documentation),
    #    not 1,024 (BodyObject, shared by every interactive kind; the daemon
    #    keeps 1,024 for the other kinds, tested below).
    schemas["BodyObject"]["properties"]["text"]["maxLength"] = 4096
    # 8. Interactive kinds the documentation and the specification's own
    #    examples send, missing from InteractiveObject: cta_url (action
    #    name cta_url), order_details (review_and_pay), order_status
    #    (review_order).
    schemas["InteractiveObject"]["properties"]["type"]["enum"] += [
        "cta_url",
        "order_details",
        "order_status",
    ]
    schemas["ActionObject"]["oneOf"] += [
        {
            "required": ["name", "parameters"],
            "properties": {
                "name": {"enum": ["cta_url"]},
                "parameters": {
                    "type": "object",
                    "required": ["display_text", "url"],
                    "properties": {
                        "display_text": {"type": "string", "maxLength": 20},
                        "url": {"type": "string"},
                    },
                },
            },
        },
        {
            "required": ["name", "parameters"],
            "properties": {
                "name": {"enum": ["review_and_pay", "review_order"]},
                "parameters": {"type": "object", "required": ["reference_id"]},
            },
        },
    ]
    # 9. A contact's phone type: the documentation adds CELL, MAIN, IPHONE.
    schemas["PhoneObject"]["properties"]["type"]["enum"] += ["CELL", "MAIN", "IPHONE"]
    # 10. A catalog message's parameters are optional: without them, the
    #     documentation says, the first item of the catalog is shown.
    catalog = schemas["ActionObject"]["oneOf"][3]
    assert catalog["properties"]["name"]["enum"] == ["catalog_message"]
    catalog["required"] = ["name"]


@pytest.fixture(scope="session")
def meta_spec() -> dict[str, Any]:
    """Meta's OpenAPI document, read once per session and patched."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with SPEC.open(encoding="utf-8") as stream:
        spec: dict[str, Any] = yaml.load(stream, Loader=loader)
    _patch_spec(spec)
    return spec


@pytest.fixture(scope="session")
def request_schema(meta_spec: dict[str, Any]) -> Draft202012Validator:
    """A validator of the request body of POST /{Version}/{Phone-Number-ID}/messages."""
    operation = meta_spec["paths"][SEND_PATH]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    ref = schema["$ref"]
    assert ref.startswith("#/components/schemas/")
    registry: Registry[Any] = Registry().with_resource(
        SPEC_URI, Resource.from_contents(meta_spec, default_specification=DRAFT202012)
    )
    return Draft202012Validator(
        {"$ref": SPEC_URI + ref},
        registry=registry,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def assert_valid(validator: Draft202012Validator, body: Mapping[str, Any]) -> None:
    """Fail with the most relevant schema error, if any."""
    error = best_match(validator.iter_errors(body))
    if error is not None:
        path = "/".join(map(str, error.absolute_path))
        raise AssertionError(f"{path}: {error.message[:300]}")


def test_the_patched_schema_still_refuses_what_meta_refuses(
    request_schema: Draft202012Validator,
) -> None:
    """The patch only corrects the quirks: unknown keys and bad types still fail."""
    good = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "2250701020304",
        "type": "text",
        "text": {"body": "Bonjour", "preview_url": False},
    }
    assert_valid(request_schema, good)
    head = {k: v for k, v in good.items() if k not in ("type", "text")}
    for bad in (
        {**good, "surprise": 1},
        {**good, "text": {"body": "Bonjour", "preview": True}},
        {**head, "type": "image", "image": {"id": "1", "link": "https://a.b/c"}},
        {**head, "type": "location", "location": {"latitude": "5.3", "longitude": 1}},
        {**head, "type": "contacts", "contacts": []},
    ):
        assert not request_schema.is_valid(bad), bad


# -- queue, claim, build ------------------------------------------------------------


def built(path: Path, *messages: NewMessage) -> list[dict[str, Any]]:
    """Queue messages through the public API, claim them, build their bodies."""
    WhatsAppQueue(path).add(messages)
    db = QueueDB.open(path)
    try:
        claimed = db.claim(datetime.now(UTC), 100, "test", LEASE)
    finally:
        db.close()
    return [payloads.build(message, "CI") for message in claimed]


def refusal(make: Callable[[], object]) -> str:
    """The one-line English message a refused message raises."""
    with pytest.raises(InvalidMessageError) as caught:
        make()
    message = str(caught.value)
    assert "\n" not in message
    message.encode("utf-8")  # printable, logged and stored as it is
    return message


CONTACT = {
    "name": {"formatted_name": "Aya Kouassi", "first_name": "Aya"},
    "phones": [
        {"phone": "+225 07 01 02 03 04", "type": "CELL", "wa_id": "2250701020304"}
    ],
    "emails": [{"email": "aya@example.com", "type": "WORK"}],
    "birthday": "1990-04-12",
}
SECTIONS = [
    {
        "title": "Livraison",
        "rows": [
            {"id": "abidjan", "title": "Abidjan", "description": "Sous 24 h"},
            {"id": "interieur", "title": "Intérieur du pays"},
        ],
    },
    {"title": "Retrait", "rows": [{"id": "boutique", "title": "En boutique"}]},
]
TEMPLATE_COMPONENTS: list[dict[str, Any]] = [
    {"type": "header", "parameters": [{"type": "document", "document": {
        "link": f"{LINK}/facture.pdf", "filename": "facture.pdf"}}]},
    {"type": "body", "parameters": [
        {"type": "text", "text": "Aya", "parameter_name": "nom"},
        {"type": "currency", "currency": {
            "fallback_value": "15 000 FCFA", "code": "XOF", "amount_1000": 15000000}},
        {"type": "date_time", "date_time": {"fallback_value": "24 décembre 2026"}},
    ]},
    {"type": "button", "sub_type": "quick_reply", "index": "0",
     "parameters": [{"type": "payload", "payload": "PAYER"}]},
    {"type": "button", "sub_type": "url", "index": 1,
     "parameters": [{"type": "text", "text": "facture/123"}]},
    {"type": "button", "sub_type": "copy_code", "index": "2",
     "parameters": [{"type": "coupon_code", "coupon_code": "NOEL25"}]},
]  # fmt: skip


def one_of_each() -> dict[str, NewMessage]:
    """A representative message of every kind and option, by name."""
    media = {}
    for kind in ("image", "document", "audio", "video", "sticker"):
        link = f"{LINK}/{kind}"
        media[f"{kind}-link"] = api.media_message(TO, kind, link=link)
        media[f"{kind}-id"] = api.media_message(TO, kind, media_id="1234567890")
    return {
        "text": api.text_message(TO, "Bonjour Aya 👋"),
        "text-preview": api.text_message(
            TO, "Voir https://example.com/offre", preview_url=True
        ),
        "text-reply": api.text_message(TO, "Bien reçu", reply_to=WAMID),
        "template-params": api.template_message(TO, "rappel", "fr", ["Aya", "15 000"]),
        "template-none": api.template_message(TO, "hello_world", "en_US"),
        "template-components": api.template_message(
            TO, "facture", "fr", components=TEMPLATE_COMPONENTS
        ),
        "template-location-header": api.template_message(
            TO,
            "rendez_vous",
            "fr",
            language_policy="deterministic",
            components=[
                {
                    "type": "header",
                    "parameters": [
                        {
                            "type": "location",
                            "location": {
                                "latitude": 5.3364,
                                "longitude": -4.0267,
                                "name": "Agence",
                            },
                        }
                    ],
                }
            ],
        ),
        **media,
        "image-caption": api.media_message(TO, "image", link=LINK, caption="Reçu"),
        "video-caption": api.media_message(TO, "video", media_id="9", caption="Démo"),
        "document-full": api.media_message(
            TO, "document", link=LINK, caption="Facture", filename="facture.pdf"
        ),
        "sticker-reply": api.media_message(TO, "sticker", media_id="7", reply_to=WAMID),
        "location": api.location_message(
            TO, 5.3364, -4.0267, name="Agence Plateau", address="Abidjan"
        ),
        "location-bare": api.location_message(TO, -90, 180),
        "contacts": api.contacts_message(
            TO, [CONTACT, {"name": {"formatted_name": "B"}}]
        ),
        "reaction": api.reaction_message(TO, WAMID, "👍🏾"),
        "reaction-removed": api.reaction_message(TO, WAMID, ""),
        "buttons": api.buttons_message(
            TO, "Confirmez-vous ?", [("oui", "Oui"), ("non", "Non")], footer="Merci"
        ),
        "buttons-image-header": api.buttons_message(
            TO,
            "Votre reçu",
            [("ok", "OK")],
            header={"type": "image", "image": {"link": f"{LINK}/recu.png"}},
            reply_to=WAMID,
        ),
        "list": api.list_message(
            TO, "Choisissez", "Options", SECTIONS, header="Livraison", footer="Merci"
        ),
        "cta_url": api.interactive_message(
            TO,
            {
                "type": "cta_url",
                "header": {"type": "text", "text": "Offre"},
                "body": {"text": "Voir l'offre"},
                "footer": {"text": "Jusqu'au 31"},
                "action": {
                    "name": "cta_url",
                    "parameters": {
                        "display_text": "Ouvrir",
                        "url": "https://example.com/offre",
                    },
                },
            },
        ),
        "flow": api.interactive_message(
            TO,
            {
                "type": "flow",
                "body": {"text": "Inscription"},
                "action": {
                    "name": "flow",
                    "parameters": {
                        "flow_message_version": "3",
                        "flow_name": "inscription",
                        "flow_cta": "S'inscrire",
                        "mode": "published",
                    },
                },
            },
        ),
        "product": api.interactive_message(
            TO,
            {
                "type": "product",
                "action": {
                    "catalog_id": "146265584024623",
                    "product_retailer_id": "sku1",
                },
            },
        ),
        "product_list": api.interactive_message(
            TO,
            {
                "type": "product_list",
                "header": {"type": "text", "text": "Nos produits"},
                "body": {"text": "Sélection"},
                "action": {
                    "catalog_id": "146265584024623",
                    "sections": [
                        {
                            "title": "Pains",
                            "product_items": [{"product_retailer_id": "p1"}],
                        },
                        {
                            "title": "Gâteaux",
                            "product_items": [{"product_retailer_id": "g1"}],
                        },
                    ],
                },
            },
        ),
        "catalog_message": api.interactive_message(
            TO,
            {
                "type": "catalog_message",
                "body": {"text": "Notre catalogue"},
                "action": {"name": "catalog_message"},
            },
        ),
        "order_status": api.interactive_message(
            TO,
            {
                "type": "order_status",
                "body": {"text": "Commande expédiée"},
                "action": {
                    "name": "review_order",
                    "parameters": {
                        "reference_id": "cmd-42",
                        "order": {"status": "shipped"},
                    },
                },
            },
        ),
    }


def test_every_body_the_daemon_builds_matches_metas_schema(
    tmp_path: Path, request_schema: Draft202012Validator
) -> None:
    """One message of every kind and option validates against the spec."""
    messages = one_of_each()
    bodies = built(tmp_path / "q.sqlite", *messages.values())

    assert len(bodies) == len(messages)
    kinds = {body["type"] for body in bodies}
    assert kinds == {
        "text", "template", "image", "document", "audio", "video", "sticker",
        "location", "contacts", "reaction", "interactive",
    }  # fmt: skip
    for name, body in zip(messages, bodies, strict=True):
        try:
            assert_valid(request_schema, body)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from None
        assert body["recipient_type"] == "individual"
        assert body["to"] == "2250701020304"
        assert body["biz_opaque_callback_data"].isdigit()


def test_reply_context_and_options_are_sent_as_given(tmp_path: Path) -> None:
    """reply_to becomes context.message_id; preview_url and captions are kept."""
    reply, preview, image = built(
        tmp_path / "q.sqlite",
        api.location_message(TO, 5.3, -4.0, reply_to=WAMID),
        api.text_message(TO, "https://example.com", preview_url=True),
        api.media_message(TO, "image", media_id="55", caption="Reçu n°1"),
    )

    assert reply["context"] == {"message_id": WAMID}
    assert reply["location"] == {"latitude": 5.3, "longitude": -4.0}
    assert preview["text"] == {"body": "https://example.com", "preview_url": True}
    assert "context" not in preview
    assert image["image"] == {"id": "55", "caption": "Reçu n°1"}


# -- Meta's example requests ----------------------------------------------------------

# Examples that are not messages, with the reason they are not queued.
OUT_OF_SCOPE = {
    "send-typing-indicator-and-read-receipt.json": (
        'marks a received message as read ("status": "read") and shows the typing'
        " indicator: a call about a message, not a message, with no recipient"
    ),
}

# Placeholders that are not valid values, replaced by valid ones (a link
# must be an http(s) URL, a context or reaction id a wamid, a template name
# and language code of Meta's form). Ids such as <AUDIO_OBJECT_ID> are
# opaque to the daemon and kept as published.
LINK_FIXES = {
    "http(s)://image-url": f"{LINK}/image.png",
    "http(s)://the-image-url": f"{LINK}/image.png",
    "<http(s)://audio-url>": f"{LINK}/audio.ogg",
    "http(s)://audio-url": f"{LINK}/audio.ogg",
    "<http(s)://document-url>": f"{LINK}/document.pdf",
    "<http(s)://sticker-url>": f"{LINK}/sticker.webp",
    "<http(s)://video-url>": f"{LINK}/video.mp4",
    "<MSGID_OF_PREV_MSG>": WAMID,
    "<MSGID_OF_MSG_YOU_ARE_REPLYING_TO>": WAMID,
    "template-name": "template_name",
    "<TEMPLATE_NAME>": "template_name",
    "language-and-locale-code": "en_US",
    # send-multi-product-message: a product list's header is a text one.
    "<HEADER_TYPE>": "text",
    # send-order-status-message: a reference_id has at most 35 characters
    # (documentation of order details); this one has 42.
    "unique-reference-id-from-order-details-msg": "unique-reference-id",
}


def _fixed(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _fixed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_fixed(item) for item in value]
    return LINK_FIXES.get(value, value) if isinstance(value, str) else value


def corrected(name: str, example: dict[str, Any]) -> dict[str, Any]:
    """The example with its invalid placeholders and its slips corrected."""
    fixed: dict[str, Any] = _fixed(example)
    if "type" not in fixed:
        # send-text-message-with-preview-url and send-reply-to-list-message
        # leave type out; it is required (and without it Meta would read the
        # list as a text message, its default).
        fixed["type"] = "interactive" if "interactive" in fixed else "text"
    if name == "send-sample-issue-resolution-template.json":
        # Its quick_reply buttons carry {"type": "text", "text": true}: a
        # boolean where a text is due, and a quick reply's parameter is a
        # payload. Sent as Meta documents quick replies.
        for component in fixed["template"]["components"][1:]:
            [param] = component["parameters"]
            component["parameters"] = [
                {"type": "payload", "payload": str(param["text"]).lower()}
            ]
    return fixed


def queue_like(body: Mapping[str, Any]) -> NewMessage:
    """Queue the message a request body sends, through the public API."""
    kind = body["type"]
    value = body[kind]
    options: dict[str, Any] = {}
    if "context" in body:
        options["reply_to"] = body["context"]["message_id"]
    if kind == "text":
        return api.text_message(
            TO, value["body"], preview_url=value.get("preview_url", False), **options
        )
    if kind == "template":
        return api.template_message(
            TO,
            value["name"],
            value["language"]["code"],
            components=value.get("components"),
            language_policy=value["language"].get("policy"),
            **options,
        )
    if kind in ("image", "document", "audio", "video", "sticker"):
        return api.media_message(
            TO,
            kind,
            link=value.get("link"),
            media_id=value.get("id"),
            caption=value.get("caption"),
            filename=value.get("filename"),
            **options,
        )
    if kind == "location":
        place = {k: v for k, v in value.items() if k in ("name", "address")}
        return api.location_message(
            TO, value["latitude"], value["longitude"], **place, **options
        )
    if kind == "contacts":
        return api.contacts_message(TO, value, **options)
    if kind == "reaction":
        return api.reaction_message(TO, value["message_id"], value["emoji"], **options)
    return _interactive_like(value, options)


def _interactive_like(value: Mapping[str, Any], options: dict[str, Any]) -> NewMessage:
    header = value.get("header")
    if header is not None and header["type"] == "text":
        header = header["text"]
    footer = value["footer"]["text"] if "footer" in value else None
    if value["type"] == "button":
        pairs = [
            (b["reply"]["id"], b["reply"]["title"]) for b in value["action"]["buttons"]
        ]
        return api.buttons_message(
            TO, value["body"]["text"], pairs, header=header, footer=footer, **options
        )
    if value["type"] == "list":
        action = value["action"]
        return api.list_message(
            TO,
            value["body"]["text"],
            action["button"],
            action["sections"],
            header=header,
            footer=footer,
            **options,
        )
    return api.interactive_message(TO, value, **options)


def _example_names() -> list[str]:
    return sorted(path.name for path in EXAMPLES.glob("*.json"))


def test_every_example_is_either_sent_or_listed_out_of_scope() -> None:
    """No example is skipped silently: a new one must be handled or listed."""
    names = _example_names()
    assert len(names) == 50
    assert set(OUT_OF_SCOPE) <= set(names)
    for name in OUT_OF_SCOPE:
        example = json.loads((EXAMPLES / name).read_text(encoding="utf-8"))
        assert "type" not in example and example.get("status") == "read"


@pytest.mark.parametrize("name", [n for n in _example_names() if n not in OUT_OF_SCOPE])
def test_metas_example_is_queued_and_built_identically(
    tmp_path: Path, name: str, request_schema: Draft202012Validator
) -> None:
    """Queue the example's message, claim it, build it: the example comes back."""
    example = json.loads((EXAMPLES / name).read_text(encoding="utf-8"))
    expected = corrected(name, example)

    [body] = built(tmp_path / "q.sqlite", queue_like(expected))

    assert_valid(request_schema, body)
    assert body["to"] == "2250701020304"  # ours, normalised; the example's differs
    assert body.pop("biz_opaque_callback_data").isdigit()
    if "recipient_type" not in expected:
        assert body.pop("recipient_type") == "individual"
    assert {k: v for k, v in body.items() if k != "to"} == {
        k: v for k, v in expected.items() if k != "to"
    }


def test_an_examples_invalid_placeholder_is_refused_as_published() -> None:
    """The substitutions above are needed: the published values are refused."""
    assert refusal(lambda: api.media_message(TO, "image", link="http(s)://image-url"))
    assert refusal(lambda: api.text_message(TO, "x", reply_to="<MSGID_OF_PREV_MSG>"))
    assert refusal(lambda: api.template_message(TO, "template-name", "en_US"))
    quick_reply = {"type": "button", "sub_type": "quick_reply", "index": 0,
                   "parameters": [{"type": "text", "text": True}]}  # fmt: skip
    message = refusal(
        lambda: api.template_message(
            TO, "sample_issue", "en_US", components=[quick_reply]
        )
    )
    assert message.startswith("components[0].parameters[0].type:")


# -- limits: at the limit accepted, one over refused naming the field -----------------


def _list(rows: list[int] | None = None, **parts: Any) -> NewMessage:
    """A list message with ``rows[s]`` rows in section ``s`` (one row by default)."""

    def row_id(s: int, r: int) -> str:
        return str(parts.get("row_id", "r0-0")) if s == r == 0 else f"r{s}-{r}"

    made = [
        {
            "title": parts.get("section_title", f"Section {s}"),
            "rows": [
                {
                    "id": row_id(s, r),
                    "title": parts.get("row_title", "Ligne"),
                    "description": parts.get("description", "Détail"),
                }
                for r in range(count)
            ],
        }
        for s, count in enumerate(rows or [1])
    ]
    return api.list_message(
        TO,
        parts.get("body", "Choisissez"),
        parts.get("button", "Options"),
        made,
        header=parts.get("header"),
        footer=parts.get("footer"),
    )


def _buttons(count: int = 1, **parts: Any) -> NewMessage:
    pairs = [(f"b{n}", f"Choix {n}") for n in range(count)]
    if "title" in parts:
        pairs[0] = ("b0", parts["title"])
    if "id" in parts:
        pairs[0] = (parts["id"], "Choix 0")
    return api.buttons_message(
        TO,
        parts.get("body", "Votre choix ?"),
        pairs,
        header=parts.get("header"),
        footer=parts.get("footer"),
    )


def _template_buttons(count: int) -> NewMessage:
    buttons = [
        {"type": "button", "sub_type": "quick_reply", "index": str(n % 10),
         "parameters": [{"type": "payload", "payload": f"p{n}"}]}
        for n in range(count)
    ]  # fmt: skip
    return api.template_message(TO, "menu", "fr", components=buttons)


def _card(n: int) -> dict[str, Any]:
    return {"name": {"formatted_name": f"Contact {n}"}}


# name: (make a message from a length or count, the limit, the field named)
LIMITS: dict[str, tuple[Callable[[int], NewMessage], int, str]] = {
    "text body": (lambda n: api.text_message(TO, "é" * n), 4096, "text"),
    "image caption": (
        lambda n: api.media_message(TO, "image", link=LINK, caption="é" * n),
        1024,
        "image.caption",
    ),
    "video caption": (
        lambda n: api.media_message(TO, "video", media_id="1", caption="ç" * n),
        1024,
        "video.caption",
    ),
    "document caption": (
        lambda n: api.media_message(TO, "document", link=LINK, caption="à" * n),
        1024,
        "document.caption",
    ),
    "buttons count": (lambda n: _buttons(n), 3, "interactive.action.buttons"),
    "buttons body": (
        lambda n: _buttons(body="ô" * n),
        1024,
        "interactive.body.text",
    ),
    "button title": (
        lambda n: _buttons(title="é" * n),
        20,
        "interactive.action.buttons[0].reply.title",
    ),
    "button id": (
        lambda n: _buttons(id="i" * n),
        256,
        "interactive.action.buttons[0].reply.id",
    ),
    "buttons footer": (
        lambda n: _buttons(footer="é" * n),
        60,
        "interactive.footer.text",
    ),
    "buttons header": (
        lambda n: _buttons(header="é" * n),
        60,
        "interactive.header.text",
    ),
    "list button": (lambda n: _list(button="é" * n), 20, "interactive.action.button"),
    "list body": (lambda n: _list(body="é" * n), 4096, "interactive.body.text"),
    "list header": (lambda n: _list(header="é" * n), 60, "interactive.header.text"),
    "list footer": (lambda n: _list(footer="é" * n), 60, "interactive.footer.text"),
    "list sections": (lambda n: _list([1] * n), 10, "interactive.action.sections"),
    "list rows in all": (
        lambda n: _list([n - n // 2, n // 2]),
        10,
        "interactive.action.sections",
    ),
    "list section title": (
        lambda n: _list(section_title="é" * n),
        24,
        "interactive.action.sections[0].title",
    ),
    "list row title": (
        lambda n: _list(row_title="é" * n),
        24,
        "interactive.action.sections[0].rows[0].title",
    ),
    "list row id": (
        lambda n: _list(row_id="r" * n),
        200,
        "interactive.action.sections[0].rows[0].id",
    ),
    "list row description": (
        lambda n: _list(description="é" * n),
        72,
        "interactive.action.sections[0].rows[0].description",
    ),
    "contacts count": (
        lambda n: api.contacts_message(TO, [_card(i) for i in range(n)]),
        5,
        "contacts",
    ),
    "template header text": (
        lambda n: api.template_message(
            TO,
            "promo",
            "fr",
            components=[
                {"type": "header", "parameters": [{"type": "text", "text": "é" * n}]}
            ],
        ),
        60,
        "components[0].parameters[0].text",
    ),
    "template buttons": (lambda n: _template_buttons(n), 10, "components"),
}


@pytest.mark.parametrize("name", list(LIMITS))
def test_a_limit_is_accepted_at_its_value_and_refused_one_over(
    tmp_path: Path, name: str
) -> None:
    """Exactly at Meta's limit the message is queued; one more is refused."""
    make, limit, field = LIMITS[name]

    at_limit = make(limit)
    message = refusal(lambda: make(limit + 1))

    assert message.startswith(f"{field}:"), message
    [body] = built(tmp_path / "q.sqlite", at_limit)
    assert body["type"] == at_limit.message_type.value


def test_the_text_limit_counts_characters_not_bytes(tmp_path: Path) -> None:
    """4,096 two-byte characters (8,192 bytes) are one full text message."""
    text = "Bonjour Aïcha, " + "é" * (4096 - 15)
    assert len(text) == 4096 and len(text.encode()) > 4096

    [body] = built(tmp_path / "q.sqlite", api.text_message(TO, text))

    assert body["text"]["body"] == text
    assert "4,097 characters" in refusal(lambda: api.text_message(TO, text + "é"))


@pytest.mark.parametrize(
    ("axis", "edge"),
    [("latitude", 90), ("latitude", -90), ("longitude", 180), ("longitude", -180)],
)
def test_coordinates_are_accepted_to_their_edge_and_refused_beyond(
    axis: str, edge: float
) -> None:
    """Latitude -90..90, longitude -180..180, as numbers."""

    def place(value: Any) -> NewMessage:
        spot = {"latitude": 0.0, "longitude": 0.0, axis: value}
        return api.location_message(TO, spot["latitude"], spot["longitude"])

    place(edge)
    over = edge + (0.0001 if edge > 0 else -0.0001)
    assert refusal(lambda: place(over)).startswith(f"location.{axis}:")
    assert refusal(lambda: place(str(edge))).startswith(f"location.{axis}:")


NAN, INF = float("nan"), float("inf")


def flow(data: Any) -> dict[str, Any]:
    """A flow message whose ``flow_action_payload.data`` is ``data``."""
    payload = {"screen": "S", "data": data}
    return {
        "type": "flow",
        "body": {"text": "b"},
        "action": {
            "name": "flow",
            "parameters": {
                "flow_message_version": "3",
                "flow_cta": "Go",
                "flow_id": "1",
                "flow_action_payload": payload,
            },
        },
    }


def order_details(**extra: Any) -> dict[str, Any]:
    """An order_details message with ``extra`` keys in its open-ended parameters."""
    amount = {"value": 1000, "offset": 1}
    item = {"retailer_id": "r1", "name": "Pain", "amount": amount, "quantity": 1}
    order = {"status": "pending", "items": [item], "subtotal": amount}
    parameters = {
        "reference_id": "cmd-1",
        "type": "digital-goods",
        "currency": "XOF",
        "total_amount": amount,
        "order": order,
        **extra,
    }
    return {
        "type": "order_details",
        "body": {"text": "Votre commande"},
        "action": {"name": "review_and_pay", "parameters": parameters},
    }


def date_time(**extra: Any) -> list[dict[str, Any]]:
    """Template components: a body date_time with ``extra`` keys."""
    moment = {"fallback_value": "demain", **extra}
    return [
        {"type": "body", "parameters": [{"type": "date_time", "date_time": moment}]}
    ]


def button(sub_type: str, *parameters: dict[str, Any]) -> list[dict[str, Any]]:
    """Template components: one button of ``sub_type`` with ``parameters``."""
    return [
        {
            "type": "button",
            "sub_type": sub_type,
            "index": "0",
            "parameters": [*parameters],
        }
    ]


def nested(depth: int) -> Any:
    """Lists nested ``depth`` deep around a 1."""
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


REFUSED: dict[str, tuple[Callable[[], object], str]] = {
    "media with id and link": (
        lambda: api.media_message(TO, "image", link=LINK, media_id="1"),
        "image:",
    ),
    "media with neither": (lambda: api.media_message(TO, "video"), "video:"),
    "ftp link": (
        lambda: api.media_message(TO, "document", link="ftp://example.com/a.pdf"),
        "document.link:",
    ),
    "audio caption": (
        lambda: api.media_message(TO, "audio", media_id="1", caption="Écoutez"),
        "audio.caption:",
    ),
    "sticker caption": (
        lambda: api.media_message(TO, "sticker", media_id="1", caption="x"),
        "sticker.caption:",
    ),
    "image filename": (
        lambda: api.media_message(TO, "image", media_id="1", filename="a.png"),
        "image.filename:",
    ),
    "not a media kind": (lambda: api.media_message(TO, "gif", link=LINK), "kind:"),
    "duplicate button title": (
        lambda: api.buttons_message(TO, "?", [("a", "Oui"), ("b", "Oui")]),
        "interactive.action.buttons[].reply.title:",
    ),
    "duplicate button id": (
        lambda: api.buttons_message(TO, "?", [("a", "Oui"), ("a", "Non")]),
        "interactive.action.buttons[].reply.id:",
    ),
    "duplicate row id": (
        lambda: api.list_message(
            TO,
            "?",
            "Voir",
            [
                {"title": "A", "rows": [{"id": "x", "title": "Un"}]},
                {"title": "B", "rows": [{"id": "x", "title": "Deux"}]},
            ],
        ),
        "interactive.action.sections[].rows[].id:",
    ),
    "untitled section among several": (
        lambda: api.list_message(
            TO,
            "?",
            "Voir",
            [
                {"rows": [{"id": "x", "title": "Un"}]},
                {"title": "B", "rows": [{"id": "y", "title": "Deux"}]},
            ],
        ),
        "interactive.action.sections[0].title:",
    ),
    "list header not text": (
        lambda: api.interactive_message(
            TO,
            {
                "type": "list",
                "header": {"type": "image", "image": {"link": LINK}},
                "body": {"text": "?"},
                "action": {
                    "button": "Voir",
                    "sections": [{"rows": [{"id": "x", "title": "Un"}]}],
                },
            },
        ),
        "interactive.header.type:",
    ),
    "contact without formatted_name": (
        lambda: api.contacts_message(TO, [{"name": {"first_name": "Aya"}}]),
        "contacts[0].name.formatted_name:",
    ),
    "no contacts": (lambda: api.contacts_message(TO, []), "contacts:"),
    "reaction of two emoji": (
        lambda: api.reaction_message(TO, WAMID, "👍👍"),
        "reaction.emoji:",
    ),
    "reaction with a word": (
        lambda: api.reaction_message(TO, WAMID, "bravo"),
        "reaction.emoji:",
    ),
    "reaction to a non-wamid": (
        lambda: api.reaction_message(TO, "12345", "👍"),
        "reaction.message_id:",
    ),
    "reply to a non-wamid": (
        lambda: api.text_message(TO, "Oui", reply_to="12345"),
        "reply_to:",
    ),
    "unknown interactive type": (
        lambda: api.interactive_message(TO, {"type": "carousel", "action": {}}),
        "interactive.type:",
    ),
    "flow with id and name": (
        lambda: api.interactive_message(
            TO,
            {
                "type": "flow",
                "body": {"text": "?"},
                "action": {
                    "name": "flow",
                    "parameters": {
                        "flow_message_version": "3",
                        "flow_cta": "Go",
                        "flow_id": "1",
                        "flow_name": "n",
                    },
                },
            },
        ),
        "interactive.action.parameters:",
    ),
    "template params and components": (
        lambda: api.template_message(
            TO,
            "promo",
            "fr",
            ["Aya"],
            components=[
                {"type": "body", "parameters": [{"type": "text", "text": "Aya"}]}
            ],
        ),
        "content:",
    ),
    "template language form": (
        lambda: api.template_message(TO, "promo", "fr-FR"),
        "template_language:",
    ),
    "url button with payload": (
        lambda: api.template_message(
            TO,
            "promo",
            "fr",
            components=[
                {
                    "type": "button",
                    "sub_type": "url",
                    "index": "0",
                    "parameters": [{"type": "payload", "payload": "x"}],
                }
            ],
        ),
        "components[0].parameters[0].type:",
    ),
    "button index 10": (
        lambda: api.template_message(
            TO,
            "promo",
            "fr",
            components=[
                {
                    "type": "button",
                    "sub_type": "quick_reply",
                    "index": "10",
                    "parameters": [{"type": "payload", "payload": "x"}],
                }
            ],
        ),
        "components[0].index:",
    ),
    "body parameter with a line break": (
        lambda: api.template_message(TO, "promo", "fr", ["ligne 1\nligne 2"]),
        "param 1:",
    ),
    "empty components": (
        lambda: api.template_message(TO, "promo", "fr", components=[]),
        "components:",
    ),
    "kind without content": (lambda: api.message(TO, "image"), "content:"),
    # What strict JSON in UTF-8 cannot carry, wherever it is.
    "NaN in a flow's data": (
        lambda: api.interactive_message(TO, flow({"x": NAN})),
        "interactive.action.parameters.flow_action_payload.data.x: NaN ",
    ),
    "Infinity in a date_time's own key": (
        lambda: api.template_message(
            TO, "promo", "fr", components=date_time(day_of_month=INF)
        ),
        "components[0].parameters[0].date_time.day_of_month: Infinity ",
    ),
    "NaN in a template button's action": (
        lambda: api.template_message(
            TO,
            "promo",
            "fr",
            components=button(
                "flow",
                {"type": "action", "action": {"flow_action_data": {"n": [NAN]}}},
            ),
        ),
        "components[0].parameters[0].action.flow_action_data.n[0]: NaN ",
    ),
    "-Infinity in an order's own key": (
        lambda: api.interactive_message(TO, order_details(payment={"fee": -INF})),
        "interactive.action.parameters.payment.fee: -Infinity ",
    ),
    "NaN as a latitude": (
        lambda: api.location_message(TO, NAN, 0),
        "location.latitude:",
    ),
    "lists nested too deep": (
        lambda: api.interactive_message(TO, flow({"x": nested(40)})),
        "interactive.action.parameters.flow_action_payload.data.x[0]",
    ),
    "a value Python cannot write as JSON": (
        lambda: api.interactive_message(TO, flow({"when": datetime.now(UTC)})),
        "content:",
    ),
    "U+FFFD in a text": (lambda: api.text_message(TO, "caf\ufffd"), "text:"),
    "U+FFFD in a caption": (
        lambda: api.media_message(TO, "image", link=LINK, caption="re\ufffdu"),
        "image.caption:",
    ),
    "half an emoji in a text": (lambda: api.text_message(TO, "a\ud83d"), "text:"),
    "a lone surrogate as a caption": (
        lambda: api.media_message(TO, "image", link=LINK, caption="\udc00"),
        "image.caption:",
    ),
    "half an emoji as a reaction": (
        lambda: api.reaction_message(TO, WAMID, "\ud83d"),
        "reaction.emoji:",
    ),
    "a byte that was not UTF-8 in a parameter": (
        lambda: api.template_message(TO, "promo", "fr", ["abc\udcff"]),
        "param 1:",
    ),
    "a lone surrogate in a key": (
        lambda: api.interactive_message(TO, flow({"\udc00": 1})),
        "interactive.action.parameters.flow_action_payload.data.\\udc00:",
    ),
    "a lone surrogate in a number": (
        lambda: api.text_message("+2250701\udcff", "Bonjour"),
        "to:",
    ),
    "a voice_call button with a parameter": (
        lambda: api.template_message(
            TO, "appel", "fr", components=button("voice_call", {"type": "text"})
        ),
        "components[0].parameters: a voice_call button takes no parameters",
    ),
    "unknown kind": (lambda: api.message(TO, "carousel", body="x"), "message_type:"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_a_malformed_message_is_refused_naming_the_field(name: str) -> None:
    """One English line: the field, the value, the fix."""
    make, field = REFUSED[name]

    message = refusal(make)

    assert message.startswith(field), message
    assert any(word in message for word in ("give", "write", "remove", "keep",
                                            "make", "shorten", "leave",
                                            "flatten"))  # fmt: skip


def test_a_refused_message_queues_nothing(tmp_path: Path) -> None:
    """WhatsAppQueue.add_* raise before writing anything."""
    path = tmp_path / "q.sqlite"
    queue = WhatsAppQueue(path)
    queue.add_text(TO, "premier")

    with pytest.raises(InvalidMessageError, match=r"^image\.caption:"):
        queue.add_media(TO, "image", link=LINK, caption="é" * 1025)
    with pytest.raises(InvalidMessageError, match=r"^interactive\.action\.buttons:"):
        queue.add_buttons(TO, "?", [])
    with pytest.raises(InvalidMessageError, match=r"^location\.latitude:"):
        queue.add_location(TO, 91, 0)
    # Text UTF-8 cannot carry is refused before SQLite would choke on it.
    with pytest.raises(InvalidMessageError, match=r"^text:"):
        queue.add_text(TO, "a\ud83d")
    with pytest.raises(InvalidMessageError, match=r"^batch_id:"):
        queue.add_text(TO, "Bonjour", batch_id="no\udcffel")
    with pytest.raises(InvalidMessageError, match=r"^reaction\.emoji:"):
        queue.add_reaction(TO, WAMID, "\ud83d")

    assert [row["body"] for row in rows(path).values()] == ["premier"]


def test_a_quoted_value_is_always_text_utf8_can_carry() -> None:
    """show() escapes lone surrogates, so no error message carries one."""
    assert show("a\ud83d") == '"a\\ud83d"'
    assert show({"\udc00": "é"}) == '{"\\udc00": "é"}'
    assert show(float("nan")) == "NaN"
    for value in ("\udcff" * 100, ["\ud800"], nested(5000)):
        show(value).encode("utf-8")


def test_the_queue_object_adds_every_kind(tmp_path: Path) -> None:
    """The WhatsAppQueue methods store content and reply_to the daemon reads."""
    path = tmp_path / "q.sqlite"
    queue = WhatsAppQueue(path)
    ids = [
        queue.add_text(TO, "Bonjour", preview_url=True, reply_to=WAMID),
        queue.add_template(TO, "promo", "fr", components=TEMPLATE_COMPONENTS),
        queue.add_media(TO, "document", media_id="3", filename="a.pdf"),
        queue.add_location(TO, 5.3, -4.0, name="Agence"),
        queue.add_contacts(TO, [CONTACT]),
        queue.add_reaction(TO, WAMID, "🙏"),
        queue.add_buttons(TO, "?", [("a", "Oui")], batch_id="noel"),
        queue.add_list(TO, "?", "Voir", SECTIONS),
        queue.add_interactive(TO, {"type": "product", "action": {
            "catalog_id": "1", "product_retailer_id": "p"}}),
        queue.add_message(TO, "sticker", content={"link": f"{LINK}/s.webp"}),
    ]  # fmt: skip

    stored = rows(path)
    assert [stored[i]["message_type"] for i in ids] == [
        "text", "template", "document", "location", "contacts", "reaction",
        "interactive", "interactive", "interactive", "sticker",
    ]  # fmt: skip
    assert stored[ids[0]]["reply_to"] == WAMID
    assert json.loads(stored[ids[0]]["content"]) == {"preview_url": True}
    assert json.loads(stored[ids[1]]["content"]) == TEMPLATE_COMPONENTS
    assert json.loads(stored[ids[3]]["content"]) == {
        "latitude": 5.3, "longitude": -4.0, "name": "Agence"}  # fmt: skip
    assert stored[ids[6]]["batch_id"] == "noel"


# -- rows written by another program: the same checks at send time --------------------

# Rows as the PHP application could write them: (columns, French reason).
BAD_ROWS: dict[str, tuple[dict[str, Any], str]] = {
    "image without content": ({"message_type": "image"}, "content : manquant"),
    "content not JSON": (
        {"message_type": "image", "content": "{link: x}"},
        "content n'est pas du JSON",
    ),
    "image with id and link": (
        {"message_type": "image", "content": json.dumps({"id": "1", "link": LINK})},
        "image : il faut soit id soit link",
    ),
    "audio with a caption": (
        {
            "message_type": "audio",
            "content": json.dumps({"id": "1", "caption": "Écoutez"}),
        },
        "audio.caption : clé inconnue",
    ),
    "caption too long": (
        {
            "message_type": "video",
            "content": json.dumps({"link": LINK, "caption": "é" * 1025}),
        },
        "video.caption : 1025 caractères (max 1024)",
    ),
    "latitude as text": (
        {
            "message_type": "location",
            "content": json.dumps({"latitude": "5.3", "longitude": -4.0}),
        },
        "location.latitude : nombre attendu",
    ),
    "six contacts": (
        {
            "message_type": "contacts",
            "content": json.dumps([_card(n) for n in range(6)]),
        },
        "contacts : 6 éléments (de 1 à 5)",
    ),
    "four buttons": (
        {
            "message_type": "interactive",
            "content": json.dumps(
                {
                    "type": "button",
                    "body": {"text": "?"},
                    "action": {
                        "buttons": [
                            {
                                "type": "reply",
                                "reply": {"id": f"b{n}", "title": f"B{n}"},
                            }
                            for n in range(4)
                        ]
                    },
                }
            ),
        },
        "interactive.action.buttons : 4 éléments (de 1 à 3)",
    ),
    "reaction of a word": (
        {
            "message_type": "reaction",
            "content": json.dumps({"message_id": WAMID, "emoji": "ok"}),
        },
        'reaction.emoji : "ok" n\'est pas un seul emoji',
    ),
    "text with a bad reply_to": (
        {"body": "Oui", "reply_to": "12345"},
        'reply_to : "12345" n\'est pas un identifiant de message',
    ),
    "template with bad components": (
        {
            "message_type": "template",
            "template_name": "promo",
            "template_language": "fr",
            "content": json.dumps([{"type": "footer"}]),
        },
        'components[0].type : "footer" au lieu de header, body, button',
    ),
    "image with a body": (
        {
            "message_type": "image",
            "body": "Voici",
            "content": json.dumps({"link": LINK}),
        },
        "body : inutilisé pour un message image",
    ),
    # Strict JSON in UTF-8 only, refused before any attempt is counted.
    "NaN in a flow's data": (
        {"message_type": "interactive", "content": json.dumps(flow({"x": NAN}))},
        "interactive.action.parameters.flow_action_payload.data.x : NaN n'est pas"
        " un nombre JSON",
    ),
    "Infinity in a date_time's own key": (
        {
            "message_type": "template",
            "template_name": "promo",
            "template_language": "fr",
            "content": json.dumps(date_time(day_of_month=INF)),
        },
        "components[0].parameters[0].date_time.day_of_month : Infinity n'est pas",
    ),
    "NaN in a template button's action": (
        {
            "message_type": "template",
            "template_name": "promo",
            "template_language": "fr",
            "content": json.dumps(
                button("flow", {"type": "action", "action": {"data": {"n": NAN}}})
            ),
        },
        "components[0].parameters[0].action.data.n : NaN n'est pas",
    ),
    "-Infinity in an order's own key": (
        {
            "message_type": "interactive",
            "content": json.dumps(order_details(payment={"fee": -INF})),
        },
        "interactive.action.parameters.payment.fee : -Infinity n'est pas",
    ),
    "lists nested too deep": (
        {"message_type": "interactive", "content": json.dumps(flow(nested(40)))},
        "plus de 32 niveaux d'imbrication",
    ),
    "U+FFFD in a text": (
        {"body": "caf\ufffd"},
        "text : texte mal encodé (pas en UTF-8)",
    ),
    "U+FFFD in a flow's data": (
        {"message_type": "interactive", "content": json.dumps(flow({"x": "\ufffd"}))},
        "flow_action_payload.data.x : texte mal encodé",
    ),
    # JSON escapes of half an emoji: valid JSON, not text UTF-8 can carry.
    "half an emoji as a reaction": (
        {
            "message_type": "reaction",
            "content": '{"message_id": "wamid.ABC", "emoji": "\\ud83d"}',
        },
        "reaction.emoji : caractère invalide \\ud83d",
    ),
    "a lone surrogate as a caption": (
        {
            "message_type": "image",
            "content": f'{{"link": "{LINK}", "caption": "\\udc00"}}',
        },
        "image.caption : caractère invalide \\udc00",
    ),
    "a lone surrogate in a key": (
        {"message_type": "interactive", "content": json.dumps(flow({"\udc00": 1}))},
        "flow_action_payload.data.\\udc00 : caractère invalide",
    ),
    # JSON that Python's reader refuses other than by JSONDecodeError.
    "a number of 5,000 digits": (
        {
            "message_type": "location",
            "content": '{"latitude": ' + "1" * 5000 + ', "longitude": 0}',
        },
        "content n'est pas du JSON (nombre de plus de 4300 chiffres)",
    ),
    "content nested 100,000 deep": (
        {"message_type": "location", "content": "[" * 100_000},
        "content n'est pas du JSON (imbrication trop profonde)",
    ),
    "a key given twice": (
        {
            "message_type": "location",
            "content": '{"latitude": 5.3, "longitude": -4.0, "latitude": 48.8}',
        },
        'content n\'est pas du JSON (clé "latitude" en double dans un objet)',
    ),
    "template_params of 5,000 digits": (
        {
            "message_type": "template",
            "template_name": "promo",
            "template_language": "fr",
            "template_params": "[" + "9" * 5000 + "]",
        },
        "template_params n'est pas du JSON (nombre de plus de 4300 chiffres)",
    ),
    "template_params nested 100,000 deep": (
        {
            "message_type": "template",
            "template_name": "promo",
            "template_language": "fr",
            "template_params": "[" * 100_000,
        },
        "template_params n'est pas du JSON (imbrication trop profonde)",
    ),
    "a voice_call button with a parameter": (
        {
            "message_type": "template",
            "template_name": "appel",
            "template_language": "fr",
            "content": json.dumps(button("voice_call", {"type": "text"})),
        },
        "components[0].parameters : ce bouton ne prend pas de paramètre",
    ),
}


def insert_rows(
    path: Path, table: dict[str, tuple[dict[str, Any], str]]
) -> dict[str, int]:
    """Insert each row of ``table`` (to TO unless given); their ids by name."""
    return {
        name: insert_raw(path, **{"recipient": TO, **columns})
        for name, (columns, _) in table.items()
    }


def assert_failed_unsent(
    stored: dict[int, Any],
    ids: dict[str, int],
    table: dict[str, tuple[dict[str, Any], str]],
) -> None:
    """Each row failed with its table's reason, before any attempt."""
    for name, row_id in ids.items():
        assert stored[row_id]["status"] == "failed", name
        assert table[name][1] in stored[row_id]["error_message"], name
        assert stored[row_id]["attempts"] == 0, name


def claim_stored(path: Path, columns: dict[str, Any]) -> QueuedMessage:
    """Insert one row with plain SQL (to TO unless given) and claim it."""
    QueueDB.open(path).close()
    insert_raw(path, **{"recipient": TO, **columns})
    db = QueueDB.open(path)
    [claimed] = db.claim(datetime.now(UTC), 10, "test", LEASE)
    db.close()
    return claimed


@pytest.mark.parametrize("name", list(BAD_ROWS))
def test_a_bad_stored_row_fails_to_build_with_a_french_reason(
    tmp_path: Path, name: str
) -> None:
    """payloads.build runs the same checks on a row inserted with plain SQL."""
    columns, reason = BAD_ROWS[name]
    claimed = claim_stored(tmp_path / "q.sqlite", columns)

    with pytest.raises(InvalidMessageError) as caught:
        payloads.build(claimed, "CI")

    assert reason in str(caught.value)


async def test_bad_stored_rows_fail_at_send_time_and_nothing_is_sent(
    start_sandbox: StartSandbox, make_settings: Callable[..., Settings]
) -> None:
    """The daemon fails each bad row with its French reason and sends the good one.

    Each failure is logged; none is an internal error after an attempt.
    """
    sandbox = await start_sandbox()
    settings = make_settings(api_base_url=sandbox.url)
    path = settings.database_path
    QueueDB.open(path).close()
    bad = insert_rows(path, BAD_ROWS)
    good = insert_raw(
        path, recipient=TO, message_type="image", content=json.dumps({"link": LINK})
    )

    with log_to(settings.log_path) as log_file:
        async with running_daemon(settings) as run:
            await run.until(all_finished(path), what="every row")

    stored = rows(path)
    assert_failed_unsent(stored, bad, BAD_ROWS)
    assert stored[good]["status"] == "sent"
    assert [r["body"]["type"] for r in await sandbox.requests()] == ["image"]
    failures = [x for x in log_lines(log_file) if "Échec de l'envoi du message" in x]
    assert len(failures) == len(bad)
    assert not any("erreur interne" in x for x in failures)


async def test_columns_a_text_or_template_row_does_not_use_are_ignored(
    start_sandbox: StartSandbox, make_settings: Callable[..., Settings]
) -> None:
    """A text's template columns and a template's body are ignored, even junk.

    Those two kinds existed before the others, and the PHP application may
    leave such columns filled; the other kinds refuse them (BAD_ROWS).
    """
    sandbox = await start_sandbox()
    settings = make_settings(api_base_url=sandbox.url)
    path = settings.database_path
    QueueDB.open(path).close()
    text = insert_raw(
        path,
        recipient=TO,
        body="Bonjour",
        template_name="Pas un nom !",
        template_language="??",
        template_params="Aïcha, 52 000",
    )
    template = insert_raw(
        path,
        recipient="+2250701020305",
        message_type="template",
        template_name="rappel",
        template_language="fr",
        template_params='["Aya"]',
        body="caf\ufffd, jamais envoyé",
    )

    async with running_daemon(settings) as run:
        await run.until(all_finished(path), what="both rows")

    stored = rows(path)
    assert [stored[text]["status"], stored[template]["status"]] == ["sent", "sent"]
    received = {
        int(r["body"]["biz_opaque_callback_data"]): r["body"]
        for r in await sandbox.requests()
    }
    assert received[text]["text"] == {"body": "Bonjour", "preview_url": False}
    assert "template" not in received[text]
    assert received[template]["template"] == {
        "name": "rappel",
        "language": {"code": "fr"},
        "components": [
            {"type": "body", "parameters": [{"type": "text", "text": "Aya"}]}
        ],
    }
    assert "text" not in received[template]


def test_the_api_ignores_the_same_columns_and_does_not_store_them(
    tmp_path: Path,
) -> None:
    """Python callers get the rule the daemon applies to a stored row."""
    template = api.message(
        TO, "template", template_name="promo", template_language="fr", body="x\ud83d"
    )
    text = api.message(
        TO, "text", body="Bonjour", template_name="??", params=["a\ud83d"]
    )
    WhatsAppQueue(tmp_path / "q.sqlite").add([template, text])

    assert template.body is None
    assert (text.template_name, text.template_language, text.template_params) == (
        None,
        None,
        (),
    )
    stored = list(rows(tmp_path / "q.sqlite").values())
    assert [row["body"] for row in stored] == [None, "Bonjour"]
    assert [row["template_params"] for row in stored] == [None, None]
    body = refusal(lambda: api.message(TO, "image", content={"link": LINK}, body="x"))
    assert body.startswith("body:")


async def test_one_message_of_each_kind_reaches_the_api_as_built(
    start_sandbox: StartSandbox,
    make_settings: Callable[..., Settings],
    request_schema: Draft202012Validator,
) -> None:
    """The daemon sends every kind; the sandbox receives exactly the built body."""
    sandbox = await start_sandbox()
    settings = make_settings(api_base_url=sandbox.url)
    messages = one_of_each()
    ids = WhatsAppQueue(settings.database_path).add(messages.values())

    async with running_daemon(settings) as run:
        await run.until(all_finished(settings.database_path), what="every kind")

    stored = rows(settings.database_path)
    assert {stored[i]["status"] for i in ids} == {"sent"}
    received = {
        int(r["body"]["biz_opaque_callback_data"]): r["body"]
        for r in await sandbox.requests()
    }
    assert sorted(received) == sorted(ids)
    for row_id in ids:
        body = received[row_id]
        assert_valid(request_schema, body)
        # What arrived is what the builder makes of the stored row.
        row = stored[row_id]
        assert body[body["type"]] == _expected_object(row), body["type"]
        assert body.get("context", {}).get("message_id") == row["reply_to"]
        assert body["type"] == row["message_type"]


def _expected_object(row: Mapping[str, Any]) -> Any:
    """The kind's object a stored row must produce, read from its columns."""
    content = json.loads(row["content"]) if row["content"] else None
    if row["message_type"] == "text":
        preview = bool(content and content.get("preview_url"))
        return {"body": row["body"], "preview_url": preview}
    if row["message_type"] == "template":
        template: dict[str, Any] = {
            "name": row["template_name"],
            "language": {"code": row["template_language"]},
        }
        if isinstance(content, dict):
            template["language"]["policy"] = content["language_policy"]
            content = content.get("components")
        if content is not None:
            template["components"] = content
        elif row["template_params"]:
            params = json.loads(row["template_params"])
            template["components"] = [
                {
                    "type": "body",
                    "parameters": [{"type": "text", "text": p} for p in params],
                }
            ]
        return template
    return content


# -- the command line ------------------------------------------------------------------


@pytest.fixture
def enqueue(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``whatsapp-daemon enqueue ARGS`` on a database in ``tmp_path``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("WHATSAPP_") and not k.lower().endswith("_proxy")
    }
    env["WHATSAPP_DATABASE_PATH"] = str(tmp_path / "database.sqlite")
    env["WHATSAPP_LOG_PATH"] = str(tmp_path / "logs" / "whatsapp_queue.log")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "whatsapp_daemon", "enqueue", "--to", TO, *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    return run


def _stored(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "database.sqlite"
    if not path.exists():
        return []
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM whatsapp_queue")]


def test_cli_queues_kinds_from_json_and_files(
    tmp_path: Path, enqueue: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    """--kind and --content (inline, @file), --preview-url, --reply-to, --components."""
    card = tmp_path / "contact.json"
    card.write_text(json.dumps([CONTACT], ensure_ascii=False), encoding="utf-8")
    components = tmp_path / "components.json"
    components.write_text(json.dumps(TEMPLATE_COMPONENTS), encoding="utf-8")

    runs = [
        enqueue("--kind", "image", "--content", json.dumps({"link": LINK})),
        enqueue("--kind", "contacts", "--content", f"@{card}", "--reply-to", WAMID),
        enqueue("--text", "https://example.com", "--preview-url"),
        enqueue("--template", "facture", "--components", f"@{components}"),
        enqueue("--template", "rappel", "--param", "Aya", "--batch", "noel"),
    ]

    for done in runs:
        assert done.returncode == Exit.OK, done.stderr
        assert done.stdout.startswith("queued message ")
    image, contacts, text, template, legacy = _stored(tmp_path)
    assert json.loads(image["content"]) == {"link": LINK}
    assert (json.loads(contacts["content"]), contacts["reply_to"]) == ([CONTACT], WAMID)
    assert json.loads(text["content"]) == {"preview_url": True}
    assert json.loads(template["content"]) == TEMPLATE_COMPONENTS
    assert (legacy["template_params"], legacy["batch_id"]) == ('["Aya"]', "noel")


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        pytest.param(
            ["--kind", "image", "--content", json.dumps({"link": "ftp://x/y"})],
            Exit.DATA,
            "image.link:",
            id="bad-link",
        ),
        pytest.param(
            ["--kind", "location", "--content", "{latitude: 5}"],
            Exit.DATA,
            "--content: is not JSON",
            id="not-json",
        ),
        pytest.param(
            [
                "--kind",
                "reaction",
                "--content",
                json.dumps({"message_id": WAMID, "emoji": "👍👍"}),
            ],
            Exit.DATA,
            "reaction.emoji:",
            id="two-emoji",
        ),
        pytest.param(
            ["--text", "Oui", "--reply-to", "12345"], Exit.DATA, "reply_to:", id="reply"
        ),
        pytest.param(
            [
                "--kind",
                "reaction",
                "--content",
                json.dumps({"message_id": "", "emoji": "👍"}),
            ],
            Exit.DATA,
            "reaction.message_id: empty; give the wamid.… of the message",
            id="empty-wamid",
        ),
        pytest.param(["--kind", "image"], Exit.USAGE, "--content", id="no-content"),
        pytest.param(
            ["--template", "promo", "--preview-url"],
            Exit.USAGE,
            "--preview-url",
            id="preview-on-template",
        ),
        pytest.param(
            ["--text", "x", "--components", "[]"],
            Exit.USAGE,
            "--components",
            id="components-on-text",
        ),
        pytest.param(
            ["--text", "x", "--language", "en_US"],
            Exit.USAGE,
            "--language applies to --template only",
            id="language-on-text",
        ),
        pytest.param(
            ["--kind", "interactive", "--content", json.dumps(flow({"x": NAN}))],
            Exit.DATA,
            "interactive.action.parameters.flow_action_payload.data.x: NaN",
            id="nan",
        ),
        pytest.param(
            ["--text", "abc\udcff"],  # the byte 0xff in argv
            Exit.DATA,
            'text: "abc\\udcff" holds \\udcff',
            id="not-utf8-argument",
        ),
        pytest.param(
            ["--text", "caf\ufffd"], Exit.DATA, "holds U+FFFD", id="replacement"
        ),
        pytest.param(
            ["--kind", "location", "--content", '{"latitude": ' + "1" * 5000 + "}"],
            Exit.DATA,
            "--content: is not JSON (a number has more than 4,300 digits)",
            id="5000-digits",
        ),
        pytest.param(
            [
                "--kind",
                "location",
                "--content",
                '{"latitude": 5.3, "longitude": -4.0, "longitude": 2.3}',
            ],
            Exit.DATA,
            '--content: is not JSON (the key "longitude" appears twice in one'
            " object); keep only one of them",
            id="duplicate-key",
        ),
        pytest.param(
            ["--kind", "location", "--content", "[" * 100_000],
            Exit.DATA,
            "--content: is not JSON (nested too deeply to be read)",
            id="deep",
        ),
        pytest.param(
            [
                "--template",
                "appel",
                "--components",
                json.dumps(button("voice_call", {"type": "text", "text": "x"})),
            ],
            Exit.DATA,
            "components[0].parameters: a voice_call button takes no parameters",
            id="voice-call-parameter",
        ),
    ],
)
def test_cli_refuses_a_bad_message_in_one_line_and_queues_nothing(
    tmp_path: Path,
    enqueue: Callable[..., subprocess.CompletedProcess[str]],
    args: list[str],
    code: int,
    says: str,
) -> None:
    """Exit 65 for a bad message, 2 for options that do not go together."""
    done = enqueue(*args)

    assert done.returncode == code, done.stderr
    [line] = done.stderr.splitlines()
    assert says in line
    assert _stored(tmp_path) == []


def test_cli_names_a_missing_content_file(
    tmp_path: Path, enqueue: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    """--content @file that does not exist: one line naming the option, the
    file and the fix; nothing queued."""
    done = enqueue("--kind", "image", "--content", f"@{tmp_path / 'absent.json'}")

    assert done.returncode == Exit.DATA
    [line] = done.stderr.splitlines()
    assert line.endswith(
        f"--content: {tmp_path / 'absent.json'} cannot be read (No such file or"
        " directory); check the path after @"
    ), line
    assert _stored(tmp_path) == []


def test_cli_reads_a_content_file_as_utf8_json_or_says_why_not(
    tmp_path: Path, enqueue: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    """A file not in UTF-8, or JSON Python cannot read: one line, exit 65."""
    latin1 = tmp_path / "latin1.json"
    latin1.write_bytes('{"link": "https://example.com/reçu.png"}'.encode("latin-1"))
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000, encoding="utf-8")
    digits = tmp_path / "digits.json"
    digits.write_text('{"latitude": ' + "9" * 5000 + "}", encoding="utf-8")

    for path, kind, says in (
        (latin1, "image", "latin1.json is not UTF-8 text (byte 0xe7 at offset 32)"),
        (deep, "location", "deep.json is not JSON (nested too deeply to be read)"),
        (digits, "location", "digits.json is not JSON (a number has more than"),
    ):
        done = enqueue("--kind", kind, "--content", f"@{path}")
        assert done.returncode == Exit.DATA, done.stderr
        [line] = done.stderr.splitlines()
        assert f"--content: {tmp_path}" in line and says in line, line
    assert _stored(tmp_path) == []

    with_bom = tmp_path / "bom.json"
    with_bom.write_bytes(b"\xef\xbb\xbf" + json.dumps({"link": LINK}).encode())
    done = enqueue("--kind", "image", "--content", f"@{with_bom}")
    assert done.returncode == Exit.OK, done.stderr


@pytest.mark.parametrize("link", ["https://a.ci/f\n.png", "https://a.ci/\tf.png"])
def test_a_link_with_a_line_break_or_a_tab_is_refused(link: str) -> None:
    with pytest.raises(InvalidMessageError, match=r"^image\.link: "):
        api.media_message(TO, "image", link=link)


def test_a_number_too_long_to_write_is_refused_by_the_python_api(
    tmp_path: Path,
) -> None:
    queue = WhatsAppQueue(tmp_path / "database.sqlite")
    with pytest.raises(InvalidMessageError, match=r"^content: "):
        queue.add_location(TO, 10**5000, 1.0)


def test_a_send_time_without_a_time_zone_is_refused() -> None:
    """A naive datetime would be read in the host's zone: refused."""
    with pytest.raises(InvalidMessageError, match=r"^at: .* has no time zone"):
        api.text_message(TO, "Bonjour", at=datetime(2026, 12, 24, 8, 0))
    aware = api.text_message(TO, "Bonjour", at=datetime(2026, 12, 24, 8, 0, tzinfo=UTC))
    assert aware.scheduled_at == "2026-12-24 08:00:00"


def test_a_bad_number_is_told_to_carry_its_country_code() -> None:
    """The fix fits any country: the number with its code, not +225 only."""
    with pytest.raises(InvalidMessageError) as caught:
        api.text_message("+33 6 12", "Bonjour")
    message = str(caught.value)
    assert message.startswith('to: "+33 6 12" is not a valid number (')
    assert message.endswith("write it with its country code, as +2250701020304")


# -- numbers too big for a float, columns not stored as text, wrong types -------------

HUGE = 10**400  # a whole number JSON and Python read, too big to become a float


def test_a_huge_whole_number_is_refused_naming_its_field(
    tmp_path: Path, enqueue: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    """No OverflowError: the field, the value shortened and the range, everywhere."""
    content = '{"latitude": ' + str(HUGE) + ', "longitude": 0}'
    done = enqueue("--kind", "location", "--content", content)
    assert done.returncode == Exit.DATA, done.stderr
    [line] = done.stderr.splitlines()
    assert "location.latitude: 1000" in line, line
    assert line.endswith("is outside -90..90; give a value between -90 and 90")
    assert _stored(tmp_path) == []

    queue = WhatsAppQueue(tmp_path / "api.sqlite")
    message = refusal(lambda: queue.add_location(TO, HUGE, 0))
    assert message.startswith("location.latitude: 1000") and "…" in message
    assert len(message) < 120
    header = [
        {
            "type": "header",
            "parameters": [
                {"type": "location", "location": {"latitude": 0, "longitude": -HUGE}}
            ],
        }
    ]
    message = refusal(lambda: api.template_message(TO, "a", "fr", components=header))
    assert message.startswith("components[0].parameters[0].location.longitude: -1")
    assert not (tmp_path / "api.sqlite").exists() or rows(tmp_path / "api.sqlite") == {}

    path = tmp_path / "rows.sqlite"
    QueueDB.open(path).close()
    insert_raw(path, recipient=TO, message_type="location", content=content)
    db = QueueDB.open(path)
    [claimed] = db.claim(datetime.now(UTC), 10, "test", LEASE)
    db.close()
    with pytest.raises(InvalidMessageError) as caught:
        payloads.build(claimed, "CI")
    assert str(caught.value).startswith("location.latitude : 1000")
    assert str(caught.value).endswith("… hors de -90..90")


# Rows whose text columns another program stored as BLOBs that are not UTF-8
# text: (columns, the French reason naming the column).
LOCATION = json.dumps({"latitude": 5.3364, "longitude": -4.0267})
BLOB_ROWS: dict[str, tuple[dict[str, Any], str]] = {
    "content not UTF-8": (
        {"message_type": "location", "content": b"\xff{"},
        "content : pas du texte UTF-8 (BLOB, octet 0xff en position 0)",
    ),
    "content in UTF-16": (
        {"message_type": "location", "content": LOCATION.encode("utf-16")},
        "content : pas du texte UTF-8 (BLOB, octet 0xff en position 0)",
    ),
    "content in UTF-16 without its BOM": (
        {"message_type": "location", "content": LOCATION.encode("utf-16-le")},
        "content : pas du texte UTF-8 (BLOB, octet nul en position 1",
    ),
    "body not UTF-8": (
        {"body": b"\xff\xfe"},
        "body : pas du texte UTF-8 (BLOB, octet 0xff en position 0)",
    ),
    "body in Latin-1": (
        {"body": "Reçu".encode("latin-1")},
        "body : pas du texte UTF-8 (BLOB, octet 0xe7 en position 2)",
    ),
    "template_params in Latin-1": (
        {
            "message_type": "template",
            "template_name": "promo",
            "template_language": "fr",
            "template_params": '["Aïcha"]'.encode("latin-1"),
        },
        "template_params : pas du texte UTF-8",
    ),
    "template_name not UTF-8": (
        {
            "message_type": "template",
            "template_name": b"promo\xff",
            "template_language": "fr",
        },
        "template_name : pas du texte UTF-8",
    ),
    "reply_to not UTF-8": (
        {"body": "Oui", "reply_to": b"wamid.\xff"},
        "reply_to : pas du texte UTF-8",
    ),
    "message_type not UTF-8": (
        {"message_type": b"\xfftext", "body": "Oui"},
        "message_type : pas du texte UTF-8",
    ),
    "recipient in UTF-16": (
        {"recipient": TO.encode("utf-16"), "body": "Oui"},
        "recipient : pas du texte UTF-8",
    ),
    "an image's unused body not UTF-8": (
        {
            "message_type": "image",
            "content": json.dumps({"link": LINK}),
            "body": b"\xff",
        },
        "body : pas du texte UTF-8",
    ),
}


@pytest.mark.parametrize("name", list(BLOB_ROWS))
def test_a_blob_that_is_not_utf8_text_fails_its_row_naming_the_column(
    tmp_path: Path, name: str
) -> None:
    """Not "texte vide", not "plus de 4300 chiffres", and never sent as read."""
    columns, reason = BLOB_ROWS[name]
    path = tmp_path / "q.sqlite"
    claimed = claim_stored(path, columns)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        types = conn.execute(
            "SELECT typeof(recipient), typeof(message_type), typeof(body),"
            " typeof(template_name), typeof(template_params), typeof(content),"
            " typeof(reply_to) FROM whatsapp_queue"
        ).fetchone()
    assert "blob" in types  # stored as the PHP application's PDO LOB would

    with pytest.raises(InvalidMessageError) as caught:
        payloads.build(claimed, "CI")

    assert reason in str(caught.value)


def test_json_read_from_bytes_that_are_not_utf8_is_not_called_too_many_digits() -> None:
    """why_not_json tells a decoding error from a number too long to read."""

    with pytest.raises(ValueError) as caught:
        json.loads(b"\xff{")
    reason, _, french = messages.why_not_json(caught.value, "write valid JSON")
    assert "digits" not in reason and "chiffres" not in french
    assert "UTF-8" in reason and "UTF-8" in french


async def test_blob_columns_fail_or_send_as_the_text_they_hold(
    start_sandbox: StartSandbox, make_settings: Callable[..., Settings]
) -> None:
    """The daemon fails each BLOB that is not UTF-8 text, before any attempt and
    without an internal error, and sends a row whose BLOBs hold UTF-8 text."""
    sandbox = await start_sandbox()
    settings = make_settings(api_base_url=sandbox.url)
    path = settings.database_path
    QueueDB.open(path).close()
    bad = insert_rows(path, BLOB_ROWS)
    huge = insert_raw(
        path,
        recipient=TO,
        message_type="location",
        content='{"latitude": 0, "longitude": ' + str(HUGE) + "}",
    )
    good = insert_raw(
        path,
        recipient=b"+2250701020305",
        message_type=b"image",
        content=json.dumps({"link": LINK, "caption": "Reçu"}).encode(),
    )

    with log_to(settings.log_path) as log_file:
        async with running_daemon(settings) as run:
            await run.until(all_finished(path), what="every row")

    stored = rows(path)
    assert_failed_unsent(stored, bad, BLOB_ROWS)
    assert stored[huge]["status"] == "failed"
    assert stored[huge]["error_message"].startswith("location.longitude : 1000")
    assert stored[good]["status"] == "sent"
    [sent] = [r["body"] for r in await sandbox.requests()]
    assert (sent["to"], sent["type"]) == ("2250701020305", "image")
    assert sent["image"] == {"link": LINK, "caption": "Reçu"}
    failures = [x for x in log_lines(log_file) if "Échec de l'envoi du message" in x]
    assert len(failures) == len(bad) + 1
    assert not any("erreur interne" in x for x in failures)


# Arguments of the wrong type: (a call on an empty queue, the field it names).
WRONG_TYPES: dict[str, tuple[Callable[[WhatsAppQueue], object], str]] = {
    "a text as template params": (
        lambda q: q.add_template(TO, "t", "fr", "Aya"),
        'params: "Aya" is not a list',
    ),
    "a number among template params": (
        lambda q: q.add_template(TO, "t", "fr", ["Aya", 15000]),
        "param 2: 15000 is not a text",
    ),
    "no template params": (
        lambda q: q.add_template(TO, "t", "fr", None),
        "params: null is not a list",
    ),
    "bytes as a template name": (
        lambda q: q.add_template(TO, b"promo", "fr"),
        "template_name: b'promo' is not a text",
    ),
    "a number as the recipient": (
        lambda q: q.add_text(2250701020304, "hi"),
        "to: 2250701020304 is not a text",
    ),
    "a number as the region": (
        lambda q: WhatsAppQueue(q.path, region=225),
        "region: 225 is not a text",
    ),
    "a number as the text": (
        lambda q: q.add_text(TO, 5),
        "text: 5 is not a text",
    ),
    "a number as an image's body": (
        lambda q: q.add_message(TO, "image", content={"link": LINK}, body=0),
        "body: 0 is not a text",
    ),
    "bytes as the kind": (
        lambda q: q.add_message(TO, b"text", body="hi"),
        "message_type: b'text' is not a kind of message",
    ),
    "a list as a media kind": (
        lambda q: q.add_media(TO, ["image"], link=LINK),
        'kind: ["image"] is not a media kind',
    ),
    "a text as preview_url": (
        lambda q: q.add_text(TO, "hi", preview_url="no"),
        'preview_url: "no" is not True or False',
    ),
    "a number as reply_to": (
        lambda q: q.add_text(TO, "hi", reply_to=123),
        "reply_to: 123 is not a text",
    ),
    "a send time out of the calendar in UTC": (
        lambda q: q.add_text(
            TO, "hi", at=datetime.fromisoformat("0001-01-01T00:00:00+05:00")
        ),
        "at: 0001-01-01T00:00:00+05:00 is out of range",
    ),
    "a send time before the year 1000": (
        lambda q: q.add_text(TO, "hi", at=datetime(999, 12, 31, tzinfo=UTC)),
        "at: 0999-12-31T00:00:00+00:00 is out of range",
    ),
    "a date as the send time": (
        lambda q: q.add_text(TO, "hi", at=datetime(2026, 12, 24).date()),
        "at: datetime.date(2026, 12, 24) is not a datetime",
    ),
    "a text as the send time": (
        lambda q: q.add_text(TO, "hi", at="2026-12-24 08:00"),
        'at: "2026-12-24 08:00" is not a datetime',
    ),
    "no contacts": (
        lambda q: q.add_contacts(TO, None),
        "contacts: null is not a list",
    ),
    "one card instead of a list": (
        lambda q: q.add_contacts(TO, CONTACT),
        "contacts: {",
    ),
    "a button without a title": (
        lambda q: q.add_buttons(TO, "b", [("a",)]),
        'buttons[0]: ["a"] is not an (id, title) pair',
    ),
    "a text as a button": (
        lambda q: q.add_buttons(TO, "b", ["ab"]),
        'buttons[0]: "ab" is not an (id, title) pair',
    ),
    "a number as a header": (
        lambda q: q.add_buttons(TO, "b", [("a", "A")], header=5),
        "header: 5 is neither a text nor an object",
    ),
    "a text as the sections": (
        lambda q: q.add_list(TO, "b", "Voir", "Livraison"),
        'sections: "Livraison" is not a list',
    ),
    "a number as a section": (
        lambda q: q.add_list(TO, "b", "Voir", [5]),
        "sections[0]: 5 is not an object",
    ),
    "pairs as the interactive object": (
        lambda q: q.add_interactive(TO, [("type", "button")]),
        'interactive: [["type", "button"]] is not an object',
    ),
    "an object as the components": (
        lambda q: q.add_template(
            TO, "t", "fr", components={"components": TEMPLATE_COMPONENTS}
        ),
        'components: {"components":',
    ),
    "a number as the batch": (
        lambda q: q.add_text(TO, "hi", batch_id=2026),
        "batch_id: 2026 is not a batch id",
    ),
    "one message, not a list": (
        lambda q: q.add(api.text_message(TO, "hi")),
        "messages: a NewMessage is not a list of messages",
    ),
    "a text among the messages": (
        lambda q: q.add(["Bonjour"]),
        'messages[0]: "Bonjour" is not a message',
    ),
}


@pytest.mark.parametrize("name", list(WRONG_TYPES))
def test_an_argument_of_the_wrong_type_is_refused_naming_it(
    tmp_path: Path, name: str
) -> None:
    """One InvalidMessageError (field, value, fix), never another exception,
    never a wrong message queued."""
    call, says = WRONG_TYPES[name]
    path = tmp_path / "q.sqlite"
    queue = WhatsAppQueue(path)

    message = refusal(lambda: call(queue))

    assert message.startswith(says), message
    assert any(word in message for word in ("give", "write", "make", "use"))
    assert not path.exists() or rows(path) == {}


@pytest.mark.parametrize(
    "batch_id",
    ["noel-2026", "a" * 64, "lot\nsuivant", "lot\x1b[31m", "x" * 100_000, "-noel",
     "a" * 65, "noël", ""],
)  # fmt: skip
def test_the_api_refuses_the_batch_ids_the_command_line_refuses(
    tmp_path: Path, batch_id: str
) -> None:
    """Both use batches.check_batch_id: the same ids are kept and refused."""

    try:
        batches.check_batch_id(batch_id)
        cli_refuses = False
    except InvalidMessageError:
        cli_refuses = True
    queue = WhatsAppQueue(tmp_path / "q.sqlite")

    if cli_refuses:
        message = refusal(lambda: queue.add_text(TO, "Bonjour", batch_id=batch_id))
        assert message.startswith("batch_id: ") and len(message) < 200
        assert message.endswith("e.g. noel-2026")
        assert not (tmp_path / "q.sqlite").exists()
    else:
        row_id = queue.add_text(TO, "Bonjour", batch_id=batch_id)
        assert rows(tmp_path / "q.sqlite")[row_id]["batch_id"] == batch_id
    assert cli_refuses == (batch_id not in ("noel-2026", "a" * 64))


def test_a_content_file_that_never_ends_is_refused_after_a_megabyte(
    tmp_path: Path, enqueue: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    """--content @/dev/zero is not read forever: one line, nothing queued."""
    done = enqueue("--kind", "image", "--content", "@/dev/zero")

    assert done.returncode == Exit.DATA
    [line] = done.stderr.splitlines()
    assert line.endswith(
        "--content: /dev/zero is larger than 1,048,576 bytes; give the file that"
        " holds the message's JSON"
    ), line
    assert _stored(tmp_path) == []


def test_the_queue_refuses_a_path_the_daemon_cannot_be_reading(tmp_path: Path) -> None:
    """A mistyped folder is not created (the messages would wait there for
    ever), a folder is not a database, and a path must be a path."""
    missing = tmp_path / "nowhere" / "database.sqlite"
    with pytest.raises(InvalidMessageError, match=r"^path: the folder of .* does not"):
        WhatsAppQueue(missing).add_text(TO, "Bonjour")
    assert not missing.parent.exists()
    with pytest.raises(InvalidMessageError, match=r"^path: .* is a folder; give"):
        WhatsAppQueue(tmp_path).add_text(TO, "Bonjour")
    with pytest.raises(InvalidMessageError, match=r"^path: .* is not a path"):
        WhatsAppQueue(123)  # type: ignore[arg-type]
    # A database not created yet, in an existing folder, is created.
    assert WhatsAppQueue(tmp_path / "new.sqlite").add_text(TO, "Bonjour") == 1
