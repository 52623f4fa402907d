"""The sync IMAP backend's connection: imaplib's, with TLS through the fast stream of
:mod:`mailsync.backends._tls`, the login (the mechanism :mod:`mailsync.protocol.sasl` picks, or
LOGIN), imapclient taken over the same connection for the commands it parses, and the
translation of every imapclient, imaplib, ssl and socket error into the mailsync hierarchy.

The retriever (:mod:`mailsync.backends.imap`) decides what to say on it and when.
"""

from __future__ import annotations

import contextlib
import functools
import imaplib
import io
import socket
import ssl
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from mailsync._config import Endpoint
from mailsync._errors import (
    AuthenticationError,
    ConnectionFailed,
    FolderNotFound,
    MailsyncError,
    MailTimeout,
    MessageTooLarge,
    ProtocolError,
    SecretScrubber,
    ServerError,
)
from mailsync._hints import greeting_problem, socket_error_text
from mailsync.backends._limits import CallLimits, GuardedSocket
from mailsync.backends._tls import TLSStream
from mailsync.protocol import imap as proto
from mailsync.protocol import sasl
from mailsync.protocol.imap_literals import (
    MAX_LINE,
    FetchResponse,
    ResponseReader,
    Tagged,
    Untagged,
    fetch_command,
)

if TYPE_CHECKING:
    from imapclient import IMAPClient

__all__ = [
    "LITERAL_READ",
    "Connection",
    "FetchStream",
    "adopting_client",
    "log_in",
    "offered",
    "open_connection",
    "select_codes",
    "text",
    "translate",
]

#: The SASL mechanisms a password logs in with; the LOGIN command takes SASL LOGIN's place.
_SASL_PASSWORD = ("PLAIN",)
#: The most of a literal read at once. The size comes from the server: a broken one that
#: announces a terabyte must cost what it sends, not an allocation of the announced size.
LITERAL_READ = 16 * 1024 * 1024

_NONEXISTENT = (
    "[NONEXISTENT]",
    "[TRYCREATE]",
    "DOESN'T EXIST",
    "DOES NOT EXIST",
    "NOT FOUND",
    "UNKNOWN MAILBOX",
    "NO SUCH MAILBOX",
)
_AUTH_FAILED = (
    "[AUTHENTICATIONFAILED]",
    "[AUTHORIZATIONFAILED]",
    "AUTHENTICATION FAILED",
    "LOGIN FAILED",
    "INVALID CREDENTIALS",
)


class Connection(imaplib.IMAP4):
    """imaplib's connection over a plain socket, with TLS (implicit or by STARTTLS) through
    :class:`TLSStream`, which reads ciphertext in large chunks instead of two system calls per
    TLS record. ``sock`` stays the TCP socket (for timeouts and poll()); ``file`` is what
    imaplib and the fast FETCH reader read from: the socket's buffered reader or the stream.

    Every read keeps to the connection's :class:`CallLimits` (a call starts with each
    command sent and with the greeting): a server that drips bytes ends the call with
    :class:`~mailsync.MailTimeout` after ``Timeout.total``, one that floods a command with
    responses or sends a line over :data:`MAX_LINE` with :class:`~mailsync.ProtocolError`, and
    a literal announced over ``max_message_size`` is refused before it is read
    (:class:`~mailsync.MessageTooLarge`). These are mailsync errors raised through imaplib,
    which lets them pass (it rewraps only its own); the owner drops the connection.

    imaplib asks for CAPABILITY right after the greeting, even when the greeting carried them
    in a ``[CAPABILITY ...]`` code (Dovecot's does, and imaplib files it with the untagged
    responses): those are taken, sparing the round trip. Only the greeting's: after STARTTLS
    they are asked again, as anything said before TLS is not trusted.
    """

    _greeted = False
    _first_line: bytes | None = None

    def __init__(self, endpoint: Endpoint, *, tls: ssl.SSLContext | None) -> None:
        self._implicit_tls = tls
        self._stream: TLSStream | None = None
        self._context = endpoint.display
        self.limits = CallLimits(endpoint)
        self.max_message_size = endpoint.max_message_size
        self._guarded: GuardedSocket | None = None
        super().__init__(endpoint.host, endpoint.port, endpoint.timeout.connect_timeout)

    def _connect(self) -> Any:
        try:
            return super()._connect()  # type: ignore[misc]
        except imaplib.IMAP4.error as exc:
            line = self._first_line
            if line is None or line.startswith(b"* "):
                raise  # an IMAP server that said no (BYE): the usual translation says so
            # Another protocol on this port: imaplib would only say "None".
            raise ProtocolError(greeting_problem("IMAP", line)) from exc

    def _get_line(self) -> bytes:
        line: bytes = super()._get_line()  # type: ignore[misc]
        if self._first_line is None:
            self._first_line = line
        return line

    def readline(self) -> bytes:
        """One response line, for imaplib. Over :data:`MAX_LINE` (1 MiB, as the async
        backend's) it is a :class:`~mailsync.ProtocolError` that ends the connection:
        imaplib's own error (past its 1 MB) reads as a server refusal and leaves the rest of
        the line on the wire."""
        longest = MAX_LINE
        line: bytes = self.file.readline(longest + 1)  # type: ignore[assignment]
        if len(line) > longest:
            raise ProtocolError(
                f"{self._context}: the server sent a response line over {longest} bytes"
            )
        self.limits.lines(1, len(line))
        return line

    def open(self, host: str = "", port: int = 143, timeout: float | None = None) -> None:
        self.limits.start()  # the greeting is the first call
        super().open(host, port, timeout)
        try:
            self._guarded = GuardedSocket(self.sock, self.limits)
            self.file.close()  # imaplib's reader, unread: replaced by one that keeps the limits
            self.file = io.BufferedReader(_SocketReader(self._guarded))
            if self._implicit_tls is not None:
                self._wrap(self._implicit_tls)
        except BaseException:
            # imaplib shuts the connection down when the greeting fails, not when open() does.
            self.file.close()
            self.sock.close()
            raise

    def _wrap(self, context: ssl.SSLContext) -> None:
        sock: Any = self._guarded or self.sock
        stream = TLSStream(sock, context, self.host)
        stream.handshake()
        self.file.close()  # a plaintext read-ahead (none is legitimate) is dropped with it
        self.file = stream  # type: ignore[assignment]
        self._stream = stream

    def _get_capabilities(self) -> None:
        untagged: dict[str, Any] = self.untagged_responses
        filed = untagged.pop("CAPABILITY", None) if not self._greeted else None
        self._greeted = True
        if not filed:
            super()._get_capabilities()  # type: ignore[misc]
            return
        self.capabilities = tuple(bytes(filed[-1]).decode("ascii", "replace").upper().split())

    def starttls(self, ssl_context: ssl.SSLContext | None = None) -> Any:
        """STARTTLS (RFC 3501 6.2.1), then the capabilities again over TLS."""
        if ssl_context is None:
            raise ValueError("STARTTLS needs the endpoint's TLS context")
        typ, data = self._simple_command("STARTTLS")
        if typ != "OK":
            raise self.error(f"STARTTLS refused: {text(data)}")
        self._wrap(ssl_context)
        self._tls_established = True
        self._get_capabilities()
        return typ, data

    def read(self, size: int) -> bytes:
        """A literal of ``size`` bytes for imaplib (and imapclient), read in bounded pieces
        (see :data:`LITERAL_READ`); shorter only when the connection ends.

        Raises:
            MessageTooLarge: ``size`` is over ``max_message_size``: refused unread.
        """
        limit = self.max_message_size
        if limit is not None and size > limit:
            raise MessageTooLarge(
                f"{self._context}: the server announced {size} bytes, over max_message_size "
                f"({limit} bytes): refused unread",
                size=size,
                limit=limit,
            )
        stream: Any = self.file  # the socket's reader or the TLS stream: bytes either way
        if size <= LITERAL_READ:
            return stream.read(size)  # type: ignore[no-any-return]
        pieces: list[bytes] = []
        while size > 0:
            piece = stream.read(min(size, LITERAL_READ))
            if not piece:
                break
            pieces.append(piece)
            size -= len(piece)
        return b"".join(pieces)

    def send(self, data: Any) -> None:
        self.limits.start()  # a command (or its literal) goes out: its answer is a new call
        if self._stream is not None:
            self._stream.sendall(bytes(data))
        else:
            super().send(data)

    def tls_version(self) -> str | None:
        """The TLS version in use, or None in plaintext."""
        return self._stream.version() if self._stream is not None else None


class _SocketReader(io.RawIOBase):
    """The raw reader under imaplib's buffered one: a :class:`GuardedSocket`'s reads."""

    def __init__(self, sock: GuardedSocket) -> None:
        super().__init__()
        self._sock = sock
        # The buffered reader calls readinto() for every chunk of a FETCH: it finds the
        # guarded socket's own method here, not the one below that calls it (a Python call
        # less per chunk).
        self.readinto = sock.recv_into  # type: ignore[method-assign]

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._sock.recv_into(buffer)


def open_connection(endpoint: Endpoint) -> Connection:
    """A connection that has read the greeting and the capabilities."""
    tls = endpoint.ssl_context() if endpoint.tls == "ssl" else None
    try:
        imap = Connection(endpoint, tls=tls)
    except ProtocolError as exc:
        if str(exc).startswith(endpoint.display):
            raise
        raise ProtocolError(f"{endpoint.display}: {exc}") from exc.__cause__
    try:
        # imaplib writes an AUTHENTICATE answer and its CRLF in two sends: with Nagle's
        # algorithm the second waits for the server's delayed ACK, 40 ms per login.
        imap.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        imap.sock.settimeout(endpoint.timeout.read)
    except BaseException:
        with contextlib.suppress(Exception):
            imap.shutdown()
        raise
    return imap


def offered(imap: imaplib.IMAP4) -> frozenset[bytes]:
    """The capabilities the server announced, upper case."""
    return frozenset(str(c).upper().encode() for c in imap.capabilities)


@functools.cache
def adopting_client() -> type[IMAPClient]:
    """An IMAPClient class that takes over a connection this module opened and logged in,
    instead of opening its own (imapclient opens it in ``_create_IMAP4``)."""
    from imapclient import IMAPClient

    class AdoptingIMAPClient(IMAPClient):  # type: ignore[misc]
        def __init__(self, imap: imaplib.IMAP4, endpoint: Endpoint) -> None:
            from imapclient import SocketTimeout

            self._adopted = imap
            timeout = endpoint.timeout
            super().__init__(
                endpoint.host,
                port=endpoint.port,
                ssl=endpoint.tls == "ssl",
                timeout=SocketTimeout(connect=timeout.connect_timeout, read=timeout.read),
            )
            self._starttls_done = endpoint.tls == "starttls"
            self.folder_encode = False  # names are encoded/decoded by protocol.imap

        def _create_IMAP4(self) -> imaplib.IMAP4:  # noqa: N802 - imapclient's name
            return self._adopted

    return AdoptingIMAPClient


# -- logging in -----------------------------------------------------------------------------


def log_in(
    imap: imaplib.IMAP4, endpoint: Endpoint, secrets: SecretScrubber | None = None
) -> frozenset[bytes]:
    """STARTTLS when the endpoint asks (failing closed), then log in; returns the
    capabilities the server has after login. Every secret sent (password, token, SASL
    response) is given to ``secrets``, the connection's scrubber, before it goes out.

    Raises:
        ConnectionFailed: STARTTLS required and not offered, or refused.
        AuthenticationError: The credentials were refused, or cannot be sent.
        NoMechanism: A token, and the server offers no OAuth mechanism.
    """
    if endpoint.tls == "starttls":
        _starttls(imap, endpoint)
    return _authenticate(imap, endpoint, secrets if secrets is not None else SecretScrubber())


def _starttls(imap: imaplib.IMAP4, endpoint: Endpoint) -> None:
    if b"STARTTLS" not in offered(imap):
        # Fail closed: never send credentials in the clear because the server said nothing.
        raise ConnectionFailed(
            f"{endpoint.display} does not offer STARTTLS; refusing to continue "
            "without TLS (use tls='ssl' for implicit TLS, or tls='none' to allow plaintext)"
        )
    try:
        imap.starttls(endpoint.ssl_context())
    except imaplib.IMAP4.abort:
        raise  # the connection broke: translated as such by the caller
    except imaplib.IMAP4.error as exc:
        # TLS could not be set up: a connection failure, as when STARTTLS is not offered.
        raise ConnectionFailed(
            f"{endpoint.display} refused STARTTLS ({exc}); refusing to continue without TLS"
        ) from exc


def _authenticate(
    imap: imaplib.IMAP4, endpoint: Endpoint, secrets: SecretScrubber
) -> frozenset[bytes]:
    """Log in (see :mod:`mailsync.protocol.sasl` for the mechanism); returns the
    capabilities the server has after login."""
    user = endpoint.username or ""
    offered_caps = offered(imap)
    mechanisms = [c[5:].decode("ascii", "replace") for c in offered_caps if c.startswith(b"AUTH=")]
    try:
        if endpoint.token is not None:
            token = endpoint.token.fresh()  # a callable is asked at every (re)connect
            mechanism = sasl.choose(mechanisms, token=True)
            if mechanism is None:
                raise sasl.no_mechanism(endpoint.display, mechanisms, token=True)
            exchange = sasl.exchange(mechanism, user, token, host=endpoint.host, port=endpoint.port)
            _remember(secrets, token, exchange)
            reply = imap.authenticate(mechanism, exchange.respond)
        elif endpoint.password is None:
            raise AuthenticationError(
                f"{endpoint.display}: no password or token given for {user or 'the login'}"
            )
        elif sasl.choose(mechanisms, token=False, usable=_SASL_PASSWORD) is not None:
            # PLAIN carries UTF-8 user names and passwords, which LOGIN's strings cannot.
            exchange = sasl.exchange("PLAIN", user, endpoint.password.reveal())
            _remember(secrets, endpoint.password.reveal(), exchange)
            if b"SASL-IR" in offered_caps:
                reply = _authenticate_inline(imap, exchange)
            else:
                reply = imap.authenticate("PLAIN", exchange.respond)
        else:
            secrets.add(endpoint.password.reveal())
            reply = _login(imap, endpoint, offered_caps, user, endpoint.password.reveal())
    except imaplib.IMAP4.error as exc:
        # The server's text may echo the login, secret and all: taken out of the error kept
        # as the cause (an abort is translated by the caller as the broken connection it is).
        scrub_error(exc, secrets)
        if isinstance(exc, imaplib.IMAP4.abort):
            raise
        raise AuthenticationError(
            f"{endpoint.display}: the server refused the credentials for {user!r}"
        ) from exc
    return _capabilities_after_login(imap, reply)


def _remember(secrets: SecretScrubber, secret: str, exchange: sasl.Exchange) -> None:
    secrets.add(secret)
    for response in exchange.secrets():
        secrets.add(response)


def scrub_error(exc: BaseException, secrets: SecretScrubber | None) -> None:
    """Take the connection's secrets out of a library error's text, in place, and out of the
    errors it chains: imaplib and imapclient quote the server, which may echo a login.

    In place, because the error stays reachable from the mailsync error raised for it (as
    its cause, or its context, which Python sets whatever is chained)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while secrets is not None and current is not None and id(current) not in seen:
        seen.add(id(current))
        current.args = tuple(_scrub_arg(arg, secrets) for arg in current.args)
        current = current.__cause__ or current.__context__


def _scrub_arg(arg: Any, secrets: SecretScrubber) -> Any:
    if isinstance(arg, str):
        return secrets.scrub(arg)
    if isinstance(arg, bytes | bytearray):
        return secrets.scrub(bytes(arg).decode("utf-8", "replace")).encode("utf-8")
    return arg


def _authenticate_inline(imap: imaplib.IMAP4, exchange: sasl.Exchange) -> tuple[str, Any]:
    """AUTHENTICATE with the answer in the command line (SASL-IR, RFC 4959): one round
    trip less per connection than imaplib's ``authenticate``, which waits for a ``+``.

    Only for PLAIN, which a server answers with OK or NO and never a challenge. The line
    is sent as the fast FETCH path sends its commands (imaplib's tag and reply handling),
    not through imaplib's command log, which would keep the secret in memory.
    """
    tag = imap._new_tag()
    imap.tagged_commands[tag] = None
    line = f" AUTHENTICATE {exchange.mechanism} {exchange.initial()}\r\n"
    imap.send(tag + line.encode("ascii"))
    typ, data = imap._command_complete("AUTHENTICATE", tag)
    if typ != "OK":
        raise imaplib.IMAP4.error(text(data))
    imap.state = "AUTH"
    return typ, data


def _login(
    imap: imaplib.IMAP4, endpoint: Endpoint, offered: frozenset[bytes], user: str, password: str
) -> tuple[str, Any]:
    if b"LOGINDISABLED" in offered:
        raise AuthenticationError(
            f"{endpoint.display} refuses LOGIN without TLS (LOGINDISABLED); use TLS"
        )
    if not (user + password).isascii() or any(c in user + password for c in "\r\n\0"):
        raise AuthenticationError(
            f"{endpoint.display}: LOGIN cannot carry line breaks or non-ASCII "
            "characters, and the server offers no AUTH=PLAIN"
        )
    # imaplib quotes the password but sends the user name as it is.
    return imap.login(proto.quote(user).decode("ascii"), password)


def _capabilities_after_login(imap: imaplib.IMAP4, reply: tuple[str, Any]) -> frozenset[bytes]:
    """What the server offers once logged in: from the login reply's ``[CAPABILITY ...]``
    code when it has one (Dovecot does; imaplib files it with the untagged responses),
    else asked for. imaplib is told too, as it checks some."""
    untagged: dict[str, Any] = imap.untagged_responses
    data = reply[1]
    filed = untagged.pop("CAPABILITY", None)
    if filed:
        caps = frozenset(bytes(filed[-1]).upper().split())
    elif (code := proto.capability_code(data[-1] if data else None)) is not None:
        caps = code
    else:
        _typ, lines = imap.capability()
        caps = frozenset(bytes(lines[-1] or b"").upper().split())
    imap.capabilities = tuple(c.decode("ascii", "replace") for c in caps)
    return caps


# -- errors --------------------------------------------------------------------------------


def translate(
    exc: Exception,
    context: str,
    folder: str | None = None,
    secrets: SecretScrubber | None = None,
) -> tuple[MailsyncError | None, bool]:
    """The mailsync error for an imapclient, imaplib, ssl or socket error (None: not ours to
    translate), and whether the connection is broken by it (then it must be dropped).

    Args:
        exc: The error.
        context: Put in front of the message (``"IMAP host:143"``).
        folder: The folder the failed command named, if any (a NO then says it is missing).
        secrets: The connection's secrets: taken out of the error's text (and of ``exc``'s,
            in place) before anything quotes it.
    """
    scrub_error(exc, secrets)
    # imapclient's errors can only come from imapclient, which may never have been loaded.
    imapclient_errors: Any = sys.modules.get("imapclient.exceptions")
    if imapclient_errors and isinstance(exc, imapclient_errors.LoginError):
        return AuthenticationError(f"{context}: the server refused the login"), False
    if isinstance(exc, imaplib.IMAP4.readonly):
        return ServerError(f"{context}: the folder is read-only ({exc})"), False
    if isinstance(exc, imaplib.IMAP4.abort):
        if "timed out" in str(exc).lower():
            return MailTimeout(f"{context}: the server did not answer in time"), True
        return ConnectionFailed(f"{context}: connection lost ({exc})"), True
    if imapclient_errors and isinstance(exc, imapclient_errors.ProtocolError):
        return ProtocolError(f"{context}: malformed response ({exc})"), True
    if isinstance(exc, imaplib.IMAP4.error):
        return _refusal(exc, context, folder), False
    if isinstance(exc, TimeoutError):
        return MailTimeout(f"{context}: the server did not answer in time"), True
    if isinstance(exc, OSError):  # certificate and TLS failures included
        return ConnectionFailed(socket_error_text(exc, context) or f"{context}: {exc}"), True
    if isinstance(exc, ValueError | IndexError | KeyError | TypeError):
        # imapclient's parsers fail this way on responses they cannot read.
        return ProtocolError(f"{context}: unreadable response ({exc!r})"), True
    return None, False


def _refusal(exc: BaseException, context: str, folder: str | None) -> MailsyncError:
    text = str(exc)
    upper = text.upper()
    if folder is not None and any(marker in upper for marker in _NONEXISTENT):
        return FolderNotFound(f"{context}: no folder {folder!r}")
    if any(marker in upper for marker in _AUTH_FAILED):
        return AuthenticationError(f"{context}: {text}")
    if "BAD" in upper.split(":")[-1][:8] or "PARSE" in upper:
        return ProtocolError(f"{context}: {text}")
    return ServerError(f"{context}: {text}")


def text(data: Sequence[Any]) -> str:
    """The text of a tagged NO/BAD reply as imaplib hands it over."""
    last = data[-1] if data else b""
    return last.decode("utf-8", "replace") if isinstance(last, bytes) else str(last)


def select_codes(untagged: dict[str, list[Any]]) -> dict[bytes, Any]:
    """What SELECT reported, from imaplib's untagged responses (it files each ``OK [CODE n]``
    under the code), in the shape :meth:`FolderStatus.from_select` reads."""
    wanted = ("UIDVALIDITY", "UIDNEXT", "EXISTS", "HIGHESTMODSEQ")
    return {key.encode(): untagged[key][-1] for key in wanted if untagged.get(key)}


# -- the bulk FETCH ------------------------------------------------------------------------------


class FetchStream:
    """A run of ``UID FETCH`` batches read off an imaplib connection by the fast reader of
    :mod:`mailsync.protocol.imap_literals`, the path every ``messages()`` and ``sync()``
    takes: ``(index, attributes)`` for each response that carries a body section, as it
    arrives (bodies are never all held at once), where ``index`` is the oldest batch not yet
    complete (the response may answer the next one's command), then ``(index, None)`` once
    that batch is complete.

    With ``ahead``, the next batch's command goes out while the current batch is still
    arriving, so the server does not wait a round trip at each boundary (over a 50 ms path,
    20 boundaries cost a second). A consumer that stops early then also waits for that next
    batch to be read off.

    The commands go out on the imaplib connection, with tags imaplib hands out and forgets
    again, and the replies are read from imaplib's file (the buffered socket reader or the TLS
    stream); imaplib's state is untouched between commands, so it (and imapclient) carries on.

    Args:
        imap: The connection.
        context: Put in front of error messages.
        translate: The owner's error translation (None: not a library error).
        drop: Drops the connection (after a read that left it out of step).
        alive: Whether the owner still uses this connection (a dropped one is not drained).
        exists: Called when the server announces new mail during the FETCH.
        secrets: The connection's secrets, taken out of server text quoted in errors.
    """

    def __init__(
        self,
        imap: imaplib.IMAP4,
        context: str,
        *,
        translate: Callable[[Exception], MailsyncError | None],
        drop: Callable[[], None],
        alive: Callable[[], bool],
        exists: Callable[[], None],
        secrets: SecretScrubber | None = None,
    ) -> None:
        self._secrets = secrets or SecretScrubber()
        self._imap = imap
        self._context = context
        self._translate = translate
        self._drop = drop
        self._alive = alive
        self._exists = exists

    def batches(
        self, batches: Sequence[list[int]], items: str, *, ahead: bool = True
    ) -> Iterator[tuple[int, dict[bytes, Any] | None]]:
        """``UID FETCH`` of each batch in turn (see the class docstring)."""
        imap = self._imap
        stream: Any = imap.file  # the buffered socket reader or the TLS stream: bytes
        limits: CallLimits | None = getattr(imap, "limits", None)
        reader = ResponseReader(max_literal=getattr(imap, "max_message_size", None))
        in_flight: deque[bytes] = deque()  # the tags sent and not yet completed, oldest first
        sent = current = arrived = 0  # batches sent; the batch being read; its responses so far

        def send_next() -> None:
            nonlocal sent
            try:
                tag = imap._new_tag()
                imap.send(fetch_command(tag.decode("ascii"), proto.uid_set(batches[sent]), items))
            except Exception as exc:
                translated = self._translate(exc)
                if translated is None:
                    raise
                raise translated from exc
            in_flight.append(tag)
            sent += 1

        try:
            while current < len(batches):
                if not in_flight:
                    send_next()
                try:
                    event = reader.next_event()
                except ProtocolError as exc:
                    raise self._refused(exc) from None
                if event is None:
                    # Translated by hand: a context manager around every read costs too much.
                    try:
                        # As _read(), written out: this runs three times per message.
                        wanted = reader.wanted
                        if wanted:
                            chunk = stream.read(min(wanted, LITERAL_READ))
                        else:
                            chunk = stream.readline(MAX_LINE)
                    except MailsyncError:  # the connection's limits: it is out of step
                        self._drop()
                        raise
                    except Exception as exc:
                        translated = self._translate(exc)
                        if translated is None:
                            raise
                        raise translated from exc
                    if not chunk:
                        self._drop()
                        raise ConnectionFailed(f"{self._context}: the server closed the connection")
                    reader.feed(chunk)
                    continue
                # Each message is a call of its own (its deadline, its share of responses);
                # what else comes between two is counted against the next.
                if isinstance(event, FetchResponse):
                    if limits is not None:
                        limits.start()
                    attributes = self._attributes(event)
                    for key in attributes:  # a loop, not any(): no generator per message
                        if key.startswith(b"BODY["):
                            break
                    else:
                        continue  # an unsolicited flag update
                    arrived += 1
                    # A consumer that read a whole batch is taken to read on: the next
                    # command goes out with the first response. In the first batch, only
                    # once half of it is in, so a peek at a few messages costs no more.
                    next_due = current > 0 or 2 * arrived >= len(batches[0])
                    if ahead and next_due and sent == current + 1 < len(batches):
                        send_next()
                    yield current, attributes
                    continue
                if limits is not None:
                    self._count(limits)
                if isinstance(event, Untagged):
                    words = event.text.split()
                    if len(words) == 2 and words[1].upper() == b"EXISTS":
                        self._exists()
                elif isinstance(event, Tagged):
                    tag = in_flight.popleft()
                    imap.tagged_commands.pop(tag, None)
                    self._check_tagged(event, tag)
                    yield current, None
                    current += 1
                    arrived = 0
        finally:
            if in_flight:
                # Stopped early (limit, break, error): the rest of the replies is still on the
                # wire; read it off, or give the connection up if that fails.
                self._drain(reader, in_flight[-1])
                for tag in in_flight:
                    imap.tagged_commands.pop(tag, None)

    def _refused(self, exc: ProtocolError) -> ProtocolError:
        """The error for a response the reader refuses (a literal over ``max_message_size``,
        a line without an end), once the connection is dropped: the rest of the response is
        still on the wire, and reading it off is what must not happen."""
        self._drop()
        if isinstance(exc, MessageTooLarge):
            return MessageTooLarge(
                f"{self._context}: {exc}", size=exc.size, limit=exc.limit, uid=exc.uid
            )
        return ProtocolError(f"{self._context}: {exc}")

    def _count(self, limits: CallLimits) -> None:
        try:
            limits.lines(1, 0)
        except ProtocolError:
            self._drop()
            raise

    def _drain(self, reader: ResponseReader, tag: bytes) -> None:
        imap = self._imap
        if not self._alive():
            return
        try:
            while True:
                event = reader.next_event()
                if event is None:
                    chunk = self._read(imap.file, reader.wanted)
                    if not chunk:
                        break
                    reader.feed(chunk)
                elif isinstance(event, Tagged) and event.tag == tag:
                    return
        except Exception:  # noqa: S110 - a connection that cannot be drained is dropped below
            pass
        self._drop()

    @staticmethod
    def _read(stream: Any, wanted: int) -> bytes:
        """The next piece of the response: the rest of a literal in one read of up to
        :data:`LITERAL_READ` (the buffered reader fills one bytes object straight from the
        socket, so a body is copied once), else one line."""
        if wanted:
            return stream.read(min(wanted, LITERAL_READ))  # type: ignore[no-any-return]
        return stream.readline(MAX_LINE)  # type: ignore[no-any-return]

    def _attributes(self, event: FetchResponse) -> dict[bytes, Any]:
        try:
            return event.attributes()
        except ProtocolError:
            self._drop()
            raise

    def _check_tagged(self, event: Tagged, tag: bytes) -> None:
        if event.tag != tag:
            self._drop()
            raise ProtocolError(f"{self._context}: unexpected tagged reply {event!r}")
        if not event.ok:
            text = self._secrets.scrub(event.text.decode("utf-8", "replace"))
            raise ServerError(f"{self._context}: FETCH failed: {text}")
