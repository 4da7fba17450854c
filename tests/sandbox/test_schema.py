"""The sandbox's JSON checked against Twilio's OpenAPI description and error shape."""

from __future__ import annotations

import datetime as dt
import json
import time
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
from openapi_schema_validator import OAS30Validator

# An extract of Twilio's OpenAPI description (MIT, see TWILIO_OPENAPI_LICENSE):
# the Messages routes and every schema they reference, from twilio_api_v2010.json.
SPEC = Path(__file__).with_name("twilio_messages_openapi.json")
MESSAGE = "#/components/schemas/api.v2010.account.message"
LIST = "/2010-04-01/Accounts/{AccountSid}/Messages.json"
ERROR_SCHEMA = {
    "type": "object",
    "required": ["code", "message", "more_info", "status"],
    "additionalProperties": False,
    "properties": {
        "code": {"type": "integer"},
        "message": {"type": "string", "minLength": 1},
        "more_info": {"type": "string", "pattern": r"^https://www\.twilio\.com/docs/errors/\d+$"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
    },
}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    """Load the extract of Twilio's OpenAPI description of API v2010."""
    return json.loads(SPEC.read_text())


def validator(spec: dict[str, Any], schema: dict[str, Any]) -> OAS30Validator:
    """Return an OpenAPI 3.0 validator (nullable aware) that resolves refs in the spec."""
    return OAS30Validator({**schema, "components": spec["components"]})


def check_message(spec: dict[str, Any], message: dict[str, Any]) -> None:
    """Validate one message and the details the schema cannot express."""
    validator(spec, {"$ref": MESSAGE}).validate(message)
    properties = spec["components"]["schemas"]["api.v2010.account.message"]["properties"]
    assert set(message) == set(properties)
    for key in ("date_created", "date_sent", "date_updated"):
        assert parsedate_to_datetime(message[key]).utcoffset() == dt.timedelta(0)


def test_created_fetched_and_delivered_messages_match_the_schema(spec, http, messages_url):
    created = http.post(
        messages_url,
        data={
            "To": "+15558675310",
            "From": "+15017122661",
            "Body": "Hi",
            "StatusCallback": "",
        },
    )
    assert created.status_code == 201
    check_message(spec, created.json())
    url = messages_url.replace(".json", f"/{created.json()['sid']}.json")
    for _ in range(200):
        fetched = http.get(url).json()
        if fetched["status"] == "delivered":
            break
        time.sleep(0.01)
    check_message(spec, fetched)
    assert fetched["price"].startswith("-")


def test_list_page_matches_the_schema(spec, http, messages_url):
    for i in range(3):
        http.post(messages_url, data={"To": f"+1555867531{i}", "From": "+15017122661", "Body": "x"})
    page = http.get(messages_url, params={"PageSize": 2}).json()
    schema = spec["paths"][LIST]["get"]["responses"]["200"]["content"]["application/json"]
    validator(spec, schema["schema"]).validate(page)
    assert {
        "messages",
        "page",
        "page_size",
        "first_page_uri",
        "next_page_uri",
        "previous_page_uri",
        "uri",
        "start",
        "end",
    } <= set(page)
    for message in page["messages"]:
        check_message(spec, message)


@pytest.mark.parametrize(
    ("changes", "data", "status"),
    [
        ({}, {"To": "+15005550001", "From": "+15017122661", "Body": "x"}, 400),
        ({}, {"To": "+15558675310", "From": "+15005550008", "Body": "x"}, 400),
        ({"rate_429": 1}, {"To": "+15558675310", "From": "+15017122661", "Body": "x"}, 429),
        ({"rate_500": 1}, {"To": "+15558675310", "From": "+15017122661", "Body": "x"}, 500),
    ],
)
def test_error_bodies_have_twilio_shape(sandbox_server, http, messages_url, changes, data, status):
    sandbox_server.configure(**changes)
    response = http.post(messages_url, data=data)
    assert response.status_code == status
    assert response.headers["Content-Type"].startswith("application/json")
    OAS30Validator(ERROR_SCHEMA).validate(response.json())
    assert response.json()["status"] == status


def test_auth_and_not_found_errors_have_twilio_shape(http, messages_url):
    unauthorized = http.get(messages_url, auth=("AC" + "0" * 32, "wrong"))
    missing = http.get(messages_url.replace(".json", "/SM" + "0" * 32 + ".json"))
    unknown_route = http.get(messages_url.replace("Messages.json", "Calls.json"))
    for response, status, code in (
        (unauthorized, 401, 20003),
        (missing, 404, 20404),
        (unknown_route, 404, 20404),
    ):
        OAS30Validator(ERROR_SCHEMA).validate(response.json())
        assert (response.status_code, response.json()["code"]) == (status, code)
