"""The operations of protocols spoken over one byte stream (POP3, SMTP): what their plans
(:mod:`mailsync._plans`) yield to connect, read, write, start TLS and close.

They are values only. The performers that carry them out, on a blocking socket and on asyncio,
live in :mod:`mailsync.backends._socket`; a plan cannot tell which one runs it.

:class:`Connect` returns a :class:`Channel`, and every later operation names its channel, so
one plan can hold several connections (a POP3 retriever closes an old session while it opens
a new one). What a :class:`Read` returns is decided by the *receiver* the channel was opened
with: the protocol's sans-I/O parser, which the performer fills straight from the socket
through ``get_buffer``/``buffer_updated`` (the shape of ``asyncio.BufferedProtocol``), so the
bytes are copied once.

This module must not do I/O or import a backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from mailsync._config import Endpoint
from mailsync._plans import Operation

__all__ = ["Channel", "Close", "Connect", "Read", "Receiver", "StartTLS", "Write"]


class Receiver(Protocol):
    """A protocol's parser as the performers feed it (``POP3Connection``, the SMTP reply
    parser)."""

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """Writable space for the next read."""
        ...

    def buffer_updated(self, nbytes: int) -> list[Any]:
        """Account for ``nbytes`` written into the last buffer; return the events completed."""
        ...

    def receive_eof(self) -> None:
        """The server closed the connection; raise if that cut something short."""
        ...


class Channel(Protocol):
    """An open connection, as a plan sees it: a name to pass to the operations, and the two
    things a plan may do with it directly."""

    @property
    def local_address(self) -> str:
        """The local IP address of the connection (for an SMTP EHLO name)."""
        ...

    def abort(self) -> None:
        """Drop the connection at once, without a word: never blocks, never raises, may be
        called from any thread and where no operation can be yielded any more (a plan being
        closed). It wakes a read blocked in another thread."""
        ...


@dataclass(frozen=True, slots=True)
class Connect(Operation):
    """Open a connection to ``endpoint`` (with implicit TLS when its ``tls`` is ``"ssl"``)
    whose bytes go to ``receiver``. The result is the :class:`Channel`."""

    endpoint: Endpoint
    receiver: Receiver


@dataclass(frozen=True, slots=True)
class Read(Operation):
    """Wait for the next events from the server (at least one). The result is the list the
    receiver returned. Waiting longer than the endpoint's read timeout for a byte raises
    :class:`~mailsync.MailTimeout`; the server closing the connection raises
    :class:`~mailsync.ConnectionFailed`."""

    channel: Channel


@dataclass(frozen=True, slots=True)
class Write(Operation):
    """Send ``data``. The result is None."""

    channel: Channel
    data: bytes


@dataclass(frozen=True, slots=True)
class StartTLS(Operation):
    """Wrap the connection in TLS now (the plan has checked that nothing is buffered that
    was sent before the handshake). The result is None."""

    channel: Channel


@dataclass(frozen=True, slots=True)
class Close(Operation):
    """Close the connection politely: over TLS, give the goodbye a moment (never more than
    the read timeout) before dropping it. The result is None; it never fails."""

    channel: Channel
