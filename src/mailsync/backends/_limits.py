"""The limits every network connection keeps while it reads: the whole-call deadline of
:class:`~mailsync.Timeout` (``total`` and ``min_rate``) and the caps on how much a server may
say in answer to one command (:data:`MAX_RESPONSE_LINES`, :data:`MAX_RESPONSE_BYTES`).

:class:`CallLimits` is kept per connection by the code that reads its socket (the socket
performers of POP3 and SMTP, the IMAP connections); :class:`GuardedSocket` puts it between a
blocking socket and whoever reads it (imaplib's reader, :class:`~mailsync.backends._tls.TLSStream`).
Checks happen once per chunk the socket returns, never per byte: a monotonic clock read and
an addition.

Past a limit a call ends with :class:`~mailsync.MailTimeout` (the deadline) or
:class:`~mailsync.ProtocolError` (a cap); the connection is then out of step and its owner
drops it. This module knows no protocol.
"""

from __future__ import annotations

import socket
from time import monotonic as _monotonic
from typing import Any

from mailsync._config import MAX_RESPONSE_BYTES, Endpoint
from mailsync._errors import MailTimeout, ProtocolError

__all__ = [
    "MAX_RESPONSE_BYTES",
    "MAX_RESPONSE_LINES",
    "CallLimits",
    "GuardedSocket",
    "set_timeout",
]

#: Response lines (IMAP untagged responses, POP3 and SMTP reply lines) one command may bring,
#: message bodies aside. A LIST of every folder or an EXPUNGE of many messages stays far below;
#: a server flooding a SELECT with responses reaches it in a second or two.
MAX_RESPONSE_LINES = 1_000_000


class CallLimits:
    """One connection's current call: its deadline and what the server has said in it.

    The deadline is kept here as a clock time (the :class:`~mailsync._config.Deadline` of
    :meth:`Timeout.deadline <mailsync.Timeout.deadline>`, unrolled): :meth:`start` runs for
    every message of a FETCH and :meth:`wait`/:meth:`received` for every chunk read, so each
    is one call with no object made and no call inside but the clock's.

    Args:
        endpoint: The connection's endpoint: its :class:`~mailsync.Timeout` and its name for
            messages.
    """

    __slots__ = (
        "_at",
        "_bytes",
        "_cap",
        "_context",
        "_lines",
        "_most",
        "_per_byte",
        "_timeout",
        "_total",
    )

    def __init__(self, endpoint: Endpoint) -> None:
        timeout = endpoint.timeout
        self._timeout = timeout
        self._context = endpoint.display
        # Timeout is frozen: what every call needs of it is worked out once.
        self._total = timeout.total_timeout
        self._per_byte = 0.0 if timeout.min_rate is None else 1.0 / timeout.min_rate
        #: When the current call must end on the monotonic clock, as it stands (each byte
        #: received moves it by ``_per_byte``); None: no call started, or no bound.
        self._at: float | None = None
        self._lines = 0
        self._bytes = 0
        self._most: float | None = None
        #: The longest one wait may be, the deadline aside: the read timeout, or ``most``.
        self._cap = timeout.read

    @property
    def most(self) -> float | None:
        """The longest any one wait may be from now on, whatever the read timeout (a polite
        goodbye that must not hold a close() for long); None: the read timeout."""
        return self._most

    @most.setter
    def most(self, seconds: float | None) -> None:
        self._most = seconds
        read = self._timeout.read
        self._cap = seconds if seconds is not None and (read is None or seconds < read) else read

    def start(self) -> None:
        """A new call begins (a command sent, a greeting awaited, the next message of a
        FETCH): a fresh deadline, nothing said yet."""
        total = self._total
        self._at = None if total is None else _monotonic() + total
        self._lines = 0
        self._bytes = 0

    def wait(self) -> float | None:
        """How long the next wait for bytes may take: the read timeout, or less when the
        deadline comes first.

        Raises:
            MailTimeout: The deadline has passed.
        """
        cap = self._cap
        at = self._at
        if at is None:
            return cap
        remaining = at - _monotonic()
        if remaining <= 0:
            raise self.expired()
        return remaining if cap is None or remaining < cap else cap

    def check(self) -> None:
        """Raise :class:`~mailsync.MailTimeout` when the deadline has passed."""
        at = self._at
        if at is not None and at - _monotonic() <= 0:
            raise self.expired()

    def received(self, nbytes: int) -> None:
        """Account for ``nbytes`` received: each moves the deadline by its share."""
        at = self._at
        if at is not None:
            self._at = at + nbytes * self._per_byte

    def lines(self, count: int, nbytes: int) -> None:
        """Account for ``count`` response lines of ``nbytes`` in all (bodies aside).

        Raises:
            ProtocolError: The call has brought more than :data:`MAX_RESPONSE_LINES` lines or
                :data:`MAX_RESPONSE_BYTES` bytes.
        """
        self._lines += count
        self._bytes += nbytes
        if self._lines > MAX_RESPONSE_LINES or self._bytes > MAX_RESPONSE_BYTES:
            raise ProtocolError(
                f"{self._context}: the server sent more than {MAX_RESPONSE_LINES} responses "
                f"or {MAX_RESPONSE_BYTES} bytes in answer to one command; giving up on the "
                "connection"
            )

    def expired(self) -> MailTimeout:
        """The error of a call past its deadline."""
        timeout = self._timeout
        rate = f" plus {timeout.min_rate:g} bytes/s" if timeout.min_rate else ""
        return MailTimeout(
            f"{self._context}: the server took longer than {timeout.total_timeout:g} s"
            f"{rate} to answer (Timeout.total); giving up on the connection"
        )

    def write_timeout(self, nbytes: int) -> float | None:
        """How long sending ``nbytes`` may take: the whole-call allowance for that many bytes
        (never less than the read timeout)."""
        timeout = self._timeout
        total = timeout.total_timeout
        if total is None:
            return timeout.read
        allowance = total + (nbytes / timeout.min_rate if timeout.min_rate else 0.0)
        return allowance if timeout.read is None else max(allowance, timeout.read)


class GuardedSocket:
    """A blocking socket whose reads keep to :class:`CallLimits`: each ``recv`` waits at most
    until the call's deadline and moves it by the bytes received. Everything else is the
    socket's own. A non-blocking socket (a peek for buffered data) is read as it is.
    """

    __slots__ = ("limits", "sock")

    def __init__(self, sock: socket.socket, limits: CallLimits) -> None:
        self.sock = sock
        self.limits = limits

    def recv(self, size: int, flags: int = 0) -> bytes:
        """``socket.recv`` within the call's deadline."""
        # Runs for every chunk of a FETCH: the socket's timeout is read once, and the
        # deadline moved here rather than in CallLimits.received (a call less per chunk).
        sock = self.sock
        current = sock.gettimeout()
        if current == 0.0:
            return sock.recv(size, flags)
        limits = self.limits
        wait = limits.wait()
        if wait != current:
            sock.settimeout(wait)
        try:
            data = sock.recv(size, flags)
        except TimeoutError:
            limits.check()
            raise
        at = limits._at
        if at is not None:
            limits._at = at + len(data) * limits._per_byte
        return data

    def recv_into(self, buffer: Any, size: int = 0, flags: int = 0) -> int:
        """``socket.recv_into`` within the call's deadline."""
        sock = self.sock  # as recv()
        current = sock.gettimeout()
        if current == 0.0:
            return sock.recv_into(buffer, size, flags)
        limits = self.limits
        wait = limits.wait()
        if wait != current:
            sock.settimeout(wait)
        try:
            count = sock.recv_into(buffer, size, flags)
        except TimeoutError:
            limits.check()
            raise
        at = limits._at
        if at is not None:
            limits._at = at + count * limits._per_byte
        return count

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


def set_timeout(sock: socket.socket, seconds: float | None) -> None:
    """``sock.settimeout(seconds)`` unless it is set so already: setting it is a system call
    (``ioctl``) every time, and a read's wait is the read timeout itself until the call's
    deadline comes near."""
    if sock.gettimeout() != seconds:
        sock.settimeout(seconds)
