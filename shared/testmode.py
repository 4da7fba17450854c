"""Test mode: sends of a test token are checked and priced like live ones, never charged or sent.

A test message goes through the same acceptance, queue, hand-off, lease and
status machinery as a live one; only its provider differs. Wherever the
hand-off or the reconciler would call Twilio, `provider_for` gives them the
`Simulator` instead, which answers from memory, as Twilio's test credentials
would: a SID, or the error of one of Twilio's magic `To` numbers. Its later
statuses (`sent`, then `delivered`) are applied by `settle` through the same
`delivery.apply_status` as Twilio's callbacks, so events and user callbacks
follow as for a live message. Charging is left out where it happens (the
acceptance, `shared.billing`), and a 21610 records no opt-out.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from sandbox.errors import TO_MAGIC, message_error
from shared import delivery
from shared.models import Message
from shared.providers import Fetched, PermanentError, Provider, Sent

log = logging.getLogger(__name__)
TEST = "test"
# The statuses a test message takes after its hand-off, as Twilio's callbacks would bring them.
SETTLE = ("sent", "delivered")


class Simulator:
    """A provider that sends nothing: Twilio's answers for test credentials, from memory."""

    def send(
        self,
        *,
        to: str,
        from_: str,
        body: str,
        status_callback: str,
        validity_period: int | None = None,
    ) -> Sent:
        """Return a new SID, or raise the error of a magic `To` number."""
        code = TO_MAGIC.get(to)
        if code is not None:
            raise PermanentError(code, message_error(code, to=to, from_=from_).message)
        return Sent(sid="SM" + uuid.uuid4().hex, status="queued")

    def find(
        self, *, to: str, from_: str, body: str, since: datetime, exclude: set[str]
    ) -> Sent | None:
        """Return None: a simulated send that was not stored left nothing anywhere."""
        return None

    def fetch(self, sid: str) -> Fetched:
        """Return a simulated message as delivered: where `settle` takes every one."""
        return Fetched(sid=sid, status="delivered", error_code=None, error_message=None)


SIMULATOR = Simulator()


def provider_for(mode: str, live: Provider) -> Provider:
    """Return the provider a message of this mode is handed to: the simulator for a test one."""
    return SIMULATOR if mode == TEST else live


def settle(session_factory: sessionmaker[Session], *, message_id: int) -> list[int]:
    """Move a handed-over test message on to `sent`, then `delivered`, each its own commit.

    Returns the user callbacks written, for the caller to enqueue. A message
    that is not a test message, or has moved on, is left alone.
    """
    callbacks: list[int] = []
    for status in SETTLE:
        with session_factory() as session:
            message = session.get(Message, message_id, with_for_update=True)
            if message is None or message.mode != TEST or message.sms_sid is None:
                return callbacks
            applied = delivery.apply_status(
                session, message=message, status=status, error_code=None
            )
            session.commit()
        if applied.callback_id is not None:
            callbacks.append(applied.callback_id)
    log.info("test message %s: settled", message_id)
    return callbacks
