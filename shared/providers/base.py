"""The provider interface and the errors every provider adapter translates into.

The three errors answer one question for the caller: may the request be sent
again? A TransientError says yes (nothing was created at the provider), a
PermanentError says never (the provider refused this message), and
UnknownOutcome says look first (the request may have reached the provider).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


class ProviderError(Exception):
    """Base of the errors a provider raises; `message` is safe to log and store."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TransientError(ProviderError):
    """The provider created nothing and the same request may be sent again later."""


class PermanentError(ProviderError):
    """The provider refused the message for good, with its error code and message."""

    def __init__(self, code: int | None, message: str) -> None:
        super().__init__(message)
        self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class UnknownOutcome(ProviderError):
    """The request may have reached the provider: look the message up before resending."""


@dataclass(frozen=True)
class Sent:
    """A message the provider accepted: its SID and the provider's status."""

    sid: str
    status: str


@dataclass(frozen=True)
class Fetched:
    """A message as the provider reports it now."""

    sid: str
    status: str
    error_code: int | None
    error_message: str | None


class Provider(Protocol):
    """What the gateway needs from an SMS provider."""

    def send(
        self,
        *,
        to: str,
        from_: str,
        body: str,
        status_callback: str,
        validity_period: int | None = None,
    ) -> Sent:
        """Create one message; raise TransientError, PermanentError or UnknownOutcome.

        `validity_period`: seconds the provider may keep it queued before giving up on it.
        """
        ...

    def find(
        self, *, to: str, from_: str, body: str, since: datetime, exclude: set[str]
    ) -> Sent | None:
        """Return a message with this sender, recipient and body created at or after
        `since` (naive UTC) whose SID is not in `exclude`, or None if there is none."""
        ...

    def fetch(self, sid: str) -> Fetched:
        """Return the provider's current view of one message."""
        ...
