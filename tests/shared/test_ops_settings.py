"""The operations settings: log level, Flower's basic auth, the worker's metrics port."""

from __future__ import annotations

import pytest

from shared.settings import SettingsError, load_settings

GOOD = {
    "DATABASE_URL": "postgresql+psycopg://u@h/db",
    "TWILIO_ACCOUNT_SID": "AC" + "a" * 32,
    "TWILIO_AUTH_TOKEN": "secret",
}


def test_defaults_and_values():
    settings = load_settings(GOOD)
    assert (settings.log_level, settings.flower_basic_auth, settings.worker_metrics_port) == (
        "INFO",
        "",
        9808,
    )
    settings = load_settings(
        {**GOOD, "LOG_LEVEL": "debug", "FLOWER_BASIC_AUTH": "a:b,c:d", "WORKER_METRICS_PORT": "0"}
    )
    assert (settings.log_level, settings.flower_basic_auth, settings.worker_metrics_port) == (
        "DEBUG",
        "a:b,c:d",
        0,
    )


@pytest.mark.parametrize(
    "change, named",
    [
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL must be one of"),
        ({"FLOWER_BASIC_AUTH": "admin"}, "FLOWER_BASIC_AUTH must be user:password"),
        ({"WORKER_METRICS_PORT": "70000"}, "WORKER_METRICS_PORT must be a port number"),
    ],
)
def test_a_bad_value_is_named(change, named):
    with pytest.raises(SettingsError, match=named):
        load_settings({**GOOD, **change})
