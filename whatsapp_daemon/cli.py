"""The ``whatsapp-daemon`` command.

Bad input is reported in one line on stderr, without a traceback, and the
exit status says what kind of problem it was (see :class:`Exit`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sqlite3
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path

from . import api, importer, launchd, logs, status
from .daemon import Daemon, LockLostError
from .errors import AlreadyRunningError, ConfigError, InvalidMessageError
from .lock import InstanceLock
from .models import Status
from .queue import QueueDB
from .settings import Settings, load_settings

LOCK_RETRY = 5.0  # seconds between two tries for a busy lock (--wait-for-lock)


class Exit(IntEnum):
    """Exit statuses of the command (BSD sysexits where one fits)."""

    OK = 0
    FAILURE = 1  # an unexpected error; the traceback is in the log
    USAGE = 2  # bad command line (argparse's own status)
    DATA = 65  # bad input: a message, a number, a CSV file
    DATABASE = 74  # the database cannot be opened or written
    RUNNING = 75  # another instance holds the lock
    CONFIG = 78  # a setting is missing or invalid


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["sandbox"]:
        # The sandbox parses its own options (argparse's REMAINDER would
        # refuse those that come first).
        return _sandbox(argv[1:])
    args = _parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except ConfigError as exc:
        return _fail(f"configuration error: {exc}", Exit.CONFIG)
    except InvalidMessageError as exc:
        return _fail(f"invalid input: {exc}", Exit.DATA)
    except AlreadyRunningError as exc:
        return _fail(f"already running: {exc}; nothing was sent", Exit.RUNNING)
    except (OSError, sqlite3.Error) as exc:
        return _fail(f"database or file error: {exc}", Exit.DATABASE)


def _fail(message: str, code: Exit) -> int:
    print(f"whatsapp-daemon: {message}", file=sys.stderr)
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="whatsapp-daemon",
        description="Send the WhatsApp messages queued in SQLite"
        " through Meta's Cloud API.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the daemon until SIGTERM or SIGINT")
    run.add_argument(
        "--wait-for-lock",
        action="store_true",
        help="wait while another instance holds the lock instead of exiting",
    )
    run.set_defaults(handler=_run)

    enqueue = commands.add_parser("enqueue", help="queue one message")
    enqueue.add_argument("--to", required=True, help="recipient, e.g. +2250701020304")
    kind = enqueue.add_mutually_exclusive_group(required=True)
    kind.add_argument("--text", help="free-form text (inside a 24-hour window)")
    kind.add_argument("--template", help="name of an approved template")
    enqueue.add_argument("--language", default="fr", help="template language code")
    enqueue.add_argument(
        "--param", action="append", default=[], help="template body parameter, in order"
    )
    enqueue.add_argument("--batch", help="batch id to file the message under")
    enqueue.set_defaults(handler=_enqueue)

    imp = commands.add_parser("import", help="queue a campaign from a CSV file")
    imp.add_argument("file", type=Path)
    imp.add_argument("--batch", required=True, help="batch id for the campaign")
    imp.add_argument("--template-file", type=Path, help="JSON: name, language, params")
    imp.add_argument("--template", help="approved template name")
    imp.add_argument("--language", default="fr", help="template language code")
    imp.add_argument("--param", action="append", default=[], help="column for {{n}}")
    imp.add_argument("--text", help="free-form text with {column} placeholders")
    imp.add_argument(
        "--dry-run", action="store_true", help="report only, queue nothing"
    )
    imp.add_argument("--append", action="store_true", help="add to an existing batch")
    imp.set_defaults(handler=_import)

    st = commands.add_parser("status", help="show the queue and the daemon")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(handler=_status)

    resolve = commands.add_parser(
        "resolve", help="settle a message whose outcome is unknown"
    )
    resolve.add_argument("id", type=int, help="row id in whatsapp_queue")
    resolve.add_argument(
        "--as",
        dest="outcome",
        required=True,
        choices=["sent", "resend", "failed"],
        help="sent: Meta had it; resend: queue it again; failed: give up",
    )
    resolve.set_defaults(handler=_resolve)

    plist = commands.add_parser("plist", help="print the LaunchAgent for this checkout")
    plist.add_argument("--python", type=Path, default=Path(sys.executable))
    plist.add_argument("--project-dir", type=Path, default=Path.cwd())
    plist.set_defaults(handler=_plist)

    commands.add_parser(
        "sandbox",
        help="serve a local imitation of the Graph API (loopback only)",
        add_help=False,
    )
    return parser


# -- run ------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    settings = load_settings()
    settings.require_sending()
    token = settings.access_token.get_secret_value() if settings.access_token else ""
    logs.setup(
        settings.log_path,
        level=settings.log_level,
        mask_recipients=settings.mask_recipients,
        secret=token,
        echo=sys.stderr.isatty(),
    )
    lock = InstanceLock(settings.lock_path)
    try:
        return asyncio.run(_serve(settings, lock, wait=args.wait_for_lock))
    finally:
        lock.release()


async def _serve(settings: Settings, lock: InstanceLock, *, wait: bool) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if not await _take_lock(lock, stop, wait=wait):
        return Exit.OK if stop.is_set() else Exit.RUNNING
    try:
        await Daemon(settings, lock).run(stop)
    except LockLostError as exc:
        return _fail(str(exc), Exit.RUNNING)
    except Exception:
        logs.logger.exception("Arrêt sur erreur inattendue")
        raise
    return Exit.OK


async def _take_lock(lock: InstanceLock, stop: asyncio.Event, *, wait: bool) -> bool:
    """Take the lock; with ``wait``, keep trying until it is free or we stop."""
    logged = False
    while not stop.is_set():
        try:
            lock.acquire()
            return True
        except AlreadyRunningError as exc:
            if not logged:
                logs.logger.warning(
                    "Une autre instance détient le verrou, aucun envoi",
                    extra=logs.ctx(lock=exc.path, pid=exc.holder_pid),
                )
                logged = True
            if not wait:
                raise
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), LOCK_RETRY)
    return False


# -- queueing ---------------------------------------------------------------


def _enqueue(args: argparse.Namespace) -> int:
    settings = load_settings()
    region = settings.default_region
    if args.text is not None:
        message = api.text_message(
            args.to, args.text, batch_id=args.batch, region=region
        )
    else:
        message = api.template_message(
            args.to,
            args.template,
            args.language,
            args.param,
            batch_id=args.batch,
            region=region,
        )
    [row_id] = api.WhatsAppQueue(settings.database_path, region=region).add([message])
    print(f"queued message {row_id} for {message.recipient}")
    return Exit.OK


def _campaign(args: argparse.Namespace) -> importer.Campaign:
    if args.template_file:
        spec = json.loads(args.template_file.read_text(encoding="utf-8"))
        return importer.Campaign(
            template_name=spec["name"],
            language=spec.get("language", "fr"),
            param_columns=tuple(spec.get("params", [])),
        )
    if args.template:
        return importer.Campaign(args.template, args.language, tuple(args.param))
    if args.text:
        return importer.Campaign(text=args.text)
    raise InvalidMessageError(
        "give --template NAME, --template-file FILE or --text TEXT"
    )


def _import(args: argparse.Namespace) -> int:
    settings = load_settings()
    campaign = _campaign(args)
    db = QueueDB.open(settings.database_path)
    try:
        report = importer.import_file(
            db,
            args.file,
            campaign,
            batch_id=args.batch,
            region=settings.default_region,
            dry_run=args.dry_run,
            append=args.append,
        )
    finally:
        db.close()
    for line in report.lines():
        print(line)
    verb = "would queue" if args.dry_run else "queued"
    print(f"{verb} {len(report.messages)} messages in batch {args.batch}")
    return Exit.OK


# -- operating --------------------------------------------------------------


def _status(args: argparse.Namespace) -> int:
    settings = load_settings()
    report = status.gather(settings, datetime.now(UTC))
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print(status.render(report))
    return Exit.OK


def _resolve(args: argparse.Namespace) -> int:
    settings = load_settings()
    db = QueueDB.open(settings.database_path)
    try:
        row = db.get(args.id)
        if row is None or row["status"] != Status.UNKNOWN:
            found = row["status"] if row else "no such row"
            raise InvalidMessageError(
                f"id {args.id}: only a message with status unknown can be resolved"
                f" (found: {found})"
            )
        target = {
            "sent": Status.SENT,
            "resend": Status.PENDING,
            "failed": Status.FAILED,
        }
        db.settle(args.id, target[args.outcome], datetime.now(UTC))
    finally:
        db.close()
    print(f"message {args.id} is now {target[args.outcome].value}")
    return Exit.OK


def _plist(args: argparse.Namespace) -> int:
    sys.stdout.write(launchd.render(args.project_dir, args.python).decode())
    return Exit.OK


def _sandbox(argv: list[str]) -> int:
    try:
        from . import sandbox
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"the sandbox needs {exc.name}; install it with"
            " pip install 'whatsapp-daemon[sandbox]'"
        ) from None
    return sandbox.main(argv)
