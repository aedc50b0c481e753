"""Tests of the sandbox Graph API, served on a free loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from whatsapp_daemon.limits import busiest_window
from whatsapp_daemon.sandbox import (
    SandboxConfig,
    load_script,
    main,
    start,
)

REPO = Path(__file__).resolve().parents[1]
TOKEN = "EAAG-test-token-1234567890"  # a made-up access token
SEND = "/v23.0/106540352242922/messages"  # phone number id from Meta's examples
RECIPIENT = "+2250701020304"

# Meta's documented 130429 answer (error-codes page); only fbtrace_id varies.
RATE_LIMIT_HIT = {
    "message": "(#130429) Rate limit hit",
    "type": "OAuthException",
    "code": 130429,
    "error_data": {
        "messaging_product": "whatsapp",
        "details": "Cloud API message throughput has been reached.",
    },
    "error_subcode": 2494055,
}

Serve = Callable[..., Awaitable[httpx.AsyncClient]]


def text_message(to: str = RECIPIENT) -> dict[str, Any]:
    """Return a minimal text message body."""
    return {
        "messaging_product": "whatsapp",
        "to": to,
        "type": "text",
        "text": {"body": "Bonjour"},
    }


def template_message(to: str = RECIPIENT) -> dict[str, Any]:
    """Return a minimal template message body."""
    template = {"name": "rappel_paiement", "language": {"code": "fr"}}
    return {
        "messaging_product": "whatsapp",
        "to": to,
        "type": "template",
        "template": template,
    }


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start sandboxes on free ports; close clients and servers afterwards."""
    async with contextlib.AsyncExitStack() as stack:

        async def serve(config: SandboxConfig | None = None) -> httpx.AsyncClient:
            runner, port = await start(config or SandboxConfig())
            stack.push_async_callback(runner.cleanup)
            client = httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}",
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=5.0,
                trust_env=False,
            )
            return await stack.enter_async_context(client)

        yield serve


async def test_text_message_is_accepted_with_a_wamid(serve: Serve) -> None:
    """A valid text message gets Meta's success body and trace headers."""
    client = await serve()

    response = await client.post(SEND, json=text_message("+225 07 01 02 03 04"))

    assert response.status_code == 200
    body = response.json()
    assert body["messaging_product"] == "whatsapp"
    assert body["contacts"] == [
        {"input": "+225 07 01 02 03 04", "wa_id": "2250701020304"}
    ]
    [message] = body["messages"]
    assert message["id"].startswith("wamid.")
    assert "message_status" not in message
    assert response.headers["facebook-api-version"] == "v23.0"
    assert response.headers["x-fb-trace-id"]
    assert response.headers["x-fb-request-id"]


async def test_template_message_is_accepted_with_message_status(serve: Serve) -> None:
    """A template message's answer carries message_status "accepted"."""
    client = await serve()

    response = await client.post(SEND, json=template_message())

    assert response.status_code == 200
    assert response.json()["messages"][0]["message_status"] == "accepted"


async def test_message_ids_are_unique(serve: Serve) -> None:
    """Every accepted message gets its own wamid."""
    client = await serve()

    replies = [await client.post(SEND, json=text_message()) for _ in range(20)]

    ids = {r.json()["messages"][0]["id"] for r in replies}
    assert len(ids) == 20


async def test_scripted_error_is_answered_once_then_ok(serve: Serve) -> None:
    """A scripted 131000 comes back once, with HTTP 500, then the send succeeds."""
    client = await serve(SandboxConfig(script={RECIPIENT: [131000, "ok"]}))

    first = await client.post(SEND, json=text_message("2250701020304"))
    second = await client.post(SEND, json=text_message())

    assert first.status_code == 500
    assert first.json()["error"]["code"] == 131000
    assert first.json()["error"]["message"] == "(#131000) Something went wrong"
    assert second.status_code == 200


async def test_always_action_is_never_used_up(serve: Serve) -> None:
    """An "always:131026" recipient fails every time; others are unaffected."""
    client = await serve(SandboxConfig(script={RECIPIENT: ["always:131026"]}))

    codes = [
        (await client.post(SEND, json=text_message())).json()["error"]["code"]
        for _ in range(3)
    ]
    other = await client.post(SEND, json=text_message("+2250501020304"))

    assert codes == [131026] * 3
    assert other.status_code == 200


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (0, 401),
        (10, 403),
        (131000, 500),
        (133004, 503),
        (132001, 404),
        (80007, 429),
        (131026, 400),
        (999999, 400),
    ],
    ids=[
        "auth",
        "permission",
        "server",
        "unavailable",
        "template",
        "waba",
        "400",
        "unknown",
    ],
)
async def test_error_codes_get_their_http_status(
    serve: Serve, code: int, status: int
) -> None:
    """Each scripted code is answered with the HTTP status of Meta's table."""
    client = await serve(SandboxConfig(script={RECIPIENT: [code]}))

    response = await client.post(SEND, json=text_message())

    assert response.status_code == status
    assert response.json()["error"]["message"].startswith(f"(#{code}) ")


async def test_missing_token_gets_error_190(serve: Serve) -> None:
    """A request without a Bearer token is refused with 401 and code 190."""
    client = await serve()

    response = await client.post(
        SEND, json=text_message(), headers={"Authorization": ""}
    )

    assert response.status_code == 401
    assert response.json()["error"]["code"] == 190


async def test_wrong_token_gets_190_463_without_echoing_it(serve: Serve) -> None:
    """Another token than the configured one gets 190/463 and is never echoed."""
    client = await serve(SandboxConfig(access_token="the-right-token"))

    response = await client.post(SEND, json=text_message())
    log = await client.get("/_sandbox/requests")

    error = response.json()["error"]
    assert response.status_code == 401
    assert (error["code"], error["error_subcode"]) == (190, 463)
    assert error["message"] == (
        "(#190) Error validating access token: Session has expired"
    )
    for text in (response.text, log.text, str(response.headers)):
        assert TOKEN not in text
        assert "the-right-token" not in text


async def test_right_token_is_accepted(serve: Serve) -> None:
    """The configured token lets the message through."""
    client = await serve(SandboxConfig(access_token=TOKEN))

    response = await client.post(SEND, json=text_message())

    assert response.status_code == 200


async def test_token_expires_after_n_sends_and_a_renewed_one_is_accepted(
    serve: Serve,
) -> None:
    """The configured token expires after two sends (190/463); from then on
    another token stands for the renewed one, while before it was refused."""
    client = await serve(SandboxConfig(access_token=TOKEN, token_expires_after=2))
    renewed = {"Authorization": "Bearer a-renewed-token-0000"}

    early = await client.post(SEND, json=text_message(), headers=renewed)
    sent = [await client.post(SEND, json=text_message()) for _ in range(3)]
    late = await client.post(SEND, json=text_message(), headers=renewed)

    assert early.status_code == 401  # not the configured token, not expired yet
    assert [r.status_code for r in sent] == [200, 200, 401]
    error = sent[2].json()["error"]
    assert (error["code"], error["error_subcode"]) == (190, 463)
    assert late.status_code == 200


async def test_throughput_overflow_gets_documented_130429(serve: Serve) -> None:
    """Past the per-second limit the answer is Meta's documented 130429 body."""
    client = await serve(SandboxConfig(throughput_per_second=2))

    replies = [await client.post(SEND, json=text_message()) for _ in range(3)]

    assert [r.status_code for r in replies] == [200, 200, 400]
    error = replies[2].json()["error"]
    assert len(error.pop("fbtrace_id")) >= 20
    assert error == RATE_LIMIT_HIT


async def test_random_errors_follow_error_rate(serve: Serve) -> None:
    """With error_rate 1 every request gets a drawn code, marked transient."""
    config = SandboxConfig(error_rate=1.0, random_codes=(4,), seed=7)
    client = await serve(config)

    response = await client.post(SEND, json=text_message())

    error = response.json()["error"]
    assert response.status_code == 429
    assert (error["code"], error["is_transient"]) == (4, True)


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        (b"not json", "JSON object"),
        (b'{"messaging_product": "sms", "to": "1", "type": "text"}', "whatsapp"),
        (b'{"messaging_product": "whatsapp", "type": "text"}', "to"),
        (b'{"messaging_product": "whatsapp", "to": "+2250701020304"}', "type"),
        (
            b'{"messaging_product": "whatsapp", "to": "1", "type": "text"}',
            "text is required",
        ),
    ],
    ids=["not-json", "product", "no-to", "no-type", "no-type-object"],
)
async def test_malformed_body_gets_error_100(
    serve: Serve, body: bytes, complaint: str
) -> None:
    """A body that is not a message gets 400, code 100 and a reason."""
    client = await serve()

    response = await client.post(SEND, content=body)

    error = response.json()["error"]
    assert response.status_code == 400
    assert error["message"] == "(#100) Invalid parameter"
    assert complaint in error["error_data"]["details"]


async def test_unknown_path_gets_graph_style_404(serve: Serve) -> None:
    """A path the sandbox does not serve gets a Graph error with code 100."""
    client = await serve()

    response = await client.get("/v23.0/106540352242922/media")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == 100
    assert response.headers["x-fb-trace-id"]


async def test_slow_action_waits_then_accepts(serve: Serve) -> None:
    """A "slow:0.2" recipient is answered 200 after about 0.2 seconds."""
    client = await serve(SandboxConfig(script={RECIPIENT: ["slow:0.2"]}))

    began = time.monotonic()
    response = await client.post(SEND, json=text_message())

    assert response.status_code == 200
    assert time.monotonic() - began >= 0.2


async def test_hang_is_accepted_after_the_client_gave_up(serve: Serve) -> None:
    """A "hang" request is still accepted and logged after the client times out."""
    config = SandboxConfig(script={RECIPIENT: ["hang"]}, hang_seconds=0.3)
    client = await serve(config)

    with pytest.raises(httpx.ReadTimeout):
        await client.post(SEND, json=text_message(), timeout=0.05)
    await asyncio.sleep(0.5)
    log = (await client.get("/_sandbox/requests")).json()["requests"]

    assert [(r["http_status"], r["to"]) for r in log] == [(200, RECIPIENT)]
    assert log[0]["message_id"].startswith("wamid.")


async def test_request_log_lists_then_clears(serve: Serve) -> None:
    """Each send is logged with its outcome and body until the log is deleted."""
    client = await serve(SandboxConfig(script={RECIPIENT: [131026]}))
    await client.post(SEND, json=text_message())
    await client.post(SEND, json=template_message())

    log = (await client.get("/_sandbox/requests")).json()["requests"]
    cleared = await client.delete("/_sandbox/requests")
    after = (await client.get("/_sandbox/requests")).json()["requests"]

    assert [(r["code"], r["type"]) for r in log] == [
        (131026, "text"),
        (None, "template"),
    ]
    assert log[1]["body"] == template_message()
    assert abs(log[0]["at"] - time.time()) < 60
    assert cleared.json() == {"cleared": 2}
    assert after == []


async def test_stats_count_outcomes(serve: Serve) -> None:
    """Stats count totals, accepted sends, codes and the busiest minute."""
    client = await serve(SandboxConfig(script={RECIPIENT: [131000, 131026]}))
    for _ in range(3):
        await client.post(SEND, json=text_message())

    stats = (await client.get("/_sandbox/stats")).json()

    assert stats == {
        "total": 3,
        "accepted": 1,
        "by_code": {"131000": 1, "131026": 1},
        "max_in_any_60s": 3,
    }


def test_busiest_minute_is_found_over_a_sliding_window() -> None:
    """The busiest 60 s span is found wherever it starts, end excluded."""
    times = [200.0, 0.0, 10.0, 59.9, 60.0, 61.0]

    assert busiest_window(times, 60.0) == 4
    assert busiest_window([], 60.0) == 0


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.org"])
async def test_start_refuses_a_non_loopback_host(host: str) -> None:
    """Starting on anything but loopback raises ValueError naming the host."""
    with pytest.raises(ValueError, match=host.replace(".", r"\.")):
        await start(SandboxConfig(), host=host)


def test_load_script_keeps_digits_only(tmp_path: Path) -> None:
    """Script keys lose "+" and spaces; a lone action becomes a list."""
    path = tmp_path / "script.json"
    path.write_text(
        '{"+225 07 01 02 03 04": [131000, "ok"], "2250102030405": "always:131026"}',
        encoding="utf-8",
    )

    assert load_script(path) == {
        "2250701020304": [131000, "ok"],
        "2250102030405": ["always:131026"],
    }


def test_load_script_rejects_an_unknown_action(tmp_path: Path) -> None:
    """An unknown action is reported with the recipient and the accepted forms."""
    path = tmp_path / "script.json"
    path.write_text('{"+2250701020304": ["explode"]}', encoding="utf-8")

    with pytest.raises(ValueError, match=r"explode.*always:CODE"):
        load_script(path)


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--latency", "fast"], "--latency"),
        (["--error-rate", "2"], "--error-rate"),
        (["--host", "0.0.0.0"], "--host"),
        (["--port", "-1"], "--port"),
        (["--script", "/nonexistent/script.json"], "--script"),
    ],
    ids=["latency", "error-rate", "host", "port", "script"],
)
def test_cli_reports_a_bad_option_in_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], named: str
) -> None:
    """A bad option value gives exit 2 and one stderr line naming it."""
    status = main(argv)

    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1
    assert named in err
    assert argv[1] in err


def test_cli_serves_until_sigterm(tmp_path: Path) -> None:
    """`python -m whatsapp_daemon.sandbox` serves, writes its port, exits 0 on TERM."""
    port_file = tmp_path / "port"
    command = [sys.executable, "-m", "whatsapp_daemon.sandbox", "--port", "0"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with subprocess.Popen(
        [*command, "--port-file", str(port_file), "--seed", "1"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            port = _wait_for_port(port_file)
            response = _send_once(port)
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=10)
        finally:
            process.kill()

    assert response.status_code == 200
    assert process.returncode == 0, err
    assert out == f"Sandbox Graph API listening on http://127.0.0.1:{port}\n"


def _send_once(port: int) -> httpx.Response:
    """Send one text message to the sandbox on ``port``."""
    with httpx.Client(trust_env=False, timeout=5.0) as client:
        return client.post(
            f"http://127.0.0.1:{port}{SEND}",
            json=text_message(),
            headers={"Authorization": f"Bearer {TOKEN}"},
        )


def _wait_for_port(path: Path, timeout: float = 10.0) -> int:
    """Poll ``path`` until the sandbox has written its port into it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return int(path.read_text())
        time.sleep(0.05)
    raise AssertionError(f"no port file at {path} after {timeout} s")
