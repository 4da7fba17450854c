"""`python -m bench scheduling`: 100,000 messages scheduled for one instant.

50,000 single sends and a campaign of 50,000 (its number at `--mps`) are all
scheduled for the same moment, half a minute ahead. Beat (its own process)
and two workers on every queue run as in production, against the sandbox at
0 ms. Printed: what waits in the broker before that moment (nothing: the
messages are rows), how long after it the first single and the first campaign
message reached Twilio, and the rates of both over the next `--seconds`
(singles as fast as the workers go, the campaign at its number's rate).
Stored times have whole seconds.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from tempfile import TemporaryDirectory

import redis
from sqlalchemy import create_engine, text

from api.dev import free_port
from bench.services import BIN, database, gateway_env, process, redis_server, seed_sender
from shared.db import utcnow
from shared.settings import load_settings
from worker.factory import make_celery

LEAD = timedelta(seconds=30)
_MESSAGES = (
    'INSERT INTO messages (user_id, phone_number_id, from_number, "to", body, segments,'
    " encoding, segment_price, total_cost, status, handoff, attempts, send_at, campaign_id,"
    " created_at, updated_at)"
    " SELECT n.user_id, n.id, n.number, '+1415' || lpad(g::text, 7, '0'), 'Doors open now', 1,"
    " 'GSM-7', 0.0079, 0.0079, 'scheduled', 'pending', 0, :due, :campaign, now(), now()"
    " FROM phone_numbers n, generate_series(1, :count) g WHERE n.id = :number"
)


def main(argv: list[str] | None = None) -> int:
    """Schedule, wait for the moment, and report how the release went."""
    parser = argparse.ArgumentParser(prog="python -m bench scheduling")
    parser.add_argument("--count", type=int, default=50_000, help="singles, and campaign size")
    parser.add_argument("--mps", type=int, default=100, help="the campaign number's rate")
    parser.add_argument("--seconds", type=int, default=30, help="how long rates are measured")
    args = parser.parse_args(argv)
    with ExitStack() as stack:
        db_url = stack.enter_context(database("smsgw_bench_scheduling"))
        redis_url = stack.enter_context(redis_server())
        tmp = Path(stack.enter_context(TemporaryDirectory()))
        singles_number, _ = seed_sender(db_url, balance="100000000")
        campaign_number, _ = seed_sender(db_url, balance="100000000", mps=args.mps)
        engine = create_engine(db_url)
        due = (utcnow() + LEAD).replace(microsecond=0)
        chain = str(uuid.uuid4())
        with engine.begin() as conn:
            campaign = conn.scalar(
                text(
                    "INSERT INTO campaigns (user_id, phone_number_id, body, status, total,"
                    " accepted, rejected, duplicates, rejections, total_cost, purged, cursor,"
                    " pump_chain, send_at, created_at, updated_at)"
                    " SELECT user_id, id, 'Doors open now', 'scheduled', :count, :count, 0, 0,"
                    " '[]', 0, '{}', 0, :chain, :due, now(), now() FROM phone_numbers"
                    " WHERE id = :number RETURNING id"
                ),
                {"count": args.count, "chain": chain, "due": due, "number": campaign_number},
            )
            for number, campaign_id in ((singles_number, None), (campaign_number, campaign)):
                params = {"count": args.count, "due": due, "number": number}
                conn.execute(text(_MESSAGES), {**params, "campaign": campaign_id})
        sandbox_port = free_port()
        env = gateway_env(
            db_url,
            redis_url,
            TWILIO_API_BASE=f"http://127.0.0.1:{sandbox_port}",
            WORKER_METRICS_PORT="0",
        )
        sandbox = [str(BIN / "smsgw"), "sandbox", "--port", str(sandbox_port), "--quiet"]
        stack.enter_context(process(sandbox + ["--no-callbacks"], env=env, port=sandbox_port))
        celery = [str(BIN / "celery"), "-A", "worker.celery_app"]
        beat = [*celery, "beat", "--schedule", str(tmp / "beat"), "-l", "WARNING"]
        stack.enter_context(process(beat, env=env, log=tmp / "beat.log"))
        for n in range(2):
            worker = [*celery, "worker", "-P", "threads", "-c", "16", "-n", f"w{n}@%h"]
            worker += ["-Q", "sms,campaign,callbacks", "-l", "WARNING", "--without-gossip"]
            stack.enter_context(process(worker, env=env, log=tmp / f"worker{n}.log"))
        app = make_celery(load_settings(env))
        app.send_task("pump_campaign", args=[campaign, chain], queue="campaign")
        client = redis.Redis.from_url(redis_url)
        while utcnow() < due - timedelta(seconds=1):
            time.sleep(0.2)
        waiting = {name: client.llen(name) for name in ("sms", "campaign", "callbacks")}
        with engine.connect() as conn:
            while utcnow() < due + timedelta(seconds=args.seconds):
                time.sleep(0.5)
            rows = conn.execute(
                text(
                    "SELECT campaign_id IS NOT NULL AS campaign, count(*), min(handoff_at),"
                    " max(handoff_at) FROM messages WHERE sms_sid IS NOT NULL"
                    " AND handoff_at < :end GROUP BY 1"
                ),
                {"end": due + timedelta(seconds=args.seconds)},
            ).all()
        app.close()
        engine.dispose()
    print(
        f"\nscheduled for {due:%H:%M:%S} UTC: {args.count:,} singles, a campaign of "
        f"{args.count:,} at {args.mps} mps"
    )
    print(f"broker queues one second before: {json.dumps(waiting)}")
    print(f"{'':10} | {'first at':>9} | {'handed over':>11} | {'rate':>9} | goal")
    for is_campaign, count, first, _last in sorted(rows):
        name = "campaign" if is_campaign else "singles"
        after = (first - due).total_seconds()
        rate = count / args.seconds
        goal = f"first <= 5 s, {args.mps}/s" if is_campaign else "first <= 5 s"
        print(f"{name:10} | {after:+8.0f}s | {count:11,} | {rate:7.1f}/s | {goal}")
    return 0
