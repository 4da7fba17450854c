"""Settings: defaults, and one clear line for a missing or malformed value."""

from __future__ import annotations

import pytest

from shared.settings import SettingsError, load_settings, settings_or_exit

GOOD = {
    "DATABASE_URL": "postgresql+psycopg://u@h/db",
    "TWILIO_ACCOUNT_SID": "AC" + "a" * 32,
    "TWILIO_AUTH_TOKEN": "secret",
}


def test_defaults():
    settings = load_settings(GOOD)
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.twilio_api_base == "https://api.twilio.com"
    assert settings.public_base_url == "http://127.0.0.1:8000"
    assert settings.callback_allow_private is False
    assert settings.status_callback_base == "http://127.0.0.1:8000/webhooks/twilio/status"
    assert settings.message_retention_days == 0
    assert load_settings({**GOOD, "MESSAGE_RETENTION_DAYS": "90"}).message_retention_days == 90
    assert settings.broker == settings.redis_url and not settings.broker_is_amqp
    assert settings.log_format == "json"
    assert load_settings({**GOOD, "LOG_FORMAT": "Console"}).log_format == "console"


def test_broker_url_names_rabbitmq_and_redis_stays_for_limits():
    env = {**GOOD, "BROKER_URL": "amqp://guest:guest@mq:5672//", "REDIS_URL": "redis://r:6379/1"}
    settings = load_settings(env)
    assert settings.broker == "amqp://guest:guest@mq:5672//" and settings.broker_is_amqp
    assert settings.redis_url == "redis://r:6379/1"
    redis_broker = load_settings({**GOOD, "BROKER_URL": "redis://b:6379/2"})
    assert redis_broker.broker == "redis://b:6379/2" and not redis_broker.broker_is_amqp


@pytest.mark.parametrize(
    "change, named",
    [
        ({"DATABASE_URL": ""}, "DATABASE_URL is required"),
        ({"DATABASE_URL": "mysql://x/y"}, "DATABASE_URL must be a URL"),
        ({"TWILIO_ACCOUNT_SID": "XY123"}, "TWILIO_ACCOUNT_SID must be AC"),
        ({"TWILIO_AUTH_TOKEN": " "}, "TWILIO_AUTH_TOKEN is required"),
        ({"REDIS_URL": "http://x"}, "REDIS_URL must be a URL"),
        ({"REDIS_URL": "amqp://x"}, "REDIS_URL must be a URL"),
        ({"BROKER_URL": "kafka://x"}, "BROKER_URL must be a URL"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT must be json or console"),
        ({"TWILIO_API_BASE": "ftp://x"}, "TWILIO_API_BASE must be a URL"),
        ({"CALLBACK_ALLOW_PRIVATE": "maybe"}, "CALLBACK_ALLOW_PRIVATE must be true or false"),
        ({"TWILIO_TIMEOUT": "-1"}, "TWILIO_TIMEOUT must be positive"),
        ({"SEND_MAX_RETRIES": "x"}, "SEND_MAX_RETRIES must be a number"),
        ({"MESSAGE_RETENTION_DAYS": "-1"}, "MESSAGE_RETENTION_DAYS must be a whole number"),
        ({"MESSAGE_RETENTION_DAYS": "30d"}, "MESSAGE_RETENTION_DAYS must be a whole number"),
    ],
)
def test_bad_setting_is_named(change, named):
    with pytest.raises(SettingsError, match=named):
        load_settings({**GOOD, **change})
    with pytest.raises(SystemExit) as stop:
        settings_or_exit({**GOOD, **change})
    assert str(stop.value).count("\n") == 0 and named.split()[0] in str(stop.value)
