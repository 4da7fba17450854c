"""Fuzzing every documented route with schemathesis: no 5xx, no answer outside its schema."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.api.conftest import auth

EXAMPLES = 40


def test_no_route_answers_5xx_or_outside_its_schema(app, account):
    _user_id, token, _number_id = account
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    checked = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case):
            # A well-typed send may still be refused by a business rule (400): that is
            # not a fault. A 5xx, or an answer its schema does not describe, is.
            case.call_and_validate(headers=auth(token), excluded_checks=[positive_data_acceptance])

        fuzz()
        checked.append(operation.label)
    assert any("POST /api/user/sms" in label for label in checked), checked
