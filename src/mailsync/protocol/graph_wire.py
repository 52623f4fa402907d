"""What Microsoft Graph's resources mean in mailsync terms: its error replies
(:class:`GraphDialect`), message resources read into flags, labels, sizes and
:class:`~mailsync.Message` values (a header block made from properties where a message has
no transport headers), folder resources into folder records, ``Q`` into an OData
``$filter``, and the replies that end a delta round.

Pure functions over Graph's JSON, beside :mod:`mailsync.protocol.graph` (the plans that talk);
no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, timedelta
from typing import Any
from urllib.parse import quote

from mailsync._errors import (
    ConfigError,
    MailsyncError,
    MessageNotFound,
    ServerError,
    Unsupported,
)
from mailsync._message import Message
from mailsync._query import Q, as_datetime
from mailsync.protocol.http import (
    Dialect,
    ErrorBody,
    Request,
    Response,
    field_of,
    optional_field,
    read_error_body,
)
from mailsync.protocol.mailapi import json_datetime

__all__ = [
    "NAME",
    "SIZE_PROPERTY",
    "WELL_KNOWN",
    "FolderInfo",
    "GraphDialect",
    "check_id",
    "crlf",
    "flag_patch",
    "flags_of",
    "folder_info",
    "item_id",
    "message_from_headers",
    "message_of",
    "native_filter",
    "seg",
    "sync_state_expired",
    "user_path",
    "well_known_id",
]

NAME = "Microsoft Graph"
#: PidTagMessageSize, the only place Graph v1.0 tells a message's size.
SIZE_PROPERTY = "Integer 0x0E08"
#: Well-known folder names and the special use they stand for.
WELL_KNOWN: dict[str, str | None] = {
    "inbox": None,
    "sentitems": "\\Sent",
    "deleteditems": "\\Trash",
    "drafts": "\\Drafts",
    "junkemail": "\\Junk",
    "archive": "\\Archive",
}
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
class FolderInfo:
    id: str
    name: str
    special_use: str | None
    children: int


def well_known_id(name: str) -> str | None:
    """The well-known folder an account-relative name stands for, if any (INBOX only: other
    names are the user's own, whatever their display name)."""
    return "inbox" if name.upper() == "INBOX" else None


def user_path(username: str | None, host: str) -> str:
    """``me``, or ``users/{address}`` for another mailbox."""
    if not username and host.lower() in ("", "me"):
        return "me"
    address = (
        f"{username}@{host}" if username and host and "@" not in username else (username or host)
    )
    if any(ch in address for ch in "/?#\r\n") or not address.strip():
        raise ConfigError(f"graph://{address}: not a mailbox address or 'me'")
    return f"users/{quote(address, safe='@')}"


def folder_info(
    item: Any, parent_name: str, inbox_id: str | None, special: dict[str, str | None]
) -> FolderInfo:
    folder_id = field_of(item, "id", str, "mail folder", name=NAME)
    display = optional_field(item, "displayName", str, "mail folder", name=NAME) or folder_id
    if folder_id == inbox_id:
        name = "INBOX"
    else:
        name = f"{parent_name}/{display}" if parent_name else display
    children = optional_field(item, "childFolderCount", int, "mail folder", name=NAME) or 0
    return FolderInfo(folder_id, name, special.get(folder_id), children)


def item_id(item: Any) -> str:
    return field_of(item, "id", str, "message", name=NAME)


def check_id(message_id: str) -> None:
    if not message_id or any(ch in message_id for ch in "/?#\r\n\0"):
        raise MessageNotFound(f"{NAME}: {message_id!r} is not a Graph message id")


def seg(value: str) -> str:
    """An id as one URL path segment (Graph ids may hold ``/``, ``+`` or ``=``)."""
    return quote(value, safe="")


def crlf(raw: bytes) -> bytes:
    import re

    return re.sub(rb"\r\n|\r|\n", b"\r\n", raw)


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


def message_of(item: Any, raw: bytes, folder: str) -> Message:
    thread = item.get("conversationId")
    return Message(
        raw,
        id=item_id(item),
        folder=folder,
        flags=flags_of(item),
        size=_size(item) or len(raw),
        labels=_labels(item),
        thread_id=thread if isinstance(thread, str) else None,
        internal_date=json_datetime(item.get("receivedDateTime")),
    )


def message_from_headers(item: Any, folder: str) -> Message:
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
        id=item_id(item),
        folder=folder,
        flags=flags_of(item),
        size=_size(item) or len(raw),
        labels=_labels(item),
        thread_id=thread if isinstance(thread, str) else None,
        headers_only=True,
        internal_date=json_datetime(item.get("receivedDateTime")),
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
    sent = json_datetime(item.get("sentDateTime"))
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


def sync_state_expired(reply: Response) -> bool:
    if reply.status == 410:
        return True
    code = (read_error_body(reply).code or "").lower()
    return code in _EXPIRED_SYNC_CODES
