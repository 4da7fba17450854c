"""Reading messages, the balance and numbers back, each scoped to the token's user."""

from __future__ import annotations

from tests.api.conftest import auth
from tests.factories import make_number, make_user

TO = "+14155550123"


def _send(client, token, number_id, to=TO):
    answer = client.post(
        "/api/user/sms", json={"from": number_id, "to": to, "body": "Hi"}, headers=auth(token)
    )
    assert answer.status_code == 201
    return answer.get_json()["data"]


def test_show_own_message_and_404_for_others(client, session, account):
    _, token, number_id = account
    sent = _send(client, token, number_id)
    assert client.get(f"/api/user/sms/{sent['id']}", headers=auth(token)).get_json()["data"] == sent
    _, other_token = make_user(session, balance="0")
    answer = client.get(f"/api/user/sms/{sent['id']}", headers=auth(other_token))
    assert (answer.status_code, answer.get_json()) == (404, {"message": "SMS not found"})
    assert client.get("/api/user/sms/999999", headers=auth(token)).status_code == 404


def test_list_filters_and_paginates(client, session, account):
    _, token, number_id = account
    ids = [_send(client, token, number_id)["id"] for _ in range(5)]
    other = _send(client, token, number_id, to="+14155550199")["id"]
    page = client.get("/api/user/sms?per_page=2&page=2", headers=auth(token)).get_json()
    assert page["meta"] == {"page": 2, "per_page": 2, "total": 6}
    assert [m["id"] for m in page["data"]] == [ids[3], ids[2]]
    by_to = client.get("/api/user/sms?to=%2B14155550199", headers=auth(token)).get_json()
    assert [m["id"] for m in by_to["data"]] == [other]
    queued = client.get("/api/user/sms?status=queued", headers=auth(token)).get_json()
    assert queued["meta"]["total"] == 6
    assert client.get("/api/user/sms?status=sent", headers=auth(token)).get_json()["data"] == []
    for bad in ("per_page=101", "page=0", "page=x", "status=nope"):
        assert client.get(f"/api/user/sms?{bad}", headers=auth(token)).status_code == 400
    _, other_token = make_user(session, balance="0")
    assert client.get("/api/user/sms", headers=auth(other_token)).get_json()["meta"]["total"] == 0


def test_balance_and_numbers(client, session, account):
    user_id, token, number_id = account
    make_number(session, user_id=user_id, number="+15005550099", sms_capable=False, mps=3)
    assert client.get("/api/user/balance", headers=auth(token)).get_json() == {
        "data": {"balance": 10, "currency": "USD"}
    }
    _send(client, token, number_id)
    assert (
        client.get("/api/user/balance", headers=auth(token)).get_json()["data"]["balance"] == 9.9921
    )
    numbers = client.get("/api/user/phone-numbers", headers=auth(token)).get_json()["data"]
    assert numbers == [
        {
            "id": number_id,
            "number": "+15005550006",
            "sms_capable": True,
            "expires_at": None,
            "mps": 1,
        },
        {
            "id": number_id + 1,
            "number": "+15005550099",
            "sms_capable": False,
            "expires_at": None,
            "mps": 3,
        },
    ]
    assert client.get("/api/user/balance").status_code == 401


def test_out_of_range_ids_and_nul_in_queries_are_4xx(client, account):
    _, token, _ = account
    assert client.get(f"/api/user/sms/{2**40}", headers=auth(token)).status_code == 404
    assert client.get(f"/api/user/sms/campaigns/{2**40}", headers=auth(token)).status_code == 404
    answer = client.get("/api/user/sms?to=%00", headers=auth(token))
    assert (answer.status_code, answer.get_json()["message"]) == (
        400,
        "The to field must not contain NUL characters",
    )
