"""The MIME structure of a message: its parts as they are on the wire (:class:`Node`), which
leaf is the text body, which the html body and which are attachments (:func:`layout`), and the
mapping its decoded headers are read through (:class:`HeaderMap`).

Split by hand rather than with the stdlib parser: the stdlib parser recurses per nesting level
and re-parses Content-Type in quadratic time, both of which a hostile message can make take
minutes, and reading one header must not parse (or copy) a 50 MB body. The walk is iterative
and bounded (nesting depth, number of parts). Decoding the parts is :mod:`mailsync._mime`'s;
:class:`~mailsync.Message` builds its views from what this module finds.

This module must not import the message model.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from mailsync._mime import (
    decode_header_value,
    decode_identifier_value,
    msg_id,
    split_header_block,
    split_params,
)
from mailsync._mime_body import guess_boundary, multipart_spans

__all__ = ["MAX_PARTS", "HeaderMap", "Layout", "Leaf", "Node", "children", "layout", "parse_node"]


class HeaderMap(Mapping[str, str]):
    """A read-only, case-insensitive view of decoded header values.

    ``headers["subject"]`` and ``headers.get("Subject")`` give the first value;
    ``headers.get_all("Received")`` gives every value in order.
    """

    __slots__ = ("_items", "_names")

    def __init__(self, items: Iterable[tuple[str, str]]) -> None:
        self._items: tuple[tuple[str, str], ...] = tuple(items)
        names: dict[str, str] = {}
        for name, _ in self._items:
            names.setdefault(name.lower(), name)
        self._names = names

    def __getitem__(self, name: str) -> str:
        key = name.lower()
        for item_name, value in self._items:
            if item_name.lower() == key:
                return value
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names.values())

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._names

    def get_all(self, name: str, default: list[str] | None = None) -> list[str]:
        """Every value of header ``name``, in order; ``default`` (or ``[]``) if there is none."""
        key = name.lower()
        values = [value for item_name, value in self._items if item_name.lower() == key]
        return values or (default if default is not None else [])

    def items_all(self) -> tuple[tuple[str, str], ...]:
        """All ``(name, value)`` pairs in order, repeats included."""
        return self._items

    def __repr__(self) -> str:
        return f"HeaderMap({list(self._items)!r})"

    def _repr_html_(self) -> str:
        from mailsync._notebook import headers_html

        return headers_html(self)


_MAX_DEPTH = 100  # deeper multiparts are kept whole as one part
#: A message with more parts than this is junk: the parts made (leaves and multiparts) stay
#: under it, and the rest is ignored.
MAX_PARTS = 10_000
_CONTENT_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")
_TRANSFER_ENCODING = re.compile(r"[^\s;()\"]+")


@dataclass(frozen=True, slots=True)
class Node:
    """A message or MIME part as on the wire: raw header fields (unfolded, not decoded) and
    where its undecoded body lies in ``raw``, the bytes of the whole message (parts are
    offsets into it, not copies)."""

    fields: list[tuple[str, str]]
    raw: bytes
    offset: int
    end: int
    default_type: str = "text/plain"

    @property
    def body(self) -> bytes:
        """The undecoded body."""
        # Sliced when asked for: reading a header must not copy a 50 MB body.
        return self.raw[self.offset : self.end]

    def field(self, name: str) -> str:
        """The first value of header ``name`` (raw), or ``""``."""
        key = name.lower()
        return next((value for item, value in self.fields if item.lower() == key), "")


def parse_node(
    raw: bytes, default_type: str = "text/plain", start: int = 0, end: int | None = None
) -> Node:
    """Split raw message or part bytes (``raw[start:end]``) into header fields and body (see
    :func:`mailsync._mime.split_header_block`)."""
    stop = len(raw) if end is None else end
    fields, offset = split_header_block(raw, start, stop)
    return Node(fields, raw, offset, stop, default_type)


@dataclass(frozen=True, slots=True)
class Leaf:
    """One leaf part and what its headers say about it; its body is ``raw[start:end]``."""

    raw: bytes
    start: int
    end: int
    content_type: str
    charset: str | None
    disposition: str | None
    filename: str | None
    content_id: str | None
    transfer_encoding: str
    in_related: bool

    @property
    def body(self) -> bytes:
        """The undecoded body (a copy of its span)."""
        return self.raw[self.start : self.end]

    @property
    def is_body_candidate(self) -> bool:
        """Neither an ``attachment`` disposition nor a file name: it may be a body."""
        return self.disposition != "attachment" and self.filename is None


@dataclass(frozen=True, slots=True)
class Layout:
    """Which leaf is the text body, which the html body, and the others (attachments)."""

    text: Leaf | None
    html: Leaf | None
    others: tuple[Leaf, ...]


def layout(root: Node) -> Layout:
    """Decide which leaf is the text body, which the html body, and which are attachments.

    The first text/plain and the first text/html leaf that are not attachments (no
    ``attachment`` disposition, no file name) are the bodies; every other leaf, and every
    attached message, is an attachment. Attached messages are not descended into.
    """
    text: Leaf | None = None
    html: Leaf | None = None
    others: list[Leaf] = []
    for leaf in _leaves(root):
        if leaf.is_body_candidate and leaf.content_type == "text/plain" and text is None:
            text = leaf
        elif leaf.is_body_candidate and leaf.content_type == "text/html" and html is None:
            html = leaf
        else:
            others.append(leaf)
    return Layout(text, html, tuple(others))


def _leaves(root: Node) -> Iterator[Leaf]:
    # Iterative, not recursive: the nesting depth is chosen by whoever sent the message.
    stack: list[tuple[Node, bool, int]] = [(root, False, 0)]
    count = 0
    while stack and count < MAX_PARTS:
        node, in_related, depth = stack.pop()
        count += 1
        content_type, params = split_params(node.field("Content-Type"))
        if not _CONTENT_TYPE.fullmatch(content_type):
            content_type = "text/plain" if content_type else node.default_type
        room = max(MAX_PARTS - count - len(stack), 0)  # parts ever made stay under the cap
        parts = children(node, content_type, params, room) if depth < _MAX_DEPTH else None
        if parts is not None:
            related = in_related or content_type == "multipart/related"
            stack.extend((part, related, depth + 1) for part in reversed(parts))
            continue
        if content_type.startswith("multipart/") and depth < _MAX_DEPTH:
            content_type = "text/plain"  # no part boundary anywhere: it is just text
        yield _make_leaf(node, content_type, params, in_related)


def children(
    node: Node, content_type: str, params: dict[str, str], limit: int = MAX_PARTS
) -> list[Node] | None:
    """The first ``limit`` parts of a multipart, or None for a leaf (attached messages are
    leaves) and for a multipart with no boundary anywhere (it is text)."""
    if not content_type.startswith("multipart/"):
        return None
    raw, start, end = node.raw, node.offset, node.end
    boundary = params.get("boundary")
    spans = multipart_spans(raw, boundary, start, end, limit=limit) if boundary else None
    if spans is None:  # no boundary parameter, or one that never occurs: find the real one
        guessed = guess_boundary(raw, start, end)
        spans = multipart_spans(raw, guessed, start, end, limit=limit) if guessed else None
    if spans is None:
        return None
    default = "message/rfc822" if content_type == "multipart/digest" else "text/plain"
    return [parse_node(raw, default, part_start, part_end) for part_start, part_end in spans]


def _make_leaf(node: Node, content_type: str, params: dict[str, str], in_related: bool) -> Leaf:
    disposition, disposition_params = split_params(node.field("Content-Disposition"))
    encoding = _TRANSFER_ENCODING.match(node.field("Content-Transfer-Encoding").strip())
    return Leaf(
        raw=node.raw,
        start=node.offset,
        end=node.end,
        content_type=content_type,
        charset=params.get("charset"),
        disposition=disposition or None,
        filename=_filename(disposition_params, params),
        content_id=msg_id(decode_identifier_value(node.field("Content-ID"))),
        transfer_encoding=encoding.group(0).lower() if encoding else "7bit",
        in_related=in_related,
    )


def _filename(disposition_params: dict[str, str], type_params: dict[str, str]) -> str | None:
    candidates = (
        disposition_params.get("filename"),
        type_params.get("name"),
        disposition_params.get("name"),
        type_params.get("filename"),
    )
    for candidate in candidates:
        if candidate:
            name = decode_header_value(candidate)
            if name:
                return name
    return None
