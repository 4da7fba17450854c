"""The status lifecycle of a message and its signed status callbacks."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from typing import Any

from twilio.request_validator import RequestValidator

from sandbox.config import SandboxConfig
from sandbox.poster import FormPoster
from sandbox.scheduler import Scheduler
from sandbox.store import Message, MessageStore, random_hex


@dataclasses.dataclass
class Plan:
    """The steps one message goes through, fixed when it is created."""

    sid: str
    steps: list[tuple[str, tuple[int, str] | None]]
    config: SandboxConfig
    events: list[tuple[str, dict[str, str], str]] = dataclasses.field(default_factory=list)
    # Steps run on the timer thread: nothing to post, only statuses to change.
    inline: bool = False

    @property
    def in_order(self) -> bool:
        """Tell whether each callback is posted as soon as its status is reached."""
        return not self.config.callback_shuffle and not self.config.callback_late_ms


def callback_params(message: Message) -> dict[str, str]:
    """Return the form parameters Twilio posts to a StatusCallback URL."""
    params = {
        "AccountSid": message.account_sid,
        "ApiVersion": "2010-04-01",
        "From": message.from_ or "",
        "MessageSid": message.sid,
        "MessageStatus": message.status,
        "SmsSid": message.sid,
        "SmsStatus": message.status,
        "To": message.to,
    }
    if message.messaging_service_sid:
        params["MessagingServiceSid"] = message.messaging_service_sid
    if message.error_code is not None and message.status in ("failed", "undelivered"):
        params["ErrorCode"] = str(message.error_code)
    return params


class Lifecycle:
    """Advances stored messages queued → sent → final and posts their callbacks."""

    def __init__(
        self,
        store: MessageStore,
        auth_token: str,
        scheduler: Scheduler,
        shuffle: Callable[[list[Any]], None],
    ) -> None:
        self._store = store
        self._validator = RequestValidator(auth_token)
        self._scheduler = scheduler
        self._shuffle = shuffle
        self._poster = FormPoster()

    def start(
        self,
        sid: str,
        config: SandboxConfig,
        error: tuple[int, str] | None,
        *,
        posts: bool = True,
    ) -> None:
        """Begin a message's lifecycle; it ends undelivered when error is given.

        A message that posts no callback (`posts` false, or callbacks off) only
        changes status: its steps run on the scheduler's timer thread.
        """
        final = ("undelivered", error) if error else ("delivered", None)
        plan = Plan(sid, [("queued", None), ("sent", None), final], config)
        plan.inline = not (posts and config.callbacks)
        if plan.inline:
            # The message is created queued: with nothing to post, its first step is "sent".
            self._schedule(config.callback_delay_ms / 1000, plan, 1)
        else:
            self._schedule(0, plan, 0)

    def _schedule(self, delay_s: float, plan: Plan, index: int) -> None:
        if plan.inline:
            self._scheduler.call_later_inline(delay_s, self._step, plan, index)
        else:
            self._scheduler.call_later(delay_s, self._step, plan, index)

    def _step(self, plan: Plan, index: int) -> None:
        """Apply one status step, post or keep its callback, and schedule the next."""
        status, error = plan.steps[index]
        message = self._store.advance(plan.sid, status, error)
        if message is None:
            return
        if plan.config.callbacks and message.status_callback:
            token = str(uuid.UUID(random_hex(), version=4))
            event = (message.status_callback, callback_params(message), token)
            if plan.in_order:
                self._post(*event, plan.config)
            else:
                plan.events.append(event)
        if index + 1 < len(plan.steps):
            self._schedule(plan.config.callback_delay_ms / 1000, plan, index + 1)
        elif plan.events:
            self._scheduler.call_later(plan.config.callback_late_ms / 1000, self._flush, plan)

    def _flush(self, plan: Plan) -> None:
        """Post the kept callbacks, shuffled if the plan asks for it."""
        if plan.config.callback_shuffle:
            self._shuffle(plan.events)
        for event in plan.events:
            self._post(*event, plan.config)

    def _post(self, url: str, params: dict[str, str], token: str, config: SandboxConfig) -> None:
        """Post one signed callback, twice when duplicates are switched on."""
        headers = {
            "X-Twilio-Signature": self._validator.compute_signature(url, params),
            "I-Twilio-Idempotency-Token": token,
            "User-Agent": "TwilioProxy/1.1",
        }
        for _ in range(2 if config.callback_duplicates else 1):
            self._poster.post(url, params, headers)

    def close(self) -> None:
        """Close the connections used for posting callbacks."""
        self._poster.close()
