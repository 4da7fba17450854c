"""Typed SQLAlchemy models of the gateway."""

from shared.models.accounts import ApiToken, OptOut, PhoneNumber, Price, User
from shared.models.ledger import LedgerEntry
from shared.models.messages import IdempotencyKey, Message

__all__ = [
    "ApiToken",
    "IdempotencyKey",
    "LedgerEntry",
    "Message",
    "OptOut",
    "PhoneNumber",
    "Price",
    "User",
]
