"""Bulk campaigns: `POST /api/user/sms/campaigns`, progress and cancel.

The request is checked for shape only and stored with its raw recipients;
the worker validates, prices, charges and queues the messages.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any, Literal

from flask import Blueprint, g, request
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from api import paging
from api.auth import require_user
from api.errors import ApiError
from api.gateway import gateway
from api.openapi import document
from api.paging import CursorQuery, PageMeta
from api.schemas import (
    ErrorOut,
    check_body,
    check_reference,
    check_smart_encoding,
    json_body,
    parse,
    quiet_hours_field,
    reference_field,
    send_at_field,
    smart_encoding_field,
    validity_field,
)
from api.serialize import timestamp
from shared import campaigns
from shared.callback_urls import check_callback_url
from shared.db import MAX_ID, utcnow
from shared.messaging import Rejected
from shared.models import Campaign
from shared.money import as_number
from shared.scheduling import Schedule
from shared.templates import TemplateError, parse_template
from worker.factory import CAMPAIGN_QUEUE

bp = Blueprint("campaigns", __name__, url_prefix="/api/user/sms/campaigns")
bp.before_request(require_user)
log = logging.getLogger(__name__)


class Recipient(BaseModel):
    to: StrictStr
    vars: dict[str, Any] = Field(default_factory=dict)


class CreateCampaign(BaseModel):
    """The JSON body of `POST /api/user/sms/campaigns` (or multipart with a CSV `recipients`)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    from_: StrictInt = Field(alias="from", description="Id of one of your phone numbers")
    body: StrictStr = Field(description="Template with {name} placeholders only")
    recipients: list[Any] = Field(
        description=f"Up to {campaigns.MAX_RECIPIENTS} of {{'to', 'vars'}}",
        json_schema_extra={"items": Recipient.model_json_schema()},
    )
    status_callback: StrictStr | None = None
    send_at: Any = send_at_field()
    quiet_hours: Any = quiet_hours_field()
    validity_period: Any = validity_field()
    reference: Any = reference_field()
    smart_encoding: Any = smart_encoding_field()


class CampaignSummary(BaseModel):
    id: int
    status: str
    failure_reason: str | None
    phone_number_id: int
    body: str
    total: int
    accepted: int
    rejected: int
    duplicates: int
    total_cost: float
    send_at: str | None = Field(description="UTC time it was asked to go, or null")
    quiet_hours: str | None = Field(description="HH:MM-HH:MM of each recipient's time, or null")
    validity_period: int | None
    reference: str | None
    smart_encoding: bool
    mode: Literal["live", "test"]
    created_at: str
    updated_at: str


class CampaignOut(CampaignSummary):
    rejections: list[dict[str, Any]]
    counts: dict[str, int]
    refunded: float


class CampaignPage(BaseModel):
    """A page of campaigns, newest first, without their live counts (read one for those)."""

    data: list[CampaignSummary]
    meta: PageMeta


class CampaignAccepted(BaseModel):
    """The campaign was stored; the worker expands it."""

    message: str
    data: CampaignOut


class CampaignOne(BaseModel):
    """One campaign and its live progress."""

    data: CampaignOut


def _schedule(given: Any) -> Schedule | None:
    """Return the campaign's schedule from its JSON body or form fields, or answer 400."""
    validity = given.get("validity_period")
    if isinstance(validity, str) and validity.isdigit():  # a form field is text
        validity = int(validity)
    try:
        return Schedule.parse(
            send_at=given.get("send_at") or None,
            quiet_hours=given.get("quiet_hours") or None,
            validity_period=validity if validity != "" else None,
            now=utcnow(),
        )
    except Rejected as rejected:
        raise ApiError(400, rejected.message) from None


@bp.post("")
@document(
    "Send a templated SMS to many recipients",
    body=CreateCampaign,
    responses={202: CampaignAccepted, 400: ErrorOut, 413: ErrorOut, 500: ErrorOut},
    description="Also `multipart/form-data` with `from`, `body` and a CSV file `recipients`.",
)
def create():
    """Store a campaign with its raw recipients and queue its expansion; answer 202."""
    gw = gateway()
    limit = gw.settings.max_campaign_bytes
    request.max_content_length = limit
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "Request body too large")
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("recipients")
        if upload is None:
            raise ApiError(400, "The recipients field is required")
        fields = {
            "from": _form_int("from"),
            "body": request.form.get("body"),
            "status_callback": request.form.get("status_callback"),
            "reference": request.form.get("reference"),
            "smart_encoding": _form_bool("smart_encoding"),
        }
        present = {name: value for name, value in fields.items() if value is not None}
        req = parse(CreateCampaign, {**present, "recipients": []})
        schedule = _schedule(request.form)
        template = _template(req.body)
        rows = campaigns.csv_recipients(upload.stream, template)
    else:
        req = parse(CreateCampaign, json_body())
        schedule = _schedule(json_body())
        template = _template(req.body)
        rows = campaigns.json_recipients(req.recipients, template)
    reference = check_reference(req.reference)
    smart_encoding = check_smart_encoding(req.smart_encoding)
    try:
        callback = req.status_callback and check_callback_url(
            req.status_callback, allow_private=gw.settings.callback_allow_private
        )
        if not 1 <= req.from_ <= MAX_ID:
            raise Rejected("From number not found")
        with gw.sessions() as session:
            campaign = campaigns.create_campaign(
                session,
                user_id=g.user_id,
                phone_number_id=req.from_,
                body=req.body,
                recipients=rows,
                status_callback=callback or None,
                schedule=schedule,
                reference=reference,
                smart_encoding=smart_encoding,
                mode=g.mode,
            )
            session.commit()
    except Rejected as rejected:
        raise ApiError(400, rejected.message) from None
    except campaigns.UploadError as error:
        raise ApiError(error.status, error.message) from None
    try:
        gw.celery.send_task("expand_campaign", args=[campaign.id], queue=CAMPAIGN_QUEUE)
    except Exception as exc:  # the broker is down: nothing was charged, say so
        log.error("could not queue campaign", extra={"campaign_id": campaign.id})
        with gw.sessions() as session:
            stored = session.get(Campaign, campaign.id, with_for_update=True)
            stored.status, stored.failure_reason = "failed", "Could not be queued"
            session.commit()
        return {"message": "Failed to create campaign", "error": f"Queue unavailable: {exc}"}, 500
    log.info("campaign accepted", extra={"campaign_id": campaign.id})
    return {"message": "Campaign accepted", "data": campaign_json(campaign, None)}, 202


@bp.get("")
@document("List your campaigns", query=CursorQuery, responses={200: CampaignPage, 400: ErrorOut})
def index():
    """List the user's campaigns, newest first, by cursor."""
    limit, before = paging.cursor()
    with gateway().sessions() as session:
        result = campaigns.list_campaigns(
            session, user_id=g.user_id, limit=limit, before=before, mode=g.mode
        )
    return {
        "data": [campaign_summary(campaign) for campaign in result.items],
        "meta": paging.meta(result, limit),
    }


@bp.get("/<int:campaign_id>")
@document("One of your campaigns, with live progress", responses={200: CampaignOne, 404: ErrorOut})
def show(campaign_id: int):
    """Return a campaign with its message counts, cost and refunds, read now."""
    with gateway().sessions() as session:
        campaign = campaigns.find_campaign(
            session, user_id=g.user_id, campaign_id=campaign_id, mode=g.mode
        )
        if campaign is None:
            raise ApiError(404, "Campaign not found")
        return {"data": campaign_json(campaign, session)}


@bp.post("/<int:campaign_id>/cancel")
@document(
    "Cancel what has not been handed to Twilio, and refund it",
    responses={200: CampaignOne, 404: ErrorOut, 409: ErrorOut},
)
def cancel(campaign_id: int):
    """Cancel a campaign's unsent messages; canceling twice is harmless."""
    with gateway().sessions() as session:
        try:
            campaign = campaigns.cancel_campaign(
                session, user_id=g.user_id, campaign_id=campaign_id, mode=g.mode
            )
        except campaigns.NotCancelable as error:
            raise ApiError(409, f"Campaign is already {error.status}") from None
        if campaign is None:
            raise ApiError(404, "Campaign not found")
        session.commit()
        return {"data": campaign_json(campaign, session)}


def campaign_json(campaign: Campaign, session: Any) -> dict[str, Any]:
    """Return a campaign as the API shows it; without a session, with zero counts."""
    if session is None:
        counts = dict.fromkeys(campaigns.MESSAGE_STATUSES, 0)
        refunded = 0
    else:
        counts = campaigns.message_counts(session, campaign=campaign)
        refunded = campaigns.refunded(session, campaign_id=campaign.id)
    return {
        **campaign_summary(campaign),
        "rejections": campaign.rejections or [],
        "counts": counts,
        "refunded": as_number(Decimal(refunded)),
    }


def campaign_summary(campaign: Campaign) -> dict[str, Any]:
    """Return what a list shows of a campaign: its stored fields, no live counts."""
    return {
        "id": campaign.id,
        "status": campaign.status,
        "failure_reason": campaign.failure_reason,
        "phone_number_id": campaign.phone_number_id,
        "body": campaign.body,
        "total": campaign.total,
        "accepted": campaign.accepted,
        "rejected": campaign.rejected,
        "duplicates": campaign.duplicates,
        "total_cost": as_number(campaign.total_cost),
        "send_at": timestamp(campaign.send_at),
        "quiet_hours": campaign.quiet_hours,
        "validity_period": campaign.validity_period,
        "reference": campaign.reference,
        "smart_encoding": campaign.smart_encoding,
        "mode": campaign.mode,
        "created_at": timestamp(campaign.created_at),
        "updated_at": timestamp(campaign.updated_at),
    }


def _template(body: str):
    check_body(body)
    try:
        return parse_template(body)
    except TemplateError as error:
        text = f"The body field is not a valid template: {error}"
        raise ApiError(400, text, {"body": [text]}) from None


def _form_bool(name: str) -> Any:
    """Return a form field `true`/`false` as a bool; anything else as given, for the 400."""
    raw = request.form.get(name)
    return {"true": True, "false": False}.get(raw.strip().lower(), raw) if raw else None


def _form_int(name: str) -> Any:
    raw = request.form.get(name)
    return int(raw) if raw is not None and raw.strip().isdigit() else raw
