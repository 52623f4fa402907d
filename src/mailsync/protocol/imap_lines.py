"""IMAP responses as line-based clients hand them over (aioimaplib: each response line as
``bytes``, each literal as a ``bytearray`` after the line announcing it), turned into the values
of :mod:`mailsync.protocol.imap`: what SELECT said, LIST entries, FETCH responses, EXISTS.

It must not do I/O or import a client library.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

from mailsync._errors import ProtocolError
from mailsync.protocol.imap import FolderStatus
from mailsync.protocol.imap_literals import FetchResponse

__all__ = [
    "fetch_attributes",
    "fetch_responses",
    "is_exists",
    "list_entries",
    "select_status",
]

_NUMBER_BEFORE_RE = re.compile(rb"^(\d+) (EXISTS|RECENT|EXPUNGE)\b", re.IGNORECASE)
_FETCH_LINE = re.compile(rb"(\d+) FETCH \(", re.IGNORECASE)
_LIST_LINE = re.compile(rb'\((?P<flags>[^)]*)\) (?P<delim>NIL|"(?:[^"\\]|\\.)*") ?(?P<name>.*)$')
_QUOTED_ESCAPE = re.compile(rb"\\(.)")


def is_exists(line: Any) -> bool:
    """Whether a response line is ``* <n> EXISTS`` (new mail)."""
    match = _NUMBER_BEFORE_RE.match(bytes(line)) if isinstance(line, bytes | bytearray) else None
    return match is not None and match.group(2).upper() == b"EXISTS"


_SELECT_CODES = {
    "UIDVALIDITY": re.compile(rb"\[UIDVALIDITY (\d+)\]", re.IGNORECASE),
    "UIDNEXT": re.compile(rb"\[UIDNEXT (\d+)\]", re.IGNORECASE),
    "HIGHESTMODSEQ": re.compile(rb"\[HIGHESTMODSEQ (\d+)\]", re.IGNORECASE),
}


def select_status(name: str, lines: Sequence[Any]) -> FolderStatus:
    """What a SELECT/EXAMINE said (UIDVALIDITY, UIDNEXT, EXISTS, HIGHESTMODSEQ), from its
    response lines.

    Raises:
        ProtocolError: No UIDVALIDITY (RFC 3501 requires it).
    """
    found: dict[str, int] = {}
    exists = 0
    for line in lines:
        data = bytes(line)
        match = _NUMBER_BEFORE_RE.match(data)
        if match is not None and match.group(2).upper() == b"EXISTS":
            exists = int(match.group(1))
        for key, pattern in _SELECT_CODES.items():
            code = pattern.search(data)
            if code is not None:
                found[key] = int(code.group(1))
    if "UIDVALIDITY" not in found:
        raise ProtocolError(f"SELECT {name}: the server sent no UIDVALIDITY")
    return FolderStatus(
        uidvalidity=found["UIDVALIDITY"],
        uidnext=found.get("UIDNEXT", 0),
        exists=exists,
        highestmodseq=found.get("HIGHESTMODSEQ"),
    )


def fetch_responses(lines: Sequence[Any]) -> Iterator[FetchResponse]:
    """Regroup aioimaplib's FETCH lines (text lines, each literal a ``bytearray`` after the
    line announcing it) into the pure reader's :class:`FetchResponse` values."""
    segments: list[bytes] | None = None
    literals: list[bytes] = []
    seq = 0
    for line in lines:
        if isinstance(line, bytearray):
            literals.append(bytes(line))
            continue
        match = _FETCH_LINE.match(line)
        if match is not None:
            if segments is not None:
                yield FetchResponse(seq, segments, literals)
            seq, segments, literals = int(match.group(1)), [b"* " + line], []
        elif segments is not None:
            segments.append(line)
    if segments is not None:
        yield FetchResponse(seq, segments, literals)


def fetch_attributes(lines: Sequence[Any]) -> Iterator[dict[bytes, Any]]:
    """The attributes of each FETCH response in aioimaplib's lines (the tagged text last)."""
    for response in fetch_responses(lines[:-1]):
        yield response.attributes()


def list_entries(lines: Sequence[Any]) -> list[tuple[list[bytes], bytes | None, bytes]]:
    """``(attributes, delimiter, encoded name)`` from aioimaplib's LIST lines."""
    entries = []
    pending: tuple[list[bytes], bytes | None] | None = None
    for line in lines[:-1]:
        if isinstance(line, bytearray):  # a name sent as a literal
            if pending is not None:
                entries.append((*pending, bytes(line)))
                pending = None
            continue
        match = _LIST_LINE.match(line)
        if match is None:
            continue
        flags = match.group("flags").split()
        delimiter = match.group("delim")
        delim = None if delimiter.upper() == b"NIL" else _unquote(delimiter)
        name = match.group("name").strip()
        if name.startswith(b"{") and name.endswith(b"}"):
            pending = (flags, delim)
            continue
        entries.append((flags, delim, _unquote(name)))
    return entries


def _unquote(value: bytes) -> bytes:
    if len(value) >= 2 and value.startswith(b'"') and value.endswith(b'"'):
        return _QUOTED_ESCAPE.sub(rb"\1", value[1:-1])
    return value
