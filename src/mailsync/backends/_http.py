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
- event streams (:class:`~mailsync.protocol.events.AwaitEvent`, a provider's push): read as
  they arrive, each event bounded, given up after the wait's ``timeout`` or ``idle`` seconds of
  silence; ``close()``/``aclose()`` ends a wait at once. On the blocking side that takes the
  socket itself: a thread blocked in ``recv`` is not woken when another thread closes the
  client, so the performer shuts the stream's socket down (a deadline timer does the same);
- translating httpx's errors into the mailsync hierarchy, the cause chained; httpx never leaks.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import TYPE_CHECKING, Any

import httpx

from mailsync._config import Endpoint
from mailsync._errors import (
    ConfigError,
    ConnectionFailed,
    MailsyncError,
    MailTimeout,
    MessageTooLarge,
    ProtocolError,
)
from mailsync._plans import Operation
from mailsync.protocol.events import AwaitEvent, EventStreamParser, ServerEvent
from mailsync.protocol.http import MAX_JSON_BYTES, Request, Response, Send, SendAll

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
    # MessageTooLarge is a ProtocolError: any reply past its bound says so by its class.
    return MessageTooLarge(
        f"{context}: {request.label}: the reply is larger than {request.max_bytes} bytes",
        limit=request.max_bytes,
    )


def _declared_size(reply: httpx.Response) -> int:
    declared = reply.headers.get("content-length", "")
    return int(declared) if declared.isdigit() else 0


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


def _is_event_stream(reply: httpx.Response) -> bool:
    kind = reply.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return reply.status_code == 200 and kind == "text/event-stream"


def _event_timeout(endpoint: Endpoint, op: AwaitEvent) -> httpx.Timeout:
    """Connect as usual; then each read may wait ``idle`` seconds (pings come more often)."""
    return httpx.Timeout(op.idle, connect=endpoint.timeout.connect_timeout)


def _event_request(op: AwaitEvent) -> Request:
    headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache", **op.request.headers}
    return Request("GET", op.request.url, op.request.params, headers, max_bytes=MAX_JSON_BYTES)


def _first_event(parser: EventStreamParser, chunk: bytes, op: AwaitEvent) -> ServerEvent | None:
    for event in parser.feed(chunk):
        if event.type in op.types:
            return event
    return None


def _shutdown(reply: httpx.Response) -> None:
    """Wake a thread blocked reading ``reply``: shut its socket down (closing it would not)."""
    stream = reply.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):  # already closed
            sock.shutdown(socket.SHUT_RDWR)
    else:  # a transport without a socket (tests): closing is all there is
        reply.close()


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
        self._endpoint = endpoint
        options = _client_options(endpoint, base_url)
        transport = endpoint.params.get("transport")
        if transport is not None:
            options["transport"] = transport
        self._client = httpx.Client(**options)
        self._slots = threading.BoundedSemaphore(self.concurrency)
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._closed = False
        # Replies being read (bodies and event streams), and the event streams cut short
        # (deadline, close): the ending read then fails, and that failure means "stop
        # waiting", not an error.
        self._streams: set[httpx.Response] = set()
        self._cut: set[httpx.Response] = set()
        self._streams_lock = threading.Lock()

    def __call__(self, op: Operation) -> Any:
        if isinstance(op, Send):
            return self.send(op.request)
        if isinstance(op, SendAll):
            return self._send_all(op.requests)
        if isinstance(op, AwaitEvent):
            return self.await_event(op)
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
                raise self._failure(exc) from exc

    def _failure(self, exc: Exception) -> MailsyncError:
        # close() from another thread (a watch being stopped) makes httpx raise whatever it
        # raises on a closed client: that is a closed connection, not a programming error.
        if self._closed:
            return ConnectionFailed(f"{self.context}: the connection is closed")
        return translate_httpx(exc, self.context)

    def _exchange(self, request: Request) -> Response:
        with self._client.stream(request.method, _url(request), **_arguments(request)) as reply:
            # Known to close(), which shuts its socket down: a thread blocked reading a body
            # from a server that stopped sending is freed at once, not after the read timeout.
            with self._streams_lock:
                if self._closed:
                    raise ConnectionFailed(f"{self.context}: the connection is closed")
                self._streams.add(reply)
            try:
                return self._body(request, reply)
            finally:
                self._forget(reply)

    def await_event(self, op: AwaitEvent) -> ServerEvent | Response | None:
        """Wait on an event stream (see :class:`AwaitEvent`); ``close()`` from another thread
        ends the wait at once (the result is then None).

        Raises:
            MailsyncError: The connection failed, or an event broke the parser's bounds.
        """
        if self._closed:
            raise ConnectionFailed(f"{self.context}: the connection is closed")
        request = _event_request(op)
        timeout = _event_timeout(self._endpoint, op)
        reply: httpx.Response | None = None
        try:
            with self._client.stream(
                "GET", _url(request), headers=dict(request.headers), timeout=timeout
            ) as reply:
                if not _is_event_stream(reply):
                    return self._body(request, reply)
                return self._read_events(reply, op)
        except MailsyncError:
            raise
        except httpx.ReadTimeout:
            return None  # silent for `idle` seconds: look again
        except Exception as exc:
            if self._closed or (reply is not None and self._was_cut(reply)):
                return None  # cut short by the deadline or by close()
            raise translate_httpx(exc, self.context) from exc
        finally:
            if reply is not None:
                self._forget(reply)

    def _read_events(self, reply: httpx.Response, op: AwaitEvent) -> ServerEvent | None:
        with self._streams_lock:
            if self._closed:
                return None
            self._streams.add(reply)
        deadline = threading.Timer(op.timeout, self._cut_short, (reply,))
        deadline.daemon = True
        deadline.start()
        try:
            parser = EventStreamParser()
            for chunk in reply.iter_bytes():
                event = _first_event(parser, chunk, op)
                if event is not None:
                    return event
            return None  # the server ended the stream
        finally:
            deadline.cancel()

    def _cut_short(self, reply: httpx.Response) -> None:
        with self._streams_lock:
            if reply not in self._streams:
                return
            self._cut.add(reply)
        _shutdown(reply)

    def _was_cut(self, reply: httpx.Response) -> bool:
        with self._streams_lock:
            return reply in self._cut or self._closed

    def _forget(self, reply: httpx.Response) -> None:
        with self._streams_lock:
            self._streams.discard(reply)
            self._cut.discard(reply)

    def _body(self, request: Request, reply: httpx.Response) -> Response:
        """The reply's body, refused past the request's ``max_bytes``."""
        limit = request.max_bytes
        if limit is not None and _declared_size(reply) > limit:
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
        """Close the client, ending at once any event-stream wait and any body being read
        (ConnectionFailed for the reader); later requests fail with ConnectionFailed."""
        with self._streams_lock:
            self._closed = True
            streams = list(self._streams)
        for reply in streams:
            _shutdown(reply)
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
        self._endpoint = endpoint
        self._client = httpx.AsyncClient(**options)
        self._slots: asyncio.Semaphore | None = None  # made on the loop that uses it
        self._closed = False

    async def __call__(self, op: Operation) -> Any:
        if isinstance(op, Send):
            return await self.send(op.request)
        if isinstance(op, SendAll):
            import asyncio

            return list(await asyncio.gather(*(self._outcome(r) for r in op.requests)))
        if isinstance(op, AwaitEvent):
            return await self.await_event(op)
        raise TypeError(f"the HTTP performer cannot perform {type(op).__name__}")

    async def await_event(self, op: AwaitEvent) -> ServerEvent | Response | None:
        """Wait on an event stream (see :class:`AwaitEvent`); cancelling the task (what
        ``aclose()`` does to a waiting ``watch()``) ends it at once.

        Raises:
            MailsyncError: The connection failed, or an event broke the parser's bounds.
        """
        import asyncio

        if self._closed:
            raise ConnectionFailed(f"{self.context}: the connection is closed")
        request = _event_request(op)
        timeout = _event_timeout(self._endpoint, op)
        try:
            async with asyncio.timeout(op.timeout):
                async with self._client.stream(
                    "GET", _url(request), headers=dict(request.headers), timeout=timeout
                ) as reply:
                    if not _is_event_stream(reply):
                        return await self._body(request, reply)
                    parser = EventStreamParser()
                    async for chunk in reply.aiter_bytes():
                        event = _first_event(parser, chunk, op)
                        if event is not None:
                            return event
                    return None  # the server ended the stream
        except MailsyncError:
            raise
        except (TimeoutError, httpx.ReadTimeout):
            return None  # the wait is over, or the stream went silent: look again
        except Exception as exc:
            raise translate_httpx(exc, self.context) from exc

    async def _body(self, request: Request, reply: httpx.Response) -> Response:
        """The reply's body, refused past the request's ``max_bytes``."""
        limit = request.max_bytes
        if limit is not None and _declared_size(reply) > limit:
            raise _too_large(request, self.context)
        chunks: list[bytes] = []
        size = 0
        async for chunk in reply.aiter_bytes():
            size += len(chunk)
            if limit is not None and size > limit:
                raise _too_large(request, self.context)
            chunks.append(chunk)
        return _response(reply, b"".join(chunks))

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
                if self._closed:
                    raise ConnectionFailed(f"{self.context}: the connection is closed") from exc
                raise translate_httpx(exc, self.context) from exc

    async def _exchange(self, request: Request) -> Response:
        arguments = _arguments(request)
        async with self._client.stream(request.method, _url(request), **arguments) as reply:
            return await self._body(request, reply)

    async def _outcome(self, request: Request) -> Response | MailsyncError:
        try:
            return await self.send(request)
        except MailsyncError as exc:
            return exc

    async def aclose(self) -> None:
        """Close the client; later requests fail with ConnectionFailed."""
        self._closed = True
        await self._client.aclose()
