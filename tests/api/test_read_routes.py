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


def _walk(client, token, path):
    """Follow `meta.next` from `path` to the last page; return the pages."""
    pages = []
    while path is not None:
        answer = client.get(path, headers=auth(token))
        assert answer.status_code == 200, answer.get_json()
        pages.append(answer.get_json())
        path = pages[-1]["meta"]["next"]
    return pages


def test_list_is_cursor_paged_newest_first_with_filters_kept(client, session, account):
    _, token, number_id = account
    ids = [_send(client, token, number_id)["id"] for _ in range(5)]
    other = _send(client, token, number_id, to="+14155550199")["id"]
    pages = _walk(client, token, "/api/user/sms?limit=2")
    assert [[m["id"] for m in p["data"]] for p in pages] == [
        [other, ids[4]],
        [ids[3], ids[2]],
        [ids[1], ids[0]],
    ]
    assert pages[0]["meta"] == {"limit": 2, "next": f"/api/user/sms?limit=2&before={ids[4]}"}
    assert pages[-1]["meta"] == {"limit": 2, "next": None}
    assert "total" not in pages[0]["meta"]
    filtered = _walk(client, token, "/api/user/sms?limit=2&status=queued&to=%2B14155550123")
    assert [m["id"] for p in filtered for m in p["data"]] == ids[::-1]
    assert filtered[0]["meta"]["next"] == (
        f"/api/user/sms?limit=2&before={ids[3]}&status=queued&to=%2B14155550123"
    )
    by_to = client.get("/api/user/sms?to=%2B14155550199", headers=auth(token)).get_json()
    assert [m["id"] for m in by_to["data"]] == [other]
    assert by_to["meta"] == {"limit": 50, "next": None}
    older = client.get(f"/api/user/sms?before={ids[1]}", headers=auth(token)).get_json()
    assert [m["id"] for m in older["data"]] == [ids[0]]
    assert client.get("/api/user/sms?status=sent", headers=auth(token)).get_json()["data"] == []
    _, other_token = make_user(session, balance="0")
    assert client.get("/api/user/sms", headers=auth(other_token)).get_json()["data"] == []


def test_list_arguments_out_of_range_are_400(client, account):
    _, token, _ = account
    cases = {
        "limit=0": "The limit field must be an integer from 1 to 100",
        "limit=101": "The limit field must be an integer from 1 to 100",
        "limit=x": "The limit field must be an integer from 1 to 100",
        "before=0": f"The before field must be an integer from 1 to {2**63 - 1}",
        f"before={2**63}": f"The before field must be an integer from 1 to {2**63 - 1}",
        "campaign_id=-1": f"The campaign_id field must be an integer from 1 to {2**63 - 1}",
        "status=nope": "The status field must be one of "
        "scheduled, queued, sending, sent, delivered, undelivered, failed, canceled",
        "page=2": "The page field is gone: lists are paged by limit and before",
        "per_page=20": "The per_page field is gone: lists are paged by limit and before",
    }
    for query, message in cases.items():
        answer = client.get(f"/api/user/sms?{query}", headers=auth(token))
        assert (answer.status_code, answer.get_json()["message"]) == (400, message), query
    answer = client.get("/api/user/sms/campaigns?limit=0", headers=auth(token))
    assert answer.status_code == 400


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
            "inbound_url": None,
        },
        {
            "id": number_id + 1,
            "number": "+15005550099",
            "sms_capable": False,
            "expires_at": None,
            "mps": 3,
            "inbound_url": None,
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
