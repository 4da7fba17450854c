"""The in-memory message store of the sandbox, guarded by a lock."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
import threading
from collections.abc import Callable
from email.utils import format_datetime
from typing import Any

from shared.segments import count_segments

PRICE_PER_SEGMENT = 0.0079
_ids = random.Random()


def random_hex(n_bytes: int = 16) -> str:
    """Return random hex digits for ids, which need to be unique but not secret."""
    return f"{_ids.getrandbits(n_bytes * 8):0{n_bytes * 2}x}"


def now() -> dt.datetime:
    """Return the current UTC time."""
    return dt.datetime.now(dt.UTC)


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def rfc2822(when: dt.datetime | None) -> str | None:
    """Format a UTC time as Twilio does, for example 'Thu, 24 Aug 2023 05:01:45 +0000'.

    Written out by hand for UTC, the only zone the store keeps: the email
    module's formatter took a tenth of the sandbox's time per create.
    """
    if not when:
        return None
    if when.utcoffset() != dt.timedelta(0):
        return format_datetime(when)
    return (
        f"{_DAYS[when.weekday()]}, {when.day:02d} {_MONTHS[when.month - 1]} {when.year:04d}"
        f" {when.hour:02d}:{when.minute:02d}:{when.second:02d} +0000"
    )


@dataclasses.dataclass
class Message:
    """One outbound message as the sandbox keeps it."""

    sid: str
    account_sid: str
    to: str
    from_: str | None
    body: str
    status_callback: str | None
    messaging_service_sid: str | None
    date_created: dt.datetime
    date_sent: dt.datetime
    date_updated: dt.datetime
    num_segments: int
    status: str = "queued"
    price: str | None = None
    error_code: int | None = None
    error_message: str | None = None
    # Seconds the client allowed it to wait in the queue (ValidityPeriod), if it said.
    validity_period: int | None = None

    def uri(self) -> str:
        """Return the message's URI relative to the API host."""
        return f"/2010-04-01/Accounts/{self.account_sid}/Messages/{self.sid}.json"

    def to_json(self) -> dict[str, Any]:
        """Return the message as Twilio's JSON Message resource."""
        base = self.uri()[: -len(".json")]
        return {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": self.body,
            "date_created": rfc2822(self.date_created),
            "date_sent": rfc2822(self.date_sent),
            "date_updated": rfc2822(self.date_updated),
            "direction": "outbound-api",
            "error_code": self.error_code,
            "error_message": self.error_message,
            "from": self.from_,
            "messaging_service_sid": self.messaging_service_sid,
            "num_media": "0",
            "num_segments": str(self.num_segments),
            "price": self.price,
            "price_unit": "USD",
            "sid": self.sid,
            "status": self.status,
            "subresource_uris": {"media": f"{base}/Media.json"},
            "to": self.to,
            "uri": self.uri(),
        }


class MessageStore:
    """Keeps every created message in creation order; all methods are thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: dict[str, Message] = {}

    def create(
        self,
        *,
        account_sid: str,
        to: str,
        from_: str | None,
        body: str,
        status_callback: str | None,
        service_sid: str | None,
        validity_period: int | None = None,
    ) -> Message:
        """Create, keep and return a queued message; date_sent is set right away."""
        created = now()
        message = Message(
            sid="SM" + random_hex(),
            account_sid=account_sid,
            to=to,
            from_=from_,
            body=body,
            status_callback=status_callback,
            validity_period=validity_period,
            messaging_service_sid=service_sid,
            date_created=created,
            date_sent=created,
            date_updated=created,
            num_segments=max(1, count_segments(body).segments),
        )
        with self._lock:
            self._messages[message.sid] = message
            return dataclasses.replace(message)

    def get(self, sid: str) -> Message | None:
        """Return a copy of the message with this SID, or None."""
        with self._lock:
            message = self._messages.get(sid)
            return dataclasses.replace(message) if message else None

    def advance(
        self, sid: str, status: str, error: tuple[int, str] | None = None
    ) -> Message | None:
        """Move a message to a new status and return a copy, or None if it is gone."""
        with self._lock:
            message = self._messages.get(sid)
            if message is None:
                return None
            if message.status != status:
                message.status = status
                message.date_updated = now()
                if message.price is None and status != "failed":
                    cost = PRICE_PER_SEGMENT * message.num_segments
                    message.price = f"-{cost:.5f}"
                if error:
                    message.error_code, message.error_message = error
            return dataclasses.replace(message)

    def all(self) -> list[Message]:
        """Return copies of all messages, oldest first."""
        return self.select(lambda _: True)

    def select(self, keep: Callable[[Message], bool]) -> list[Message]:
        """Return copies of the messages that keep accepts, oldest first."""
        with self._lock:
            return [dataclasses.replace(m) for m in self._messages.values() if keep(m)]

    def clear(self) -> None:
        """Forget every message."""
        with self._lock:
            self._messages.clear()
