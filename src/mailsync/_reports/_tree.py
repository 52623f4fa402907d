"""The parts of a message as the report parsers read them: the model's MIME tree
(:func:`mailsync._message.mime_tree`, split by the same code that finds a message's text and
attachments), looked at within caps, and the text and headers inside those parts.

How much is read: a mail library parses untrusted mail, so the work done for one message is
capped: a crafted message must cost milliseconds, not stall a ``sync()`` loop or a tracker.
Real reports are small and put what is read here first (RFC 6522: the notice, the status part,
then the returned original), so every cap is far above what a mail system writes.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from mailsync._message import (
    HeaderMap,
    MimeNode,
    mime_children,
)
from mailsync._mime import (
    decode_bytes,
    decode_header_value,
    msg_id,
    split_header_block,
    split_params,
)
from mailsync._mime_body import decode_transfer
from mailsync._reports._values import no_headers

__all__ = [
    "ADDRESS_LIMIT",
    "HEADER_LIMIT",
    "STATUS_LIMIT",
    "TEXT_LIMIT",
    "Mail",
    "Part",
    "capped_headers",
    "header_map",
    "headers_in",
    "one_line",
    "original_headers",
    "original_message_id",
    "part_text",
    "parts_of",
]

# Bytes of the message body whose MIME structure is split. Past them comes only the body of
# a returned original, which is never read (its headers come first).
SCAN_LIMIT = 1 << 20
# Bytes the splitter may read in all: a nested multipart is a slice of its parent's body,
# and absurd nesting must not rescan the same megabyte at every level.
_SPLIT_BUDGET = 4 << 20
# Multipart levels descended into: a report sits at the top or inside a wrapper or two
# (multipart/signed around an AS2 MDN, a gateway's multipart/mixed).
_MAX_DEPTH = 5
# Parts looked at, in order; a report has three.
_MAX_PARTS = 100
# Bytes read of a delivery-status or disposition part: thousands of recipient groups, where
# one SMTP transaction carries a few hundred at most (Postfix's default limit is 1,000).
STATUS_LIMIT = 1 << 20
# Bytes read of a bounce's human-readable notice and of a returned original's header block:
# the explanation, the failed addresses and the quoted headers come in the first few KB.
TEXT_LIMIT = 64 << 10
# Characters of a From or To header parsed as addresses, and of a Subject matched against
# bounce subjects: the stdlib's address parser is pure Python, and a report's From and To
# each name one mailbox.
ADDRESS_LIMIT = 4 << 10
# Characters of any header value decoded (the report's Subject included): a mail system
# writes short headers, and a hostile one must not cost more than a short one.
HEADER_LIMIT = 16 << 10

_ORIGINAL_PART_TYPES = frozenset(
    {"message/rfc822", "message/global", "text/rfc822-headers", "message/global-headers"}
)
# As the message model reads a Content-Type: an invalid one means text/plain (RFC 2045).
_VALID_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")
_TOKEN = re.compile(r"[^\s;()\"]+")


@dataclass(slots=True)
class Part:
    """A node of the model's MIME tree with what its headers say, whether its body lost its
    end to a cap, and (for a multipart) its parts."""

    node: MimeNode
    content_type: str
    params: dict[str, str]
    cut: bool = False
    children: list[Part] = field(default_factory=list)

    def header(self, name: str) -> str:
        """The first raw value of header ``name``, or ``""``."""
        return self.node.field(name)

    @property
    def body(self) -> bytes:
        """The undecoded body (within the caps)."""
        return self.node.body

    @property
    def is_container(self) -> bool:
        """True for multiparts and attached messages: parts that are no text themselves."""
        return self.content_type.startswith(("multipart/", "message/"))

    @property
    def report_type(self) -> str | None:
        """The report-type of a ``multipart/report``, lower case; None for other parts."""
        if self.content_type != "multipart/report":
            return None
        value = self.params.get("report-type")
        return None if value is None else value.strip().lower()

    @property
    def transfer_encoding(self) -> str:
        """The Content-Transfer-Encoding token, lower case; empty when none."""
        token = _TOKEN.match(self.header("Content-Transfer-Encoding").strip())
        return token.group(0).lower() if token else ""

    @property
    def disposition(self) -> str:
        """The Content-Disposition type, lower case; empty when none."""
        return split_params(self.header("Content-Disposition"))[0]


def _part(node: MimeNode, *, cut: bool) -> Part:
    main, params = split_params(node.field("Content-Type"))
    if not _VALID_TYPE.fullmatch(main):
        main = "text/plain" if main else node.default_type
    return Part(node, main, params, cut)


class _Walk:
    """Visits the tree in order within the caps above; attached messages are not looked
    into: a forwarded bounce is not a bounce."""

    def __init__(self) -> None:
        self.parts: list[Part] = []
        self.budget = _SPLIT_BUDGET

    def visit(self, part: Part, depth: int) -> None:
        self.parts.append(part)
        if not part.content_type.startswith("multipart/") or depth >= _MAX_DEPTH:
            return
        # Splitting reads the body (guessing a missing boundary twice more, at most).
        self.budget -= part.node.end - part.node.offset  # parts are spans of the message
        if self.budget < 0:
            return  # kept whole, as a multipart: not read as text either
        children = mime_children(part.node, part.content_type, part.params)
        if children is None:
            part.content_type = "text/plain"  # no part boundary anywhere: it is just text
            return
        for index, child in enumerate(children):
            if len(self.parts) >= _MAX_PARTS:
                return
            # The last part of a multipart that lost its end lost its own end too.
            node = _part(child, cut=part.cut and index == len(children) - 1)
            part.children.append(node)
            self.visit(node, depth + 1)


def parts_of(root: MimeNode) -> list[Part]:
    """The message and every part nested in it, in order, within the caps above."""
    cut = root.end - root.offset > SCAN_LIMIT
    if cut:  # a node is a span of the message's bytes: cut the span, copy nothing
        root = dataclasses.replace(root, end=root.offset + SCAN_LIMIT)
    walk = _Walk()
    walk.visit(_part(root, cut=cut), 0)
    return walk.parts


def _head(data: bytes, limit: int) -> bytes:
    """At most ``limit`` bytes from the start of ``data``, cut after a line break where there
    is one (a line break ends a character in every charset mail uses)."""
    if len(data) <= limit:
        return data
    end = max(data.rfind(b"\n", 0, limit), data.rfind(b"\r", 0, limit))
    return data[: end + 1] if end > 0 else data[:limit]


def part_bytes(part: Part, limit: int) -> tuple[bytes, bool]:
    """The part's content, transfer encoding undone, cut to ``limit`` bytes; and whether it
    was cut."""
    body = part.body
    # Quoted-printable takes up to three bytes per byte it encodes.
    encoded = _head(body, 3 * limit)
    data = decode_transfer(encoded, part.transfer_encoding)
    return _head(data, limit), part.cut or len(encoded) < len(body) or len(data) > limit


def part_text(part: Part, limit: int, default_charset: str | None = None) -> tuple[str, bool]:
    """The part's content as text (its charset, else ``default_charset``, best-effort), cut
    to ``limit`` bytes, lines ending in ``\\n`` whatever the wire used; and whether it was
    cut."""
    data, cut = part_bytes(part, limit)
    text = decode_bytes(data, part.params.get("charset") or default_charset)
    return text.replace("\r\n", "\n").replace("\r", "\n"), cut


def one_line(value: str | None) -> str | None:
    """A header value on one line, runs of white space made one space; None when empty."""
    if not value:
        return None
    return " ".join(value.split()) or None


def capped_headers(fields: Iterable[tuple[str, str]]) -> HeaderMap:
    """Raw header fields decoded as the report parsers read them: each value's first
    :data:`HEADER_LIMIT` characters only, cut at a space, on one line.

    Not the message's own ``headers``, which decode every value whole: a report's headers
    are short, and a 50 MB Subject must cost the parser no more than a short one.
    """
    return HeaderMap(
        (name, one_line(decode_header_value(_cut(value, HEADER_LIMIT))) or "")
        for name, value in fields
    )


def _cut(value: str, limit: int) -> str:
    if len(value) <= limit:
        return value
    space = value.rfind(" ", 0, limit)  # not inside an encoded word, where one can help it
    return value[: space if space > 0 else limit]


@dataclass(frozen=True, slots=True)
class Mail:
    """A message worth reading as a report: its decoded headers, its parts, and what its
    headers already said."""

    headers: HeaderMap
    parts: list[Part]
    from_daemon: str | None
    bounce_subject: bool

    def header(self, name: str) -> str | None:
        """One decoded header value on one line; None when absent or empty."""
        return one_line(self.headers.get(name))


def original_headers(parts: list[Part]) -> HeaderMap:
    """The headers of the returned original (``message/rfc822``, ``text/rfc822-headers``...)."""
    for part in parts:
        if part.content_type in _ORIGINAL_PART_TYPES:
            headers = _part_headers(part)
            if headers:
                return headers
    return no_headers()


def _part_headers(part: Part) -> HeaderMap:
    data, _ = part_bytes(part, TEXT_LIMIT)
    charset = part.params.get("charset")
    if charset and not part.content_type.startswith("message/") and not data.isascii():
        # text/rfc822-headers may say how its 8-bit text is encoded; the decoding of header
        # values below reads 8-bit text as UTF-8.
        data = decode_bytes(data, charset).encode("utf-8")
    return headers_in(data)


def headers_in(data: bytes) -> HeaderMap:
    """The header block at the start of ``data``, decoded."""
    fields, _ = split_header_block(data.lstrip(b"\r\n"))
    return header_map(fields)


def header_map(fields: Iterable[tuple[str, str]]) -> HeaderMap:
    """Raw header fields, decoded, each on one line."""
    return HeaderMap((name, one_line(decode_header_value(value)) or "") for name, value in fields)


def original_message_id(
    mail: Mail, original: Mapping[str, str], *preferred: str | None
) -> str | None:
    """The Message-ID the report is about: ``preferred`` values first, then the returned
    original's, then the report's In-Reply-To."""
    for value in (*preferred, original.get("Message-ID"), mail.header("In-Reply-To")):
        found = msg_id(value)
        if found:
            return found
    return None
