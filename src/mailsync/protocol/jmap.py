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

This module is pure: it builds requests and reads replies, and never does I/O itself.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import quote, urljoin, urlsplit

from mailsync._base import SendResult, SyncStep
from mailsync._config import Endpoint
from mailsync._envelope import Envelope
from mailsync._errors import (
    AuthenticationError,
    ConfigError,
    FolderNotFound,
    MailsyncError,
    MessageNotFound,
    ProtocolError,
    RateLimited,
    RecipientsRefused,
    SendError,
    ServerError,
    TemporaryFailure,
    Unsupported,
)
from mailsync._message import Folder, Message, crlf_bytes, header_block
from mailsync._plans import Call, Emit, Plan, Sleep
from mailsync._query import Q, as_datetime
from mailsync.protocol.events import ServerEvent, await_event
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
from mailsync.protocol.smtp import dsn_options, xtext

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

NAME = "JMAP"
CORE = "urn:ietf:params:jmap:core"
MAIL = "urn:ietf:params:jmap:mail"
SUBMISSION = "urn:ietf:params:jmap:submission"
MAIL_USING = (CORE, MAIL)
SEND_USING = (CORE, MAIL, SUBMISSION)
IDENTITY = "jmap:"
#: The default bound on one message's blob (``max_message_size`` changes it; None: none).
MAX_MESSAGE_SIZE = 256 * 1024 * 1024
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
_ID = re.compile(r"[A-Za-z0-9_-]{1,255}")
_TEMPLATE_VARIABLE = re.compile(r"\{([A-Za-z0-9_]*)\}")
_DOWNLOAD_NAME = "message.eml"

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
_EMAIL_PROPERTIES = ("id", "blobId", "threadId", "mailboxIds", "keywords", "size", "receivedAt")
#: Replies to an API request that may have taken effect: a request that creates something
#: (import, submission) is not sent again after one of these.
_AMBIGUOUS = (500, 502, 504)
#: Method errors a refused filter shows as, on servers without a search engine or with a
#: smaller filter vocabulary.
_FILTER_REFUSED = frozenset({"unsupportedFilter", "serverFail", "invalidArguments"})
_NO_PUSH = frozenset({204, 404, 405, 406, 501})


# -- the session -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Session:
    """What the JMAP session resource says (RFC 8620 section 2), checked.

    Attributes:
        api_url: Where method calls are POSTed (absolute).
        download_url: The download template (``{accountId}``, ``{blobId}``, ``{type}``,
            ``{name}``).
        upload_url: The upload template (``{accountId}``).
        event_source_url: The event-source template, if the server names one.
        account_id: The primary account for mail.
        submission_account_id: The primary account for submission, if any.
        state: The session's state string.
        max_objects_in_get: Ids per ``/get`` call.
        max_objects_in_set: Objects per ``/set`` call.
        max_calls_in_request: Method calls per request.
        max_concurrent_requests: Requests in flight at once.
        max_size_upload: The largest blob an upload takes.
        submission_extensions: The SMTP extensions submission offers (lower-case names).
        sort_options: The Email/query sort properties the server lists (may be empty).
    """

    api_url: str
    download_url: str
    upload_url: str
    event_source_url: str | None
    account_id: str
    submission_account_id: str | None
    state: str
    max_objects_in_get: int = 500
    max_objects_in_set: int = 500
    max_calls_in_request: int = 16
    max_concurrent_requests: int = 4
    max_size_upload: int = 50_000_000
    submission_extensions: Mapping[str, Any] = field(default_factory=dict)
    sort_options: frozenset[str] = frozenset()


def parse_session(data: Any, url: str, *, secure: bool | None = None) -> Session:
    """Check and read a session resource fetched from ``url`` (relative URLs in it are
    resolved against that).

    Args:
        data: The session resource, parsed JSON.
        url: Where it was fetched from (after redirects).
        secure: Require https URLs (by default: when ``url`` is https). A session asked for
            over https stays there, even if a redirect led elsewhere.

    Raises:
        ProtocolError: It is not a session object, lacks what RFC 8620 requires, names no
            mail account, or (fetched over https) names a plain-http URL.
        Unsupported: The server does not offer JMAP Mail.
    """
    what = "the session resource"
    capabilities = field_of(data, "capabilities", dict, what, name=NAME)
    core = capabilities.get(CORE)
    if not isinstance(core, dict):
        raise ProtocolError(f"{NAME}: {what} has no {CORE} capability")
    if MAIL not in capabilities:
        raise Unsupported(f"{NAME}: the server does not offer JMAP Mail ({MAIL})")
    primary = field_of(data, "primaryAccounts", dict, what, name=NAME)
    account_id = primary.get(MAIL)
    if not isinstance(account_id, str) or not account_id:
        raise ProtocolError(f"{NAME}: {what} names no primary account for mail")
    submission = primary.get(SUBMISSION)
    accounts = optional_field(data, "accounts", dict, what, name=NAME) or {}
    secure = url.startswith("https://") if secure is None else secure

    def absolute(key: str, *variables: str, required: bool = True) -> str | None:
        value = data.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value:
            raise ProtocolError(f"{NAME}: {what} has no {key}")
        resolved = urljoin(url, value)
        if urlsplit(resolved).scheme not in ("https", "http") or (
            secure and not resolved.startswith("https://")
        ):
            raise ProtocolError(f"{NAME}: {what}: {key} is not an https URL: {value[:200]!r}")
        missing = [name for name in variables if "{" + name + "}" not in resolved]
        if missing:
            if not required:
                return None
            raise ProtocolError(f"{NAME}: {what}: {key} lacks {{{missing[0]}}}")
        return resolved

    api_url = absolute("apiUrl")
    download_url = absolute("downloadUrl", "accountId", "blobId")
    upload_url = absolute("uploadUrl", "accountId")
    assert api_url is not None
    assert download_url is not None
    assert upload_url is not None
    return Session(
        api_url=api_url,
        download_url=download_url,
        upload_url=upload_url,
        event_source_url=absolute("eventSourceUrl", "types", required=False),
        account_id=account_id,
        submission_account_id=submission if isinstance(submission, str) and submission else None,
        state=str(data.get("state") or ""),
        max_objects_in_get=_limit(core, "maxObjectsInGet", 500),
        max_objects_in_set=_limit(core, "maxObjectsInSet", 500),
        max_calls_in_request=_limit(core, "maxCallsInRequest", 16),
        max_concurrent_requests=_limit(core, "maxConcurrentRequests", 4),
        max_size_upload=_limit(core, "maxSizeUpload", 50_000_000),
        submission_extensions=_submission_extensions(accounts, submission),
        sort_options=_sort_options(accounts, account_id),
    )


def _limit(core: Mapping[str, Any], key: str, default: int) -> int:
    """A positive core limit; a missing or nonsensical one is the default (a bound is kept
    even so: a server saying 0 would otherwise stop every batch)."""
    value = core.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return default
    return value


def _account_capability(accounts: Mapping[str, Any], account: Any, name: str) -> Mapping[str, Any]:
    entry = accounts.get(account) if isinstance(account, str) else None
    capabilities = entry.get("accountCapabilities") if isinstance(entry, dict) else None
    value = capabilities.get(name) if isinstance(capabilities, dict) else None
    return value if isinstance(value, dict) else {}


def _submission_extensions(accounts: Mapping[str, Any], account: Any) -> dict[str, Any]:
    extensions = _account_capability(accounts, account, SUBMISSION).get("submissionExtensions")
    if not isinstance(extensions, dict):
        return {}
    return {str(key).lower(): value for key, value in extensions.items()}


def _sort_options(accounts: Mapping[str, Any], account: str) -> frozenset[str]:
    mail = _account_capability(accounts, account, MAIL)
    # RFC 8621 names it emailQuerySortOptions; Cyrus 3.6 still says emailsListSortOptions.
    options = mail.get("emailQuerySortOptions") or mail.get("emailsListSortOptions") or []
    return (
        frozenset(o for o in options if isinstance(o, str))
        if isinstance(options, list)
        else frozenset()
    )


def expand_template(template: str, **values: str) -> str:
    """Expand an RFC 6570 level-1 URI template: each ``{name}`` becomes its value with every
    character but the unreserved ones percent-encoded.

    Raises:
        ProtocolError: The template names a variable that was not given.
    """

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise ProtocolError(f"{NAME}: the URL template {template[:200]!r} needs {{{name}}}")
        return quote(values[name], safe="")

    return _TEMPLATE_VARIABLE.sub(substitute, template)


# -- errors --------------------------------------------------------------------------------------


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
        text += f": {_short(error.description)}"
    kind = _METHOD_ERRORS.get(error.type, ServerError)
    if kind is RateLimited:
        return RateLimited(text, code=error.type)
    if issubclass(kind, ServerError):
        return kind(text, code=error.type)
    if error.type == "accountNotFound":
        return ServerError(text + " (the account of this session is gone)", code=error.type)
    return kind(text)


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- mailboxes -----------------------------------------------------------------------------------


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


def _canonical(name: str) -> str:
    """``inbox`` and ``Inbox/Receipts`` are the INBOX and its child, in any case."""
    head, sep, rest = name.partition("/")
    return f"INBOX{sep}{rest}" if head.upper() == "INBOX" else name


# -- keywords and flags --------------------------------------------------------------------------


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


def _pointer(token: str) -> str:
    """One JSON Pointer token (RFC 6901): ``~`` and ``/`` escaped."""
    return token.replace("~", "~0").replace("/", "~1")


def _keyword_patch(add: Iterable[str], remove: Iterable[str]) -> dict[str, Any]:
    patch: dict[str, Any] = {}
    for flag in remove:
        patch[f"keywords/{_pointer(keyword_of(flag))}"] = None
    for flag in add:
        patch[f"keywords/{_pointer(keyword_of(flag))}"] = True
    return patch


# -- queries -------------------------------------------------------------------------------------


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


def _email_filter(mailbox_id: str, conditions: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    if not conditions:
        return {"inMailbox": mailbox_id}
    return {"operator": "AND", "conditions": [{"inMailbox": mailbox_id}, *conditions]}


# -- replies -------------------------------------------------------------------------------------


def _datetime(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _header_bytes(item: Mapping[str, Any]) -> bytes:
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


def _chunks(items: Sequence[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), max(1, size)):
        yield list(items[start : start + max(1, size)])


def _check_id(message_id: str) -> None:
    if not _ID.fullmatch(message_id):
        raise MessageNotFound(f"{NAME}: {message_id!r} is not a JMAP Email id")


def _local_host(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class _Paging:
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


def _listing(listing: Mapping[str, Any]) -> tuple[list[str], int]:
    ids = [str(i) for i in field_of(listing, "ids", list, "Email/query", name=NAME)]
    return ids, optional_field(listing, "position", int, "Email/query", name=NAME) or 0


# -- the API -------------------------------------------------------------------------------------


class JMAPAPI(MailAPI):
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
    options: ClassVar[frozenset[str]] = COMMON_OPTIONS | {"max_message_size"}
    recipients_from_headers: ClassVar[bool] = False

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(endpoint)
        if endpoint.tls == "starttls":
            raise ConfigError(
                'jmap:// speaks https (tls="ssl", the default) or, to a loopback address, plain '
                'http (tls="none"); there is no STARTTLS in HTTP'
            )
        if (
            endpoint.tls == "none"
            and "base_url" not in endpoint.params
            and not _local_host(endpoint.host)
        ):
            raise ConfigError(
                f'{endpoint.display}: tls="none" (plain http) is for loopback addresses only: '
                "the password or token would cross the network in the clear"
            )
        if not endpoint.host and "base_url" not in endpoint.params:
            raise ConfigError("jmap:// needs a host: jmap://user@host[:port][/session-path]")
        self._client = APIClient(
            Auth(endpoint, basic=True), JMAPDialect(), RetryPolicy.from_params(endpoint.params)
        )
        self.max_message_size = whole_number_option(
            endpoint.params, "max_message_size", MAX_MESSAGE_SIZE, none_allowed=True
        )
        self._session_data: Session | None = None
        self._mailboxes: dict[str, Mailbox] | None = None
        self._identities: list[dict[str, Any]] | None = None
        self._push = True
        self._last_event_id: str | None = None
        self._synced_state: str | None = None

    @property
    def client(self) -> APIClient:
        """Authorization (Basic or Bearer), the JMAP dialect and the retry policy."""
        return self._client

    @property
    def context(self) -> str:
        """How error messages name this account."""
        who = self.endpoint.username or self.endpoint.host
        return f"{NAME} ({who})" if who else NAME

    # -- where --------------------------------------------------------------------------------

    def base_url(self) -> str:
        """The server's root: the ``base_url`` option's, else ``https://host[:port]`` (or
        ``http://`` with ``tls="none"``)."""
        option = self.endpoint.params.get("base_url")
        if option is not None:
            if not isinstance(option, str) or not option.startswith(("https://", "http://")):
                raise ConfigError(f"base_url must be an https:// (or http://) URL, not {option!r}")
            parts = urlsplit(option)
            return f"{parts.scheme}://{parts.netloc}"
        endpoint = self.endpoint
        scheme = "http" if endpoint.tls == "none" else "https"
        host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
        default = 80 if scheme == "http" else 443
        port = "" if endpoint.port in (0, default) else f":{endpoint.port}"
        return f"{scheme}://{host}{port}"

    def session_url(self) -> str:
        """The session resource: ``base_url`` when it has a path, else the URL's path, else
        ``/.well-known/jmap`` (RFC 8620 section 2.2)."""
        option = self.endpoint.params.get("base_url")
        if isinstance(option, str) and urlsplit(option).path.strip("/"):
            return option
        path = self.endpoint.path.strip("/")
        return f"{self.base_url()}/{quote(path, safe='/') if path else '.well-known/jmap'}"

    # -- session and calls ------------------------------------------------------------------

    def _session(self) -> Plan[Session]:
        if self._session_data is not None:
            return self._session_data
        url = self.session_url()
        request = Request("GET", url, what="read the JMAP session resource")
        response = yield from call(self._client, request, allow=(404,))
        if response.status == 404:
            raise ConfigError(f"{self.context}: no JMAP session resource at {url}")
        data = json_of(response, request.label, name=NAME)
        session = parse_session(data, response.url or url, secure=url.startswith("https://"))
        self._session_data = session
        return session

    def _request(
        self,
        calls: Sequence[tuple[str, dict[str, Any]]],
        *,
        using: Sequence[str] = MAIL_USING,
        tolerate: Iterable[str] = (),
        once: bool = False,
        account: str | None = None,
    ) -> Plan[list[Any]]:
        """Send method calls in one request; the arguments of each call's reply, in order (a
        :class:`MethodError` for a tolerated error type; any other error raises).

        Back-references name earlier calls by their index (``"0"``, ``"1"``...). ``once``:
        the request creates something, so a reply that may mean it was done is not retried.
        """
        session = yield from self._session()
        if len(calls) > session.max_calls_in_request:
            # Calls that refer to each other (#ids) cannot be split into two requests.
            raise Unsupported(
                f"{self.context}: the server takes {session.max_calls_in_request} method calls "
                f"per request, and {label_of(calls)} needs {len(calls)}"
            )
        who = account or session.account_id
        method_calls = [
            [name, {"accountId": who, **arguments}, str(index)]
            for index, (name, arguments) in enumerate(calls)
        ]
        label = label_of(calls)
        request = Request(
            "POST",
            session.api_url,
            json={"using": list(using), "methodCalls": method_calls},
            what=label,
        )
        allowed = _AMBIGUOUS if once else ()
        response = yield from call(self._client, request, allow=allowed)
        if response.status in allowed:
            raise self._client.dialect.error(request, response, read_error_body(response))
        data = json_of(response, label, name=NAME)
        replies = field_of(data, "methodResponses", list, label, name=NAME)
        state = optional_field(data, "sessionState", str, label, name=NAME)
        if state is not None and state != session.state:
            self._session_data = None  # read again before the next request
        return self._results(calls, replies, frozenset(tolerate), label)

    def _results(
        self,
        calls: Sequence[tuple[str, dict[str, Any]]],
        replies: list[Any],
        tolerate: frozenset[str],
        label: str,
    ) -> list[Any]:
        first: dict[str, tuple[str, Any]] = {}
        for reply in replies:
            if not (isinstance(reply, list) and len(reply) == 3 and isinstance(reply[0], str)):
                raise ProtocolError(f"{NAME}: {label}: a method response is not [name, args, id]")
            first.setdefault(str(reply[2]), (reply[0], reply[1]))
        results: list[Any] = []
        for index, (name, _) in enumerate(calls):
            found = first.get(str(index))
            if found is None:
                raise ProtocolError(f"{NAME}: {label}: no response to {name}")
            kind, arguments = found
            if not isinstance(arguments, dict):
                raise ProtocolError(f"{NAME}: {name}: the response arguments are not an object")
            if kind == "error":
                error = MethodError(
                    str(arguments.get("type") or "serverFail"),
                    str(arguments.get("description") or ""),
                    arguments,
                )
                if error.type not in tolerate:
                    raise method_error(error, self.context, name)
                results.append(error)
            elif kind != name:
                raise ProtocolError(f"{NAME}: {label}: {name} was answered by {kind}")
            else:
                results.append(arguments)
        return results

    def _invoke(self, name: str, arguments: dict[str, Any], **options: Any) -> Plan[Any]:
        """One method call alone; its reply's arguments."""
        (result,) = yield from self._request([(name, arguments)], **options)
        return result

    # -- folders ------------------------------------------------------------------------------

    def _load_mailboxes(self, account: str | None = None) -> Plan[dict[str, Mailbox]]:
        reply = yield from self._invoke(
            "Mailbox/get",
            {"ids": None, "properties": ["id", "name", "parentId", "role"]},
            account=account,
        )
        boxes = mailboxes_by_id(field_of(reply, "list", list, "Mailbox/get", name=NAME))
        if account is None:
            self._mailboxes = boxes
        return boxes

    def _known_mailboxes(self) -> Plan[dict[str, Mailbox]]:
        if self._mailboxes is None:
            return (yield from self._load_mailboxes())
        return self._mailboxes

    def folders(self) -> Plan[list[Folder]]:
        """Every mailbox, INBOX first, then by name."""
        boxes = yield from self._load_mailboxes()
        ordered = sorted(boxes.values(), key=lambda b: (b.name != "INBOX", b.name.casefold()))
        return [box.folder for box in ordered]

    def _mailbox(self, folder: str) -> Plan[Mailbox]:
        wanted = _canonical(folder)
        for reload in (False, True):
            boxes = (
                (yield from self._load_mailboxes())
                if reload
                else (yield from self._known_mailboxes())
            )
            found = _find(boxes.values(), wanted)
            if found is not None:
                return found
        raise FolderNotFound(f"{self.context}: no mailbox {folder!r}")

    def _names(self, mailbox_ids: Any) -> Plan[list[str]]:
        """The names of these mailboxes (reading the list again once for one it lacks)."""
        ids = (
            [i for i, on in mailbox_ids.items() if on is True]
            if isinstance(mailbox_ids, dict)
            else []
        )
        boxes = yield from self._known_mailboxes()
        if any(i not in boxes for i in ids):
            boxes = yield from self._load_mailboxes()
        return sorted(boxes[i].name if i in boxes else i for i in ids)

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
        paging = _Paging(native_filter(query))
        count = 0
        while not paging.done:
            items = yield from self._page(box, paging, page, properties)
            for batch in (yield from self._batches(items, needs_body)):
                for message in (yield from self._materialize(batch, box.name, needs_body)):
                    shown = _shown(message, query, headers_only)
                    if shown is None:
                        continue
                    yield Emit(shown)
                    count += 1
                    if limit is not None and count >= limit:
                        return

    def _page(
        self, box: Mailbox, paging: _Paging, page: int, properties: list[str]
    ) -> Plan[list[dict[str, Any]]]:
        """The next page's Email objects in query order (one request: the query and a get of
        its ``#ids``); ``paging`` moves on, and says when it was the last."""
        session = yield from self._session()
        arguments = {
            "filter": _email_filter(box.id, paging.conditions),
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
        return _in_order(ids, field_of(emails, "list", list, "Email/get", name=NAME))

    def _recover_anchor(
        self, box: Mailbox, paging: _Paging, page: int
    ) -> Plan[tuple[list[str], int]]:
        """The next page when the anchor was deleted meanwhile: after the latest message of
        the last page still there, else (all of it gone) from where that page started."""
        session = yield from self._session()
        candidates = list(reversed(paging.page_ids[:-1]))[: session.max_calls_in_request]
        base = {"filter": _email_filter(box.id, paging.conditions), "sort": self._sort(session)}
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
                    return _listing(listing)
        listing = yield from self._invoke(
            "Email/query", {**base, "limit": page, "position": paging.page_start}
        )
        return _listing(listing)

    def _get_emails(
        self, ids: Sequence[str], properties: Sequence[str]
    ) -> Plan[list[dict[str, Any]]]:
        """Email objects by id, in the order asked, leaving out the ones gone meanwhile."""
        session = yield from self._session()
        found: list[dict[str, Any]] = []
        for chunk in _chunks(ids, session.max_objects_in_get):
            reply = yield from self._invoke(
                "Email/get", {"ids": chunk, "properties": list(properties)}
            )
            found += _in_order(chunk, field_of(reply, "list", list, "Email/get", name=NAME))
        return found

    def _batches(self, items: list[dict[str, Any]], with_body: bool) -> Plan[list[list[Any]]]:
        """``items`` cut into the batches :meth:`_materialize` takes: as many downloads as may
        run at once (``concurrency``, never above the server's ``maxConcurrentRequests``), so
        that a page's messages are never all held at once; one batch when nothing is
        downloaded."""
        if not with_body:
            return [items] if items else []
        session = yield from self._session()
        return list(_chunks(items, min(self.concurrency, session.max_concurrent_requests)))

    def _materialize(
        self, items: list[dict[str, Any]], folder: str, with_body: bool
    ) -> Plan[list[Message]]:
        """Messages for Email objects: with their blobs (all downloaded at once: give a batch
        from :meth:`_batches`), skipping any deleted meanwhile; or with their header fields
        only."""
        messages: list[Message] = []
        if not with_body:
            for item in items:
                labels = yield from self._labels(item)
                messages.append(_message(item, _header_bytes(item), folder, labels, headers=True))
            return messages
        session = yield from self._session()
        requests = [self._download_request(session, item) for item in items]
        replies = yield from call_all(self._client, requests, allow=(404,))
        for item, reply in zip(items, replies, strict=True):
            if reply.status == 404:
                continue  # deleted between the listing and the download
            labels = yield from self._labels(item)
            messages.append(_message(item, reply.content, folder, labels))
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
        _check_id(id)
        reply = yield from self._invoke(
            "Email/get", {"ids": [id], "properties": list(_EMAIL_PROPERTIES)}
        )
        items = _in_order([id], field_of(reply, "list", list, "Email/get", name=NAME))
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
        start = _sync_start(cursor, session.account_id)
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
            for message in (yield from self._materialize(batch, box.name, True)):
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
                if _in_mailbox(item, box.id)
            ]
            items.sort(key=lambda item: str(item.get("receivedAt") or ""))
            fresh = yield from self._unknown(_unique(items), known)
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
        paging = _Paging()
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
        for chunk in _chunks(ids, min(_SET_CHUNK, session.max_objects_in_set)):
            reply = yield from self._invoke("Email/set", {"update": {i: patches[i] for i in chunk}})
            _check_set(reply, "notUpdated", self.context)

    def set_flags(
        self, ids: Sequence[str], *, add: Iterable[str], remove: Iterable[str]
    ) -> Plan[None]:
        """Patch ``keywords/...`` on each message."""
        patch = _keyword_patch(add, remove)
        for message_id in ids:
            _check_id(message_id)
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
            _check_id(message_id)
            origin = None
            if source is not None:
                origin = _find((yield from self._known_mailboxes()).values(), _canonical(source))
            if origin is None:
                patches[message_id] = {"mailboxIds": {target.id: True}}
            elif origin.id != target.id:
                patches[message_id] = {
                    f"mailboxIds/{_pointer(origin.id)}": None,
                    f"mailboxIds/{_pointer(target.id)}": True,
                }
        if patches:
            yield from self._update(patches)

    def delete(self, ids: Sequence[str], *, permanent: bool) -> Plan[None]:
        """To the trash mailbox; destroyed when ``permanent``, when already in the trash
        only, or when the account has no trash."""
        for message_id in ids:
            _check_id(message_id)
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
        for chunk in _chunks(doomed, min(_SET_CHUNK, session.max_objects_in_set)):
            reply = yield from self._invoke("Email/set", {"destroy": chunk})
            _check_set(reply, "notDestroyed", self.context)

    def _upload(self, raw: bytes, account: str) -> Plan[str]:
        session = yield from self._session()
        if len(raw) > session.max_size_upload:
            raise ServerError(
                f"{self.context}: the message ({len(raw)} bytes) is larger than the server's "
                f"maxSizeUpload ({session.max_size_upload})",
                code="tooLarge",
            )
        request = Request(
            "POST",
            expand_template(session.upload_url, accountId=account),
            headers={"Content-Type": "message/rfc822"},
            content=raw,
            what="upload a message",
        )
        response = yield from call(self._client, request)
        data = json_of(response, request.label, name=NAME)
        return field_of(data, "blobId", str, request.label, name=NAME)

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
        problem = _not_created(reply, "a")
        existing = problem.details.get("existingId")
        if problem.type == "alreadyExists" and isinstance(existing, str):
            # The server keeps one Email per content (RFC 8621 4.8): that one is put in the
            # folder too, with the flags, as if it had been stored again.
            patch = {f"mailboxIds/{_pointer(box.id)}": True}
            patch |= {f"keywords/{_pointer(keyword)}": True for keyword in keywords}
            yield from self._update({existing: patch})
            return existing
        return _created_id(reply, "a", "Email/import", self.context)

    # -- sending ------------------------------------------------------------------------------

    def send(
        self,
        envelope: Envelope,
        *,
        notify: Iterable[str] | str | None,
        ret: str | None,
        envid: str | None,
    ) -> Plan[SendResult]:
        """Import the message into Drafts and submit it (see the module docstring)."""
        session = yield from self._session()
        account = session.submission_account_id
        if account is None:
            raise Unsupported(f"{self.context}: the server offers no submission ({SUBMISSION})")
        envelope_json, sent_envid = _envelope(envelope, session, notify, ret, envid, self.context)
        boxes = yield from self._load_mailboxes(account)
        roles = {(b.role or "").lower(): b for b in boxes.values() if b.role}
        home = roles.get("drafts") or roles.get("sent")
        if home is None:
            raise Unsupported(f"{self.context}: no Drafts or Sent mailbox to send from")
        identity = yield from self._identity(account, envelope.mail_from)
        blob = yield from self._upload(envelope.data, account)
        sent = roles.get("sent")
        on_success: dict[str, Any] = {"keywords/$draft": None}
        if sent is not None and sent.id != home.id:
            on_success |= {
                f"mailboxIds/{_pointer(home.id)}": None,
                f"mailboxIds/{_pointer(sent.id)}": True,
            }
        imported, submitted = yield from self._request(
            [
                (
                    "Email/import",
                    {
                        "emails": {
                            "draft": {
                                "blobId": blob,
                                "mailboxIds": {home.id: True},
                                "keywords": {"$draft": True, "$seen": True},
                            }
                        }
                    },
                ),
                (
                    "EmailSubmission/set",
                    {
                        "create": {
                            "send": {
                                "identityId": identity,
                                "emailId": "#draft",
                                "envelope": envelope_json,
                            }
                        },
                        "onSuccessUpdateEmail": {"#send": on_success},
                    },
                ),
            ],
            using=SEND_USING,
            account=account,
            once=True,
        )
        email_id = _created_id(imported, "draft", "Email/import", self.context)
        created = optional_field(submitted, "created", dict, "EmailSubmission/set", name=NAME)
        submission = (created or {}).get("send")
        if not isinstance(submission, dict):
            problem = _not_created(submitted, "send")
            yield from self._discard(email_id, account)
            raise _submission_error(problem, envelope, self.context)
        result = _send_result(envelope, submission, sent_envid, self.context)
        kept = sent if sent is not None else home
        return replace(result, saved_to=kept.name)

    def _identity(self, account: str, sender: str) -> Plan[str]:
        if self._identities is None:
            reply = yield from self._invoke(
                "Identity/get", {"ids": None}, using=SEND_USING, account=account
            )
            items = field_of(reply, "list", list, "Identity/get", name=NAME)
            self._identities = [
                i for i in items if isinstance(i, dict) and isinstance(i.get("id"), str)
            ]
        identity = _pick_identity(self._identities, sender)
        if identity is None:
            raise SendError(f"{self.context}: the account has no identity to send as")
        return identity

    def _discard(self, email_id: str, account: str) -> Plan[None]:
        """Destroy the draft of a refused submission (best effort: the refusal is what
        matters)."""
        with contextlib.suppress(MailsyncError):
            yield from self._invoke("Email/set", {"destroy": [email_id]}, account=account)


# -- pure helpers ------------------------------------------------------------------------------


def label_of(calls: Sequence[tuple[str, Any]]) -> str:
    """How error messages name a request: its methods (``"Email/query, Email/get"``)."""
    return ", ".join(dict.fromkeys(name for name, _ in calls))


def _find(boxes: Iterable[Mailbox], name: str) -> Mailbox | None:
    boxes = list(boxes)
    for box in boxes:
        if box.name == name:
            return box
    if name == "INBOX":  # a server without the inbox role: its top-level "Inbox"
        return next((b for b in boxes if b.name.upper() == "INBOX"), None)
    return None


def _in_order(ids: Sequence[str], items: Sequence[Any]) -> list[dict[str, Any]]:
    """The Email objects of ``items`` in the order of ``ids`` (servers need not keep it)."""
    by_id: dict[str, dict[str, Any]] = {}
    for item in items:
        by_id[field_of(item, "id", str, "Email/get", name=NAME)] = item
    return [by_id[i] for i in ids if i in by_id]


def _unique(items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[Any] = set()
    unique = []
    for item in items:
        if item.get("id") not in seen:
            seen.add(item.get("id"))
            unique.append(item)
    return unique


def _in_mailbox(item: Any, mailbox_id: str) -> bool:
    boxes = item.get("mailboxIds") if isinstance(item, dict) else None
    return isinstance(boxes, dict) and boxes.get(mailbox_id) is True


def _sync_start(cursor: Mapping[str, Any] | None, account: str) -> str | None:
    """The Email state to continue from, or None when a full pass is due (first sync, an
    interrupted full pass, another account's cursor, a cursor that is not ours)."""
    if not isinstance(cursor, Mapping) or cursor.get("resync") or cursor.get("account") != account:
        return None
    state = cursor.get("state")
    return state if isinstance(state, str) and state else None


def _message(
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
        internal_date=_datetime(item.get("receivedAt")),
    )


def _shown(message: Message, query: Q | None, headers_only: bool) -> Message | None:
    """The message as ``messages()`` yields it (cut to its header block when only that was
    asked for), or None when the query turns it down."""
    if query is not None and not query.matches(message):
        return None
    if headers_only and not message.headers_only:
        return message.replace(raw=header_block(message.raw), headers_only=True)
    return message


def _check_set(reply: Mapping[str, Any], key: str, context: str) -> None:
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


def _created_id(reply: Mapping[str, Any], creation: str, method: str, context: str) -> str:
    created = optional_field(reply, "created", dict, method, name=NAME) or {}
    item = created.get(creation)
    if isinstance(item, dict) and isinstance(item.get("id"), str):
        return str(item["id"])
    problem = _not_created(reply, creation)
    raise method_error(problem, context, method)


def _not_created(reply: Mapping[str, Any], creation: str) -> MethodError:
    failed = reply.get("notCreated")
    problem = failed.get(creation) if isinstance(failed, dict) else None
    if not isinstance(problem, dict):
        return MethodError("serverFail", "the server neither created it nor said why")
    return MethodError(
        str(problem.get("type") or "serverFail"), str(problem.get("description") or ""), problem
    )


def _pick_identity(identities: Sequence[Mapping[str, Any]], sender: str) -> str | None:
    """The identity whose address is ``sender``, else one for its whole domain
    (``*@example.com``), else the first."""
    address = sender.lower()
    domain = address.rpartition("@")[2]
    for wanted in (address, f"*@{domain}"):
        for identity in identities:
            if str(identity.get("email") or "").lower() == wanted:
                return str(identity["id"])
    return str(identities[0]["id"]) if identities else None


def _envelope(
    envelope: Envelope,
    session: Session,
    notify: Iterable[str] | str | None,
    ret: str | None,
    envid: str | None,
    context: str,
) -> tuple[dict[str, Any], str | None]:
    """The submission's envelope (RFC 8621 section 7) with any DSN parameters, and the ENVID
    sent."""
    extensions = session.submission_extensions
    mail_parameters: dict[str, Any] = {}
    rcpt_parameters: dict[str, Any] = {}
    sent_envid = None
    if notify is not None or ret is not None or envid is not None:
        if "dsn" not in extensions:
            raise Unsupported(
                f"{context}: the server's submission does not offer DSN (RFC 3461), so notify, "
                "ret and envid cannot be given"
            )
        # Shared with the SMTP sender: the same checks, the same ENVID rule.
        dsn = dsn_options(notify, ret, envid)
        if dsn.ret:
            mail_parameters["RET"] = dsn.ret
        if dsn.envid:
            mail_parameters["ENVID"] = xtext(dsn.envid)
            sent_envid = dsn.envid
        if dsn.notify:
            rcpt_parameters["NOTIFY"] = dsn.notify
    if envelope.needs_smtputf8 and "smtputf8" in extensions:
        mail_parameters["SMTPUTF8"] = None
    return {
        "mailFrom": {"email": envelope.mail_from, "parameters": mail_parameters or None},
        "rcptTo": [
            {"email": rcpt, "parameters": dict(rcpt_parameters) or None}
            for rcpt in envelope.recipients
        ],
    }, sent_envid


_REPLY = re.compile(r"^\s*(\d{3})[ -]?\s*(.*)$", re.S)
_ENHANCED = re.compile(r"\b([245])\.\d{1,3}\.\d{1,3}\b")


def _reply_code(text: str, default: int) -> tuple[int, str]:
    """``(code, text)`` from an SMTP reply (``"550 5.1.1 No such user"``), or from an
    enhanced status alone (``"5.7.1 Relay access denied"``: 550)."""
    match = _REPLY.match(text)
    if match:
        return int(match.group(1)), _short(match.group(2))
    enhanced = _ENHANCED.search(text)
    if enhanced:
        return (550 if enhanced.group(1) == "5" else 450), _short(text)
    return default, _short(text)


def _submission_error(problem: MethodError, envelope: Envelope, context: str) -> MailsyncError:
    """The error for a refused submission: RecipientsRefused for refused recipients (nothing
    was sent), else what the type says."""
    text = problem.description or problem.type
    named = problem.details.get("invalidRecipients")
    refused: dict[str, tuple[int, str]] = {}
    if isinstance(named, list):
        refused = {str(a): (553, "invalid recipient address") for a in named}
    elif problem.type in ("smtpProtocolError", "forbiddenToSend", "invalidRecipients"):
        lowered = text.lower()
        code = _reply_code(text, 550)
        refused = {r: code for r in envelope.recipients if r.lower() in lowered}
    if refused:
        return RecipientsRefused(
            f"{context}: the submission was refused, nothing was sent: "
            + "; ".join(f"{a}: {c} {t}" for a, (c, t) in refused.items()),
            refused=refused,
        )
    if problem.type == "rateLimit":
        return RateLimited(f"{context}: EmailSubmission/set: {_short(text)}", code=problem.type)
    return SendError(f"{context}: EmailSubmission/set: {problem.type}: {_short(text)}")


def _send_result(
    envelope: Envelope, submission: Mapping[str, Any], envid: str | None, context: str
) -> SendResult:
    """The SendResult of a created submission, with its ``deliveryStatus`` where the server
    gave one (refused recipients go in ``refused``)."""
    statuses = submission.get("deliveryStatus")
    delivery: dict[str, str] = {}
    refused: dict[str, tuple[int, str]] = {}
    if isinstance(statuses, dict):
        lowered = {r.lower(): r for r in envelope.recipients}
        for address, status in statuses.items():
            if not isinstance(status, dict):
                continue
            recipient = lowered.get(str(address).lower(), str(address))
            delivered = str(status.get("delivered") or "unknown")
            delivery[recipient] = delivered
            reply = str(status.get("smtpReply") or "")
            if delivered == "no" or reply[:1] == "5":
                refused[recipient] = _reply_code(reply, 550)
    accepted = tuple(r for r in envelope.recipients if r not in refused)
    if refused and not accepted:
        raise RecipientsRefused(
            f"{context}: every recipient was refused: "
            + "; ".join(f"{a}: {c} {t}" for a, (c, t) in refused.items()),
            refused=refused,
        )
    return SendResult(
        message_id=envelope.message_id,
        accepted=accepted,
        refused=refused,
        envid=envid,
        delivery=delivery,
    )
