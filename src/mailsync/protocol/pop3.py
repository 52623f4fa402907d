"""The POP3 client protocol without I/O: commands out as bytes, responses in as bytes, events out.

Written by hand because no maintained library does this: the stdlib's :mod:`poplib` is
blocking, owns its socket, and waits for every reply before sending the next command, so it
can neither serve asyncio nor pipeline (RFC 2449 ``PIPELINING``); no maintained third-party
package offers a sans-I/O or pipelined POP3 client. Following the h11 idea, this module never
touches a socket: :class:`POP3Connection` turns commands into bytes and bytes (fed in chunks
split anywhere) into :class:`Greeting`, :class:`Reply` and :class:`Challenge` events, keeping a
queue of outstanding commands so several can be in flight at once. The blocking and the asyncio
adapters in :mod:`mailsync.backends.pop3` drive the same object.

What it owns:

- framing: status lines, multi-line responses dot-unstuffed with their CRLFs kept (the message
  bytes exactly as the server holds them), the ``.`` terminator, garbage detection;
- ``CAPA`` (RFC 2449) parsing into :class:`Capabilities`; extended response codes (RFC 2449,
  RFC 3206: ``[AUTH]``, ``[IN-USE]``, ``[SYS/TEMP]``, ``[SYS/PERM]``, ``[LOGIN-DELAY]``) and
  their translation into the mailsync error hierarchy (:func:`reply_error`);
- authentication pieces: the APOP digest (RFC 1939) and the ``AUTH`` command (RFC 5034) that
  carries a SASL exchange of :mod:`mailsync.protocol.sasl`.

It must not do I/O, sleep, or know about sessions, retries or :class:`~mailsync.Message`.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

from mailsync._config import MAX_RESPONSE_BYTES
from mailsync._errors import (
    AuthenticationError,
    ConnectionFailed,
    MailsyncError,
    MessageNotFound,
    MessageTooLarge,
    ProtocolError,
    RateLimited,
    ServerError,
    TemporaryFailure,
)
from mailsync._hints import greeting_problem
from mailsync.protocol import sasl

__all__ = [
    "MAX_COMMAND_LINE",
    "Capabilities",
    "Challenge",
    "Command",
    "Event",
    "Greeting",
    "POP3Connection",
    "Reply",
    "apop_digest",
    "reply_error",
    "trim_to_octets",
]

#: RFC 2449 limits a command line (CRLF included) to 255 octets; RFC 5034 makes a client that
#: would exceed it with an initial response wait for the server's empty challenge instead.
MAX_COMMAND_LINE = 255
#: A status line longer than this is not POP3 (RFC 2449 says 512 octets); refuse to buffer more.
MAX_STATUS_LINE = 64 * 1024

_INITIAL_BUFFER = 1024 * 1024
_READ_HINT = 256 * 1024
_LF = 0x0A

_MULTILINE_ALWAYS = frozenset({"CAPA", "RETR", "TOP"})
_MULTILINE_WITHOUT_ARGS = frozenset({"LIST", "UIDL"})
_PER_MESSAGE = frozenset({"RETR", "TOP", "DELE", "LIST", "UIDL"})
_LOGIN_COMMANDS = frozenset({"USER", "PASS", "APOP", "AUTH"})
#: Commands that may leave a mark a QUIT (or, on some servers, a dropped connection) would
#: commit: DELE marks for deletion; RETR (and on some servers TOP) marks as seen. RSET undoes
#: them all (RFC 1939; Dovecot clears its deleted and seen sets).
_MARKING = frozenset({"RETR", "TOP", "DELE"})
_TERMINATOR = b"\r\n.\r\n"
_TIMESTAMP = re.compile(r"<[^<>\s]+>")
_OCTETS = re.compile(r"^(\d+)\s+octets", re.IGNORECASE)


# -- commands and events ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Command:
    """One command sent to the server.

    Attributes:
        name: The keyword, upper case (``RETR``).
        args: The arguments as sent.
        multiline: Whether a positive reply carries a multi-line body.
    """

    name: str
    args: tuple[str, ...] = ()
    multiline: bool = False

    @classmethod
    def of(cls, name: str, *args: str) -> Command:
        """A command, knowing from RFC 1939/2449 whether its ``+OK`` reply is multi-line.

        Raises:
            ValueError: A keyword or argument that would break the command line.
        """
        name = name.upper()
        if not name.isascii() or not name.isalnum():
            raise ValueError(f"not a POP3 keyword: {name!r}")
        for arg in args:
            if any(ch in arg for ch in "\r\n\0"):
                raise ValueError("POP3 arguments cannot contain CR, LF or NUL")
        multiline = name in _MULTILINE_ALWAYS or (name in _MULTILINE_WITHOUT_ARGS and not args)
        return cls(name, tuple(args), multiline)

    @property
    def line(self) -> bytes:
        """The wire form, CRLF included."""
        return " ".join((self.name, *self.args)).encode("utf-8") + b"\r\n"

    def __repr__(self) -> str:
        # Arguments of login commands are secrets (PASS, APOP digest, AUTH initial response).
        shown = ("...",) if self.name in _LOGIN_COMMANDS and self.args else self.args
        return f"Command({' '.join((self.name, *shown))!r})"


@dataclass(frozen=True, slots=True)
class Greeting:
    """The server's first line.

    Attributes:
        ok: False when the server refuses the connection outright (``-ERR`` greeting).
        text: The rest of the line.
        timestamp: The APOP timestamp (``<1896.697170952@host>``) when the server offers APOP.
    """

    ok: bool
    text: str
    timestamp: str | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    """The complete reply to one command.

    Attributes:
        command: The command answered.
        ok: ``+OK`` (True) or ``-ERR`` (False).
        text: The status text after the indicator and any response code.
        code: The extended response code (``IN-USE``, ``SYS/TEMP``, ``AUTH`` ...), or None.
        data: For a positive multi-line reply: the body, dot-unstuffed, every line ending in
            CRLF exactly as sent (the terminating ``.`` line excluded); else None.
    """

    command: Command
    ok: bool
    text: str
    code: str | None = None
    data: bytes | None = field(default=None, repr=False)

    def lines(self) -> list[str]:
        """The body as text lines (for ``CAPA``, ``LIST``, ``UIDL``)."""
        if not self.data:
            return []
        return self.data.decode("utf-8", "replace").splitlines()

    @property
    def octets(self) -> int | None:
        """The size a ``RETR``/``TOP`` status line announces (``+OK 1234 octets``), if any."""
        match = _OCTETS.match(self.text)
        return int(match.group(1)) if match else None


@dataclass(frozen=True, slots=True)
class Challenge:
    """A SASL continuation (``+ <base64>``) during ``AUTH``.

    Attributes:
        command: The ``AUTH`` command being answered.
        data: The decoded challenge (empty for the empty challenge).
    """

    command: Command
    data: bytes


Event: TypeAlias = Greeting | Reply | Challenge


# -- the connection state machine ------------------------------------------------------------


class POP3Connection:
    """Client-side POP3 framing and the queue of commands awaiting replies.

    Call :meth:`send` (or :meth:`auth`) for each command and write the bytes it returns; feed
    whatever the socket delivers to :meth:`receive`, which returns the events completed so far
    in the order the commands were sent. Several commands may be outstanding (pipelining); the
    caller decides whether the server allows that. :meth:`get_buffer` and
    :meth:`buffer_updated` are the zero-copy alternative to :meth:`receive` (the shape of
    ``asyncio.BufferedProtocol``): the socket reads straight into the parser's buffer.

    A multi-line body normally has to be scanned for its terminator. When the status line
    announces the size (``+OK 51234 octets``, as Dovecot and most servers do), the parser
    waits until that many bytes have arrived and looks for the terminator exactly there: a
    message without dot-stuffing is then framed without scanning it at all. Whenever the
    announcement does not fit (dot-stuffing, a missing final CRLF, a server that counts
    differently), or a read ends at a line end before the announced size is reached (a
    server announcing more than it sends), it falls back to scanning.

    A body is bounded as it arrives: a ``RETR``/``TOP`` body by ``max_message`` (refused
    from its announced size before it is read, else as soon as that much has arrived, so a
    server that never sends the terminator cannot make the buffer grow without end), any
    other (``LIST``, ``UIDL``, ``CAPA``) by :data:`~mailsync._config.MAX_RESPONSE_BYTES`.
    Past the bound the connection is out of step (:class:`~mailsync.MessageTooLarge`).

    Args:
        greeting: Whether the server's greeting is still to come (False for tests that start
            mid-session).
        max_message: The largest message accepted, in bytes (``max_message_size``); None:
            no limit.
    """

    def __init__(self, *, greeting: bool = True, max_message: int | None = None) -> None:
        self.max_message = max_message
        self._body_limit: int | None = None
        self._buffer = bytearray(_INITIAL_BUFFER)
        self._start = 0  # first byte not yet parsed
        self._end = 0  # end of the bytes received
        self._pending: deque[Command] = deque()
        self._greeted = not greeting
        # While a multi-line body is arriving: its status, where it starts in the buffer,
        # how far it has been scanned, and the size announced for it.
        self._body_status: tuple[str, str | None] | None = None
        self._body_start = 0
        self._scan = 0
        self._announced: int | None = None
        self._line_end = False
        self._broken = False
        self._marked = False

    @property
    def pending(self) -> int:
        """How many commands still await their reply."""
        return len(self._pending)

    @property
    def greeted(self) -> bool:
        """Whether the greeting has arrived."""
        return self._greeted

    @property
    def idle(self) -> bool:
        """True when nothing is outstanding and no partial reply is buffered."""
        return not self._pending and self._start == self._end and self._greeted

    @property
    def marked(self) -> bool:
        """Whether the session may hold marks: a ``RETR``, ``TOP`` or ``DELE`` was sent and
        no ``RSET`` sent after it has been answered ``+OK`` yet."""
        return self._marked

    def send(self, name: str, *args: str) -> bytes:
        """Queue a command and return its bytes to write.

        Raises:
            ValueError: An argument with CR, LF or NUL.
        """
        command = Command.of(name, *args)
        self._pending.append(command)
        if command.name in _MARKING:
            self._marked = True
        return command.line

    def auth(self, exchange: sasl.Exchange) -> bytes:
        """Queue ``AUTH`` for a SASL exchange and return the command bytes.

        The initial response goes on the ``AUTH`` line when the line stays within 255
        octets (RFC 5034), else in answer to the server's empty challenge.
        """
        mechanism = exchange.mechanism

        def fits(argument: str) -> bool:
            return len(f"AUTH {mechanism} {argument}\r\n") <= MAX_COMMAND_LINE

        initial = exchange.initial(fits)
        return self.send("AUTH", mechanism, *(() if initial is None else (initial,)))

    def answer(self, response: str) -> bytes:
        """The bytes of a line answering a :class:`Challenge` (not a new command).

        Raises:
            ProtocolError: No ``AUTH`` is waiting for an answer.
        """
        if not self._pending or self._pending[0].name != "AUTH":
            raise ProtocolError("no AUTH exchange is in progress")
        return response.encode("ascii") + b"\r\n"

    def check_tls_start(self) -> None:
        """Call after the ``+OK`` to ``STLS``, before the handshake.

        Raises:
            ProtocolError: Bytes arrived after the reply: they would be read as if they had
                come over TLS (the STARTTLS command injection attack), so refuse.
        """
        if self._start != self._end or self._pending:
            raise ProtocolError("the server sent data after its STLS reply; refusing TLS upgrade")

    def receive(self, data: bytes) -> list[Event]:
        """Feed bytes from the server; return every event they complete, in order.

        Raises:
            ProtocolError: The server sent something that is not POP3.
            ConnectionFailed: The server announced it is closing the connection.
        """
        with self.get_buffer(len(data)) as view:
            view[: len(data)] = data
        return self.buffer_updated(len(data))

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """Writable space for the next read (at least ``sizehint`` bytes when given).

        Release the view (or let it go) before calling this again; then report how many
        bytes were written with :meth:`buffer_updated`.
        """
        self._reserve(sizehint if sizehint > 0 else _READ_HINT)
        return memoryview(self._buffer)[self._end :]

    def buffer_updated(self, nbytes: int) -> list[Event]:
        """Account for ``nbytes`` written into the last :meth:`get_buffer` view; parse.

        Raises:
            ProtocolError: The server sent something that is not POP3.
            ConnectionFailed: The server announced it is closing the connection.
        """
        if self._broken:
            raise ProtocolError("the POP3 connection is out of step after an earlier error")
        self._end += nbytes
        self._line_end = nbytes > 0 and self._buffer[self._end - 1] == _LF
        events: list[Event] = []
        pos = self._start
        try:
            while True:
                event, pos = self._next_event(pos)
                if event is None:
                    break
                events.append(event)
        except MailsyncError:
            self._broken = True
            raise
        finally:
            self._start = pos
            if pos == self._end:  # all consumed: start over at the front, for free
                self._start = self._end = 0
                self._body_start = max(0, self._body_start - pos)
                self._scan = max(0, self._scan - pos)
                if len(self._buffer) > 4 * _INITIAL_BUFFER:
                    # One huge message grew the buffer: give the memory back.
                    self._buffer = bytearray(_INITIAL_BUFFER)
        return events

    def receive_eof(self) -> None:
        """Tell the core the server closed the connection.

        Raises:
            ConnectionFailed: Replies were still outstanding (or half received).
        """
        if self._pending or self._start != self._end or not self._greeted:
            waiting = self._pending[0].name if self._pending else "the greeting"
            self._broken = True
            raise ConnectionFailed(
                f"the POP3 server closed the connection while awaiting {waiting}"
            )

    # -- the buffer --------------------------------------------------------------------------

    def _reserve(self, size: int) -> None:
        """Make room for ``size`` more bytes: move unparsed bytes to the front, else grow."""
        if len(self._buffer) - self._end >= size:
            return
        shift = self._start
        if shift:
            length = self._end - shift
            with memoryview(self._buffer) as view:
                view[:length] = view[shift : self._end]
            self._start, self._end = 0, length
            self._body_start = max(0, self._body_start - shift)
            self._scan = max(0, self._scan - shift)
        missing = size - (len(self._buffer) - self._end)
        if missing > 0:
            self._buffer.extend(bytes(max(missing, len(self._buffer))))

    # -- parsing -----------------------------------------------------------------------------

    def _next_event(self, pos: int) -> tuple[Event | None, int]:
        if self._body_status is not None:
            return self._next_body(pos)
        if pos >= self._end:
            return None, pos
        end = self._buffer.find(b"\n", pos, self._end)
        if end < 0:
            if self._end - pos > MAX_STATUS_LINE:
                raise ProtocolError("the POP3 server sent an overlong line without CRLF")
            return None, pos
        line = bytes(self._buffer[pos:end]).rstrip(b"\r").decode("utf-8", "replace")
        return self._status_line(line, end + 1)

    def _status_line(self, line: str, after: int) -> tuple[Event | None, int]:
        if not self._greeted:
            self._greeted = True
            return _greeting(line), after
        if not self._pending:
            if _indicator(line) is False:
                raise ConnectionFailed(f"the POP3 server is closing the connection: {line[:200]}")
            raise ProtocolError(f"unsolicited POP3 reply: {line[:80]!r}")
        command = self._pending[0]
        ok = _indicator(line)
        if ok is None:
            return self._continuation(command, line), after
        text = line.split(" ", 1)[1] if " " in line else ""
        code, text = _split_code(text)
        if ok and command.multiline:
            self._body_status = (text, code)
            self._body_start = self._scan = after
            match = _OCTETS.match(text)
            self._announced = int(match.group(1)) if match else None
            is_message = command.name in ("RETR", "TOP")
            self._body_limit = self.max_message if is_message else MAX_RESPONSE_BYTES
            if self._announced is not None:
                self._check_size(self._announced)
            return self._next_body(after)
        self._pending.popleft()
        if ok and command.name == "RSET":
            # Replies come in order: what is still pending was sent after this RSET.
            self._marked = any(c.name in _MARKING for c in self._pending)
        return Reply(command, ok, text, code), after

    def _continuation(self, command: Command, line: str) -> Challenge:
        if command.name != "AUTH" or not (line == "+" or line.startswith("+ ")):
            raise ProtocolError(f"unexpected POP3 reply to {command.name}: {line[:80]!r}")
        try:
            data = base64.b64decode(line[2:].strip(), validate=True)
        except ValueError as exc:
            raise ProtocolError("the POP3 server sent a challenge that is not base64") from exc
        return Challenge(command, data)

    def _check_size(self, size: int) -> None:
        limit = self._body_limit
        if limit is None or size <= limit:
            return
        command = self._pending[0]
        what = f"{command.name} {' '.join(command.args)}".strip()
        raise MessageTooLarge(
            f"the reply to {what} is over {limit} bytes ({size} announced or received): refused",
            size=size,
            limit=limit,
        )

    def _next_body(self, pos: int) -> tuple[Event | None, int]:
        start, end, buffer = self._body_start, self._end, self._buffer
        if end - start < 3:
            return None, pos
        # Once per read: the body (and at most its terminator) must fit the limit.
        limit = self._body_limit
        if limit is not None and end - start > limit + len(_TERMINATOR):
            self._check_size(end - start - len(_TERMINATOR))
        if buffer[start : start + 3] == b".\r\n":  # a first line "." can only be the end
            return self._body_done(b"", start + 3)
        framed = self._frame_by_size(start)
        if framed is not None:
            return framed
        if self._announced is not None:
            return None, pos  # wait for the announced size
        # Scan only what has not been scanned: linear however the bytes are chunked.
        hit = buffer.find(_TERMINATOR, self._scan, end)
        if hit < 0:
            self._scan = max(start, end - len(_TERMINATOR) + 1)
            return None, pos
        with memoryview(buffer) as view:
            body = bytes(view[start : hit + 2])
        return self._body_done(_unstuff(body), hit + len(_TERMINATOR))

    def _frame_by_size(self, start: int) -> tuple[Event | None, int] | None:
        """Frame the body by its announced size; None when that is not (or no longer) fit."""
        size = self._announced
        if size is None:
            return None
        stop = start + size
        if size < 2 or self._end >= stop + 3:
            self._announced = None  # from here on: scan
            if size >= 2 and self._buffer[stop - 2 : stop + 3] == _TERMINATOR:
                with memoryview(self._buffer) as view:
                    body = bytes(view[start:stop])
                # No room for stuffed dots: they would have pushed the terminator further.
                return self._body_done(body, stop + 3)
            return None
        if self._line_end:
            # The read stopped at a line end short of the announced size: the server may have
            # announced more than it sends, so look for the terminator in what is here.
            hit = self._buffer.find(_TERMINATOR, self._scan, self._end)
            if hit >= 0:
                self._announced = None
                return None
            self._scan = max(start, self._end - len(_TERMINATOR) + 1)
        return None, start

    def _body_done(self, body: bytes, after: int) -> tuple[Event, int]:
        assert self._body_status is not None
        text, code = self._body_status
        self._body_status = None
        self._announced = None
        command = self._pending.popleft()
        return Reply(command, True, text, code, body), after


def _indicator(line: str) -> bool | None:
    head = line.split(" ", 1)[0].upper()
    if head == "+OK":
        return True
    if head == "-ERR":
        return False
    return None


def _greeting(line: str) -> Greeting:
    ok = _indicator(line)
    if ok is None:
        raise ProtocolError(greeting_problem("POP3", line))
    text = line.split(" ", 1)[1] if " " in line else ""
    match = _TIMESTAMP.search(text) if ok else None
    return Greeting(ok, text, match.group(0) if match else None)


def _split_code(text: str) -> tuple[str | None, str]:
    if not text.startswith("["):
        return None, text
    close = text.find("]")
    if close < 0:
        return None, text
    return text[1:close].upper(), text[close + 1 :].strip()


def _unstuff(body: bytes) -> bytes:
    # RFC 1939: a line starting with "." was sent with another "." in front.
    if body.startswith(b".."):
        body = body[1:]
    return body.replace(b"\r\n..", b"\r\n.")


def trim_to_octets(data: bytes, octets: int | None) -> bytes:
    """Undo the CRLF a server adds to a message whose last line had none.

    A multi-line response can only end in CRLF, so a message stored without a final line
    break comes back two bytes longer than the size the server announced; when the sizes say
    exactly that, the added CRLF is dropped and the bytes are the stored ones again.

    Args:
        data: The unstuffed ``RETR`` body.
        octets: The size the status line (or ``LIST``) announced, if any.
    """
    if octets is not None and len(data) == octets + 2 and data.endswith(b"\r\n"):
        return data[:-2]
    return data


# -- capabilities ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Capabilities:
    """What a ``CAPA`` reply (RFC 2449) says the server offers.

    Attributes:
        names: Capability name (upper case) -> its arguments.
    """

    names: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def parse(cls, lines: Iterable[str]) -> Capabilities:
        """Parse the lines of a ``CAPA`` body."""
        names: dict[str, tuple[str, ...]] = {}
        for line in lines:
            words = line.split()
            if words:
                names[words[0].upper()] = tuple(words[1:])
        return cls(names)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.upper() in self.names

    def __bool__(self) -> bool:
        return bool(self.names)

    @property
    def pipelining(self) -> bool:
        """Commands may be sent without waiting for replies."""
        return "PIPELINING" in self.names

    @property
    def uidl(self) -> bool:
        """``UIDL`` gives every message a persistent id."""
        return "UIDL" in self.names

    @property
    def top(self) -> bool:
        """``TOP`` returns headers and the first lines of the body."""
        return "TOP" in self.names

    @property
    def stls(self) -> bool:
        """``STLS`` upgrades the connection to TLS (RFC 2595)."""
        return "STLS" in self.names

    @property
    def user(self) -> bool:
        """``USER``/``PASS`` login is offered."""
        return "USER" in self.names

    @property
    def resp_codes(self) -> bool:
        """Replies carry extended response codes."""
        return "RESP-CODES" in self.names

    @property
    def auth_resp_code(self) -> bool:
        """A failed login caused by the credentials says ``[AUTH]`` (RFC 3206)."""
        return "AUTH-RESP-CODE" in self.names

    @property
    def sasl(self) -> tuple[str, ...]:
        """The SASL mechanisms offered for ``AUTH``, upper case."""
        return tuple(m.upper() for m in self.names.get("SASL", ()))

    @property
    def login_delay(self) -> int | None:
        """Seconds the server wants between logins (``LOGIN-DELAY``), if it says."""
        args = self.names.get("LOGIN-DELAY", ())
        return int(args[0]) if args and args[0].isdigit() else None


# -- errors ----------------------------------------------------------------------------------


def reply_error(
    reply: Reply,
    *,
    context: str = "",
    auth_resp_code: bool = False,
    login_delay: float | None = None,
) -> MailsyncError:
    """The mailsync error for a ``-ERR`` reply, from its response code and command.

    Args:
        reply: The negative reply.
        context: Prefixed to the message, e.g. ``"POP3 127.0.0.1:110"``.
        auth_resp_code: The server offers ``AUTH-RESP-CODE``, so a login failure without
            ``[AUTH]`` is not about the credentials.
        login_delay: The server's ``LOGIN-DELAY`` in seconds, for ``[LOGIN-DELAY]``.
    """
    name = reply.command.name
    what = f"{context}: {name}" if context else name
    text = reply.text or "no reason given"
    code = reply.code
    if code == "IN-USE":
        return TemporaryFailure(
            f"{what} refused: the mailbox is locked by another POP3 session ({text}); "
            "retry once that session has ended",
            code=code,
        )
    if code == "LOGIN-DELAY":
        return RateLimited(
            f"{what} refused: logged in again too soon ({text})",
            retry_after=login_delay,
            code=code,
        )
    if code == "SYS/TEMP":
        return TemporaryFailure(f"{what} failed temporarily: {text}", code=code)
    if code == "SYS/PERM":
        return ServerError(f"{what} failed: {text}", code=code)
    if code == "AUTH" or (name in _LOGIN_COMMANDS and not auth_resp_code):
        return AuthenticationError(f"{what} refused: {text}")
    if name in _LOGIN_COMMANDS:
        return ServerError(f"{what} refused for a reason other than the credentials: {text}")
    if name in _PER_MESSAGE and reply.command.args:
        return MessageNotFound(f"{what} {reply.command.args[0]} failed: {text}", code=code)
    return ServerError(f"{what} failed: {text}", code=code)


# -- authentication --------------------------------------------------------------------------


def apop_digest(timestamp: str, secret: str) -> str:
    """The APOP digest (RFC 1939): hex MD5 of the greeting's timestamp followed by the secret."""
    # MD5 is what the protocol defines; it is not used here for anything else.
    return hashlib.md5((timestamp + secret).encode("utf-8"), usedforsecurity=False).hexdigest()
