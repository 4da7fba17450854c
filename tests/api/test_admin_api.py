"""The operator API (`/api/admin/...`): every route, its database effect, its refusals."""

from __future__ import annotations

import io
import re
import threading
from decimal import Decimal

import pytest
import requests
from sqlalchemy import func, select, update
from werkzeug.serving import make_server

from api.app import create_app
from shared.billing import ledger_sum
from shared.models import ApiToken, LedgerEntry, OperatorRequest, PhoneNumber, Price, User
from shared.operators import create_admin_token, revoke_admin_token
from tests.api.conftest import auth
from tests.api.test_inbound import post_inbound
from tests.factories import make_number, make_user, set_price

ADMIN = "/api/admin"
MAX_ROW_ID = 2**63 - 1


@pytest.fixture
def admin_token(session) -> tuple[int, str]:
    row, token = create_admin_token(session, name="ops")
    session.commit()
    return row.id, token


@pytest.fixture
def admin(admin_token) -> dict[str, str]:
    return auth(admin_token[1])


def keyed(headers: dict[str, str], key: str) -> dict[str, str]:
    return {**headers, "Idempotency-Key": key}


def ledger(session, user_id: int) -> list[tuple[str, Decimal, str | None]]:
    session.expire_all()
    rows = session.scalars(
        select(LedgerEntry).where(LedgerEntry.user_id == user_id).order_by(LedgerEntry.id)
    )
    return [(row.kind, row.amount, row.note) for row in rows]


def balance_of(session, user_id: int) -> Decimal:
    session.expire_all()
    return session.get(User, user_id).balance


# --- users


def test_create_user_then_list_and_show_it(client, session, admin):
    answer = client.post(f"{ADMIN}/users", json={"email": "ann@example.com"}, headers=admin)
    assert answer.status_code == 201, answer.get_json()
    data = answer.get_json()["data"]
    assert set(data) == {"id", "email", "balance", "token"}
    assert (data["email"], data["balance"]) == ("ann@example.com", 0)
    # The token is the user's, live, and stored only as a hash.
    mine = client.get("/api/user/balance", headers=auth(data["token"]))
    assert mine.get_json()["data"] == {"balance": 0, "currency": "USD"}
    [stored] = session.scalars(select(ApiToken).where(ApiToken.user_id == data["id"])).all()
    assert stored.mode == "live" and data["token"] not in stored.token_hash
    assert ledger(session, data["id"]) == []

    rich = client.post(
        f"{ADMIN}/users", json={"email": "bo@example.com", "balance": "10.50"}, headers=admin
    ).get_json()["data"]
    assert rich["balance"] == 10.5
    assert ledger(session, rich["id"]) == [("topup", Decimal("10.5"), "opening balance")]
    assert balance_of(session, rich["id"]) == Decimal("10.5")

    listed = client.get(f"{ADMIN}/users", headers=admin).get_json()
    assert [u["email"] for u in listed["data"]] == ["bo@example.com", "ann@example.com"]
    assert listed["meta"] == {"limit": 50, "next": None}
    assert set(listed["data"][0]) == {"id", "email", "balance", "created_at"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", listed["data"][0]["created_at"])

    number_id = make_number(session, user_id=rich["id"], number="+15005550006")
    shown = client.get(f"{ADMIN}/users/{rich['id']}", headers=admin).get_json()["data"]
    assert (shown["email"], shown["balance"]) == ("bo@example.com", 10.5)
    assert [n["id"] for n in shown["numbers"]] == [number_id]
    assert shown["numbers"][0]["number"] == "+15005550006"
    [token] = shown["tokens"]
    assert set(token) == {"id", "mode", "created_at", "last_used_at"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "The email field is required"),
        ({"email": 7}, "The email field must be a string"),
        ({"email": "not an email"}, "The email field must be a valid email address"),
        ({"email": "x\u0000@example.com"}, "The email field must be a valid email address"),
        ({"email": "a@example.com", "balance": -1}, "The balance field must be an amount"),
        ({"email": "a@example.com", "balance": "1.00001"}, "The balance field must be an amount"),
        ({"email": "a@example.com", "balance": 1e300}, "The balance field must be an amount"),
        ({"email": "a@example.com", "balance": True}, "The balance field must be an amount"),
    ],
)
def test_create_user_refuses_bad_fields(client, session, admin, body, message):
    answer = client.post(f"{ADMIN}/users", json=body, headers=admin)
    assert answer.status_code == 400
    assert answer.get_json()["message"].startswith(message)
    assert session.scalar(select(func.count()).select_from(User)) == 0


def test_create_user_refuses_a_taken_email_and_a_body_that_is_no_json(client, session, admin):
    make_user(session, email="ann@example.com")
    again = client.post(f"{ADMIN}/users", json={"email": "ann@example.com"}, headers=admin)
    assert again.status_code == 400
    assert again.get_json() == {"message": "a user with email ann@example.com exists"}
    for raw in (b"{", b"[]", b'{"email": "a@b.co", "balance": NaN}'):
        answer = client.post(
            f"{ADMIN}/users", data=raw, content_type="application/json", headers=admin
        )
        assert (answer.status_code, answer.get_json()) == (400, {"message": "Invalid JSON body"})


def test_users_are_cursor_paged_to_the_end(client, session, admin):
    ids = [make_user(session, email=f"u{i}@example.com")[0] for i in range(7)]
    seen, url, pages = [], f"{ADMIN}/users?limit=3", 0
    while url:
        page = client.get(url, headers=admin).get_json()
        seen += [u["id"] for u in page["data"]]
        url, pages = page["meta"]["next"], pages + 1
        assert page["meta"]["limit"] == 3
    assert seen == sorted(ids, reverse=True) and pages == 3
    refused = client.get(f"{ADMIN}/users?page=2", headers=admin)
    assert refused.status_code == 400


# --- balance


def test_top_ups_and_adjustments_are_one_ledger_row_each_in_exact_decimals(client, session, admin):
    user_id, _ = make_user(session, balance="0")
    url = f"{ADMIN}/users/{user_id}/topups"
    # 0.1 + 0.2 is 0.3 here: a JSON number is read as written, never as a float.
    for amount, expected in ((0.1, 0.1), (0.2, 0.3), ("5.0000", 5.3), ("-0.3", 5)):
        answer = client.post(url, json={"amount": amount}, headers=admin)
        assert answer.status_code == 201, answer.get_json()
        assert answer.get_json() == {"data": {"id": user_id, "balance": expected}}
    noted = client.post(url, json={"amount": 2, "note": "invoice 7"}, headers=admin)
    assert noted.get_json()["data"]["balance"] == 7
    too_much = client.post(url, json={"amount": "-7.0001"}, headers=admin)
    assert (too_much.status_code, too_much.get_json()) == (
        400,
        {"message": "Insufficient balance"},
    )
    assert ledger(session, user_id) == [
        ("topup", Decimal("0.1"), "top-up"),
        ("topup", Decimal("0.2"), "top-up"),
        ("topup", Decimal("5"), "top-up"),
        ("adjustment", Decimal("-0.3"), "adjustment"),
        ("topup", Decimal("2"), "invoice 7"),
    ]
    assert balance_of(session, user_id) == Decimal("7") == ledger_sum(session, user_id=user_id)
    # The whole balance may be taken, to exactly zero.
    emptied = client.post(url, json={"amount": -7}, headers=admin)
    assert emptied.get_json()["data"]["balance"] == 0
    assert balance_of(session, user_id) == 0 == ledger_sum(session, user_id=user_id)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "The amount field is required"),
        ({"amount": 0}, "The amount field must not be zero"),
        ({"amount": "-0.0"}, "The amount field must not be zero"),
        ({"amount": 0.30000000000000004}, "The amount field must be an amount"),
        ({"amount": "ten"}, "The amount field must be an amount"),
        ({"amount": "Infinity"}, "The amount field must be an amount"),
        ({"amount": 10**7}, "The amount field must be an amount"),
        ({"amount": [1]}, "The amount field must be an amount"),
        ({"amount": 1, "note": "x" * 256}, "The note field must not be greater than 255"),
        ({"amount": 1, "note": 5}, "The note field must be a string"),
    ],
)
def test_top_up_refuses_bad_fields(client, session, admin, body, message):
    user_id, _ = make_user(session, balance="1.00")
    answer = client.post(f"{ADMIN}/users/{user_id}/topups", json=body, headers=admin)
    assert answer.status_code == 400
    assert answer.get_json()["message"].startswith(message), answer.get_json()
    assert len(ledger(session, user_id)) == 1  # the opening balance only


def test_a_repeated_top_up_adds_money_once_and_answers_as_the_first(client, session, admin):
    user_id, _ = make_user(session, balance="10.00")
    url = f"{ADMIN}/users/{user_id}/topups"
    first = client.post(url, json={"amount": "5.00"}, headers=keyed(admin, "invoice-1"))
    assert first.get_json() == {"data": {"id": user_id, "balance": 15}}
    client.post(url, json={"amount": 1}, headers=admin)  # another change in between
    for same in ({"amount": "5.00"}, {"amount": 5}, {"amount": "5"}):  # the same amount
        again = client.post(url, json=same, headers=keyed(admin, "invoice-1"))
        assert (again.status_code, again.get_json()) == (201, first.get_json())
    other = client.post(url, json={"amount": 6}, headers=keyed(admin, "invoice-1"))
    assert (other.status_code, other.get_json()) == (
        409,
        {"message": "Idempotency-Key reused with a different request"},
    )
    elsewhere = client.post(
        f"{ADMIN}/users/{user_id}/tokens", json={}, headers=keyed(admin, "invoice-1")
    )
    assert elsewhere.status_code == 409
    assert balance_of(session, user_id) == Decimal(16) == ledger_sum(session, user_id=user_id)
    assert len(ledger(session, user_id)) == 3
    # A refused request keeps no answer: its key may be used again.
    refused = client.post(url, json={"amount": -100}, headers=keyed(admin, "invoice-2"))
    assert refused.status_code == 400
    retried = client.post(url, json={"amount": 4}, headers=keyed(admin, "invoice-2"))
    assert retried.get_json()["data"]["balance"] == 20


@pytest.fixture
def live(settings, engine, redis_client):
    """Serve the API on a real threaded server, so requests truly run at once."""
    server = make_server("127.0.0.1", 0, None, threaded=True)
    server.app = create_app(settings)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.app.extensions["smsgw"].close()


def test_concurrent_top_ups_with_one_key_add_money_once(live, session, admin):
    user_id, _ = make_user(session, balance="10.00")
    racers = 8
    barrier = threading.Barrier(racers)
    answers: list[tuple[int, dict]] = []

    def top_up() -> None:
        barrier.wait()
        answer = requests.post(
            f"{live}{ADMIN}/users/{user_id}/topups",
            json={"amount": "2.50", "note": "race"},
            headers=keyed(admin, "race-1"),
            timeout=30,
        )
        answers.append((answer.status_code, answer.json()))

    threads = [threading.Thread(target=top_up) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert answers == [(201, {"data": {"id": user_id, "balance": 12.5}})] * racers
    assert ledger(session, user_id)[1:] == [("topup", Decimal("2.5"), "race")]
    assert balance_of(session, user_id) == Decimal("12.5") == ledger_sum(session, user_id=user_id)
    assert session.scalar(select(func.count()).select_from(OperatorRequest)) == 1


# --- tokens


def test_tokens_are_created_listed_without_their_text_and_revoked(client, session, admin):
    user_id, first = make_user(session)
    url = f"{ADMIN}/users/{user_id}/tokens"
    live_token = client.post(url, headers=admin)  # no body: a live token
    assert live_token.status_code == 201, live_token.get_json()
    test_token = client.post(url, json={"test": True}, headers=admin).get_json()["data"]
    assert test_token["mode"] == "test" and test_token["token"].startswith("test_")
    created = live_token.get_json()["data"]
    assert set(created) == {"id", "token", "mode"} and created["mode"] == "live"
    assert client.get("/api/user/balance", headers=auth(created["token"])).status_code == 200

    listed = client.get(url, headers=admin)
    text = listed.get_data(as_text=True)
    assert first not in text and created["token"] not in text and test_token["token"] not in text
    page = listed.get_json()
    assert [t["id"] for t in page["data"]][:2] == [test_token["id"], created["id"]]
    assert [t["mode"] for t in page["data"]] == ["test", "live", "live"]
    paged = client.get(f"{url}?limit=2", headers=admin).get_json()
    assert paged["meta"]["next"] == f"{url}?limit=2&before={created['id']}"
    rest = client.get(paged["meta"]["next"], headers=admin).get_json()
    assert len(rest["data"]) == 1 and rest["meta"]["next"] is None

    # Revoked: 401 on the very next request, and no second revoke.
    revoked = client.delete(f"{ADMIN}/tokens/{created['id']}", headers=admin)
    assert (revoked.status_code, revoked.get_data()) == (204, b"")
    gone = client.get("/api/user/balance", headers=auth(created["token"]))
    assert (gone.status_code, gone.get_json()) == (401, {"message": "Unauthenticated"})
    assert client.get("/api/user/balance", headers=auth(first)).status_code == 200
    again = client.delete(f"{ADMIN}/tokens/{created['id']}", headers=admin)
    assert (again.status_code, again.get_json()) == (404, {"message": "Token not found"})
    bad = client.post(url, json={"test": "yes"}, headers=admin)
    assert bad.get_json() == {
        "message": "The test field must be a boolean",
        "errors": {"test": ["The test field must be a boolean"]},
    }


def test_a_repeated_create_shows_the_token_once_and_never_stores_it(client, session, admin):
    user_id, _ = make_user(session)
    url = f"{ADMIN}/users/{user_id}/tokens"
    first = client.post(url, json={}, headers=keyed(admin, "token-1")).get_json()["data"]
    again = client.post(url, json={}, headers=keyed(admin, "token-1")).get_json()["data"]
    assert first["token"] and again == {**first, "token": None}
    created = client.post(
        f"{ADMIN}/users", json={"email": "c@example.com"}, headers=keyed(admin, "user-1")
    ).get_json()["data"]
    repeat = client.post(
        f"{ADMIN}/users", json={"email": "c@example.com"}, headers=keyed(admin, "user-1")
    ).get_json()["data"]
    assert created["token"] and repeat == {**created, "token": None}
    stored = session.scalars(select(OperatorRequest.response)).all()
    assert len(stored) == 2
    assert first["token"] not in str(stored) and created["token"] not in str(stored)
    assert session.scalar(select(func.count()).select_from(ApiToken)) == 3


# --- phone numbers


def test_numbers_are_added_updated_listed_and_removed(client, session, admin):
    user_id, _ = make_user(session)
    other_id, _ = make_user(session)
    url = f"{ADMIN}/users/{user_id}/phone-numbers"
    added = client.post(
        url,
        json={"number": "+1 500-555-0006", "sms_capable": False, "expires_at": "2027-01-01"},
        headers=admin,
    )
    assert added.status_code == 201, added.get_json()
    number = added.get_json()["data"]
    assert number == {
        "user_id": user_id,
        "id": number["id"],
        "number": "+15005550006",
        "sms_capable": False,
        "expires_at": "2027-01-01 00:00:00",
        "mps": 1,
        "inbound_url": None,
    }
    second = client.post(
        url,
        json={"number": "+15005550007", "expires_at": "2027-06-30 12:30:00", "mps": 5},
        headers=admin,
    ).get_json()["data"]
    assert (second["sms_capable"], second["expires_at"], second["mps"]) == (
        True,
        "2027-06-30 12:30:00",
        5,
    )
    theirs = make_number(session, user_id=other_id, number="+15005550008")

    one = f"{ADMIN}/phone-numbers/{number['id']}"
    patched = client.patch(one, json={"sms_capable": True, "mps": 3}, headers=admin)
    assert patched.get_json()["data"] == {**number, "sms_capable": True, "mps": 3}
    cleared = client.patch(one, json={"expires_at": None}, headers=admin).get_json()["data"]
    assert (cleared["expires_at"], cleared["sms_capable"], cleared["mps"]) == (None, True, 3)
    unchanged = client.patch(one, json={}, headers=admin).get_json()["data"]
    assert unchanged == cleared
    session.expire_all()
    stored = session.get(PhoneNumber, number["id"])
    assert (stored.sms_capable, stored.expires_at, stored.mps) == (True, None, 3)

    everyone = client.get(f"{ADMIN}/phone-numbers", headers=admin).get_json()
    assert [n["id"] for n in everyone["data"]] == [theirs, second["id"], number["id"]]
    mine = client.get(f"{ADMIN}/phone-numbers?user_id={user_id}&limit=1", headers=admin).get_json()
    assert [n["id"] for n in mine["data"]] == [second["id"]]
    assert mine["meta"]["next"] == (
        f"{ADMIN}/phone-numbers?limit=1&before={second['id']}&user_id={user_id}"
    )

    removed = client.delete(one, headers=admin)
    assert removed.status_code == 204
    session.expire_all()
    assert session.get(PhoneNumber, number["id"]).removed_at is not None  # the row stays
    left = client.get(f"{ADMIN}/phone-numbers?user_id={user_id}", headers=admin).get_json()
    assert [n["id"] for n in left["data"]] == [second["id"]]
    shown = client.get(f"{ADMIN}/users/{user_id}", headers=admin).get_json()["data"]
    assert [n["id"] for n in shown["numbers"]] == [second["id"]]
    for answer in (
        client.patch(one, json={"mps": 2}, headers=admin),
        client.delete(one, headers=admin),
    ):
        assert (answer.status_code, answer.get_json()) == (
            404,
            {"message": "Phone number not found"},
        )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "The number field is required"),
        ({"number": "12345"}, "The number field must be an international phone number"),
        ({"number": "+88011111111111111111"}, "The number field must be an international"),
        ({"number": "+15005550006", "mps": 0}, "The mps field must be an integer from 1 to 1000"),
        ({"number": "+15005550006", "mps": 2**40}, "The mps field must be an integer from 1"),
        ({"number": "+15005550006", "mps": "2"}, "The mps field must be an integer"),
        ({"number": "+15005550006", "sms_capable": "no"}, "The sms_capable field must be a"),
        ({"number": "+15005550006", "expires_at": "soon"}, "The expires_at field must be a UTC"),
        ({"number": "+15005550006", "expires_at": 20270101}, "The expires_at field must be"),
    ],
)
def test_add_number_refuses_bad_fields(client, session, admin, body, message):
    user_id, _ = make_user(session)
    answer = client.post(f"{ADMIN}/users/{user_id}/phone-numbers", json=body, headers=admin)
    assert answer.status_code == 400
    assert answer.get_json()["message"].startswith(message), answer.get_json()
    assert session.scalar(select(func.count()).select_from(PhoneNumber)) == 0


def test_a_removed_number_sends_no_more_but_its_messages_stay_readable(
    client, session, admin, account
):
    _user_id, token, number_id = account
    user = auth(token)
    sent = client.post(
        "/api/user/sms", json={"from": number_id, "to": "+14155550123", "body": "Hi"}, headers=user
    )
    assert sent.status_code == 201, sent.get_json()
    campaign = client.post(
        "/api/user/sms/campaigns",
        json={
            "from": number_id,
            "body": "Hi {name}",
            "recipients": [{"to": "+14155550124", "vars": {"name": "A"}}],
        },
        headers=user,
    )
    assert campaign.status_code == 202, campaign.get_json()
    assert post_inbound(client, "Hello back").status_code == 200
    [inbound] = client.get("/api/user/sms/inbound", headers=user).get_json()["data"]

    assert client.delete(f"{ADMIN}/phone-numbers/{number_id}", headers=admin).status_code == 204

    again = client.post(
        "/api/user/sms", json={"from": number_id, "to": "+14155550123", "body": "Hi"}, headers=user
    )
    assert (again.status_code, again.get_json()) == (400, {"message": "From number not found"})
    message_id, campaign_id = sent.get_json()["data"]["id"], campaign.get_json()["data"]["id"]
    read = client.get(f"/api/user/sms/{message_id}", headers=user)
    assert read.status_code == 200 and read.get_json()["data"]["phone_number_id"] == number_id
    assert client.get(f"/api/user/sms/campaigns/{campaign_id}", headers=user).status_code == 200
    assert client.get(f"/api/user/sms/inbound/{inbound['id']}", headers=user).status_code == 200
    assert client.get("/api/user/phone-numbers", headers=user).get_json()["data"] == []


# --- prices


def test_prices_are_set_listed_and_imported(client, session, admin):
    answer = client.put(f"{ADMIN}/prices/us", json={"price": 0.0079}, headers=admin)
    assert answer.status_code == 200, answer.get_json()
    data = answer.get_json()["data"]
    assert (data["country"], data["price"]) == ("US", 0.0079)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", data["updated_at"])
    client.put(f"{ADMIN}/prices/GB", json={"price": "0.04"}, headers=admin)
    listed = client.get(f"{ADMIN}/prices", headers=admin).get_json()
    assert [(p["country"], p["price"]) for p in listed["data"]] == [("GB", 0.04), ("US", 0.0079)]
    assert listed["meta"] == {"limit": 2, "next": None}

    csv = "country,price\r\nUS,0.0081\r\nfr,0.07\r\n\r\n"
    imported = client.post(
        f"{ADMIN}/prices/import", data=csv, content_type="text/csv", headers=admin
    )
    assert (imported.status_code, imported.get_json()) == (200, {"data": {"imported": 2}})
    upload = {"file": (io.BytesIO(b"\xef\xbb\xbfcountry,price\nDE,0.09\n"), "prices.csv")}
    uploaded = client.post(
        f"{ADMIN}/prices/import", data=upload, content_type="multipart/form-data", headers=admin
    )
    assert uploaded.get_json() == {"data": {"imported": 1}}
    session.expire_all()
    prices = {p.country: p.price for p in session.scalars(select(Price))}
    assert prices == {
        "US": Decimal("0.0081"),
        "GB": Decimal("0.04"),
        "FR": Decimal("0.07"),
        "DE": Decimal("0.09"),
    }


@pytest.mark.parametrize(
    ("csv", "message"),
    [
        ("country,price\nUS,0.01\nFR,cheap\n", "line 3: not an amount: 'cheap'"),
        ("country,price\nUS,0.01\nXX,0.01\n", "line 3: not an ISO country code"),
        ("country,price\nUS,0.01\nus,0.02\n", "line 3: US is priced twice"),
        ("country,price\nUS,0.01\nFR,0.01,x\n", "line 3: expected country,price"),
        ("country,price\nUS,0.01\nFR,1e99\n", "line 3: at most 9999999999.9999"),
        ("country,price\nUS,0.01\nFR,1000.0001\n", "line 3: a price must be at most 1000"),
        ("country,price\nUS,0.01\nFR,-1\n", "line 3: not a non-negative amount"),
        ("name,cost\nUS,0.01\n", "line 1: the header must be country,price"),
        ("", "line 1: the header must be country,price"),
    ],
)
def test_a_price_import_with_a_bad_line_loads_nothing(client, session, admin, csv, message):
    set_price(session, country="US", price="0.0079")
    answer = client.post(f"{ADMIN}/prices/import", data=csv, content_type="text/csv", headers=admin)
    assert answer.status_code == 400
    assert answer.get_json()["message"].startswith(message), answer.get_json()
    session.expire_all()
    assert {p.country: p.price for p in session.scalars(select(Price))} == {"US": Decimal("0.0079")}


def test_price_refusals(client, admin):
    for url, body, message in (
        (f"{ADMIN}/prices/ZZ", {"price": 1}, "The country must be an ISO 3166 alpha-2 code"),
        (f"{ADMIN}/prices/US", {"price": -1}, "The price field must be an amount from 0 to 1000"),
        (f"{ADMIN}/prices/US", {"price": 1000.00001}, "The price field must be an amount"),
        (f"{ADMIN}/prices/US", {}, "The price field is required"),
    ):
        answer = client.put(url, json=body, headers=admin)
        assert answer.status_code == 400 and answer.get_json()["message"].startswith(message)
    upload = client.post(
        f"{ADMIN}/prices/import",
        data={"other": (io.BytesIO(b"country,price\n"), "p.csv")},
        content_type="multipart/form-data",
        headers=admin,
    )
    assert upload.get_json()["message"] == "The file field is required"
    binary = client.post(
        f"{ADMIN}/prices/import", data=b"\xff\xfe\x00", content_type="text/csv", headers=admin
    )
    assert binary.get_json()["message"] == "The file must be UTF-8 text"


def test_a_repeated_import_under_one_key_answers_as_the_first(client, session, admin):
    headers = keyed(admin, "prices-2027")
    url = f"{ADMIN}/prices/import"
    first = client.post(
        url, data="country,price\nUS,0.01\n", content_type="text/csv", headers=headers
    )
    client.put(f"{ADMIN}/prices/US", json={"price": "0.02"}, headers=admin)
    again = client.post(
        url, data="country,price\nUS,0.01\n", content_type="text/csv", headers=headers
    )
    assert (again.status_code, again.get_json()) == (200, first.get_json())
    session.expire_all()
    assert session.get(Price, "US").price == Decimal("0.02")  # not loaded again
    other = client.post(
        url, data="country,price\nUS,0.03\n", content_type="text/csv", headers=headers
    )
    assert other.status_code == 409


# --- who may call it


def admin_requests(app) -> list[tuple[str, str]]:
    """Every method and URL of the operator API, its ids filled in."""
    found = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(f"{ADMIN}/"):
            continue
        url = re.sub(r"<int:[^>]+>", "1", rule.rule).replace("<country>", "US")
        found += [(method, url) for method in sorted(rule.methods - {"HEAD", "OPTIONS"})]
    return found


def test_only_a_valid_admin_token_opens_the_operator_api(app, client, session, admin_token):
    admin_id, token = admin_token
    _user_id, user_token = make_user(session)
    calls = admin_requests(app)
    assert len(calls) == 14, calls
    unauthenticated = (401, {"message": "Unauthenticated"})
    for headers in ({}, auth(user_token), auth("admin_nope"), {"Authorization": token}):
        for method, url in calls:
            answer = client.open(url, method=method, json={}, headers=headers)
            assert (answer.status_code, answer.get_json()) == unauthenticated, (method, url)
    # An admin token opens nothing of a user's.
    for url in ("/api/user/balance", "/api/user/sms", "/api/user/phone-numbers"):
        answer = client.get(url, headers=auth(token))
        assert (answer.status_code, answer.get_json()) == unauthenticated, url
    assert client.get(f"{ADMIN}/users", headers=auth(token)).status_code == 200
    # Revoked: refused from the very next request.
    revoke_admin_token(session, token_id=admin_id)
    session.commit()
    for method, url in calls:
        answer = client.open(url, method=method, json={}, headers=auth(token))
        assert (answer.status_code, answer.get_json()) == unauthenticated, (method, url)


@pytest.mark.parametrize("missing", [999_999, MAX_ROW_ID])
def test_unknown_ids_are_not_found(client, session, admin, missing):
    make_user(session)
    for method, url, body, message in (
        ("GET", f"/users/{missing}", None, "User not found"),
        ("POST", f"/users/{missing}/topups", {"amount": 1}, "User not found"),
        ("POST", f"/users/{missing}/tokens", {}, "User not found"),
        ("GET", f"/users/{missing}/tokens", None, "User not found"),
        ("POST", f"/users/{missing}/phone-numbers", {"number": "+15005550006"}, "User not found"),
        ("GET", f"/phone-numbers?user_id={missing}", None, "User not found"),
        ("DELETE", f"/tokens/{missing}", None, "Token not found"),
        ("PATCH", f"/phone-numbers/{missing}", {"mps": 2}, "Phone number not found"),
        ("DELETE", f"/phone-numbers/{missing}", None, "Phone number not found"),
    ):
        answer = client.open(ADMIN + url, method=method, json=body, headers=admin)
        assert (answer.status_code, answer.get_json()) == (404, {"message": message}), url
    beyond = client.get(f"{ADMIN}/users/{MAX_ROW_ID + 1}", headers=admin)
    assert beyond.status_code == 404


def test_a_top_up_past_the_largest_balance_is_refused(client, session, admin):
    user_id, _ = make_user(session, balance="0")
    session.execute(update(User).where(User.id == user_id).values(balance=Decimal("9999999999")))
    session.commit()
    answer = client.post(f"{ADMIN}/users/{user_id}/topups", json={"amount": 1}, headers=admin)
    assert (answer.status_code, answer.get_json()) == (
        400,
        {"message": "The balance would exceed its largest possible value"},
    )
    assert balance_of(session, user_id) == Decimal("9999999999") and ledger(session, user_id) == []


def test_a_users_views_hold_that_user_only(client, session, admin):
    """Nothing of another user is reachable through a user's id: each view is that user's."""
    ann, ann_token = make_user(session, balance="1.00")
    bob, bob_token = make_user(session, balance="2.00")
    ann_number = make_number(session, user_id=ann, number="+15005550006")
    bob_number = make_number(session, user_id=bob, number="+15005550007")
    shown = client.get(f"{ADMIN}/users/{ann}", headers=admin).get_json()["data"]
    assert [n["id"] for n in shown["numbers"]] == [ann_number]
    ann_tokens = client.get(f"{ADMIN}/users/{ann}/tokens", headers=admin).get_json()["data"]
    assert {t["id"] for t in ann_tokens} == {t["id"] for t in shown["tokens"]}
    bob_tokens = client.get(f"{ADMIN}/users/{bob}/tokens", headers=admin).get_json()["data"]
    assert not {t["id"] for t in ann_tokens} & {t["id"] for t in bob_tokens}
    listed = client.get(f"{ADMIN}/phone-numbers?user_id={ann}", headers=admin).get_json()["data"]
    assert [n["id"] for n in listed] == [ann_number] and bob_number not in [n["id"] for n in listed]
    client.post(f"{ADMIN}/users/{ann}/topups", json={"amount": 3}, headers=admin)
    assert client.get("/api/user/balance", headers=auth(bob_token)).get_json()["data"] == {
        "balance": 2,
        "currency": "USD",
    }
    assert (
        client.get("/api/user/balance", headers=auth(ann_token)).get_json()["data"]["balance"] == 4
    )
    text = client.get(f"{ADMIN}/users/{ann}", headers=admin).get_data(as_text=True)
    assert "+15005550007" not in text and bob_token not in text and ann_token not in text
