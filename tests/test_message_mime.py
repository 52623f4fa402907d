"""The scanning functions of ``mailsync._mime`` give exactly what they gave before they were
made linear, and stay fast on hostile sizes.

``_decode_run`` used to add bytes to bytes (quadratic in the number of adjacent encoded
words); ``split_multipart`` and ``guess_boundary`` used to look at every line in Python. The
previous implementations are kept below as the oracle: the corpus samples and
hypothesis-generated input must give identical results from both. The one change to them
since: lines end at LF (or CRLF) only, never at a lone CR, as mail servers read them (issue
14: a lone CR must never start a header, of the message or of a part). No server is needed.
"""

from __future__ import annotations

import base64
import re
import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailsync import _mime
from mailsync._mime import (
    decode_8bit,
    decode_bytes,
    decode_encoded_words,
    decode_header_value,
    split_header_block,
    split_params,
    unfold,
    wire_bytes,
)
from mailsync._mime_body import guess_boundary, split_multipart
from tests.scaling import growth

DATA = Path(__file__).parent / "data"
CORPUS = sorted((DATA / "mime").glob("*.eml")) + sorted((DATA / "reports").glob("*.eml"))


# -- the previous implementations (the oracle) -------------------------------------------


def old_decode_run(run: list[tuple[str | None, bytes]]) -> str:
    out: list[str] = []
    charset: str | None = None
    pending = b""
    for word_charset, data in run:
        if pending and word_charset != charset:
            out.append(decode_bytes(pending, charset))
            pending = b""
        charset = word_charset
        pending += data
    if pending:
        out.append(decode_bytes(pending, charset))
    run.clear()
    return "".join(out)


def old_decode_encoded_words(text: str) -> str:
    """``decode_encoded_words`` as it was; only ``_decode_run`` changed."""
    if "=?" not in text:
        return decode_8bit(text)
    out: list[str] = []
    run: list[tuple[str | None, bytes]] = []
    position = 0
    for match in _mime._ENCODED_WORD.finditer(text):
        gap = text[position : match.start()]
        if gap and not (run and _mime._WHITESPACE_ONLY.fullmatch(gap)):
            out.append(old_decode_run(run))
            run = []
            out.append(decode_8bit(gap))
        charset, encoding, payload = match.groups()
        decoded = _mime._decode_word(encoding, payload)
        if decoded is None:
            out.append(old_decode_run(run))
            run = []
            out.append(decode_8bit(match.group(0)))
        else:
            run.append((charset, decoded))
        position = match.end()
    out.append(old_decode_run(run))
    out.append(decode_8bit(text[position:]))
    return "".join(out)


def lf_lines(data: bytes, *, keepends: bool = False) -> list[bytes]:
    """``bytes.splitlines`` with LF (and so CRLF) as the only line end."""
    lines = data.split(b"\n")
    tail = lines.pop()  # what follows the last LF: empty when the data ends with one
    out = [line + b"\n" if keepends else line.removesuffix(b"\r") for line in lines]
    return [*out, tail] if tail else out


def old_split_multipart(body: bytes, boundary: str) -> list[bytes] | None:
    delimiter = b"--" + wire_bytes(boundary)
    parts: list[bytes] = []
    current: list[bytes] | None = None
    for line in lf_lines(body, keepends=True):
        kind = old_delimiter_kind(line, delimiter)
        if kind is None:
            if current is not None:
                current.append(line)
            continue
        if current is not None:
            parts.append(old_strip_last_break(b"".join(current)))
        if kind == "close":
            return parts
        current = []
    if current is None:
        return None
    parts.append(b"".join(current))
    return parts


def old_delimiter_kind(line: bytes, delimiter: bytes) -> str | None:
    if not line.startswith(delimiter):
        return None
    rest = line[len(delimiter) :].rstrip(b"\r\n")
    if not rest.strip(b" \t"):
        return "part"
    if rest.startswith(b"--") and not rest[2:].strip(b" \t"):
        return "close"
    return None


def old_strip_last_break(data: bytes) -> bytes:
    if data.endswith(b"\r\n"):
        return data[:-2]
    if data.endswith((b"\n", b"\r")):
        return data[:-1]
    return data


OLD_BOUNDARY_LINE = re.compile(rb"--([^\s]{1,200})[ \t]*\r*")
OLD_HEADER_LINE = re.compile(rb"[!-9;-~]+:")


def old_guess_boundary(body: bytes) -> str | None:
    lines = lf_lines(body)
    for index, line in enumerate(lines[:-1]):
        match = OLD_BOUNDARY_LINE.fullmatch(line)
        if match and OLD_HEADER_LINE.match(lines[index + 1]):
            token = match.group(1)
            return token.decode("ascii", "surrogateescape")
    return None


# -- the corpus ------------------------------------------------------------------------------


def compare_part(raw: bytes, depth: int = 0) -> int:
    """Compare old and new on every header value and (recursively) every body of ``raw``;
    how many multipart bodies were split."""
    fields, offset = split_header_block(raw)
    boundary = None
    for name, value in fields:
        text = unfold(value)
        assert decode_encoded_words(text) == old_decode_encoded_words(text), (name, value)
        if name.lower() == "content-type":
            boundary = split_params(value)[1].get("boundary")
    body = raw[offset:]
    guessed = guess_boundary(body)
    assert guessed == old_guess_boundary(body)
    splits = 0
    for candidate in dict.fromkeys(b for b in (boundary, guessed) if b):
        parts = split_multipart(body, candidate)
        assert parts == old_split_multipart(body, candidate), candidate
        for part in parts or () if depth < 6 else ():
            splits += 1 + compare_part(part, depth + 1)
    return splits


def test_corpus_gives_what_the_old_code_gave() -> None:
    assert len(CORPUS) > 60
    splits = sum(compare_part(path.read_bytes()) for path in CORPUS)
    assert splits > 50  # the corpus really exercised the multipart splitting


# -- generated input -------------------------------------------------------------------------

BOUNDARIES = ["b", "-", "", "=_Part_0", "b--", "b c", "b\r", "b\n", "b\r\n", "a\nb", "é", " "]
BODY_PIECES = [
    b"\n",
    b"\r",
    b"\r\n",
    b" ",
    b"\t",
    b"-",
    b"--",
    b"b",
    b"=_Part_0",
    b"x",
    b":",
    b"X-H:",
    b"Content-Type: text/plain",
    b"\xff",
    b"\x0b",
    b"\x0c",
]
LINE_STARTS = [
    b"--b",
    b"--b--",
    b"--b \t",
    b"--b-- ",
    b"--b x",
    b"--=_Part_0",
    b"--",
    b"---",
    b"--\xff\xfe",
    b"-- b",
    b"x--b",
    b"X-H: v",
    b"Content-Type: text/plain",
    b":",
    b"",
    b" ",
    b"text",
]
TERMINATORS = [b"\n", b"\r", b"\r\n", b"", b"\n\r", b"\x0b"]
# Bodies as a series of lines, so that delimiter lines, header lines and every kind of line
# break come together often, or as loose pieces, for whatever the lines miss.
lines = st.builds(
    bytes.__add__,
    st.sampled_from(LINE_STARTS) | st.binary(max_size=3),
    st.sampled_from(TERMINATORS),
)
pieces = st.sampled_from(BODY_PIECES) | st.binary(max_size=4)
bodies = st.lists(lines, max_size=30).map(b"".join) | st.lists(pieces, max_size=60).map(b"".join)
boundaries = st.sampled_from(BOUNDARIES) | st.text(max_size=5)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies, boundaries)
def test_split_multipart_is_unchanged(body: bytes, boundary: str) -> None:
    assert split_multipart(body, boundary) == old_split_multipart(body, boundary)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies)
def test_guess_boundary_is_unchanged(body: bytes) -> None:
    assert guess_boundary(body) == old_guess_boundary(body)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(BODY_PIECES[:9]), max_size=20).map(b"".join), st.integers(1, 250))
def test_guess_boundary_is_unchanged_on_long_tokens(tail: bytes, length: int) -> None:
    body = b"pre\n--" + b"t" * length + tail
    assert guess_boundary(body) == old_guess_boundary(body)


CHARSETS = [None, "utf-8", "UTF-8", "latin1", "iso-8859-1", "utf-16", "x-bogus", "shift_jis"]
runs = st.lists(
    st.tuples(
        st.sampled_from(CHARSETS),
        st.sampled_from([b"", b"\xc3", b"\xa9", b"caf", b"\x82\xa0", b"\x00"])
        | st.binary(max_size=5),
    ),
    max_size=12,
)


@settings(max_examples=1000, deadline=None)
@given(runs)
def test_decode_run_is_unchanged(run: list[tuple[str | None, bytes]]) -> None:
    assert _mime._decode_run(list(run)) == old_decode_run(list(run))


WORDS = [
    "=?utf-8?q?caf=C3?=",
    "=?utf-8?q?=A9?=",
    "=?UTF-8?B?w6k=?=",
    "=?utf-8?b?w6?=",
    "=?utf-8?q??=",
    "=?latin1?q?=E9?=",
    "=?x-bogus?q?abc?=",
    "=?utf-8?b?!!!?=",
    " ",
    "\t",
    "plain",
    "é",
    "=?",
    "?=",
]
headers = st.lists(st.sampled_from(WORDS) | st.text(max_size=4), max_size=20).map("".join)


@settings(max_examples=1000, deadline=None)
@given(headers)
def test_decode_encoded_words_is_unchanged(text: str) -> None:
    assert decode_encoded_words(text) == old_decode_encoded_words(text)


# -- hostile sizes ---------------------------------------------------------------------------


@pytest.mark.reliability(
    area="Parsing cost",
    fault="50,000 full-length encoded words, each ending mid-character",
    outcome="decoding time grows linearly: ten times the words take under 30 times as long "
    "(joining each word's bytes to the run so far grew quadratically: 15 s)",
)
def test_fifty_thousand_long_encoded_words_decode_quickly() -> None:
    # Full-length (72-character) words, each ending mid-character as a long subject's words
    # may: adding each word's bytes to the run so far took 15 s here, 100 times the time of
    # a tenth of the words. Measured as growth, not seconds: a loaded machine slows both.
    data = ("é" * 45).encode()
    first, second = (
        "=?utf-8?b?" + base64.b64encode(half).decode() + "?=" for half in (data[:45], data[45:])
    )
    header = " ".join([first, second] * 25_000)
    tenth = " ".join([first, second] * 2_500)
    assert decode_encoded_words(header) == "é" * (45 * 25_000)
    ratio = growth(lambda: decode_encoded_words(tenth), lambda: decode_encoded_words(header))
    assert ratio < 30, f"ten times the words took {ratio:.0f} times as long"


def peak_allocation(function: object, *args: object) -> int:
    tracemalloc.start()
    try:
        function(*args)  # type: ignore[operator]
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.reliability(
    area="Parsing cost",
    fault="1 MB of blank lines in a multipart body, with and without the boundary",
    outcome="splitting and boundary guessing allocate under 100 kB; 10 MB scanned in under 2 s",
)
def test_multipart_scans_do_not_copy_each_line() -> None:
    # Looking at every line made a list of every line (8 MB for 1 MB of blank lines) and
    # took about 0.1 s per MB; finding the delimiter and boundary lines directly needs next
    # to no memory, whatever the number of lines.
    blank = b"\n" * 1_000_000
    body = blank + b"--b\nX-Header: 1\n\npart\n--b--\n"
    assert peak_allocation(split_multipart, body, "b") < 100_000
    assert peak_allocation(guess_boundary, body) < 100_000
    assert split_multipart(body, "b") == [b"X-Header: 1\n\npart"]
    assert guess_boundary(body) == "b"
    started = time.perf_counter()
    for _ in range(10):  # 10 MB
        split_multipart(blank, "b")
        guess_boundary(blank)
    assert time.perf_counter() - started < 2.0


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("=?utf-8?B?!!notbase64?=", "=?utf-8?B?!!notbase64?="),  # kept as it was sent
        ("Re: =?utf-8?B?bm90?= =?utf-8?B?a$b?=", "Re: not =?utf-8?B?a$b?="),
        ("=?utf-8?B?bm90YmFzZTY0?=", "notbase64"),
        ("=?utf-8?b?w6k?=", "é"),  # missing padding is fine
        ("=?utf-8?B?!!!?=", ""),  # nothing left to decode: an empty word, as the stdlib has it
    ],
)
def test_an_encoded_word_that_is_not_base64_stays_as_sent(header: str, expected: str) -> None:
    decoded = decode_header_value(header)
    assert decoded == expected
    assert "\ufffd" not in decoded


# Lines end at LF or CRLF only (issue 14: a lone CR never starts a header), as in the
# multipart oracle above.
_OLD_LINE = re.compile(rb"[^\n]*\n?")
_OLD_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+:")


def old_split_header_block(raw: bytes) -> tuple[list[tuple[str, str]], int]:
    """``split_header_block`` as it was: one Python step per line."""
    fields: list[tuple[str, list[bytes]]] = []
    position = 0
    size = len(raw)

    def joined() -> list[tuple[str, str]]:
        return [(n, b"".join(ls).decode("ascii", "surrogateescape")) for n, ls in fields]

    while position < size:
        end = _OLD_LINE.match(raw, position).end()  # type: ignore[union-attr]
        line = raw[position:end].removesuffix(b"\n")
        line = line.removesuffix(b"\r") if raw[end - 1 : end] == b"\n" else line
        if not line:
            return joined(), end
        if line[:1] in (b" ", b"\t"):
            if fields:
                fields[-1][1].append(line)
        elif line.startswith(b":") or (position == 0 and line.startswith(b"From ")):
            pass
        elif _OLD_FIELD_NAME.match(line):
            name, _, value = line.partition(b":")
            fields.append((name.decode("ascii"), [value.lstrip(b" \t")]))
        else:
            return joined(), position
        position = end
    return joined(), size


HEADER_PIECES = [b"A: b", b"\r\n", b"\n", b"\r", b" ", b"\t", b"x", b":", b"From ", b"\xe9"]


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from(HEADER_PIECES), max_size=30).map(b"".join))
def test_split_header_block_is_unchanged(raw: bytes) -> None:
    assert split_header_block(raw) == old_split_header_block(raw)


def test_split_header_block_corpus_is_unchanged() -> None:
    for path in CORPUS:
        raw = path.read_bytes()
        assert split_header_block(raw) == old_split_header_block(raw), path.name


def test_a_header_folded_a_million_times_splits_in_one_pass() -> None:
    raw = b"Subject: " + b"a\r\n " * 1_000_000 + b"\r\nFrom: x@example.test\r\n\r\nbody"
    started = time.perf_counter()
    fields, offset = split_header_block(raw)
    assert time.perf_counter() - started < 2.0  # one Python step per line took 5 s
    assert fields == [("Subject", "a " * 999_999 + "a "), ("From", "x@example.test")]
    assert raw[offset:] == b"body"
