"""Every error code Meta documents, and what the daemon does about it.

Each code of ``outcomes.RULES`` is answered by the sandbox Graph API on
127.0.0.1 to a real send (real httpx client, real SQLite file), and the row,
the log and the sender's state are checked against the code's class. Then
the cases that matter most run through the whole daemon: a template with the
wrong parameters, the 24-hour window, the pair rate and an expired token.
"""

from __future__ import annotations

import itertools
import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import TOKEN, StartSandbox
from test_sending import (
    A,
    B,
    C,
    D,
    E,
    enqueue_texts,
    insert_raw,
    requests_to,
    rows,
    running_daemon,
)

from whatsapp_daemon import graph, outcomes, sandbox, sender, status
from whatsapp_daemon.api import WhatsAppQueue, template_message, text_message
from whatsapp_daemon.errors import GraphAPIError
from whatsapp_daemon.graph import GraphClient
from whatsapp_daemon.limits import RecipientPacer, SendGate
from whatsapp_daemon.outcomes import Action
from whatsapp_daemon.queue import AsyncQueue, QueueDB
from whatsapp_daemon.sender import Outcome, SendContext
from whatsapp_daemon.settings import Settings

# Every code of Meta's Cloud API error reference and of the Graph API's
# generic codes that a sender can meet.
DOCUMENTED = {
    0, 1, 2, 3, 4, 10, 17, 33, 100, 102, 190, 200, 341, 368, 506, 80007,
    130403, 130429, 130472, 130497, 131000, 131005, 131008, 131009, 131016,
    131021, 131026, 131031, 131037, 131042, 131045, 131047, 131048, 131049,
    131050, 131051, 131052, 131053, 131055, 131056, 131057, 131063, 131064,
    132000, 132001, 132005, 132007, 132012, 132015, 132016, 132018, 132068,
    132069, 133000, 133004, 133005, 133006, 133008, 133009, 133010, 133015,
    133016, 134011, 135000, 2494100,
}  # fmt: skip


def test_every_documented_code_has_a_rule_and_a_meaning_in_french() -> None:
    """One table decides every code; none is left to the default."""
    assert DOCUMENTED - set(outcomes.RULES) == set()
    for code, found in outcomes.RULES.items():
        assert found.meaning.strip(), code
        assert outcomes.explanation(code) == found.meaning
    assert outcomes.explanation(250) == outcomes.RULES[200].meaning  # 200-299


def test_the_sandbox_can_answer_every_code_of_the_table() -> None:
    assert set(outcomes.RULES) - set(sandbox.ERRORS) == set()


@pytest.mark.parametrize(
    ("code", "subcode", "http", "action"),
    [
        (190, 463, 401, Action.STOP),  # token expired
        (102, 467, 401, Action.STOP),  # session invalid
        (100, 33, 400, Action.STOP),  # the phone-number id does not exist
        (100, None, 400, Action.FAIL),
        (250, None, 403, Action.STOP),  # the 2xx range: permissions
        (987654, None, 400, Action.RETRY),  # unknown: retried, then failed
        (None, None, 401, Action.STOP),  # no Graph body at all
        (None, None, 404, Action.STOP),
        (None, None, 429, Action.THROTTLE),
        (None, None, 413, Action.FAIL),
        (None, None, 502, Action.RETRY),
    ],
)
def test_subcodes_ranges_and_answers_without_a_body(
    code: int | None, subcode: int | None, http: int, action: Action
) -> None:
    error = GraphAPIError(http_status=http, code=code, subcode=subcode)
    assert outcomes.classify(error) is action
    assert outcomes.explain(error).strip()


# -- each code against the sandbox ----------------------------------------------

TEMPLATE_NAME, LANGUAGE = "relance_paiement", "fr"


class Harness:
    """One real send: a sandbox answering a code, a queue file, a sender."""

    def __init__(self, path: Path, url: str, queue: AsyncQueue) -> None:
        self.path = path
        self.url = url
        self.queue = queue
        self.stops: list[GraphAPIError] = []
        self.gate = SendGate(6000)
        self.pacer = RecipientPacer(6.0)

    def context(self, graph: GraphClient) -> SendContext:
        return SendContext(
            queue=self.queue,
            gate=self.gate,
            graph=graph,
            region="CI",
            max_attempts=3,
            retry_base=0.0,
            retry_max=0.0,
            clock=lambda: datetime.now(UTC).timestamp(),
            on_stop=self.stops.append,
            pacer=self.pacer,
        )

    async def send_one(self, message_id: int) -> Outcome:
        [claimed] = await self.queue.call(
            QueueDB.claim, datetime.now(UTC), 1, "test", timedelta(minutes=5)
        )
        assert claimed.id == message_id
        async with httpx.AsyncClient(
            headers={"Authorization": f"Bearer {TOKEN}"}
        ) as client:
            graph = GraphClient(client, f"{self.url}/v23.0/1065/messages")
            return await sender.send(self.context(graph), claimed)


@pytest.fixture
async def harness(
    tmp_path: Path, start_sandbox: StartSandbox, request: pytest.FixtureRequest
) -> AsyncIterator[Callable[..., Any]]:
    queues: list[AsyncQueue] = []

    async def make(script: dict[str, Any]) -> tuple[Harness, Any]:
        box = await start_sandbox(script=script)
        queue = AsyncQueue(tmp_path / "database.sqlite")
        await queue.open()
        queues.append(queue)
        return Harness(tmp_path / "database.sqlite", box.url, queue), box

    yield make
    for queue in queues:
        await queue.close()


def _queue_one(path: Path, code: int) -> int:
    """A template message for the template codes, a text for the others."""
    if str(code).startswith("132") or code == 131063:
        message = template_message(A, TEMPLATE_NAME, LANGUAGE, ["Awa"])
    else:
        message = text_message(A, "Votre commande est prête.")
    return WhatsAppQueue(path).add([message])[0]


@pytest.mark.parametrize("code", sorted(outcomes.RULES))
async def test_each_code_does_what_its_rule_says(
    code: int,
    harness: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sandbox answers ``code`` to every request; the row shows the rule."""
    found = outcomes.RULES[code]
    if found.action is Action.THROTTLE:
        monkeypatch.setitem(outcomes.RULES, code, found._replace(pause=0.05))
    script = [code, "ok"] if found.action is Action.THROTTLE else [f"always:{code}"]
    run, box = await harness({A: script})
    # Retries to one recipient would wait for the pair rate: only the
    # pair-rate code itself is tested with Meta's 6 seconds.
    paced = found.action is Action.PAUSE_RECIPIENT
    run.pacer = RecipientPacer(6.0 if paced else 0.0)
    message_id = _queue_one(run.path, code)
    caplog.set_level(logging.INFO, logger="whatsapp_queue")

    outcome = await run.send_one(message_id)

    row = rows(run.path)[message_id]
    answered = await box.requests()
    if found.action is Action.FAIL:
        assert (outcome, row["status"], row["attempts"]) == (
            Outcome.FAILED,
            "failed",
            1,
        )
        assert len(answered) == 1  # never retried
        _assert_failure_recorded(row, code, caplog)
    elif found.action is Action.RETRY:
        assert (outcome, row["status"], row["attempts"]) == (
            Outcome.FAILED,
            "failed",
            3,
        )
        assert len(answered) == 3
        _assert_failure_recorded(row, code, caplog)
    elif found.action is Action.THROTTLE:
        assert (outcome, row["status"], row["attempts"]) == (Outcome.SENT, "sent", 1)
        assert [r["code"] for r in answered] == [code, None]
    elif found.action is Action.STOP:
        assert (outcome, row["status"], row["attempts"]) == (
            Outcome.RELEASED,
            "pending",
            0,
        )
        assert [error.code for error in run.stops] == [code]
        spec = sandbox.ERRORS[code]
        meaning = outcomes.rule(
            GraphAPIError(http_status=spec.status, code=code, subcode=spec.subcode)
        ).meaning  # a token subcode says more than the code
        assert run.gate.closed_reason and meaning in run.gate.closed_reason
    elif found.action is Action.PAUSE_RECIPIENT:
        assert (outcome, row["status"], row["attempts"]) == (
            Outcome.RELEASED,
            "pending",
            0,
        )
        due = datetime.fromisoformat(row["scheduled_at"]).replace(tzinfo=UTC)
        assert due >= datetime.now(UTC) + timedelta(seconds=4)  # the 6 s pair rate
        assert due.timestamp() - 1 < run.pacer.free_at(A.lstrip("+")) <= due.timestamp()
    else:
        assert found.action is Action.PAUSE_TEMPLATE
        assert (outcome, row["status"], row["attempts"]) == (
            Outcome.RELEASED,
            "pending",
            0,
        )
        db = QueueDB.open(run.path)
        try:
            [hold] = db.holds()
            assert db.count_due(datetime.now(UTC)) == 0
        finally:
            db.close()
        assert (hold["template_name"], hold["every_batch"], hold["code"]) == (
            TEMPLATE_NAME,
            True,
            code,
        )
        assert found.meaning in hold["reason"]


def _assert_failure_recorded(
    row: dict[str, Any], code: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Meta's code, title, details and trace id are stored and logged."""
    spec = sandbox.ERRORS[code]
    assert row["error_code"] == code
    assert outcomes.RULES[code].meaning in row["error_message"]
    assert f"(#{code}) {spec.title}" in row["error_message"]
    details = json.loads(row["error_details"])
    assert (details["code"], details["title"], details["details"]) == (
        code,
        spec.title,
        spec.details,
    )
    assert details["fbtrace_id"]
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    context = record.context  # type: ignore[attr-defined]
    assert (context["code"], context["fbtraceId"]) == (code, details["fbtrace_id"])


# -- whole-daemon cases ---------------------------------------------------------


def all_sent(path: Path) -> Callable[[], bool]:
    """A probe: every row of the queue is ``sent``."""
    return lambda: all(row["status"] == "sent" for row in rows(path).values())


def _db_holds(path: Path) -> list[dict[str, Any]]:
    db = QueueDB.open(path)
    try:
        return db.holds()
    finally:
        db.close()


async def test_wrong_parameter_count_fails_at_once_then_holds_the_batch_template(
    start_sandbox: StartSandbox, make_settings: Callable[..., Settings]
) -> None:
    """132000 is not retried; after 3 in a batch its other messages wait."""
    recipients = [f"+22507010203{i:02d}" for i in range(8)]
    box = await start_sandbox(
        script={r: "always:132000" for r in recipients[:6]}, access_token=TOKEN
    )
    settings = make_settings(api_base_url=box.url, concurrency=1)
    queue = WhatsAppQueue(settings.database_path)
    wrong = queue.add(
        template_message(r, "promo_noel", "fr", ["Awa", "20 %"], batch_id="noel")
        for r in recipients[:6]
    )
    other = queue.add(
        template_message(r, "bienvenue", "fr", ["Awa"], batch_id="noel")
        for r in recipients[6:]
    )

    async with running_daemon(settings) as run:
        await run.until(
            lambda: _db_holds(settings.database_path), what="the template hold"
        )
        await run.until(
            lambda: all(
                rows(settings.database_path)[i]["status"] == "sent" for i in other
            ),
            what="the other template's messages",
        )
        queue_rows = rows(settings.database_path)
        report = status.gather(settings, datetime.now(UTC))

    failed = [i for i in wrong if queue_rows[i]["status"] == "failed"]
    held = [i for i in wrong if queue_rows[i]["status"] == "pending"]
    assert (len(failed), len(held)) == (3, 3)
    assert all(queue_rows[i]["attempts"] == 1 for i in failed)  # not retried
    assert all(queue_rows[i]["attempts"] == 0 for i in held)
    assert len(await box.requests()) == 3 + 2
    [hold] = report["held_templates"]
    assert (hold["template_name"], hold["batch_id"], hold["waiting"]) == (
        "promo_noel",
        "noel",
        3,
    )
    assert "3 échecs identiques" in hold["reason"]
    text = status.render(report)
    assert "Held templates" in text and "promo_noel (fr) in batch 'noel'" in text
    assert "nombre de paramètres différent du modèle approuvé" in text
    [batch] = report["batches"]
    assert (batch["held"], batch["finish_estimate"]) == (3, None)
    assert "3 held with their template" in text


def test_template_release_lets_held_messages_go(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """``template holds`` says why; ``template release`` makes them due again."""
    settings = make_settings()
    ids = WhatsAppQueue(settings.database_path).add(
        [template_message(A, "promo_noel", "fr", ["Awa"], batch_id="noel")]
    )
    db = QueueDB.open(settings.database_path)
    try:
        db.hold_template(
            "promo_noel", "fr", "noel", code=132000, reason="3 échecs", now=_now()
        )
        assert db.count_due(_now()) == 0
    finally:
        db.close()
    env = _cli_env(settings)

    listed = _cli(env, tmp_path, "template", "holds")
    unknown = _cli(env, tmp_path, "template", "release", "autre")
    released = _cli(env, tmp_path, "template", "release", "promo_noel")

    assert "promo_noel (fr), noel: 1 messages waiting" in listed.stdout
    assert "why: 3 échecs" in listed.stdout
    assert unknown.returncode == 2 and "no hold for 'autre'" in unknown.stderr
    assert released.returncode == 0, released.stderr
    db = QueueDB.open(settings.database_path)
    try:
        assert db.count_due(_now()) == len(ids)
    finally:
        db.close()


def _now() -> datetime:
    return datetime.now(UTC)


def _cli_env(settings: Settings) -> dict[str, str]:
    from conftest import daemon_env

    return daemon_env(settings)


def _cli(
    env: dict[str, str], cwd: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "whatsapp_daemon", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
    )


async def test_free_form_outside_the_window_fails_saying_a_template_is_needed(
    start_sandbox: StartSandbox, make_settings: Callable[..., Settings]
) -> None:
    box = await start_sandbox(script={A: "always:131047"})
    settings = make_settings(api_base_url=box.url)
    [message_id] = enqueue_texts(settings.database_path, A)

    async with running_daemon(settings) as run:
        await run.until(
            lambda: rows(settings.database_path)[message_id]["status"] == "failed",
            what="the failure",
        )

    row = rows(settings.database_path)[message_id]
    assert row["attempts"] == 1 and len(await box.requests()) == 1
    assert row["error_code"] == 131047
    assert "un modèle (template) est nécessaire" in row["error_message"]


async def test_one_recipient_is_paced_while_the_others_flow(
    start_sandbox: StartSandbox, make_settings: Callable[..., Settings]
) -> None:
    """Four messages to A leave one pair interval apart; B..E do not wait."""
    interval = 2.0
    box = await start_sandbox()
    settings = make_settings(api_base_url=box.url, pair_interval=interval)
    enqueue_texts(settings.database_path, A, A, A, A, B, C, D, E)

    async with running_daemon(settings) as run:
        await run.until(
            all_sent(settings.database_path),
            timeout=30,
            what="every message",
        )

    to_a = sorted(r["at"] for r in await requests_to(box, A))
    others = [r["at"] for r in await box.requests() if r["to"] != A.lstrip("+")]
    gaps = [later - earlier for earlier, later in itertools.pairwise(to_a)]
    assert len(to_a) == 4 and len(others) == 4
    assert min(gaps) >= interval - 0.05, gaps
    assert max(others) < to_a[1]  # the others did not wait behind A


async def test_pair_rate_error_delays_only_that_recipient(
    start_sandbox: StartSandbox, make_settings: Callable[..., Settings]
) -> None:
    """131056 for A: A is retried after its backoff, refunded; B and C go on."""
    box = await start_sandbox(script={A: [131056, "ok"]})
    settings = make_settings(api_base_url=box.url, pair_interval=1.0)
    ids = enqueue_texts(settings.database_path, A, B, C)

    async with running_daemon(settings) as run:
        await run.until(
            all_sent(settings.database_path),
            timeout=20,
            what="every message",
        )

    answered = await box.requests()
    to_a = [r for r in answered if r["to"] == A.lstrip("+")]
    others = [r["at"] for r in answered if r["to"] != A.lstrip("+")]
    assert [r["code"] for r in to_a] == [131056, None]
    assert to_a[1]["at"] - to_a[0]["at"] >= 1.0 - 0.05
    assert max(others) < to_a[1]["at"]
    assert rows(settings.database_path)[ids[0]]["attempts"] == 1  # refunded


async def test_expired_token_on_message_37_keeps_37_to_100_untouched_until_renewed(
    start_sandbox: StartSandbox, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """190/463 stops the sender; a new token in .env resumes; nothing is lost."""
    box = await start_sandbox(access_token=None, token_expires_after=36)
    settings = make_settings(api_base_url=box.url, concurrency=1)
    recipients = [f"+2250701{i:06d}" for i in range(100)]
    ids = enqueue_texts(settings.database_path, *recipients)
    env_file = tmp_path / ".env"
    env_file.write_text(f"WHATSAPP_ACCESS_TOKEN={TOKEN}\n", encoding="utf-8")

    async with running_daemon(settings, env_file=str(env_file)) as run:
        stopped = await run.until(
            lambda: status.gather(settings, _now())["sending_stopped"],
            what="the stop",
        )
        await run.until(
            lambda: all(
                r["status"] != "processing"
                for r in rows(settings.database_path).values()
            ),
            what="the claimed messages to be handed back",
        )
        queue_rows = rows(settings.database_path)
        assert stopped["code"] == 190
        assert [queue_rows[i]["status"] for i in ids[:36]] == ["sent"] * 36
        assert {
            (queue_rows[i]["status"], queue_rows[i]["attempts"]) for i in ids[36:]
        } == {("pending", 0)}
        assert "jeton d'accès expiré" in stopped["reason"]

        renewed = "EAA-renewed-token-for-this-test-0000000"  # made up
        env_file.write_text(f"WHATSAPP_ACCESS_TOKEN={renewed}\n", encoding="utf-8")
        await run.until(
            all_sent(settings.database_path),
            timeout=30,
            what="the rest after the new token",
        )

    stats = await box.stats()
    assert (stats["accepted"], stats["by_code"]) == (100, {"190": 1})
    assert all(r["attempts"] == 1 for r in rows(settings.database_path).values())


async def test_window_check_refuses_free_form_text_before_spending_a_send(
    start_sandbox: StartSandbox, make_settings: Callable[..., Settings]
) -> None:
    """With the check on, only customers who wrote in the last 24 h get text."""
    box = await start_sandbox()
    settings = make_settings(api_base_url=box.url, service_window_check=True)
    db = QueueDB.open(settings.database_path)
    try:
        for recipient, hours in ((A, 1), (B, 25)):
            written = (_now() - timedelta(hours=hours)).strftime("%Y-%m-%d %H:%M:%S")
            db.conn.execute(
                "INSERT INTO whatsapp_contacts VALUES (?, ?, ?)",
                (recipient.lstrip("+"), written, written),
            )
    finally:
        db.close()
    queue = WhatsAppQueue(settings.database_path)
    text_a, text_b, text_c = enqueue_texts(settings.database_path, A, B, C)
    [template_c] = queue.add([template_message(C, "relance", "fr", ["Awa"])])

    async with running_daemon(settings) as run:
        await run.until(
            lambda: all(
                r["status"] in ("sent", "failed")
                for r in rows(settings.database_path).values()
            ),
            what="every message",
        )

    queue_rows = rows(settings.database_path)
    assert [queue_rows[i]["status"] for i in (text_a, text_b, text_c, template_c)] == [
        "sent",
        "failed",
        "failed",
        "sent",
    ]
    for refused in (text_b, text_c):
        assert queue_rows[refused]["error_code"] == 131047
        assert queue_rows[refused]["attempts"] == 0
        assert "fenêtre fermée" in queue_rows[refused]["error_message"]
    assert sorted((r["to"], r["type"]) for r in await box.requests()) == sorted(
        [(A.lstrip("+"), "text"), (C.lstrip("+"), "template")]
    )


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"retry-after": "7"}, 7.0),
        (
            {
                "x-business-use-case-usage": json.dumps(
                    {
                        "1065": [
                            {"call_count": 100, "estimated_time_to_regain_access": 3}
                        ]
                    }
                )
            },
            180.0,
        ),
        (
            {
                "x-business-use-case-usage": json.dumps(
                    {"1065": [{"estimated_time_to_regain_access": 0}]}
                )
            },
            None,
        ),
        ({"x-business-use-case-usage": "not json"}, None),
        ({}, None),
    ],
)
def test_the_wait_meta_asks_for_is_read_from_its_headers(
    headers: dict[str, str], wait: float | None
) -> None:
    """Retry-After, else the usage header's minutes, sets the sender's pause."""
    body = {"error": {"message": "(#80007) Rate limit", "code": 80007}}
    response = httpx.Response(400, json=body, headers=headers)
    error = graph._graph_error(response)
    assert error.code == 80007
    assert error.retry_after == wait


def test_pacer_spaces_one_recipient_by_metas_six_seconds() -> None:
    """With the default interval, a recipient is free again 6 s after a send."""
    pacer = RecipientPacer(Settings.model_fields["pair_interval"].default)
    one, other = "2250701020304", "2250501020305"
    assert pacer.reserve(one, 1000.0) == 0.0
    assert pacer.reserve(one, 1000.5) == 6.0  # reserved by a message waiting
    pacer.sent(one, 1001.0)  # its request leaves a second later
    pacer.release(one)
    assert pacer.reserve(one, 1004.0) == pytest.approx(3.0)
    assert pacer.reserve(other, 1004.0) == 0.0  # another recipient
    assert pacer.reserve(one, 1007.0) == 0.0


def test_pacer_backs_off_four_to_the_power_of_the_errors_in_a_row() -> None:
    """131056: 6 s (at least the interval), then 6, 16, 64...; reset on success."""
    pacer = RecipientPacer(6.0)
    waits = [pacer.back_off("a", 0.0) for _ in range(5)]
    assert waits == [6.0, 6.0, 16.0, 64.0, 256.0]
    pacer.accepted("a")
    assert pacer.back_off("a", 1000.0) == 1006.0
    assert pacer.back_off("b", 0.0) == 6.0  # others are not affected
    for _ in range(20):
        last = pacer.back_off("c", 0.0)
    assert last == 3600.0  # never more than an hour


async def test_throughput_pause_doubles_with_each_error_in_a_row(
    harness: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three 130429 in a row: the sender waits 0.2, 0.4 then 0.8 s."""
    base = 0.2
    rule = outcomes.RULES[130429]._replace(pause=base)
    monkeypatch.setitem(outcomes.RULES, 130429, rule)
    run, box = await harness({A: [130429, 130429, 130429, "ok"]})
    run.pacer = RecipientPacer(0.0)
    message_id = _queue_one(run.path, 130429)

    assert await run.send_one(message_id) is Outcome.SENT

    times = [r["at"] for r in await box.requests()]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert [round(g / base) for g in gaps] == [1, 2, 4], gaps
    assert rows(run.path)[message_id]["attempts"] == 1


async def test_a_burst_to_one_recipient_neither_delays_others_nor_reorders(
    start_sandbox: StartSandbox, make_settings: Callable[..., Settings]
) -> None:
    """Messages to a busy recipient go back without spending the gate's turns."""
    box = await start_sandbox()
    settings = make_settings(
        api_base_url=box.url, pair_interval=1.0, rate_per_minute=600
    )
    queue = WhatsAppQueue(settings.database_path)
    queue.add(text_message(A, f"message {i}") for i in range(6))
    others = [f"+22505010203{i:02d}" for i in range(10)]
    enqueue_texts(settings.database_path, *others)

    async with running_daemon(settings) as run:
        await run.until(
            all_sent(settings.database_path),
            timeout=30,
            what="every message",
        )

    answered = await box.requests()
    to_a = [r for r in answered if r["to"] == A.lstrip("+")]
    to_others = [r["at"] for r in answered if r["to"] != A.lstrip("+")]
    assert [r["body"]["text"]["body"] for r in to_a] == [
        f"message {i}" for i in range(6)
    ]
    # Ten others at 0.1 s each: done long before A's second message.
    assert max(to_others) < to_a[1]["at"]
    assert len(answered) == 16  # no request refused or repeated


def _failed_template_row(path: Path, updated: datetime, batch: str | None) -> None:
    """A failed 132000 row, as an earlier run of the daemon left it."""
    db = QueueDB.open(path)
    try:
        [row_id] = db.enqueue(
            [template_message(B, "promo_noel", "fr", ["Awa"], batch_id=batch)],
            updated,
        )
        db.mark_failed(row_id, "132000", updated, code=132000)
    finally:
        db.close()


@pytest.mark.parametrize("batch", [None, "noel"])
def test_only_recent_failures_since_the_last_release_count_towards_a_hold(
    batch: str | None, make_settings: Callable[..., Settings]
) -> None:
    """Old failures, or failures from before ``template release``, never hold
    a template again by themselves."""
    settings = make_settings()
    path = settings.database_path
    for _ in range(3):
        _failed_template_row(path, _now() - timedelta(days=20), batch)
    db = QueueDB.open(path)
    try:
        assert db.template_failures(batch, "promo_noel", "fr", 132000, _now()) == 0
        for _ in range(3):
            _failed_template_row(path, _now() - timedelta(minutes=5), batch)
        assert db.template_failures(batch, "promo_noel", "fr", 132000, _now()) == 3
        assert db.hold_template(
            "promo_noel", "fr", batch, code=132000, reason="3", now=_now()
        )
        assert not db.hold_template(
            "promo_noel", "fr", batch, code=132000, reason="3", now=_now()
        )
        assert db.release_holds("promo_noel", _now() + timedelta(seconds=1)) == 1
        assert db.holds() == []
        later = _now() + timedelta(seconds=2)
        assert db.template_failures(batch, "promo_noel", "fr", 132000, later) == 0
        # Held again after the release: the same hold is in force once more.
        assert db.hold_template(
            "promo_noel", "fr", batch, code=132000, reason="again", now=later
        )
        assert [h["reason"] for h in db.holds()] == ["again"]
    finally:
        db.close()


def test_a_batch_named_star_is_held_alone(
    make_settings: Callable[..., Settings],
) -> None:
    """No batch name, not even "*" written by another program, means every
    batch: a hold of that batch keeps the other batches' messages due."""
    settings = make_settings()
    path = settings.database_path
    QueueDB.open(path).close()
    for batch in ("*", "autre", None):
        insert_raw(
            path,
            recipient=A,
            message_type="template",
            template_name="promo_noel",
            template_language="fr",
            batch_id=batch,
        )
    db = QueueDB.open(path)
    try:
        db.hold_template("promo_noel", "fr", "*", code=132000, reason="3", now=_now())
        [hold] = db.holds()
        assert (hold["batch_id"], hold["every_batch"], hold["waiting"]) == (
            "*",
            False,
            1,
        )
        assert db.count_due(_now()) == 2
        db.hold_template(
            "promo_noel",
            "fr",
            None,
            code=132001,
            reason="x",
            now=_now(),
            every_batch=True,
        )
        assert db.count_due(_now()) == 0
    finally:
        db.close()


def test_half_an_emoji_in_meta_s_error_is_kept_as_an_escape() -> None:
    """JSON may hold a lone surrogate, which no UTF-8 log or SQLite text can
    carry: the title, details and trace id keep it as an escape, so a stop
    is stored and logged instead of failing with it."""
    body = (
        b'{"error": {"message": "(#190) Expired \\ud83d", "code": 190,'
        b' "error_subcode": 463, "error_data": {"details": "x \\udc00"},'
        b' "fbtrace_id": "A\\ud800"}}'
    )
    response = httpx.Response(401, content=body)

    error = graph._graph_error(response)

    assert (error.code, error.subcode) == (190, 463)
    assert (error.title, error.details) == ("Expired \\ud83d", "x \\udc00")
    assert error.fbtrace_id == "A\\ud800"
    for text in (error.title, error.details, error.fbtrace_id, str(error)):
        text.encode("utf-8")
