"""App and client fixtures for the HTTP API, on the real test database and Redis."""

from __future__ import annotations

import pytest

from api.app import create_app
from tests.factories import make_number, make_user, set_price


@pytest.fixture
def app(settings, engine, redis_client):
    app = create_app(settings)
    app.config["TESTING"] = True
    yield app
    app.extensions["smsgw"].close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def account(session):
    """A user with $10.00, a US number and the US price set; returns (user_id, token, number_id)."""
    user_id, token = make_user(session, balance="10.00")
    number_id = make_number(session, user_id=user_id)
    set_price(session, country="US", price="0.0079")
    return user_id, token, number_id


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
