"""What the Gmail API's resources mean in mailsync terms: its error replies
(:class:`GmailDialect`), labels as folders and flags (:class:`GmailLabel`), ``Q`` as a Gmail
search (exact where Gmail's search is, a superset checked client-side where not), raw and
header-only message payloads, id lists, history records as sync cursors, and the endpoint's
user and upload URLs.

Pure functions over Gmail's JSON, beside :mod:`mailsync.protocol.gmail` (the plans that talk);
no I/O.
"""

from __future__ import annotations

import base64
import binascii
import re
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from mailsync._config import Endpoint
from mailsync._errors import (
    MailsyncError,
    MessageNotFound,
    ProtocolError,
    RateLimited,
    ServerError,
    Unsupported,
)
from mailsync._message import Folder, Message
from mailsync._query import Q, decide
from mailsync.protocol.http import (
    Dialect,
    ErrorBody,
    Request,
    Response,
    field_of,
    optional_field,
)

__all__ = [
    "API_ROOT",
    "BINS",
    "HEADER_CRITERIA",
    "IDENTITY",
    "INBOX_LABEL",
    "MAX_BATCH_IDS",
    "NAME",
    "PAGE_SIZE",
    "PREFILTER_HEADERS",
    "SERVER_ERRORS",
    "SPECIAL_USE",
    "GmailDialect",
    "GmailLabel",
    "IdList",
    "criteria_used",
    "decode_raw",
    "find_label",
    "flags_of",
    "folder_of",
    "folder_order",
    "header_block_from",
    "history_additions",
    "history_start",
    "home_folder",
    "id_batches",
    "in_folder",
    "internal_date",
    "judge_headers",
    "label_changes",
    "label_ids_of",
    "native_query",
    "upload_root",
    "user_id",
]

NAME = "Gmail API"
#: The API root Google documents; ``base_url`` replaces it.
API_ROOT = "https://gmail.googleapis.com/gmail/v1"
#: How a message delivered by ``sync()`` is remembered in the state store.
IDENTITY = "gmail:"
#: Gmail pages at most this many ids or history records.
PAGE_SIZE = "500"
#: batchModify and batchDelete take at most this many ids.
MAX_BATCH_IDS = 1000
SPECIAL_USE: Mapping[str, str] = {
    "SENT": "\\Sent",
    "TRASH": "\\Trash",
    "DRAFT": "\\Drafts",
    "SPAM": "\\Junk",
    "STARRED": "\\Flagged",
}
#: Labels that take a message out of every other folder.
BINS = frozenset({"TRASH", "SPAM"})
#: 403 reasons that mean "slow down" (retried) and "the day's quota is spent" (not retried).
_RATE_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
_QUOTA_REASONS = frozenset({"dailyLimitExceeded", "quotaExceeded"})
SERVER_ERRORS = (500, 502, 503, 504)
#: System labels that say something about a message rather than where it is.
_STATES = frozenset({"UNREAD", "STARRED", "IMPORTANT"})
#: What a header-only view of a message cannot judge: the body, and the exact size (Gmail's
#: sizeEstimate is an estimate).
_NOT_IN_HEADERS = frozenset({"text", "larger", "smaller"})
HEADER_CRITERIA = frozenset({"from_", "to", "subject", "since", "before"})
PREFILTER_HEADERS = ("From", "To", "Subject", "Date")


class GmailDialect(Dialect):
    """How Google says what went wrong: ``{"error": {"code", "message", "errors": [{"reason"}],
    "status"}}``; a 403 with a rate-limit reason is a rate limit, not a refusal."""

    name = NAME

    def is_rate_limit(self, response: Response, body: ErrorBody) -> bool:
        """429, or 403 with ``rateLimitExceeded``/``userRateLimitExceeded``."""
        if response.status == 429:
            return True
        return response.status == 403 and not _RATE_REASONS.isdisjoint(body.reasons)

    def error(
        self,
        request: Request,
        response: Response,
        body: ErrorBody,
        *,
        not_found: type[ServerError] = MessageNotFound,
    ) -> MailsyncError:
        """The mailsync error; a spent daily quota is :class:`~mailsync.RateLimited`."""
        if response.status == 403 and not _QUOTA_REASONS.isdisjoint(body.reasons):
            detail = f"{NAME}: {request.label}: the project's daily quota is used up"
            if body.message:
                detail += f" ({body.message})"
            return RateLimited(detail, retry_after=None, code=body.code or response.status)
        return super().error(request, response, body, not_found=not_found)


@dataclass(frozen=True, slots=True)
class GmailLabel:
    """A label as ``labels.list`` describes it.

    Attributes:
        id: The immutable id (``INBOX``, ``Label_12``).
        name: The display name, the folder name (``Work/2024``).
        type: ``system`` or ``user``.
    """

    id: str
    name: str
    type: str = "user"


INBOX_LABEL = GmailLabel("INBOX", "INBOX", "system")


def folder_of(label: GmailLabel) -> Folder:
    """The :class:`~mailsync.Folder` a label is."""
    return Folder(label.name, "/", SPECIAL_USE.get(label.id) if label.type == "system" else None)


def find_label(labels: Mapping[str, GmailLabel], folder: str) -> GmailLabel | None:
    """The label a folder name means: ``INBOX`` in any case, a label name (exactly, else
    case-insensitively, as Gmail keeps names unique regardless of case), or a label id."""
    if folder.upper() == "INBOX":
        return labels.get("INBOX", INBOX_LABEL)
    by_name = [label for label in labels.values() if label.name == folder]
    if not by_name:
        wanted = folder.casefold()
        by_name = [label for label in labels.values() if label.name.casefold() == wanted]
    if by_name:
        return by_name[0]
    return labels.get(folder)


def in_folder(label_ids: Iterable[str], label: str) -> bool:
    """Whether a message with these labels is in the folder: it has the label, and it is not
    in the trash or spam unless that is the folder."""
    ids = set(label_ids)
    return label in ids and (label in BINS or ids.isdisjoint(BINS))


def flags_of(label_ids: Iterable[str]) -> frozenset[str]:
    """The IMAP-spelled flags of a message with these labels."""
    ids = set(label_ids)
    flags = set()
    if "UNREAD" not in ids:
        flags.add("\\Seen")
    if "STARRED" in ids:
        flags.add("\\Flagged")
    if "DRAFT" in ids:
        flags.add("\\Draft")
    return frozenset(flags)


_FLAG_LABELS = {"\\seen": ("UNREAD", True), "\\flagged": ("STARRED", False)}


def label_changes(add: Iterable[str], remove: Iterable[str]) -> tuple[list[str], list[str]]:
    """The ``(addLabelIds, removeLabelIds)`` that add and remove these flags.

    Raises:
        Unsupported: A flag Gmail has no label for (``\\Answered``, ``\\Draft``, keywords).
    """
    labels: tuple[list[str], list[str]] = ([], [])
    for adding, flags in ((True, add), (False, remove)):
        for flag in flags:
            known = _FLAG_LABELS.get(flag.lower())
            if known is None:
                raise Unsupported(
                    f"{NAME}: the flag {flag!r} has no Gmail label (only \\Seen and \\Flagged)"
                )
            label, inverted = known
            # Adding \\Seen takes UNREAD away.
            chosen = labels[0] if adding != inverted else labels[1]
            if label not in chosen:
                chosen.append(label)
    return labels


_FLAG_TERMS = {"seen": ("-is:unread", "is:unread"), "flagged": ("is:starred", "-is:starred")}


def native_query(query: Q | None) -> tuple[str, bool]:
    """Gmail's ``q`` for a :class:`~mailsync.Q`: the narrowest search whose answer holds every
    matching message (an empty string narrows nothing), and whether it is exact."""
    if query is None:
        return "", True
    exact = _translate(query, positive=True, exact=True)
    if exact is not None:
        return exact, True
    return _translate(query, positive=True, exact=False) or "", False


def _translate(query: Q, *, positive: bool, exact: bool) -> str | None:
    """``query`` (or its negation) in Gmail's syntax, negations pushed down to the flag terms.

    With ``exact``, None when it cannot be said exactly; otherwise a superset, where ``""``
    means "everything" (a criterion that cannot be said is dropped from an "and", and makes
    an "or" match everything).
    """
    if query.op == "not":
        return _translate(query.children[0], positive=not positive, exact=exact)
    if query.op == "leaf":
        criteria = query.criteria()
        terms = [
            _FLAG_TERMS[k][0 if v == positive else 1]
            for k, v in criteria.items()
            if k in _FLAG_TERMS
        ]
        unsayable = len(terms) < len(criteria) or not criteria
        if unsayable and (exact or not positive):  # "not (a and <unsayable>)": anything
            return None if exact else ""
        parts, conjunction = terms, positive
    else:
        conjunction = (query.op == "and") == positive
        translated = [_translate(c, positive=positive, exact=exact) for c in query.children]
        if exact and any(part is None for part in translated):
            return None
        parts = [part for part in translated if part]
        if not conjunction and len(parts) < len(translated):
            return None if exact else ""  # one side of the "or" matches anything
    if len(parts) <= 1:
        return parts[0] if parts else ""
    return "(" + (" " if conjunction else " OR ").join(parts) + ")"


def criteria_used(query: Q) -> set[str]:
    return {name for node in query.walk() for name in node.criteria()}


def decode_raw(value: str, what: str) -> bytes:
    """A ``raw`` field's bytes (base64url, padded or not).

    Raises:
        ProtocolError: Not base64url.
    """
    try:
        return base64.b64decode(value + "=" * (-len(value) % 4), altchars=b"-_", validate=True)
    except (ValueError, binascii.Error) as exc:
        raise ProtocolError(f"{NAME}: {what}: the raw message is not base64url ({exc})") from exc


_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def header_block_from(payload: Any, what: str) -> bytes:
    """The header block a ``format=metadata`` payload describes, as wire bytes.

    Raises:
        ProtocolError: The payload has no list of ``{name, value}`` headers.
    """
    headers = field_of(payload, "headers", list, what, name=NAME) if payload else []
    lines = []
    for header in headers:
        name = field_of(header, "name", str, what, name=NAME)
        value = field_of(header, "value", str, what, name=NAME)
        # Keep a folded value folded; a bare line break must not start a header of its own.
        lines.append(
            f"{name}: " + _LINE_BREAK.sub("\r\n ", value).replace("\r\n  ", "\r\n ") + "\r\n"
        )
    return ("".join(lines) + "\r\n").encode("utf-8", "replace")


def internal_date(data: Mapping[str, Any], what: str) -> datetime | None:
    value = optional_field(data, "internalDate", str, what, name=NAME)
    if value is None or not value.isdigit():
        return None
    try:
        return datetime.fromtimestamp(int(value) / 1000, UTC)
    except (OverflowError, ValueError, OSError):
        return None


def label_ids_of(data: Mapping[str, Any], what: str) -> list[str]:
    ids = optional_field(data, "labelIds", list, what, name=NAME) or []
    if not all(isinstance(item, str) for item in ids):
        raise ProtocolError(f"{NAME}: {what}: labelIds holds something other than strings")
    return ids


class IdList:
    """Message ids in the order a listing gave them, held compactly: Gmail's ids are hex
    numbers of at most 16 digits, kept as 8-byte integers (a 100,000-message label costs
    800 KB, not the 7 MB the strings would), with a plain list for any other shape."""

    _HEX = re.compile(r"[1-9a-f][0-9a-f]{0,15}")

    def __init__(self) -> None:
        self._packed = array("Q")
        self._plain: list[str] | None = None

    def append(self, id: str) -> None:
        """Add the next id."""
        if self._plain is None:
            if self._HEX.fullmatch(id):
                self._packed.append(int(id, 16))
                return
            self._plain = [format(value, "x") for value in self._packed]
            self._packed = array("Q")
        self._plain.append(id)

    def __len__(self) -> int:
        return len(self._plain) if self._plain is not None else len(self._packed)

    def reversed(self) -> Iterator[str]:
        """The ids last to first (a newest-first listing, oldest first)."""
        if self._plain is not None:
            yield from reversed(self._plain)
            return
        for value in reversed(self._packed):
            yield format(value, "x")


def id_batches(ids: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for id in ids:
        batch.append(id)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def history_start(cursor: Mapping[str, Any] | None) -> str | None:
    """The history id to continue from, or None when a full pass is due (first sync, an
    interrupted resync, a cursor that is not ours)."""
    if not isinstance(cursor, Mapping) or cursor.get("resync"):
        return None
    value = cursor.get("historyId")
    return value if isinstance(value, str) and value.isdigit() else None


def history_additions(data: Any, label: str, position: str) -> tuple[list[tuple[str, str]], str]:
    """The messages a ``history.list`` page adds to the folder ``label``: ``(message id,
    history id before its record)`` in history order, each id once; and the id of the page's
    last record (``position`` if it has none).

    Raises:
        ProtocolError: The page is not a ListHistoryResponse.
    """
    what = "list history"
    added: dict[str, str] = {}
    for record in optional_field(data, "history", list, what, name=NAME) or []:
        record_id = field_of(record, "id", str, what, name=NAME)
        for item in optional_field(record, "messagesAdded", list, what, name=NAME) or []:
            message = field_of(item, "message", dict, what, name=NAME)
            labels = optional_field(message, "labelIds", list, what, name=NAME)
            if labels is None or label in labels:
                added.setdefault(field_of(message, "id", str, what, name=NAME), position)
        for item in optional_field(record, "labelsAdded", list, what, name=NAME) or []:
            if label in (optional_field(item, "labelIds", list, what, name=NAME) or []):
                message = field_of(item, "message", dict, what, name=NAME)
                added.setdefault(field_of(message, "id", str, what, name=NAME), position)
        position = record_id
    return list(added.items()), position


def user_id(endpoint: Endpoint) -> str:
    """The ``userId`` of ``gmail://me`` (``me``) or ``gmail://alice@example.com``."""
    if endpoint.username:
        return f"{endpoint.username}@{endpoint.host}" if endpoint.host else endpoint.username
    return endpoint.host or "me"


def upload_root(base_url: str) -> str:
    """Where Google takes uploads for an API root: ``/upload`` before the path
    (``https://gmail.googleapis.com/upload/gmail/v1``)."""
    parts = urlsplit(base_url.rstrip("/"))
    return f"{parts.scheme}://{parts.netloc}/upload{parts.path}"


_FIRST = ("INBOX", "SENT", "DRAFT", "STARRED", "IMPORTANT", "SPAM", "TRASH")


def folder_order(label: GmailLabel) -> tuple[int, int, str]:
    """INBOX and the well-known system labels in Gmail's order, then the other system
    labels, then the user's labels by name."""
    if label.type == "system" and label.id in _FIRST:
        return 0, _FIRST.index(label.id), ""
    return (1 if label.type == "system" else 2), 0, label.name.casefold()


def home_folder(label_ids: Sequence[str], labels: Mapping[str, GmailLabel]) -> str:
    """The folder a message fetched by id lives in: the trash or spam (which hide it from
    every other folder), else INBOX, else its first user label, else a system label such as
    SENT; "" for a message without labels."""
    for wanted in ("TRASH", "SPAM", "INBOX"):
        if wanted in label_ids:
            return wanted
    user = sorted(labels[i].name for i in label_ids if i in labels and labels[i].type == "user")
    if user:
        return user[0]
    for id in label_ids:
        if id not in _STATES and not id.startswith("CATEGORY_"):
            return labels[id].name if id in labels else id
    return ""


def judge_headers(query: Q, view: Message) -> bool | None:
    """:func:`~mailsync._query.decide` on a header-only view; undecided when a header Gmail
    could not decode may read differently from the raw bytes."""
    if any("\ufffd" in value for value in view.headers.values()):
        return None
    return decide(query, view, _NOT_IN_HEADERS)
