"""What the HTTP backends (Gmail, Graph, JMAP) share, as pure code: request and response
values, the operations that send them, and the plans every API call goes through.

A backend's protocol module builds :class:`Request` values and yields them inside plans
(:mod:`mailsync._plans`) as :class:`Send` (one request) or :class:`SendAll` (several at once,
for bounded-concurrency downloads); the performers in :mod:`mailsync.backends._http` send them
on an ``httpx.Client`` or ``httpx.AsyncClient``. Everything that decides anything lives here:

- :func:`call` / :func:`call_all`: authorization (a bearer token fetched through the
  endpoint's token provider, fetched again once after a 401; or HTTP Basic), bounded retries of
  429, 503 and other 5xx replies after ``Retry-After`` or exponential backoff with jitter, and
  the translation of an error reply into the mailsync hierarchy through the provider's
  :class:`Dialect` (which reads its error bodies: Google's ``{"error": {"code", "message",
  "errors": [{"reason"}]}}``, Graph's ``{"error": {"code", "message"}}``, JMAP's RFC 7807
  problem details).
- :func:`multipart_related`: the body of an upload that carries metadata and media together
  (Google's ``uploadType=multipart``).
- :func:`json_of`: a body that is not the JSON the provider promised is a
  :class:`~mailsync.ProtocolError`, never a ``ValueError`` or ``KeyError``.

This module never touches a socket, an HTTP client or a clock: waiting is a
:class:`~mailsync._plans.Sleep` the driver performs.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

from mailsync._config import Endpoint
from mailsync._errors import (
    AuthenticationError,
    ConfigError,
    MailsyncError,
    MessageNotFound,
    MessageTooLarge,
    ProtocolError,
    RateLimited,
    ServerError,
    TemporaryFailure,
)
from mailsync._plans import Call, Operation, Plan, Sleep

__all__ = [
    "APIClient",
    "Auth",
    "Dialect",
    "ErrorBody",
    "Request",
    "Response",
    "RetryPolicy",
    "Send",
    "SendAll",
    "api_root",
    "call",
    "call_all",
    "call_all_skipping",
    "field_of",
    "json_of",
    "multipart_related",
    "optional_field",
    "read_error_body",
    "retry_after",
]

T = TypeVar("T")

#: The largest body accepted for a reply that is not a message (a listing, an error).
MAX_JSON_BYTES = 64 * 1024 * 1024
_ERROR_TEXT_LIMIT = 300


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request, before authorization is added.

    Attributes:
        method: ``GET``, ``POST``, ``PATCH``, ``DELETE``...
        url: Absolute, or relative to the API root the performer was given.
        params: Query parameters, in order (a name may repeat).
        headers: Extra headers (never the Authorization header: :func:`call` adds it).
        json: A body to send as JSON.
        content: A raw body (with its Content-Type in ``headers``).
        max_bytes: Refuse a reply body larger than this (:class:`~mailsync.ProtocolError`).
        what: Names the call in error messages (``"list messages"``).
    """

    method: str
    url: str
    params: tuple[tuple[str, str], ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    json: Any = None
    content: bytes | None = None
    max_bytes: int | None = MAX_JSON_BYTES
    what: str = ""

    def with_headers(self, headers: Mapping[str, str]) -> Request:
        """A copy with more headers."""
        return replace(self, headers={**self.headers, **headers})

    @property
    def label(self) -> str:
        """How error messages name this request."""
        return self.what or f"{self.method} {self.url.split('?', 1)[0]}"


@dataclass(frozen=True, slots=True)
class Response:
    """An HTTP reply, its body read whole (bounded by the request's ``max_bytes``).

    Attributes:
        status: The status code.
        headers: Header names in lower case.
        content: The body.
        url: The URL that answered (after redirects).
    """

    status: int
    headers: Mapping[str, str]
    content: bytes
    url: str = ""

    @property
    def ok(self) -> bool:
        """A 2xx status."""
        return 200 <= self.status < 300


@dataclass(frozen=True, slots=True)
class Send(Operation):
    """Send one request; the result is its :class:`Response` whatever the status (transport
    failures raise)."""

    request: Request


@dataclass(frozen=True, slots=True)
class SendAll(Operation):
    """Send several requests, at most the performer's concurrency at a time; the result is a
    list in the same order, each a :class:`Response` or the :class:`~mailsync.MailsyncError`
    its transport failed with."""

    requests: tuple[Request, ...]


def api_root(endpoint: Endpoint, default: str) -> str:
    """The API root: the ``base_url`` option, else ``default``.

    Raises:
        ConfigError: ``base_url`` is not an http(s) URL.
    """
    value = endpoint.params.get("base_url", default)
    if not isinstance(value, str) or not value.startswith(("https://", "http://")):
        raise ConfigError(f"base_url must be an https:// (or http://) URL, not {value!r}")
    return value.rstrip("/")


# -- authorization ---------------------------------------------------------------------------


class Auth:
    """The Authorization header of one account: a bearer token or HTTP Basic.

    The token comes from the endpoint's provider (a string, or a callable called when no token
    is cached and once more after a 401). Basic authentication uses the URL's user name and the
    password; it is what JMAP servers such as Cyrus and Stalwart take.
    """

    def __init__(self, endpoint: Endpoint, *, basic: bool = False) -> None:
        self._endpoint = endpoint
        self._basic = basic and endpoint.token is None
        self._header: str | None = None
        if endpoint.token is None and not self._basic:
            raise ConfigError(
                f"{endpoint.display}: needs an OAuth2 access token: pass token= (a string, or a "
                "callable returning one)"
            )
        if self._basic and (endpoint.username is None or endpoint.password is None):
            raise ConfigError(
                f"{endpoint.display}: needs a user name in the URL and a password, or a token"
            )

    @property
    def refreshable(self) -> bool:
        """Whether asking again may give a different credential."""
        token = self._endpoint.token
        return token is not None and token.refreshable

    def header(self, *, refresh: bool = False) -> Plan[str]:
        """The header value; ``refresh`` asks the token callable for a new token."""
        if self._header is not None and not refresh:
            return self._header
        endpoint = self._endpoint
        if self._basic:
            import base64

            assert endpoint.username is not None
            assert endpoint.password is not None
            pair = f"{endpoint.username}:{endpoint.password.reveal()}".encode()
            self._header = "Basic " + base64.b64encode(pair).decode("ascii")
            return self._header
        token = endpoint.token
        assert token is not None
        value: str = yield Call(lambda: token.get(refresh=refresh))
        self._header = f"Bearer {value}"
        return self._header


# -- errors ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ErrorBody:
    """What an error reply's body says, in whichever provider's shape.

    Attributes:
        code: The provider's error code or type (``"rateLimitExceeded"``,
            ``"ErrorItemNotFound"``, ``"urn:ietf:params:jmap:error:limit"``), if any.
        message: Its human text, shortened.
        reasons: Further machine-readable reasons (Google's ``errors[].reason``).
    """

    code: str | None = None
    message: str = ""
    reasons: tuple[str, ...] = ()


def read_error_body(response: Response) -> ErrorBody:
    """Read an error reply's body: Google, Graph, RFC 7807 problem details, or plain text."""
    try:
        data = json.loads(response.content[:MAX_JSON_BYTES]) if response.content else None
    except (ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        text = response.content[:_ERROR_TEXT_LIMIT].decode("utf-8", "replace").strip()
        return ErrorBody(message=_one_line(text))
    error = data.get("error")
    if isinstance(error, dict):  # Google and Microsoft
        reasons = tuple(
            str(item["reason"])
            for item in error.get("errors") or ()
            if isinstance(item, dict) and item.get("reason")
        )
        code = error.get("code")
        status = error.get("status")
        name = code if isinstance(code, str) else status if isinstance(status, str) else None
        return ErrorBody(name, _one_line(str(error.get("message") or "")), reasons)
    if isinstance(error, str):  # OAuth token endpoints: {"error": "invalid_token", ...}
        return ErrorBody(error, _one_line(str(data.get("error_description") or "")))
    if "type" in data or "detail" in data:  # RFC 7807, JMAP
        detail = data.get("detail") or data.get("title") or ""
        kind = data.get("type")
        return ErrorBody(str(kind) if kind else None, _one_line(str(detail)))
    return ErrorBody(message=_one_line(json.dumps(data)[:_ERROR_TEXT_LIMIT]))


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    if len(text) > _ERROR_TEXT_LIMIT:
        text = text[: _ERROR_TEXT_LIMIT - 1] + "…"
    return text


class Dialect:
    """How one provider says what went wrong; subclass to add provider rules.

    The defaults follow HTTP: 401 is an authentication failure, 403 a refusal of the
    credential's rights, 404 a missing resource, 429 a rate limit, 5xx a temporary failure.
    """

    #: Put in front of every error message, e.g. ``"Gmail API"``.
    name = "HTTP API"

    def is_rate_limit(self, response: Response, body: ErrorBody) -> bool:
        """Whether the reply asks to slow down (beyond a plain 429)."""
        return response.status == 429

    def is_transient(self, response: Response, body: ErrorBody) -> bool:
        """Whether the same request may work if sent again later."""
        return response.status in (500, 502, 503, 504)

    def error(
        self,
        request: Request,
        response: Response,
        body: ErrorBody,
        *,
        not_found: type[ServerError] = MessageNotFound,
    ) -> MailsyncError:
        """The mailsync error for a final error reply."""
        code = body.code or response.status
        detail = f"{self.name}: {request.label}: HTTP {response.status}"
        if body.code:
            detail += f" {body.code}"
        if body.message:
            detail += f": {body.message}"
        status = response.status
        # Before the 403 rule: Google says "slow down" with a 403 and a rateLimitExceeded reason.
        if self.is_rate_limit(response, body):
            return RateLimited(detail, retry_after=retry_after(response), code=code)
        if status == 401:
            return AuthenticationError(detail + " (the access token was refused)")
        if status == 403:
            return AuthenticationError(
                detail + " (the token lacks the rights for this: check its scopes)"
            )
        if status in (404, 410):
            return not_found(detail, code=code)
        if self.is_transient(response, body):
            return TemporaryFailure(detail, code=code)
        return ServerError(detail, code=code)


# -- retries ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long :func:`call` retries rate limits and temporary failures.

    Attributes:
        attempts: Tries in all, the first included.
        base: The first backoff's upper bound, in seconds (doubling, with full jitter).
        cap: The longest single wait; a ``Retry-After`` longer than this is not waited out
            but raised as :class:`~mailsync.RateLimited` with ``retry_after`` set.
    """

    attempts: int = 5
    base: float = 1.0
    cap: float = 60.0

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> RetryPolicy:
        """Read ``retries`` (attempts after the first) and ``retry_delay`` options."""
        policy = cls()
        try:
            if "retries" in params:
                retries = int(params["retries"])
                if retries < 0:
                    raise ValueError(retries)
                policy = replace(policy, attempts=retries + 1)
            if "retry_delay" in params:
                delay = float(params["retry_delay"])
                if delay < 0:
                    raise ValueError(delay)
                policy = replace(policy, base=delay)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                "retries must be a whole number >= 0 and retry_delay a number of seconds >= 0"
            ) from exc
        return policy

    def delay(self, attempt: int, response: Response | None) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None to give up."""
        if attempt + 1 >= self.attempts:
            return None
        hinted = retry_after(response) if response is not None else None
        if hinted is not None:
            return hinted if hinted <= self.cap else None
        bound = min(self.cap, self.base * (2**attempt))
        return random.uniform(bound / 2, bound)


def retry_after(response: Response | None) -> float | None:
    """The reply's ``Retry-After`` in seconds (delta-seconds or an HTTP date), if any."""
    if response is None:
        return None
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        from datetime import UTC, datetime

        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


# -- calls -----------------------------------------------------------------------------------


@dataclass
class APIClient:
    """What :func:`call` needs to know about the account it talks to (no I/O)."""

    auth: Auth | None
    dialect: Dialect = field(default_factory=Dialect)
    policy: RetryPolicy = field(default_factory=RetryPolicy)


def _authorized(client: APIClient, request: Request, *, refresh: bool) -> Plan[Request]:
    if client.auth is None:
        return request
    header = yield from client.auth.header(refresh=refresh)
    return request.with_headers({"Authorization": header})


def _verdict(client: APIClient, response: Response) -> tuple[str, ErrorBody | None]:
    """``"ok"``, ``"auth"`` (refresh and retry once), ``"retry"`` or ``"fail"``."""
    if response.ok or 300 <= response.status < 400:
        return "ok", None
    body = read_error_body(response)
    if response.status == 401:
        return "auth", body
    dialect = client.dialect
    if dialect.is_rate_limit(response, body) or dialect.is_transient(response, body):
        return "retry", body
    return "fail", body


def call(
    client: APIClient,
    request: Request,
    *,
    not_found: type[ServerError] = MessageNotFound,
    allow: Iterable[int] = (),
) -> Plan[Response]:
    """Send a request with authorization, retrying what may work later.

    A 401 asks the token provider for a new token and sends once more (when the provider is a
    callable); a second 401 is :class:`~mailsync.AuthenticationError`. Rate limits and
    temporary failures are retried after ``Retry-After`` or a backoff, within the client's
    :class:`RetryPolicy`; after that, the dialect's error is raised (``RateLimited`` carries
    ``retry_after``). Statuses in ``allow`` are returned instead of raised, for callers that
    give them a meaning (a 404 for an expired history, a 410 for an expired delta token).

    Raises:
        MailsyncError: The translated error reply, or a transport failure.
    """
    responses = yield from call_all(client, [request], not_found=not_found, allow=allow)
    return responses[0]


def call_all(
    client: APIClient,
    requests: Sequence[Request],
    *,
    not_found: type[ServerError] = MessageNotFound,
    allow: Iterable[int] = (),
) -> Plan[list[Response]]:
    """:func:`call` for several requests sent together (:class:`SendAll`); only the ones that
    need it are sent again. The first final failure, in request order, is raised.
    """
    answers = yield from _call_all(client, requests, not_found, frozenset(allow), keep=False)
    return [answer for answer in answers if isinstance(answer, Response)]


def call_all_skipping(
    client: APIClient,
    requests: Sequence[Request],
    skip: Callable[[int, MessageTooLarge], None] | None,
    *,
    allow: Iterable[int] = (),
) -> Plan[list[Response | None]]:
    """:func:`call_all`, except that a reply refused as larger than its request's
    ``max_bytes`` (:class:`~mailsync.MessageTooLarge`) is handed to ``skip`` with the
    request's index, and is None in the list, where :func:`call_all` would raise it: how
    ``sync()`` leaves out a message over ``max_message_size`` rather than stall on it. The
    other requests of the batch are answered as usual. ``skip=None``: raised, as
    :func:`call_all` does (for callers that skip only in ``sync()``).
    """
    keep = skip is not None
    answers = yield from _call_all(client, requests, MessageNotFound, frozenset(allow), keep=keep)
    results: list[Response | None] = []
    for index, answer in enumerate(answers):
        if isinstance(answer, MessageTooLarge):
            assert skip is not None  # only kept when there is one
            skip(index, answer)
            results.append(None)
        else:
            results.append(answer)
    return results


def _call_all(
    client: APIClient,
    requests: Sequence[Request],
    not_found: type[ServerError],
    allowed: frozenset[int],
    *,
    keep: bool,
) -> Plan[list[Response | MessageTooLarge]]:
    """The work of :func:`call_all`; ``keep``: a :class:`~mailsync.MessageTooLarge` answer
    takes its request's place in the list instead of being raised."""
    results: list[Response | MessageTooLarge | None] = [None] * len(requests)
    pending = list(range(len(requests)))
    refreshed = False
    attempt = 0
    while pending:
        refresh = False
        outgoing = []
        for index in pending:
            outgoing.append((yield from _authorized(client, requests[index], refresh=False)))
        if len(outgoing) == 1:
            answers: list[Response | MailsyncError] = [(yield Send(outgoing[0]))]
        else:
            answers = yield SendAll(tuple(outgoing))
        retry: list[int] = []
        wait: Response | None = None
        for index, answer in zip(pending, answers, strict=True):
            if keep and isinstance(answer, MessageTooLarge):
                results[index] = answer
                continue
            if isinstance(answer, MailsyncError):
                raise answer
            if answer.status in allowed:
                results[index] = answer
                continue
            verdict, body = _verdict(client, answer)
            if verdict == "ok":
                results[index] = answer
            elif verdict == "auth" and not refreshed and client.auth and client.auth.refreshable:
                refresh = True
                retry.append(index)
            elif verdict == "retry":
                retry.append(index)
                wait = _longer_wait(wait, answer)
            else:
                assert body is not None
                raise client.dialect.error(requests[index], answer, body, not_found=not_found)
        pending = retry
        if not pending:
            break
        if refresh:
            refreshed = True
            assert client.auth is not None
            yield from client.auth.header(refresh=True)
            if wait is None:
                continue  # a refreshed token is not a reason to wait
        delay = client.policy.delay(attempt, wait)
        attempt += 1
        if delay is None:
            assert wait is not None
            index = pending[0]
            body = read_error_body(wait)
            raise client.dialect.error(requests[index], wait, body, not_found=not_found)
        yield Sleep(delay)
    return [answer for answer in results if answer is not None]


def _longer_wait(current: Response | None, candidate: Response) -> Response:
    """Of two replies asking to wait, the one asking for longer."""
    if current is None:
        return candidate
    return candidate if (retry_after(candidate) or 0) > (retry_after(current) or 0) else current


def json_of(response: Response, what: str, *, name: str = "HTTP API") -> Any:
    """The reply's body as JSON.

    Raises:
        ProtocolError: The body is not JSON.
    """
    try:
        return json.loads(response.content)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"{name}: {what}: the reply is not JSON ({exc})") from exc


def field_of(data: Any, key: str, kind: type[T], what: str, *, name: str = "HTTP API") -> T:
    """``data[key]``, checked to be a ``kind``.

    Raises:
        ProtocolError: ``data`` is not an object, or the field is missing or of another type.
    """
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, kind):
        raise ProtocolError(
            f"{name}: {what}: the reply has no {key!r} of type {kind.__name__}"
            f" (got {type(value).__name__})"
        )
    return value


def optional_field(
    data: Mapping[str, Any], key: str, kind: type[T], what: str, *, name: str = "HTTP API"
) -> T | None:
    """``data[key]`` when present and not null, checked to be a ``kind``.

    Raises:
        ProtocolError: ``data`` is not an object, or the field is present with another type.
    """
    if not isinstance(data, Mapping):  # a reply that is JSON, but "[]" where {} was due
        raise ProtocolError(
            f"{name}: {what}: the reply is not an object (got {type(data).__name__})"
        )
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, kind):
        raise ProtocolError(
            f"{name}: {what}: {key!r} should be {kind.__name__}, not {type(value).__name__}"
        )
    return value


def multipart_related(parts: Sequence[tuple[str, bytes]]) -> tuple[str, bytes]:
    """A ``multipart/related`` body (RFC 2387) made of ``(content type, bytes)`` parts, as
    Google's ``uploadType=multipart`` takes it (the JSON metadata first, then the media).

    The boundary is random and checked against every part, so no content can end the body
    early; parts are sent as they are (binary), which HTTP allows.

    Returns:
        The Content-Type header value and the body.
    """
    import secrets

    while True:
        boundary = "mailsync-" + secrets.token_hex(16)
        delimiter = b"--" + boundary.encode("ascii")
        if not any(delimiter in content for _, content in parts):
            break
    chunks: list[bytes] = []
    for content_type, content in parts:
        chunks += [delimiter, b"\r\nContent-Type: ", content_type.encode("ascii"), b"\r\n\r\n"]
        chunks += [content, b"\r\n"]
    chunks += [delimiter, b"--\r\n"]
    return f'multipart/related; boundary="{boundary}"', b"".join(chunks)
