"""aioimaplib as the async IMAP session uses it (:mod:`mailsync.backends._aioimap`).

What adapts aioimaplib lives here, apart from the session's logic: the commands whose wire
text mailsync builds (a SEARCH with a LITERAL+ literal, AUTHENTICATE with SASL-IR), the reader
that takes a bulk ``UID FETCH`` off the transport (aioimaplib's parser is several times
slower), aioimaplib's protocol class made to read within the session's limits, and the
greeting shortcut. aioimaplib is GPL-3.0 and lives in the ``async`` extra: only this module,
:mod:`~mailsync.backends._aioimap` and :mod:`~mailsync.backends.imap_async` import it.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Iterator
from typing import Any

import aioimaplib

from mailsync._errors import MailsyncError, MessageTooLarge, ProtocolError
from mailsync._hints import greeting_problem
from mailsync.backends._limits import CallLimits
from mailsync.protocol import sasl
from mailsync.protocol.imap import capability_code
from mailsync.protocol.imap_lines import is_exists
from mailsync.protocol.imap_literals import (
    MAX_LINE,
    Continuation,
    FetchResponse,
    ResponseReader,
    Tagged,
    Untagged,
)

__all__ = [
    "FetchCommand",
    "FetchReader",
    "SASLCommand",
    "WireCommand",
    "discard",
    "guarded_protocol",
    "parser_idle",
    "quote",
    "text_of",
    "use_greeting_capabilities",
]

_CRLF = b"\r\n"
#: aioimaplib's parser recurses once per line of a chunk it is given: chunks are handed to it
#: in pieces of at most this many lines, so a burst of short lines cannot exhaust the stack.
_LINES_PER_FEED = 64


def quote(text: str) -> str:
    """An IMAP quoted string (RFC 3501 section 4.3) for text without CR or LF."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def text_of(line: Any) -> str:
    """A response line aioimaplib handed over (bytes or str) as text."""
    if isinstance(line, bytes | bytearray):
        return bytes(line).decode("utf-8", "replace")
    return str(line)


# -- commands ----------------------------------------------------------------------------------


class _WireMixin:
    """A command whose wire text after ``tag [UID] NAME`` is built here, not by aioimaplib.

    aioimaplib joins ``str`` arguments with spaces and refuses CR/LF in them; building the
    text ourselves lets a SEARCH carry a non-synchronising literal (LITERAL+) for UTF-8 text.
    """

    tag: str
    name: str
    prefix: str | None
    wire: str

    def __repr__(self) -> str:
        return f"{self.tag} {self.prefix or ''}{self.name}{' ' if self.wire else ''}{self.wire}"


class WireCommand(_WireMixin, aioimaplib.Command):  # type: ignore[misc]
    """Any command but FETCH and AUTHENTICATE, its arguments as mailsync wrote them."""

    def __init__(
        self,
        name: str,
        tag: str,
        wire: str,
        *,
        prefix: str | None,
        untagged: str | None,
        timeout: float | None,
    ) -> None:
        super().__init__(name, tag, prefix=prefix, untagged_resp_name=untagged, timeout=timeout)
        self.wire = wire


class FetchCommand(_WireMixin, aioimaplib.FetchCommand):  # type: ignore[misc]
    """A ``UID FETCH`` that aioimaplib reads (the fast reader not being usable)."""

    def __init__(self, tag: str, wire: str, *, timeout: float | None) -> None:
        super().__init__(tag, prefix="UID", timeout=timeout)
        self.wire = wire


class SASLCommand(aioimaplib.Command):  # type: ignore[misc]
    """AUTHENTICATE: sends the initial response inline (SASL-IR) or when asked, and answers
    every other challenge as the exchange says (XOAUTH2/OAUTHBEARER report a failure in one)
    so that the server can say NO.
    """

    def __init__(
        self,
        tag: str,
        exchange: sasl.Exchange,
        *,
        inline: bool,
        write: Callable[[bytes], None],
        timeout: float | None,
    ) -> None:
        initial = exchange.initial() if inline else None
        args = (exchange.mechanism,) if initial is None else (exchange.mechanism, initial)
        super().__init__("AUTHENTICATE", tag, *args, timeout=timeout)
        self.secret = initial
        self._exchange = exchange
        self._write = write

    def append_to_resp(self, line: Any, result: str = "Pending") -> None:
        if result == "Pending" and isinstance(line, bytes) and line.startswith(b"+"):
            try:
                challenge = base64.b64decode(line[1:].strip(), validate=True)
            except ValueError:
                challenge = line[1:].strip()  # not base64: kept as sent, for the error text
            answer = self._exchange.respond(challenge)
            self._write(sasl.encode(answer).encode("ascii") + _CRLF)
            return
        super().append_to_resp(line, result)


# -- one connection ----------------------------------------------------------------------------


class FetchReader:
    """Takes the place of aioimaplib's ``data_received`` for one ``UID FETCH``: feeds the
    pure :class:`ResponseReader` and keeps the FETCH responses until the tagged completion.

    Safe because nothing else is in flight: the caller holds the session lock, and IMAP
    servers only speak in answer to a command.
    """

    def __init__(
        self,
        tag: bytes,
        on_exists: Callable[[], None],
        *,
        context: str,
        limits: CallLimits,
        max_literal: int | None,
    ) -> None:
        loop = asyncio.get_running_loop()
        self.tag = tag
        self.on_exists = on_exists
        self.context = context
        self.limits = limits
        self.reader = ResponseReader(max_literal=max_literal)
        self.responses: list[FetchResponse] = []
        self.done: asyncio.Future[Tagged] = loop.create_future()
        self.last = loop.time()
        self._loop = loop

    def feed(self, data: bytes) -> None:
        self.last = self._loop.time()
        if self.done.done():
            return
        limits = self.limits
        limits.received(len(data))
        try:
            reader = self.reader
            reader.feed(data)
            while (event := reader.next_event()) is not None:
                if isinstance(event, FetchResponse):  # the usual event: taken here, no call
                    limits.start()  # each message is a call of its own: its own deadline
                    self.responses.append(event)
                else:
                    self._take(event)
        except MessageTooLarge as exc:
            error = MessageTooLarge(
                f"{self.context}: {exc}", size=exc.size, limit=exc.limit, uid=exc.uid
            )
            self.done.set_exception(error)
        except ProtocolError as exc:
            if not str(exc).startswith(self.context):
                exc = ProtocolError(f"{self.context}: {exc}")
            self.done.set_exception(exc)

    def _take(self, event: Any) -> None:
        """Any event but a FETCH response (which :meth:`feed` keeps)."""
        if not isinstance(event, Tagged):
            self.limits.lines(1, 0)  # what else comes counts against the next message
        if isinstance(event, Tagged):
            if event.tag != self.tag or self.reader.buffered:
                raise ProtocolError(f"unexpected tagged response {event.tag!r} during FETCH")
            self.done.set_result(event)
        elif isinstance(event, Continuation):
            raise ProtocolError("unexpected continuation request during FETCH")
        elif isinstance(event, Untagged) and is_exists(event.text):
            self.on_exists()  # new mail while fetching: the session counts it
        # Other untagged responses (EXPUNGE, flag news) change nothing here.


_GUARDED: dict[type[Any], type[Any]] = {}


def guarded_protocol(base: type[Any]) -> type[Any]:
    """aioimaplib's protocol class, reading within the session's :class:`CallLimits` (see
    :meth:`Session._guard_protocol`)."""
    known = _GUARDED.get(base)
    if known is not None:
        return known

    class GuardedProtocol(base):  # type: ignore[misc]
        limits: CallLimits
        count_lines = True
        #: Why the session gave up on the connection from inside the event loop, if it did.
        failure: MailsyncError | None = None
        context = ""

        def data_received(self, data: bytes) -> None:
            if self.failure is not None:
                return
            try:
                self.limits.received(len(data))
                lines = data.count(b"\n")
                if self.count_lines:
                    self.limits.lines(lines, len(data))
                if lines <= _LINES_PER_FEED:
                    super().data_received(data)
                else:
                    for piece in _pieces(data):
                        super().data_received(piece)
                if len(self.incomplete_line) > MAX_LINE:
                    raise ProtocolError(
                        f"{self.context}: the server sent a response line over {MAX_LINE} bytes"
                    )
            except Exception as exc:
                # Raised here, it would reach the event loop, which prints it as a fatal
                # error: the session says it instead, and the connection is dropped.
                self.failure = (
                    exc
                    if isinstance(exc, MailsyncError)
                    else ProtocolError(
                        f"{self.context}: the server's response could not be read "
                        f"({type(exc).__name__})"
                    )
                )
                self.failure.__cause__ = None if isinstance(exc, MailsyncError) else exc
                self.transport.abort()

    _GUARDED[base] = GuardedProtocol
    return GuardedProtocol


def _pieces(data: bytes) -> Iterator[bytes]:
    """``data`` cut after every :data:`_LINES_PER_FEED`-th line end."""
    start = 0
    end = len(data)
    while start < end:
        stop = start
        for _ in range(_LINES_PER_FEED):
            found = data.find(b"\n", stop, end)
            if found < 0:
                stop = end
                break
            stop = found + 1
        yield data[start:stop]
        start = stop


def parser_idle(protocol: Any) -> bool:
    """Whether aioimaplib has nothing half-read and no command in flight."""
    return (
        not protocol.incomplete_line
        and protocol.current_command is None
        and protocol.pending_sync_command is None
        and not protocol.pending_async_commands
    )


def discard(task: asyncio.Future[Any]) -> None:
    """Cancel a task we no longer wait for, retrieving its error so none is reported."""
    task.cancel()
    if task.done() and not task.cancelled():
        task.exception()


def use_greeting_capabilities(protocol: Any) -> None:
    """aioimaplib asks CAPABILITY right after the greeting even when the greeting carried
    them in a ``[CAPABILITY ...]`` code (Dovecot's does): take those and spare the round trip.

    Only the greeting's: after STARTTLS the capabilities are asked afresh. The state change
    follows aioimaplib's own ``welcome`` (under its state condition, waking the waiters).
    """
    ask = protocol.welcome

    async def welcome(line: bytes) -> None:
        if not line.startswith(b"* "):
            # Another protocol on this port: aioimaplib would take "+OK" for a greeting, or
            # wait for one until the timeout. Hang up and say what it looks like.
            protocol.foreign_greeting = greeting_problem("IMAP", line)
            protocol.transport.abort()
            return
        caps = capability_code(line)
        if caps is None or not caps & {b"IMAP4REV1", b"IMAP4REV2"}:
            await ask(line)
            return
        async with protocol.state_condition:
            if b"PREAUTH" in line:
                protocol.state = aioimaplib.AUTH
            elif b"OK" in line:
                protocol.state = aioimaplib.NONAUTH
            else:
                raise aioimaplib.Error(line.decode("utf-8", "replace"))
            protocol.capabilities = {c.decode("ascii", "replace") for c in caps}
            protocol.imap_version = "IMAP4REV1" if b"IMAP4REV1" in caps else "IMAP4REV2"
            protocol.state_condition.notify_all()

    protocol.welcome = welcome
