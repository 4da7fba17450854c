"""JSON log lines: the ids in scope, extras kept, secrets and bodies dropped."""

from __future__ import annotations

import json
import logging
import re

import pytest

from shared import logs
from worker.logs import task_ids


def line(record_msg: str, **extra) -> dict:
    record = logging.LogRecord("smsgw.test", logging.INFO, __file__, 1, record_msg, None, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return json.loads(logs.JsonFormatter().format(record))


def test_a_line_carries_the_ids_in_scope_and_extras():
    token = logs.request_id.set("req-1")
    message = logs.message_id.set(42)
    try:
        out = line("message accepted", attempt=2)
    finally:
        logs.message_id.reset(message)
        logs.request_id.reset(token)
    assert out["msg"] == "message accepted" and out["level"] == "INFO"
    assert out["request_id"] == "req-1" and out["message_id"] == 42 and out["attempt"] == 2
    assert "campaign_id" not in out


def test_secret_fields_never_reach_a_line():
    out = line("sent", body="hello there", token="tok", auth_token="x", Authorization="Bearer y")
    assert not {"body", "token", "auth_token", "Authorization"} & set(out)


@pytest.mark.parametrize("fmt", logs.FORMATS)
def test_either_format_drops_secrets_and_colour_codes(fmt, capfd):
    logs.configure("INFO", fmt, process="api")
    try:
        token = logs.message_id.set(42)
        # werkzeug's request lines are quiet (the app writes its own); its warnings are not
        logging.getLogger("werkzeug").warning(
            '"\x1b[35mPOST /api/user/sms HTTP/1.1\x1b[0m" 201',
            extra={"body": "TOPSECRET body", "token": "tok-123", "webhook_secret": "whs-9"},
        )
        logs.message_id.reset(token)
    finally:
        logs.configure("INFO", "json", process="")
    written = capfd.readouterr().err
    assert "POST /api/user/sms HTTP/1.1" in written and "42" in written
    for secret in ("TOPSECRET", "tok-123", "whs-9", "\x1b", "\\u001b"):
        assert secret not in written, (fmt, secret)
    if fmt == "json":
        assert json.loads(written)["message_id"] == 42
    else:  # time, level, process, message, then the ids as key=value (no colour: not a terminal)
        assert re.match(r"^\d\d:\d\d:\d\d WARNING +api +\"POST .*  message_id=42$", written.strip())


def test_a_tasks_ids_come_from_its_arguments_by_name():
    class Task:
        request = type("Request", (), {"smsgw_request_id": "req-9", "headers": None})()

        def run(self, campaign_id: int, chain: str) -> None: ...

    assert task_ids(Task(), [7], {"chain": "a"}) == {"campaign_id": 7, "request_id": "req-9"}
    assert task_ids(Task(), [], {"campaign_id": 8}) == {"campaign_id": 8, "request_id": "req-9"}


def test_the_worker_keeps_celerys_retry_lines_but_not_its_two_lines_per_task(caplog):
    from celery.app.trace import LOG_RECEIVED, LOG_RETRY, LOG_SUCCESS

    from worker.logs import RECEIPT_LOGGER, TRACE_LOGGER, _configure, _drop_success

    _configure(loglevel="INFO")
    try:
        trace, strategy = logging.getLogger(TRACE_LOGGER), logging.getLogger(RECEIPT_LOGGER)
        with caplog.at_level(logging.INFO):
            strategy.info(LOG_RECEIVED, {"name": "send_message", "id": "1"})
            trace.info(LOG_SUCCESS, {"name": "send_message", "id": "1", "runtime": 0.1})
            trace.info(LOG_RETRY, {"name": "send_message", "id": "1", "exc": "OperationalError"})
        assert [r.getMessage() for r in caplog.records] == [
            "Task send_message[1] retry: OperationalError"
        ]
    finally:
        logging.getLogger(TRACE_LOGGER).removeFilter(_drop_success)
        logging.getLogger(RECEIPT_LOGGER).setLevel(logging.NOTSET)
