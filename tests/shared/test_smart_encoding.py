"""Tests for shared.smart_encoding: the table is Twilio's, and counts after it are Twilio's.

The reference is tests/data/twilio_smart_encoding_map.ts: src/libs/SmartEncodingMap.ts of
github.com/TwilioDevEd/message-segment-calculator, vendored verbatim (under a header that
names it) from its npm package sms-segments-calculator 1.3.0.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.segments import GSM7, GSM7_BASIC, GSM7_EXTENSION, UCS2, count_segments
from shared.smart_encoding import TABLE, replace

VENDORED = Path(__file__).parents[1] / "data" / "twilio_smart_encoding_map.ts"
GSM_CHARS = GSM7_BASIC + GSM7_EXTENSION

# A JavaScript string literal, single- or double-quoted.
_JS_STRING = r"""'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*\""""
_ENTRY = re.compile(rf"^[ \t]*({_JS_STRING})[ \t]*:[ \t]*({_JS_STRING})[ \t]*,", re.MULTILINE)
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|x[0-9a-fA-F]{2}|.)", re.DOTALL)
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "v": "\v", "0": "\0"}


def _js_string(literal: str) -> str:
    """Decode a JavaScript string literal: its \\uXXXX, \\xXX and one-character escapes."""

    def unescape(match: re.Match[str]) -> str:
        code = match[1]
        if code[0] in "ux" and len(code) > 1:
            return chr(int(code[1:], 16))
        return _SIMPLE_ESCAPES.get(code, code)

    return _ESCAPE.sub(unescape, literal[1:-1])


def _vendored() -> tuple[str, str]:
    """Return the vendored file's header and its verbatim part, split at the first blank line."""
    header, _, body = VENDORED.read_text(encoding="utf-8").partition("\n\n")
    return header, body


def _twilio_entries() -> list[tuple[str, str]]:
    """Return every (character, replacement) of Twilio's file, in file order, duplicates kept."""
    _, body = _vendored()
    entries = [(_js_string(key), _js_string(value)) for key, value in _ENTRY.findall(body)]
    # Every line that opens with a quote is an entry: none may slip past the pattern.
    assert len(entries) == len(re.findall(r"^[ \t]*['\"]", body, re.MULTILINE))
    return entries


TWILIO = _twilio_entries()


def digits(n: int) -> str:
    """Return n GSM characters, as in the calculator's own tests."""
    return ("1234567890" * 40)[:n]


# --- the table is Twilio's


def test_vendored_file_is_verbatim() -> None:
    header, body = _vendored()
    recorded = re.search(r"sha256 of the vendored part: ([0-9a-f]{64})", header)
    assert recorded is not None
    assert hashlib.sha256(body.encode("utf-8")).hexdigest() == recorded[1]
    assert body.startswith("const SmartEncodingMap")


def test_twilio_file_has_271_entries_and_no_duplicate() -> None:
    # A JavaScript object literal keeps the last of two equal keys without a word.
    keys = [key for key, _ in TWILIO]
    assert len(keys) == len(set(keys)) == 271


def test_table_equals_twilio_entry_by_entry() -> None:
    twilio = dict(TWILIO)
    assert sorted(twilio.keys() - TABLE.keys()) == [], "missing from TABLE"
    assert sorted(TABLE.keys() - twilio.keys()) == [], "not in Twilio's file"
    differ = {
        f"U+{ord(key):04X}": (TABLE[key], twilio[key])
        for key in twilio
        if TABLE[key] != twilio[key]
    }
    assert differ == {}


def test_table_keys_are_single_code_points_in_order() -> None:
    assert all(len(key) == 1 for key in TABLE)
    assert list(TABLE) == sorted(TABLE)


def test_no_key_is_already_gsm7() -> None:
    # Otherwise Smart Encoding would change bodies that Twilio sends as they are.
    assert not set(TABLE) & set(GSM_CHARS)


def test_every_replacement_is_gsm7_and_contains_no_key() -> None:
    # GSM-7 so that a body of keys and GSM-7 characters becomes GSM-7; keyless so one pass is final.
    for key, value in TABLE.items():
        assert set(value) <= set(GSM_CHARS), f"U+{ord(key):04X}"
        assert not set(value) & TABLE.keys(), f"U+{ord(key):04X}"


# --- replace, as the calculator's own Smart Encoding tests


@pytest.mark.parametrize(("key", "value"), TWILIO, ids=[f"U+{ord(key):04X}" for key, _ in TWILIO])
def test_replace_maps_each_character(key: str, value: str) -> None:
    assert replace(key) == value


def test_replace_all_characters_at_once() -> None:
    assert replace("".join(key for key, _ in TWILIO)) == "".join(value for _, value in TWILIO)


def test_replace_leaves_other_text_alone() -> None:
    body = "Hello Ωmega, café ñ €5 😀 \r\n{ok}"
    assert replace(body) == body


def test_combining_marks_are_replaced_after_a_letter_too() -> None:
    # The calculator replaces code point by code point, before it splits graphemes.
    assert replace("man\u0303ana") == "man~ana"


# --- segments after replace are what Twilio bills

# Each expectation, with and without Smart Encoding, is what Twilio's calculator says:
# sms-segments-calculator 1.3.0, `new SegmentedMessage(body, "auto", smartEncoding)`,
# its `encodingName` and `segmentsCount`.
CASES = [
    pytest.param("\u2019" + digits(159), (GSM7, 1), (UCS2, 3), id="curly quote in 160"),
    pytest.param("\u2019" + digits(160), (GSM7, 2), (UCS2, 3), id="curly quote in 161"),
    pytest.param(digits(158) + "\u00a0", (GSM7, 1), (UCS2, 3), id="no-break space is two, 160"),
    pytest.param(digits(159) + "\u00a0", (GSM7, 2), (UCS2, 3), id="no-break space is two, 161"),
    pytest.param(digits(157) + "\u2026", (GSM7, 1), (UCS2, 3), id="ellipsis is three, 160"),
    pytest.param(digits(158) + "\u2026", (GSM7, 2), (UCS2, 3), id="ellipsis is three, 161"),
    pytest.param(digits(153) + "\t", (GSM7, 1), (UCS2, 3), id="tab is seven spaces, 160"),
    pytest.param(digits(154) + "\t", (GSM7, 2), (UCS2, 3), id="tab is seven spaces, 161"),
    pytest.param(digits(158) + "\uff5e", (GSM7, 1), (UCS2, 3), id="fullwidth tilde escaped, 160"),
    pytest.param(digits(159) + "\uff5e", (GSM7, 2), (UCS2, 3), id="fullwidth tilde escaped, 161"),
    pytest.param(digits(152) + "\uff3b" + digits(152), (GSM7, 3), (UCS2, 5), id="escape not cut"),
    pytest.param(digits(160) + "\u200b", (GSM7, 1), (UCS2, 3), id="zero width space dropped"),
    pytest.param("\ufeff" + digits(10), (GSM7, 1), (UCS2, 1), id="byte order mark dropped"),
    pytest.param("`" * 160, (GSM7, 1), (UCS2, 3), id="grave accent"),
    pytest.param("\u0080" * 80, (GSM7, 1), (UCS2, 2), id="C1 control is two spaces"),
    pytest.param("a\u2028b\u2029c", (GSM7, 1), (UCS2, 1), id="line and paragraph separators"),
    pytest.param("e\u0303" * 80, (GSM7, 2), (UCS2, 3), id="combining tilde"),
    pytest.param("\u203c" * 80, (GSM7, 1), (UCS2, 2), id="double exclamation is two"),
    # Smart Encoding can cost more segments than it saves.
    pytest.param("\u00bd" * 53 + "\u00bc", (GSM7, 2), (UCS2, 1), id="fractions grow"),
    pytest.param("\t" * 70, (GSM7, 4), (UCS2, 1), id="tabs grow"),
    # A character without a look-alike keeps the body UCS-2, replaced or not.
    pytest.param("😀" + digits(65) + "\u2026", (UCS2, 1), (UCS2, 1), id="emoji, 70 units"),
    pytest.param("😀" + digits(66) + "\u2026", (UCS2, 2), (UCS2, 1), id="emoji, 71 units"),
    pytest.param("😀" + "\u00a0" * 34, (UCS2, 1), (UCS2, 1), id="emoji, spaces 70"),
    pytest.param("😀" + "\u00a0" * 35, (UCS2, 2), (UCS2, 1), id="emoji, spaces 72"),
    pytest.param(
        "Your code is 123456 \u2014 don\u2019t share it. \u201cThanks\u201d",
        (GSM7, 1),
        (UCS2, 1),
        id="everyday text",
    ),
    pytest.param("".join(TABLE), (GSM7, 3), (UCS2, 5), id="every key"),
]


@pytest.mark.parametrize(("body", "smart", "plain"), CASES)
def test_segments_after_replace_are_twilios(
    body: str, smart: tuple[str, int], plain: tuple[str, int]
) -> None:
    after = count_segments(replace(body))
    assert (after.encoding, after.segments) == smart
    before = count_segments(body)
    assert (before.encoding, before.segments) == plain


def test_a_body_of_dropped_characters_becomes_empty() -> None:
    # Twilio's calculator calls an empty body one GSM-7 segment; the gateway's counter says
    # none, and Twilio refuses an empty body, so such a body must be caught before sending.
    body = "\u200b\ufeff\u2060\u200c\x00"
    assert replace(body) == ""
    assert count_segments(replace(body)).segments == 0


# --- properties

_KEYS_AND_GSM = st.text(st.sampled_from(sorted(TABLE) + sorted(GSM_CHARS)), max_size=400)


@given(_KEYS_AND_GSM)
def test_replace_leaves_no_key_and_is_idempotent(body: str) -> None:
    replaced = replace(body)
    assert not set(replaced) & TABLE.keys()
    assert replace(replaced) == replaced
    assert count_segments(replaced).encoding == GSM7


@given(st.text(st.characters(codec="utf-8") | st.sampled_from(sorted(TABLE)), max_size=200))
def test_replace_is_the_calculators_per_code_point_map(body: str) -> None:
    # The calculator: [...message].map(char => SmartEncodingMap[char] ?? char).join("")
    assert replace(body) == "".join(TABLE.get(char, char) for char in body)
