"""Fuzzing every documented route with schemathesis: no 5xx, no answer outside its schema."""

from __future__ import annotations

from collections.abc import Callable

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance
from sqlalchemy import select

from shared.models import ApiToken
from shared.operators import create_admin_token
from tests.api.conftest import auth

EXAMPLES = 40
ADMIN = "/api/admin/"


def fuzz_operations(
    app, token: str, wanted: Callable[[str], bool], known: dict[str, list] | None = None
) -> list[str]:
    """Fuzz every documented operation whose path is `wanted`, with the token; return them.

    A path parameter named in `known` is often one of its real values there, so that
    operations on existing rows are fuzzed too, not only their 404s. Deletions run last.
    """
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    checked = []
    for operation in sorted(operations, key=lambda op: op.method.upper() == "DELETE"):
        if not wanted(operation.path):
            continue

        @given(case=operation.as_strategy(), data=st.data())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case, data):
            for name, value in (case.path_parameters or {}).items():
                if name in (known or {}):
                    choices = [value, *known[name]]  # type: ignore[index]
                    case.path_parameters[name] = data.draw(st.sampled_from(choices))
            # A well-typed send may still be refused by a business rule (400): that is
            # not a fault. A 5xx, or an answer its schema does not describe, is.
            case.call_and_validate(headers=auth(token), excluded_checks=[positive_data_acceptance])

        fuzz()
        checked.append(operation.label)
    return checked


def test_no_route_answers_5xx_or_outside_its_schema(app, account):
    _user_id, token, _number_id = account
    checked = fuzz_operations(app, token, lambda path: not path.startswith(ADMIN))
    assert any("POST /api/user/sms" in label for label in checked), checked


def test_no_operator_route_answers_5xx_or_outside_its_schema(app, account, session):
    user_id, _token, number_id = account
    _, admin = create_admin_token(session, name="fuzzer")
    session.commit()
    known = {
        "user_id": [user_id],
        "number_id": [number_id],
        "token_id": list(session.scalars(select(ApiToken.id))),
        "country": ["US", "gb"],
    }
    checked = fuzz_operations(app, admin, lambda path: path.startswith(ADMIN), known)
    assert len(checked) == 14, checked
    assert "POST /api/admin/users/{user_id}/topups" in checked, checked
    assert "POST /api/admin/prices/import" in checked, checked
