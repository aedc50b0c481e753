"""Shared fixtures: a sandbox Graph API on loopback, settings, a queue file."""

from __future__ import annotations

import asyncio
import inspect
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from whatsapp_daemon import sandbox
from whatsapp_daemon.queue import QueueDB
from whatsapp_daemon.settings import Settings

TOKEN = "EAA-test-token-for-the-test-suite-only-00"  # made up, never valid
PHONE_NUMBER_ID = "106540352242922"

ROOT = Path(__file__).resolve().parent.parent


class Sandbox:
    """A running sandbox server and helpers to read what it received."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    async def requests(self) -> list[dict[str, Any]]:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"{self.url}/_sandbox/requests")
        return list(response.json()["requests"])

    async def stats(self) -> dict[str, Any]:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"{self.url}/_sandbox/stats")
        return dict(response.json())


StartSandbox = Callable[..., Any]


@pytest.fixture
async def start_sandbox() -> AsyncIterator[StartSandbox]:
    """Start sandbox servers in the test's loop; all are stopped afterwards."""
    runners = []

    async def start(**config: Any) -> Sandbox:
        config.setdefault("access_token", TOKEN)
        runner, port = await sandbox.start(sandbox.SandboxConfig(**config))
        runners.append(runner)
        return Sandbox(port)

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings pointing at files in ``tmp_path``, with fast test timings."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "access_token": TOKEN,
            "phone_number_id": PHONE_NUMBER_ID,
            "api_base_url": "http://127.0.0.1:9",
            "database_path": tmp_path / "database.sqlite",
            "lock_path": tmp_path / "whatsapp_queue_processor.lock",
            "log_path": tmp_path / "logs" / "whatsapp_queue.log",
            "rate_per_minute": 6000,
            "poll_interval": 0.2,
            "retry_base_delay": 0.0,
            "retry_max_delay": 0.0,
            "shutdown_grace": 2.0,
            "http_timeout": 5.0,
            # Retries to one recipient wait for the pair rate; the tests of
            # that pacing set it themselves.
            "pair_interval": 0.0,
        }
        values.update(overrides)
        # pydantic-settings takes _env_file at init; mypy sees only the fields.
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return make


@pytest.fixture
def db(tmp_path: Path) -> Iterator[QueueDB]:
    """A migrated queue database in ``tmp_path``."""
    queue = QueueDB.open(tmp_path / "database.sqlite")
    yield queue
    queue.close()


def daemon_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that makes a daemon subprocess use ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHATSAPP_")}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        env[f"WHATSAPP_{name.upper()}"] = str(value)
    env.update(extra)
    return env


async def until(
    probe: Callable[[], Any], timeout: float = 10.0, what: str = "a condition"
) -> Any:
    """Poll ``probe`` (sync or async) until it returns a truthy value."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


PYTHON = sys.executable
