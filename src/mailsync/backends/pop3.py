"""POP3 and POP3S retrievers, sync and async: wiring over the plans of
:mod:`mailsync.protocol.pop3_session`.

Everything a retriever does is written once, as plans (:mod:`mailsync._plans`): the session
logic (login, listing, pipelined retrieval, delete-then-QUIT) in the protocol module, and here
the policy that chooses, reuses and ends sessions (:class:`_POP3`). :class:`POP3Retriever` runs
them on blocking sockets, :class:`AsyncPOP3Retriever` on asyncio (natively, not on a thread),
with the performers of :mod:`mailsync.backends._socket`. What differs between the two is only
what differs between the I/O models: how a plan is run, how a stream of messages ends, and how
a wait is cut short by ``close()``.

What POP3 is, and how the Retriever API maps onto it honestly:

- One folder (``INBOX``), no flags, no server-side search: ``folders()`` returns only INBOX,
  queries are evaluated client-side, ``move``/``set_flags``/``append`` raise ``Unsupported``.
- A login sees a snapshot of the maildrop: new mail shows only after logging in again. Every
  ``messages()``/``sync()`` therefore starts from a fresh login, unless the server's
  ``LOGIN-DELAY`` forbids logging in again that soon (then the open session is reused).
- Message ids are the ``UIDL`` values. A server without UIDL gets ids (and sync identities)
  from a digest of the header block and the size, and so do messages whose UIDL the server
  repeats for another message (a repeated UIDL names neither); messages alike in headers and
  size get ``#2``, ``#3``... after the digest. ``delete()`` never removes a message other
  than the one named: an id that names no message, or several, or one of several messages
  that nothing tells apart, deletes nothing and raises (see
  :mod:`mailsync.protocol.pop3_session`).
- Retrieval pipelines ``RETR``/``TOP`` in bounded windows when the server offers PIPELINING
  (RFC 2449), so a download is not one round trip per message and memory stays flat.
- Reading has no side effects: every retrieval is followed by ``RSET``, and a session that
  may still hold marks (a RETR/TOP/DELE after the last RSET the server confirmed) ends with
  ``RSET`` before ``QUIT`` (Dovecot, for one, otherwise marks retrieved messages ``\\Seen``
  for IMAP clients, even when the connection just drops). Only a connection lost in the
  middle of a retrieval can leave such marks behind; that is the server's doing.
- The CAPA after login shares a write with the first commands of the transaction when the
  server offered PIPELINING before login (see
  :func:`mailsync.protocol.pop3_session.open_session`).
- ``delete()`` marks with ``DELE``, which POP3 applies only when ``QUIT`` succeeds; it runs in
  its own session ending with that QUIT, and reports nothing deleted unless QUIT said ``+OK``.
- ``watch()`` polls by logging in again, never more often than ``LOGIN-DELAY`` allows.
- ``timeout`` bounds every wait for the server, and a stalled server costs one of them: when
  the previous session leaves its RSET/QUIT unanswered, the call raises ``MailTimeout`` instead
  of waiting once more for a new login's greeting, and a connection that failed or timed out is
  dropped without waiting for a TLS goodbye.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from mailsync._base import AsyncRetriever, MessageRef, Retriever, SyncStep, message_refs
from mailsync._config import Endpoint
from mailsync._errors import MailsyncError, MailTimeout, MessageNotFound, MessageTooLarge
from mailsync._message import Folder, Message
from mailsync._plans import Call, Emit, Items, Plan, arun, astream, collect, run, stream
from mailsync._query import Q
from mailsync.backends._socket import aperform, perform
from mailsync.protocol import pop3_ids
from mailsync.protocol import pop3_session as pop3
from mailsync.protocol.pop3 import Capabilities, POP3Connection, Reply
from mailsync.protocol.stream import Close

__all__ = ["AsyncPOP3Retriever", "POP3Retriever"]

log = logging.getLogger("mailsync.pop3")

T = TypeVar("T")
_CAPABILITIES = frozenset({"delete"})


@dataclass
class _Stream:
    """The session a stream of replies runs on, once its plan has chosen one."""

    session: pop3.Session | None = None


class _POP3:
    """What the sync and async POP3 retrievers share: the policy for opening, reusing and
    ending sessions, and the logic of every method, as plans (no I/O)."""

    endpoint: Endpoint
    _session: pop3.Session | None = None
    _last_login: float | None = None
    _login_delay: int | None = None
    #: Sessions whose goodbye (RSET/QUIT) is under way: close() drops them instead of
    #: waiting for a server that may not answer.
    _ending: set[pop3.Session]
    #: UIDLs whose body came larger than max_message_size though LIST said it was not:
    #: sync() skips them from then on (in this process), with a warning each time.
    _oversized: set[str]

    # -- the policy --------------------------------------------------------------------------

    def _context(self) -> str:
        return self.endpoint.display

    def _new_state(self) -> pop3.Session:
        return pop3.Session(
            self._context(),
            conn=POP3Connection(max_message=self.endpoint.max_message_size),
            on_login_caps=self._note_login_capabilities,
        )

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

    def _reusable(self, session: pop3.Session, *, fresh: bool) -> bool:
        if session.busy or not session.idle:
            return False
        if fresh and session.listed:
            # A login sees a snapshot; a new listing needs a new login, when allowed.
            return self._login_allowed_in() > 0
        return True

    # -- sessions ----------------------------------------------------------------------------

    def _open(self) -> Plan[pop3.Session]:
        session = self._new_state()
        try:
            yield from pop3.open_session(session, self.endpoint)
        except BaseException:
            session.abort()
            raise
        self._note_login()
        return session

    def _acquire(self, *, fresh: bool) -> Plan[pop3.Session]:
        """The current session when it can serve, else a new login (ending the old session
        first, unless a stream still uses it)."""
        session = self._session
        if session is not None and self._reusable(session, fresh=fresh):
            return session
        if session is not None and not session.busy:
            _raise_if_silent((yield from self._release(session)))
        self._session = yield from self._open()
        return self._session

    def _release(self, session: pop3.Session, *, polite: bool = True) -> Plan[MailsyncError | None]:
        """End a session: with QUIT (RSET first when needed) when polite and in step. Returns
        the error that ended the goodbye, if any; the connection is closed either way, and one
        whose goodbye failed is dropped at once, without waiting for a TLS goodbye."""
        if self._session is session:
            self._session = None
        error = None
        self._ending.add(session)
        try:
            if polite and session.conn.idle:
                try:
                    yield from pop3.close(session)
                except MailsyncError as exc:
                    log.debug("%s: closing: %s", session.context, exc)
                    error = exc
            if polite and error is None and session.channel is not None:
                yield Close(session.channel)
                return None
        except BaseException:
            session.abort()
            raise
        finally:
            self._ending.discard(session)
        session.abort()
        return error

    def _drop(self, session: pop3.Session) -> None:
        """Forget a session and drop its connection at once."""
        if self._session is session:
            self._session = None
        session.abort()

    def _guarded(self, session: pop3.Session, plan: Plan[T]) -> Plan[T]:
        """Run a plan on a session marked busy: ``close()`` from another thread then drops
        the connection instead of writing RSET/QUIT in the middle of this exchange. A
        ``-ERR`` leaves the session usable; anything else (broken, timed out, out of step)
        drops it."""
        busy, session.busy = session.busy, True
        try:
            return (yield from plan)
        except BaseException:
            if not session.idle:
                self._drop(session)
            raise
        finally:
            session.busy = busy

    def _listing(self, session: pop3.Session) -> Plan[list[pop3_ids.Entry]]:
        if session.entries is None:
            session.entries = yield from self._guarded(session, pop3.listing(session))
        session.listed = True
        return session.entries

    def _streaming(self, stream: _Stream, *, fresh: bool) -> Plan[pop3.Session]:
        """The session a stream runs on, marked busy until :meth:`_finish_stream`."""
        session = yield from self._acquire(fresh=fresh)
        session.busy = True
        stream.session = session
        return session

    def _finish_stream(self, stream: _Stream, outcome: BaseException | None) -> Plan[None]:
        """After a stream ended (``outcome`` None: it ran out, ``GeneratorExit``: the caller
        left): read off the replies still coming and keep the session, or drop it; a session
        that is no longer the current one is ended."""
        session = stream.session
        if session is None:
            return
        session.busy = False
        usable = pop3.usable_after(outcome)
        if usable and not session.idle:
            try:
                yield from pop3.drain(session)
            except MailsyncError:
                usable = False
        if not usable or not session.idle:
            self._drop(session)
        elif self._session is not session:
            yield from self._release(session)

    def _disconnecting(self, *, stopping: bool = False) -> Plan[None]:
        """End the current session: politely, unless a plan is using it. When ``stopping``
        (``close()``), a goodbye already under way elsewhere is cut short too."""
        if stopping:
            for ending in list(self._ending):
                ending.abort()
        session = self._session
        if session is not None:
            yield from self._release(session, polite=not session.busy)

    # -- what the methods do -----------------------------------------------------------------

    def _selecting(self, selection: pop3.Selection, stream: _Stream) -> Plan[None]:
        """``messages()``: emit the messages the selection accepts, up to its limit."""
        if selection.nothing:
            return
        session = yield from self._streaming(stream, fresh=True)
        entries = selection.entries((yield from self._listing(session)))
        top = selection.use_top
        count = 0
        # Every message fetched is named, in order: ids as get() has them.
        naming = pop3_ids.Naming()
        items = Items(pop3.fetch(session, entries, top=top))
        try:
            while (item := (yield from items.next())) is not Items.END:
                entry, reply = item
                named = naming.id_of(entry, reply.data or b"")
                message = selection.accept(pop3.message_of(entry, reply, top=top, id=named))
                if message is None:
                    continue
                yield Emit(message)
                count += 1
                if selection.done(count):
                    return
        finally:
            items.close()

    def _getting(self, id: str) -> Plan[Message]:
        session = yield from self._acquire(fresh=False)
        entry = yield from self._lookup(session, id)
        if entry is None and session.listed:
            session = yield from self._acquire(fresh=True)
            session.entries = None
            entry = yield from self._lookup(session, id)
        if entry is None:  # raises MessageNotFound, saying why (a UIDL now shared, say)
            entry = pop3_ids.resolve(self._context(), session.entries or [], {}, id)
        found: list[tuple[pop3_ids.Entry, Reply]] = []
        yield from self._guarded(
            session, collect(pop3.fetch(session, [entry], top=False), found.append)
        )
        if not found:
            raise MessageNotFound(f"{self._context()}: message {id!r} vanished")
        return pop3.message_of(*found[0], top=False, id=id)

    def _lookup(self, session: pop3.Session, id: str) -> Plan[pop3_ids.Entry | None]:
        """The entry ``id`` names, None when it names none; an ambiguous id raises."""
        entries = yield from self._listing(session)
        index = yield from self._guarded(session, pop3.index(session, entries, [id]))
        if id not in index:
            return None
        return pop3_ids.resolve(self._context(), entries, index, id)

    def _syncing(
        self,
        folder: str,
        cursor: dict[str, Any] | None,
        known: Callable[[Iterable[str]], set[str]],
        stream: _Stream,
    ) -> Plan[None]:
        """``sync()``: the messages whose UIDL (or header digest) was not delivered before."""
        pop3.check_folder(folder)
        session = yield from self._streaming(stream, fresh=True)
        entries = yield from self._listing(session)
        # What each message is recorded as: "uidl:<UIDL>", or its header digest id where it
        # has no UIDL of its own (headers fetched for those only). Named over the whole
        # listing, so that look-alikes get the ordinals get() and delete() give them.
        names = yield from pop3.identify(session, entries)
        limit = self.endpoint.max_message_size
        entries = pop3.too_large(self._context(), entries, limit)
        for entry in entries:
            if entry.uid is not None and entry.uid in self._oversized:
                log.warning(
                    "%s: sync skips message %s: its body was larger than max_message_size "
                    "(%s) though LIST said it was not",
                    self._context(),
                    entry.uid,
                    limit,
                )
        entries = [e for e in entries if e.uid is None or e.uid not in self._oversized]
        identities = {
            entry.number: f"uidl:{entry.uid}" if entry.uid is not None else names[entry.number]
            for entry in entries
            if entry.number in names
        }
        delivered = yield Call(partial(known, list(identities.values())))
        entries = [e for e in entries if identities.get(e.number, "") not in delivered]
        items = Items(pop3.fetch(session, entries, top=False))
        try:
            while (item := (yield from items.next())) is not Items.END:
                entry, reply = item
                message = pop3.message_of(entry, reply, top=False, id=names.get(entry.number))
                yield Emit(SyncStep(message, pop3.CURSOR, pop3.identity(message)))
        except MessageTooLarge as exc:
            # Larger than its LIST size said: refused as it arrived. The next sync skips it
            # (with a warning) rather than stall on it.
            if exc.id is not None:
                self._oversized.add(exc.id)
            raise
        finally:
            items.close()
        if cursor is None:
            yield Emit(SyncStep(None, pop3.CURSOR))

    def _deleting(self, ids: Sequence[str]) -> Plan[None]:
        # A fresh snapshot (mail that arrived since can be deleted too), unless LOGIN-DELAY
        # forbids logging in again so soon: then the open session serves.
        session = yield from self._acquire(fresh=True)
        self._session = None  # this session ends with the QUIT that applies the DELEs
        try:
            yield from pop3.delete(session, ids)
        except BaseException:
            session.abort()
            raise
        assert session.channel is not None
        yield Close(session.channel)


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


class POP3Retriever(_POP3, Retriever):
    """Reads a POP3 maildrop (``pop3://user@host``, ``pop3s://user@host``).

    Options (keyword arguments of :func:`mailsync.connect`, or URL query parameters):
    ``apop=True`` logs in with APOP when the server offers it. A ``token`` logs in with
    OAUTHBEARER or XOAUTH2; otherwise ``AUTH PLAIN`` when offered, else ``USER``/``PASS``.
    """

    scheme = "pop3"
    capabilities = _CAPABILITIES

    def __init__(self, endpoint: Endpoint, *, state: Any = None) -> None:
        super().__init__(endpoint, state=state)
        self._ending = set()
        self._oversized = set()

    # -- running plans: what the blocking I/O model does -------------------------------------

    def _run(self, plan: Plan[T]) -> T:
        return run(plan, perform, context=self._context())

    def _stream(self, plan_on: Callable[[_Stream], Plan[None]]) -> Iterator[Any]:
        on = _Stream()
        outcome: BaseException | None = None
        try:
            yield from stream(plan_on(on), perform, context=self._context())
        except BaseException as exc:
            outcome = exc
            raise
        finally:
            self._run(self._finish_stream(on, outcome))

    # -- the API -----------------------------------------------------------------------------

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
        selection = pop3.Selection.of(folder, query, headers_only, limit)
        return self._stream(partial(self._selecting, selection))

    def get(self, id: str) -> Message:
        """One message by id (its UIDL).

        Raises:
            MessageNotFound: No message in the maildrop has this id.
        """
        return self._run(self._getting(id))

    def _sync_steps(
        self,
        folder: str,
        cursor: dict[str, Any] | None,
        known: Callable[[Iterable[str]], set[str]],
    ) -> Iterator[SyncStep]:
        return self._stream(partial(self._syncing, folder, cursor, known))

    def _wait_for_change(self, folder: str, timeout: float) -> None:
        # A POP3 session never sees new mail: log out now, log in again on the next sync(),
        # and never sooner than LOGIN-DELAY allows.
        self._disconnect()
        self._stop.wait(self._poll_wait(timeout))

    def _disconnect(self) -> None:
        self._run(self._disconnecting(stopping=self._stop.is_set()))

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
        if ids:
            self._run(self._deleting(ids))


class AsyncPOP3Retriever(_POP3, AsyncRetriever):
    """The asyncio POP3 retriever: the same plans as :class:`POP3Retriever` on asyncio
    streams (no worker thread)."""

    scheme = "pop3"
    capabilities = _CAPABILITIES

    def __init__(self, endpoint: Endpoint, *, state: Any = None) -> None:
        super().__init__(endpoint, state=state)
        self._ending = set()
        self._oversized = set()

    # -- running plans: what the asyncio I/O model does --------------------------------------

    async def _run(self, plan: Plan[T]) -> T:
        return await arun(plan, aperform, context=self._context())

    async def _stream(self, plan_on: Callable[[_Stream], Plan[None]]) -> AsyncIterator[Any]:
        on = _Stream()
        outcome: BaseException | None = None
        steps = astream(plan_on(on), aperform, context=self._context())
        try:
            async for item in steps:
                yield item
        except BaseException as exc:
            outcome = exc
            raise
        finally:
            await steps.aclose()
            await self._run(self._finish_stream(on, outcome))

    # -- the API -----------------------------------------------------------------------------

    async def folders(self) -> list[Folder]:
        """Only the INBOX: POP3 has one maildrop and no folders."""
        return [Folder("INBOX")]

    def messages(
        self,
        folder: str = "INBOX",
        *,
        query: Q | None = None,
        headers_only: bool = False,
        limit: int | None = None,
    ) -> AsyncIterator[Message]:
        """The maildrop's messages in order; see :meth:`POP3Retriever.messages`."""
        selection = pop3.Selection.of(folder, query, headers_only, limit)
        return self._stream(partial(self._selecting, selection))

    async def get(self, id: str) -> Message:
        """One message by id (its UIDL); see :meth:`POP3Retriever.get`."""
        return await self._run(self._getting(id))

    def _sync_steps(
        self,
        folder: str,
        cursor: dict[str, Any] | None,
        known: Callable[[Iterable[str]], set[str]],
    ) -> AsyncIterator[SyncStep]:
        return self._stream(partial(self._syncing, folder, cursor, known))

    async def _wait_for_change(self, folder: str, timeout: float) -> None:
        # See POP3Retriever._wait_for_change; aclose() ends the wait at once.
        await self._disconnect()
        await self._sleep_unless_stopped(self._poll_wait(timeout))

    async def _disconnect(self) -> None:
        await self._run(self._disconnecting(stopping=self._is_stopped()))

    async def delete(
        self, msgs: MessageRef | Sequence[MessageRef], *, permanent: bool = False
    ) -> None:
        """Delete messages for good; see :meth:`POP3Retriever.delete`."""
        ids = message_refs(msgs)
        if ids:
            await self._run(self._deleting(ids))
