"""The Flask app that serves Twilio's Messages API from the sandbox."""

from __future__ import annotations

import hmac
import re
import time

from flask import Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from sandbox import errors
from sandbox.admin import admin
from sandbox.config import SandboxConfig
from sandbox.errors import TwilioError
from sandbox.listing import build_page, date_bounds, matches
from sandbox.state import SandboxState
from sandbox.store import random_hex

BASE = "/2010-04-01/Accounts/<account_sid>/Messages"
SERVICE_SID = re.compile(r"^MG[0-9a-fA-F]{32}$")


def create_sandbox_app(
    *,
    account_sid: str,
    auth_token: str,
    config: SandboxConfig | None = None,
    seed: int | None = None,
    callback_workers: int = 32,
) -> Flask:
    """Build a sandbox app for one account; seed makes fault injection reproducible."""
    app = Flask("sandbox")
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["sandbox"] = SandboxState(
        account_sid=account_sid,
        auth_token=auth_token,
        config=config or SandboxConfig(),
        seed=seed,
        callback_workers=callback_workers,
    )
    app.add_url_rule(f"{BASE}.json", "create", create_message, methods=["POST"])
    app.add_url_rule(f"{BASE}.json", "list", list_messages, methods=["GET"])
    app.add_url_rule(f"{BASE}/<sid>.json", "fetch", fetch_message, methods=["GET"])
    app.register_blueprint(admin)
    app.register_error_handler(TwilioError, twilio_error)
    app.register_error_handler(HTTPException, http_error)
    app.after_request(add_request_id)
    return app


def state() -> SandboxState:
    """Return the sandbox state of the current app."""
    return current_app.extensions["sandbox"]


def twilio_error(error: TwilioError) -> tuple[Response, int]:
    """Answer a TwilioError with Twilio's JSON error body."""
    response = jsonify(error.body())
    if error.status == 401:
        response.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
    return response, error.status


def http_error(error: HTTPException) -> tuple[Response, int]:
    """Answer routing errors such as unknown paths in Twilio's error shape."""
    if error.code == 404:
        return twilio_error(errors.not_found(request.path))
    code = error.code or 500
    return jsonify(TwilioError(20000 + code, error.name, code).body()), code


def add_request_id(response: Response) -> Response:
    """Add a Twilio-style request id header to every answer."""
    response.headers["Twilio-Request-Id"] = "RQ" + random_hex()
    return response


def authenticate(account_sid: str) -> SandboxState:
    """Check Basic auth against the sandbox account or raise the 20003 error."""
    sandbox = state()
    auth = request.authorization
    if (
        auth is None
        or auth.type != "basic"
        or not hmac.compare_digest(auth.username or "", sandbox.account_sid)
        or not hmac.compare_digest(auth.password or "", sandbox.auth_token)
        or account_sid != sandbox.account_sid
    ):
        raise errors.authenticate()
    return sandbox


def create_message(account_sid: str) -> tuple[Response, int]:
    """Create a message from Twilio's form parameters and answer 201."""
    sandbox = authenticate(account_sid)
    config = sandbox.config
    if config.latency_ms:
        time.sleep(config.latency_ms / 1000)
    form = request.form
    to, from_, body = form.get("To", ""), form.get("From", ""), form.get("Body", "")
    service_sid = form.get("MessagingServiceSid", "")
    if not SERVICE_SID.match(service_sid):
        service_sid = ""
    try:
        if sandbox.chance(config.rate_429):
            raise errors.too_many_requests()
        if sandbox.chance(config.rate_500):
            raise errors.internal_error()
        errors.check_create(to, from_, body, service_sid)
    except TwilioError as error:
        sandbox.reject({"to": to, "from": from_, "body": body, **error.body()})
        raise
    outcome = None
    if sandbox.chance(config.rate_undelivered):
        code = sandbox.choice(sorted(errors.UNDELIVERED))
        outcome = (code, errors.UNDELIVERED[code])
    validity = form.get("ValidityPeriod", "")
    message = sandbox.store.create(
        account_sid=account_sid,
        to=to,
        from_=from_ or None,
        body=body,
        status_callback=form.get("StatusCallback") or None,
        service_sid=service_sid or None,
        validity_period=int(validity) if validity.isdigit() else None,
    )
    sandbox.lifecycle.start(message.sid, config, outcome, posts=message.status_callback is not None)
    if config.slow_ms and sandbox.chance(config.rate_slow):
        # Slow after creating: the client may time out on a message that exists.
        time.sleep(config.slow_ms / 1000)
    return jsonify(message.to_json()), 201


def list_messages(account_sid: str) -> Response:
    """Answer one page of messages, newest first, filtered as Twilio filters them."""
    sandbox = authenticate(account_sid)
    query = request.args.to_dict()
    bounds = date_bounds(query)
    found = sandbox.store.select(lambda m: matches(m, query, bounds))
    return jsonify(build_page(found, query, request.path))


def fetch_message(account_sid: str, sid: str) -> Response:
    """Answer one message by SID, or 404 with code 20404."""
    sandbox = authenticate(account_sid)
    message = sandbox.store.get(sid)
    if message is None or message.account_sid != account_sid:
        raise errors.not_found(request.path)
    return jsonify(message.to_json())
