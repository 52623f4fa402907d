"""What JMAP's objects mean in mailsync terms (RFC 8620/8621): method errors
(:class:`MethodError`, :class:`JMAPDialect`), mailboxes as folders, keywords as flags, ``Q`` as
an ``Email/query`` filter, Email objects read into :class:`~mailsync.Message` values, listing
pages, and a submission's envelope, refusals and delivery status.

Pure functions over JMAP's JSON, beside :mod:`mailsync.protocol.jmap` (the plans that talk) and
:mod:`mailsync.protocol.jmap_core` (the session and the method calls); no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from typing import Any

from mailsync._errors import (
    AuthenticationError,
    ConfigError,
    MailsyncError,
    MessageNotFound,
    ProtocolError,
    RateLimited,
    ServerError,
    TemporaryFailure,
    Unsupported,
)
from mailsync._message import Folder, Message, header_block
from mailsync._query import Q, as_datetime
from mailsync.protocol.http import (
    Dialect,
    ErrorBody,
    Request,
    Response,
    field_of,
    optional_field,
)
from mailsync.protocol.mailapi import json_datetime

__all__ = [
    "NAME",
    "SPECIAL_USE",
    "SYSTEM_KEYWORDS",
    "JMAPDialect",
    "Mailbox",
    "MethodError",
    "Paging",
    "as_shown",
    "check_id",
    "check_set",
    "created_id",
    "email_filter",
    "find_mailbox",
    "flags_of",
    "header_bytes",
    "in_mailbox",
    "in_order",
    "keyword_of",
    "keyword_patch",
    "label_of",
    "listing_ids",
    "mailboxes_by_id",
    "message_of",
    "method_error",
    "native_filter",
    "not_created",
    "pointer",
    "short",
    "sync_start",
    "unique",
]

NAME = "JMAP"
_ID = re.compile(r"[A-Za-z0-9_-]{1,255}")
SPECIAL_USE: Mapping[str, str] = {
    "sent": "\\Sent",
    "trash": "\\Trash",
    "drafts": "\\Drafts",
    "junk": "\\Junk",
    "archive": "\\Archive",
    "all": "\\All",
    "flagged": "\\Flagged",
}
#: IMAP system flags and the JMAP keywords RFC 8621 section 4.1.1 maps them to.
SYSTEM_KEYWORDS: Mapping[str, str] = {
    "\\Seen": "$seen",
    "\\Flagged": "$flagged",
    "\\Answered": "$answered",
    "\\Draft": "$draft",
}
_FLAGS_OF_KEYWORDS = {keyword: flag for flag, keyword in SYSTEM_KEYWORDS.items()}
#: Characters RFC 8621 keeps out of keywords (besides controls, space and non-ASCII).
_KEYWORD_FORBIDDEN = frozenset('(){]%*"\\')


class JMAPDialect(Dialect):
    """JMAP's request-level errors: RFC 7807 problem details (``urn:ietf:params:jmap:error:
    limit``, ``notRequest``...) and the HTTP statuses; 401 is a refused password or token."""

    name = NAME

    def error(
        self,
        request: Request,
        response: Response,
        body: ErrorBody,
        *,
        not_found: type[ServerError] = MessageNotFound,
    ) -> MailsyncError:
        """The mailsync error for a final error reply."""
        if response.status == 401:
            detail = f"{self.name}: {request.label}: HTTP 401"
            return AuthenticationError(
                detail + " (the user name and password, or the token, were refused)"
            )
        return super().error(request, response, body, not_found=not_found)


@dataclass(frozen=True, slots=True)
class MethodError:
    """A method-level error (``["error", {"type": ...}, callId]``), for plans that give one a
    meaning of their own.

    Attributes:
        type: The error type (``"anchorNotFound"``).
        description: The server's text, if any.
        details: The whole error object.
    """

    type: str
    description: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)


_METHOD_ERRORS: Mapping[str, type[MailsyncError]] = {
    "notFound": MessageNotFound,
    "rateLimit": RateLimited,
    "serverFail": TemporaryFailure,
    "serverUnavailable": TemporaryFailure,
    "serverPartialFail": TemporaryFailure,
    "stateMismatch": TemporaryFailure,
    "forbidden": AuthenticationError,
    "accountReadOnly": AuthenticationError,
    "unknownMethod": Unsupported,
    "unsupportedSort": Unsupported,
    "unsupportedFilter": Unsupported,
}


def method_error(error: MethodError, context: str, method: str) -> MailsyncError:
    """The mailsync error for a method-level error."""
    text = f"{context}: {method}: {error.type}"
    if error.description:
        text += f": {short(error.description)}"
    kind = _METHOD_ERRORS.get(error.type, ServerError)
    if kind is RateLimited:
        return RateLimited(text, code=error.type)
    if issubclass(kind, ServerError):
        return kind(text, code=error.type)
    if error.type == "accountNotFound":
        return ServerError(text + " (the account of this session is gone)", code=error.type)
    return kind(text)


def short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True, slots=True)
class Mailbox:
    """A JMAP mailbox with its mailsync name.

    Attributes:
        id: The mailbox id.
        name: The path of names joined with ``/`` (``INBOX`` for the inbox role).
        role: The role (``"sent"``), if any.
        has_children: Whether another mailbox has it as parent.
    """

    id: str
    name: str
    role: str | None
    has_children: bool = False

    @property
    def folder(self) -> Folder:
        """The :class:`~mailsync.Folder` it is."""
        role = self.role.lower() if self.role else None
        return Folder(
            self.name,
            delimiter="/",
            special_use=SPECIAL_USE.get(role) if role else None,
            flags=frozenset({"\\HasChildren" if self.has_children else "\\HasNoChildren"}),
        )


def mailboxes_by_id(items: Iterable[Any]) -> dict[str, Mailbox]:
    """Mailboxes by id from a ``Mailbox/get`` list, each named by its path. A parent that is
    missing (or a loop of parents, from a broken server) ends the path there.

    Raises:
        ProtocolError: An item is not a mailbox object.
    """
    raw: dict[str, tuple[str, str | None, str | None]] = {}
    for item in items:
        box_id = field_of(item, "id", str, "Mailbox/get", name=NAME)
        name = optional_field(item, "name", str, "Mailbox/get", name=NAME) or box_id
        parent = optional_field(item, "parentId", str, "Mailbox/get", name=NAME)
        role = optional_field(item, "role", str, "Mailbox/get", name=NAME)
        raw[box_id] = (name, parent, role)
    parents = {parent for _, parent, _ in raw.values() if parent}

    def path(box_id: str) -> str:
        parts: list[str] = []
        seen: set[str] = set()
        current: str | None = box_id
        while current is not None and current in raw and current not in seen:
            seen.add(current)
            name, parent, role = raw[current]
            if role is not None and role.lower() == "inbox":
                parts.append("INBOX")
                break
            parts.append(name)
            current = parent
        return "/".join(reversed(parts))

    return {
        box_id: Mailbox(box_id, path(box_id), role, box_id in parents)
        for box_id, (_, _, role) in raw.items()
    }


def flags_of(keywords: Any) -> frozenset[str]:
    """IMAP-spelled flags from an Email's ``keywords`` (``{"$seen": true}``)."""
    if not isinstance(keywords, dict):
        return frozenset()
    return frozenset(
        _FLAGS_OF_KEYWORDS.get(keyword.lower(), keyword)
        for keyword, value in keywords.items()
        if value is True and isinstance(keyword, str)
    )


def keyword_of(flag: str) -> str:
    """The JMAP keyword for an IMAP flag or keyword (lower case: keywords are
    case-insensitive).

    Raises:
        Unsupported: A system flag JMAP does not expose (``\\Deleted``, ``\\Recent``).
        ConfigError: A keyword with characters RFC 8621 does not allow.
    """
    for system, keyword in SYSTEM_KEYWORDS.items():
        if flag.lower() == system.lower():
            return keyword
    if flag.startswith("\\"):
        raise Unsupported(f"{NAME} has no keyword for the IMAP flag {flag} (RFC 8621 4.1.1)")
    if (
        not flag
        or len(flag) > 255
        or any(not ("\x21" <= char <= "\x7e") or char in _KEYWORD_FORBIDDEN for char in flag)
    ):
        raise ConfigError(
            f'{flag!r} is not a valid JMAP keyword (printable ASCII, no ( ) {{ ] % * " \\)'
        )
    return flag.lower()


def pointer(token: str) -> str:
    """One JSON Pointer token (RFC 6901): ``~`` and ``/`` escaped."""
    return token.replace("~", "~0").replace("/", "~1")


def keyword_patch(add: Iterable[str], remove: Iterable[str]) -> dict[str, Any]:
    patch: dict[str, Any] = {}
    for flag in remove:
        patch[f"keywords/{pointer(keyword_of(flag))}"] = None
    for flag in add:
        patch[f"keywords/{pointer(keyword_of(flag))}"] = True
    return patch


def native_filter(query: Q | None) -> list[dict[str, Any]]:
    """FilterConditions every message matching ``query`` satisfies (a superset: the caller
    still applies the query); empty when nothing can be narrowed."""
    if query is None:
        return []
    if query.op == "and":
        return [condition for child in query.children for condition in native_filter(child)]
    if query.op == "not":
        child = query.children[0]
        criteria = child.criteria()
        if child.op == "leaf" and len(criteria) == 1:
            ((name, value),) = criteria.items()
            if name in ("seen", "flagged"):
                return [_keyword_condition(name, not value)]
        return []
    if query.op != "leaf":
        return []
    criteria = query.criteria()
    conditions = [
        _keyword_condition(name, criteria[name]) for name in ("seen", "flagged") if name in criteria
    ]
    if "larger" in criteria:
        conditions.append({"minSize": max(0, criteria["larger"] + 1)})
    if "smaller" in criteria:
        conditions.append({"maxSize": max(0, criteria["smaller"])})
    if "since" in criteria:
        # Received after a day before the date: a message arrives after it is dated, give or
        # take a sender's wrong clock.
        bound = as_datetime(criteria["since"]).astimezone(UTC) - timedelta(days=1)
        conditions.append({"after": bound.strftime("%Y-%m-%dT%H:%M:%SZ")})
    return conditions


def _keyword_condition(name: str, value: bool) -> dict[str, Any]:
    keyword = "$seen" if name == "seen" else "$flagged"
    return {"hasKeyword" if value else "notKeyword": keyword}


def email_filter(mailbox_id: str, conditions: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    if not conditions:
        return {"inMailbox": mailbox_id}
    return {"operator": "AND", "conditions": [{"inMailbox": mailbox_id}, *conditions]}


def header_bytes(item: Mapping[str, Any]) -> bytes:
    """The header block from an Email's raw ``headers``: each field as ``name:value`` (the
    value keeps its leading space and folding), then the empty line."""
    headers = optional_field(item, "headers", list, "Email/get", name=NAME) or []
    lines = []
    for header in headers:
        if not isinstance(header, dict) or not isinstance(header.get("name"), str):
            raise ProtocolError(f"{NAME}: Email/get: a header that is not {{name, value}}")
        value = header.get("value")
        lines.append(f"{header['name']}:{value if isinstance(value, str) else ''}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "replace")


def check_id(message_id: str) -> None:
    if not _ID.fullmatch(message_id):
        raise MessageNotFound(f"{NAME}: {message_id!r} is not a JMAP Email id")


@dataclass
class Paging:
    """Where the next ``Email/query`` page starts (after ``anchor``, else at ``position``),
    with which narrowing ``conditions``, and whether the last page was read."""

    conditions: list[dict[str, Any]] = field(default_factory=list)
    anchor: str | None = None
    position: int = 0
    page_start: int = 0
    page_ids: list[str] = field(default_factory=list)
    done: bool = False

    @property
    def at_start(self) -> bool:
        return self.anchor is None and self.position == 0

    def arguments(self) -> dict[str, Any]:
        if self.anchor is not None:
            return {"anchor": self.anchor, "anchorOffset": 1}
        return {"position": self.position}

    def advance(self, ids: list[str], start: int, page: int) -> None:
        """Note a page read: the next starts after its last id; a short page was the last."""
        self.page_start, self.page_ids = start, ids
        self.position = start + len(ids)
        if ids:
            self.anchor = ids[-1]
        self.done = len(ids) < page


def listing_ids(listing: Mapping[str, Any]) -> tuple[list[str], int]:
    ids = [str(i) for i in field_of(listing, "ids", list, "Email/query", name=NAME)]
    return ids, optional_field(listing, "position", int, "Email/query", name=NAME) or 0


def label_of(calls: Sequence[tuple[str, Any]]) -> str:
    """How error messages name a request: its methods (``"Email/query, Email/get"``)."""
    return ", ".join(dict.fromkeys(name for name, _ in calls))


def find_mailbox(boxes: Iterable[Mailbox], name: str) -> Mailbox | None:
    boxes = list(boxes)
    for box in boxes:
        if box.name == name:
            return box
    if name == "INBOX":  # a server without the inbox role: its top-level "Inbox"
        return next((b for b in boxes if b.name.upper() == "INBOX"), None)
    return None


def in_order(ids: Sequence[str], items: Sequence[Any]) -> list[dict[str, Any]]:
    """The Email objects of ``items`` in the order of ``ids`` (servers need not keep it)."""
    by_id: dict[str, dict[str, Any]] = {}
    for item in items:
        by_id[field_of(item, "id", str, "Email/get", name=NAME)] = item
    return [by_id[i] for i in ids if i in by_id]


def unique(items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[Any] = set()
    unique = []
    for item in items:
        if item.get("id") not in seen:
            seen.add(item.get("id"))
            unique.append(item)
    return unique


def in_mailbox(item: Any, mailbox_id: str) -> bool:
    boxes = item.get("mailboxIds") if isinstance(item, dict) else None
    return isinstance(boxes, dict) and boxes.get(mailbox_id) is True


def sync_start(cursor: Mapping[str, Any] | None, account: str) -> str | None:
    """The Email state to continue from, or None when a full pass is due (first sync, an
    interrupted full pass, another account's cursor, a cursor that is not ours)."""
    if not isinstance(cursor, Mapping) or cursor.get("resync") or cursor.get("account") != account:
        return None
    state = cursor.get("state")
    return state if isinstance(state, str) and state else None


def message_of(
    item: Mapping[str, Any],
    raw: bytes,
    folder: str,
    labels: Sequence[str],
    *,
    headers: bool = False,
) -> Message:
    size = optional_field(item, "size", int, "Email/get", name=NAME)
    thread = item.get("threadId")
    return Message(
        raw,
        id=field_of(item, "id", str, "Email/get", name=NAME),
        folder=folder,
        flags=flags_of(item.get("keywords")),
        size=(size if size is not None else len(raw)) if headers else len(raw),
        labels=labels,
        thread_id=thread if isinstance(thread, str) else None,
        headers_only=headers,
        internal_date=json_datetime(item.get("receivedAt")),
    )


def as_shown(message: Message, query: Q | None, headers_only: bool) -> Message | None:
    """The message as ``messages()`` yields it (cut to its header block when only that was
    asked for), or None when the query turns it down."""
    if query is not None and not query.matches(message):
        return None
    if headers_only and not message.headers_only:
        return message.replace(raw=header_block(message.raw), headers_only=True)
    return message


def check_set(reply: Mapping[str, Any], key: str, context: str) -> None:
    """Raise for the first object a ``/set`` call did not change."""
    failed = optional_field(reply, key, dict, "Email/set", name=NAME)
    if not failed:
        return
    object_id, problem = next(iter(failed.items()))
    error = MethodError(
        str(problem.get("type") or "serverFail") if isinstance(problem, dict) else "serverFail",
        str(problem.get("description") or "") if isinstance(problem, dict) else "",
    )
    raise method_error(error, context, f"Email/set ({object_id})")


def created_id(reply: Mapping[str, Any], creation: str, method: str, context: str) -> str:
    created = optional_field(reply, "created", dict, method, name=NAME) or {}
    item = created.get(creation)
    if isinstance(item, dict) and isinstance(item.get("id"), str):
        return str(item["id"])
    problem = not_created(reply, creation)
    raise method_error(problem, context, method)


def not_created(reply: Mapping[str, Any], creation: str) -> MethodError:
    failed = reply.get("notCreated")
    problem = failed.get(creation) if isinstance(failed, dict) else None
    if not isinstance(problem, dict):
        return MethodError("serverFail", "the server neither created it nor said why")
    return MethodError(
        str(problem.get("type") or "serverFail"), str(problem.get("description") or ""), problem
    )
