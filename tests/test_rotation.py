"""Rotating the logs under a running daemon: newsyslog's way and the cron script's.

The rotation tests run ``python -m whatsapp_daemon run`` as a real subprocess
against the sandbox Graph API on 127.0.0.1, with a steady stream of sends (one
every 10 ms at ``rate_per_minute`` 6000, one log line each) while the log is
rotated under it. As under launchd, the daemon's stdout and stderr are
``whatsapp_queue_cron.log`` opened once with O_APPEND and never reopened.

What is guaranteed, and asserted: ``WatchedFileHandler`` stats the log's path
before each record and reopens it when the inode changed. A record whose stat
came just before the rotation is written into the old file after it, so at
most one record lands in the old file after the rotation moment, and it was
created before that moment; every later record goes to the new file. Nothing
is lost as long as the path is never missing (newsyslog swaps the new file in
with one rename) or, when it is (the script renames first), the new file is
created without replacing one the daemon created meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import gzip
import json
import os
import pwd
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pytest
from conftest import ROOT, StartSandbox, daemon_env, until

from whatsapp_daemon.api import WhatsAppQueue, text_message
from whatsapp_daemon.settings import Settings

SCRIPT = ROOT / "scripts" / "rotate_whatsapp_logs.sh"
TEMPLATE = ROOT / "launchd" / "newsyslog.conf.in"
MAIN, CRON = "whatsapp_queue.log", "whatsapp_queue_cron.log"
SENT = "Message envoyé avec succès"
STOPPED = "Arrêt du processeur de queue WhatsApp"
MONOLOG = re.compile(
    r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\] "
    r"whatsapp_queue\.(DEBUG|INFO|WARNING|ERROR|CRITICAL): \S"
)
ARCHIVE = re.compile(r"\.(\d{8})(?:-(\d{6})(?:-(\d+))?)?\.gz$")
PROXY_VARS = re.compile(r"(?i)^(http|https|all|no)_proxy$")
TOTAL = 600  # messages per stream: six seconds at one every 10 ms
SHELLS = [shell for shell in ("sh", "bash") if shutil.which(shell)]


# -- the daemon, its stream and its files --------------------------------------


class Daemon:
    """A daemon subprocess whose stdout and stderr are the cron log, as launchd does.

    ``cron_fd`` stays open in the test: writing through it is writing through
    the descriptor launchd gave the daemon (same open file, O_APPEND).
    """

    def __init__(self, settings: Settings, cron_log: Path, cwd: Path) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        self.cron_fd = os.open(cron_log, flags, 0o644)
        env = {k: v for k, v in daemon_env(settings).items() if not PROXY_VARS.match(k)}
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "whatsapp_daemon", "run"],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.cron_fd,
            stderr=self.cron_fd,
        )
        self.cron_log = cron_log

    def running(self) -> bool:
        """True while alive; fail at once, with the cron log, if it died."""
        code = self.popen.poll()
        if code is not None:
            raise AssertionError(
                f"daemon exited {code}:\n{self.cron_log.read_text('utf-8')}"
            )
        return True

    def write_cron(self, text: str) -> None:
        """Write a line to the cron log through the daemon's own descriptor."""
        os.write(self.cron_fd, text.encode("utf-8"))

    async def stop(self) -> int:
        self.popen.send_signal(signal.SIGTERM)
        await until(lambda: self.popen.poll() is not None, 10, "the daemon's exit")
        return self.popen.returncode

    def close(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)
        with contextlib.suppress(OSError):
            os.close(self.cron_fd)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[[Settings], Daemon]]:
    """Start daemons logging into ``settings.log_path``'s folder; kill leftovers."""
    started: list[Daemon] = []

    def start(settings: Settings) -> Daemon:
        settings.log_path.parent.mkdir(parents=True, exist_ok=True)  # make install
        daemon = Daemon(settings, settings.log_path.parent / CRON, tmp_path)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.close()


def enqueue_stream(database: Path, count: int = TOTAL) -> None:
    """Queue ``count`` text messages to distinct recipients."""
    WhatsAppQueue(database).add(
        text_message(f"+2250701{i:06d}", f"Bonjour {i}") for i in range(count)
    )


def db_wamids(database: Path) -> list[str]:
    """The message ids of the rows the daemon marked sent."""
    with contextlib.closing(sqlite3.connect(database)) as conn:
        found = conn.execute(
            "SELECT wamid FROM whatsapp_queue WHERE status = 'sent'"
        ).fetchall()
    return [row[0] for row in found]


def sent_count(database: Path) -> int:
    with contextlib.closing(sqlite3.connect(database)) as conn:
        [(count,)] = conn.execute(
            "SELECT COUNT(*) FROM whatsapp_queue WHERE status = 'sent'"
        ).fetchall()
    return int(count)


async def sent_at_least(daemon: Daemon, database: Path, count: int) -> None:
    await until(
        lambda: daemon.running() and sent_count(database) >= count,
        30,
        f"{count} messages sent",
    )


def read_bytes(path: Path) -> bytes:
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as archive:
            return archive.read()
    return path.read_bytes()


def read_lines(path: Path) -> list[str]:
    return read_bytes(path).decode("utf-8").splitlines()


def wamids(lines: list[str]) -> list[str]:
    """The ``messageId`` of every "sent" line."""
    found = []
    for line in lines:
        if f": {SENT} " in line:
            found.append(json.loads(line[line.index("{") :])["messageId"])
    return found


def stamp(line: str) -> str:
    match = MONOLOG.match(line)
    assert match, f"not a Monolog line: {line!r}"
    return match[1]


def local_stamp(moment: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(moment))


def check_stream(files: list[Path], database: Path) -> list[list[str]]:
    """Check the files, oldest first, hold the stream once, in order; return them.

    Every line is a Monolog line (so no "logfile turned over" line), every
    message the database calls sent is logged exactly once across the files,
    and time never goes backwards from one line or file to the next.
    """
    contents = [read_lines(path) for path in files]
    everything = [line for lines in contents for line in lines]
    stamps = [stamp(line) for line in everything]
    assert not any("turned over" in line for line in everything)
    assert stamps == sorted(stamps)
    logged = Counter(wamids(everything))
    assert logged == Counter(db_wamids(database))
    assert set(logged.values()) == {1}
    assert len(logged) == TOTAL
    return contents


# -- newsyslog, as it rotates with the flags NBZ ------------------------------


@dataclass
class Rotation:
    moment: float  # time.time() right after the new file took the path
    size: int  # bytes in the old file at that moment
    inode: int  # the new file's


def newsyslog_rotate(log: Path, count: int = 30) -> Rotation:
    """Rotate ``log`` as FreeBSD's newsyslog (which macOS's comes from) does.

    Its do_rotate: shift ``log.N.gz`` to ``log.N+1.gz``; savelog(): link
    ``log`` to ``log.0``; createlog(): mkstemp ``log.zXXXXXX``, fchown to the
    entry's owner:group, fchmod to its mode, rename it over ``log``; flag B:
    no "turned over" line in either file; flag N: signal nobody; flag Z, once
    every entry is rotated: ``gzip -f log.0`` and set the archive's mode.
    """
    folder, name = log.parent, log.name
    for n in range(count - 2, -1, -1):
        older = folder / f"{name}.{n}.gz"
        if older.exists():
            os.rename(older, folder / f"{name}.{n + 1}.gz")
    zero = folder / f"{name}.0"
    os.link(log, zero)
    fd, temp = tempfile.mkstemp(prefix=f"{name}.z", dir=folder)
    try:
        os.fchown(fd, os.getuid(), os.getgid())
        os.fchmod(fd, 0o644)
        os.rename(temp, log)
        moment = time.time()
        size = zero.stat().st_size
        inode = os.fstat(fd).st_ino
    finally:
        os.close(fd)
    with zero.open("rb") as source, gzip.open(f"{zero}.gz", "wb") as target:
        shutil.copyfileobj(source, target)
    zero.unlink()
    os.chmod(f"{zero}.gz", 0o644)
    return Rotation(moment, size, inode)


async def test_newsyslog_rotation_under_a_running_daemon_loses_no_line(
    start_sandbox: StartSandbox,
    make_settings: Callable[..., Settings],
    spawn: Callable[[Settings], Daemon],
) -> None:
    """Three newsyslog NBZ rotations mid-stream: no line lost, none misplaced.

    Each archive ends with lines stamped no later than its rotation and gains
    at most one line (the record being written) after it; each new file, the
    very file newsyslog created (same inode, mode 644), gets the rest; only
    Monolog lines anywhere; the daemon keeps sending and exits 0 on SIGTERM.
    """
    sandbox = await start_sandbox()
    settings = make_settings(api_base_url=sandbox.url)
    log, database = settings.log_path, settings.database_path
    enqueue_stream(database)
    daemon = spawn(settings)

    rotations = []
    for quarter in (1, 2, 3):
        await sent_at_least(daemon, database, quarter * TOTAL // 4)
        rotations.append(newsyslog_rotate(log))
    await sent_at_least(daemon, database, TOTAL)
    assert await daemon.stop() == 0

    archives = [log.with_name(f"{MAIN}.{n}.gz") for n in (2, 1, 0)]
    contents = check_stream([*archives, log], database)
    for rotation, archive, lines, after in zip(
        rotations, archives, contents, contents[1:], strict=False
    ):
        assert lines and after, "a file of the stream is empty"
        assert stamp(lines[-1]) <= local_stamp(rotation.moment)
        late = read_bytes(archive)[rotation.size :]
        assert late.count(b"\n") <= 1, f"{archive.name} grew by {late!r}"
        assert archive.stat().st_mode & 0o777 == 0o644
    assert STOPPED in contents[-1][-1]
    live = log.stat()
    assert (live.st_ino, live.st_uid, live.st_mode & 0o777) == (
        rotations[-1].inode,
        os.getuid(),
        0o644,
    )
    assert not list(log.parent.glob(f"{MAIN}.z*"))
    assert daemon.cron_log.read_bytes() == b""


# -- the cron script -----------------------------------------------------------


def script_env(log_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHATSAPP_")}
    env.update(WHATSAPP_LOG_DIR=str(log_dir), **extra)
    return env


def run_script(
    *args: str, env: dict[str, str], shell: str = "sh", cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the script to completion from ``cwd`` (the filesystem root by default)."""
    return subprocess.run(
        [shell, str(SCRIPT), *args],
        cwd=cwd or Path("/"),
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


async def run_script_async(env: dict[str, str]) -> tuple[int, str]:
    """Run the script without blocking the loop the sandbox answers in."""
    process = await asyncio.create_subprocess_exec(
        "sh",
        str(SCRIPT),
        cwd="/",
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, (out + err).decode("utf-8")


def archives_of(folder: Path, base: str) -> list[Path]:
    """The script's archives of ``base``, in the order they were made."""

    def order(path: Path) -> tuple[str, str, int]:
        match = ARCHIVE.search(path.name)
        assert match, path.name
        return match[1], match[2] or "", int(match[3] or 0)

    found = [p for p in folder.glob(f"{base}.*.gz") if ARCHIVE.search(p.name)]
    return sorted(found, key=order)


async def test_cron_script_rotates_both_logs_under_a_running_daemon(
    start_sandbox: StartSandbox,
    make_settings: Callable[..., Settings],
    spawn: Callable[[Settings], Daemon],
) -> None:
    """Two script runs mid-stream: dated archives, no line lost, cron log truncated.

    The daemon's log goes to ``whatsapp_queue.log.YYYYMMDD.gz`` then
    ``….YYYYMMDD-HHMMSS.gz`` (the name was taken), holding only lines stamped
    before the script ended, and the new file (mode 644) gets the rest. The
    cron log is copied then truncated in place: each archive holds what was
    written before its run, and the daemon's descriptor, still open, writes
    at the start of the emptied file (O_APPEND: no hole of NUL bytes).
    """
    sandbox = await start_sandbox()
    settings = make_settings(api_base_url=sandbox.url)
    log, database = settings.log_path, settings.database_path
    folder = log.parent
    enqueue_stream(database)
    daemon = spawn(settings)
    env = script_env(folder)

    ends = []
    cron_lines = ["Traceback: a start-up error before the first run\n"]
    daemon.write_cron(cron_lines[0])
    for third in (1, 2):
        await sent_at_least(daemon, database, third * TOTAL // 3)
        code, output = await run_script_async(env)
        assert (code, output) == (0, "")
        ends.append(time.time())
        cron_lines.append(f"a line written after run {third}\n")
        daemon.write_cron(cron_lines[-1])
    await sent_at_least(daemon, database, TOTAL)
    assert await daemon.stop() == 0

    archives = archives_of(folder, MAIN)
    assert len(archives) == 2
    assert re.search(r"\.\d{8}\.gz$", archives[0].name)
    assert re.search(
        r"\.\d{8}(-\d{6})?\.gz$", archives[1].name
    )  # at midnight: no -HHMMSS
    contents = check_stream([*archives, log], database)
    for end, lines, after in zip(ends, contents, contents[1:], strict=False):
        assert lines and after, "a file of the stream is empty"
        assert stamp(lines[-1]) <= local_stamp(end)
    assert STOPPED in contents[-1][-1]
    assert log.stat().st_mode & 0o777 == 0o644

    cron_archives = archives_of(folder, CRON)
    assert [read_bytes(p).decode() for p in cron_archives] == cron_lines[:2]
    assert daemon.cron_log.read_text("utf-8") == cron_lines[2]
    leftovers = {p.name for p in folder.iterdir()} - {
        p.name for p in [*archives, *cron_archives, log, daemon.cron_log]
    }
    assert leftovers == set()


# -- the newsyslog line --------------------------------------------------------

NEWSYSLOG_FLAGS = set("BCDGJNRUXZ-")


def parse_newsyslog(text: str) -> list[dict[str, str]]:
    """Parse entries as newsyslog.conf(5) reads them (comments, then fields)."""
    entries = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        assert 5 <= len(fields) <= 9, raw
        logfile, rest = fields[0], fields[1:]
        owner = rest.pop(0) if ":" in rest[0] else ""
        mode, count, size, when, *more = rest
        entries.append(
            {
                "logfile": logfile,
                "owner": owner,
                "mode": mode,
                "count": count,
                "size": size,
                "when": when,
                "flags": more[0] if more else "",
            }
        )
    return entries


def test_newsyslog_line_renders_for_this_checkout(tmp_path: Path) -> None:
    """``--newsyslog`` fills the template: this log, this user:group, 644 30 * @T00 NBZ.

    Every placeholder of the template is filled, and the result parses as
    one newsyslog.conf entry whose flags hold N, B and Z and nothing that
    would signal a process or mangle the log.
    """
    folder = tmp_path / "logs"
    folder.mkdir()
    placeholders = set(re.findall(r"@([A-Z_]+)@", TEMPLATE.read_text("utf-8")))
    assert placeholders == {"LOG", "OWNER", "GROUP"}

    result = run_script("--newsyslog", env=script_env(folder))

    assert (result.returncode, result.stderr) == (0, "")
    assert not re.search(r"@[A-Z_]+@", result.stdout)
    [entry] = parse_newsyslog(result.stdout)
    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    assert entry == {
        "logfile": str(folder.resolve() / MAIN),
        "owner": f"{user}:{group}",
        "mode": "644",
        "count": "30",
        "size": "*",
        "when": "@T00",
        "flags": entry["flags"],
    }
    assert set(entry["flags"]) <= NEWSYSLOG_FLAGS
    assert set("NBZ") <= set(entry["flags"])
    assert int(entry["mode"], 8) == 0o644


def test_newsyslog_refuses_a_log_path_with_a_space(tmp_path: Path) -> None:
    """A checkout path with a space exits 1 in one line: newsyslog would split it."""
    folder = tmp_path / "my logs"
    folder.mkdir()

    result = run_script("--newsyslog", env=script_env(folder))

    assert (result.returncode, result.stdout) == (1, "")
    [line] = result.stderr.splitlines()
    assert "space" in line


# -- the script on its own -----------------------------------------------------


def day(days_ago: int) -> str:
    return (date.today() - timedelta(days=days_ago)).strftime("%Y%m%d")


@pytest.mark.parametrize("shell", SHELLS)
def test_script_keeps_30_days_of_archives(tmp_path: Path, shell: str) -> None:
    """Archives dated 30 days ago or earlier go; newer ones and other files stay.

    An archive an interrupted run left uncompressed is gzipped (then kept or
    deleted by its date); newsyslog's numbered archives and unrelated files
    are left alone; both logs are rotated and the lock is gone afterwards.
    """
    folder = tmp_path / "logs"
    folder.mkdir()
    (folder / MAIN).write_text("[2026-12-04 00:00:00] whatsapp_queue.INFO: x\n")
    (folder / CRON).write_text("Traceback\n")
    kept_days, gone_days = (1, 2, 29), (30, 31, 45, 400)
    for base in (MAIN, CRON):
        for n in (*kept_days, *gone_days):
            (folder / f"{base}.{day(n)}.gz").write_bytes(gzip.compress(b"old\n"))
        (folder / f"{base}.{day(31)}-235959.gz").write_bytes(gzip.compress(b"x\n"))
    (folder / f"{MAIN}.{day(3)}-101010").write_text("left uncompressed\n")
    (folder / f"{MAIN}.{day(40)}").write_text("left uncompressed\n")
    others = [f"{MAIN}.0.gz", f"{MAIN}.notes", "other.log.20000101.gz", "README"]
    for name in others:
        (folder / name).write_text("not ours\n")
    before = date.today()

    result = run_script(env=script_env(folder, WHATSAPP_ROTATE_SETTLE="0"), shell=shell)

    if date.today() != before:
        pytest.skip("the run crossed midnight")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    names = {p.name for p in folder.iterdir()}
    today = day(0)
    for base in (MAIN, CRON):
        for n in kept_days:
            assert f"{base}.{day(n)}.gz" in names
        for n in gone_days:
            assert f"{base}.{day(n)}.gz" not in names
        assert f"{base}.{day(31)}-235959.gz" not in names
        assert f"{base}.{today}.gz" in names
        assert (folder / base).read_bytes() == b""
    assert f"{MAIN}.{day(3)}-101010.gz" in names
    assert not any(name.startswith(f"{MAIN}.{day(40)}") for name in names)
    assert set(others) <= names
    assert read_lines(folder / f"{CRON}.{today}.gz") == ["Traceback"]
    assert not (folder / ".rotate_whatsapp_logs.lock").exists()


@pytest.mark.parametrize("shell", SHELLS)
def test_script_runs_again_safely_and_fails_in_one_line(
    tmp_path: Path, shell: str
) -> None:
    """Empty logs are not rotated, so a second run changes nothing; errors: one line.

    It works from any directory with the log folder as argument, and a
    missing folder, a bad option or a bad setting exit non-zero with one line.
    """
    folder = tmp_path / "logs"
    folder.mkdir()
    (folder / MAIN).write_text("[2026-12-04 00:00:00] whatsapp_queue.INFO: x\n")
    env = script_env(tmp_path / "elsewhere", WHATSAPP_ROTATE_SETTLE="0")

    listings = []
    for _ in range(2):
        result = run_script(str(folder), env=env, shell=shell, cwd=tmp_path)
        assert (result.returncode, result.stderr) == (0, "")
        listings.append(sorted(p.name for p in folder.iterdir()))
    assert listings[0] == listings[1]
    assert listings[0] == sorted([MAIN, f"{MAIN}.{day(0)}.gz"])

    failures = [
        (1, run_script(env=env, shell=shell)),  # WHATSAPP_LOG_DIR is missing
        (2, run_script("--bogus", env=env, shell=shell)),
        (2, run_script("a", "b", env=env, shell=shell)),
        (1, run_script(env=script_env(folder, WHATSAPP_LOG_KEEP_DAYS="x"))),
    ]
    for code, result in failures:
        assert result.returncode == code, result.stderr
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert result.stderr.startswith("rotate_whatsapp_logs.sh: ")


def test_script_finds_its_checkout_from_anywhere(tmp_path: Path) -> None:
    """Without argument or WHATSAPP_LOG_DIR it rotates var/logs of its checkout.

    Called through a symbolic link (say from ~/bin) from another directory,
    it still finds the checkout the script file lives in.
    """
    checkout = tmp_path / "checkout"
    for source in (SCRIPT, TEMPLATE):
        copy = checkout / source.relative_to(ROOT)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, copy)
    folder = checkout / "var" / "logs"
    folder.mkdir(parents=True)
    (folder / MAIN).write_text("[2026-12-04 00:00:00] whatsapp_queue.INFO: x\n")
    (tmp_path / "bin").mkdir()
    link = tmp_path / "bin" / "rotate"
    link.symlink_to(Path("..") / "checkout" / "scripts" / SCRIPT.name)
    env = script_env(folder, WHATSAPP_ROTATE_SETTLE="0")
    del env["WHATSAPP_LOG_DIR"]

    rendered, rotated = (
        subprocess.run(
            [str(link), *args],
            cwd="/",
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        for args in (["--newsyslog"], [])
    )

    assert (rendered.returncode, rendered.stderr) == (0, "")
    [entry] = parse_newsyslog(rendered.stdout)
    assert entry["logfile"] == str(folder.resolve() / MAIN)
    assert (rotated.returncode, rotated.stderr) == (0, "")
    assert sorted(p.name for p in folder.iterdir()) == [MAIN, f"{MAIN}.{day(0)}.gz"]


def test_cron_log_only_leaves_the_daemon_log_to_newsyslog(tmp_path: Path) -> None:
    """``--cron-log-only`` copies and truncates the cron log, and nothing else."""
    folder = tmp_path / "logs"
    folder.mkdir()
    main = "[2026-12-04 00:00:00] whatsapp_queue.INFO: x\n"
    (folder / MAIN).write_text(main)
    (folder / f"{MAIN}.0.gz").write_bytes(gzip.compress(b"newsyslog's\n"))
    (folder / CRON).write_text("Traceback\n")

    result = run_script("--cron-log-only", env=script_env(folder))

    assert (result.returncode, result.stderr) == (0, "")
    assert (folder / MAIN).read_text() == main
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [MAIN, f"{MAIN}.0.gz", CRON, f"{CRON}.{day(0)}.gz"]
    )
    assert (folder / CRON).read_bytes() == b""
