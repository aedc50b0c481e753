"""Measure the memory and time of importing large CSV files.

Each size runs ``whatsapp-daemon import`` in a fresh process on a generated
file (semicolon-separated, every number distinct) into a fresh database,
and reads the child's peak resident memory from ``getrusage``. The file is
streamed: what grows with the size is the set of numbers already seen (for
duplicates), not the file. Also reports the longest single write transaction
seen by a concurrent writer, which is what a running daemon could wait.
"""

from __future__ import annotations

import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SIZES = (1_000, 10_000, 100_000, 300_000)


def make_csv(path: Path, count: int) -> None:
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("nom;telephone;montant\r\n")
        for i in range(count):
            out.write(f"Client {i};07 {i:08d};{i % 997} 000 FCFA\r\n")


def longest_wait(database: Path, done: threading.Event, waits: list[float]) -> None:
    """Take the write lock over and over; record the longest wait for it."""
    while not database.exists() and not done.is_set():
        time.sleep(0.01)
    conn = sqlite3.connect(database, timeout=60, isolation_level=None)
    try:
        while not done.is_set():
            started = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            waits.append(time.perf_counter() - started)
            conn.execute("COMMIT")
            time.sleep(0.005)
    finally:
        conn.close()


def run(count: int, folder: Path) -> tuple[float, float, float]:
    """Import ``count`` rows; return (seconds, peak MiB, longest wait in ms)."""
    source = folder / f"campaign-{count}.csv"
    make_csv(source, count)
    database = folder / f"queue-{count}.sqlite"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHATSAPP_")}
    env.update(
        WHATSAPP_DATABASE_PATH=str(database),
        WHATSAPP_LOG_PATH=str(folder / "import.log"),
    )
    command = [
        sys.executable, "-m", "whatsapp_daemon", "import", str(source),
        "--batch", f"bench-{count}", "--template", "rappel_paiement",
        "--param", "nom", "--param", "montant",
    ]  # fmt: skip
    sqlite3.connect(database).close()
    done = threading.Event()
    waits: list[float] = []
    watcher = threading.Thread(target=longest_wait, args=(database, done, waits))
    watcher.start()
    started = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run(command, env=env, check=True, capture_output=True)
    seconds = time.perf_counter() - started
    done.set()
    watcher.join()
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss is the largest child so far, in KiB on Linux and bytes on macOS.
    unit = 1 if sys.platform == "darwin" else 1024
    if peak <= before:
        print(f"  (peak of {count} rows hidden by a larger earlier child)")
    return seconds, peak * unit / 2**20, max(waits, default=0.0) * 1000


def main() -> None:
    print(f"{'rows':>8} {'seconds':>8} {'rows/s':>8} {'peak MiB':>9} {'wait ms':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for count in SIZES:
            seconds, peak, wait = run(count, Path(tmp))
            print(
                f"{count:>8} {seconds:>8.1f} {count / seconds:>8.0f}"
                f" {peak:>9.1f} {wait:>8.1f}"
            )


if __name__ == "__main__":
    main()
