"""When a message may go: `send_at`, quiet hours in the recipient's own time, validity.

A message is due at the later of its `send_at` and the first minute at which
the recipient's local time is outside its quiet hours, in every time zone its
number may be in (phonenumbers knows them; a number with no known zone is not
held). A message due later than now is `scheduled`: a row in PostgreSQL that
`release_due` (beat, every second) moves to `queued` and hands to the workers
once it is due, in bounded batches locked with SKIP LOCKED. No broker ETA or
countdown holds it, so a million of them cost the broker nothing and survive
its restart.

A message with a validity period must be handed to Twilio before
`valid_until` (its send time plus the period): past it, the claim refuses it
and `expire_overdue` fails and refunds it (`Validity period expired`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as number_zones

from shared.errors import Rejected

SEND_AT_MESSAGE = "The send_at field must be a time within the next 35 days"
QUIET_HOURS_MESSAGE = "The quiet_hours field must have start and end as HH:MM"
VALIDITY_MESSAGE = "The validity_period field must be between 1 and 36000"
MAX_AHEAD = timedelta(days=35)
# A send_at this far in the past still means "now": clocks and queues disagree a little.
PAST_GRACE = timedelta(minutes=5)
MAX_VALIDITY = 36000
_API_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
_HH_MM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
# A day's windows repeat daily: a moment free in every zone, if there is one, comes
# within two days.
SEARCH = timedelta(days=2)


@dataclass(frozen=True)
class QuietHours:
    """A daily window `[start, end)` of local time; it crosses midnight when start > end."""

    start: time
    end: time

    def holds(self, local: time) -> bool:
        """Return whether a local time of day is inside the window."""
        if self.start <= self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


def parse_time(value: str) -> datetime:
    """Return an API time as naive UTC, or raise ValueError.

    Accepted: ISO 8601 with an offset (`2026-12-03T09:00:00+01:00`, `...Z`) or the
    API's own `YYYY-MM-DD HH:MM:SS` (UTC); an ISO time without an offset names no zone.
    """
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        if parsed.tzinfo is not None:
            return parsed.astimezone(UTC).replace(tzinfo=None)
    except OverflowError:  # a time out of the calendar's range once in UTC
        raise ValueError(text) from None
    if not _API_TIME.match(text):
        raise ValueError(text)
    return parsed


def parse_send_at(value: object, *, now: datetime) -> datetime | None:
    """Return `send_at` as naive UTC, None for "now" (absent, or up to 5 minutes past).

    Accepted: the times of `parse_time`. Anything else, further in the past, or
    more than 35 days ahead is rejected with the contract's message.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise Rejected(SEND_AT_MESSAGE)
    try:
        parsed = parse_time(value)
    except ValueError:  # not a time, or one out of the calendar's range
        raise Rejected(SEND_AT_MESSAGE) from None
    if parsed < now - PAST_GRACE or parsed > now + MAX_AHEAD:
        raise Rejected(SEND_AT_MESSAGE)
    return None if parsed <= now else parsed.replace(microsecond=0)


def parse_quiet_hours(value: object) -> QuietHours | None:
    """Return the quiet hours of `{"start": "HH:MM", "end": "HH:MM"}` or `"HH:MM-HH:MM"`."""
    if value is None:
        return None
    if isinstance(value, str) and value.count("-") == 1:
        start, end = value.split("-")
    elif isinstance(value, dict) and set(value) == {"start", "end"}:
        start, end = value["start"], value["end"]
    else:
        raise Rejected(QUIET_HOURS_MESSAGE)
    times = []
    for raw in (start, end):
        match = _HH_MM.match(raw.strip()) if isinstance(raw, str) else None
        if match is None:
            raise Rejected(QUIET_HOURS_MESSAGE)
        times.append(time(int(match.group(1)), int(match.group(2))))
    return QuietHours(times[0], times[1])


def parse_validity(value: object) -> int | None:
    """Return the validity period in seconds, 1 to 36000, or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_VALIDITY:
        raise Rejected(VALIDITY_MESSAGE)
    return value


@lru_cache(maxsize=4096)
def zones_for(number: str) -> tuple[ZoneInfo, ...]:
    """Return the time zones an E.164 number may be in; none when phonenumbers knows none."""
    try:
        names = number_zones.time_zones_for_number(phonenumbers.parse(number, None))
    except phonenumbers.NumberParseException:
        return ()
    zones = []
    for name in names:
        try:
            zones.append(ZoneInfo(name))
        except (ZoneInfoNotFoundError, ValueError):
            continue  # "Etc/Unknown", or a zone this system's database lacks
    return tuple(zones)


def due_at(
    not_before: datetime, *, quiet: QuietHours | None, zones: Sequence[ZoneInfo]
) -> datetime:
    """Return the first moment from `not_before` (naive UTC) outside quiet hours in every zone.

    Each round moves to the latest end of the windows that hold the moment,
    until none does: DST is the zone database's (a window's end is found on the
    local calendar, then turned back into UTC). When no moment is free in every
    zone at once (a long window over zones far apart), it goes when each zone's
    window holding `not_before` has ended: the first round's answer.
    """
    moment = not_before
    if quiet is None or not zones or quiet.start == quiet.end:
        return moment
    first_round = None
    while moment < not_before + SEARCH:
        ends = [_window_end(moment, quiet, zone) for zone in zones]
        held = [end for end in ends if end is not None]
        if not held:
            return moment
        moment = max(held)
        first_round = first_round or moment
    return first_round or moment


def _window_end(moment: datetime, quiet: QuietHours, zone: ZoneInfo) -> datetime | None:
    """Return when the window holding `moment` ends in `zone` (naive UTC); None if it does not."""
    local = moment.replace(tzinfo=UTC).astimezone(zone)
    if not quiet.holds(local.time().replace(tzinfo=None)):
        return None
    day = local.date()
    if quiet.start > quiet.end and local.time().replace(tzinfo=None) >= quiet.start:
        day += timedelta(days=1)  # the window crossed midnight: it ends tomorrow
    # fold=0: on a day the clocks go back, the first time the wall clock reads `end`.
    end = datetime.combine(day, quiet.end, tzinfo=zone).astimezone(UTC)
    wall = end.astimezone(zone)
    if (wall.hour, wall.minute) != (quiet.end.hour, quiet.end.minute):
        # `end` fell in the gap of a spring-forward: the first minute after the jump is free.
        end = _after_gap(end, quiet, zone)
    return end.replace(tzinfo=None)


def _after_gap(candidate: datetime, quiet: QuietHours, zone: ZoneInfo) -> datetime:
    """Step back minute by minute from `candidate` while the local time stays outside."""
    step = timedelta(minutes=1)
    while not quiet.holds((candidate - step).astimezone(zone).time().replace(tzinfo=None)):
        candidate -= step
    return candidate


@dataclass(frozen=True)
class Schedule:
    """What a send asked for: a send_at (None: now), quiet hours, a validity period."""

    send_at: datetime | None = None
    quiet: QuietHours | None = None
    validity_period: int | None = None

    @classmethod
    def parse(
        cls, *, send_at: object, quiet_hours: object, validity_period: object, now: datetime
    ) -> Schedule | None:
        """Return the checked schedule of a send's fields, None if it gave none of them."""
        if send_at is None and quiet_hours is None and validity_period is None:
            return None
        return cls(
            parse_send_at(send_at, now=now),
            parse_quiet_hours(quiet_hours),
            parse_validity(validity_period),
        )


@dataclass(frozen=True)
class Timing:
    """When an accepted message is due (None: now) and until when it may be handed over."""

    send_at: datetime | None
    valid_until: datetime | None


def timing(schedule: Schedule, *, to: str, now: datetime) -> Timing:
    """Return when a message to `to` (E.164) is due, and until when it may be handed over.

    The validity period runs from the send time asked for (its send_at, or now), not
    from the end of quiet hours: a message held longer than its validity expires.
    """
    send_time = max(schedule.send_at or now, now)
    due = due_at(send_time, quiet=schedule.quiet, zones=zones_for(to))
    scheduled = due if due > now else None
    valid_until = None
    if schedule.validity_period is not None:
        valid_until = send_time + timedelta(seconds=schedule.validity_period)
    return Timing(scheduled, valid_until)
