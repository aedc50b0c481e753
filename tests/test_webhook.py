"""The webhook: Meta's handshake, signed notifications, statuses and messages.

Every test serves the real webhook application on 127.0.0.1 in the test's
event loop (or as a real ``whatsapp-daemon webhook`` subprocess), posts
Meta's reference notifications (``tests/data/meta/examples``) signed with a
made-up app secret, and reads the real SQLite file it writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import errno
import gzip
import hashlib
import hmac
import json
import logging
import os
import plistlib
import re
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from conftest import ROOT, TOKEN, StartSandbox, daemon_env, until
from test_sending import enqueue_texts, log_lines, log_to, rows, running_daemon

from whatsapp_daemon import cli, deliveries, launchd, status, times, webhook
from whatsapp_daemon.cli import Exit
from whatsapp_daemon.errors import ConfigError
from whatsapp_daemon.queue import QueueDB
from whatsapp_daemon.settings import Settings

SECRET = "made-up-app-secret-0123456789abcdef"  # never a real app's
VERIFY = "made-up-verify-token-Zq81"
EXAMPLES = ROOT / "tests" / "data" / "meta" / "examples"
A, B, C, D = "+2250701020304", "+2250501020305", "+2250102030406", "+2250701020307"


# -- helpers -------------------------------------------------------------------


def example(name: str) -> dict[str, Any]:
    """One of Meta's reference notifications, as published."""
    data: dict[str, Any] = json.loads((EXAMPLES / name).read_text(encoding="utf-8"))
    return data


def sign(raw: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def statuses(*items: dict[str, Any]) -> dict[str, Any]:
    """Meta's status notification with its ``statuses[]`` replaced by ``items``.

    Each item starts from the published ``sent`` status and takes the
    fields given (``id``, ``status``, ``timestamp``, ...).
    """
    note = example("webhooks-status/status-read-v24-no-pricing.json")
    value = note["entry"][0]["changes"][0]["value"]
    template = value["statuses"][0]
    value["statuses"] = [{**copy.deepcopy(template), **item} for item in items]
    return note


def a_status(
    wamid: str, name: str, at: int, row_id: int | None = None, **more: Any
) -> dict[str, Any]:
    item: dict[str, Any] = {"id": wamid, "status": name, "timestamp": str(at)}
    if row_id is not None:
        item["biz_opaque_callback_data"] = str(row_id)
    return {**item, **more}


T0 = 1_790_000_000  # a unix time for the statuses' timestamps


def utc(unix: int) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%d %H:%M:%S")


class Hook:
    """The webhook served in the test's loop, and a client for it."""

    def __init__(self, port: int, path: str) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}{path}"

    async def get(self, **params: str) -> httpx.Response:
        async with httpx.AsyncClient() as client:
            return await client.get(self.url, params=params)

    async def post(
        self, raw: bytes, signature: str | None, **headers: str
    ) -> httpx.Response:
        if signature is not None:
            headers["X-Hub-Signature-256"] = signature
        headers.setdefault("Content-Type", "application/json")
        async with httpx.AsyncClient(timeout=30) as client:
            return await client.post(self.url, content=raw, headers=headers)

    async def notify(self, payload: dict[str, Any]) -> httpx.Response:
        """Post a notification the way Meta does: raw bytes, signed."""
        raw = json.dumps(payload, indent=2, ensure_ascii=False).encode()
        return await self.post(raw, sign(raw))


@pytest.fixture(autouse=True)
def local_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep HTTP on loopback and settings out of the outer environment."""
    for key in list(os.environ):
        if key.lower().endswith("_proxy") or key.startswith("WHATSAPP_"):
            monkeypatch.delenv(key)


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(
        webhook_verify_token=VERIFY, app_secret=SECRET, webhook_path="/hooks/meta"
    )


@pytest.fixture
def log_file(settings: Settings) -> Iterator[Path]:
    """The log at DEBUG, with no redaction: a secret would show as is."""
    with log_to(settings.log_path, level="DEBUG") as path:
        yield path


@pytest.fixture
async def hook(settings: Settings, log_file: Path) -> AsyncIterator[Hook]:
    runner, port = await webhook.start(settings, "127.0.0.1", 0)
    try:
        yield Hook(port, settings.webhook_path)
    finally:
        await runner.cleanup()


@pytest.fixture
def queue(settings: Settings) -> Iterator[QueueDB]:
    db = QueueDB.open(settings.database_path)
    yield db
    db.close()


def sent_row(db: QueueDB, recipient: str, wamid: str) -> int:
    """Queue a text, claim it and record Meta's acceptance under ``wamid``."""
    [row_id] = enqueue_texts(Path(db_path(db)), recipient)
    claim(db, row_id)
    db.mark_sent(row_id, wamid, datetime.now(UTC))
    return row_id


def claim(db: QueueDB, row_id: int) -> None:
    """Claim the row and start its attempt: it is ``processing``, in flight."""
    now = datetime.now(UTC)
    claimed = db.claim(now, 100, "test", timedelta(minutes=10))
    assert row_id in {message.id for message in claimed}
    db.begin_attempt(row_id, now)


def db_path(db: QueueDB) -> str:
    return str(db.conn.execute("PRAGMA database_list").fetchone()[2])


def snapshot(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Everything the webhook could change."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return {
            table: sorted(conn.execute(f"SELECT * FROM {table}").fetchall(), key=str)
            for table in ("whatsapp_queue", "whatsapp_statuses", "whatsapp_contacts")
        }


def stored_statuses(path: Path) -> list[dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.row_factory = sqlite3.Row
        found = conn.execute("SELECT * FROM whatsapp_statuses ORDER BY rowid")
        return [dict(row) for row in found]


def levels(path: Path) -> list[tuple[str, str]]:
    found = []
    for line in log_lines(path):
        match = re.match(r"^\[[^\]]+\] whatsapp_queue\.(\w+): (.+)$", line)
        assert match, line
        found.append((match[1], match[2]))
    return found


# -- the handshake -----------------------------------------------------------------


async def test_handshake_answers_the_raw_challenge_with_the_verify_token(
    hook: Hook, log_file: Path
) -> None:
    """GET with mode subscribe and the right token: 200, the challenge as text."""
    response = await hook.get(
        **{
            "hub.mode": "subscribe",
            "hub.verify_token": VERIFY,
            "hub.challenge": "1158201444",
        }
    )
    assert response.status_code == 200
    assert response.text == "1158201444"
    assert response.headers["Content-Type"].startswith("text/plain")
    assert VERIFY not in log_file.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "params",
    [
        {"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "42"},
        {"hub.mode": "unsubscribe", "hub.verify_token": VERIFY, "hub.challenge": "42"},
        {"hub.mode": "subscribe", "hub.challenge": "42"},
        {
            "hub.mode": "subscribe",
            "hub.verify_token": VERIFY[:-1],
            "hub.challenge": "42",
        },
        {},
    ],
    ids=["wrong-token", "wrong-mode", "no-token", "token-prefix", "nothing"],
)
async def test_handshake_refuses_anything_else_with_403(
    hook: Hook, log_file: Path, params: dict[str, str]
) -> None:
    """A wrong token or mode is refused, and the challenge is not echoed."""
    response = await hook.get(**params)
    assert response.status_code == 403
    assert "42" not in response.text
    assert ("WARNING", "Vérification du webhook refusée") in [
        (level, text.split(" (")[0]) for level, text in levels(log_file)
    ]
    assert VERIFY not in log_file.read_text(encoding="utf-8")


# -- signatures ----------------------------------------------------------------------


@pytest.fixture
def delivered_note(queue: QueueDB) -> tuple[int, bytes]:
    """A row sent under a wamid, and Meta's raw 'delivered' notification for it."""
    row_id = sent_row(queue, A, "wamid.SIGNED")
    note = statuses(a_status("wamid.SIGNED", "delivered", T0, row_id))
    return row_id, json.dumps(note, indent=2).encode()


async def test_notification_without_signature_is_refused_401(
    hook: Hook, settings: Settings, delivered_note: tuple[int, bytes]
) -> None:
    """No X-Hub-Signature-256: 401, and the database does not change."""
    before = snapshot(settings.database_path)
    response = await hook.post(delivered_note[1], None)
    assert response.status_code == 401
    assert snapshot(settings.database_path) == before


@pytest.mark.parametrize(
    "make_signature",
    [
        lambda raw: sign(raw, "another-app-secret"),
        lambda raw: "sha256=" + "0" * 64,
        lambda raw: sign(raw).removeprefix("sha256="),
        lambda raw: "sha1=" + hmac.new(SECRET.encode(), raw, "sha1").hexdigest(),
        lambda raw: "sha256=" + "zz" * 32,
    ],
    ids=["other-secret", "zeros", "no-prefix", "sha1", "not-hex"],
)
async def test_notification_with_a_wrong_signature_is_refused_403(
    hook: Hook,
    settings: Settings,
    delivered_note: tuple[int, bytes],
    make_signature: Callable[[bytes], str],
) -> None:
    """A signature that is not the app secret's HMAC of the body: 403, no change."""
    before = snapshot(settings.database_path)
    raw = delivered_note[1]
    response = await hook.post(raw, make_signature(raw))
    assert response.status_code == 403
    assert snapshot(settings.database_path) == before


async def test_signature_of_re_encoded_json_is_refused_403(
    hook: Hook, settings: Settings, delivered_note: tuple[int, bytes]
) -> None:
    """The HMAC is over the raw bytes: the same JSON encoded otherwise fails."""
    raw = delivered_note[1]
    compact = json.dumps(json.loads(raw), separators=(",", ":")).encode()
    assert compact != raw and json.loads(compact) == json.loads(raw)
    before = snapshot(settings.database_path)
    response = await hook.post(raw, sign(compact))
    assert response.status_code == 403
    assert snapshot(settings.database_path) == before
    # The same bytes, correctly signed, are accepted and applied.
    assert (await hook.post(raw, sign(raw))).status_code == 200
    assert rows(settings.database_path)[delivered_note[0]]["status"] == "delivered"


async def test_a_compressed_body_is_refused_415_whatever_its_signature(
    hook: Hook, settings: Settings, delivered_note: tuple[int, bytes]
) -> None:
    """The signature covers the bytes sent: a gzip body (which aiohttp would
    decompress first) is refused, signed over either form."""
    raw = delivered_note[1]
    packed = gzip.compress(raw)
    before = snapshot(settings.database_path)
    for signed in (raw, packed):
        response = await hook.post(packed, sign(signed), **{"Content-Encoding": "gzip"})
        assert response.status_code == 415
    assert snapshot(settings.database_path) == before


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
async def test_a_body_that_is_not_what_its_encoding_says_is_one_warning(
    hook: Hook, settings: Settings, log_file: Path, signed: bool
) -> None:
    """ "gzip" over bytes that are not gzip: 401 or 415 as for any compressed
    body, and no traceback in the log, since anyone can send it."""
    before = snapshot(settings.database_path)
    body = b"hello, not gzip"
    response = await hook.post(
        body, sign(body) if signed else None, **{"Content-Encoding": "gzip"}
    )
    assert response.status_code == (415 if signed else 401)
    assert snapshot(settings.database_path) == before
    said = levels(log_file)
    assert not [text for level, text in said if level in ("ERROR", "CRITICAL")], said
    assert "Traceback" not in log_file.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(
            b"Content-Encoding: identity\r\nContent-Encoding: gzip\r\n", id="two"
        ),
        pytest.param(
            b"Content-Encoding: \r\nContent-Encoding: gzip\r\n", id="empty-first"
        ),
        pytest.param(b"Content-Encoding: identity, gzip\r\n", id="a-list"),
    ],
)
async def test_every_content_encoding_header_counts(
    hook: Hook, settings: Settings, log_file: Path, headers: bytes
) -> None:
    """A gzip hidden behind a first "identity" is still refused 415, before
    anything is decompressed."""
    before = snapshot(settings.database_path)
    body = b"not gzip at all"
    answer = await raw_exchange(
        hook.port,
        b"POST /hooks/meta HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        + headers
        + b"X-Hub-Signature-256: sha256=00\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body,
    )
    assert answer.startswith(b"HTTP/1.1 415"), answer
    assert snapshot(settings.database_path) == before
    said = levels(log_file)
    assert not [text for level, text in said if level in ("ERROR", "CRITICAL")], said


async def test_body_larger_than_3_mb_is_refused_413(
    hook: Hook, settings: Settings
) -> None:
    """Meta sends at most 3 MB: more is refused before the signature is read."""
    before = snapshot(settings.database_path)
    note = statuses(a_status("wamid.BIG", "sent", T0))
    note["padding"] = "x" * (3 * 1024 * 1024)
    raw = json.dumps(note).encode()
    response = await hook.post(raw, sign(raw))
    assert response.status_code == 413
    assert snapshot(settings.database_path) == before


async def test_signed_but_unreadable_body_is_acknowledged_and_logged(
    hook: Hook, settings: Settings, log_file: Path
) -> None:
    """Not JSON, or JSON that is not a notification: 200 (Meta would retry for
    days a body that never parses), an ERROR line, nothing recorded."""
    before = snapshot(settings.database_path)
    for raw in (b"{not json", b"\xff\xfe", b"[1, 2]", b'{"entry": [{"changes": 3}]}'):
        response = await hook.post(raw, sign(raw))
        assert response.status_code == 200, raw
    assert snapshot(settings.database_path) == before
    errors = [text for level, text in levels(log_file) if level == "ERROR"]
    assert len(errors) == 4
    assert all(text.startswith("Notification du webhook illisible") for text in errors)


# -- statuses -----------------------------------------------------------------------


async def test_sent_delivered_read_move_the_row_forward(
    hook: Hook, settings: Settings, queue: QueueDB, log_file: Path
) -> None:
    """Each status is stored, then applied: sent, delivered (its time), read."""
    row_id = sent_row(queue, A, "wamid.FORWARD")
    for name, at in (("sent", T0), ("delivered", T0 + 5), ("read", T0 + 60)):
        response = await hook.notify(
            statuses(a_status("wamid.FORWARD", name, at, row_id))
        )
        assert response.status_code == 200
        assert rows(settings.database_path)[row_id]["status"] == name
    row = rows(settings.database_path)[row_id]
    assert (row["delivered_at"], row["read_at"]) == (utc(T0 + 5), utc(T0 + 60))
    assert row["wamid"] == "wamid.FORWARD"
    stored = stored_statuses(settings.database_path)
    assert [(s["status"], s["message_id"]) for s in stored] == [
        ("sent", row_id),
        ("delivered", row_id),
        ("read", row_id),
    ]
    assert all(s["applied_at"] and s["recipient"] == "16505551234" for s in stored)
    applied = [t for level, t in levels(log_file) if level == "DEBUG"]
    assert sum(t.startswith("Statut de remise appliqué") for t in applied) == 2


async def test_statuses_out_of_order_never_move_a_row_back(
    hook: Hook, settings: Settings, queue: QueueDB
) -> None:
    """read before delivered, delivered before sent: the row stays read, and
    each time is kept (the earliest report wins)."""
    first = sent_row(queue, A, "wamid.ORDER1")
    second = sent_row(queue, B, "wamid.ORDER2")
    for name, at in (("read", T0 + 60), ("delivered", T0 + 5), ("sent", T0)):
        await hook.notify(statuses(a_status("wamid.ORDER1", name, at, first)))
    for name, at in (("delivered", T0 + 5), ("sent", T0)):
        await hook.notify(statuses(a_status("wamid.ORDER2", name, at, second)))
    found = rows(settings.database_path)
    assert found[first]["status"] == "read"
    assert (found[first]["delivered_at"], found[first]["read_at"]) == (
        utc(T0 + 5),
        utc(T0 + 60),
    )
    assert found[second]["status"] == "delivered"
    assert found[second]["delivered_at"] == utc(T0 + 5)
    # A late failure does not undo a delivery either.
    failed = example("webhooks-status/status-failed-131049.json")
    item = failed["entry"][0]["changes"][0]["value"]["statuses"][0]
    item["id"] = "wamid.ORDER2"
    await hook.notify(failed)
    assert rows(settings.database_path)[second]["status"] == "delivered"
    assert rows(settings.database_path)[second]["error_code"] is None


async def test_played_counts_as_read(
    hook: Hook, settings: Settings, queue: QueueDB
) -> None:
    row_id = sent_row(queue, A, "wamid.VOICE")
    await hook.notify(statuses(a_status("wamid.VOICE", "played", T0 + 9, row_id)))
    row = rows(settings.database_path)[row_id]
    assert (row["status"], row["read_at"]) == ("read", utc(T0 + 9))


async def test_the_same_notification_twice_changes_nothing(
    hook: Hook, settings: Settings, queue: QueueDB
) -> None:
    """Meta retries: the second copy is recognised and changes nothing."""
    row_id = sent_row(queue, A, "wamid.TWICE")
    note = statuses(a_status("wamid.TWICE", "delivered", T0 + 5, row_id))
    assert (await hook.notify(note)).status_code == 200
    once = snapshot(settings.database_path)
    assert (await hook.notify(note)).status_code == 200
    assert snapshot(settings.database_path) == once
    assert rows(settings.database_path)[row_id]["status"] == "delivered"


async def test_status_before_the_send_response_is_applied_by_mark_sent(
    hook: Hook, settings: Settings, queue: QueueDB
) -> None:
    """The row is still processing (its wamid not stored): the statuses wait,
    then the transaction that stores the wamid applies them."""
    [row_id] = enqueue_texts(settings.database_path, A)
    claim(queue, row_id)
    for name, at in (("delivered", T0 + 5), ("sent", T0)):
        note = statuses(a_status("wamid.EARLY", name, at, row_id))
        assert (await hook.notify(note)).status_code == 200
    row = rows(settings.database_path)[row_id]
    assert (row["status"], row["wamid"]) == ("processing", None)
    assert all(s["applied_at"] is None for s in stored_statuses(settings.database_path))
    summary = status.gather(settings, datetime.now(UTC))
    assert summary["webhook"]["statuses_waiting"] == 2

    queue.mark_sent(row_id, "wamid.EARLY", datetime.now(UTC))

    row = rows(settings.database_path)[row_id]
    assert (row["status"], row["delivered_at"]) == ("delivered", utc(T0 + 5))
    assert all(s["applied_at"] for s in stored_statuses(settings.database_path))


async def test_status_proves_an_unknown_row_was_accepted(
    hook: Hook, settings: Settings, queue: QueueDB
) -> None:
    """A row of unknown outcome (no wamid) that gets a status by its row id is
    accepted: it takes the wamid and the status."""
    [row_id] = enqueue_texts(settings.database_path, A)
    claim(queue, row_id)
    queue.mark_unknown(row_id, "timeout", datetime.now(UTC))
    await hook.notify(statuses(a_status("wamid.PROVEN", "delivered", T0 + 5, row_id)))
    row = rows(settings.database_path)[row_id]
    assert (row["status"], row["wamid"]) == ("delivered", "wamid.PROVEN")
    assert row["error_message"] is None
    assert row["sent_at"] is not None


async def test_status_while_in_flight_then_unknown_is_applied_by_mark_unknown(
    hook: Hook, settings: Settings, queue: QueueDB
) -> None:
    """A status comes while the request is in flight, then the daemon loses the
    answer (timeout): the stored status settles the row."""
    [row_id] = enqueue_texts(settings.database_path, A)
    claim(queue, row_id)
    await hook.notify(statuses(a_status("wamid.LOST", "sent", T0, row_id)))
    queue.mark_unknown(row_id, "timeout", datetime.now(UTC))
    row = rows(settings.database_path)[row_id]
    assert (row["status"], row["wamid"]) == ("sent", "wamid.LOST")


async def test_row_id_is_not_trusted_against_another_wamid(
    hook: Hook, settings: Settings, queue: QueueDB
) -> None:
    """biz_opaque_callback_data names a row whose wamid is another: no change."""
    row_id = sent_row(queue, A, "wamid.MINE")
    await hook.notify(statuses(a_status("wamid.OTHER", "failed", T0, row_id)))
    assert rows(settings.database_path)[row_id]["status"] == "sent"
    [kept] = stored_statuses(settings.database_path)
    assert kept["applied_at"] is None


async def test_failed_status_stores_the_error_and_the_status_groups_it(
    hook: Hook, settings: Settings, queue: QueueDB, log_file: Path
) -> None:
    """Meta's published 'failed' (131049): code, a French reason with Meta's
    title and details, the details as JSON with href; shown by code."""
    note = example("webhooks-status/status-failed-131049.json")
    item = note["entry"][0]["changes"][0]["value"]["statuses"][0]
    first = sent_row(queue, A, item["id"])
    second = sent_row(queue, B, "wamid.FAILED2")
    await hook.notify(note)
    item["id"] = "wamid.FAILED2"
    await hook.notify(note)

    row = rows(settings.database_path)[first]
    assert (row["status"], row["error_code"]) == ("failed", 131049)
    error = item["errors"][0]
    assert error["title"] in row["error_message"]
    assert error["error_data"]["details"] in row["error_message"]
    details = json.loads(row["error_details"])
    assert details["href"] == error["href"]
    assert details["code"] == 131049
    assert rows(settings.database_path)[second]["status"] == "failed"

    report = status.gather(settings, datetime.now(UTC))
    [group] = [f for f in report["failures"] if f["code"] == 131049]
    assert group["count"] == 2
    assert group["meaning"]
    assert "131049" in status.render(report)
    warnings = [t for level, t in levels(log_file) if level == "WARNING"]
    assert sum(t.startswith("Message non remis") for t in warnings) == 2


def test_failure_reason_is_never_empty() -> None:
    """A failed status without errors, or with an unknown code, still says why."""
    for errors in (None, [], [{"code": 999999}], [{"title": "T"}]):
        item = a_status("wamid.X", "failed", T0, errors=errors)
        _, reason, details = deliveries._failure(deliveries._parse_status(item))
        assert reason.strip()
        assert details is not None


async def test_status_of_an_unknown_message_is_kept_then_applied(
    hook: Hook, settings: Settings, queue: QueueDB, log_file: Path
) -> None:
    """No row has the wamid and no row id is given: kept; applied when a row
    gets that wamid."""
    await hook.notify(statuses(a_status("wamid.LATER", "read", T0 + 60)))
    [kept] = stored_statuses(settings.database_path)
    assert (kept["applied_at"], kept["message_id"]) == (None, None)
    assert any(
        level == "DEBUG" and text.startswith("Statut reçu avant")
        for level, text in levels(log_file)
    )
    row_id = sent_row(queue, A, "wamid.LATER")
    row = rows(settings.database_path)[row_id]
    assert (row["status"], row["read_at"]) == ("read", utc(T0 + 60))


async def test_one_bad_item_does_not_stop_the_others(
    hook: Hook, settings: Settings, queue: QueueDB, log_file: Path
) -> None:
    """Among good statuses: one without id, one of an unknown kind, one with a
    bad timestamp, one not an object. The good ones are applied."""
    first = sent_row(queue, A, "wamid.GOOD1")
    second = sent_row(queue, B, "wamid.GOOD2")
    note = statuses(
        a_status("wamid.GOOD1", "delivered", T0, first),
        a_status("", "delivered", T0),
        a_status("wamid.GOOD1", "vanished", T0),
        a_status("wamid.GOOD2", "read", T0),
        a_status("wamid.GOOD2", "delivered", "yesterday"),  # type: ignore[arg-type]
    )
    note["entry"][0]["changes"][0]["value"]["statuses"].append("nonsense")
    assert (await hook.notify(note)).status_code == 200
    found = rows(settings.database_path)
    assert (found[first]["status"], found[second]["status"]) == ("delivered", "read")
    errors = [t for level, t in levels(log_file) if level == "ERROR"]
    assert len(errors) == 4
    assert all(
        t.startswith("Notification du webhook ignorée en partie") for t in errors
    )


async def test_errors_not_tied_to_a_message_are_logged(
    hook: Hook, settings: Settings, log_file: Path
) -> None:
    """value.errors[] (Meta's 130429 example): an ERROR with code, title, details."""
    before = snapshot(settings.database_path)
    assert (
        await hook.notify(example("webhooks-errors/value-errors-130429.json"))
    ).status_code == 200
    assert snapshot(settings.database_path) == before
    [line] = [t for level, t in levels(log_file) if level == "ERROR"]
    assert line.startswith("Erreur signalée par Meta (webhook)")
    context = json.loads(line[line.index("{") :])
    assert context["code"] == 130429
    assert context["title"] == "Rate limit hit"
    assert context["details"].startswith("Message failed to send")


# -- inbound messages -----------------------------------------------------------


async def test_inbound_messages_record_the_last_time_and_open_the_window(
    hook: Hook, settings: Settings
) -> None:
    """Every published inbound example records its sender's last message time
    (the latest wins); no content or profile name is stored."""
    now = int(time.time())
    names = sorted(p.name for p in (EXAMPLES / "webhooks-inbound").glob("*.json"))
    senders: set[str] = set()
    for offset, name in enumerate(names):
        note = example(f"webhooks-inbound/{name}")
        for entry in note["entry"]:
            for change in entry["changes"]:
                for message in change["value"].get("messages", []):
                    message["timestamp"] = str(now - 3600 - offset)
                    senders.add(message["from"])
        assert (await hook.notify(note)).status_code == 200, name
    late = example("webhooks-inbound/text-message.json")
    message = late["entry"][0]["changes"][0]["value"]["messages"][0]
    message["timestamp"] = str(now - 30 * 3600)  # older, arriving last
    await hook.notify(late)

    with contextlib.closing(sqlite3.connect(settings.database_path)) as conn:
        contacts = dict(
            conn.execute("SELECT wa_id, last_inbound_at FROM whatsapp_contacts")
        )
        assert set(contacts) == senders
        assert contacts["16505551234"] == utc(now - 3600)  # the max, not the last
        assert deliveries.window_open(conn, "+16505551234", datetime.now(UTC))
        assert deliveries.window_open(conn, "16505551234", datetime.now(UTC))
        assert not deliveries.window_open(
            conn, "+16505551234", datetime.now(UTC) + timedelta(hours=24)
        )
        assert not deliveries.window_open(conn, A, datetime.now(UTC))
        assert not deliveries.window_open(conn, "not a number", datetime.now(UTC))
    stored = settings.database_path.read_bytes()
    for private in (b"Sheena Nelson", b"Does it come in another color?"):
        assert private not in stored


# -- the whole loop: daemon, sandbox, webhook ---------------------------------------


async def test_daemon_sandbox_and_webhook_close_the_loop(
    hook: Hook, settings: Settings, start_sandbox: StartSandbox
) -> None:
    """The sandbox notifies the webhook of each message it accepts: the rows
    end read (one failed, by an asynchronous 131026), and the status shows it."""
    sandbox = await start_sandbox(
        webhook_url=hook.url,
        app_secret=SECRET,
        status_delay=0.0,
        script={D: ["async:131026"]},
    )
    config = settings.model_copy(update={"api_base_url": sandbox.url})
    ids = enqueue_texts(config.database_path, A, B, C, D)

    async with running_daemon(config) as run:

        def settled() -> bool:
            found = rows(config.database_path)
            return [found[i]["status"] for i in ids] == ["read"] * 3 + ["failed"]

        await run.until(settled, timeout=20, what="statuses read and failed")

    found = rows(config.database_path)
    for row_id in ids[:3]:
        assert found[row_id]["delivered_at"] and found[row_id]["read_at"]
    assert found[ids[3]]["error_code"] == 131026
    assert "Message Undeliverable" in found[ids[3]]["error_message"]

    env = daemon_env(config)
    shown = subprocess.run(
        [sys.executable, "-m", "whatsapp_daemon", "status"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"^  read +3$", shown.stdout, re.M), shown.stdout
    assert re.search(r"^  delivered +0$", shown.stdout, re.M), shown.stdout
    assert re.search(r"sent +deliv\. +read", shown.stdout), shown.stdout
    assert re.search(r"^ +131026 +1 ", shown.stdout, re.M), shown.stdout
    assert "Webhook: last notification at" in shown.stdout
    as_json = subprocess.run(
        [sys.executable, "-m", "whatsapp_daemon", "status", "--json"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    report = json.loads(as_json.stdout)
    assert report["counts"]["read"] == 3
    [batch] = report["batches"]
    assert (batch["read"], batch["delivered"], batch["failed"]) == (3, 0, 1)
    assert report["webhook"]["last_notification_at"] is not None
    assert report["webhook"]["statuses_waiting"] == 0


async def test_sandbox_refuses_a_webhook_url_beyond_loopback() -> None:
    from whatsapp_daemon import sandbox

    for url in ("http://192.0.2.10/webhook", "https://example.invalid/webhook"):
        with pytest.raises(ValueError, match="loopback"):
            sandbox.make_app(sandbox.SandboxConfig(webhook_url=url, app_secret="s"))
    with pytest.raises(ValueError, match="app_secret"):
        sandbox.make_app(sandbox.SandboxConfig(webhook_url="http://127.0.0.1:1/w"))
    config = sandbox.SandboxConfig(
        webhook_url="http://127.0.0.1:1/w", app_secret=SECRET
    )
    assert SECRET not in repr(config)


# -- the command and its agent -----------------------------------------------------


def test_webhook_command_refuses_to_start_without_its_secrets(
    settings: Settings, tmp_path: Path
) -> None:
    """Without the app secret or the verify token: one line naming the key, 78."""
    for missing in ("WHATSAPP_APP_SECRET", "WHATSAPP_WEBHOOK_VERIFY_TOKEN"):
        env = secret_env(settings)
        del env[missing]
        done = subprocess.run(
            [sys.executable, "-m", "whatsapp_daemon", "webhook", "--port", "0"],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == Exit.CONFIG
        [line] = done.stderr.splitlines()
        assert missing in line and "set it in .env" in line
        assert SECRET not in done.stderr and VERIFY not in done.stderr


def secret_env(settings: Settings) -> dict[str, str]:
    return daemon_env(
        settings,
        WHATSAPP_APP_SECRET=SECRET,
        WHATSAPP_WEBHOOK_VERIFY_TOKEN=VERIFY,
        WHATSAPP_LOG_LEVEL="DEBUG",
    )


async def test_webhook_command_serves_and_exits_zero_on_sigterm(
    settings: Settings, queue: QueueDB, tmp_path: Path
) -> None:
    """``whatsapp-daemon webhook`` as launchd runs it: it logs its start,
    records a notification, and stops cleanly on SIGTERM. No secret is
    ever written to its log or its output."""
    row_id = sent_row(queue, A, "wamid.CLI")
    process = subprocess.Popen(
        [sys.executable, "-m", "whatsapp_daemon", "webhook", "--port", "0"],
        env=secret_env(settings), cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:

        def started() -> str | None:
            assert process.poll() is None, process.communicate()
            for _, text in levels(settings.log_path):
                if text.startswith("Démarrage du webhook WhatsApp"):
                    return text
            return None

        line = await until(started, timeout=30, what="the webhook to start")
        port = json.loads(line[line.index("{") :])["port"]
        hook = Hook(port, settings.webhook_path)
        handshake = await hook.get(
            **{
                "hub.mode": "subscribe",
                "hub.verify_token": VERIFY,
                "hub.challenge": "7",
            }
        )
        assert (handshake.status_code, handshake.text) == (200, "7")
        note = statuses(a_status("wamid.CLI", "read", T0, row_id))
        assert (await hook.notify(note)).status_code == 200
        assert rows(settings.database_path)[row_id]["status"] == "read"
        # A secret that reaches a log line is masked (here: a bad signature
        # carrying it, which the webhook never logs anyway).
        await hook.post(b"{}", f"sha256={SECRET}")
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert process.returncode == Exit.OK, err
    text = settings.log_path.read_text(encoding="utf-8")
    assert "Arrêt du webhook WhatsApp" in text
    for secret in (SECRET, VERIFY, TOKEN):
        assert secret not in text and secret not in out and secret not in err


def test_log_formatter_masks_every_secret(tmp_path: Path) -> None:
    """The token, the app secret and the verify token are all masked."""
    path = tmp_path / "secrets.log"
    with log_to(path, secret=[TOKEN, SECRET, VERIFY]):
        from whatsapp_daemon import logs

        try:
            raise RuntimeError(f"boom {SECRET} {VERIFY}")
        except RuntimeError:
            logs.logger.exception("échec %s", TOKEN)
    text = path.read_text(encoding="utf-8")
    assert "boom" in text
    for secret in (SECRET, VERIFY, TOKEN):
        assert secret not in text


def test_webhook_plist_round_trips(tmp_path: Path) -> None:
    """``plist --webhook`` renders the webhook's agent for this checkout."""
    done = subprocess.run(
        [
            sys.executable, "-m", "whatsapp_daemon", "plist", "--webhook",
            "--project-dir", str(ROOT), "--python", sys.executable,
        ],
        capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    agent = plistlib.loads(done.stdout)
    launchd.validate(agent)
    assert agent["Label"] == launchd.WEBHOOK_LABEL == "com.whatsapp-daemon.webhook"
    assert agent["ProgramArguments"] == [
        str(Path(sys.executable).absolute()),
        "-m",
        "whatsapp_daemon",
        "webhook",
    ]
    assert agent["WorkingDirectory"] == str(ROOT)
    assert agent["KeepAlive"] == {"SuccessfulExit": False}
    assert agent["StandardErrorPath"].startswith(str(ROOT))
    assert plistlib.loads(plistlib.dumps(agent)) == agent


async def test_recording_does_not_block_the_event_loop(
    hook: Hook, settings: Settings, queue: QueueDB
) -> None:
    """While another writer holds the database, the webhook still answers its
    handshake at once (the SQLite work is on its own thread)."""
    row_id = sent_row(queue, A, "wamid.BUSY")
    blocker = sqlite3.connect(settings.database_path, timeout=60, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        posting = asyncio.ensure_future(
            hook.notify(statuses(a_status("wamid.BUSY", "read", T0, row_id)))
        )
        await asyncio.sleep(0.3)
        started = time.monotonic()
        handshake = await hook.get(
            **{
                "hub.mode": "subscribe",
                "hub.verify_token": VERIFY,
                "hub.challenge": "1",
            }
        )
        assert handshake.status_code == 200
        assert time.monotonic() - started < 3.0  # the POST still waits
        assert not posting.done()  # no 200 before it is stored
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    answer = await posting  # answered once recorded
    assert answer.status_code == 200
    assert rows(settings.database_path)[row_id]["status"] == "read"


def test_webhook_command_on_a_port_in_use_exits_75(
    settings: Settings, tmp_path: Path
) -> None:
    """Another program on the port: one line, exit 75 (as for a held lock)."""
    with contextlib.closing(socket.socket()) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "whatsapp_daemon", "webhook", "--port", str(port)],
            env=secret_env(settings), cwd=tmp_path,
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == Exit.RUNNING
    [line] = done.stderr.splitlines()
    assert f"cannot listen on 127.0.0.1:{port}" in line


# -- a 200 means stored; bounded waits -------------------------------------------


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[Hook, web.AppRunner]]:
    """The webhook with the module's limits as the test set them."""
    runner, port = await webhook.start(settings, "127.0.0.1", 0)
    try:
        yield Hook(port, settings.webhook_path), runner
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def locked(path: Path) -> Iterator[sqlite3.Connection]:
    """Another writer holding the database's write lock."""
    blocker = sqlite3.connect(path, timeout=60, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        yield blocker
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


async def test_notification_not_stored_in_time_is_answered_503_then_resent(
    settings: Settings,
    queue: QueueDB,
    log_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While another writer holds the database, no 200: a 503 once RECORD_WAIT
    is over (Meta sends it again). The webhook's connection gives up on the
    lock after its own BUSY_TIMEOUT, far below the daemon's 60 s; Meta's
    resend is then stored and acknowledged."""
    monkeypatch.setattr(webhook, "RECORD_WAIT", 0.5)
    monkeypatch.setattr(webhook, "BUSY_TIMEOUT", 3.0)
    row_id = sent_row(queue, A, "wamid.LOCKED")
    note = statuses(a_status("wamid.LOCKED", "read", T0, row_id))
    async with serving(settings) as (hook, runner):
        endpoint = runner.app[webhook._ENDPOINT]
        busy = await endpoint.queue.call(
            lambda db: db.conn.execute("PRAGMA busy_timeout").fetchone()[0]
        )
        assert busy == 3000
        with locked(settings.database_path):
            started = time.monotonic()
            answer = await hook.notify(note)
            assert answer.status_code == 503
            assert answer.headers["Retry-After"]
            assert time.monotonic() - started < 2.5  # not BUSY_TIMEOUT
            assert rows(settings.database_path)[row_id]["status"] == "sent"

            def gave_up() -> bool:
                return any(
                    level == "WARNING"
                    and text.startswith("Notification du webhook non enregistrée ;")
                    and "database is locked" in text
                    for level, text in levels(log_file)
                )

            await until(gave_up, timeout=10, what="the recording to give up")
        assert rows(settings.database_path)[row_id]["status"] == "sent"
        assert (await hook.notify(note)).status_code == 200  # Meta's resend
        assert rows(settings.database_path)[row_id]["status"] == "read"
    said = [(level, text.split(" {")[0]) for level, text in levels(log_file)]
    assert (
        "WARNING",
        "Notification du webhook non enregistrée à temps (base occupée) ;"
        " réponse 503, Meta la renverra",
    ) in said
    assert not any("acquittée" in text for _, text in said)


async def test_a_lock_outlasting_the_busy_timeout_is_answered_503_not_500(
    settings: Settings,
    queue: QueueDB,
    log_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The connection gives up on the lock before the answer is due: that is
    the database being busy (503, a WARNING), not an error of ours (500)."""
    monkeypatch.setattr(webhook, "RECORD_WAIT", 5.0)
    monkeypatch.setattr(webhook, "BUSY_TIMEOUT", 0.5)
    row_id = sent_row(queue, A, "wamid.BUSY")
    note = statuses(a_status("wamid.BUSY", "read", T0, row_id))
    async with serving(settings) as (hook, _):
        with locked(settings.database_path):
            answer = await hook.notify(note)
        assert answer.status_code == 503
        assert (await hook.notify(note)).status_code == 200  # Meta's resend
    assert rows(settings.database_path)[row_id]["status"] == "read"
    said = levels(log_file)
    assert any(
        level == "WARNING" and text.startswith("Base occupée : notification")
        for level, text in said
    )
    assert not any(level == "ERROR" for level, _ in said)


async def test_recording_finished_after_its_503_makes_the_resend_harmless(
    settings: Settings,
    queue: QueueDB,
    log_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The lock is freed just after the 503: the recording completes late, and
    Meta's resend is recognised (a duplicate), answered 200."""
    monkeypatch.setattr(webhook, "RECORD_WAIT", 0.3)
    row_id = sent_row(queue, A, "wamid.LATE")
    note = statuses(a_status("wamid.LATE", "delivered", T0 + 5, row_id))
    async with serving(settings) as (hook, _):
        with locked(settings.database_path):
            assert (await hook.notify(note)).status_code == 503
        await until(
            lambda: rows(settings.database_path)[row_id]["status"] == "delivered",
            what="the late recording",
        )
        once = snapshot(settings.database_path)
        assert (await hook.notify(note)).status_code == 200
        assert snapshot(settings.database_path) == once
    assert any(
        level == "INFO" and text.startswith("Notification du webhook enregistrée après")
        for level, text in levels(log_file)
    )


def test_handle_stops_between_items_when_asked(
    settings: Settings, queue: QueueDB
) -> None:
    """A set stop event: no item is recorded, and the summary says it stopped
    (the webhook then answers 503, so nothing acknowledged is lost)."""
    row_id = sent_row(queue, A, "wamid.STOP")
    note = statuses(
        a_status("wamid.STOP", "delivered", T0, row_id),
        a_status("wamid.STOP", "read", T0 + 9, row_id),
    )
    stop = threading.Event()
    stop.set()
    before = snapshot(settings.database_path)
    summary = deliveries.handle(queue, note, datetime.now(UTC), stop)
    assert summary.stopped and summary.applied == 0
    assert snapshot(settings.database_path) == before
    summary = deliveries.handle(queue, note, datetime.now(UTC), threading.Event())
    assert (summary.stopped, summary.applied) == (False, 2)


async def test_sigterm_while_the_database_is_locked_stops_within_seconds(
    settings: Settings, queue: QueueDB, tmp_path: Path
) -> None:
    """A notification waits for a locked database when SIGTERM comes: it is
    answered 503 (not 200), and the process exits 0 within seconds, far
    below launchd's ExitTimeOut. Malformed HTTP requests leave no traceback
    on stderr (the agent's stderr log is not rotated)."""
    row_id = sent_row(queue, A, "wamid.TERM")
    agent = plistlib.loads(launchd.render(ROOT, Path(sys.executable), WEBHOOK_PLIST))
    process = subprocess.Popen(
        [sys.executable, "-m", "whatsapp_daemon", "webhook", "--port", "0"],
        env=secret_env(settings), cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        hook = await started_hook(process, settings)
        for raw in (
            b"GARBAGE\r\n\r\n",
            b"POST /hooks/meta HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
            b"GET /hooks/meta HTTP/1.1\r\nHost: \x00\x01\r\n\r\n",
        ):
            assert b" 400 " in (await raw_exchange(hook.port, raw)).split(b"\r\n")[0]
        with locked(settings.database_path):
            note = statuses(a_status("wamid.TERM", "read", T0, row_id))
            posting = asyncio.ensure_future(hook.notify(note))
            await asyncio.sleep(1.0)
            assert not posting.done()
            process.send_signal(signal.SIGTERM)
            stopped_at = time.monotonic()
            answer = await posting
            assert answer.status_code == 503
            _, err = await asyncio.to_thread(process.communicate, timeout=30)
            took = time.monotonic() - stopped_at
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == Exit.OK, err
    assert took < webhook.CLOSE_WAIT + webhook.SHUTDOWN_GRACE < agent["ExitTimeOut"]
    assert err == "", err
    assert rows(settings.database_path)[row_id]["status"] == "sent"
    said = levels(settings.log_path)
    bad_http = [t for level, t in said if t.startswith("Requête HTTP invalide")]
    assert len(bad_http) == 3
    assert all(level == "DEBUG" for level, t in said if t in bad_http)
    assert "Arrêt du webhook WhatsApp" in [t for _, t in said]


async def test_sigterm_while_the_database_is_locked_at_start_up_stops_quickly(
    settings: Settings, queue: QueueDB, tmp_path: Path
) -> None:
    """Another writer holds the database as the webhook starts: it tries
    again every second, and a SIGTERM meanwhile stops it within one busy
    timeout, exit 0, instead of after the lock."""
    process = None
    try:
        with locked(settings.database_path):
            process = subprocess.Popen(
                [sys.executable, "-m", "whatsapp_daemon", "webhook", "--port", "0"],
                env=secret_env(settings), cwd=tmp_path,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            await until(
                lambda: any(
                    t.startswith("Base occupée au démarrage du webhook")
                    for _, t in levels(settings.log_path)
                ),
                timeout=30,
                what="the webhook to find the database locked",
            )
            process.send_signal(signal.SIGTERM)
            stopped_at = time.monotonic()
            _, err = await asyncio.to_thread(process.communicate, timeout=30)
            took = time.monotonic() - stopped_at
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == Exit.OK, err
    assert took < webhook.BUSY_TIMEOUT + 2.0
    assert "Arrêt du webhook WhatsApp" in [t for _, t in levels(settings.log_path)]


WEBHOOK_PLIST = ROOT / launchd.WEBHOOK_TEMPLATE


async def started_hook(process: subprocess.Popen[str], settings: Settings) -> Hook:
    """Wait for a webhook subprocess's start line; a client for its port."""

    def started() -> str | None:
        assert process.poll() is None, process.communicate()
        for _, text in levels(settings.log_path):
            if text.startswith("Démarrage du webhook WhatsApp"):
                return text
        return None

    line = await until(started, timeout=30, what="the webhook to start")
    return Hook(json.loads(line[line.index("{") :])["port"], settings.webhook_path)


async def raw_exchange(port: int, raw: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes on a new connection; what comes back until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


# -- what unauthenticated clients can hold ------------------------------------------


async def test_a_body_sent_too_slowly_is_answered_408(
    settings: Settings, log_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """3 bytes of an announced 1,000, then nothing: 408 after BODY_WAIT, and
    the connection is closed."""
    monkeypatch.setattr(webhook, "BODY_WAIT", 0.5)
    async with serving(settings) as (hook, _):
        started = time.monotonic()
        answer = await raw_exchange(
            hook.port,
            b"POST /hooks/meta HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
            b'X-Hub-Signature-256: sha256=00\r\n\r\n{"e',
        )
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert time.monotonic() - started < 3
    assert any(
        level == "WARNING" and text.startswith("Notification du webhook reçue trop")
        for level, text in levels(log_file)
    )


async def test_bodies_read_at_once_are_capped_and_the_rest_answered_503(
    settings: Settings,
    queue: QueueDB,
    log_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """MAX_READING slow bodies under way: one more is answered 503 at once,
    without being read, so memory stays bounded. Once they time out, a
    notification is stored again."""
    monkeypatch.setattr(webhook, "MAX_READING", 2)
    monkeypatch.setattr(webhook, "BODY_WAIT", 3.0)
    row_id = sent_row(queue, A, "wamid.CAP")
    head = (
        b"POST /hooks/meta HTTP/1.1\r\nHost: x\r\nContent-Length: 3000000\r\n"
        b"X-Hub-Signature-256: sha256=00\r\n\r\n"
    )
    async with serving(settings) as (hook, _):
        slow = []
        for _ in range(2):
            reader, writer = await asyncio.open_connection("127.0.0.1", hook.port)
            writer.write(head + b"x" * 100_000)
            slow.append((reader, writer))
        await asyncio.sleep(0.3)
        note = statuses(a_status("wamid.CAP", "read", T0, row_id))
        started = time.monotonic()
        assert (await hook.notify(note)).status_code == 503
        assert time.monotonic() - started < 2.0  # not read for BODY_WAIT
        for reader, writer in slow:
            assert (await asyncio.wait_for(reader.read(), 5)).startswith(
                b"HTTP/1.1 408"
            )
            writer.close()
        assert (await hook.notify(note)).status_code == 200
        assert rows(settings.database_path)[row_id]["status"] == "read"
    assert any(
        level == "WARNING" and text.startswith("Trop de notifications reçues")
        for level, text in levels(log_file)
    )


async def test_running_out_of_file_descriptors_logs_one_line_not_tracebacks(
    settings: Settings, tmp_path: Path
) -> None:
    """With few file descriptors and many idle connections, accept() fails
    with EMFILE every second: stderr stays empty and the log has one WARNING
    (a minute); once they close, the webhook answers again."""
    limit = 40

    def few_files() -> None:
        resource.setrlimit(
            resource.RLIMIT_NOFILE,
            (limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1]),
        )

    process = subprocess.Popen(
        [sys.executable, "-m", "whatsapp_daemon", "webhook", "--port", "0"],
        env=secret_env(settings), cwd=tmp_path, preexec_fn=few_files,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    idle: list[socket.socket] = []
    try:
        hook = await started_hook(process, settings)
        for _ in range(limit + 10):
            idle.append(socket.create_connection(("127.0.0.1", hook.port)))
        await asyncio.sleep(3.5)  # asyncio retries accept() each second
        for sock in idle:
            sock.close()
        answer = await until(
            lambda: hook_answers(hook), timeout=15, what="the webhook to answer"
        )
        assert answer == "5"
    finally:
        for sock in idle:
            sock.close()
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == Exit.OK, err
    assert err == "", err[:2000]
    said = [(lvl, t) for lvl, t in levels(settings.log_path) if "Trop de conn" in t]
    assert len(said) == 1 and said[0][0] == "WARNING", said


async def hook_answers(hook: Hook) -> str | None:
    """The handshake's answer, or None while the webhook cannot answer."""
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            response = await client.get(
                hook.url,
                params={
                    "hub.mode": "subscribe",
                    "hub.verify_token": VERIFY,
                    "hub.challenge": "5",
                },
            )
    except httpx.HTTPError:
        return None
    return response.text if response.status_code == 200 else None


def test_accept_errors_reach_stderr_at_most_once_a_minute(
    settings: Settings, log_file: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """asyncio's accept() error, reported 100 times: one WARNING in the log,
    nothing on stderr; other asyncio errors still pass."""

    async def flood() -> None:
        runner, _ = await webhook.start(settings, "127.0.0.1", 0)
        try:
            loop = asyncio.get_running_loop()
            for _ in range(100):
                loop.call_exception_handler(
                    {
                        "message": "socket.accept() out of system resource",
                        "exception": OSError(errno.EMFILE, "Too many open files"),
                    }
                )
        finally:
            await runner.cleanup()

    asyncio.run(flood())
    assert "socket.accept" not in capfd.readouterr().err
    said = [t for level, t in levels(log_file) if level == "WARNING"]
    assert sum(t.startswith("Trop de connexions ouvertes") for t in said) <= 1
    assert webhook._ACCEPT_ERRORS.filter(
        logging.LogRecord("asyncio", logging.ERROR, "", 0, "another error", (), None)
    )


def test_webhook_plist_raises_the_open_files_limit() -> None:
    """The agent may hold 4096 files (connections), not macOS's 256."""
    agent = plistlib.loads(launchd.render(ROOT, Path(sys.executable), WEBHOOK_PLIST))
    for key in ("SoftResourceLimits", "HardResourceLimits"):
        assert agent[key] == {"NumberOfFiles": 4096}
    broken = {**agent, "SoftResourceLimits": {"NumberOfFiles": "many"}}
    with pytest.raises(ConfigError, match="SoftResourceLimits"):
        launchd.validate(broken)
    text = WEBHOOK_PLIST.read_text(encoding="utf-8")
    assert "stops within 5 s" not in text


# -- malformed parts of a notification ----------------------------------------------


async def test_malformed_entries_and_changes_are_skipped_and_the_rest_kept(
    hook: Hook, settings: Settings, queue: QueueDB, log_file: Path
) -> None:
    """An entry without changes, a change with a null value, statuses and
    messages given as objects: each is an ERROR line, and the valid statuses
    of the same notification are applied. errors as one object keeps its
    code, at the value and in a failed status."""
    first = sent_row(queue, A, "wamid.KEPT1")
    second = sent_row(queue, B, "wamid.KEPT2")
    failed = sent_row(queue, C, "wamid.KEPT3")
    note = statuses(a_status("wamid.KEPT1", "read", T0, first))
    good = note["entry"][0]
    note["entry"] = [
        {"id": "2", "changes": None},
        good,
        {"id": "3", "changes": [{"field": "messages", "value": None}, "nonsense"]},
        {
            "id": "4",
            "changes": [
                {"value": {"statuses": {"id": "wamid.KEPT2", "status": "read"}}},
                {"value": {"messages": {"from": "16505551234"}}},
                {"value": {"errors": {"code": 131026, "title": "Undeliverable"}}},
                {
                    "value": {
                        "statuses": [
                            a_status("wamid.KEPT2", "delivered", T0, second),
                            a_status(
                                "wamid.KEPT3",
                                "failed",
                                T0,
                                failed,
                                errors={"code": 131026, "title": "Undeliverable"},
                            ),
                        ]
                    }
                },
            ],
        },
    ]
    assert (await hook.notify(note)).status_code == 200
    found = rows(settings.database_path)
    assert found[first]["status"] == "read"
    assert found[second]["status"] == "delivered"
    assert (found[failed]["status"], found[failed]["error_code"]) == ("failed", 131026)
    errors = [t for level, t in levels(log_file) if level == "ERROR"]
    partial = [t for t in errors if t.startswith("Notification du webhook ignorée")]
    assert len(partial) == 5, errors
    for reason in (
        "entry '2' has no changes list",
        "a change of entry '3' has no value object",
        "statuses is a dict, not a list",
        "messages is a dict, not a list",
    ):
        assert any(reason in t for t in partial), (reason, partial)
    [meta] = [t for t in errors if t.startswith("Erreur signalée par Meta")]
    assert json.loads(meta[meta.index("{") :])["code"] == 131026


async def test_other_status_names_are_logged_without_an_error(
    hook: Hook, settings: Settings, queue: QueueDB, log_file: Path
) -> None:
    """deleted and warning: INFO lines, no ERROR, and the row does not move."""
    row_id = sent_row(queue, A, "wamid.OTHER1")
    note = statuses(
        a_status("wamid.OTHER1", "deleted", T0, row_id),
        a_status("wamid.OTHER1", "warning", T0, row_id),
    )
    before = snapshot(settings.database_path)
    assert (await hook.notify(note)).status_code == 200
    assert snapshot(settings.database_path) == before
    said = levels(log_file)
    assert not [t for level, t in said if level == "ERROR"]
    infos = [t for level, t in said if level == "INFO" and "sans effet" in t]
    assert len(infos) == 2


# -- times ----------------------------------------------------------------------


async def test_sent_at_is_the_earliest_report_never_after_delivered_at(
    hook: Hook, settings: Settings, queue: QueueDB
) -> None:
    """A row of unknown outcome learns its fate from a late read first: then
    an earlier delivered and sent each bring sent_at back."""
    [row_id] = enqueue_texts(settings.database_path, A)
    claim(queue, row_id)
    queue.mark_unknown(row_id, "timeout", datetime.now(UTC))
    for name, at in (("read", T0 + 60), ("delivered", T0 + 5)):
        await hook.notify(statuses(a_status("wamid.EARLIEST", name, at, row_id)))
        row = rows(settings.database_path)[row_id]
        assert row["sent_at"] <= row["delivered_at"] <= row["read_at"]
    assert row["sent_at"] == utc(T0 + 5)
    await hook.notify(statuses(a_status("wamid.EARLIEST", "sent", T0, row_id)))
    row = rows(settings.database_path)[row_id]
    assert (row["sent_at"], row["delivered_at"], row["read_at"]) == (
        utc(T0),
        utc(T0 + 5),
        utc(T0 + 60),
    )


async def test_non_ascii_digits_are_refused_and_future_times_clamped(
    hook: Hook, settings: Settings, queue: QueueDB, log_file: Path
) -> None:
    """A sender or a row id in Arabic-Indic or full-width digits is not
    ASCII: refused, or not taken as a row id. An inbound time ten years
    ahead is stored as now, so the window closes 24 hours later."""
    note = example("webhooks-inbound/text-message.json")
    value = note["entry"][0]["changes"][0]["value"]
    message = value["messages"][0]
    now = int(time.time())
    arabic = other_digits("2250701020304", 0x0660)  # Arabic-Indic
    wide = other_digits("2250701020305", 0xFF10)  # full-width
    value["messages"] = [
        {**message, "from": arabic, "timestamp": str(now)},
        {**message, "from": wide, "timestamp": str(now)},
        {
            **message,
            "from": "2250701020306",
            "timestamp": other_digits(str(now), 0x0660),
        },
        {**message, "from": "2250701020307", "timestamp": str(now + 10 * 365 * 86400)},
    ]
    assert (await hook.notify(note)).status_code == 200
    with contextlib.closing(sqlite3.connect(settings.database_path)) as conn:
        contacts = dict(
            conn.execute("SELECT wa_id, last_inbound_at FROM whatsapp_contacts")
        )
        assert list(contacts) == ["2250701020307"]
        stored = datetime.strptime(contacts["2250701020307"], times.TIME_FORMAT)
        assert abs(stored.replace(tzinfo=UTC).timestamp() - now) < 60
        later = datetime.now(UTC) + timedelta(hours=25)
        assert not deliveries.window_open(conn, "+2250701020307", later)
        assert not deliveries.window_open(conn, arabic, datetime.now(UTC))
    said = levels(log_file)
    assert len([t for level, t in said if level == "ERROR"]) == 3
    assert any(
        level == "DEBUG" and t.startswith("Heure d'un message reçu dans le futur")
        for level, t in said
    )
    # A row id in other digits is not a row id: the status is only kept.
    [row_id] = enqueue_texts(settings.database_path, A)
    claim(queue, row_id)
    queue.mark_unknown(row_id, "timeout", datetime.now(UTC))
    item = a_status("wamid.DIGITS", "delivered", T0)
    item["biz_opaque_callback_data"] = other_digits(str(row_id), 0x0660)
    await hook.notify(statuses(item))
    assert rows(settings.database_path)[row_id]["status"] == "unknown"
    [kept] = stored_statuses(settings.database_path)
    assert (kept["message_id"], kept["applied_at"]) == (None, None)


def other_digits(ascii_digits: str, zero: int) -> str:
    """The same number in another script's digits (``zero``: its digit 0)."""
    return "".join(chr(zero + int(digit)) for digit in ascii_digits)


# -- the status's failures --------------------------------------------------------


async def test_status_tells_a_failure_after_acceptance_from_a_refusal(
    hook: Hook, settings: Settings, queue: QueueDB
) -> None:
    """A webhook failed without a code (the row has a wamid) is not 'refused
    before sending' (a row with no wamid)."""
    accepted = sent_row(queue, A, "wamid.NOCODE")
    await hook.notify(statuses(a_status("wamid.NOCODE", "failed", T0, accepted)))
    [refused] = enqueue_texts(settings.database_path, B)
    with contextlib.closing(sqlite3.connect(settings.database_path)) as conn:
        conn.execute(
            "UPDATE whatsapp_queue SET status = 'failed', error_code = NULL"
            " WHERE id = ?",
            (refused,),
        )
        conn.commit()
    report = status.gather(settings, datetime.now(UTC))
    meanings = sorted(f["meaning"] for f in report["failures"] if f["code"] is None)
    assert len(meanings) == 2, report["failures"]
    assert any("après acceptation" in m for m in meanings), meanings
    assert any("refusé avant l'envoi" in m for m in meanings), meanings
    assert all(f["count"] == 1 for f in report["failures"])


async def test_status_counts_a_code_once_whether_refused_or_failed_later(
    hook: Hook, settings: Settings, queue: QueueDB
) -> None:
    """131026 from a send and 131026 from a webhook are one line, which says
    how many of them Meta had accepted."""
    accepted = sent_row(queue, A, "wamid.REACH")
    error = {
        "code": 131026,
        "title": "Message undeliverable",
        "error_data": {"details": "Unable to deliver"},
    }
    note = statuses(a_status("wamid.REACH", "failed", T0, accepted, errors=[error]))
    assert (await hook.notify(note)).status_code == 200
    [refused] = enqueue_texts(settings.database_path, B)
    with contextlib.closing(sqlite3.connect(settings.database_path)) as conn:
        conn.execute(
            "UPDATE whatsapp_queue SET status = 'failed', error_code = 131026,"
            " error_message = 'Message undeliverable: Unable to deliver'"
            " WHERE id = ?",
            (refused,),
        )
        conn.commit()

    report = status.gather(settings, datetime.now(UTC))

    [group] = report["failures"]
    assert (group["code"], group["count"], group["after_acceptance"]) == (131026, 2, 1)
    [line] = [t for t in status.render(report).splitlines() if "131026" in t]
    assert line.endswith("(1 after Meta accepted the message)"), line


async def test_half_an_emoji_in_a_notification_is_stored_and_logged_escaped(
    hook: Hook, settings: Settings, queue: QueueDB, log_file: Path
) -> None:
    """JSON may carry a lone UTF-16 surrogate ("\\ud83d") that UTF-8 cannot:
    the error is stored and logged with it escaped, nothing is lost, and an
    unknown id holding one is skipped like any other."""
    row_id = sent_row(queue, A, "wamid.HALF")
    error = {"code": 131026, "title": "Undeliverable \ud83d", "message": "x"}
    raw = json.dumps(
        statuses(
            a_status("wamid.HALF", "failed", T0, row_id, errors=[error]),
            a_status("wamid.\udc00", "delivered", T0),
        )
    ).encode()
    assert b"\\ud83d" in raw  # the escape as Meta would send it

    assert (await hook.post(raw, sign(raw))).status_code == 200

    row = rows(settings.database_path)[row_id]
    assert (row["status"], row["error_code"]) == ("failed", 131026)
    assert "Undeliverable \\ud83d" in row["error_message"]
    said = levels(log_file)
    assert any(t.startswith("Message non remis") for _, t in said), said
    assert not [t for level, t in said if level in ("ERROR", "CRITICAL")], said


# -- secrets too short to mask ------------------------------------------------------


def test_webhook_refuses_secrets_shorter_than_8_characters(
    settings: Settings, tmp_path: Path
) -> None:
    """A verify token 'queue' would mask every log line's channel: refused,
    one line naming the key and the fix, exit 78."""
    for key in ("WHATSAPP_WEBHOOK_VERIFY_TOKEN", "WHATSAPP_APP_SECRET"):
        env = {**secret_env(settings), key: "queue"}
        done = subprocess.run(
            [sys.executable, "-m", "whatsapp_daemon", "webhook", "--port", "0"],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == Exit.CONFIG
        [line] = done.stderr.splitlines()
        assert key in line and "at least 8 characters" in line, line


def test_secrets_shorter_than_8_characters_are_not_masked(
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A short secret is not masked in the log or a command's output (it
    would hide common words); a long one still is."""
    path = tmp_path / "short.log"
    with log_to(path, secret=["queue", SECRET]):
        from whatsapp_daemon import logs

        logs.logger.warning("file %s", SECRET)
    [line] = log_lines(path)
    assert "whatsapp_queue.WARNING" in line and SECRET not in line
    monkeypatch.setattr(cli, "_SECRETS", [])
    cli._register_secret(make_settings(webhook_verify_token="queue", app_secret=SECRET))
    assert cli._redact(f"whatsapp_queue {SECRET}") == "whatsapp_queue [jeton masqué]"
