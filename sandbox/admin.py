"""The JSON admin routes under /_sandbox for switching faults and inspecting state."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request

from sandbox.inbound import deliver_inbound

admin = Blueprint("sandbox_admin", __name__, url_prefix="/_sandbox")


@admin.get("/config")
def get_config() -> Response:
    """Answer the switches now in force and the seed."""
    return jsonify(current_app.extensions["sandbox"].describe())


@admin.post("/config")
def set_config() -> Response | tuple[Response, int]:
    """Change some switches from a JSON object and answer all of them."""
    sandbox = current_app.extensions["sandbox"]
    changes = request.get_json(silent=True)
    if not isinstance(changes, dict):
        return jsonify({"error": "expected a JSON object of switches"}), 400
    try:
        sandbox.configure(changes)
    except ValueError as exc:
        return jsonify({"error": str(exc)}), 400
    return jsonify(sandbox.describe())


@admin.get("/messages")
def all_messages() -> Response:
    """Answer every message received, oldest first, and every rejected create."""
    sandbox = current_app.extensions["sandbox"]
    messages = [
        {**m.to_json(), "status_callback": m.status_callback, "validity_period": m.validity_period}
        for m in sandbox.store.all()
    ]
    return jsonify({"messages": messages, "rejected": sandbox.rejected()})


@admin.post("/inbound")
def inbound() -> tuple[Response, int]:
    """Play a recipient: post `{"from", "to", "body"}` as an incoming message to the gateway.

    It goes to the `gateway_url` switch's inbound webhook, signed with the
    sandbox's auth token; the answer says what the gateway answered (502 if
    not 2xx).
    """
    sandbox = current_app.extensions["sandbox"]
    fields = request.get_json(silent=True)
    if not isinstance(fields, dict) or not all(
        isinstance(fields.get(name), str) and fields[name] for name in ("from", "to", "body")
    ):
        return jsonify({"error": "expected a JSON object with from, to and body"}), 400
    delivery = deliver_inbound(
        gateway_url=sandbox.config.gateway_url,
        account_sid=sandbox.account_sid,
        auth_token=sandbox.auth_token,
        from_=fields["from"],
        to=fields["to"],
        body=fields["body"],
    )
    return jsonify(delivery.to_json()), 200 if delivery.ok else 502


@admin.post("/reset")
def reset() -> Response:
    """Forget all messages and restore the starting switches and seed."""
    sandbox = current_app.extensions["sandbox"]
    sandbox.reset()
    return jsonify(sandbox.describe())
