"""The performers of the stream operations (:mod:`mailsync.protocol.stream`) for the socket
backends, POP3 and SMTP: :func:`perform` on a blocking socket, :func:`aperform` on asyncio.

Both read straight into the protocol parser's buffer (``recv_into`` on the socket; an
``asyncio.BufferedProtocol`` on asyncio), so message bytes are copied once, and both bound
every wait for the server by the endpoint's read timeout: a wait for the next byte, not for a
whole reply, so a large message over a slow link is not cut off while a server that stops
sending is. Each ``Read`` (a greeting, a reply, one message of a pipelined RETR window) is
also a call with a deadline (``Timeout.total`` and ``min_rate``, :class:`CallLimits`), so a
server that sends a byte now and then cannot hold it for ever; and a ``Write`` may take the
time its size allows at ``min_rate``. Errors that are not already mailsync errors (a reset, a
TLS failure) propagate for the plan driver to translate.

This module knows no protocol: what the bytes mean is the receiver's business.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from typing import TYPE_CHECKING, Any

from mailsync._config import Endpoint
from mailsync._errors import ConnectionFailed, MailsyncError, MailTimeout
from mailsync._plans import Operation
from mailsync.backends._limits import CallLimits, set_timeout
from mailsync.protocol.stream import Close, Connect, Read, Receiver, StartTLS, Write

if TYPE_CHECKING:
    import asyncio  # imported on the async paths only: it costs ~20 ms at start-up

__all__ = ["SocketChannel", "StreamChannel", "aperform", "perform"]

#: A write this small goes into the kernel's buffer at once: it keeps the read timeout (no
#: system call to change it) rather than the allowance of its size.
_SMALL_WRITE = 64 * 1024
#: Seconds a closing TLS stream may take to say goodbye before the socket is dropped (never
#: more than the read timeout).
CLOSE_GRACE = 1.0


def _no_answer(endpoint: Endpoint) -> MailTimeout:
    return MailTimeout(
        f"{endpoint.display}: no answer from the server within {endpoint.timeout.read:g} s"
    )


def _closed(endpoint: Endpoint) -> ConnectionFailed:
    # The cause says the connection dropped (SMTP sends again after a drop, not after a
    # refusal).
    error = ConnectionFailed(f"{endpoint.display}: the server closed the connection")
    error.__cause__ = ConnectionResetError("EOF")
    return error


# -- blocking --------------------------------------------------------------------------------


class SocketChannel:
    """A blocking TCP connection, plain or TLS, feeding a receiver.

    Args:
        endpoint: Where to connect; its timeouts bound the connect and every read.
        receiver: The parser the bytes go to.
    """

    def __init__(self, endpoint: Endpoint, receiver: Receiver) -> None:
        self._endpoint = endpoint
        self._receiver = receiver
        self._limits = CallLimits(endpoint)
        timeout = endpoint.timeout
        sock = socket.create_connection(
            (endpoint.host, endpoint.port), timeout=timeout.connect_timeout
        )
        try:
            # Pipelined commands are small writes while replies stream in: no Nagle delay.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if endpoint.tls == "ssl":
                sock = self._wrap(sock)
            sock.settimeout(timeout.read)
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    def _wrap(self, sock: socket.socket) -> ssl.SSLSocket:
        context = self._endpoint.ssl_context()
        return context.wrap_socket(sock, server_hostname=self._endpoint.host)

    @property
    def local_address(self) -> str:
        """The local IP address."""
        try:
            return str(self.sock.getsockname()[0])
        except OSError:
            return "127.0.0.1"

    def read(self) -> list[Any]:
        """The next events (at least one), within the call's deadline."""
        receiver = self._receiver
        limits = self._limits
        limits.start()
        sock = self.sock
        while True:
            set_timeout(sock, limits.wait())
            try:
                with receiver.get_buffer() as view:
                    count = sock.recv_into(view)
            except TimeoutError as exc:
                limits.check()
                raise _no_answer(self._endpoint) from exc
            limits.received(count)
            if not count:
                receiver.receive_eof()
                raise _closed(self._endpoint)
            events = receiver.buffer_updated(count)
            if events:
                return events

    def write(self, data: bytes) -> None:
        """Send all of ``data``, within the time its size allows (see
        :meth:`CallLimits.write_timeout`; a server that reads a byte now and then cannot hold
        a large DATA for ever)."""
        sock = self.sock
        if len(data) > _SMALL_WRITE:
            set_timeout(sock, self._limits.write_timeout(len(data)))
        # else: the kernel takes it at once; the read timeout set already bounds it
        try:
            sock.sendall(data)
        except TimeoutError as exc:
            raise MailTimeout(
                f"{self._endpoint.display}: the server did not take {len(data)} bytes in "
                "the time allowed (Timeout.total and min_rate)"
            ) from exc

    def start_tls(self) -> None:
        """Wrap the socket in TLS (the handshake within the connect timeout)."""
        self.sock.settimeout(self._endpoint.timeout.connect_timeout)
        self.sock = self._wrap(self.sock)
        self.sock.settimeout(self._endpoint.timeout.read)

    def abort(self) -> None:
        """Close at once; see :meth:`mailsync.protocol.stream.Channel.abort`."""
        # shutdown() first: it wakes a recv() blocked in another thread (close() alone does
        # not), so close() of a retriever from another thread ends its watch() at once.
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()

    close = abort


def _blocking(channel: Any) -> SocketChannel:
    if not isinstance(channel, SocketChannel):
        raise TypeError(f"{channel!r} is not a blocking channel")
    return channel


def perform(op: Operation) -> Any:
    """Perform a stream operation on a blocking socket (a performer for
    :func:`mailsync._plans.run` and :func:`~mailsync._plans.stream`)."""
    if isinstance(op, Read):
        return _blocking(op.channel).read()
    if isinstance(op, Write):
        _blocking(op.channel).write(op.data)
    elif isinstance(op, Connect):
        return SocketChannel(op.endpoint, op.receiver)
    elif isinstance(op, StartTLS):
        _blocking(op.channel).start_tls()
    elif isinstance(op, Close):
        _blocking(op.channel).close()
    else:
        raise TypeError(f"not a stream operation: {op!r}")
    return None


# -- asyncio ---------------------------------------------------------------------------------


def _stream_protocol() -> type[asyncio.BufferedProtocol]:
    import asyncio

    class StreamProtocol(asyncio.BufferedProtocol):
        """asyncio delivers received bytes straight into the receiver's buffer; the parsed
        events wait here until a read asks for them.

        Memory stays bounded without pausing the transport: the plans bound how much they
        ask the server to send ahead (POP3's fetch window, SMTP's one reply per command).
        """

        def __init__(self, receiver: Receiver, limits: CallLimits) -> None:
            self.receiver = receiver
            self.limits = limits
            self.transport: asyncio.BaseTransport | None = None
            self.events: list[Any] = []
            self.error: BaseException | None = None
            self.closed = False
            self.activity = 0.0  # loop time of the last bytes received
            self._waiter: asyncio.Future[None] | None = None
            self.writable = asyncio.Event()
            self.writable.set()
            self.lost = asyncio.Event()

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def get_buffer(self, sizehint: int) -> memoryview:
            return self.receiver.get_buffer(sizehint)

        def buffer_updated(self, nbytes: int) -> None:
            # Only a timestamp, not a wake-up: the reader checks it when its wait runs out.
            self.activity = asyncio.get_running_loop().time()
            if self.error is not None:
                return  # the first error is the one to report; what follows it is noise
            try:
                self.limits.received(nbytes)
                events = self.receiver.buffer_updated(nbytes)
            except MailsyncError as exc:
                self.error = exc
                # Stop taking bytes the session will never read (a message past its limit).
                if isinstance(self.transport, asyncio.ReadTransport):
                    self.transport.pause_reading()
                self._wake()
                return
            if events:  # a read in the middle of a message wakes nobody
                self.events.extend(events)
                self._wake()

        def eof_received(self) -> bool | None:
            self.closed = True
            self._wake()
            return None

        def connection_lost(self, exc: Exception | None) -> None:
            self.closed = True
            if exc is not None and self.error is None:
                self.error = exc
            self.writable.set()
            self.lost.set()
            self._wake()

        def pause_writing(self) -> None:
            self.writable.clear()

        def resume_writing(self) -> None:
            self.writable.set()

        def _wake(self) -> None:
            waiter, self._waiter = self._waiter, None
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

        async def read_events(self, endpoint: Endpoint) -> list[Any]:
            loop = asyncio.get_running_loop()
            self.activity = max(self.activity, loop.time())
            self.limits.start()
            while not self.events:
                if self.error is not None:
                    raise self.error
                if self.closed:
                    self.receiver.receive_eof()
                    raise _closed(endpoint)
                self._waiter = loop.create_future()
                await self._wait_idle(self._waiter, endpoint)
            events, self.events = self.events, []
            return events

        async def _wait_idle(self, waiter: asyncio.Future[None], endpoint: Endpoint) -> None:
            idle_timeout = endpoint.timeout.read
            loop = asyncio.get_running_loop()
            while True:
                budget = self.limits.wait()  # MailTimeout once the call's deadline is past
                if idle_timeout is None and budget is None:
                    await waiter
                    return
                remaining = (
                    budget if idle_timeout is None else (self.activity + idle_timeout - loop.time())
                )
                if remaining is not None and remaining <= 0:
                    raise _no_answer(endpoint)
                if budget is not None and remaining is not None and budget < remaining:
                    remaining = budget
                try:
                    async with asyncio.timeout(remaining):
                        await asyncio.shield(waiter)
                    return
                except TimeoutError:
                    continue  # bytes may have arrived meanwhile: the loop re-checks

    return StreamProtocol


_PROTOCOL: Any = None


class StreamChannel:
    """An asyncio connection, plain or TLS, feeding a receiver (natively, no thread)."""

    def __init__(self, endpoint: Endpoint, protocol: Any) -> None:
        self._endpoint = endpoint
        self._protocol = protocol

    @classmethod
    async def open(cls, endpoint: Endpoint, receiver: Receiver) -> StreamChannel:
        """Connect (implicit TLS when the endpoint asks), within the connect timeout."""
        import asyncio

        global _PROTOCOL
        if _PROTOCOL is None:
            _PROTOCOL = _stream_protocol()
        context = endpoint.ssl_context() if endpoint.tls == "ssl" else None
        protocol = _PROTOCOL(receiver, CallLimits(endpoint))
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(endpoint.timeout.connect_timeout):
            await loop.create_connection(
                lambda: protocol,
                endpoint.host,
                endpoint.port,
                ssl=context,
                server_hostname=endpoint.host if context else None,
            )
        return cls(endpoint, protocol)

    @property
    def _transport(self) -> asyncio.Transport:
        import asyncio

        transport = self._protocol.transport
        if self._protocol.closed or not isinstance(transport, asyncio.Transport):
            raise ConnectionFailed(f"{self._endpoint.display}: the connection is closed")
        return transport

    @property
    def local_address(self) -> str:
        """The local IP address."""
        transport = self._protocol.transport
        name = transport.get_extra_info("sockname") if transport is not None else None
        return str(name[0]) if name else "127.0.0.1"

    async def read(self) -> list[Any]:
        """The next events (at least one)."""
        events: list[Any] = await self._protocol.read_events(self._endpoint)
        return events

    async def write(self, data: bytes) -> None:
        """Send ``data``, waiting (within the read timeout) while the transport is full."""
        import asyncio

        self._transport.write(data)
        if not self._protocol.writable.is_set():
            limits: CallLimits = self._protocol.limits
            async with asyncio.timeout(limits.write_timeout(len(data))):
                await self._protocol.writable.wait()

    async def start_tls(self) -> None:
        """Wrap the connection in TLS (the handshake within the connect timeout)."""
        import asyncio

        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._endpoint.timeout.connect_timeout):
            transport = await loop.start_tls(
                self._transport,
                self._protocol,
                self._endpoint.ssl_context(),
                server_hostname=self._endpoint.host,
            )
        if transport is None:
            raise ConnectionFailed(f"{self._endpoint.display}: the TLS upgrade failed")
        self._protocol.transport = transport

    async def close(self) -> None:
        """Close: the TLS goodbye gets a moment (see :data:`CLOSE_GRACE`), then the socket
        is dropped."""
        import asyncio

        transport = self._protocol.transport
        if transport is None or self._protocol.lost.is_set():
            return
        transport.close()
        read = self._endpoint.timeout.read
        grace = CLOSE_GRACE if read is None else min(CLOSE_GRACE, read)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self._protocol.lost.wait()
                return
        self.abort()

    def abort(self) -> None:
        """Close at once; see :meth:`mailsync.protocol.stream.Channel.abort`."""
        transport = self._protocol.transport
        if transport is None or self._protocol.lost.is_set():
            return
        # A transport of an event loop that is gone cannot be reached any more: let it be.
        with contextlib.suppress(Exception):
            abort = getattr(transport, "abort", None)
            if abort is not None:
                abort()
            else:
                transport.close()


def _async(channel: Any) -> StreamChannel:
    if not isinstance(channel, StreamChannel):
        raise TypeError(f"{channel!r} is not an asyncio channel")
    return channel


async def aperform(op: Operation) -> Any:
    """Perform a stream operation on asyncio (a performer for :func:`mailsync._plans.arun`
    and :func:`~mailsync._plans.astream`)."""
    if isinstance(op, Read):
        return await _async(op.channel).read()
    if isinstance(op, Write):
        await _async(op.channel).write(op.data)
    elif isinstance(op, Connect):
        return await StreamChannel.open(op.endpoint, op.receiver)
    elif isinstance(op, StartTLS):
        await _async(op.channel).start_tls()
    elif isinstance(op, Close):
        await _async(op.channel).close()
    else:
        raise TypeError(f"not a stream operation: {op!r}")
    return None
