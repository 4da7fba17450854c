"""Small pure pieces of the sandbox: segments, switch parsing and date filters."""

from __future__ import annotations

import datetime as dt
from email.utils import format_datetime

import pytest

from sandbox.config import SandboxConfig
from sandbox.errors import TwilioError
from sandbox.listing import parse_when
from sandbox.store import rfc2822


def test_switches_accept_cli_strings_and_reject_bad_values() -> None:
    config = SandboxConfig().updated({"latency_ms": "150", "rate_429": "0.5", "callbacks": "off"})
    assert (config.latency_ms, config.rate_429, config.callbacks) == (150, 0.5, False)
    for bad in ({"rate_429": 1.5}, {"latency_ms": "soon"}, {"callbacks": 2}, {"colour": 1}):
        with pytest.raises(ValueError):
            SandboxConfig().updated(bad)


@pytest.mark.parametrize(
    ("raw", "expected", "whole_day"),
    [
        ("2008-01-02", dt.date(2008, 1, 2), True),
        ("2019-06-11T22:05:25Z", dt.datetime(2019, 6, 11, 22, 5, 25, tzinfo=dt.UTC), False),
        ("2019-06-11 22:05:25.000", dt.datetime(2019, 6, 11, 22, 5, 25, tzinfo=dt.UTC), False),
        ("Wed, 19 Jun 2019 22:04:00 -0000", dt.datetime(2019, 6, 19, 22, 4, tzinfo=dt.UTC), False),
    ],
)
def test_date_filters_parse_the_formats_twilio_documents(raw, expected, whole_day) -> None:
    assert parse_when(raw) == (expected, whole_day)


def test_a_bad_date_filter_is_a_400() -> None:
    with pytest.raises(TwilioError) as caught:
        parse_when("last tuesday")
    assert caught.value.status == 400


def test_dates_are_written_as_the_email_module_writes_them() -> None:
    start = dt.datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC)
    for days in range(0, 3000, 7):
        when = start + dt.timedelta(days=days, seconds=days * 37)
        assert rfc2822(when) == format_datetime(when)
    assert rfc2822(None) is None
