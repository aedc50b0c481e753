"""The long-running service: poll, drain, stop cleanly.

Every ``poll_interval`` seconds the daemon claims due messages and sends
them; while due messages remain it keeps draining without waiting. SIGTERM
(what ``launchctl unload`` sends) or SIGINT sets a stop event: no new claim
is made, sends in flight get ``shutdown_grace`` seconds to finish, and every
message still claimed is handed back before the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from . import batches, graph, phones, sender
from .errors import ConfigError, GraphAPIError, InvalidMessageError, WhatsAppDaemonError
from .graph import GraphClient
from .limits import RecipientPacer, SendGate
from .lock import InstanceLock
from .logs import ctx, hide
from .models import CycleReport, QueuedMessage
from .outcomes import explain
from .queue import CLEANUP_KEY, HALT_KEY, HEARTBEAT_KEY, AsyncQueue, QueueDB
from .sender import Outcome, SendContext
from .settings import Settings, load_settings

CLEANUP_EVERY = timedelta(days=1)
LOCK_CHECK_EVERY = 1.0  # seconds between two checks that the lock is ours
MIN_WAIT = 0.2  # seconds: shortest pause between two polls

logger = logging.getLogger("whatsapp_queue")

Clock = Callable[[], float]


class LockLostError(WhatsAppDaemonError):
    """The lock file was replaced and another process locked the new one."""


@dataclass
class _Halt:
    """Why sending stopped: an account-level error from Meta."""

    code: int | None
    reason: str
    since: str


class Daemon:
    """The queue processor. Build it, then ``await run(stop_event)``."""

    def __init__(
        self,
        settings: Settings,
        lock: InstanceLock,
        *,
        clock: Clock = time.time,
        env_file: str | None = ".env",
    ) -> None:
        settings.require_sending()
        self.settings = settings
        self.lock = lock
        self.clock = clock
        self.env_file = env_file
        self.owner = f"pid:{os.getpid()}"
        self.queue = AsyncQueue(settings.database_path)
        self.halt: _Halt | None = None
        self._chores: set[asyncio.Task[None]] = set()
        self.lock_lost = False
        self.started = self.now()  # reset when run() starts

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set; return once everything is settled."""
        self.started = self.now()
        await self.queue.open()
        try:
            async with graph.make_http_client(self.settings) as http:
                self.graph = GraphClient(http, self.settings.messages_url)
                context = await self._start()
                await self._serve(context, stop)
        finally:
            await self.queue.close()
        logger.info("Arrêt du processeur de queue WhatsApp")

    async def _start(self) -> SendContext:
        """Recover what a dead instance left, seed the rate window."""
        released, unknown = await self.queue.call(QueueDB.recover, self.now())
        if released or unknown:
            logger.warning(
                "Messages repris après un arrêt brutal",
                extra=ctx(requeued=released, unknown=unknown),
            )
        await self.queue.call(QueueDB.set_state, HALT_KEY, None, self.now())
        gate = SendGate(self.settings.rate_per_minute, clock=self.clock)
        since = self.now() - timedelta(seconds=gate.window.period)
        past = await self.queue.call(QueueDB.attempt_times, since)
        gate.window.seed(moment.timestamp() for moment in past)
        pacer = RecipientPacer(self.settings.pair_interval)
        since = self.now() - timedelta(seconds=self.settings.pair_interval)
        last = await self.queue.call(QueueDB.last_attempts_by_recipient, since)
        pacer.seed(self._paced(last))
        context = SendContext(
            queue=self.queue,
            gate=gate,
            graph=self.graph,
            region=self.settings.default_region,
            max_attempts=self.settings.max_attempts,
            retry_base=self.settings.retry_base_delay,
            retry_max=self.settings.retry_max_delay,
            clock=self.clock,
            on_stop=self._stop_sending,
            pacer=pacer,
            template_failure_limit=self.settings.template_failure_limit,
            window_check=self.settings.service_window_check,
        )
        logger.info(
            "Démarrage du processeur de queue WhatsApp",
            extra=ctx(
                pid=os.getpid(),
                ratePerMinute=self.settings.rate_per_minute,
                recentAttempts=len(past),
            ),
        )
        return context

    async def _serve(self, context: SendContext, stop: asyncio.Event) -> None:
        watcher = asyncio.create_task(self._watch_lock(context, stop))
        try:
            while not stop.is_set():
                started = self.clock()
                try:
                    await self._cycle(context, stop)
                except Exception:
                    # A broken database or a bug must not kill the service:
                    # log it and try again at the next poll.
                    logger.exception("Erreur pendant le traitement de la queue")
                await _wait(stop, await self._until_next_poll(started))
        finally:
            watcher.cancel()
        if self.lock_lost:
            raise LockLostError(
                f"the lock {self.lock.path} was taken by another process"
            )

    async def _until_next_poll(self, started: float) -> float:
        """Seconds to the next poll, sooner if a deferred message falls due."""
        wait = self.settings.poll_interval - (self.clock() - started)
        try:
            due = await self.queue.call(QueueDB.next_scheduled, self.now())
        except sqlite3.Error:
            return wait
        if due is not None:
            wait = min(wait, due.timestamp() - self.clock())
        return max(wait, MIN_WAIT)

    def _paced(self, last: list[tuple[str, datetime]]) -> list[tuple[str, float]]:
        """Key each recipient's last attempt as the pacer does (``to`` digits)."""
        paced = []
        for recipient, at in last:
            try:
                to = phones.normalize(recipient, self.settings.default_region)
            except InvalidMessageError:
                continue
            paced.append((to.removeprefix("+"), at.timestamp()))
        return paced

    async def _watch_lock(self, context: SendContext, stop: asyncio.Event) -> None:
        """Check the lock file every second; if it was lost, stop sending.

        Someone deleting the lock file lets a second daemon start; this one
        must then stop at once, not at the end of a batch.
        """
        while not stop.is_set():
            if not self.lock.still_ours():
                logger.critical("Verrou perdu : une autre instance l'a pris, arrêt")
                self.lock_lost = True
                context.gate.close("verrou perdu")
                stop.set()
                return
            await _wait(stop, LOCK_CHECK_EVERY)

    async def _cycle(self, context: SendContext, stop: asyncio.Event) -> None:
        if self.halt is not None:
            await self._resume_if_token_changed(context)
        await self._cleanup_if_due()
        swept = await self.queue.call(batches.sweep_abandoned, self.now())
        if swept:
            logger.warning(
                "Import interrompu retiré de la file", extra=ctx(count=swept)
            )
        unreadable = await self.queue.call(QueueDB.fail_unreadable_times, self.now())
        if unreadable:
            logger.error(
                "Messages à l'heure d'envoi illisible ou impossible, mis en échec",
                extra=ctx(ids=unreadable[:20], count=len(unreadable)),
            )
        cancelled = await self.queue.call(batches.settle_cancelled, self.now())
        if cancelled:
            logger.info("Messages de lots annulés", extra=ctx(count=cancelled))
        if self.halt is None:
            await self._drain(context, stop)
        await self._heartbeat()

    # -- draining ----------------------------------------------------------

    async def _drain(self, context: SendContext, stop: asyncio.Event) -> None:
        """Claim and send batches until nothing is due or we must stop."""
        while not stop.is_set() and self.halt is None:
            await self._settle_leftovers()
            await self._heartbeat()
            waiting = await self.queue.call(QueueDB.count_due, self.now())
            if not waiting:
                logger.debug("Aucun message en attente")
                return
            batch = await self.queue.call(
                QueueDB.claim,
                self.now(),
                self.settings.batch_size,
                self.owner,
                timedelta(seconds=self.settings.lease_seconds),
            )
            logger.info("Démarrage du traitement de la queue WhatsApp")
            logger.info("%d messages en attente", waiting)
            report = await self._send_batch(context, batch, stop)
            logger.info(
                "Traitement terminé",
                extra=ctx(
                    processed=report.processed,
                    success=report.success,
                    failed=report.failed,
                ),
            )

    async def _send_batch(
        self,
        context: SendContext,
        batch: list[QueuedMessage],
        stop: asyncio.Event,
    ) -> CycleReport:
        semaphore = asyncio.Semaphore(self.settings.concurrency)

        async def one(message: QueuedMessage) -> Outcome:
            async with semaphore:
                try:
                    return await sender.send(context, message)
                except Exception as exc:
                    return await self._internal_error(message, exc)

        tasks = {asyncio.create_task(one(m)): m.id for m in batch}
        stopper: asyncio.Task[Any] = asyncio.create_task(stop.wait())
        try:
            pending: set[asyncio.Task[Any]] = set(tasks)
            while pending and not stop.is_set():
                _, pending = await asyncio.wait(
                    [*pending, stopper], return_when=asyncio.FIRST_COMPLETED
                )
                pending.discard(stopper)
            if pending:
                await self._wind_down(context, tasks)
        finally:
            stopper.cancel()
        return _report(tasks)

    async def _settle_leftovers(self) -> None:
        """Settle rows of ours still ``processing`` after a database error.

        If the database stayed locked while an outcome was being written, the
        row is still claimed: back to pending if no request had left, else
        ``unknown`` (Meta may have accepted it). Never ``failed``.
        """
        released, unknown = await self.queue.call(
            QueueDB.recover, self.now(), self.owner
        )
        if released or unknown:
            logger.warning(
                "Messages repris après une erreur",
                extra=ctx(requeued=released, unknown=unknown),
            )

    async def _internal_error(self, message: QueuedMessage, exc: Exception) -> Outcome:
        """A bug met on one row fails that row, never the daemon.

        A database error is not the row's fault: the row is left claimed and
        settled by :meth:`_settle_leftovers` once the database answers.
        """
        logger.error(
            "Erreur interne sur un message",
            exc_info=exc,
            extra=ctx(id=message.id),
        )
        if isinstance(exc, sqlite3.Error):
            return Outcome.RELEASED
        reason = f"erreur interne : {type(exc).__name__}: {exc}"
        await self.queue.call(QueueDB.mark_failed, message.id, reason, self.now())
        return Outcome.FAILED

    async def _wind_down(
        self, context: SendContext, tasks: dict[asyncio.Task[Outcome], int]
    ) -> None:
        """Stop: let requests in flight finish within the grace, hand back the rest."""
        context.gate.close("arrêt demandé")
        for task, message_id in tasks.items():
            if message_id not in context.in_flight:
                task.cancel()
        in_flight = [t for t in tasks if not t.done()]
        if in_flight:
            _, late = await asyncio.wait(
                in_flight, timeout=self.settings.shutdown_grace
            )
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if late:
                logger.warning(
                    "Envois interrompus par l'arrêt", extra=ctx(count=len(late))
                )
        released, unknown = await self.queue.call(
            QueueDB.recover, self.now(), self.owner
        )
        logger.info(
            "Messages non envoyés remis en attente",
            extra=ctx(requeued=released, unknown=unknown),
        )

    # -- account-level stop ------------------------------------------------

    def _stop_sending(self, error: GraphAPIError) -> None:
        """Record a stop after a token or account error; messages stay pending.

        The sender has already closed the gate, so no other attempt leaves.
        """
        if self.halt is not None:
            return
        reason = explain(error)
        self.halt = _Halt(error.code, reason, self.now().strftime("%Y-%m-%d %H:%M:%S"))
        logger.critical(
            "Envois arrêtés : %s",
            reason,
            extra=ctx(code=error.code, fbtraceId=error.fbtrace_id),
        )
        # Keep a reference: the loop holds tasks only weakly.
        task = asyncio.get_running_loop().create_task(self._store_halt())
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    async def _store_halt(self) -> None:
        value = (
            json.dumps(self.halt.__dict__, ensure_ascii=False) if self.halt else None
        )
        await self.queue.call(QueueDB.set_state, HALT_KEY, value, self.now())

    async def _resume_if_token_changed(self, context: SendContext) -> None:
        """Reread ``.env``; a new access token lifts the stop."""
        try:
            fresh = load_settings(self.env_file)
        except ConfigError as exc:
            logger.error("Configuration illisible : %s", exc)
            return
        old = self.settings.access_token
        new = fresh.access_token
        if new is None or (
            old is not None and new.get_secret_value() == old.get_secret_value()
        ):
            return
        # Only the token is taken from the new file; other changes need a restart.
        self.settings = self.settings.model_copy(update={"access_token": new})
        hide(new.get_secret_value())  # before anything can echo it
        self.graph.set_token(new.get_secret_value())
        self.halt = None
        await self._store_halt()
        context.gate.reopen()
        logger.info("Nouveau jeton d'accès détecté, reprise des envois")

    # -- periodic chores --------------------------------------------------

    async def _cleanup_if_due(self) -> None:
        last = await self.queue.call(QueueDB.get_state, CLEANUP_KEY)
        now = self.now()
        if last and now - datetime.fromisoformat(last) < CLEANUP_EVERY:
            return
        deleted = await self.queue.call(
            QueueDB.cleanup, now, self.settings.retention_days
        )
        await self.queue.call(QueueDB.set_state, CLEANUP_KEY, now.isoformat(), now)
        logger.info(
            "Nettoyage des anciens messages",
            extra=ctx(deleted=deleted, retentionDays=self.settings.retention_days),
        )

    async def _heartbeat(self) -> None:
        beat = {
            "pid": os.getpid(),
            "at": self.now().strftime("%Y-%m-%d %H:%M:%S"),
            "started": self.started.strftime("%Y-%m-%d %H:%M:%S"),
            "poll_interval": self.settings.poll_interval,
        }
        await self.queue.call(
            QueueDB.set_state, HEARTBEAT_KEY, json.dumps(beat), self.now()
        )


def _report(tasks: dict[asyncio.Task[Outcome], int]) -> CycleReport:
    report = CycleReport()
    for task in tasks:
        outcome = None if task.cancelled() or task.exception() else task.result()
        report.processed += outcome in (Outcome.SENT, Outcome.FAILED, Outcome.UNKNOWN)
        report.success += outcome is Outcome.SENT
        report.failed += outcome is Outcome.FAILED
    return report


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    """Sleep up to ``seconds``, waking at once if ``stop`` is set."""
    if seconds <= 0:
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
