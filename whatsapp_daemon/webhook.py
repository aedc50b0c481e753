"""``whatsapp-daemon webhook``: the endpoint Meta calls with statuses and messages.

``GET <path>`` answers Meta's verification handshake; ``POST <path>``
receives notifications, each signed with the app secret
(``X-Hub-Signature-256: sha256=<hex>``, an HMAC-SHA256 of the raw body). The
signature is checked before anything is parsed: missing, 401; wrong, 403;
and the database is not touched. What a notification says is recorded by
:mod:`deliveries` on one database thread, so the event loop never waits
for SQLite.

A correctly signed body that is not a notification (not JSON, no
``entry`` list) is answered 200 and logged as an error: Meta retries any
other answer for up to seven days, and the same bytes would never parse.
A database error is answered 500, so that Meta sends it again (recording
is idempotent). It listens on loopback by default, behind the reverse
proxy or tunnel that gives Meta its HTTPS address.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from . import deliveries, logs
from .errors import ConfigError
from .queue import AsyncQueue
from .settings import Settings, env_key

MAX_BODY = 3 * 1024 * 1024  # bytes; Meta's notifications are at most 3 MB
ACK_WAIT = 2.0  # seconds a notification's recording may delay its answer
SHUTDOWN_GRACE = 5.0  # seconds given to requests in flight at shutdown
SIGNATURE_HEADER = "X-Hub-Signature-256"


class ListenError(Exception):
    """The address cannot be listened on (in use, or not this machine's)."""


class _Endpoint:
    """The state behind one webhook application."""

    def __init__(self, database: Path, verify_token: str, app_secret: str) -> None:
        self.queue = AsyncQueue(database)
        self._verify_token = verify_token.encode("utf-8")
        self._app_secret = app_secret.encode("utf-8")
        self._recording: set[asyncio.Task[deliveries.Summary]] = set()

    def verified(self, token: str) -> bool:
        """Whether ``token`` is the configured verify token (constant time)."""
        return hmac.compare_digest(token.encode("utf-8", "replace"), self._verify_token)

    def signed(self, raw: bytes, header: str) -> bool:
        """Whether ``header`` is the app secret's signature of ``raw``."""
        digest = hmac.new(self._app_secret, raw, hashlib.sha256).hexdigest()
        given = header.strip().lower().encode("utf-8", "replace")
        return hmac.compare_digest(given, f"sha256={digest}".encode())

    async def record(self, payload: Any) -> web.Response:
        """Record a notification; answer once done, or after ACK_WAIT anyway."""
        now = datetime.now(UTC)
        task = asyncio.ensure_future(self.queue.call(deliveries.handle, payload, now))
        done, _ = await asyncio.wait({task}, timeout=ACK_WAIT)
        if not done:
            # The database is slow (another writer): answer now, finish later.
            self._recording.add(task)
            task.add_done_callback(self._finished)
            logs.logger.warning(
                "Base occupée : notification acquittée avant d'être enregistrée"
            )
            return _ok()
        return self._outcome(task)

    def _finished(self, task: asyncio.Task[deliveries.Summary]) -> None:
        self._recording.discard(task)
        if not task.cancelled():
            self._outcome(task)

    def _outcome(self, task: asyncio.Task[deliveries.Summary]) -> web.Response:
        error = task.exception()
        if isinstance(error, deliveries.BadItem):
            logs.logger.error(
                "Notification du webhook illisible, ignorée",
                extra=logs.ctx(reason=str(error)),
            )
            return _ok()
        if error is not None:
            logs.logger.error(
                "Notification du webhook non enregistrée ; Meta la renverra",
                extra=logs.ctx(reason=f"{type(error).__name__}: {error}"),
            )
            return web.Response(status=500, text="not recorded, send it again\n")
        summary = task.result()
        logs.logger.debug(
            "Notification du webhook enregistrée",
            extra=logs.ctx(
                applied=summary.applied,
                kept=summary.kept,
                duplicates=summary.duplicates,
                ignored=summary.ignored,
                inbound=summary.inbound,
                errors=summary.errors,
                bad=len(summary.bad),
            ),
        )
        return _ok()

    async def close(self) -> None:
        """Let the recordings under way finish, then close the database."""
        if self._recording:
            await asyncio.gather(*self._recording, return_exceptions=True)
        await self.queue.close()


_ENDPOINT = web.AppKey("endpoint", _Endpoint)


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
        return web.Response(status=401, text="missing X-Hub-Signature-256\n")
    if (request.content_length or 0) > MAX_BODY:
        return _too_large(request)
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _too_large(request)
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
    return await endpoint.record(payload)


def _too_large(request: web.Request) -> web.Response:
    logs.logger.warning(
        "Notification du webhook trop grande, refusée",
        extra=logs.ctx(remote=request.remote, limit=MAX_BODY),
    )
    return web.Response(status=413, text=f"body larger than {MAX_BODY} bytes\n")


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
        await endpoint.queue.open()

    async def close_queue(app: web.Application) -> None:
        await endpoint.close()

    app.on_startup.append(open_queue)
    app.on_cleanup.append(close_queue)
    return app


def secrets_of(settings: Settings) -> tuple[str, str]:
    """The verify token and the app secret; ConfigError names a missing one."""
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
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_GRACE)
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
    """Serve until ``stop`` is set, logging the start and the stop."""
    runner, bound = await start(settings, host, port)
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
