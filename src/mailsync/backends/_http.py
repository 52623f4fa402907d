"""The HTTP performers: :class:`HTTPPerformer` sends the plans' requests on an
``httpx.Client``, :class:`AsyncHTTPPerformer` on an ``httpx.AsyncClient``.

They are the only code of the HTTP backends that does I/O, and they decide nothing: retries,
authorization and error replies are the plans' business (:mod:`mailsync.protocol.http`). What
they own:

- the client: API root (``base_url``), TLS verification from the endpoint, the connect and read
  timeouts, redirects followed, and a ``transport=`` option (an ``httpx.BaseTransport`` or
  ``AsyncBaseTransport``, e.g. ``httpx.MockTransport``) so tests can put a fake provider behind
  the real client;
- bodies read as they stream in and refused past the request's ``max_bytes``, so a hostile or
  broken server cannot make a reply take unbounded memory;
- concurrency: at most ``concurrency`` requests of one account in flight at once, from
  :class:`~mailsync.protocol.http.SendAll` and from every other caller alike (Graph documents
  four per mailbox);
- translating httpx's errors into the mailsync hierarchy, the cause chained; httpx never leaks.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import httpx

from mailsync._config import Endpoint
from mailsync._errors import (
    ConfigError,
    ConnectionFailed,
    MailsyncError,
    MailTimeout,
    ProtocolError,
)
from mailsync._plans import Operation
from mailsync.protocol.http import Request, Response, Send, SendAll

if TYPE_CHECKING:
    import asyncio
    import concurrent.futures

__all__ = ["AsyncHTTPPerformer", "HTTPPerformer", "translate_httpx"]

#: httpx's errors, most specific first, and what they become.
_HTTPX_ERRORS: tuple[tuple[type[Exception], type[MailsyncError]], ...] = (
    (httpx.TimeoutException, MailTimeout),
    (httpx.UnsupportedProtocol, ConfigError),
    (httpx.InvalidURL, ConfigError),
    (httpx.TooManyRedirects, ProtocolError),
    (httpx.DecodingError, ProtocolError),
    (httpx.TransportError, ConnectionFailed),  # connect, read, write, proxy, remote protocol
    (httpx.HTTPError, ConnectionFailed),
    (httpx.StreamError, ProtocolError),
)


def translate_httpx(exc: Exception, context: str) -> MailsyncError:
    """The mailsync error for an httpx (or socket) error; the caller chains the cause."""
    for source, target in _HTTPX_ERRORS:
        if isinstance(exc, source):
            text = str(exc).strip() or type(exc).__name__
            if "CERTIFICATE_VERIFY_FAILED" in text:
                text = f"certificate verification failed: {text}"
            return target(f"{context}: {text}")
    if isinstance(exc, OSError | EOFError):
        return ConnectionFailed(f"{context}: {exc}")
    raise exc


def _timeout(endpoint: Endpoint) -> httpx.Timeout:
    timeout = endpoint.timeout
    return httpx.Timeout(timeout.read, connect=timeout.connect_timeout)


def _client_options(endpoint: Endpoint, base_url: str) -> dict[str, Any]:
    options: dict[str, Any] = {
        "base_url": base_url,
        "timeout": _timeout(endpoint),
        "follow_redirects": True,
        "headers": {"User-Agent": "mailsync"},
    }
    if base_url.startswith("https://"):
        options["verify"] = endpoint.ssl_context()
    return options


def _response(reply: httpx.Response, content: bytes) -> Response:
    headers = {name.lower(): value for name, value in reply.headers.items()}
    return Response(reply.status_code, headers, content, str(reply.url))


def _too_large(request: Request, context: str) -> ProtocolError:
    return ProtocolError(
        f"{context}: {request.label}: the reply is larger than {request.max_bytes} bytes"
    )


def _url(request: Request) -> str:
    """The request's URL with its params added to any query it already has (a paging link):
    httpx would replace that query with ``params=``, even an empty one."""
    if not request.params:
        return request.url
    return str(httpx.URL(request.url).copy_merge_params(list(request.params)))


def _arguments(request: Request) -> dict[str, Any]:
    arguments: dict[str, Any] = {"headers": dict(request.headers)}
    if request.json is not None:
        arguments["json"] = request.json
    elif request.content is not None:
        arguments["content"] = request.content
    return arguments


class HTTPPerformer:
    """Performs :class:`Send` and :class:`SendAll` on an ``httpx.Client`` (blocking).

    Args:
        endpoint: The account; its ``transport`` option replaces the network (tests).
        base_url: The API root.
        context: Put in front of error messages (``"Gmail API (me)"``).
        concurrency: Requests of this account in flight at once, at most.
    """

    def __init__(
        self, endpoint: Endpoint, *, base_url: str, context: str, concurrency: int = 4
    ) -> None:
        self.context = context
        self.concurrency = max(1, concurrency)
        options = _client_options(endpoint, base_url)
        transport = endpoint.params.get("transport")
        if transport is not None:
            options["transport"] = transport
        self._client = httpx.Client(**options)
        self._slots = threading.BoundedSemaphore(self.concurrency)
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._closed = False

    def __call__(self, op: Operation) -> Any:
        if isinstance(op, Send):
            return self.send(op.request)
        if isinstance(op, SendAll):
            return self._send_all(op.requests)
        raise TypeError(f"the HTTP performer cannot perform {type(op).__name__}")

    def send(self, request: Request) -> Response:
        """Send one request and read its body (bounded).

        Raises:
            MailsyncError: The transport failed, or the body is too large.
        """
        if self._closed:
            raise ConnectionFailed(f"{self.context}: the connection is closed")
        with self._slots:
            try:
                return self._exchange(request)
            except MailsyncError:
                raise
            except Exception as exc:
                raise translate_httpx(exc, self.context) from exc

    def _exchange(self, request: Request) -> Response:
        with self._client.stream(request.method, _url(request), **_arguments(request)) as reply:
            limit = request.max_bytes
            declared = reply.headers.get("content-length", "")
            if limit is not None and declared.isdigit() and int(declared) > limit:
                raise _too_large(request, self.context)
            chunks: list[bytes] = []
            size = 0
            for chunk in reply.iter_bytes():
                size += len(chunk)
                if limit is not None and size > limit:
                    raise _too_large(request, self.context)
                chunks.append(chunk)
            return _response(reply, b"".join(chunks))

    def _send_all(self, requests: tuple[Request, ...]) -> list[Response | MailsyncError]:
        if len(requests) <= 1 or self.concurrency == 1:
            return [self._outcome(request) for request in requests]
        if self._pool is None:
            import concurrent.futures

            self._pool = concurrent.futures.ThreadPoolExecutor(
                self.concurrency, thread_name_prefix="mailsync-http"
            )
        return list(self._pool.map(self._outcome, requests))

    def _outcome(self, request: Request) -> Response | MailsyncError:
        try:
            return self.send(request)
        except MailsyncError as exc:
            return exc

    def close(self) -> None:
        """Close the client; later requests fail with ConnectionFailed."""
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()


class AsyncHTTPPerformer:
    """Performs :class:`Send` and :class:`SendAll` on an ``httpx.AsyncClient``; the arguments
    are those of :class:`HTTPPerformer`."""

    def __init__(
        self, endpoint: Endpoint, *, base_url: str, context: str, concurrency: int = 4
    ) -> None:
        self.context = context
        self.concurrency = max(1, concurrency)
        options = _client_options(endpoint, base_url)
        transport = endpoint.params.get("transport")
        if transport is not None:
            options["transport"] = transport
        self._client = httpx.AsyncClient(**options)
        self._slots: asyncio.Semaphore | None = None  # made on the loop that uses it
        self._closed = False

    async def __call__(self, op: Operation) -> Any:
        if isinstance(op, Send):
            return await self.send(op.request)
        if isinstance(op, SendAll):
            import asyncio

            return list(await asyncio.gather(*(self._outcome(r) for r in op.requests)))
        raise TypeError(f"the HTTP performer cannot perform {type(op).__name__}")

    def _semaphore(self) -> asyncio.Semaphore:
        if self._slots is None:
            import asyncio

            self._slots = asyncio.Semaphore(self.concurrency)
        return self._slots

    async def send(self, request: Request) -> Response:
        """Send one request and read its body (bounded); see :meth:`HTTPPerformer.send`."""
        if self._closed:
            raise ConnectionFailed(f"{self.context}: the connection is closed")
        async with self._semaphore():
            try:
                return await self._exchange(request)
            except MailsyncError:
                raise
            except Exception as exc:
                raise translate_httpx(exc, self.context) from exc

    async def _exchange(self, request: Request) -> Response:
        arguments = _arguments(request)
        async with self._client.stream(request.method, _url(request), **arguments) as reply:
            limit = request.max_bytes
            declared = reply.headers.get("content-length", "")
            if limit is not None and declared.isdigit() and int(declared) > limit:
                raise _too_large(request, self.context)
            chunks: list[bytes] = []
            size = 0
            async for chunk in reply.aiter_bytes():
                size += len(chunk)
                if limit is not None and size > limit:
                    raise _too_large(request, self.context)
                chunks.append(chunk)
            return _response(reply, b"".join(chunks))

    async def _outcome(self, request: Request) -> Response | MailsyncError:
        try:
            return await self.send(request)
        except MailsyncError as exc:
            return exc

    async def aclose(self) -> None:
        """Close the client; later requests fail with ConnectionFailed."""
        self._closed = True
        await self._client.aclose()
