"""A loopback TCP proxy that can break connections on demand.

Tests put ``TCPProxy`` between a client and a real server to prove that the client survives
network failures: ``cut_all()`` resets every live connection, ``cut_after(n)`` resets one
connection after exactly ``n`` more bytes went from server to client (to cut mid-FETCH or
mid-RETR), ``refuse()`` makes new connections fail and ``stall()`` stops all traffic (to
provoke timeouts). TLS passes through untouched, so implicit-TLS ports work as well.

The proxy runs an asyncio loop in a daemon thread; its methods are called from the test's
thread and return once the change has taken effect.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine, Iterator
from types import TracebackType
from typing import Any, TypeVar

__all__ = ["TCPProxy"]

_T = TypeVar("_T")
_CHUNK = 65536
_LINGER_RESET = struct.pack("ii", 1, 0)  # linger on, timeout 0: close() sends RST


class _Pipe:
    """One proxied connection: the client's and the server's stream."""

    def __init__(
        self,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        server: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self.client_reader, self.client_writer = client
        self.server_reader, self.server_writer = server
        self.closed = False

    def close(self, *, rst: bool) -> None:
        if self.closed:
            return
        self.closed = True
        for writer in (self.client_writer, self.server_writer):
            if rst:
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
                # abort() drops buffered data and closes at once; with the linger set above
                # the peer sees a reset, like a dead network path or a killed server.
                writer.transport.abort()
            else:
                writer.close()


class TCPProxy:
    """Forward ``127.0.0.1:<free port>`` to ``target_host:target_port``.

    ``connections`` counts accepted (and forwarded) connections, ``live`` those open now,
    ``cuts`` the connections this proxy broke on purpose.
    """

    def __init__(self, target_host: str, target_port: int, *, host: str = "127.0.0.1") -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.host = host
        self.port = 0
        self.connections = 0
        self.refused = 0
        self.cuts = 0
        self._pipes: set[_Pipe] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._reset_new = False
        self._cut_after: int | None = None
        self._cut_rst = True
        self._cut_remaining: dict[_Pipe, int] = {}
        self._flowing: asyncio.Event | None = None
        self._pace: tuple[int, float] | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    # ----------------------------------------------------------------- lifecycle

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def live(self) -> int:
        return len(self._pipes)

    def __enter__(self) -> TCPProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> TCPProxy:
        if self._thread is not None:
            raise RuntimeError("TCPProxy already started")
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=loop.run_forever, name=f"TCPProxy->{self.target_port}", daemon=True
        )
        self._thread.start()
        self._call(self._setup())
        return self

    def stop(self) -> None:
        """Close the listener and reset every connection; safe to call twice."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(Exception):
            self._call(self._teardown())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        self._loop = self._thread = None

    async def _setup(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        await self._listen()

    async def _teardown(self) -> None:
        await self._unlisten()
        for pipe in list(self._pipes):
            pipe.close(rst=True)
        assert self._flowing is not None
        self._flowing.set()  # let stalled pumps see that their connection is gone
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=5)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, self.host, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _unlisten(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            # close() shuts the listening socket at once. Not wait_closed(): since Python
            # 3.12 that also waits for the live connections, which refuse() keeps open.
            server.close()

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("TCPProxy is not started")
        future: concurrent.futures.Future[_T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout=30)

    # ----------------------------------------------------------------- failures on demand

    def cut_all(self, *, rst: bool = True) -> int:
        """Break every live connection now (a reset, or a plain close with ``rst=False``).

        Returns how many were cut. New connections are still accepted.
        """

        async def cut() -> int:
            pipes = [pipe for pipe in self._pipes if not pipe.closed]
            for pipe in pipes:
                pipe.close(rst=rst)
            self.cuts += len(pipes)
            return len(pipes)

        return self._call(cut())

    def cut_after(self, nbytes: int, *, rst: bool = True) -> None:
        """Arm a one-shot cut: the first connection (live now or opened later) through which
        ``nbytes`` more bytes flow from server to client is broken right after them.

        The client receives exactly those bytes, then the reset (or EOF with ``rst=False``).
        """
        if nbytes < 0:
            raise ValueError("nbytes must be >= 0")

        async def arm() -> None:
            self._cut_after = nbytes
            self._cut_rst = rst
            self._cut_remaining = {pipe: nbytes for pipe in self._pipes if not pipe.closed}

        self._call(arm())

    @property
    def cut_pending(self) -> bool:
        """True while a ``cut_after`` is armed and has not fired."""
        return self._cut_after is not None

    def disarm(self) -> None:
        async def disarm() -> None:
            self._cut_after = None
            self._cut_remaining.clear()

        self._call(disarm())

    def refuse(self, *, reset: bool = False) -> None:
        """Make new connections fail until ``allow()``; live ones are left alone.

        By default the port is closed (``ConnectionRefusedError``); with ``reset=True`` a
        connection is accepted and reset at once, like a server that crashes on connect.
        """

        async def refuse() -> None:
            if reset:
                self._reset_new = True
                if self._server is None:
                    await self._listen()
            else:
                self._reset_new = False
                await self._unlisten()

        self._call(refuse())

    def allow(self) -> None:
        """Accept and forward new connections again (on the same port)."""

        async def allow() -> None:
            self._reset_new = False
            if self._server is None:
                await self._listen()

        self._call(allow())

    @contextlib.contextmanager
    def refusing(self, *, reset: bool = False) -> Iterator[None]:
        self.refuse(reset=reset)
        try:
            yield
        finally:
            self.allow()

    def stall(self) -> None:
        """Stop moving bytes in both directions (connections stay open): a hung peer."""
        self._call(self._set_flowing(False))

    def resume(self) -> None:
        self._call(self._set_flowing(True))

    def throttle(self, chunk: int, pause: float) -> None:
        """Pass server->client bytes ``chunk`` at a time with ``pause`` seconds between: a
        slow link that keeps sending (unlike :meth:`stall`)."""
        self._pace = (chunk, pause)

    async def _set_flowing(self, flowing: bool) -> None:
        assert self._flowing is not None
        if flowing:
            self._flowing.set()
        else:
            self._flowing.clear()

    # ----------------------------------------------------------------- forwarding

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._forward(reader, writer)
        finally:
            self._handlers.discard(task)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._reset_new:
            self.refused += 1
            sock = writer.get_extra_info("socket")
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            writer.transport.abort()
            return
        try:
            server = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            self.refused += 1
            writer.transport.abort()
            return
        self.connections += 1
        pipe = _Pipe((reader, writer), server)
        self._pipes.add(pipe)
        if self._cut_after is not None:
            self._cut_remaining[pipe] = self._cut_after
        # Without a write buffer the downstream pump only reads on once the client's socket
        # took the bytes, so a cut lands exactly where cut_after() said.
        writer.transport.set_write_buffer_limits(0)
        try:
            await asyncio.gather(
                self._pump(pipe, pipe.client_reader, pipe.server_writer, downstream=False),
                self._pump(pipe, pipe.server_reader, pipe.client_writer, downstream=True),
            )
        finally:
            pipe.close(rst=False)
            self._pipes.discard(pipe)
            self._cut_remaining.pop(pipe, None)

    async def _pump(
        self,
        pipe: _Pipe,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        downstream: bool,
    ) -> None:
        try:
            while not pipe.closed:
                await self._until_flowing(pipe)
                data = await reader.read(_CHUNK)
                await self._until_flowing(pipe)
                if not data or pipe.closed:
                    break
                remaining = self._cut_remaining.get(pipe) if downstream else None
                if remaining is not None and len(data) >= remaining:
                    writer.write(data[:remaining])
                    await writer.drain()
                    self._fire_cut(pipe)
                    return
                if remaining is not None:
                    self._cut_remaining[pipe] = remaining - len(data)
                await self._send(writer, data, paced=downstream)
        except (ConnectionError, OSError):
            pass
        # One side finished or failed: the connection as a whole is over.
        pipe.close(rst=False)

    async def _send(self, writer: asyncio.StreamWriter, data: bytes, *, paced: bool) -> None:
        pace = self._pace if paced else None
        if pace is None:
            writer.write(data)
            await writer.drain()
            return
        chunk, pause = pace
        for start in range(0, len(data), chunk):
            writer.write(data[start : start + chunk])
            await writer.drain()
            await asyncio.sleep(pause)

    async def _until_flowing(self, pipe: _Pipe) -> None:
        assert self._flowing is not None
        # While stalled, also notice a cut (cut_all() during stall()) to end the pump.
        while not self._flowing.is_set() and not pipe.closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flowing.wait(), timeout=0.05)

    def _fire_cut(self, pipe: _Pipe) -> None:
        self._cut_after = None
        self._cut_remaining.clear()
        self.cuts += 1
        pipe.close(rst=self._cut_rst)
