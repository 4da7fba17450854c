"""Twilio error codes, their messages, and the test-credential magic numbers."""

from __future__ import annotations

import re
from typing import Any

MORE_INFO = "https://www.twilio.com/docs/errors/{code}"

TO_MAGIC = {
    "+15005550001": 21211,
    "+15005550002": 21612,
    "+15005550003": 21408,
    "+15005550004": 21610,
    "+15005550009": 21614,
}
"""The magic 'To' numbers of Twilio's test credentials and the error each one gives."""

FROM_MAGIC = {
    "+15005550001": 21212,
    "+15005550007": 21606,
    "+15005550008": 21611,
}
"""The magic 'From' numbers of Twilio's test credentials and the error each one gives."""

UNDELIVERED = {
    30003: "Unreachable destination handset",
    30005: "Unknown destination handset",
    30006: "Landline or unreachable carrier",
}
"""The delivery error codes from which an injected undelivered outcome is drawn."""

_MESSAGES = {
    21211: "The 'To' number {to} is not a valid phone number.",
    21212: "The 'From' number {from_} is not a valid phone number, shortcode, "
    "or alphanumeric sender ID.",
    21408: "Permission to send an SMS has not been enabled for the region "
    "indicated by the 'To' number: {to}.",
    21602: "Message body is required.",
    21603: "A 'From' phone number is required.",
    21604: "A 'To' phone number is required.",
    21606: "The 'From' phone number provided is not a valid message-capable "
    "Twilio phone number for this destination/account.",
    21610: "Attempt to send to unsubscribed recipient",
    21611: "This 'From' number has exceeded the maximum number of queued messages.",
    21612: "The 'To' phone number: {to}, is not currently reachable using the "
    "'From' phone number: {from_} via SMS.",
    21614: "'To' number is not a valid mobile number",
    21617: "The concatenated message body exceeds the 1600 character limit.",
}

_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
_SHORT_CODE = re.compile(r"^\d{3,8}$")
_ALPHA_ID = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}$")
_CHANNEL = re.compile(r"^[a-z]+:\+[1-9]\d{1,14}$")


class TwilioError(Exception):
    """An error that the sandbox answers with a Twilio-shaped JSON body."""

    def __init__(self, code: int, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status

    def body(self) -> dict[str, Any]:
        """Return the error as Twilio's JSON error body."""
        return {
            "code": self.code,
            "message": self.message,
            "more_info": MORE_INFO.format(code=self.code),
            "status": self.status,
        }


def message_error(code: int, to: str = "", from_: str = "") -> TwilioError:
    """Return the 400 error Twilio gives for a message with this error code."""
    return TwilioError(code, _MESSAGES[code].format(to=to, from_=from_), 400)


def authenticate() -> TwilioError:
    """Return the 401 error Twilio gives for missing or wrong credentials."""
    return TwilioError(20003, "Authenticate", 401)


def not_found(path: str) -> TwilioError:
    """Return the 404 error Twilio gives for an unknown resource."""
    return TwilioError(20404, f"The requested resource {path} was not found", 404)


def too_many_requests() -> TwilioError:
    """Return the 429 error Twilio gives when a request is rate limited."""
    return TwilioError(20429, "Too Many Requests", 429)


def internal_error() -> TwilioError:
    """Return the 500 error Twilio gives for an internal failure."""
    return TwilioError(20500, "Internal Server Error", 500)


def check_create(to: str, from_: str, body: str, service_sid: str) -> None:
    """Raise the TwilioError that Twilio would give for these create parameters."""
    if not to:
        raise message_error(21604)
    if not from_ and not service_sid:
        raise message_error(21603)
    if not body:
        raise message_error(21602)
    if len(body) > 1600:
        raise message_error(21617)
    if from_ and not (
        _E164.match(from_)
        or _SHORT_CODE.match(from_)
        or _ALPHA_ID.match(from_)
        or _CHANNEL.match(from_)
    ):
        raise message_error(21212, to, from_)
    if from_ in FROM_MAGIC:
        raise message_error(FROM_MAGIC[from_], to, from_)
    if not (_E164.match(to) or _CHANNEL.match(to)):
        raise message_error(21211, to, from_)
    if to in TO_MAGIC:
        raise message_error(TO_MAGIC[to], to, from_)
