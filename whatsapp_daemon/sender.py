"""Send one claimed message: pace, attempt, retry, and record the outcome.

Each message gets its own ``AsyncRetrying`` (tenacity keeps per-run state in
it). Attempts are counted in the database before the request leaves, so a
restart never resets them; an attempt that Meta refused for throughput, or
that never left this machine, is given back.
"""

from __future__ import annotations

import logging
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

from . import payloads
from .errors import GraphAPIError, InvalidMessageError, SendError, TransportError
from .graph import GraphClient
from .limits import SendGate, SendingStopped
from .logs import ctx
from .models import QueuedMessage
from .outcomes import Action, classify, explain
from .queue import AsyncQueue, BatchHeld, QueueDB

THROTTLE_PAUSE = 10.0  # seconds the sender pauses on a throughput error
NETWORK_PAUSE = 15.0  # seconds the sender pauses when Meta is unreachable
MAX_FREE_RETRIES = 20  # throttled or unsent attempts allowed per claim

logger = logging.getLogger("whatsapp_queue")

Clock = Callable[[], float]


class Outcome(StrEnum):
    """How one claim of a message ended."""

    SENT = "sent"
    FAILED = "failed"
    UNKNOWN = "unknown"  # the request may have reached Meta
    RELEASED = "released"  # back to pending, to be sent later
    CANCELLED = "cancelled"  # its batch was cancelled before it left


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
    in_flight: set[int] = field(default_factory=set)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)


async def send(context: SendContext, message: QueuedMessage) -> Outcome:
    """Send ``message`` and store how it ended; never raises a SendError."""
    try:
        payload = payloads.build(message, context.region)
    except InvalidMessageError as exc:
        return await _fail(context, message, str(exc))
    tally = _Tally(budget=context.max_attempts - max(0, message.attempts))
    if tally.budget <= 0:
        return await _fail(context, message, "tentatives épuisées")
    try:
        wamid = await _with_retries(context, message, payload, tally)
    except SendingStopped:
        await context.queue.call(QueueDB.release, message.id, context.now())
        return Outcome.RELEASED
    except BatchHeld as held:
        # begin_attempt has already put the row back or cancelled it.
        logger.info(
            "Message retenu : lot %s",
            "annulé" if held.state == Outcome.CANCELLED else "en pause",
            extra=ctx(id=message.id, batch=message.batch_id),
        )
        if held.state == Outcome.CANCELLED:
            return Outcome.CANCELLED
        return Outcome.RELEASED
    except GraphAPIError as exc:
        return await _settle_error(context, message, exc)
    except TransportError as exc:
        return await _settle_transport(context, message, exc)
    await context.queue.call(QueueDB.mark_sent, message.id, wamid, context.now())
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

    async def record(at: float) -> None:
        # In flight from here on: a stop now lets this attempt finish.
        context.in_flight.add(message.id)
        moment = datetime.fromtimestamp(at, UTC)
        await context.queue.call(QueueDB.begin_attempt, message.id, moment)

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


def _refunded(context: SendContext, exc: GraphAPIError) -> bool:
    """Apply a sender-wide effect of ``exc``; tell if its attempt is given back."""
    action = classify(exc)
    if action is Action.THROTTLE:
        context.gate.pause(exc.retry_after or THROTTLE_PAUSE)
    elif action is Action.STOP:
        # Close the gate at once so that no other message is attempted.
        context.gate.close(explain(exc))
        context.on_stop(exc)
    return action in (Action.THROTTLE, Action.STOP)


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
    context: SendContext, message: QueuedMessage, exc: GraphAPIError
) -> Outcome:
    action = classify(exc)
    if action in (Action.STOP, Action.THROTTLE):
        await context.queue.call(QueueDB.release, message.id, context.now())
        return Outcome.RELEASED
    return await _fail(context, message, explain(exc), exc)


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
) -> Outcome:
    await context.queue.call(
        QueueDB.mark_failed,
        message.id,
        reason,
        context.now(),
        code=error.code if error else None,
        details=error.as_json() if error else None,
    )
    fields: dict[str, Any] = {"id": message.id, "recipient": message.recipient}
    if error is not None:
        fields.update(code=error.code, fbtraceId=error.fbtrace_id)
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
