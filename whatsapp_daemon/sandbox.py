"""A local imitation of the WhatsApp Cloud API send endpoint, for demos and tests.

Meta's Graph API cannot be reached from a developer machine or from CI, so this
module serves ``POST /{version}/{phone_number_id}/messages`` on a loopback port
and answers the way Meta does: the success body with a ``wamid``, or a Graph
error body (``{"error": {"message": "(#CODE) Title", "code": ...}}``) with the
HTTP status Meta's older error page gave for that code.

What it answers is decided, in this order, by:

1. the ``Authorization: Bearer`` header (error 190 when missing or wrong);
2. the JSON body (error 100 when it is not a message);
3. the throughput limit (error 130429 once the last second holds the limit's
   worth of admitted requests; refused ones do not count, as at Meta);
4. a per-recipient script of actions (``131000`` once, ``"always:131026"``,
   ``"hang"``, ``"slow:2.5"``, ``"ok"``), keyed by the recipient's digits;
5. a random transient error drawn with probability ``error_rate``.

Every send request is recorded once answered (a "hang" only when its wait
ends, even if the client gave up); ``GET /_sandbox/requests`` lists them,
``GET /_sandbox/stats`` counts them and ``DELETE /_sandbox/requests`` forgets
them. Run it with ``whatsapp-daemon sandbox --help``.

With a ``webhook_url`` (loopback only) and an ``app_secret``, it then
plays Meta's webhook for each accepted message: signed notifications
``sent``, ``delivered``, ``read`` (``failed`` for ``"async:CODE"``), each
``status_delay`` seconds after the last; ``GET /_sandbox/notifications``
lists them.

The access token is compared but never written to a response, a record or a log.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import ipaddress
import itertools
import json
import logging
import os
import random
import re
import secrets
import signal
import sys
import time
import urllib.parse
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, NoReturn

from aiohttp import ClientError, ClientSession, web
from aiohttp.typedefs import Handler

from .limits import busiest_window

DEFAULT_HOST = "127.0.0.1"  # loopback only: the sandbox is never exposed
DEFAULT_PORT = 8799  # TCP port the CLI listens on unless --port says otherwise
DEFAULT_VERSION = "v23.0"  # facebook-api-version header when the path has none
# Environment variable read when --access-token is not given.
TOKEN_ENV = "WHATSAPP_SANDBOX_ACCESS_TOKEN"
# Environment variable read when --app-secret is not given.
APP_SECRET_ENV = "WHATSAPP_SANDBOX_APP_SECRET"
# How the sandbox's notifications name the business account and its number.
WABA_ID = "102290129340398"
DISPLAY_PHONE_NUMBER = "15550783881"
ERROR_HREF = "/documentation/business-messaging/whatsapp/support/error-codes"
NOTIFY_TRIES = 3  # attempts to deliver one notification to the webhook
THROUGHPUT_WINDOW = 1.0  # seconds over which throughput_per_second is counted
STATS_WINDOW = 60.0  # seconds of the sliding window behind max_in_any_60s
SHUTDOWN_GRACE = 1.0  # seconds given to answers in flight (a "hang") at shutdown

EXIT_OK = 0  # stopped by SIGTERM or SIGINT
EXIT_NO_LISTEN = 1  # the port could not be bound
EXIT_USAGE = 2  # a bad option value; one line on stderr says which and how to fix

TRANSIENT_CODES = frozenset({4, 17, 80007})  # bodies carry "is_transient": true

logger = logging.getLogger(__name__)


class GraphError(NamedTuple):
    """How the sandbox answers one Graph error code."""

    status: int  # HTTP status
    title: str  # shown as "(#CODE) Title" in error.message
    details: str  # error.error_data.details
    subcode: int | None = None  # error.error_subcode, when Meta sends one


# Titles and details follow Meta's error-code page; statuses follow its older
# revision, which still had an HTTP column (401 auth, 403 permission, 500/503
# server side, 404 missing template, 429 app/user/WABA call limits, 400 else).
ERRORS: Mapping[int, GraphError] = {
    0: GraphError(401, "AuthException", "We were unable to authenticate the app user."),
    1: GraphError(400, "API Unknown", "Invalid request or possible server error."),
    2: GraphError(503, "API Service", "Temporary due to downtime or overload."),
    3: GraphError(500, "API Method", "Capability or permissions issue."),
    4: GraphError(
        429, "Application request limit reached", "The app hit its call rate.", 2446079
    ),
    10: GraphError(403, "Permission Denied", "Permission not granted or removed."),
    17: GraphError(
        429, "User request limit reached", "The user hit its call rate.", 2446079
    ),
    100: GraphError(400, "Invalid parameter", "The request has an invalid parameter."),
    190: GraphError(401, "Access token has expired", "Get a new access token."),
    200: GraphError(403, "API Permission", "Permission not granted or removed."),
    368: GraphError(
        403, "Temporarily blocked for policies violations", "Account restricted."
    ),
    80007: GraphError(
        429,
        "Business request limit reached for WhatsApp Business Account",
        "The WhatsApp Business Account has reached its rate limit.",
        2446079,
    ),
    130429: GraphError(
        400,
        "Rate limit hit",
        "Cloud API message throughput has been reached.",
        2494055,
    ),
    130472: GraphError(
        400,
        "User's number is part of an experiment",
        "Message not sent as part of an experiment.",
    ),
    131000: GraphError(500, "Something went wrong", "Message failed to send."),
    131005: GraphError(403, "Access denied", "Permission not granted or removed."),
    131008: GraphError(400, "Required parameter is missing", "A parameter is missing."),
    131009: GraphError(400, "Parameter value is not valid", "A value is not valid."),
    131016: GraphError(500, "Service unavailable", "A service is unavailable."),
    131021: GraphError(
        400, "Recipient cannot be sender", "Sender and recipient are the same."
    ),
    131026: GraphError(
        400,
        "Message Undeliverable",
        "Unable to deliver message: the number may not be on WhatsApp.",
    ),
    131031: GraphError(403, "Business Account locked", "The account is locked."),
    131042: GraphError(
        400, "Business eligibility payment issue", "Check the payment method."
    ),
    131045: GraphError(
        500, "Incorrect certificate", "Phone number registration error."
    ),
    131047: GraphError(
        400,
        "Re-engagement message",
        "More than 24 hours have passed since the recipient last replied.",
    ),
    131048: GraphError(
        400,
        "Spam rate limit hit",
        "Too many previous messages were blocked or flagged.",
    ),
    131049: GraphError(
        400,
        "This message was not delivered to maintain healthy ecosystem engagement.",
        "Message not delivered to maintain healthy ecosystem engagement.",
    ),
    131050: GraphError(
        400,
        "Unable to deliver the message",
        "The recipient has stopped marketing messages from this business.",
    ),
    131051: GraphError(400, "Unsupported message type", "This type is not supported."),
    131053: GraphError(400, "Media upload error", "Unable to upload the media."),
    131056: GraphError(
        400,
        "(Business Account, Consumer Account) pair rate limit hit",
        "Too many messages sent to this phone number in a short period.",
    ),
    131057: GraphError(
        500, "Account in maintenance mode", "The business account is in maintenance."
    ),
    132000: GraphError(
        400,
        "Number of parameters does not match the expected number of params",
        "The parameter count does not match the template.",
    ),
    132001: GraphError(
        404,
        "Template name does not exist in the translation",
        "The template does not exist in this language or is not approved.",
    ),
    132005: GraphError(
        400, "Translated text too long", "The hydrated template text is too long."
    ),
    132007: GraphError(
        400,
        "Template Format Character Policy Violated",
        "The template content violates a WhatsApp policy.",
    ),
    132012: GraphError(
        400,
        "Parameter format does not match format in the created template",
        "A parameter does not match the template's format.",
    ),
    132015: GraphError(400, "Template is Paused", "The template is paused."),
    132016: GraphError(400, "Template is Disabled", "The template is disabled."),
    133004: GraphError(
        503, "Server Temporarily Unavailable", "The server is unavailable."
    ),
    133010: GraphError(
        400, "Account not registered", "The phone number is not registered."
    ),
    # The rest of Meta's error-code page, so that every code can be scripted.
    32: GraphError(429, "Page request limit reached", "The page hit its call rate."),
    33: GraphError(
        400,
        "Parameter value is not valid",
        "This phone number ID does not exist or was deleted.",
    ),
    102: GraphError(401, "API Session", "The login session has expired.", 467),
    341: GraphError(400, "Application limit reached", "Too many calls; wait."),
    506: GraphError(400, "Duplicate Post", "This request duplicates a previous one."),
    613: GraphError(429, "Calls to this api have exceeded the rate limit", "Wait."),
    130403: GraphError(
        400, "Recipient blocked", "The business has blocked this recipient."
    ),
    130497: GraphError(
        400,
        "Business account is restricted from messaging users in this country",
        "Messages to this country are not allowed for this account.",
    ),
    131037: GraphError(
        400,
        "WhatsApp provided number needs display name approval before message"
        " can be sent",
        "The display name of this number is not approved.",
    ),
    131052: GraphError(400, "Media download error", "Unable to download the media."),
    131055: GraphError(
        400, "Method not allowed", "This method is not allowed for this number."
    ),
    131063: GraphError(
        400,
        "Marketing templates disabled",
        "Marketing templates cannot be sent through the Cloud API for this account.",
    ),
    131064: GraphError(
        400,
        "Messaging limit reached",
        "Messaging is limited after template classification violations.",
    ),
    132018: GraphError(
        400, "Template parameter validation error", "A template parameter is invalid."
    ),
    132068: GraphError(400, "Flow is in blocked state", "The flow is blocked."),
    132069: GraphError(
        400, "Flow is in throttled state", "10 sends used this flow in the last hour."
    ),
    133000: GraphError(
        500, "Incomplete deregistration", "A previous deregistration did not finish."
    ),
    133005: GraphError(400, "Two step verification PIN Mismatch", "Wrong PIN."),
    133006: GraphError(
        400, "Phone number re-verification needed", "Verify the number again."
    ),
    133008: GraphError(
        400, "Too many two step verification PIN guesses", "Try again later."
    ),
    133009: GraphError(
        400, "Two step verification PIN Guessed Too Fast", "Wait before retrying."
    ),
    133015: GraphError(
        400,
        "Please wait a few minutes before attempting to register this phone number",
        "The number was deleted recently; wait 5 minutes.",
    ),
    133016: GraphError(
        400,
        "Account has been deregistered",
        "Too many registration or deregistration attempts.",
    ),
    134011: GraphError(
        400, "WhatsApp Payments terms not accepted", "Accept the payment terms."
    ),
    135000: GraphError(400, "Generic user error", "Unknown error in the parameters."),
    2494100: GraphError(
        400, "Account in maintenance mode", "The phone number is being migrated."
    ),
}
UNKNOWN_ERROR = GraphError(400, "Unknown error", "The sandbox has no entry for it.")

ActionKind = Literal["ok", "error", "always", "hang", "slow", "async"]


@dataclass(frozen=True)
class SandboxConfig:
    """How the sandbox behaves; every field defaults to "accept everything".

    ``script`` maps a recipient (digits, any "+" or spaces are dropped) to the
    actions answered to its successive requests: ``"ok"``, an error code such
    as ``131000`` (answered once), ``"always:CODE"`` (answered every time),
    ``"hang"`` (wait ``hang_seconds``, then accept) or ``"slow:SECONDS"``
    (wait, then accept), or ``"async:CODE"`` (accept, then notify the
    webhook that delivery ``failed`` with CODE). Once a list is used up the
    recipient gets ``"ok"``.
    ``seed`` fixes the latency draws and random errors; message ids and trace
    ids stay unique across runs whatever the seed.
    """

    latency: tuple[float, float] = (0.0, 0.0)  # seconds, uniform per request
    error_rate: float = 0.0  # share of requests answered with a random code
    random_codes: tuple[int, ...] = (131000, 2, 133004)  # drawn for error_rate
    script: Mapping[str, Sequence[str | int]] = field(default_factory=dict)
    throughput_per_second: int | None = None  # more in the last 1 s: 130429
    access_token: str | None = field(default=None, repr=False)  # never shown
    seed: int | None = None
    hang_seconds: float = 60.0  # seconds a "hang" action waits before accepting
    # Where to POST delivery statuses (loopback only), signed with app_secret.
    webhook_url: str | None = None
    app_secret: str | None = field(default=None, repr=False)  # never shown
    status_delay: float = 0.0  # seconds before each status notification
    # After this many accepted sends, the token in use expires: error 190
    # (subcode 463) for it from then on; any other token is then accepted,
    # as a renewed one would be, even if ``access_token`` names another.
    token_expires_after: int | None = None


@dataclass(frozen=True)
class _Action:
    """One parsed script action."""

    kind: ActionKind
    code: int = 0  # Graph error code, for "error" and "always"
    seconds: float = 0.0  # wait before accepting, for "slow"


@dataclass(frozen=True)
class _Reply:
    """What the sandbox answers to one send request."""

    status: int  # HTTP status
    payload: dict[str, Any]  # JSON body
    code: int | None = None  # Graph error code, None on success
    message_id: str | None = None  # wamid, on success only
    failure: int | None = None  # "async:CODE": notify failed with CODE


@dataclass(frozen=True)
class _Record:
    """One send request as listed by GET /_sandbox/requests."""

    at: float  # unix time of arrival, seconds
    to: Any
    type: Any
    http_status: int
    code: int | None
    message_id: str | None
    body: Any  # the parsed JSON body, None when it was not JSON


def _digits(text: str) -> str:
    """Return only the digits of ``text``."""
    return re.sub(r"\D", "", text)


def _parse_action(action: object) -> _Action:
    """Turn one script entry into an _Action, or raise ValueError."""
    if isinstance(action, int) and not isinstance(action, bool):
        return _Action("error", code=action)
    text = str(action).strip()
    if text in ("ok", "hang"):
        return _Action("ok" if text == "ok" else "hang")
    if re.fullmatch(r"\d+", text):
        return _Action("error", code=int(text))
    if match := re.fullmatch(r"always:(\d+)", text):
        return _Action("always", code=int(match[1]))
    if match := re.fullmatch(r"slow:(\d+(?:\.\d*)?)", text):
        return _Action("slow", seconds=float(match[1]))
    if match := re.fullmatch(r"async:(\d+)", text):
        return _Action("async", code=int(match[1]))
    raise ValueError(
        f'unknown action {action!r}; use "ok", an error code such as 131000,'
        ' "always:CODE", "hang", "slow:SECONDS" or "async:CODE"'
    )


def _as_list(actions: object) -> list[object]:
    """Accept one action or a list of them."""
    if isinstance(actions, list | tuple):
        return list(actions)
    return [actions]


def _parse_script(script: Mapping[str, object]) -> dict[str, deque[_Action]]:
    """Normalise recipients to digits and parse their actions."""
    parsed: dict[str, deque[_Action]] = {}
    for recipient, actions in script.items():
        key = _digits(str(recipient))
        if not key:
            raise ValueError(f"recipient {recipient!r} has no digits")
        if key in parsed:
            raise ValueError(f"recipient {recipient!r} is listed twice")
        try:
            parsed[key] = deque(_parse_action(a) for a in _as_list(actions))
        except ValueError as exc:
            raise ValueError(f"recipient {recipient!r}: {exc}") from exc
    return parsed


def load_script(path: Path) -> dict[str, list[str | int]]:
    """Read a script file: a JSON object of recipient -> list of actions.

    Recipients may be written with "+", spaces or dashes; the keys returned
    are digits only. A single action may stand in for a one-element list.
    Raises OSError when the file cannot be read and ValueError when it is
    not such an object or an action is unknown.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError('expected a JSON object such as {"+2250701020304": [131000]}')
    _parse_script(data)
    return {_digits(k): _plain_actions(v) for k, v in data.items()}


def _plain_actions(actions: object) -> list[str | int]:
    """Return the actions of one recipient as JSON scalars."""
    return [a if isinstance(a, int) else str(a) for a in _as_list(actions)]


def _check_config(config: SandboxConfig) -> None:
    """Raise ValueError when a config value cannot work."""
    low, high = config.latency
    if not 0 <= low <= high:
        raise ValueError(f"latency must be 0 <= min <= max seconds, got {low}-{high}")
    if not 0 <= config.error_rate <= 1:
        raise ValueError(f"error_rate must be within 0..1, got {config.error_rate}")
    if config.error_rate and not config.random_codes:
        raise ValueError("random_codes must not be empty when error_rate is set")
    if config.throughput_per_second is not None and config.throughput_per_second < 1:
        raise ValueError("throughput_per_second must be at least 1 or None")
    if config.hang_seconds < 0:
        raise ValueError(f"hang_seconds must be >= 0, got {config.hang_seconds}")
    if config.status_delay < 0:
        raise ValueError(f"status_delay must be >= 0, got {config.status_delay}")
    if config.webhook_url is not None:
        _require_loopback_url(config.webhook_url)
        if not config.app_secret:
            raise ValueError("app_secret is needed to sign the webhook's notifications")


def _require_loopback_url(url: str) -> None:
    """Raise ValueError unless ``url`` is http(s) to a loopback IP address."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"webhook URL must be http://127.0.0.1:PORT/PATH, got {url!r}")
    try:
        _require_loopback(parts.hostname)
    except ValueError:
        raise ValueError(
            f"webhook URL must point at a loopback address such as 127.0.0.1,"
            f" got {url!r}; the sandbox never calls beyond this machine"
        ) from None


def _random_id(size: int) -> str:
    """Return a URL-safe random id of ``size`` bytes of entropy."""
    return secrets.token_urlsafe(size)


def _graph_error_body(code: int, spec: GraphError, trace_id: str) -> dict[str, Any]:
    """Build the Graph error body Meta sends for ``code``."""
    error: dict[str, Any] = {
        "message": f"(#{code}) {spec.title}",
        "type": "OAuthException",
        "code": code,
        "error_data": {"messaging_product": "whatsapp", "details": spec.details},
    }
    if spec.subcode is not None:
        error["error_subcode"] = spec.subcode
    error["fbtrace_id"] = trace_id
    if code in TRANSIENT_CODES:
        error["is_transient"] = True
    return {"error": error}


def _error(
    code: int,
    trace_id: str,
    details: str | None = None,
    *,
    status: int | None = None,
    subcode: int | None = None,
    title: str | None = None,
) -> _Reply:
    """Return the reply carrying Graph error ``code``; keywords override ERRORS."""
    base = ERRORS.get(code, UNKNOWN_ERROR)
    spec = GraphError(
        status or base.status,
        title or base.title,
        details or base.details,
        subcode or base.subcode,
    )
    return _Reply(spec.status, _graph_error_body(code, spec, trace_id), code=code)


def _body_problem(body: Any) -> str | None:
    """Say what makes ``body`` unfit to be a message, or return None."""
    if not isinstance(body, dict):
        return "The request body must be a JSON object."
    if body.get("messaging_product") != "whatsapp":
        return 'Parameter messaging_product must be "whatsapp".'
    to = body.get("to")
    if not isinstance(to, str) or not _digits(to):
        return "Parameter to must be a phone number such as +2250701020304."
    kind = body.get("type")
    if not isinstance(kind, str) or not kind:
        return "Parameter type is required, e.g. text or template."
    if not isinstance(body.get(kind), dict | list):
        return f"Parameter {kind} is required when type is {kind}."
    return None


class _Sandbox:
    """The state behind one app: script progress, throughput and the log."""

    def __init__(self, config: SandboxConfig) -> None:
        _check_config(config)
        self.config = config
        self.records: list[_Record] = []
        self._script = _parse_script(config.script)
        self._rng = random.Random(config.seed)
        self._recent: deque[float] = deque()  # monotonic times, last second
        self._counter = itertools.count(1)
        self._accepted = 0
        self._expired: set[str] = set()  # hashes of tokens that expired

    async def answer(self, authorization: str | None, body: Any, trace: str) -> _Reply:
        """Decide the reply to one send request, waiting as configured."""
        await self._sleep_latency()
        refusal = self._refuse_token(authorization, trace)
        if refusal is None and (problem := _body_problem(body)) is not None:
            refusal = _error(100, trace, problem)
        if refusal is not None:
            return refusal
        reply = await self._decide(body, trace)
        if reply.message_id is not None:
            self._count_acceptance(authorization)
        return reply

    def _count_acceptance(self, authorization: str | None) -> None:
        """Expire the token in use once ``token_expires_after`` sends passed."""
        self._accepted += 1
        limit = self.config.token_expires_after
        if limit is not None and self._accepted == limit:
            self._expired.add(_token_hash(authorization))

    def record(self, arrived: float, body: Any, reply: _Reply) -> None:
        """Append one request to the log."""
        fields = body if isinstance(body, dict) else {}
        entry = _Record(
            arrived,
            fields.get("to"),
            fields.get("type"),
            reply.status,
            reply.code,
            reply.message_id,
            body,
        )
        self.records.append(entry)
        logger.debug("sandbox answered %s code=%s", reply.status, reply.code)

    def stats(self) -> dict[str, Any]:
        """Count the logged requests."""
        codes = Counter(str(r.code) for r in self.records if r.code is not None)
        return {
            "total": len(self.records),
            "accepted": sum(r.http_status == 200 for r in self.records),
            "by_code": dict(sorted(codes.items())),
            "max_in_any_60s": busiest_window(
                [r.at for r in self.records], STATS_WINDOW
            ),
        }

    async def _sleep_latency(self) -> None:
        low, high = self.config.latency
        if high > 0:
            await asyncio.sleep(self._rng.uniform(low, high))

    def _refuse_token(self, authorization: str | None, trace: str) -> _Reply | None:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            details = "Send the header Authorization: Bearer <access token>."
            return _error(190, trace, details)
        if _token_hash(authorization) in self._expired:
            return _error(
                190,
                trace,
                "The access token expired; generate a new one.",
                subcode=463,
                title="Error validating access token: Session has expired",
            )
        expected = self.config.access_token
        # Once the expected token has expired, any new one stands for the
        # token the user generated to replace it.
        if (
            expected is not None
            and not self._expired
            and not secrets.compare_digest(token.strip().encode(), expected.encode())
        ):
            return _refused_token(trace)
        return None

    async def _decide(self, body: dict[str, Any], trace: str) -> _Reply:
        if self._over_throughput():
            return _error(130429, trace)
        action = self._next_action(_digits(body["to"]))
        if action.kind in ("error", "always"):
            return _error(action.code, trace)
        if action.kind == "async":
            return self._accept(body, failure=action.code)
        if action.kind in ("hang", "slow"):
            wait = self.config.hang_seconds if action.kind == "hang" else action.seconds
            await asyncio.sleep(wait)
        elif self._rng.random() < self.config.error_rate:
            return _error(self._rng.choice(self.config.random_codes), trace)
        return self._accept(body)

    def _over_throughput(self) -> bool:
        """Count this request unless the last second is already full."""
        limit = self.config.throughput_per_second
        if limit is None:
            return False
        now = time.monotonic()
        while self._recent and now - self._recent[0] >= THROUGHPUT_WINDOW:
            self._recent.popleft()
        if len(self._recent) >= limit:
            return True
        self._recent.append(now)
        return False

    def _next_action(self, recipient: str) -> _Action:
        actions = self._script.get(recipient)
        if not actions:
            return _Action("ok")
        if actions[0].kind == "always":
            return actions[0]
        return actions.popleft()

    def _accept(self, body: dict[str, Any], failure: int | None = None) -> _Reply:
        message_id = self._new_message_id()
        message: dict[str, Any] = {"id": message_id}
        if body["type"] == "template":
            message["message_status"] = "accepted"
        payload = {
            "messaging_product": "whatsapp",
            "contacts": [{"input": body["to"], "wa_id": _digits(body["to"])}],
            "messages": [message],
        }
        return _Reply(200, payload, message_id=message_id, failure=failure)

    def _new_message_id(self) -> str:
        """Return a wamid: a counter and random bytes, base64url without padding."""
        raw = next(self._counter).to_bytes(6, "big") + secrets.token_bytes(12)
        return "wamid." + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _token_hash(authorization: str | None) -> str:
    """Digest of the bearer token, so that the token itself is not kept."""
    token = (authorization or "").partition(" ")[2].strip()
    return hashlib.sha256(token.encode()).hexdigest()


def _refused_token(trace: str) -> _Reply:
    """Return the reply to a token other than the configured one."""
    return _error(
        190,
        trace,
        "The access token is not the one this sandbox expects.",
        subcode=463,
        title="Error validating access token: Session has expired",
    )


_SANDBOX = web.AppKey("sandbox", _Sandbox)
_TRACE = web.RequestKey("fbtrace_id", str)
_VERSION_RE = re.compile(r"v\d+\.\d+")


async def _read_json(request: web.Request) -> Any:
    """Return the parsed JSON body, or None when it is not JSON."""
    raw = await request.read()
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None


async def _post_message(request: web.Request) -> web.Response:
    """Answer POST /{version}/{phone_number_id}/messages."""
    sandbox = request.app[_SANDBOX]
    arrived = time.time()
    body = await _read_json(request)
    authorization = request.headers.get("Authorization")
    reply = await sandbox.answer(authorization, body, request[_TRACE])
    sandbox.record(arrived, body, reply)
    request.app[_NOTIFIER].notify(body, reply, request.match_info["phone_number_id"])
    return web.json_response(reply.payload, status=reply.status)


async def _list_requests(request: web.Request) -> web.Response:
    """Answer GET /_sandbox/requests with every logged request."""
    records = request.app[_SANDBOX].records
    return web.json_response({"requests": [asdict(r) for r in records]})


async def _clear_requests(request: web.Request) -> web.Response:
    """Answer DELETE /_sandbox/requests by emptying the log."""
    records = request.app[_SANDBOX].records
    cleared = len(records)
    records.clear()
    return web.json_response({"cleared": cleared})


async def _stats(request: web.Request) -> web.Response:
    """Answer GET /_sandbox/stats."""
    return web.json_response(request.app[_SANDBOX].stats())


def _not_found(request: web.Request) -> web.Response:
    """Return the Graph-style answer to a path the sandbox does not serve."""
    details = (
        f"Unknown path {request.method} {request.path}; the sandbox serves POST"
        " /{version}/{phone_number_id}/messages and /_sandbox/requests|stats."
    )
    reply = _error(100, request[_TRACE], details, status=404)
    return web.json_response(reply.payload, status=reply.status)


def _api_version(request: web.Request) -> str:
    """Return the Graph version named by the path, or the default."""
    first = request.path.lstrip("/").split("/", 1)[0]
    return first if _VERSION_RE.fullmatch(first) else DEFAULT_VERSION


@web.middleware
async def _graph_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give every answer Meta's trace headers; turn routing misses into Graph 404s."""
    request[_TRACE] = "A" + _random_id(16)
    try:
        response = await handler(request)
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
        response = _not_found(request)
    response.headers["x-fb-trace-id"] = request[_TRACE]
    response.headers["x-fb-request-id"] = "A" + _random_id(15)
    response.headers["facebook-api-version"] = _api_version(request)
    return response


class _Notifier:
    """Plays Meta's webhook: signed status notifications for accepted sends."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.sent: list[dict[str, Any]] = []  # what GET /_sandbox/notifications shows
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: ClientSession | None = None

    def notify(self, body: Any, reply: _Reply, phone_number_id: str) -> None:
        """Start notifying the statuses of an accepted message, if configured."""
        if self.config.webhook_url is None or reply.message_id is None:
            return
        statuses = (
            ["failed"] if reply.failure is not None else ["sent", "delivered", "read"]
        )
        task = asyncio.ensure_future(self._play(body, reply, phone_number_id, statuses))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _play(
        self, body: Any, reply: _Reply, phone_number_id: str, statuses: list[str]
    ) -> None:
        for status in statuses:
            await asyncio.sleep(self.config.status_delay)
            item: dict[str, Any] = {
                "id": reply.message_id,
                "status": status,
                "timestamp": str(int(time.time())),
                "recipient_id": _digits(str(body.get("to", ""))),
            }
            opaque = body.get("biz_opaque_callback_data")
            if isinstance(opaque, str):
                item["biz_opaque_callback_data"] = opaque
            if status == "failed" and reply.failure is not None:
                item["errors"] = [_status_error(reply.failure)]
            await self._post(_notification(item, phone_number_id), item)

    async def _post(self, notification: dict[str, Any], item: dict[str, Any]) -> None:
        raw = json.dumps(notification).encode()
        secret = (self.config.app_secret or "").encode()
        signature = hmac.new(secret, raw, hashlib.sha256).hexdigest()
        headers = {
            "Content-Type": "application/json",
            "X-Hub-Signature-256": f"sha256={signature}",
        }
        if self._session is None:
            self._session = ClientSession()
        answered: int | None = None
        for attempt in range(NOTIFY_TRIES):
            try:
                async with self._session.post(
                    str(self.config.webhook_url), data=raw, headers=headers
                ) as response:
                    answered = response.status
                if answered == 200:
                    break
            except ClientError as exc:
                logger.debug("sandbox webhook notification failed: %s", exc)
            await asyncio.sleep(0.2 * (attempt + 1))
        self.sent.append(
            {"id": item["id"], "status": item["status"], "http_status": answered}
        )

    async def close(self) -> None:
        """Stop the notifications under way and close the HTTP client."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()


def _status_error(code: int) -> dict[str, Any]:
    """The ``errors[]`` entry of a failed status, as Meta writes it."""
    spec = ERRORS.get(code, UNKNOWN_ERROR)
    return {
        "code": code,
        "title": spec.title,
        "message": spec.title,
        "error_data": {"details": spec.details},
        "href": ERROR_HREF,
    }


def _notification(item: dict[str, Any], phone_number_id: str) -> dict[str, Any]:
    """A status webhook notification, shaped like Meta's."""
    value = {
        "messaging_product": "whatsapp",
        "metadata": {
            "display_phone_number": DISPLAY_PHONE_NUMBER,
            "phone_number_id": phone_number_id,
        },
        "statuses": [item],
    }
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": WABA_ID, "changes": [{"value": value, "field": "messages"}]}],
    }


_NOTIFIER = web.AppKey("notifier", _Notifier)


async def _list_notifications(request: web.Request) -> web.Response:
    """Answer GET /_sandbox/notifications with the statuses sent to the webhook."""
    return web.json_response({"notifications": request.app[_NOTIFIER].sent})


def make_app(config: SandboxConfig) -> web.Application:
    """Build the sandbox application; raise ValueError on a bad config."""
    app = web.Application(middlewares=[_graph_headers])
    app[_SANDBOX] = _Sandbox(config)
    notifier = app[_NOTIFIER] = _Notifier(config)

    async def close_notifier(app: web.Application) -> None:
        await notifier.close()

    app.on_cleanup.append(close_notifier)
    app.router.add_get("/_sandbox/notifications", _list_notifications)
    app.router.add_post(
        r"/{version:v\d+\.\d+}/{phone_number_id}/messages", _post_message
    )
    app.router.add_get("/_sandbox/requests", _list_requests)
    app.router.add_delete("/_sandbox/requests", _clear_requests)
    app.router.add_get("/_sandbox/stats", _stats)
    return app


def _require_loopback(host: str) -> None:
    """Raise ValueError unless ``host`` is a loopback IP address."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(
            f"host must be a loopback address such as 127.0.0.1, got {host!r}; "
            "the sandbox is never exposed beyond this machine"
        )


async def start(
    config: SandboxConfig, host: str = DEFAULT_HOST, port: int = 0
) -> tuple[web.AppRunner, int]:
    """Start serving on ``host``:``port`` (0 picks a free port).

    Returns the runner, to ``await runner.cleanup()`` when done, and the port
    actually bound. Raises ValueError for a non-loopback host or a bad config
    and OSError when the port cannot be bound.
    """
    _require_loopback(host)
    runner = web.AppRunner(
        make_app(config), access_log=None, shutdown_timeout=SHUTDOWN_GRACE
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    bound: int = runner.addresses[0][1]
    return runner, bound


class _UsageError(Exception):
    """A command-line value is unusable; the message names it and the fix."""


class _Parser(argparse.ArgumentParser):
    """An argument parser that reports errors as _UsageError, not exit."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message} (see --help)")


def _latency(text: str) -> tuple[float, float]:
    """Parse "0.1" or "0.05-0.3" (seconds)."""
    match = re.fullmatch(r"(\d+(?:\.\d*)?)(?:-(\d+(?:\.\d*)?))?", text.strip())
    if match and float(match[2] or match[1]) >= float(match[1]):
        return float(match[1]), float(match[2] or match[1])
    raise argparse.ArgumentTypeError(
        f'got "{text}"; give seconds, e.g. "0.1", or a range MIN-MAX, e.g. "0.05-0.3"'
    )


def _error_rate(text: str) -> float:
    """Parse a share between 0 and 1."""
    try:
        rate = float(text)
    except ValueError:
        rate = -1.0
    if 0 <= rate <= 1:
        return rate
    raise argparse.ArgumentTypeError(
        f'got "{text}"; give a share between 0 and 1, e.g. 0.02'
    )


def _whole(low: int, high: int, example: str) -> Callable[[str], int]:
    """Return a parser of whole numbers within [low, high]."""

    def parse(text: str) -> int:
        if re.fullmatch(r"\d+", text.strip()) and low <= int(text) <= high:
            return int(text)
        raise argparse.ArgumentTypeError(
            f'got "{text}"; give a whole number from {low} to {high}, e.g. {example}'
        )

    return parse


def _host(text: str) -> str:
    """Accept loopback addresses only."""
    try:
        _require_loopback(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text


def _parser() -> argparse.ArgumentParser:
    """Describe the command-line options."""
    parser = _Parser(
        prog="whatsapp-daemon sandbox",
        description="Imitate the WhatsApp Cloud API send endpoint on a loopback port.",
    )
    add = parser.add_argument
    add("--host", type=_host, default=DEFAULT_HOST, help="loopback address")
    add("--port", type=_whole(0, 65535, "8799"), default=DEFAULT_PORT, help="0 = any")
    add("--latency", type=_latency, default=(0.0, 0.0), help='seconds, "0.05-0.3"')
    add("--error-rate", type=_error_rate, default=0.0, help="share, e.g. 0.02")
    add("--script", type=Path, help="JSON file: recipient -> list of actions")
    add("--throughput", type=_whole(1, 10**6, "80"), help="requests per second")
    add("--access-token", help=f"token to require (or env {TOKEN_ENV})")
    add("--seed", type=_whole(0, 2**32 - 1, "2026"), help="fix latency and errors")
    add(
        "--token-expires-after",
        type=_whole(1, 10**9, "36"),
        help="the token in use expires after this many accepted sends (error 190);"
        " any other token is then accepted, as a renewed one",
    )
    add("--port-file", type=Path, help="write the bound port here once listening")
    add(
        "--webhook-url",
        type=_webhook_url,
        help="POST delivery statuses here, e.g. http://127.0.0.1:8788/webhook",
    )
    add("--app-secret", help=f"signs the statuses (or env {APP_SECRET_ENV})")
    add(
        "--status-delay",
        type=_seconds,
        default=1.0,
        help="seconds before each status notification (default 1)",
    )
    add(
        "--hang-seconds",
        type=_whole(0, 3600, "60"),
        default=60,
        help='seconds a "hang" action waits before accepting',
    )
    return parser


def _webhook_url(text: str) -> str:
    """Accept URLs to a loopback address only."""
    try:
        _require_loopback_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text


def _seconds(text: str) -> float:
    """Parse a number of seconds, 0 or more."""
    if re.fullmatch(r"\d+(?:\.\d*)?", text.strip()):
        return float(text)
    raise argparse.ArgumentTypeError(f'got "{text}"; give seconds, e.g. 1 or 0.5')


def _config(options: argparse.Namespace) -> SandboxConfig:
    """Build the config from parsed options, loading the script file."""
    script: dict[str, list[str | int]] = {}
    if options.script is not None:
        try:
            script = load_script(options.script)
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise _UsageError(
                f'argument --script: cannot use "{options.script}": {reason}; '
                'fix the file, e.g. {"+2250701020304": [131000, "ok"]}'
            ) from exc
    return SandboxConfig(
        latency=options.latency,
        error_rate=options.error_rate,
        script=script,
        throughput_per_second=options.throughput,
        access_token=options.access_token or os.environ.get(TOKEN_ENV) or None,
        seed=options.seed,
        hang_seconds=float(options.hang_seconds),
        token_expires_after=options.token_expires_after,
        webhook_url=options.webhook_url,
        app_secret=_app_secret(options),
        status_delay=options.status_delay,
    )


def _app_secret(options: argparse.Namespace) -> str | None:
    """The secret signing notifications; required with --webhook-url."""
    secret = options.app_secret or os.environ.get(APP_SECRET_ENV) or None
    if options.webhook_url and not secret:
        raise _UsageError(
            f"argument --webhook-url: needs --app-secret (or env {APP_SECRET_ENV}),"
            " the same secret as the webhook's WHATSAPP_APP_SECRET"
        )
    return secret


def _write_port_file(path: Path, port: int) -> None:
    """Write ``port`` to ``path`` atomically, so a reader never sees half."""
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(f"{port}\n", encoding="utf-8")
    partial.replace(path)


async def _wait_for_stop() -> None:
    """Return once SIGTERM or SIGINT arrives."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def _announce(options: argparse.Namespace, port: int) -> None:
    """Write the port file, if asked, then print the listening line."""
    if options.port_file is not None:
        try:
            _write_port_file(options.port_file, port)
        except OSError as exc:
            raise _UsageError(
                f'argument --port-file: cannot write "{options.port_file}" '
                f"({exc.strerror}); give a path in an existing, writable folder"
            ) from exc
    print(f"Sandbox Graph API listening on {_url(options.host, port)}", flush=True)


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def _serve(config: SandboxConfig, options: argparse.Namespace) -> int:
    """Listen until a stop signal; return the exit status."""
    try:
        runner, port = await start(config, options.host, options.port)
    except OSError as exc:
        print(
            f"sandbox: cannot listen on {options.host}:{options.port} "
            f"({exc.strerror}); pick another --port, or --port 0 for any free one",
            file=sys.stderr,
        )
        return EXIT_NO_LISTEN
    try:
        _announce(options, port)
        await _wait_for_stop()
    except _UsageError as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        await runner.cleanup()
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sandbox from the command line; return the exit status."""
    try:
        options = _parser().parse_args(argv)
        config = _config(options)
    except _UsageError as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return asyncio.run(_serve(config, options))


if __name__ == "__main__":
    raise SystemExit(main())
