"""The one place that reads the environment.

Every setting is parsed and checked here, so a process with a missing or
malformed setting stops at start with one line that names it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_TWILIO_API_BASE = "https://api.twilio.com"
DEFAULT_PUBLIC_BASE_URL = "http://127.0.0.1:8000"
REDIS_SCHEMES = ("redis", "rediss", "unix")
AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")
# Beyond TWILIO_TIMEOUT (a call's whole time), what a claim's lease allows for: the
# statements around the call, and the clocks of two hosts disagreeing.
LEASE_MARGIN = 15.0
DEFAULT_TWILIO_TIMEOUT = 10.0
DEFAULT_LEASE = DEFAULT_TWILIO_TIMEOUT + LEASE_MARGIN


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names it."""


@dataclass(frozen=True)
class Settings:
    """Typed, validated configuration shared by the API, the worker and the CLI."""

    database_url: str
    twilio_account_sid: str
    twilio_auth_token: str
    redis_url: str = DEFAULT_REDIS_URL
    # The Celery broker: Redis (REDIS_URL, the default) or RabbitMQ (amqp://). Redis
    # keeps the rate limits and the pacing whichever carries the tasks.
    broker_url: str = ""
    twilio_api_base: str = DEFAULT_TWILIO_API_BASE
    public_base_url: str = DEFAULT_PUBLIC_BASE_URL
    callback_allow_private: bool = False
    dev: bool = False
    twilio_timeout: float = DEFAULT_TWILIO_TIMEOUT
    send_max_retries: int = 8
    max_request_bytes: int = 64 * 1024
    max_campaign_bytes: int = 16 * 1024 * 1024
    requeue_after_seconds: int = 60
    rate_limit_per_minute: int = 6000
    reconcile_unfinished_after_seconds: int = 60 * 60
    # Final messages unchanged for longer are deleted (their ledger rows stay); 0 keeps all.
    message_retention_days: int = 0
    # Operations (issue 5): log level, Flower's "user:password" list, the worker's metrics port.
    log_level: str = "INFO"
    # `json` (one object per line) or `console` (one line for a person; `smsgw dev`).
    log_format: str = "json"
    # The name console lines give this process (`smsgw dev` names each of its children).
    process_name: str = ""
    flower_basic_auth: str = ""
    worker_metrics_port: int = 9808

    @property
    def status_callback_base(self) -> str:
        """Return the URL Twilio posts status callbacks to, without the message id."""
        return self.public_base_url.rstrip("/") + "/webhooks/twilio/status"

    @property
    def broker(self) -> str:
        """Return the Celery broker's URL: BROKER_URL, else REDIS_URL."""
        return self.broker_url or self.redis_url

    @property
    def broker_is_amqp(self) -> bool:
        """Return whether the tasks travel through RabbitMQ rather than Redis."""
        return urlsplit(self.broker).scheme.startswith(AMQP_SCHEMES)

    @property
    def lease_seconds(self) -> float:
        """Return how long a hand-off's claim holds its message: one Twilio call and a margin."""
        return self.twilio_timeout + LEASE_MARGIN

    def with_overrides(self, **changes: object) -> Settings:
        """Return a copy with some fields changed (used by tests and `smsgw dev`)."""
        return replace(self, **changes)  # type: ignore[arg-type]


def _url(
    env: Mapping[str, str],
    name: str,
    default: str | None,
    schemes: tuple[str, ...],
    *,
    required: bool = True,
) -> str:
    value = env.get(name, "").strip() or default
    if not value:
        if not required:
            return ""
        raise SettingsError(f"{name} is required")
    parts = urlsplit(value)
    if parts.scheme.split("+")[0] not in schemes or not (parts.netloc or parts.path):
        raise SettingsError(f"{name} must be a URL with scheme {' or '.join(schemes)}: {value!r}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be true or false: {raw!r}")


def _number(env: Mapping[str, str], name: str, default: float, kind: type) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number: {raw!r}") from None
    if value <= 0:
        raise SettingsError(f"{name} must be positive: {raw!r}")
    return value


def _count(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit():
        raise SettingsError(f"{name} must be a whole number, 0 or more: {raw!r}")
    return int(raw)


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _log_level(env: Mapping[str, str]) -> str:
    value = env.get("LOG_LEVEL", "").strip().upper() or "INFO"
    if value not in LOG_LEVELS:
        raise SettingsError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}: {value!r}")
    return value


def _log_format(env: Mapping[str, str]) -> str:
    value = env.get("LOG_FORMAT", "").strip().lower() or "json"
    if value not in ("json", "console"):
        raise SettingsError(f"LOG_FORMAT must be json or console: {value!r}")
    return value


def _basic_auth(env: Mapping[str, str]) -> str:
    value = env.get("FLOWER_BASIC_AUTH", "").strip()
    for pair in filter(None, value.split(",")):
        user, _, password = pair.partition(":")
        if not user or not password:
            raise SettingsError("FLOWER_BASIC_AUTH must be user:password[,user:password]")
    return value


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) > 65535:
        raise SettingsError(f"{name} must be a port number, or 0 for none: {raw!r}")
    return int(raw)


def _required(env: Mapping[str, str], name: str, prefix: str, length: int) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise SettingsError(f"{name} is required")
    if prefix and (not value.startswith(prefix) or len(value) != length):
        raise SettingsError(
            f"{name} must be {prefix} followed by {length - len(prefix)} characters"
        )
    return value


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from the environment, raising SettingsError on a bad value."""
    env = os.environ if env is None else env
    return Settings(
        database_url=_url(env, "DATABASE_URL", None, ("postgresql", "sqlite")),
        redis_url=_url(env, "REDIS_URL", DEFAULT_REDIS_URL, REDIS_SCHEMES),
        broker_url=_url(env, "BROKER_URL", "", REDIS_SCHEMES + AMQP_SCHEMES, required=False),
        twilio_account_sid=_required(env, "TWILIO_ACCOUNT_SID", "AC", 34),
        twilio_auth_token=_required(env, "TWILIO_AUTH_TOKEN", "", 0),
        twilio_api_base=_url(env, "TWILIO_API_BASE", DEFAULT_TWILIO_API_BASE, ("http", "https")),
        public_base_url=_url(env, "PUBLIC_BASE_URL", DEFAULT_PUBLIC_BASE_URL, ("http", "https")),
        callback_allow_private=_bool(env, "CALLBACK_ALLOW_PRIVATE", False),
        dev=_bool(env, "SMSGW_DEV", False),
        twilio_timeout=_number(env, "TWILIO_TIMEOUT", DEFAULT_TWILIO_TIMEOUT, float),
        send_max_retries=int(_number(env, "SEND_MAX_RETRIES", 8, int)),
        max_request_bytes=int(_number(env, "MAX_REQUEST_BYTES", 64 * 1024, int)),
        max_campaign_bytes=int(_number(env, "MAX_CAMPAIGN_BYTES", 16 * 1024 * 1024, int)),
        requeue_after_seconds=int(_number(env, "REQUEUE_AFTER_SECONDS", 60, int)),
        rate_limit_per_minute=int(_number(env, "RATE_LIMIT_PER_MINUTE", 6000, int)),
        reconcile_unfinished_after_seconds=int(
            _number(env, "RECONCILE_UNFINISHED_AFTER_SECONDS", 60 * 60, int)
        ),
        message_retention_days=_count(env, "MESSAGE_RETENTION_DAYS", 0),
        log_level=_log_level(env),
        log_format=_log_format(env),
        process_name=env.get("SMSGW_PROCESS", "").strip(),
        flower_basic_auth=_basic_auth(env),
        worker_metrics_port=_port(env, "WORKER_METRICS_PORT", 9808),
    )


def settings_or_exit(env: Mapping[str, str] | None = None) -> Settings:
    """Load the settings, or stop the process with one line naming the bad setting."""
    try:
        return load_settings(env)
    except SettingsError as error:
        raise SystemExit(f"smsgw: configuration error: {error}") from None
