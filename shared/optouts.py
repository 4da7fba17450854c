"""Opt-outs: STOP-family keywords, START-family keywords and Twilio's 21610.

An opt-out is kept per (user, recipient): a recipient who texts STOP to one of
a user's numbers gets no more messages from any number of that user.
"""

from __future__ import annotations

import logging

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.models import OptOut, PhoneNumber

log = logging.getLogger(__name__)
STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
START_WORDS = frozenset({"START", "YES", "UNSTOP"})
# Twilio's error for a send to a recipient who opted out of the sender.
OPTED_OUT_CODE = 21610


def keyword(body: str) -> str | None:
    """Return `stop` or `start` when the whole body is an opt-out or opt-in keyword."""
    word = body.strip().rstrip(".!").strip().upper()
    if word in STOP_WORDS:
        return "stop"
    if word in START_WORDS:
        return "start"
    return None


def record_opt_out(session: Session, *, user_id: int, number: str) -> bool:
    """Record that `number` opted out of the user's messages; False if it already had."""
    exists = session.scalar(
        select(OptOut.id).where(OptOut.user_id == user_id, OptOut.number == number)
    )
    if exists is not None:
        return False
    try:
        with session.begin_nested():
            session.add(OptOut(user_id=user_id, number=number))
    except IntegrityError:
        return False  # A STOP recorded at the same moment is the same opt-out.
    return True


def record_opt_in(session: Session, *, user_id: int, number: str) -> bool:
    """Forget the opt-out of `number` from the user's messages; False if there was none."""
    result = session.execute(
        delete(OptOut).where(OptOut.user_id == user_id, OptOut.number == number)
    )
    session.flush()
    return bool(result.rowcount)  # type: ignore[attr-defined]


def apply_inbound(session: Session, *, to: str, from_: str, body: str) -> str | None:
    """Apply an incoming message's keyword for every owner of the number it was sent to.

    Returns the keyword applied (`stop` or `start`), or None for any other text.
    Only flushes; the caller commits.
    """
    action = keyword(body)
    if action is None or not from_:
        return None
    owners = set(
        session.scalars(
            select(PhoneNumber.user_id).where(
                PhoneNumber.number == to, PhoneNumber.removed_at.is_(None)
            )
        )
    )
    if not owners:
        log.info("inbound %s to a number no user holds", action)
    for user_id in sorted(owners):
        if action == "stop":
            record_opt_out(session, user_id=user_id, number=from_)
        else:
            record_opt_in(session, user_id=user_id, number=from_)
    return action
