"""Drain the example campaign through the sandbox Graph API, end to end.

What ``make demo`` runs. Everything stays on this machine: the sandbox
listens on 127.0.0.1 and the demo uses its own database and lock, so it can
run beside a production daemon. Steps: import ``examples/campaign.csv``,
start the webhook and the sandbox (latency, scripted errors, and Meta's
signed delivery notifications sent to the webhook), start the daemon at an
accelerated rate, wait until the queue is drained and the statuses have
arrived, stop the daemon with SIGTERM as launchd would, check the result and
print the status.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
WORK = ROOT / "var" / "demo"
LOGS = ROOT / "var" / "logs" / "demo"
DATABASE = WORK / "database.sqlite"
RATE = 1200  # messages per minute: twelve times production, for a short demo
DEADLINE = 150.0  # seconds the drain may take before the demo gives up
TOKEN = "demo-token-for-the-local-sandbox"  # the sandbox only; not a Meta token
APP_SECRET = "demo-app-secret-for-the-local-sandbox"  # signs its notifications
STATUS_WAIT = 60.0  # seconds the delivery statuses may take after the drain
BATCH = "demo-rappel-paiement"


def main() -> int:
    _fresh_start()
    env = _environment()
    _step("Import of examples/campaign.csv")
    _daemon_cli(
        env,
        "import",
        str(EXAMPLES / "campaign.csv"),
        "--batch",
        BATCH,
        "--template-file",
        str(EXAMPLES / "template.json"),
        "--convert-old-numbers",
        "--skip-rejected",
    )
    hook_port = _free_port()
    env["WHATSAPP_WEBHOOK_PORT"] = str(hook_port)
    webhook = _start_process(env, "webhook", ["webhook"])
    sandbox, port = _start_sandbox(env, f"http://127.0.0.1:{hook_port}/webhook")
    env["WHATSAPP_API_BASE_URL"] = f"http://127.0.0.1:{port}"
    _step(f"Daemon at {RATE} messages/minute against the sandbox on port {port}")
    print(f"   (webhook on port {hook_port} receiving the sandbox's statuses)")
    daemon = _start_process(env, "whatsapp_queue_cron", ["run"])
    try:
        _wait_until_drained()
        _step("Delivery statuses arriving by webhook")
        _wait_for_statuses()
    finally:
        code = _stop(daemon, "daemon")
        stats = _sandbox_stats(port)
        _stop(sandbox, "sandbox")
        hook_code = _stop(webhook, "webhook")
    _step("Status")
    _daemon_cli(env, "status")
    return _verify(code, hook_code, stats)


def _fresh_start() -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    for path in (*WORK.glob("database.sqlite*"), *LOGS.glob("*.log")):
        path.unlink()


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHATSAPP_")}
    env.update(
        WHATSAPP_ACCESS_TOKEN=TOKEN,
        WHATSAPP_PHONE_NUMBER_ID="106540352242922",
        WHATSAPP_DATABASE_PATH=str(DATABASE),
        WHATSAPP_LOCK_PATH=str(WORK / "whatsapp_queue_processor.lock"),
        WHATSAPP_LOG_PATH=str(LOGS / "whatsapp_queue.log"),
        WHATSAPP_RATE_PER_MINUTE=str(RATE),
        WHATSAPP_POLL_INTERVAL="2",
        WHATSAPP_BATCH_SIZE="200",
        WHATSAPP_CONCURRENCY="20",
        WHATSAPP_HTTP_TIMEOUT="3",
        WHATSAPP_RETRY_BASE_DELAY="0.5",
        WHATSAPP_RETRY_MAX_DELAY="2",
        WHATSAPP_APP_SECRET=APP_SECRET,
        WHATSAPP_WEBHOOK_VERIFY_TOKEN="demo-verify-token",
    )
    return env


def _step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def _daemon_cli(env: dict[str, str], *args: str) -> None:
    command = [sys.executable, "-m", "whatsapp_daemon", *args]
    result = subprocess.run(command, env=env, cwd=WORK, capture_output=True, text=True)
    print(result.stdout, end="", flush=True)
    if result.returncode != 0:
        sys.exit(f"demo: {' '.join(args[:1])} failed: {result.stderr.strip()}")


def _free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start_sandbox(
    env: dict[str, str], webhook_url: str
) -> tuple[subprocess.Popen[bytes], int]:
    port_file = WORK / "sandbox.port"
    port_file.unlink(missing_ok=True)
    command = [
        sys.executable,
        "-m",
        "whatsapp_daemon.sandbox",
        "--port",
        "0",
        "--port-file",
        str(port_file),
        "--latency",
        "0.05-0.3",
        "--error-rate",
        "0.01",
        "--script",
        str(EXAMPLES / "sandbox-script.json"),
        "--throughput",
        "80",
        "--seed",
        "7",
        "--hang-seconds",
        "8",
        "--webhook-url",
        webhook_url,
        "--status-delay",
        "0.5",
    ]
    sandbox_env = {
        **env,
        "WHATSAPP_SANDBOX_ACCESS_TOKEN": TOKEN,
        "WHATSAPP_SANDBOX_APP_SECRET": APP_SECRET,
    }
    log = (LOGS / "sandbox.log").open("ab")
    process = subprocess.Popen(command, env=sandbox_env, stdout=log, stderr=log)
    deadline = time.monotonic() + 15
    while not port_file.exists() or not port_file.read_text().strip():
        if process.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"demo: the sandbox did not start; see {LOGS / 'sandbox.log'}")
        time.sleep(0.1)
    return process, int(port_file.read_text())


def _start_process(
    env: dict[str, str], log_name: str, args: list[str]
) -> subprocess.Popen[bytes]:
    """Start ``whatsapp-daemon ARGS`` with its output in ``LOGS/log_name.log``."""
    log = (LOGS / f"{log_name}.log").open("ab")
    command = [sys.executable, "-m", "whatsapp_daemon", *args]
    return subprocess.Popen(command, env=env, cwd=WORK, stdout=log, stderr=log)


def _counts() -> dict[str, int]:
    with sqlite3.connect(DATABASE) as conn:
        rows = conn.execute(
            "SELECT status, COUNT(*) FROM whatsapp_queue GROUP BY status"
        )
        return {str(status): int(count) for status, count in rows}


def _wait_until_drained() -> None:
    started = time.monotonic()
    while time.monotonic() - started < DEADLINE:
        counts = _counts()
        left = counts.get("pending", 0) + counts.get("processing", 0)
        shown = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        print(f"  {time.monotonic() - started:5.0f} s  {shown}", flush=True)
        if left == 0:
            return
        time.sleep(5)
    print(f"demo: the queue was not drained within {DEADLINE:.0f} s", flush=True)


def _wait_for_statuses() -> None:
    """Wait until no accepted message is left without its final status."""
    started = time.monotonic()
    while time.monotonic() - started < STATUS_WAIT:
        counts = _counts()
        shown = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        print(f"  {time.monotonic() - started:5.0f} s  {shown}", flush=True)
        if not counts.get("sent") and not counts.get("delivered"):
            return
        time.sleep(2)
    print(f"demo: statuses still arriving after {STATUS_WAIT:.0f} s", flush=True)


def _stop(process: subprocess.Popen[bytes], name: str) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        print(f"demo: the {name} ignored SIGTERM and was killed", flush=True)
        return -9


def _sandbox_stats(port: int) -> dict[str, Any]:
    """The sandbox's counters, plus the recipients of each accepted request."""
    base = f"http://127.0.0.1:{port}/_sandbox"
    with urllib.request.urlopen(f"{base}/stats", timeout=5) as response:
        stats = dict(json.load(response))
    with urllib.request.urlopen(f"{base}/requests", timeout=5) as response:
        requests = json.load(response)["requests"]
    stats["accepted_ids"] = {r["message_id"] for r in requests if r["message_id"]}
    stats["accepted_to"] = [r["to"] for r in requests if r["message_id"]]
    return stats


def _verify(exit_code: int, hook_code: int, stats: dict[str, Any]) -> int:
    """Check the run: drained, nothing lost or doubled, rate respected, and
    every accepted message carried to its delivery status by the webhook."""
    _step("Checks")
    counts = _counts()
    with sqlite3.connect(DATABASE) as conn:
        wamids = {
            row[0]
            for row in conn.execute(
                "SELECT wamid FROM whatsapp_queue WHERE wamid IS NOT NULL"
            )
        }
        late_failures = conn.execute(
            "SELECT COUNT(*) FROM whatsapp_queue"
            " WHERE status = 'failed' AND wamid IS NOT NULL"
        ).fetchone()[0]
    accepted = len(wamids)
    accepted_to = stats["accepted_to"]
    extra = len(stats["accepted_ids"] - wamids)
    checks = {
        "daemon exited 0 on SIGTERM": exit_code == 0,
        "queue drained (nothing pending or processing)": counts.get("pending", 0)
        + counts.get("processing", 0)
        == 0,
        f"every row Meta accepted ({accepted}) was accepted by the sandbox": wamids
        <= stats["accepted_ids"],
        f"accepted but not recorded as sent: {extra}, all of them 'unknown'": extra
        <= counts.get("unknown", 0),
        "no recipient received the message twice": len(accepted_to)
        == len(set(accepted_to)),
        f"at most {RATE} requests in any 60 s ({stats['max_in_any_60s']})": stats[
            "max_in_any_60s"
        ]
        <= RATE,
        f"webhook: every accepted message read ({counts.get('read', 0)}) or failed"
        f" after acceptance ({late_failures})": counts.get("read", 0) + late_failures
        == accepted
        and late_failures > 0,
        "webhook exited 0 on SIGTERM": hook_code == 0,
    }
    for label, ok in checks.items():
        print(f"  [{'ok' if ok else 'FAILED'}] {label}")
    print(f"\nLog: {LOGS / 'whatsapp_queue.log'}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
