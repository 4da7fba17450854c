"""Every filter of the inbound list is served by its own index, in id order (as `test_listing`)."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from shared import inbound
from shared.db import Base
from shared.listing import page_query
from shared.models import InboundMessage

# 40,000 inbound messages of 4 users on 8 numbers from 2,000 senders; user 1's newest
# are a burst from one sender to one number. (A sender with less than a page may
# be read by a bitmap scan of the same index and sorted: a handful of rows.)
LOAD = """
INSERT INTO users (id, email, balance, webhook_secret, created_at)
    SELECT u, 'in' || u || '@example.com', 0, 's', now() FROM generate_series(1, 4) u;
INSERT INTO phone_numbers (id, user_id, number, sms_capable, mps, created_at)
    SELECT n, 1 + (n - 1) % 4, '+1500555002' || n, true, 1, now() FROM generate_series(1, 8) n;
INSERT INTO inbound_messages (id, user_id, phone_number_id, from_number, "to", body, sms_sid,
    received_at)
    SELECT g, 1 + (g % 8) % 4, 1 + g % 8, '+1415' || lpad((g % 2000)::text, 7, '0'),
        '+1500555002' || (1 + g % 8), 'Hi', 'SM' || md5(g::text), now()
    FROM generate_series(1, 40000) g;
INSERT INTO inbound_messages (id, user_id, phone_number_id, from_number, "to", body, sms_sid,
    received_at)
    SELECT g, 1, 1, '+14159999999', '+15005550021', 'Burst', 'SM' || md5(g::text), now()
    FROM generate_series(40001, 42000) g;
ANALYZE;
"""


def nodes(plan):
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


@pytest.mark.parametrize(
    ("filters", "index"),
    [
        ({}, "ix_inbound_messages_user_id_id"),
        ({"phone_number_id": 5}, "ix_inbound_messages_phone_number_id_id"),
        ({"from_": "+14159999999"}, "ix_inbound_messages_from_number_user_id_id"),
    ],
    ids=["none", "phone_number_id", "from"],
)
@pytest.mark.parametrize("before", [None, 20000], ids=["first page", "deep page"])
def test_each_filter_reads_one_index_in_id_order(engine, filters, index, before):
    plan = explain(engine, filters, before)
    kinds = [node["Node Type"] for node in plan]
    assert "Seq Scan" not in kinds and "Sort" not in kinds and "Bitmap Heap Scan" not in kinds
    scans = [node for node in plan if node["Node Type"] in ("Index Scan", "Index Only Scan")]
    assert [(node["Index Name"], node["Scan Direction"]) for node in scans] == [(index, "Backward")]
    # It reads the page and one row more, nothing it then throws away.
    assert scans[0]["Actual Rows"] <= 51 and scans[0].get("Rows Removed by Filter", 0) == 0


def test_a_sender_and_a_number_read_only_the_senders_messages_to_the_user(engine):
    # Not the bitmap of every message to the number: only the sender's index range.
    plan = explain(engine, {"from_": "+14159999999", "phone_number_id": 1}, None)
    assert "Seq Scan" not in [node["Node Type"] for node in plan]
    scans = [node for node in plan if "Index Name" in node]
    assert [node["Index Name"] for node in scans] == ["ix_inbound_messages_from_number_user_id_id"]
    assert scans[0]["Actual Rows"] <= 2000


def explain(engine, filters, before) -> list[dict]:
    """Load LOAD and return the nodes of the plan of user 1's page with the filters."""
    names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))  # the ids are fixed
        conn.connection.driver_connection.execute(LOAD)
    query, key = inbound.inbound_query(user_id=1, **filters)  # numbers 1 and 5 are user 1's
    statement = page_query(query, key, InboundMessage.id, limit=50, before=before)
    sql = str(statement.compile(engine, compile_kwargs={"literal_binds": True}))
    with engine.connect() as conn:
        [[[explained]]] = conn.execute(text(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}")).all()
    return list(nodes(explained["Plan"]))
