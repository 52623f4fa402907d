"""The async IMAP backend: :class:`AsyncIMAPRetriever`, natively async over aioimaplib.

The connection, login, commands and IDLE are :class:`mailsync.backends._aioimap.Session`;
this module is the retriever over it. Everything that is not I/O comes from
:mod:`mailsync.protocol` and is shared with the sync backend, so the two behave alike: SEARCH
criteria, FETCH data → Message, flag names, modified UTF-7 and LIST → Folder, message ids
(:mod:`~mailsync.protocol.imap`), the sync walk, its cursor and batch rules
(:mod:`~mailsync.protocol.imap_sync`, run here as a plan).

One retriever holds one connection, so folders fetched concurrently use one retriever each.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Any, NamedTuple

from mailsync._base import (
    AsyncRetriever,
    MessageRef,
    OutgoingMessage,
    SyncStep,
    message_refs,
)
from mailsync._config import Endpoint
from mailsync._envelope import outgoing_bytes
from mailsync._errors import (
    AuthenticationError,
    ConfigError,
    ConnectionFailed,
    FolderNotFound,
    MessageNotFound,
    ProtocolError,
    TemporaryFailure,
)
from mailsync._message import Folder, Message, crlf_bytes, header_block
from mailsync._plans import Operation, Plan, arun, astream
from mailsync._query import Q
from mailsync.backends._aioimap import Mailbox, Session
from mailsync.protocol import imap_sync
from mailsync.protocol.imap import (
    FETCH_BODY,
    FETCH_GMAIL,
    FETCH_HEADERS,
    Criterion,
    FolderStatus,
    GmailRef,
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
from mailsync.protocol.imap_lines import is_exists, list_entries
from mailsync.protocol.imap_search import Search, change_batches, search_steps
from mailsync.protocol.imap_sync import Batching, SyncCursor, messages_from_fetch

__all__ = ["AsyncIMAPRetriever"]

_LINE_BREAKS = re.compile(r"[\r\n\0]")


def _strings(criteria: Iterable[Any]) -> Iterator[str]:
    """The string arguments in SEARCH criteria (nested lists included)."""
    for item in criteria:
        if isinstance(item, list):
            yield from _strings(item)
        elif isinstance(item, str):
            yield item


def _search_uids(lines: Sequence[Any]) -> list[int]:
    """UIDs from aioimaplib's ``SEARCH`` lines (the last line is the tagged reply)."""
    return search_uids(lines[:-1])


def _wire_folder(folder: str) -> str:
    """A folder name as a SELECT/APPEND/MOVE argument: modified UTF-7, quoted."""
    if folder.upper() == "INBOX":
        return "INBOX"
    return quote(encode_folder(folder)).decode("ascii")


def _folder_name(folder: str) -> str:
    return "INBOX" if folder.upper() == "INBOX" else folder


class _Mark(NamedTuple):
    """Where a connection stood when a sync last asked the server what is new: past this
    many EXISTS responses, after this many SELECTs."""

    session: Session
    announced: int
    selects: int

    @classmethod
    def now(cls, session: Session) -> _Mark:
        return cls(session, session.announced, session.selects)

    def holds(self, session: Session) -> bool:
        """Whether ``session`` is the same connection, with no SELECT since."""
        return session is self.session and session.alive and session.selects == self.selects


def _check_uidvalidity(session: Session, folder: str, mailbox: Mailbox, expected: int) -> None:
    if mailbox.uidvalidity != expected:
        raise TemporaryFailure(
            f"{session.context}: folder {folder!r} was replaced while being read "
            "(UIDVALIDITY changed); read it again"
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
        self._session_now: Session | None = None
        #: Connections whose LOGOUT is under way: aclose() drops them instead of waiting.
        self._ending: set[Session] = set()
        self._connecting = asyncio.Lock()
        self._tls_context: ssl.SSLContext | None = None
        self._highest_uid: dict[str, int] = {}
        #: Per folder: the connection's EXISTS count when a sync last asked what is new.
        self._asked: dict[str, _Mark] = {}
        #: Per folder: IDLE announced new mail on this connection, the folder still selected.
        self._announced: dict[str, _Mark] = {}

    # -- connection ----------------------------------------------------------------------------

    async def _session(self) -> Session:
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

    async def _open(self) -> Session:
        endpoint = self.endpoint
        if endpoint.token is None and endpoint.password is None:
            raise AuthenticationError(
                f"{endpoint.display}: no password or token given for "
                f"{endpoint.username or 'the login'}"
            )
        if endpoint.tls != "none" and self._tls_context is None:
            # Loading the CA store reads files: not on the event loop.
            self._tls_context = await asyncio.to_thread(endpoint.ssl_context)
        session = Session(endpoint, self._tls_context)
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
    async def _locked(self) -> AsyncIterator[Session]:
        """The connection, reserved for the caller's commands (SELECT and what depends on it)."""
        session = await self._session()
        async with session.lock:
            yield session

    @contextlib.asynccontextmanager
    async def _selected(
        self, folder: str, *, fresh: bool = False
    ) -> AsyncIterator[tuple[Session, Mailbox]]:
        """The connection with ``folder`` selected (again when ``fresh``), reserved."""
        async with self._locked() as session:
            mailbox = await session.select(_wire_folder(folder), fresh=fresh)
            yield session, mailbox

    async def _select_ref(self, session: Session, folder: str, uidvalidity: int) -> Mailbox:
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
        if self._is_stopped():
            for ending in list(self._ending):  # a LOGOUT under way elsewhere: cut it short
                ending.abort()
        session, self._session_now = self._session_now, None
        if session is None:
            return
        self._ending.add(session)
        try:
            await session.logout()
        finally:
            self._ending.discard(session)

    # -- folders -------------------------------------------------------------------------------

    async def folders(self) -> list[Folder]:
        """Every folder, with delimiter and special use (RFC 6154, or guessed from names)."""
        async with self._locked() as session:
            lines = await session.command("LIST", '"" "*"')
        return folders_from_list(list_entries(lines))

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
        async with self._selected(name, fresh=True) as (_session, mailbox):
            status = mailbox.status
        enough = limit if plan.exact else None  # the first UIDs are the answer
        search = search_steps(name, status, plan.criteria, charset=plan.charset, enough=enough)
        uids = await arun(search, self._perform_search, context=self.endpoint.display)
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

    async def _perform_search(self, op: Operation) -> list[int]:
        """Performs the searches of ``messages()``
        (:func:`~mailsync.protocol.imap_search.search_steps`); unlike a sync's, they leave
        ``watch()``'s marks alone (see :meth:`_perform`), as they deliver nothing."""
        if not isinstance(op, Search):
            raise TypeError(f"not an IMAP search: {op!r}")
        async with self._selected(op.folder) as (session, mailbox):
            _check_uidvalidity(session, op.folder, mailbox, op.uidvalidity)
            return await self._search_criteria(session, list(op.criteria), op.charset)

    async def _search_criteria(
        self, session: Session, criteria: list[Criterion], charset: str | None = None
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

    async def _newest_uid(self, session: Session) -> int:
        """The UID of the selected folder's last message (0: it is empty). ``UID SEARCH *``:
        one UID, where ``UID n:*`` would list every message since the last sync, as many as
        the folder holds if that sync stopped early (see
        :mod:`~mailsync.protocol.imap_search`)."""
        lines = await session.command("SEARCH", "*", uid=True, what="UID SEARCH")
        return max(_search_uids(lines), default=0)

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
        try:
            return messages_from_fetch(fetched, folder, uidvalidity, uids)
        except ProtocolError as exc:
            session.abort()  # it said something unreadable: not trusted any further
            raise ProtocolError(f"{session.context}: {exc}") from exc

    def _items(self, session: Session, base: str) -> str:
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
        announced = self._announced.pop(name, None)
        session_now = self._session_now
        if announced is not None and session_now is not None and announced.holds(session_now):
            # IDLE just announced new mail in the folder this connection has kept selected
            # since: no SELECT to learn what the server already said.
            async with self._selected(name) as (session, mailbox):
                status = _status_after_idle(mailbox, cursor)
                self._asked[name] = _Mark.now(session)
        else:
            async with self._selected(name, fresh=True) as (session, mailbox):
                status = mailbox.status
                self._asked[name] = _Mark.now(session)

        def steps() -> Plan[None]:
            position = yield from imap_sync.sync_steps(name, cursor, status, known, self.batching)
            self._highest_uid[name] = position.uid  # for the next IDLE (see _arrived_since_sync)

        async for step in astream(steps(), self._perform, context=self.endpoint.display):
            yield step

    async def _perform(self, op: Operation) -> Any:
        """Performs the operations of :func:`mailsync.protocol.imap_sync.sync_steps`."""
        if not isinstance(op, imap_sync.Fetch | Search):
            raise TypeError(f"not an IMAP sync operation: {op!r}")
        async with self._selected(op.folder) as (session, mailbox):
            _check_uidvalidity(session, op.folder, mailbox, op.uidvalidity)
            if isinstance(op, Search):
                if op.up_to_now:
                    # Mail that comes after this SEARCH is announced by an EXISTS after this
                    # mark; a search for given UIDs (a re-check) must not move it, or mail
                    # announced before it would wait for the next arrival.
                    self._asked[op.folder] = _Mark.now(session)
                return await self._search_criteria(session, list(op.criteria), op.charset)
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
                seen = await self._exists_since_sync(session, name)
                while seen is not None and not self._stopped:
                    seconds = min(deadline - loop.time(), self.idle_renew)
                    if seconds <= 0:
                        return
                    await session.idle(seconds)
                    if session.announced != seen:  # announced during IDLE or as it ended
                        seen = None
                if seen is None:
                    self._announced[name] = _Mark.now(session)
        except ConnectionFailed:
            if self._is_stopped():
                return  # aclose() cut the connection to end the wait
            raise

    async def _exists_since_sync(self, session: Session, folder: str) -> int | None:
        """None when mail may have come since the last sync asked (then sync again), else
        the connection's EXISTS count to wait past.

        The count alone answers when the connection is the one the sync asked on and the
        folder stayed selected; otherwise a SEARCH for UIDs past the last sync does.
        """
        asked = self._asked.get(folder)
        if asked is not None and asked.holds(session):
            return None if session.announced != asked.announced else asked.announced
        seen = session.announced
        if await self._arrived_since_sync(session, folder):
            return None
        return seen

    async def _arrived_since_sync(self, session: Session, folder: str) -> bool:
        """Whether mail came after the last sync and before IDLE. Its EXISTS may have come
        with the reply to an earlier command (aioimaplib drops those), found here by a
        search; or with the reply to this search, which ran before the message was stored,
        and then the session counted it (IDLE would not announce it again)."""
        highest = self._highest_uid.get(folder)
        if highest is None:
            return False
        announced = session.announced
        return await self._newest_uid(session) > highest or session.announced > announced

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
            if any(is_exists(line) for line in lines):
                return

    # -- changing ------------------------------------------------------------------------------

    async def _grouped(
        self, msgs: MessageRef | Sequence[MessageRef]
    ) -> list[tuple[str, int, list[int]]]:
        """``(folder, uidvalidity, uids)`` for the messages named, folders in first-seen order,
        each folder's UIDs in batches of one command each (:func:`change_batches`)."""
        groups: dict[tuple[str, int], list[int]] = {}
        for message_id in message_refs(msgs):
            ref = parse_message_id(message_id)
            if isinstance(ref, GmailRef):
                folder, uidvalidity, uid = await self._locate_gmail(ref)
            else:
                folder, uidvalidity, uid = ref.folder, ref.uidvalidity, ref.uid
            groups.setdefault((folder, uidvalidity), []).append(uid)
        return [
            (folder, v, batch)
            for (folder, v), uids in groups.items()
            for batch in change_batches(uids)
        ]

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

    async def _move_uids(self, session: Session, uids: list[int], target: str) -> None:
        wire = f"{uid_set(uids)} {_wire_folder(target)}"
        if "MOVE" in session.capabilities:
            await session.command("MOVE", wire, uid=True)
            return
        await session.command("COPY", wire, uid=True)
        await self._expunge_uids(session, uids)

    async def _expunge_uids(self, session: Session, uids: list[int]) -> None:
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
        # The sync backend's imaplib does the same: both store the same bytes for the same
        # input, and servers that refuse bare newlines (Cyrus) take it.
        data = crlf_bytes(outgoing_bytes(message))
        wire = f"{_wire_folder(name)} ({flag_text}) {{{len(data)}}}"
        async with self._locked() as session:
            lines = await session.append(wire, data)
        appended = parse_appenduid(bytes(lines[-1])) if lines else None
        if appended is None:
            return None
        return format_message_id(name, appended[0], appended[1])


def _status_after_idle(mailbox: Mailbox, cursor: dict[str, Any] | None) -> FolderStatus:
    """The folder's status for a sync right after IDLE announced mail: what SELECT said,
    less UIDNEXT (now stale: it must not make the sync think nothing is new), with the
    HIGHESTMODSEQ last seen, which the saved cursor may know better than the SELECT."""
    status = mailbox.status
    saved = SyncCursor.from_dict(cursor)
    modseq = status.highestmodseq
    if saved is not None and saved.uidvalidity == status.uidvalidity and saved.modseq is not None:
        modseq = saved.modseq if modseq is None else max(modseq, saved.modseq)
    return replace(status, uidnext=0, highestmodseq=modseq)


def _flag_list(flags: Iterable[str]) -> list[str]:
    try:
        return store_flags([flags] if isinstance(flags, str) else flags)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
