"""Microsoft Graph (Outlook.com, Microsoft 365) as a mailsync backend: the protocol logic.

Every operation is a plan (:mod:`mailsync._plans`) built from Graph's REST calls, run by the
generic API backends (:mod:`mailsync.backends._api`) over httpx. What maps to what:

- Account: ``graph://me`` is the signed-in user (``/me``); ``graph://user@tenant.example``
  is that mailbox (``/users/user@tenant.example``, for application permissions or delegated
  access). Every request asks for immutable ids (``Prefer: IdType="ImmutableId"``), so
  :attr:`Message.id` stays the same when a message moves between folders.
- Folders: ``mailFolders`` and their ``childFolders``, every page, hidden folders left out.
  A folder's name is its path of display names joined with ``/``; the Inbox is ``"INBOX"``
  (its children ``"INBOX/Receipts"``), and names are looked up case-insensitively, as Exchange
  compares them. Special use comes from the well-known folder names (``sentitems`` is
  ``\\Sent``, ``deleteditems`` ``\\Trash``, ``drafts``, ``junkemail`` ``\\Junk``,
  ``archive``).
- Messages: listed oldest first (``$orderby=receivedDateTime``), page by page, the MIME of
  each downloaded through ``/$value`` a few at a time (at most ``concurrency`` requests, four
  by default: Graph's limit per mailbox), so memory holds one page of metadata and a handful
  of messages however large the folder. The size comes from the ``PidTagMessageSize``
  extended property. ``headers_only`` reads ``internetMessageHeaders`` and downloads no MIME
  (a message without transport headers, such as a draft, gets a header block built from its
  properties). Flags: ``isRead`` is ``\\Seen``, ``flag.flagStatus == "flagged"`` is
  ``\\Flagged``, ``isDraft`` is ``\\Draft``; categories are :attr:`Message.labels`; the
  ``conversationId`` is :attr:`Message.thread_id`.
- Queries: ``$filter`` narrows on what OData says exactly (read and flagged state) and on
  what is safe to over-approximate (``since``: received no earlier than a day before, as a
  message arrives after it is dated); Graph's ``$search`` matches words, not substrings, so
  text criteria and the rest are evaluated client-side (:meth:`mailsync.Q.matches`), and every
  backend returns the same messages for the same ``Q``. With ``$filter`` Graph requires the
  ``$orderby`` property to be filtered first, so the filter always starts with it.
- ``sync()``: the folder's delta query (``messages/delta?changeType=created``), followed
  through ``@odata.nextLink`` to the ``@odata.deltaLink`` that is the cursor. The ids of a
  round are collected first (small), then the new messages are downloaded oldest first; the
  new deltaLink is saved only after the round's last message, so an interrupted round runs
  again and the delivered identities (the immutable ids) keep it from yielding anything twice.
  An expired token (410 Gone, or ``syncStateNotFound``) starts a new round from scratch under
  the same rule.
- ``watch()``: polls the delta query every ``poll_interval`` (change notifications need a
  public webhook endpoint, which a library cannot assume).
- Changes: ``set_flags`` PATCHes ``isRead``/``flag`` (Graph has no IMAP keywords: other flags
  are :class:`~mailsync.Unsupported`); ``move`` is ``/move``; ``delete`` moves to Deleted Items
  unless ``permanent`` (``/permanentDelete``); ``append`` creates the message in the folder from
  its MIME (base64, ``Content-Type: text/plain``). Graph stores a message created that way as a
  draft (``\\Draft``): the extended property that would say otherwise cannot be set with MIME.
- Sending: ``/sendMail`` with the MIME, base64, saved to Sent Items. Graph takes the
  recipients from the message's To, Cc and Bcc (and removes Bcc); it has no DSN parameters.

This module is pure: it builds requests and reads replies, and never does I/O itself.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import quote

from mailsync._base import SendResult, SyncStep
from mailsync._envelope import Envelope
from mailsync._errors import (
    ConfigError,
    FolderNotFound,
    MailsyncError,
    MessageNotFound,
    ProtocolError,
    ServerError,
    Unsupported,
)
from mailsync._message import Folder, Message, header_block
from mailsync._plans import Call, Emit, Plan
from mailsync._query import Q, as_datetime
from mailsync.protocol.http import (
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
    optional_field,
    read_error_body,
)
from mailsync.protocol.mailapi import COMMON_OPTIONS, MailAPI, whole_number_option

__all__ = ["GraphAPI", "GraphDialect"]

GRAPH_ROOT = "https://graph.microsoft.com/v1.0"
NAME = "Microsoft Graph"
#: PidTagMessageSize, the only place Graph v1.0 tells a message's size.
SIZE_PROPERTY = "Integer 0x0E08"
_IMMUTABLE = 'IdType="ImmutableId"'
#: Well-known folder names and the special use they stand for.
WELL_KNOWN: dict[str, str | None] = {
    "inbox": None,
    "sentitems": "\\Sent",
    "deleteditems": "\\Trash",
    "drafts": "\\Drafts",
    "junkemail": "\\Junk",
    "archive": "\\Archive",
}
_META = (
    "id,receivedDateTime,sentDateTime,isRead,isDraft,flag,categories,conversationId,parentFolderId"
)
_HEADER_FIELDS = (
    ",internetMessageHeaders,subject,from,sender,toRecipients,ccRecipients,replyTo,"
    "internetMessageId"
)
_EXPAND_SIZE = f"singleValueExtendedProperties($filter=id eq '{SIZE_PROPERTY}')"
#: Messages listed per page (Graph allows up to 1000; a page's metadata is what is held).
_PAGE = 100
_HEADERS_PAGE = 50
_FOLDER_PAGE = 100
_DELTA_PAGE = 200
#: The default bound on one message's MIME (``max_message_size`` changes it, None: none).
MAX_MESSAGE_SIZE = 256 * 1024 * 1024
#: Error codes that mean "no such item" whatever the status (an id that is not an id is
#: no such message either).
_NOT_FOUND_CODES = frozenset({"ErrorItemNotFound", "ErrorInvalidIdMalformed", "ErrorInvalidId"})
_THROTTLE_CODES = frozenset(
    {"ApplicationThrottled", "TooManyRequests", "MailboxConcurrency", "activityLimitReached"}
)
_EXPIRED_SYNC_CODES = frozenset(
    {"syncstatenotfound", "syncstateinvalid", "resyncrequired", "errorinvalidsyncstatedata"}
)
_FLAG_PROPERTIES = frozenset({"\\Seen", "\\Flagged"})


class GraphDialect(Dialect):
    """Graph's errors: ``{"error": {"code", "message"}}``; throttling is 429, or 503 with a
    ``Retry-After``; an id Graph cannot read is no such item."""

    name = NAME

    def is_rate_limit(self, response: Response, body: ErrorBody) -> bool:
        """429, a throttling code, or 503 with a Retry-After (the issue's "back off")."""
        if response.status == 429 or body.code in _THROTTLE_CODES:
            return True
        return response.status == 503 and "retry-after" in response.headers

    def error(
        self,
        request: Request,
        response: Response,
        body: ErrorBody,
        *,
        not_found: type[ServerError] = MessageNotFound,
    ) -> MailsyncError:
        """The mailsync error for a final Graph error reply."""
        if body.code in _NOT_FOUND_CODES and response.status in (400, 404):
            detail = f"{self.name}: {request.label}: HTTP {response.status} {body.code}"
            return not_found(f"{detail}: {body.message}" if body.message else detail)
        return super().error(request, response, body, not_found=not_found)


@dataclass(frozen=True, slots=True)
class _FolderInfo:
    id: str
    name: str
    special_use: str | None
    children: int


def _well_known_id(name: str) -> str | None:
    """The well-known folder an account-relative name stands for, if any (INBOX only: other
    names are the user's own, whatever their display name)."""
    return "inbox" if name.upper() == "INBOX" else None


class GraphAPI(MailAPI):
    """Microsoft Graph's mail API as plans (see the module docstring).

    Options: ``base_url`` (the API root, default ``https://graph.microsoft.com/v1.0``; a
    sovereign cloud's, or a test server's), ``concurrency`` (default 4), ``retries`` and
    ``retry_delay`` (throttling), ``max_message_size`` (bytes; None for no bound).
    """

    name: ClassVar[str] = NAME
    scheme: ClassVar[str] = "graph"
    capabilities: ClassVar[frozenset[str]] = frozenset(
        {"folders", "flags", "move", "delete", "append", "labels", "threads"}
    )
    default_base_url: ClassVar[str] = GRAPH_ROOT
    max_concurrency: ClassVar[int | None] = 4  # Graph's documented limit per mailbox
    options: ClassVar[frozenset[str]] = COMMON_OPTIONS | {"max_message_size"}
    recipients_from_headers: ClassVar[bool] = True

    def __init__(self, endpoint: Any) -> None:
        super().__init__(endpoint)
        self._client = APIClient(
            Auth(endpoint), GraphDialect(), RetryPolicy.from_params(endpoint.params)
        )
        self.user = _user_path(endpoint.username, endpoint.host)
        self.max_message_size = whole_number_option(
            endpoint.params, "max_message_size", MAX_MESSAGE_SIZE, none_allowed=True
        )
        self._folders: dict[str, _FolderInfo] | None = None
        self._by_id: dict[str, _FolderInfo] = {}
        self._well_known: dict[str, str] = {}

    @property
    def client(self) -> APIClient:
        """Authorization, Graph's error dialect and the retry policy."""
        return self._client

    @property
    def context(self) -> str:
        """How error messages name this mailbox."""
        return f"{NAME} ({self.user.removeprefix('users/')})"

    # -- requests ------------------------------------------------------------------------------

    def _get(self, path: str, *params: tuple[str, str], what: str = "", **extra: Any) -> Request:
        url = path if path.startswith(("https://", "http://")) else f"{self.user}/{path}"
        headers = {"Prefer": _IMMUTABLE, **extra.pop("headers", {})}
        return Request("GET", url, params=params, headers=headers, what=what, **extra)

    def _post(
        self,
        path: str,
        *,
        what: str,
        json: Any = None,
        mime: bytes | None = None,
    ) -> Request:
        headers = {"Prefer": _IMMUTABLE}
        content = None
        if mime is not None:
            headers["Content-Type"] = "text/plain"
            content = base64.b64encode(mime)
        return Request(
            "POST", f"{self.user}/{path}", headers=headers, json=json, content=content, what=what
        )

    def _call(self, request: Request, **options: Any) -> Plan[Any]:
        response = yield from call(self._client, request, **options)
        return json_of(response, request.label, name=NAME)

    # -- folders -------------------------------------------------------------------------------

    def _load_folders(self) -> Plan[dict[str, _FolderInfo]]:
        """Every visible folder by lower-cased name, and the well-known folders' ids."""
        wanted = list(WELL_KNOWN)
        requests = [
            self._get(f"mailFolders/{name}", ("$select", "id"), what=f"find the {name} folder")
            for name in wanted
        ]
        replies = yield from call_all(self._client, requests, allow=(404,))
        special: dict[str, str | None] = {}
        for name, reply in zip(wanted, replies, strict=True):
            if reply.status == 404:
                continue  # an account without an Archive folder, say
            folder_id = field_of(json_of(reply, "mail folder", name=NAME), "id", str, name)
            self._well_known[name] = folder_id
            special[folder_id] = WELL_KNOWN[name]
        inbox_id = self._well_known.get("inbox")
        folders: dict[str, _FolderInfo] = {}
        level: list[tuple[str | None, str]] = [(None, "")]  # (folder id, its name)
        while level:
            listings = [self._folder_listing(parent) for parent, _ in level]
            pages = yield from self._all_pages(listings)
            next_level: list[tuple[str | None, str]] = []
            for (_, parent_name), items in zip(level, pages, strict=True):
                for item in items:
                    info = _folder_info(item, parent_name, inbox_id, special)
                    folders.setdefault(info.name.lower(), info)
                    if info.children:
                        next_level.append((info.id, info.name))
            level = next_level
        self._folders = folders
        self._by_id = {info.id: info for info in folders.values()}
        return folders

    def _folder_listing(self, parent: str | None) -> Request:
        path = "mailFolders" if parent is None else f"mailFolders/{_seg(parent)}/childFolders"
        return self._get(
            path,
            ("$top", str(_FOLDER_PAGE)),
            ("$select", "id,displayName,parentFolderId,childFolderCount,isHidden"),
            what="list folders",
        )

    def _all_pages(self, requests: list[Request]) -> Plan[list[list[Any]]]:
        """Every item of several paged listings, fetched side by side."""
        results: list[list[Any]] = [[] for _ in requests]
        pending = list(enumerate(requests))
        while pending:
            replies = yield from call_all(self._client, [request for _, request in pending])
            following = []
            for (index, request), reply in zip(pending, replies, strict=True):
                data = json_of(reply, request.label, name=NAME)
                results[index] += field_of(data, "value", list, request.label, name=NAME)
                link = optional_field(data, "@odata.nextLink", str, request.label, name=NAME)
                if link:
                    following.append((index, self._get(link, what=request.what)))
            pending = following
        return results

    def folders(self) -> Plan[list[Folder]]:
        """Every visible folder, INBOX first, then by name."""
        folders = yield from self._load_folders()
        infos = sorted(folders.values(), key=lambda f: (f.name != "INBOX", f.name.lower()))
        return [
            Folder(
                info.name,
                delimiter="/",
                special_use=info.special_use,
                flags=frozenset({"\\HasChildren" if info.children else "\\HasNoChildren"}),
            )
            for info in infos
        ]

    def _folder(self, name: str) -> Plan[tuple[str, str]]:
        """The id and canonical name of a folder given by name."""
        well_known = _well_known_id(name)
        if well_known is not None:
            return well_known, "INBOX"
        key = _canonical_name(name).lower()
        folders = self._folders
        if folders is None or key not in folders:
            folders = yield from self._load_folders()  # it may be new since the last look
        info = folders.get(key)
        if info is None:
            raise FolderNotFound(f"{self.context}: no folder {name!r}")
        return info.id, info.name

    def _folder_name(self, folder_id: str | None) -> Plan[str]:
        """The name of the folder with this id (reloading the tree once if unknown)."""
        if not folder_id:
            return ""
        if folder_id not in self._by_id:
            yield from self._load_folders()
        info = self._by_id.get(folder_id)
        return info.name if info else folder_id

    # -- reading -------------------------------------------------------------------------------

    def messages(
        self, folder: str, *, query: Q | None, headers_only: bool, limit: int | None
    ) -> Plan[None]:
        """Emit the folder's messages oldest first (see the module docstring)."""
        folder_id, name = yield from self._folder(folder)
        page = _HEADERS_PAGE if headers_only else _PAGE
        if limit is not None and query is None:
            page = max(1, min(page, limit))
        select = _META + (_HEADER_FIELDS if headers_only else "")
        params = [
            ("$select", select),
            ("$orderby", "receivedDateTime asc"),
            ("$top", str(page)),
            ("$expand", _EXPAND_SIZE),
        ]
        clauses = native_filter(query)
        if clauses:
            params.append(("$filter", " and ".join(clauses)))
        needs_body = not headers_only or (query is not None and query.needs_body)
        request = self._get(
            f"mailFolders/{_seg(folder_id)}/messages",
            *params,
            what=f"list the messages of {name!r}",
        )
        count = 0
        next_request: Request | None = request
        while next_request is not None:
            data = yield from self._call(next_request, not_found=FolderNotFound)
            items = field_of(data, "value", list, next_request.label, name=NAME)
            link = optional_field(data, "@odata.nextLink", str, next_request.label, name=NAME)
            next_request = self._get(link, what=request.what) if link else None
            for message in (yield from self._materialize(items, name, needs_body)):
                if headers_only and not message.headers_only:
                    message = message.replace(raw=header_block(message.raw), headers_only=True)
                if query is not None and not query.matches(message):
                    continue
                yield Emit(message)
                count += 1
                if limit is not None and count >= limit:
                    return

    def _materialize(self, items: list[Any], folder: str, with_body: bool) -> Plan[list[Message]]:
        """Messages for listed items: with their MIME (downloaded ``concurrency`` at a time,
        skipping any deleted meanwhile) or with their headers only."""
        if not with_body:
            return [_message_from_headers(item, folder) for item in items]
        messages: list[Message] = []
        for batch in _chunks(items, self.concurrency):
            requests = [self._mime_request(_item_id(item)) for item in batch]
            replies = yield from call_all(self._client, requests, allow=(404,))
            for item, reply in zip(batch, replies, strict=True):
                if reply.status == 404:
                    continue  # deleted between the listing and the download
                messages.append(_message(item, reply.content, folder))
        return messages

    def _mime_request(self, message_id: str) -> Request:
        return self._get(
            f"messages/{_seg(message_id)}/$value",
            what="download a message",
            max_bytes=self.max_message_size,
        )

    def get(self, id: str) -> Plan[Message]:
        """One message by its (immutable) id."""
        _check_id(id)
        escaped = _seg(id)
        meta = self._get(
            f"messages/{escaped}",
            ("$select", _META),
            ("$expand", _EXPAND_SIZE),
            what="read a message",
        )
        info_reply, mime_reply = yield from call_all(self._client, [meta, self._mime_request(id)])
        item = json_of(info_reply, meta.label, name=NAME)
        folder = yield from self._folder_name(
            optional_field(item, "parentFolderId", str, "message")
        )
        return _message(item, mime_reply.content, folder)

    # -- sync ----------------------------------------------------------------------------------

    def sync_steps(
        self,
        folder: str,
        cursor: dict[str, Any] | None,
        known: Callable[[Iterable[str]], set[str]],
    ) -> Plan[None]:
        """Emit what the delta query says was created since ``cursor`` (see the module doc)."""
        folder_id, name = yield from self._folder(folder)
        link = cursor.get("delta") if cursor else None
        start = self._get(
            f"mailFolders/{_seg(folder_id)}/messages/delta",
            ("$select", "id,receivedDateTime"),
            ("changeType", "created"),
            what=f"track the changes of {name!r}",
            headers={"Prefer": f"{_IMMUTABLE}, odata.maxpagesize={_DELTA_PAGE}"},
        )
        created: dict[str, str] = {}
        delta_link = None
        if isinstance(link, str):
            delta_link = yield from self._delta_round(self._delta_request(link, start), created)
        if delta_link is None:  # no cursor yet, or the server forgot it: a full round
            created.clear()
            delta_link = yield from self._delta_round(start, created)
            if delta_link is None:
                raise ProtocolError(f"{self.context}: a new delta round was refused as expired")
        identities = {message_id: f"graph:{message_id}" for message_id in created}
        delivered = yield Call(lambda: known(identities.values()))
        fresh = sorted(
            (when, message_id)
            for message_id, when in created.items()
            if identities[message_id] not in delivered
        )
        saved = {"v": 1, "delta": link} if isinstance(link, str) else {"v": 1}
        for batch in _chunks([message_id for _, message_id in fresh], self.concurrency):
            messages = yield from self._download(batch, name)
            for message in messages:
                yield Emit(SyncStep(message, saved, f"graph:{message.id}"))
        yield Emit(SyncStep(None, {"v": 1, "delta": delta_link}))

    def _delta_request(self, link: str, start: Request) -> Request:
        return self._get(link, what=start.what, headers={"Prefer": start.headers["Prefer"]})

    def _delta_round(self, request: Request, created: dict[str, str]) -> Plan[str | None]:
        """Follow a delta round to its deltaLink, noting created ids; None when the token has
        expired."""
        next_request: Request | None = request
        while next_request is not None:
            reply = yield from call(self._client, next_request, allow=(400, 410))
            if reply.status in (400, 410):
                if _sync_state_expired(reply):
                    return None
                body = read_error_body(reply)
                raise self._client.dialect.error(next_request, reply, body)
            data = json_of(reply, next_request.label, name=NAME)
            for item in field_of(data, "value", list, next_request.label, name=NAME):
                if not isinstance(item, dict) or "@removed" in item:
                    continue
                created[_item_id(item)] = str(item.get("receivedDateTime") or "")
            delta = optional_field(data, "@odata.deltaLink", str, next_request.label, name=NAME)
            if delta:
                return delta
            link = optional_field(data, "@odata.nextLink", str, next_request.label, name=NAME)
            if not link:
                raise ProtocolError(
                    f"{self.context}: {next_request.label}: a delta page with neither "
                    "@odata.nextLink nor @odata.deltaLink"
                )
            next_request = self._delta_request(link, request)
        return None

    def _download(self, ids: Sequence[str], folder: str) -> Plan[list[Message]]:
        """Whole messages by id, with their flags; any deleted meanwhile is left out."""
        requests: list[Request] = []
        for message_id in ids:
            requests.append(self._get(f"messages/{_seg(message_id)}", ("$select", _META)))
            requests.append(self._mime_request(message_id))
        replies = yield from call_all(self._client, requests, allow=(404,))
        messages = []
        for index in range(0, len(replies), 2):
            meta, mime = replies[index], replies[index + 1]
            if meta.status == 404 or mime.status == 404:
                continue
            messages.append(
                _message(json_of(meta, "read a message", name=NAME), mime.content, folder)
            )
        return messages

    # -- changing ------------------------------------------------------------------------------

    def set_flags(
        self, ids: Sequence[str], *, add: Iterable[str], remove: Iterable[str]
    ) -> Plan[None]:
        """PATCH ``isRead`` and ``flag``; Graph keeps no other IMAP flag."""
        patch = flag_patch(add, remove)
        for message_id in ids:
            _check_id(message_id)
        requests = [
            Request(
                "PATCH",
                f"{self.user}/messages/{_seg(message_id)}",
                headers={"Prefer": _IMMUTABLE},
                json=patch,
                what="change flags",
            )
            for message_id in ids
        ]
        for batch in _chunks(requests, self.concurrency):
            yield from call_all(self._client, batch)

    def move(self, ids: Sequence[str], folder: str) -> Plan[None]:
        """``/move`` each message to the folder."""
        folder_id, _ = yield from self._folder(folder)
        yield from self._move(ids, folder_id)

    def _move(self, ids: Sequence[str], destination: str) -> Plan[None]:
        for message_id in ids:
            _check_id(message_id)
        requests = [
            self._post(
                f"messages/{_seg(message_id)}/move",
                json={"destinationId": destination},
                what="move a message",
            )
            for message_id in ids
        ]
        for batch in _chunks(requests, self.concurrency):
            yield from call_all(self._client, batch)

    def delete(self, ids: Sequence[str], *, permanent: bool) -> Plan[None]:
        """Move to Deleted Items, or ``/permanentDelete``."""
        if not permanent:
            yield from self._move(ids, "deleteditems")
            return
        for message_id in ids:
            _check_id(message_id)
        requests = [
            self._post(f"messages/{_seg(message_id)}/permanentDelete", what="delete a message")
            for message_id in ids
        ]
        for batch in _chunks(requests, self.concurrency):
            yield from call_all(self._client, batch)

    def append(self, folder: str, raw: bytes, flags: Iterable[str]) -> Plan[str | None]:
        """Create the message in the folder from its MIME, then set its flags."""
        folder_id, name = yield from self._folder(folder)
        wanted = set(flags)
        patch = flag_patch(wanted - {"\\Draft"}, ())  # Graph makes it a draft regardless
        request = self._post(
            f"mailFolders/{folder_id}/messages",
            mime=_crlf(raw),
            what=f"store a message in {name!r}",
        )
        created = yield from self._call(request, not_found=FolderNotFound)
        message_id = field_of(created, "id", str, request.label, name=NAME)
        if patch:
            update = Request(
                "PATCH",
                f"{self.user}/messages/{_seg(message_id)}",
                headers={"Prefer": _IMMUTABLE},
                json=patch,
                what="set the flags of a stored message",
            )
            yield from call(self._client, update)
        return message_id

    # -- sending -------------------------------------------------------------------------------

    def send(
        self,
        envelope: Envelope,
        *,
        notify: Iterable[str] | str | None,
        ret: str | None,
        envid: str | None,
    ) -> Plan[SendResult]:
        """``/sendMail`` with the MIME (Bcc kept: Graph removes it), saved to Sent Items."""
        if notify is not None or ret is not None or envid is not None:
            raise Unsupported(
                f"{NAME} has no delivery status notification parameters (notify, ret, envid)"
            )
        request = self._post("sendMail", mime=envelope.data, what="send a message")
        yield from call(self._client, request)
        return SendResult(message_id=envelope.message_id, accepted=envelope.recipients)


# -- pure helpers ----------------------------------------------------------------------------


def _user_path(username: str | None, host: str) -> str:
    """``me``, or ``users/{address}`` for another mailbox."""
    if not username and host.lower() in ("", "me"):
        return "me"
    address = (
        f"{username}@{host}" if username and host and "@" not in username else (username or host)
    )
    if any(ch in address for ch in "/?#\r\n") or not address.strip():
        raise ConfigError(f"graph://{address}: not a mailbox address or 'me'")
    return f"users/{quote(address, safe='@')}"


def _canonical_name(name: str) -> str:
    """``Inbox/Receipts`` and ``inbox/Receipts`` are under the INBOX."""
    head, sep, rest = name.partition("/")
    return f"INBOX{sep}{rest}" if head.upper() == "INBOX" else name


def _folder_info(
    item: Any, parent_name: str, inbox_id: str | None, special: dict[str, str | None]
) -> _FolderInfo:
    folder_id = field_of(item, "id", str, "mail folder", name=NAME)
    display = optional_field(item, "displayName", str, "mail folder", name=NAME) or folder_id
    if folder_id == inbox_id:
        name = "INBOX"
    else:
        name = f"{parent_name}/{display}" if parent_name else display
    children = optional_field(item, "childFolderCount", int, "mail folder", name=NAME) or 0
    return _FolderInfo(folder_id, name, special.get(folder_id), children)


def _item_id(item: Any) -> str:
    return field_of(item, "id", str, "message", name=NAME)


def _check_id(message_id: str) -> None:
    if not message_id or any(ch in message_id for ch in "/?#\r\n\0"):
        raise MessageNotFound(f"{NAME}: {message_id!r} is not a Graph message id")


def _seg(value: str) -> str:
    """An id as one URL path segment (Graph ids may hold ``/``, ``+`` or ``=``)."""
    return quote(value, safe="")


def _chunks(items: Sequence[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _crlf(raw: bytes) -> bytes:
    import re

    return re.sub(rb"\r\n|\r|\n", b"\r\n", raw)


def _datetime(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def flags_of(item: Any) -> frozenset[str]:
    """IMAP-spelled flags from a message resource."""
    flags = set()
    if item.get("isRead"):
        flags.add("\\Seen")
    flag = item.get("flag")
    if isinstance(flag, dict) and flag.get("flagStatus") == "flagged":
        flags.add("\\Flagged")
    if item.get("isDraft"):
        flags.add("\\Draft")
    return frozenset(flags)


def flag_patch(add: Iterable[str], remove: Iterable[str]) -> dict[str, Any]:
    """The PATCH body that adds and removes IMAP flags.

    Raises:
        Unsupported: A flag Graph has no property for.
    """
    adding, removing = set(add), set(remove)
    other = (adding | removing) - _FLAG_PROPERTIES
    if other:
        raise Unsupported(
            f"{NAME} keeps only \\Seen (isRead) and \\Flagged (flag) of the IMAP flags, not "
            + ", ".join(sorted(other))
        )
    patch: dict[str, Any] = {}
    if "\\Seen" in adding or "\\Seen" in removing:
        patch["isRead"] = "\\Seen" in adding
    if "\\Flagged" in adding or "\\Flagged" in removing:
        status = "flagged" if "\\Flagged" in adding else "notFlagged"
        patch["flag"] = {"flagStatus": status}
    return patch


def _size(item: Any) -> int | None:
    for prop in item.get("singleValueExtendedProperties") or ():
        if isinstance(prop, dict) and str(prop.get("id", "")).lower() == SIZE_PROPERTY.lower():
            value = prop.get("value")
            return int(value) if isinstance(value, str) and value.isdigit() else None
    return None


def _labels(item: Any) -> frozenset[str]:
    categories = item.get("categories")
    if not isinstance(categories, list):
        return frozenset()
    return frozenset(c for c in categories if isinstance(c, str))


def _message(item: Any, raw: bytes, folder: str) -> Message:
    thread = item.get("conversationId")
    return Message(
        raw,
        id=_item_id(item),
        folder=folder,
        flags=flags_of(item),
        size=_size(item) or len(raw),
        labels=_labels(item),
        thread_id=thread if isinstance(thread, str) else None,
        internal_date=_datetime(item.get("receivedDateTime")),
    )


def _message_from_headers(item: Any, folder: str) -> Message:
    headers = item.get("internetMessageHeaders")
    if isinstance(headers, list) and headers:
        lines = [
            f"{h.get('name')}: {h.get('value', '')}"
            for h in headers
            if isinstance(h, dict) and isinstance(h.get("name"), str)
        ]
    else:
        lines = list(_synthetic_headers(item))
    raw = ("\r\n".join(_one_line(line) for line in lines) + "\r\n\r\n").encode("utf-8")
    thread = item.get("conversationId")
    return Message(
        raw,
        id=_item_id(item),
        folder=folder,
        flags=flags_of(item),
        size=_size(item) or len(raw),
        labels=_labels(item),
        thread_id=thread if isinstance(thread, str) else None,
        headers_only=True,
        internal_date=_datetime(item.get("receivedDateTime")),
    )


def _one_line(line: str) -> str:
    # A header value from JSON may hold line breaks; a raw header block may not.
    return " ".join(line.replace("\r", " ").replace("\n", " ").split(" "))


def _synthetic_headers(item: Any) -> Iterator[str]:
    """A header block from a message's properties, for one without transport headers."""
    from email.header import Header
    from email.utils import format_datetime, formataddr

    def address(recipient: Any) -> str | None:
        email = recipient.get("emailAddress") if isinstance(recipient, dict) else None
        if not isinstance(email, dict) or not email.get("address"):
            return None
        return formataddr((str(email.get("name") or ""), str(email["address"])), "utf-8")

    def addresses(key: str) -> str:
        values = item.get(key) if isinstance(item.get(key), list) else []
        return ", ".join(a for a in map(address, values) if a)

    sender = address(item.get("from"))
    if sender:
        yield f"From: {sender}"
    for key, header in (("toRecipients", "To"), ("ccRecipients", "Cc"), ("replyTo", "Reply-To")):
        value = addresses(key)
        if value:
            yield f"{header}: {value}"
    subject = item.get("subject")
    if isinstance(subject, str) and subject:
        yield f"Subject: {Header(subject, 'utf-8').encode() if not subject.isascii() else subject}"
    sent = _datetime(item.get("sentDateTime"))
    if sent is not None:
        yield f"Date: {format_datetime(sent)}"
    message_id = item.get("internetMessageId")
    if isinstance(message_id, str) and message_id:
        yield f"Message-ID: {message_id}"


def native_filter(query: Q | None) -> list[str]:
    """``$filter`` clauses every message matching ``query`` satisfies (a superset: the
    caller still applies the query), the ``$orderby`` property first as Graph requires; empty
    when nothing can be narrowed."""
    if query is None:
        return []
    clauses = _implied(query)
    if not clauses:
        return []
    dated = [c for c in clauses if c.startswith("receivedDateTime")]
    rest = [c for c in clauses if not c.startswith("receivedDateTime")]
    first = dated or ["receivedDateTime ge 1900-01-01T00:00:00Z"]
    return [*first, *rest]


def _implied(query: Q) -> list[str]:
    if query.op == "and":
        return [clause for child in query.children for clause in _implied(child)]
    if query.op == "not":
        child = query.children[0]
        criteria = child.criteria()
        if child.op == "leaf" and len(criteria) == 1:
            ((name, value),) = criteria.items()
            if name in ("seen", "flagged"):
                return _flag_clause(name, not value)
        return []
    if query.op != "leaf":
        return []
    clauses: list[str] = []
    criteria = query.criteria()
    for name in ("seen", "flagged"):
        if name in criteria:
            clauses += _flag_clause(name, criteria[name])
    since = criteria.get("since")
    if since is not None:
        # Received no earlier than a day before the date: a message arrives after it is
        # dated, give or take a sender's wrong clock.
        bound = as_datetime(since).astimezone(UTC) - timedelta(days=1)
        clauses.append(f"receivedDateTime ge {bound.strftime('%Y-%m-%dT%H:%M:%SZ')}")
    return clauses


def _flag_clause(name: str, value: bool) -> list[str]:
    if name == "seen":
        return [f"isRead eq {'true' if value else 'false'}"]
    return [f"flag/flagStatus {'eq' if value else 'ne'} 'flagged'"]


def _sync_state_expired(reply: Response) -> bool:
    if reply.status == 410:
        return True
    code = (read_error_body(reply).code or "").lower()
    return code in _EXPIRED_SYNC_CODES
