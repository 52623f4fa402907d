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
- **Errors.** :class:`~mailsync.protocol.gmail_wire.GmailDialect`: 429 and 403
  ``rateLimitExceeded``/``userRateLimitExceeded`` are rate limits retried after
  ``Retry-After`` or backoff; a daily quota (403 ``dailyLimitExceeded``) is
  :class:`~mailsync.RateLimited` at once. Requests that change something and are not
  idempotent (``send``, ``insert``) are not sent again after a 5xx, which may have taken
  effect.

This module holds the plans (:class:`GmailAPI`); what Gmail's JSON means (labels, flags,
queries, payloads, history) is :mod:`mailsync.protocol.gmail_wire`'s. Neither touches a socket
or an HTTP client: they yield requests (:mod:`mailsync.protocol.http`) and the drivers in
:mod:`mailsync.backends._api` send them.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import quote

from mailsync._base import SendResult, SyncStep
from mailsync._config import Endpoint
from mailsync._envelope import Envelope
from mailsync._errors import (
    ConfigError,
    FolderNotFound,
    MessageNotFound,
    ProtocolError,
    Unsupported,
)
from mailsync._message import Folder, Message, header_block
from mailsync._plans import Call, Emit, Plan
from mailsync._query import Q
from mailsync.protocol.gmail_wire import (
    API_ROOT,
    BINS,
    HEADER_CRITERIA,
    IDENTITY,
    INBOX_LABEL,
    MAX_BATCH_IDS,
    NAME,
    PAGE_SIZE,
    PREFILTER_HEADERS,
    SERVER_ERRORS,
    GmailDialect,
    GmailLabel,
    IdList,
    criteria_used,
    decode_raw,
    find_label,
    flags_of,
    folder_of,
    folder_order,
    header_block_from,
    history_additions,
    history_start,
    home_folder,
    id_batches,
    in_folder,
    internal_date,
    judge_headers,
    label_changes,
    label_ids_of,
    native_query,
    upload_root,
    user_id,
)
from mailsync.protocol.http import (
    MAX_JSON_BYTES,
    APIClient,
    Auth,
    Request,
    Response,
    RetryPolicy,
    call,
    call_all,
    call_all_skipping,
    field_of,
    json_of,
    multipart_related,
    optional_field,
    read_error_body,
)
from mailsync.protocol.mailapi import COMMON_OPTIONS, MailAPI, whole_number_option

__all__ = ["GmailAPI"]

BATCH_SIZE = 25


# -- errors ----------------------------------------------------------------------------------


# -- labels and flags ------------------------------------------------------------------------


# -- queries ---------------------------------------------------------------------------------


# -- messages --------------------------------------------------------------------------------


# -- sync cursors ----------------------------------------------------------------------------


# -- endpoint --------------------------------------------------------------------------------


# -- the API ---------------------------------------------------------------------------------


class GmailAPI(MailAPI):
    """Gmail's mail operations as plans (see the module docstring for the rules).

    Options (keyword arguments of :func:`mailsync.connect` or URL query parameters), beyond
    the common ``base_url``, ``transport``, ``concurrency``, ``retries`` and ``retry_delay``:
    ``upload_url`` (the upload root, derived from ``base_url`` by default), ``batch_size``
    (messages downloaded per round, 25) and ``max_message_size`` (bytes, 256 MiB as on every
    backend; ``None`` for no limit).
    """

    name: ClassVar[str] = NAME
    scheme: ClassVar[str] = "gmail"
    capabilities: ClassVar[frozenset[str]] = frozenset(
        {"folders", "flags", "move", "delete", "append", "search", "labels", "threads"}
    )
    default_base_url: ClassVar[str] = API_ROOT
    options: ClassVar[frozenset[str]] = COMMON_OPTIONS | {"upload_url", "batch_size"}
    #: messages.send reads To, Cc and Bcc from the message and removes Bcc before delivery.
    recipients_from_headers: ClassVar[bool] = True

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(endpoint)
        params = endpoint.params
        self.user = user_id(endpoint)
        self.batch_size = whole_number_option(params, "batch_size", BATCH_SIZE) or BATCH_SIZE
        size = self.max_message_size
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
        response = yield from call(self._client, request, allow=SERVER_ERRORS, **options)
        if response.status in SERVER_ERRORS:
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
            if not set(label_ids_of(data, "get message")) <= labels.keys():
                return (yield from self._load_labels(refresh=True))
        return labels

    def folders(self) -> Plan[list[Folder]]:
        """Every label (see :func:`folder_order` for the order)."""
        labels = yield from self._load_labels(refresh=True)
        ordered = sorted(labels.values(), key=folder_order)
        if "INBOX" not in labels:
            ordered.insert(0, INBOX_LABEL)
        return [folder_of(label) for label in ordered]

    # -- reading -------------------------------------------------------------------------------

    def _list_ids(self, label: GmailLabel, q: str) -> Plan[IdList]:
        """Every id the listing gives, newest first, one page of 500 at a time."""
        params = [("labelIds", label.id), ("maxResults", PAGE_SIZE)]
        if q:
            params.append(("q", q))
        if label.id in BINS:
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
        self,
        ids: Sequence[str],
        format: str,
        headers: Sequence[str] = (),
        *,
        skip_too_large: bool = False,
    ) -> Plan[dict[str, dict[str, Any]]]:
        """The message resources, by id; the ones deleted meanwhile (404) are left out, and
        with ``skip_too_large`` (``sync()``) so are those over ``max_message_size``, with a
        warning each (:meth:`~mailsync.protocol.mailapi.MailAPI.skip_too_large`)."""
        if not ids:
            return {}
        params = (("format", format), *(("metadataHeaders", h) for h in headers))
        limit = self._raw_limit if format == "raw" else MAX_JSON_BYTES
        requests = [
            Request("GET", self._message_path(id), params, max_bytes=limit, what="get message")
            for id in ids
        ]
        skip = (lambda i, error: self.skip_too_large(ids[i], error)) if skip_too_large else None
        responses = yield from call_all_skipping(self._client, requests, skip, allow=(404,))
        found: dict[str, dict[str, Any]] = {}
        for id, response in zip(ids, responses, strict=True):
            if response is None or response.status == 404:
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
        label_ids = label_ids_of(data, what)
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
            folder=folder if folder is not None else home_folder(label_ids, labels),
            uid=id,
            flags=flags_of(label_ids),
            size=size,
            labels=names,
            thread_id=optional_field(data, "threadId", str, what, name=NAME),
            headers_only=headers_only,
            internal_date=internal_date(data, what),
        )

    def messages(
        self, folder: str, *, query: Q | None, headers_only: bool, limit: int | None
    ) -> Plan[None]:
        """Emit the label's messages, oldest first (see the module docstring)."""
        label = yield from self._resolve(folder)
        q, exact = native_query(query)
        ids = yield from self._list_ids(label, q)
        prefilter = headers_only or (
            query is not None and not exact and bool(criteria_used(query) & HEADER_CRITERIA)
        )
        oldest: Iterable[str] = ids.reversed()
        if limit is not None and exact:  # no message will be turned down: fetch no more
            oldest = (id for _, id in zip(range(limit), oldest, strict=False))
        emitted = 0
        for batch in id_batches(oldest, self.batch_size):
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
            headers = () if headers_only else PREFILTER_HEADERS
            metadata = yield from self._get_many(batch, "metadata", headers)
            labels = yield from self._know_labels(metadata.values())
            wanted = []
            for id, data in metadata.items():
                view = self._message(data, labels, label.name)
                verdict = True if query is None else judge_headers(query, view)
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
        for batch in id_batches(ids, self.batch_size):
            resources = yield from self._get_many(batch, "raw", skip_too_large=True)
            labels = yield from self._know_labels(resources.values())
            for id in batch:
                data = resources.get(id)
                if data is None or not in_folder(label_ids_of(data, "get message"), label.id):
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
        for batch in id_batches(ids.reversed(), self.batch_size):
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
            found = find_label(labels, source) if source is not None else INBOX_LABEL
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
        for batch in id_batches(ids, self.batch_size):
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
