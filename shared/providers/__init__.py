"""SMS providers behind one interface; only `twilio.py` imports the Twilio SDK."""

from shared.providers.base import (
    Fetched,
    PermanentError,
    Provider,
    ProviderError,
    Sent,
    TransientError,
    UnknownOutcome,
)

__all__ = [
    "Fetched",
    "PermanentError",
    "Provider",
    "ProviderError",
    "Sent",
    "TransientError",
    "UnknownOutcome",
]
