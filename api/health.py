"""Liveness and readiness probes."""

from __future__ import annotations

from flask import Blueprint
from sqlalchemy import text

from api.gateway import gateway
from api.openapi import document

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@document("Liveness: 200 while the process runs", responses={200: "ok"}, tag="operations")
def healthz():
    """Answer 200 while the process runs."""
    return {"status": "ok"}


@bp.get("/readyz")
@document(
    "Readiness: 200 when the database and the broker answer, else 503 naming which",
    responses={200: "ready", 503: "unavailable"},
    tag="operations",
)
def readyz():
    """Answer 200 when the database and the broker both answer, else 503 naming the failure."""
    gw = gateway()
    checks: dict[str, str] = {}
    try:
        with gw.sessions() as session:
            session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unavailable: {type(exc).__name__}"
    try:
        with gw.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = f"unavailable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return {"status": "ready" if ready else "unavailable", "checks": checks}, 200 if ready else 503
