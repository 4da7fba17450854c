"""The sandbox as a recipient: an incoming message posted to the gateway, signed like Twilio's.

Twilio posts an incoming message to the number's webhook as a form
(`MessageSid` of `SM` and 32 hex digits, `AccountSid`, `From`, `To`, `Body`,
`NumMedia`, ...) with `X-Twilio-Signature`, computed with the account's auth
token over the URL it calls and those parameters. The gateway checks it
against its `PUBLIC_BASE_URL`, so the URL posted to is that base with the
webhook's path. `POST /_sandbox/inbound` and `smsgw sandbox reply` both post
through `deliver_inbound`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import requests
from twilio.request_validator import RequestValidator

from sandbox.store import random_hex
from shared.segments import count_segments

INBOUND_PATH = "/webhooks/twilio/inbound"
POST_TIMEOUT_S = 10.0


@dataclasses.dataclass(frozen=True)
class Delivery:
    """One simulated incoming message and what the gateway answered (None: no answer)."""

    sid: str
    url: str
    status: int | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Tell whether the gateway answered 2xx."""
        return self.status is not None and 200 <= self.status < 300

    def to_json(self) -> dict[str, Any]:
        """Return it as the admin route and the CLI print it."""
        return dataclasses.asdict(self)


def inbound_params(*, account_sid: str, from_: str, to: str, body: str) -> dict[str, str]:
    """Return the form parameters Twilio posts for an incoming SMS, with a new MessageSid."""
    sid = "SM" + random_hex()
    return {
        "SmsMessageSid": sid,
        "NumMedia": "0",
        "SmsSid": sid,
        "SmsStatus": "received",
        "Body": body,
        "To": to,
        "NumSegments": str(max(1, count_segments(body).segments)),
        "MessageSid": sid,
        "AccountSid": account_sid,
        "From": from_,
        "ApiVersion": "2010-04-01",
    }


def deliver_inbound(
    *,
    gateway_url: str,
    account_sid: str,
    auth_token: str,
    from_: str,
    to: str,
    body: str,
    http: Any = requests,
) -> Delivery:
    """Post one incoming message from `from_` to the gateway's number `to`, signed."""
    url = gateway_url.rstrip("/") + INBOUND_PATH
    params = inbound_params(account_sid=account_sid, from_=from_, to=to, body=body)
    headers = {
        "X-Twilio-Signature": RequestValidator(auth_token).compute_signature(url, params),
        "User-Agent": "TwilioProxy/1.1",
    }
    try:
        answer = http.post(url, data=params, headers=headers, timeout=POST_TIMEOUT_S)
    except requests.RequestException as exc:
        return Delivery(params["MessageSid"], url, None, f"{type(exc).__name__}: {exc}")
    status = answer.status_code
    error = None if 200 <= status < 300 else f"the gateway answered {status}"
    return Delivery(params["MessageSid"], url, status, error)
