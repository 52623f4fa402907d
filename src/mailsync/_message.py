"""The one message model every backend returns: :class:`Message` and its parts.

A :class:`Message` holds the raw bytes a backend retrieved plus what the server said about them
(id, folder, uid, flags, size, labels, thread). Everything else (headers, addresses, date, text,
html, attachments) is parsed lazily with the stdlib :mod:`email` package on first access and
cached. Mail in the wild is often broken, so every attribute is best-effort: a bad charset, bad
base64, a garbled header or an impossible date gives a fallback value, never an exception.

This module does no I/O except :meth:`Attachment.save`.
"""

from __future__ import annotations

import email
import email.header
import email.policy
import email.utils
import hashlib
import os
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.message import Message as StdMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from mailsync._reports import DeliveryReport

__all__ = [
    "Address",
    "Attachment",
    "Folder",
    "HeaderMap",
    "Message",
    "MessageList",
    "message_identity",
]


class Address(NamedTuple):
    """A mailbox: display name and address.

    Attributes:
        name: The display name, decoded; empty when there is none.
        email: The address itself (``local@domain``); may be empty for a broken header.
    """

    name: str
    email: str

    def __str__(self) -> str:
        return email.utils.formataddr((self.name, self.email)) if self.name else self.email


@dataclass(frozen=True, slots=True)
class Folder:
    """A folder (IMAP mailbox, Maildir++ subfolder, Gmail label, Graph folder).

    Attributes:
        name: The backend's name for it, decoded (``"INBOX"``, ``"Archive/2024"``).
        delimiter: The hierarchy separator, or None for a flat namespace.
        special_use: ``\\Sent``, ``\\Trash``, ``\\Drafts``, ``\\Junk``, ``\\Archive``, ``\\All``,
            ``\\Flagged``, or None.
        flags: Other attributes the server reports (``\\HasChildren``, ``\\Noselect``).
    """

    name: str
    delimiter: str | None = None
    special_use: str | None = None
    flags: frozenset[str] = frozenset()

    @property
    def selectable(self) -> bool:
        """False for folders that only hold other folders."""
        return not any(f.lower() in ("\\noselect", "\\nonexistent") for f in self.flags)


@dataclass(frozen=True, slots=True)
class Attachment:
    """A part of a message that is not its text or html body.

    Attributes:
        filename: The decoded file name (RFC 2231 and encoded words understood), or None.
        content_type: e.g. ``"application/pdf"``.
        data: The decoded content.
        content_id: The Content-ID without angle brackets, for inline parts.
        inline: True for parts shown inside the body (``Content-Disposition: inline`` or
            referenced by Content-ID), such as images in an html message.
    """

    filename: str | None
    content_type: str
    data: bytes = field(repr=False)
    content_id: str | None = None
    inline: bool = False

    @property
    def size(self) -> int:
        """Decoded size in bytes."""
        return len(self.data)

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the attachment into ``directory`` and return the path written.

        The file name is made safe: directory parts are stripped, ``.`` and ``..`` are never
        used, leading dots are removed so nothing hidden is written, control characters are
        dropped, and an existing file is never overwritten (``name (1).pdf`` instead). The
        file is created exclusively, so a concurrent writer cannot be clobbered either.

        Args:
            directory: An existing directory.

        Returns:
            The path of the new file, inside ``directory``.
        """
        base = Path(directory).resolve()
        stem, suffix = _split_name(safe_filename(self.filename, self.content_type))
        for n in range(10_000):
            name = f"{stem}{suffix}" if n == 0 else f"{stem} ({n}){suffix}"
            target = base / name
            if target.resolve().parent != base:  # pragma: no cover - safe_filename prevents it
                raise ValueError(f"refusing to write outside {base}")
            try:
                with open(target, "xb") as fh:
                    fh.write(self.data)
            except FileExistsError:
                continue
            return target
        raise FileExistsError(f"no free file name for {stem}{suffix} in {base}")


def safe_filename(filename: str | None, content_type: str = "application/octet-stream") -> str:
    """Reduce an untrusted attachment file name to one safe to create in a directory."""
    name = (filename or "").replace("\\", "/").split("/")[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = name.strip().lstrip(".").strip()
    if name in ("", ".", ".."):
        name = "attachment" + _extension_for(content_type)
    return name[:200]


def _split_name(name: str) -> tuple[str, str]:
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        return name, ""
    return stem, "." + ext


def _extension_for(content_type: str) -> str:
    import mimetypes

    return mimetypes.guess_extension(content_type) or ".bin"


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


_HEADER_END = re.compile(rb"\r?\n\r?\n")
_MISSING: Any = object()


class Message:
    """One email message, immutable, parsed lazily from its raw bytes.

    Backends construct messages; applications read them. :meth:`from_bytes` makes one from
    bytes (an ``.eml`` file, a test).

    Attributes:
        id: Stable, unique in the account; give it to ``Retriever.get``.
        folder: The folder the message was read from.
        uid: The backend's own key (IMAP UID, POP3 UIDL, Maildir key), or None.
        flags: IMAP-spelled flags (``\\Seen``, ``\\Flagged``, ``\\Answered``, ``\\Draft``,
            ``\\Deleted``, keywords).
        raw: The message bytes as retrieved (the header block only for ``headers_only``).
        size: The full message size in bytes as the server reported it, else ``len(raw)``.
        labels: Gmail-style labels, empty elsewhere.
        thread_id: The provider's conversation id, when it has one.
        headers_only: True when ``raw`` is the header block only.
    """

    __slots__ = (
        "_cache",
        "flags",
        "folder",
        "headers_only",
        "id",
        "internal_date",
        "labels",
        "raw",
        "size",
        "thread_id",
        "uid",
    )

    id: str
    folder: str
    uid: int | str | None
    flags: frozenset[str]
    raw: bytes
    size: int
    labels: frozenset[str]
    thread_id: str | None
    headers_only: bool
    internal_date: datetime | None
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
        if not isinstance(raw, bytes | bytearray | memoryview):
            raise TypeError(f"raw must be bytes, not {type(raw).__name__}")
        raw = bytes(raw)
        values: dict[str, Any] = {
            "raw": raw,
            "id": id if id is not None else message_identity_of_raw(raw),
            "folder": folder,
            "uid": uid,
            "flags": frozenset(flags),
            "size": len(raw) if size is None else size,
            "labels": frozenset(labels),
            "thread_id": thread_id,
            "headers_only": headers_only,
            "internal_date": internal_date,
            "_cache": {},
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)

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

    def replace(self, **changes: Any) -> Message:
        """A copy with some of the constructor's attributes changed (e.g. ``flags``)."""
        current: dict[str, Any] = {
            "id": self.id,
            "folder": self.folder,
            "uid": self.uid,
            "flags": self.flags,
            "size": self.size,
            "labels": self.labels,
            "thread_id": self.thread_id,
            "headers_only": self.headers_only,
            "internal_date": self.internal_date,
        }
        raw = changes.pop("raw", self.raw)
        current.update(changes)
        return Message(raw, **current)

    # -- lazily parsed views ---------------------------------------------------------------

    def _cached(self, name: str, compute: Any) -> Any:
        value = self._cache.get(name, _MISSING)
        if value is _MISSING:
            value = compute()
            self._cache[name] = value
        return value

    @property
    def email(self) -> EmailMessage:
        """The stdlib ``EmailMessage`` parsed with ``email.policy.default`` (cached; do not
        modify it)."""
        return self._cached("email", self._parse)  # type: ignore[no-any-return]

    def _parse(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed

    @property
    def seen(self) -> bool:
        """True when the message carries ``\\Seen``."""
        return "\\Seen" in self.flags

    @property
    def headers(self) -> HeaderMap:
        """All headers, decoded, in a case-insensitive read-only mapping."""
        return self._cached("headers", self._decode_headers)  # type: ignore[no-any-return]

    def _decode_headers(self) -> HeaderMap:
        pairs = []
        for name, value in self.email.raw_items():
            pairs.append((name, decode_header_value(value)))
        return HeaderMap(pairs)

    @property
    def subject(self) -> str:
        """The decoded subject; empty when there is none."""
        return _one_line(self.headers.get("Subject", ""))

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
        return self._cached(  # type: ignore[no-any-return]
            "addr:" + name, lambda: parse_addresses(self.headers.get_all(name))
        )

    @property
    def date(self) -> datetime | None:
        """The Date header as an aware datetime (naive dates are taken as UTC); the server's
        arrival time when the header is missing or unreadable; else None."""
        return self._cached("date", self._parse_date)  # type: ignore[no-any-return]

    def _parse_date(self) -> datetime | None:
        parsed = parse_date(self.headers.get("Date"))
        return parsed if parsed is not None else self.internal_date

    @property
    def message_id(self) -> str | None:
        """The Message-ID without angle brackets, or None."""
        return _msgid(self.headers.get("Message-ID"))

    @property
    def in_reply_to(self) -> str | None:
        """The In-Reply-To message id without angle brackets, or None."""
        ids = _msgids(self.headers.get("In-Reply-To", ""))
        return ids[0] if ids else None

    @property
    def references(self) -> tuple[str, ...]:
        """The References message ids, oldest first, without angle brackets."""
        return tuple(_msgids(self.headers.get("References", "")))

    @property
    def text(self) -> str:
        """The plain-text body with ``\\n`` line endings; empty when there is none."""
        return self._body()[0]

    @property
    def html(self) -> str:
        """The html body with ``\\n`` line endings; empty when there is none."""
        return self._body()[1]

    @property
    def attachments(self) -> tuple[Attachment, ...]:
        """Every part that is not the text or html body, inline parts included."""
        return self._body()[2]

    def _body(self) -> tuple[str, str, tuple[Attachment, ...]]:
        return self._cached("body", lambda: split_body(self.email))  # type: ignore[no-any-return]

    @property
    def delivery_report(self) -> DeliveryReport | None:
        """The parsed DSN, MDN or bounce when this message is one, else None."""
        from mailsync._reports import parse_report

        return self._cached("report", lambda: parse_report(self))  # type: ignore[no-any-return,unused-ignore]

    @property
    def identity(self) -> str:
        """What makes this message the same message after a resync: its Message-ID, else a
        digest of its bytes."""
        return message_identity(self.message_id, self.raw)

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
    """A list of messages that shows as a table in Jupyter and converts to pandas."""

    def _repr_html_(self) -> str:
        from mailsync._notebook import messages_html

        return messages_html(self)

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame`` with one row per message (needs pandas installed)."""
        from mailsync._notebook import messages_dataframe

        return messages_dataframe(self)


# -- helpers shared by backends ----------------------------------------------------------------


def message_identity(message_id: str | None, raw: bytes) -> str:
    """The identity a resync compares: ``mid:<Message-ID>``, else ``sha256:<digest>``."""
    if message_id:
        return "mid:" + message_id
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def message_identity_of_raw(raw: bytes) -> str:
    """A content-derived id for messages made from bytes."""
    return "sha256:" + hashlib.sha256(raw).hexdigest()[:32]


def header_block(raw: bytes) -> bytes:
    """The header block of a raw message, including the blank line that ends it."""
    match = _HEADER_END.search(raw)
    return raw[: match.end()] if match else raw


def as_bytes(message: StdMessage | EmailMessage | bytes | Message) -> bytes:
    """The wire bytes (CRLF line endings) of any message-like value."""
    if isinstance(message, Message):
        return message.raw
    if isinstance(message, bytes | bytearray):
        return bytes(message)
    if isinstance(message, StdMessage):
        policy = message.policy.clone(linesep="\r\n")
        return message.as_bytes(policy=policy)
    raise TypeError(f"expected bytes, an EmailMessage or a Message, not {type(message).__name__}")


def decode_header_value(value: Any) -> str:
    """Decode one header value best-effort: encoded words, unknown charsets and raw 8-bit."""
    try:
        text = str(value)
    except Exception:  # the policy's header classes can fail on broken input
        text = _fallback_decode(value)
    if "=?" in text:  # policy.default leaves encoded words it could not decode
        text = _fallback_decode(text)
    return text.replace("\r", "").replace("\n", "")


def _fallback_decode(value: Any) -> str:
    if isinstance(value, email.header.Header):
        value = str(value)
    raw = str(getattr(value, "_parse_tree", value)) if not isinstance(value, str) else value
    try:
        chunks = email.header.decode_header(raw)
    except Exception:
        return _to_text(raw)
    out = []
    for chunk, charset in chunks:
        if isinstance(chunk, bytes):
            out.append(decode_bytes(chunk, charset))
        else:
            out.append(chunk)
    return "".join(out)


def _to_text(value: Any) -> str:
    if isinstance(value, bytes):
        return decode_bytes(value, None)
    return str(value).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode bytes in ``charset``; unknown or wrong charsets fall back to UTF-8, then Latin-1."""
    for candidate in (charset, "utf-8"):
        if not candidate:
            continue
        try:
            return data.decode(_charset_alias(candidate))
        except (LookupError, UnicodeDecodeError):
            continue
    if charset:
        try:
            return data.decode(_charset_alias(charset), "replace")
        except LookupError:
            pass
    return data.decode("latin-1")


_CHARSET_ALIASES = {
    "unknown-8bit": "latin-1",
    "x-unknown": "latin-1",
    "ks_c_5601-1987": "cp949",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "iso-8859-8-i": "iso-8859-8",
    "windows-874": "cp874",
    "x-mac-roman": "mac_roman",
    "utf8": "utf-8",
}


def _charset_alias(charset: str) -> str:
    name = charset.strip().strip('"').lower()
    return _CHARSET_ALIASES.get(name, name)


def parse_addresses(values: Sequence[str]) -> tuple[Address, ...]:
    """Parse decoded address header values into :class:`Address` tuples, tolerant of junk."""
    result = []
    try:
        pairs = email.utils.getaddresses(list(values))
    except Exception:
        return ()
    for name, addr in pairs:
        if not name and not addr:
            continue
        result.append(Address(_one_line(name), addr.strip()))
    return tuple(result)


def parse_date(value: str | None) -> datetime | None:
    """An aware datetime from a Date header value, or None when it cannot be read."""
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed is None:
        return None  # type: ignore[unreachable]
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def split_body(message: StdMessage) -> tuple[str, str, tuple[Attachment, ...]]:
    """Split a parsed message into (text, html, attachments), best-effort.

    The first text/plain and the first text/html part that are not attachments are the
    bodies; every other leaf part (and every attached message) is an attachment.
    """
    text: str | None = None
    html: str | None = None
    attachments: list[Attachment] = []
    for part, in_related in _leaf_parts(message, in_related=False):
        ctype = _content_type(part)
        disposition = _disposition(part)
        filename = _filename(part)
        is_body = disposition != "attachment" and filename is None
        if is_body and ctype == "text/plain" and text is None:
            text = _part_text(part)
            continue
        if is_body and ctype == "text/html" and html is None:
            html = _part_text(part)
            continue
        content_id = _msgid(_header_text(part, "Content-ID"))
        inline = disposition == "inline" or (
            disposition != "attachment" and in_related and content_id is not None
        )
        attachments.append(
            Attachment(
                filename=filename,
                content_type=ctype,
                data=_part_bytes(part),
                content_id=content_id,
                inline=inline,
            )
        )
    return _newlines(text or ""), _newlines(html or ""), tuple(attachments)


def _leaf_parts(part: StdMessage, *, in_related: bool) -> Iterator[tuple[StdMessage, bool]]:
    if part.is_multipart() and _content_type(part).startswith("multipart/"):
        related = in_related or _content_type(part) == "multipart/related"
        payload = part.get_payload()
        if isinstance(payload, list):
            for child in payload:
                if isinstance(child, StdMessage):
                    yield from _leaf_parts(child, in_related=related)
        return
    yield part, in_related


def _content_type(part: StdMessage) -> str:
    try:
        return part.get_content_type().lower()
    except Exception:
        return "application/octet-stream"


def _disposition(part: StdMessage) -> str | None:
    try:
        value = part.get_content_disposition()
    except Exception:
        return None
    return value.lower() if value else None


def _header_text(part: StdMessage, name: str) -> str | None:
    try:
        value = part.get(name)
    except Exception:
        return None
    return None if value is None else decode_header_value(value)


def _filename(part: StdMessage) -> str | None:
    try:
        name = part.get_filename()
    except Exception:
        name = None
    if name is None:
        try:
            param: Any = part.get_param("name", header="content-type")
        except Exception:
            param = None
        name = email.utils.collapse_rfc2231_value(param) if isinstance(param, tuple) else param
    if not name:
        return None
    return _one_line(decode_header_value(name))


def _part_bytes(part: StdMessage) -> bytes:
    if _content_type(part) == "message/rfc822" or part.is_multipart():
        payload = part.get_payload()
        inner = payload[0] if isinstance(payload, list) and payload else payload
        if isinstance(inner, StdMessage):
            try:
                return as_bytes(inner)
            except Exception:
                return str(inner).encode("utf-8", "replace")
    try:
        data = part.get_payload(decode=True)
    except Exception:
        data = None
    if isinstance(data, bytes):
        return data
    payload = part.get_payload()
    if isinstance(payload, str):
        return payload.encode("utf-8", "surrogateescape")
    return b""


def _part_text(part: StdMessage) -> str:
    data = _part_bytes(part)
    try:
        charset = part.get_content_charset()
    except Exception:
        charset = None
    return decode_bytes(data, charset)


def _newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _one_line(text: str) -> str:
    return " ".join(text.split()) if ("\n" in text or "\r" in text or "\t" in text) else text


_MSGID = re.compile(r"<([^<>\s]+)>")


def _msgid(value: str | None) -> str | None:
    if not value:
        return None
    match = _MSGID.search(value)
    if match:
        return match.group(1)
    stripped = value.strip().strip("<>").strip()
    return stripped or None


def _msgids(value: str) -> list[str]:
    found = _MSGID.findall(value)
    if found:
        return found
    return [v.strip("<>") for v in value.split() if v.strip("<>")]


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
