"""POP3 and POP3S retrievers, sync and async, over the sans-I/O core in
:mod:`mailsync.protocol.pop3`.

The session logic (login, listing, pipelined retrieval, delete-then-QUIT) is written once as
*plans*: generators that yield what they need done (write these bytes, read some, start TLS,
hand this message to the caller) and never touch a socket. :class:`POP3Retriever` drives them
over a blocking socket, :class:`AsyncPOP3Retriever` over an asyncio ``BufferedProtocol``
(natively, not on a thread), so both behave identically.

What POP3 is, and how the Retriever API maps onto it honestly:

- One folder (``INBOX``), no flags, no server-side search: ``folders()`` returns only INBOX,
  queries are evaluated client-side, ``move``/``set_flags``/``append`` raise ``Unsupported``.
- A login sees a snapshot of the maildrop: new mail shows only after logging in again. Every
  ``messages()``/``sync()`` therefore starts from a fresh login, unless the server's
  ``LOGIN-DELAY`` forbids logging in again that soon (then the open session is reused).
- Message ids are the ``UIDL`` values. A server without UIDL gets ids (and sync identities)
  from a digest of the header block and the size.
- Retrieval pipelines ``RETR``/``TOP`` in bounded windows when the server offers PIPELINING
  (RFC 2449), so a download is not one round trip per message and memory stays flat.
- Reading has no side effects: every retrieval is followed by ``RSET``, and a session that
  may still hold marks (a RETR/TOP/DELE after the last RSET the server confirmed) ends with
  ``RSET`` before ``QUIT`` (Dovecot, for one, otherwise marks retrieved messages ``\\Seen``
  for IMAP clients, even when the connection just drops). Only a connection lost in the
  middle of a retrieval can leave such marks behind; that is the server's doing.
- The CAPA after login shares a write with the first commands of the transaction when the
  server offered PIPELINING before login (see :func:`_open_plan`).
- ``delete()`` marks with ``DELE``, which POP3 applies only when ``QUIT`` succeeds; it runs in
  its own session ending with that QUIT, and reports nothing deleted unless QUIT said ``+OK``.
- ``watch()`` polls by logging in again, never more often than ``LOGIN-DELAY`` allows.
- ``timeout`` bounds every wait for the server, and a stalled server costs one of them: when
  the previous session leaves its RSET/QUIT unanswered, the call raises ``MailTimeout`` instead
  of waiting once more for a new login's greeting, and a connection that failed or timed out is
  dropped without waiting for a TLS goodbye.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket
import ssl
import time
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Sequence,
)
from dataclasses import dataclass, field
from typing import Any, Generic, TypeAlias, TypeVar

from mailsync._base import AsyncRetriever, MessageRef, Retriever, SyncStep, message_refs
from mailsync._config import Endpoint
from mailsync._errors import (
    ConfigError,
    ConnectionFailed,
    FolderNotFound,
    MailsyncError,
    MailTimeout,
    MessageNotFound,
    ProtocolError,
    ServerError,
    Unsupported,
    map_exceptions,
)
from mailsync._message import Folder, Message, header_block
from mailsync._query import Q
from mailsync.protocol import sasl
from mailsync.protocol.pop3 import (
    Capabilities,
    Challenge,
    Event,
    Greeting,
    POP3Connection,
    Reply,
    apop_digest,
    reply_error,
    trim_to_octets,
)

__all__ = ["AsyncPOP3Retriever", "POP3Retriever"]

log = logging.getLogger("mailsync.pop3")

T = TypeVar("T")
IO = TypeVar("IO")

#: At most this many RETR/TOP commands in flight ...
_WINDOW_COMMANDS = 64
#: ... announcing at most this many bytes (LIST sizes): what may sit unread in buffers.
_WINDOW_BYTES = 8 * 1024 * 1024
#: The window is refilled once it has drained to this many commands, in one write.
_WINDOW_LOW = _WINDOW_COMMANDS // 2
_CAPABILITIES = frozenset({"delete"})
#: Seconds a closing TLS stream may take to say goodbye before the socket is dropped (never
#: more than the read timeout).
_CLOSE_GRACE = 1.0
_TRUE = frozenset({"1", "true", "yes", "on"})
#: The SASL mechanisms a POP3 password logs in with; USER/PASS takes LOGIN's place.
_SASL_PASSWORD = ("PLAIN",)


# -- plans: the session logic, free of I/O ---------------------------------------------------


class _Read:
    """Ask the driver for the next events from the server (at least one)."""


class _StartTLS:
    """Ask the driver to wrap the connection in TLS now."""


@dataclass(frozen=True, slots=True)
class _Write:
    data: bytes


@dataclass(frozen=True, slots=True)
class _Emit:
    item: Any


_READ = _Read()
_START_TLS = _StartTLS()
_Action: TypeAlias = _Read | _StartTLS | _Write | _Emit
#: A plan yields actions, is sent the events read (nothing after other actions), returns a value.
Plan: TypeAlias = Generator[_Action, list[Event], T]
_NOTHING: list[Event] = []


@dataclass(frozen=True, slots=True)
class _Entry:
    """One message of the maildrop as listed in this session."""

    number: int
    uid: str | None
    size: int


@dataclass
class _State:
    """What a plan needs to know about its session."""

    context: str
    conn: POP3Connection = field(default_factory=POP3Connection)
    events: deque[Event] = field(default_factory=deque)
    caps: Capabilities = field(default_factory=Capabilities)
    greeting: Greeting | None = None
    #: The post-login CAPA is still to be sent: it goes in front of the next command group
    #: (see :func:`_open_plan`).
    capa_due: bool = False
    #: That CAPA was sent and its reply, the next one to arrive, is still to be taken.
    capa_awaited: bool = False
    #: Told the capabilities of the logged-in session once they are known (then dropped, so
    #: the session does not keep its owner alive).
    on_login_caps: Callable[[Capabilities], None] | None = None

    @property
    def idle(self) -> bool:
        """Nothing outstanding, nothing half read, no reply parsed but not yet taken."""
        return self.conn.idle and not self.events

    def error(self, reply: Reply) -> MailsyncError:
        return reply_error(
            reply,
            context=self.context,
            auth_resp_code=self.caps.auth_resp_code,
            login_delay=self.caps.login_delay,
        )


def _next_event(state: _State) -> Plan[Event]:
    while not state.events:
        state.events.extend((yield _READ))
    return state.events.popleft()


def _next_reply(state: _State) -> Plan[Reply]:
    """The next reply; a post-login CAPA sent in front of it is taken (and applied) first."""
    while True:
        event = yield from _next_event(state)
        if not isinstance(event, Reply):
            raise ProtocolError(
                f"{state.context}: unexpected {type(event).__name__} from the server"
            )
        if not (state.capa_awaited and event.command.name == "CAPA"):
            return event
        state.capa_awaited = False
        _learn_login_capabilities(state, event)


def _send(state: _State, *commands: tuple[str, ...]) -> _Write:
    """One write for a group of commands, led by the post-login CAPA while that is due."""
    lead = b""
    if state.capa_due:
        state.capa_due, state.capa_awaited = False, True
        lead = state.conn.send("CAPA")
    return _Write(lead + b"".join(state.conn.send(name, *args) for name, *args in commands))


def _command(state: _State, name: str, *args: str) -> Plan[Reply]:
    """Send one command, wait for its reply, raise the translated error on ``-ERR``."""
    yield _send(state, (name, *args))
    reply = yield from _next_reply(state)
    if not reply.ok:
        raise state.error(reply)
    return reply


def _commands(state: _State, *commands: tuple[str, ...]) -> Plan[list[Reply]]:
    """Send several commands (in one write when the server pipelines); return every reply."""
    if not state.caps.pipelining:
        replies = []
        for command in commands:
            yield _send(state, command)
            replies.append((yield from _next_reply(state)))
        return replies
    yield _send(state, *commands)
    replies = []
    for _ in commands:
        replies.append((yield from _next_reply(state)))
    return replies


def _capabilities(state: _State) -> Plan[Capabilities]:
    reply = yield from _command_reply(state, "CAPA")
    return _parsed_capabilities(reply)


def _command_reply(state: _State, name: str) -> Plan[Reply]:
    """Send one command and return its reply, ``-ERR`` included."""
    yield _send(state, (name,))
    return (yield from _next_reply(state))


def _parsed_capabilities(reply: Reply) -> Capabilities:
    # A server that refuses CAPA is treated as offering nothing beyond RFC 1939.
    return Capabilities.parse(reply.lines()) if reply.ok else Capabilities()


def _learn_login_capabilities(state: _State, reply: Reply) -> None:
    """Apply the post-login CAPA reply: to the session, and once to its owner's policy."""
    state.caps = _parsed_capabilities(reply)
    notify, state.on_login_caps = state.on_login_caps, None
    if notify is not None:
        notify(state.caps)


def _open_plan(state: _State, endpoint: Endpoint) -> Plan[None]:
    """Greeting, CAPA, STLS when asked (failing closed), login, CAPA again.

    RFC 2449 lets capabilities change at login (LOGIN-DELAY, EXPIRE, PIPELINING often do), so
    CAPA is asked again after it. Its section 5 also says a capability of the AUTHORIZATION
    state is announced in the TRANSACTION state too: a server that pipelined before login
    still does after it. Then that CAPA is not a round trip of its own: it is left due, goes
    in the write of the first command group of the transaction (UIDL and LIST), and its reply,
    the first to come back, is applied before theirs are read (:func:`_next_reply`). Without
    PIPELINING before login it is asked here, alone, as the server may not pipeline yet.
    """
    greeting = yield from _next_event(state)
    assert isinstance(greeting, Greeting)
    if not greeting.ok:
        raise ConnectionFailed(f"{state.context}: the server refused the session: {greeting.text}")
    state.greeting = greeting
    state.caps = yield from _capabilities(state)
    if endpoint.tls == "starttls":
        if not state.caps.stls:
            raise ConnectionFailed(
                f"{state.context}: the server does not offer STLS, and tls='starttls' requires "
                "TLS; refusing to log in in plaintext (pass tls='none' to allow that)"
            )
        yield from _command(state, "STLS")
        state.conn.check_tls_start()
        yield _START_TLS
        state.caps = yield from _capabilities(state)  # RFC 2595: forget pre-TLS capabilities
    yield from _login_plan(state, endpoint)
    if state.caps.pipelining:
        state.capa_due = True
        return
    reply = yield from _command_reply(state, "CAPA")
    _learn_login_capabilities(state, reply)


def _login_plan(state: _State, endpoint: Endpoint) -> Plan[None]:
    """Log in: a token with SASL (OAUTHBEARER or XOAUTH2), a password with APOP when asked,
    ``AUTH PLAIN`` when offered, else ``USER``/``PASS`` (see :mod:`mailsync.protocol.sasl`)."""
    user = endpoint.username
    if not user:
        raise ConfigError(f"{endpoint.display}: POP3 needs a user name in the URL")
    if any(ch in user for ch in "\r\n\0"):
        raise ConfigError("the POP3 user name cannot contain CR, LF or NUL")
    # A server without the SASL capability may still take AUTH: it just does not say.
    offered = state.caps.sasl or None
    if endpoint.token is not None:
        token = endpoint.token.fresh()
        mechanism = sasl.choose(offered, token=True)
        if mechanism is None:
            raise sasl.no_mechanism(state.context, offered, token=True)
        exchange = sasl.exchange(mechanism, user, token, host=endpoint.host, port=endpoint.port)
        yield from _sasl_plan(state, exchange)
        return
    if endpoint.password is None:
        raise ConfigError(f"{endpoint.display}: POP3 needs a password or a token")
    password = endpoint.password.reveal()
    if any(ch in password for ch in "\r\n\0"):
        raise ConfigError("a POP3 password cannot contain CR, LF or NUL")
    if str(endpoint.params.get("apop", "")).lower() in _TRUE:
        yield from _apop_plan(state, user, password)
    elif sasl.choose(offered, token=False, usable=_SASL_PASSWORD) is not None:
        yield from _sasl_plan(state, sasl.exchange("PLAIN", user, password))
    else:
        yield from _command(state, "USER", user)
        yield from _command(state, "PASS", password)


def _apop_plan(state: _State, user: str, password: str) -> Plan[None]:
    timestamp = state.greeting.timestamp if state.greeting else None
    if timestamp is None:
        raise Unsupported(
            f"{state.context}: APOP was asked for, but the server does not offer it "
            "(no timestamp in its greeting)"
        )
    yield from _command(state, "APOP", user, apop_digest(timestamp, password))


def _sasl_plan(state: _State, exchange: sasl.Exchange) -> Plan[None]:
    yield _Write(state.conn.auth(exchange))
    while True:
        event = yield from _next_event(state)
        if isinstance(event, Challenge):
            yield _Write(state.conn.answer(sasl.encode(exchange.respond(event.data))))
            continue
        assert isinstance(event, Reply)
        if not event.ok:
            raise state.error(event)
        return


def _listing_plan(state: _State) -> Plan[list[_Entry]]:
    """The maildrop as ``(number, UIDL, size)``; UIDL is None when the server has none."""
    uidl, listing = yield from _commands(state, ("UIDL",), ("LIST",))
    if not listing.ok:
        raise state.error(listing)
    sizes = _numbered(listing, state.context)
    uids = _numbered(uidl, state.context) if uidl.ok else {}
    return [
        _Entry(number, uids.get(number), _as_size(size, state.context))
        for number, size in sorted(sizes.items())
    ]


def _numbered(reply: Reply, context: str) -> dict[int, str]:
    result: dict[int, str] = {}
    for line in reply.lines():
        number, _, value = line.strip().partition(" ")
        if not number.isdigit() or not value.strip():
            raise ProtocolError(f"{context}: malformed {reply.command.name} line {line[:80]!r}")
        result[int(number)] = value.strip().split(" ", 1)[0]
    return result


def _as_size(value: str, context: str) -> int:
    if not value.isdigit():
        raise ProtocolError(f"{context}: LIST gave a size that is not a number: {value[:40]!r}")
    return int(value)


def _fetch_plan(
    state: _State, entries: Sequence[_Entry], *, top: bool, reset: bool = True
) -> Plan[None]:
    """RETR (or ``TOP n 0``) every entry, emitting ``(entry, reply)`` in order.

    With PIPELINING the commands go out in windows bounded by count and announced size,
    refilled in one write whenever half the window has been answered; without it, one at a
    time. ``RSET`` rides along with the last window, so that a connection lost later (or a
    server that never sees QUIT) does not leave retrieved messages marked.
    """
    pipelined = state.caps.pipelining
    in_flight: deque[_Entry] = deque()
    in_flight_bytes = 0
    position = 0
    reset_sent = False
    while position < len(entries) or in_flight:
        batch: list[bytes] = []
        refill = not in_flight or (pipelined and len(in_flight) <= _WINDOW_LOW)
        while refill and position < len(entries):
            if in_flight and (
                not pipelined
                or len(in_flight) >= _WINDOW_COMMANDS
                or in_flight_bytes >= _WINDOW_BYTES
            ):
                break
            entry = entries[position]
            position += 1
            args = ("TOP", str(entry.number), "0") if top else ("RETR", str(entry.number))
            batch.append(state.conn.send(*args))
            in_flight.append(entry)
            in_flight_bytes += entry.size
        if reset and pipelined and position == len(entries) and batch:
            batch.append(state.conn.send("RSET"))
            reset_sent = True
        if batch:
            yield _Write(b"".join(batch))
        reply = yield from _next_reply(state)
        entry = in_flight.popleft()
        in_flight_bytes -= entry.size
        if not reply.ok:
            error = state.error(reply)
            if not isinstance(error, MessageNotFound):
                raise error
            log.debug("%s: message %d vanished: %s", state.context, entry.number, reply.text)
            continue
        yield _Emit((entry, reply))
    if reset_sent:
        yield from _next_reply(state)
    elif reset and entries:
        yield from _command(state, "RSET")


def _drain_plan(state: _State) -> Plan[None]:
    """Read and drop the replies still outstanding (a stream the caller left early), then
    RSET, so that the messages retrieved are not marked when the session ends."""
    state.events.clear()
    while state.conn.pending:
        yield _READ
    state.events.clear()
    yield from _command(state, "RSET")


def _delete_plan(state: _State, ids: Sequence[str]) -> Plan[None]:
    """DELE every message, then QUIT: POP3 removes them only if QUIT succeeds."""
    yield from _command(state, "RSET")  # so QUIT commits nothing but these DELEs
    entries = yield from _listing_plan(state)
    numbers = yield from _resolve_ids(state, entries, ids)
    refused: list[Reply] = []
    for first in range(0, len(numbers), _WINDOW_COMMANDS):
        batch = numbers[first : first + _WINDOW_COMMANDS]
        replies = yield from _commands(state, *(("DELE", str(n)) for n in batch))
        refused += [reply for reply in replies if not reply.ok]
    if refused:
        yield from _commands(state, ("RSET",), ("QUIT",))
        raise _not_deleted(state.error(refused[0]), "a DELE was refused; nothing was deleted")
    try:
        yield _Write(state.conn.send("QUIT"))
        reply = yield from _next_reply(state)
    except MailsyncError as exc:
        raise _not_deleted(
            exc,
            "the connection failed before the server confirmed QUIT, and POP3 applies DELE "
            "only at a successful QUIT: the messages are reported not deleted (should the "
            "server have committed just before the failure, they are gone; messages() shows "
            "which)",
        ) from exc
    if not reply.ok:
        raise _not_deleted(
            state.error(reply),
            "QUIT failed, and POP3 then leaves some or all of the messages in place: none is "
            "reported deleted (messages() shows which remain)",
        )


def _not_deleted(error: MailsyncError, why: str) -> MailsyncError:
    """The same kind of error, its message saying what became of the deletion."""
    message = f"{error}; {why}"
    if isinstance(error, ServerError):
        return type(error)(message, code=error.code)
    return type(error)(message)


def _resolve_ids(state: _State, entries: list[_Entry], ids: Sequence[str]) -> Plan[list[int]]:
    """Message numbers for ids, all found or MessageNotFound before anything is changed."""
    by_id = yield from _index_plan(state, entries, ids)
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise MessageNotFound(f"{state.context}: no message {missing[0]!r} in the maildrop")
    return [by_id[i].number for i in dict.fromkeys(ids)]


def _index_plan(
    state: _State, entries: list[_Entry], ids: Iterable[str]
) -> Plan[dict[str, _Entry]]:
    """Map message ids to entries: UIDLs directly, header digests by fetching headers."""
    found = {entry.uid: entry for entry in entries if entry.uid is not None}
    if not any(i.startswith("hdr:") and i not in found for i in ids):
        return found
    headless = [entry for entry in entries if entry.uid is None]

    def note(item: tuple[_Entry, Reply]) -> None:
        entry, reply = item
        found[_digest_id(reply.data or b"", entry.size)] = entry

    yield from _for_each(_fetch_plan(state, headless, top=state.caps.top, reset=False), note)
    return found


def _for_each(plan: Plan[None], handle: Callable[[Any], None]) -> Plan[None]:
    """Run a sub-plan, handing each value it emits to ``handle`` instead of the caller."""
    value: list[Event] | None = None
    while True:
        try:
            action = _advance(plan, value, None)
        except StopIteration:
            return
        if isinstance(action, _Emit):
            handle(action.item)
            value = _NOTHING
            continue
        value = yield action


def _digest_id(data: bytes, size: int) -> str:
    """The id/identity of a message on a server without UIDL: its header block and size."""
    digest = hashlib.sha256(header_block(data) + b"\0" + str(size).encode()).hexdigest()
    return "hdr:" + digest[:40]


def _close_plan(state: _State) -> Plan[None]:
    """Leave politely: RSET (so nothing read ends up marked) and QUIT.

    The RSET is left out when the session holds no marks: no RETR/TOP/DELE went out after
    the last RSET the server confirmed (a retrieval's own trailing RSET, usually). Then a
    QUIT commits nothing, and neither does a connection lost before it.
    """
    state.events.clear()  # replies parsed but never taken (a stream left early)
    if state.conn.marked:
        yield from _commands(state, ("RSET",), ("QUIT",))
    else:
        yield from _commands(state, ("QUIT",))


# -- turning replies into messages -----------------------------------------------------------


def _message(entry: _Entry, reply: Reply, *, top: bool) -> Message:
    data = reply.data or b""
    if top:
        raw = header_block(data)
        return Message(
            raw,
            id=entry.uid or _digest_id(raw, entry.size),
            uid=entry.uid,
            size=entry.size,
            headers_only=True,
        )
    octets = reply.octets if reply.octets is not None else entry.size
    raw = trim_to_octets(data, octets)
    return Message(raw, id=entry.uid or _digest_id(raw, entry.size), uid=entry.uid)


def _usable_after(outcome: BaseException | None) -> bool:
    """Whether a session may be kept after a stream ended this way (None: it ran out).

    Leaving early (``GeneratorExit``) or a ``-ERR`` leaves the session in step once the
    outstanding replies are read; a broken, timed-out or garbled connection does not, and
    waiting for its replies would only wait for another timeout.
    """
    return outcome is None or isinstance(outcome, GeneratorExit | ServerError)


def _raise_if_silent(error: MailsyncError | None) -> None:
    """Raise the timeout met while closing the previous session, rather than log in again.

    That session's RSET/QUIT went unanswered for a whole read timeout: the server has stopped
    answering, and a new login would only wait one more timeout for its greeting (and a server
    that locks the maildrop would refuse it while the old session holds the lock). Going on
    turned ``timeout=1.0`` into a ``MailTimeout`` after two seconds (three over TLS, with the
    close grace). The old connection is dropped by now; the next call logs in afresh.
    """
    if isinstance(error, MailTimeout):
        raise error


def _no_answer(endpoint: Endpoint) -> MailTimeout:
    return MailTimeout(
        f"{endpoint.display}: no answer from the server within {endpoint.timeout.read:g} s"
    )


def _check_folder(folder: str) -> None:
    if folder.upper() != "INBOX":
        raise FolderNotFound(f"POP3 has only the INBOX, not {folder!r}")


def _identity(message: Message) -> str:
    return f"uidl:{message.uid}" if message.uid is not None else message.id


@dataclass(frozen=True)
class _Selection:
    """What a ``messages()`` call asked for, evaluated client-side."""

    query: Q | None
    headers_only: bool
    limit: int | None

    @property
    def use_top(self) -> bool:
        needs_body = self.query is not None and self.query.needs_body
        return self.headers_only and not needs_body

    def entries(self, entries: list[_Entry]) -> list[_Entry]:
        # Without a query the limit is known up front: never ask for more than needed.
        if self.query is None and self.limit is not None:
            return entries[: max(self.limit, 0)]
        return entries

    def accept(self, message: Message) -> Message | None:
        if self.query is not None and not self.query.matches(message):
            return None
        if self.headers_only and not message.headers_only:
            return message.replace(raw=header_block(message.raw), headers_only=True)
        return message


# -- sessions and the policy for opening them ------------------------------------------------


@dataclass
class _Session(Generic[IO]):
    """One login: the transport, the protocol state, and what this snapshot listed."""

    io: IO
    state: _State
    listed: bool = False
    entries: list[_Entry] | None = None
    busy: bool = False


class _Policy:
    """Decisions shared by the sync and async retrievers (no I/O)."""

    endpoint: Endpoint
    _last_login: float | None = None
    _login_delay: int | None = None

    def _new_state(self) -> _State:
        return _State(self._context(), on_login_caps=self._note_login_capabilities)

    def _note_login(self) -> None:
        self._last_login = time.monotonic()

    def _note_login_capabilities(self, caps: Capabilities) -> None:
        # Told by the plans when the post-login CAPA is answered: at the end of the login, or
        # with the first replies of the transaction when that CAPA rode along with them.
        self._login_delay = caps.login_delay

    def _login_allowed_in(self) -> float:
        """Seconds until LOGIN-DELAY allows logging in again (0 when it does now)."""
        if self._last_login is None or not self._login_delay:
            return 0.0
        return max(0.0, self._last_login + self._login_delay - time.monotonic())

    def _poll_wait(self, timeout: float) -> float:
        return max(timeout, self._login_allowed_in())

    def _reusable(self, session: _Session[Any] | None, *, fresh: bool) -> bool:
        if session is None or session.busy:
            return False
        if not session.state.idle:
            return False
        if fresh and session.listed:
            # A login sees a snapshot; a new listing needs a new login, when allowed.
            return self._login_allowed_in() > 0
        return True

    def _context(self) -> str:
        return self.endpoint.display


# -- the blocking driver ---------------------------------------------------------------------


class _SocketIO:
    """A blocking socket, plain or TLS, reading straight into the protocol core's buffer."""

    def __init__(self, endpoint: Endpoint, conn: POP3Connection) -> None:
        self._endpoint = endpoint
        self._conn = conn
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

    def read_events(self) -> list[Event]:
        while True:
            try:
                with self._conn.get_buffer() as view:
                    count = self.sock.recv_into(view)
            except TimeoutError as exc:
                raise _no_answer(self._endpoint) from exc
            if not count:
                self._conn.receive_eof()
                raise ConnectionFailed(
                    f"{self._endpoint.display}: the server closed the connection"
                )
            events = self._conn.buffer_updated(count)
            if events:
                return events

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)

    def start_tls(self) -> None:
        self.sock.settimeout(self._endpoint.timeout.connect_timeout)
        self.sock = self._wrap(self.sock)
        self.sock.settimeout(self._endpoint.timeout.read)

    def close(self) -> None:
        # shutdown() first: it wakes a recv() blocked in another thread (close() alone does
        # not), so close() from another thread ends a watch() at once.
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()


def _advance(plan: Plan[Any], value: list[Event] | None, error: MailsyncError | None) -> _Action:
    """Resume a plan: start it, send it the events read, or throw a transport error into it."""
    if error is not None:
        return plan.throw(error)
    return next(plan) if value is None else plan.send(value)


def _perform(io: _SocketIO, action: _Action) -> list[Event]:
    if isinstance(action, _Read):
        return io.read_events()
    if isinstance(action, _Write):
        io.write(action.data)
    elif isinstance(action, _StartTLS):
        io.start_tls()
    return _NOTHING


def _drive(io: _SocketIO, plan: Plan[T], context: str) -> Generator[Any, None, T]:
    """Run a plan over a socket, yielding what it emits and returning what it returns.

    Transport errors are translated and thrown into the plan at the point they happened, so
    a plan can say what they mean (e.g. for a QUIT that never got its answer).
    """
    value: list[Event] | None = None
    error: MailsyncError | None = None
    while True:
        try:
            action = _advance(plan, value, error)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        value, error = _NOTHING, None
        if isinstance(action, _Emit):
            yield action.item
            continue
        try:
            with map_exceptions(context=context):
                value = _perform(io, action)
        except MailsyncError as exc:
            error = exc


def _complete(io: _SocketIO, plan: Plan[T], context: str) -> T:
    steps = _drive(io, plan, context)
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]


class POP3Retriever(_Policy, Retriever):
    """Reads a POP3 maildrop (``pop3://user@host``, ``pop3s://user@host``).

    Options (keyword arguments of :func:`mailsync.connect`, or URL query parameters):
    ``apop=True`` logs in with APOP when the server offers it. A ``token`` logs in with
    OAUTHBEARER or XOAUTH2; otherwise ``AUTH PLAIN`` when offered, else ``USER``/``PASS``.
    """

    scheme = "pop3"
    capabilities = _CAPABILITIES

    def __init__(self, endpoint: Endpoint, *, state: Any = None) -> None:
        super().__init__(endpoint, state=state)
        self._session: _Session[_SocketIO] | None = None

    # -- sessions ------------------------------------------------------------------------------

    def _open(self) -> _Session[_SocketIO]:
        context = self._context()
        state = self._new_state()
        with map_exceptions(context=context):
            io = _SocketIO(self.endpoint, state.conn)
        try:
            _complete(io, _open_plan(state, self.endpoint), context)
        except BaseException:
            io.close()
            raise
        self._note_login()
        return _Session(io, state)

    def _acquire(self, *, fresh: bool) -> _Session[_SocketIO]:
        session = self._session
        if session is not None and self._reusable(session, fresh=fresh):
            return session
        if session is not None and not session.busy:
            _raise_if_silent(self._release(session))
        self._session = self._open()
        return self._session

    def _release(
        self, session: _Session[_SocketIO], *, polite: bool = True
    ) -> MailsyncError | None:
        """Close a session, with QUIT (RSET first when needed) when polite and in step; return
        the error that ended the goodbye, if any (the socket is closed either way)."""
        if self._session is session:
            self._session = None
        error = None
        if polite and session.state.conn.idle:
            try:
                _complete(session.io, _close_plan(session.state), session.state.context)
            except MailsyncError as exc:
                log.debug("%s: closing: %s", session.state.context, exc)
                error = exc
        session.io.close()
        return error

    def _run(self, session: _Session[_SocketIO], plan: Plan[T]) -> T:
        # Busy while talking: close() from another thread (ending a watch) then drops the
        # socket instead of writing RSET/QUIT in the middle of this exchange.
        busy, session.busy = session.busy, True
        try:
            return _complete(session.io, plan, session.state.context)
        except BaseException:
            self._after_failure(session)
            raise
        finally:
            session.busy = busy

    def _after_failure(self, session: _Session[_SocketIO]) -> None:
        # A -ERR leaves the session usable; anything else (broken, timed out, out of step)
        # does not.
        if not session.state.idle:
            self._release(session, polite=False)

    def _listing(self, session: _Session[_SocketIO]) -> list[_Entry]:
        if session.entries is None:
            session.entries = self._run(session, _listing_plan(session.state))
        session.listed = True
        return session.entries

    def _stream(
        self, session: _Session[_SocketIO], entries: Sequence[_Entry], *, top: bool
    ) -> Iterator[tuple[_Entry, Reply]]:
        session.busy = True
        outcome: BaseException | None = None
        try:
            yield from _drive(
                session.io, _fetch_plan(session.state, entries, top=top), self._context()
            )
        except BaseException as exc:
            outcome = exc
            raise
        finally:
            session.busy = False
            self._finish_stream(session, _usable_after(outcome))

    def _finish_stream(self, session: _Session[_SocketIO], usable: bool) -> None:
        if usable and not session.state.idle:
            try:
                _complete(session.io, _drain_plan(session.state), session.state.context)
            except MailsyncError:
                usable = False
        if not usable or not session.state.idle:
            self._release(session, polite=False)
        elif self._session is not session:
            self._release(session)

    def _disconnect(self) -> None:
        session = self._session
        if session is not None:
            self._release(session, polite=not session.busy)

    # -- reading -------------------------------------------------------------------------------

    def folders(self) -> list[Folder]:
        """Only the INBOX: POP3 has one maildrop and no folders."""
        return [Folder("INBOX")]

    def messages(
        self,
        folder: str = "INBOX",
        *,
        query: Q | None = None,
        headers_only: bool = False,
        limit: int | None = None,
    ) -> Iterator[Message]:
        """The maildrop's messages in order, RETR pipelined in windows (see the module doc).

        ``headers_only`` uses ``TOP n 0``; ``query`` is evaluated client-side.

        Raises:
            FolderNotFound: A folder other than INBOX.
        """
        _check_folder(folder)
        selection = _Selection(query, headers_only, limit)
        session = self._acquire(fresh=True)
        entries = selection.entries(self._listing(session))
        return self._select(session, entries, selection)

    def _select(
        self, session: _Session[_SocketIO], entries: list[_Entry], selection: _Selection
    ) -> Iterator[Message]:
        count = 0
        if selection.limit is not None and selection.limit <= 0:
            return
        top = selection.use_top
        for entry, reply in self._stream(session, entries, top=top):
            message = selection.accept(_message(entry, reply, top=top))
            if message is None:
                continue
            yield message
            count += 1
            if selection.limit is not None and count >= selection.limit:
                return

    def get(self, id: str) -> Message:
        """One message by id (its UIDL).

        Raises:
            MessageNotFound: No message in the maildrop has this id.
        """
        session = self._acquire(fresh=False)
        entry = self._lookup(session, id)
        if entry is None and session.listed:
            session = self._acquire(fresh=True)
            session.entries = None
            entry = self._lookup(session, id)
        if entry is None:
            raise MessageNotFound(f"{self._context()}: no message {id!r} in the maildrop")
        for found, reply in self._stream(session, [entry], top=False):
            return _message(found, reply, top=False)
        raise MessageNotFound(f"{self._context()}: message {id!r} vanished")

    def _lookup(self, session: _Session[_SocketIO], id: str) -> _Entry | None:
        entries = self._listing(session)
        index = self._run(session, _index_plan(session.state, entries, [id]))
        return index.get(id)

    def _sync_steps(
        self,
        folder: str,
        cursor: dict[str, Any] | None,
        known: Callable[[Iterable[str]], set[str]],
    ) -> Iterator[SyncStep]:
        _check_folder(folder)
        session = self._acquire(fresh=True)
        entries = self._listing(session)
        if any(entry.uid is None for entry in entries):
            entries = self._unseen_by_digest(session, entries, known)
        else:
            delivered = known(f"uidl:{entry.uid}" for entry in entries)
            entries = [e for e in entries if f"uidl:{e.uid}" not in delivered]
        for entry, reply in self._stream(session, entries, top=False):
            message = _message(entry, reply, top=False)
            yield SyncStep(message, _CURSOR, _identity(message))
        if cursor is None:
            yield SyncStep(None, _CURSOR)

    def _unseen_by_digest(
        self,
        session: _Session[_SocketIO],
        entries: list[_Entry],
        known: Callable[[Iterable[str]], set[str]],
    ) -> list[_Entry]:
        digests = {
            entry.number: _digest_id(reply.data or b"", entry.size)
            for entry, reply in self._stream(session, entries, top=session.state.caps.top)
        }
        delivered = known(digests.values())
        return [e for e in entries if digests.get(e.number, "") not in delivered]

    def _wait_for_change(self, folder: str, timeout: float) -> None:
        # A POP3 session never sees new mail: log out now, log in again on the next sync(),
        # and never sooner than LOGIN-DELAY allows.
        self._disconnect()
        self._stop.wait(self._poll_wait(timeout))

    # -- changing ------------------------------------------------------------------------------

    def delete(self, msgs: MessageRef | Sequence[MessageRef], *, permanent: bool = False) -> None:
        """Delete messages for good (POP3 has no Trash; ``permanent`` changes nothing).

        Runs ``DELE`` in a session of its own and ends it with ``QUIT``, the moment POP3
        applies deletions; the next call logs in again.

        Raises:
            MessageNotFound: An id is not in the maildrop (then nothing is deleted).
            ConnectionFailed: The connection broke before QUIT was confirmed; the error says
                the messages are reported not deleted.
        """
        ids = message_refs(msgs)
        if not ids:
            return
        # A fresh snapshot (mail that arrived since can be deleted too), unless LOGIN-DELAY
        # forbids logging in again so soon: then the open session serves.
        session = self._acquire(fresh=True)
        self._session = None  # this session ends with the QUIT that applies the DELEs
        try:
            _complete(session.io, _delete_plan(session.state, ids), self._context())
        finally:
            session.io.close()


_CURSOR: dict[str, Any] = {"v": 1}


# -- the asyncio driver ----------------------------------------------------------------------


class _StreamProtocol(asyncio.BufferedProtocol):
    """asyncio delivers received bytes straight into the protocol core's buffer; the parsed
    events wait here until the plan asks for them.

    Memory stays bounded without pausing the transport: the fetch window limits how much the
    server may send ahead.
    """

    def __init__(self, conn: POP3Connection) -> None:
        self.conn = conn
        self.transport: asyncio.BaseTransport | None = None
        self.events: list[Event] = []
        self.error: BaseException | None = None
        self.closed = False
        self.activity = 0.0  # loop time of the last bytes received
        self._waiter: asyncio.Future[None] | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._lost = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.conn.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        # Only a timestamp, not a wake-up: the reader checks it when its idle wait runs out.
        self.activity = asyncio.get_running_loop().time()
        try:
            events = self.conn.buffer_updated(nbytes)
        except MailsyncError as exc:
            self.error = exc
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
        self._writable.set()
        self._lost.set()
        self._wake()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def read_events(self, idle_timeout: float | None = None) -> list[Event]:
        """The next complete replies. ``idle_timeout`` bounds the silence between bytes, not
        the whole reply: a large message streaming over a slow link is not cut off, while a
        server that stops sending is (TimeoutError)."""
        loop = asyncio.get_running_loop()
        self.activity = max(self.activity, loop.time())
        while not self.events:
            if self.error is not None:
                raise self.error
            if self.closed:
                self.conn.receive_eof()
                raise ConnectionFailed("the server closed the connection")
            self._waiter = loop.create_future()
            await self._wait_idle(self._waiter, idle_timeout)
        events, self.events = self.events, []
        return events

    async def _wait_idle(self, waiter: asyncio.Future[None], idle_timeout: float | None) -> None:
        if idle_timeout is None:
            await waiter
            return
        loop = asyncio.get_running_loop()
        while True:
            remaining = self.activity + idle_timeout - loop.time()
            if remaining <= 0:
                raise TimeoutError
            try:
                async with asyncio.timeout(remaining):
                    await asyncio.shield(waiter)
                return
            except TimeoutError:
                continue  # bytes may have arrived meanwhile: the loop re-checks

    async def writable(self) -> None:
        await self._writable.wait()

    async def lost(self) -> None:
        await self._lost.wait()

    @property
    def is_lost(self) -> bool:
        return self._lost.is_set()


class _StreamIO:
    """An asyncio connection, plain or TLS, with a :class:`_StreamProtocol`."""

    def __init__(self, endpoint: Endpoint, protocol: _StreamProtocol) -> None:
        self._endpoint = endpoint
        self._protocol = protocol

    @classmethod
    async def connect(cls, endpoint: Endpoint, conn: POP3Connection) -> _StreamIO:
        context = endpoint.ssl_context() if endpoint.tls == "ssl" else None
        protocol = _StreamProtocol(conn)
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
        transport = self._protocol.transport
        assert isinstance(transport, asyncio.Transport)
        return transport

    async def read_events(self) -> list[Event]:
        try:
            return await self._protocol.read_events(self._endpoint.timeout.read)
        except TimeoutError as exc:
            raise _no_answer(self._endpoint) from exc

    async def write(self, data: bytes) -> None:
        if self._protocol.closed:
            raise ConnectionFailed(f"{self._endpoint.display}: the connection is closed")
        self._transport.write(data)
        async with asyncio.timeout(self._endpoint.timeout.read):
            await self._protocol.writable()

    async def start_tls(self) -> None:
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

    async def close(self, *, abort: bool = False) -> None:
        """Close the connection; the TLS shutdown gets a moment, then the socket is dropped.

        ``abort`` drops it at once: for a connection that failed or stopped answering, whose
        TLS goodbye would only wait out the grace.
        """
        transport = self._protocol.transport
        if transport is None or self._protocol.is_lost:
            return
        if not abort:
            transport.close()
            read = self._endpoint.timeout.read
            grace = _CLOSE_GRACE if read is None else min(_CLOSE_GRACE, read)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._protocol.lost()
                    return
        if isinstance(transport, asyncio.Transport):
            transport.abort()
        else:
            transport.close()


async def _perform_async(io: _StreamIO, action: _Action) -> list[Event]:
    if isinstance(action, _Read):
        return await io.read_events()
    if isinstance(action, _Write):
        await io.write(action.data)
    elif isinstance(action, _StartTLS):
        await io.start_tls()
    return _NOTHING


async def _complete_async(io: _StreamIO, plan: Plan[T], context: str) -> T:
    value: list[Event] | None = None
    error: MailsyncError | None = None
    while True:
        try:
            action = _advance(plan, value, error)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        value, error = _NOTHING, None
        if isinstance(action, _Emit):
            raise AssertionError("a plan run to completion emitted a value")
        try:
            with map_exceptions(context=context):
                value = await _perform_async(io, action)
        except MailsyncError as exc:
            error = exc


async def _drive_async(io: _StreamIO, plan: Plan[None], context: str) -> AsyncIterator[Any]:
    value: list[Event] | None = None
    error: MailsyncError | None = None
    while True:
        try:
            action = _advance(plan, value, error)
        except StopIteration:
            return
        value, error = _NOTHING, None
        if isinstance(action, _Emit):
            yield action.item
            continue
        try:
            with map_exceptions(context=context):
                value = await _perform_async(io, action)
        except MailsyncError as exc:
            error = exc


class AsyncPOP3Retriever(_Policy, AsyncRetriever):
    """The asyncio POP3 retriever: the same plans as :class:`POP3Retriever` over asyncio
    streams (no worker thread)."""

    scheme = "pop3"
    capabilities = _CAPABILITIES

    def __init__(self, endpoint: Endpoint, *, state: Any = None) -> None:
        super().__init__(endpoint, state=state)
        self._session: _Session[_StreamIO] | None = None
        self._wake: asyncio.Event | None = None

    # -- sessions ------------------------------------------------------------------------------

    async def _open(self) -> _Session[_StreamIO]:
        context = self._context()
        state = self._new_state()
        with map_exceptions(context=context):
            io = await _StreamIO.connect(self.endpoint, state.conn)
        try:
            await _complete_async(io, _open_plan(state, self.endpoint), context)
        except BaseException:
            await io.close(abort=True)
            raise
        self._note_login()
        return _Session(io, state)

    async def _acquire(self, *, fresh: bool) -> _Session[_StreamIO]:
        session = self._session
        if session is not None and self._reusable(session, fresh=fresh):
            return session
        if session is not None and not session.busy:
            _raise_if_silent(await self._release(session))
        self._session = await self._open()
        return self._session

    async def _release(
        self, session: _Session[_StreamIO], *, polite: bool = True
    ) -> MailsyncError | None:
        """See :meth:`POP3Retriever._release`; a connection whose goodbye failed is dropped at
        once, without the TLS close grace."""
        if self._session is session:
            self._session = None
        error = None
        if polite and session.state.conn.idle:
            try:
                await _complete_async(session.io, _close_plan(session.state), self._context())
            except MailsyncError as exc:
                log.debug("%s: closing: %s", self._context(), exc)
                error = exc
        await session.io.close(abort=not polite or error is not None)
        return error

    async def _run(self, session: _Session[_StreamIO], plan: Plan[T]) -> T:
        busy, session.busy = session.busy, True  # see POP3Retriever._run
        try:
            return await _complete_async(session.io, plan, self._context())
        except BaseException:
            if not session.state.idle:
                await self._release(session, polite=False)
            raise
        finally:
            session.busy = busy

    async def _listing(self, session: _Session[_StreamIO]) -> list[_Entry]:
        if session.entries is None:
            session.entries = await self._run(session, _listing_plan(session.state))
        session.listed = True
        return session.entries

    async def _stream(
        self, session: _Session[_StreamIO], entries: Sequence[_Entry], *, top: bool
    ) -> AsyncGenerator[tuple[_Entry, Reply], None]:
        session.busy = True
        outcome: BaseException | None = None
        try:
            plan = _fetch_plan(session.state, entries, top=top)
            async for item in _drive_async(session.io, plan, self._context()):
                yield item
        except BaseException as exc:
            outcome = exc
            raise
        finally:
            session.busy = False
            await self._finish_stream(session, _usable_after(outcome))

    async def _finish_stream(self, session: _Session[_StreamIO], usable: bool) -> None:
        if usable and not session.state.idle:
            try:
                await _complete_async(session.io, _drain_plan(session.state), self._context())
            except MailsyncError:
                usable = False
        if not usable or not session.state.idle:
            await self._release(session, polite=False)
        elif self._session is not session:
            await self._release(session)

    async def _disconnect(self) -> None:
        session = self._session
        if session is not None:
            await self._release(session, polite=not session.busy)

    # -- reading -------------------------------------------------------------------------------

    async def folders(self) -> list[Folder]:
        """Only the INBOX: POP3 has one maildrop and no folders."""
        return [Folder("INBOX")]

    async def messages(
        self,
        folder: str = "INBOX",
        *,
        query: Q | None = None,
        headers_only: bool = False,
        limit: int | None = None,
    ) -> AsyncIterator[Message]:
        """The maildrop's messages in order; see :meth:`POP3Retriever.messages`."""
        _check_folder(folder)
        selection = _Selection(query, headers_only, limit)
        if selection.limit is not None and selection.limit <= 0:
            return
        session = await self._acquire(fresh=True)
        entries = selection.entries(await self._listing(session))
        top = selection.use_top
        count = 0
        stream = self._stream(session, entries, top=top)
        try:
            async for entry, reply in stream:
                message = selection.accept(_message(entry, reply, top=top))
                if message is None:
                    continue
                yield message
                count += 1
                if selection.limit is not None and count >= selection.limit:
                    return
        finally:
            await stream.aclose()

    async def get(self, id: str) -> Message:
        """One message by id (its UIDL); see :meth:`POP3Retriever.get`."""
        session = await self._acquire(fresh=False)
        entry = await self._lookup(session, id)
        if entry is None and session.listed:
            session = await self._acquire(fresh=True)
            session.entries = None
            entry = await self._lookup(session, id)
        if entry is None:
            raise MessageNotFound(f"{self._context()}: no message {id!r} in the maildrop")
        stream = self._stream(session, [entry], top=False)
        try:
            async for found, reply in stream:
                return _message(found, reply, top=False)
        finally:
            await stream.aclose()
        raise MessageNotFound(f"{self._context()}: message {id!r} vanished")

    async def _lookup(self, session: _Session[_StreamIO], id: str) -> _Entry | None:
        entries = await self._listing(session)
        index = await self._run(session, _index_plan(session.state, entries, [id]))
        return index.get(id)

    async def _sync_steps(
        self,
        folder: str,
        cursor: dict[str, Any] | None,
        known: Callable[[Iterable[str]], set[str]],
    ) -> AsyncIterator[SyncStep]:
        _check_folder(folder)
        session = await self._acquire(fresh=True)
        entries = await self._listing(session)
        if any(entry.uid is None for entry in entries):
            entries = await self._unseen_by_digest(session, entries, known)
        else:
            identities = [f"uidl:{entry.uid}" for entry in entries]
            delivered = await asyncio.to_thread(known, identities)
            entries = [e for e in entries if f"uidl:{e.uid}" not in delivered]
        stream = self._stream(session, entries, top=False)
        try:
            async for entry, reply in stream:
                message = _message(entry, reply, top=False)
                yield SyncStep(message, _CURSOR, _identity(message))
        finally:
            await stream.aclose()
        if cursor is None:
            yield SyncStep(None, _CURSOR)

    async def _unseen_by_digest(
        self,
        session: _Session[_StreamIO],
        entries: list[_Entry],
        known: Callable[[Iterable[str]], set[str]],
    ) -> list[_Entry]:
        digests: dict[int, str] = {}
        stream = self._stream(session, entries, top=session.state.caps.top)
        try:
            async for entry, reply in stream:
                digests[entry.number] = _digest_id(reply.data or b"", entry.size)
        finally:
            await stream.aclose()
        delivered = await asyncio.to_thread(known, list(digests.values()))
        return [e for e in entries if digests.get(e.number, "") not in delivered]

    async def _wait_for_change(self, folder: str, timeout: float) -> None:
        # See POP3Retriever._wait_for_change: log out, wait, log in again on the next sync().
        # aclose() from another task ends the wait at once and waits for it to end.
        await self._disconnect()
        self._wake = asyncio.Event()
        try:
            async with asyncio.timeout(self._poll_wait(timeout)):
                await self._wake.wait()
        except TimeoutError:
            pass
        finally:
            self._wake = None

    async def aclose(self) -> None:
        """Close the connection and stop any ``watch()`` loop (waking its poll wait)."""
        self._stopped = True
        if self._wake is not None:
            self._wake.set()
            # Let the watch loop see the flag and finish before the caller moves on.
            for _ in range(3):
                await asyncio.sleep(0)
        await self._disconnect()

    # -- changing ------------------------------------------------------------------------------

    async def delete(
        self, msgs: MessageRef | Sequence[MessageRef], *, permanent: bool = False
    ) -> None:
        """Delete messages for good; see :meth:`POP3Retriever.delete`."""
        ids = message_refs(msgs)
        if not ids:
            return
        session = await self._acquire(fresh=True)  # see POP3Retriever.delete
        self._session = None
        try:
            await _complete_async(session.io, _delete_plan(session.state, ids), self._context())
        finally:
            await session.io.close()
