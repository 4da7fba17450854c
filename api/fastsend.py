"""The common send answered without Flask's request machinery: a WSGI fast path.

`POST /api/user/sms` is the gateway's hot route, and under load Flask's own
work per request (its request context, routing, hooks, the response object)
was about a quarter of the route's CPU. This middleware answers the common
send itself: a JSON body, a bearer token, no Idempotency-Key, no schedule,
accepted and queued by the process's committer. It does so with the view's
own functions (`api.sms.send_fields`, `prepare_send`, `Committer.submit`,
`accepted_answer`) and the same metrics and access line (`api.metrics`).

Everything else goes to the Flask view, the plain path: a request it does not
recognise, or a body the checks refuse, before anything happened (the view
decides it from the start, with the contract's answer); a send the committer
did not accept, or could not queue, or whose statement failed, with that
outcome (the view finishes it as it finishes its own, so nothing is counted,
charged or run twice). The plain path is the fast one's oracle:
`tests/api/test_fastsend.py` sends the same requests through both and
compares answers, headers, balances, ledgers, queues and access lines.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from flask import Flask

from api.auth import rate_key
from api.metrics import ACCEPTED, REQUEST_SECONDS, REQUESTS, access, request_id_for
from api.sms import FAST_OUTCOME, accepted_answer, plain_fields, send_fields
from shared import logs
from shared.accounts import hash_token
from shared.messaging import prepare_send

ROUTE = "/api/user/sms"
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class FastSend:
    """Wraps the app's WSGI callable; answers the common send, hands the rest to Flask."""

    def __init__(self, app: Flask) -> None:
        self._app = app
        self.plain: WSGIApp = app.wsgi_app
        self._created_counters: tuple[Any, Any, Any] | None = None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]):
        gateway = self._app.extensions["smsgw"]
        if (
            environ.get("PATH_INFO") != ROUTE
            or environ.get("REQUEST_METHOD") != "POST"
            or gateway.committer is None
            or "HTTP_IDEMPOTENCY_KEY" in environ
            or environ.get("QUERY_STRING")
        ):
            return self.plain(environ, start_response)
        started = time.perf_counter()
        body = _body(environ, self._app.config["MAX_CONTENT_LENGTH"])
        if body is None:
            return self.plain(environ, start_response)
        request_id = request_id_for(environ.get("HTTP_X_REQUEST_ID", ""))
        environ["HTTP_X_REQUEST_ID"] = request_id  # the plain path keeps the same id
        context = logs.request_id.set(request_id)  # on every line logged meanwhile
        try:
            decided = self._send(environ, body, gateway, request_id)
            if decided is None:
                return self.plain(environ, start_response)
            return self._created(environ, start_response, *decided, started=started)
        finally:
            logs.request_id.reset(context)

    def _created(
        self,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
        message: Any,
        answer: dict,
        *,
        started: float,
    ) -> list[bytes]:
        """Answer 201 as the view does: the same body, headers, metrics and access line."""
        payload = orjson.dumps(answer, option=orjson.OPT_APPEND_NEWLINE)
        start_response(
            "201 CREATED",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(payload))),
                ("X-Request-Id", environ["HTTP_X_REQUEST_ID"]),
            ],
        )
        elapsed = time.perf_counter() - started
        accepted, requests, seconds = self._counters()
        accepted.inc()
        requests.inc()
        seconds.observe(elapsed)
        access(
            method="POST",
            path=ROUTE,
            status=201,
            size=len(payload),
            elapsed=elapsed,
            remote=environ.get("REMOTE_ADDR"),
            user_agent=environ.get("HTTP_USER_AGENT", ""),
            message_id=message.id,
        )
        return [payload]

    def _counters(self) -> tuple[Any, Any, Any]:
        """Return the metrics a 201 counts in, made once per process (labels cost a lookup)."""
        if self._created_counters is None:
            self._created_counters = (
                ACCEPTED.labels("single"),
                REQUESTS.labels(ROUTE, "POST", "201"),
                REQUEST_SECONDS.labels(ROUTE),
            )
        return self._created_counters

    def _send(
        self, environ: dict[str, Any], body: bytes, gateway: Any, request_id: str
    ) -> tuple[Any, dict] | None:
        """Return the accepted message and its answer, or None for the plain path to answer."""
        scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        try:
            data = self._app.json.loads(body)
            if not isinstance(data, dict):
                return None
            fields = send_fields(gateway, data)
        except Exception:  # noqa: BLE001 - refused: the view answers it, from the start
            return None
        if fields["schedule"] is not None:
            return None
        token_hash = hash_token(token)
        prepared = prepare_send(token_hash=token_hash, **plain_fields(fields))
        if prepared is None:
            return None
        try:
            outcome = gateway.committer.submit(
                prepared, rate_key=rate_key(token_hash), request_id=request_id
            )
        except Exception as error:  # noqa: BLE001 - the view raises it, with its answer
            environ[FAST_OUTCOME] = (fields, error)
            return None
        if outcome.message is None or outcome.queue_error is not None:
            environ[FAST_OUTCOME] = (fields, outcome)
            return None
        return outcome.message, accepted_answer(outcome.message)


def _body(environ: dict[str, Any], limit: int | None) -> bytes | None:
    """Read the request's body and put it back for the plain path; None if it has no length."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or "")
    except ValueError:
        return None
    if length <= 0 or (limit is not None and length > limit):
        return None
    body = environ["wsgi.input"].read(length)
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    return body
