"""IMAP (``imap://``, ``imaps://``) as a sync :class:`~mailsync.Retriever`, over imapclient.

One connection, an :class:`imaplib.IMAP4`, carries everything. imapclient does the commands
whose answers need real parsing (LIST, STORE, MOVE, COPY, EXPUNGE, APPEND, IDLE): it is put over
that connection when the first of them comes. The path every ``sync()`` and ``messages()`` takes
is spoken directly on the imaplib connection: connect, STARTTLS, LOGIN/AUTHENTICATE, ENABLE,
SELECT/EXAMINE, UID SEARCH (criteria rendered by :mod:`mailsync.protocol.imap`, a big folder
searched in windows by :mod:`mailsync.protocol.imap_search`), and the bulk
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
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from mailsync._base import MessageRef, OutgoingMessage, Retriever, SyncStep, message_refs
from mailsync._config import Endpoint
from mailsync._envelope import outgoing_bytes
from mailsync._errors import (
    ConfigError,
    ConnectionFailed,
    FolderNotFound,
    MailsyncError,
    MailTimeout,
    MessageNotFound,
    ProtocolError,
    SecretScrubber,
    TemporaryFailure,
)
from mailsync._message import Folder, Message, crlf_bytes, header_block
from mailsync._plans import Operation, run, stream
from mailsync._query import Q
from mailsync.backends._idle import WakePipe, wait_for_line
from mailsync.backends._imaplib import (
    FetchStream,
    adopting_client,
    log_in,
    open_connection,
    select_codes,
    text,
    translate,
)
from mailsync.protocol import imap as proto
from mailsync.protocol import imap_sync
from mailsync.protocol.imap_search import Search, change_batches, search_steps
from mailsync.protocol.imap_sync import Batching

if TYPE_CHECKING:
    from imapclient import IMAPClient

__all__ = ["IMAPRetriever"]

#: How long a polite LOGOUT may take when closing.
LOGOUT_TIMEOUT = 2.0


def _briefly(imap: imaplib.IMAP4) -> None:
    """Let no wait on ``imap`` take longer than :data:`LOGOUT_TIMEOUT` from now on (its
    reads keep to the connection's limits, which would restore the read timeout)."""
    imap.sock.settimeout(LOGOUT_TIMEOUT)
    limits = getattr(imap, "limits", None)
    if limits is not None:
        limits.most = LOGOUT_TIMEOUT


def _canonical(folder: str) -> str:
    return "INBOX" if folder.upper() == "INBOX" else folder


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
        self._wake = WakePipe()
        self._new_mail = False
        #: FETCH streams under way (in this thread or another): close() does not talk over them.
        self._streams = 0
        #: Connections whose LOGOUT is under way: close() cuts it short.
        self._ending: set[imaplib.IMAP4] = set()
        #: The secrets the current connection sent, kept out of the errors that quote it.
        self._secrets = SecretScrubber()

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
                client = adopting_client()(imap, self.endpoint)
            self._client = client
        return client

    def _connect(self) -> imaplib.IMAP4:
        with self._errors():
            imap = open_connection(self.endpoint)
        self._secrets = SecretScrubber()
        try:
            with self._errors():
                self._caps = log_in(imap, self.endpoint, self._secrets)
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
                _briefly(imap)
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
        self._wake.wake()
        for ending in list(self._ending):  # a LOGOUT under way in another thread
            self._interrupt(ending)
        if self._streams:
            # A FETCH is being read (maybe by another thread): LOGOUT would talk over it.
            # Shutting the socket down wakes that reader, which then drops the connection.
            self._interrupt(self._imap)
        with self._lock:  # an IDLE wait gives the connection back at once
            if not self._streams:
                self._disconnect()
            self._wake.close()

    # -- error translation --------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self, folder: str | None = None) -> Iterator[None]:
        """Translate imapclient/imaplib/socket errors; drop the connection when it broke."""
        try:
            yield
        except MailsyncError as exc:
            # Raised through imaplib by the connection's limits, or by a broken link: either
            # way the connection is out of step.
            if isinstance(exc, ConnectionFailed | MailTimeout | ProtocolError):
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
        error, broken = translate(exc, self.endpoint.display, folder, self._secrets)
        if broken:
            self._drop()
        return error

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
                raise imaplib.IMAP4.error(f"{command} failed: {text(data)}")
            status = proto.FolderStatus.from_select(select_codes(imap.untagged_responses))
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
        enough = limit if plan.exact else None  # the first UIDs are the answer
        search = search_steps(folder, status, plan.criteria, charset=plan.charset, enough=enough)
        uids = run(search, self._perform, translate=self._translate)
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
                raise imaplib.IMAP4.error(f"SEARCH failed: {text(data)}")
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
            if type(uid) is not int:  # rare: uid_of warns or refuses (a call less per message)
                try:
                    uid = imap_sync.uid_of(attributes)  # None (a warning): left out, as in async
                except ProtocolError as exc:
                    self._drop()
                    raise ProtocolError(f"{self.endpoint.display}: {exc}") from exc
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
        """``UID FETCH`` of each batch in turn (see :class:`FetchStream`)."""
        imap = self._session()
        stream = FetchStream(
            imap,
            self.endpoint.display,
            translate=self._translated,
            drop=self._drop,
            alive=lambda: self._imap is imap,
            exists=self._note_exists,
            secrets=self._secrets,
        )
        self._streams += 1
        try:
            yield from stream.batches(batches, items, ahead=ahead)
        finally:
            self._streams -= 1

    def _note_exists(self) -> None:
        self._new_mail = True  # arrived during a FETCH: the next wait returns at once

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
        """Performs the operations of :func:`mailsync.protocol.imap_sync.sync_steps` and
        :func:`mailsync.protocol.imap_search.search_steps`."""
        if isinstance(op, imap_sync.Fetch):
            self._reselect(op.folder, op.uidvalidity)
            items = self._fetch_items(op.items) if op.gmail else op.items
            return list(self._fetch(list(op.uids), items))
        if isinstance(op, Search):
            self._reselect(op.folder, op.uidvalidity)
            return self._search(list(op.criteria), op.charset)
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
            imap = client._imap
            changed = wait_for_line(
                imap,
                self._wake,
                until,
                self._stop,
                functools.partial(self._idle_line, imap),
                self.endpoint.timeout.read,
            )
            if not self._is_current(client):
                return  # dropped while waiting
            if self._stop.is_set():
                # close() is waiting for this connection: end IDLE politely, but briefly.
                with contextlib.suppress(Exception):
                    _briefly(client._imap)
                    client.idle_done()
                return
            with self._errors():
                client.idle_done()
            if changed or time.monotonic() >= deadline:
                return

    def _is_current(self, client: IMAPClient) -> bool:
        return self._client is client

    def _idle_line(self, imap: imaplib.IMAP4) -> bool:
        limits = getattr(imap, "limits", None)
        if limits is not None:
            limits.start()  # a line pushed during IDLE is a call of its own
        with self._errors():
            line = imap._get_line()
        words = line.split()
        if len(words) >= 2 and words[0] == b"*" and words[1].upper() == b"BYE":
            self._drop()
            raise ConnectionFailed(f"{self.endpoint.display}: the server ended the session")
        return len(words) >= 3 and words[0] == b"*" and words[2].upper() in (b"EXISTS",)

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

    # -- changing -----------------------------------------------------------------------------

    def _grouped(self, msgs: MessageRef | Sequence[MessageRef]) -> list[tuple[str, list[int]]]:
        """Ids grouped by folder (each checked for UIDVALIDITY), folders in first-seen order,
        each folder's UIDs in batches of one command each (:func:`change_batches`)."""
        groups: dict[str, list[int]] = {}
        for ref in message_refs(msgs):
            folder, uid = self._locate(proto.parse_message_id(ref), readonly=False)
            groups.setdefault(folder, []).append(uid)
        return [
            (folder, batch) for folder, uids in groups.items() for batch in change_batches(uids)
        ]

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
        for folder, uids in self._grouped(msgs):
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
        for source, uids in self._grouped(msgs):
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
        for source, uids in groups:
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
        data = crlf_bytes(outgoing_bytes(message))  # imaplib's own CRLF pass: a no-op now
        with self._errors(folder):
            response = self._conn().append(proto.encode_folder(folder), data, flag_list)
        appended = proto.parse_appenduid(response or b"")
        if appended is None:
            return None
        return proto.format_message_id(folder, appended[0], appended[1])
