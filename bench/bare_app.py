"""The baseline: a bare Flask endpoint answering the same JSON as a send, doing nothing."""

from __future__ import annotations

from flask import Flask

ANSWER = {
    "message": "SMS queued for sending",
    "data": {
        "id": 456,
        "phone_number_id": 1,
        "to": "+14155550123",
        "body": "Hello",
        "user_id": 1,
        "segments": 1,
        "segment_price": 0.0079,
        "total_cost": 0.0079,
        "status": "queued",
        "sms_sid": None,
        "encoding": "GSM-7",
        "error_code": None,
        "error_message": None,
        "created_at": "2026-11-27 15:30:00",
        "updated_at": "2026-11-27 15:30:00",
    },
}


def create_app() -> Flask:
    """Return an app whose one route answers like `POST /api/user/sms`."""
    app = Flask(__name__)
    app.json.sort_keys = False

    @app.post("/api/user/sms")
    def send():
        return ANSWER, 201

    return app
