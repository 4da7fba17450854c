"""send_at, quiet hours in the recipient's own time zones, validity: the rules, on fixed clocks.

`due_at` jumps from window end to window end; the plain way, minute by minute
until every zone is outside its window (`scan`), is its oracle.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.errors import Rejected
from shared.scheduling import (
    QUIET_HOURS_MESSAGE,
    SEND_AT_MESSAGE,
    VALIDITY_MESSAGE,
    QuietHours,
    Schedule,
    due_at,
    parse_quiet_hours,
    parse_send_at,
    parse_validity,
    timing,
    zones_for,
)

NOW = datetime(2026, 12, 4, 12, 0, 0)
NIGHT = QuietHours(time(21, 0), time(8, 0))
NEW_YORK = "+12125550123"
HONOLULU = "+18085550123"
LONDON = "+442071234567"
TOKYO = "+81312345678"
AUSTRALIA = "+61412345678"  # a mobile: any of eight zones, Cocos (UTC+6:30) to Lord Howe
NO_ZONE = "+870773111632"  # Inmarsat: no time zone


def utc(*args: int) -> datetime:
    return datetime(*args)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("2026-12-05T09:00:00+01:00", utc(2026, 12, 5, 8, 0, 0)),
        ("2026-12-05T08:00:00Z", utc(2026, 12, 5, 8, 0, 0)),
        ("2026-12-05T03:00:00-05:00", utc(2026, 12, 5, 8, 0, 0)),
        ("2026-12-05 08:00:00", utc(2026, 12, 5, 8, 0, 0)),
        ("2027-01-08 11:59:00", utc(2027, 1, 8, 11, 59, 0)),  # just inside 35 days
        ("2026-12-04 11:56:00", None),  # four minutes past: now
        ("2026-12-04T12:00:00Z", None),
        (None, None),
    ],
)
def test_send_at_forms(raw, expected):
    assert parse_send_at(raw, now=NOW) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "2026-12-04 11:54:00",  # six minutes past
        "2027-01-08 12:01:00",  # past 35 days
        "2026-12-05T08:00:00",  # ISO without an offset: which zone?
        "2026-12-05",
        "tomorrow",
        "",
        "0001-01-01T00:00:00+01:00",  # before the calendar begins, in UTC
        "9999-12-31T23:59:59-01:00",
        1733400000,
        {"at": "now"},
    ],
)
def test_send_at_refused_with_the_contracts_message(raw):
    with pytest.raises(Rejected) as refused:
        parse_send_at(raw, now=NOW)
    assert refused.value.message == SEND_AT_MESSAGE


def test_quiet_hours_forms():
    assert parse_quiet_hours({"start": "21:00", "end": "08:00"}) == NIGHT
    assert parse_quiet_hours("21:00-08:00") == NIGHT  # a campaign's form field
    assert parse_quiet_hours(None) is None
    for bad in (
        {"start": "21:00"},
        {"start": "9pm", "end": "08:00"},
        {"start": "24:00", "end": "08:00"},
        {"start": "21:00", "end": "08:00", "zone": "UTC"},
        {"start": 21, "end": 8},
        "21-8",
        [],
    ):
        with pytest.raises(Rejected) as refused:
            parse_quiet_hours(bad)
        assert refused.value.message == QUIET_HOURS_MESSAGE


def test_validity_bounds():
    assert parse_validity(1) == 1 and parse_validity(36000) == 36000
    for bad in (0, 36001, -5, 1.5, "60", True):
        with pytest.raises(Rejected) as refused:
            parse_validity(bad)
        assert refused.value.message == VALIDITY_MESSAGE


@pytest.mark.parametrize(
    "to, not_before, expected, why",
    [
        # The US springs forward on 2027-03-14: 08:00 that morning is EDT, UTC-4.
        (NEW_YORK, utc(2027, 3, 14, 5, 0), utc(2027, 3, 14, 12, 0), "midnight EST to 8 EDT"),
        # ...and falls back on 2027-11-07: 08:00 is EST again, UTC-5.
        (NEW_YORK, utc(2027, 11, 7, 4, 0), utc(2027, 11, 7, 13, 0), "midnight EDT to 8 EST"),
        (NEW_YORK, utc(2027, 3, 14, 2, 0), utc(2027, 3, 14, 12, 0), "21:00 EST, overnight"),
        (NEW_YORK, utc(2027, 3, 13, 23, 0), utc(2027, 3, 13, 23, 0), "18:00 EST: not held"),
        # Hawaii keeps UTC-10 all year, five hours behind New York in winter.
        (HONOLULU, utc(2027, 3, 14, 10, 0), utc(2027, 3, 14, 18, 0), "midnight HST"),
        (HONOLULU, utc(2027, 3, 14, 20, 0), utc(2027, 3, 14, 20, 0), "10:00 HST: free"),
        # London goes to BST at 01:00 UTC on 2027-03-28.
        (LONDON, utc(2027, 3, 28, 0, 30), utc(2027, 3, 28, 7, 0), "00:30 GMT to 08:00 BST"),
        (LONDON, utc(2027, 10, 31, 0, 30), utc(2027, 10, 31, 8, 0), "01:30 BST to 08:00 GMT"),
        (TOKYO, utc(2027, 3, 14, 14, 0), utc(2027, 3, 14, 23, 0), "23:00 JST to 08:00"),
        (NO_ZONE, utc(2027, 3, 14, 2, 0), utc(2027, 3, 14, 2, 0), "no known zone: not held"),
    ],
)
def test_quiet_hours_on_fixed_clocks(to, not_before, expected, why):
    assert due_at(not_before, quiet=NIGHT, zones=zones_for(to)) == expected, why
    assert due_at(not_before, quiet=NIGHT, zones=zones_for(to)) == scan(not_before, NIGHT, to)


def test_a_number_with_several_zones_waits_for_all_of_them():
    zones = zones_for(AUSTRALIA)
    assert len(zones) >= 6
    # 21:00 in Perth (UTC+8) is 00:00 in Sydney (AEDT, UTC+11): held until 08:00 on the
    # Cocos Islands (UTC+6:30), the westernmost zone an Australian mobile may be in.
    not_before = utc(2027, 1, 10, 13, 0)
    assert due_at(not_before, quiet=NIGHT, zones=zones) == utc(2027, 1, 11, 1, 30)
    assert due_at(not_before, quiet=NIGHT, zones=zones) == scan(not_before, NIGHT, AUSTRALIA)
    # Sydney alone would have let it go at 21:00 UTC (08:00 AEDT).
    sydney = [z for z in zones if z.key == "Australia/Sydney"]
    assert due_at(not_before, quiet=NIGHT, zones=sydney) == utc(2027, 1, 10, 21, 0)


def test_an_end_inside_the_spring_forward_gap_is_the_jump_itself():
    # 22:00-02:30 in New York on 2027-03-14: 02:30 does not exist; 03:00 EDT comes first.
    late = QuietHours(time(22, 0), time(2, 30))
    start = utc(2027, 3, 14, 4, 0)  # 23:00 EST
    assert due_at(start, quiet=late, zones=zones_for(NEW_YORK)) == utc(2027, 3, 14, 7, 0)
    assert scan(start, late, NEW_YORK) == utc(2027, 3, 14, 7, 0)


def test_an_empty_window_holds_nothing():
    assert due_at(NOW, quiet=QuietHours(time(9), time(9)), zones=zones_for(NEW_YORK)) == NOW


def test_timing_sets_validity_from_the_send_time_asked_for():
    schedule = Schedule(send_at=utc(2027, 3, 14, 5, 0), quiet=NIGHT, validity_period=600)
    when = timing(schedule, to=NEW_YORK, now=utc(2027, 3, 10))
    assert when.send_at == utc(2027, 3, 14, 12, 0)  # held past its own send_at by the night
    # Held longer than its validity: it expires at 05:10 and is never sent.
    assert when.valid_until == utc(2027, 3, 14, 5, 10) < when.send_at
    daytime = Schedule(send_at=utc(2027, 3, 14, 15, 0), quiet=NIGHT, validity_period=600)
    assert timing(daytime, to=NEW_YORK, now=utc(2027, 3, 10)).valid_until == utc(
        2027, 3, 14, 15, 10
    )
    now_only = timing(Schedule(validity_period=60), to=NEW_YORK, now=NOW)
    assert now_only.send_at is None and now_only.valid_until == NOW + timedelta(seconds=60)


# Around the year's DST changes of the zones above, and ordinary days.
MOMENTS = st.sampled_from(
    [
        utc(2027, 3, 13, 0, 0),
        utc(2027, 3, 27, 12, 0),
        utc(2027, 4, 3, 6, 0),
        utc(2027, 10, 2, 12, 0),
        utc(2027, 10, 30, 12, 0),
        utc(2027, 11, 6, 0, 0),
        utc(2027, 7, 1, 0, 0),
    ]
)
TIMES = st.builds(time, st.integers(0, 23), st.sampled_from([0, 15, 30, 45, 59]))


@settings(max_examples=60, deadline=None)
@given(
    moment=MOMENTS,
    offset=st.integers(0, 48 * 60),
    start=TIMES,
    end=TIMES,
    to=st.sampled_from([NEW_YORK, HONOLULU, LONDON, TOKYO, AUSTRALIA, NO_ZONE]),
)
def test_due_at_agrees_with_a_minute_by_minute_scan(moment, offset, start, end, to):
    quiet = QuietHours(start, end)
    not_before = moment + timedelta(minutes=offset)
    assert due_at(not_before, quiet=quiet, zones=zones_for(to)) == scan(not_before, quiet, to)


def scan(not_before: datetime, quiet: QuietHours, to: str) -> datetime:
    """The plain way: the first minute, from `not_before`, outside the window in every zone.

    With none in two days, the first minute by which every zone has been outside
    its window once (the latest of the zones' own first free minutes).
    """
    zones = zones_for(to)

    def first_free(these) -> datetime | None:
        def held(moment: datetime) -> bool:
            aware = moment.replace(tzinfo=UTC)
            return any(quiet.holds(aware.astimezone(z).time().replace(tzinfo=None)) for z in these)

        if quiet.start == quiet.end or not held(not_before):
            return not_before
        moment = not_before.replace(second=0) + timedelta(minutes=1)
        for _ in range(2 * 24 * 60):
            if not held(moment):
                return moment
            moment += timedelta(minutes=1)
        return None

    found = first_free(zones)
    return found if found is not None else max(first_free([zone]) for zone in zones)
