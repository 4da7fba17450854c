"""Templates: `{name}` placeholders only, and a missing variable names itself."""

from __future__ import annotations

import pytest

from shared.templates import MissingVariable, TemplateError, parse_template


def test_placeholders_are_filled_and_double_braces_are_literal():
    template = parse_template("Hi {name}, code {code} {{not a var}} {name}!")
    assert template.variables == ("name", "code")
    assert template.render({"name": "Ann", "code": 42}) == "Hi Ann, code 42 {not a var} Ann!"


def test_a_template_without_placeholders_renders_as_is():
    assert parse_template("Sale today").render({}) == "Sale today"


@pytest.mark.parametrize(
    "text",
    [
        "{name.__class__}",
        "{name[0]}",
        "{name!r}",
        "{name:>10}",
        "{0}",
        "{}",
        "{a b}",
        "{",
        "}",
        "x {name",
        "name}",
        "{{name}",
    ],
)
def test_anything_but_a_plain_name_is_refused(text):
    with pytest.raises(TemplateError):
        parse_template(text)


def test_a_missing_or_non_scalar_variable_raises_with_its_name():
    template = parse_template("Hi {name} {city}")
    with pytest.raises(MissingVariable) as missing:
        template.render({"name": "Ann"})
    assert missing.value.name == "city"
    with pytest.raises(MissingVariable):
        template.render({"name": {"a": 1}, "city": "X"})
    assert template.render({"name": True, "city": 1.5}) == "Hi true 1.5"


def test_values_are_not_interpreted_as_templates():
    assert parse_template("{a}").render({"a": "{b.__class__}"}) == "{b.__class__}"
