"""docker-compose.yml, kept honest: its services' own commands, run here and probed."""

from __future__ import annotations

import json
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import requests
from prometheus_client.mmap_dict import MmapedDict
from sqlalchemy import inspect as sa_inspect

from shared import accounts
from shared.db import make_engine, make_session_factory
from shared.settings import Settings
from tests.ops.conftest import HOSTNAME, ROOT, SERVICES, compose, get, wait_until
from worker.factory import make_celery

SECRET_BODY = "TOPSECRET-body-7f3a"


def test_compose_file_has_every_service_and_its_guarantees():
    services = compose()["services"]
    assert {*SERVICES, "redis", "postgres", "migrate"} <= set(services)
    assert "--appendonly" in services["redis"]["command"]
    assert (
        services["redis"]["command"][services["redis"]["command"].index("--appendonly") + 1]
        == "yes"
    )
    assert any(v.endswith(":/data") for v in services["redis"]["volumes"])
    assert any("/var/lib/postgresql/data" in v for v in services["postgres"]["volumes"])
    assert services["migrate"]["restart"] == "no"
    assert services["api"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    for name in ("api", "worker", "worker-campaign", "worker-callbacks", "flower", "redis"):
        assert services[name]["healthcheck"]["test"], name
    assert services["sandbox"]["profiles"] == ["sandbox"]
    # RabbitMQ as the broker: its own profile, its data on a volume, healthy before the app.
    assert services["rabbitmq"]["profiles"] == ["rabbitmq"]
    assert any(v.endswith(":/var/lib/rabbitmq") for v in services["rabbitmq"]["volumes"])
    assert services["rabbitmq"]["healthcheck"]["test"]
    assert services["api"]["environment"]["BROKER_URL"] == "${BROKER_URL:-}"
    for name in ("api", "worker", "beat", "flower"):
        assert services[name]["depends_on"]["rabbitmq"] == {
            "condition": "service_healthy",
            "required": False,
        }, name
    # The workers consume every queue the Celery configuration routes to.
    consumed = set()
    for name in ("worker", "worker-campaign", "worker-callbacks"):
        command = services[name]["command"]
        consumed |= set(command[command.index("-Q") + 1].split(","))
    conf = make_celery(Settings("sqlite://", "AC" + "0" * 32, "x")).conf
    routed = {conf.task_default_queue} | {r["queue"] for r in conf.task_routes.values()}
    assert consumed == routed


def test_dockerfile_is_slim_non_root_with_a_cached_dependency_layer():
    lines = [x.strip() for x in (ROOT / "Dockerfile").read_text().splitlines()]
    assert lines[[i for i, x in enumerate(lines) if x.startswith("FROM")][0]].endswith(
        "-slim AS base"
    )
    copies = [i for i, x in enumerate(lines) if x.startswith("COPY")]
    assert lines[copies[0]] == "COPY pyproject.toml ./"  # dependencies before the code
    assert lines[copies[1]] == "COPY . ."
    assert any(x.startswith("USER ") and "root" not in x for x in lines)
    assert ".venv" in (ROOT / ".dockerignore").read_text().split()


def test_migrate_built_the_schema_and_every_service_is_healthy(stack):
    engine = make_engine(stack.env["DATABASE_URL"])
    assert {"users", "messages", "alembic_version"} <= set(sa_inspect(engine).get_table_names())
    engine.dispose()
    assert get(stack.url("api", "/healthz")).status_code == 200
    ready = get(stack.url("api", "/readyz"))
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}
    for name, process in stack.processes.items():
        assert process.poll() is None, f"{name} exited:\n{stack.log(name)[-2000:]}"
    services = compose()["services"]
    for name in ("api", "flower", "worker", "worker-campaign", "worker-callbacks"):
        check = services[name]["healthcheck"]["test"]
        if check[0] == "CMD-SHELL":
            shell = check[1].replace("$$HOSTNAME", HOSTNAME).replace("/app/", f"{ROOT}/")
            argv = ["sh", "-c", shell]
        else:
            argv = stack.argv(check[1:])[1:]
        result = subprocess.run(argv, env=stack.env, cwd=ROOT, capture_output=True, timeout=30)
        assert result.returncode == 0, (name, result.stdout, result.stderr)


def _seed(database_url: str) -> tuple[str, int]:
    engine = make_engine(database_url)
    with make_session_factory(engine)() as session:
        user, token = accounts.create_user(session, email="ops@example.com", balance=Decimal("5"))
        number = accounts.add_number(session, user_id=user.id, number="+15005550006", mps=10)
        accounts.set_price(session, country="US", price=Decimal("0.0079"))
        session.commit()
        number_id = number.id if hasattr(number, "id") else number
    engine.dispose()
    return token, number_id


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}(?:{{(.*)}})? (\S+)$", line)
        if match and all(f'{k}="{v}"' in (match.group(1) or "") for k, v in labels.items()):
            total += float(match.group(2))
    return total


def _json_lines(text: str) -> list[dict]:
    """Every line from the first JSON line on must be one JSON object (root's warnings aside)."""
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("{"))
    return [json.loads(line) for line in lines[first:] if line.strip()]


def test_a_send_goes_through_the_stack_with_metrics_and_json_logs(stack):
    token, number_id = _seed(stack.env["DATABASE_URL"])
    headers = {"Authorization": f"Bearer {token}", "X-Request-Id": "req-ops-e2e-1"}
    answer = requests.post(
        stack.url("api", "/api/user/sms"),
        headers=headers,
        timeout=10,
        json={"from": number_id, "to": "+14155550123", "body": SECRET_BODY},
    )
    assert answer.status_code == 201, answer.text
    assert answer.headers["X-Request-Id"] == "req-ops-e2e-1"
    message_id = answer.json()["data"]["id"]
    url = stack.url("api", f"/api/user/sms/{message_id}")
    wait_until(
        lambda: get(url, headers=headers).json()["data"]["status"] == "delivered", seconds=30
    )

    api = get(stack.url("api", "/metrics")).text
    assert _metric(api, "smsgw_messages_accepted_total", kind="single") == 1
    assert (
        _metric(api, "smsgw_webhooks_total", endpoint="/webhooks/twilio/status", outcome="ok") >= 1
    )
    assert _metric(api, "smsgw_messages_finished_total", status="delivered") == 1
    for queue in ("sms", "campaign", "callbacks"):
        assert f'smsgw_queue_depth{{queue="{queue}"}}' in api

    def worker_metrics() -> str | None:
        text = get(stack.url("worker", "/metrics")).text
        return text if "smsgw_handoffs_total" in text else None

    worker = wait_until(worker_metrics)
    assert _metric(worker, "smsgw_handoffs_total", outcome="sent") == 1
    assert _metric(worker, "smsgw_handoff_latency_seconds_count", queue="sms") == 1

    api_lines = _json_lines(stack.log("api"))
    accepted = [x for x in api_lines if x.get("message_id") == message_id]
    assert len(accepted) == 1 and accepted[0]["logger"] == "api.access"
    assert accepted[0]["msg"] == "POST /api/user/sms 201" and accepted[0]["status"] == 201
    assert accepted[0]["request_id"] == "req-ops-e2e-1"
    task_lines = [x for x in _json_lines(stack.log("worker")) if x.get("message_id") == message_id]
    assert task_lines and all(x.get("request_id") == "req-ops-e2e-1" for x in task_lines)
    for name in ("api", "worker", "worker-campaign", "worker-callbacks", "beat", "flower"):
        text = stack.log(name)
        assert _json_lines(text), name  # one JSON object per line
        assert SECRET_BODY not in text and token not in text, name
        assert "5a4db0c0ffee5a4db0c0ffee5a4db0c0" not in text.replace("AC5a4db0c0ffee", ""), name


def _healthz_counts(folder: Path) -> dict[str, float]:
    """Return each API worker's own count of GET /healthz, read from its file."""
    counts = {}
    for path in folder.glob("counter_*.db"):
        total = 0.0
        for key, value, *_ in MmapedDict.read_all_values_from_file(str(path)):
            _metric_name, sample, labels, *_ = json.loads(key)
            if sample == "smsgw_http_requests_total" and labels.get("route") == "/healthz":
                total += value
        counts[path.stem] = total
    return counts


def test_api_workers_add_up_in_metrics(stack):
    url = stack.url("api", "/healthz")
    folder = Path(stack.env_for("api")["PROMETHEUS_MULTIPROC_DIR"])

    def scraped() -> float:
        text = get(stack.url("api", "/metrics")).text
        return _metric(text, "smsgw_http_requests_total", route="/healthz", status="200")

    before, before_each = scraped(), _healthz_counts(folder)

    def hit(_: int) -> int:
        with requests.Session() as fresh:  # a new connection each time
            return fresh.get(url, timeout=10).status_code

    sent = 0
    with ThreadPoolExecutor(8) as pool:  # concurrent, in rounds, until both workers took some
        for _ in range(20):
            assert set(pool.map(hit, range(40))) == {200}
            sent += 40
            grew = {p: n - before_each.get(p, 0.0) for p, n in _healthz_counts(folder).items()}
            if len([n for n in grew.values() if n > 0]) >= 2:
                break
            time.sleep(0.5)  # a worker may still be loading the app
    assert len([n for n in grew.values() if n > 0]) >= 2, grew
    assert sum(grew.values()) == sent
    assert scraped() - before == sent  # one scrape sums every worker's count


def test_the_entrypoint_uses_the_sandbox_credentials_only_without_twilio_ones():
    from sandbox import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN

    def env_after(**given: str) -> dict[str, str]:
        out = subprocess.run(
            [str(ROOT / "scripts" / "entrypoint.sh"), "env"],
            text=True,
            env={"PATH": "/usr/bin:/bin", **given},
            capture_output=True,
            check=True,
        ).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    env = env_after(SANDBOX_URL="http://sandbox:8025")
    assert env["TWILIO_ACCOUNT_SID"] == SANDBOX_ACCOUNT_SID
    assert env["TWILIO_AUTH_TOKEN"] == SANDBOX_AUTH_TOKEN
    assert env["TWILIO_API_BASE"] == "http://sandbox:8025"
    env = env_after(TWILIO_ACCOUNT_SID="AC" + "1" * 32, TWILIO_AUTH_TOKEN="t", TWILIO_API_BASE="")
    assert env["TWILIO_ACCOUNT_SID"] == "AC" + "1" * 32 and "TWILIO_API_BASE" not in env
