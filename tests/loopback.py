"""The scaffold of the scripted servers in tests/ (hostile IMAP, hostile and scripted POP3): a
listener on a free loopback port, one thread per connection, and a stop that hangs up on every
client. A server subclasses :class:`LoopbackServer` and writes only its conversation,
``_session(conn, reader)``. Standard library only.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType
from typing import Any, Self

__all__ = ["LoopbackServer"]


class LoopbackServer:
    """See the module docstring. Use as a context manager; ``port`` is where it listens and
    ``connections`` how many clients it has accepted."""

    #: The URL scheme of :meth:`url`.
    scheme = ""

    def __init__(self) -> None:
        self.connections = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []

    def __enter__(self) -> Self:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with contextlib.suppress(OSError):  # wakes the accept() a close alone would not
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for conn in list(self._conns):  # the server hangs up: no thread waits for a client
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        for thread in self._threads:
            thread.join(10)

    def url(self, user: str = "alice") -> str:
        """The URL a client connects to, as ``user``."""
        return f"{self.scheme}://{user}@127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._conns.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn, conn.makefile("rb") as reader:
                conn.settimeout(30)
                self._session(conn, reader)
        except (OSError, ValueError):  # closed under it by __exit__
            return

    def _session(self, conn: socket.socket, reader: Any) -> None:
        raise NotImplementedError
