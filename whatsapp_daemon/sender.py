"""Send one claimed message: pace, attempt, retry, and record the outcome.

Each message gets its own ``AsyncRetrying`` (tenacity keeps per-run state in
it). Attempts are counted in the database before the request leaves, so a
restart never resets them; an attempt that Meta refused for throughput, for
the pair rate, for a held template or for the token, or that never left this
machine, is given back. What each error code does is in ``outcomes.RULES``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    wait_exponential_jitter,
)
from tenacity.wait import wait_base

from . import deliveries, payloads
from .errors import GraphAPIError, InvalidMessageError, SendError, TransportError
from .graph import GraphClient
from .limits import RecipientPacer, SendGate, SendingStopped
from .logs import ctx
from .models import MessageType, QueuedMessage
from .outcomes import Action, classify, explain, rule
from .queue import AsyncQueue, BatchHeld, QueueDB

MAX_THROTTLE_PAUSE = 300.0  # seconds: longest pause after throughput errors
NETWORK_PAUSE = 15.0  # seconds the sender pauses when Meta is unreachable
MAX_FREE_RETRIES = 20  # throttled or unsent attempts allowed per claim

# Errors that say nothing about the message itself: its attempt is given back.
_GIVEN_BACK = frozenset(
    {Action.THROTTLE, Action.STOP, Action.PAUSE_RECIPIENT, Action.PAUSE_TEMPLATE}
)
_HELD = {"cancelled": "lot annulé", "held": "modèle suspendu"}

# A free-form message to a customer whose window is closed is refused here,
# under Meta's code for it, before a send is spent.
WINDOW_CODE = 131047
WINDOW_CLOSED = (
    "refusé avant l'envoi : le client n'a pas écrit depuis plus de 24 h (fenêtre"
    " fermée) ; un modèle (template) approuvé est nécessaire"
)

logger = logging.getLogger("whatsapp_queue")

Clock = Callable[[], float]


class Outcome(StrEnum):
    """How one claim of a message ended."""

    SENT = "sent"
    FAILED = "failed"
    UNKNOWN = "unknown"  # the request may have reached Meta
    RELEASED = "released"  # back to pending, to be sent later
    CANCELLED = "cancelled"  # its batch was cancelled before it left


class RecipientBusy(Exception):
    """The recipient's pair-rate slot is taken: send this message later."""

    def __init__(self, until: float) -> None:
        super().__init__(until)
        self.until = until


@dataclass
class _Tally:
    """Attempts of one claim: those that count and those given back."""

    budget: int
    spent: int = 0
    free: int = 0


@dataclass
class SendContext:
    """What every send shares: the queue, the gate, the client, the policy."""

    queue: AsyncQueue
    gate: SendGate
    graph: GraphClient
    region: str | None
    max_attempts: int
    retry_base: float
    retry_max: float
    clock: Clock
    on_stop: Callable[[GraphAPIError], None]
    pacer: RecipientPacer = field(default_factory=lambda: RecipientPacer(6.0))
    template_failure_limit: int = 3
    window_check: bool = False  # refuse free-form text outside the 24 h window
    in_flight: set[int] = field(default_factory=set)
    throttles: int = 0  # throughput errors in a row, for the growing pause

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)


async def send(context: SendContext, message: QueuedMessage) -> Outcome:
    """Send ``message`` and store how it ended; never raises a SendError."""
    try:
        payload = payloads.build(message, context.region)
    except InvalidMessageError as exc:
        return await _fail(context, message, str(exc))
    to = str(payload["to"])  # the recipient as Meta and the pacer know it
    tally = _Tally(budget=context.max_attempts - max(0, message.attempts))
    if tally.budget <= 0:
        return await _fail(context, message, "tentatives épuisées")
    free_form = message.message_type != MessageType.TEMPLATE
    if (
        context.window_check
        and free_form
        and not await context.queue.call(_window_open, to, context.now())
    ):
        return await _fail(context, message, WINDOW_CLOSED, code=WINDOW_CODE)
    try:
        wamid = await _with_retries(context, message, payload, tally)
    except SendingStopped:
        await context.queue.call(QueueDB.release, message.id, context.now())
        return Outcome.RELEASED
    except RecipientBusy as busy:
        # Whole seconds in the table: round up, never due before it is free.
        until = datetime.fromtimestamp(math.ceil(busy.until), UTC)
        await context.queue.call(QueueDB.defer, message.id, until, context.now())
        logger.debug(
            "Message différé : un message à ce destinataire vient de partir",
            extra=ctx(id=message.id, until=until.strftime("%H:%M:%S")),
        )
        return Outcome.RELEASED
    except BatchHeld as held:
        # begin_attempt has already put the row back or cancelled it.
        logger.info(
            "Message retenu : %s",
            _HELD.get(held.state, "lot en pause"),
            extra=ctx(id=message.id, batch=message.batch_id),
        )
        if held.state == Outcome.CANCELLED:
            return Outcome.CANCELLED
        return Outcome.RELEASED
    except GraphAPIError as exc:
        return await _settle_error(context, message, exc, to)
    except TransportError as exc:
        return await _settle_transport(context, message, exc)
    await context.queue.call(QueueDB.mark_sent, message.id, wamid, context.now())
    context.pacer.accepted(to)
    context.throttles = 0
    logger.info(
        "Message envoyé avec succès",
        extra=ctx(messageId=wamid, recipient=_recipient(message, payload)),
    )
    return Outcome.SENT


async def _with_retries(
    context: SendContext,
    message: QueuedMessage,
    payload: dict[str, Any],
    tally: _Tally,
) -> str:
    retrying = AsyncRetrying(
        stop=lambda state: (
            tally.spent >= tally.budget or tally.free >= MAX_FREE_RETRIES
        ),
        wait=_Wait(context.retry_base, context.retry_max),
        retry=retry_if_exception(_retryable),
        before_sleep=lambda state: _log_retry(message, payload, tally, state),
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            return await _attempt(context, message, payload, tally)
    raise AssertionError("tenacity ended without an outcome")  # pragma: no cover


async def _attempt(
    context: SendContext,
    message: QueuedMessage,
    payload: dict[str, Any],
    tally: _Tally,
) -> str:
    """Make one HTTP attempt, counted in the database before it leaves."""
    to = str(payload["to"])

    async def record(at: float) -> None:
        # In flight from here on: a stop now lets this attempt finish.
        context.in_flight.add(message.id)
        moment = datetime.fromtimestamp(at, UTC)
        await context.queue.call(QueueDB.begin_attempt, message.id, moment, context.now)
        context.pacer.sent(to, at)  # not if its batch or template is held

    # Reserve the recipient before queueing at the gate: a message whose
    # recipient is busy goes back to the queue without spending a turn.
    now = context.clock()
    wait = context.pacer.reserve(to, now)
    if wait > 0:
        raise RecipientBusy(now + wait)
    try:
        await context.gate.acquire(record)
        return await context.graph.send(payload)
    except GraphAPIError as exc:
        await _close_attempt(context, message, tally, refund=_refunded(context, exc))
        raise
    except TransportError as exc:
        if not exc.maybe_delivered:
            context.gate.pause(NETWORK_PAUSE)
            await _close_attempt(context, message, tally, refund=True)
        raise
    finally:
        context.in_flight.discard(message.id)
        context.pacer.release(to)


def _refunded(context: SendContext, exc: GraphAPIError) -> bool:
    """Apply a sender-wide effect of ``exc``; tell if its attempt is given back."""
    found = rule(exc)
    if found.action is Action.THROTTLE:
        # The pause doubles with each throughput error in a row.
        growing = found.pause * 2 ** min(context.throttles, 5)
        context.throttles += 1
        context.gate.pause(exc.retry_after or min(growing, MAX_THROTTLE_PAUSE))
    elif found.action is Action.STOP:
        # Close the gate at once so that no other message is attempted.
        context.gate.close(explain(exc))
        context.on_stop(exc)
    return found.action in _GIVEN_BACK


def _window_open(db: QueueDB, to: str, now: datetime) -> bool:
    return deliveries.window_open(db.conn, to, now)


async def _close_attempt(
    context: SendContext, message: QueuedMessage, tally: _Tally, *, refund: bool
) -> None:
    """Mark the attempt finished so a crash in the backoff is not 'unknown'."""
    if refund:
        tally.free += 1
    else:
        tally.spent += 1
    await context.queue.call(
        QueueDB.end_attempt, message.id, refund=refund, now=context.now()
    )


def _retryable(exc: BaseException) -> bool:
    """Retry transient errors only; never a cancellation or a stop."""
    if isinstance(exc, GraphAPIError):
        return classify(exc) in (Action.RETRY, Action.THROTTLE)
    return isinstance(exc, TransportError) and not exc.maybe_delivered


class _Wait(wait_base):
    """Exponential backoff with jitter for retries; none for throttling.

    A throttled or unsent attempt waits in the gate's shared pause instead,
    so that the whole sender slows down, not just this message.
    """

    def __init__(self, base: float, maximum: float) -> None:
        self._backoff = wait_exponential_jitter(
            multiplier=base, max=maximum, jitter=base
        )

    def __call__(self, retry_state: RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, GraphAPIError) and classify(exc) is Action.RETRY:
            return float(self._backoff(retry_state))
        return 0.0


async def _settle_error(
    context: SendContext, message: QueuedMessage, exc: GraphAPIError, to: str
) -> Outcome:
    action = classify(exc)
    if action in (Action.STOP, Action.THROTTLE):
        await context.queue.call(QueueDB.release, message.id, context.now())
        return Outcome.RELEASED
    if action is Action.PAUSE_RECIPIENT:
        return await _pause_recipient(context, message, exc, to)
    if action is Action.PAUSE_TEMPLATE and _is_template(message):
        return await _pause_template(context, message, exc)
    outcome = await _fail(context, message, explain(exc), exc)
    if rule(exc).template and _is_template(message):
        await _count_template_failure(context, message, exc)
    return outcome


async def _pause_recipient(
    context: SendContext, message: QueuedMessage, exc: GraphAPIError, to: str
) -> Outcome:
    """Pair rate hit: this recipient waits, the message is due again later."""
    free = context.pacer.back_off(to, context.clock())
    until = datetime.fromtimestamp(math.ceil(free), UTC)
    await context.queue.call(QueueDB.defer, message.id, until, context.now())
    logger.warning(
        "Destinataire en pause : %s",
        explain(exc),
        extra=ctx(
            id=message.id,
            recipient=message.recipient,
            code=exc.code,
            until=until.strftime("%Y-%m-%d %H:%M:%S"),
            fbtraceId=exc.fbtrace_id,
        ),
    )
    return Outcome.RELEASED


async def _pause_template(
    context: SendContext, message: QueuedMessage, exc: GraphAPIError
) -> Outcome:
    """The template cannot be used now: hold every message that uses it."""
    reason = explain(exc)
    name, language = str(message.template_name), str(message.template_language)
    await context.queue.call(
        QueueDB.hold_template,
        name,
        language,
        None,
        every_batch=True,
        code=exc.code,
        reason=reason,
        now=context.now(),
    )
    await context.queue.call(QueueDB.release, message.id, context.now())
    logger.error(
        "Modèle suspendu, ses messages restent en attente : %s",
        reason,
        extra=ctx(
            template=name,
            language=language,
            code=exc.code,
            id=message.id,
            fbtraceId=exc.fbtrace_id,
        ),
    )
    return Outcome.RELEASED


async def _count_template_failure(
    context: SendContext, message: QueuedMessage, exc: GraphAPIError
) -> None:
    """After enough identical failures in a batch, hold the template there."""
    name, language = str(message.template_name), str(message.template_language)
    code = int(exc.code or 0)
    failures = await context.queue.call(
        QueueDB.template_failures,
        message.batch_id,
        name,
        language,
        code,
        context.now(),
    )
    if failures < context.template_failure_limit:
        return
    where = "le lot" if message.batch_id else "les messages sans lot"
    reason = f"{failures} échecs identiques dans {where} : {explain(exc)}"
    added = await context.queue.call(
        QueueDB.hold_template,
        name,
        language,
        message.batch_id,
        code=code,
        reason=reason,
        now=context.now(),
    )
    if added:
        logger.error(
            "Modèle retenu pour ce lot : %s",
            reason,
            extra=ctx(template=name, language=language, batch=message.batch_id),
        )


def _is_template(message: QueuedMessage) -> bool:
    return message.message_type == MessageType.TEMPLATE and bool(
        message.template_name and message.template_language
    )


async def _settle_transport(
    context: SendContext, message: QueuedMessage, exc: TransportError
) -> Outcome:
    now = context.now()
    if not exc.maybe_delivered:
        await context.queue.call(QueueDB.release, message.id, now)
        logger.warning(
            "API WhatsApp injoignable, message remis en attente",
            extra=ctx(id=message.id, error=str(exc)),
        )
        return Outcome.RELEASED
    reason = f"résultat inconnu ({exc}) : vérifier avant de renvoyer"
    await context.queue.call(QueueDB.mark_unknown, message.id, reason, now)
    logger.error(
        "Envoi incertain, message non renvoyé automatiquement",
        extra=ctx(id=message.id, recipient=message.recipient, error=str(exc)),
    )
    return Outcome.UNKNOWN


async def _fail(
    context: SendContext,
    message: QueuedMessage,
    reason: str,
    error: GraphAPIError | None = None,
    *,
    code: int | None = None,
) -> Outcome:
    if error is not None:
        code = error.code
    await context.queue.call(
        QueueDB.mark_failed,
        message.id,
        reason,
        context.now(),
        code=code,
        details=error.as_json() if error else None,
    )
    fields: dict[str, Any] = {"id": message.id, "recipient": message.recipient}
    if code is not None:
        fields["code"] = code
    if error is not None:
        fields["fbtraceId"] = error.fbtrace_id
    logger.error("Échec de l'envoi du message : %s", reason, extra=ctx(**fields))
    return Outcome.FAILED


def _log_retry(
    message: QueuedMessage,
    payload: dict[str, Any],
    tally: _Tally,
    state: RetryCallState,
) -> None:
    exc = state.outcome.exception() if state.outcome else None
    fields: dict[str, Any] = {
        "id": message.id,
        "recipient": _recipient(message, payload),
        "attempt": message.attempts + tally.spent,
    }
    if isinstance(exc, GraphAPIError):
        fields["code"] = exc.code
    if isinstance(exc, SendError):
        fields["error"] = str(exc)
    logger.warning("Nouvelle tentative d'envoi", extra=ctx(**fields))


def _recipient(message: QueuedMessage, payload: dict[str, Any]) -> str:
    return "+" + str(payload.get("to", message.recipient)).lstrip("+")
