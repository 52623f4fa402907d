"""The one message model every backend returns: :class:`Message` and its parts.

A :class:`Message` holds the raw bytes a backend retrieved plus what the server said about them
(id, folder, uid, flags, size, labels, thread). Everything else (headers, addresses, date, text,
html, attachments) is parsed lazily with the stdlib :mod:`email` package on first access and
cached; constructing one does no parsing at all, because backends make thousands of them.
Mail in the wild is often broken, so every attribute is best-effort: a bad charset, bad
base64, a garbled header, an impossible date, a missing boundary or absurd nesting gives a
fallback value, never an exception. The decoding rules themselves live in
:mod:`mailsync._mime`; this module decides which part is the text, the html or an attachment.

This module does no I/O except :meth:`Attachment.save`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, SupportsIndex, TypeVar, overload

from mailsync._addresses import MAX_ADDRESSES, iter_addresses, parse_addresses
from mailsync._mime import (
    MAX_REFERENCES,
    cr_line_ends,
    decode_bytes,
    decode_header_value,
    decode_identifier_value,
    lf_for_cr_only,
    message_id_of,
    msg_ids,
    parse_date,
    safe_filename,
    split_header_block,
)
from mailsync._mime_body import decode_transfer
from mailsync._parts import MAX_PARTS, HeaderMap, Layout, Leaf, Node, children, layout, parse_node
from mailsync._types import Address, AddressLike, Attachment, AttachmentSpec, Folder

if TYPE_CHECKING:
    from email.message import EmailMessage
    from email.message import Message as StdMessage

    from mailsync._reports._values import DeliveryReport

__all__ = [
    "MAX_ADDRESSES",
    "MAX_REFERENCES",
    "Address",
    "Attachment",
    "Folder",
    "FolderList",
    "HeaderMap",
    "Message",
    "MessageList",
    "decode_bytes",
    "decode_header_value",
    "iter_addresses",
    "message_id_of",
    "message_identity",
    "parse_addresses",
    "parse_date",
    "safe_filename",
]

T = TypeVar("T")


_HEADER_END = re.compile(rb"\r?\n\r?\n")


class Readable(Protocol):
    """A binary file, as far as :func:`read_header_block` needs one."""

    def read(self, size: int, /) -> bytes:
        """At most ``size`` bytes; fewer only at the end."""


_MISSING: Any = object()


class Message:
    """One email message, immutable, parsed lazily from its raw bytes.

    Backends construct messages; applications read them. :meth:`from_bytes` makes one from
    bytes (an ``.eml`` file, a test). Construction only stores what it is given; every parsed
    view is computed on first access and cached.

    Attributes:
        folder: The folder the message was read from.
        uid: The backend's own key (IMAP UID, POP3 UIDL, Maildir key), or None.
        flags: IMAP-spelled flags (``\\Seen``, ``\\Flagged``, ``\\Answered``, ``\\Draft``,
            ``\\Deleted``, keywords).
        raw: The message bytes as retrieved (the header block only for ``headers_only``).
        size: The full message size in bytes as the server reported it, else ``len(raw)``
            (also when what the server reported cannot be a size: a negative number).
        labels: Gmail-style labels, empty elsewhere.
        thread_id: The provider's conversation id, when it has one.
        headers_only: True when ``raw`` is the header block only.
        internal_date: When the server received the message, if it says.
    """

    __slots__ = (
        "_cache",
        "_id",
        "flags",
        "folder",
        "headers_only",
        "internal_date",
        "labels",
        "raw",
        "size",
        "thread_id",
        "uid",
    )

    folder: str
    uid: int | str | None
    flags: frozenset[str]
    raw: bytes
    size: int
    labels: frozenset[str]
    thread_id: str | None
    headers_only: bool
    internal_date: datetime | None
    _id: str | None
    _cache: dict[str, Any]

    def __init__(
        self,
        raw: bytes,
        *,
        id: str | None = None,
        folder: str = "INBOX",
        uid: int | str | None = None,
        flags: Iterable[str] = (),
        size: int | None = None,
        labels: Iterable[str] = (),
        thread_id: str | None = None,
        headers_only: bool = False,
        internal_date: datetime | None = None,
    ) -> None:
        # Kept to plain stores: backends build 10,000s of these, and nothing is parsed (or
        # even hashed: see ``id``) until someone reads an attribute.
        if type(raw) is not bytes:
            if not isinstance(raw, bytes | bytearray | memoryview):
                raise TypeError(f"raw must be bytes, not {type(raw).__name__}")
            raw = bytes(raw)
        store = object.__setattr__
        store(self, "raw", raw)
        store(self, "_id", id)
        store(self, "folder", folder)
        store(self, "uid", uid)
        store(self, "flags", frozenset((flags,) if isinstance(flags, str) else flags))
        # A server's size is taken as said, unless it cannot be one (IMAP RFC822.SIZE -5).
        store(self, "size", len(raw) if size is None or size < 0 else size)
        store(self, "labels", frozenset((labels,) if isinstance(labels, str) else labels))
        store(self, "thread_id", thread_id)
        store(self, "headers_only", headers_only)
        store(self, "internal_date", internal_date)
        store(self, "_cache", {})

    @classmethod
    def from_bytes(cls, raw: bytes, **attributes: Any) -> Message:
        """Make a message from raw RFC 5322 bytes (an ``.eml`` file, a test).

        Args:
            raw: The message bytes.
            **attributes: Any of the constructor's keyword arguments (``folder``, ``flags``...).
        """
        return cls(raw, **attributes)

    @classmethod
    def from_email(cls, message: StdMessage, **attributes: Any) -> Message:
        """Make a message from a stdlib ``email.message.Message``/``EmailMessage``."""
        return cls(as_bytes(message), **attributes)

    @property
    def id(self) -> str:
        """Stable, unique in the account; give it to ``Retriever.get``. Messages made from
        bytes without one get a digest of their bytes, computed on first use."""
        if self._id is not None:
            return self._id
        return self._cached("id", lambda: message_identity_of_raw(self.raw))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Message is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Message is immutable; cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return self.id == other.id and self.raw == other.raw and self.flags == other.flags

    def __hash__(self) -> int:
        return hash((self.id, self.raw))

    def __repr__(self) -> str:
        subject = _shorten(self.subject, 60)
        sender = self.from_.email if self.from_ else None
        return f"<Message id={self.id!r} from={sender!r} subject={subject!r} size={self.size}>"

    def _repr_html_(self) -> str:
        """A card for Jupyter; an html body is sanitized (with nh3) or left out for the text."""
        from mailsync._notebook import message_html

        return message_html(self)

    def replace(self, **changes: Any) -> Message:
        """A copy with some of the constructor's attributes changed (e.g. ``flags``)."""
        current: dict[str, Any] = {
            "id": self._id,
            "folder": self.folder,
            "uid": self.uid,
            "flags": self.flags,
            "size": self.size,
            "labels": self.labels,
            "thread_id": self.thread_id,
            "headers_only": self.headers_only,
            "internal_date": self.internal_date,
        }
        # The size is kept even when raw changes: trimming a message to its header block
        # (headers_only) must still report the full message's size.
        raw = changes.pop("raw", self.raw)
        current.update(changes)
        return Message(raw, **current)

    # -- lazily parsed views ---------------------------------------------------------------

    def _cached(self, name: str, compute: Callable[[], T]) -> T:
        """The view ``name``, computed by ``compute`` on first use."""
        value: T = self._cache.get(name, _MISSING)
        if value is _MISSING:
            value = compute()
            self._cache[name] = value
        return value

    @property
    def email(self) -> EmailMessage:
        """The stdlib ``EmailMessage`` parsed with ``email.policy.default`` (cached; do not
        modify it). When the stdlib cannot parse the structure (absurd nesting), this holds
        the headers and the undivided body."""
        return self._cached("email", lambda: parse_email(self.raw))

    def _root(self) -> Node:
        # Our own header-block split, not the stdlib parser: reading a header must not parse
        # a 50 MB body, and even a header-only stdlib parse re-parses Content-Type, which a
        # hostile header makes take seconds. A message that ends its lines with a CR alone is
        # read as its LF twin.
        return self._cached("root", lambda: parse_node(lf_for_cr_only(self.raw)))

    @property
    def seen(self) -> bool:
        """True when the message carries ``\\Seen``."""
        return "\\Seen" in self.flags

    @property
    def headers(self) -> HeaderMap:
        """All headers, decoded, in a case-insensitive read-only mapping."""
        return self._cached("headers", self._decode_headers)

    def _decode_headers(self) -> HeaderMap:
        return HeaderMap((name, decode_header_value(value)) for name, value in self._raw_headers())

    def _raw_headers(self) -> tuple[tuple[str, str], ...]:
        return self._cached("raw headers", lambda: tuple(self._root().fields))

    def _raw_values(self, name: str) -> list[str]:
        key = name.lower()
        return [value for item, value in self._raw_headers() if item.lower() == key]

    @property
    def subject(self) -> str:
        """The decoded subject on one line; empty when there is none."""
        return self.headers.get("Subject", "")

    @property
    def from_(self) -> Address | None:
        """The (first) author, or None."""
        addresses = self._addresses("From")
        return addresses[0] if addresses else None

    @property
    def to(self) -> tuple[Address, ...]:
        """The To recipients."""
        return self._addresses("To")

    @property
    def cc(self) -> tuple[Address, ...]:
        """The Cc recipients."""
        return self._addresses("Cc")

    @property
    def bcc(self) -> tuple[Address, ...]:
        """The Bcc recipients (usually only present in sent copies and drafts)."""
        return self._addresses("Bcc")

    @property
    def reply_to(self) -> tuple[Address, ...]:
        """The Reply-To addresses."""
        return self._addresses("Reply-To")

    def _addresses(self, name: str) -> tuple[Address, ...]:
        # Split the raw value first and decode display names after: a decoded name may hold
        # the very commas and brackets that separate addresses.
        return self._cached("addr:" + name, lambda: parse_addresses(self._raw_values(name)))

    @property
    def date(self) -> datetime | None:
        """The Date header as an aware datetime (naive dates are taken as UTC); the server's
        arrival time when the header is missing or unreadable; else None."""
        return self._cached("date", self._parse_date)

    def _parse_date(self) -> datetime | None:
        parsed = parse_date(self.headers.get("Date"))
        return parsed if parsed is not None else self.internal_date

    @property
    def message_id(self) -> str | None:
        """The Message-ID without angle brackets, or None.

        Read as it is on the wire (no RFC 2047 decoding: message ids have no encoded words),
        so it is the id delivery reports quote and other programs show.
        """
        return message_id_of(self._raw_values("Message-ID"))

    @property
    def in_reply_to(self) -> str | None:
        """The In-Reply-To message id without angle brackets, or None."""
        ids = msg_ids(self._identifier("In-Reply-To"))
        return ids[0] if ids else None

    @property
    def references(self) -> tuple[str, ...]:
        """The References message ids, oldest first, without angle brackets (at most the
        last :data:`~mailsync._mime.MAX_REFERENCES`)."""
        return tuple(msg_ids(self._identifier("References")))

    def _identifier(self, name: str) -> str:
        values = self._raw_values(name)
        return decode_identifier_value(values[0]) if values else ""

    @property
    def text(self) -> str:
        """The plain-text body with ``\\n`` line endings; empty when there is none."""
        return self._cached("text", lambda: _body_text(self._layout().text))

    @property
    def html(self) -> str:
        """The html body with ``\\n`` line endings; empty when there is none."""
        return self._cached("html", lambda: _body_text(self._layout().html))

    @property
    def attachments(self) -> tuple[Attachment, ...]:
        """Every part that is not the text or html body, inline parts included."""
        return self._cached(
            "attachments", lambda: tuple(_attachment(leaf) for leaf in self._layout().others)
        )

    def _layout(self) -> Layout:
        # Which part is which is decided once; decoding waits until a body or the
        # attachments are asked for, so reading ``text`` never decodes a large attachment.
        # The structure is split here, not taken from ``email``: the stdlib parser recurses
        # per nesting level and re-parses Content-Type in quadratic time, both of which a
        # hostile message can make take minutes.
        return self._cached("layout", lambda: layout(self._root()))

    @property
    def delivery_report(self) -> DeliveryReport | None:
        """The parsed DSN, MDN or bounce when this message is one, else None."""
        return self._cached("report", self._parse_report)

    def _parse_report(self) -> DeliveryReport | None:
        from mailsync._reports import parse_report

        try:
            return parse_report(self)
        except Exception:  # best-effort like every other view: junk is "not a report"
            return None

    @property
    def identity(self) -> str:
        """What makes this message the same message after a resync: its Message-ID, else a
        digest of its bytes."""
        return message_identity(self.message_id, self.raw)

    def reply(
        self,
        text: str | None = None,
        html: str | None = None,
        *,
        all: bool = False,
        quote: bool = True,
        from_: AddressLike | None = None,
        cc: AddressLike | Iterable[AddressLike] = (),
        bcc: AddressLike | Iterable[AddressLike] = (),
        attachments: Iterable[AttachmentSpec] = (),
        headers: Mapping[str, str] | None = None,
    ) -> EmailMessage:
        """A reply to this message, ready for any :class:`~mailsync.Sender`.

        It goes to the Reply-To (else the From) and, with ``all``, to everyone else in To and
        Cc but you. The subject gets one ``Re:`` (``AW:``, ``SV:``, ``Re[2]:``... already in
        front are taken off first); In-Reply-To and References keep the thread. With
        ``quote``, the original follows the answer: ``> `` lines in the text, a blockquote in
        the html (with the inline images it shows). Nothing is changed on the server: flag the
        original ``\\Answered`` yourself once it is sent.

        Args:
            text: The plain-text answer.
            html: An html answer (quoted in html when ``quote``).
            all: Reply to all the recipients too.
            quote: Put the original below the answer.
            from_: Who answers; by default the address the message was delivered to
                (Delivered-To, else the only To).
            cc: More recipients.
            bcc: Blind recipients.
            attachments: As for :func:`~mailsync.compose`.
            headers: Extra headers, as for :func:`~mailsync.compose`.

        Returns:
            A standard ``EmailMessage``.

        Raises:
            ConfigError: The message was retrieved with ``headers_only``, or there is no way
                to tell who answers (pass ``from_``).
            InvalidAddress: An address of the original or of the arguments is not valid.
        """
        from mailsync._reply import reply

        return reply(
            self,
            text=text,
            html=html,
            all=all,
            quote=quote,
            from_=from_,
            cc=cc,
            bcc=bcc,
            attachments=attachments,
            headers=headers,
        )

    def forward(
        self,
        to: AddressLike | Iterable[AddressLike],
        text: str | None = None,
        html: str | None = None,
        *,
        attach: bool = True,
        from_: AddressLike | None = None,
        cc: AddressLike | Iterable[AddressLike] = (),
        bcc: AddressLike | Iterable[AddressLike] = (),
        headers: Mapping[str, str] | None = None,
    ) -> EmailMessage:
        """This message forwarded to ``to``, ready for any :class:`~mailsync.Sender`.

        With ``attach`` (the default) the original goes whole as a ``message/rfc822``
        attachment, its bytes unchanged; otherwise it is quoted below ``text``/``html`` under
        a "Forwarded message" heading, with its attachments. The subject gets one ``Fwd:``;
        References ties the forward to the original's thread.

        Args:
            to: The recipients.
            text: A note above the original.
            html: An html note.
            attach: Attach the original rather than quote it.
            from_: Who forwards; by default the address the message was delivered to.
            cc: More recipients.
            bcc: Blind recipients.
            headers: Extra headers, as for :func:`~mailsync.compose`.

        Returns:
            A standard ``EmailMessage``.

        Raises:
            ConfigError: As for :meth:`reply`.
            InvalidAddress: An address is not valid.
        """
        from mailsync._reply import forward

        return forward(
            self,
            to=to,
            text=text,
            html=html,
            attach=attach,
            from_=from_,
            cc=cc,
            bcc=bcc,
            headers=headers,
        )

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary: id, folder, date, from, to, subject, size, flags."""
        return {
            "id": self.id,
            "folder": self.folder,
            "date": self.date.isoformat() if self.date else None,
            "from": str(self.from_) if self.from_ else None,
            "to": [str(a) for a in self.to],
            "subject": self.subject,
            "size": self.size,
            "flags": sorted(self.flags),
        }


class MessageList(list[Message]):
    """A list of messages that shows as a table in Jupyter and converts to pandas.

    Get one from a retriever with ``box.messages(...).collect()`` (or ``box.sync().collect()``;
    ``await abox.messages(...).collect()`` in async code), or build one from any iterable of
    messages: ``MessageList(messages)``.
    """

    @overload
    def __getitem__(self, index: SupportsIndex) -> Message: ...

    @overload
    def __getitem__(self, index: slice) -> MessageList: ...

    def __getitem__(self, index: SupportsIndex | slice) -> Message | MessageList:
        # A slice stays a MessageList, so ``inbox[:10]`` still shows as a table.
        if isinstance(index, slice):
            return MessageList(super().__getitem__(index))
        return super().__getitem__(index)

    def _repr_html_(self) -> str:
        from mailsync._notebook import messages_html

        return messages_html(self)

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame`` with one row per message and typed columns.

        Columns: ``date`` (timezone-aware, UTC), ``from_name``, ``from_email`` (lower case),
        ``to`` and ``cc`` (lists of lower-cased addresses), ``subject``, ``size`` (int),
        ``seen``, ``flagged``, ``answered`` (bool), ``flags`` (list), ``has_attachments``
        (nullable bool: unknown for header-only messages), ``folder``, ``labels`` (list),
        ``id``, ``message_id``, ``thread_id``.

        Raises:
            ImportError: pandas is not installed (``pip install "mailsync[pandas]"``).
        """
        from mailsync._notebook import messages_dataframe

        return messages_dataframe(self)


class FolderList(list[Folder]):
    """The list ``folders()`` returns: a plain list of :class:`Folder` that shows as a table in
    Jupyter."""

    def _repr_html_(self) -> str:
        from mailsync._notebook import folders_html

        return folders_html(self)


# -- helpers shared by backends ----------------------------------------------------------------


def message_identity(message_id: str | None, raw: bytes) -> str:
    """The identity a resync compares: ``mid:<Message-ID>``, else ``sha256:<digest>``."""
    if message_id:
        return "mid:" + message_id
    import hashlib

    return "sha256:" + hashlib.sha256(raw).hexdigest()


def message_identity_of_raw(raw: bytes) -> str:
    """A content-derived id for messages made from bytes."""
    import hashlib

    return "sha256:" + hashlib.sha256(raw).hexdigest()[:32]


def header_block(raw: bytes) -> bytes:
    """The header block of a raw message, including the blank line that ends it."""
    match = _HEADER_END.search(raw)
    return raw[: match.end()] if match else raw


def read_header_block(file: Readable, limit: int | None, chunk_size: int = 16384) -> bytes | None:
    """The :func:`header_block` of the message ``file`` holds from its position, reading no
    further than the blank line that ends it (plus the rest of that chunk).

    Returns:
        The header block (the whole message when it has no blank line), or None when no
        blank line comes within the first ``limit`` bytes (``max_message_size``): a header
        that large is not held.
    """
    data = bytearray()
    while True:
        chunk = file.read(chunk_size)
        if not chunk:
            return bytes(data)
        # Search only where the end can be: the new chunk and the three bytes before it.
        start = max(0, len(data) - 3)
        data += chunk
        match = _HEADER_END.search(data, start)
        if match:
            return bytes(data[: match.end()])
        if limit is not None and len(data) > limit:
            return None


def as_bytes(message: StdMessage | EmailMessage | bytes | Message) -> bytes:
    """The wire bytes (CRLF line endings) of any message-like value."""
    if isinstance(message, Message):
        return message.raw
    if isinstance(message, bytes | bytearray):
        return bytes(message)
    from email.message import Message as StdMessage

    if isinstance(message, StdMessage):
        policy = message.policy.clone(linesep="\r\n")
        return message.as_bytes(policy=policy)
    raise TypeError(f"expected bytes, an EmailMessage or a Message, not {type(message).__name__}")


_LINE_ENDS = re.compile(rb"\r\n|\r|\n")
_HEAD_LINE_ENDS = re.compile(rb"\r?\n")
_LONE_CR = re.compile(rb"\r(?!\n)")


def crlf_bytes(message: StdMessage | EmailMessage | bytes | Message) -> bytes:
    """:func:`as_bytes` with every line ending CRLF, as RFC 5322 requires on the wire (what
    imaplib does to an APPEND, and what SMTP sends).

    In the body a bare CR or LF becomes CRLF. In the header block only LF does: a CR there
    that ends no line is part of a field (as Dovecot and Postfix read it), so it becomes a
    space, as Postfix makes it, never a line break that would start a field of its own. A
    message with no LF at all ends its lines with CRs (:func:`~mailsync._mime.cr_line_ends`):
    each becomes CRLF.
    """
    raw = as_bytes(message)
    if cr_line_ends(raw):
        return raw.replace(b"\r", b"\r\n")
    offset = split_header_block(raw)[1]  # past its field cap it still finds the block's end
    head = _LONE_CR.sub(b" ", raw[:offset])
    return _HEAD_LINE_ENDS.sub(b"\r\n", head) + _LINE_ENDS.sub(b"\r\n", raw[offset:])


def parse_email(raw: bytes, *, headers_only: bool = False) -> EmailMessage:
    """Parse bytes with ``email.policy.default``, falling back rather than failing.

    The stdlib parser recurses once per nesting level and gives up (RecursionError) on a few
    hundred nested parts; then the headers are parsed alone and the body is kept whole as
    one payload. (:class:`Message` itself splits parts by hand and only uses this for its
    ``email`` attribute.)
    """
    import email.policy
    from email.message import EmailMessage
    from email.parser import BytesParser

    parser = BytesParser(policy=email.policy.default)
    for only_headers in dict.fromkeys((headers_only, True)):
        try:
            parsed = parser.parsebytes(raw, headersonly=only_headers)
        except Exception:  # noqa: S112 - RecursionError on absurd nesting; parser bugs on junk
            continue
        if isinstance(parsed, EmailMessage):
            return parsed
    fallback = EmailMessage()  # pragma: no cover - the header-only parse does not fail
    fallback.set_payload(raw.decode("ascii", "surrogateescape"))  # pragma: no cover
    return fallback  # pragma: no cover


# -- which part is what (the structure is mailsync._parts') ----------------------------------


#: A node of the model's MIME tree, for the modules that read the structure themselves
#: (the delivery-report parser): one splitter for the whole package.
MimeNode = Node


def mime_tree(message: Message) -> MimeNode:
    """The root of ``message``'s MIME tree, split once and cached with the message."""
    return message._root()


def mime_children(
    node: MimeNode, content_type: str, params: dict[str, str], limit: int = MAX_PARTS
) -> list[MimeNode] | None:
    """The parts of a multipart node of ``content_type`` (its ``params`` as
    :func:`~mailsync._mime.split_params` gives them), split as the model splits them, at
    most ``limit`` of them; None for a leaf, and for a multipart with no boundary anywhere
    (it is text)."""
    return children(node, content_type, params, limit)


def split_body(
    message: StdMessage | EmailMessage | bytes | Message,
) -> tuple[str, str, tuple[Attachment, ...]]:
    """Split a message into (text, html, attachments), best-effort, as :class:`Message` does."""
    parts = layout(parse_node(as_bytes(message)))
    attachments = tuple(_attachment(leaf) for leaf in parts.others)
    return _body_text(parts.text), _body_text(parts.html), attachments


def _body_text(leaf: Leaf | None) -> str:
    if leaf is None:
        return ""
    text = decode_bytes(decode_transfer(leaf.body, leaf.transfer_encoding), leaf.charset)
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _attachment(leaf: Leaf) -> Attachment:
    inline = leaf.disposition == "inline" or (
        leaf.disposition != "attachment" and leaf.in_related and leaf.content_id is not None
    )
    return Attachment._from_part(leaf, inline=inline)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
