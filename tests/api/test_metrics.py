"""GET /metrics in one process: requests, accepted messages, webhook outcomes, queue depth.

tests/ops/test_compose.py checks the same under gunicorn with two workers, and
the worker's own metrics (hand-offs, latency, Twilio error codes).
"""

from __future__ import annotations

import re
import threading

from tests.api.conftest import auth


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}(?:{{(.*)}})? (\S+)$", line)
        if match and all(f'{k}="{v}"' in (match.group(1) or "") for k, v in labels.items()):
            total += float(match.group(2))
    return total


def scrape(client) -> str:
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.content_type.startswith("text/plain")
    return answer.get_data(as_text=True)


def test_requests_accepted_messages_and_queue_depth(client, account, redis_client):
    _, token, number_id = account
    before = scrape(client)
    sent = client.post(
        "/api/user/sms",
        headers={**auth(token), "Idempotency-Key": "m-1"},
        json={"from": number_id, "to": "+14155550123", "body": "Hi"},
    )
    assert sent.status_code == 201
    replay = client.post(
        "/api/user/sms",
        headers={**auth(token), "Idempotency-Key": "m-1"},
        json={"from": number_id, "to": "+14155550123", "body": "Hi"},
    )
    assert replay.status_code == 201
    assert client.get("/api/user/sms/999999", headers=auth(token)).status_code == 404
    after = scrape(client)

    def grew(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert (
        grew("smsgw_http_requests_total", route="/api/user/sms", method="POST", status="201") == 2
    )
    assert (
        grew("smsgw_http_requests_total", route="/api/user/sms/<int:message_id>", status="404") == 1
    )
    assert grew("smsgw_messages_accepted_total", kind="single") == 1  # the replay queued nothing
    assert metric(after, "smsgw_queue_depth", queue="sms") == redis_client.llen("sms") == 1
    assert 'smsgw_queue_depth{queue="campaign"}' in after


def test_webhook_outcomes_are_counted(client):
    before = scrape(client)
    refused = client.post("/webhooks/twilio/status", data={"MessageSid": "SM1"})
    assert refused.status_code == 403
    after = scrape(client)
    labels = {"endpoint": "/webhooks/twilio/status", "outcome": "forbidden"}
    assert (
        metric(after, "smsgw_webhooks_total", **labels)
        - metric(before, "smsgw_webhooks_total", **labels)
        == 1
    )


def test_every_answer_carries_a_request_id(client):
    assert (
        client.get("/healthz", headers={"X-Request-Id": "abc-123"}).headers["X-Request-Id"]
        == "abc-123"
    )
    generated = client.get("/healthz", headers={"X-Request-Id": "bad id <script>"}).headers[
        "X-Request-Id"
    ]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)


def test_send_groups_count_every_send_once(app, account):
    _, token, number_id = account
    client = app.test_client()
    before = scrape(client)
    answers = []

    def send() -> None:
        answers.append(
            app.test_client().post(
                "/api/user/sms",
                headers=auth(token),
                json={"from": number_id, "to": "+14155550123", "body": "Hi"},
            )
        )

    threads = [threading.Thread(target=send) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert [a.status_code for a in answers] == [201] * 20
    after = scrape(client)
    sends = metric(after, "smsgw_send_group_size_sum") - metric(before, "smsgw_send_group_size_sum")
    groups = metric(after, "smsgw_send_group_size_count") - metric(
        before, "smsgw_send_group_size_count"
    )
    assert sends == 20  # each send in exactly one group
    assert 1 <= groups <= 20


def test_queue_depth_on_rabbitmq(amqp_settings, account):
    from api.app import create_app
    from tests.brokers import queue_length

    app = create_app(amqp_settings)
    try:
        client = app.test_client()
        _, token, number_id = account
        for n in range(3):
            sent = client.post(
                "/api/user/sms",
                headers=auth(token),
                json={"from": number_id, "to": "+14155550123", "body": f"Hi {n}"},
            )
            assert sent.status_code == 201, sent.get_json()
        text = scrape(client)
    finally:
        app.extensions["smsgw"].close()
    assert metric(text, "smsgw_queue_depth", queue="sms") == queue_length(amqp_settings, "sms") == 3
    assert metric(text, "smsgw_queue_depth", queue="callbacks") == 0
