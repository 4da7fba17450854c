"""The operator CLI, `smsgw`: every create command prints one JSON object."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal

import click

from shared import accounts, billing
from shared.db import make_engine, make_session_factory
from shared.models import User
from shared.money import InvalidAmount, as_number, to_money
from shared.settings import settings_or_exit


def _emit(payload: dict) -> None:
    click.echo(json.dumps(payload))


def _amount(value: str) -> Decimal:
    try:
        return to_money(value)
    except InvalidAmount as error:
        raise click.BadParameter(str(error)) from None


def _session():
    settings = settings_or_exit()
    return make_session_factory(make_engine(settings.database_url))()


def _run(action):
    """Run an account change in one transaction, turning refusals into a clean exit."""
    with _session() as session:
        try:
            result = action(session)
            session.commit()
        except accounts.AccountError as error:
            raise click.ClickException(str(error)) from None
    _emit(result)


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
    amount = _amount(balance)

    def action(session):
        user, token = accounts.create_user(session, email=email, balance=amount)
        return {"id": user.id, "token": token}

    _run(action)


@users.command("topup")
@click.option("--user", "user_id", type=int, required=True)
@click.option("--amount", required=True)
def users_topup(user_id: int, amount: str) -> None:
    """Add money to a user's balance."""
    value = _amount(amount)

    def action(session):
        if session.get(User, user_id) is None:
            raise accounts.AccountError(f"no user with id {user_id}")
        return {
            "id": user_id,
            "balance": as_number(billing.topup(session, user_id=user_id, amount=value)),
        }

    _run(action)


@main.group()
def tokens() -> None:
    """Manage API tokens."""


@tokens.command("create")
@click.option("--user", "user_id", type=int, required=True)
@click.option(
    "--test", is_flag=True, help="A test token: sends are checked, never charged or sent."
)
def tokens_create(user_id: int, test: bool) -> None:
    """Create another API token for a user."""
    _run(lambda session: {"token": accounts.create_token(session, user_id=user_id, test=test)[1]})


@main.group()
def numbers() -> None:
    """Manage users' phone numbers."""


@numbers.command("add")
@click.option("--user", "user_id", type=int, required=True)
@click.option("--number", required=True)
@click.option("--no-sms", is_flag=True, help="The number cannot send SMS.")
@click.option("--expires-at", type=click.DateTime(["%Y-%m-%d", "%Y-%m-%d %H:%M:%S"]))
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


@main.group()
def prices() -> None:
    """Manage per-segment prices."""


@prices.command("set")
@click.option("--country", required=True, help="ISO 3166 alpha-2 code, e.g. US")
@click.option("--price", required=True)
def prices_set(country: str, price: str) -> None:
    """Set the per-segment price for destinations in a country."""
    value = _amount(price)

    def action(session):
        row = accounts.set_price(session, country=country, price=value)
        return {"country": row.country, "price": as_number(row.price)}

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
