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

This module holds the plans (:class:`GraphAPI`); what Graph's JSON means (errors, flags,
folders, filters, messages) is :mod:`mailsync.protocol.graph_wire`'s. Both are pure: they
build requests and read replies, and never do I/O themselves.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

from mailsync._base import SendResult, SyncStep
from mailsync._envelope import Envelope
from mailsync._errors import (
    FolderNotFound,
    ProtocolError,
    Unsupported,
)
from mailsync._message import Folder, Message, header_block
from mailsync._plans import Call, Emit, Plan
from mailsync._query import Q
from mailsync.protocol.graph_wire import (
    NAME,
    SIZE_PROPERTY,
    WELL_KNOWN,
    FolderInfo,
    GraphDialect,
    check_id,
    crlf,
    flag_patch,
    folder_info,
    item_id,
    message_from_headers,
    message_of,
    native_filter,
    seg,
    sync_state_expired,
    user_path,
    well_known_id,
)
from mailsync.protocol.http import (
    APIClient,
    Auth,
    Request,
    RetryPolicy,
    call,
    call_all,
    call_all_skipping,
    field_of,
    json_of,
    optional_field,
    read_error_body,
)
from mailsync.protocol.mailapi import MailAPI, canonical_folder, chunks

__all__ = ["GraphAPI"]

GRAPH_ROOT = "https://graph.microsoft.com/v1.0"
_IMMUTABLE = 'IdType="ImmutableId"'
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
    recipients_from_headers: ClassVar[bool] = True

    def __init__(self, endpoint: Any) -> None:
        super().__init__(endpoint)
        self._client = APIClient(
            Auth(endpoint), GraphDialect(), RetryPolicy.from_params(endpoint.params)
        )
        self.user = user_path(endpoint.username, endpoint.host)
        self._folders: dict[str, FolderInfo] | None = None
        self._by_id: dict[str, FolderInfo] = {}
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

    def _load_folders(self) -> Plan[dict[str, FolderInfo]]:
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
        folders: dict[str, FolderInfo] = {}
        level: list[tuple[str | None, str]] = [(None, "")]  # (folder id, its name)
        while level:
            listings = [self._folder_listing(parent) for parent, _ in level]
            pages = yield from self._all_pages(listings)
            next_level: list[tuple[str | None, str]] = []
            for (_, parent_name), items in zip(level, pages, strict=True):
                for item in items:
                    info = folder_info(item, parent_name, inbox_id, special)
                    folders.setdefault(info.name.lower(), info)
                    if info.children:
                        next_level.append((info.id, info.name))
            level = next_level
        self._folders = folders
        self._by_id = {info.id: info for info in folders.values()}
        return folders

    def _folder_listing(self, parent: str | None) -> Request:
        path = "mailFolders" if parent is None else f"mailFolders/{seg(parent)}/childFolders"
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
        well_known = well_known_id(name)
        if well_known is not None:
            return well_known, "INBOX"
        key = canonical_folder(name).lower()
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
            f"mailFolders/{seg(folder_id)}/messages",
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
            return [message_from_headers(item, folder) for item in items]
        messages: list[Message] = []
        for batch in chunks(items, self.concurrency):
            requests = [self._mime_request(item_id(item)) for item in batch]
            replies = yield from call_all(self._client, requests, allow=(404,))
            for item, reply in zip(batch, replies, strict=True):
                if reply.status == 404:
                    continue  # deleted between the listing and the download
                messages.append(message_of(item, reply.content, folder))
        return messages

    def _mime_request(self, message_id: str) -> Request:
        return self._get(
            f"messages/{seg(message_id)}/$value",
            what="download a message",
            max_bytes=self.max_message_size,
        )

    def get(self, id: str) -> Plan[Message]:
        """One message by its (immutable) id."""
        check_id(id)
        escaped = seg(id)
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
        return message_of(item, mime_reply.content, folder)

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
            f"mailFolders/{seg(folder_id)}/messages/delta",
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
        for batch in chunks([message_id for _, message_id in fresh], self.concurrency):
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
                if sync_state_expired(reply):
                    return None
                body = read_error_body(reply)
                raise self._client.dialect.error(next_request, reply, body)
            data = json_of(reply, next_request.label, name=NAME)
            for item in field_of(data, "value", list, next_request.label, name=NAME):
                if not isinstance(item, dict) or "@removed" in item:
                    continue
                created[item_id(item)] = str(item.get("receivedDateTime") or "")
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
        """Whole messages by id, with their flags, for ``sync()``: any deleted meanwhile is
        left out, and so is any over ``max_message_size``, with a warning
        (:meth:`~mailsync.protocol.mailapi.MailAPI.skip_too_large`)."""
        requests: list[Request] = []
        for message_id in ids:
            requests.append(self._get(f"messages/{seg(message_id)}", ("$select", _META)))
            requests.append(self._mime_request(message_id))
        replies = yield from call_all_skipping(
            self._client,
            requests,
            lambda i, error: self.skip_too_large(ids[i // 2], error),
            allow=(404,),
        )
        messages = []
        for index in range(0, len(replies), 2):
            meta, mime = replies[index], replies[index + 1]
            if meta is None or mime is None or meta.status == 404 or mime.status == 404:
                continue
            messages.append(
                message_of(json_of(meta, "read a message", name=NAME), mime.content, folder)
            )
        return messages

    # -- changing ------------------------------------------------------------------------------

    def set_flags(
        self, ids: Sequence[str], *, add: Iterable[str], remove: Iterable[str]
    ) -> Plan[None]:
        """PATCH ``isRead`` and ``flag``; Graph keeps no other IMAP flag."""
        patch = flag_patch(add, remove)
        for message_id in ids:
            check_id(message_id)
        requests = [
            Request(
                "PATCH",
                f"{self.user}/messages/{seg(message_id)}",
                headers={"Prefer": _IMMUTABLE},
                json=patch,
                what="change flags",
            )
            for message_id in ids
        ]
        for batch in chunks(requests, self.concurrency):
            yield from call_all(self._client, batch)

    def move(self, ids: Sequence[str], folder: str) -> Plan[None]:
        """``/move`` each message to the folder."""
        folder_id, _ = yield from self._folder(folder)
        yield from self._move(ids, folder_id)

    def _move(self, ids: Sequence[str], destination: str) -> Plan[None]:
        for message_id in ids:
            check_id(message_id)
        requests = [
            self._post(
                f"messages/{seg(message_id)}/move",
                json={"destinationId": destination},
                what="move a message",
            )
            for message_id in ids
        ]
        for batch in chunks(requests, self.concurrency):
            yield from call_all(self._client, batch)

    def delete(self, ids: Sequence[str], *, permanent: bool) -> Plan[None]:
        """Move to Deleted Items, or ``/permanentDelete``."""
        if not permanent:
            yield from self._move(ids, "deleteditems")
            return
        for message_id in ids:
            check_id(message_id)
        requests = [
            self._post(f"messages/{seg(message_id)}/permanentDelete", what="delete a message")
            for message_id in ids
        ]
        for batch in chunks(requests, self.concurrency):
            yield from call_all(self._client, batch)

    def append(self, folder: str, raw: bytes, flags: Iterable[str]) -> Plan[str | None]:
        """Create the message in the folder from its MIME, then set its flags."""
        folder_id, name = yield from self._folder(folder)
        wanted = set(flags)
        patch = flag_patch(wanted - {"\\Draft"}, ())  # Graph makes it a draft regardless
        request = self._post(
            f"mailFolders/{folder_id}/messages",
            mime=crlf(raw),
            what=f"store a message in {name!r}",
        )
        created = yield from self._call(request, not_found=FolderNotFound)
        message_id = field_of(created, "id", str, request.label, name=NAME)
        if patch:
            update = Request(
                "PATCH",
                f"{self.user}/messages/{seg(message_id)}",
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
