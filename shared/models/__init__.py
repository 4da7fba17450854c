"""Typed SQLAlchemy models of the gateway."""

from shared.models.accounts import (
    AdminToken,
    ApiToken,
    OperatorRequest,
    OptOut,
    PhoneNumber,
    Price,
    User,
)
from shared.models.campaigns import Campaign, CampaignRecipient
from shared.models.events import TwilioEvent, UserCallback
from shared.models.inbound import InboundMessage
from shared.models.ledger import LedgerEntry
from shared.models.messages import IdempotencyKey, Message, MessageEvent

__all__ = [
    "AdminToken",
    "ApiToken",
    "Campaign",
    "CampaignRecipient",
    "IdempotencyKey",
    "InboundMessage",
    "LedgerEntry",
    "Message",
    "MessageEvent",
    "OperatorRequest",
    "OptOut",
    "PhoneNumber",
    "Price",
    "TwilioEvent",
    "User",
    "UserCallback",
]
