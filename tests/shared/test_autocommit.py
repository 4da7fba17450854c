"""One UPDATE ... RETURNING in autocommit: on PostgreSQL's raw path and through SQLAlchemy."""

from __future__ import annotations

import pytest
from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError

from shared import messaging
from shared.autocommit import execute_once
from shared.db import make_engine, make_session_factory
from shared.models import Message
from tests.factories import make_number, make_user, set_price

SET_SID = (
    update(Message)
    .where(Message.id == bindparam("message_id"))
    .values(sms_sid=bindparam("sid"))
    .returning(Message.id, Message.sms_sid)
)


def two_messages(session_factory) -> tuple[int, int]:
    with session_factory() as session:
        user_id, _ = make_user(session, balance="1.00")
        set_price(session)
        number_id = make_number(session, user_id=user_id, number="+15005550006")
        ids = []
        for body in ("one", "two"):
            message = messaging.accept_message(
                session, user_id=user_id, phone_number_id=number_id, to="+14155550123", body=body
            )
            ids.append(message.id)
        session.commit()
    return ids[0], ids[1]


@pytest.fixture(params=["postgresql", "sqlite"])
def factory(request, session_factory, tmp_path):
    """The session factory of each kind of engine the gateway runs on."""
    if request.param == "postgresql":
        yield session_factory
        return
    engine = make_engine(f"sqlite:///{tmp_path / 'gateway.db'}")
    Message.metadata.create_all(engine)
    yield make_session_factory(engine)
    engine.dispose()


def test_the_row_comes_back_committed(factory):
    first, _ = two_messages(factory)
    sid = "SM" + "1" * 32
    assert tuple(execute_once(factory, SET_SID, {"message_id": first, "sid": sid})) == (first, sid)
    with factory() as session:  # another connection sees it: committed
        assert session.scalar(select(Message.sms_sid).where(Message.id == first)) == sid
    assert execute_once(factory, SET_SID, {"message_id": first + 100, "sid": sid}) is None


def test_a_refused_statement_raises_sqlalchemys_error_and_the_pool_goes_on(factory):
    first, second = two_messages(factory)
    sid = "SM" + "2" * 32
    execute_once(factory, SET_SID, {"message_id": first, "sid": sid})
    with pytest.raises(IntegrityError):
        execute_once(factory, SET_SID, {"message_id": second, "sid": sid})
    other = "SM" + "3" * 32
    assert tuple(execute_once(factory, SET_SID, {"message_id": second, "sid": other})) == (
        second,
        other,
    )
