"""``whatsapp-daemon webhook``: the endpoint Meta calls with statuses and messages.

``GET <path>`` answers Meta's verification handshake; ``POST <path>``
receives notifications, each signed with the app secret
(``X-Hub-Signature-256: sha256=<hex>``, an HMAC-SHA256 of the raw body). The
signature is checked before anything is parsed: missing, 401; wrong, 403;
and the database is not touched. What a notification says is recorded by
:mod:`deliveries` on one database thread, so the event loop never waits
for SQLite.

A 200 means the notification is stored. One that is not recorded within
RECORD_WAIT seconds, or whose recording gave up on another writer's lock,
is answered 503, and another database error 500, so that Meta sends it
again: recording is
idempotent, so a recording that completes late does no harm. The webhook's
connection waits at most BUSY_TIMEOUT for a lock. At shutdown, notifications
still waiting are answered 503 and their recordings stop between two items
(CLOSE_WAIT at most): with SHUTDOWN_GRACE for requests in flight, the stop
takes about 12 s at worst, well below launchd's ExitTimeOut (30 s).

A correctly signed body that is not a notification (not JSON, no
``entry`` list) is answered 200 and logged as an error: Meta retries any
other answer for up to seven days, and the same bytes would never parse.

Unauthenticated clients cannot hold much: at most MAX_READING bodies are
read at once (more are answered 503 at once), each within BODY_WAIT seconds
(408 after), and idle connections close after KEEPALIVE seconds. Malformed
HTTP requests are one DEBUG line in the log; a lack of file descriptors is
one WARNING line a minute. It listens on loopback by default, behind the
reverse proxy or tunnel that gives Meta its HTTPS address.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import math
import sqlite3
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from . import deliveries, logs
from .errors import ConfigError
from .messages import printable
from .queue import AsyncQueue
from .settings import MIN_SECRET_LENGTH, Settings, env_key

MAX_BODY = 3 * 1024 * 1024  # bytes; Meta's notifications are at most 3 MB
RECORD_WAIT = 10.0  # seconds a notification waits to be recorded, then 503
BUSY_TIMEOUT = 5.0  # seconds one statement waits for another writer's lock
BODY_WAIT = 10.0  # seconds to receive a request's body, then 408
MAX_READING = 16  # bodies read at once (16 x 3 MB at most); more get 503
KEEPALIVE = 60.0  # seconds an idle connection is kept open
LINGER = 1.0  # seconds an unread body is drained before the connection closes
SHUTDOWN_GRACE = 5.0  # seconds given to requests in flight at shutdown
CLOSE_WAIT = BUSY_TIMEOUT + 2.0  # seconds recordings get to stop at shutdown
ACCEPT_LOG_EVERY = 60.0  # seconds between two "too many open files" lines
SIGNATURE_HEADER = "X-Hub-Signature-256"

T = TypeVar("T")


class ListenError(Exception):
    """The address cannot be listened on (in use, or not this machine's)."""


class _Endpoint:
    """The state behind one webhook application."""

    def __init__(self, database: Path, verify_token: str, app_secret: str) -> None:
        # The webhook's connection waits less than the daemon's for a lock.
        self.queue = AsyncQueue(database, busy_timeout=BUSY_TIMEOUT)
        self._verify_token = verify_token.encode("utf-8")
        self._app_secret = app_secret.encode("utf-8")
        # Each recording under way, and the event that stops it between items.
        self._jobs: dict[asyncio.Future[deliveries.Summary], threading.Event] = {}
        self._stopping = asyncio.Event()
        self._reading = asyncio.Semaphore(MAX_READING)

    async def open(self) -> None:
        """Open the database (its thread is ended again if that fails)."""
        try:
            await self.queue.open()
        except BaseException:
            await self.queue.close()
            raise

    def verified(self, token: str) -> bool:
        """Whether ``token`` is the configured verify token (constant time)."""
        return hmac.compare_digest(token.encode("utf-8", "replace"), self._verify_token)

    def signed(self, raw: bytes, header: str) -> bool:
        """Whether ``header`` is the app secret's signature of ``raw``."""
        digest = hmac.new(self._app_secret, raw, hashlib.sha256).hexdigest()
        given = header.strip().lower().encode("utf-8", "replace")
        return hmac.compare_digest(given, f"sha256={digest}".encode())

    @property
    def stopping(self) -> bool:
        """Whether the webhook is shutting down."""
        return self._stopping.is_set()

    async def within(self, future: asyncio.Future[T], timeout: float) -> bool:
        """Wait for ``future`` up to ``timeout`` s or the shutdown; is it done?"""
        stopping: asyncio.Future[Any] = asyncio.ensure_future(self._stopping.wait())
        waited: set[asyncio.Future[Any]] = {future, stopping}
        try:
            await asyncio.wait(
                waited, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stopping.cancel()
        return future.done()

    async def read(self, request: web.Request) -> bytes | web.Response:
        """The body, or the answer when it cannot be read now (503, 408, 413)."""
        if self._reading.locked():
            logs.logger.warning(
                "Trop de notifications reçues à la fois, réponse 503",
                extra=logs.ctx(remote=request.remote, reading=MAX_READING),
            )
            return _unavailable("too many requests at once")
        async with self._reading:
            reading = asyncio.ensure_future(request.read())
            try:
                if await self.within(reading, BODY_WAIT):
                    return reading.result()
            except web.HTTPRequestEntityTooLarge:
                return _too_large(request)
            finally:
                reading.cancel()
        if self.stopping:
            return _unavailable("stopping")
        logs.logger.warning(
            "Notification du webhook reçue trop lentement, refusée",
            extra=logs.ctx(remote=request.remote, seconds=BODY_WAIT),
        )
        answer = web.Response(status=408, text="body not received in time\n")
        answer.force_close()
        return answer

    async def record(self, payload: Any) -> web.Response:
        """Record a notification: 200 once stored, 503 if not within RECORD_WAIT."""
        if self.stopping:
            return _unavailable("stopping")
        stop = threading.Event()
        job = asyncio.ensure_future(
            self.queue.call(deliveries.handle, payload, datetime.now(UTC), stop)
        )
        self._jobs[job] = stop
        job.add_done_callback(self._forget)
        try:
            finished = await self.within(job, RECORD_WAIT)
        finally:
            if not job.done():  # 503, or the answer is abandoned: stop the job
                stop.set()
                job.add_done_callback(self._late)
        if finished:
            return self._outcome(job)
        if not self.stopping:
            logs.logger.warning(
                "Notification du webhook non enregistrée à temps (base occupée) ;"
                " réponse 503, Meta la renverra",
                extra=logs.ctx(seconds=RECORD_WAIT),
            )
        return _unavailable("not recorded yet, send it again")

    def _forget(self, job: asyncio.Future[deliveries.Summary]) -> None:
        self._jobs.pop(job, None)

    def _late(self, job: asyncio.Future[deliveries.Summary]) -> None:
        """A recording that ends after its notification was answered 503."""
        if job.cancelled():
            return
        error = job.exception()
        if error is None:
            summary = job.result()
            if summary.stopped and not summary.handled:
                logs.logger.info(
                    "Notification du webhook non enregistrée (arrêt) ; Meta la renverra"
                )
                return
            logs.logger.info(
                "Notification du webhook enregistrée après sa réponse 503"
                + (" (en partie)" if summary.stopped else ""),
            )
        elif not isinstance(error, deliveries.BadItem):
            logs.logger.warning(
                "Notification du webhook non enregistrée ; Meta la renverra",
                extra=logs.ctx(reason=f"{type(error).__name__}: {error}"),
            )

    def _outcome(self, job: asyncio.Future[deliveries.Summary]) -> web.Response:
        error = job.exception()
        if isinstance(error, deliveries.BadItem):
            logs.logger.error(
                "Notification du webhook illisible, ignorée",
                extra=logs.ctx(reason=str(error)),
            )
            return _ok()
        if _busy(error):
            # Another writer held the database past the busy timeout.
            logs.logger.warning(
                "Base occupée : notification non enregistrée, Meta la renverra",
                extra=logs.ctx(reason=str(error)),
            )
            return _unavailable("database busy")
        if error is not None:
            logs.logger.error(
                "Notification du webhook non enregistrée ; Meta la renverra",
                extra=logs.ctx(reason=f"{type(error).__name__}: {error}"),
            )
            return web.Response(status=500, text="not recorded, send it again\n")
        summary = job.result()
        if summary.stopped:  # the shutdown came first: not all of it is stored
            return _unavailable("stopping")
        logs.logger.debug(
            "Notification du webhook enregistrée",
            extra=logs.ctx(
                applied=summary.applied,
                kept=summary.kept,
                duplicates=summary.duplicates,
                ignored=summary.ignored,
                other=summary.other,
                inbound=summary.inbound,
                errors=summary.errors,
                bad=len(summary.bad),
            ),
        )
        return _ok()

    def halt(self) -> None:
        """Shutdown begins: answer 503 from now on, stop every recording."""
        self._stopping.set()
        for stop in self._jobs.values():
            stop.set()

    async def close(self) -> None:
        """Let the recordings stop (CLOSE_WAIT at most), then close the database."""
        self.halt()
        if self._jobs:
            _, pending = await asyncio.wait(set(self._jobs), timeout=CLOSE_WAIT)
            if pending:
                # Its statement is still waiting for a lock; none of these
                # notifications was acknowledged, so Meta sends them again.
                logs.logger.error(
                    "Arrêt du webhook sans attendre la base, toujours occupée",
                    extra=logs.ctx(recordings=len(pending)),
                )
                return
        await self.queue.close()


_ENDPOINT = web.AppKey("endpoint", _Endpoint)


def _busy(error: BaseException | None) -> bool:
    """Whether ``error`` is SQLite giving up on another writer's lock."""
    return isinstance(error, sqlite3.OperationalError) and (
        "locked" in str(error) or "busy" in str(error)
    )


def _unavailable(why: str) -> web.Response:
    return web.Response(status=503, text=f"{why}\n", headers={"Retry-After": "10"})


def _ok() -> web.Response:
    return web.Response(text="OK\n")


async def _handshake(request: web.Request) -> web.Response:
    """GET: Meta's verification of the callback URL."""
    endpoint = request.app[_ENDPOINT]
    query = request.query
    mode = query.get("hub.mode", "")
    challenge = query.get("hub.challenge")
    if (
        mode == "subscribe"
        and challenge is not None
        and endpoint.verified(query.get("hub.verify_token", ""))
    ):
        logs.logger.info("Vérification du webhook par Meta acceptée")
        return web.Response(text=challenge, content_type="text/plain")
    logs.logger.warning(
        "Vérification du webhook refusée (mode ou jeton de vérification faux)",
        extra=logs.ctx(mode=mode[:40], remote=request.remote),
    )
    return web.Response(status=403, text="forbidden\n")


async def _notification(request: web.Request) -> web.Response:
    """POST: a signed notification; nothing is parsed before the signature."""
    endpoint = request.app[_ENDPOINT]
    header = request.headers.get(SIGNATURE_HEADER)
    if not header:
        logs.logger.warning(
            "Notification du webhook sans signature, refusée",
            extra=logs.ctx(remote=request.remote),
        )
        return _unread(401, "missing X-Hub-Signature-256")
    if (request.content_length or 0) > MAX_BODY:
        return _too_large(request)
    # Every Content-Encoding header counts: aiohttp decodes by any of them.
    codings = {
        coding.strip().lower()
        for value in request.headers.getall("Content-Encoding", [])
        for coding in value.split(",")
    }
    encoding = ",".join(sorted(codings - {"", "identity"}))
    if encoding:
        # aiohttp would decompress it: the signature covers the bytes sent.
        logs.logger.warning(
            "Notification du webhook compressée, refusée",
            extra=logs.ctx(remote=request.remote, encoding=encoding[:20]),
        )
        return _unread(415, "send the body uncompressed")
    raw = await endpoint.read(request)
    if isinstance(raw, web.Response):
        return raw
    if not endpoint.signed(raw, header):
        logs.logger.warning(
            "Notification du webhook à la signature fausse, refusée"
            " (WHATSAPP_APP_SECRET est-il celui de l'application ?)",
            extra=logs.ctx(remote=request.remote, size=len(raw)),
        )
        return web.Response(status=403, text="bad signature\n")
    try:
        payload = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        logs.logger.error(
            "Notification du webhook illisible, ignorée",
            extra=logs.ctx(reason=f"not JSON: {type(exc).__name__}", size=len(raw)),
        )
        return _ok()
    return await endpoint.record(storable(payload))


def storable(payload: Any) -> Any:
    """``payload`` with its texts made writable as UTF-8.

    JSON may carry half an emoji (``"\\ud83d"``), which no UTF-8 file or
    SQLite text can hold: such a character is written as its escape, so
    the item is stored and logged instead of failing. The walk keeps its
    own stack; the parsed JSON is as deep as Python's reader allowed.
    """

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return printable(value)
        if isinstance(value, dict):
            return {clean(key): item for key, item in value.items()}
        if isinstance(value, list):
            return list(value)
        return value

    root = clean(payload)
    stack = [root] if isinstance(root, dict | list) else []
    while stack:
        node = stack.pop()
        children = node.items() if isinstance(node, dict) else enumerate(node)
        for key, item in list(children):
            fixed = clean(item)
            node[key] = fixed
            if isinstance(fixed, dict | list):
                stack.append(fixed)
    return root


def _too_large(request: web.Request) -> web.Response:
    logs.logger.warning(
        "Notification du webhook trop grande, refusée",
        extra=logs.ctx(remote=request.remote, limit=MAX_BODY),
    )
    return _unread(413, f"body larger than {MAX_BODY} bytes")


def _unread(status: int, text: str) -> web.Response:
    """Refuse a request whose body was not read, and close its connection.

    Otherwise aiohttp would read and drop the body to keep the connection
    open: a body we refused, from anyone, through its decompressor.
    """
    answer = web.Response(status=status, text=f"{text}\n")
    answer.force_close()
    return answer


def make_app(
    database: Path, path: str, *, verify_token: str, app_secret: str
) -> web.Application:
    """Build the webhook application (the database opens when it starts)."""
    endpoint = _Endpoint(database, verify_token, app_secret)
    app = web.Application(client_max_size=MAX_BODY)
    app[_ENDPOINT] = endpoint
    route = path if path.startswith("/") else f"/{path}"
    app.router.add_get(route, _handshake)
    app.router.add_post(route, _notification)

    async def open_queue(app: web.Application) -> None:
        await endpoint.open()

    async def halt(app: web.Application) -> None:
        endpoint.halt()

    async def close_queue(app: web.Application) -> None:
        await endpoint.close()

    app.on_startup.append(open_queue)
    app.on_shutdown.append(halt)
    app.on_cleanup.append(close_queue)
    return app


def secrets_of(settings: Settings) -> tuple[str, str]:
    """The verify token and the app secret; ConfigError names a missing one,
    or one shorter than MIN_SECRET_LENGTH (it could not be masked in the log)."""
    found = []
    for name, where in (
        ("webhook_verify_token", "any string you choose, typed again in Meta's"
         " App Dashboard (WhatsApp > Configuration > Verify token)"),
        ("app_secret", "the App secret of Meta's App Dashboard"
         " (App settings > Basic)"),
    ):  # fmt: skip
        value = getattr(settings, name)
        secret = value.get_secret_value().strip() if value is not None else ""
        if not secret:
            raise ConfigError(f"{env_key(name)} is missing; set it in .env to {where}")
        if len(secret) < MIN_SECRET_LENGTH:
            raise ConfigError(
                f"{env_key(name)} is too short ({len(secret)} characters); set it"
                f" in .env to at least {MIN_SECRET_LENGTH} characters: {where}"
            )
        found.append(secret)
    return found[0], found[1]


async def start(
    settings: Settings, host: str | None = None, port: int | None = None
) -> tuple[web.AppRunner, int]:
    """Start serving; return the runner (``await runner.cleanup()``) and port.

    ``host`` and ``port`` default to the settings; port 0 picks a free one.
    Raises ConfigError without the two secrets, ListenError if it cannot
    listen, OSError or sqlite3.Error if the database cannot be opened.
    """
    verify_token, app_secret = secrets_of(settings)
    app = make_app(
        settings.database_path,
        settings.webhook_path,
        verify_token=verify_token,
        app_secret=app_secret,
    )
    _quiet_accept_errors()
    runner = web.AppRunner(
        app,
        access_log=None,
        shutdown_timeout=SHUTDOWN_GRACE,
        keepalive_timeout=KEEPALIVE,
        lingering_time=LINGER,
        logger=_HTTP_LOG,
    )
    await runner.setup()
    try:
        site = web.TCPSite(
            runner,
            host or settings.webhook_host,
            settings.webhook_port if port is None else port,
        )
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ListenError(exc.strerror or str(exc)) from exc
    except BaseException:
        await runner.cleanup()
        raise
    bound: int = runner.addresses[0][1]
    return runner, bound


async def serve(
    settings: Settings, stop: asyncio.Event, host: str | None, port: int | None
) -> None:
    """Serve until ``stop`` is set, logging the start and the stop.

    A database another writer keeps locked at start-up is tried again every
    second until ``stop`` is set, so that a stop is never held up longer
    than one busy timeout.
    """
    while True:
        try:
            runner, bound = await start(settings, host, port)
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise
            logs.logger.warning(
                "Base occupée au démarrage du webhook, nouvel essai",
                extra=logs.ctx(reason=str(exc)),
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            if stop.is_set():
                logs.logger.info("Arrêt du webhook WhatsApp")
                return
    logs.logger.info(
        "Démarrage du webhook WhatsApp",
        extra=logs.ctx(
            host=host or settings.webhook_host, port=bound, path=settings.webhook_path
        ),
    )
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        logs.logger.info("Arrêt du webhook WhatsApp")


# -- what aiohttp and asyncio would print to stderr ---------------------------------


class _HTTPErrors(logging.Handler):
    """aiohttp's request errors, in our log instead of tracebacks on stderr.

    A malformed request or body (the client's fault) is one DEBUG line;
    anything else aiohttp reports (a bug) is an ERROR line with its traceback.
    """

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError | web.RequestPayloadError):
            logs.logger.debug(
                "Requête HTTP invalide refusée",
                extra=logs.ctx(reason=" ".join(str(error).split())[:200]),
            )
        elif record.levelno >= logging.ERROR:
            logs.logger.error(
                "Erreur du serveur HTTP du webhook",
                exc_info=record.exc_info,
                extra=logs.ctx(reason=record.getMessage()[:200]),
            )


_HTTP_LOG = logging.getLogger(f"{logs.CHANNEL}.webhook.http")
_HTTP_LOG.propagate = False
_HTTP_LOG.setLevel(logging.DEBUG)
_HTTP_LOG.addHandler(_HTTPErrors())


class _AcceptErrors(logging.Filter):
    """asyncio's "socket.accept() out of system resource": one line a minute.

    With every file descriptor in use, asyncio retries ``accept()`` each
    second and logs a traceback each time; this keeps them out of stderr
    and writes one WARNING a minute in our log. A retry that comes after
    the listening socket was closed (at shutdown) fails harmlessly: dropped.
    """

    MESSAGE = "socket.accept() out of system resource"
    RETRY = "Exception in callback BaseSelectorEventLoop._start_serving"

    def __init__(self) -> None:
        super().__init__()
        self._last = -math.inf
        self.hidden = 0

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith(self.RETRY):
            error = record.exc_info[1] if record.exc_info else None
            return not isinstance(error, ValueError)  # the socket is closed
        if not message.startswith(self.MESSAGE):
            return True
        self.hidden += 1
        now = time.monotonic()
        if now - self._last >= ACCEPT_LOG_EVERY:
            self._last = now
            error = record.exc_info[1] if record.exc_info else None
            logs.logger.warning(
                "Trop de connexions ouvertes : le webhook n'en accepte plus"
                " pour l'instant",
                extra=logs.ctx(reason=str(error) if error else None, count=self.hidden),
            )
            self.hidden = 0
        return False


_ACCEPT_ERRORS = _AcceptErrors()


def _quiet_accept_errors() -> None:
    asyncio_log = logging.getLogger("asyncio")
    if _ACCEPT_ERRORS not in asyncio_log.filters:
        asyncio_log.addFilter(_ACCEPT_ERRORS)
