"""Inbound messages: stored once per SID, opt-outs applied, listed, read, forwarding switched."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from api.app import create_app
from shared import inbound
from shared.models import InboundMessage, OptOut, PhoneNumber
from tests.api.conftest import auth
from tests.api.test_webhooks import INBOUND, signed_post
from tests.delivery_helpers import FROM, new_sid
from tests.factories import make_number, make_user

LIST = "/api/user/sms/inbound"
SENDER = "+14155550123"


def post_inbound(client, body="Hi", *, sid=None, from_=SENDER, to=FROM):
    params = {"From": from_, "To": to, "Body": body, "MessageSid": sid or new_sid()}
    return signed_post(client, INBOUND, {**params, "AccountSid": "AC1", "NumMedia": "0"})


def stored(session_factory) -> list[InboundMessage]:
    with session_factory() as session:
        return list(session.scalars(select(InboundMessage).order_by(InboundMessage.id)))


def is_empty_twiml(answer) -> bool:
    return (
        answer.status_code == 200
        and answer.mimetype == "text/xml"
        and answer.get_data(as_text=True).endswith("<Response/>")
    )


def test_a_message_is_stored_once_however_often_twilio_repeats_it(client, account, session_factory):
    user_id, _, number_id = account
    sid = new_sid()
    for _ in range(3):
        assert is_empty_twiml(post_inbound(client, "Hello back", sid=sid))
    [row] = stored(session_factory)
    assert (row.user_id, row.phone_number_id, row.from_number, row.to, row.body) == (
        user_id,
        number_id,
        SENDER,
        FROM,
        "Hello back",
    )
    assert (row.sms_sid, row.keyword) == (sid, None)


def test_concurrent_repeats_store_one_row(app, account, session_factory):
    sid, barrier, answers = new_sid(), threading.Barrier(6), []

    def repeat() -> None:
        client = app.test_client()
        barrier.wait()
        answers.append(post_inbound(client, "Twice?", sid=sid).status_code)

    threads = [threading.Thread(target=repeat) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert answers == [200] * 6
    assert len(stored(session_factory)) == 1


def test_a_repeat_racing_the_first_waits_for_it_and_is_not_stored(account, session_factory):
    sid, outcome = new_sid(), {}
    first = session_factory()
    assert inbound.receive(first, sid=sid, to=FROM, from_=SENDER, body="Hi").inbound_id

    def second() -> None:
        with session_factory() as session:
            outcome["received"] = inbound.receive(
                session, sid=sid, to=FROM, from_=SENDER, body="Hi"
            )
            session.commit()

    racer = threading.Thread(target=second)
    racer.start()
    racer.join(timeout=0.5)
    assert racer.is_alive(), "the repeat waits on the first's uncommitted row"
    first.commit()
    first.close()
    racer.join(timeout=10)
    assert outcome["received"] == inbound.Received(repeat=True)
    assert len(stored(session_factory)) == 1


def test_stop_and_start_are_stored_with_their_keyword_and_applied(client, account, session_factory):
    stop_sid = new_sid()
    assert is_empty_twiml(post_inbound(client, " stop. ", sid=stop_sid))
    with session_factory() as session:
        assert session.scalar(select(OptOut.number)) == SENDER
    assert is_empty_twiml(post_inbound(client, "Unstop"))
    # Twilio repeating the STOP after the START changes nothing: it was applied once.
    assert is_empty_twiml(post_inbound(client, " stop. ", sid=stop_sid))
    with session_factory() as session:
        assert session.scalar(select(OptOut.id)) is None
    assert [(m.body, m.keyword) for m in stored(session_factory)] == [
        (" stop. ", "STOP"),
        ("Unstop", "START"),
    ]


def test_a_message_to_a_number_nobody_has_is_answered_and_not_stored(
    client, account, session_factory
):
    assert is_empty_twiml(post_inbound(client, "Anyone?", to="+15005550099"))
    assert is_empty_twiml(post_inbound(client, "STOP", to="+15005550099"))
    assert stored(session_factory) == []


def test_a_bad_signature_is_403_and_stores_nothing(client, account, session_factory):
    params = {"From": SENDER, "To": FROM, "Body": "STOP", "MessageSid": new_sid()}
    assert client.post(INBOUND, data=params).status_code == 403
    bad = signed_post(client, INBOUND, params, token="e" * 32)
    assert bad.status_code == 403
    assert stored(session_factory) == []
    with session_factory() as session:
        assert session.scalar(select(OptOut.id)) is None


def test_a_number_held_twice_belongs_to_its_newest_row(client, account, session):
    other_id, _ = make_user(session)
    newest = make_number(session, user_id=other_id, number=FROM)
    post_inbound(client)
    row = session.scalar(select(InboundMessage))
    assert (row.user_id, row.phone_number_id) == (other_id, newest)


@pytest.fixture
def inbox(client, account, session):
    """Seven messages to the account's first number or its second, from two senders."""
    user_id, token, first = account
    second = make_number(session, user_id=user_id, number="+15005550010")
    plan = [(first, SENDER), (second, SENDER), (first, "+447700900123"), (second, SENDER)]
    plan += [(first, SENDER), (first, "+447700900123"), (second, "+447700900123")]
    numbers = {first: FROM, second: "+15005550010"}
    for i, (number_id, sender) in enumerate(plan):
        post_inbound(client, f"reply {i}", from_=sender, to=numbers[number_id])
    ids = list(session.scalars(select(InboundMessage.id).order_by(InboundMessage.id)))
    rows = dict(zip(ids, plan, strict=True))
    return token, first, second, rows


def get(client, token, url):
    answer = client.get(url, headers=auth(token))
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()


def walk(client, token, url) -> list[int]:
    """Follow `meta.next` to the end; return every id seen, in order."""
    seen: list[int] = []
    while url:
        page = get(client, token, url)
        seen += [item["id"] for item in page["data"]]
        url = page["meta"]["next"]
    return seen


def test_the_list_is_cursor_paged_newest_first_with_filters(client, inbox):
    token, first, second, rows = inbox
    newest_first = sorted(rows, reverse=True)
    page = get(client, token, f"{LIST}?limit=3")
    assert [m["id"] for m in page["data"]] == newest_first[:3]
    assert page["meta"] == {"limit": 3, "next": f"{LIST}?limit=3&before={newest_first[2]}"}
    assert walk(client, token, f"{LIST}?limit=3") == newest_first
    item = page["data"][0]
    assert set(item) == {"id", "phone_number_id", "from", "to", "body", "sms_sid", "keyword"} | {
        "received_at"
    }
    by_number = walk(client, token, f"{LIST}?limit=2&phone_number_id={second}")
    assert by_number == [i for i in newest_first if rows[i][0] == second]
    # An unescaped `+` arrives as a space.
    by_sender = walk(client, token, f"{LIST}?limit=2&from=+447700900123")
    assert by_sender == [i for i in newest_first if rows[i][1] == "+447700900123"]
    both = walk(client, token, f"{LIST}?limit=1&from=%2B14155550123&phone_number_id={first}")
    assert both == [i for i in newest_first if rows[i] == (first, SENDER)]
    assert get(client, token, f"{LIST}?from=%2B19995550000") == {
        "data": [],
        "meta": {"limit": 50, "next": None},
    }
    for bad in ("phone_number_id=0", "phone_number_id=x", "limit=101", "page=2"):
        assert client.get(f"{LIST}?{bad}", headers=auth(token)).status_code == 400


def test_one_message_and_another_users_is_not_found(client, inbox, session):
    token, first, _, rows = inbox
    some = next(iter(rows))
    data = get(client, token, f"{LIST}/{some}")["data"]
    assert (data["id"], data["phone_number_id"], data["from"], data["body"]) == (
        some,
        first,
        SENDER,
        "reply 0",
    )
    assert data["sms_sid"].startswith("SM") and data["keyword"] is None
    _, other_token = make_user(session)
    for token_, inbound_id in ((other_token, some), (token, max(rows) + 1), (token, 2**63 - 1)):
        answer = client.get(f"{LIST}/{inbound_id}", headers=auth(token_))
        assert (answer.status_code, answer.get_json()) == (
            404,
            {"message": "Inbound message not found"},
        )
    assert get(client, other_token, LIST)["data"] == []
    assert client.get(LIST).status_code == 401


def patch(client, token, number_id, body, **kwargs):
    return client.patch(
        f"/api/user/phone-numbers/{number_id}", headers=auth(token), json=body, **kwargs
    )


def test_patch_sets_checks_and_clears_the_inbound_url(client, account, session):
    _, token, number_id = account
    url = "https://93.184.215.14/hooks/inbound"  # a public address: no DNS needed
    answer = patch(client, token, number_id, {"inbound_url": url})
    assert answer.status_code == 200
    number = {"id": number_id, "number": FROM, "sms_capable": True, "expires_at": None, "mps": 1}
    assert answer.get_json() == {"data": {**number, "inbound_url": url}}
    assert get(client, token, "/api/user/phone-numbers")["data"] == [{**number, "inbound_url": url}]
    for bad in ("ftp://example.com/x", "not a url", "", "http://127.0.0.1:9/x", "http://10.0.0.1/"):
        answer = patch(client, token, number_id, {"inbound_url": bad})
        assert (answer.status_code, answer.get_json()) == (
            400,
            {"message": "Invalid inbound_url URL"},
        ), bad
    assert patch(client, token, number_id, {"inbound_url": 5}).get_json()["message"] == (
        "The inbound_url field must be a string"
    )
    not_json = client.patch(f"/api/user/phone-numbers/{number_id}", headers=auth(token), data="[1]")
    assert (not_json.status_code, not_json.get_json()) == (400, {"message": "Invalid JSON body"})
    # A field left out leaves it as it is; null clears it.
    assert patch(client, token, number_id, {}).get_json()["data"]["inbound_url"] == url
    cleared = patch(client, token, number_id, {"inbound_url": None})
    assert cleared.get_json() == {"data": {**number, "inbound_url": None}}
    session.expire_all()
    assert session.get(PhoneNumber, number_id).inbound_url is None


def test_patch_allows_private_urls_only_when_configured(
    settings, engine, redis_client, account, session
):
    _, token, number_id = account
    app = create_app(settings.with_overrides(callback_allow_private=True))
    answer = patch(app.test_client(), token, number_id, {"inbound_url": "http://127.0.0.1:9/in"})
    assert answer.status_code == 200
    assert answer.get_json()["data"]["inbound_url"] == "http://127.0.0.1:9/in"
    app.extensions["smsgw"].close()


def test_patch_of_another_users_number_is_not_found(client, account, session):
    _, token, _ = account
    other_id, _ = make_user(session)
    theirs = make_number(session, user_id=other_id, number="+15005550020")
    for number_id in (theirs, theirs + 1000, 2**63 - 1):
        for body in ({"inbound_url": "https://93.184.215.14/x"}, {"inbound_url": "bad"}, None):
            answer = patch(client, token, number_id, body)
            assert (answer.status_code, answer.get_json()) == (
                404,
                {"message": "Phone number not found"},
            )
    session.expire_all()
    assert session.get(PhoneNumber, theirs).inbound_url is None
    count = session.scalar(select(func.count()).where(PhoneNumber.inbound_url.is_not(None)))
    assert count == 0
