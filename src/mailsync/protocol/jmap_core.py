"""The JMAP client core (RFC 8620): the session resource (:class:`Session`, read once and again
when a reply says it changed; its limits, URL templates and primary accounts), method calls in
one request with each reply found by its call id and method errors raised, mailboxes and blob
uploads. :class:`JMAPCore` holds it; sending
(:class:`~mailsync.protocol.jmap_submission.JMAPSubmission`) and the mail operations
(:class:`~mailsync.protocol.jmap.JMAPAPI`) are plans over it.

Pure: it builds requests and reads replies as plans, and never does I/O itself.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

from mailsync._config import Endpoint
from mailsync._errors import (
    ConfigError,
    FolderNotFound,
    ProtocolError,
    ServerError,
    Unsupported,
)
from mailsync._plans import Plan
from mailsync.protocol.http import (
    APIClient,
    Auth,
    Request,
    RetryPolicy,
    call,
    field_of,
    json_of,
    optional_field,
    read_error_body,
)
from mailsync.protocol.jmap_wire import (
    NAME,
    JMAPDialect,
    Mailbox,
    MethodError,
    find_mailbox,
    label_of,
    mailboxes_by_id,
    method_error,
)
from mailsync.protocol.mailapi import MailAPI, canonical_folder

__all__ = [
    "CORE",
    "MAIL",
    "MAIL_USING",
    "SEND_USING",
    "SUBMISSION",
    "JMAPCore",
    "Session",
    "expand_template",
    "parse_session",
]

CORE = "urn:ietf:params:jmap:core"
MAIL = "urn:ietf:params:jmap:mail"
SUBMISSION = "urn:ietf:params:jmap:submission"
MAIL_USING = (CORE, MAIL)
SEND_USING = (CORE, MAIL, SUBMISSION)
_TEMPLATE_VARIABLE = re.compile(r"\{([A-Za-z0-9_]*)\}")
#: Replies to an API request that may have taken effect: a request that creates something
#: (import, submission) is not sent again after one of these.
_AMBIGUOUS = (500, 502, 504)


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


def _local_host(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class JMAPCore(MailAPI):
    """One JMAP account's session and method calls, for the plans of
    :class:`~mailsync.protocol.jmap.JMAPAPI`: it validates the endpoint, reads and keeps the
    session, sends method calls and turns their errors into mailsync errors, and keeps the
    mailboxes and identities it learnt."""

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
        self._session_data: Session | None = None
        self._mailboxes: dict[str, Mailbox] | None = None
        self._identities: list[dict[str, Any]] | None = None

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

    def _mailbox(self, folder: str) -> Plan[Mailbox]:
        wanted = canonical_folder(folder)
        for reload in (False, True):
            boxes = (
                (yield from self._load_mailboxes())
                if reload
                else (yield from self._known_mailboxes())
            )
            found = find_mailbox(boxes.values(), wanted)
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
