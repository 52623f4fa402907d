"""The Gmail API, as pure code: every Retriever and Sender operation written once as a plan,
and the rules that turn Gmail's JSON into :class:`~mailsync.Message` values.

What this module owns:

- **Labels as folders.** Every label (system and user) is a folder, named by its Gmail name
  (``INBOX``, ``SENT``, ``Work/2024``: nested labels keep Gmail's ``/``). ``SENT``, ``TRASH``,
  ``DRAFT``, ``SPAM`` and ``STARRED`` carry the special uses ``\\Sent``, ``\\Trash``,
  ``\\Drafts``, ``\\Junk`` and ``\\Flagged``. A message in ``TRASH`` or ``SPAM`` belongs to no
  other folder, as in Gmail's own views.
- **Flags from labels.** ``\\Seen`` is the absence of ``UNREAD``, ``\\Flagged`` is ``STARRED``,
  ``\\Draft`` is ``DRAFT`` (read only). ``Message.labels`` holds every label's name,
  ``Message.thread_id`` the threadId, ``Message.id`` and ``Message.uid`` the Gmail message id
  (immutable and unique in the account; ``int(id, 16)`` is IMAP's ``X-GM-MSGID``).
- **Queries.** Gmail's search matches words, not substrings, and its ``after:``/``larger:``
  look at the arrival time and an estimated size, so only ``seen`` and ``flagged`` translate
  into ``q`` (``is:unread``, ``is:starred``) exactly; the rest of a :class:`~mailsync.Q` narrows
  nothing natively (a narrower server answer would lose messages the other backends return).
  Every message is then checked with :meth:`Q.matches`. Header criteria (``from_``, ``to``,
  ``subject``, ``since``, ``before``) are first judged on ``format=metadata`` (a few hundred
  bytes a message) so that only candidates are downloaded whole.
- **Order and memory.** ``messages.list`` pages newest first; the ids are collected (8 bytes
  each, :class:`IdList`) and the bodies fetched oldest first in batches of ``batch_size``
  (at most ``concurrency`` requests in flight), so memory holds one batch, whatever the label.
- **Sync.** The cursor is ``{"historyId": ...}``: new mail comes from ``history.list``
  (``messageAdded``, and ``labelAdded`` for this folder's label: a message moved into a folder is
  new there). The first sync, and the resync after Gmail answers 404 for an expired history id,
  reads the profile's ``historyId`` *before* listing the label and skips the messages whose
  identity ``gmail:<id>`` was delivered before, so no message is yielded twice: the Gmail id
  survives expiry, unlike a position in the history.
- **Errors.** :class:`GmailDialect`: 429 and 403 ``rateLimitExceeded``/``userRateLimitExceeded``
  are rate limits retried after ``Retry-After`` or backoff; a daily quota (403
  ``dailyLimitExceeded``) is :class:`~mailsync.RateLimited` at once. Requests that change
  something and are not idempotent (``send``, ``insert``) are not sent again after a 5xx,
  which may have taken effect.

It never touches a socket or an HTTP client: it yields requests (:mod:`mailsync.protocol.http`)
and the drivers in :mod:`mailsync.backends._api` send them.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

from mailsync._base import SendResult, SyncStep
from mailsync._config import Endpoint
from mailsync._envelope import Envelope
from mailsync._errors import (
    ConfigError,
    FolderNotFound,
    MailsyncError,
    MessageNotFound,
    ProtocolError,
    RateLimited,
    ServerError,
    Unsupported,
)
from mailsync._message import Folder, Message, header_block
from mailsync._plans import Call, Emit, Plan
from mailsync._query import Q, decide
from mailsync.protocol.http import (
    MAX_JSON_BYTES,
    APIClient,
    Auth,
    Dialect,
    ErrorBody,
    Request,
    Response,
    RetryPolicy,
    call,
    call_all,
    field_of,
    json_of,
    multipart_related,
    optional_field,
    read_error_body,
)
from mailsync.protocol.mailapi import COMMON_OPTIONS, MailAPI, whole_number_option

__all__ = [
    "API_ROOT",
    "GmailAPI",
    "GmailDialect",
    "GmailLabel",
    "IdList",
    "find_label",
    "flags_of",
    "folder_of",
    "header_block_from",
    "history_additions",
    "history_start",
    "label_changes",
    "native_query",
    "upload_root",
]

NAME = "Gmail API"
#: The API root Google documents; ``base_url`` replaces it.
API_ROOT = "https://gmail.googleapis.com/gmail/v1"
#: How a message delivered by ``sync()`` is remembered in the state store.
IDENTITY = "gmail:"
#: Gmail's largest message (messages.insert takes 150 MB); ``max_message_size`` changes it.
MAX_MESSAGE_SIZE = 200 * 1024 * 1024
BATCH_SIZE = 25
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
_BINS = frozenset({"TRASH", "SPAM"})
#: 403 reasons that mean "slow down" (retried) and "the day's quota is spent" (not retried).
_RATE_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
_QUOTA_REASONS = frozenset({"dailyLimitExceeded", "quotaExceeded"})
_SERVER_ERRORS = (500, 502, 503, 504)
#: System labels that say something about a message rather than where it is.
_STATES = frozenset({"UNREAD", "STARRED", "IMPORTANT"})
#: What a header-only view of a message cannot judge: the body, and the exact size (Gmail's
#: sizeEstimate is an estimate).
_NOT_IN_HEADERS = frozenset({"text", "larger", "smaller"})
_HEADER_CRITERIA = frozenset({"from_", "to", "subject", "since", "before"})
_PREFILTER_HEADERS = ("From", "To", "Subject", "Date")


# -- errors ----------------------------------------------------------------------------------


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


# -- labels and flags ------------------------------------------------------------------------


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


_INBOX = GmailLabel("INBOX", "INBOX", "system")


def folder_of(label: GmailLabel) -> Folder:
    """The :class:`~mailsync.Folder` a label is."""
    return Folder(label.name, "/", SPECIAL_USE.get(label.id) if label.type == "system" else None)


def find_label(labels: Mapping[str, GmailLabel], folder: str) -> GmailLabel | None:
    """The label a folder name means: ``INBOX`` in any case, a label name (exactly, else
    case-insensitively, as Gmail keeps names unique regardless of case), or a label id."""
    if folder.upper() == "INBOX":
        return labels.get("INBOX", _INBOX)
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
    return label in ids and (label in _BINS or ids.isdisjoint(_BINS))


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


# -- queries ---------------------------------------------------------------------------------

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


def _criteria_used(query: Q) -> set[str]:
    return {name for node in query.walk() for name in node.criteria()}


# -- messages --------------------------------------------------------------------------------


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


def _internal_date(data: Mapping[str, Any], what: str) -> datetime | None:
    value = optional_field(data, "internalDate", str, what, name=NAME)
    if value is None or not value.isdigit():
        return None
    try:
        return datetime.fromtimestamp(int(value) / 1000, UTC)
    except (OverflowError, ValueError, OSError):
        return None


def _label_ids(data: Mapping[str, Any], what: str) -> list[str]:
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


def _batches(ids: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for id in ids:
        batch.append(id)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


# -- sync cursors ----------------------------------------------------------------------------


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


# -- endpoint --------------------------------------------------------------------------------


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


# -- the API ---------------------------------------------------------------------------------


class GmailAPI(MailAPI):
    """Gmail's mail operations as plans (see the module docstring for the rules).

    Options (keyword arguments of :func:`mailsync.connect` or URL query parameters), beyond
    the common ``base_url``, ``transport``, ``concurrency``, ``retries`` and ``retry_delay``:
    ``upload_url`` (the upload root, derived from ``base_url`` by default), ``batch_size``
    (messages downloaded per round, 25) and ``max_message_size`` (bytes, 200 MiB; ``None``
    for no limit).
    """

    name: ClassVar[str] = NAME
    scheme: ClassVar[str] = "gmail"
    capabilities: ClassVar[frozenset[str]] = frozenset(
        {"folders", "flags", "move", "delete", "append", "search", "labels", "threads"}
    )
    default_base_url: ClassVar[str] = API_ROOT
    options: ClassVar[frozenset[str]] = COMMON_OPTIONS | {
        "upload_url",
        "batch_size",
        "max_message_size",
    }
    #: messages.send reads To, Cc and Bcc from the message and removes Bcc before delivery.
    recipients_from_headers: ClassVar[bool] = True

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(endpoint)
        params = endpoint.params
        self.user = user_id(endpoint)
        self.batch_size = whole_number_option(params, "batch_size", BATCH_SIZE) or BATCH_SIZE
        size = whole_number_option(params, "max_message_size", MAX_MESSAGE_SIZE, none_allowed=True)
        # The raw message arrives base64url-encoded inside a small JSON object.
        self._raw_limit = None if size is None else size * 4 // 3 + 64 * 1024
        self._client = APIClient(Auth(endpoint), GmailDialect(), RetryPolicy.from_params(params))
        self._labels: dict[str, GmailLabel] | None = None

    @property
    def context(self) -> str:
        """How error messages name this account (``"Gmail API (alice@example.com)"``)."""
        return f"{NAME} ({self.user})"

    @property
    def client(self) -> APIClient:
        """Authorization, :class:`GmailDialect` and the retry policy."""
        return self._client

    def _path(self, tail: str) -> str:
        return f"users/{quote(self.user, safe='@')}/{tail}"

    def _message_path(self, id: str, tail: str = "") -> str:
        return self._path(f"messages/{quote(id, safe='')}{tail}")

    def _upload_url(self, tail: str) -> str:
        root = self.endpoint.params.get("upload_url") or upload_root(self.base_url())
        if not isinstance(root, str) or not root.startswith(("https://", "http://")):
            raise ConfigError(f"upload_url must be an https:// (or http://) URL, not {root!r}")
        return f"{root.rstrip('/')}/{self._path(tail)}"

    def _json(self, request: Request, **options: Any) -> Plan[Any]:
        response = yield from call(self._client, request, **options)
        return json_of(response, request.label, name=NAME)

    def _call_once(self, request: Request, **options: Any) -> Plan[Response]:
        """:func:`call` for a request that must not be sent twice (send, insert): a 5xx may
        have taken effect, so it is raised (TemporaryFailure) rather than sent again."""
        response = yield from call(self._client, request, allow=_SERVER_ERRORS, **options)
        if response.status in _SERVER_ERRORS:
            body = read_error_body(response)
            raise self._client.dialect.error(request, response, body)
        return response

    # -- labels --------------------------------------------------------------------------------

    def _load_labels(self, *, refresh: bool = False) -> Plan[dict[str, GmailLabel]]:
        if self._labels is not None and not refresh:
            return self._labels
        data = yield from self._json(Request("GET", self._path("labels"), what="list labels"))
        labels: dict[str, GmailLabel] = {}
        for item in optional_field(data, "labels", list, "list labels", name=NAME) or []:
            label = GmailLabel(
                field_of(item, "id", str, "list labels", name=NAME),
                field_of(item, "name", str, "list labels", name=NAME),
                optional_field(item, "type", str, "list labels", name=NAME) or "user",
            )
            labels[label.id] = label
        self._labels = labels
        return labels

    def _resolve(self, folder: str) -> Plan[GmailLabel]:
        for refresh in (False, True):
            labels = yield from self._load_labels(refresh=refresh)
            label = find_label(labels, folder)
            if label is not None:
                return label
        raise FolderNotFound(f"{self.context}: there is no label {folder!r}")

    def _know_labels(self, resources: Iterable[Mapping[str, Any]]) -> Plan[dict[str, GmailLabel]]:
        """The label table, read again once if a message has a label created since."""
        labels = yield from self._load_labels()
        for data in resources:
            if not set(_label_ids(data, "get message")) <= labels.keys():
                return (yield from self._load_labels(refresh=True))
        return labels

    def folders(self) -> Plan[list[Folder]]:
        """Every label (see :func:`_folder_order` for the order)."""
        labels = yield from self._load_labels(refresh=True)
        ordered = sorted(labels.values(), key=_folder_order)
        if "INBOX" not in labels:
            ordered.insert(0, _INBOX)
        return [folder_of(label) for label in ordered]

    # -- reading -------------------------------------------------------------------------------

    def _list_ids(self, label: GmailLabel, q: str) -> Plan[IdList]:
        """Every id the listing gives, newest first, one page of 500 at a time."""
        params = [("labelIds", label.id), ("maxResults", PAGE_SIZE)]
        if q:
            params.append(("q", q))
        if label.id in _BINS:
            params.append(("includeSpamTrash", "true"))
        ids = IdList()
        token: str | None = None
        while True:
            page = (("pageToken", token),) if token else ()
            request = Request(
                "GET", self._path("messages"), tuple(params) + page, what="list messages"
            )
            data = yield from self._json(request, not_found=FolderNotFound)
            for item in optional_field(data, "messages", list, "list messages", name=NAME) or []:
                ids.append(field_of(item, "id", str, "list messages", name=NAME))
            token = optional_field(data, "nextPageToken", str, "list messages", name=NAME)
            if not token:
                return ids

    def _get_many(
        self, ids: Sequence[str], format: str, headers: Sequence[str] = ()
    ) -> Plan[dict[str, dict[str, Any]]]:
        """The message resources, by id; the ones deleted meanwhile (404) are left out."""
        if not ids:
            return {}
        params = (("format", format), *(("metadataHeaders", h) for h in headers))
        limit = self._raw_limit if format == "raw" else MAX_JSON_BYTES
        requests = [
            Request("GET", self._message_path(id), params, max_bytes=limit, what="get message")
            for id in ids
        ]
        responses = yield from call_all(self._client, requests, allow=(404,))
        found: dict[str, dict[str, Any]] = {}
        for id, response in zip(ids, responses, strict=True):
            if response.status == 404:
                continue
            data = json_of(response, "get message", name=NAME)
            if not isinstance(data, dict) or data.get("id") != id:
                raise ProtocolError(f"{NAME}: get message: the reply is not message {id!r}")
            found[id] = data
        return found

    def _message(
        self, data: Mapping[str, Any], labels: Mapping[str, GmailLabel], folder: str | None
    ) -> Message:
        """A message from a ``format=raw`` or ``format=metadata`` resource."""
        what = "get message"
        id = field_of(data, "id", str, what, name=NAME)
        label_ids = _label_ids(data, what)
        size = optional_field(data, "sizeEstimate", int, what, name=NAME)
        raw = optional_field(data, "raw", str, what, name=NAME)
        if raw is not None:
            content, headers_only = decode_raw(raw, what), False
            size = len(content)
        else:
            payload = optional_field(data, "payload", dict, what, name=NAME)
            content, headers_only = header_block_from(payload, what), True
        names = [labels[i].name if i in labels else i for i in label_ids]
        return Message(
            content,
            id=id,
            folder=folder if folder is not None else _home(label_ids, labels),
            uid=id,
            flags=flags_of(label_ids),
            size=size,
            labels=names,
            thread_id=optional_field(data, "threadId", str, what, name=NAME),
            headers_only=headers_only,
            internal_date=_internal_date(data, what),
        )

    def messages(
        self, folder: str, *, query: Q | None, headers_only: bool, limit: int | None
    ) -> Plan[None]:
        """Emit the label's messages, oldest first (see the module docstring)."""
        label = yield from self._resolve(folder)
        q, exact = native_query(query)
        ids = yield from self._list_ids(label, q)
        prefilter = headers_only or (
            query is not None and not exact and bool(_criteria_used(query) & _HEADER_CRITERIA)
        )
        oldest: Iterable[str] = ids.reversed()
        if limit is not None and exact:  # no message will be turned down: fetch no more
            oldest = (id for _, id in zip(range(limit), oldest, strict=False))
        emitted = 0
        for batch in _batches(oldest, self.batch_size):
            found = yield from self._read_batch(batch, label, query, headers_only, prefilter)
            for message in found:
                yield Emit(message)
                emitted += 1
                if limit is not None and emitted >= limit:
                    return

    def _read_batch(
        self,
        batch: list[str],
        label: GmailLabel,
        query: Q | None,
        headers_only: bool,
        prefilter: bool,
    ) -> Plan[list[Message]]:
        """One batch's messages that match, in batch order: judged on their headers first
        where that helps, downloaded whole only when needed."""
        ready: dict[str, Message] = {}
        wanted = list(batch)
        if prefilter:
            headers = () if headers_only else _PREFILTER_HEADERS
            metadata = yield from self._get_many(batch, "metadata", headers)
            labels = yield from self._know_labels(metadata.values())
            wanted = []
            for id, data in metadata.items():
                view = self._message(data, labels, label.name)
                verdict = True if query is None else _judge_headers(query, view)
                if verdict is True and headers_only:
                    ready[id] = view
                elif verdict is not False:
                    wanted.append(id)
        resources = yield from self._get_many(wanted, "raw")
        labels = yield from self._know_labels(resources.values())
        for id, data in resources.items():
            message = self._message(data, labels, label.name)
            if query is not None and not query.matches(message):
                continue
            ready[id] = (
                message.replace(raw=header_block(message.raw), headers_only=True)
                if headers_only
                else message
            )
        return [ready[id] for id in batch if id in ready]

    def get(self, id: str) -> Plan[Message]:
        """One message by its Gmail id; its folder is the one it lives in (the trash or spam,
        else INBOX, else a user label, else another system label)."""
        request = Request(
            "GET",
            self._message_path(id),
            (("format", "raw"),),
            max_bytes=self._raw_limit,
            what="get message",
        )
        response = yield from call(self._client, request, allow=(400,))
        if response.status == 400:
            body = read_error_body(response)
            if "invalidArgument" in body.reasons or "Invalid id" in body.message:
                raise MessageNotFound(f"{self.context}: no message {id!r} ({body.message})")
            raise self._client.dialect.error(request, response, body)
        data = json_of(response, "get message", name=NAME)
        labels = yield from self._know_labels([data])
        return self._message(data, labels, None)

    # -- sync ----------------------------------------------------------------------------------

    def sync_steps(
        self,
        folder: str,
        cursor: dict[str, Any] | None,
        known: Callable[[Iterable[str]], set[str]],
    ) -> Plan[None]:
        """Emit what is new since ``cursor``: through the history, else (first sync, expired
        history) a full pass that skips what was delivered before."""
        label = yield from self._resolve(folder)
        start = history_start(cursor)
        if start is not None:
            current = yield from self._incremental(label, start, known)
            if current is not None:
                return
        yield from self._full_pass(label, known)

    def _unknown(
        self, ids: Sequence[str], known: Callable[[Iterable[str]], set[str]]
    ) -> Plan[list[str]]:
        identities = [IDENTITY + id for id in ids]
        delivered: set[str] = yield Call(functools.partial(known, identities))
        return [
            id for id, identity in zip(ids, identities, strict=True) if identity not in delivered
        ]

    def _deliver(
        self,
        ids: Sequence[str],
        label: GmailLabel,
        cursors: Mapping[str, Mapping[str, Any]],
    ) -> Plan[None]:
        """Download these messages a batch at a time and emit a step for each that is still
        in the folder."""
        for batch in _batches(ids, self.batch_size):
            resources = yield from self._get_many(batch, "raw")
            labels = yield from self._know_labels(resources.values())
            for id in batch:
                data = resources.get(id)
                if data is None or not in_folder(_label_ids(data, "get message"), label.id):
                    continue  # deleted, or moved out, since
                message = self._message(data, labels, label.name)
                yield Emit(SyncStep(message, cursors[id], IDENTITY + id))

    def _incremental(
        self, label: GmailLabel, start: str, known: Callable[[Iterable[str]], set[str]]
    ) -> Plan[str | None]:
        """Follow the history from ``start``; the mailbox's history id after it, or None when
        Gmail no longer has that history (404)."""
        params = (
            ("startHistoryId", start),
            ("labelId", label.id),
            ("historyTypes", "messageAdded"),
            ("historyTypes", "labelAdded"),
            ("maxResults", PAGE_SIZE),
        )
        position = start
        token: str | None = None
        while True:
            page = (("pageToken", token),) if token else ()
            request = Request("GET", self._path("history"), params + page, what="list history")
            response = yield from call(self._client, request, allow=(404,))
            if response.status == 404:
                return None
            data = json_of(response, "list history", name=NAME)
            added, after = history_additions(data, label.id, position)
            new = yield from self._unknown([id for id, _ in added], known)
            cursors = {id: {"historyId": at} for id, at in added}
            yield from self._deliver(new, label, cursors)
            position = after
            token = optional_field(data, "nextPageToken", str, "list history", name=NAME)
            if not token:
                break
        current = field_of(data, "historyId", str, "list history", name=NAME)
        if current != start:
            yield Emit(SyncStep(None, {"historyId": current}))
        return current

    def _full_pass(
        self, label: GmailLabel, known: Callable[[Iterable[str]], set[str]]
    ) -> Plan[None]:
        """Every message of the label not delivered before, oldest first. The history id is
        read before the listing, so what arrives meanwhile comes again through the history
        (and is then known)."""
        profile = yield from self._json(Request("GET", self._path("profile"), what="profile"))
        mark = field_of(profile, "historyId", str, "profile", name=NAME)
        ids = yield from self._list_ids(label, "")
        during = {"historyId": mark, "resync": True}
        for batch in _batches(ids.reversed(), self.batch_size):
            new = yield from self._unknown(batch, known)
            yield from self._deliver(new, label, dict.fromkeys(new, during))
        yield Emit(SyncStep(None, {"historyId": mark}))

    # -- changing ------------------------------------------------------------------------------

    def _batch_modify(
        self, ids: Sequence[str], add: Sequence[str], remove: Sequence[str]
    ) -> Plan[None]:
        if not add and not remove:
            return
        body: dict[str, Any] = {}
        if add:
            body["addLabelIds"] = list(add)
        if remove:
            body["removeLabelIds"] = list(remove)
        for start in range(0, len(ids), MAX_BATCH_IDS):
            chunk = list(ids[start : start + MAX_BATCH_IDS])
            request = Request(
                "POST",
                self._path("messages/batchModify"),
                json={"ids": chunk, **body},
                what="modify messages",
            )
            yield from call(self._client, request)

    def set_flags(
        self, ids: Sequence[str], *, add: Iterable[str], remove: Iterable[str]
    ) -> Plan[None]:
        """``\\Seen`` and ``\\Flagged`` as the UNREAD and STARRED labels."""
        adding, removing = label_changes(add, remove)
        yield from self._batch_modify(ids, adding, removing)

    def move(self, ids: Sequence[str], folder: str) -> Plan[None]:
        """Move bare ids: taken out of INBOX (see :meth:`move_from`)."""
        yield from self.move_from(ids, [None] * len(ids), folder)

    def move_from(
        self, ids: Sequence[str], sources: Sequence[str | None], folder: str
    ) -> Plan[None]:
        """Add the target label and take away the label of the folder each message was read
        from (INBOX for a bare id); the message keeps its other labels."""
        target = yield from self._resolve(folder)
        labels = yield from self._load_labels()
        groups: dict[str | None, list[str]] = {}
        for id, source in zip(ids, sources, strict=True):
            found = find_label(labels, source) if source is not None else _INBOX
            groups.setdefault(found.id if found is not None else None, []).append(id)
        for source_id, group in groups.items():
            remove = [source_id] if source_id is not None and source_id != target.id else []
            yield from self._batch_modify(group, [target.id], remove)

    def delete(self, ids: Sequence[str], *, permanent: bool) -> Plan[None]:
        """To the trash (``messages.trash``), or for good (``messages.batchDelete``, which
        needs the ``https://mail.google.com/`` scope)."""
        if permanent:
            for start in range(0, len(ids), MAX_BATCH_IDS):
                chunk = list(ids[start : start + MAX_BATCH_IDS])
                request = Request(
                    "POST",
                    self._path("messages/batchDelete"),
                    json={"ids": chunk},
                    what="delete messages",
                )
                yield from call(self._client, request)
            return
        for batch in _batches(ids, self.batch_size):
            requests = [
                Request("POST", self._message_path(id, "/trash"), what="trash message")
                for id in batch
            ]
            yield from call_all(self._client, requests)

    def append(self, folder: str, raw: bytes, flags: Iterable[str]) -> Plan[str | None]:
        """``messages.insert`` into the folder's label, UNREAD unless ``\\Seen`` is given
        (as IMAP APPEND); returns the new message's id."""
        label = yield from self._resolve(folder)
        adding, removing = label_changes(flags, ())
        label_ids = [label.id, *(["UNREAD"] if "UNREAD" not in removing else []), *adding]
        metadata = json.dumps({"labelIds": label_ids}).encode()
        content_type, body = multipart_related(
            [("application/json; charset=UTF-8", metadata), ("message/rfc822", raw)]
        )
        request = Request(
            "POST",
            self._upload_url("messages"),
            (("uploadType", "multipart"),),
            headers={"Content-Type": content_type},
            content=body,
            what="insert message",
        )
        response = yield from self._call_once(request, not_found=FolderNotFound)
        data = json_of(response, "insert message", name=NAME)
        return field_of(data, "id", str, "insert message", name=NAME)

    # -- sending -------------------------------------------------------------------------------

    def send(
        self,
        envelope: Envelope,
        *,
        notify: Iterable[str] | str | None,
        ret: str | None,
        envid: str | None,
    ) -> Plan[SendResult]:
        """``messages.send`` with the message as it is, Bcc included (a media upload). Gmail
        picks the envelope sender itself and sends to the To, Cc and Bcc headers.

        Raises:
            Unsupported: DSN parameters were given (Gmail has no DSN).
        """
        if notify is not None or ret is not None or envid is not None:
            raise Unsupported(f"{NAME}: Gmail cannot ask for delivery status notifications")
        request = Request(
            "POST",
            self._upload_url("messages/send"),
            (("uploadType", "media"),),
            headers={"Content-Type": "message/rfc822"},
            content=envelope.data,
            what="send message",
        )
        response = yield from self._call_once(request)
        field_of(json_of(response, "send message", name=NAME), "id", str, "send message", name=NAME)
        return SendResult(envelope.message_id, envelope.recipients)


_FIRST = ("INBOX", "SENT", "DRAFT", "STARRED", "IMPORTANT", "SPAM", "TRASH")


def _folder_order(label: GmailLabel) -> tuple[int, int, str]:
    """INBOX and the well-known system labels in Gmail's order, then the other system
    labels, then the user's labels by name."""
    if label.type == "system" and label.id in _FIRST:
        return 0, _FIRST.index(label.id), ""
    return (1 if label.type == "system" else 2), 0, label.name.casefold()


def _home(label_ids: Sequence[str], labels: Mapping[str, GmailLabel]) -> str:
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


def _judge_headers(query: Q, view: Message) -> bool | None:
    """:func:`~mailsync._query.decide` on a header-only view; undecided when a header Gmail
    could not decode may read differently from the raw bytes."""
    if any("\ufffd" in value for value in view.headers.values()):
        return None
    return decide(query, view, _NOT_IN_HEADERS)
