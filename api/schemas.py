"""Request schemas: they validate bodies and, later, describe them in OpenAPI."""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from flask import request
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from api.errors import ApiError
from api.paging import CursorQuery, PageMeta
from shared.db import MAX_ID
from shared.messaging import MAX_BODY_CHARS, STATUSES, is_unicode_text
from shared.smart_encoding import replace as smart_encode
from shared.transactions import KINDS

TYPE_NAMES = {
    "int_type": "an integer",
    "string_type": "a string",
    "bool_type": "a boolean",
    "dict_type": "an object",
    "list_type": "an array",
}

Model = TypeVar("Model", bound=BaseModel)


def send_at_field() -> Any:
    """The `send_at` field of a send or a campaign."""
    return Field(
        default=None,
        description="Hand it to Twilio at this time, not now: ISO 8601 with an offset, or"
        " `YYYY-MM-DD HH:MM:SS` (UTC); up to 35 days ahead, up to 5 minutes past means now",
        json_schema_extra={"type": ["string", "null"], "examples": ["2026-12-24T09:00:00+01:00"]},
    )


def quiet_hours_field() -> Any:
    """The `quiet_hours` field: an object, or `HH:MM-HH:MM` (a campaign's form field)."""
    time_of_day = {"type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$"}
    return Field(
        default=None,
        description="Never hand it over while the recipient's local time is in [start, end)"
        " (the window may cross midnight)",
        json_schema_extra={
            "type": ["object", "null"],
            "properties": {"start": time_of_day, "end": time_of_day},
            "required": ["start", "end"],
            "examples": [{"start": "21:00", "end": "08:00"}],
        },
    )


def validity_field() -> Any:
    """The `validity_period` field of a send or a campaign."""
    return Field(
        default=None,
        description="Seconds, 1 to 36000: not handed to Twilio within this long after its"
        " send time, it fails with `Validity period expired` and is refunded",
        json_schema_extra={"type": ["integer", "null"], "minimum": 1, "maximum": 36000},
    )


MAX_REFERENCE_CHARS = 255


def reference_field() -> Any:
    """The `reference` field of a send or a campaign: the caller's own text."""
    return Field(
        default=None,
        description=f"Your own text, up to {MAX_REFERENCE_CHARS} characters: stored, in every"
        " answer and status callback, and a list filter",
        json_schema_extra={"type": ["string", "null"], "maxLength": MAX_REFERENCE_CHARS},
    )


def smart_encoding_field() -> Any:
    """The `smart_encoding` field of a send, a quote or a campaign."""
    return Field(
        default=None,
        description="true: characters with a GSM-7 look-alike in Twilio's Smart Encoding table"
        " (curly quotes, dashes, ellipsis, ...) are replaced before counting, pricing and"
        " sending",
        json_schema_extra={"type": ["boolean", "null"]},
    )


def check_reference(value: Any) -> str | None:
    """Return the send's reference (None when absent or empty), or answer the contract's 400."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or "\x00" in value or not is_unicode_text(value):
        raise ApiError(400, "The reference field must be a string")
    if len(value) > MAX_REFERENCE_CHARS:
        text = f"The reference field must not be greater than {MAX_REFERENCE_CHARS} characters"
        raise ApiError(400, text, {"reference": [text]})
    return value


def check_smart_encoding(value: Any) -> bool:
    """Return whether the send asked for Smart Encoding, or answer the contract's 400."""
    if value is None:
        return False
    if not isinstance(value, bool):
        text = "The smart_encoding field must be true or false"
        raise ApiError(400, text, {"smart_encoding": [text]})
    return value


class SendSms(BaseModel):
    """The body of `POST /api/user/sms`."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    from_: StrictInt = Field(alias="from", description="Id of one of your phone numbers")
    to: StrictStr = Field(description="Recipient in international format, e.g. +14155550123")
    body: StrictStr = Field(description=f"Text, at most {MAX_BODY_CHARS} characters")
    status_callback: StrictStr | None = Field(
        default=None, description="http(s) URL told of every status change"
    )
    # Checked by `shared.scheduling` for the contract's own messages: typed loosely here.
    send_at: Any = send_at_field()
    quiet_hours: Any = quiet_hours_field()
    validity_period: Any = validity_field()
    # Checked by `check_reference` and `check_smart_encoding` for the contract's messages.
    reference: Any = reference_field()
    smart_encoding: Any = smart_encoding_field()


class QuoteSms(BaseModel):
    """The body of `POST /api/user/sms/quote`: a send's, `from` optional."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    from_: StrictInt | None = Field(
        default=None, alias="from", description="Id of one of your phone numbers: checked if given"
    )
    to: StrictStr = Field(description="Recipient in international format, e.g. +14155550123")
    body: StrictStr = Field(description=f"Text, at most {MAX_BODY_CHARS} characters")
    smart_encoding: Any = smart_encoding_field()


def json_body() -> dict[str, Any]:
    """Return the request's JSON object, or answer 400 `Invalid JSON body`."""
    data = request.get_json(silent=True, force=True)
    if not isinstance(data, dict):
        raise ApiError(400, "Invalid JSON body")
    return data


def parse(model: type[Model], data: dict[str, Any]) -> Model:
    """Validate `data`, turning the first problem into the contract's field message."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors: dict[str, list[str]] = {}
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "body"
            errors.setdefault(field, []).append(_field_message(field, error["type"]))
        first = next(iter(errors.values()))[0]
        raise ApiError(400, first, errors) from None


def _field_message(field: str, kind: str) -> str:
    if kind == "missing":
        return f"The {field} field is required"
    return f"The {field} field must be {TYPE_NAMES.get(kind, 'valid')}"


def checked_body(body: str, smart_encoding: Any) -> str:
    """Return the body to store and send: checked, and Smart-Encoded when asked for.

    The limits apply to the text as given; a body that Smart Encoding empties
    (it drops zero-width and control characters) is as good as none.
    """
    check_body(body)
    if not check_smart_encoding(smart_encoding):
        return body
    replaced = smart_encode(body)
    if not replaced.strip():
        raise ApiError(400, "The body field is required", {"body": ["The body field is required"]})
    return replaced


def check_body(body: str) -> None:
    """Apply the body rules: not empty, at most 300 characters (code points)."""
    if not body.strip():
        raise ApiError(400, "The body field is required", {"body": ["The body field is required"]})
    if len(body) > MAX_BODY_CHARS:
        text = f"The body field must not be greater than {MAX_BODY_CHARS} characters"
        raise ApiError(400, text, {"body": [text]})
    if "\x00" in body:
        # PostgreSQL text cannot hold NUL, and no handset shows one.
        text = "The body field must not contain NUL characters"
        raise ApiError(400, text, {"body": [text]})
    if not is_unicode_text(body):
        text = "The body field must be valid Unicode text"  # a lone surrogate, from a JSON escape
        raise ApiError(400, text, {"body": [text]})


# Response models (issue 5): they describe the answers in /openapi.json, and the
# OpenAPI tests validate real answers against them.
Timestamp = Field(pattern=r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$", description="UTC")


class ErrorOut(BaseModel):
    """An error: the contract's message, per-field errors, or 5xx detail."""

    message: str
    errors: dict[str, list[str]] | None = None
    error: str | None = None


class MessageOut(BaseModel):
    """One message as the API shows it."""

    id: int
    phone_number_id: int
    to: str
    body: str
    user_id: int
    segments: int
    segment_price: float
    total_cost: float
    status: str = Field(description=", ".join(STATUSES))
    sms_sid: str | None
    encoding: str = Field(description="GSM-7 or UCS-2")
    error_code: int | None
    error_message: str | None
    campaign_id: int | None
    send_at: str | None = Field(
        description="UTC time it is due (its send_at, or the end of its quiet hours), or null"
    )
    validity_period: int | None
    reference: str | None
    mode: Literal["live", "test"]
    created_at: str = Timestamp
    updated_at: str = Timestamp


class SmsQueued(BaseModel):
    """The message was charged and queued."""

    message: str
    data: MessageOut


class SmsOne(BaseModel):
    """One message."""

    data: MessageOut


class SmsCanceled(BaseModel):
    """The message was canceled and refunded."""

    message: str
    data: MessageOut


class SmsPage(BaseModel):
    """A page of messages, newest first; `meta.next` is the path of the next page."""

    data: list[MessageOut]
    meta: PageMeta


class SmsQuery(CursorQuery):
    """Filters and cursor of `GET /api/user/sms`."""

    status: Literal[STATUSES] | None = None  # type: ignore[valid-type]
    campaign_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    to: str | None = Field(default=None, description="Recipient in E.164")
    reference: str | None = Field(default=None, description="Your reference, exactly")


class Quote(BaseModel):
    to: str = Field(description="The recipient in E.164")
    country: str = Field(description="ISO country of the recipient, whose price applies")
    segments: int
    encoding: str = Field(description="GSM-7 or UCS-2")
    segment_price: float
    total_cost: float
    balance: float
    affordable: bool = Field(description="Whether the balance covers it now")


class QuoteOut(BaseModel):
    """What the send would cost; nothing was written or charged."""

    data: Quote


class MessageEventOut(BaseModel):
    status: str = Field(description=", ".join(STATUSES))
    error_code: int | None
    occurred_at: str = Timestamp


class MessageEventsOut(BaseModel):
    """Every status the message took, oldest first, each once."""

    data: list[MessageEventOut]


class Balance(BaseModel):
    balance: float
    currency: str


class BalanceOut(BaseModel):
    """The prepaid balance."""

    data: Balance


class PhoneNumberOut(BaseModel):
    id: int
    number: str
    sms_capable: bool
    expires_at: str | None = Timestamp
    mps: int
    inbound_url: str | None = Field(
        default=None, description="Where incoming messages to this number are forwarded"
    )


class PhoneNumbersOut(BaseModel):
    """The user's phone numbers."""

    data: list[PhoneNumberOut]


class WebhookSecret(BaseModel):
    webhook_secret: str


class WebhookSecretOut(BaseModel):
    """The secret whose HMAC-SHA256 signs your status callbacks (`X-Signature`)."""

    data: WebhookSecret


class TwilioStatusForm(BaseModel):
    """Twilio's status callback (form-encoded), signed with `X-Twilio-Signature`."""

    MessageSid: str
    MessageStatus: str
    ErrorCode: str | None = None
    AccountSid: str | None = None
    From: str | None = None
    To: str | None = None


class TwilioInboundForm(BaseModel):
    """Twilio's incoming-message webhook (form-encoded), signed with `X-Twilio-Signature`."""

    MessageSid: str
    From: str
    To: str
    Body: str
    AccountSid: str | None = None


class TransactionsQuery(CursorQuery):
    """Filters and cursor of `GET /api/user/transactions`."""

    kind: Literal[KINDS] | None = None  # type: ignore[valid-type]
    since: str | None = Field(
        default=None,
        description="Only rows created at or after this time (ISO 8601 with an offset,"
        " or `YYYY-MM-DD HH:MM:SS` UTC)",
    )
    until: str | None = Field(
        default=None, description="Only rows created before this time (as `since`)"
    )
    format: Literal["json", "csv"] = Field(
        default="json",
        description="`csv`: every row in range as text/csv (no limit), streamed",
    )


class TransactionOut(BaseModel):
    """One ledger row: a signed change of the balance."""

    id: int
    kind: Literal[KINDS]  # type: ignore[valid-type]
    amount: float = Field(description="Signed, in USD: a charge is negative")
    message_id: int | None
    campaign_id: int | None
    note: str | None
    created_at: str = Timestamp


class TransactionsPage(BaseModel):
    """A page of the ledger, newest first; `meta.next` is the path of the next page."""

    data: list[TransactionOut]
    meta: PageMeta


class PhoneNumberUpdate(BaseModel):
    """The body of `PATCH /api/user/phone-numbers/{number_id}`: a field left out stays as it is."""

    model_config = ConfigDict(extra="ignore")

    inbound_url: StrictStr | None = Field(
        default=None,
        description="http(s) URL each incoming message to the number is POSTed to, signed"
        " as status callbacks are; null stops forwarding",
    )


class PhoneNumberOne(BaseModel):
    """One of your phone numbers."""

    data: PhoneNumberOut


class InboundOut(BaseModel):
    """One message a recipient sent to one of your numbers."""

    model_config = ConfigDict(populate_by_name=True)

    id: int
    phone_number_id: int
    from_: str = Field(alias="from", description="The sender, as Twilio gives it")
    to: str = Field(description="Your number it was sent to")
    body: str
    sms_sid: str = Field(description="Twilio's MessageSid")
    keyword: Literal["STOP", "START"] | None = Field(
        description="STOP or START when the message opted its sender out or back in"
    )
    received_at: str = Timestamp


class InboundOne(BaseModel):
    """One inbound message."""

    data: InboundOut


class InboundPage(BaseModel):
    """A page of inbound messages, newest first; `meta.next` is the path of the next page."""

    data: list[InboundOut]
    meta: PageMeta


class InboundQuery(CursorQuery):
    """Filters and cursor of `GET /api/user/sms/inbound`."""

    model_config = ConfigDict(populate_by_name=True)

    phone_number_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    from_: str | None = Field(default=None, alias="from", description="Sender in E.164")
