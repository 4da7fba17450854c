"""The worker's metrics: hand-off outcomes, Twilio error codes, latency, campaign releases."""

from __future__ import annotations

import time
from types import SimpleNamespace

from prometheus_client import REGISTRY

from shared.providers import PermanentError
from worker import metrics


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_permanent_error_counts_its_twilio_code_and_a_failed_message():
    request = SimpleNamespace(delivery_info={"routing_key": "sms"}, headers=None)
    before = value("smsgw_twilio_errors_total", code="21211")
    failed_before = value("smsgw_messages_finished_total", status="failed")
    error = PermanentError(21211, "Invalid 'To' Phone Number")
    metrics.observe_handoff(request, SimpleNamespace(kind="failed", error=error, sid=None))
    assert value("smsgw_twilio_errors_total", code="21211") == before + 1
    assert value("smsgw_messages_finished_total", status="failed") == failed_before + 1


def test_a_sent_message_observes_its_latency_from_the_enqueue_header():
    headers: dict = {}
    metrics._stamp_enqueue_time(headers=headers)
    headers[metrics.ENQUEUED_AT] -= 2.0  # queued two seconds ago
    request = SimpleNamespace(delivery_info={"routing_key": "campaign"}, **headers)
    before = value("smsgw_handoff_latency_seconds_count", queue="campaign")
    total = value("smsgw_handoff_latency_seconds_sum", queue="campaign")
    metrics.observe_handoff(request, SimpleNamespace(kind="sent", error=None, sid="SM1"))
    assert value("smsgw_handoff_latency_seconds_count", queue="campaign") == before + 1
    assert 2.0 <= value("smsgw_handoff_latency_seconds_sum", queue="campaign") - total < 3.0
    assert headers[metrics.ENQUEUED_AT] < time.time()


def test_campaign_messages_count_when_the_dispatcher_releases_them(monkeypatch):
    before = value("smsgw_messages_accepted_total", kind="campaign")
    monkeypatch.setattr(metrics, "current_task", SimpleNamespace(name="send_message"))
    metrics._count_campaign_release(sender="send_message")  # a retry: not a release
    monkeypatch.setattr(metrics, "current_task", SimpleNamespace(name="pump_campaign"))
    metrics._count_campaign_release(sender="send_message")
    assert value("smsgw_messages_accepted_total", kind="campaign") == before + 1
