"""The JSON admin routes under /_sandbox for switching faults and inspecting state."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request

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


@admin.post("/reset")
def reset() -> Response:
    """Forget all messages and restore the starting switches and seed."""
    sandbox = current_app.extensions["sandbox"]
    sandbox.reset()
    return jsonify(sandbox.describe())
