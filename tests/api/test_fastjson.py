"""The app's JSON (orjson) against the standard library's, its oracle."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal

import pytest
from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st

from api.fastjson import OrjsonProvider

_app = Flask(__name__)  # providers hold their app weakly
_provider = OrjsonProvider(_app)
_provider.sort_keys = False
_plain = Flask(__name__ + ".plain").json
_plain.sort_keys = False

# Anything a JSON body or an answer can hold, lone surrogates and huge integers included.
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(values)
def test_what_it_writes_reads_back_as_the_standard_library_writes_it(value):
    assert json.loads(_provider.dumps(value)) == json.loads(_plain.dumps(value))


@settings(max_examples=300, deadline=None)
@given(values)
def test_it_reads_what_the_standard_library_reads(value):
    text = json.dumps(value)
    assert _provider.loads(text) == json.loads(text)
    assert _provider.loads(text.encode()) == json.loads(text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30) | st.binary(max_size=30))
def test_what_is_not_json_is_refused_as_the_standard_library_refuses_it(text):
    try:
        expected = json.loads(text)
    except ValueError:  # the standard library's refusal; Flask answers 400 for it
        with pytest.raises(ValueError):
            _provider.loads(text)
    else:
        assert _provider.loads(text) == expected


def test_dates_and_decimals_are_written_as_flask_writes_them():
    value = {"at": datetime(2026, 12, 7, 8, 30), "amount": Decimal("0.0079")}
    assert json.loads(_provider.dumps(value)) == json.loads(_plain.dumps(value))
    with _app.app_context():
        answer = _provider.response(value)
    assert answer.mimetype == "application/json"
    assert json.loads(answer.get_data()) == json.loads(_plain.dumps(value))
