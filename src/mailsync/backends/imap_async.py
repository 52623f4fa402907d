"""The async IMAP backend: :class:`AsyncIMAPRetriever`, natively async over aioimaplib.

This module owns the I/O of the async IMAP client: connecting (implicit TLS, STARTTLS that
fails closed, plaintext only when asked), logging in (password or OAuth2 token), running
commands with read timeouts, noticing a dropped connection at once, IDLE, and translating every
aioimaplib/asyncio/socket error into the mailsync hierarchy. aioimaplib holds the conversation;
the bulk ``UID FETCH`` of bodies is read off the same transport by the pure reader of
:mod:`mailsync.protocol.imap_literals` (aioimaplib's own parser is several times slower), as
the sync backend does with imapclient. Everything that is not I/O (SEARCH criteria, FETCH data
→ Message, flag names, modified UTF-7, LIST → Folder, cursor rules, message ids) comes from
:mod:`mailsync.protocol.imap`, shared with the sync backend, so the two behave alike.

aioimaplib is GPL-3.0 and lives in the ``async`` extra: this is the only module that imports
it. Nothing here blocks the event loop or calls ``asyncio.run``; one retriever holds one
connection, so folders fetched concurrently use one retriever each.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aioimaplib

from mailsync._base import (
    AsyncRetriever,
    MessageRef,
    OutgoingMessage,
    SyncStep,
    message_refs,
)
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
    map_exceptions,
)
from mailsync._message import Folder, Message, as_bytes, header_block
from mailsync._plans import Operation, Plan, astream
from mailsync._query import Q
from mailsync.protocol import imap_sync, sasl
from mailsync.protocol.imap import (
    FETCH_BODY,
    FETCH_GMAIL,
    FETCH_HEADERS,
    Criterion,
    FolderStatus,
    GmailRef,
    SearchPlan,
    capability_code,
    encode_folder,
    folders_from_list,
    format_message_id,
    parse_appenduid,
    parse_message_id,
    quote,
    render_criteria,
    search_plan,
    search_uids,
    store_flags,
    uid_set,
)
from mailsync.protocol.imap_literals import (
    Continuation,
    FetchResponse,
    ResponseReader,
    Tagged,
    fetch_command,
)
from mailsync.protocol.imap_sync import Batching, messages_from_fetch

__all__ = ["AsyncIMAPRetriever"]

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


def _strings(criteria: Iterable[Any]) -> Iterator[str]:
    """The string arguments in SEARCH criteria (nested lists included)."""
    for item in criteria:
        if isinstance(item, list):
            yield from _strings(item)
        elif isinstance(item, str):
            yield item


def _quote(text: str) -> str:
    """An IMAP quoted string (RFC 3501 section 4.3) for text without CR or LF."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _text(line: Any) -> str:
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


class _Command(_WireMixin, aioimaplib.Command):  # type: ignore[misc]
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


class _FetchCommand(_WireMixin, aioimaplib.FetchCommand):  # type: ignore[misc]
    def __init__(self, tag: str, wire: str, *, timeout: float | None) -> None:
        super().__init__(tag, prefix="UID", timeout=timeout)
        self.wire = wire


class _SASLCommand(aioimaplib.Command):  # type: ignore[misc]
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


class _FetchReader:
    """Takes the place of aioimaplib's ``data_received`` for one ``UID FETCH``: feeds the
    pure :class:`ResponseReader` and keeps the FETCH responses until the tagged completion.

    Safe because nothing else is in flight: the caller holds the session lock, and IMAP
    servers only speak in answer to a command.
    """

    def __init__(self, tag: bytes) -> None:
        loop = asyncio.get_running_loop()
        self.tag = tag
        self.reader = ResponseReader()
        self.responses: list[FetchResponse] = []
        self.done: asyncio.Future[Tagged] = loop.create_future()
        self.last = loop.time()
        self._loop = loop

    def feed(self, data: bytes) -> None:
        self.last = self._loop.time()
        if self.done.done():
            return
        try:
            self.reader.feed(data)
            while (event := self.reader.next_event()) is not None:
                self._take(event)
        except ProtocolError as exc:
            self.done.set_exception(exc)

    def _take(self, event: Any) -> None:
        if isinstance(event, FetchResponse):
            self.responses.append(event)
        elif isinstance(event, Tagged):
            if event.tag != self.tag or self.reader.buffered:
                raise ProtocolError(f"unexpected tagged response {event.tag!r} during FETCH")
            self.done.set_result(event)
        elif isinstance(event, Continuation):
            raise ProtocolError("unexpected continuation request during FETCH")
        # Other untagged responses (EXISTS, EXPUNGE, flag news) change nothing here.


def _parser_idle(protocol: Any) -> bool:
    """Whether aioimaplib has nothing half-read and no command in flight."""
    return (
        not protocol.incomplete_line
        and protocol.current_command is None
        and protocol.pending_sync_command is None
        and not protocol.pending_async_commands
    )


@dataclass(slots=True)
class _Mailbox:
    """What SELECT said about the selected folder."""

    name: str
    uidvalidity: int
    uidnext: int | None
    exists: int
    highestmodseq: int | None


class _Session:
    """One logged-in aioimaplib connection: commands with timeouts, errors translated, and a
    dropped connection noticed at once (aioimaplib itself would wait for the timeout).

    Commands are serialised with :attr:`lock` by the caller, which keeps SELECT and the
    commands that depend on it together.
    """

    #: Read bulk FETCH responses with the pure reader (False: aioimaplib's own parser).
    fast_fetch = True

    def __init__(self, endpoint: Endpoint, tls_context: ssl.SSLContext | None) -> None:
        self.endpoint = endpoint
        self.context = f"IMAP {endpoint.host}:{endpoint.port}"
        self.tls_context = tls_context
        self.read_timeout = endpoint.timeout.read
        self.lock = asyncio.Lock()
        self.capabilities: frozenset[str] = frozenset()
        self.mailbox: _Mailbox | None = None
        self.alive = False
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
            self._client = aioimaplib.IMAP4(
                host=endpoint.host,
                port=endpoint.port,
                timeout=endpoint.timeout.connect_timeout,
                conn_lost_cb=self._on_lost,
                ssl_context=implicit,
            )
            _use_greeting_capabilities(self._client.protocol)
            self.alive = True
            await self._guard(self._client.wait_hello_from_server())
            self.capabilities = _upper(self._client.protocol.capabilities)
            if endpoint.tls == "starttls":
                await self._starttls()
            kind, value = await secret()
            if kind == "token":
                await self._authenticate_oauth(value)
            else:
                await self._authenticate_password(value)
            self._client.timeout = self.read_timeout

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
        await self.command("STARTTLS")
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
        wire = f"{_quote(user)} {_quote(password)}"
        command = _Command(
            "LOGIN", tag, wire, prefix=None, untagged=None, timeout=self.read_timeout
        )
        response = await self._execute(command, what="LOGIN", scrub=_quote(password))
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
        protocol = self._client.protocol
        command = _SASLCommand(
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
        command = _Command(
            name, tag, wire, prefix=prefix, untagged=untagged, timeout=self.read_timeout
        )
        label = what or f"{prefix + ' ' if prefix else ''}{name}"
        response = await self._execute(command, what=label)
        return self._check(response, label)

    async def fetch(self, uids: str, items: str) -> list[dict[bytes, Any]]:
        """``UID FETCH <uids> (<items>)``: the attributes of every FETCH response.

        The response is read by the pure :class:`ResponseReader` rather than aioimaplib's
        parser, which rescans the response for every line and copies each chunk's tail
        per literal (quadratic in the batch); see :class:`_FetchReader`. The read timeout
        applies to silence between chunks, not to the whole response.
        """
        protocol = self._client.protocol
        if not self.fast_fetch or not _parser_idle(protocol):
            return await self._fetch_via_aioimaplib(uids, items)
        if not self.alive:
            raise ConnectionFailed(f"{self.context}: the connection is closed")
        tag = protocol.new_tag()
        reader = _FetchReader(tag.encode("ascii"))
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
            text = tagged.text.decode("utf-8", "replace")
            if tagged.status == b"BAD":
                raise ProtocolError(f"{self.context}: UID FETCH refused as malformed: {text}")
            raise ServerError(f"{self.context}: UID FETCH: {text}")
        with self._translate("UID FETCH"):
            return [response.attributes() for response in reader.responses]

    async def _await_reader(self, reader: _FetchReader) -> Tagged:
        assert self._lost is not None
        loop = asyncio.get_running_loop()
        limit = self.read_timeout
        while not reader.done.done():
            wait = None if limit is None else max(limit - (loop.time() - reader.last), 0.0)
            await asyncio.wait(
                (reader.done, self._lost), timeout=wait, return_when=asyncio.FIRST_COMPLETED
            )
            if reader.done.done():
                break
            if self._lost.done():
                raise ConnectionFailed(f"{self.context}: the connection was closed by the peer")
            if limit is not None and loop.time() - reader.last >= limit:
                raise MailTimeout(f"{self.context}: no answer to UID FETCH within {limit} s")
        return reader.done.result()

    async def _fetch_via_aioimaplib(self, uids: str, items: str) -> list[dict[bytes, Any]]:
        command = _FetchCommand(
            self._client.protocol.new_tag(), f"{uids} ({items})", timeout=self.read_timeout
        )
        response = await self._execute(command, what="UID FETCH")
        lines = self._check(response, "UID FETCH")
        with self._translate("UID FETCH"):
            return list(_fetch_attributes(lines))

    async def _execute(self, command: Any, *, what: str, scrub: str | None = None) -> Any:
        if not self.alive:
            raise ConnectionFailed(f"{self.context}: the connection is closed")
        with self._translate(what):
            return await self._guard(self._client.protocol.execute(command, scrub=scrub))

    async def _guard(self, awaitable: Awaitable[_T]) -> _T:
        """Await ``awaitable``, but fail at once when the connection drops meanwhile."""
        assert self._lost is not None
        task = asyncio.ensure_future(awaitable)
        try:
            await asyncio.wait((task, self._lost), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task.done():
            return task.result()
        task.cancel()
        raise ConnectionFailed(f"{self.context}: the connection was closed by the peer")

    @contextlib.contextmanager
    def _translate(self, what: str) -> Iterator[None]:
        """aioimaplib, asyncio and socket errors → mailsync errors; a broken session is closed.

        aioimaplib's own messages can quote the command (and so a password): they are not
        repeated here.
        """
        try:
            with map_exceptions(context=f"{self.context}: {what}"):
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
        text = _text(lines[-1]) if lines else ""
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
        command = _Command(
            "APPEND", tag, wire, prefix=None, untagged=None, timeout=self.read_timeout
        )
        self._client.protocol.literal_data = data
        response = await self._execute(command, what="APPEND")
        return self._check(response, "APPEND")

    # -- folders -------------------------------------------------------------------------------

    async def select(self, wire_name: str, *, fresh: bool = False) -> _Mailbox:
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
        self.mailbox = _parse_select(wire_name, lines)
        return self.mailbox

    # -- IDLE ----------------------------------------------------------------------------------

    async def idle(self, seconds: float) -> bool:
        """IDLE (RFC 2177) for up to ``seconds``; True when new mail (EXISTS) was announced.

        The selected folder stays selected. The caller re-issues IDLE in time (servers may
        drop a client idle for 30 minutes).
        """
        protocol = self._client.protocol
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
            _discard(idle)
            raise
        await self._idle_done(idle)
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
                if any(_is_exists(line) for line in pushed.result()):
                    return True
            elif self._lost.done():
                raise ConnectionFailed(f"{self.context}: the connection was closed during IDLE")
        return False

    async def _idle_done(self, idle: asyncio.Future[Any]) -> None:
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


def _discard(task: asyncio.Future[Any]) -> None:
    """Cancel a task we no longer wait for, retrieving its error so none is reported."""
    task.cancel()
    if task.done() and not task.cancelled():
        task.exception()


def _use_greeting_capabilities(protocol: Any) -> None:
    """aioimaplib asks CAPABILITY right after the greeting even when the greeting carried
    them in a ``[CAPABILITY ...]`` code (Dovecot's does): take those and spare the round trip.

    Only the greeting's: after STARTTLS the capabilities are asked afresh. The state change
    follows aioimaplib's own ``welcome`` (under its state condition, waking the waiters).
    """
    ask = protocol.welcome

    async def welcome(line: bytes) -> None:
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


def _upper(names: Iterable[str]) -> frozenset[str]:
    return frozenset(name.upper() for name in names)


def _is_exists(line: Any) -> bool:
    match = _NUMBER_BEFORE_RE.match(bytes(line)) if isinstance(line, bytes | bytearray) else None
    return match is not None and match.group(2).upper() == b"EXISTS"


_SELECT_CODES = {
    "UIDVALIDITY": re.compile(rb"\[UIDVALIDITY (\d+)\]", re.IGNORECASE),
    "UIDNEXT": re.compile(rb"\[UIDNEXT (\d+)\]", re.IGNORECASE),
    "HIGHESTMODSEQ": re.compile(rb"\[HIGHESTMODSEQ (\d+)\]", re.IGNORECASE),
}


def _parse_select(name: str, lines: Sequence[Any]) -> _Mailbox:
    found: dict[str, int] = {}
    exists = 0
    for line in lines:
        data = bytes(line)
        match = _NUMBER_BEFORE_RE.match(data)
        if match is not None and match.group(2).upper() == b"EXISTS":
            exists = int(match.group(1))
        for key, pattern in _SELECT_CODES.items():
            code = pattern.search(data)
            if code is not None:
                found[key] = int(code.group(1))
    if "UIDVALIDITY" not in found:
        raise ProtocolError(f"SELECT {name}: the server sent no UIDVALIDITY")
    return _Mailbox(
        name=name,
        uidvalidity=found["UIDVALIDITY"],
        uidnext=found.get("UIDNEXT"),
        exists=exists,
        highestmodseq=found.get("HIGHESTMODSEQ"),
    )


# -- aioimaplib responses → protocol values ----------------------------------------------------

_FETCH_LINE = re.compile(rb"(\d+) FETCH \(", re.IGNORECASE)
_LIST_LINE = re.compile(rb'\((?P<flags>[^)]*)\) (?P<delim>NIL|"(?:[^"\\]|\\.)*") ?(?P<name>.*)$')
_QUOTED_ESCAPE = re.compile(rb"\\(.)")


def _fetch_responses(lines: Sequence[Any]) -> Iterator[FetchResponse]:
    """Regroup aioimaplib's FETCH lines (text lines, each literal a ``bytearray`` after the
    line announcing it) into the pure reader's :class:`FetchResponse` values."""
    segments: list[bytes] | None = None
    literals: list[bytes] = []
    seq = 0
    for line in lines:
        if isinstance(line, bytearray):
            literals.append(bytes(line))
            continue
        match = _FETCH_LINE.match(line)
        if match is not None:
            if segments is not None:
                yield FetchResponse(seq, segments, literals)
            seq, segments, literals = int(match.group(1)), [b"* " + line], []
        elif segments is not None:
            segments.append(line)
    if segments is not None:
        yield FetchResponse(seq, segments, literals)


def _fetch_attributes(lines: Sequence[Any]) -> Iterator[dict[bytes, Any]]:
    """The attributes of each FETCH response in aioimaplib's lines (the tagged text last)."""
    for response in _fetch_responses(lines[:-1]):
        yield response.attributes()


def _search_uids(lines: Sequence[Any]) -> list[int]:
    """UIDs from aioimaplib's ``SEARCH`` lines (the last line is the tagged reply)."""
    return search_uids(lines[:-1])


def _list_entries(lines: Sequence[Any]) -> list[tuple[list[bytes], bytes | None, bytes]]:
    """``(attributes, delimiter, encoded name)`` from aioimaplib's LIST lines."""
    entries = []
    pending: tuple[list[bytes], bytes | None] | None = None
    for line in lines[:-1]:
        if isinstance(line, bytearray):  # a name sent as a literal
            if pending is not None:
                entries.append((*pending, bytes(line)))
                pending = None
            continue
        match = _LIST_LINE.match(line)
        if match is None:
            continue
        flags = match.group("flags").split()
        delimiter = match.group("delim")
        delim = None if delimiter.upper() == b"NIL" else _unquote(delimiter)
        name = match.group("name").strip()
        if name.startswith(b"{") and name.endswith(b"}"):
            pending = (flags, delim)
            continue
        entries.append((flags, delim, _unquote(name)))
    return entries


def _unquote(value: bytes) -> bytes:
    if len(value) >= 2 and value.startswith(b'"') and value.endswith(b'"'):
        return _QUOTED_ESCAPE.sub(rb"\1", value[1:-1])
    return value


def _wire_folder(folder: str) -> str:
    """A folder name as a SELECT/APPEND/MOVE argument: modified UTF-7, quoted."""
    if folder.upper() == "INBOX":
        return "INBOX"
    return quote(encode_folder(folder)).decode("ascii")


def _folder_name(folder: str) -> str:
    return "INBOX" if folder.upper() == "INBOX" else folder


def _check_uidvalidity(session: _Session, folder: str, mailbox: _Mailbox, expected: int) -> None:
    if mailbox.uidvalidity != expected:
        raise TemporaryFailure(
            f"{session.context}: folder {folder!r} was replaced while being read "
            "(UIDVALIDITY changed); read it again"
        )


def _status(mailbox: _Mailbox) -> FolderStatus:
    return FolderStatus(
        uidvalidity=mailbox.uidvalidity,
        uidnext=mailbox.uidnext or 0,
        exists=mailbox.exists,
        highestmodseq=mailbox.highestmodseq,
    )


# -- the retriever -----------------------------------------------------------------------------


class AsyncIMAPRetriever(AsyncRetriever):
    """IMAP over aioimaplib, natively async: one connection per retriever, opened lazily and
    opened again after it broke.

    Behaves as the sync :class:`~mailsync.backends.imap.IMAPRetriever` does (same ids, flags,
    queries, cursor rules). ``aclose()`` ends a ``watch()`` at once, whatever it is doing (an
    IDLE is cut short), and a closed retriever does not connect again. To read several
    folders at once, use one retriever per folder: IMAP has one selected folder per
    connection, so the commands of one retriever run in turn.
    ``batch_size`` in the URL query or options fixes the UIDs per FETCH; by default batches
    adapt to the size of the messages.

    Args:
        endpoint: The parsed ``imap://`` or ``imaps://`` URL and options.
        state: Where sync cursors live (see :func:`mailsync.connect_async`).
    """

    scheme = "imap"
    capabilities = frozenset({"folders", "flags", "move", "delete", "append", "search", "idle"})
    #: IDLE is re-issued after this many seconds (servers may drop a client idle for 30 min).
    idle_renew: float = 25 * 60.0
    #: Without IDLE, the longest wait between two NOOPs.
    poll_most: float = 60.0

    def __init__(self, endpoint: Endpoint, *, state: Any = None) -> None:
        super().__init__(endpoint, state=state)
        #: How FETCH batches are sized (``batch_size`` fixes them).
        self.batching = Batching.from_params(endpoint.params)
        self._session_now: _Session | None = None
        self._connecting = asyncio.Lock()
        self._tls_context: ssl.SSLContext | None = None
        self._highest_uid: dict[str, int] = {}

    # -- connection ----------------------------------------------------------------------------

    async def _session(self) -> _Session:
        session = self._session_now
        if session is not None and session.alive:
            return session
        if self._is_stopped():
            # A connection opened now (say by a watch() racing aclose()) would never be closed.
            raise ConnectionFailed(f"{self.endpoint.display}: the retriever is closed")
        async with self._connecting:
            session = self._session_now
            if session is not None and session.alive:
                return session
            session = await self._open()
            if self._is_stopped():  # aclose() while connecting
                await session.close()
                raise ConnectionFailed(f"{self.endpoint.display}: the retriever is closed")
            self._session_now = session
            return session

    async def _open(self) -> _Session:
        endpoint = self.endpoint
        if endpoint.token is None and endpoint.password is None:
            raise AuthenticationError(
                f"{endpoint.display}: no password or token given for "
                f"{endpoint.username or 'the login'}"
            )
        if endpoint.tls != "none" and self._tls_context is None:
            # Loading the CA store reads files: not on the event loop.
            self._tls_context = await asyncio.to_thread(endpoint.ssl_context)
        session = _Session(endpoint, self._tls_context)
        try:
            await session.open(self._secret)
        except Exception:
            await session.close()
            raise
        except BaseException:  # cancelled: no awaiting now, the socket closes on its own
            session.abort()
            raise
        return session

    async def _secret(self) -> tuple[str, str]:
        endpoint = self.endpoint
        if endpoint.token is not None:
            # A token callable may refresh over the network: keep it off the event loop.
            return "token", await asyncio.to_thread(endpoint.token.fresh)
        assert endpoint.password is not None
        return "password", endpoint.password.reveal()

    @contextlib.asynccontextmanager
    async def _locked(self) -> AsyncIterator[_Session]:
        """The connection, reserved for the caller's commands (SELECT and what depends on it)."""
        session = await self._session()
        async with session.lock:
            yield session

    @contextlib.asynccontextmanager
    async def _selected(
        self, folder: str, *, fresh: bool = False
    ) -> AsyncIterator[tuple[_Session, _Mailbox]]:
        """The connection with ``folder`` selected (again when ``fresh``), reserved."""
        async with self._locked() as session:
            mailbox = await session.select(_wire_folder(folder), fresh=fresh)
            yield session, mailbox

    async def _select_ref(self, session: _Session, folder: str, uidvalidity: int) -> _Mailbox:
        """Select the folder a message id names and check it is still the same folder.

        Raises:
            MessageNotFound: The folder is gone, or was recreated since the id was given out.
        """
        wire = _wire_folder(folder)
        try:
            mailbox = await session.select(wire)
            if mailbox.uidvalidity != uidvalidity:
                mailbox = await session.select(wire, fresh=True)  # maybe just stale
        except FolderNotFound as exc:
            raise MessageNotFound(f"{session.context}: folder {folder!r} is gone") from exc
        if mailbox.uidvalidity != uidvalidity:
            raise MessageNotFound(
                f"{session.context}: folder {folder!r} was recreated since that id was given out"
            )
        return mailbox

    async def _disconnect(self) -> None:
        session, self._session_now = self._session_now, None
        if session is not None:
            await session.logout()

    # -- folders -------------------------------------------------------------------------------

    async def folders(self) -> list[Folder]:
        """Every folder, with delimiter and special use (RFC 6154, or guessed from names)."""
        async with self._locked() as session:
            lines = await session.command("LIST", '"" "*"')
        return folders_from_list(_list_entries(lines))

    async def _trash(self) -> str | None:
        return next((f.name for f in await self.folders() if f.special_use == "\\Trash"), None)

    # -- reading -------------------------------------------------------------------------------

    async def messages(
        self,
        folder: str = "INBOX",
        *,
        query: Q | None = None,
        headers_only: bool = False,
        limit: int | None = None,
    ) -> AsyncIterator[Message]:
        """The messages of ``folder`` in ascending UID order, streamed in bounded batches.

        Reading uses BODY.PEEK, so nothing is marked seen. The query goes to the server as
        SEARCH; what SEARCH cannot say exactly is checked again with :meth:`Q.matches`.

        Raises:
            FolderNotFound: No such folder.
        """
        if limit is not None and limit <= 0:
            return
        name = _folder_name(folder)
        plan = search_plan(query)
        async with self._selected(name, fresh=True) as (session, mailbox):
            uids = await self._search(session, plan)
        if plan.exact and limit is not None:
            uids = uids[:limit]
        recheck = query if not plan.exact else None
        # Checking body text on a headers-only read needs the body: fetch it, then trim.
        whole = headers_only and recheck is not None and recheck.needs_body
        items = FETCH_HEADERS if headers_only and not whole else FETCH_BODY
        count = 0
        async for batch in self._batches(name, mailbox.uidvalidity, uids, items):
            for message in batch:
                if recheck is not None and not recheck.matches(message):
                    continue
                if headers_only and not message.headers_only:
                    message = message.replace(raw=header_block(message.raw), headers_only=True)
                yield message
                count += 1
                if limit is not None and count >= limit:
                    return

    async def _search(self, session: _Session, plan: SearchPlan) -> list[int]:
        return await self._search_criteria(session, plan.criteria, plan.charset)

    async def _search_criteria(
        self, session: _Session, criteria: list[Criterion], charset: str | None = None
    ) -> list[int]:
        if any(_LINE_BREAKS.search(text) for text in _strings(criteria)):
            # Sent quoted, a line break would end the command line and start another.
            raise ConfigError("IMAP search text cannot contain line breaks or NUL")
        literal_plus = "LITERAL+" in session.capabilities
        rendered = render_criteria(criteria, literal_plus=literal_plus)
        prefix = f"CHARSET {charset} " if charset else ""
        wire = prefix + rendered.decode("utf-8")
        lines = await session.command("SEARCH", wire, uid=True, what="UID SEARCH")
        return _search_uids(lines)

    async def _uids_after(self, session: _Session, since_uid: int) -> list[int]:
        lines = await session.command(
            "SEARCH", f"UID {since_uid + 1}:*", uid=True, what="UID SEARCH"
        )
        # "n:*" always matches the highest UID, even one below n.
        return [uid for uid in _search_uids(lines) if uid > since_uid]

    async def _batches(
        self, folder: str, uidvalidity: int, uids: Sequence[int], items: str
    ) -> AsyncIterator[list[Message]]:
        """The messages of ``uids``, one bounded FETCH at a time."""
        sizes = self.batching.sizer()
        for batch in sizes.split(uids):
            fetched = await self._fetch(folder, uidvalidity, batch, items)
            sizes.learn(fetched)
            yield fetched

    async def _fetch(
        self, folder: str, uidvalidity: int, uids: Sequence[int], items: str
    ) -> list[Message]:
        """One ``UID FETCH`` of ``uids`` from ``folder`` as messages, in UID order."""
        if not uids:
            return []
        async with self._selected(folder) as (session, mailbox):
            _check_uidvalidity(session, folder, mailbox, uidvalidity)
            fetched = await session.fetch(uid_set(uids), self._items(session, items))
        return messages_from_fetch(fetched, folder, uidvalidity, uids)

    def _items(self, session: _Session, base: str) -> str:
        return f"{base} {FETCH_GMAIL}" if "X-GM-EXT-1" in session.capabilities else base

    async def get(self, id: str) -> Message:
        """One message by its id (``"<folder>;<uidvalidity>;<uid>"``).

        Raises:
            MessageNotFound: The id is malformed, its folder is gone or was recreated, or no
                message has that UID any more.
        """
        ref = parse_message_id(id)
        if isinstance(ref, GmailRef):
            folder, uidvalidity, uid = await self._locate_gmail(ref)
        else:
            folder, uidvalidity, uid = ref.folder, ref.uidvalidity, ref.uid
            async with self._locked() as session:
                await self._select_ref(session, folder, uidvalidity)
        found = await self._fetch(folder, uidvalidity, [uid], FETCH_BODY)
        if not found:
            raise MessageNotFound(f"{self.endpoint.display}: no message {id!r}")
        return found[0]

    async def _locate_gmail(self, ref: GmailRef) -> tuple[str, int, int]:
        everything = next((f.name for f in await self.folders() if f.special_use == "\\All"), None)
        if everything is None:
            raise MessageNotFound(f"{self.endpoint.display}: no \\All folder to look in")
        async with self._selected(everything) as (session, mailbox):
            lines = await session.command(
                "SEARCH", f"X-GM-MSGID {ref.msgid}", uid=True, what="UID SEARCH"
            )
        uids = _search_uids(lines)
        if not uids:
            raise MessageNotFound(f"{self.endpoint.display}: no message {ref.msgid}")
        return everything, mailbox.uidvalidity, uids[0]

    # -- sync and watch ------------------------------------------------------------------------

    async def _sync_steps(
        self,
        folder: str,
        cursor: dict[str, Any] | None,
        known: Callable[[Iterable[str]], set[str]],
    ) -> AsyncIterator[SyncStep]:
        if self._is_stopped():
            return  # aclose() during watch(): end quietly, no new connection
        name = _folder_name(folder)
        async with self._selected(name, fresh=True) as (_session, mailbox):
            status = _status(mailbox)

        def steps() -> Plan[None]:
            position = yield from imap_sync.sync_steps(name, cursor, status, known, self.batching)
            self._highest_uid[name] = position.uid  # for the next IDLE (see _arrived_since_sync)

        async for step in astream(steps(), self._perform, context=self.endpoint.display):
            yield step

    async def _perform(self, op: Operation) -> Any:
        """Performs the operations of :func:`mailsync.protocol.imap_sync.sync_steps`."""
        if not isinstance(op, imap_sync.Fetch | imap_sync.Search):
            raise TypeError(f"not an IMAP sync operation: {op!r}")
        async with self._selected(op.folder) as (session, mailbox):
            _check_uidvalidity(session, op.folder, mailbox, op.uidvalidity)
            if isinstance(op, imap_sync.Search):
                return await self._search_criteria(session, list(op.criteria))
            items = self._items(session, op.items) if op.gmail else op.items
            return await session.fetch(uid_set(op.uids), items)

    async def _wait_for_change(self, folder: str, timeout: float) -> None:
        """IDLE (RFC 2177, re-issued every :attr:`idle_renew` seconds) until new mail,
        ``timeout`` or :meth:`aclose`; NOOP polling on servers without IDLE."""
        if self._stopped:
            return
        name = _folder_name(folder)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            session = await self._session()
            if "IDLE" not in session.capabilities:
                await self._poll(name, deadline)
                return
            async with self._selected(name) as (session, _mailbox):
                if await self._arrived_since_sync(session, name):
                    return
                while not self._stopped:
                    seconds = min(deadline - loop.time(), self.idle_renew)
                    if seconds <= 0 or await session.idle(seconds):
                        return
        except ConnectionFailed:
            if self._is_stopped():
                return  # aclose() cut the connection to end the wait
            raise

    async def _arrived_since_sync(self, session: _Session, folder: str) -> bool:
        """Whether mail came after the last sync and before IDLE: its EXISTS may have come
        while another command ran, and aioimaplib drops such responses."""
        highest = self._highest_uid.get(folder)
        if highest is None:
            return False
        return bool(await self._uids_after(session, highest))

    async def _poll(self, folder: str, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopped:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop_event.wait(), min(remaining, self.poll_most))
            if self._is_stopped():
                return
            async with self._selected(folder) as (session, _mailbox):
                lines = await session.command("NOOP")
            if any(_is_exists(line) for line in lines):
                return

    # -- changing ------------------------------------------------------------------------------

    async def _grouped(
        self, msgs: MessageRef | Sequence[MessageRef]
    ) -> list[tuple[str, int, list[int]]]:
        """``(folder, uidvalidity, uids)`` for the messages named, folders in first-seen order."""
        groups: dict[tuple[str, int], list[int]] = {}
        for message_id in message_refs(msgs):
            ref = parse_message_id(message_id)
            if isinstance(ref, GmailRef):
                folder, uidvalidity, uid = await self._locate_gmail(ref)
            else:
                folder, uidvalidity, uid = ref.folder, ref.uidvalidity, ref.uid
            groups.setdefault((folder, uidvalidity), []).append(uid)
        return [(folder, v, sorted(set(uids))) for (folder, v), uids in groups.items()]

    async def set_flags(
        self,
        msgs: MessageRef | Sequence[MessageRef],
        *,
        add: Iterable[str] = (),
        remove: Iterable[str] = (),
    ) -> None:
        """Add and remove flags (``\\Seen``, ``\\Flagged``, keywords ...) with UID STORE.

        Raises:
            MessageNotFound: An id names a folder that is gone or was recreated.
        """
        adding, removing = _flag_list(add), _flag_list(remove)
        for folder, uidvalidity, uids in await self._grouped(msgs):
            async with self._locked() as session:
                await self._select_ref(session, folder, uidvalidity)
                for sign, flags in (("+", adding), ("-", removing)):
                    if flags:
                        wire = f"{uid_set(uids)} {sign}FLAGS.SILENT ({' '.join(flags)})"
                        await session.command("STORE", wire, uid=True, untagged="FETCH")

    async def move(self, msgs: MessageRef | Sequence[MessageRef], folder: str) -> None:
        """Move messages with MOVE (RFC 6851), else COPY + ``\\Deleted`` + UID EXPUNGE.

        Raises:
            FolderNotFound: The target folder does not exist.
            MessageNotFound: An id names a folder that is gone or was recreated.
        """
        target = _folder_name(folder)
        for source, uidvalidity, uids in await self._grouped(msgs):
            if source == target:
                continue
            async with self._locked() as session:
                await self._select_ref(session, source, uidvalidity)
                await self._move_uids(session, uids, target)

    async def _move_uids(self, session: _Session, uids: list[int], target: str) -> None:
        wire = f"{uid_set(uids)} {_wire_folder(target)}"
        if "MOVE" in session.capabilities:
            await session.command("MOVE", wire, uid=True)
            return
        await session.command("COPY", wire, uid=True)
        await self._expunge_uids(session, uids)

    async def _expunge_uids(self, session: _Session, uids: list[int]) -> None:
        wire = f"{uid_set(uids)} +FLAGS.SILENT (\\Deleted)"
        await session.command("STORE", wire, uid=True, untagged="FETCH")
        if "UIDPLUS" in session.capabilities:
            await session.command("EXPUNGE", uid_set(uids), uid=True)
        else:
            await session.command("EXPUNGE")  # without UIDPLUS it cannot be limited to these

    async def delete(
        self, msgs: MessageRef | Sequence[MessageRef], *, permanent: bool = False
    ) -> None:
        """Move messages to the ``\\Trash`` folder; remove them for good when ``permanent``,
        when they already are in the Trash, or when the account has no Trash folder.

        Raises:
            MessageNotFound: An id names a folder that is gone or was recreated.
        """
        groups = await self._grouped(msgs)
        trash = None if permanent else await self._trash()
        for source, uidvalidity, uids in groups:
            async with self._locked() as session:
                await self._select_ref(session, source, uidvalidity)
                if trash is None or trash == source:
                    await self._expunge_uids(session, uids)
                else:
                    await self._move_uids(session, uids, trash)

    async def append(
        self, folder: str, message: OutgoingMessage, flags: Iterable[str] = ()
    ) -> str | None:
        """APPEND a message; returns its id when the server says it (UIDPLUS' APPENDUID).

        Raises:
            FolderNotFound: The folder does not exist.
        """
        name = _folder_name(folder)
        flag_text = " ".join(_flag_list(flags))
        data = as_bytes(message)
        wire = f"{_wire_folder(name)} ({flag_text}) {{{len(data)}}}"
        async with self._locked() as session:
            lines = await session.append(wire, data)
        appended = parse_appenduid(bytes(lines[-1])) if lines else None
        if appended is None:
            return None
        return format_message_id(name, appended[0], appended[1])


def _flag_list(flags: Iterable[str]) -> list[str]:
    try:
        return store_flags([flags] if isinstance(flags, str) else flags)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
