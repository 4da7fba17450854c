"""The Twilio adapter: the only module that imports the Twilio SDK.

It points the official SDK at `settings.twilio_api_base` and translates every
failure into the provider errors of `shared.providers.base`, deciding from
what the SDK and `requests` raise whether the request can have reached Twilio.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import requests
from requests.adapters import HTTPAdapter
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client
from urllib3.exceptions import MaxRetryError, NewConnectionError

from shared.providers.base import (
    Fetched,
    PermanentError,
    ProviderError,
    Sent,
    TransientError,
    UnknownOutcome,
)
from shared.settings import Settings

log = logging.getLogger(__name__)
TWILIO_BASE = "https://api.twilio.com"
# 20429 is Twilio's "too many requests"; 21611 means the sender's queue is full.
TRANSIENT_CODES = frozenset({20429, 21611})
# How many of a sender's messages to one recipient `find` reads, newest first.
FIND_LIMIT = 200
# Kept-alive connections per process: more than a worker's threads, or the
# extra ones would be opened and closed for every call.
POOL_SIZE = 256
_SDK_PREFIX = re.compile(r"^Unable to \w+ record: ")


class RebasedHttpClient(TwilioHttpClient):
    """A TwilioHttpClient that sends requests to another base URL, such as the sandbox."""

    def __init__(self, *, api_base: str, timeout: float, pool_size: int = POOL_SIZE) -> None:
        super().__init__(pool_connections=True, timeout=timeout)
        self.api_base = api_base.rstrip("/")
        # Connections kept alive for every thread of a busy worker: the SDK sizes
        # its https pool to the CPUs, and the sandbox and mocks speak plain http.
        for prefix in ("https://", "http://"):
            self.session.mount(prefix, HTTPAdapter(pool_maxsize=pool_size))
        # requests reads the proxy and CA-bundle variables of the whole process
        # environment on every call (a millisecond of CPU): read them once, for
        # the one host this client talks to, and stop looking.
        settings = self.session.merge_environment_settings(
            self.api_base + "/", {}, None, None, None
        )
        self.session.trust_env = False
        self.session.proxies = settings["proxies"]
        self.session.verify = settings["verify"]

    def request(self, method, url, *args, **kwargs):  # type: ignore[no-untyped-def]
        """Rewrite the Twilio prefix of `url`, then send the request as the SDK would."""
        if url.startswith(TWILIO_BASE):
            url = self.api_base + url[len(TWILIO_BASE) :]
        return super().request(method, url, *args, **kwargs)

    def log_request(self, kwargs):  # type: ignore[no-untyped-def]
        """Log one line at DEBUG; the SDK logs every header of every request at INFO."""
        log.debug("Twilio %s %s", kwargs["method"], kwargs["url"])

    def log_response(self, status_code, response):  # type: ignore[no-untyped-def]
        """Log the answer's status at DEBUG."""
        log.debug("Twilio answered %s", status_code)


class TwilioProvider:
    """Sends and looks up messages through the Twilio REST API; one per process."""

    def __init__(self, settings: Settings) -> None:
        http = RebasedHttpClient(api_base=settings.twilio_api_base, timeout=settings.twilio_timeout)
        # An explicit, non-empty environment keeps TWILIO_EDGE / TWILIO_REGION from
        # the process environment from rewriting the host behind our back.
        self._client = Client(
            settings.twilio_account_sid,
            settings.twilio_auth_token,
            http_client=http,
            environment={"TWILIO_EDGE": "", "TWILIO_REGION": ""},
        )

    def send(self, *, to: str, from_: str, body: str, status_callback: str) -> Sent:
        """Create one message at Twilio and return its SID and Twilio's status."""
        with _translated():
            created = self._client.messages.create(
                to=to, from_=from_, body=body, status_callback=status_callback
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
            records = list(self._client.messages.stream(to=to, from_=from_, limit=FIND_LIMIT))
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
            record = self._client.messages(sid).fetch()
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
    except requests.ConnectTimeout as error:
        raise TransientError("connect timeout") from error
    except requests.ReadTimeout as error:
        raise UnknownOutcome("read timeout") from error
    except requests.ConnectionError as error:
        if _never_connected(error):
            raise TransientError("could not connect") from error
        raise UnknownOutcome(f"connection error: {type(_cause(error)).__name__}") from error
    except requests.RequestException as error:
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


def _cause(error: requests.ConnectionError) -> object:
    reason = error.args[0] if error.args else error
    return reason.reason if isinstance(reason, MaxRetryError) else reason


def _never_connected(error: requests.ConnectionError) -> bool:
    """Tell whether the TCP connection was never made, so no byte reached Twilio."""
    return isinstance(_cause(error), NewConnectionError)
