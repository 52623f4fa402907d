"""IMAP (``imap://``, ``imaps://``) as a sync :class:`~mailsync.Retriever`, over imapclient.

One connection, an :class:`imaplib.IMAP4`, carries everything. imapclient does the commands
whose answers need real parsing (LIST, STORE, MOVE, COPY, EXPUNGE, APPEND, IDLE): it is put over
that connection when the first of them comes. The path every ``sync()`` and ``messages()`` takes
is spoken directly on the imaplib connection: connect, STARTTLS, LOGIN/AUTHENTICATE, ENABLE,
SELECT/EXAMINE, UID SEARCH (criteria rendered by :mod:`mailsync.protocol.imap`), and the bulk
``UID FETCH`` through the fast sans-I/O reader of :mod:`mailsync.protocol.imap_literals`, fed from
the same socket in large reads. That is written by hand for speed, not taste: imapclient's FETCH
parser is several times slower than the wire for bodies, and importing imapclient costs more
than a whole incremental ``sync()`` against a local server, so a program that only syncs never
imports it. Everything that is not I/O (SEARCH criteria, FETCH -> Message, folder names, message
ids, cursor rules) lives in :mod:`mailsync.protocol.imap`, shared with the async backend.

Errors from imapclient, imaplib, ssl and sockets are translated here into the mailsync hierarchy,
the original chained. A broken connection is dropped, and the next call connects again.
"""

from __future__ import annotations

import contextlib
import functools
import imaplib
import os
import select
import socket
import ssl
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from mailsync._base import MessageRef, OutgoingMessage, Retriever, SyncStep, message_refs
from mailsync._config import Endpoint
from mailsync._errors import (
    AuthenticationError,
    ConfigError,
    ConnectionFailed,
    FolderNotFound,
    MailsyncError,
    MailTimeout,
    MessageNotFound,
    ProtocolError,
    ServerError,
    TemporaryFailure,
)
from mailsync._message import Folder, Message, as_bytes, header_block
from mailsync._plans import Operation, stream
from mailsync._query import Q
from mailsync.backends._tls import TLSStream
from mailsync.protocol import imap as proto
from mailsync.protocol import imap_sync, sasl
from mailsync.protocol.imap_literals import (
    MAX_LINE,
    FetchResponse,
    ResponseReader,
    Tagged,
    Untagged,
    fetch_command,
)
from mailsync.protocol.imap_sync import Batching

if TYPE_CHECKING:
    from imapclient import IMAPClient

__all__ = ["IMAPRetriever"]

#: The SASL mechanisms a password logs in with; the LOGIN command takes SASL LOGIN's place.
_SASL_PASSWORD = ("PLAIN",)
#: How long a polite LOGOUT may take when closing.
LOGOUT_TIMEOUT = 2.0
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


def _canonical(folder: str) -> str:
    return "INBOX" if folder.upper() == "INBOX" else folder


class _IMAP4(imaplib.IMAP4):
    """imaplib's connection over a plain socket, with TLS (implicit or by STARTTLS) through
    :class:`TLSStream`, which reads ciphertext in large chunks instead of two system calls per
    TLS record. ``sock`` stays the TCP socket (for timeouts and poll()); ``file`` is what
    imaplib and the fast FETCH reader read from: the socket's buffered reader or the stream.

    imaplib asks for CAPABILITY right after the greeting, even when the greeting carried them
    in a ``[CAPABILITY ...]`` code (Dovecot's does, and imaplib files it with the untagged
    responses): those are taken, sparing the round trip. Only the greeting's: after STARTTLS
    they are asked again, as anything said before TLS is not trusted.
    """

    _greeted = False

    def __init__(
        self, host: str, port: int, *, timeout: float | None, tls: ssl.SSLContext | None
    ) -> None:
        self._implicit_tls = tls
        self._stream: TLSStream | None = None
        super().__init__(host, port, timeout)

    def open(self, host: str = "", port: int = 143, timeout: float | None = None) -> None:
        super().open(host, port, timeout)
        if self._implicit_tls is None:
            return
        try:
            self._wrap(self._implicit_tls)
        except BaseException:
            # imaplib shuts the connection down when the greeting fails, not when open() does.
            self.file.close()
            self.sock.close()
            raise

    def _wrap(self, context: ssl.SSLContext) -> None:
        stream = TLSStream(self.sock, context, self.host)
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
            raise self.error(f"STARTTLS refused: {_text(data)}")
        self._wrap(ssl_context)
        self._tls_established = True
        self._get_capabilities()
        return typ, data

    def read(self, size: int) -> bytes:
        """A literal of ``size`` bytes for imaplib (and imapclient), read in bounded pieces
        (see :data:`LITERAL_READ`); shorter only when the connection ends."""
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
        if self._stream is not None:
            self._stream.sendall(bytes(data))
        else:
            super().send(data)

    def tls_version(self) -> str | None:
        """The TLS version in use, or None in plaintext."""
        return self._stream.version() if self._stream is not None else None


def _open(endpoint: Endpoint) -> imaplib.IMAP4:
    """A connection that has read the greeting and the capabilities."""
    tls = endpoint.ssl_context() if endpoint.tls == "ssl" else None
    imap = _IMAP4(endpoint.host, endpoint.port, timeout=endpoint.timeout.connect_timeout, tls=tls)
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


def _offered(imap: imaplib.IMAP4) -> frozenset[bytes]:
    return frozenset(str(c).upper().encode() for c in imap.capabilities)


@functools.cache
def _adopting_client() -> type[IMAPClient]:
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


class IMAPRetriever(Retriever):
    """Reads and changes an IMAP account; get one with ``mailsync.connect("imaps://...")``.

    Connects on first use and reconnects after a broken connection. Reading never marks
    anything seen (``BODY.PEEK``); folders are opened read-only (EXAMINE) unless changing.
    On Gmail (X-GM-EXT-1) messages carry labels and thread ids, and ``capabilities`` gains
    ``"labels"`` and ``"threads"`` once connected.
    ``batch_size`` in the URL query or options fixes the UIDs per FETCH (by default
    ``messages()`` asks for 500 at a time, and ``sync()`` sizes its batches as
    :class:`~mailsync.protocol.imap_sync.Batching` says).
    """

    scheme = "imap"
    capabilities = frozenset({"folders", "flags", "move", "delete", "append", "search", "idle"})
    #: IDLE is re-issued after this many seconds (RFC 2177: servers may drop a client idle for
    #: 30 minutes).
    idle_renew: float = 25 * 60.0
    #: Without IDLE, the longest wait between two NOOPs within one ``poll_interval``.
    poll_most: float = 60.0

    def __init__(self, endpoint: Endpoint, *, state: Any = None) -> None:
        super().__init__(endpoint, state=state)
        #: How FETCH batches are sized (``batch_size`` fixes them).
        self.batching = Batching.from_params(endpoint.params)
        self._imap: imaplib.IMAP4 | None = None
        self._client: IMAPClient | None = None
        self._caps: frozenset[bytes] = frozenset()
        self._selected: tuple[str, bool] | None = None
        self._status: proto.FolderStatus | None = None
        self._lock = threading.RLock()
        self._wake: tuple[int, int] | None = None
        self._new_mail = False
        #: FETCH streams under way (in this thread or another): close() does not talk over them.
        self._streams = 0
        #: Connections whose LOGOUT is under way: close() cuts it short.
        self._ending: set[imaplib.IMAP4] = set()

    # -- connection ---------------------------------------------------------------------------

    def _session(self) -> imaplib.IMAP4:
        """The connection, opened and logged in on first use."""
        if self._imap is None:
            self._imap = self._connect()
        return self._imap

    def _conn(self) -> IMAPClient:
        """imapclient over the same connection, for the commands it parses for us."""
        imap = self._session()
        client = self._client
        if client is None or client._imap is not imap:
            # imapclient takes the capabilities from an untagged CAPABILITY response where it
            # finds one, instead of asking the server again.
            untagged: dict[str, Any] = imap.untagged_responses
            untagged["CAPABILITY"] = [b" ".join(sorted(self._caps))]
            with self._errors():
                client = _adopting_client()(imap, self.endpoint)
            self._client = client
        return client

    def _connect(self) -> imaplib.IMAP4:
        with self._errors():
            imap = _open(self.endpoint)
        try:
            with self._errors():
                if self.endpoint.tls == "starttls":
                    self._starttls(imap)
                self._caps = self._authenticate(imap)
                if b"X-GM-EXT-1" in self._caps:  # Gmail: labels and threads come with FETCH
                    self.capabilities = type(self).capabilities | {"labels", "threads"}
        except BaseException:
            with contextlib.suppress(Exception):
                imap.shutdown()
            raise
        self._client = None
        self._selected = None
        self._status = None
        return imap

    def _starttls(self, imap: imaplib.IMAP4) -> None:
        if b"STARTTLS" not in _offered(imap):
            # Fail closed: never send credentials in the clear because the server said nothing.
            raise ConnectionFailed(
                f"{self.endpoint.display} does not offer STARTTLS; refusing to continue "
                "without TLS (use tls='ssl' for implicit TLS, or tls='none' to allow plaintext)"
            )
        imap.starttls(self.endpoint.ssl_context())

    def _authenticate(self, imap: imaplib.IMAP4) -> frozenset[bytes]:
        """Log in (see :mod:`mailsync.protocol.sasl` for the mechanism); returns the
        capabilities the server has after login."""
        endpoint = self.endpoint
        user = endpoint.username or ""
        offered = _offered(imap)
        mechanisms = [c[5:].decode("ascii", "replace") for c in offered if c.startswith(b"AUTH=")]
        try:
            if endpoint.token is not None:
                token = endpoint.token.fresh()  # a callable is asked at every (re)connect
                mechanism = sasl.choose(mechanisms, token=True)
                if mechanism is None:
                    raise sasl.no_mechanism(endpoint.display, mechanisms, token=True)
                exchange = sasl.exchange(
                    mechanism, user, token, host=endpoint.host, port=endpoint.port
                )
                reply = imap.authenticate(mechanism, exchange.respond)
            elif endpoint.password is None:
                raise AuthenticationError(
                    f"{endpoint.display}: no password or token given for {user or 'the login'}"
                )
            elif sasl.choose(mechanisms, token=False, usable=_SASL_PASSWORD) is not None:
                # PLAIN carries UTF-8 user names and passwords, which LOGIN's strings cannot.
                exchange = sasl.exchange("PLAIN", user, endpoint.password.reveal())
                if b"SASL-IR" in offered:
                    reply = self._authenticate_inline(imap, exchange)
                else:
                    reply = imap.authenticate("PLAIN", exchange.respond)
            else:
                reply = self._login(imap, offered, user, endpoint.password.reveal())
        except imaplib.IMAP4.abort:
            raise  # the connection broke: translated as such by the caller
        except imaplib.IMAP4.error as exc:
            # The server's text may echo the login but never the secret; still keep it short.
            raise AuthenticationError(
                f"{endpoint.display}: the server refused the credentials for {user!r}"
            ) from exc
        return self._capabilities_after_login(imap, reply)

    @staticmethod
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
            raise imaplib.IMAP4.error(_text(data))
        imap.state = "AUTH"
        return typ, data

    def _login(
        self, imap: imaplib.IMAP4, offered: frozenset[bytes], user: str, password: str
    ) -> tuple[str, Any]:
        if b"LOGINDISABLED" in offered:
            raise AuthenticationError(
                f"{self.endpoint.display} refuses LOGIN without TLS (LOGINDISABLED); use TLS"
            )
        if not (user + password).isascii() or any(c in user + password for c in "\r\n\0"):
            raise AuthenticationError(
                f"{self.endpoint.display}: LOGIN cannot carry line breaks or non-ASCII "
                "characters, and the server offers no AUTH=PLAIN"
            )
        # imaplib quotes the password but sends the user name as it is.
        return imap.login(proto.quote(user).decode("ascii"), password)

    def _capabilities_after_login(
        self, imap: imaplib.IMAP4, reply: tuple[str, Any]
    ) -> frozenset[bytes]:
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

    def _has(self, capability: bytes) -> bool:
        return capability in self._caps

    def _disconnect(self) -> None:
        imap, self._imap, self._client = self._imap, None, None
        self._selected = None
        self._status = None
        if imap is None:
            return
        self._ending.add(imap)
        try:
            with contextlib.suppress(Exception):
                imap.sock.settimeout(LOGOUT_TIMEOUT)
                imap.logout()
        finally:
            self._ending.discard(imap)
        with contextlib.suppress(Exception):
            imap.shutdown()

    def _interrupt(self, imap: imaplib.IMAP4 | None) -> None:
        """Wake whoever waits on a connection: its reads end as if the server had hung up
        (the socket is shut down, not closed, so a reader in another thread sees an end of
        stream, not a file closed under it)."""
        if imap is not None:
            with contextlib.suppress(OSError):
                imap.sock.shutdown(socket.SHUT_RDWR)

    def _drop(self) -> None:
        """Forget a broken connection without talking to the server again."""
        imap, self._imap, self._client = self._imap, None, None
        self._selected = None
        self._status = None
        if imap is not None:
            with contextlib.suppress(Exception):
                imap.shutdown()

    def close(self) -> None:
        """Close the connection and stop ``watch()``; safe to call from another thread, where
        it ends a ``watch()`` at once, whatever it is doing (an IDLE, a poll wait, a backoff,
        a fetch)."""
        self._stop.set()
        self._signal_wake()
        for ending in list(self._ending):  # a LOGOUT under way in another thread
            self._interrupt(ending)
        if self._streams:
            # A FETCH is being read (maybe by another thread): LOGOUT would talk over it.
            # Shutting the socket down wakes that reader, which then drops the connection.
            self._interrupt(self._imap)
        with self._lock:  # an IDLE wait gives the connection back at once
            if not self._streams:
                self._disconnect()
            wake, self._wake = self._wake, None
        if wake is not None:
            for fd in wake:
                with contextlib.suppress(OSError):
                    os.close(fd)

    # -- error translation --------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self, folder: str | None = None) -> Iterator[None]:
        """Translate imapclient/imaplib/socket errors; drop the connection when it broke."""
        try:
            yield
        except MailsyncError as exc:
            if isinstance(exc, ConnectionFailed | MailTimeout):
                self._drop()
            raise
        except Exception as exc:
            translated = self._translated(exc, folder)
            if translated is None:
                raise
            raise translated from exc

    def _translated(self, exc: Exception, folder: str | None = None) -> MailsyncError | None:
        """The mailsync error for a library or socket error (None: not ours to translate);
        drops the connection when the error means it is no longer usable."""
        context = self.endpoint.display
        # imapclient's errors can only come from imapclient, which may never have been loaded.
        imapclient_errors: Any = sys.modules.get("imapclient.exceptions")
        if imapclient_errors and isinstance(exc, imapclient_errors.LoginError):
            return AuthenticationError(f"{context}: the server refused the login")
        if isinstance(exc, imaplib.IMAP4.readonly):
            return ServerError(f"{context}: the folder is read-only ({exc})")
        if isinstance(exc, imaplib.IMAP4.abort):
            self._drop()
            if "timed out" in str(exc).lower():
                return MailTimeout(f"{context}: the server did not answer in time")
            return ConnectionFailed(f"{context}: connection lost ({exc})")
        if imapclient_errors and isinstance(exc, imapclient_errors.ProtocolError):
            self._drop()
            return ProtocolError(f"{context}: malformed response ({exc})")
        if isinstance(exc, imaplib.IMAP4.error):
            return self._refusal(exc, folder)
        if isinstance(exc, TimeoutError):
            self._drop()
            return MailTimeout(f"{context}: the server did not answer in time")
        if isinstance(exc, ssl.SSLCertVerificationError):
            self._drop()
            return ConnectionFailed(f"{context}: certificate verification failed ({exc})")
        if isinstance(exc, OSError):
            self._drop()
            return ConnectionFailed(f"{context}: {exc}")
        if isinstance(exc, ValueError | IndexError | KeyError | TypeError):
            # imapclient's parsers fail this way on responses they cannot read.
            self._drop()
            return ProtocolError(f"{context}: unreadable response ({exc!r})")
        return None

    def _refusal(self, exc: BaseException, folder: str | None) -> MailsyncError:
        text = str(exc)
        upper = text.upper()
        context = self.endpoint.display
        if folder is not None and any(marker in upper for marker in _NONEXISTENT):
            return FolderNotFound(f"{context}: no folder {folder!r}")
        if any(marker in upper for marker in _AUTH_FAILED):
            return AuthenticationError(f"{context}: {text}")
        if "BAD" in upper.split(":")[-1][:8] or "PARSE" in upper:
            return ProtocolError(f"{context}: {text}")
        return ServerError(f"{context}: {text}")

    # -- folders ------------------------------------------------------------------------------

    def folders(self) -> list[Folder]:
        """Every folder, with delimiter and special use (RFC 6154, or guessed from names)."""
        with self._errors():
            entries = self._conn().list_folders()
        return proto.folders_from_list(
            (flags, delim, name if isinstance(name, bytes) else str(name).encode())
            for flags, delim, name in entries
        )

    def _select(self, folder: str, *, readonly: bool, fresh: bool = True) -> proto.FolderStatus:
        """Open ``folder`` (EXAMINE when ``readonly``) and return its status.

        A folder already open read-write serves reads too; ``fresh=False`` reuses the status
        of the folder already open instead of asking again.
        """
        imap = self._session()
        current = self._selected
        if (
            not fresh
            and current is not None
            and current[0] == folder
            and (current[1] == readonly or not current[1])
            and self._status is not None
        ):
            return self._status
        with self._errors(folder):
            wire = proto.quote(proto.encode_folder(folder))
            if self._has(b"CONDSTORE"):
                # Enables CONDSTORE (RFC 7162) on the way: SELECT reports HIGHESTMODSEQ, which
                # the sync cursor records, without a round trip for ENABLE.
                wire += b" (CONDSTORE)"
            typ, data = imap.select(wire, readonly)  # type: ignore[arg-type]
            if typ != "OK":
                command = "EXAMINE" if readonly else "SELECT"
                raise imaplib.IMAP4.error(f"{command} failed: {_text(data)}")
            status = proto.FolderStatus.from_select(_select_codes(imap.untagged_responses))
        self._selected = (folder, readonly)
        self._status = status
        return status

    # -- reading ------------------------------------------------------------------------------

    def messages(
        self,
        folder: str = "INBOX",
        *,
        query: Q | None = None,
        headers_only: bool = False,
        limit: int | None = None,
    ) -> Iterator[Message]:
        """The messages of ``folder`` in ascending UID order, fetched in bounded batches.

        The query goes to the server as SEARCH; what SEARCH cannot say exactly is checked
        again client-side with :meth:`Q.matches`.
        """
        folder = _canonical(folder)
        if limit is not None and limit <= 0:
            return
        status = self._select(folder, readonly=True)
        plan = proto.search_plan(query)
        uids = self._search(plan.criteria, plan.charset)
        if plan.exact and limit is not None:
            uids = uids[:limit]
        recheck = query is not None and not plan.exact
        full_for_query = recheck and query is not None and query.needs_body
        items = proto.FETCH_HEADERS if headers_only and not full_for_query else proto.FETCH_BODY
        count = 0
        # messages() streams message by message: its batches are sized for round trips only.
        batches = list(self.batching.streaming().sizer().split(uids))
        # Filtered client-side with a limit, the end is unknown: do not fetch ahead of it.
        ahead = not (recheck and limit is not None)
        for _index, message in self._fetch_messages(folder, status, batches, items, ahead=ahead):
            if message is None:
                continue
            if recheck and query is not None and not query.matches(message):
                continue
            if headers_only and not message.headers_only:
                message = message.replace(raw=header_block(message.raw), headers_only=True)
            yield message
            count += 1
            if limit is not None and count >= limit:
                return

    def _search(self, criteria: list[proto.Criterion], charset: str | None) -> list[int]:
        imap = self._session()
        # 8-bit text goes as a LITERAL+ literal where offered, else quoted UTF-8 after CHARSET.
        wire = proto.render_criteria(criteria or [b"ALL"], literal_plus=self._has(b"LITERAL+"))
        if charset:
            wire = b"CHARSET " + charset.encode("ascii") + b" " + wire
        with self._errors():
            typ, data = imap.uid("SEARCH", wire)  # type: ignore[arg-type]
            if typ != "OK":
                raise imaplib.IMAP4.error(f"SEARCH failed: {_text(data)}")
        return proto.search_uids(data)

    def _fetch_items(self, base: str) -> str:
        return f"{base} {proto.FETCH_GMAIL}" if self._has(b"X-GM-EXT-1") else base

    def _fetch_messages(
        self,
        folder: str,
        status: proto.FolderStatus,
        batches: Sequence[list[int]],
        items: str,
        *,
        ahead: bool = True,
    ) -> Iterator[tuple[int, Message | None]]:
        """The messages of the UID batches as ``(index, message)``, where ``index`` is the
        oldest batch not yet complete, and ``(index, None)`` once batch ``index`` is complete
        (see :meth:`_fetch_batches`).

        A message is taken by its UID, not by the command it answers: a server may run two
        pipelined UID FETCH commands at once (Dovecot does), and the responses to the next
        batch can come before the current batch's completion.
        """
        # The UIDs asked for and not yet seen: at most two batches are in flight, and the one
        # after them goes out only once the oldest is complete.
        wanted = {uid for batch in batches[:2] for uid in batch}
        fetched = self._fetch_batches(batches, self._fetch_items(items), ahead=ahead)
        for index, attributes in fetched:
            if attributes is None:
                if index + 2 < len(batches):
                    wanted.update(batches[index + 2])
                yield index, None
                continue
            uid = attributes.get(b"UID")
            if not isinstance(uid, int):
                self._drop()
                raise ProtocolError(f"{self.endpoint.display}: a FETCH response without a UID")
            if uid not in wanted:
                continue  # an unsolicited FETCH (a flag change) for another message
            wanted.discard(uid)
            yield (
                index,
                proto.message_from_fetch(attributes, folder=folder, uidvalidity=status.uidvalidity),
            )

    def _fetch(self, uids: list[int], items: str) -> Iterator[dict[bytes, Any]]:
        """``UID FETCH`` of ``uids`` in one command: the attributes of each response that
        carries a body section, as they arrive."""
        for _index, attributes in self._fetch_batches([uids] if uids else [], items):
            if attributes is not None:
                yield attributes

    def _fetch_batches(
        self, batches: Sequence[list[int]], items: str, *, ahead: bool = True
    ) -> Iterator[tuple[int, dict[bytes, Any] | None]]:
        """``UID FETCH`` of each batch in turn, through the fast reader: ``(index,
        attributes)`` for each response that carries a body section, as it arrives (bodies
        are never all held at once), where ``index`` is the oldest batch not yet complete
        (the response may answer the next one's command), then ``(index, None)`` once that
        batch is complete.

        With ``ahead``, the next batch's command goes out while the current batch is still
        arriving, so the server does not wait a round trip at each boundary (over a 50 ms
        path, 20 boundaries cost a second). A consumer that stops early then also waits for
        that next batch to be read off.
        """
        # The commands go out on the imaplib connection, with tags imaplib hands out and
        # forgets again below, and the replies are read from imaplib's file (the buffered
        # socket reader or the TLS stream); imaplib's state is untouched between commands,
        # so it (and imapclient) carries on.
        imap = self._session()
        stream = imap.file
        reader = ResponseReader()
        in_flight: deque[bytes] = deque()  # the tags sent and not yet completed, oldest first
        sent = current = arrived = 0  # batches sent; the batch being read; its responses so far

        def send_next() -> None:
            nonlocal sent
            with self._errors():
                tag = imap._new_tag()
                imap.send(fetch_command(tag.decode("ascii"), proto.uid_set(batches[sent]), items))
            in_flight.append(tag)
            sent += 1

        self._streams += 1
        try:
            while current < len(batches):
                if not in_flight:
                    send_next()
                event = reader.next_event()
                if event is None:
                    # Translated by hand: a context manager around every read costs too much.
                    try:
                        chunk = self._read(stream, reader.wanted)
                    except Exception as exc:
                        translated = self._translated(exc)
                        if translated is None:
                            raise
                        raise translated from exc
                    if not chunk:
                        self._drop()
                        raise ConnectionFailed(
                            f"{self.endpoint.display}: the server closed the connection"
                        )
                    reader.feed(chunk)
                    continue
                if isinstance(event, FetchResponse):
                    attributes = self._attributes(event)
                    if not any(key.startswith(b"BODY[") for key in attributes):
                        continue  # an unsolicited flag update
                    arrived += 1
                    # A consumer that read a whole batch is taken to read on: the next
                    # command goes out with the first response. In the first batch, only
                    # once half of it is in, so a peek at a few messages costs no more.
                    next_due = current > 0 or 2 * arrived >= len(batches[0])
                    if ahead and next_due and sent == current + 1 < len(batches):
                        send_next()
                    yield current, attributes
                elif isinstance(event, Untagged):
                    self._note_untagged(event)
                elif isinstance(event, Tagged):
                    tag = in_flight.popleft()
                    imap.tagged_commands.pop(tag, None)
                    self._check_tagged(event, tag)
                    yield current, None
                    current += 1
                    arrived = 0
        finally:
            self._streams -= 1
            if in_flight:
                # Stopped early (limit, break, error): the rest of the replies is still on the
                # wire; read it off, or give the connection up if that fails.
                self._drain(reader, in_flight[-1])
                for tag in in_flight:
                    imap.tagged_commands.pop(tag, None)

    def _drain(self, reader: ResponseReader, tag: bytes) -> None:
        imap = self._imap
        if imap is None:
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

    def _note_untagged(self, event: Untagged) -> None:
        words = event.text.split()
        if len(words) == 2 and words[1].upper() == b"EXISTS":
            self._new_mail = True  # arrived during this FETCH: the next wait returns at once

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
            raise ProtocolError(f"{self.endpoint.display}: unexpected tagged reply {event!r}")
        if not event.ok:
            text = event.text.decode("utf-8", "replace")
            raise ServerError(f"{self.endpoint.display}: FETCH failed: {text}")

    def get(self, id: str) -> Message:
        """One message by its id (``"<folder>;<uidvalidity>;<uid>"``).

        Raises:
            MessageNotFound: The id is malformed, its folder is gone or was recreated, or no
                message has that UID any more.
        """
        ref = proto.parse_message_id(id)
        folder, uid = self._locate(ref, readonly=True)
        status = self._select(folder, readonly=True, fresh=False)
        fetched = self._fetch_messages(folder, status, [[uid]], proto.FETCH_BODY)
        found = [message for _index, message in fetched if message is not None]
        if found:
            return found[0]
        raise MessageNotFound(f"{self.endpoint.display}: no message {id!r}")

    def _locate(self, ref: proto.MessageRef, *, readonly: bool) -> tuple[str, int]:
        """Open the folder a reference names and return ``(folder, uid)``."""
        if isinstance(ref, proto.GmailRef):
            return self._locate_gmail(ref, readonly=readonly)
        try:
            status = self._select(ref.folder, readonly=readonly, fresh=False)
        except FolderNotFound as exc:
            raise MessageNotFound(
                f"{self.endpoint.display}: folder {ref.folder!r} is gone"
            ) from exc
        if status.uidvalidity != ref.uidvalidity:
            status = self._select(ref.folder, readonly=readonly)  # maybe just stale
        if status.uidvalidity != ref.uidvalidity:
            raise MessageNotFound(
                f"{self.endpoint.display}: folder {ref.folder!r} was recreated since that id "
                "was given out"
            )
        return ref.folder, ref.uid

    def _locate_gmail(self, ref: proto.GmailRef, *, readonly: bool) -> tuple[str, int]:
        everything = next((f.name for f in self.folders() if f.special_use == "\\All"), None)
        if everything is None:
            raise MessageNotFound(f"{self.endpoint.display}: no \\All folder to look in")
        self._select(everything, readonly=readonly)
        uids = self._search([b"X-GM-MSGID", str(ref.msgid).encode()], None)
        if not uids:
            raise MessageNotFound(f"{self.endpoint.display}: no message {ref.msgid}")
        return everything, uids[0]

    # -- sync and watch -----------------------------------------------------------------------

    def _sync_steps(
        self,
        folder: str,
        cursor: dict[str, Any] | None,
        known: Callable[[Iterable[str]], set[str]],
    ) -> Iterator[SyncStep]:
        folder = _canonical(folder)
        status = self._select(folder, readonly=True)
        self._forget_new_mail()
        plan = imap_sync.sync_steps(folder, cursor, status, known, self.batching)
        yield from stream(plan, self._perform, translate=self._translate)

    def _perform(self, op: Operation) -> Any:
        """Performs the operations of :func:`mailsync.protocol.imap_sync.sync_steps`."""
        if isinstance(op, imap_sync.Fetch):
            self._reselect(op.folder, op.uidvalidity)
            items = self._fetch_items(op.items) if op.gmail else op.items
            return list(self._fetch(list(op.uids), items))
        if isinstance(op, imap_sync.Search):
            self._reselect(op.folder, op.uidvalidity)
            return self._search(list(op.criteria), None)
        raise TypeError(f"not an IMAP sync operation: {op!r}")

    def _reselect(self, folder: str, uidvalidity: int) -> None:
        """Select ``folder`` again if another one was selected meanwhile (a caller's other
        call between two messages of a sync), and check it is still the same folder."""
        status = self._select(folder, readonly=True, fresh=False)
        if status.uidvalidity != uidvalidity:
            raise TemporaryFailure(
                f"{self.endpoint.display}: folder {folder!r} was replaced while being read "
                "(UIDVALIDITY changed); read it again"
            )

    def _translate(self, exc: Exception) -> MailsyncError:
        translated = self._translated(exc)
        if translated is None:
            raise exc
        return translated

    def _wait_for_change(self, folder: str, timeout: float) -> None:
        """IDLE (RFC 2177) until new mail, ``timeout`` or :meth:`close`; NOOP polling on
        servers without IDLE."""
        if self._stop.is_set():
            return
        with self._lock:
            folder = _canonical(folder)
            self._select(folder, readonly=True, fresh=False)
            if self._forget_new_mail():
                return  # announced while the last sync ran: IDLE would not say it again
            if self._has(b"IDLE"):
                self._idle(timeout)
            else:
                self._poll(timeout)

    def _forget_new_mail(self) -> bool:
        """Whether EXISTS arrived unasked since the last call (during a FETCH, or in the
        responses imaplib collected), forgetting it."""
        seen, self._new_mail = self._new_mail, False
        imap = self._imap
        untagged: dict[str, Any] = imap.untagged_responses if imap is not None else {}
        if untagged.pop("EXISTS", None):
            seen = True
        return seen

    def _idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        client: IMAPClient = self._conn()
        while not self._stop.is_set():
            until = min(deadline, time.monotonic() + self.idle_renew)
            with self._errors():
                client.idle()
            changed = self._idle_wait(client._imap, until)
            if not self._is_current(client):
                return  # dropped while waiting
            if self._stop.is_set():
                # close() is waiting for this connection: end IDLE politely, but briefly.
                with contextlib.suppress(Exception):
                    client.socket().settimeout(LOGOUT_TIMEOUT)
                    client.idle_done()
                return
            with self._errors():
                client.idle_done()
            if changed or time.monotonic() >= deadline:
                return

    def _is_current(self, client: IMAPClient) -> bool:
        return self._client is client

    def _idle_wait(self, imap: imaplib.IMAP4, until: float) -> bool:
        """Read IDLE responses until EXISTS (True), ``until`` or a stop request (False)."""
        sock = imap.sock
        wake_fd = self._wake_pipe()[0]
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        poller.register(wake_fd, select.POLLIN)
        while not self._stop.is_set():
            if self._has_buffered(imap, sock) and self._idle_line(imap):
                return True
            remaining = until - time.monotonic()
            if remaining <= 0:
                return False
            events = dict(poller.poll(max(1, int(min(remaining, 60.0) * 1000))))
            if wake_fd in events:
                return False
            if sock.fileno() in events and self._idle_line(imap):
                return True
        return False

    def _idle_line(self, imap: imaplib.IMAP4) -> bool:
        with self._errors():
            line = imap._get_line()
        words = line.split()
        if len(words) >= 2 and words[0] == b"*" and words[1].upper() == b"BYE":
            self._drop()
            raise ConnectionFailed(f"{self.endpoint.display}: the server ended the session")
        return len(words) >= 3 and words[0] == b"*" and words[2].upper() in (b"EXISTS",)

    def _has_buffered(self, imap: imaplib.IMAP4, sock: socket.socket) -> bool:
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
            sock.settimeout(self.endpoint.timeout.read)

    def _poll(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        imap = self._session()
        while not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._stop.wait(min(remaining, self.poll_most))
            if self._stop.is_set():
                return
            with self._errors():
                imap.noop()
            changed = self._forget_new_mail()
            # imaplib files every unasked response (FETCH flag changes, EXPUNGE ...) until
            # someone takes it; only EXISTS matters here, and a watch may poll for months.
            untagged: dict[str, Any] = imap.untagged_responses
            untagged.clear()
            if changed:
                return

    def _wake_pipe(self) -> tuple[int, int]:
        if self._wake is None:
            read_fd, write_fd = os.pipe()
            os.set_blocking(read_fd, False)
            os.set_blocking(write_fd, False)
            self._wake = (read_fd, write_fd)
        with contextlib.suppress(OSError):
            os.read(self._wake[0], 4096)  # forget wake-ups nobody waited for
        return self._wake

    def _signal_wake(self) -> None:
        wake = self._wake
        if wake is not None:
            with contextlib.suppress(OSError):
                os.write(wake[1], b"x")

    # -- changing -----------------------------------------------------------------------------

    def _grouped(self, msgs: MessageRef | Sequence[MessageRef]) -> dict[str, list[int]]:
        """Ids grouped by folder (each checked for UIDVALIDITY), folders in first-seen order."""
        groups: dict[str, list[int]] = {}
        for ref in message_refs(msgs):
            folder, uid = self._locate(proto.parse_message_id(ref), readonly=False)
            groups.setdefault(folder, []).append(uid)
        return groups

    def set_flags(
        self,
        msgs: MessageRef | Sequence[MessageRef],
        *,
        add: Iterable[str] = (),
        remove: Iterable[str] = (),
    ) -> None:
        """Add and remove flags (``\\Seen``, ``\\Flagged``, keywords ...) with UID STORE."""
        try:
            to_add, to_remove = proto.store_flags(add), proto.store_flags(remove)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        for folder, uids in self._grouped(msgs).items():
            self._select(folder, readonly=False, fresh=False)
            with self._errors(folder):
                client = self._conn()
                if to_add:
                    client.add_flags(uids, to_add, silent=True)
                if to_remove:
                    client.remove_flags(uids, to_remove, silent=True)

    def move(self, msgs: MessageRef | Sequence[MessageRef], folder: str) -> None:
        """Move messages with MOVE (RFC 6851), else COPY + ``\\Deleted`` + UID EXPUNGE.

        Raises:
            FolderNotFound: The target folder does not exist.
        """
        target = _canonical(folder)
        for source, uids in self._grouped(msgs).items():
            if source == target:
                continue
            self._select(source, readonly=False, fresh=False)
            with self._errors(target):
                client = self._conn()
                if self._has(b"MOVE"):
                    client.move(uids, proto.encode_folder(target))
                else:
                    client.copy(uids, proto.encode_folder(target))
                    self._expunge(client, uids)

    def _expunge(self, client: IMAPClient, uids: list[int]) -> None:
        client.add_flags(uids, ["\\Deleted"], silent=True)
        if self._has(b"UIDPLUS"):
            client.uid_expunge(uids)
        else:
            client.expunge()  # without UIDPLUS EXPUNGE cannot be limited to these UIDs

    def delete(self, msgs: MessageRef | Sequence[MessageRef], *, permanent: bool = False) -> None:
        """Move messages to the ``\\Trash`` folder; remove them for good when ``permanent``,
        when they already are in the Trash, or when the account has no Trash folder."""
        groups = self._grouped(msgs)
        trash = None if permanent else self._trash()
        for source, uids in groups.items():
            self._select(source, readonly=False, fresh=False)
            with self._errors(source):
                client = self._conn()
                if trash is None or trash == source:
                    self._expunge(client, uids)
                elif self._has(b"MOVE"):
                    client.move(uids, proto.encode_folder(trash))
                else:
                    client.copy(uids, proto.encode_folder(trash))
                    self._expunge(client, uids)

    def _trash(self) -> str | None:
        return next((f.name for f in self.folders() if f.special_use == "\\Trash"), None)

    def append(
        self, folder: str, message: OutgoingMessage, flags: Iterable[str] = ()
    ) -> str | None:
        """APPEND a message; returns its id when the server says it (UIDPLUS' APPENDUID).

        Raises:
            FolderNotFound: The folder does not exist.
        """
        folder = _canonical(folder)
        try:
            flag_list = proto.store_flags(flags)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        data = as_bytes(message)
        with self._errors(folder):
            response = self._conn().append(proto.encode_folder(folder), data, flag_list)
        appended = proto.parse_appenduid(response or b"")
        if appended is None:
            return None
        return proto.format_message_id(folder, appended[0], appended[1])


def _text(data: Sequence[Any]) -> str:
    """The text of a tagged NO/BAD reply as imaplib hands it over."""
    last = data[-1] if data else b""
    return last.decode("utf-8", "replace") if isinstance(last, bytes) else str(last)


def _select_codes(untagged: dict[str, list[Any]]) -> dict[bytes, Any]:
    """What SELECT reported, from imaplib's untagged responses (it files each ``OK [CODE n]``
    under the code), in the shape :meth:`FolderStatus.from_select` reads."""
    wanted = ("UIDVALIDITY", "UIDNEXT", "EXISTS", "HIGHESTMODSEQ")
    return {key.encode(): untagged[key][-1] for key in wanted if untagged.get(key)}
