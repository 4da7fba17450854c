"""`reference` and `smart_encoding` on single sends and campaigns."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from shared.campaign_expansion import expand_campaign
from shared.db import utcnow
from shared.models import Message, UserCallback
from shared.segments import count_segments
from tests.api.conftest import auth

NEW_YORK = "+12125550123"


def send(client, token, number_id, **fields):
    body = {"from": number_id, "to": NEW_YORK, "body": "Hi", **fields}
    return client.post("/api/user/sms", json=body, headers=auth(token))


def listed(client, token, **query):
    page = client.get("/api/user/sms", query_string=query, headers=auth(token)).get_json()
    return [m["id"] for m in page["data"]]


def test_a_reference_is_stored_echoed_and_filtered(client, account):
    _user_id, token, number_id = account
    first = send(client, token, number_id, reference="order-1").get_json()["data"]
    send(client, token, number_id, reference="order-2")
    keyed = send(client, token, number_id, reference="order-1", to="+12125550100").get_json()[
        "data"
    ]
    unnamed = send(client, token, number_id).get_json()["data"]
    assert first["reference"] == "order-1" and unnamed["reference"] is None
    shown = client.get(f"/api/user/sms/{first['id']}", headers=auth(token)).get_json()["data"]
    assert shown["reference"] == "order-1"
    assert listed(client, token, reference="order-1") == [keyed["id"], first["id"]]
    assert listed(client, token, reference="order-1", to=NEW_YORK) == [first["id"]]
    assert listed(client, token, reference="order-1", limit=1)[0] == keyed["id"]
    page = client.get(
        "/api/user/sms", query_string={"reference": "order-1", "limit": 1}, headers=auth(token)
    ).get_json()
    assert "reference=order-1" in page["meta"]["next"]
    assert listed(client, token, reference="nothing") == []


def test_a_reference_through_the_idempotent_path_and_a_schedule(client, account):
    _user_id, token, number_id = account
    headers = {**auth(token), "Idempotency-Key": "k-1"}
    body = {"from": number_id, "to": NEW_YORK, "body": "Hi", "reference": "r-key"}
    answer = client.post("/api/user/sms", json=body, headers=headers)
    assert answer.get_json()["data"]["reference"] == "r-key"
    scheduled = send(client, token, number_id, reference="r-later", send_at="2099-01-01 00:00:00")
    assert scheduled.status_code == 400  # beyond 35 days: the reference does not hide that
    later = send(client, token, number_id, reference="r-later", validity_period=60)
    assert later.get_json()["data"]["reference"] == "r-later"


def test_a_bad_reference_is_refused_with_the_contracts_message(client, account):
    _user_id, token, number_id = account
    long = send(client, token, number_id, reference="x" * 256)
    assert long.status_code == 400
    assert long.get_json()["message"] == (
        "The reference field must not be greater than 255 characters"
    )
    assert send(client, token, number_id, reference="x" * 255).status_code == 201
    wrong = send(client, token, number_id, reference=42)
    assert wrong.status_code == 400 and "reference" in wrong.get_json()["message"]


def test_the_reference_is_in_the_users_callbacks(client, account, session):
    _user_id, token, number_id = account
    # A scheduled send writes its `scheduled` callback at once.
    soon = (utcnow() + timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S")
    answer = send(
        client,
        token,
        number_id,
        reference="cb-ref",
        status_callback="https://93.184.216.34/hook",
        send_at=soon,
    )
    message_id = answer.get_json()["data"]["id"]
    payload = session.scalar(
        select(UserCallback.payload).where(UserCallback.message_id == message_id)
    )
    assert payload["reference"] == "cb-ref" and payload["status"] == "scheduled"


def test_smart_encoding_replaces_before_counting_pricing_and_sending(client, account, session):
    _user_id, token, number_id = account
    text = "\u201cSale\u201d \u2013 50% off\u2026 don\u2019t miss it" + "!" * 120
    plain = send(client, token, number_id, body=text).get_json()["data"]
    smart = send(client, token, number_id, body=text, smart_encoding=True).get_json()["data"]
    assert plain["body"] == text and plain["encoding"] == "UCS-2" and plain["segments"] == 3
    replaced = '"Sale" - 50% off... don\'t miss it' + "!" * 120
    assert smart["body"] == replaced
    assert (smart["encoding"], smart["segments"]) == ("GSM-7", 1)
    assert count_segments(replaced).segments == 1
    assert smart["total_cost"] == smart["segment_price"]
    stored = session.scalar(select(Message.body).where(Message.id == smart["id"]))
    assert stored == replaced
    off = send(client, token, number_id, body=text, smart_encoding=False).get_json()["data"]
    assert off["body"] == text


def test_smart_encoding_must_be_a_boolean_and_cannot_empty_a_body(client, account):
    _user_id, token, number_id = account
    for value in ("yes", 1, "true"):
        answer = send(client, token, number_id, smart_encoding=value)
        assert answer.status_code == 400
        assert answer.get_json()["message"] == "The smart_encoding field must be true or false"
    invisible = send(client, token, number_id, body="\u200b\u200b", smart_encoding=True)
    assert invisible.status_code == 400
    assert invisible.get_json()["message"] == "The body field is required"


def test_a_campaign_applies_its_reference_and_smart_encoding(client, account, session_factory):
    _user_id, token, number_id = account
    answer = client.post(
        "/api/user/sms/campaigns",
        json={
            "from": number_id,
            "body": "Hi {name} \u2014 it\u2019s here",
            "recipients": [{"to": NEW_YORK, "vars": {"name": "Ann"}}],
            "reference": "spring",
            "smart_encoding": True,
        },
        headers=auth(token),
    )
    assert answer.status_code == 202, answer.get_json()
    data = answer.get_json()["data"]
    assert (data["reference"], data["smart_encoding"]) == ("spring", True)
    expand_campaign(session_factory, campaign_id=data["id"])
    [message] = client.get(
        "/api/user/sms", query_string={"reference": "spring"}, headers=auth(token)
    ).get_json()["data"]
    assert message["campaign_id"] == data["id"]
    assert message["body"] == "Hi Ann - it's here" and message["encoding"] == "GSM-7"


def test_a_campaign_upload_takes_them_as_form_fields(client, account, session_factory):
    import io

    _user_id, token, number_id = account
    form = {
        "from": str(number_id),
        "body": "Hi {name}\u2026",
        "reference": "csv-ref",
        "smart_encoding": "true",
        "recipients": (io.BytesIO(f"to,name\n{NEW_YORK},Bo\n".encode()), "r.csv"),
    }
    answer = client.post(
        "/api/user/sms/campaigns",
        data=form,
        headers=auth(token),
        content_type="multipart/form-data",
    )
    assert answer.status_code == 202, answer.get_json()
    expand_campaign(session_factory, campaign_id=answer.get_json()["data"]["id"])
    [message] = client.get(
        "/api/user/sms", query_string={"reference": "csv-ref"}, headers=auth(token)
    ).get_json()["data"]
    assert message["body"] == "Hi Bo..."
    bad = dict(form, smart_encoding="maybe")
    bad["recipients"] = (io.BytesIO(f"to,name\n{NEW_YORK},Bo\n".encode()), "r.csv")
    refused = client.post(
        "/api/user/sms/campaigns", data=bad, headers=auth(token), content_type="multipart/form-data"
    )
    assert refused.get_json()["message"] == "The smart_encoding field must be true or false"
