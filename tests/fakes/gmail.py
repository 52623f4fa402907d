"""An in-process fake of the Gmail REST API (v1) for one account, behind ``httpx.MockTransport``.

No Gmail server can run offline, so this fake stands in for one. It follows the published API
(https://developers.google.com/workspace/gmail/api/reference/rest) and the discovery document
(:mod:`tests.fakes.gmail_discovery`), which routes every request and validates every JSON body in
both directions; a departure fails the test with an ``AssertionError``.

What it models:

- messages with Gmail-shaped ids (16 hex digits) and thread ids (a reply joins the thread of a
  message its In-Reply-To/References names), ``internalDate`` in epoch milliseconds,
  ``sizeEstimate``, ``historyId``, labels;
- ``messages.list`` newest first (by internalDate), ``labelIds`` (all must match),
  ``includeSpamTrash`` (TRASH and SPAM left out unless asked for, or asked for by label),
  ``maxResults`` (default 100, at most 500), opaque ``pageToken`` paging, and ``q`` for the
  flag operators mailsync emits (``is:unread``, ``is:read``, ``is:starred``, ``-``, ``OR``,
  parentheses); any other search is refused (400), as the fake cannot do Gmail's full-text
  search faithfully;
- ``messages.get`` in the formats ``minimal``, ``metadata`` (with ``metadataHeaders``),
  ``raw`` (base64url) and ``full``; 404 for an unknown id, 400 "Invalid id value" for one that
  is not hex;
- ``messages.insert``/``import``/``send`` as JSON (``raw``) or uploads (``uploadType=media``
  or ``multipart``: multipart/related JSON metadata + message/rfc822) with the documented size
  limits; ``send`` strips Bcc from what recipients get, keeps it in the Sent copy, and
  delivers to the account itself when it is a recipient;
- ``modify``, ``batchModify`` (at most 1,000 ids), ``trash``/``untrash`` (the TRASH label),
  ``delete``, ``batchDelete``; labels ``list``/``get``/``create``/``delete`` with the system
  labels Gmail has;
- the history: every change is a record with an id that grows with random gaps;
  ``history.list`` with ``startHistoryId``, ``labelId``, ``historyTypes``, paging, and 404 for a
  ``startHistoryId`` older than the kept history (:meth:`FakeGmail.expire_history`);
- errors in Google's shape (``{"error": {"code", "message", "errors": [{"message", "domain",
  "reason"}], "status"}}``), 401 with ``WWW-Authenticate`` for a token it does not accept, and
  scripted faults (:meth:`FakeGmail.fail_next`: 429 with Retry-After, 403
  ``userRateLimitExceeded``, 5xx, a body that is not JSON).

Seeding (:meth:`FakeGmail.deliver`) is the mail system's side, never mailsync's.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import functools
import itertools
import json
import random
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import httpx

from tests.fakes import gmail_discovery as discovery

SYSTEM_LABELS = (
    ("CHAT", "hide", "labelHide"),
    ("SENT", None, None),
    ("INBOX", None, None),
    ("IMPORTANT", None, None),
    ("TRASH", None, None),
    ("DRAFT", None, None),
    ("SPAM", None, None),
    ("CATEGORY_FORUMS", None, None),
    ("CATEGORY_UPDATES", None, None),
    ("CATEGORY_PERSONAL", None, None),
    ("CATEGORY_PROMOTIONS", None, None),
    ("CATEGORY_SOCIAL", None, None),
    ("STARRED", None, None),
    ("UNREAD", None, None),
)
_BINS = frozenset({"TRASH", "SPAM"})
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
}


class GmailError(Exception):
    """Raised inside the fake to answer with an error in Google's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        reason: str,
        *,
        domain: str = "global",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason
        self.domain = domain
        self.headers = headers or {}

    def response(self) -> httpx.Response:
        body = {
            "error": {
                "code": self.status,
                "message": self.message,
                "errors": [{"message": self.message, "domain": self.domain, "reason": self.reason}],
                "status": _STATUS_NAMES.get(self.status, "UNKNOWN"),
            }
        }
        return httpx.Response(self.status, json=body, headers=self.headers)


def _not_found() -> GmailError:
    return GmailError(404, "Requested entity was not found.", "notFound")


@dataclass(slots=True)
class StoredMessage:
    id: str
    thread_id: str
    raw: bytes
    labels: set[str]
    internal_date: int
    history_id: int


@dataclass(frozen=True, slots=True)
class HistoryRecord:
    id: int
    kind: str  # messageAdded, messageDeleted, labelAdded, labelRemoved
    message_id: str
    thread_id: str
    labels: frozenset[str]  # the message's labels after the change
    changed: frozenset[str] = frozenset()  # the labels added or removed


@dataclass
class Fault:
    status: int
    reason: str
    message: str
    retry_after: str | None
    match: Callable[[httpx.Request], bool]
    body: bytes | None = None


@dataclass
class FakeGmail:
    """One Gmail account. ``handler`` answers httpx requests; :meth:`transport` wraps it."""

    email: str = "me@example.test"
    tokens: set[str] = field(default_factory=lambda: {"good-token"})
    seed: int = 1

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)
        self._lock = threading.RLock()
        self.messages: dict[str, StoredMessage] = {}
        self.labels: dict[str, dict[str, Any]] = {}
        for label_id, message_visibility, list_visibility in SYSTEM_LABELS:
            label: dict[str, Any] = {"id": label_id, "name": label_id, "type": "system"}
            if message_visibility:
                label["messageListVisibility"] = message_visibility
                label["labelListVisibility"] = list_visibility
            self.labels[label_id] = label
        self._next_label = itertools.count(1)
        self._next_id = 0x18C2F0A000000000 + self._random.randrange(1 << 32)
        self._clock = 1_767_225_600_000  # 2026-01-01, in ms; every delivery a little later
        self.history_id = 4_000 + self._random.randrange(1000)
        self.history: list[HistoryRecord] = []
        self.oldest_history_id = 0  # startHistoryId below this: 404
        self.faults: deque[Fault] = deque()
        self.requests: list[tuple[str, str, list[tuple[str, str]]]] = []
        self.outbox: list[tuple[bytes, list[str]]] = []  # what send() delivered, to whom
        self._listing_cache: dict[tuple[Any, ...], list[str]] = {}
        self._version = 0

    # -- the mail system's side (seeding), never through the API ----------------------------------

    def transport(self) -> httpx.MockTransport:
        """A transport for ``httpx.Client`` and ``httpx.AsyncClient`` alike."""
        return httpx.MockTransport(self.handler)

    def create_label(self, name: str) -> str:
        """Add a user label; returns its id."""
        with self._lock:
            label_id = f"Label_{next(self._next_label)}"
            self.labels[label_id] = {
                "id": label_id,
                "name": name,
                "type": "user",
                "messageListVisibility": "show",
                "labelListVisibility": "labelShow",
            }
            return label_id

    def label_id(self, name: str) -> str:
        """The id of the label called ``name`` (creating a user label if there is none)."""
        with self._lock:
            for label in self.labels.values():
                if label["name"] == name:
                    return str(label["id"])
            return self.create_label(name)

    def deliver(
        self,
        raw: bytes,
        labels: Iterable[str] = ("INBOX", "UNREAD"),
        *,
        internal_date: int | None = None,
    ) -> str:
        """Put a message in the mailbox as mail delivery would; returns its id."""
        with self._lock:
            return self._store(raw, set(labels), internal_date).id

    def relabel(self, message_id: str, add: Iterable[str] = (), remove: Iterable[str] = ()) -> None:
        """Change a message's labels as the user would in Gmail's web client."""
        with self._lock:
            self._change(self.messages[message_id], add, remove)

    def remove(self, message_id: str) -> None:
        """Delete a message for good as the user would in Gmail's web client."""
        with self._lock:
            self._delete(self.messages[message_id])

    def expire_history(self) -> None:
        """Forget the history so far: an older ``startHistoryId`` is answered with 404."""
        with self._lock:
            self._bump()
            self.oldest_history_id = self.history_id
            self.history.clear()

    def fail_next(
        self,
        status: int,
        reason: str = "backendError",
        message: str = "Backend Error",
        *,
        retry_after: str | None = None,
        count: int = 1,
        match: Callable[[httpx.Request], bool] = lambda request: True,
        body: bytes | None = None,
    ) -> None:
        """Answer the next ``count`` requests that ``match`` with this error instead."""
        with self._lock:
            for _ in range(count):
                self.faults.append(Fault(status, reason, message, retry_after, match, body))

    def calls(self, method_id: str) -> int:
        """How many requests called the API method ``method_id`` (``messages.get``)."""
        return sum(1 for mid, _, _ in self.requests if mid.endswith(method_id))

    # -- internals ------------------------------------------------------------------------------

    def _bump(self) -> int:
        self.history_id += self._random.randint(1, 7)  # ids grow, with gaps
        self._version += 1
        return self.history_id

    def _record(self, kind: str, message: StoredMessage, changed: Iterable[str] = ()) -> None:
        message.history_id = self._bump()
        self.history.append(
            HistoryRecord(
                message.history_id,
                kind,
                message.id,
                message.thread_id,
                frozenset(message.labels),
                frozenset(changed),
            )
        )

    def _new_id(self) -> str:
        self._next_id += self._random.randint(1, 1 << 20)
        return format(self._next_id, "x")

    def _store(self, raw: bytes, labels: set[str], internal_date: int | None) -> StoredMessage:
        for label in labels:
            if label not in self.labels:
                raise GmailError(400, f"Invalid label: {label}", "invalidArgument")
        self._clock += 1000
        message_id = self._new_id()
        message = StoredMessage(
            message_id,
            self._thread_of(raw) or message_id,
            raw,
            labels,
            self._clock if internal_date is None else internal_date,
            0,
        )
        self.messages[message_id] = message
        self._record("messageAdded", message)
        return message

    def _thread_of(self, raw: bytes) -> str | None:
        if not _REPLY_HEADER.search(_head(raw)):
            return None
        head = _header_fields(raw)
        wanted = " ".join(v for k, v in head if k.lower() in ("in-reply-to", "references"))
        refs = set(re.findall(r"<([^<>]+)>", wanted))
        if not refs:
            return None
        for message in self.messages.values():
            ids = {
                v.strip().strip("<>")
                for k, v in _header_fields(message.raw)
                if k.lower() == "message-id"
            }
            if ids & refs:
                return message.thread_id
        return None

    def _change(self, message: StoredMessage, add: Iterable[str], remove: Iterable[str]) -> None:
        add, remove = set(add), set(remove)
        for label in add | remove:
            if label not in self.labels:
                raise GmailError(400, f"Invalid label: {label}", "invalidArgument")
        added = add - message.labels
        removed = (remove - add) & message.labels
        message.labels |= added
        message.labels -= removed
        if added:
            self._record("labelAdded", message, added)
        if removed:
            self._record("labelRemoved", message, removed)

    def _message(self, message_id: str) -> StoredMessage:
        if not re.fullmatch(r"[0-9a-f]{1,32}", message_id):
            raise GmailError(400, "Invalid id value", "invalidArgument")
        message = self.messages.get(message_id)
        if message is None:
            raise _not_found()
        return message

    # -- HTTP -----------------------------------------------------------------------------------

    def handler(self, request: httpx.Request) -> httpx.Response:
        """Answer one request (thread-safe: the sync client sends from a thread pool)."""
        with self._lock:
            try:
                return self._handle(request)
            except GmailError as error:
                return error.response()

    def _handle(self, request: httpx.Request) -> httpx.Response:
        path = unquote(request.url.path)
        query = [(k, v) for k, v in request.url.params.multi_items()]
        found = discovery.route(request.method, path)
        method_id = found[0].id.removeprefix("gmail.users.") if found else "?"
        self.requests.append((method_id, path, query))
        fault = next((f for f in self.faults if f.match(request)), None)
        if fault is not None:
            self.faults.remove(fault)
            return self._fault(fault)
        self._authorize(request)
        if found is None:
            raise GmailError(404, f"Not Found: {request.method} {path}", "notFound")
        method, path_params = found
        problem = discovery.check_query(method, query)
        if problem:
            raise GmailError(400, problem, "invalidArgument")
        if method.upload and dict(query).get("uploadType") not in ("media", "multipart"):
            raise GmailError(400, "uploadType must be media or multipart", "invalidArgument")
        user = path_params.get("userId", "me")
        if user != "me" and user.lower() != self.email.lower():
            raise GmailError(403, f"Delegation denied for {self.email}", "forbidden")
        params = _params(query)
        body, media = self._body(request, method)
        status, reply = getattr(self, "_" + method_id.replace(".", "_"))(
            path_params, params, body, media
        )
        if reply is None:
            return httpx.Response(status)
        if method.response:
            problems = discovery.validate(method.response, reply)
            assert not problems, f"the fake answered {method.id} off-schema: {problems}"
        return httpx.Response(status, json=reply)

    def _fault(self, fault: Fault) -> httpx.Response:
        headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
        if fault.body is not None:
            return httpx.Response(fault.status, content=fault.body, headers=headers)
        domain = (
            "usageLimits" if "RateLimit" in fault.reason or "Limit" in fault.reason else "global"
        )
        error = GmailError(
            fault.status, fault.message, fault.reason, domain=domain, headers=headers
        )
        return error.response()

    def _authorize(self, request: httpx.Request) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token in self.tokens:
            return
        raise GmailError(
            401,
            "Request had invalid authentication credentials. Expected OAuth 2 access token, "
            "login cookie or other valid authentication credential. See "
            "https://developers.google.com/identity/sign-in/web/devconsole-project.",
            "authError",
            headers={
                "WWW-Authenticate": (
                    'Bearer realm="https://accounts.google.com/", error="invalid_token"'
                )
            },
        )

    def _body(self, request: httpx.Request, method: discovery.Method) -> tuple[Any, bytes | None]:
        """The request's JSON metadata (validated) and media, by upload type."""
        content = request.content
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        media: bytes | None = None
        metadata: Any = None
        if method.upload:
            upload_type = request.url.params.get("uploadType")
            if upload_type == "media":
                media = content
                if not kind.startswith("message/"):
                    raise GmailError(400, f"Media type '{kind}' is not supported.", "badContent")
            else:
                metadata, media = _multipart(request)
            assert method.max_upload is not None
            if len(media) > method.max_upload:
                raise GmailError(413, "Request Entity Too Large", "uploadTooLarge")
        elif content:
            assert kind == "application/json", f"{method.id}: body sent as {kind!r}"
            metadata = json.loads(content)
        if metadata is not None:
            assert method.request, f"{method.id} takes no body"
            problems = discovery.validate(method.request, metadata)
            if problems:
                raise GmailError(
                    400, f"Invalid JSON payload received. {problems}", "invalidArgument"
                )
        return metadata, media

    # -- methods (named after the discovery ids) ------------------------------------------------

    def _getProfile(
        self, path: dict[str, str], params: dict[str, list[str]], body: Any, media: bytes | None
    ) -> tuple[int, Any]:
        threads = {m.thread_id for m in self.messages.values()}
        return 200, {
            "emailAddress": self.email,
            "messagesTotal": len(self.messages),
            "threadsTotal": len(threads),
            "historyId": str(self.history_id),
        }

    def _labels_list(
        self, path: dict[str, str], params: dict[str, list[str]], body: Any, media: bytes | None
    ) -> tuple[int, Any]:
        return 200, {"labels": [dict(label) for label in self.labels.values()]}

    def _labels_get(
        self, path: dict[str, str], params: dict[str, list[str]], body: Any, media: bytes | None
    ) -> tuple[int, Any]:
        label = self.labels.get(path["id"])
        if label is None:
            raise _not_found()
        holding = [m for m in self.messages.values() if label["id"] in m.labels]
        unread = [m for m in holding if "UNREAD" in m.labels]
        return 200, {
            **label,
            "messagesTotal": len(holding),
            "messagesUnread": len(unread),
            "threadsTotal": len({m.thread_id for m in holding}),
            "threadsUnread": len({m.thread_id for m in unread}),
        }

    def _labels_create(
        self, path: dict[str, str], params: dict[str, list[str]], body: Any, media: bytes | None
    ) -> tuple[int, Any]:
        name = (body or {}).get("name", "")
        if not name or any(l["name"].casefold() == name.casefold() for l in self.labels.values()):  # noqa: E741
            raise GmailError(409, "Label name exists or conflicts", "failedPrecondition")
        return 200, self.labels[self.create_label(name)]

    def _labels_delete(
        self, path: dict[str, str], params: dict[str, list[str]], body: Any, media: bytes | None
    ) -> tuple[int, Any]:
        label = self.labels.get(path["id"])
        if label is None:
            raise _not_found()
        if label["type"] == "system":
            raise GmailError(400, "Invalid delete request", "invalidArgument")
        del self.labels[path["id"]]
        for message in self.messages.values():
            if path["id"] in message.labels:
                self._change(message, (), [path["id"]])
        return 204, None

    def _messages_list(
        self, path: dict[str, str], params: dict[str, list[str]], body: Any, media: bytes | None
    ) -> tuple[int, Any]:
        label_ids = params.get("labelIds", [])
        for label in label_ids:
            if label not in self.labels:
                raise GmailError(400, f"Invalid label: {label}", "invalidArgument")
        spam_trash = params.get("includeSpamTrash", ["false"])[0] == "true"
        q = params.get("q", [""])[0]
        key = (self._version, tuple(label_ids), spam_trash, q)
        ids = self._listing_cache.get(key)
        if ids is None:
            matcher = _search(q)
            wanted = set(label_ids)
            shown = spam_trash or bool(wanted & _BINS)
            chosen = [
                m
                for m in self.messages.values()
                if wanted <= m.labels and (shown or not m.labels & _BINS) and matcher(m.labels)
            ]
            chosen.sort(key=lambda m: (m.internal_date, int(m.id, 16)), reverse=True)
            ids = [m.id for m in chosen]
            self._listing_cache = {key: ids}
        size = _page_size(params)
        offset = _offset(params)
        page = ids[offset : offset + size]
        reply: dict[str, Any] = {"resultSizeEstimate": len(ids)}
        if page:
            reply["messages"] = [{"id": i, "threadId": self.messages[i].thread_id} for i in page]
        if offset + size < len(ids):
            reply["nextPageToken"] = _token(offset + size)
        return 200, reply

    def _messages_get(
        self, path: dict[str, str], params: dict[str, list[str]], body: Any, media: bytes | None
    ) -> tuple[int, Any]:
        message = self._message(path["id"])
        fmt = params.get("format", ["full"])[0]
        return 200, self._resource(message, fmt, params.get("metadataHeaders", []))

    def _resource(
        self, message: StoredMessage, fmt: str, headers: Iterable[str] = ()
    ) -> dict[str, Any]:
        resource: dict[str, Any] = {
            "id": message.id,
            "threadId": message.thread_id,
            "snippet": _snippet(message.raw),
            "sizeEstimate": len(message.raw),
            "historyId": str(message.history_id),
            "internalDate": str(message.internal_date),
        }
        if message.labels:
            resource["labelIds"] = sorted(message.labels)
        if fmt == "raw":
            resource["raw"] = base64.urlsafe_b64encode(message.raw).decode("ascii")
        elif fmt == "metadata":
            wanted = {h.lower() for h in headers}
            fields = [
                {"name": k, "value": v}
                for k, v in _header_fields(message.raw)
                if not wanted or k.lower() in wanted
            ]
            resource["payload"] = {
                "partId": "",
                "mimeType": _mime_type(message.raw),
                "filename": "",
                "headers": fields,
                "body": {"size": 0},
            }
        elif fmt == "full":
            resource["payload"] = _full_payload(message.raw)
        return resource

    def _minimal(self, message: StoredMessage) -> dict[str, Any]:
        resource: dict[str, Any] = {"id": message.id, "threadId": message.thread_id}
        if message.labels:
            resource["labelIds"] = sorted(message.labels)
        return resource

    def _raw_of(self, body: Any, media: bytes | None) -> bytes:
        if media is not None:
            return media
        raw = (body or {}).get("raw")
        if raw is None:
            raise GmailError(
                400,
                "'raw' RFC822 payload message string or uploading message via /upload/* URL"
                " required",
                "invalidArgument",
            )
        return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))

    def _messages_insert(
        self, path: dict[str, str], params: dict[str, list[str]], body: Any, media: bytes | None
    ) -> tuple[int, Any]:
        return self._put(params, body, media, date_source="receivedTime")

    def _messages_import(
        self, path: dict[str, str], params: dict[str, list[str]], body: Any, media: bytes | None
    ) -> tuple[int, Any]:
        # Gmail also runs its filters and spam checks on an import: the fake has none.
        return self._put(params, body, media, date_source="dateHeader")

    def _put(
        self, params: dict[str, list[str]], body: Any, media: bytes | None, *, date_source: str
    ) -> tuple[int, Any]:
        """insert and import: store the message with the labels its metadata names (none by
        default), dated by arrival or by its Date header (``internalDateSource``)."""
        raw = self._raw_of(body, media)
        labels = set((body or {}).get("labelIds", []))
        by_header = params.get("internalDateSource", [date_source])[0] == "dateHeader"
        return 200, self._minimal(
            self._store(raw, labels, _date_header_ms(raw) if by_header else None)
        )

    def _messages_send(
        self, path: dict[str, str], params: dict[str, list[str]], body: Any, media: bytes | None
    ) -> tuple[int, Any]:
        raw = self._raw_of(body, media)
        fields = _header_fields(raw)
        recipients = [
            address.lower()
            for name, value in fields
            if name.lower() in ("to", "cc", "bcc")
            for address in re.findall(r"[^\s<>,;:\"]+@[^\s<>,;:\"]+", value)
        ]
        if not recipients:
            raise GmailError(400, "Recipient address required", "invalidArgument")
        labels = {"SENT"}
        if self.email.lower() in recipients:
            labels |= {"INBOX", "UNREAD"}
        stored = self._store(raw, labels, None)
        self.outbox.append((_without_bcc(raw), recipients))
        return 200, self._minimal(stored)

    def _messages_modify(
        self, path: dict[str, str], params: dict[str, list[str]], body: Any, media: bytes | None
    ) -> tuple[int, Any]:
        message = self._message(path["id"])
        self._change(
            message, (body or {}).get("addLabelIds", []), (body or {}).get("removeLabelIds", [])
        )
        return 200, self._minimal(message)

    def _messages_batchModify(
        self, path: dict[str, str], params: dict[str, list[str]], body: Any, media: bytes | None
    ) -> tuple[int, Any]:
        ids = (body or {}).get("ids", [])
        if len(ids) > 1000:
            raise GmailError(400, "Too many ids (at most 1000)", "invalidArgument")
        messages = [self._message(i) for i in ids]
        for message in messages:
            self._change(message, body.get("addLabelIds", []), body.get("removeLabelIds", []))
        return 204, None

    def _messages_trash(
        self, path: dict[str, str], params: dict[str, list[str]], body: Any, media: bytes | None
    ) -> tuple[int, Any]:
        message = self._message(path["id"])
        self._change(message, ["TRASH"], [])
        return 200, self._minimal(message)

    def _messages_untrash(
        self, path: dict[str, str], params: dict[str, list[str]], body: Any, media: bytes | None
    ) -> tuple[int, Any]:
        message = self._message(path["id"])
        self._change(message, [], ["TRASH"])
        return 200, self._minimal(message)

    def _messages_delete(
        self, path: dict[str, str], params: dict[str, list[str]], body: Any, media: bytes | None
    ) -> tuple[int, Any]:
        self._delete(self._message(path["id"]))
        return 204, None

    def _messages_batchDelete(
        self, path: dict[str, str], params: dict[str, list[str]], body: Any, media: bytes | None
    ) -> tuple[int, Any]:
        ids = (body or {}).get("ids", [])
        if len(ids) > 1000:
            raise GmailError(400, "Too many ids (at most 1000)", "invalidArgument")
        for message_id in ids:
            message = self.messages.get(message_id)
            if message is not None:
                self._delete(message)
        return 204, None

    def _delete(self, message: StoredMessage) -> None:
        del self.messages[message.id]
        self._record("messageDeleted", message)

    def _history_list(
        self, path: dict[str, str], params: dict[str, list[str]], body: Any, media: bytes | None
    ) -> tuple[int, Any]:
        if "startHistoryId" not in params:  # "Required", says the description
            raise GmailError(400, "Required parameter: startHistoryId", "required")
        start = int(params["startHistoryId"][0])
        if start < self.oldest_history_id:
            raise _not_found()
        kinds = set(params.get("historyTypes", [])) or {
            "messageAdded",
            "messageDeleted",
            "labelAdded",
            "labelRemoved",
        }
        label = params.get("labelId", [None])[0]
        after = max(start, _offset(params))
        records = [
            r
            for r in self.history
            if r.id > after
            and r.kind in kinds
            and (label is None or label in r.labels or label in r.changed)
        ]
        size = _page_size(params)
        page = records[:size]
        reply: dict[str, Any] = {"historyId": str(self.history_id)}
        if page:
            reply["history"] = [_history_json(r) for r in page]
        if len(records) > size:
            reply["nextPageToken"] = _token(page[-1].id)
        return 200, reply


# -- helpers ---------------------------------------------------------------------------------------


def _params(query: list[tuple[str, str]]) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {}
    for key, value in query:
        params.setdefault(key, []).append(value)
    return params


def _page_size(params: dict[str, list[str]]) -> int:
    size = int(params.get("maxResults", ["100"])[0])
    if size < 1:
        raise GmailError(400, "Invalid maxResults", "invalidArgument")
    return min(size, 500)


def _token(position: int) -> str:
    return base64.urlsafe_b64encode(f"p{position:020d}".encode()).decode().rstrip("=")


def _offset(params: dict[str, list[str]]) -> int:
    token = params.get("pageToken", [None])[0]
    if token is None:
        return 0
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        assert text.startswith("p")
        return int(text[1:])
    except (ValueError, AssertionError, UnicodeDecodeError) as exc:
        raise GmailError(400, "Invalid pageToken", "invalidArgument") from exc


def _history_json(record: HistoryRecord) -> dict[str, Any]:
    message = {
        "id": record.message_id,
        "threadId": record.thread_id,
        "labelIds": sorted(record.labels),
    }
    entry: dict[str, Any] = {"id": str(record.id), "messages": [message]}
    if record.kind == "messageAdded":
        entry["messagesAdded"] = [{"message": message}]
    elif record.kind == "messageDeleted":
        entry["messagesDeleted"] = [{"message": message}]
    elif record.kind == "labelAdded":
        entry["labelsAdded"] = [{"message": message, "labelIds": sorted(record.changed)}]
    else:
        entry["labelsRemoved"] = [{"message": message, "labelIds": sorted(record.changed)}]
    return entry


def _head(raw: bytes) -> bytes:
    match = re.search(rb"\r?\n\r?\n", raw)
    return raw[: match.start()] if match else raw


_REPLY_HEADER = re.compile(rb"(?im)^(in-reply-to|references):")


@functools.lru_cache(maxsize=256)
def _header_fields(raw: bytes) -> tuple[tuple[str, str], ...]:
    """Header fields as Gmail's metadata gives them: unfolded, 8-bit bytes read as UTF-8."""
    fields: list[list[bytes]] = []
    for line in re.split(rb"\r?\n", _head(raw)):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1][1] += line
        elif b":" in line:
            name, _, value = line.partition(b":")
            fields.append([name.strip(), value.lstrip()])
    return tuple((n.decode("utf-8", "replace"), v.decode("utf-8", "replace")) for n, v in fields)


def _without_bcc(raw: bytes) -> bytes:
    head = _head(raw)
    lines = re.split(rb"(?<=\n)", head)
    kept: list[bytes] = []
    dropping = False
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(line)
            continue
        dropping = line.lower().startswith(b"bcc:")
        if not dropping:
            kept.append(line)
    return b"".join(kept) + raw[len(head) :]


def _mime_type(raw: bytes) -> str:
    for name, value in _header_fields(raw):
        if name.lower() == "content-type":
            return value.split(";")[0].strip().lower() or "text/plain"
    return "text/plain"


def _parsed(raw: bytes) -> Any:
    return email.parser.BytesParser(policy=email.policy.compat32).parsebytes(raw)


@functools.lru_cache(maxsize=256)
def _snippet(raw: bytes) -> str:
    try:
        for part in _parsed(raw).walk():
            if part.get_content_type() == "text/plain":
                payload = part.get_payload(decode=True) or b""
                charset = part.get_content_charset() or "utf-8"
                text = payload.decode(charset, "replace")
                return " ".join(text.split())[:100]
    except (LookupError, ValueError):
        return ""
    return ""


def _full_payload(raw: bytes) -> dict[str, Any]:
    def part_json(part: Any, part_id: str) -> dict[str, Any]:
        headers = [{"name": k, "value": str(v)} for k, v in part.items()]
        filename = part.get_filename() or ""
        node: dict[str, Any] = {
            "partId": part_id,
            "mimeType": part.get_content_type(),
            "filename": filename,
            "headers": headers,
        }
        if part.is_multipart():
            node["body"] = {"size": 0}
            children = part.get_payload()
            node["parts"] = [
                part_json(c, f"{part_id}.{i}" if part_id else str(i))
                for i, c in enumerate(children)
            ]
            return node
        data = part.get_payload(decode=True) or b""
        if filename:
            node["body"] = {
                "size": len(data),
                "attachmentId": "ANGjdJ" + format(abs(hash(data)), "x"),
            }
        else:
            node["body"] = {"size": len(data), "data": base64.urlsafe_b64encode(data).decode()}
        return node

    return part_json(_parsed(raw), "")


def _date_header_ms(raw: bytes) -> int | None:
    import email.utils

    for name, value in _header_fields(raw):
        if name.lower() == "date":
            try:
                return int(email.utils.parsedate_to_datetime(value).timestamp() * 1000)
            except (TypeError, ValueError):
                return None
    return None


# -- search: the flag operators only -------------------------------------------------------------

_TERMS = {
    "is:unread": lambda labels: "UNREAD" in labels,
    "is:read": lambda labels: "UNREAD" not in labels,
    "is:starred": lambda labels: "STARRED" in labels,
}


def _search(q: str) -> Callable[[set[str]], bool]:
    """A matcher for Gmail's search syntax, limited to the flag operators."""
    tokens = re.findall(r"\(|\)|-?[^\s()]+", q)
    position = 0

    def peek() -> str | None:
        return tokens[position] if position < len(tokens) else None

    def take() -> str:
        nonlocal position
        position += 1
        return tokens[position - 1]

    def disjunction() -> Callable[[set[str]], bool]:
        options = [conjunction()]
        while peek() == "OR":
            take()
            options.append(conjunction())
        return lambda labels: any(o(labels) for o in options)

    def conjunction() -> Callable[[set[str]], bool]:
        parts = []
        while peek() not in (None, ")", "OR"):
            parts.append(term())
        if not parts:
            raise GmailError(400, f"Invalid query: {q!r}", "invalidArgument")
        return lambda labels: all(p(labels) for p in parts)

    def term() -> Callable[[set[str]], bool]:
        token = take()
        if token == "(":
            inner = disjunction()
            if peek() != ")":
                raise GmailError(400, f"Invalid query: {q!r}", "invalidArgument")
            take()
            return inner
        negated = token.startswith("-")
        check = _TERMS.get(token.lstrip("-").lower())
        if check is None:
            raise GmailError(
                400,
                f"the fake implements only the flag operators, not {token!r}",
                "invalidArgument",
            )
        return (lambda labels: not check(labels)) if negated else check

    if not tokens:
        return lambda labels: True
    matcher = disjunction()
    if peek() is not None:
        raise GmailError(400, f"Invalid query: {q!r}", "invalidArgument")
    return matcher


def _multipart(request: httpx.Request) -> tuple[Any, bytes]:
    """The JSON metadata and the media of an ``uploadType=multipart`` request."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/related"):
        raise GmailError(400, f"multipart upload sent as {content_type!r}", "badContent")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + request.content
    )
    parts = message.get_payload()
    if not isinstance(parts, list) or len(parts) != 2:
        raise GmailError(400, "a multipart upload has two parts: metadata and media", "badContent")
    meta_part, media_part = parts
    if meta_part.get_content_type() != "application/json":
        raise GmailError(400, "the first part must be the JSON metadata", "badContent")
    if not media_part.get_content_type().startswith("message/"):
        raise GmailError(
            400, f"Media type '{media_part.get_content_type()}' is not supported.", "badContent"
        )
    metadata = json.loads(meta_part.get_payload(decode=True) or b"{}")
    media = _part_bytes(request.content, content_type)
    return metadata, media


def _part_bytes(content: bytes, content_type: str) -> bytes:
    """The second part's bytes exactly (email's parser would re-serialise a message/rfc822)."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    assert match, content_type
    delimiter = b"--" + match.group(1).encode()
    pieces = content.split(delimiter)
    # ["", part1, part2, "--\r\n"]; a part is "\r\n<headers>\r\n\r\n<body>\r\n"
    part = pieces[2]
    _, _, rest = part.partition(b"\r\n\r\n")
    assert rest.endswith(b"\r\n")
    return rest[:-2]
