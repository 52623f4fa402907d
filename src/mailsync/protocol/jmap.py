"""JMAP (RFC 8620 core, RFC 8621 mail) as a mailsync backend: the protocol logic.

Every operation is a plan (:mod:`mailsync._plans`) built from JMAP method calls, run by the
generic API backends (:mod:`mailsync.backends._api`) over httpx. What maps to what:

- Account: ``jmap://user@host[:port][/path]``. The session resource is the URL's path, or
  ``/.well-known/jmap`` (which servers redirect to their own path) when it has none; the
  ``base_url`` option names a server root or a session URL instead (Fastmail's
  ``https://api.fastmail.com/jmap/session``). ``https`` by default; ``tls="none"`` is plain
  http, to a loopback address only (the password would cross the network in the clear).
  Authentication: HTTP Basic with the URL's user and the password, or ``token=`` (Bearer).
- Session: read once and kept; read again when a reply's ``sessionState`` says it changed.
  Its limits (``maxObjectsInGet``, ``maxObjectsInSet``, ``maxCallsInRequest``,
  ``maxConcurrentRequests``, ``maxSizeUpload``) size every batch; its URL templates (RFC 6570
  level 1) name the API, downloads, uploads and the event source; the primary accounts for
  ``urn:ietf:params:jmap:mail`` and ``:submission`` are the accounts used. Relative URLs are
  resolved against the session's own; an https session naming plain http URLs is refused.
- Calls: every request is one POST of ``{"using", "methodCalls"}``; each call's reply is found
  by its call id, so an implicit reply (``onSuccessUpdateEmail``'s ``Email/set``) is told
  apart. A method-level ``["error", {"type"}]`` becomes a mailsync error (``notFound``:
  MessageNotFound, ``rateLimit``: RateLimited, ``serverFail``/``serverUnavailable``:
  TemporaryFailure, ``forbidden``: AuthenticationError, ``unknownMethod``/``unsupportedSort``:
  Unsupported, others ServerError with the type as ``code``); the plans that give one a
  meaning of their own (``anchorNotFound``, ``cannotCalculateChanges``, a refused filter)
  handle it there.
- Folders: ``Mailbox/get``. A mailbox's name is its path of names joined with ``/``; the
  ``inbox`` role is ``INBOX`` (its children ``INBOX/Receipts``); roles become special use
  (``sent`` ``\\Sent``, ``trash`` ``\\Trash``, ``drafts``, ``junk``, ``archive``, ``all``,
  ``flagged``). A message in several mailboxes has their names as :attr:`Message.labels`.
- Messages: a page is one request: ``Email/query`` (the folder, sorted by ``receivedAt``
  ascending, paged by anchor) and ``Email/get`` of its ``#ids`` (a back-reference). The raw
  bytes are each message's blob, downloaded ``concurrency`` at a time (never more than the
  server's ``maxConcurrentRequests``), each bounded by ``max_message_size``. Messages received
  in the same second are ordered by Cyrus's storage order where the server offers the
  ``emailstate`` sort (else as the server breaks ties). An anchor deleted while the caller
  handled its page (``anchorNotFound``) is replaced by the page's latest message still there,
  else paging goes on by position. ``headers_only`` reads the ``headers`` property (the raw
  header fields) and downloads nothing. Keywords are flags: ``$seen`` ``\\Seen``,
  ``$flagged`` ``\\Flagged``, ``$answered`` ``\\Answered``, ``$draft`` ``\\Draft``, other
  keywords as they are; ``threadId`` is :attr:`Message.thread_id`.
- Queries: the server narrows only where its answer is exact or a safe superset (``seen`` and
  ``flagged`` as ``hasKeyword``/``notKeyword``; ``larger``/``smaller`` as ``minSize``/
  ``maxSize``; ``since`` as received after a day before it, since ``Q`` dates are the Date
  header's and JMAP's are arrival times); text criteria are always checked client-side (JMAP's
  text filters match words where a search engine exists, and Cyrus without one answers
  ``serverFail``), and :meth:`Q.matches` always has the last word. A server that refuses the
  narrowed filter (``unsupportedFilter``, ``serverFail``) is asked for the whole folder.
- ``sync()``: the cursor is the account's ``Email`` state. The first sync reads the state,
  then lists the folder and yields what ``known()`` does not report. Later ones follow
  ``Email/changes`` (bounded pages, with ``Email/get`` of the created and the updated ids in
  the same request): a message created in, or moved into, the folder and not delivered
  before is new, oldest first. Each page's messages carry the state before it, then a step
  saves the page's ``newState``, so an interrupted page comes again and ``known()`` keeps it
  from yielding anything twice. ``cannotCalculateChanges`` (the server forgot that state)
  starts a full pass under the same rule. Identities are ``jmap:`` + the Email id.
- ``watch()``: the session's event source (RFC 8620 section 7.3, ``types=Email``,
  ``closeafter=no``, pings every 30 s), waited on through the kit's
  :class:`~mailsync.protocol.events.AwaitEvent`; the state is checked first so that a change
  made while the last sync ran is not waited for, and ``Last-Event-ID`` resumes the next
  stream. A server whose event source answers anything but an event stream (Cyrus built
  without push answers 204) is polled every ``poll_interval``.
- Changes: ``set_flags`` patches ``keywords/...`` (``\\Deleted`` and ``\\Recent`` have no
  keyword: Unsupported); ``move`` replaces the mailbox the message was read from (all of its
  mailboxes for a bare id); ``delete`` moves to the ``trash`` mailbox, or destroys when
  ``permanent``, when the message is in the trash already, or when there is none; ``append``
  uploads the blob and ``Email/import``\\ s it, returning the new id.
- Sending: upload, ``Email/import`` into Drafts (Sent where there are no Drafts), then
  ``EmailSubmission/set`` with the envelope :func:`~mailsync._envelope.prepare` computed (Bcc is
  in the envelope, not in the bytes), the identity whose address is the envelope sender (else
  the first), and ``onSuccessUpdateEmail`` moving it to Sent without ``$draft``. DSN
  parameters go in the envelope when the server lists ``dsn`` among its
  ``submissionExtensions`` (else Unsupported). A ``deliveryStatus`` the server returns becomes
  :attr:`SendResult.delivery`, and recipients it reports refused go in ``refused``; a refused
  submission removes the imported draft again.

This module holds the mail operations as plans (:class:`JMAPAPI`); the session and the method
calls they are built on are :mod:`mailsync.protocol.jmap_core`'s, and what JMAP's objects mean
(errors, mailboxes, keywords, filters, Email objects, submissions)
:mod:`mailsync.protocol.jmap_wire`'s. All three are pure: they build requests and read
replies, and never do I/O themselves.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

from mailsync._base import SyncStep
from mailsync._config import Endpoint
from mailsync._errors import (
    MessageNotFound,
)
from mailsync._message import Folder, Message, crlf_bytes
from mailsync._plans import Call, Emit, Plan, Sleep
from mailsync._query import Q
from mailsync.protocol.events import ServerEvent, await_event
from mailsync.protocol.http import (
    Request,
    Response,
    call_all_skipping,
    field_of,
    optional_field,
    read_error_body,
)
from mailsync.protocol.jmap_core import (
    Session,
    expand_template,
    parse_session,
)
from mailsync.protocol.jmap_submission import JMAPSubmission
from mailsync.protocol.jmap_wire import (
    NAME,
    JMAPDialect,
    Mailbox,
    MethodError,
    Paging,
    as_shown,
    check_id,
    check_set,
    created_id,
    email_filter,
    find_mailbox,
    flags_of,
    header_bytes,
    in_mailbox,
    in_order,
    keyword_of,
    keyword_patch,
    listing_ids,
    mailboxes_by_id,
    message_of,
    method_error,
    native_filter,
    not_created,
    pointer,
    sync_start,
    unique,
)
from mailsync.protocol.mailapi import canonical_folder, chunks

__all__ = [
    "JMAPAPI",
    "JMAPDialect",
    "Mailbox",
    "MethodError",
    "Session",
    "expand_template",
    "flags_of",
    "keyword_of",
    "mailboxes_by_id",
    "method_error",
    "native_filter",
    "parse_session",
]

IDENTITY = "jmap:"
#: Messages per listing page (a page's metadata is what is held in memory).
_PAGE = 50
_HEADERS_PAGE = 200
#: Changes asked for per Email/changes call.
_CHANGES = 256
#: Objects per Email/set call, at most (also never more than the server's maxObjectsInSet).
_SET_CHUNK = 500
#: Seconds between the pings the event source is asked for; a stream silent for twice as long
#: (and a bit) is presumed dead. RFC 8620 lets servers raise a smaller value up to 30.
_PING = 30
#: Event-stream events that say nothing of our account before the wait gives up and lets
#: watch() look anyway (a server pushing for many shared accounts).
_MAX_FOREIGN_EVENTS = 100
_DOWNLOAD_NAME = "message.eml"
_EMAIL_PROPERTIES = ("id", "blobId", "threadId", "mailboxIds", "keywords", "size", "receivedAt")
#: Method errors a refused filter shows as, on servers without a search engine or with a
#: smaller filter vocabulary.
_FILTER_REFUSED = frozenset({"unsupportedFilter", "serverFail", "invalidArguments"})
_NO_PUSH = frozenset({204, 404, 405, 406, 501})


# -- the session -------------------------------------------------------------------------------


# -- errors --------------------------------------------------------------------------------------


# -- mailboxes -----------------------------------------------------------------------------------


# -- keywords and flags --------------------------------------------------------------------------


# -- queries -------------------------------------------------------------------------------------


# -- replies -------------------------------------------------------------------------------------


# -- the API -------------------------------------------------------------------------------------


class JMAPAPI(JMAPSubmission):
    """JMAP's mail operations as plans (see the module docstring).

    Options: ``base_url`` (a server root or session URL; by default the URL's host, and its
    path or ``/.well-known/jmap``), ``concurrency`` (downloads at once, default 4, never more
    than the server's ``maxConcurrentRequests``), ``retries`` and ``retry_delay``,
    ``max_message_size`` (bytes; None for no bound).
    """

    name: ClassVar[str] = NAME
    scheme: ClassVar[str] = "jmap"
    capabilities: ClassVar[frozenset[str]] = frozenset(
        {"folders", "flags", "move", "delete", "append", "idle", "labels", "threads"}
    )
    recipients_from_headers: ClassVar[bool] = False

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(endpoint)
        self._push = True
        self._last_event_id: str | None = None
        self._synced_state: str | None = None

    def folders(self) -> Plan[list[Folder]]:
        """Every mailbox, INBOX first, then by name."""
        boxes = yield from self._load_mailboxes()
        ordered = sorted(boxes.values(), key=lambda b: (b.name != "INBOX", b.name.casefold()))
        return [box.folder for box in ordered]

    # -- reading ------------------------------------------------------------------------------

    def _sort(self, session: Session) -> list[dict[str, Any]]:
        sort: list[dict[str, Any]] = [{"property": "receivedAt", "isAscending": True}]
        if "emailstate" in session.sort_options:
            # Cyrus: messages received in the same second come in the order they were stored.
            sort.append({"property": "emailstate", "isAscending": True})
        return sort

    def messages(
        self, folder: str, *, query: Q | None, headers_only: bool, limit: int | None
    ) -> Plan[None]:
        """Emit the folder's messages oldest first (see the module docstring)."""
        box = yield from self._mailbox(folder)
        session = yield from self._session()
        needs_body = not headers_only or (query is not None and query.needs_body)
        page = min(_PAGE if needs_body else _HEADERS_PAGE, session.max_objects_in_get)
        if limit is not None and query is None:
            page = max(1, min(page, limit))
        properties = list(_EMAIL_PROPERTIES) + ([] if needs_body else ["headers"])
        paging = Paging(native_filter(query))
        count = 0
        while not paging.done:
            items = yield from self._page(box, paging, page, properties)
            for batch in (yield from self._batches(items, needs_body)):
                for message in (yield from self._materialize(batch, box.name, needs_body)):
                    shown = as_shown(message, query, headers_only)
                    if shown is None:
                        continue
                    yield Emit(shown)
                    count += 1
                    if limit is not None and count >= limit:
                        return

    def _page(
        self, box: Mailbox, paging: Paging, page: int, properties: list[str]
    ) -> Plan[list[dict[str, Any]]]:
        """The next page's Email objects in query order (one request: the query and a get of
        its ``#ids``); ``paging`` moves on, and says when it was the last."""
        session = yield from self._session()
        arguments = {
            "filter": email_filter(box.id, paging.conditions),
            "sort": self._sort(session),
            "limit": page,
            **paging.arguments(),
        }
        # The get fails with resultReference when the query did: the query's error counts.
        tolerate = {"anchorNotFound", "resultReference"}
        tolerate |= _FILTER_REFUSED if paging.conditions else set()
        listing, emails = yield from self._request(
            [
                ("Email/query", arguments),
                (
                    "Email/get",
                    {
                        "#ids": {"resultOf": "0", "name": "Email/query", "path": "/ids"},
                        "properties": properties,
                    },
                ),
            ],
            tolerate=tolerate,
        )
        if isinstance(listing, MethodError):
            if listing.type == "anchorNotFound":
                ids, start = yield from self._recover_anchor(box, paging, page)
                found = yield from self._get_emails(ids, properties)
                paging.advance(ids, start, page)
                return found
            if paging.at_start and paging.conditions:
                paging.conditions = []  # the server cannot narrow this: list it all
                return []
            raise method_error(listing, self.context, "Email/query")
        if isinstance(emails, MethodError):
            raise method_error(emails, self.context, "Email/get")
        ids = [str(i) for i in field_of(listing, "ids", list, "Email/query", name=NAME)]
        start = optional_field(listing, "position", int, "Email/query", name=NAME) or 0
        clamped = optional_field(listing, "limit", int, "Email/query", name=NAME)
        paging.advance(ids, start, min(page, clamped) if clamped else page)
        return in_order(ids, field_of(emails, "list", list, "Email/get", name=NAME))

    def _recover_anchor(
        self, box: Mailbox, paging: Paging, page: int
    ) -> Plan[tuple[list[str], int]]:
        """The next page when the anchor was deleted meanwhile: after the latest message of
        the last page still there, else (all of it gone) from where that page started."""
        session = yield from self._session()
        candidates = list(reversed(paging.page_ids[:-1]))[: session.max_calls_in_request]
        base = {"filter": email_filter(box.id, paging.conditions), "sort": self._sort(session)}
        if candidates:
            listings = yield from self._request(
                [
                    ("Email/query", {**base, "limit": page, "anchor": c, "anchorOffset": 1})
                    for c in candidates
                ],
                tolerate={"anchorNotFound"},
            )
            for listing in listings:
                if not isinstance(listing, MethodError):
                    return listing_ids(listing)
        listing = yield from self._invoke(
            "Email/query", {**base, "limit": page, "position": paging.page_start}
        )
        return listing_ids(listing)

    def _get_emails(
        self, ids: Sequence[str], properties: Sequence[str]
    ) -> Plan[list[dict[str, Any]]]:
        """Email objects by id, in the order asked, leaving out the ones gone meanwhile."""
        session = yield from self._session()
        found: list[dict[str, Any]] = []
        for chunk in chunks(ids, session.max_objects_in_get):
            reply = yield from self._invoke(
                "Email/get", {"ids": chunk, "properties": list(properties)}
            )
            found += in_order(chunk, field_of(reply, "list", list, "Email/get", name=NAME))
        return found

    def _batches(self, items: list[dict[str, Any]], with_body: bool) -> Plan[list[list[Any]]]:
        """``items`` cut into the batches :meth:`_materialize` takes: as many downloads as may
        run at once (``concurrency``, never above the server's ``maxConcurrentRequests``), so
        that a page's messages are never all held at once; one batch when nothing is
        downloaded."""
        if not with_body:
            return [items] if items else []
        session = yield from self._session()
        return list(chunks(items, min(self.concurrency, session.max_concurrent_requests)))

    def _materialize(
        self,
        items: list[dict[str, Any]],
        folder: str,
        with_body: bool,
        *,
        skip_too_large: bool = False,
    ) -> Plan[list[Message]]:
        """Messages for Email objects: with their blobs (all downloaded at once: give a batch
        from :meth:`_batches`), skipping any deleted meanwhile, and with ``skip_too_large``
        (``sync()``) any over ``max_message_size``, with a warning
        (:meth:`~mailsync.protocol.mailapi.MailAPI.skip_too_large`); or with their header
        fields only."""
        messages: list[Message] = []
        if not with_body:
            for item in items:
                labels = yield from self._labels(item)
                messages.append(message_of(item, header_bytes(item), folder, labels, headers=True))
            return messages
        session = yield from self._session()
        requests = [self._download_request(session, item) for item in items]
        skip = (
            (lambda i, error: self.skip_too_large(str(items[i].get("id")), error))
            if skip_too_large
            else None
        )
        replies = yield from call_all_skipping(self._client, requests, skip, allow=(404,))
        for item, reply in zip(items, replies, strict=True):
            if reply is None or reply.status == 404:
                continue  # too large, or deleted between the listing and the download
            labels = yield from self._labels(item)
            messages.append(message_of(item, reply.content, folder, labels))
        return messages

    def _labels(self, item: Mapping[str, Any]) -> Plan[list[str]]:
        mailbox_ids = item.get("mailboxIds")
        if not isinstance(mailbox_ids, dict) or len(mailbox_ids) < 2:
            return []
        return (yield from self._names(mailbox_ids))

    def _download_request(self, session: Session, item: Mapping[str, Any]) -> Request:
        blob = field_of(item, "blobId", str, "Email/get", name=NAME)
        url = expand_template(
            session.download_url,
            accountId=session.account_id,
            blobId=blob,
            type="message/rfc822",
            name=_DOWNLOAD_NAME,
        )
        return Request("GET", url, what="download a message", max_bytes=self.max_message_size)

    def get(self, id: str) -> Plan[Message]:
        """One message by its Email id; its folder is the mailbox it is in (INBOX first, else
        the first by name)."""
        check_id(id)
        reply = yield from self._invoke(
            "Email/get", {"ids": [id], "properties": list(_EMAIL_PROPERTIES)}
        )
        items = in_order([id], field_of(reply, "list", list, "Email/get", name=NAME))
        if not items:
            raise MessageNotFound(f"{self.context}: no message {id!r}")
        names = yield from self._names(items[0].get("mailboxIds"))
        folder = "INBOX" if "INBOX" in names else (names[0] if names else "")
        found = yield from self._materialize(items, folder, True)
        if not found:
            raise MessageNotFound(f"{self.context}: message {id!r} was deleted meanwhile")
        return found[0]

    # -- sync ---------------------------------------------------------------------------------

    def sync_steps(
        self,
        folder: str,
        cursor: dict[str, Any] | None,
        known: Callable[[Iterable[str]], set[str]],
    ) -> Plan[None]:
        """Emit what is new since ``cursor`` (see the module docstring)."""
        box = yield from self._mailbox(folder)
        session = yield from self._session()
        start = sync_start(cursor, session.account_id)
        if start is not None:
            done = yield from self._incremental(box, start, known)
            if done:
                return
        yield from self._full_pass(box, known)

    def _email_state(self) -> Plan[str]:
        reply = yield from self._invoke("Email/get", {"ids": [], "properties": ["id"]})
        return field_of(reply, "state", str, "Email/get", name=NAME)

    def _unknown(
        self, items: Sequence[dict[str, Any]], known: Callable[[Iterable[str]], set[str]]
    ) -> Plan[list[dict[str, Any]]]:
        identities = [IDENTITY + field_of(i, "id", str, "Email/get", name=NAME) for i in items]
        delivered: set[str] = yield Call(functools.partial(known, identities))
        return [
            item
            for item, identity in zip(items, identities, strict=True)
            if identity not in delivered
        ]

    def _deliver(
        self, items: Sequence[dict[str, Any]], box: Mailbox, cursor: Mapping[str, Any]
    ) -> Plan[None]:
        for batch in (yield from self._batches(list(items), True)):
            messages = yield from self._materialize(batch, box.name, True, skip_too_large=True)
            for message in messages:
                yield Emit(SyncStep(message, dict(cursor), IDENTITY + (message.id or "")))

    def _incremental(
        self, box: Mailbox, since: str, known: Callable[[Iterable[str]], set[str]]
    ) -> Plan[bool]:
        """Follow Email/changes from ``since``; False when the server cannot (a full pass is
        due)."""
        session = yield from self._session()
        account = session.account_id
        state = since
        while True:
            width = max(1, min(_CHANGES, session.max_objects_in_get))
            changes, created, updated = yield from self._request(
                [
                    ("Email/changes", {"sinceState": state, "maxChanges": width}),
                    (
                        "Email/get",
                        {
                            "#ids": {"resultOf": "0", "name": "Email/changes", "path": "/created"},
                            "properties": list(_EMAIL_PROPERTIES),
                        },
                    ),
                    (
                        "Email/get",
                        {
                            "#ids": {"resultOf": "0", "name": "Email/changes", "path": "/updated"},
                            "properties": list(_EMAIL_PROPERTIES),
                        },
                    ),
                ],
                tolerate={"cannotCalculateChanges", "resultReference"},
            )
            if isinstance(changes, MethodError):
                if changes.type == "cannotCalculateChanges":
                    return False
                raise method_error(changes, self.context, "Email/changes")
            for reply in (created, updated):
                if isinstance(reply, MethodError):
                    raise method_error(reply, self.context, "Email/get")
            new_state = field_of(changes, "newState", str, "Email/changes", name=NAME)
            items = [
                item
                for reply in (created, updated)
                for item in field_of(reply, "list", list, "Email/get", name=NAME)
                if in_mailbox(item, box.id)
            ]
            items.sort(key=lambda item: str(item.get("receivedAt") or ""))
            fresh = yield from self._unknown(unique(items), known)
            yield from self._deliver(fresh, box, {"v": 1, "account": account, "state": state})
            if new_state != state:
                yield Emit(SyncStep(None, {"v": 1, "account": account, "state": new_state}))
            self._synced_state = new_state
            more = optional_field(changes, "hasMoreChanges", bool, "Email/changes", name=NAME)
            if not more or new_state == state:
                return True
            state = new_state

    def _full_pass(self, box: Mailbox, known: Callable[[Iterable[str]], set[str]]) -> Plan[None]:
        """Every message of the folder not delivered before, oldest first. The state is read
        before the listing, so what arrives meanwhile comes again through Email/changes (and
        is then known)."""
        session = yield from self._session()
        account = session.account_id
        mark = yield from self._email_state()
        during = {"v": 1, "account": account, "state": mark, "resync": True}
        page = min(_PAGE, session.max_objects_in_get)
        paging = Paging()
        while not paging.done:
            batch = yield from self._page(box, paging, page, list(_EMAIL_PROPERTIES))
            fresh = yield from self._unknown(batch, known)
            yield from self._deliver(fresh, box, during)
        yield Emit(SyncStep(None, {"v": 1, "account": account, "state": mark}))
        self._synced_state = mark

    # -- push ---------------------------------------------------------------------------------

    def wait_for_change(self, folder: str, timeout: float) -> Plan[None]:
        """Return when the account's mail may have changed (an event-source ``state`` event),
        or after ``timeout``; servers without push are polled."""
        session = yield from self._session()
        if not self._push or session.event_source_url is None:
            yield Sleep(timeout)
            return
        current = yield from self._email_state()
        if self._synced_state is not None and current != self._synced_state:
            return  # changed while the last sync ran
        self._synced_state = current
        url = expand_template(
            session.event_source_url, types="Email", closeafter="no", ping=str(_PING)
        )
        for _ in range(_MAX_FOREIGN_EVENTS):
            # Resuming after the last event: a server replays what changed in between.
            headers = {"Last-Event-ID": self._last_event_id} if self._last_event_id else {}
            request = Request("GET", url, headers=headers, what="wait on the event source")
            result = yield from await_event(
                self._client, request, ("state",), timeout=timeout, idle=2 * _PING + 15
            )
            if result is None:
                return
            if isinstance(result, Response):
                yield from self._no_push(request, result, timeout)
                return
            if result.id:
                self._last_event_id = result.id
            if self._concerns_us(result, session.account_id):
                return

    def _no_push(self, request: Request, response: Response, timeout: float) -> Plan[None]:
        if response.status in _NO_PUSH or response.ok:
            self._push = False  # an event source in name only (Cyrus without push: 204)
            yield Sleep(timeout)
            return
        raise self._client.dialect.error(request, response, read_error_body(response))

    def _concerns_us(self, event: ServerEvent, account: str) -> bool:
        """Whether a ``state`` event (a StateChange) says our Email state moved on. One that
        cannot be read is taken to mean yes: looking costs little."""
        import json

        try:
            changed = json.loads(event.data)["changed"]
        except (ValueError, KeyError, TypeError):
            return True
        if not isinstance(changed, dict):
            return True
        if account not in changed:
            return False  # another account's news
        mine = changed[account]
        email = mine.get("Email") if isinstance(mine, dict) else None
        return email is None or email != self._synced_state

    # -- changing -----------------------------------------------------------------------------

    def _update(self, patches: Mapping[str, dict[str, Any]]) -> Plan[None]:
        session = yield from self._session()
        ids = list(patches)
        for chunk in chunks(ids, min(_SET_CHUNK, session.max_objects_in_set)):
            reply = yield from self._invoke("Email/set", {"update": {i: patches[i] for i in chunk}})
            check_set(reply, "notUpdated", self.context)

    def set_flags(
        self, ids: Sequence[str], *, add: Iterable[str], remove: Iterable[str]
    ) -> Plan[None]:
        """Patch ``keywords/...`` on each message."""
        patch = keyword_patch(add, remove)
        for message_id in ids:
            check_id(message_id)
        if patch:
            yield from self._update(dict.fromkeys(ids, patch))

    def move(self, ids: Sequence[str], folder: str) -> Plan[None]:
        """Move bare ids: each is then in that mailbox only."""
        yield from self.move_from(ids, [None] * len(ids), folder)

    def move_from(
        self, ids: Sequence[str], sources: Sequence[str | None], folder: str
    ) -> Plan[None]:
        """Take each message out of the mailbox it was read from (all of its mailboxes for a
        bare id) and into ``folder``."""
        target = yield from self._mailbox(folder)
        patches: dict[str, dict[str, Any]] = {}
        for message_id, source in zip(ids, sources, strict=True):
            check_id(message_id)
            origin = None
            if source is not None:
                origin = find_mailbox(
                    (yield from self._known_mailboxes()).values(), canonical_folder(source)
                )
            if origin is None:
                patches[message_id] = {"mailboxIds": {target.id: True}}
            elif origin.id != target.id:
                patches[message_id] = {
                    f"mailboxIds/{pointer(origin.id)}": None,
                    f"mailboxIds/{pointer(target.id)}": True,
                }
        if patches:
            yield from self._update(patches)

    def delete(self, ids: Sequence[str], *, permanent: bool) -> Plan[None]:
        """To the trash mailbox; destroyed when ``permanent``, when already in the trash
        only, or when the account has no trash."""
        for message_id in ids:
            check_id(message_id)
        boxes = yield from self._known_mailboxes()
        trash = next((b for b in boxes.values() if (b.role or "").lower() == "trash"), None)
        doomed = list(ids)
        if not permanent and trash is not None:
            where = yield from self._get_emails(ids, ["id", "mailboxIds"])
            found = {item.get("id"): item.get("mailboxIds") for item in where}
            missing = [i for i in ids if i not in found]
            if missing:
                raise MessageNotFound(f"{self.context}: no message {missing[0]!r}")
            doomed = [i for i in ids if found[i] == {trash.id: True}]
            moving = {i: {"mailboxIds": {trash.id: True}} for i in ids if i not in doomed}
            if moving:
                yield from self._update(moving)
        session = yield from self._session()
        for chunk in chunks(doomed, min(_SET_CHUNK, session.max_objects_in_set)):
            reply = yield from self._invoke("Email/set", {"destroy": chunk})
            check_set(reply, "notDestroyed", self.context)

    def append(self, folder: str, raw: bytes, flags: Iterable[str]) -> Plan[str | None]:
        """Upload the message and ``Email/import`` it into the folder; returns its id."""
        box = yield from self._mailbox(folder)
        keywords = {keyword_of(flag): True for flag in flags}
        session = yield from self._session()
        blob = yield from self._upload(crlf_bytes(raw), session.account_id)
        reply = yield from self._invoke(
            "Email/import",
            {"emails": {"a": {"blobId": blob, "mailboxIds": {box.id: True}, "keywords": keywords}}},
            once=True,
        )
        problem = not_created(reply, "a")
        existing = problem.details.get("existingId")
        if problem.type == "alreadyExists" and isinstance(existing, str):
            # The server keeps one Email per content (RFC 8621 4.8): that one is put in the
            # folder too, with the flags, as if it had been stored again.
            patch = {f"mailboxIds/{pointer(box.id)}": True}
            patch |= {f"keywords/{pointer(keyword)}": True for keyword in keywords}
            yield from self._update({existing: patch})
            return existing
        return created_id(reply, "a", "Email/import", self.context)


# -- pure helpers ------------------------------------------------------------------------------
