"""The operator CLI: each command prints one JSON object and changes the database."""

from __future__ import annotations

import json
from decimal import Decimal

import phonenumbers
import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, func, inspect, select

from api import cli
from api.cli import main
from api.serialize import number_json, operator_number_json, price_json, token_json, user_json
from shared.accounts import caller_for_token, hash_token, user_for_token
from shared.billing import ledger_sum
from shared.db import MAX_ID, utcnow
from shared.messaging import Rejected, accept_message, sender_number
from shared.models import AdminToken, ApiToken, LedgerEntry, Message, PhoneNumber, Price, User
from shared.operators import admin_for_token
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN


@pytest.fixture
def smsgw(database_url, engine):
    env = {
        "DATABASE_URL": database_url,
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
    }

    def run(*args: str, ok: bool = True, lines: bool = False, input=None, **extra: str):
        """Return the printed object (each line's, for a list), or the error's output."""
        result = CliRunner().invoke(main, list(args), env={**env, **extra}, input=input)
        assert (result.exit_code == 0) == ok, result.output
        if not ok:  # a refusal is a clean exit, never a traceback
            assert isinstance(result.exception, SystemExit)
            if not isinstance(result.exception.code, int):
                return result.output  # CliRunner prints SystemExit's message on stdout, not stderr
            assert result.stdout == ""
            return result.stderr
        if lines:
            return [json.loads(line) for line in result.stdout.splitlines()]
        return json.loads(result.stdout)

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


# --- the operator's commands: each prints what the operator API answers


def ledger_balanced(session) -> bool:
    """Return True when every user's balance equals the sum of their ledger."""
    session.rollback()  # read what the commands committed
    return all(
        user.balance == ledger_sum(session, user_id=user.id)
        for user in session.scalars(select(User))
    )


def token_id(session, token: str) -> int:
    return session.scalar(select(ApiToken.id).where(ApiToken.token_hash == hash_token(token)))


def test_users_list_walks_every_page_one_object_a_line(smsgw, session, monkeypatch):
    ids = [smsgw("users", "create", "--email", f"u{n}@example.com")["id"] for n in range(5)]
    monkeypatch.setattr(cli, "PAGE_SIZE", 2)  # five users: three pages
    printed = smsgw("users", "list", lines=True)
    assert [user["id"] for user in printed] == ids[::-1]
    assert printed == [user_json(session.get(User, user_id)) for user_id in ids[::-1]]
    assert set(printed[0]) == {"id", "email", "balance", "created_at"}
    assert ledger_balanced(session)


def test_users_show_has_numbers_and_tokens_never_their_text(smsgw, session):
    user = smsgw("users", "create", "--email", "ann@example.com", "--balance", "10.00")
    uid = str(user["id"])
    test = smsgw("tokens", "create", "--user", uid, "--test")["token"]
    kept = smsgw("numbers", "add", "--user", uid, "--number", "+15005550006")["id"]
    gone = smsgw("numbers", "add", "--user", uid, "--number", "+15005550007")["id"]
    smsgw("numbers", "remove", "--number-id", str(gone))
    shown = smsgw("users", "show", "--user", uid)
    assert user["token"] not in json.dumps(shown) and test not in json.dumps(shown)
    tokens = session.scalars(select(ApiToken).order_by(ApiToken.id.desc())).all()
    assert shown == {
        **user_json(session.get(User, user["id"])),
        "numbers": [number_json(session.get(PhoneNumber, kept))],
        "tokens": [token_json(token) for token in tokens],
    }
    assert shown["balance"] == 10 and [t["mode"] for t in shown["tokens"]] == ["test", "live"]
    assert ledger_balanced(session)


def test_topup_adds_and_a_negative_amount_is_one_adjustment(smsgw, session):
    uid = str(smsgw("users", "create", "--email", "ann@example.com", "--balance", "10")["id"])
    assert smsgw("users", "topup", "--user", uid, "--amount", "5.00", "--note", "May") == {
        "id": int(uid),
        "balance": 15,
    }
    assert smsgw("users", "topup", "--user", uid, "--amount", "-2.5001", "--note", "refund") == {
        "id": int(uid),
        "balance": 12.4999,
    }
    rows = session.scalars(select(LedgerEntry).order_by(LedgerEntry.id)).all()
    assert [(r.kind, r.amount, r.note) for r in rows] == [
        ("topup", Decimal("10"), "opening balance"),
        ("topup", Decimal("5"), "May"),
        ("adjustment", Decimal("-2.5001"), "refund"),
    ]
    # Below zero: refused, and nothing changes.
    err = smsgw("users", "topup", "--user", uid, "--amount=-12.5", ok=False)
    assert err == "Error: Insufficient balance\n"
    session.rollback()
    assert session.get(User, int(uid)).balance == Decimal("12.4999")
    assert session.scalar(select(func.count(LedgerEntry.id))) == 3
    assert smsgw("users", "topup", "--user", uid, "--amount", "-12.4999")["balance"] == 0
    assert ledger_balanced(session)


@pytest.mark.parametrize(
    ("amount", "error"),
    [
        ("abc", "Error: --amount: not an amount: 'abc'\n"),
        ("-1.00001", "Error: --amount: at most four decimal places: '-1.00001'\n"),
        ("NaN", "Error: --amount: not a non-negative amount: 'NaN'\n"),
        ("--1", "Error: --amount: not a non-negative amount: '--1'\n"),
        ("1e30", "Error: --amount: at most 9999999999.9999: '1e30'\n"),
        ("-1e10", "Error: --amount: at most 9999999999.9999: '-1e10'\n"),
        ("0", "Error: the amount must not be zero\n"),
    ],
)
def test_a_bad_amount_is_one_line(smsgw, session, amount, error):
    uid = str(smsgw("users", "create", "--email", "ann@example.com", "--balance", "1")["id"])
    assert smsgw("users", "topup", "--user", uid, "--amount", amount, ok=False) == error
    assert session.get(User, int(uid)).balance == 1 and ledger_balanced(session)


@pytest.mark.parametrize(
    "command",
    [
        ["users", "show", "--user", "7"],
        ["users", "topup", "--user", "7", "--amount", "1"],
        ["tokens", "list", "--user", "7"],
        ["tokens", "create", "--user", "7"],
        ["numbers", "list", "--user", "7"],
        ["numbers", "add", "--user", "7", "--number", "+15005550006"],
    ],
)
def test_an_unknown_user_is_one_line(smsgw, command):
    assert smsgw(*command, ok=False) == "Error: no user with id 7\n"


@pytest.mark.parametrize(
    ("command", "error"),
    [
        (["tokens", "revoke", "--token-id", "7"], "no token with id 7"),
        (["numbers", "update", "--number-id", "7", "--mps", "2"], "no phone number with id 7"),
        (["numbers", "remove", "--number-id", "7"], "no phone number with id 7"),
        (["admin-tokens", "revoke", "--id", "7"], "no admin token with id 7"),
        (["users", "show", "--user", str(MAX_ID)], f"no user with id {MAX_ID}"),
    ],
)
def test_an_unknown_token_or_number_is_one_line(smsgw, command, error):
    assert smsgw(*command, ok=False) == f"Error: {error}\n"


def test_tokens_list_and_revoke(smsgw, session):
    user = smsgw("users", "create", "--email", "ann@example.com")
    uid = str(user["id"])
    second = smsgw("tokens", "create", "--user", uid)["token"]
    test = smsgw("tokens", "create", "--user", uid, "--test")["token"]
    ids = [token_id(session, text) for text in (test, second, user["token"])]
    listed = smsgw("tokens", "list", "--user", uid, lines=True)
    assert [t["id"] for t in listed] == ids and [t["mode"] for t in listed] == [
        "test",
        "live",
        "live",
    ]
    assert listed == [token_json(session.get(ApiToken, i)) for i in ids]
    assert all(set(t) == {"id", "mode", "created_at", "last_used_at"} for t in listed)
    session.rollback()
    assert smsgw("tokens", "revoke", "--token-id", str(ids[1])) == {"id": ids[1], "revoked": True}
    assert user_for_token(session, second) is None
    assert user_for_token(session, user["token"]) == user["id"]
    assert caller_for_token(session, test) == (user["id"], "test")
    session.rollback()  # the lookups noted the tokens' use: release those rows
    assert [t["id"] for t in smsgw("tokens", "list", "--user", uid, lines=True)] == [
        ids[0],
        ids[2],
    ]
    assert smsgw("tokens", "revoke", "--token-id", str(ids[1]), ok=False) == (
        f"Error: no token with id {ids[1]}\n"
    )
    assert ledger_balanced(session)


def test_numbers_list_of_all_or_one_user_every_page(smsgw, session, monkeypatch):
    ann = smsgw("users", "create", "--email", "ann@example.com")["id"]
    bob = smsgw("users", "create", "--email", "bob@example.com")["id"]
    ids = [
        smsgw("numbers", "add", "--user", str(user), "--number", number)["id"]
        for user, number in [(ann, "+15005550006"), (bob, "+15005550007"), (ann, "+447700900123")]
    ]
    monkeypatch.setattr(cli, "PAGE_SIZE", 1)
    everyone = smsgw("numbers", "list", lines=True)
    assert everyone == [operator_number_json(session.get(PhoneNumber, i)) for i in ids[::-1]]
    assert [n["user_id"] for n in everyone] == [ann, bob, ann]
    assert set(everyone[0]) == {
        "id",
        "user_id",
        "number",
        "sms_capable",
        "expires_at",
        "mps",
        "inbound_url",
    }
    assert [n["id"] for n in smsgw("numbers", "list", "--user", str(ann), lines=True)] == [
        ids[2],
        ids[0],
    ]
    assert smsgw("numbers", "list", "--user", str(bob), lines=True)[0]["number"] == "+15005550007"
    assert ledger_balanced(session)


def test_numbers_update_changes_only_what_it_is_given(smsgw, session):
    uid = str(smsgw("users", "create", "--email", "ann@example.com")["id"])
    nid = smsgw(
        "numbers", "add", "--user", uid, "--number", "+15005550006", "--expires-at", "2027-01-01"
    )["id"]
    update = ["numbers", "update", "--number-id", str(nid)]
    assert smsgw(*update, "--no-sms", "--mps", "5") == {
        "user_id": int(uid),
        "id": nid,
        "number": "+15005550006",
        "sms_capable": False,
        "expires_at": "2027-01-01 00:00:00",
        "mps": 5,
        "inbound_url": None,
    }
    assert smsgw(*update, "--expires-at", "never")["expires_at"] is None
    shown = smsgw(*update, "--sms", "--expires-at", "2030-06-30 12:00:00")
    assert (shown["sms_capable"], shown["expires_at"], shown["mps"]) == (
        True,
        "2030-06-30 12:00:00",
        5,
    )
    assert smsgw(*update) == shown  # nothing given: nothing changes
    row = session.get(PhoneNumber, nid)
    assert (row.sms_capable, str(row.expires_at), row.mps) == (True, "2030-06-30 12:00:00", 5)
    assert smsgw(*update, "--mps", "0", ok=False) == "Error: mps must be at least 1\n"
    assert "2030-13-01" in smsgw(*update, "--expires-at", "2030-13-01", ok=False)
    session.rollback()
    assert session.get(PhoneNumber, nid).mps == 5
    assert ledger_balanced(session)


def test_numbers_remove_stops_sends_and_keeps_the_row_and_its_messages(smsgw, session):
    uid = smsgw("users", "create", "--email", "ann@example.com", "--balance", "1.00")["id"]
    nid = smsgw("numbers", "add", "--user", str(uid), "--number", "+15005550006")["id"]
    smsgw("prices", "set", "--country", "US", "--price", "0.0079")
    message = accept_message(
        session, user_id=uid, phone_number_id=nid, to="+14155550123", body="Hello"
    )
    session.commit()
    assert smsgw("numbers", "remove", "--number-id", str(nid)) == {"id": nid, "removed": True}
    with pytest.raises(Rejected, match="From number not found"):
        sender_number(session, user_id=uid, phone_number_id=nid, now=utcnow())
    session.rollback()
    row = session.get(PhoneNumber, nid)
    assert row is not None and row.removed_at is not None and row.number == "+15005550006"
    kept = session.get(Message, message.id)
    assert kept is not None and kept.phone_number_id == nid
    assert smsgw("numbers", "list", lines=True) == []
    assert smsgw("users", "show", "--user", str(uid))["numbers"] == []
    gone = f"Error: no phone number with id {nid}\n"
    assert smsgw("numbers", "remove", "--number-id", str(nid), ok=False) == gone
    assert smsgw("numbers", "update", "--number-id", str(nid), "--sms", ok=False) == gone
    assert ledger_balanced(session)


def test_prices_list_and_import_from_a_file_or_stdin(smsgw, session, tmp_path):
    smsgw("prices", "set", "--country", "US", "--price", "0.0079")
    csv_file = tmp_path / "prices.csv"
    csv_file.write_text("country,price\nGB,0.04\nde, 0.05 \n\n", encoding="utf-8")
    assert smsgw("prices", "import", str(csv_file)) == {"imported": 2}
    listed = smsgw("prices", "list", lines=True)
    assert [(p["country"], p["price"]) for p in listed] == [
        ("DE", 0.05),
        ("GB", 0.04),
        ("US", 0.0079),
    ]
    assert listed == [price_json(session.get(Price, c)) for c in ("DE", "GB", "US")]
    assert set(listed[0]) == {"country", "price", "updated_at"}
    # `-` reads stdin; a spreadsheet's byte-order mark is no part of the header.
    assert smsgw("prices", "import", "-", input="\ufeffcountry,price\r\nUS,0.008\r\n") == {
        "imported": 1
    }
    session.rollback()
    assert session.get(Price, "US").price == Decimal("0.008")


PRICED = "country,price\nUS,0.0079\n"


@pytest.mark.parametrize(
    ("csv_text", "error"),
    [
        (
            "country,price\nGB,0.04\nXX,0.05\n",
            "line 3: not an ISO country code with phone numbers: XX",
        ),
        ("country,price\nGB,0.04\nFR,-0.05\n", "line 3: not a non-negative amount: '-0.05'"),
        ("country,price\nGB,cheap\n", "line 2: not an amount: 'cheap'"),
        ("country,price\nGB,0.04\nFR,0.05\ngb,0.06\n", "line 4: GB is priced twice"),
        ("country,price\nGB,0.00001\n", "line 2: at most four decimal places: '0.00001'"),
        ("country,price\nGB,0.04,x\n", "line 2: expected country,price"),
        ("code,cost\nGB,0.04\n", "line 1: the header must be country,price"),
        ("", "line 1: the header must be country,price"),
    ],
)
def test_a_bad_price_line_is_named_and_nothing_is_loaded(smsgw, session, csv_text, error):
    smsgw("prices", "import", "-", input=PRICED)
    before = smsgw("prices", "list", lines=True)
    assert smsgw("prices", "import", "-", input=csv_text + "DE,0.05\n", ok=False) == (
        f"Error: {error}\n"
    )
    assert smsgw("prices", "list", lines=True) == before
    assert session.scalars(select(Price.country)).all() == ["US"]


def test_undecodable_bytes_are_a_bad_line_not_a_traceback(smsgw, tmp_path):
    csv_file = tmp_path / "prices.csv"
    csv_file.write_bytes(b"country,price\nGB,0.04\nD\xff,0.05\n")
    assert smsgw("prices", "import", str(csv_file), ok=False).startswith(
        "Error: line 3: not an ISO country code with phone numbers: D"
    )
    assert smsgw("prices", "list", lines=True) == []


def test_every_supported_region_imports_in_one_go(smsgw, session):
    regions = sorted(phonenumbers.SUPPORTED_REGIONS)
    rows = "".join(f"{region},0.{n:04d}\n" for n, region in enumerate(regions, start=1))
    assert smsgw("prices", "import", "-", input="country,price\n" + rows) == {
        "imported": len(regions)
    }
    assert len(regions) > 240
    listed = smsgw("prices", "list", lines=True)
    assert [p["country"] for p in listed] == regions
    assert listed[0]["price"] == 0.0001 and listed[-1]["price"] == float(f"0.{len(regions):04d}")
    assert session.scalar(select(func.count()).select_from(Price)) == len(regions)


def test_admin_tokens_create_and_revoke(smsgw, session):
    made = smsgw("admin-tokens", "create", "--name", "ops laptop")
    assert set(made) == {"id", "token"} and made["token"].startswith("admin_")
    assert admin_for_token(session, made["token"]) == made["id"]
    user = smsgw("users", "create", "--email", "ann@example.com")
    assert admin_for_token(session, user["token"]) is None  # a user's token is no admin's
    session.rollback()  # the lookup noted the token's use: release its row
    assert smsgw("admin-tokens", "revoke", "--id", str(made["id"])) == {
        "id": made["id"],
        "revoked": True,
    }
    assert admin_for_token(session, made["token"]) is None
    assert session.get(AdminToken, made["id"]) is None
    assert smsgw("admin-tokens", "create", "--name", " ", ok=False) == (
        "Error: the name must be 1 to 100 characters\n"
    )
    assert ledger_balanced(session)
