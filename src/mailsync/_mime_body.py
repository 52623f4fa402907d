"""The bodies of MIME parts, read as spans of the message's bytes: Content-Transfer-Encoding
undone leniently (base64, quoted-printable, uuencode), a part's decoded size worked out in
bounded memory, and multipart bodies split by hand where the stdlib parser would give up (a
missing or wrong boundary, absurd nesting).

Beside :mod:`mailsync._mime` (header values, charsets, dates, file names), whose rule on line
ends it shares: a line ends at LF, never at a lone CR. Everything takes untrusted bytes and
returns a usable value, never raising. Nothing here does I/O, and it must not import the
message model.
"""

from __future__ import annotations

import binascii
import re
from typing import TYPE_CHECKING

from mailsync._mime import lenient_base64, wire_bytes

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "decode_transfer",
    "decoded_size",
    "guess_boundary",
    "multipart_spans",
    "split_multipart",
]

# One line: up to and including its LF (a lone CR ends no line, as in mailsync._mime).
_LINE = re.compile(rb"[^\n]*\n?")

_UU_NAMES = frozenset({"x-uuencode", "uuencode", "x-uue", "uue"})


def _transfer_name(encoding: str | None) -> str:
    return (encoding or "").strip().strip('"').lower()


def decode_transfer(data: bytes, encoding: str | None) -> bytes:
    """Undo a Content-Transfer-Encoding leniently; unknown encodings give the bytes as they are."""
    name = _transfer_name(encoding)
    try:
        if name == "base64":
            return lenient_base64(data)
        if name == "quoted-printable":
            return binascii.a2b_qp(data)
        if name in _UU_NAMES:
            return _uudecode(data)
    except (binascii.Error, ValueError):
        return data
    return data


def decoded_size(raw: bytes, encoding: str | None, start: int = 0, end: int | None = None) -> int:
    """``len(decode_transfer(raw[start:end], encoding))``, worked out in bounded memory.

    Base64 (nearly every attachment) is not decoded at all: its decoded length follows from
    the number of base64 characters between padding, counted a window at a time.
    Quoted-printable is decoded a window of whole lines at a time and only the lengths are
    kept; uuencode (rare) is decoded and dropped. Other encodings are the bytes themselves.
    """
    stop = len(raw) if end is None else end
    name = _transfer_name(encoding)
    if name == "base64":
        return _base64_decoded_size(raw, start, stop)
    if name == "quoted-printable":
        return sum(len(binascii.a2b_qp(piece)) for piece in _line_windows(raw, start, stop))
    if name in _UU_NAMES:
        return len(decode_transfer(raw[start:stop], name))
    return max(stop - start, 0)


_SIZE_WINDOW = 1 << 16
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_NOT_BASE64_BYTES = bytes(b for b in range(256) if b not in _BASE64_ALPHABET)


def _base64_decoded_size(raw: bytes, start: int, stop: int) -> int:
    # What lenient_base64 decodes: the base64 characters, in runs between padding, each
    # run of n giving floor(3n/4) bytes, the single dangling character of a 4k+1 run none.
    total = 0
    run = 0  # characters in the run not yet closed by padding
    for window in range(start, stop, _SIZE_WINDOW):
        kept = raw[window : min(window + _SIZE_WINDOW, stop)].translate(None, _NOT_BASE64_BYTES)
        runs = kept.split(b"=")
        run += len(runs[0])
        for piece in runs[1:]:
            total += run * 3 // 4
            run = len(piece)
    return total + run * 3 // 4


def _line_windows(raw: bytes, start: int, stop: int) -> Iterator[bytes]:
    """``raw[start:stop]`` in pieces of about :data:`_SIZE_WINDOW` bytes that end after an
    LF (or at ``stop``), so that line-based decoders see whole lines."""
    position = start
    while position < stop:
        cut = raw.find(b"\n", min(position + _SIZE_WINDOW, stop) - 1, stop)
        cut = stop if cut < 0 else cut + 1
        yield raw[position:cut]
        position = cut


def _uudecode(data: bytes) -> bytes:
    out: list[bytes] = []
    started = False
    for line in data.splitlines():
        if not started:
            started = line.startswith(b"begin ")
            continue
        if line.strip() == b"end":
            break
        try:
            out.append(binascii.a2b_uu(line))
        except binascii.Error:  # trailing garbage some encoders add: decode the counted bytes
            count = (((line[:1] or b" ")[0] - 32) & 63) * 4 + 5
            try:
                out.append(binascii.a2b_uu(line[: count // 3]))
            except binascii.Error:
                continue
    return b"".join(out) if started else data


def split_multipart(body: bytes, boundary: str) -> list[bytes] | None:
    """Split a multipart body on ``boundary`` by hand; None when the boundary never occurs.

    Used where the stdlib parser gave up (a missing or wrong boundary, absurd nesting). The
    line break before each delimiter belongs to the delimiter, as in RFC 2046. See
    :func:`multipart_spans`, which this slices.
    """
    spans = multipart_spans(body, boundary)
    return None if spans is None else [body[start:end] for start, end in spans]


def multipart_spans(
    raw: bytes, boundary: str, start: int = 0, end: int | None = None, *, limit: int | None = None
) -> list[tuple[int, int]] | None:
    """Where each part of the multipart body ``raw[start:end]`` lies, as ``(start, end)``
    offsets into ``raw``; None when the boundary never occurs.

    Offsets rather than copies: a message's parts can be listed (their headers read) without
    copying the megabytes of their bodies. A delimiter line starts at the start of the body
    or after an LF (never after a lone CR, which ends no line), holds ``--boundary`` and
    then only blanks, or ``--`` and blanks for the last one. A body that never closes keeps
    what arrived as its last part. With ``limit``, the first ``limit`` parts at most.
    """
    stop = len(raw) if end is None else end
    delimiter = b"--" + wire_bytes(boundary)
    spans: list[tuple[int, int]] = []
    content: int | None = None  # where the content of the current part begins
    for found in _lines_starting_with(raw, delimiter, start, stop):
        line_end = _LINE.match(raw, found, stop).end()  # type: ignore[union-attr]
        kind = _delimiter_kind(raw[found:line_end], delimiter)
        if kind is None:
            continue
        if content is not None:
            spans.append((content, _before_last_break(raw, content, found)))
            if limit is not None and len(spans) >= limit:
                return spans
        if kind == "close":
            return spans
        content = line_end
    if content is None:
        return None
    spans.append((content, stop))  # truncated: keep what arrived
    return spans


def _lines_starting_with(raw: bytes, delimiter: bytes, start: int, stop: int) -> Iterator[int]:
    """Where each line of ``raw[start:stop]`` that starts with ``delimiter`` begins, in order.

    A body can be megabytes of short lines, so this finds the delimiter after each line
    break with ``bytes.find`` instead of looking at every line.
    """
    if raw.startswith(delimiter, start, stop):
        yield start
    after_lf = b"\n" + delimiter
    found = raw.find(after_lf, start, stop)
    while found >= 0:
        yield found + 1
        found = raw.find(after_lf, found + 1, stop)


def _delimiter_kind(line: bytes, delimiter: bytes) -> str | None:
    if not line.startswith(delimiter):
        return None
    rest = line[len(delimiter) :].rstrip(b"\r\n")
    if not rest.strip(b" \t"):
        return "part"
    if rest.startswith(b"--") and not rest[2:].strip(b" \t"):
        return "close"
    return None


def _before_last_break(raw: bytes, start: int, end: int) -> int:
    """``end`` less the line break that belongs to the delimiter at ``end``."""
    if end - start >= 2 and raw[end - 2 : end] == b"\r\n":
        return end - 2
    if end > start and raw[end - 1 : end] in (b"\n", b"\r"):
        return end - 1
    return end


# A "--token" line (then blanks) and the line after it, which must start like a header field.
# Searched twice (at the body's start, and after an LF), each led by a literal the regex
# engine finds quickly; a leading lookbehind or an alternation would make it try every
# position.
_BOUNDARY_THEN_HEADER = rb"--([^\s]{1,200})[ \t]*\r*\n[!-9;-~]+:"
_BOUNDARY_AT_START = re.compile(_BOUNDARY_THEN_HEADER)
_BOUNDARY_AFTER_LF = re.compile(b"\n" + _BOUNDARY_THEN_HEADER)


def guess_boundary(body: bytes, start: int = 0, end: int | None = None) -> str | None:
    """The boundary a multipart body (``body[start:end]``) actually uses when its header
    names none or a wrong one: the first ``--token`` line that is followed by a header
    line."""
    stop = len(body) if end is None else end
    found = _BOUNDARY_AT_START.match(body, start, stop) or _BOUNDARY_AFTER_LF.search(
        body, start, stop
    )
    return None if found is None else found.group(1).decode("ascii", "surrogateescape")
