"""Every route tried with another user's ids answers as for an id that does not exist.

Two users, A and B, each with numbers, single sends and campaigns (A's in every
campaign status). B then tries each operation of `/openapi.json` with A's ids:
in the path (404 with the contract's not-found message), in a query filter (the
same empty page as for a nonexistent id), in a body field (the same 400 as for a
nonexistent id), and with A's Idempotency-Key. Each answer must be exactly the
answer for an id nobody has (status, content type and bytes), must hold none of
A's data, and must change nothing: every table and every broker queue is
compared before and after, so neither A's objects nor B's balance moved.

The operations come from the OpenAPI document, checked against the URL map, so
a route added later is tried automatically, or the test fails and names it.
"""

from __future__ import annotations

import io
import itertools
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select, update

from shared.campaign_expansion import expand_campaign
from shared.db import Base
from shared.models import Campaign, InboundMessage, Message, PhoneNumber, User
from tests.api.conftest import auth
from tests.api.test_webhooks import INBOUND, signed_post
from tests.factories import make_number, make_user, set_price

SMS = "/api/user/sms"
CAMPAIGNS = "/api/user/sms/campaigns"
MAX_ROW_ID = 2**63 - 1
KEY = "alice-order-42"

# What kind of object a parameter or body field names, wherever it appears.
ID_KINDS = {
    "message_id": "message",
    "campaign_id": "campaign",
    "phone_number_id": "number",
    "from": "number",
    "number_id": "number",
    "inbound_id": "inbound",
}
# The contract's 404 message for an id of each kind in a path.
NOT_FOUND = {
    "message": "SMS not found",
    "campaign": "Campaign not found",
    "number": "Phone number not found",
    "inbound": "Inbound message not found",
}
# The contract's 400 message for an id in a body field that is not the user's.
BODY_NOT_FOUND = {"from": "From number not found"}
# Query parameters that filter by a value of the user's data rather than by an id
# (`from` of the inbound list is a sender's number, unlike `from` in a send's body).
VALUE_FILTERS = {"to", "from"}
A_INBOUND_URL = "https://alpha-inbound.invalid/hooks"
# Answers that hold nothing that is only A's (a message's events: statuses and times).
NO_OWN_TEXT = {f"{SMS}/{{message_id}}/events"}
# A valid body per operation; each id field gets B's own id of its kind. Never sent
# as it is: only with an id of A's, or one nobody has, in one of its id fields.
VALID_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("post", SMS): {"from": 0, "to": "+14155550199", "body": "bee probe"},
    ("post", f"{SMS}/quote"): {"from": 0, "to": "+14155550199", "body": "bee probe"},
    ("post", CAMPAIGNS): {
        "from": 0,
        "body": "bee probe {name}",
        "recipients": [{"to": "+14155550197", "vars": {"name": "Bo"}}],
    },
}


@dataclass
class Owner:
    user_id: int
    token: str
    email: str
    ids: dict[str, list[int]] = field(default_factory=dict)  # per kind
    texts: set[str] = field(default_factory=set)  # strings that are this user's data


@dataclass
class World:
    a: Owner
    b: Owner
    keyed_request: dict[str, Any]  # A's send made with Idempotency-Key KEY
    missing: dict[str, list[int]]  # ids of each kind that nobody has
    recipients: list[str]  # A's recipients, single and campaign


def _send(client, owner: Owner, payload: dict, **headers: str) -> dict:
    answer = client.post(SMS, json=payload, headers={**auth(owner.token), **headers})
    assert answer.status_code == 201, answer.get_json()
    return answer.get_json()["data"]


def _campaign(client, session_factory, owner: Owner, body: str, people, expand=True) -> int:
    recipients = [{"to": to, "vars": {"name": name}} for to, name in people]
    payload = {"from": owner.ids["number"][0], "body": body, "recipients": recipients}
    answer = client.post(CAMPAIGNS, json=payload, headers=auth(owner.token))
    assert answer.status_code == 202, answer.get_json()
    campaign_id = answer.get_json()["data"]["id"]
    if expand:
        expand_campaign(session_factory, campaign_id=campaign_id)
    return campaign_id


def _data_of(session, owner: Owner) -> set[str]:
    """Every string of the owner's rows that an answer could show."""
    uid = owner.user_id
    messages = session.scalars(select(Message).where(Message.user_id == uid)).all()
    campaigns = session.scalars(select(Campaign).where(Campaign.user_id == uid)).all()
    numbers = session.scalars(select(PhoneNumber.number).where(PhoneNumber.user_id == uid))
    user = session.get(User, uid)
    texts = {owner.email, owner.token, user.webhook_secret, *numbers}
    texts |= {m.body for m in messages} | {m.to for m in messages}
    texts |= {c.body for c in campaigns}
    inbound = session.scalars(select(InboundMessage).where(InboundMessage.user_id == uid)).all()
    texts |= {m.body for m in inbound} | {m.sms_sid for m in inbound}
    urls = session.scalars(select(PhoneNumber.inbound_url).where(PhoneNumber.user_id == uid))
    texts |= {url for url in urls if url}
    texts |= {r["to"] for c in campaigns for r in c.rejections or []}
    return texts


@pytest.fixture
def world(client, session, session_factory) -> World:
    """Build A and B through the real API and the real campaign expansion."""
    set_price(session, country="US", price="0.0079")
    set_price(session, country="GB", price="50.0000")  # more than A can pay
    a_id, a_token = make_user(session, email="alice-isolation@example.com", balance="10.00")
    a = Owner(a_id, a_token, "alice-isolation@example.com")
    a.ids["number"] = [
        make_number(session, user_id=a_id, number="+15005550010", mps=5),
        make_number(session, user_id=a_id, number="+15005550011", sms_capable=False),
        make_number(session, user_id=a_id, number="+15005550012", expires_at=datetime(2020, 1, 1)),
    ]
    b_id, b_token = make_user(session, email="bob-isolation@example.com", balance="5.00")
    b = Owner(b_id, b_token, "bob-isolation@example.com")
    b.ids["number"] = [make_number(session, user_id=b_id, number="+15005550006")]

    # A: single sends (GSM-7, UCS-2, one with an Idempotency-Key) ...
    sent = [
        _send(client, a, {"from": a.ids["number"][0], "to": "+14155550101", "body": "alpha one"}),
        _send(client, a, {"from": a.ids["number"][0], "to": "+14155550102", "body": "alpha ✓"}),
    ]
    keyed = {"from": a.ids["number"][0], "to": "+14155550103", "body": "alpha keyed"}
    sent.append(_send(client, a, keyed, **{"Idempotency-Key": KEY}))
    assert [m["encoding"] for m in sent] == ["GSM-7", "UCS-2", "GSM-7"]
    # ... and a campaign in every status, with messages where a campaign has them.
    new = lambda body, people, **kw: _campaign(client, session_factory, a, body, people, **kw)  # noqa: E731
    a.ids["campaign"] = [
        new("alpha campaign {name}", [("+14155550111", "Ann"), ("+14155550112", "Abe")]),
        new("alpha canceled {name}", [("+14155550121", "Ada"), ("+14155550122", "Al")]),
        new("alpha nowhere {name}", [("+33612345678", "Amé")]),  # no FR price: all rejected
        new("alpha dear {name}", [("+447400123456", "Aled")]),  # 50.00: Insufficient balance
        new("alpha pending {name}", [("+14155550131", "Ari")], expand=False),
    ]
    canceled = client.post(f"{CAMPAIGNS}/{a.ids['campaign'][1]}/cancel", headers=auth(a.token))
    assert canceled.get_json()["data"]["counts"]["canceled"] == 2
    session.expire_all()
    statuses = [session.get(Campaign, c).status for c in a.ids["campaign"]]
    assert statuses == ["sending", "canceled", "completed", "failed", "pending"]
    messages = session.scalars(select(Message.id).where(Message.user_id == a_id)).all()
    assert len(messages) == 7  # 3 single, 2 sending and 2 canceled campaign messages
    a.ids["message"] = sorted(messages)
    # A's other numbers are refused to A for what they are (B must not learn it).
    for number_id, reason in zip(
        a.ids["number"][1:],
        ["From number is not SMS capable", "From number subscription has expired"],
        strict=True,
    ):
        payload = {"from": number_id, "to": "+14155550101", "body": "alpha"}
        answer = client.post(SMS, json=payload, headers=auth(a.token))
        assert (answer.status_code, answer.get_json()["message"]) == (400, reason)

    # B: a send and an expanded campaign of its own, so that filters have rows to hide.
    b.ids["message"] = [
        _send(client, b, {"from": b.ids["number"][0], "to": "+14155550199", "body": "bee own"})[
            "id"
        ]
    ]
    b.ids["campaign"] = [
        _campaign(client, session_factory, b, "bee campaign {name}", [("+14155550198", "Bea")])
    ]

    # Replies: A's recipients write back to A's numbers (one a STOP), B's to B's.
    for sid, sender, number, body in (
        ("SM" + "a1" * 16, "+14155550101", "+15005550010", "alpha reply one"),
        ("SM" + "a2" * 16, "+14155550102", "+15005550011", "STOP"),
        ("SM" + "b1" * 16, "+14155550199", "+15005550006", "bee reply"),
    ):
        params = {"MessageSid": sid, "From": sender, "To": number, "Body": body}
        assert signed_post(client, INBOUND, params).status_code == 200
    session.execute(
        update(PhoneNumber)
        .where(PhoneNumber.id == a.ids["number"][0])
        .values(inbound_url=A_INBOUND_URL)
    )
    session.commit()
    a.ids["inbound"] = sorted(
        session.scalars(select(InboundMessage.id).where(InboundMessage.user_id == a_id))
    )
    assert len(a.ids["inbound"]) == 2

    recipients = {"+14155550101", "+14155550102", "+14155550103", "+14155550111"}
    recipients |= {"+14155550121", "+14155550131", "+33612345678", "+447400123456"}
    a.texts = _data_of(session, a) | recipients | {"alpha"}
    b.texts = _data_of(session, b)
    assert not [t for t in a.texts for s in b.texts if t in s], "the users' data must differ"

    def unused(model) -> list[int]:
        return [session.scalar(select(func.max(model.id))) + 1000, MAX_ROW_ID]

    return World(
        a=a,
        b=b,
        keyed_request=keyed,
        missing={
            "message": unused(Message),
            "campaign": unused(Campaign),
            "number": unused(PhoneNumber),
            "inbound": unused(InboundMessage),
        },
        recipients=sorted(recipients),
    )


# --- what must not change


def db_snapshot(engine) -> dict[str, list]:
    """Every row of every table, in key order."""
    with engine.connect() as conn:
        return {
            table.name: [
                tuple(row) for row in conn.execute(select(table).order_by(*table.primary_key))
            ]
            for table in Base.metadata.sorted_tables
        }


def queue_snapshot(redis_client) -> dict[bytes, list[bytes]]:
    """The contents of every list in the broker: the Celery queues."""
    return {
        key: redis_client.lrange(key, 0, -1)
        for key in redis_client.scan_iter()
        if redis_client.type(key) == b"list"
    }


# --- answers


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Request:
    url: str
    json: Any = None
    data: Any = None
    headers: tuple[tuple[str, str], ...] = ()

    def send(self, client, method: str, token: str) -> Answer:
        kwargs: dict[str, Any] = {}
        if self.json is not None:
            kwargs["json"] = self.json
        if self.data is not None:  # a multipart form: its file is read once, so build anew
            kwargs["data"], kwargs["content_type"] = self.data(), "multipart/form-data"
        headers = {**auth(token), **dict(self.headers)}
        response = client.open(self.url, method=method.upper(), headers=headers, **kwargs)
        return Answer(response.status_code, response.content_type, response.get_data())


def assert_no_leak(answer: Answer, owner: Owner, what: str) -> None:
    """Neither the raw answer nor its decoded JSON holds any of the owner's data."""
    texts = [answer.body.decode("utf-8", "replace")]
    if answer.content_type.startswith("application/json"):
        texts.append(json.dumps(answer.json(), ensure_ascii=False))
    leaked = sorted({secret for secret in owner.texts for text in texts if secret in text})
    assert not leaked, f"{what} shows A's data {leaked}: {texts[-1][:500]}"


def resolve(spec: dict, schema: dict) -> dict:
    ref = schema.get("$ref")
    return spec["components"]["schemas"][ref.rsplit("/", 1)[-1]] if ref else schema


def looks_like_id(name: str) -> bool:
    return name in ID_KINDS or name == "id" or name.endswith(("_id", "Id"))


def fill(path: str, values: dict[str, int]) -> str:
    return re.sub(r"\{([^}]+)\}", lambda m: str(values[m.group(1)]), path)


def quoted(value: object) -> str:
    return str(value).replace("+", "%2B")


# --- the tests


def test_every_route_answers_another_users_ids_as_nonexistent(
    client, app, engine, redis_client, world
):
    a, b = world.a, world.b
    spec = client.get("/openapi.json").get_json()
    db_before, queues_before = db_snapshot(engine), queue_snapshot(redis_client)
    exercised: set[tuple[str, str]] = set()  # operations tried with A's ids or data
    tried = 0

    def same_as_missing(label: str, method: str, missing: list, theirs: list, check) -> None:
        """B's answer to each of A's requests is the one to a nonexistent id, and passes check."""
        nonlocal tried
        baseline = {request.send(client, method, b.token) for request in missing}
        assert len(baseline) == 1, f"{label}: nonexistent ids answer differently: {baseline}"
        expected = baseline.pop()
        check(expected)
        for request in theirs:
            answer = request.send(client, method, b.token)
            tried += 1
            assert answer == expected, (
                f"{label} with A's {request}: {answer.status} {answer.body[:300]!r}, "
                f"but for a nonexistent id: {expected.status} {expected.body[:300]!r}"
            )
            assert_no_leak(answer, a, f"{label} {request}")

    def answers(status: int, message: str):
        def check(answer: Answer) -> None:
            assert (answer.status, answer.json()) == (status, {"message": message})

        return check

    def empty_page(answer: Answer) -> None:
        assert answer.status == 200
        assert answer.json() == {"data": [], "meta": {"limit": 50, "next": None}}

    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            if not path.startswith("/api/user/"):
                continue  # Twilio's webhooks and the operations routes take no user token
            label = f"{method.upper()} {path}"
            params = op.get("parameters", [])
            path_params = [p["name"] for p in params if p["in"] == "path"]
            query_params = [p["name"] for p in params if p["in"] == "query"]
            content = op.get("requestBody", {}).get("content", {})
            body_schema = resolve(spec, next(iter(content.values()))["schema"]) if content else {}

            # 1. ids in the path: 404 with the contract's message, as for a missing id.
            if path_params:
                for name in path_params:
                    assert ID_KINDS.get(name) in NOT_FOUND, (
                        f"{label}: path parameter {name} names no kind this test knows; "
                        "add it to ID_KINDS and NOT_FOUND"
                    )
                kinds = [ID_KINDS[name] for name in path_params]

                def urls(ids_per_kind, path=path, path_params=path_params):
                    return [
                        Request(fill(path, dict(zip(path_params, ids, strict=True))))
                        for ids in itertools.product(*ids_per_kind)
                    ]

                theirs = urls([a.ids[k] for k in kinds])
                if method == "get":  # control: the ids are real, A sees its data there
                    for request in theirs:
                        own = request.send(client, method, a.token)
                        assert own.status == 200, (label, request, own.body)
                        if path in NO_OWN_TEXT:  # statuses and times only: not empty, then
                            assert own.json()["data"], (label, request)
                            continue
                        with pytest.raises(AssertionError, match="shows A's data"):
                            assert_no_leak(own, a, "A's own answer")
                missing = urls([world.missing[k] for k in kinds])
                same_as_missing(label, method, missing, theirs, answers(404, NOT_FOUND[kinds[-1]]))
                exercised.add((method, path))
                continue

            # 2. ids (and A's recipients) in query filters: the page a nonexistent one gives.
            for name in query_params:
                if name in VALUE_FILTERS:
                    values, absent = world.recipients, ["+14155550177", "+447911123499"]
                elif looks_like_id(name):
                    assert name in ID_KINDS, f"{label}: query parameter {name} is not known"
                    values, absent = a.ids[ID_KINDS[name]], world.missing[ID_KINDS[name]]
                else:
                    continue
                same_as_missing(
                    f"{label}?{name}",
                    method,
                    [Request(f"{path}?{name}={quoted(v)}") for v in absent],
                    [Request(f"{path}?{name}={quoted(v)}") for v in values],
                    empty_page,
                )
                if name in VALUE_FILTERS:  # control: A itself finds its rows by that number
                    url = f"{path}?{name}={quoted(values[0])}"
                    own = Request(url).send(client, method, a.token).json()
                    assert len(own["data"]) == 1
                exercised.add((method, path))

            # 3. ids in a JSON body: the same 400 as for an id nobody has.
            id_fields = [name for name in body_schema.get("properties", {}) if looks_like_id(name)]
            for name in id_fields:
                assert name in ID_KINDS and name in BODY_NOT_FOUND, f"{label}: body field {name}"
                assert (method, path) in VALID_BODIES, f"{label}: add a valid body for B"
                base = {
                    key: b.ids[ID_KINDS[key]][0] if key in id_fields else value
                    for key, value in VALID_BODIES[(method, path)].items()
                }
                assert set(body_schema.get("required", [])) <= set(base), label
                kind = ID_KINDS[name]
                same_as_missing(
                    f"{label} {name}",
                    method,
                    [Request(path, json={**base, name: v}) for v in world.missing[kind]],
                    [Request(path, json={**base, name: v}) for v in a.ids[kind]],
                    answers(400, BODY_NOT_FOUND[name]),
                )
                exercised.add((method, path))

            # 4. A's Idempotency-Key with A's very request: not A's stored answer.
            if "Idempotency-Key" in op.get("description", ""):
                with_key = lambda key, path=path: Request(  # noqa: E731
                    path, json=world.keyed_request, headers=(("Idempotency-Key", key),)
                )
                same_as_missing(
                    f"{label} Idempotency-Key",
                    method,
                    [with_key("bob-1"), Request(path, json=world.keyed_request)],
                    [with_key(KEY)],
                    answers(400, "From number not found"),
                )

            # 5. Whatever else B can read holds nothing of A's.
            if method == "get":
                answer = Request(path).send(client, method, b.token)
                assert answer.status == 200, (label, answer.body)
                assert_no_leak(answer, a, label)
                exercised.add((method, path))
            assert (method, path) in exercised, f"{label}: not tried; teach this test its body"

    # The multipart form of a campaign (outside the document's JSON schema) has `from` too.
    def upload(number_id: int) -> Request:
        def form() -> dict[str, Any]:
            csv = io.BytesIO(b"to,name\n+14155550197,Bo\n")
            return {"from": str(number_id), "body": "bee {name}", "recipients": (csv, "l.csv")}

        return Request(CAMPAIGNS, data=form)

    same_as_missing(
        "POST multipart campaign from",
        "post",
        [upload(v) for v in world.missing["number"]],
        [upload(v) for v in a.ids["number"]],
        answers(400, "From number not found"),
    )

    # Every route of a user's with an id in its path, documented or not, was tried (the
    # operator API's, under /api/admin/, take no user token: tests/api/test_admin_api.py).
    documented = {
        (method, path)
        for path, operations in spec["paths"].items()
        for method, op in operations.items()
        if any(p["in"] == "path" for p in op.get("parameters", []))
        and path.startswith("/api/user/")
    }
    routed = {
        (method.lower(), re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule))
        for rule in app.url_map.iter_rules()
        if rule.arguments
        and rule.endpoint != "static"
        and not rule.endpoint.endswith(".static")
        and not rule.rule.startswith("/api/admin/")
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }
    assert routed <= documented, (
        f"routes with ids missing from /openapi.json: {routed - documented}"
    )
    assert documented <= exercised, f"routes with ids never tried: {documented - exercised}"
    assert {
        ("get", f"{SMS}/{{message_id}}"),
        ("get", f"{CAMPAIGNS}/{{campaign_id}}"),
        ("post", f"{CAMPAIGNS}/{{campaign_id}}/cancel"),
        ("get", SMS),
        ("post", SMS),
        ("post", CAMPAIGNS),
        ("get", "/api/user/balance"),
        ("get", "/api/user/phone-numbers"),
        ("get", "/api/user/webhook-secret"),
        ("get", "/api/user/sms/inbound"),
        ("get", "/api/user/sms/inbound/{inbound_id}"),
        ("patch", "/api/user/phone-numbers/{number_id}"),
    } <= exercised
    assert tried >= 40, tried

    # Nothing changed: not A's messages, campaigns or balance, not B's; no task was queued.
    db_after = db_snapshot(engine)
    changed = {name: db_after[name] for name in db_before if db_after[name] != db_before[name]}
    assert not changed, f"B's requests changed rows: {changed}"
    assert queue_snapshot(redis_client) == queues_before
    with engine.connect() as conn:
        balance = conn.scalar(select(User.balance).where(User.id == b.user_id))
    assert balance == Decimal("4.9842")  # 5.00 less B's own send and campaign message


def test_another_users_idempotency_key_neither_replays_nor_conflicts(client, session, world):
    a, b = world.a, world.b
    mine = {"from": b.ids["number"][0], "to": "+14155550199", "body": "bee keyed"}
    first = client.post(SMS, json=mine, headers={**auth(b.token), "Idempotency-Key": KEY})
    assert first.status_code == 201, first.get_json()  # not A's answer, not 409
    data = first.get_json()["data"]
    assert (data["user_id"], data["body"], data["total_cost"]) == (b.user_id, "bee keyed", 0.0079)
    answer = Answer(first.status_code, first.content_type, first.get_data())
    assert_no_leak(answer, a, "B's send with A's key")
    # The key now replays B's answer to B, and still A's to A.
    repeat = client.post(SMS, json=mine, headers={**auth(b.token), "Idempotency-Key": KEY})
    assert (repeat.status_code, repeat.get_json()) == (201, first.get_json())
    replay = client.post(
        SMS, json=world.keyed_request, headers={**auth(a.token), "Idempotency-Key": KEY}
    )
    assert replay.status_code == 201
    assert replay.get_json()["data"]["body"] == "alpha keyed"
    session.expire_all()
    assert session.get(User, b.user_id).balance == Decimal("4.9763")  # one more send, once
    assert len(session.scalars(select(Message).where(Message.body == "bee keyed")).all()) == 1
    assert len(session.scalars(select(Message).where(Message.body == "alpha keyed")).all()) == 1
