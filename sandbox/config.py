"""Development credentials and the runtime switches of the Twilio sandbox."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

SANDBOX_ACCOUNT_SID = "AC5a4db0c0ffee5a4db0c0ffee5a4db0c0"
"""The fixed account SID that development setups use against the sandbox."""

SANDBOX_AUTH_TOKEN = "5a4db0c0ffee5a4db0c0ffee5a4db0c0"
"""The fixed auth token that development setups use against the sandbox."""

DEFAULT_GATEWAY_URL = "http://127.0.0.1:8000"
"""Where the gateway is, by default, for incoming messages: its PUBLIC_BASE_URL's default."""

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclasses.dataclass(frozen=True)
class SandboxConfig:
    """The fault-injection and callback switches, all changeable at runtime.

    Rates are fractions between 0 and 1 and durations are milliseconds.
    `gateway_url` is the gateway's public base URL, where a simulated
    incoming message is posted (`sandbox.inbound`).
    """

    latency_ms: int = 0
    rate_slow: float = 0.0
    slow_ms: int = 0
    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_undelivered: float = 0.0
    callbacks: bool = True
    callback_delay_ms: int = 50
    callback_duplicates: bool = False
    callback_shuffle: bool = False
    callback_late_ms: int = 0
    gateway_url: str = DEFAULT_GATEWAY_URL

    def to_dict(self) -> dict[str, Any]:
        """Return the switches as a JSON-ready dictionary."""
        return dataclasses.asdict(self)

    def updated(self, changes: Mapping[str, Any]) -> SandboxConfig:
        """Return a copy with the changes applied, or raise ValueError for a bad one."""
        kinds = {f.name: str(f.type) for f in dataclasses.fields(self)}
        values = self.to_dict()
        for key, raw in changes.items():
            if key not in kinds:
                raise ValueError(f"unknown sandbox switch {key!r}")
            values[key] = _coerce(key, kinds[key], raw)
        return SandboxConfig(**values)


def _coerce(key: str, kind: str, raw: Any) -> Any:
    """Convert one switch value to its declared kind and check its range."""
    if kind == "str":
        parts = urlsplit(raw) if isinstance(raw, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{key} must be an http(s) URL, not {raw!r}")
        return raw.rstrip("/")
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise ValueError(f"{key} must be a boolean, not {raw!r}")
    if isinstance(raw, bool):
        raise ValueError(f"{key} must be a number, not {raw!r}")
    try:
        value = int(raw) if kind == "int" else float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be a number, not {raw!r}") from None
    if value < 0 or (kind == "float" and value > 1):
        raise ValueError(f"{key} is out of range: {raw!r}")
    return value
