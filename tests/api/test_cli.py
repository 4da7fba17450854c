"""The operator CLI: each command prints one JSON object and changes the database."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, inspect

from api.cli import main
from shared.accounts import caller_for_token, user_for_token
from shared.billing import ledger_sum
from shared.models import PhoneNumber, Price, User
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN


@pytest.fixture
def smsgw(database_url, engine):
    env = {
        "DATABASE_URL": database_url,
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
    }

    def run(*args: str, ok: bool = True, **extra: str):
        result = CliRunner().invoke(main, list(args), env={**env, **extra})
        assert (result.exit_code == 0) == ok, result.output
        return json.loads(result.stdout) if ok else result.output

    return run


def test_create_user_topup_token_number_price(smsgw, session):
    user = smsgw("users", "create", "--email", "ann@example.com", "--balance", "10.00")
    assert set(user) == {"id", "token"}
    assert user_for_token(session, user["token"]) == user["id"]
    assert smsgw("users", "topup", "--user", str(user["id"]), "--amount", "5.00") == {
        "id": user["id"],
        "balance": 15.0,
    }
    token = smsgw("tokens", "create", "--user", str(user["id"]))["token"]
    assert token != user["token"] and user_for_token(session, token) == user["id"]
    assert caller_for_token(session, token) == (user["id"], "live")
    test = smsgw("tokens", "create", "--user", str(user["id"]), "--test")["token"]
    assert test.startswith("test_") and caller_for_token(session, test) == (user["id"], "test")
    number = smsgw(
        "numbers",
        "add",
        "--user",
        str(user["id"]),
        "--number",
        "+15005550006",
        "--no-sms",
        "--expires-at",
        "2027-01-01",
        "--mps",
        "3",
    )
    row = session.get(PhoneNumber, number["id"])
    assert (row.number, row.sms_capable, row.mps, str(row.expires_at)) == (
        "+15005550006",
        False,
        3,
        "2027-01-01 00:00:00",
    )
    assert smsgw("prices", "set", "--country", "us", "--price", "0.0079") == {
        "country": "US",
        "price": 0.0079,
    }
    assert session.get(Price, "US").price == Decimal("0.0079")
    assert session.get(User, user["id"]).balance == ledger_sum(session, user_id=user["id"])


def test_refusals_exit_nonzero_with_a_reason(smsgw):
    smsgw("users", "create", "--email", "bob@example.com")
    assert "exists" in smsgw("users", "create", "--email", "bob@example.com", ok=False)
    assert "no user" in smsgw("tokens", "create", "--user", "999", ok=False)
    assert "four decimal" in smsgw("users", "topup", "--user", "1", "--amount", "0.00001", ok=False)
    assert "ISO" in smsgw("prices", "set", "--country", "XX", "--price", "1", ok=False)


def test_missing_setting_is_one_clear_line():
    result = CliRunner().invoke(main, ["tokens", "create", "--user", "1"], env={"DATABASE_URL": ""})
    assert result.exit_code != 0
    assert "DATABASE_URL is required" in str(result.exception or result.output)


def test_db_upgrade_builds_the_schema_on_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'gw.db'}"
    env = {"DATABASE_URL": url, "TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN}
    result = CliRunner().invoke(main, ["db", "upgrade"], env=env)
    assert result.exit_code == 0, result.output
    tables = set(inspect(create_engine(url)).get_table_names())
    assert {
        "users",
        "api_tokens",
        "phone_numbers",
        "prices",
        "messages",
        "ledger_entries",
    } <= tables


def test_purge_applies_the_retention_period_once(smsgw, session_factory):
    from datetime import timedelta

    from sqlalchemy import func, select, update

    from shared.db import utcnow
    from shared.models import Message
    from tests.delivery_helpers import handed_off

    old, new = handed_off(session_factory), handed_off(session_factory)
    with session_factory.begin() as session:
        session.execute(update(Message).values(status="delivered"))
        session.execute(
            update(Message)
            .where(Message.id == old.id)
            .values(updated_at=utcnow() - timedelta(days=31))
        )
    assert smsgw("purge") == {"deleted": 0}  # MESSAGE_RETENTION_DAYS unset: keep everything
    assert smsgw("purge", MESSAGE_RETENTION_DAYS="30") == {"deleted": 1}
    with session_factory() as session:
        assert session.scalars(select(Message.id)).all() == [new.id]
        assert session.scalar(select(func.count(Message.id))) == 1
    assert "MESSAGE_RETENTION_DAYS" in smsgw("purge", ok=False, MESSAGE_RETENTION_DAYS="x")
