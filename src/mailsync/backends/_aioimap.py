"""One logged-in IMAP connection for the async IMAP backend, over aioimaplib: :class:`Session`.

It owns the I/O of the async IMAP client: connecting (implicit TLS, STARTTLS that fails
closed, plaintext only when asked), logging in (the mechanism :mod:`mailsync.protocol.sasl`
picks, or LOGIN), running commands with read timeouts, noticing a dropped connection at once,
IDLE, and translating every aioimaplib/asyncio/socket error into the mailsync hierarchy.
aioimaplib holds the conversation; the bulk ``UID FETCH`` of bodies is read off the same
transport by the pure reader of :mod:`mailsync.protocol.imap_literals` (aioimaplib's own parser
is several times slower).

aioimaplib is GPL-3.0 and lives in the ``async`` extra: this module,
:mod:`mailsync.backends._aioimap_wire` (the commands, the FETCH reader and the guarded protocol
class this session uses) and :mod:`mailsync.backends.imap_async` are the only ones that import
it. Nothing here blocks the
event loop or calls ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aioimaplib

from mailsync._config import Endpoint
from mailsync._errors import (
    AuthenticationError,
    ConfigError,
    ConnectionFailed,
    FolderNotFound,
    MailsyncError,
    MailTimeout,
    ProtocolError,
    SecretScrubber,
    ServerError,
    TemporaryFailure,
    map_exceptions,
)
from mailsync.backends._aioimap_wire import (
    FetchCommand,
    FetchReader,
    SASLCommand,
    WireCommand,
    discard,
    guarded_protocol,
    parser_idle,
    quote,
    text_of,
    use_greeting_capabilities,
)
from mailsync.backends._limits import CallLimits
from mailsync.protocol import sasl
from mailsync.protocol.imap import FolderStatus, capability_code
from mailsync.protocol.imap_lines import fetch_attributes, is_exists, select_status
from mailsync.protocol.imap_literals import (
    Tagged,
    fetch_command,
)

__all__ = ["Mailbox", "Session"]

_T = TypeVar("_T")

#: Response codes (RFC 5530 and RFC 3501) that say which mailsync error a NO means.
_NO_CODES: dict[str, type[ServerError]] = {
    "NONEXISTENT": FolderNotFound,
    "TRYCREATE": FolderNotFound,
    "UNAVAILABLE": TemporaryFailure,
    "INUSE": TemporaryFailure,
    "EXPUNGEISSUED": TemporaryFailure,
}
_AUTH_CODES = frozenset({"AUTHENTICATIONFAILED", "AUTHORIZATIONFAILED", "EXPIRED"})
_CODE_RE = re.compile(rb"^\[([A-Za-z0-9-]+)")
_NUMBER_BEFORE_RE = re.compile(rb"^(\d+) (EXISTS|RECENT|EXPUNGE)\b", re.IGNORECASE)
_CRLF = b"\r\n"
_LINE_BREAKS = re.compile(r"[\r\n\0]")
#: The SASL mechanisms a password logs in with; the LOGIN command takes SASL LOGIN's place.
_SASL_PASSWORD = ("PLAIN",)


@dataclass(slots=True)
class Mailbox:
    """The selected folder: its wire name, and what SELECT said about it."""

    name: str
    status: FolderStatus

    @property
    def uidvalidity(self) -> int:
        """The folder's UIDVALIDITY."""
        return self.status.uidvalidity


class Session:
    """One logged-in aioimaplib connection: commands with timeouts, errors translated, and a
    dropped connection noticed at once (aioimaplib itself would wait for the timeout).

    Commands are serialised with :attr:`lock` by the caller, which keeps SELECT and the
    commands that depend on it together.

    Every ``* n EXISTS`` the server sends is counted in :attr:`announced`, whatever was
    running (aioimaplib drops those that come during another command), and every SELECT in
    :attr:`selects`: a caller that noted both before a SEARCH knows, without asking the
    server again, whether mail may have come since (the server announces new mail in its
    next response, RFC 3501 section 5.2, IDLE's included).
    """

    #: Read bulk FETCH responses with the pure reader (False: aioimaplib's own parser).
    fast_fetch = True

    def __init__(self, endpoint: Endpoint, tls_context: ssl.SSLContext | None) -> None:
        self.endpoint = endpoint
        self.context = f"IMAP {endpoint.host}:{endpoint.port}"
        self.tls_context = tls_context
        self.read_timeout = endpoint.timeout.read
        self.limits = CallLimits(endpoint)
        self.max_message_size = endpoint.max_message_size
        self.lock = asyncio.Lock()
        self.capabilities: frozenset[str] = frozenset()
        self.mailbox: Mailbox | None = None
        self.alive = False
        self.secrets = SecretScrubber()  # what this connection sent, kept out of errors
        #: ``* n EXISTS`` responses seen so far, also those aioimaplib drops (see
        #: :func:`_count_announcements`).
        self.announced = 0
        #: SELECT commands completed so far.
        self.selects = 0
        self._client: Any = None
        self._lost: asyncio.Future[None] | None = None

    # -- connecting ----------------------------------------------------------------------------

    async def open(self, secret: Callable[[], Awaitable[tuple[str, str]]]) -> None:
        """Connect, secure the connection as asked, and log in.

        Args:
            secret: Returns ``("password" | "token", value)``; called after the greeting, so
                a token callable runs at every (re)connect.
        """
        loop = asyncio.get_running_loop()
        self._lost = loop.create_future()
        endpoint = self.endpoint
        implicit = self.tls_context if endpoint.tls == "ssl" else None
        # No TCP_NODELAY to set, unlike the sync backend: asyncio turns Nagle off on every TCP
        # transport, STARTTLS keeps that socket, and each login step is a single write. A login
        # against Dovecot takes 1-3 ms here, without imaplib's 40 ms delayed-ACK stall.
        with self._translate("connecting"):
            self.limits.start()  # the greeting is the first call
            self._client = aioimaplib.IMAP4(
                host=endpoint.host,
                port=endpoint.port,
                timeout=endpoint.timeout.connect_timeout,
                conn_lost_cb=self._on_lost,
                ssl_context=implicit,
            )
            self._guard_protocol(self._client.protocol)
            use_greeting_capabilities(self._client.protocol)
            _count_announcements(self._client.protocol, self)
            self.alive = True
            try:
                await self._guard(self._client.wait_hello_from_server())
            except ConnectionFailed:
                problem = getattr(self._client.protocol, "foreign_greeting", None)
                if problem is None:
                    raise
                raise ProtocolError(f"{self.context}: {problem}") from None
            self.capabilities = _upper(self._client.protocol.capabilities)
            if endpoint.tls == "starttls":
                await self._starttls()
            kind, value = await secret()
            self.secrets.add(value)
            if kind == "token":
                await self._authenticate_oauth(value)
            else:
                await self._authenticate_password(value)
            self._client.timeout = self.read_timeout

    def _guard_protocol(self, protocol: Any) -> None:
        """Make aioimaplib's protocol read within the session's limits, before any byte has
        arrived: the whole-call deadline moves with the bytes received; a command's responses
        are counted (:data:`~mailsync.backends._limits.MAX_RESPONSE_LINES`); a line without
        an end is refused past :data:`MAX_LINE`; and chunks are handed to aioimaplib's
        parser a few lines at a time, as it recurses once per line. What goes wrong in there
        ends the connection with the error kept for the waiting command, never a traceback
        from the event loop."""
        protocol.__class__ = guarded_protocol(type(protocol))
        protocol.limits = self.limits
        protocol.context = self.context

    def _failure(self) -> MailsyncError:
        """Why the connection is gone: the limit it broke, or the peer closing it."""
        protocol = getattr(self._client, "protocol", None)
        failure: MailsyncError | None = getattr(protocol, "failure", None)
        if failure is not None:
            return failure
        return ConnectionFailed(f"{self.context}: the connection was closed by the peer")

    def _on_lost(self, exc: Exception | None) -> None:
        self.alive = False
        self.mailbox = None
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)

    async def _starttls(self) -> None:
        if "STARTTLS" not in self.capabilities:
            raise ConnectionFailed(
                f"{self.context}: the server does not offer STARTTLS, so the connection "
                "cannot be encrypted; use tls='ssl' for implicit TLS (or tls='none' to allow "
                "plaintext)"
            )
        try:
            await self.command("STARTTLS")
        except (ServerError, ProtocolError) as exc:
            # TLS could not be set up: a connection failure, as when STARTTLS is not offered.
            self.abort()
            raise ConnectionFailed(
                f"{self.context}: the server refused STARTTLS ({exc}); refusing to continue "
                "without TLS"
            ) from exc
        protocol = self._client.protocol
        loop = asyncio.get_running_loop()
        assert self.tls_context is not None
        transport = await self._guard(
            loop.start_tls(
                protocol.transport,
                protocol,
                self.tls_context,
                server_hostname=self.endpoint.host,
                ssl_handshake_timeout=self.endpoint.timeout.connect_timeout,
            )
        )
        protocol.transport = transport
        await self.refresh_capabilities()

    async def refresh_capabilities(self) -> None:
        """Ask the server for its capabilities again (after STARTTLS or a login)."""
        lines = await self.command("CAPABILITY")
        words = b" ".join(bytes(line) for line in lines[:-1]).split()
        self._set_capabilities(w.decode("ascii", "replace") for w in words)

    def _set_capabilities(self, names: Iterable[str]) -> None:
        self.capabilities = _upper(names)
        # aioimaplib checks its own copy before IDLE and MOVE.
        self._client.protocol.capabilities = set(self.capabilities)

    def _mechanisms(self) -> list[str]:
        return [name[5:] for name in self.capabilities if name.startswith("AUTH=")]

    async def _authenticate_password(self, password: str) -> None:
        user = self.endpoint.username or ""
        if sasl.choose(self._mechanisms(), token=False, usable=_SASL_PASSWORD) is not None:
            # PLAIN carries UTF-8 user names and passwords, which LOGIN's quoted strings cannot.
            await self._authenticate(sasl.exchange("PLAIN", user, password))
            return
        if "LOGINDISABLED" in self.capabilities:
            raise AuthenticationError(
                f"{self.context}: the server refuses to log in on this connection "
                "(LOGINDISABLED); use TLS"
            )
        if _LINE_BREAKS.search(user + password):
            # A quoted string cannot carry them: they would end the command line.
            raise AuthenticationError(f"{self.context}: LOGIN cannot send line breaks")
        tag = self._client.protocol.new_tag()
        wire = f"{quote(user)} {quote(password)}"
        command = WireCommand(
            "LOGIN", tag, wire, prefix=None, untagged=None, timeout=self.read_timeout
        )
        response = await self._execute(command, what="LOGIN", scrub=quote(password))
        self._check(response, "LOGIN", auth=True)
        await self._logged_in(response.lines)

    async def _authenticate_oauth(self, token: str) -> None:
        endpoint = self.endpoint
        offered = self._mechanisms()
        mechanism = sasl.choose(offered, token=True)
        if mechanism is None:
            raise sasl.no_mechanism(self.context, offered, token=True)
        user = endpoint.username or ""
        exchange = sasl.exchange(mechanism, user, token, host=endpoint.host, port=endpoint.port)
        await self._authenticate(exchange)

    async def _authenticate(self, exchange: sasl.Exchange) -> None:
        for response in exchange.secrets():
            self.secrets.add(response)
        protocol = self._client.protocol
        command = SASLCommand(
            protocol.new_tag(),
            exchange,
            inline="SASL-IR" in self.capabilities,
            write=lambda data: protocol.transport.write(data),
            timeout=self.read_timeout,
        )
        what = f"AUTHENTICATE {exchange.mechanism}"
        response = await self._execute(command, what=what, scrub=command.secret)
        self._check(response, what, auth=True)
        await self._logged_in(response.lines)

    async def _logged_in(self, lines: Sequence[Any]) -> None:
        """Take the post-login capabilities the server sent with its OK (Dovecot sends an
        untagged CAPABILITY; others a ``[CAPABILITY ...]`` code), or ask for them."""
        self._client.protocol.state = aioimaplib.AUTH
        caps = None
        for line in lines:
            data = bytes(line)
            if data[:11].upper() == b"CAPABILITY ":
                caps = frozenset(data.upper().split()[1:])
        if caps is None and lines:
            caps = capability_code(bytes(lines[-1]))
        if caps is None:
            await self.refresh_capabilities()
            return
        self._set_capabilities(c.decode("ascii", "replace") for c in caps)

    # -- running commands ----------------------------------------------------------------------

    async def command(
        self,
        name: str,
        wire: str = "",
        *,
        uid: bool = False,
        untagged: str | None = None,
        what: str | None = None,
    ) -> list[Any]:
        """Run one command and return its response lines (the tagged text last).

        Raises:
            ServerError: The server said NO (a subclass when its response code says which).
            ProtocolError: The server said BAD or something aioimaplib could not follow.
        """
        tag = self._client.protocol.new_tag()
        prefix = "UID" if uid else None
        command = WireCommand(
            name, tag, wire, prefix=prefix, untagged=untagged, timeout=self.read_timeout
        )
        label = what or f"{prefix + ' ' if prefix else ''}{name}"
        response = await self._execute(command, what=label)
        return self._check(response, label)

    async def fetch(self, uids: str, items: str) -> list[dict[bytes, Any]]:
        """``UID FETCH <uids> (<items>)``: the attributes of every FETCH response.

        The response is read by the pure :class:`ResponseReader` rather than aioimaplib's
        parser, which rescans the response for every line and copies each chunk's tail
        per literal (quadratic in the batch); see :class:`FetchReader`. The read timeout
        applies to silence between chunks, not to the whole response.
        """
        protocol = self._client.protocol
        if not self.fast_fetch or not parser_idle(protocol):
            return await self._fetch_via_aioimaplib(uids, items)
        if not self.alive:
            raise ConnectionFailed(f"{self.context}: the connection is closed")
        tag = protocol.new_tag()
        reader = FetchReader(
            tag.encode("ascii"),
            self.saw_exists,
            context=self.context,
            limits=self.limits,
            max_literal=self.max_message_size,
        )
        self.limits.start()
        protocol.data_received = reader.feed  # the transport looks it up for every chunk
        try:
            with self._translate("UID FETCH"):
                protocol.transport.write(fetch_command(tag, uids, items))
                tagged = await self._await_reader(reader)
        except BaseException:
            self.abort()  # cut short (error, cancel): the rest of the answer is still coming
            raise
        finally:
            del protocol.data_received
        if not tagged.ok:
            text = self.secrets.scrub(tagged.text.decode("utf-8", "replace"))
            if tagged.status == b"BAD":
                raise ProtocolError(f"{self.context}: UID FETCH refused as malformed: {text}")
            raise ServerError(f"{self.context}: UID FETCH: {text}")
        with self._translate("UID FETCH"):
            return [response.attributes() for response in reader.responses]

    def saw_exists(self) -> None:
        """Count one ``* n EXISTS`` response."""
        self.announced += 1

    async def _await_reader(self, reader: FetchReader) -> Tagged:
        assert self._lost is not None
        loop = asyncio.get_running_loop()
        limit = self.read_timeout
        while not reader.done.done():
            wait = None if limit is None else max(limit - (loop.time() - reader.last), 0.0)
            budget = self.limits.wait()  # MailTimeout past the message's deadline
            if budget is not None and (wait is None or budget < wait):
                wait = budget
            await asyncio.wait(
                (reader.done, self._lost), timeout=wait, return_when=asyncio.FIRST_COMPLETED
            )
            if reader.done.done():
                break
            if self._lost.done():
                raise self._failure()
            if limit is not None and loop.time() - reader.last >= limit:
                raise MailTimeout(f"{self.context}: no answer to UID FETCH within {limit} s")
        return reader.done.result()

    async def _fetch_via_aioimaplib(self, uids: str, items: str) -> list[dict[bytes, Any]]:
        protocol = self._client.protocol
        command = FetchCommand(protocol.new_tag(), f"{uids} ({items})", timeout=self.read_timeout)
        protocol.count_lines = False  # message bodies are lines too: their size is the bound
        try:
            response = await self._execute(command, what="UID FETCH")
        finally:
            protocol.count_lines = True
        lines = self._check(response, "UID FETCH")
        with self._translate("UID FETCH"):
            return list(fetch_attributes(lines))

    async def _execute(self, command: Any, *, what: str, scrub: str | None = None) -> Any:
        if not self.alive:
            raise ConnectionFailed(f"{self.context}: the connection is closed")
        with self._translate(what):
            self.limits.start()
            return await self._guard(self._client.protocol.execute(command, scrub=scrub))

    async def _guard(self, awaitable: Awaitable[_T]) -> _T:
        """Await ``awaitable``, but fail at once when the connection drops meanwhile, and
        with :class:`~mailsync.MailTimeout` when the call's deadline passes (the bytes
        received keep moving it: see :class:`CallLimits`)."""
        assert self._lost is not None
        task = asyncio.ensure_future(awaitable)
        try:
            while True:
                try:
                    wait = self.limits.wait()
                except MailTimeout:
                    discard(task)
                    self.abort()
                    raise
                await asyncio.wait(
                    (task, self._lost), timeout=wait, return_when=asyncio.FIRST_COMPLETED
                )
                if task.done() or self._lost.done():
                    break
        except asyncio.CancelledError:
            task.cancel()
            raise
        broke = getattr(self._client.protocol, "failure", None) if self._client else None
        if task.done() and broke is None:
            return task.result()
        discard(task)
        raise self._failure()

    @contextlib.contextmanager
    def _translate(self, what: str) -> Iterator[None]:
        """aioimaplib, asyncio and socket errors → mailsync errors; a broken session is closed.

        aioimaplib's own messages can quote the command (and so a password): they are not
        repeated here.
        """
        try:
            with map_exceptions(context=f"{self.context}: {what}", secrets=self.secrets):
                yield
        except (ConnectionFailed, MailTimeout, ProtocolError):
            self.abort()
            raise
        except aioimaplib.CommandTimeout as exc:
            self.abort()
            raise MailTimeout(
                f"{self.context}: no answer to {what} within {self.read_timeout} s"
            ) from exc
        except aioimaplib.AioImapException as exc:
            self.abort()
            raise ProtocolError(f"{self.context}: {what} failed: {type(exc).__name__}") from exc
        except ValueError as exc:  # aioimaplib refuses CR/LF/NUL in arguments
            raise ConfigError(f"{self.context}: {what}: {exc}") from exc

    def _check(self, response: Any, what: str, *, auth: bool = False) -> list[Any]:
        lines: list[Any] = list(response.lines)
        if response.result == "OK":
            return lines
        text = self.secrets.scrub(text_of(lines[-1])) if lines else ""
        if response.result == "BAD":
            raise ProtocolError(f"{self.context}: {what} refused as malformed: {text}")
        if response.result != "NO":
            self.abort()
            raise ProtocolError(f"{self.context}: {what}: unexpected answer {response.result}")
        match = _CODE_RE.match(text.encode())
        code = match.group(1).decode().upper() if match else None
        if auth or code in _AUTH_CODES:
            raise AuthenticationError(f"{self.context}: login refused: {text}")
        error = _NO_CODES.get(code or "", ServerError)
        raise error(f"{self.context}: {what}: {text}", code=code)

    async def append(self, wire: str, data: bytes) -> list[Any]:
        """APPEND with ``wire`` (folder, flags, ``{n}``); the message goes out when the server
        asks for it. Returns the response lines (APPENDUID in the last)."""
        tag = self._client.protocol.new_tag()
        command = WireCommand(
            "APPEND", tag, wire, prefix=None, untagged=None, timeout=self.read_timeout
        )
        self._client.protocol.literal_data = data
        response = await self._execute(command, what="APPEND")
        return self._check(response, "APPEND")

    # -- folders -------------------------------------------------------------------------------

    async def select(self, wire_name: str, *, fresh: bool = False) -> Mailbox:
        """SELECT a folder (read-write; fetches use BODY.PEEK so nothing is marked seen).

        Args:
            wire_name: The quoted, encoded folder name.
            fresh: SELECT again even when selected, for current UIDNEXT/HIGHESTMODSEQ.

        Raises:
            FolderNotFound: The server has no such folder.
        """
        if not fresh and self.mailbox is not None and self.mailbox.name == wire_name:
            return self.mailbox
        condstore = " (CONDSTORE)" if "CONDSTORE" in self.capabilities else ""
        self.mailbox = None
        try:
            lines = await self.command("SELECT", wire_name + condstore, what=f"SELECT {wire_name}")
        except ServerError as exc:
            # A failed SELECT leaves no folder selected (RFC 3501 6.3.1).
            self._client.protocol.state = aioimaplib.AUTH
            if type(exc) is ServerError:
                raise FolderNotFound(str(exc), code=exc.code) from exc
            raise
        self._client.protocol.state = aioimaplib.SELECTED
        self.mailbox = Mailbox(wire_name, select_status(wire_name, lines))
        self.selects += 1
        return self.mailbox

    # -- IDLE ----------------------------------------------------------------------------------

    async def idle(self, seconds: float) -> bool:
        """IDLE (RFC 2177) for up to ``seconds``; True when new mail (EXISTS) was announced.

        The selected folder stays selected. The caller re-issues IDLE in time (servers may
        drop a client idle for 30 minutes).
        """
        protocol = self._client.protocol
        self.limits.start()  # IDLE is a call of its own, however long ago the last one was
        queue: asyncio.Queue[Any] = protocol.idle_queue
        while not queue.empty():  # leftovers of an earlier IDLE
            queue.get_nowait()
        idle = asyncio.ensure_future(protocol.idle())
        try:
            await self._idle_started(idle)
            changed = await self._idle_wait(queue, seconds)
        except BaseException:
            # Still idling, or broken: either way the connection cannot take a command now.
            self.abort()
            discard(idle)
            raise
        await self._idle_done(idle)
        # An EXISTS between the end of the wait and DONE's answer is queued, not yet seen;
        # the server will not say it again, and the next IDLE starts by emptying the queue.
        while not queue.empty():
            changed = any(is_exists(line) for line in queue.get_nowait()) or changed
        return changed

    async def _idle_started(self, idle: asyncio.Future[Any]) -> None:
        ack = asyncio.ensure_future(self._client.protocol.wait_for_idle_response())
        try:
            with self._translate("IDLE"):
                await self._guard(asyncio.wait((idle, ack), return_when=asyncio.FIRST_COMPLETED))
        finally:
            ack.cancel()
        if idle.done():  # the server answered IDLE at once instead of "+ idling"
            with self._translate("IDLE"):
                response = idle.result()
            self._check(response, "IDLE")
            raise ProtocolError(f"{self.context}: the server ended IDLE at once")

    async def _idle_wait(self, queue: asyncio.Queue[Any], seconds: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        assert self._lost is not None
        while (remaining := deadline - loop.time()) > 0:
            pushed = asyncio.ensure_future(queue.get())
            try:
                await asyncio.wait(
                    (pushed, self._lost), timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                pushed.cancel()
            if pushed.done() and not pushed.cancelled():
                if any(is_exists(line) for line in pushed.result()):
                    return True
            elif self._lost.done():
                raise ConnectionFailed(f"{self.context}: the connection was closed during IDLE")
        return False

    async def _idle_done(self, idle: asyncio.Future[Any]) -> None:
        self.limits.start()  # DONE is a call of its own, however long the IDLE was
        with self._translate("IDLE"):
            self._client.protocol.idle_done()
            response = await self._guard(asyncio.wait_for(idle, self.read_timeout))
        self._check(response, "IDLE")

    # -- closing -------------------------------------------------------------------------------

    async def logout(self) -> None:
        """Say LOGOUT (briefly, unless a command is running) and close; never raises."""
        if self.alive and not self.lock.locked():
            with contextlib.suppress(MailsyncError, asyncio.TimeoutError):
                await asyncio.wait_for(self.command("LOGOUT"), 2.0)
        await self.close()

    async def close(self) -> None:
        """Close the connection and wait until the socket is released; never raises."""
        self.abort()
        if self._lost is not None and self._client is not None:
            # The transport releases its socket one loop iteration later: wait for that, so
            # that a loop stopped right after aclose() leaves no socket open.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._lost), 2.0)

    def abort(self) -> None:
        """Drop the connection at once (after an error, or to end an IDLE from elsewhere)."""
        self.alive = False
        self.mailbox = None
        transport = getattr(getattr(self._client, "protocol", None), "transport", None)
        if transport is not None:
            transport.abort()
        elif self._lost is not None and not self._lost.done():
            self._lost.set_result(None)  # never connected: nothing to wait for


def _count_announcements(protocol: Any, session: Session) -> None:
    """Count every ``* n EXISTS`` in :attr:`Session.announced`.

    aioimaplib drops an untagged response that no pending command asked for: an EXISTS the
    server sends with the reply to a SEARCH or a FETCH is lost. A server announces a message
    once, so mail that arrives while the last command before IDLE runs would wait unseen
    until the next sync; the count tells the caller it came.
    """
    handle = protocol._untagged_response

    def untagged(line: bytes) -> Any:
        if is_exists(line[2:] if line.startswith(b"* ") else line):
            session.announced += 1
        return handle(line)

    protocol._untagged_response = untagged


def _upper(names: Iterable[str]) -> frozenset[str]:
    return frozenset(name.upper() for name in names)
