"""Tests for shared.segments: encoding choice, segment counts and segment texts."""

from __future__ import annotations

import pytest
import regex
from hypothesis import assume, given
from hypothesis import strategies as st

from shared.segments import (
    GSM7,
    GSM7_BASIC,
    GSM7_EXTENSION,
    UCS2,
    SegmentCount,
    count_segments,
    split_segments,
)

EXTENSION = set("\f^{}\\[~]|€")
SINGLE = {GSM7: 160, UCS2: 70}
MULTI = {GSM7: 153, UCS2: 67}
GSM_CHARS = set(GSM7_BASIC) | EXTENSION

FAMILY = "👨\u200d👩\u200d👧\u200d👦"  # 4 emoji and 3 joiners: 11 UTF-16 units
FLAG = "🇫🇷"  # two regional indicators: 4 units
THUMB = "👍🏽"  # emoji and skin-tone modifier: 4 units
RAINBOW = "🏳\ufe0f\u200d🌈"  # 6 units


def digits(n: int) -> str:
    """Return n GSM characters, as in the calculator's own tests."""
    return ("1234567890" * 40)[:n]


def units(text: str, encoding: str) -> int:
    """Count septets or UTF-16 code units independently of the module."""
    if encoding == GSM7:
        return sum(2 if char in EXTENSION else 1 for char in text)
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def check_split(body: str) -> list[str]:
    """Split a body and assert what every split must satisfy; return the segments."""
    count = count_segments(body)
    parts = split_segments(body)
    assert "".join(parts) == body
    assert len(parts) == count.segments
    assert sum(units(part, count.encoding) for part in parts) == count.units
    assert all(parts)
    limit = SINGLE[count.encoding] if len(parts) == 1 else MULTI[count.encoding]
    assert all(units(part, count.encoding) <= limit for part in parts)
    return parts


# --- tables


def test_gsm_tables_have_127_basic_and_10_extension_characters() -> None:
    assert len(GSM7_BASIC) == len(set(GSM7_BASIC)) == 127
    assert set(GSM7_EXTENSION) == EXTENSION
    assert not set(GSM7_BASIC) & EXTENSION
    assert "\x1b" not in GSM7_BASIC


@pytest.mark.parametrize("char", ["Ç", "Δ", "¤", "¡", "¿", "à", "\n", "\r", "@", "£"])
def test_basic_table_members_are_gsm(char: str) -> None:
    assert count_segments(char * 10) == SegmentCount(encoding=GSM7, segments=1, units=10)


@pytest.mark.parametrize("char", ["ç", "`", "á", "\t", "\x1b", "¢", "😀"])
def test_characters_outside_the_tables_are_ucs2(char: str) -> None:
    assert count_segments(char).encoding == UCS2


# --- GSM-7


def test_empty_body_has_no_segments() -> None:
    assert count_segments("") == SegmentCount(encoding=GSM7, segments=0, units=0)
    assert split_segments("") == []


def test_160_gsm_characters_are_one_segment_and_161_are_two() -> None:
    assert count_segments("a" * 160) == SegmentCount(encoding=GSM7, segments=1, units=160)
    assert count_segments("a" * 161) == SegmentCount(encoding=GSM7, segments=2, units=161)
    assert [len(part) for part in check_split("a" * 161)] == [153, 8]


def test_306_gsm_characters_are_two_segments_and_307_are_three() -> None:
    assert count_segments("a" * 306).segments == 2
    assert count_segments("a" * 307).segments == 3
    assert [len(part) for part in check_split("a" * 307)] == [153, 153, 1]


def test_extension_characters_count_two_septets_up_to_the_single_limit() -> None:
    assert count_segments("a" * 158 + "{") == SegmentCount(encoding=GSM7, segments=1, units=160)
    assert count_segments("a" * 159 + "{") == SegmentCount(encoding=GSM7, segments=2, units=161)
    assert count_segments("€" * 80) == SegmentCount(encoding=GSM7, segments=1, units=160)


def test_extension_character_straddling_153_moves_to_the_next_segment() -> None:
    body = "a" * 152 + "€" + "b" * 10
    assert count_segments(body) == SegmentCount(encoding=GSM7, segments=2, units=164)
    assert check_split(body) == ["a" * 152, "€" + "b" * 10]


def test_extension_character_ending_exactly_at_153_stays() -> None:
    body = "a" * 151 + "€" + "b" * 10
    assert check_split(body) == ["a" * 151 + "€", "b" * 10]


def test_segments_of_extension_characters_hold_76() -> None:
    assert [len(part) for part in check_split("{" * 81)] == [76, 5]


def test_line_breaks_are_one_septet_each_in_gsm() -> None:
    assert count_segments("\rabcde\r\n123") == SegmentCount(encoding=GSM7, segments=1, units=11)


# --- UCS-2


def test_a_single_non_gsm_character_flips_the_body_to_ucs2() -> None:
    assert count_segments("a" * 100) == SegmentCount(encoding=GSM7, segments=1, units=100)
    assert count_segments("a" * 99 + "ç") == SegmentCount(encoding=UCS2, segments=2, units=100)


def test_70_ucs2_units_are_one_segment_and_71_are_two() -> None:
    assert count_segments("ç" * 70) == SegmentCount(encoding=UCS2, segments=1, units=70)
    assert count_segments("ç" * 71) == SegmentCount(encoding=UCS2, segments=2, units=71)
    assert [len(part) for part in check_split("ç" * 135)] == [67, 67, 1]


def test_emoji_counts_two_units_and_moves_whole_past_67() -> None:
    body = "ç" * 66 + "😀" + "ç" * 10
    assert count_segments(body) == SegmentCount(encoding=UCS2, segments=2, units=78)
    assert check_split(body) == ["ç" * 66, "😀" + "ç" * 10]


def test_emoji_ending_exactly_at_67_stays() -> None:
    assert check_split("ç" * 65 + "😀" + "ç" * 10) == ["ç" * 65 + "😀", "ç" * 10]


@pytest.mark.parametrize("cluster", [FAMILY, FLAG, THUMB, RAINBOW])
def test_grapheme_straddling_67_moves_whole(cluster: str) -> None:
    size = units(cluster, UCS2)
    before = "ç" * (67 - size + 1)  # one unit short of room for the cluster
    body = before + cluster + "ç" * 10
    assert check_split(body) == [before, cluster + "ç" * 10]
    fits = "ç" * (67 - size)
    assert check_split(fits + cluster + "ç" * 10) == [fits + cluster, "ç" * 10]


def test_flag_is_not_cut_between_its_regional_indicators() -> None:
    # 65 + 2 units would fit the first indicator alone; the flag moves instead.
    assert check_split("ç" * 65 + FLAG + "ç" * 5) == ["ç" * 65, FLAG + "ç" * 5]


@pytest.mark.parametrize("start", ["ç" * 4, THUMB])  # without and with grapheme clusters
def test_crlf_may_be_cut_as_twilio_does(start: str) -> None:
    body = start + "ç" * 62 + "\r\n" + "ç" * 5
    assert check_split(body) == [start + "ç" * 62 + "\r", "\n" + "ç" * 5]


def test_grapheme_longer_than_a_segment_is_cut_at_code_points() -> None:
    zalgo = "a" + "\u0301" * 100
    assert count_segments(zalgo) == SegmentCount(encoding=UCS2, segments=2, units=101)
    assert [len(part) for part in check_split(zalgo)] == [67, 34]
    assert [len(part) for part in check_split("ç" * 10 + zalgo)] == [67, 44]


def test_lone_surrogate_counts_as_one_unit() -> None:
    assert count_segments("\ud83d" + "a" * 69) == SegmentCount(encoding=UCS2, segments=1, units=70)
    assert len(check_split("\ud83d" + "a" * 70)) == 2


def test_forcing_an_encoding() -> None:
    assert count_segments("a" * 100, encoding=UCS2) == SegmentCount(UCS2, 2, 100)
    assert split_segments("a" * 100, encoding=UCS2) == ["a" * 67, "a" * 33]
    with pytest.raises(ValueError):
        count_segments("ç", encoding=GSM7)
    with pytest.raises(ValueError):
        count_segments("a", encoding="UTF-8")


# --- the calculator's own expectations (TwilioDevEd/message-segment-calculator tests)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (digits(160), SegmentCount(GSM7, 1, 160)),
        (digits(161), SegmentCount(GSM7, 2, 161)),
        (digits(307), SegmentCount(GSM7, 3, 307)),
        ("😜" + digits(69)[1:], SegmentCount(UCS2, 1, 70)),
        ("😜" + digits(70)[1:], SegmentCount(UCS2, 2, 71)),
        ("😜" + digits(134)[1:], SegmentCount(UCS2, 3, 135)),
        ("🇮🇹" + digits(67)[1:], SegmentCount(UCS2, 1, 70)),
        ("🇮🇹" + digits(68)[1:], SegmentCount(UCS2, 2, 71)),
        (RAINBOW + digits(65)[1:], SegmentCount(UCS2, 1, 70)),
        (RAINBOW + digits(66)[1:], SegmentCount(UCS2, 2, 71)),
        ("😀" + "]" * 68, SegmentCount(UCS2, 1, 70)),
        ("😀" + "]" * 69, SegmentCount(UCS2, 2, 71)),
        ("é\u0301\u0301\u0301" + "a" * 66, SegmentCount(UCS2, 1, 70)),
        ("é\u0301\u0301\u0301" + "a" * 67, SegmentCount(UCS2, 2, 71)),
        *((char + digits(158), SegmentCount(GSM7, 1, 160)) for char in "|^€{}[]~\\"),
        *((char + digits(159), SegmentCount(GSM7, 2, 161)) for char in "|^€{}[]~\\"),
    ],
)
def test_matches_the_calculators_test_data(body: str, expected: SegmentCount) -> None:
    assert count_segments(body) == expected
    check_split(body)


# --- properties


def twilio_split(body: str) -> list[str]:
    """Port Twilio's SegmentedMessage._buildSegments and Segment.addHeader, in bits."""
    graphemes = [a for g in regex.findall(r"\X", body) for a in (g if g == "\r\n" else (g,))]
    gsm = all(g in GSM_CHARS for g in graphemes)  # a set: a longer grapheme is never in it

    def bits(g: str) -> int:
        return 7 * units(g, GSM7) if gsm else 16 * units(g, UCS2)

    segments: list[tuple[list[bool], list[str]]] = [([False], [])]  # (has header, chars)

    def free(segment: tuple[list[bool], list[str]]) -> int:
        return 1120 - 48 * segment[0][0] - sum(map(bits, segment[1]))

    for g in graphemes:
        if free(segments[-1]) < bits(g):
            segments.append(([True], []))
            previous = segments[-2]
            if not previous[0][0]:
                previous[0][0] = True
                removed: list[str] = []
                while free(previous) < 0:
                    removed.insert(0, previous[1].pop())
                segments[-1][1].extend(removed)
        segments[-1][1].append(g)
    return ["".join(chars) for _, chars in segments] if body else []


TRICKY = st.sampled_from(
    ["a", " ", "€", "{", "\\", "\f", "\r", "\n", "\r\n", "ç", "Ç", "é", "\u0301", "😀",
     "👍", "🏽", "\u200d", "👨", "👩", "🇫", "🇷", "\ufe0f", "가", "\u1100", "\u1161",
     "\u11a8", "क", "\u094d", "ष", "\U000e0067", FAMILY]
)  # fmt: skip
TEXTS = st.one_of(
    st.text(max_size=400),
    st.text(alphabet=GSM7_BASIC + GSM7_EXTENSION, max_size=400),
    st.lists(TRICKY, max_size=250).map("".join),
    *(
        st.lists(st.sampled_from(alphabet), min_size=60, max_size=300).map("".join)
        for alphabet in (["a", "{", "€"], ["a", "ç", "€", "😀"], ["a", "ç", "😀", FLAG, THUMB])
    ),
)


@given(TEXTS)
def test_split_is_whole_within_limits_and_consistent(body: str) -> None:
    check_split(body)


@given(TEXTS)
def test_matches_a_port_of_twilios_algorithm(body: str) -> None:
    # Twilio never cuts a grapheme and overfills a segment when one is huge; those
    # bodies are where this module deliberately differs.
    assume(all(units(g, UCS2) <= 33 for g in regex.findall(r"\X", body)))
    assert split_segments(body) == twilio_split(body)


@given(TEXTS)
def test_graphemes_are_cut_only_when_crlf_or_longer_than_a_segment(body: str) -> None:
    parts = split_segments(body)
    cuts = {sum(map(len, parts[:i])) for i in range(1, len(parts))}
    for match in regex.finditer(r"\X", body):
        inside = set(range(match.start() + 1, match.end()))
        if inside & cuts:
            assert match.group() == "\r\n" or units(match.group(), UCS2) > MULTI[UCS2]


@given(TEXTS, st.characters())
def test_appending_a_character_never_decreases_the_count(body: str, char: str) -> None:
    assert count_segments(body + char).segments >= count_segments(body).segments


@given(st.text(alphabet=GSM7_BASIC + GSM7_EXTENSION, max_size=500))
def test_gsm7_never_needs_more_segments_than_ucs2(body: str) -> None:
    assert count_segments(body).encoding == GSM7
    forced = count_segments(body, encoding=UCS2)
    assert count_segments(body).segments <= forced.segments
    assert len(split_segments(body, encoding=UCS2)) == forced.segments
