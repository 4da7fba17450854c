"""Properties of pricing: segments x the destination's price, in Decimal, never in float.

tests/shared/test_segments.py already holds the segment-count properties (one
appended character never lowers the count; a GSM-7 body never needs more
segments than the same body forced to UCS-2). These are about the price: what
`shared.money.cost` makes of the count, what the API answers and debits, and
what a campaign charges.
"""

from __future__ import annotations

import json
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from shared.campaign_expansion import expand_campaign
from shared.messaging import MAX_BODY_CHARS
from shared.models import Campaign, LedgerEntry, Message, User
from shared.money import MAX_AMOUNT, QUANTUM, InvalidAmount, as_number, cost, to_money
from shared.segments import GSM7, GSM7_BASIC, GSM7_EXTENSION, UCS2, count_segments
from tests.api import conftest as api_fixtures
from tests.api.conftest import auth
from tests.factories import make_number, make_user, set_price
from tests.shared.test_segments import TEXTS, TRICKY

GSM_ALPHABET = GSM7_BASIC + GSM7_EXTENSION
GSM_TEXT = st.text(alphabet=GSM_ALPHABET, max_size=MAX_BODY_CHARS - 1)
# Characters outside both GSM-7 tables. '€' is in the extension table and 'é' in the
# basic one, so neither would do; these are chosen among all of Unicode.
NOT_GSM = st.characters(exclude_categories=("Cs",), exclude_characters=GSM_ALPHABET + "\x00")
# The API's fixtures (they live in tests/api/conftest.py, which tests/shared does not see).
app, client = api_fixtures.app, api_fixtures.client

# Prices with four decimal places, as `prices.price` (Numeric(14, 4)) holds them.
PRICES = st.integers(min_value=0, max_value=10**8 - 1).map(lambda n: Decimal(n).scaleb(-4))
PRICES_ON_SALE = st.integers(min_value=1, max_value=999_999).map(lambda n: Decimal(n).scaleb(-4))
# Every amount a Numeric(14, 4) column holds.
AMOUNTS = st.integers(min_value=0, max_value=10**14 - 1).map(lambda n: Decimal(n).scaleb(-4))


def price_of(body: str, price: Decimal) -> Decimal:
    return cost(segment_price=price, segments=count_segments(body).segments)


# --- (a) a longer text never costs less


# Pieces short enough that several appends cross segment limits, with the characters
# that join graphemes (marks, joiners, modifiers, LF after CR...) often enough.
PIECES = st.one_of(
    st.text(min_size=1, max_size=40), st.lists(TRICKY, min_size=1, max_size=8).map("".join)
)


@given(TEXTS, st.lists(PIECES, min_size=1, max_size=5), PRICES_ON_SALE)
def test_the_price_never_decreases_as_text_is_appended(
    body: str, pieces: list[str], price: Decimal
) -> None:
    prices = [price_of(body, price)]
    for piece in pieces:
        body += piece
        prices.append(price_of(body, price))
    assert prices == sorted(prices), prices


# --- (b) a GSM-7 body never costs more than its UCS-2 twin


@given(GSM_TEXT, NOT_GSM, st.integers(min_value=0), PRICES_ON_SALE)
def test_one_non_gsm_character_anywhere_never_makes_a_body_cheaper(
    body: str, char: str, where: int, price: Decimal
) -> None:
    where %= len(body) + 1
    twin = body[:where] + char + body[where:]
    assert count_segments(body).encoding == GSM7
    assert count_segments(twin).encoding == UCS2  # the character really is outside GSM-7
    assert price_of(body, price) <= price_of(twin, price)
    # ... nor than the body itself sent as UCS-2: the twin holds it and one unit more.
    forced = cost(segment_price=price, segments=count_segments(body, encoding=UCS2).segments)
    assert price_of(body, price) <= forced <= price_of(twin, price)


@pytest.mark.parametrize("char", ["✓", "😀", "ç", "\u0301", "\u200d", "\t", "`"])
def test_a_full_gsm_segment_plus_one_non_gsm_character_costs_more(char: str) -> None:
    # 160 GSM characters are one segment; with one more character outside GSM-7 the
    # body is UCS-2: 161 or 162 units, three segments of 67.
    price = Decimal("0.0079")
    assert price_of("a" * 160, price) == price
    assert price_of("a" * 160 + char, price) == 3 * price
    assert price_of(char + "a" * 160, price) == 3 * price


# --- (c) the cost is segments x price, exactly, in Decimal


@given(AMOUNTS, st.integers(min_value=0, max_value=100))
def test_cost_is_exactly_segments_times_price(price: Decimal, segments: int) -> None:
    # Up to 16 significant digits: a product in binary floating point would be off.
    total = cost(segment_price=price, segments=segments)
    assert type(total) is Decimal
    assert Fraction(total) == Fraction(price) * segments  # exact: no rounding, no float
    assert total.as_tuple().exponent == QUANTUM.as_tuple().exponent  # four places
    if total <= MAX_AMOUNT:
        assert to_money(str(total)) == total
    else:  # more than a stored amount can hold: refused, not a database error later
        with pytest.raises(InvalidAmount):
            to_money(str(total))


@given(PRICES, st.integers(min_value=1, max_value=100))
def test_cost_refuses_a_float_price(price: Decimal, segments: int) -> None:
    with pytest.raises((TypeError, AttributeError)):
        cost(segment_price=float(price), segments=segments)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        to_money(float(price))  # type: ignore[arg-type]


@given(AMOUNTS)
def test_amounts_survive_the_json_number_exactly(amount: Decimal) -> None:
    # The API shows money as a JSON number: the text must read back as the same decimal.
    text = json.dumps({"total_cost": as_number(amount)})
    assert json.loads(text, parse_float=Decimal, parse_int=Decimal)["total_cost"] == amount


# --- the real paths: a single send through the API, and a campaign's expansion


@pytest.fixture
def rich(session) -> tuple[int, str, int]:
    """A user with a large balance and a number: (user id, token, number id).

    Made once per test and shared by its examples, which each set their own price.
    """
    user_id, token = make_user(session, balance="1000000.00")
    return user_id, token, make_number(session, user_id=user_id)


def _balance(session, user_id: int) -> Decimal:
    session.expire_all()
    return session.scalar(select(User.balance).where(User.id == user_id))


@settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    price=PRICES_ON_SALE,
    body=st.one_of(
        st.text(alphabet=GSM_ALPHABET, min_size=1, max_size=MAX_BODY_CHARS - 1),
        st.text(alphabet=GSM_ALPHABET, min_size=150, max_size=MAX_BODY_CHARS - 1),
    ),
    char=NOT_GSM,
    where=st.integers(min_value=0),
)
@example(price=Decimal("0.0079"), body="a" * 160, char="✓", where=160)  # 1 segment, then 3
@example(price=Decimal("99.9999"), body="{" * 149, char="😀", where=0)  # 2 segments, then 5
def test_the_api_charges_exactly_segments_times_price(
    client, session, rich, price, body, char, where
):
    assume(body.strip())
    user_id, token, number_id = rich
    set_price(session, country="US", price=str(price))
    where %= len(body) + 1
    twin = body[:where] + char + body[where:]
    costs = []
    for text in (body, twin):
        before = _balance(session, user_id)
        answer = client.post(
            "/api/user/sms",
            json={"from": number_id, "to": "+14155550123", "body": text},
            headers=auth(token),
        )
        assert answer.status_code == 201, answer.get_json()
        data = json.loads(answer.get_data(), parse_float=Decimal, parse_int=Decimal)["data"]
        count = count_segments(text)
        expected = price * count.segments
        assert (data["segments"], data["encoding"]) == (count.segments, count.encoding)
        assert (data["segment_price"], data["total_cost"]) == (price, expected)
        assert before - _balance(session, user_id) == expected
        charge = session.scalar(
            select(LedgerEntry.amount).where(LedgerEntry.message_id == data["id"])
        )
        assert charge == -expected
        shown = client.get("/api/user/balance", headers=auth(token))
        shown = json.loads(shown.get_data(), parse_float=Decimal, parse_int=Decimal)
        assert shown["data"]["balance"] == _balance(session, user_id)
        costs.append(expected)
    assert costs[0] <= costs[1]


@settings(
    max_examples=8,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    price=PRICES_ON_SALE,
    names=st.lists(
        st.one_of(
            st.text(alphabet=GSM_ALPHABET, max_size=290),
            st.text(max_size=290),
            st.lists(TRICKY, max_size=120).map("".join),
        ),
        min_size=1,
        max_size=6,
    ),
)
@example(  # 1, 2 and 3 segments of GSM-7, 1 to 5 of UCS-2, and a row too long to send
    price=Decimal("0.0079"),
    names=["Ann", "a" * 200, "{" * 145, "Zoë", "ç" * 100, "😀" * 140, "a" * 282],
)
def test_a_campaign_charges_each_message_segments_times_price(
    client, session, session_factory, rich, price, names
):
    assume(all("\x00" not in name for name in names))
    user_id, token, number_id = rich
    set_price(session, country="US", price=str(price))
    template = "Hi {name}, see you {{soon}}"
    recipients = [
        {"to": f"+1415555{n:04d}", "vars": {"name": name}} for n, name in enumerate(names)
    ]
    answer = client.post(
        "/api/user/sms/campaigns",
        json={"from": number_id, "body": template, "recipients": recipients},
        headers=auth(token),
    )
    assert answer.status_code == 202, answer.get_json()
    campaign_id = answer.get_json()["data"]["id"]
    before = _balance(session, user_id)
    expand_campaign(session_factory, campaign_id=campaign_id)
    session.expire_all()
    messages = session.scalars(
        select(Message).where(Message.campaign_id == campaign_id).order_by(Message.to)
    ).all()
    bodies = [f"Hi {name}, see you {{soon}}" for name in names]
    priced = [b for b in bodies if b.strip() and len(b) <= MAX_BODY_CHARS]
    assert sorted(m.body for m in messages) == sorted(priced)
    for message in messages:
        segments = count_segments(message.body).segments
        assert (message.segments, message.segment_price) == (segments, price)
        assert message.total_cost == price * segments
    total = sum((m.total_cost for m in messages), Decimal(0))
    campaign = session.get(Campaign, campaign_id)
    assert (campaign.accepted, campaign.rejected) == (len(priced), len(bodies) - len(priced))
    assert campaign.total_cost == total
    assert before - _balance(session, user_id) == total
    shown = client.get(f"/api/user/sms/campaigns/{campaign_id}", headers=auth(token))
    shown = json.loads(shown.get_data(), parse_float=Decimal, parse_int=Decimal)
    assert shown["data"]["total_cost"] == total
