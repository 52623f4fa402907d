"""The POP3 session as plans (:mod:`mailsync._plans`): login, listing, pipelined retrieval,
deletion, goodbye; and the rules that turn replies into messages.

The wire format (framing, ``CAPA``, response codes) is :mod:`mailsync.protocol.pop3`; this
module is what a client says with it, and when. The plans yield the stream operations of
:mod:`mailsync.protocol.stream`, so the same plans run on a blocking socket and on asyncio
(:mod:`mailsync.backends.pop3` binds them). They compose: a plan for a group of commands
(:func:`_commands`) makes pipelining one ``if``.

Rules that live here:

- RFC 2449 lets capabilities change at login, so CAPA is asked again after it; with
  PIPELINING before login, that CAPA rides along with the first commands of the transaction.
- Retrieval pipelines ``RETR``/``TOP`` in windows bounded by count and announced size, and
  ends with ``RSET``, so nothing read is left marked (see :func:`fetch`).
- A session that may still hold marks ends with ``RSET`` before ``QUIT`` (:func:`close`).
- ``DELE`` takes effect only at a successful ``QUIT``: :func:`delete` reports nothing deleted
  otherwise.
- A server without ``UIDL`` gets ids from a digest of the header block and size
  (:func:`digest_id`), and so do messages whose UIDL the server gave to another message too
  (RFC 1939 forbids it; such a UIDL names no message, see :func:`listing`). Messages whose
  header block and size are the same get ``#2``, ``#3``... after the digest, in maildrop order
  (:class:`Naming`), so ids stay unique; :func:`delete` refuses to delete some but not all of
  them, as nothing else tells them apart from one session to the next.
- A message over ``max_message_size`` by its LIST size is never asked for: :func:`fetch`
  fetches those before it and raises :class:`~mailsync.MessageTooLarge`; ``sync()`` leaves
  it out with a warning (:func:`too_large`). One whose body turns out larger than LIST said
  is refused as it arrives (the connection is dropped), and the error names it.

It must not do I/O, sleep, or keep anything between sessions (that is the retriever's policy).
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mailsync._config import Endpoint
from mailsync._errors import (
    ConfigError,
    ConnectionFailed,
    FolderNotFound,
    MailsyncError,
    MessageNotFound,
    MessageTooLarge,
    ProtocolError,
    ServerError,
    Unsupported,
)
from mailsync._message import Message, header_block
from mailsync._plans import Emit, Plan, collect
from mailsync._query import Q
from mailsync._sync_run import warn_skipped
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
from mailsync.protocol.pop3_ids import Entry, Naming, digest_id, resolve, same_headers
from mailsync.protocol.stream import Channel, Connect, Read, StartTLS, Write

__all__ = [
    "CURSOR",
    "WINDOW_BYTES",
    "WINDOW_COMMANDS",
    "Entry",
    "Naming",
    "Selection",
    "Session",
    "check_folder",
    "close",
    "delete",
    "digest_id",
    "drain",
    "fetch",
    "identify",
    "identity",
    "index",
    "listing",
    "login",
    "message_of",
    "open_session",
    "too_large",
    "usable_after",
]

log = logging.getLogger("mailsync.pop3")

#: At most this many RETR/TOP commands in flight ...
WINDOW_COMMANDS = 64
#: ... announcing at most this many bytes (LIST sizes): what may sit unread in buffers.
WINDOW_BYTES = 8 * 1024 * 1024
#: The window is refilled once it has drained to this many commands, in one write.
WINDOW_LOW = WINDOW_COMMANDS // 2
#: The cursor of a POP3 sync: the UIDLs delivered are the state, the cursor only marks a
#: first sync as done.
CURSOR: dict[str, Any] = {"v": 1}
_TRUE = frozenset({"1", "true", "yes", "on"})
#: The SASL mechanisms a POP3 password logs in with; USER/PASS takes LOGIN's place.
_SASL_PASSWORD = ("PLAIN",)


@dataclass(eq=False)  # a session is itself: compared (and hashed) by identity
class Session:
    """One POP3 session (a login): what its plans need to know, and its connection."""

    context: str
    conn: POP3Connection = field(default_factory=POP3Connection)
    events: deque[Event] = field(default_factory=deque)
    caps: Capabilities = field(default_factory=Capabilities)
    greeting: Greeting | None = None
    #: The post-login CAPA is still to be sent: it goes in front of the next command group
    #: (see :func:`open_session`).
    capa_due: bool = False
    #: That CAPA was sent and its reply, the next one to arrive, is still to be taken.
    capa_awaited: bool = False
    #: Told the capabilities of the logged-in session once they are known (then dropped, so
    #: the session does not keep its owner alive).
    on_login_caps: Callable[[Capabilities], None] | None = None
    #: The connection, once :func:`open_session` has opened it.
    channel: Channel | None = None
    #: Whether this session listed the maildrop (a new listing then needs a new login), and
    #: what it found.
    listed: bool = False
    entries: list[Entry] | None = None
    #: A plan is running on the session (set by its owner; a session in use is not reused).
    busy: bool = False

    @property
    def idle(self) -> bool:
        """Nothing outstanding, nothing half read, no reply parsed but not yet taken."""
        return self.conn.idle and not self.events

    def read(self) -> Read:
        """The operation that reads the next events of this session."""
        assert self.channel is not None, "the session is not connected"
        return Read(self.channel)

    def write(self, data: bytes) -> Write:
        """The operation that sends ``data`` on this session."""
        assert self.channel is not None, "the session is not connected"
        return Write(self.channel, data)

    def abort(self) -> None:
        """Drop the connection at once (see :meth:`Channel.abort`)."""
        if self.channel is not None:
            self.channel.abort()

    def error(self, reply: Reply) -> MailsyncError:
        """The mailsync error for a ``-ERR`` reply of this session."""
        return reply_error(
            reply,
            context=self.context,
            auth_resp_code=self.caps.auth_resp_code,
            login_delay=self.caps.login_delay,
        )


def _next_event(state: Session) -> Plan[Event]:
    while not state.events:
        state.events.extend((yield state.read()))
    return state.events.popleft()


def _next_reply(state: Session) -> Plan[Reply]:
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


def _send(state: Session, *commands: tuple[str, ...]) -> Write:
    """One write for a group of commands, led by the post-login CAPA while that is due."""
    lead = b""
    if state.capa_due:
        state.capa_due, state.capa_awaited = False, True
        lead = state.conn.send("CAPA")
    return state.write(lead + b"".join(state.conn.send(name, *args) for name, *args in commands))


def _command(state: Session, name: str, *args: str) -> Plan[Reply]:
    """Send one command, wait for its reply, raise the translated error on ``-ERR``."""
    yield _send(state, (name, *args))
    reply = yield from _next_reply(state)
    if not reply.ok:
        raise state.error(reply)
    return reply


def _commands(state: Session, *commands: tuple[str, ...]) -> Plan[list[Reply]]:
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


def _capabilities(state: Session) -> Plan[Capabilities]:
    reply = yield from _command_reply(state, "CAPA")
    return _parsed_capabilities(reply)


def _command_reply(state: Session, name: str) -> Plan[Reply]:
    """Send one command and return its reply, ``-ERR`` included."""
    yield _send(state, (name,))
    return (yield from _next_reply(state))


def _parsed_capabilities(reply: Reply) -> Capabilities:
    # A server that refuses CAPA is treated as offering nothing beyond RFC 1939.
    return Capabilities.parse(reply.lines()) if reply.ok else Capabilities()


def _learn_login_capabilities(state: Session, reply: Reply) -> None:
    """Apply the post-login CAPA reply: to the session, and once to its owner's policy."""
    state.caps = _parsed_capabilities(reply)
    notify, state.on_login_caps = state.on_login_caps, None
    if notify is not None:
        notify(state.caps)


def open_session(state: Session, endpoint: Endpoint) -> Plan[None]:
    """Connect (unless connected), greeting, CAPA, STLS when asked (failing closed), login,
    CAPA again. When it fails, the caller drops the connection (:meth:`Session.abort`).

    RFC 2449 lets capabilities change at login (LOGIN-DELAY, EXPIRE, PIPELINING often do), so
    CAPA is asked again after it. Its section 5 also says a capability of the AUTHORIZATION
    state is announced in the TRANSACTION state too: a server that pipelined before login
    still does after it. Then that CAPA is not a round trip of its own: it is left due, goes
    in the write of the first command group of the transaction (UIDL and LIST), and its reply,
    the first to come back, is applied before theirs are read (:func:`_next_reply`). Without
    PIPELINING before login it is asked here, alone, as the server may not pipeline yet.
    """
    if state.channel is None:
        state.channel = yield Connect(endpoint, state.conn)
    try:
        greeting = yield from _next_event(state)
    except ProtocolError as exc:  # the core cannot know which server it talks to
        raise ProtocolError(f"{state.context}: {exc}") from exc
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
        reply = yield from _command_reply(state, "STLS")
        if not reply.ok:
            # TLS could not be set up: a connection failure, as when STLS is not offered.
            raise ConnectionFailed(
                f"{state.context}: the server refused STLS ({reply.text}); refusing to log in "
                "without TLS"
            )
        state.conn.check_tls_start()
        yield StartTLS(state.channel)
        state.caps = yield from _capabilities(state)  # RFC 2595: forget pre-TLS capabilities
    yield from login(state, endpoint)
    if state.caps.pipelining:
        state.capa_due = True
        return
    reply = yield from _command_reply(state, "CAPA")
    _learn_login_capabilities(state, reply)


def login(state: Session, endpoint: Endpoint) -> Plan[None]:
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
        yield from _sasl(state, exchange)
        return
    if endpoint.password is None:
        raise ConfigError(f"{endpoint.display}: POP3 needs a password or a token")
    password = endpoint.password.reveal()
    if any(ch in password for ch in "\r\n\0"):
        raise ConfigError("a POP3 password cannot contain CR, LF or NUL")
    if str(endpoint.params.get("apop", "")).lower() in _TRUE:
        yield from _apop(state, user, password)
    elif sasl.choose(offered, token=False, usable=_SASL_PASSWORD) is not None:
        yield from _sasl(state, sasl.exchange("PLAIN", user, password))
    else:
        yield from _command(state, "USER", user)
        yield from _command(state, "PASS", password)


def _apop(state: Session, user: str, password: str) -> Plan[None]:
    timestamp = state.greeting.timestamp if state.greeting else None
    if timestamp is None:
        raise Unsupported(
            f"{state.context}: APOP was asked for, but the server does not offer it "
            "(no timestamp in its greeting)"
        )
    yield from _command(state, "APOP", user, apop_digest(timestamp, password))


def _sasl(state: Session, exchange: sasl.Exchange) -> Plan[None]:
    yield state.write(state.conn.auth(exchange))
    while True:
        event = yield from _next_event(state)
        if isinstance(event, Challenge):
            yield state.write(state.conn.answer(sasl.encode(exchange.respond(event.data))))
            continue
        assert isinstance(event, Reply)
        if not event.ok:
            raise state.error(event)
        return


def listing(state: Session) -> Plan[list[Entry]]:
    """The maildrop as ``(number, UIDL, size)``; UIDL is None when the server has none.

    A UIDL the server lists for more than one message (RFC 1939 says a unique-id is unique
    in the maildrop; a broken server, or one restored from a backup, may repeat it) names
    none of them: those messages are listed without one (``shared_uidl`` keeps it), and
    are known by their header digests, as on a server without UIDL. Taking it for the first
    or the last of them would make ``get()`` return, and ``delete()`` remove, another message
    than the one meant.
    """
    uidl, listed = yield from _commands(state, ("UIDL",), ("LIST",))
    if not listed.ok:
        raise state.error(listed)
    sizes = _numbered(listed, state.context)
    uids = _numbered(uidl, state.context) if uidl.ok else {}
    counts = Counter(uid for number, uid in uids.items() if number in sizes)
    shared = {uid for uid, count in counts.items() if count > 1}
    if shared:
        log.warning(
            "%s: the server gives one UIDL to several messages (%s): they are known by "
            "their header digests instead",
            state.context,
            ", ".join(sorted(shared)[:5]),
        )
    entries = []
    for number, size in sorted(sizes.items()):
        uid = uids.get(number)
        if uid in shared:
            entries.append(Entry(number, None, _as_size(size, state.context), shared_uidl=uid))
        else:
            entries.append(Entry(number, uid, _as_size(size, state.context)))
    return entries


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


def fetch(state: Session, entries: Sequence[Entry], *, top: bool, reset: bool = True) -> Plan[None]:
    """RETR (or ``TOP n 0``) every entry, emitting ``(entry, reply)`` in order.

    With PIPELINING the commands go out in windows bounded by count and announced size,
    refilled in one write whenever half the window has been answered; without it, one at a
    time. ``RSET`` rides along with the last window, so that a connection lost later (or a
    server that never sees QUIT) does not leave retrieved messages marked.
    """
    limit = None if top else state.conn.max_message
    big = next((i for i, e in enumerate(entries) if limit is not None and e.size > limit), None)
    if big is not None:
        yield from fetch(state, entries[:big], top=top, reset=reset)
        entry = entries[big]
        raise MessageTooLarge(
            f"{state.context}: message {entry.uid or entry.number} is {entry.size} bytes "
            f"(LIST), over max_message_size ({limit} bytes): not retrieved",
            size=entry.size,
            limit=limit,
            id=entry.uid,
        )
    pipelined = state.caps.pipelining
    in_flight: deque[Entry] = deque()
    in_flight_bytes = 0
    position = 0
    reset_sent = False
    while position < len(entries) or in_flight:
        batch: list[bytes] = []
        refill = not in_flight or (pipelined and len(in_flight) <= WINDOW_LOW)
        while refill and position < len(entries):
            if in_flight and (
                not pipelined
                or len(in_flight) >= WINDOW_COMMANDS
                or in_flight_bytes >= WINDOW_BYTES
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
            yield state.write(b"".join(batch))
        try:
            reply = yield from _next_reply(state)
        except MessageTooLarge as exc:
            entry = in_flight[0]
            raise MessageTooLarge(
                f"{state.context}: message {entry.uid or entry.number}: {exc}",
                size=exc.size,
                limit=exc.limit,
                id=entry.uid,
            ) from None
        entry = in_flight.popleft()
        in_flight_bytes -= entry.size
        if not reply.ok:
            error = state.error(reply)
            if not isinstance(error, MessageNotFound):
                raise error
            log.debug("%s: message %d vanished: %s", state.context, entry.number, reply.text)
            continue
        yield Emit((entry, reply))
    if reset_sent:
        yield from _next_reply(state)
    elif reset and entries:
        yield from _command(state, "RSET")


def too_large(context: str, entries: Sequence[Entry], limit: int | None) -> list[Entry]:
    """The entries a ``sync()`` may fetch: those over ``limit`` by their LIST size are left
    out with a warning each. Their UIDL is not recorded as delivered, so every sync warns
    again, and one with a larger limit delivers them."""
    if limit is None:
        return list(entries)
    kept = []
    for entry in entries:
        if entry.size <= limit:
            kept.append(entry)
            continue
        warn_skipped(log, entry.uid or entry.number, size=entry.size, limit=limit, context=context)
    return kept


def drain(state: Session) -> Plan[None]:
    """Read and drop the replies still outstanding (a stream the caller left early), then
    RSET, so that the messages retrieved are not marked when the session ends."""
    state.events.clear()
    while state.conn.pending:
        yield state.read()
    state.events.clear()
    yield from _command(state, "RSET")


def delete(state: Session, ids: Sequence[str]) -> Plan[None]:
    """DELE every message, then QUIT: POP3 removes them only if QUIT succeeds."""
    yield from _command(state, "RSET")  # so QUIT commits nothing but these DELEs
    entries = yield from listing(state)
    numbers = yield from _resolve_ids(state, entries, ids)
    refused: list[Reply] = []
    for first in range(0, len(numbers), WINDOW_COMMANDS):
        batch = numbers[first : first + WINDOW_COMMANDS]
        replies = yield from _commands(state, *(("DELE", str(n)) for n in batch))
        refused += [reply for reply in replies if not reply.ok]
    if refused:
        yield from _commands(state, ("RSET",), ("QUIT",))
        raise _not_deleted(state.error(refused[0]), "a DELE was refused; nothing was deleted")
    try:
        yield state.write(state.conn.send("QUIT"))
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


def _resolve_ids(state: Session, entries: list[Entry], ids: Sequence[str]) -> Plan[list[int]]:
    """Message numbers for ids, each naming exactly one message, before anything is changed.

    Raises:
        MessageNotFound: An id names no message in the maildrop (a UIDL the server now gives
            to several messages names none).
        Unsupported: An id is ambiguous, or names one of several messages with the same
            header block and size without the others: nothing tells them apart from one
            session to the next, so the one meant cannot be known.
    """
    by_id = yield from index(state, entries, ids)
    wanted = list(dict.fromkeys(ids))
    for i in wanted:
        resolve(state.context, entries, by_id, i)
    for i in wanted:
        twins = same_headers(by_id, i)
        if len(twins) > 1 and not set(twins) <= set(wanted):
            raise Unsupported(
                f"{state.context}: messages {', '.join(twins)} have the same header block and "
                "size, and POP3 offers nothing else to tell them apart from one session to "
                f"the next: delete all of them or none, not {i!r} alone; nothing was deleted"
            )
    return [by_id[i][0].number for i in wanted]


def index(state: Session, entries: list[Entry], ids: Iterable[str]) -> Plan[dict[str, list[Entry]]]:
    """Map message ids to the entries they name: UIDLs directly, header digests by fetching
    headers (only when a digest id is asked for). More than one entry under an id is an
    ambiguity for the caller to refuse."""
    names: dict[int, str]
    if any(i.startswith("hdr:") for i in ids) and any(e.uid is None for e in entries):
        names = yield from identify(state, entries, reset=False)
    else:
        names = {entry.number: entry.uid for entry in entries if entry.uid is not None}
    found: dict[str, list[Entry]] = {}
    for entry in entries:
        name = names.get(entry.number)
        if name is not None:
            found.setdefault(name, []).append(entry)
    return found


def identify(
    state: Session, entries: Sequence[Entry], *, reset: bool = True
) -> Plan[dict[int, str]]:
    """Message number -> id for every entry: its UIDL, else its header digest (:class:`Naming`),
    the headers fetched with ``TOP n 0`` (or RETR where TOP is missing)."""
    names = {entry.number: entry.uid for entry in entries if entry.uid is not None}
    headless = [entry for entry in entries if entry.uid is None]
    naming = Naming()

    def note(item: tuple[Entry, Reply]) -> None:
        entry, reply = item
        names[entry.number] = naming.id_of(entry, reply.data or b"")

    if headless:
        yield from collect(fetch(state, headless, top=state.caps.top, reset=reset), note)
    return names


def close(state: Session) -> Plan[None]:
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


def message_of(entry: Entry, reply: Reply, *, top: bool, id: str | None = None) -> Message:
    """The message a ``RETR`` reply (or a ``TOP n 0`` one: headers only) carries; ``id`` is
    its id when already known (:func:`identify`), else its UIDL or header digest."""
    data = reply.data or b""
    if top:
        raw = header_block(data)
        return Message(
            raw,
            id=id or entry.uid or digest_id(raw, entry.size),
            uid=entry.uid,
            size=entry.size,
            headers_only=True,
        )
    octets = reply.octets if reply.octets is not None else entry.size
    raw = trim_to_octets(data, octets)
    return Message(raw, id=id or entry.uid or digest_id(raw, entry.size), uid=entry.uid)


def usable_after(outcome: BaseException | None) -> bool:
    """Whether a session may be kept after a stream ended this way (None: it ran out).

    Leaving early (``GeneratorExit``) or a ``-ERR`` leaves the session in step once the
    outstanding replies are read; a broken, timed-out or garbled connection does not, and
    waiting for its replies would only wait for another timeout.
    """
    return outcome is None or isinstance(outcome, GeneratorExit | ServerError)


def check_folder(folder: str) -> None:
    """Refuse any folder but the INBOX (:class:`~mailsync.FolderNotFound`)."""
    if folder.upper() != "INBOX":
        raise FolderNotFound(f"POP3 has only the INBOX, not {folder!r}")


def identity(message: Message) -> str:
    """What a sync records as delivered: the UIDL, else the header digest id."""
    return f"uidl:{message.uid}" if message.uid is not None else message.id


@dataclass(frozen=True)
class Selection:
    """What a ``messages()`` call asked for, evaluated client-side."""

    query: Q | None
    headers_only: bool
    limit: int | None

    @classmethod
    def of(cls, folder: str, query: Q | None, headers_only: bool, limit: int | None) -> Selection:
        """The selection of a ``messages()`` call.

        Raises:
            FolderNotFound: A folder other than INBOX.
        """
        check_folder(folder)
        return cls(query, headers_only, limit)

    @property
    def nothing(self) -> bool:
        """A limit of zero (or less): nothing to fetch, not even a login."""
        return self.limit is not None and self.limit <= 0

    def done(self, count: int) -> bool:
        """Whether ``count`` messages reach the limit."""
        return self.limit is not None and count >= self.limit

    @property
    def use_top(self) -> bool:
        """Fetch with ``TOP n 0``: only headers are asked for, and no query needs a body."""
        needs_body = self.query is not None and self.query.needs_body
        return self.headers_only and not needs_body

    def entries(self, entries: list[Entry]) -> list[Entry]:
        """The entries worth fetching."""
        # Without a query the limit is known up front: never ask for more than needed.
        if self.query is None and self.limit is not None:
            return entries[: max(self.limit, 0)]
        return entries

    def accept(self, message: Message) -> Message | None:
        """The message as the caller asked for it, or None when the query refuses it."""
        if self.query is not None and not self.query.matches(message):
            return None
        if self.headers_only and not message.headers_only:
            return message.replace(raw=header_block(message.raw), headers_only=True)
        return message
