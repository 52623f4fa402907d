"""An in-process fake of Microsoft Graph's mail API, for the Graph backend's tests.

No Graph server can run offline, so this fake plays one behind ``httpx`` (it is an httpx
transport: pass it as ``transport=``; the same instance serves ``Client`` and ``AsyncClient``).
It follows Microsoft's published behaviour where the backend depends on it:

- resources shaped as the v1.0 metadata declares them (:data:`MESSAGE_PROPERTIES`,
  :data:`FOLDER_PROPERTIES`; every object served is checked against them), ``$select``
  honoured (``id`` always returned), ``$expand`` of ``singleValueExtendedProperties`` for
  ``PidTagMessageSize``;
- ``/me`` and ``/users/{address}``; well-known folder names (``inbox``, ``sentitems``,
  ``deleteditems``, ``drafts``, ``junkemail``, ``archive``) in place of folder ids;
- ids that change when a message moves, unless the request says
  ``Prefer: IdType="ImmutableId"``;
- OData paging with ``$top`` and an opaque ``$skiptoken`` in ``@odata.nextLink``;
  ``$orderby=receivedDateTime``; a ``$filter`` subset (``receivedDateTime``, ``isRead``,
  ``flag/flagStatus``), refused with ``InefficientFilter`` when the ``$orderby`` property is
  not filtered first, as Graph does;
- the delta query per folder (``changeType``, ``odata.maxpagesize``, ``@odata.nextLink`` to
  ``@odata.deltaLink``, ``@removed`` entries), and 410 Gone for a token from before
  :meth:`FakeGraph.expire_delta_tokens`;
- ``$value`` MIME, creating a message from base64 MIME (as a draft, as Graph does), PATCH of
  ``isRead``/``flag``/``categories``, ``/move``, ``/permanentDelete``, ``DELETE``, ``/sendMail``
  (saved to Sent Items and delivered to the fake's own mailboxes, Bcc removed);
- Graph's error bodies (``{"error": {"code", "message"}}``): 401 ``InvalidAuthenticationToken``
  for a token it does not know, 404 ``ErrorItemNotFound``, 400 ``ErrorInvalidIdMalformed``,
  and 429 ``ApplicationThrottled`` with ``Retry-After`` when more than four requests for one
  mailbox are in flight, or when told to by :meth:`FakeGraph.throttle`.

Seeding goes through :meth:`FakeGraph.deliver` (the tests' LMTP), never through mailsync.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import itertools
import json
import re
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode

import httpx

ROOT = "https://graph.microsoft.com/v1.0"
SIZE_PROPERTY = "Integer 0x0E08"
#: The properties of graph.message (with those of outlookItem and entity), from the v1.0
#: metadata, and the JSON type each is served as.
MESSAGE_PROPERTIES: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "categories": list,
    "changeKey": str,
    "createdDateTime": str,
    "lastModifiedDateTime": str,
    "bccRecipients": list,
    "body": dict,
    "bodyPreview": str,
    "ccRecipients": list,
    "conversationId": str,
    "conversationIndex": str,
    "flag": dict,
    "from": (dict, type(None)),
    "hasAttachments": bool,
    "importance": str,
    "inferenceClassification": str,
    "internetMessageHeaders": list,
    "internetMessageId": str,
    "isDeliveryReceiptRequested": bool,
    "isDraft": bool,
    "isRead": bool,
    "isReadReceiptRequested": bool,
    "parentFolderId": str,
    "receivedDateTime": str,
    "replyTo": list,
    "sender": (dict, type(None)),
    "sentDateTime": (str, type(None)),
    "subject": str,
    "toRecipients": list,
    "uniqueBody": dict,
    "webLink": str,
    # Navigation properties that $expand brings in.
    "singleValueExtendedProperties": list,
}
#: The properties of graph.mailFolder.
FOLDER_PROPERTIES: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "childFolderCount": int,
    "displayName": str,
    "isHidden": bool,
    "parentFolderId": str,
    "totalItemCount": int,
    "unreadItemCount": int,
}
WELL_KNOWN = {
    "inbox": "Inbox",
    "sentitems": "Sent Items",
    "deleteditems": "Deleted Items",
    "drafts": "Drafts",
    "junkemail": "Junk Email",
    "archive": "Archive",
    "outbox": "Outbox",
}
_HIDDEN = {"conversationhistory": "Conversation History"}
_MAX_CONCURRENT = 4
_FILTER_CLAUSE = re.compile(r"^(receivedDateTime|isRead|flag/flagStatus) (eq|ne|ge|gt|le|lt) (.+)$")


class GraphError(Exception):
    """An error reply: status, code, message (and headers)."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def _new_id(prefix: str) -> str:
    return prefix + base64.urlsafe_b64encode(secrets.token_bytes(30)).decode().rstrip("=")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class FakeFolder:
    id: str
    display_name: str
    parent_id: str
    well_known: str | None = None
    hidden: bool = False


@dataclass
class FakeMessage:
    immutable_id: str
    rest_id: str
    folder_id: str
    mime: bytes
    received: datetime
    is_read: bool = False
    flag_status: str = "notFlagged"
    is_draft: bool = False
    categories: list[str] = field(default_factory=list)
    conversation_id: str = field(default_factory=lambda: _new_id("AAQk"))
    change_key: str = field(default_factory=lambda: _new_id("CQAA"))

    def parsed(self) -> email.message.EmailMessage:
        message = email.message_from_bytes(self.mime, policy=email.policy.default)
        assert isinstance(message, email.message.EmailMessage)
        return message


@dataclass
class Change:
    seq: int
    folder_id: str
    message: FakeMessage
    kind: str  # created, updated, deleted


class Mailbox:
    """One user's folders, messages and change log."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.root = FakeFolder(_new_id("AQMkRoot"), "Top of Information Store", "")
        self.folders: dict[str, FakeFolder] = {}
        for name, display in WELL_KNOWN.items():
            folder = FakeFolder(_new_id("AQMk"), display, self.root.id, well_known=name)
            self.folders[folder.id] = folder
        for name, display in _HIDDEN.items():
            folder = FakeFolder(_new_id("AQMk"), display, self.root.id, name, hidden=True)
            self.folders[folder.id] = folder
        self.messages: dict[str, FakeMessage] = {}
        self.changes: list[Change] = []
        self.seq = itertools.count(1)
        self.clock = itertools.count()

    def well_known(self, name: str) -> FakeFolder:
        for folder in self.folders.values():
            if folder.well_known == name:
                return folder
        raise GraphError(
            404, "ErrorItemNotFound", "The specified object was not found in the store."
        )

    def folder(self, key: str) -> FakeFolder:
        key = unquote(key)
        if key.lower() in WELL_KNOWN or key.lower() in _HIDDEN:
            return self.well_known(key.lower())
        if key == self.root.id or key.lower() == "msgfolderroot":
            return self.root
        folder = self.folders.get(key)
        if folder is None:
            if not key.startswith("AQMk"):
                raise GraphError(400, "ErrorInvalidIdMalformed", "Id is malformed.")
            raise GraphError(
                404, "ErrorItemNotFound", "The specified object was not found in the store."
            )
        return folder

    def add_folder(self, display_name: str, parent: FakeFolder | None = None) -> FakeFolder:
        folder = FakeFolder(_new_id("AQMk"), display_name, (parent or self.root).id)
        self.folders[folder.id] = folder
        return folder

    def message(self, key: str) -> FakeMessage:
        key = unquote(key)
        for message in self.messages.values():
            if key in (message.immutable_id, message.rest_id):
                return message
        if not key.startswith("AAMk"):
            raise GraphError(400, "ErrorInvalidIdMalformed", "Id is malformed.")
        raise GraphError(
            404, "ErrorItemNotFound", "The specified object was not found in the store."
        )

    def log(self, folder_id: str, message: FakeMessage, kind: str) -> None:
        self.changes.append(Change(next(self.seq), folder_id, message, kind))

    def store(self, folder: FakeFolder, mime: bytes, **state: Any) -> FakeMessage:
        # Arrival times strictly increase, as the store's clock would have it.
        received = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=next(self.clock))
        message = FakeMessage(_new_id("AAMk"), _new_id("AAMkR"), folder.id, mime, received, **state)
        self.messages[message.immutable_id] = message
        self.log(folder.id, message, "created")
        return message

    def move(self, message: FakeMessage, folder: FakeFolder) -> None:
        if folder.id == message.folder_id:
            return
        self.log(message.folder_id, message, "deleted")
        message.folder_id = folder.id
        message.rest_id = _new_id("AAMkR")  # a regular id changes when the item moves
        self.log(folder.id, message, "created")

    def remove(self, message: FakeMessage) -> None:
        del self.messages[message.immutable_id]
        self.log(message.folder_id, message, "deleted")


class FakeGraph(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """The fake service. ``token`` is the access token it accepts (change it to test refresh).

    Attributes:
        requests: ``(method, path)`` of every request received, in order.
        most_concurrent: The most requests for one mailbox seen in flight at once.
        latency: Seconds each request takes (to let concurrency show).
    """

    def __init__(self, address: str = "alice@contoso.test", token: str = "graph-token") -> None:  # noqa: S107
        self.me = address
        self.token = token
        self.mailboxes: dict[str, Mailbox] = {address.lower(): Mailbox(address)}
        self.requests: list[tuple[str, str]] = []
        self.most_concurrent = 0
        self.latency = 0.0
        self._in_flight: dict[str, int] = {}
        self._throttles: list[tuple[int, float]] = []
        self._delta_generation = 0
        self._lock = threading.RLock()

    # -- the tests' side ---------------------------------------------------------------------

    def mailbox(self, address: str | None = None) -> Mailbox:
        """The mailbox of ``address`` (the default user's by default), made on first use."""
        key = (address or self.me).lower()
        with self._lock:
            if key not in self.mailboxes:
                self.mailboxes[key] = Mailbox(address or self.me)
            return self.mailboxes[key]

    def deliver(
        self,
        mime: bytes,
        folder: str = "inbox",
        *,
        flags: Iterable[str] = (),
        address: str | None = None,
    ) -> FakeMessage:
        """Put a message in a folder (by well-known name or display path), as mail arrives."""
        box = self.mailbox(address)
        flags = set(flags)
        with self._lock:
            return box.store(
                self.find_folder(folder, address),
                mime,
                is_read="\\Seen" in flags,
                flag_status="flagged" if "\\Flagged" in flags else "notFlagged",
            )

    def find_folder(self, path: str, address: str | None = None) -> FakeFolder:
        """A folder by well-known name or by display-name path (``Inbox/Receipts``)."""
        box = self.mailbox(address)
        if path.lower() in WELL_KNOWN:
            return box.well_known(path.lower())
        parent = box.root
        for part in path.split("/"):
            matches = [
                f
                for f in box.folders.values()
                if f.parent_id == parent.id and f.display_name.lower() == part.lower()
            ]
            if not matches:
                raise KeyError(path)
            parent = matches[0]
        return parent

    def add_folder(self, path: str, address: str | None = None) -> FakeFolder:
        """Create a folder by display-name path; the parent must exist."""
        box = self.mailbox(address)
        parent_path, _, name = path.rpartition("/")
        with self._lock:
            parent = self.find_folder(parent_path, address) if parent_path else box.root
            return box.add_folder(name, parent)

    def throttle(self, count: int = 1, retry_after: float = 0) -> None:
        """Answer the next ``count`` requests with 429 and this Retry-After."""
        with self._lock:
            self._throttles += [(429, retry_after)] * count

    def expire_delta_tokens(self) -> None:
        """Make every delta and skip token issued so far answer 410 Gone."""
        with self._lock:
            self._delta_generation += 1

    # -- the transport -----------------------------------------------------------------------

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        mailbox_key = self._enter(request)
        try:
            if self.latency:
                time.sleep(self.latency)
            return self._respond(request)
        finally:
            self._leave(mailbox_key)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        mailbox_key = self._enter(request)
        try:
            await asyncio.sleep(self.latency)
            return self._respond(request)
        finally:
            self._leave(mailbox_key)

    def _enter(self, request: httpx.Request) -> str:
        key = self._mailbox_key(request.url.path)
        with self._lock:
            self._in_flight[key] = self._in_flight.get(key, 0) + 1
            self.most_concurrent = max(self.most_concurrent, self._in_flight[key])
        return key

    def _leave(self, key: str) -> None:
        with self._lock:
            self._in_flight[key] -= 1

    def _mailbox_key(self, path: str) -> str:
        parts = path.split("/")
        if len(parts) > 3 and parts[2] == "users":
            return unquote(parts[3]).lower()
        return self.me.lower()

    def _respond(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.requests.append((request.method, request.url.path))
            try:
                return self._dispatch(request)
            except GraphError as exc:
                body = {"error": {"code": exc.code, "message": exc.message}}
                return httpx.Response(exc.status, json=body, headers=exc.headers)

    def _dispatch(self, request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            raise GraphError(401, "InvalidAuthenticationToken", "IDX14100: JWT is not well formed.")
        key = self._mailbox_key(request.url.path)
        if self._in_flight.get(key, 0) > _MAX_CONCURRENT:
            raise GraphError(
                429,
                "ApplicationThrottled",
                "Application is over its MailboxConcurrency limit.",
                {"Retry-After": "1"},
            )
        if self._throttles:
            status, retry_after = self._throttles.pop(0)
            raise GraphError(
                status,
                "TooManyRequests",
                "Too many requests.",
                {"Retry-After": f"{retry_after:g}"},
            )
        path = request.url.path
        if not path.startswith("/v1.0/"):
            raise GraphError(404, "ResourceNotFound", f"Resource not found: {path}")
        segments = [unquote(s) for s in path[len("/v1.0/") :].split("/")]
        if segments[0] == "me":
            box, rest = self.mailbox(), segments[1:]
        elif segments[0] == "users" and len(segments) > 1:
            box, rest = self.mailbox(segments[1]), segments[2:]
        else:
            raise GraphError(
                400, "BadRequest", f"Resource not found for the segment '{segments[0]}'."
            )
        return _Handler(self, box, request).route(rest)


class _Handler:
    """One request against one mailbox."""

    def __init__(self, service: FakeGraph, box: Mailbox, request: httpx.Request) -> None:
        self.service = service
        self.box = box
        self.request = request
        self.params = dict(request.url.params.multi_items())
        self.immutable = "immutableid" in request.headers.get("prefer", "").lower().replace(" ", "")

    # -- routing -----------------------------------------------------------------------------

    def route(self, rest: list[str]) -> httpx.Response:
        method = self.request.method
        match rest:
            case ["mailFolders"] if method == "GET":
                return self.list_folders(self.box.root)
            case ["mailFolders", key] if method == "GET":
                return self.ok(self.folder_json(self.box.folder(key)))
            case ["mailFolders", key, "childFolders"] if method == "GET":
                return self.list_folders(self.box.folder(key))
            case ["mailFolders", key, "messages"] if method == "GET":
                return self.list_messages(self.box.folder(key))
            case ["mailFolders", key, "messages"] if method == "POST":
                return self.create_message(self.box.folder(key))
            case ["mailFolders", key, "messages", "delta"] if method == "GET":
                return self.delta(self.box.folder(key))
            case ["messages", key] if method == "GET":
                return self.ok(self.message_json(self.box.message(key)))
            case ["messages", key, "$value"] if method == "GET":
                message = self.box.message(key)
                return httpx.Response(
                    200, content=message.mime, headers={"Content-Type": "text/plain"}
                )
            case ["messages", key] if method == "PATCH":
                return self.update(self.box.message(key))
            case ["messages", key] if method == "DELETE":
                self.box.remove(self.box.message(key))
                return httpx.Response(204)
            case ["messages", key, "move"] if method == "POST":
                return self.move(self.box.message(key))
            case ["messages", key, "permanentDelete"] if method == "POST":
                self.box.remove(self.box.message(key))
                return httpx.Response(204)
            case ["sendMail"] if method == "POST":
                return self.send_mail()
        raise GraphError(400, "BadRequest", f"Unsupported request: {method} {'/'.join(rest)}")

    @staticmethod
    def ok(body: Any, status: int = 200) -> httpx.Response:
        return httpx.Response(status, json=body)

    # -- folders -----------------------------------------------------------------------------

    def folder_json(self, folder: FakeFolder) -> dict[str, Any]:
        box = self.box
        inside = [m for m in box.messages.values() if m.folder_id == folder.id]
        data = {
            "id": folder.id,
            "displayName": folder.display_name,
            "parentFolderId": folder.parent_id,
            "childFolderCount": sum(1 for f in box.folders.values() if f.parent_id == folder.id),
            "unreadItemCount": sum(1 for m in inside if not m.is_read),
            "totalItemCount": len(inside),
            "isHidden": folder.hidden,
        }
        return _checked(self.selected(data), FOLDER_PROPERTIES)

    def list_folders(self, parent: FakeFolder) -> httpx.Response:
        hidden = self.params.get("includeHiddenFolders", "false").lower() == "true"
        folders = [
            f
            for f in self.box.folders.values()
            if f.parent_id == parent.id and (hidden or not f.hidden)
        ]
        return self.page([self.folder_json(f) for f in folders], default_top=10)

    # -- messages ----------------------------------------------------------------------------

    def message_json(self, message: FakeMessage) -> dict[str, Any]:
        parsed = message.parsed()
        data: dict[str, Any] = {
            "id": message.immutable_id if self.immutable else message.rest_id,
            "createdDateTime": _iso(message.received),
            "lastModifiedDateTime": _iso(message.received),
            "changeKey": message.change_key,
            "categories": list(message.categories),
            "receivedDateTime": _iso(message.received),
            "sentDateTime": _sent(parsed),
            "hasAttachments": any(True for _ in parsed.iter_attachments()),
            "internetMessageId": str(parsed.get("Message-ID", "")),
            "subject": str(parsed.get("Subject", "")),
            "bodyPreview": _preview(parsed),
            "importance": "normal",
            "parentFolderId": message.folder_id,
            "conversationId": message.conversation_id,
            "isDeliveryReceiptRequested": False,
            "isReadReceiptRequested": False,
            "isRead": message.is_read,
            "isDraft": message.is_draft,
            "webLink": f"https://outlook.office365.com/owa/?ItemID={quote(message.immutable_id)}",
            "inferenceClassification": "focused",
            "flag": {"flagStatus": message.flag_status},
            "from": _recipient(parsed.get("From")),
            "sender": _recipient(parsed.get("Sender") or parsed.get("From")),
            "toRecipients": _recipients(parsed.get_all("To", [])),
            "ccRecipients": _recipients(parsed.get_all("Cc", [])),
            "bccRecipients": [],
            "replyTo": _recipients(parsed.get_all("Reply-To", [])),
            "internetMessageHeaders": [
                {"name": name, "value": str(value)} for name, value in _raw_headers(message.mime)
            ]
            if not message.is_draft
            else [],
        }
        selected = self.selected(data)
        expand = self.params.get("$expand", "")
        if expand:
            if SIZE_PROPERTY not in expand or "singleValueExtendedProperties" not in expand:
                raise GraphError(400, "BadRequest", f"Unsupported $expand: {expand}")
            selected["singleValueExtendedProperties"] = [
                {"id": SIZE_PROPERTY, "value": str(len(message.mime))}
            ]
        return _checked(selected, MESSAGE_PROPERTIES)

    def selected(self, data: dict[str, Any]) -> dict[str, Any]:
        select = self.params.get("$select")
        if not select:
            return {k: v for k, v in data.items() if k != "internetMessageHeaders"}
        names = {n.strip() for n in select.split(",")} | {"id"}
        unknown = names - data.keys()
        if unknown:
            raise GraphError(
                400,
                "RequestBroker--ParseUri",
                f"Could not find a property named '{sorted(unknown)[0]}'.",
            )
        return {k: v for k, v in data.items() if k in names}

    def list_messages(self, folder: FakeFolder) -> httpx.Response:
        messages = [m for m in self.box.messages.values() if m.folder_id == folder.id]
        orderby = self.params.get("$orderby", "receivedDateTime desc")
        clauses = _filter_clauses(self.params.get("$filter", ""))
        ordered_by = orderby.split()[0]
        if clauses and clauses[0][0] != ordered_by:
            raise GraphError(
                400,
                "InefficientFilter",
                "The restriction or sort order is too complex for this operation.",
            )
        messages = [m for m in messages if all(_matches(m, c) for c in clauses)]
        if ordered_by != "receivedDateTime":
            raise GraphError(400, "BadRequest", f"Unsupported $orderby {orderby}")
        messages.sort(key=lambda m: m.received, reverse=orderby.endswith("desc"))
        return self.page([self.message_json(m) for m in messages], default_top=10)

    def page(self, items: list[Any], *, default_top: int) -> httpx.Response:
        top = int(self.params.get("$top", default_top))
        if not 1 <= top <= 1000:
            raise GraphError(400, "ErrorInvalidParameter", "$top must be between 1 and 1000.")
        skip = int(self.params.get("$skiptoken", self.params.get("$skip", "0")) or 0)
        body: dict[str, Any] = {"value": items[skip : skip + top]}
        if skip + top < len(items):
            params = {k: v for k, v in self.params.items() if k not in ("$skip", "$skiptoken")}
            params["$skiptoken"] = str(skip + top)
            body["@odata.nextLink"] = f"{str(self.request.url).split('?')[0]}?{urlencode(params)}"
        return self.ok(body)

    def create_message(self, folder: FakeFolder) -> httpx.Response:
        if self.request.headers.get("content-type", "").split(";")[0] != "text/plain":
            raise GraphError(
                400, "ErrorInvalidRequest", "This fake creates messages from MIME only."
            )
        mime = _decode_mime(self.request.content)
        # Graph stores a message created from MIME as a draft.
        message = self.box.store(folder, mime, is_draft=True)
        return self.ok(self.message_json(message), status=201)

    def update(self, message: FakeMessage) -> httpx.Response:
        patch = json.loads(self.request.content)
        allowed = {"isRead", "flag", "categories"}
        if set(patch) - allowed:
            raise GraphError(
                400, "ErrorInvalidProperty", f"Cannot update {sorted(set(patch) - allowed)}"
            )
        if "isRead" in patch:
            message.is_read = bool(patch["isRead"])
        if "flag" in patch:
            status = patch["flag"].get("flagStatus")
            if status not in ("flagged", "notFlagged", "complete"):
                raise GraphError(400, "ErrorInvalidRequest", f"Bad flagStatus {status!r}")
            message.flag_status = status
        if "categories" in patch:
            message.categories = list(patch["categories"])
        message.change_key = _new_id("CQAA")
        self.box.log(message.folder_id, message, "updated")
        return self.ok(self.message_json(message))

    def move(self, message: FakeMessage) -> httpx.Response:
        body = json.loads(self.request.content)
        destination = body.get("destinationId") or body.get("DestinationId")
        if not isinstance(destination, str):
            raise GraphError(400, "ErrorInvalidRequest", "destinationId is required.")
        self.box.move(message, self.box.folder(destination))
        return self.ok(self.message_json(message), status=201)

    def send_mail(self) -> httpx.Response:
        if self.request.headers.get("content-type", "").split(";")[0] != "text/plain":
            raise GraphError(400, "ErrorInvalidRequest", "This fake sends MIME only.")
        mime = _decode_mime(self.request.content)
        parsed = email.message_from_bytes(mime, policy=email.policy.default)
        recipients = [
            address
            for _, address in getaddresses(
                [str(v) for name in ("To", "Cc", "Bcc") for v in parsed.get_all(name, [])]
            )
            if address
        ]
        if not recipients:
            raise GraphError(400, "ErrorInvalidRecipients", "At least one recipient is not valid.")
        delivered = _without_bcc(mime)
        self.box.store(self.box.well_known("sentitems"), delivered, is_read=True)
        for address in recipients:
            box = self.service.mailboxes.get(address.lower())
            if box is not None:
                box.store(box.well_known("inbox"), delivered)
        return httpx.Response(202)

    # -- delta -------------------------------------------------------------------------------

    def delta(self, folder: FakeFolder) -> httpx.Response:
        service = self.service
        token = self.params.get("$deltatoken") or self.params.get("$skiptoken")
        if token:
            state = json.loads(base64.urlsafe_b64decode(token.encode()))
            if state["g"] != service._delta_generation or state["f"] != folder.id:
                raise GraphError(
                    410, "SyncStateNotFound", "The sync state generation is not found."
                )
            since, change_type, select = state["s"], state["t"], state["sel"]
            position = state.get("p", 0)
        else:
            since, change_type = 0, self.params.get("changeType")
            select = self.params.get("$select", "")
            position = 0
        if change_type not in (None, "created", "updated", "deleted"):
            raise GraphError(400, "BadRequest", f"Invalid changeType {change_type!r}")
        changes = [c for c in self.box.changes if c.seq > since and c.folder_id == folder.id]
        latest: dict[str, Change] = {}
        if since == 0:  # the initial round: what is in the folder now, as created
            for message in self.box.messages.values():
                if message.folder_id == folder.id:
                    latest[message.immutable_id] = Change(0, folder.id, message, "created")
        else:
            for change in changes:
                previous = latest.get(change.message.immutable_id)
                kind = change.kind
                if previous is not None and previous.kind == "created" and kind == "updated":
                    kind = "created"
                latest[change.message.immutable_id] = Change(
                    change.seq, folder.id, change.message, kind
                )
        entries = [c for c in latest.values() if change_type is None or c.kind == change_type]
        entries.sort(key=lambda c: (c.seq, c.message.received))
        size = _max_page_size(self.request.headers.get("prefer", ""))
        page = entries[position : position + size]
        upto = max([since] + [c.seq for c in self.box.changes]) if self.box.changes else since
        values = []
        for change in page:
            if change.kind == "deleted":
                values.append({"id": self._id(change.message), "@removed": {"reason": "deleted"}})
            else:
                values.append(self._delta_item(change.message, select))
        state = {"g": service._delta_generation, "f": folder.id, "t": change_type, "sel": select}
        base = str(self.request.url).split("?")[0]
        body: dict[str, Any] = {"value": values}
        if position + size < len(entries):
            skip = {**state, "s": since, "p": position + size}
            body["@odata.nextLink"] = f"{base}?$skiptoken={_token(skip)}"
        else:
            body["@odata.deltaLink"] = f"{base}?$deltatoken={_token({**state, 's': upto})}"
        return self.ok(body)

    def _id(self, message: FakeMessage) -> str:
        return message.immutable_id if self.immutable else message.rest_id

    def _delta_item(self, message: FakeMessage, select: str) -> dict[str, Any]:
        saved = self.params
        self.params = {"$select": select} if select else {}
        try:
            return self.message_json(message)
        finally:
            self.params = saved


# -- helpers ---------------------------------------------------------------------------------


def _checked(data: dict[str, Any], schema: dict[str, type | tuple[type, ...]]) -> dict[str, Any]:
    """Fail loudly when the fake serves a property the published schema does not declare."""
    for key, value in data.items():
        expected = schema.get(key)
        assert expected is not None, f"the fake served {key!r}, not in Graph's schema"
        assert isinstance(value, expected), f"{key!r} served as {type(value).__name__}"
    return data


def _token(state: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(state).encode()).decode()


def _max_page_size(prefer: str) -> int:
    match = re.search(r"odata\.maxpagesize=(\d+)", prefer)
    return int(match.group(1)) if match else 10


def _decode_mime(content: bytes) -> bytes:
    try:
        return base64.b64decode(content, validate=False)
    except (ValueError, TypeError) as exc:
        raise GraphError(
            400, "ErrorMimeContentInvalidBase64String", "Invalid base64 string for MIME content."
        ) from exc


def _without_bcc(mime: bytes) -> bytes:
    head, sep, body = mime.partition(b"\r\n\r\n")
    lines = re.split(rb"\r\n(?![ \t])", head)
    kept = [line for line in lines if not line.lower().startswith(b"bcc:")]
    return b"\r\n".join(kept) + sep + body


def _raw_headers(mime: bytes) -> list[tuple[str, str]]:
    head = re.split(rb"\r?\n\r?\n", mime, maxsplit=1)[0]
    fields = re.split(rb"\r?\n(?![ \t])", head)
    result = []
    for line in fields:
        name, sep, value = line.partition(b":")
        if sep:
            result.append(
                (name.decode("ascii", "replace"), value.strip().decode("utf-8", "replace"))
            )
    return result


def _recipient(value: Any) -> dict[str, Any] | None:
    if not value:
        return None
    pairs = getaddresses([str(value)])
    if not pairs:
        return None
    name, address = pairs[0]
    return {"emailAddress": {"name": name or address, "address": address}}


def _recipients(values: list[Any]) -> list[dict[str, Any]]:
    return [
        {"emailAddress": {"name": name or address, "address": address}}
        for name, address in getaddresses([str(v) for v in values])
        if address
    ]


def _sent(parsed: email.message.EmailMessage) -> str | None:
    value = parsed.get("Date")
    if value is None:
        return None
    try:
        return _iso(parsedate_to_datetime(str(value)))
    except (TypeError, ValueError):
        return None


def _preview(parsed: email.message.EmailMessage) -> str:
    body = parsed.get_body(("plain",))
    if body is None:
        return ""
    try:
        return str(body.get_content())[:255]
    except (LookupError, ValueError):
        return ""


def _filter_clauses(text: str) -> list[tuple[str, str, str]]:
    if not text:
        return []
    clauses = []
    for part in text.split(" and "):
        match = _FILTER_CLAUSE.match(part.strip())
        if match is None:
            raise GraphError(400, "BadRequest", f"Invalid filter clause: {part}")
        clauses.append((match.group(1), match.group(2), match.group(3)))
    return clauses


def _matches(message: FakeMessage, clause: tuple[str, str, str]) -> bool:
    name, op, value = clause
    if name == "receivedDateTime":
        bound = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return {
            "ge": message.received >= bound,
            "gt": message.received > bound,
            "le": message.received <= bound,
            "lt": message.received < bound,
            "eq": message.received == bound,
            "ne": message.received != bound,
        }[op]
    if name == "isRead":
        if value not in ("true", "false") or op not in ("eq", "ne"):
            raise GraphError(400, "BadRequest", f"Invalid filter on isRead: {op} {value}")
        return (message.is_read == (value == "true")) == (op == "eq")
    status = value.strip("'")
    if op not in ("eq", "ne"):
        raise GraphError(400, "BadRequest", f"Invalid filter on flag/flagStatus: {op}")
    return (message.flag_status == status) == (op == "eq")


def parse_query(url: str) -> dict[str, str]:
    """The query parameters of a URL (for tests that look at what was asked)."""
    return dict(parse_qsl(url.split("?", 1)[1])) if "?" in url else {}
