"""The Twilio adapter: with its HTTP client, the only modules that import the Twilio SDK.

It points the official SDK at `settings.twilio_api_base` through the HTTP client
of `shared.providers.twilio_http` and translates every failure into the
provider errors of `shared.providers.base`, deciding from what the SDK and
urllib3 raise whether the request can have reached Twilio.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from twilio.base import values
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.rest import Client
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

from shared.providers.base import (
    Fetched,
    PermanentError,
    ProviderError,
    Sent,
    TransientError,
    UnknownOutcome,
)
from shared.providers.twilio_http import PooledHttpClient
from shared.settings import Settings

log = logging.getLogger(__name__)
# 20429 is Twilio's "too many requests"; 21611 means the sender's queue is full.
TRANSIENT_CODES = frozenset({20429, 21611})
# How many of a sender's messages to one recipient `find` reads, newest first.
FIND_LIMIT = 200
_SDK_PREFIX = re.compile(r"^Unable to \w+ record: ")


class TwilioProvider:
    """Sends and looks up messages through the Twilio REST API; one per process."""

    def __init__(self, settings: Settings) -> None:
        http = PooledHttpClient(api_base=settings.twilio_api_base, timeout=settings.twilio_timeout)
        # An explicit, non-empty environment keeps TWILIO_EDGE / TWILIO_REGION from
        # the process environment from rewriting the host behind our back.
        client = Client(
            settings.twilio_account_sid,
            settings.twilio_auth_token,
            http_client=http,
            environment={"TWILIO_EDGE": "", "TWILIO_REGION": ""},
        )
        # The account's Messages resource, built once: `client.messages` builds it
        # anew on every access, through an import statement in `Client.api`, which
        # cost a tenth of the hand-off's CPU in the worker.
        self._messages = client.messages

    def send(
        self,
        *,
        to: str,
        from_: str,
        body: str,
        status_callback: str,
        validity_period: int | None = None,
    ) -> Sent:
        """Create one message at Twilio and return its SID and Twilio's status."""
        # The SDK leaves out a parameter that is unset, as Twilio's own default is wanted.
        validity = values.unset if validity_period is None else validity_period
        with _translated():
            created = self._messages.create(
                to=to,
                from_=from_,
                body=body,
                status_callback=status_callback,
                validity_period=validity,
            )
        return Sent(sid=created.sid, status=created.status or "queued")

    def find(
        self, *, to: str, from_: str, body: str, since: datetime, exclude: set[str]
    ) -> Sent | None:
        """Return the oldest matching message created since `since`, or None.

        The list is filtered by sender and recipient only: DateSent is empty
        while Twilio still queues a message, so a date filter could hide it.
        """
        # Twilio's timestamps have whole seconds.
        cutoff = since.replace(microsecond=0)
        cutoff = cutoff.replace(tzinfo=UTC) if cutoff.tzinfo is None else cutoff
        with _translated():
            records = list(self._messages.stream(to=to, from_=from_, limit=FIND_LIMIT))
        # Twilio lists newest first, so among equal timestamps the later one is older.
        matches = [
            (r.date_created or cutoff, -position, r)
            for position, r in enumerate(records)
            if r.sid not in exclude
            and r.body == body
            and (r.date_created is None or r.date_created >= cutoff)
        ]
        if not matches:
            return None
        oldest = min(matches, key=lambda match: match[:2])[2]
        return Sent(sid=oldest.sid, status=oldest.status or "queued")

    def fetch(self, sid: str) -> Fetched:
        """Return Twilio's current status and error of one message."""
        with _translated():
            record = self._messages(sid).fetch()
        return Fetched(
            sid=record.sid,
            status=record.status,
            error_code=record.error_code,
            error_message=record.error_message,
        )


@contextmanager
def _translated() -> Iterator[None]:
    """Turn SDK and HTTP failures into TransientError, PermanentError or UnknownOutcome."""
    try:
        yield
    except TwilioRestException as error:
        raise _answer_error(error.status, error.code, _SDK_PREFIX.sub("", error.msg)) from error
    except TwilioServiceException as error:
        raise _answer_error(error.status, error.code, error.detail or error.title) from error
    except NewConnectionError as error:
        # Before ConnectTimeoutError, its base class: the TCP connection was never made.
        raise TransientError("could not connect") from error
    except ConnectTimeoutError as error:
        raise TransientError("connect timeout") from error
    except ReadTimeoutError as error:
        raise UnknownOutcome("read timeout") from error
    except ProtocolError as error:
        # The connection broke after it was made: the request may have been read.
        cause = error.args[1] if len(error.args) > 1 else error
        raise UnknownOutcome(f"connection error: {type(cause).__name__}") from error
    except HTTPError as error:
        raise UnknownOutcome(f"request error: {type(error).__name__}") from error


def _answer_error(status: int, code: int | None, message: str) -> ProviderError:
    """Classify an error answer: permanent, transient, or unknown for a server error.

    A 5xx does not prove that nothing was created (an edge or proxy may fail
    after Twilio did), so the message is looked up before it is sent again.
    """
    if status >= 500:
        return UnknownOutcome(f"{code or status}: {message}")
    if status == 429 or code in TRANSIENT_CODES:
        return TransientError(f"{code or status}: {message}")
    if status == 401 or code in (None, status):
        # Wrong credentials, or an answer without a Twilio error code (from a proxy
        # or a wrong base URL), are the operator's to fix, not this message's fault.
        return TransientError(f"{code or status}: {message}")
    return PermanentError(code, message)
