"""Measure what the daemon writes to whatsapp_queue.log per message.

Runs ``python -m whatsapp_daemon run`` as a subprocess against the sandbox
Graph API (served by this process on 127.0.0.1) until MESSAGES queued texts
are settled, with a few scripted errors: 2 % of the recipients fail once with
131000 and are retried, 1 % are refused for good (131026) and 0.4 % fail three
times and run out of attempts. It does so at WHATSAPP_LOG_LEVEL INFO and
WARNING with the default batch of 100, and at INFO with batches of one message,
which is what a queue fed one message at a time produces (each message then
gets its own "Démarrage / N messages en attente / Traitement terminé" lines).
It prints, per run, the bytes and lines per message, the volume of a day of
10,000 sends and that day gzipped, as newsyslog's Z flag or the cron script
keep it. Recipients are masked, as by default. Takes about half a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from whatsapp_daemon import sandbox
from whatsapp_daemon.api import WhatsAppQueue, text_message

MESSAGES = 2_000  # queued per run
DAY = 10_000  # sends a day, for the extrapolation
TOKEN = "EAA-bench-token-for-the-sandbox-only-0000"  # made up, never valid
LEVEL = re.compile(r"^\[[^]]+\] whatsapp_queue\.([A-Z]+): ")
PROXY_VARS = re.compile(r"(?i)^(http|https|all|no)_proxy$")


@dataclass
class Run:
    level: str
    batch: int
    messages: int
    sent: int
    failed: int
    seconds: float
    log: bytes

    @property
    def lines(self) -> list[str]:
        return self.log.decode("utf-8").splitlines()

    def per_message(self, amount: float) -> float:
        return amount / self.messages


def recipient(i: int) -> str:
    return f"+2250701{i:06d}"


def script(count: int) -> dict[str, list[str | int]]:
    """Scripted answers: retried once, refused for good, out of attempts."""
    actions: dict[str, list[str | int]] = {}
    for i in range(count):
        digits = recipient(i).lstrip("+")
        if i % 50 == 10:
            actions[digits] = [131000]
        elif i % 100 == 37:
            actions[digits] = ["always:131026"]
        elif i % 250 == 123:
            actions[digits] = [131000, 131000, 131000]
    return actions


def statuses(database: Path) -> Counter[str]:
    with contextlib.closing(sqlite3.connect(database)) as conn:
        found = conn.execute(
            "SELECT status, COUNT(*) FROM whatsapp_queue GROUP BY status"
        ).fetchall()
    return Counter({status: count for status, count in found})


async def run(url: str, level: str, batch: int, count: int) -> Run:
    """Send ``count`` messages through one daemon; return what it logged."""
    with tempfile.TemporaryDirectory(prefix="log_volume.") as folder:
        base = Path(folder)
        database, log = base / "database.sqlite", base / "whatsapp_queue.log"
        WhatsAppQueue(database).add(
            text_message(recipient(i), f"Bonjour, votre rendez-vous n°{i}")
            for i in range(count)
        )
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("WHATSAPP_") and not PROXY_VARS.match(k)
        }
        env.update(
            WHATSAPP_ACCESS_TOKEN=TOKEN,
            WHATSAPP_PHONE_NUMBER_ID="106540352242922",
            WHATSAPP_API_BASE_URL=url,
            WHATSAPP_DATABASE_PATH=str(database),
            WHATSAPP_LOCK_PATH=str(base / "whatsapp_queue_processor.lock"),
            WHATSAPP_LOG_PATH=str(log),
            WHATSAPP_LOG_LEVEL=level,
            WHATSAPP_BATCH_SIZE=str(batch),
            WHATSAPP_RATE_PER_MINUTE="100000",
            WHATSAPP_POLL_INTERVAL="0.2",
            WHATSAPP_RETRY_BASE_DELAY="0.05",
            WHATSAPP_RETRY_MAX_DELAY="0.2",
            WHATSAPP_SHUTDOWN_GRACE="2",
        )
        started = time.monotonic()
        with (base / "stderr").open("wb") as stderr:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "whatsapp_daemon", "run"],
                cwd=base,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
            )
            try:
                while True:
                    counts = statuses(database)
                    if counts["sent"] + counts["failed"] == count:
                        break
                    if daemon.poll() is not None:
                        problem = (base / "stderr").read_text("utf-8")
                        raise SystemExit(f"the daemon exited early:\n{problem}")
                    await asyncio.sleep(0.05)
                seconds = time.monotonic() - started
                daemon.send_signal(signal.SIGTERM)
                daemon.wait(15)
            finally:
                if daemon.poll() is None:
                    daemon.kill()
                    daemon.wait()
        return Run(
            level,
            batch,
            count,
            counts["sent"],
            counts["failed"],
            seconds,
            log.read_bytes(),
        )


def report(runs: list[Run]) -> None:
    header = (
        f"{'level':<8}{'batch':>6}{'sent':>6}{'failed':>7}{'lines':>7}"
        f"{'bytes/msg':>11}{'lines/msg':>11}{'MB/10k sends':>14}{'gz MB/10k':>11}"
    )
    print(header)
    print("-" * len(header))
    for r in runs:
        size = len(r.log)
        packed = len(gzip.compress(r.log))
        print(
            f"{r.level:<8}{r.batch:>6}{r.sent:>6}{r.failed:>7}{len(r.lines):>7}"
            f"{r.per_message(size):>11.1f}{r.per_message(len(r.lines)):>11.3f}"
            f"{r.per_message(size) * DAY / 1e6:>14.2f}"
            f"{r.per_message(packed) * DAY / 1e6:>11.3f}"
        )
    print()
    print("MB = 10^6 bytes; per message = per queued message, sent or failed.")
    for r in runs:
        levels = Counter(m[1] for line in r.lines if (m := LEVEL.match(line)))
        kinds = ", ".join(f"{name} {n}" for name, n in sorted(levels.items()))
        print(f"{r.level:<8} batch {r.batch:<4} {r.seconds:5.1f} s  lines: {kinds}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=MESSAGES)
    count = parser.parse_args().messages
    runs = []
    for level, batch in (("INFO", 100), ("WARNING", 100), ("INFO", 1)):
        config = sandbox.SandboxConfig(access_token=TOKEN, script=script(count))
        runner, port = await sandbox.start(config)
        try:
            runs.append(await run(f"http://127.0.0.1:{port}", level, batch, count))
        finally:
            await runner.cleanup()
    report(runs)


if __name__ == "__main__":
    asyncio.run(main())
