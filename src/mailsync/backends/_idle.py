"""Waiting for the server on a blocking imaplib connection: the sync IMAP backend's IDLE.

A thread blocked in a socket read cannot be woken portably from another thread, yet close()
must end a watch at once, whatever it waits for. So the wait polls two things together: the
connection's socket and a :class:`WakePipe` that close() writes to. Lines imaplib or the TLS
layer already buffered are invisible to poll() and are looked at first.

This module reads lines only through the callable it is given, and knows nothing of IMAP
beyond imaplib's buffered file; it must not know the retriever.
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["WakePipe", "wait_for_line"]


class WakePipe:
    """A pipe another thread writes a byte to, to wake a wait that polls :meth:`reader`."""

    def __init__(self) -> None:
        self._fds: tuple[int, int] | None = None

    def reader(self) -> int:
        """The end to poll (made on first use), emptied of wake-ups nobody waited for."""
        if self._fds is None:
            read_fd, write_fd = os.pipe()
            os.set_blocking(read_fd, False)
            os.set_blocking(write_fd, False)
            self._fds = (read_fd, write_fd)
        with contextlib.suppress(OSError):
            os.read(self._fds[0], 4096)
        return self._fds[0]

    def wake(self) -> None:
        """Wake the wait polling :meth:`reader`, if there is one."""
        fds = self._fds
        if fds is not None:
            with contextlib.suppress(OSError):
                os.write(fds[1], b"x")

    def close(self) -> None:
        """Close both ends (a later :meth:`reader` makes a new pipe)."""
        fds, self._fds = self._fds, None
        for fd in fds or ():
            with contextlib.suppress(OSError):
                os.close(fd)


def wait_for_line(
    imap: imaplib.IMAP4,
    wake: WakePipe,
    until: float,
    stop: threading.Event,
    read_line: Callable[[], bool],
    read_timeout: float | None,
) -> bool:
    """Read the server's lines with ``read_line`` as they come, until it says one was what
    the caller waits for (True), or ``until`` (monotonic) passes, ``stop`` is set or ``wake``
    is woken (False).

    ``read_timeout`` is the socket's timeout, put back after each look at the buffers.
    """
    sock = imap.sock
    wake_fd = wake.reader()
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    poller.register(wake_fd, select.POLLIN)
    while not stop.is_set():
        if _has_buffered(imap, sock, read_timeout) and read_line():
            return True
        remaining = until - time.monotonic()
        if remaining <= 0:
            return False
        events = dict(poller.poll(max(1, int(min(remaining, 60.0) * 1000))))
        if wake_fd in events:
            return False
        if sock.fileno() in events and read_line():
            return True
    return False


def _has_buffered(imap: imaplib.IMAP4, sock: socket.socket, read_timeout: float | None) -> bool:
    """Whether a line already waits in imaplib's buffer or the TLS layer, where poll()
    cannot see it."""
    sock.setblocking(False)
    try:
        buffered: Any = imap.file
        return bool(buffered.peek(1))
    except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
        return False
    except OSError:
        return True  # let the read report it
    finally:
        sock.settimeout(read_timeout)
