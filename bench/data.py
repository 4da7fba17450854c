"""`python -m bench data`: the gateway as its tables grow, at 0, 1,000,000 and 10,000,000 messages.

One database per size, bulk-loaded in SQL (several users, a realistic mix of
statuses over two months, a tenth of the messages in 100,000-recipient
campaigns, a ledger row for every charge and refund, one campaign still
queued) and analyzed. Then, on every database:

- the send rate of `POST /api/user/sms` under `smsgw api` and wrk (32
  connections), in rounds alternating between the databases, medians;
- p50 / p99 of `GET /api/user/sms` (wrk, one connection: a request's own latency, the
  send rate is the load figure): the first page, a page
  1,000,000 rows deep (or the deepest there is), and each filter;
- one reconciliation pass (the take-over of lapsed hand-offs and the fetch of
  unfinished ones) and one requeue pass, timed in this process, as beat runs
  them. A few recent messages are left stuck for them to settle; Twilio is a
  stub that answers at once, so the figure is the database's part.

Loading 10,000,000 messages takes a few minutes; the databases are dropped
at the end (`--keep` keeps them for a run with `--reuse`, which loads nothing).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

import psycopg
from sqlalchemy import text

from api.dev import free_port
from bench.api_send import WRK_SCRIPT, _wait_for_app, serve_api, wrk
from bench.services import POSTGRES_URL, database, gateway_env, process, redis_server
from shared import reconcile
from shared.accounts import hash_token
from shared.db import Base, make_engine, make_session_factory
from shared.handoff import requeue_stale
from shared.migrate import upgrade
from shared.providers import Fetched, Sent

SIZES = (0, 1_000_000, 10_000_000)
CHUNK = 1_000_000
DEEP = 1_000_000
TOKEN = "bench-data-token"
# Five users; the first is the one the benchmark sends and lists as (40% of the messages).
SHARES = (40, 30, 15, 10, 5)

SEED = """
INSERT INTO users (id, email, balance, webhook_secret, created_at)
    SELECT u, 'user' || u || '@example.com', 0, 'secret', now() - interval '90 days'
    FROM generate_series(1, 5) u;
INSERT INTO api_tokens (user_id, token_hash, created_at) VALUES (1, '{token_hash}', now());
INSERT INTO phone_numbers (id, user_id, number, sms_capable, mps, created_at)
    SELECT u, u, '+1500555000' || u, true, 1, now() FROM generate_series(1, 5) u;
INSERT INTO prices (country, price, updated_at) VALUES ('US', 0.0079, now());
INSERT INTO ledger_entries (user_id, amount, kind, note, created_at)
    SELECT u, 1000000, 'topup', 'opening balance', now() - interval '90 days'
    FROM generate_series(1, 5) u;
"""

# Row g of the load: a campaign message when its block of 100,000 ids is one of
# every tenth block, else a single send; statuses in a busy gateway's mix, all
# settled weeks ago (the recent, unsettled ones are planted by RECENT).
LOAD = """
INSERT INTO campaigns (id, user_id, phone_number_id, body, status, total, accepted, rejected,
    duplicates, rejections, total_cost, cursor, purged, created_at, updated_at)
    SELECT b, 1 + (b / 10) % 5, 1 + (b / 10) % 5, 'Hi {{name}}', 'completed', 100000, 100000,
        0, 0, '[]',
        790, (b + 1) * 100000, '{{}}', now() - interval '30 days', now() - interval '30 days'
    FROM generate_series({first} / 100000, ({last} - 1) / 100000) b WHERE b % 10 = 3;
INSERT INTO messages (id, user_id, phone_number_id, from_number, "to", body, segments,
    encoding, segment_price, total_cost, status, handoff, attempts, sms_sid, campaign_id,
    created_at, updated_at)
SELECT g, s.user_id, s.user_id, '+1500555000' || s.user_id,
    '+1' || (2025550000 + g % 1000000), 'Your code is ' || g % 10000, 1, 'GSM-7',
    0.0079, 0.0079, s.status, 'done', 1,
    CASE WHEN s.status <> 'canceled' THEN 'SM' || md5(g::text) END, s.campaign_id,
    s.at, s.at + interval '5 seconds'
FROM generate_series({first}::bigint, {last} - 1) g,
LATERAL (SELECT
    CASE WHEN (g / 100000) % 10 = 3 THEN 1 + (g / 1000000) % 5
         WHEN (g * 7919) % 100 < 40 THEN 1 WHEN (g * 7919) % 100 < 70 THEN 2
         WHEN (g * 7919) % 100 < 85 THEN 3 WHEN (g * 7919) % 100 < 95 THEN 4 ELSE 5 END
        AS user_id,
    CASE WHEN (g * 104729) % 1000 < 900 THEN 'delivered' WHEN (g * 104729) % 1000 < 940 THEN 'sent'
         WHEN (g * 104729) % 1000 < 970 THEN 'undelivered'
         WHEN (g * 104729) % 1000 < 990 THEN 'failed' ELSE 'canceled' END AS status,
    CASE WHEN (g / 100000) % 10 = 3 THEN g / 100000 END AS campaign_id,
    now() - interval '64 days' + interval '60 days' * g / {size} AS at
) s;
INSERT INTO ledger_entries (user_id, amount, kind, message_id, campaign_id, note, created_at)
    SELECT user_id, -total_cost, 'charge', id, NULL, NULL, created_at FROM messages
    WHERE id >= {first} AND id < {last} AND campaign_id IS NULL;
INSERT INTO ledger_entries (user_id, amount, kind, message_id, campaign_id, note, created_at)
    SELECT user_id, -total_cost, 'charge', NULL, id, 'campaign ' || id || ': 100000 messages',
        created_at FROM campaigns WHERE id >= {first} / 100000 AND id <= ({last} - 1) / 100000;
INSERT INTO ledger_entries (user_id, amount, kind, message_id, campaign_id, note, created_at)
    SELECT user_id, total_cost, 'refund', id, campaign_id, 'failed', updated_at FROM messages
    WHERE id >= {first} AND id < {last} AND status IN ('failed', 'canceled');
"""

# What a running gateway has in flight: a campaign still queued at its number's rate,
# and a few stuck messages for reconciliation and the requeue to find.
RECENT = """
INSERT INTO campaigns (id, user_id, phone_number_id, body, status, total, accepted, rejected,
    duplicates, rejections, total_cost, cursor, purged, created_at, updated_at)
    VALUES (1000000, 2, 2, 'Sale', 'sending', 20000, 20000, 0, 0, '[]', 158, 0, '{{}}',
        now() - interval '1 hour', now() - interval '1 hour');
INSERT INTO messages (id, user_id, phone_number_id, from_number, "to", body, segments, encoding,
    segment_price, total_cost, status, handoff, attempts, sms_sid, campaign_id, handoff_at,
    created_at, updated_at)
SELECT {first} + g, 2, 2, '+15005550002', '+1' || (3125550000 + g), 'Sale', 1, 'GSM-7', 0.0079,
    0.0079, 'queued', 'pending', 0, NULL, 1000000, NULL::timestamp,
    now() - interval '1 hour', now() - interval '1 hour'
FROM generate_series(0, 19999) g
UNION ALL
SELECT {first} + 20000 + g, 1, 1, '+15005550001', '+1' || (4155550000 + g), 'Stuck', 1, 'GSM-7',
    0.0079, 0.0079, 'queued', 'pending', 1, NULL, NULL, NULL, now(), now()
FROM generate_series(0, 14) g;
INSERT INTO ledger_entries (user_id, amount, kind, message_id, campaign_id, note, created_at)
    SELECT 2, -158, 'charge', NULL, 1000000, 'campaign 1000000: 20000 messages', now();
INSERT INTO ledger_entries (user_id, amount, kind, message_id, created_at)
    SELECT user_id, -total_cost, 'charge', id, created_at FROM messages
    WHERE id >= {first} + 20000;
UPDATE users u SET balance = (SELECT sum(amount) FROM ledger_entries l WHERE l.user_id = u.id);
SELECT setval('messages_id_seq', (SELECT max(id) FROM messages));
SELECT setval('campaigns_id_seq', (SELECT max(id) FROM campaigns));
"""

# Before each pass: five messages whose hand-off stopped mid-call (no SID), five sent
# without a delivery report, five whose enqueue was lost; all two hours ago.
STUCK = """
UPDATE messages m SET
    status = CASE WHEN s.n < 5 THEN 'sending' WHEN s.n < 10 THEN 'sent' ELSE 'queued' END,
    handoff = CASE WHEN s.n < 5 THEN 'in_flight' WHEN s.n < 10 THEN 'done' ELSE 'pending' END,
    sms_sid = CASE WHEN s.n >= 5 AND s.n < 10 THEN 'SM' || md5('stuck' || m.id) END,
    error_code = NULL, error_message = NULL,
    created_at = now() - interval '2 hours', updated_at = now() - interval '2 hours',
    handoff_at = now() - interval '2 hours',
    lease_until = CASE WHEN s.n < 5 THEN now() - interval '2 hours' END
FROM (SELECT id, row_number() OVER (ORDER BY id) - 1 AS n FROM messages WHERE body = 'Stuck') s
WHERE m.id = s.id;
"""


class InstantTwilio:
    """Twilio for the reconciliation pass: reports every SID it is asked for delivered."""

    def send(
        self,
        *,
        to: str,
        from_: str,
        body: str,
        status_callback: str,
        validity_period: int | None = None,
    ) -> Sent:
        raise AssertionError("reconciliation never sends")

    def find(self, **_: object) -> Sent | None:
        raise AssertionError("the take-over leaves the lookup to the next hand-off")

    def fetch(self, sid: str) -> Fetched:
        return Fetched(sid=sid, status="delivered", error_code=None, error_message=None)


def load(url: str, size: int) -> float:
    """Fill a migrated database with `size` messages and what goes with them; return seconds."""
    started = time.monotonic()
    engine = make_engine(url)
    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
        conn.execute(SEED.format(token_hash=hash_token(TOKEN)))
        indexes = [i for table in ("messages", "ledger_entries") for i in _indexes(table)]
        with engine.begin() as sa_conn:
            for index in indexes:  # built once at the end: much faster than row by row
                index.drop(sa_conn)
        for first in range(1, size + 1, CHUNK):
            last = min(first + CHUNK, size + 1)
            conn.execute(LOAD.format(first=first, last=last, size=max(size, 1)))
            print(f"  {url.rsplit('/', 1)[-1]}: {last - 1:,} messages", flush=True)
        conn.execute(RECENT.format(first=size + 1))
        with engine.begin() as sa_conn:
            for index in indexes:
                index.create(sa_conn)
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")  # the load's writes reach the disk now, not in the rounds
    engine.dispose()
    return time.monotonic() - started


def _indexes(table: str) -> list:
    return sorted(Base.metadata.tables[table].indexes, key=lambda index: index.name)


def list_queries(url: str) -> dict[str, str]:
    """Return the list paths to time, with ids and values read from this database."""
    engine = make_engine(url)
    with engine.connect() as conn:
        deep = conn.scalar(
            text(
                "SELECT id FROM messages WHERE user_id = 1 ORDER BY id DESC OFFSET GREATEST(0,"
                " LEAST(:deep, (SELECT count(*) FROM messages WHERE user_id = 1) - 50)) LIMIT 1"
            ),
            {"deep": DEEP},
        )
        campaign = conn.scalar(text("SELECT min(id) FROM campaigns WHERE user_id = 1"))
        to = conn.scalar(text('SELECT "to" FROM messages WHERE user_id = 1 LIMIT 1'))
    engine.dispose()
    queries = {
        "first page": "/api/user/sms",
        f"{DEEP:,} rows deep": f"/api/user/sms?before={deep}",
        "status=delivered": "/api/user/sms?status=delivered",
        "status=failed": "/api/user/sms?status=failed",
        "to=": f"/api/user/sms?to={to.replace('+', '%2B')}",
        "campaign_id=": f"/api/user/sms?campaign_id={campaign}" if campaign else "",
    }
    return {name: path for name, path in queries.items() if path}


def passes(url: str) -> dict[str, float]:
    """Time a reconciliation pass and a requeue pass, in ms, as beat runs them, then idle ones."""
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(STUCK.replace("%", "%%"))
    factory = make_session_factory(engine)
    figures: dict[str, float] = {}
    for run in ("", "idle "):
        started = time.perf_counter()
        taken = reconcile.take_over(factory, hold_seconds=60, limit=1000)
        unfinished = reconcile.reconcile_unfinished(
            factory, InstantTwilio(), older_than_seconds=3600, limit=100
        )
        reconciled = time.perf_counter()
        requeued = requeue_stale(factory, older_than_seconds=120, limit=500)
        done = time.perf_counter()
        figures[f"{run}reconcile"] = (reconciled - started) * 1000
        figures[f"{run}requeue"] = (done - reconciled) * 1000
        if not run:
            figures["settled"] = len(taken.resend) + len(unfinished.updated)
            figures["requeued"] = len(requeued)
    engine.dispose()
    return figures


def main(argv: list[str] | None = None) -> int:
    """Load the databases, measure each, print the table."""
    parser = argparse.ArgumentParser(prog="python -m bench data")
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--keep", action="store_true", help="Keep the databases afterwards.")
    parser.add_argument("--reuse", action="store_true", help="Use databases kept by --keep.")
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",")]
    with ExitStack() as stack:
        urls = {}
        for size in sizes:
            name = f"smsgw_bench_data_{size}"
            if args.reuse:
                urls[size] = f"{POSTGRES_URL}/{name}"
                upgrade(urls[size])  # kept by an older version of the gateway, perhaps
                with psycopg.connect(f"{POSTGRES_URL}/{name}".replace("+psycopg", "")) as conn:
                    conn.execute("CHECKPOINT")
                continue
            url = stack.enter_context(database(name, keep=args.keep))
            print(f"loading {size:,} messages ...", flush=True)
            print(f"  loaded in {load(url, size):.0f} s", flush=True)
            urls[size] = url
        results: dict[int, dict] = {size: {"rates": [], "p99s": []} for size in sizes}
        passes(urls[sizes[0]])  # warm up: the first pass of a process compiles its statements
        for size in sizes:
            results[size]["passes"] = passes(urls[size])
        redis_url = stack.enter_context(redis_server())
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        for round_ in range(args.rounds):
            for size in sizes:
                rate = _send_round(urls[size], redis_url, tmp, args.seconds)
                results[size]["rates"].append(rate["rate"])
                results[size]["p99s"].append(rate["p99"])
                print(f"  round {round_ + 1}, {size:,}: {rate['rate']:.0f} sends/s", flush=True)
        for size in sizes:
            results[size]["lists"] = _list_latencies(urls[size], redis_url, tmp)
    _print(sizes, results)
    return 0


def _serve(url: str, redis_url: str):
    port = free_port()
    env = gateway_env(url, redis_url, RATE_LIMIT_PER_MINUTE=str(10**9))
    return port, process(serve_api(port), env=env, port=port)


def _send_round(url: str, redis_url: str, tmp: Path, seconds: int) -> dict[str, float]:
    script = tmp / "send.lua"
    script.write_text(WRK_SCRIPT % {"number": 1, "token": TOKEN})
    port, served = _serve(url, redis_url)
    with served:
        target = f"http://127.0.0.1:{port}/api/user/sms"
        _wait_for_app(target)
        wrk(target, script, connections=32, seconds=3)
        return wrk(target, script, connections=32, seconds=seconds)


def _list_latencies(url: str, redis_url: str, tmp: Path) -> dict[str, dict[str, float]]:
    script = tmp / "list.lua"
    script.write_text(f'wrk.headers["Authorization"] = "Bearer {TOKEN}"\n')
    port, served = _serve(url, redis_url)
    figures = {}
    with served:
        base = f"http://127.0.0.1:{port}"
        _wait_for_app(base + "/healthz")
        for name, path in list_queries(url).items():
            wrk(base + path, script, connections=1, seconds=2)  # warm the pages it reads
            figures[name] = wrk(base + path, script, connections=1, seconds=5)
    return figures


def _print(sizes: list[int], results: dict) -> None:
    header = f"{'measure':34}" + "".join(f" | {size:>12,}" for size in sizes)
    print(f"\nmessages in the database      {datetime.now():%Y-%m-%d %H:%M}\n{header}")

    def row(what: str, values: list[str]) -> None:
        print(f"{what:34}" + "".join(f" | {value:>12}" for value in values))

    empty = statistics.median(results[sizes[0]]["rates"])
    rates = [statistics.median(results[size]["rates"]) for size in sizes]
    row("POST /api/user/sms, sends/s", [f"{rate:,.0f}" for rate in rates])
    row("  against the first size", [f"{rate / empty - 1:+.1%}" for rate in rates])
    row("  p99 ms", [f"{statistics.median(results[s]['p99s']):.1f}" for s in sizes])
    names = list(results[sizes[-1]]["lists"])
    for name in names:
        row(
            f"GET {name}, p50 / p99 ms",
            [
                f"{results[s]['lists'][name]['p50']:.1f} / {results[s]['lists'][name]['p99']:.1f}"
                if name in results[s]["lists"]
                else "-"
                for s in sizes
            ],
        )
    for kind, moved in (("reconcile", "settled"), ("requeue", "requeued")):
        row(
            f"{kind} pass, ms ({moved}) / idle",
            [
                f"{results[s]['passes'][kind]:.1f} ({results[s]['passes'][moved]:.0f})"
                f" / {results[s]['passes']['idle ' + kind]:.1f}"
                for s in sizes
            ],
        )
    print(
        f"\nsend rate: median of {len(results[sizes[0]]['rates'])} rounds alternating between"
        f" the databases, 32 connections; lists: wrk, 1 connection, 5 s each; at {POSTGRES_URL}"
    )
