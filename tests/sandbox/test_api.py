"""The Messages API of the sandbox, driven through the real Twilio SDK."""

from __future__ import annotations

import datetime as dt
import re
import time
from concurrent.futures import ThreadPoolExecutor
from email.utils import parsedate_to_datetime

import pytest
import requests
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from sandbox import SANDBOX_ACCOUNT_SID
from tests.sandbox.conftest import SandboxHttpClient

FROM = "+15017122661"


def test_create_answers_201_with_a_queued_twilio_message(http, messages_url) -> None:
    response = http.post(messages_url, data={"To": "+15558675310", "From": FROM, "Body": "Hi"})
    assert response.status_code == 201
    body = response.json()
    assert re.fullmatch(r"SM[0-9a-f]{32}", body["sid"])
    assert body["status"] == "queued"
    assert body["price"] is None and body["price_unit"] == "USD"
    assert body["num_segments"] == "1" and body["num_media"] == "0"
    assert body["direction"] == "outbound-api" and body["api_version"] == "2010-04-01"
    assert body["uri"] == f"/2010-04-01/Accounts/{SANDBOX_ACCOUNT_SID}/Messages/{body['sid']}.json"
    assert body["date_sent"] == body["date_created"]
    assert body["date_created"].endswith(" +0000")
    assert parsedate_to_datetime(body["date_created"]).tzinfo is not None


def test_sdk_create_and_fetch(twilio: Client) -> None:
    created = twilio.messages.create(to="+15558675310", from_=FROM, body="ж" * 71)
    assert created.status == "queued"
    assert created.num_segments == "2"
    fetched = twilio.messages(created.sid).fetch()
    assert fetched.sid == created.sid
    assert fetched.body == "ж" * 71
    assert isinstance(fetched.date_sent, dt.datetime)


def test_status_and_price_advance_without_a_callback_url(twilio: Client) -> None:
    created = twilio.messages.create(to="+15558675310", from_=FROM, body="Hi")
    for _ in range(200):
        fetched = twilio.messages(created.sid).fetch()
        if fetched.status == "delivered":
            break
        time.sleep(0.01)
    assert fetched.status == "delivered"
    assert fetched.price == "-0.00790"


def test_unknown_sid_is_404_20404(twilio: Client) -> None:
    with pytest.raises(TwilioRestException) as caught:
        twilio.messages("SM" + "0" * 32).fetch()
    assert caught.value.status == 404
    assert caught.value.code == 20404


def test_wrong_token_is_401_20003(base_url: str) -> None:
    bad = Client(SANDBOX_ACCOUNT_SID, "0" * 32, http_client=SandboxHttpClient(base_url))
    with pytest.raises(TwilioRestException) as caught:
        bad.messages.create(to="+15558675310", from_=FROM, body="Hi")
    assert caught.value.status == 401
    assert caught.value.code == 20003


def test_missing_auth_and_foreign_account_are_401(base_url: str, http) -> None:
    url = f"{base_url}/2010-04-01/Accounts/{SANDBOX_ACCOUNT_SID}/Messages.json"
    response = requests.get(url)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert response.json()["code"] == 20003
    other = f"{base_url}/2010-04-01/Accounts/AC{'1' * 32}/Messages.json"
    assert http.get(other).status_code == 401


@pytest.mark.parametrize(
    ("to", "from_", "code", "text"),
    [
        ("+15005550001", FROM, 21211, "The 'To' number +15005550001 is not a valid phone number."),
        ("+15005550002", FROM, 21612, "is not currently reachable"),
        ("+15005550003", FROM, 21408, "Permission to send an SMS has not been enabled"),
        ("+15005550004", FROM, 21610, "Attempt to send to unsubscribed recipient"),
        ("+15005550009", FROM, 21614, "'To' number is not a valid mobile number"),
        (
            "+15558675310",
            "+15005550001",
            21212,
            "The 'From' number +15005550001 is not a valid phone number, shortcode, "
            "or alphanumeric sender ID.",
        ),
        ("+15558675310", "+15005550007", 21606, "is not a valid message-capable Twilio"),
        ("+15558675310", "+15005550008", 21611, "exceeded the maximum number of queued"),
        ("not-a-number", FROM, 21211, "is not a valid phone number"),
        ("", FROM, 21604, "A 'To' phone number is required."),
    ],
)
def test_magic_numbers_and_bad_input(twilio, sandbox_server, to, from_, code, text) -> None:
    with pytest.raises(TwilioRestException) as caught:
        twilio.messages.create(to=to, from_=from_, body="Hi")
    assert caught.value.status == 400
    assert caught.value.code == code
    assert text in caught.value.msg
    assert sandbox_server.state.store.all() == []


def test_body_required_and_limited(http, messages_url) -> None:
    no_body = {"To": "+15558675310", "From": FROM}
    assert http.post(messages_url, data=no_body).json()["code"] == 21602
    long = {"To": "+15558675310", "From": FROM, "Body": "x" * 1601}
    assert http.post(messages_url, data=long).json()["code"] == 21617


def test_list_filters_by_to_from_and_date_sent(twilio: Client) -> None:
    now = dt.datetime.now(dt.UTC)
    twilio.messages.create(to="+15550000001", from_=FROM, body="one")
    twilio.messages.create(to="+15550000002", from_=FROM, body="two")
    twilio.messages.create(to="+15550000001", from_="+15017122662", body="three")
    assert [m.body for m in twilio.messages.list(to="+15550000001")] == ["three", "one"]
    assert [m.body for m in twilio.messages.list(to="+15550000001", from_=FROM)] == ["one"]
    after = twilio.messages.list(date_sent_after=now - dt.timedelta(seconds=2))
    assert len(after) == 3
    assert twilio.messages.list(date_sent_after=now + dt.timedelta(minutes=1)) == []
    assert twilio.messages.list(date_sent_before=now - dt.timedelta(minutes=1)) == []
    assert len(twilio.messages.list(date_sent=now.date())) == 3
    assert twilio.messages.list(date_sent=now.date() - dt.timedelta(days=1)) == []


def test_paging_through_the_sdk_and_raw(twilio: Client, http, messages_url) -> None:
    sids = [
        twilio.messages.create(to="+15550000001", from_=FROM, body=str(i)).sid for i in range(5)
    ]
    assert [m.sid for m in twilio.messages.list(page_size=2)] == sids[::-1]
    assert [m.sid for m in twilio.messages.stream(page_size=2, limit=3)] == sids[:1:-1]
    first = http.get(messages_url, params={"PageSize": 2}).json()
    assert (first["page"], first["page_size"], first["start"], first["end"]) == (0, 2, 0, 1)
    assert first["previous_page_uri"] is None
    assert "PageSize=2&Page=0" in first["first_page_uri"]
    base = messages_url.split("/2010-04-01")[0]
    second = http.get(base + first["next_page_uri"]).json()
    assert [m["sid"] for m in second["messages"]] == sids[2:0:-1]
    assert (second["page"], second["start"], second["end"]) == (1, 2, 3)
    back = http.get(base + second["previous_page_uri"]).json()
    assert [m["sid"] for m in back["messages"]] == [m["sid"] for m in first["messages"]]
    last = http.get(base + second["next_page_uri"]).json()
    assert [m["sid"] for m in last["messages"]] == sids[:1]
    assert last["next_page_uri"] is None


def test_date_filter_uri_is_kept_in_page_uris(http, messages_url) -> None:
    page = http.get(messages_url, params={"To": "+15550000001", "DateSent>": "2008-01-02"}).json()
    assert "To=%2B15550000001&DateSent%3E=2008-01-02" in page["uri"]
    assert http.get(messages_url, params={"DateSent>": "yesterday"}).status_code == 400


def test_concurrent_creates_all_succeed(http, messages_url, sandbox_server) -> None:
    def create(i: int) -> int:
        data = {"To": f"+1555000{i:04d}", "From": FROM, "Body": "load"}
        return requests.post(messages_url, data=data, auth=http.auth).status_code

    with ThreadPoolExecutor(max_workers=50) as pool:
        codes = list(pool.map(create, range(100)))
    assert codes == [201] * 100
    assert len({m.sid for m in sandbox_server.state.store.all()}) == 100
