"""Count and split SMS segments the way Twilio's message-segment-calculator does.

Smart Encoding is off: nothing is transliterated, so a single character outside
the GSM 03.38 tables makes the whole body UCS-2.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import accumulate

import regex

GSM7 = "GSM-7"
UCS2 = "UCS-2"

# The GSM 03.38 default alphabet in code order, 0x00 to 0x7F. 0x1B (ESC) is left out:
# it only introduces an extension character and is never sent on its own.
GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# Sent as ESC followed by a code, so each costs two septets.
GSM7_EXTENSION = "\f^{}\\[~]|€"

# A segment carries 140 octets; once a body is split, 6 of them go to the
# concatenation header in every segment.
SINGLE_LIMIT = {GSM7: 160, UCS2: 70}
MULTI_LIMIT = {GSM7: 153, UCS2: 67}

_NOT_BASIC = re.compile("[^" + re.escape(GSM7_BASIC) + "]")
_NOT_GSM7 = re.compile("[^" + re.escape(GSM7_BASIC + GSM7_EXTENSION) + "]")
_EXTENSION = re.compile("[" + re.escape(GSM7_EXTENSION) + "]")
# Anything but these grapheme-break classes can glue to a neighbour (UAX #29). A body
# without such a code point has one grapheme per code point, so `\X` can be skipped.
# Written negated because it is several times faster than listing the joining classes.
_MAY_JOIN = regex.compile(
    r"[^\p{GCB=Other}\p{GCB=Control}\p{GCB=CR}\p{GCB=LF}\p{GCB=LV}\p{GCB=LVT}]"
)
_GRAPHEME = regex.compile(r"\X")


@dataclass(frozen=True, slots=True)
class SegmentCount:
    """The encoding of a body, its number of segments and its size in encoding units."""

    encoding: str
    segments: int
    units: int


def _utf16_units(text: str) -> int:
    # surrogatepass so that a stray lone surrogate counts as the one unit it is.
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _grapheme_ends(body: str) -> list[int]:
    graphemes = _GRAPHEME.findall(body)
    # Twilio's calculator breaks CR LF into two characters, so a segment may end
    # between them. A grapheme too long for any segment (a letter under dozens of
    # combining marks) can only be sent cut, so it is cut between code points.
    # Both are rare, and a grapheme of k code points has at most 2k units, so one cheap
    # test keeps the common case from looking at each grapheme.
    if "\r\n" in graphemes or 2 * max(map(len, graphemes)) > MULTI_LIMIT[UCS2]:
        graphemes = [
            atom
            for grapheme in graphemes
            for atom in (
                grapheme
                if grapheme == "\r\n" or _utf16_units(grapheme) > MULTI_LIMIT[UCS2]
                else (grapheme,)
            )
        ]
    return list(accumulate(map(len, graphemes)))


def _starts(ends: Sequence[int], units: Callable[[int, int], int], limit: int) -> list[int]:
    # Greedy, like Twilio's calculator: a segment takes every whole atom (character or
    # grapheme, ending at the offsets in `ends`) that fits, and the first that does not
    # opens the next segment. Units grow with the end offset, so bisect instead of
    # walking; an atom is at least one unit, so a segment holds at most `limit` atoms.
    starts, done = [0], 0
    while done < len(ends):
        start, hi = starts[-1], min(done + limit, len(ends))
        done = bisect_right(ends, limit, done, hi, key=partial(units, start))
        if done < len(ends):
            starts.append(ends[done - 1])
    return starts


def _plan(body: str, encoding: str | None) -> tuple[str, int, Sequence[int]]:
    """Return the encoding, the total units and the offset at which each segment starts."""
    odd = _NOT_BASIC.search(body)
    fits_gsm7 = odd is None or _NOT_GSM7.search(body, odd.start()) is None
    if encoding is None:
        encoding = GSM7 if fits_gsm7 else UCS2
    elif encoding not in SINGLE_LIMIT:
        raise ValueError(f"Unknown encoding {encoding!r}: use {GSM7!r} or {UCS2!r}")
    elif encoding == GSM7 and not fits_gsm7:
        raise ValueError("The body has characters that GSM-7 cannot encode")
    n, limit = len(body), MULTI_LIMIT[encoding]
    ends: Sequence[int] = range(1, n + 1)

    if encoding == GSM7:
        escaped = [m.start() for m in _EXTENSION.finditer(body, odd.start())] if odd else []
        total, simple = n + len(escaped), not escaped

        def units(start: int, end: int) -> int:
            return end - start + bisect_left(escaped, end) - bisect_left(escaped, start)

    else:
        # Byte 2 of a UTF-32 code point is zero exactly when it is in the BMP.
        in_bmp = body.encode("utf-32-le", "surrogatepass")[2::4]
        total = 2 * n - in_bmp.count(0)
        simple = total == n

        def units(start: int, end: int) -> int:
            return 2 * (end - start) - in_bmp.count(0, start, end)

    if total <= SINGLE_LIMIT[encoding]:
        return encoding, total, range(min(n, 1))
    if encoding == UCS2 and _MAY_JOIN.search(body):
        ends, simple = _grapheme_ends(body), False
    if simple:
        return encoding, total, range(0, n, limit)
    return encoding, total, _starts(ends, units, limit)


def count_segments(body: str, *, encoding: str | None = None) -> SegmentCount:
    """Return the encoding, segment count and unit count Twilio bills a body for.

    The encoding is chosen from the body unless `encoding` forces GSM7 or UCS2; forcing
    GSM7 on a body it cannot encode raises ValueError. An empty body has no segments.
    """
    chosen, units, starts = _plan(body, encoding)
    return SegmentCount(encoding=chosen, segments=len(starts), units=units)


def split_segments(body: str, *, encoding: str | None = None) -> list[str]:
    """Return the texts of the segments a body is sent as, which joined give the body.

    An extension character is never parted from its escape and a grapheme is never cut,
    except CR LF (cut as Twilio's calculator does) and a grapheme longer than a segment.
    """
    _, _, starts = _plan(body, encoding)
    if not starts:
        return []
    ends = [*starts[1:], len(body)]
    return [body[start:end] for start, end in zip(starts, ends, strict=True)]
