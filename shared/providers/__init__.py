"""SMS providers behind one interface; only `twilio.py` and `twilio_http.py` import the SDK."""

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
