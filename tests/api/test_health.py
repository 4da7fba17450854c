"""/healthz answers while the process runs; /readyz only when the database and broker answer."""

from __future__ import annotations

import pytest

from api.app import create_app


def test_healthz_and_readyz_when_all_is_up(client):
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["checks"] == {"database": "ok", "broker": "ok"}


@pytest.mark.parametrize("broken", ["database", "broker"])
def test_readyz_names_what_is_down(settings, broken):
    if broken == "database":
        settings = settings.with_overrides(
            database_url="postgresql+psycopg://postgres@127.0.0.1:9/nothing"
        )
    else:
        settings = settings.with_overrides(redis_url="redis://127.0.0.1:9/0")
    app = create_app(settings)
    client = app.test_client()
    assert client.get("/healthz").status_code == 200
    answer = client.get("/readyz")
    assert answer.status_code == 503
    checks = answer.get_json()["checks"]
    assert checks[broken].startswith("unavailable")
    other = "broker" if broken == "database" else "database"
    assert checks[other] == "ok"
    app.extensions["smsgw"].close()
