"""`POST /api/user/sms` under gunicorn and wrk, beside a bare Flask endpoint with the same settings.

Both apps run under the same gunicorn command; wrk drives each with the same
connections for the same time. The gateway's requests do everything a real
send does: auth, validation, pricing, the atomic charge, the commit and the
enqueue to Redis.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from api.dev import free_port
from bench.services import BIN, database, gateway_env, process, redis_server, seed_sender

WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '{"from": %(number)d, "to": "+14155550123", "body": "Hello from the benchmark"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(token)s"
"""


def gunicorn(app: str, port: int, workers: int, threads: int) -> list[str]:
    """Return the gunicorn command both apps are served with."""
    return [
        str(BIN / "gunicorn"),
        app,
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--worker-class",
        "gthread",
        "--threads",
        str(threads),
        "--log-level",
        "warning",
    ]


def wrk(url: str, script: Path, *, connections: int, seconds: int) -> dict[str, float]:
    """Run wrk and return requests/s, p50 and p99 latency in ms, and the error count."""
    out = subprocess.run(
        [
            "wrk",
            "-t",
            "2",
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


def run(
    *, connections: int = 32, seconds: int = 10, workers: int = 4, threads: int = 8
) -> list[dict]:
    """Measure both apps and return one row each."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")
    rows = []
    with database() as db_url, redis_server() as redis_url, tempfile.TemporaryDirectory() as tmp:
        number_id, token = seed_sender(db_url)
        script = Path(tmp) / "send.lua"
        script.write_text(WRK_SCRIPT % {"number": number_id, "token": token})
        env = gateway_env(db_url, redis_url)
        for name, app in (
            ("bare Flask endpoint", "bench.bare_app:create_app()"),
            ("POST /api/user/sms", "api.app:create_app()"),
        ):
            port = free_port()
            with process(gunicorn(app, port, workers, threads), env=env, port=port):
                url = f"http://127.0.0.1:{port}/api/user/sms"
                wrk(url, script, connections=connections, seconds=2)  # warm up
                result = wrk(url, script, connections=connections, seconds=seconds)
            rows.append({"what": name, **result})
    return rows
