"""`GET /api/user/transactions`: the ledger as cursor-paged JSON, and as one streamed CSV."""

from __future__ import annotations

import csv
import io
import re
import time
import tracemalloc
from decimal import Decimal

from sqlalchemy import event, text

from tests.api.conftest import auth
from tests.factories import make_user

PATH = "/api/user/transactions"
COLUMNS = ["id", "kind", "amount", "message_id", "campaign_id", "note", "created_at"]
TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
BIG = 200_000
# Rows of `count` seconds from 2026-01-01 00:00:01: every 10th a topup of 1.2345, else a
# charge of 0.0079 for message n; the balance is moved by the same sum, as billing would.
INSERT = """
INSERT INTO ledger_entries (user_id, amount, kind, message_id, note, created_at)
SELECT :user_id,
       CASE WHEN n % 10 = 0 THEN 1.2345 ELSE -0.0079 END,
       CASE WHEN n % 10 = 0 THEN 'topup' ELSE 'charge' END,
       CASE WHEN n % 10 = 0 THEN NULL ELSE :first + n END,
       CASE WHEN n % 10 = 0 THEN 'n=' || n ELSE NULL END,
       timestamp '2026-01-01 00:00:00' + n * interval '1 second'
FROM generate_series(1, :count) AS n;
UPDATE users SET balance = (SELECT sum(amount) FROM ledger_entries WHERE user_id = :user_id)
WHERE id = :user_id;
"""


def _insert(engine, user_id: int, count: int, first: int = 0) -> None:
    with engine.begin() as conn:
        for statement in INSERT.split(";")[:2]:
            conn.execute(text(statement), {"user_id": user_id, "count": count, "first": first})
        conn.execute(text("ANALYZE ledger_entries"))  # as autovacuum would after a bulk load


def _send(client, token, number_id):
    body = {"from": number_id, "to": "+14155550123", "body": "Hi"}
    answer = client.post("/api/user/sms", json=body, headers=auth(token))
    assert answer.status_code == 201
    return answer.get_json()["data"]["id"]


def _walk(client, token, path):
    """Follow `meta.next` from `path` to the last page; return every item, in order."""
    items, seen = [], set()
    while path is not None:
        answer = client.get(path, headers=auth(token))
        assert answer.status_code == 200, answer.get_json()
        body = answer.get_json()
        items += body["data"]
        path = body["meta"]["next"]
        assert path not in seen
        seen.add(path)
    return items


def _csv(client, token, query=""):
    answer = client.get(f"{PATH}?format=csv{query}", headers=auth(token))
    assert answer.status_code == 200
    assert answer.mimetype == "text/csv"
    assert answer.headers["Content-Disposition"] == 'attachment; filename="transactions.csv"'
    return list(csv.reader(io.StringIO(answer.get_data(as_text=True))))


def _as_csv(item: dict) -> list[str]:
    """Return a JSON item as its CSV row must read: decimal digits, empty for null."""
    return ["" if item[c] is None else str(item[c]) for c in COLUMNS]


def test_the_ledger_newest_first_signed_and_summing_to_the_balance(
    client, session, engine, account
):
    user_id, token, number_id = account
    sent = [_send(client, token, number_id) for _ in range(3)]
    assert client.post(f"/api/user/sms/{sent[1]}/cancel", headers=auth(token)).status_code == 200
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO ledger_entries (user_id, amount, kind, note, created_at)"
                " VALUES (:u, -1.5, 'adjustment', 'goodwill', timezone('utc', now()))"
            ),
            {"u": user_id},
        )
        conn.execute(text("UPDATE users SET balance = balance - 1.5 WHERE id = :u"), {"u": user_id})
    answer = client.get(PATH, headers=auth(token)).get_json()
    items = answer["data"]
    assert answer["meta"] == {"limit": 50, "next": None}
    assert [(i["kind"], i["amount"], i["message_id"]) for i in items] == [
        ("adjustment", -1.5, None),
        ("refund", 0.0079, sent[1]),
        ("charge", -0.0079, sent[2]),
        ("charge", -0.0079, sent[1]),
        ("charge", -0.0079, sent[0]),
        ("topup", 10, None),
    ]
    ids = [i["id"] for i in items]
    assert ids == sorted(ids, reverse=True)
    for item in items:
        assert list(item) == COLUMNS
        assert TIME.match(item["created_at"]) and item["campaign_id"] is None
    assert (items[0]["note"], items[-1]["note"]) == ("goodwill", "opening balance")
    balance = client.get("/api/user/balance", headers=auth(token)).get_json()["data"]["balance"]
    assert balance == 8.4842
    assert sum(Decimal(str(i["amount"])) for i in items) == Decimal("8.4842")
    rows = _csv(client, token)
    assert rows == [COLUMNS] + [_as_csv(i) for i in items]
    assert sum(Decimal(row[2]) for row in rows[1:]) == Decimal("8.4842")


def test_pages_followed_to_the_end_give_every_row_once_filters_kept(client, session, engine):
    user_id, token = make_user(session, balance="0")
    _insert(engine, user_id, 95)
    everything = _walk(client, token, f"{PATH}?limit=7")
    assert [i["id"] for i in everything] == sorted((i["id"] for i in everything), reverse=True)
    assert len({i["id"] for i in everything}) == 95
    first = client.get(f"{PATH}?limit=7&kind=topup", headers=auth(token)).get_json()
    assert first["meta"]["next"] == f"{PATH}?limit=7&before={first['data'][-1]['id']}&kind=topup"
    topups = _walk(client, token, f"{PATH}?limit=2&kind=topup")
    assert topups == [i for i in everything if i["kind"] == "topup"]
    assert len(topups) == 9 and {i["amount"] for i in topups} == {1.2345}
    charges = _walk(client, token, f"{PATH}?limit=100&kind=charge")
    assert charges == [i for i in everything if i["kind"] == "charge"]
    assert {i["amount"] for i in charges} == {-0.0079}
    assert _walk(client, token, f"{PATH}?kind=refund") == []
    older = client.get(f"{PATH}?before={everything[90]['id']}", headers=auth(token)).get_json()
    assert older["data"] == everything[91:]
    balance = client.get("/api/user/balance", headers=auth(token)).get_json()["data"]["balance"]
    assert sum(Decimal(str(i["amount"])) for i in everything) == Decimal(str(balance))


def test_since_is_inclusive_until_exclusive_in_either_time_form(client, session, engine):
    user_id, token = make_user(session, balance="0")
    _insert(engine, user_id, 30)  # created 2026-01-01 00:00:01 to 00:00:30
    cases = {
        "since=2026-01-01%2000:00:10": 21,
        "until=2026-01-01%2000:00:10": 9,
        "since=2026-01-01%2000:00:10&until=2026-01-01%2000:00:20": 10,
        "since=2026-01-01T02:00:10%2B02:00&until=2026-01-01T00:00:20Z": 10,
        "since=2026-01-01%2000:00:10&until=2026-01-01%2000:00:20&kind=topup": 1,
        "since=2026-01-02%2000:00:00": 0,
    }
    for query, count in cases.items():
        items = _walk(client, token, f"{PATH}?limit=3&{query}")
        assert len(items) == count, query
        times = [i["created_at"] for i in items]
        if "since" in query:
            assert min(times, default="9") >= "2026-01-01 00:00:10", query
        if "until" in query:
            assert max(times, default="0") < "2026-01-01 00:00:20", query
        assert _csv(client, token, f"&{query}") == [COLUMNS] + [_as_csv(i) for i in items]


def test_bad_arguments_are_400_naming_the_field(client, session):
    _, token = make_user(session, balance="1")
    time_message = "must be a time: ISO 8601 with an offset, or YYYY-MM-DD HH:MM:SS (UTC)"
    cases = {
        "kind=gift": "The kind field must be one of topup, charge, refund, adjustment",
        "since=yesterday": f"The since field {time_message}",
        "until=2026-01-01T00:00:00": f"The until field {time_message}",  # no offset: no zone
        "since=2026-13-01%2000:00:00": f"The since field {time_message}",
        "format=xml": "The format field must be json or csv",
        "format=csv&kind=gift": "The kind field must be one of topup, charge, refund, adjustment",
        "format=csv&until=soon": f"The until field {time_message}",
        "limit=0": "The limit field must be an integer from 1 to 100",
        "before=x": f"The before field must be an integer from 1 to {2**63 - 1}",
        "page=2": "The page field is gone: lists are paged by limit and before",
    }
    for query, message in cases.items():
        answer = client.get(f"{PATH}?{query}", headers=auth(token))
        assert (answer.status_code, answer.get_json()) == (400, {"message": message}), query


def test_only_the_tokens_user_and_only_with_a_token(client, session, engine):
    mine, token = make_user(session, balance="2")
    theirs, _ = make_user(session, balance="3")
    _insert(engine, theirs, 20)
    data = client.get(PATH, headers=auth(token)).get_json()["data"]
    assert [(i["kind"], i["amount"]) for i in data] == [("topup", 2)]
    assert len(_csv(client, token)) == 2
    for query in ("", "?format=csv", "?kind=topup"):
        answer = client.get(PATH + query)
        assert (answer.status_code, answer.get_json()) == (401, {"message": "Unauthenticated"})
        bad = client.get(PATH + query, headers=auth("not-a-token"))
        assert bad.status_code == 401


def test_csv_of_200000_rows_streams_in_chunks_in_bounded_memory(app, client, session, engine):
    user_id, token = make_user(session, balance="0")
    started = time.monotonic()
    _insert(engine, user_id, BIG)
    inserted = time.monotonic()
    gw = app.extensions["smsgw"]
    reads = []

    def count(conn, cursor, statement, parameters, context, executemany):
        if "FROM ledger_entries" in statement:
            reads.append(gw.engine.pool.checkedout())

    event.listen(gw.engine, "before_cursor_execute", count)
    tracemalloc.start()
    try:
        response = client.get(f"{PATH}?format=csv", headers=auth(token), buffered=False)
        assert response.status_code == 200 and response.mimetype == "text/csv"
        pieces = iter(response.response)
        first = next(pieces).decode()
        # The first piece is out after one query of one chunk, and no connection is held.
        assert len(reads) == 1 and gw.engine.pool.checkedout() == 0
        lines = first.count("\r\n")
        assert first.startswith(",".join(COLUMNS) + "\r\n") and lines == 5001
        size, last = len(first), first
        for piece in pieces:
            lines += piece.count(b"\r\n")
            size += len(piece)
            last = piece.decode()
        response.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        event.remove(gw.engine, "before_cursor_execute", count)
    assert lines == BIG + 1
    assert len(reads) == BIG // 5000 and set(reads) == {1}  # each chunk on its own checkout
    assert last.endswith(",charge,-0.0079,1,,,2026-01-01 00:00:01\r\n")
    # One chunk of 5,000 rows is ~2 MB of Python objects, and its text ~0.25 MB; the
    # peak is one chunk, its text and the next chunk's fetch. Holding all 200,000 rows
    # would take ~80 MB, and even the whole text alone is ~10 MB: the bound is below both.
    assert peak < 8 * 2**20 < size, (peak, size)
    streamed = time.monotonic()
    print(
        f"\n{BIG} rows: insert {inserted - started:.1f}s, stream {streamed - inserted:.1f}s,"
        f" {size / 2**20:.1f} MB of CSV, peak traced memory {peak / 2**20:.2f} MB"
    )


def test_openapi_lists_the_route_and_its_answers_match(client, session):
    from tests.api.test_openapi import check

    _, token = make_user(session, balance="5")
    spec = client.get("/openapi.json").get_json()
    op = spec["paths"][PATH]["get"]
    assert {p["name"] for p in op["parameters"]} == {
        "limit",
        "before",
        "kind",
        "since",
        "until",
        "format",
    }
    assert op["security"] == [{"bearer": []}]
    check(spec, PATH, "get", 200, client.get(PATH, headers=auth(token)).get_json())
    check(spec, PATH, "get", 400, client.get(f"{PATH}?kind=x", headers=auth(token)).get_json())
    check(spec, PATH, "get", 401, client.get(PATH).get_json())
