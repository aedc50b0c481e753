"""Settings, read from ``.env`` and the environment (prefix ``WHATSAPP_``).

Environment variables win over ``.env``. Keys of ``.env`` without the prefix
(the PHP application's own settings) are ignored and never echoed. Relative
paths are resolved against the working directory, which launchd sets to the
project root.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from dotenv import dotenv_values
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import ConfigError

ENV_PREFIX = "WHATSAPP_"
ENV_FILE = ".env"

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]

# The fix suggested for each kind of validation error, keyed by pydantic type.
_FIXES = {
    "int_parsing": "write a whole number",
    "float_parsing": "write a number",
    "bool_parsing": "write true or false",
    "greater_than": "use a larger value",
    "greater_than_equal": "use a larger value",
    "less_than_equal": "use a smaller value",
    "literal_error": "use one of the allowed values",
}


class Settings(BaseSettings):
    """Every setting of the daemon; ``.env.example`` documents each key."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=ENV_FILE,
        env_file_encoding="utf-8",
        extra="ignore",
        hide_input_in_errors=True,
    )

    access_token: SecretStr | None = None
    phone_number_id: str | None = None
    api_version: str = "v23.0"
    api_base_url: str = "https://graph.facebook.com"

    rate_per_minute: int = Field(default=100, gt=0, le=100_000)
    max_attempts: int = Field(default=3, ge=1, le=20)
    poll_interval: float = Field(default=60.0, gt=0)  # seconds
    batch_size: int = Field(default=100, gt=0, le=10_000)
    concurrency: int = Field(default=10, gt=0, le=200)
    http_timeout: float = Field(default=30.0, gt=0)  # seconds, per request
    retry_base_delay: float = Field(default=2.0, ge=0)  # seconds
    retry_max_delay: float = Field(default=60.0, ge=0)  # seconds
    # Seconds; below the LaunchAgent's ExitTimeOut (30) so launchd never kills us.
    shutdown_grace: float = Field(default=20.0, ge=0, le=25)
    lease_seconds: int = Field(default=600, gt=0)  # a claim's lifetime

    lock_path: Path = Path("/tmp/whatsapp_queue_processor.lock")
    database_path: Path = Path("var/database.sqlite")
    log_path: Path = Path("var/logs/whatsapp_queue.log")
    log_level: LogLevel = "INFO"
    mask_recipients: bool = True
    retention_days: int = Field(default=30, gt=0)
    # Region for numbers written without a country code; empty: refuse them.
    default_region: str | None = "CI"
    # Time zone in which --at times are read (stored in UTC).
    timezone: str = "Africa/Abidjan"
    # Thresholds of ``status --check`` (a warning beyond each).
    check_backlog_minutes: int = Field(default=30, gt=0)  # oldest due message
    check_failures_per_hour: int = Field(default=20, gt=0)  # messages failed
    check_disk_mb: int = Field(default=500, ge=0)  # free space for logs and queue

    # Seconds between two messages to the same recipient (Meta's pair rate).
    pair_interval: float = Field(default=6.0, ge=0, le=3600)
    # Identical template failures (132000, 132012...) in one batch before the
    # batch's other messages with that template are held.
    template_failure_limit: int = Field(default=3, gt=0, le=1000)
    # Refuse free-form messages to a customer whose 24-hour window is closed,
    # as recorded by the webhook from inbound messages.
    service_window_check: bool = False

    # The webhook endpoint Meta calls with delivery statuses and inbound messages.
    webhook_host: str = "127.0.0.1"
    webhook_port: int = Field(default=8788, ge=1, le=65535)
    webhook_path: str = "/webhook"
    webhook_verify_token: SecretStr | None = None
    app_secret: SecretStr | None = None

    @field_validator("access_token")
    @classmethod
    def _check_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        token = value.get_secret_value().strip()
        if any(char.isspace() or not char.isprintable() for char in token):
            raise ValueError("contains spaces or line breaks; paste the token again")
        if not token.isascii():
            raise ValueError(
                "contains accented or non-ASCII characters; paste it again"
            )
        return SecretStr(token) if token else None

    @field_validator("phone_number_id")
    @classmethod
    def _check_phone_number_id(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not value.strip().isdigit():
            raise ValueError(
                "must be the Phone number ID (digits) from WhatsApp Manager, not"
                " the phone number"
            )
        return value.strip()

    @field_validator("api_version")
    @classmethod
    def _check_version(cls, value: str) -> str:
        if not (value.startswith("v") and value[1:].replace(".", "").isdigit()):
            raise ValueError("must look like v23.0")
        return value

    @field_validator("api_base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with https:// (or http:// for the sandbox)")
        return value.rstrip("/")

    @field_validator("default_region", mode="before")
    @classmethod
    def _check_region(cls, value: str | None) -> str | None:
        if value is None or not str(value).strip():
            return None
        region = str(value).strip().upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(
                "must be a two-letter country code such as CI, or empty to"
                " refuse numbers without a country code"
            )
        return region

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                "is not a time zone name; use one like Africa/Abidjan"
            ) from None
        return value

    @property
    def zone(self) -> ZoneInfo:
        """The time zone of ``timezone``."""
        return ZoneInfo(self.timezone)

    def require_sending(self) -> None:
        """Raise ConfigError unless the keys needed to send are set."""
        for name in ("access_token", "phone_number_id"):
            if not getattr(self, name):
                key = env_key(name)
                raise ConfigError(
                    f"{key} is missing; set it in .env (see .env.example)"
                )

    @property
    def messages_url(self) -> str:
        """The Graph API endpoint that sends messages."""
        return f"{self.api_base_url}/{self.api_version}/{self.phone_number_id}/messages"


# Settings whose values are never shown, in an error or anywhere else.
SECRET_FIELDS = ("access_token", "app_secret", "webhook_verify_token")
# Shorter strings are not masked: "queue" would hide every log line's channel.
# The webhook refuses a verify token or an app secret this short.
MIN_SECRET_LENGTH = 8


def env_key(field: str) -> str:
    """Return the environment variable that sets ``field``."""
    return f"{ENV_PREFIX}{field.upper()}"


def load_settings(env_file: Path | str | None = ENV_FILE) -> Settings:
    """Read the settings, turning a validation error into a one-line ConfigError."""
    try:
        return Settings(_env_file=env_file)  # type: ignore[call-arg]  # pydantic-settings init arg
    except ValidationError as exc:
        raise ConfigError(_describe(exc, env_file)) from None
    except UnicodeDecodeError as exc:  # e.g. a .env saved in Latin-1
        raise ConfigError(
            f"{env_file} is not UTF-8 text (bad byte at offset {exc.start});"
            " save it as UTF-8"
        ) from None


def _describe(exc: ValidationError, env_file: Path | str | None) -> str:
    """Name the first bad key, its value (never a secret) and the fix."""
    error = exc.errors(include_url=False)[0]
    field = str(error["loc"][0]) if error["loc"] else "?"
    key = env_key(field)
    value = "" if field in SECRET_FIELDS else _raw_value(field, env_file)
    for secret in SECRET_FIELDS:  # a secret pasted under another key
        hidden = _raw_value(secret, env_file).strip()
        if len(hidden) >= MIN_SECRET_LENGTH and hidden in value:
            value = value.replace(hidden, "***")
    shown = f', got "{value}"' if value else ""
    reason = error["msg"].removeprefix("Value error, ")
    fix = _FIXES.get(error["type"], "correct it")
    return f"{key} is invalid ({reason}){shown}; {fix} in .env or the environment"


def _raw_value(field: str, env_file: Path | str | None) -> str:
    """Find the raw text given for ``field`` in the environment or ``.env``."""
    key = env_key(field)
    if key in os.environ:
        return os.environ[key]
    if env_file is None or not Path(env_file).is_file():
        return ""
    for name, value in dotenv_values(env_file).items():
        if name.upper() == key and value is not None:
            return value
    return ""
