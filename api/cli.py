"""The operator CLI, `smsgw`: a change prints one JSON object, a list one object a line.

Each command is a thin adapter over one function of `shared/`, and prints what
the operator API answers for the same operation (`api.serialize`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from typing import Any

import click
from sqlalchemy.orm import Session

from api.serialize import number_json, operator_number_json, price_json, token_json, user_json
from api.server import api_command
from shared import accounts, listing, operators
from shared.db import MAX_ID, make_engine, make_session_factory
from shared.money import InvalidAmount, as_number, to_money
from shared.settings import settings_or_exit

ID = click.IntRange(1, MAX_ID)
DATE = click.DateTime(["%Y-%m-%d", "%Y-%m-%d %H:%M:%S"])
PAGE_SIZE = 500  # rows a list reads at a time; it walks every page


def _emit(payload: dict) -> None:
    click.echo(json.dumps(payload))


def _amount(value: str, *, option: str = "--amount", signed: bool = False) -> Decimal:
    """Read an amount as a Decimal, never a float; a signed one may start with `-`."""
    negative = signed and value.startswith("-")
    try:
        amount = to_money(value[1:] if negative else value)
    except InvalidAmount as error:  # "<reason>: <the value>", naming the value as typed
        reason = str(error).rsplit(": ", 1)[0]
        raise click.ClickException(f"{option}: {reason}: {value!r}") from None
    return -amount if negative else amount


@contextmanager
def _session() -> Iterator[Session]:
    """Open a session on a new engine, closed with its connections when the command ends."""
    engine = make_engine(settings_or_exit().database_url)
    try:
        with make_session_factory(engine)() as session:
            yield session
    finally:
        engine.dispose()


def _run(action: Callable[[Session], dict | Iterable[dict]]) -> None:
    """Run an operator action in one transaction, turning refusals into one line and an exit.

    A change prints its object once committed; a list prints its objects as it reads them.
    """
    with _session() as session:
        try:
            result = action(session)
            if isinstance(result, dict):
                session.commit()
                _emit(result)
            else:
                for item in result:
                    _emit(item)
        except accounts.AccountError as error:
            raise click.ClickException(str(error)) from None


def _every(read_page: Callable[[int | None], listing.Page[Any]]) -> Iterator[Any]:
    """Yield every row of a cursor-paged list, newest first, one page read at a time."""
    before = None
    while True:
        page = read_page(before)
        yield from page.items
        if page.next_before is None:
            return
        before = page.next_before


@click.group()
def main() -> None:
    """Operate the SMS gateway."""


@main.group()
def db() -> None:
    """Manage the database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply the Alembic migrations (creates the schema on an empty database)."""
    from shared.migrate import upgrade

    upgrade(settings_or_exit().database_url)
    click.echo("database is up to date", err=True)


@main.group()
def users() -> None:
    """Manage users."""


@users.command("create")
@click.option("--email", required=True)
@click.option("--balance", default="0", show_default=True)
def users_create(email: str, balance: str) -> None:
    """Create a user; prints its id and its first token (shown once)."""
    amount = _amount(balance, option="--balance")

    def action(session):
        user, token = accounts.create_user(session, email=email, balance=amount)
        return {"id": user.id, "token": token}

    _run(action)


@users.command("list")
def users_list() -> None:
    """Print every user, newest first, one JSON object a line."""
    _run(
        lambda session: map(
            user_json,
            _every(lambda before: accounts.list_users(session, limit=PAGE_SIZE, before=before)),
        )
    )


@users.command("show")
@click.option("--user", "user_id", type=ID, required=True)
def users_show(user_id: int) -> None:
    """Print a user with its balance, its numbers and its tokens (never their text)."""
    _run(
        lambda session: {
            **user_json(accounts.get_user(session, user_id)),
            "numbers": [number_json(n) for n in accounts.user_numbers(session, user_id=user_id)],
            "tokens": [token_json(t) for t in accounts.user_tokens(session, user_id=user_id)],
        }
    )


@users.command("topup")
@click.option("--user", "user_id", type=ID, required=True)
@click.option("--amount", required=True, help="Negative (e.g. -2.50) for an adjustment.")
@click.option("--note", default=None, help="Kept on the ledger row.")
def users_topup(user_id: int, amount: str, note: str | None) -> None:
    """Add money to a user's balance, or take it off (never below zero)."""
    value = _amount(amount, signed=True)
    _run(
        lambda session: {
            "id": user_id,
            "balance": as_number(
                accounts.adjust_balance(session, user_id=user_id, amount=value, note=note)
            ),
        }
    )


@main.group()
def tokens() -> None:
    """Manage API tokens."""


@tokens.command("create")
@click.option("--user", "user_id", type=ID, required=True)
@click.option(
    "--test", is_flag=True, help="A test token: sends are checked, never charged or sent."
)
def tokens_create(user_id: int, test: bool) -> None:
    """Create another API token for a user."""
    _run(lambda session: {"token": accounts.create_token(session, user_id=user_id, test=test)[1]})


@tokens.command("list")
@click.option("--user", "user_id", type=ID, required=True)
def tokens_list(user_id: int) -> None:
    """Print a user's tokens, newest first, one a line (never their text)."""
    _run(lambda session: map(token_json, accounts.user_tokens(session, user_id=user_id)))


@tokens.command("revoke")
@click.option("--token-id", type=ID, required=True)
def tokens_revoke(token_id: int) -> None:
    """Delete a token: every request with it is refused from now on."""

    def action(session):
        accounts.revoke_token(session, token_id=token_id)
        return {"id": token_id, "revoked": True}

    _run(action)


@main.group()
def numbers() -> None:
    """Manage users' phone numbers."""


@numbers.command("add")
@click.option("--user", "user_id", type=ID, required=True)
@click.option("--number", required=True)
@click.option("--no-sms", is_flag=True, help="The number cannot send SMS.")
@click.option("--expires-at", type=DATE)
@click.option("--mps", type=click.IntRange(min=1), default=1, show_default=True)
def numbers_add(user_id: int, number: str, no_sms: bool, expires_at: datetime | None, mps: int):
    """Give a user a phone number."""
    _run(
        lambda session: {
            "id": accounts.add_number(
                session,
                user_id=user_id,
                number=number,
                sms_capable=not no_sms,
                expires_at=expires_at,
                mps=mps,
            ).id
        }
    )


@numbers.command("list")
@click.option("--user", "user_id", type=ID, help="Only this user's numbers.")
def numbers_list(user_id: int | None) -> None:
    """Print the numbers in use, newest first, one a line."""
    _run(
        lambda session: map(
            operator_number_json,
            _every(
                lambda before: accounts.list_numbers(
                    session, user_id=user_id, limit=PAGE_SIZE, before=before
                )
            ),
        )
    )


def _expiry(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """Read `--expires-at`: a date, `never` (no expiry), or not given (left as it is)."""
    if value is None:
        return accounts.NOT_GIVEN
    if value.strip().lower() == "never":
        return None
    return DATE.convert(value, param, ctx)


@numbers.command("update")
@click.option("--number-id", type=ID, required=True)
@click.option("--sms/--no-sms", "sms_capable", default=None, help="Whether it can send SMS.")
@click.option("--expires-at", callback=_expiry, help="A date, or `never`.")
@click.option("--mps", type=int, help="Messages a second it may send.")
def numbers_update(number_id: int, sms_capable: bool | None, expires_at: Any, mps: int | None):
    """Change a number; an option not given is left as it is."""
    _run(
        lambda session: operator_number_json(
            accounts.update_number(
                session,
                number_id=number_id,
                sms_capable=sms_capable,
                expires_at=expires_at,
                mps=mps,
            )
        )
    )


@numbers.command("remove")
@click.option("--number-id", type=ID, required=True)
def numbers_remove(number_id: int) -> None:
    """Take a number from its user; its messages stay readable."""

    def action(session):
        accounts.remove_number(session, number_id=number_id)
        return {"id": number_id, "removed": True}

    _run(action)


@main.group()
def prices() -> None:
    """Manage per-segment prices."""


@prices.command("set")
@click.option("--country", required=True, help="ISO 3166 alpha-2 code, e.g. US")
@click.option("--price", required=True)
def prices_set(country: str, price: str) -> None:
    """Set the per-segment price for destinations in a country."""
    value = _amount(price, option="--price")

    def action(session):
        row = accounts.set_price(session, country=country, price=value)
        return {"country": row.country, "price": as_number(row.price)}

    _run(action)


@prices.command("list")
def prices_list() -> None:
    """Print every price, by country, one a line."""
    _run(lambda session: map(price_json, accounts.list_prices(session)))


@prices.command("import")
# Undecodable bytes become U+FFFD, so a bad row is refused by its line, never a traceback.
@click.argument("file", type=click.File("r", encoding="utf-8-sig", errors="replace"))
def prices_import(file) -> None:
    """Set the prices of a CSV with header `country,price` (`-`: stdin), all rows or none."""
    _run(lambda session: {"imported": accounts.import_prices(session, file)})


@main.group("admin-tokens")
def admin_tokens() -> None:
    """Manage the tokens of the operator API (`/api/admin/...`)."""


@admin_tokens.command("create")
@click.option("--name", required=True, help="Who or what uses it.")
def admin_tokens_create(name: str) -> None:
    """Create an admin token; prints its id and its text (shown once)."""

    def action(session):
        row, token = operators.create_admin_token(session, name=name)
        return {"id": row.id, "token": token}

    _run(action)


@admin_tokens.command("revoke")
@click.option("--id", "token_id", type=ID, required=True)
def admin_tokens_revoke(token_id: int) -> None:
    """Delete an admin token: its next request is refused."""

    def action(session):
        operators.revoke_admin_token(session, token_id=token_id)
        return {"id": token_id, "revoked": True}

    _run(action)


@main.command()
def purge() -> None:
    """Delete final messages and inbound messages past MESSAGE_RETENTION_DAYS now (beat: hourly)."""
    from shared.retention import purge as purge_messages

    settings = settings_or_exit()
    engine = make_engine(settings.database_url)
    purged = purge_messages(
        make_session_factory(engine), retention_days=settings.message_retention_days
    )
    engine.dispose()
    _emit({"deleted": purged.deleted})


@main.group(invoke_without_command=True)
@click.option("--port", type=int, default=8025, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--latency-ms", type=int, default=0, help="Delay before answering a create.")
@click.option("--rate-429", type=float, default=0.0, help="Fraction of creates answered 429.")
@click.option("--rate-500", type=float, default=0.0, help="Fraction of creates answered 500.")
@click.option("--rate-slow", type=float, default=0.0, help="Fraction of creates answered late.")
@click.option("--slow-ms", type=int, default=0, help="How late a slow create answers.")
@click.option("--rate-undelivered", type=float, default=0.0, help="Fraction ending undelivered.")
@click.option("--no-callbacks", is_flag=True, help="Post no status callbacks.")
@click.option("--seed", type=int, default=None, help="Make fault injection reproducible.")
@click.option("--quiet", is_flag=True, help="Log no line per request.")
@click.option(
    "--gateway-url",
    envvar="PUBLIC_BASE_URL",
    default="http://127.0.0.1:8000",
    show_default=True,
    help="The gateway's public base URL, for POST /_sandbox/inbound (env PUBLIC_BASE_URL).",
)
@click.pass_context
def sandbox(
    ctx,
    port,
    host,
    latency_ms,
    rate_429,
    rate_500,
    rate_slow,
    slow_ms,
    rate_undelivered,
    no_callbacks,
    seed,
    quiet,
    gateway_url,
):
    """Serve the local Twilio-compatible sandbox; `smsgw sandbox reply` plays a recipient.

    It accepts TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN from the environment,
    else the sandbox's own development credentials.
    """
    import os

    from sandbox import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN, serve

    if ctx.invoked_subcommand is not None:
        return
    serve(
        host=host,
        port=port,
        seed=seed,
        account_sid=os.environ.get("TWILIO_ACCOUNT_SID") or SANDBOX_ACCOUNT_SID,
        auth_token=os.environ.get("TWILIO_AUTH_TOKEN") or SANDBOX_AUTH_TOKEN,
        latency_ms=latency_ms,
        rate_slow=rate_slow,
        slow_ms=slow_ms,
        rate_429=rate_429,
        rate_500=rate_500,
        rate_undelivered=rate_undelivered,
        callbacks=not no_callbacks,
        log_requests=not quiet,
        gateway_url=gateway_url,
    )


@sandbox.command("reply")
@click.option("--from", "from_", required=True, help="The recipient replying, e.g. +14155550123.")
@click.option("--to", required=True, help="The gateway's number replied to, e.g. +15005550006.")
@click.option("--body", required=True, help="The text, e.g. Hi, or STOP.")
@click.option(
    "--gateway-url",
    envvar="PUBLIC_BASE_URL",
    default="http://127.0.0.1:8000",
    show_default=True,
    help="The gateway's public base URL (env PUBLIC_BASE_URL).",
)
def sandbox_reply(from_: str, to: str, body: str, gateway_url: str) -> None:
    """Post an incoming message to the gateway's inbound webhook, signed as Twilio signs it.

    It signs with TWILIO_AUTH_TOKEN (else the sandbox's), as the gateway checks;
    prints `{"sid", "url", "status", "error"}` and fails unless the gateway answers 2xx.
    """
    import os

    from sandbox import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN
    from sandbox.inbound import deliver_inbound

    delivery = deliver_inbound(
        gateway_url=gateway_url,
        account_sid=os.environ.get("TWILIO_ACCOUNT_SID") or SANDBOX_ACCOUNT_SID,
        auth_token=os.environ.get("TWILIO_AUTH_TOKEN") or SANDBOX_AUTH_TOKEN,
        from_=from_,
        to=to,
        body=body,
    )
    _emit(delivery.to_json())
    if not delivery.ok:
        raise click.ClickException(delivery.error or "the gateway did not accept it")


@main.command()
@click.option("--port", type=int, default=8000, show_default=True, help="API port.")
@click.option("--sandbox-port", type=int, default=8025, show_default=True)
@click.option("--flower-port", type=int, default=5555, show_default=True, help="Flower's port.")
@click.option(
    "--data-dir",
    type=click.Path(),
    default=".smsgw",
    show_default=True,
    help="Where the SQLite database and Redis files live.",
)
def dev(port: int, sandbox_port: int, flower_port: int, data_dir: str) -> None:
    """Run API, worker and Twilio sandbox together, with a seeded demo account."""
    from pathlib import Path

    from api.dev import run

    raise SystemExit(
        run(port=port, sandbox_port=sandbox_port, flower_port=flower_port, data_dir=Path(data_dir))
    )


main.add_command(api_command)
