"""`POST /api/user/sms` under `smsgw api` and wrk, beside a fixed reference.

The reference is a bare Flask endpoint answering the same JSON
(`bench/bare_app.py`) under plain `gunicorn -w 4` (sync workers, no config
file): a yardstick of this machine at that moment, not a rival design. The
gateway runs as it is deployed: `smsgw api` with its defaults. wrk drives each
with the same connections for the same time, in alternating rounds. The
gateway's requests do everything a real
send does: auth, validation, pricing, the atomic charge, the commit and the
enqueue, once with Redis as the broker and once with RabbitMQ (a vhost on the
machine's server; its publishes wait for the broker's confirms), and once more
on Redis with a database that holds a million scheduled messages waiting (their
user's and number's own): they must cost the send path nothing.
"""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import requests
from sqlalchemy import text

from api.dev import free_port
from bench.services import (
    BIN,
    database,
    gateway_env,
    process,
    rabbitmq_vhost,
    redis_server,
    seed_sender,
)
from shared.db import make_engine

ROOT = Path(__file__).resolve().parent.parent
WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '{"from": %(number)d, "to": "+14155550123", "body": "Hello from the benchmark"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(token)s"
"""


def serve_api(port: int) -> list[str]:
    """Return the command the gateway's API is served with: `smsgw api`, its defaults."""
    return [str(BIN / "smsgw"), "api", "--bind", f"127.0.0.1:{port}"]


def reference(port: int) -> list[str]:
    """Return the reference's command: the bare endpoint under plain `gunicorn -w 4`."""
    return [str(BIN / "gunicorn"), "-w", "4", "-b", f"127.0.0.1:{port}", REFERENCE_APP]


def wrk(url: str, script: Path, *, connections: int, seconds: int) -> dict[str, float]:
    """Run wrk and return requests/s, p50 and p99 latency in ms, and the error count."""
    out = subprocess.run(
        [
            "wrk",
            "-t",
            str(min(2, connections)),
            "-c",
            str(connections),
            "-d",
            f"{seconds}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)

    def percentile(p: str) -> float:
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return {
        "rate": rate,
        "p50": percentile("50"),
        "p99": percentile("99"),
        "bad": float(non2xx.group(1)) if non2xx else 0.0,
        "socket_errors": bool(errors),
    }


def _wait_for_app(url: str, seconds: float = 60) -> None:
    """Wait until the app answers: gunicorn opens the port before its workers load it."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=5)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer in {seconds:.0f} s")


REFERENCE_APP = "bench.bare_app:create_app()"
# Each configuration: its name, its command, whether its tasks go through RabbitMQ,
# and whether its database holds a million scheduled messages.
APPS = (
    ("reference: bare Flask, gunicorn -w 4", reference, False, False),
    ("POST /api/user/sms", serve_api, False, False),
    ("POST /api/user/sms, RabbitMQ", serve_api, True, False),
    ("POST /api/user/sms, 1M scheduled", serve_api, False, True),
)
SCHEDULED = 1_000_000


def schedule_many(database_url: str, count: int) -> None:
    """Write `count` scheduled messages of the database's sender, due over days weeks ahead."""
    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                'INSERT INTO messages (user_id, phone_number_id, from_number, "to", body,'
                " segments, encoding, segment_price, total_cost, status, handoff, attempts,"
                " send_at, created_at, updated_at)"
                " SELECT n.user_id, n.id, n.number, '+1415555' || lpad((g % 10000)::text, 4, '0'),"
                " 'Your appointment is tomorrow', 1, 'GSM-7', 0.0079, 0.0079, 'scheduled',"
                " 'pending', 0, now() + interval '20 days' + (g % 86400) * interval '1 second',"
                " now(), now()"
                " FROM phone_numbers n, generate_series(1, :count) g"
            ),
            {"count": count},
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE messages"))
    engine.dispose()


MEASURES = ("rate", "p50", "p99")


def run(*, connections: int = 32, seconds: int = 10, rounds: int = 3) -> list[dict]:
    """Measure both apps, alternating, `rounds` times; return one row each, of median figures.

    A row's `rounds` holds its rate in each round: on a shared 2-core machine
    one run's ratio can be off by a third, the median of alternating runs much less.
    """
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")
    runs: dict[str, list[dict]] = {name: [] for name, _, _, _ in APPS}
    with (
        database("smsgw_bench_api") as db_url,
        database("smsgw_bench_api_scheduled") as scheduled_url,
        redis_server() as redis_url,
        rabbitmq_vhost("smsgw_bench_api") as amqp_url,
        tempfile.TemporaryDirectory() as tmp,
    ):
        scripts, envs = {}, {}
        for url in (db_url, scheduled_url):
            number_id, token = seed_sender(url)
            scripts[url] = Path(tmp) / f"send-{len(scripts)}.lua"
            scripts[url].write_text(WRK_SCRIPT % {"number": number_id, "token": token})
            # One token sends them all: the limiter counts every request, and lets them through.
            envs[url] = gateway_env(url, redis_url, RATE_LIMIT_PER_MINUTE=str(10**9))
        print(f"writing {SCHEDULED:,} scheduled messages...", flush=True)
        schedule_many(scheduled_url, SCHEDULED)
        for _ in range(rounds):
            for name, command, amqp, scheduled in APPS:
                port = free_port()
                broker = {"BROKER_URL": amqp_url} if amqp else {}
                used = scheduled_url if scheduled else db_url
                env, script = envs[used], scripts[used]
                with process(command(port), env={**env, **broker}, port=port):
                    url = f"http://127.0.0.1:{port}/api/user/sms"
                    _wait_for_app(url)
                    wrk(url, script, connections=connections, seconds=3)  # warm up every worker
                    runs[name].append(wrk(url, script, connections=connections, seconds=seconds))
    return [
        {
            "what": name,
            **{key: statistics.median(result[key] for result in results) for key in MEASURES},
            "bad": sum(result["bad"] for result in results),  # non-2xx answers, all rounds
            "socket_errors": any(result["socket_errors"] for result in results),
            "rounds": [result["rate"] for result in results],
        }
        for name, results in runs.items()
    ]
