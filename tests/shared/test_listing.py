"""Every filter of the message list is served by its own index, in id order: no scan, no sort.

User 1 holds a quarter of the table, and its newest messages are a backlog of
queued ones: with plain equalities PostgreSQL walks the primary key backwards
for the user instead, and the user's own index for `status=delivered`,
filtering as it goes, plans that read the whole table when the matching
messages are old (see `shared.listing`).
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from shared.db import Base
from shared.listing import messages_query, page_query
from shared.models import Message

# 60,000 messages of 4 users, in the mix of a busy gateway; user 1 has two campaigns.
LOAD = """
INSERT INTO users (id, email, balance, webhook_secret, created_at)
    SELECT u, 'user' || u || '@example.com', 100, 's', now() FROM generate_series(1, 4) u;
INSERT INTO phone_numbers (id, user_id, number, sms_capable, mps, created_at)
    SELECT u, u, '+1500555000' || u, true, 1, now() FROM generate_series(1, 4) u;
INSERT INTO campaigns (id, user_id, phone_number_id, body, status, total, accepted, rejected,
    duplicates, rejections, total_cost, cursor, purged, created_at, updated_at)
    SELECT c, 1, 1, 'Hi', 'completed', 0, 0, 0, 0, '[]', 0, 0, '{}', now(), now()
    FROM generate_series(1, 2) c;
INSERT INTO messages (id, user_id, phone_number_id, from_number, "to", body, segments, encoding,
    segment_price, total_cost, status, handoff, attempts, campaign_id, created_at, updated_at)
    SELECT g, 1 + g % 4, 1 + g % 4, '+15005550001', '+1415' || lpad((g % 20000)::text, 7, '0'),
        'Hi', 1, 'GSM-7', 0.0079, 0.0079,
        CASE WHEN g % 100 < 90 THEN 'delivered' WHEN g % 100 < 95 THEN 'sent'
             WHEN g % 100 < 97 THEN 'undelivered' WHEN g % 100 < 99 THEN 'failed'
             ELSE 'queued' END,
        'done', 1, CASE g % 12 WHEN 0 THEN 1 WHEN 4 THEN 2 END, now(), now()
    FROM generate_series(1, 60000) g;
-- User 1's newest: a backlog of 2,000 queued messages.
INSERT INTO messages (id, user_id, phone_number_id, from_number, "to", body, segments, encoding,
    segment_price, total_cost, status, handoff, attempts, created_at, updated_at)
    SELECT g, 1, 1, '+15005550001', '+1212' || lpad(g::text, 7, '0'), 'Hi', 1, 'GSM-7', 0.0079,
        0.0079, 'queued', 'pending', 0, now(), now()
    FROM generate_series(60001, 62000) g;
ANALYZE;
"""

FILTERS = {
    "none": ({}, "ix_messages_user_id_id"),
    "status": ({"status": "failed"}, "ix_messages_status_user_id_id"),
    "status, most messages": ({"status": "delivered"}, "ix_messages_status_user_id_id"),
    "campaign_id": ({"campaign_id": 2}, "ix_messages_campaign_id_id"),
    "to": ({"to": "+14150000124"}, "ix_messages_to_user_id_id"),
}


def nodes(plan: dict[str, Any]):
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


@pytest.fixture
def loaded(engine):
    names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))  # the ids below are fixed
        conn.connection.driver_connection.execute(LOAD)
    return engine


@pytest.mark.parametrize("before", [None, 30000], ids=["first page", "deep page"])
@pytest.mark.parametrize("name", list(FILTERS))
def test_each_filter_reads_one_index_in_id_order(loaded, name, before):
    filters, index = FILTERS[name]
    query = page_query(*messages_query(user_id=1, **filters), Message.id, limit=50, before=before)
    sql = str(query.compile(loaded, compile_kwargs={"literal_binds": True}))
    with loaded.connect() as conn:
        [[[explained]]] = conn.execute(text(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}")).all()
    plan = list(nodes(explained["Plan"]))
    kinds = [node["Node Type"] for node in plan]
    assert "Seq Scan" not in kinds and "Sort" not in kinds and "Bitmap Heap Scan" not in kinds
    scans = [node for node in plan if node["Node Type"] in ("Index Scan", "Index Only Scan")]
    assert [(node["Index Name"], node["Scan Direction"]) for node in scans] == [(index, "Backward")]
    # It reads the page and one row more, nothing it then throws away.
    assert scans[0]["Actual Rows"] <= 51 and scans[0].get("Rows Removed by Filter", 0) == 0
