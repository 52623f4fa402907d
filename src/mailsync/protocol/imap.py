"""Everything about IMAP that is not I/O, shared by the sync and the async IMAP backends.

This module owns:

- :func:`search_plan`: a :class:`~mailsync.Q` as IMAP SEARCH criteria (``CHARSET UTF-8`` when a
  string is not ASCII), with a flag saying whether the result is only a superset that must be
  re-checked with :meth:`Q.matches <mailsync.Q.matches>`;
- :func:`message_from_fetch`: one FETCH response's attributes as a :class:`~mailsync.Message`
  (flags, RFC822.SIZE, INTERNALDATE, Gmail's X-GM-LABELS/X-GM-THRID/X-GM-MSGID);
- flag names (:func:`normalize_flag`), modified UTF-7 folder names (:func:`encode_folder`,
  :func:`decode_folder`), LIST responses as :class:`~mailsync.Folder` with special use
  (RFC 6154, with a name-based fallback: :func:`folders_from_list`);
- UID sets (:func:`uid_set`, :func:`uid_batches`), message ids (:func:`format_message_id`,
  :func:`parse_message_id`), response codes (:func:`parse_appenduid`), what SELECT says
  (:class:`FolderStatus`).

The sync cursor and resync rules are :mod:`mailsync.protocol.imap_sync`; the FETCH response
reader, :mod:`mailsync.protocol.imap_literals`.

It must not do I/O, import a network library, or know which client library drives it: values
come in as ``bytes``/``str``/``int`` in the shapes imapclient returns (mapping keys are upper-case
``bytes`` such as ``b"RFC822.SIZE"``), the shape :mod:`mailsync.protocol.imap_literals` produces
from raw response text for backends that read the wire themselves.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, TypeAlias

from mailsync._errors import ConfigError, MessageNotFound, ProtocolError
from mailsync._message import Folder, Message
from mailsync._query import Q, as_datetime

__all__ = [
    "BODY_KEYS",
    "FETCH_BODY",
    "FETCH_GMAIL",
    "FETCH_HEADERS",
    "Criterion",
    "FolderStatus",
    "GmailRef",
    "MessageRef",
    "SearchPlan",
    "UIDRef",
    "capability_code",
    "decode_folder",
    "encode_folder",
    "folder_from_list",
    "folders_from_list",
    "format_message_id",
    "imap_date",
    "message_from_fetch",
    "normalize_flag",
    "normalize_flags",
    "parse_appenduid",
    "parse_internaldate",
    "parse_message_id",
    "quote",
    "render_criteria",
    "search_plan",
    "search_uids",
    "special_use_by_name",
    "store_flags",
    "uid_batches",
    "uid_set",
]

#: FETCH items for whole messages; BODY.PEEK so that reading never sets ``\Seen``.
FETCH_BODY = "UID FLAGS RFC822.SIZE INTERNALDATE BODY.PEEK[]"
#: FETCH items for ``headers_only``.
FETCH_HEADERS = "UID FLAGS RFC822.SIZE INTERNALDATE BODY.PEEK[HEADER]"
#: Extra FETCH items when the server offers X-GM-EXT-1 (Gmail).
FETCH_GMAIL = "X-GM-LABELS X-GM-THRID X-GM-MSGID"
#: The keys a server answers BODY.PEEK[...] with, whole message first.
BODY_KEYS = (b"BODY[]", b"BODY[HEADER]", b"RFC822", b"RFC822.HEADER")

# -- flags ------------------------------------------------------------------------------------

_SYSTEM_FLAGS = {
    f.lower(): f for f in ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", "\\Recent")
}
_ATOM_SPECIALS = re.compile(r'[\x00-\x20\x7f(){%*"\]]')


def normalize_flag(flag: bytes | str) -> str:
    """One flag in mailsync's spelling: system flags in their RFC 3501 case (``\\Seen``), keywords
    as the server sent them (``$Forwarded``, ``Junk``)."""
    text = flag.decode("utf-8", "replace") if isinstance(flag, bytes) else flag
    return _SYSTEM_FLAGS.get(text.lower(), text)


def normalize_flags(flags: Iterable[bytes | str]) -> frozenset[str]:
    """A FETCH FLAGS list in mailsync's spelling, without ``\\Recent`` (a session flag that
    says nothing about the message)."""
    return frozenset(normalize_flag(f) for f in flags) - {"\\Recent"}


def store_flags(flags: Iterable[str]) -> list[str]:
    """Flags for STORE/APPEND: system flags in canonical case, keywords checked to be atoms.

    Raises:
        ValueError: A flag that IMAP cannot carry (space, parenthesis, quote...).
    """
    out = []
    for flag in flags:
        name = normalize_flag(flag)
        body = name[1:] if name.startswith("\\") else name
        if not body or _ATOM_SPECIALS.search(body) or not body.isascii():
            raise ValueError(f"{flag!r} is not a valid IMAP flag")
        if name.lower() == "\\recent":
            raise ValueError("\\Recent cannot be set by a client")
        out.append(name)
    return out


# -- folder names -----------------------------------------------------------------------------


def encode_folder(name: str) -> str:
    """A folder name in IMAP's modified UTF-7 (RFC 3501 §5.1.3), ready to quote.

    Uses imapclient's encoder, which is correct for the whole of Unicode (astral characters go
    through UTF-16 surrogate pairs as the RFC says) and escapes ``&`` as ``&-``. Printable
    ASCII other than ``&`` stands for itself, so the common names never import imapclient
    (whose import costs more than a whole incremental ``sync()`` on a local server).
    """
    if name.isascii() and name.isprintable() and "&" not in name:
        return name
    from imapclient import imap_utf7

    return imap_utf7.encode(name).decode("ascii")  # type: ignore[no-any-return]


def decode_folder(raw: bytes | str) -> str:
    """A folder name from the wire: modified UTF-7, or UTF-8 from servers that send it raw
    (``UTF8=ACCEPT``), which imapclient's decoder would garble."""
    data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else bytes(raw)
    if not data.isascii():
        return data.decode("utf-8", "replace")
    if b"&" not in data:
        return data.decode("ascii")
    from imapclient import imap_utf7

    try:
        return imap_utf7.decode(data)  # type: ignore[no-any-return]
    except (UnicodeDecodeError, ValueError):
        return data.decode("ascii")  # not valid modified UTF-7: show it as sent


def quote(value: str | bytes) -> bytes:
    """An IMAP quoted string (backslash and double quote escaped).

    Raises:
        ConfigError: The value holds CR, LF or NUL. A quoted string cannot carry them
            (RFC 3501 section 4.3), and a line break would end the command line and let the
            rest run as a command of its own.
    """
    data = value.encode("utf-8") if isinstance(value, str) else value
    if b"\r" in data or b"\n" in data or b"\0" in data:
        raise ConfigError(f"IMAP strings cannot contain a line break or NUL: {value!r}")
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


# -- LIST -------------------------------------------------------------------------------------

_SPECIAL_USE = ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash")
_SPECIAL_BY_LOWER = {flag.lower(): flag for flag in _SPECIAL_USE}
# XLIST-era and provider spellings of the same attributes.
_SPECIAL_BY_LOWER.update({"\\allmail": "\\All", "\\spam": "\\Junk", "\\starred": "\\Flagged"})
_SPECIAL_BY_NAME = {
    "sent": "\\Sent",
    "sent items": "\\Sent",
    "sent messages": "\\Sent",
    "sent mail": "\\Sent",
    "trash": "\\Trash",
    "deleted items": "\\Trash",
    "deleted messages": "\\Trash",
    "bin": "\\Trash",
    "drafts": "\\Drafts",
    "draft": "\\Drafts",
    "junk": "\\Junk",
    "junk e-mail": "\\Junk",
    "junk email": "\\Junk",
    "spam": "\\Junk",
    "bulk mail": "\\Junk",
    "archive": "\\Archive",
    "archives": "\\Archive",
    "all mail": "\\All",
    "starred": "\\Flagged",
}


def special_use_by_name(name: str, delimiter: str | None = None) -> str | None:
    """The special use a folder's (last) name suggests, for servers without RFC 6154."""
    leaf = name.rsplit(delimiter, 1)[-1] if delimiter else name
    return _SPECIAL_BY_NAME.get(leaf.strip().lower())


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def folder_from_list(
    flags: Iterable[bytes | str], delimiter: bytes | str | None, name: bytes | str
) -> Folder:
    """One LIST response (attributes, delimiter, encoded name) as a :class:`Folder` with its
    RFC 6154 special use (None when the server gives none; see :func:`folders_from_list`)."""
    attributes = frozenset(_text(f) for f in flags)
    special = next(
        (_SPECIAL_BY_LOWER[a.lower()] for a in attributes if a.lower() in _SPECIAL_BY_LOWER), None
    )
    others = frozenset(a for a in attributes if a.lower() not in _SPECIAL_BY_LOWER)
    delim = _text(delimiter) if delimiter else None
    folder = decode_folder(name)
    if folder.upper() == "INBOX":
        folder = "INBOX"
    return Folder(folder, delimiter=delim, special_use=special, flags=others)


def folders_from_list(
    entries: Iterable[tuple[Iterable[bytes | str], bytes | str | None, bytes | str]],
) -> list[Folder]:
    """Every LIST entry ``(flags, delimiter, name)`` as a :class:`Folder`.

    When no folder carries an RFC 6154 attribute (a server without SPECIAL-USE), the usual
    names (``Sent``, ``Sent Items``, ``Trash``, ``Deleted Items``, ``Junk``, ``Spam`` ...) stand
    in; when the server marks any folder, its word is final.
    """
    folders = [folder_from_list(*entry) for entry in entries]
    if any(f.special_use for f in folders):
        return folders
    out = []
    for folder in folders:
        guess = (
            None if folder.name == "INBOX" else special_use_by_name(folder.name, folder.delimiter)
        )
        out.append(Folder(folder.name, folder.delimiter, guess, folder.flags) if guess else folder)
    return out


# -- SEARCH -----------------------------------------------------------------------------------

#: One SEARCH criteria item: ``bytes`` is an atom sent as is (keyword, number, date), ``str``
#: a string argument to quote (or send as a literal), a list a parenthesised group.
Criterion: TypeAlias = "bytes | str | list[Criterion]"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True)
class SearchPlan:
    """How to ask the server for a :class:`Q`.

    Attributes:
        criteria: SEARCH criteria in imapclient's list form (see :data:`Criterion`); pass to
            ``IMAPClient.search(criteria, charset)`` or render with :func:`render_criteria`.
        charset: ``"UTF-8"`` when a string is not ASCII, else None (US-ASCII).
        exact: True when the server's answer is exactly the query's messages; False when it is
            a superset that must be filtered with :meth:`Q.matches`.
    """

    criteria: list[Criterion]
    charset: str | None
    exact: bool


def imap_date(day: date) -> bytes:
    """A SEARCH date (``1-Feb-2026``), independent of the locale."""
    return f"{day.day}-{_MONTHS[day.month - 1]}-{day.year}".encode("ascii")


def search_plan(query: Q | None) -> SearchPlan:
    """Translate a query to SEARCH criteria that return at least the messages it matches.

    What SEARCH says exactly: ``seen``, ``flagged`` (SEEN/UNSEEN, FLAGGED/UNFLAGGED),
    ``larger``/``smaller`` (LARGER/SMALLER, the same RFC822.SIZE the message reports). What it
    only narrows, so the result is re-checked client-side: ``from_``/``to``/``subject``/``text``
    (the server's substring matching and MIME decoding are its own, and FROM/TO also see the
    raw header), and ``since``/``before`` (SENTSINCE/SENTBEFORE compare whole days of the Date
    header in its own time zone, so the window is widened by the largest zone offsets; and
    since a message without a readable Date header is dated by its arrival, each is ORed with
    SINCE/BEFORE on the arrival date, which is all servers such as Dovecot compare then). A ``~``
    over an inexact part cannot be sent (its complement is not a superset) and is left to the
    client; so is an ``|`` with such a branch.
    """
    if query is None:
        return SearchPlan([b"ALL"], None, True)
    criteria, exact = _translate(query)
    if not criteria:
        criteria = [b"ALL"]
    charset = (
        "UTF-8" if any(isinstance(c, str) and not c.isascii() for c in _flat(criteria)) else None
    )
    return SearchPlan(criteria, charset, exact)


def _flat(criteria: Sequence[Criterion]) -> Iterator[bytes | str]:
    for item in criteria:
        if isinstance(item, list):
            yield from _flat(item)
        else:
            yield item


def _translate(query: Q) -> tuple[list[Criterion], bool]:
    """Criteria for a superset of ``query`` (an empty list means ALL) and whether exact."""
    if query.op == "and":
        out: list[Criterion] = []
        exact = True
        for child in query.children:
            criteria, child_exact = _translate(child)
            out.extend(criteria)
            exact = exact and child_exact
        return out, exact
    if query.op == "or":
        return _translate_or(query.children)
    if query.op == "not":
        criteria, exact = _translate(query.children[0])
        if not exact or not criteria:
            return [], False  # NOT of a superset would be a subset: filter client-side
        return [b"NOT", _group(criteria)], True
    return _translate_leaf(query)


def _translate_or(children: Sequence[Q]) -> tuple[list[Criterion], bool]:
    parts = [_translate(child) for child in children]
    if any(not criteria for criteria, _ in parts):
        return [], False  # one branch matches everything: the OR does too
    exact = all(child_exact for _, child_exact in parts)
    result = _group(parts[-1][0])
    for criteria, _ in reversed(parts[:-1]):
        result = [b"OR", _group(criteria), result]
    return (result if isinstance(result, list) else [result]), exact


def _group(criteria: list[Criterion]) -> Criterion:
    """One search key: a lone key as is, several in parentheses."""
    if len(criteria) == 1:
        return criteria[0]
    if len(criteria) == 3 and criteria[0] == b"OR":
        return criteria  # already one key, flattened by _translate_or
    if len(criteria) == 2 and criteria[0] == b"NOT":
        return criteria
    return list(criteria)


_LEAF_STRINGS = {"from_": b"FROM", "to": b"TO", "subject": b"SUBJECT", "text": b"TEXT"}


def _translate_leaf(query: Q) -> tuple[list[Criterion], bool]:
    out: list[Criterion] = []
    exact = True
    for name, value in query.criteria().items():
        if name in ("seen", "flagged"):
            keyword = name.upper().encode()
            out.append(keyword if value else b"UN" + keyword)
        elif name in ("larger", "smaller"):
            out.extend([name.upper().encode(), str(max(value, 0)).encode()])
        elif name in _LEAF_STRINGS:
            quote(value)  # refuses line breaks: imapclient would send them raw
            out.extend([_LEAF_STRINGS[name], value])
            exact = False
        elif name == "since":
            # The Date header's own day can be up to a day behind UTC (zones down to -12:00).
            day = imap_date(as_datetime(value).date() - timedelta(days=1))
            out.extend([b"OR", [b"SENTSINCE", day], [b"SINCE", day]])
            exact = False
        elif name == "before":
            # ... and up to a day ahead (zones up to +14:00); SENTBEFORE excludes the day given.
            day = imap_date(as_datetime(value).date() + timedelta(days=2))
            out.extend([b"OR", [b"SENTBEFORE", day], [b"BEFORE", day]])
            exact = False
    return out, exact


def render_criteria(criteria: Sequence[Criterion], *, literal_plus: bool = False) -> bytes:
    """SEARCH criteria as one command-line fragment, for clients that send raw commands.

    Strings are quoted; with ``literal_plus`` (the server offers LITERAL+), 8-bit strings are
    sent as non-synchronising literals (``{n+}``), otherwise as quoted UTF-8, which servers
    accept after ``CHARSET UTF-8``.
    """
    parts = []
    for item in criteria:
        if isinstance(item, list):
            parts.append(b"(" + render_criteria(item, literal_plus=literal_plus) + b")")
        elif isinstance(item, bytes):
            parts.append(item)
        else:
            data = item.encode("utf-8")
            if literal_plus and not data.isascii():
                parts.append(b"{%d+}\r\n" % len(data) + data)
            else:
                parts.append(quote(data))
    return b" ".join(parts)


def search_uids(lines: Iterable[bytes | bytearray | None]) -> list[int]:
    """The UIDs of ``SEARCH`` responses, ascending and without repeats.

    Each line may still start with ``SEARCH`` (aioimaplib) or hold just the numbers (imaplib);
    a CONDSTORE ``(MODSEQ n)`` tail is ignored.
    """
    uids: set[int] = set()
    for line in lines:
        if line:
            words = bytes(line).split(b"(", 1)[0].split()
            uids.update(int(word) for word in words if word.isdigit())
    return sorted(uids)


_CAPABILITY_CODE = re.compile(rb"\[CAPABILITY ([^\]]*)\]", re.IGNORECASE)


def capability_code(text: bytes | str | None) -> frozenset[bytes] | None:
    """The capabilities in a ``[CAPABILITY ...]`` response code (servers send one with the
    greeting or the login reply, sparing a CAPABILITY round trip), upper-cased; None if the
    text has none."""
    if not text:
        return None
    data = text.encode("utf-8", "replace") if isinstance(text, str) else bytes(text)
    match = _CAPABILITY_CODE.search(data)
    if match is None:
        return None
    return frozenset(word.upper() for word in match.group(1).split())


# -- UID sets ---------------------------------------------------------------------------------


def uid_set(uids: Iterable[int]) -> str:
    """A compact IMAP sequence set: ``[1, 2, 3, 7, 9, 10]`` -> ``"1:3,7,9:10"``."""
    ordered = sorted(set(uids))
    if not ordered:
        raise ValueError("an IMAP UID set cannot be empty")
    ranges = []
    start = prev = ordered[0]
    for uid in ordered[1:]:
        if uid == prev + 1:
            prev = uid
            continue
        ranges.append(f"{start}:{prev}" if prev != start else str(start))
        start = prev = uid
    ranges.append(f"{start}:{prev}" if prev != start else str(start))
    return ",".join(ranges)


def uid_batches(uids: Sequence[int], size: int = 500) -> Iterator[list[int]]:
    """Ascending UIDs in bounded batches, so no FETCH asks for more than ``size`` messages."""
    if size < 1:
        raise ValueError("batch size must be positive")
    ordered = sorted(uids)
    for start in range(0, len(ordered), size):
        yield ordered[start : start + size]


# -- message ids ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UIDRef:
    """A message named by folder, UIDVALIDITY and UID."""

    folder: str
    uidvalidity: int
    uid: int


@dataclass(frozen=True, slots=True)
class GmailRef:
    """A Gmail message named by its X-GM-MSGID (stable across labels and folders)."""

    msgid: int


MessageRef: TypeAlias = UIDRef | GmailRef
_GMAIL_PREFIX = "gmail"


def format_message_id(folder: str, uidvalidity: int, uid: int, gm_msgid: int | None = None) -> str:
    """A message's :attr:`Message.id`: ``"<folder>;<uidvalidity>;<uid>"``, or
    ``"gmail;<X-GM-MSGID>"`` where Gmail gives one.

    The folder name comes first and is not escaped: the two numbers are taken from the right,
    so a folder may contain any character, ``;`` included.
    """
    if gm_msgid is not None:
        return f"{_GMAIL_PREFIX};{gm_msgid}"
    return f"{folder};{uidvalidity};{uid}"


def parse_message_id(message_id: str) -> MessageRef:
    """The reference a :func:`format_message_id` string names.

    Raises:
        MessageNotFound: The string is not an IMAP message id.
    """
    head, sep, tail = message_id.rpartition(";")
    if sep and head == _GMAIL_PREFIX and tail.isdigit() and tail.isascii():
        return GmailRef(int(tail))
    parts = message_id.rsplit(";", 2)
    if len(parts) == 3 and all(p.isascii() and p.isdigit() for p in parts[1:]) and parts[0]:
        folder = "INBOX" if parts[0].upper() == "INBOX" else parts[0]
        return UIDRef(folder, int(parts[1]), int(parts[2]))
    raise MessageNotFound(f"{message_id!r} is not an IMAP message id")


_APPENDUID = re.compile(rb"\[APPENDUID (\d+) (\d+)\]", re.IGNORECASE)


def parse_appenduid(text: bytes | str) -> tuple[int, int] | None:
    """``(uidvalidity, uid)`` from an APPEND response's ``[APPENDUID v u]`` code (UIDPLUS)."""
    data = text.encode() if isinstance(text, str) else text
    match = _APPENDUID.search(data)
    return (int(match.group(1)), int(match.group(2))) if match else None


# -- FETCH ------------------------------------------------------------------------------------

_INTERNALDATE = re.compile(
    r"\s*(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})\s*"
)
_MONTH_NUMBERS = {m.lower(): i + 1 for i, m in enumerate(_MONTHS)}


def parse_internaldate(value: bytes | str | datetime | None) -> datetime | None:
    """An aware datetime from INTERNALDATE (``"17-Jul-1996 02:44:25 -0700"``); None if
    unreadable. A datetime (as imapclient gives) passes through, naive ones taken as UTC."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    return _internaldate(text)


@functools.lru_cache(maxsize=1024)
def _internaldate(text: str) -> datetime | None:
    # Cached: messages appended or delivered together share their second, and a bulk FETCH
    # parses one INTERNALDATE per message.
    match = _INTERNALDATE.fullmatch(text)
    if match is None:
        return None
    day, month, year, hh, mm, ss, sign, oh, om = match.groups()
    month_number = _MONTH_NUMBERS.get(month.lower())
    if month_number is None:
        return None
    offset = timedelta(hours=int(oh), minutes=int(om)) * (-1 if sign == "-" else 1)
    try:
        return datetime(
            int(year), month_number, int(day), int(hh), int(mm), int(ss), tzinfo=timezone(offset)
        )
    except ValueError:
        return None


def _body_of(attributes: Mapping[bytes, Any]) -> tuple[bytes, bool]:
    for key in BODY_KEYS:
        value = attributes.get(key)
        if value is not None:
            return bytes(value), key in (b"BODY[HEADER]", b"RFC822.HEADER")
    for key, value in attributes.items():  # BODY[HEADER.FIELDS (...)] and other sections
        if key.startswith(b"BODY[") and isinstance(value, bytes | bytearray):
            return bytes(value), True
    raise ProtocolError("the FETCH response has no message body")


def _int_or_none(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"expected a number in the FETCH response, got {value!r}") from exc


def message_from_fetch(
    attributes: Mapping[bytes, Any],
    *,
    folder: str,
    uidvalidity: int,
    uid: int | None = None,
) -> Message:
    """A :class:`Message` from one FETCH response's attributes.

    Args:
        attributes: Upper-case ``bytes`` keys as imapclient returns them (``b"UID"``,
            ``b"FLAGS"``, ``b"RFC822.SIZE"``, ``b"INTERNALDATE"``, ``b"BODY[]"`` or
            ``b"BODY[HEADER]"``, ``b"X-GM-LABELS"``, ``b"X-GM-THRID"``, ``b"X-GM-MSGID"``).
        folder: The folder the message was fetched from (decoded name).
        uidvalidity: The folder's UIDVALIDITY, part of the id.
        uid: The UID when it is not among the attributes (imapclient keys the result by it).

    Raises:
        ProtocolError: No UID or no body in the response.
    """
    uid = _int_or_none(attributes.get(b"UID", uid))
    if uid is None:
        raise ProtocolError("the FETCH response has no UID")
    raw, headers_only = _body_of(attributes)
    size = _int_or_none(attributes.get(b"RFC822.SIZE"))
    gm_msgid = _int_or_none(attributes.get(b"X-GM-MSGID"))
    thread = _int_or_none(attributes.get(b"X-GM-THRID"))
    labels = attributes.get(b"X-GM-LABELS") or ()
    return Message(
        raw,
        id=format_message_id(folder, uidvalidity, uid, gm_msgid),
        folder=folder,
        uid=uid,
        flags=normalize_flags(attributes.get(b"FLAGS") or ()),
        size=size if size is not None else len(raw),
        labels=[decode_folder(label) for label in labels],
        thread_id=str(thread) if thread is not None else None,
        headers_only=headers_only,
        internal_date=parse_internaldate(attributes.get(b"INTERNALDATE")),
    )


# -- SELECT ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FolderStatus:
    """What SELECT/EXAMINE (or STATUS) said about a folder.

    Attributes:
        uidvalidity: UIDVALIDITY; when it changes, every old UID is meaningless.
        uidnext: The UID the next message will get (0 when the server did not say).
        exists: The number of messages.
        highestmodseq: HIGHESTMODSEQ where CONDSTORE is offered, else None.
    """

    uidvalidity: int
    uidnext: int = 0
    exists: int = 0
    highestmodseq: int | None = None

    @classmethod
    def from_select(cls, response: Mapping[bytes, Any]) -> FolderStatus:
        """From imapclient's ``select_folder`` dict (``b"UIDVALIDITY"``, ``b"UIDNEXT"`` ...).

        Raises:
            ProtocolError: No UIDVALIDITY (required by RFC 3501).
        """
        uidvalidity = response.get(b"UIDVALIDITY")
        if uidvalidity is None:
            raise ProtocolError("the server did not send UIDVALIDITY on SELECT")
        modseq = response.get(b"HIGHESTMODSEQ")
        return cls(
            uidvalidity=int(uidvalidity),
            uidnext=int(response.get(b"UIDNEXT") or 0),
            exists=int(response.get(b"EXISTS") or 0),
            highestmodseq=int(modseq) if modseq is not None else None,
        )
