"""The ``whatsapp-daemon`` command.

Bad input is reported in one line on stderr, without a traceback, and the
exit status says what kind of problem it was (see :class:`Exit`).
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import contextlib
import json
import os
import signal
import sqlite3
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path
from typing import Any

from . import (
    api,
    batches,
    doctor,
    importer,
    launchd,
    logs,
    messages,
    scheduling,
    status,
    systemd,
)
from .daemon import Daemon, LockLostError
from .errors import AlreadyRunningError, ConfigError, InvalidMessageError
from .lock import InstanceLock
from .models import Status
from .queue import QueueDB
from .settings import ENV_FILE, MIN_SECRET_LENGTH, Settings, load_settings

LOCK_RETRY = 5.0  # seconds between two tries for a busy lock (--wait-for-lock)
ENV_FILE_PATH = Path(ENV_FILE)


class Exit(IntEnum):
    """Exit statuses of the command (BSD sysexits where one fits)."""

    OK = 0
    FAILURE = 1  # an unexpected error; the traceback is in the log
    USAGE = 2  # bad command line (argparse's own status)
    DATA = 65  # bad input: a message, a number, a CSV file
    DATABASE = 74  # the database cannot be opened or written
    RUNNING = 75  # another instance holds the lock
    CONFIG = 78  # a setting is missing or invalid
    INTERRUPTED = 130  # stopped by Ctrl-C or SIGTERM (128 + SIGINT)


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
    except BrokenPipeError:
        # The reader went away (status | head): not an error of ours.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the exit flush)
        return Exit.OK
    except ConfigError as exc:
        return _fail(f"configuration error: {exc}", Exit.CONFIG)
    except InvalidMessageError as exc:
        return _fail(f"invalid input: {exc}", Exit.DATA)
    except AlreadyRunningError as exc:
        return _fail(f"already running: {exc}; nothing was sent", Exit.RUNNING)
    except (OSError, sqlite3.Error) as exc:
        return _fail(f"database or file error: {exc}", Exit.DATABASE)
    except KeyboardInterrupt:
        return _fail("interrupted; nothing was changed", Exit.INTERRUPTED)


def _fail(message: str, code: Exit) -> int:
    # A file name or a setting may hold a line break or an escape sequence.
    print(_redact(status.printable(f"whatsapp-daemon: {message}")), file=sys.stderr)
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
    kind.add_argument(
        "--kind",
        choices=api.CONTENT_KINDS,
        help="a message whose object is given by --content (see the README)",
    )
    enqueue.add_argument(
        "--language", help="the template's language code, as approved (default: fr)"
    )
    enqueue.add_argument(
        "--param", action="append", default=[], help="template body parameter, in order"
    )
    enqueue.add_argument(
        "--content", help="JSON of the --kind's object, or @FILE holding it"
    )
    enqueue.add_argument(
        "--components", help="JSON list of the template's components, or @FILE"
    )
    enqueue.add_argument(
        "--preview-url", action="store_true", help="show a preview of a --text's link"
    )
    enqueue.add_argument(
        "--reply-to", metavar="WAMID", help="wamid of the message this one answers"
    )
    enqueue.add_argument("--batch", help="batch id to file the message under")
    enqueue.add_argument(
        "--at", help='send time, e.g. "2026-12-24 08:00" (WHATSAPP_TIMEZONE)'
    )
    enqueue.set_defaults(handler=_enqueue)

    imp = commands.add_parser(
        "import", help="queue a campaign from a CSV or .xlsx file"
    )
    imp.add_argument("file", type=Path, help="a .csv, .txt or .xlsx file")
    imp.add_argument("--batch", required=True, help="batch id, e.g. noel-2026")
    what = imp.add_mutually_exclusive_group(required=True)
    what.add_argument("--template-file", type=Path, help="JSON: name, language, params")
    what.add_argument("--template", help="approved template name")
    what.add_argument("--text", help="free-form text with {column} placeholders")
    imp.add_argument(
        "--language", default="fr", help="template language code (default: fr)"
    )
    imp.add_argument(
        "--param",
        action="append",
        default=[],
        help="column holding {{1}}, then {{2}}, ... (repeat, in order)",
    )
    imp.add_argument("--phone-column", help="column holding the numbers")
    imp.add_argument("--sheet", help="sheet of an .xlsx file (default: the first)")
    imp.add_argument(
        "--encoding", help="file encoding if not detected (utf-8, cp1252, mac_roman)"
    )
    imp.add_argument(
        "--convert-old-numbers",
        action="store_true",
        help="convert old 8-digit Ivorian numbers to 10 digits (2021 rule)",
    )
    imp.add_argument(
        "--skip-rejected",
        action="store_true",
        help="queue the valid lines even if some are rejected",
    )
    imp.add_argument(
        "--at", help='send time, e.g. "2026-12-24 08:00" (WHATSAPP_TIMEZONE)'
    )
    imp.add_argument(
        "--report", type=Path, help="CSV of rejected lines (default: var/imports/)"
    )
    imp.add_argument(
        "--dry-run", action="store_true", help="report only, queue nothing"
    )
    imp.add_argument("--append", action="store_true", help="add to an existing batch")
    imp.set_defaults(handler=_import)

    batch = commands.add_parser("batch", help="list, pause, resume or cancel batches")
    actions = batch.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="every batch with its counts")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(handler=_batch_list)
    for name, about in (
        ("pause", "hold the batch's pending messages"),
        ("resume", "send a paused batch again"),
        ("cancel", "cancel the batch's pending messages (others are kept)"),
        ("requeue-failed", "queue the batch's failed messages again"),
    ):
        action = actions.add_parser(name, help=about)
        action.add_argument("batch_id", metavar="BATCH")
        action.set_defaults(handler=_batch_change, change=name)

    template = commands.add_parser(
        "template", help="list or release templates held after Meta's errors"
    )
    verbs = template.add_subparsers(dest="action", required=True)
    verbs.add_parser("holds", help="every held template and why").set_defaults(
        handler=_template_holds
    )
    release = verbs.add_parser("release", help="send a held template's messages again")
    release.add_argument("name", metavar="NAME", help="the template's name")
    release.add_argument("--language", help="only this language code, e.g. fr")
    release.add_argument("--batch", help="only the hold of this batch")
    release.set_defaults(handler=_template_release)

    st = commands.add_parser("status", help="show the queue and the daemon")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.add_argument(
        "--check",
        action="store_true",
        help="one line; exit 0 healthy, 1 warning, 2 critical (for monitors)",
    )
    st.set_defaults(handler=_status)

    doc = commands.add_parser(
        "doctor", help="check an installation before loading the agent"
    )
    doc.add_argument(
        "--agent",
        type=Path,
        default=doctor.AGENT_PATH,
        help="the LaunchAgent file to compare with this checkout",
    )
    doc.set_defaults(handler=_doctor)

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

    unit = commands.add_parser(
        "systemd-unit", help="print the systemd user unit for this checkout (Linux)"
    )
    unit.add_argument("--python", type=Path, default=Path(sys.executable))
    unit.add_argument("--project-dir", type=Path, default=Path.cwd())
    unit.set_defaults(handler=_systemd_unit)

    plist = commands.add_parser("plist", help="print the LaunchAgent for this checkout")
    plist.add_argument("--python", type=Path, default=Path(sys.executable))
    plist.add_argument("--project-dir", type=Path, default=Path.cwd())
    plist.add_argument(
        "--webhook", action="store_true", help="the webhook's agent, not the daemon's"
    )
    plist.set_defaults(handler=_plist)

    hook = commands.add_parser(
        "webhook", help="receive Meta's delivery statuses and messages (until SIGTERM)"
    )
    hook.add_argument("--host", help="address to listen on (WHATSAPP_WEBHOOK_HOST)")
    hook.add_argument(
        "--port", type=int, help="TCP port, 0 for any free one (WHATSAPP_WEBHOOK_PORT)"
    )
    hook.set_defaults(handler=_webhook)

    commands.add_parser(
        "sandbox",
        help="serve a local imitation of the Graph API (loopback only)",
        add_help=False,
    )
    return parser


# -- run ------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    settings = _load()
    settings.require_sending()
    logs.setup(
        settings.log_path,
        level=settings.log_level,
        mask_recipients=settings.mask_recipients,
        secret=_SECRETS,
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
                    "Une autre instance détient le verrou, aucun envoi"
                    + (" ; attente de sa libération" if wait else ""),
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
    settings = _load()
    region = settings.default_region
    at = _send_time(args.at, settings)
    misplaced = _misplaced_option(args)
    if misplaced:
        return _fail(misplaced, Exit.USAGE)
    if args.batch is not None:
        _check_open_batch(settings, args.batch)
    common = {"reply_to": args.reply_to, "batch_id": args.batch, "at": at}
    if args.text is not None:
        message = api.text_message(
            args.to, args.text, preview_url=args.preview_url, region=region, **common
        )
    elif args.template is not None:
        components = _json_option("--components", args.components)
        message = api.template_message(
            args.to,
            args.template,
            args.language or "fr",
            args.param,
            components=components,
            region=region,
            **common,
        )
    else:
        content = _json_option("--content", args.content)
        message = api.message(
            args.to, args.kind, content=content, region=region, **common
        )
    # The configured database is the daemon's own: its folder may be made
    # (WhatsAppQueue refuses a missing folder, a Python caller's typo).
    settings.database_path.parent.mkdir(parents=True, exist_ok=True)
    [row_id] = api.WhatsAppQueue(settings.database_path, region=region).add([message])
    when = f", to send at {scheduling.describe(at, settings.zone)}" if at else ""
    print(f"queued message {row_id} for {message.recipient}{when}")
    return Exit.OK


def _misplaced_option(args: argparse.Namespace) -> str | None:
    """Name an option of ``enqueue`` given with a kind that does not take it."""
    if args.kind is not None and args.content is None:
        return f"--kind {args.kind} needs --content JSON (or --content @file.json)"
    if args.content is not None and args.kind is None:
        return "--content needs --kind KIND (texts: --text, templates: --template)"
    if args.preview_url and args.text is None:
        return "--preview-url applies to --text only"
    if args.components is not None and args.template is None:
        return "--components applies to --template only"
    if args.param and args.template is None:
        return "--param applies to --template only"
    if args.language is not None and args.template is None:
        return "--language applies to --template only"
    return None


# The largest --content or --components file read: a message's JSON is
# a few kilobytes (Meta's largest texts are 4,096 characters).
MAX_JSON_FILE = 1024 * 1024


def _json_option(option: str, value: str | None) -> Any:
    """Read an option's JSON, given inline or as ``@file``; None if absent."""
    if value is None:
        return None
    text = value
    where = ""
    if value.startswith("@"):
        where = f"{messages.printable(value[1:])} "  # _fail escapes the rest
        try:
            with Path(value[1:]).open("rb") as source:
                data = source.read(MAX_JSON_FILE + 1)  # /dev/zero never ends
        except OSError as exc:
            raise InvalidMessageError(
                f"{option}: {where}cannot be read ({exc.strerror or exc});"
                " check the path after @"
            ) from None
        if len(data) > MAX_JSON_FILE:
            raise InvalidMessageError(
                f"{option}: {where}is larger than {MAX_JSON_FILE:,} bytes; give"
                " the file that holds the message's JSON"
            )
        body = data.removeprefix(codecs.BOM_UTF8)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            at = exc.start + len(data) - len(body)
            raise InvalidMessageError(
                f"{option}: {where}is not UTF-8 text (byte 0x{data[at]:02x} at"
                f" offset {at}); save it as UTF-8"
            ) from None
    try:
        return json.loads(text, object_pairs_hook=messages.unique_keys)
    except messages.JSON_ERRORS as exc:
        reason, advice, _ = messages.why_not_json(exc, "write valid JSON")
        raise InvalidMessageError(
            f"{option}: {where}is not JSON ({reason}); {advice}"
        ) from None


def _check_open_batch(settings: Settings, batch_id: str) -> None:
    batches.check_batch_id(batch_id)
    if not settings.database_path.exists():
        return
    db = QueueDB.open(settings.database_path)
    try:
        batches.check_target(db.conn, batch_id, append=True)
    finally:
        db.close()


def _send_time(text: str | None, settings: Settings) -> datetime | None:
    if text is None:
        return None
    return scheduling.parse_at(text, settings.zone, datetime.now(UTC))


def _campaign(args: argparse.Namespace) -> importer.Campaign:
    if args.template_file:
        if args.param:
            raise InvalidMessageError(
                "--param goes with --template; a --template-file lists its"
                ' columns under "params"'
            )
        return _template_file(args.template_file)
    if args.template:
        return importer.Campaign(args.template, args.language, tuple(args.param))
    if args.param:
        raise InvalidMessageError(
            "--param goes with --template; with --text, write {column} in the text"
        )
    return importer.Campaign(text=args.text)


def _template_file(path: Path) -> importer.Campaign:
    example = '{"name": "rappel_paiement", "language": "fr", "params": ["nom"]}'
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidMessageError(
            f"--template-file {path}: cannot be read ({exc.strerror}); check the path"
        ) from None
    except (ValueError, UnicodeError, RecursionError) as exc:
        raise InvalidMessageError(
            f"--template-file {path}: not JSON ({type(exc).__name__}); write {example}"
        ) from None
    name = spec.get("name") if isinstance(spec, dict) else None
    language = spec.get("language", "fr") if isinstance(spec, dict) else None
    params = spec.get("params", []) if isinstance(spec, dict) else None
    if not (
        isinstance(name, str)
        and isinstance(language, str)
        and isinstance(params, list)
        and all(isinstance(p, str) for p in params)
    ):
        raise InvalidMessageError(
            f"--template-file {path}: name and language must be text and params"
            f" a list of column names; write {example}"
        )
    return importer.Campaign(name, language, tuple(params))


def _import(args: argparse.Namespace) -> int:
    settings = _load()
    _register_secret(settings)
    campaign = _campaign(args)
    now = datetime.now(UTC)
    options = importer.Options(
        phone_column=args.phone_column,
        encoding=args.encoding,
        sheet=args.sheet,
        region=settings.default_region,
        convert_old=args.convert_old_numbers,
        skip_rejected=args.skip_rejected,
        dry_run=args.dry_run,
        append=args.append,
        scheduled_at=_send_time(args.at, settings),
    )
    batches.check_batch_id(args.batch)
    details = args.report or importer.default_details_path(
        settings.database_path.parent / "imports", args.batch, now
    )
    _check_report_path(details, args.file, settings)
    _log_to_file(settings)
    # SIGTERM interrupts like Ctrl-C, so that a half-done import is removed.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    db = QueueDB.open(settings.database_path)
    try:
        report = importer.import_file(
            db,
            args.file,
            campaign,
            batch_id=args.batch,
            options=options,
            details_path=details,
            secret=token.get_secret_value() if (token := settings.access_token) else "",
        )
    except importer.ImportRefused as refused:
        _print_lines(refused.report.lines())
        raise
    finally:
        db.close()
    _print_lines(report.lines())
    if options.scheduled_at:
        print(f"to send at {scheduling.describe(options.scheduled_at, settings.zone)}")
    if args.dry_run:
        _print_lines(
            [f"dry run: would queue {report.queued} messages in batch {args.batch}"]
        )
        return Exit.OK
    logs.logger.info(
        "Import d'une campagne",
        extra=logs.ctx(
            batch=args.batch,
            file=str(args.file),
            queued=report.queued,
            duplicates=report.duplicates,
            rejected=report.rejected,
        ),
    )
    _print_lines([f"queued {report.queued} messages in batch {args.batch}"])
    return Exit.OK


def _check_report_path(report: Path, source: Path, settings: Settings) -> None:
    """Refuse a --report that would overwrite the file read or the queue."""
    database = settings.database_path
    guarded = {
        source: "the file being imported",
        database: "the queue database",
        Path(f"{database}-wal"): "the queue database",
        Path(f"{database}-shm"): "the queue database",
        settings.log_path: "the log",
        ENV_FILE_PATH: "the settings",
    }
    if report.exists() and not report.is_file():
        raise InvalidMessageError(
            f"--report {report}: not a regular file; give a file name such as"
            " lignes-rejetees.csv"
        )
    target = report.resolve()
    for path, what in guarded.items():
        if path.resolve() == target:
            raise InvalidMessageError(
                f"--report {report}: this is {what}; give a new file name such as"
                " lignes-rejetees.csv"
            )


# The access token, the app secret and the webhook's verify token, kept out
# of everything printed and logged.
_SECRETS: list[str] = []


def _load() -> Settings:
    """The settings; their token is then kept out of all this command prints."""
    settings = load_settings()
    _register_secret(settings)
    return settings


def _register_secret(settings: Settings) -> None:
    for secret in (
        settings.access_token,
        settings.app_secret,
        settings.webhook_verify_token,
    ):
        value = secret.get_secret_value().strip() if secret is not None else ""
        # A shorter one would mask common words (the webhook refuses it).
        if len(value) >= MIN_SECRET_LENGTH and value not in _SECRETS:
            _SECRETS.append(value)
    _SECRETS.sort(key=len, reverse=True)  # one may contain another


def _redact(text: str) -> str:
    return logs.redact(text, _SECRETS, "[jeton masqué]")


def _print_lines(lines: Sequence[str]) -> None:
    for line in lines:
        print(_redact(status.printable(line)))


def _interrupt(signum: int, frame: object) -> None:
    # A second signal must not cut the clean-up this one starts.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


# -- batches ----------------------------------------------------------------


def _batch_list(args: argparse.Namespace) -> int:
    settings = _load()
    db = status.blobs_as_text(_existing_db(settings))
    try:
        summaries = batches.list_batches(db)
    finally:
        db.close()
    if args.json:
        data = [batches.describe(s) for s in summaries]
        print(_redact(status.to_json(data, indent=2)))
        return Exit.OK
    if not summaries:
        print("no batch")
        return Exit.OK
    print(
        f"{'batch':<24} {'state':<10}{'total':>8}{'pending':>9}{'sending':>9}"
        f"{'sent':>8}{'deliv.':>8}{'read':>8}{'failed':>8}{'cancel.':>8}"
        f"{'unknown':>8}  next due (UTC)"
    )
    for s in summaries:
        c = s.counts
        state = "importing" if s.importing else s.state
        shown = "".join(
            f"{c.get(name, 0):>{9 if name in _WIDE else 8}}" for name in _COLUMNS
        )
        name = status.printable(s.batch_id)
        _print_lines(
            [f"{name:<24} {state:<10}{s.total:>8}{shown}  {s.next_due or '-'}"]
        )
    return Exit.OK


# -- templates held after Meta's errors -----------------------------------------


def _template_holds(args: argparse.Namespace) -> int:
    settings = _load()
    db = _existing_db(settings)
    try:
        holds = db.holds()
    finally:
        db.close()
    if not holds:
        print("no template is held")
        return Exit.OK
    for hold in holds:
        batch = hold["batch_id"]
        scope = "every batch" if hold["every_batch"] else batch or "no batch"
        _print_lines(
            [
                f"{hold['template_name']} ({hold['template_language']}), {scope}:"
                f" {hold['waiting']} messages waiting since {hold['created_at']}"
                " UTC",
                f"  why: {hold['reason']}",
            ]
        )
    return Exit.OK


def _template_release(args: argparse.Namespace) -> int:
    settings = _load()
    db = _existing_db(settings)
    batch = args.batch
    try:
        released = db.release_holds(args.name, datetime.now(UTC), args.language, batch)
    finally:
        db.close()
    if not released:
        return _fail(
            f"template: no hold for {args.name!r}"
            + (f" in language {args.language!r}" if args.language else "")
            + (f" in batch {batch!r}" if batch else "")
            + "; see whatsapp-daemon template holds",
            Exit.USAGE,
        )
    _log_to_file(settings)
    logs.logger.info(
        "Modèle libéré, ses messages repartent",
        extra=logs.ctx(template=args.name, language=args.language, batch=batch),
    )
    print(f"released {released} hold(s) of {args.name!r}; its messages are due again")
    return Exit.OK


# The statuses ``batch list`` counts, in its columns' order.
_COLUMNS = (
    "pending",
    "processing",
    "sent",
    "delivered",
    "read",
    "failed",
    "cancelled",
    "unknown",
)
_WIDE = ("pending", "processing")

_LOG_LINES = {
    "pause": "Lot mis en pause",
    "resume": "Lot repris",
    "cancel": "Lot annulé",
    "requeue-failed": "Messages en échec remis en file",
}


def _batch_change(args: argparse.Namespace) -> int:
    settings = _load()
    db = _existing_db(settings)
    now = datetime.now(UTC)
    try:
        if args.change == "pause":
            count = batches.pause(db, args.batch_id, now)
            done = f"paused: {count} unsent messages held"
        elif args.change == "resume":
            count = batches.resume(db, args.batch_id, now)
            done = f"resumed: {count} messages pending"
        elif args.change == "cancel":
            count, sending = batches.cancel(db, args.batch_id, now)
            done = f"cancelled: {count} pending messages"
            if sending:
                done += (
                    f"; {sending} being sent now are cancelled before their next"
                    " attempt (one whose request is under way may still go out)"
                )
        else:
            count = batches.requeue_failed(db, args.batch_id, now)
            done = f"requeued: {count} failed messages"
    finally:
        db.close()
    _log_to_file(settings)
    logs.logger.info(
        _LOG_LINES[args.change], extra=logs.ctx(batch=args.batch_id, count=count)
    )
    print(f"batch {args.batch_id} {done}")
    return Exit.OK


def _existing_db(settings: Settings) -> QueueDB:
    if not settings.database_path.exists():
        raise ConfigError(
            f"WHATSAPP_DATABASE_PATH: {settings.database_path} does not exist;"
            " check the path"
        )
    return QueueDB.open(settings.database_path)


def _log_to_file(settings: Settings) -> None:
    """Log this command's changes to the daemon's log file, not the terminal."""
    logs.setup(
        settings.log_path,
        level=settings.log_level,
        mask_recipients=settings.mask_recipients,
        secret=_SECRETS,
        echo=False,
    )


# -- operating --------------------------------------------------------------


def _status(args: argparse.Namespace) -> int:
    if args.check:
        return _check(args)
    settings = _load()
    report = status.gather(settings, datetime.now(UTC))
    if args.json:
        print(_redact(status.to_json(report, indent=2)))
    else:
        print(_redact(status.render(report)))
    return Exit.OK


def _check(args: argparse.Namespace) -> int:
    """One line and 0 (healthy), 1 (warning) or 2 (critical), for monitors."""
    try:
        settings = _load()
    except ConfigError as exc:
        verdict = status.Verdict(status.Health.CRITICAL, f"configuration: {exc}")
    else:
        verdict = status.check(settings, datetime.now(UTC))
    if args.json:
        line = status.to_json(
            {"health": verdict.health.name, "exit": int(verdict.health),
             "reason": verdict.reason},
        )  # fmt: skip
    else:
        line = status.printable(verdict.line())  # Meta's titles may hold escapes
    print(_redact(line))
    return int(verdict.health)


def _doctor(args: argparse.Namespace) -> int:
    findings = doctor.examine(Path.cwd(), agent=args.agent)
    for finding in findings:
        print(_redact(finding.line()))
    problems = sum(finding.problem for finding in findings)
    print(
        f"{problems} problem(s) found" if problems else "no problem found",
    )
    return Exit.FAILURE if problems else Exit.OK


def _resolve(args: argparse.Namespace) -> int:
    largest = 2**63 - 1  # SQLite's largest integer, so its largest row id
    if not -largest - 1 <= args.id <= largest:
        raise InvalidMessageError(
            f"id {args.id}: no message has this id (a row id is at most {largest});"
            " give the id column of the whatsapp_queue row with status unknown"
        )
    settings = _load()
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
    _log_to_file(settings)
    logs.logger.info(
        "Message au résultat inconnu réglé à la main",
        extra=logs.ctx(id=args.id, outcome=target[args.outcome].value),
    )
    print(f"message {args.id} is now {target[args.outcome].value}")
    return Exit.OK


def _systemd_unit(args: argparse.Namespace) -> int:
    sys.stdout.write(systemd.render(args.project_dir, args.python))
    return Exit.OK


def _plist(args: argparse.Namespace) -> int:
    template = args.project_dir / launchd.WEBHOOK_TEMPLATE if args.webhook else None
    sys.stdout.write(launchd.render(args.project_dir, args.python, template).decode())
    return Exit.OK


def _webhook(args: argparse.Namespace) -> int:
    """Serve Meta's webhook until SIGTERM or SIGINT."""
    settings = _load()
    from . import webhook  # aiohttp is imported only by the commands that serve

    webhook.secrets_of(settings)  # refuse to start without them
    logs.setup(
        settings.log_path,
        level=settings.log_level,
        mask_recipients=settings.mask_recipients,
        secret=_SECRETS,
        echo=sys.stderr.isatty(),
    )
    if args.port is not None and not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port}: give a port from 1 to 65535 (0: any)")
    host = args.host or settings.webhook_host
    port = settings.webhook_port if args.port is None else args.port

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await webhook.serve(settings, stop, host, port)

    try:
        asyncio.run(serve())
    except webhook.ListenError as exc:
        return _fail(
            f"cannot listen on {host}:{port} ({exc}); another webhook may be"
            " running, or pick another --port",
            Exit.RUNNING,
        )
    return Exit.OK


def _sandbox(argv: list[str]) -> int:
    try:
        from . import sandbox
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"the sandbox needs {exc.name}; install it with"
            " make install (pip install -e .)"
        ) from None
    return sandbox.main(argv)
