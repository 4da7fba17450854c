"""Message templates: `{name}` placeholders and nothing else.

Unlike `str.format`, a template can reach no attribute, index, conversion or
format spec, so a user's template can never read more than the variables of
its own row. `{{` and `}}` stand for literal braces.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class TemplateError(ValueError):
    """The template uses syntax other than `{name}`; the message says where."""


class MissingVariable(KeyError):
    """A row has no value for one of the template's variables."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed template: literal text and variable names, alternating."""

    parts: tuple[str, ...]  # literal, name, literal, name, ..., literal

    @property
    def variables(self) -> tuple[str, ...]:
        """Return the variable names in order of first use, without repeats."""
        return tuple(dict.fromkeys(self.parts[1::2]))

    def render(self, values: Mapping[str, object]) -> str:
        """Fill in the variables; a missing one raises MissingVariable."""
        out = []
        for position, part in enumerate(self.parts):
            if position % 2 == 0:
                out.append(part)
                continue
            value = values.get(part)
            if value is None:
                raise MissingVariable(part)
            out.append(value if isinstance(value, str) else _scalar(value, part))
        return "".join(out)


def _scalar(value: object, name: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    # Objects and lists have no text form a user would expect: treat them as missing.
    raise MissingVariable(name)


def parse_template(text: str) -> Template:
    """Parse a template, or raise TemplateError naming the first unsupported piece."""
    parts: list[str] = []
    literal: list[str] = []
    position = 0
    for match in _TOKEN.finditer(text):
        literal.append(text[position : match.start()])
        position = match.end()
        token = match.group(0)
        if token in ("{{", "}}"):
            literal.append(token[0])
        elif token in ("{", "}"):
            raise TemplateError(f"unmatched '{token}' at character {match.start() + 1}")
        else:
            name = match.group(1).strip()
            if not _NAME.match(name):
                raise TemplateError(f"unsupported placeholder {token}: only {{name}} is allowed")
            parts.append("".join(literal))
            parts.append(name)
            literal = []
    literal.append(text[position:])
    parts.append("".join(literal))
    return Template(tuple(parts))
