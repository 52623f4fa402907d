"""The backend contract: :class:`Retriever`, :class:`AsyncRetriever`, :class:`Sender`,
:class:`AsyncSender`, plus the machinery every backend shares.

A backend implements a handful of primitives (``folders``, ``messages``, ``get``, the changes
since a cursor as :class:`SyncStep` values, and optionally how to wait for new mail). This module
turns those into the public behaviour that must be identical everywhere:

- ``sync()`` (:class:`SyncRun`): saves the cursor and the delivered identity of each message
  when the *next* message is requested and when the loop ends, so a crash mid-loop redelivers
  at most the message being handled (at-least-once), never loses one.
- ``watch()``: ``sync()``, then wait (IDLE, push, or polling), forever; reconnects with
  exponential backoff and jitter when the connection drops, catching up through ``sync()``.
- Every backend's ``messages()``, ``folders()`` and ``send_many()`` are finished by
  :mod:`mailsync._stream` (``collect()``, ``progress=``) from ``__init_subclass__``.

Senders are :mod:`mailsync._senders`, and the run iterators ``sync()`` returns
:mod:`mailsync._sync_run` (both re-exported here); the thread adapters that give a sync
backend its async twin are :mod:`mailsync._threaded`.

No protocol code lives here. asyncio is imported inside the async code paths only: it costs
~20 ms at start-up, which sync programs (a cron job, a CLI call) should not pay.
"""

from __future__ import annotations

import abc
import logging
import random
import threading
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Sequence,
)
from types import TracebackType
from typing import Any, ClassVar, TypeAlias, TypeVar

from mailsync import _observe
from mailsync._config import Endpoint
from mailsync._errors import (
    ConnectionFailed,
    MailsyncError,
    MailTimeout,
    RateLimited,
    TemporaryFailure,
    Unsupported,
)
from mailsync._message import Folder, Message
from mailsync._query import Q
from mailsync._senders import AsyncSender, OutgoingMessage, Sender, SendResult
from mailsync._state import StateStore, SyncLease, shared_state_store
from mailsync._stream import (
    AsyncMessageStream,
    MessageStream,
    acounted_steps,
    counted_steps,
    finish_retriever_class,
)
from mailsync._sync_run import AsyncSyncRun, SyncRun, SyncStep

__all__ = [
    "AsyncMessageStream",
    "AsyncRetriever",
    "AsyncSender",
    "AsyncSyncRun",
    "Backoff",
    "MessageRef",
    "MessageStream",
    "OutgoingMessage",
    "Retriever",
    "SendResult",
    "Sender",
    "SyncRun",
    "SyncStep",
]

log = logging.getLogger("mailsync")

#: What the changing methods accept: messages, or their ids.
MessageRef: TypeAlias = Message | str

CAPABILITIES = frozenset(
    {"folders", "flags", "move", "delete", "append", "search", "idle", "labels", "threads"}
)

T = TypeVar("T")


class Backoff:
    """Exponential backoff with full jitter, for reconnecting.

    Args:
        base: The first delay's upper bound, in seconds.
        cap: The largest delay.
    """

    def __init__(self, base: float = 1.0, cap: float = 300.0) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0

    def next(self) -> float:
        """The next delay (random in ``[base/2, bound]``, the bound doubling each time)."""
        bound = min(self.cap, self.base * (2**self.attempt))
        self.attempt += 1
        return random.uniform(bound / 2, bound)

    def reset(self) -> None:
        """Start again from the smallest delay."""
        self.attempt = 0


#: What watch() rides out by reconnecting: a broken or slow connection, a busy mailbox
#: (POP3 [IN-USE], 4xx), a rate limit. Anything else (bad password, missing folder) ends it.
_RECOVERABLE = (ConnectionFailed, MailTimeout, TemporaryFailure, RateLimited)


def _retry_delay(backoff: Backoff, exc: BaseException) -> float:
    delay = backoff.next()
    if isinstance(exc, RateLimited) and exc.retry_after:
        return max(delay, exc.retry_after)
    return delay


# -- retrievers ------------------------------------------------------------------------------


class _StoreOnFirstUse:
    """A retriever's state store that is opened by the first call made to it. Async code
    makes every store call on a worker thread, so the opening (directories, the SQLite file
    and its schema) happens there too, not on the event loop."""

    def __init__(self, owner: _StateMixin) -> None:
        self._owner = owner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._owner.state, name)


class _StateMixin:
    endpoint: Endpoint
    _state_arg: Any
    _store: StateStore | None

    @property
    def state(self) -> StateStore:
        """The state store holding this account's sync cursors (opened on first use)."""
        if self._store is None:
            self._store = shared_state_store(self._state_arg)
        return self._store

    @property
    def account_key(self) -> str:
        """The name of this account in the state store."""
        return self.endpoint.account_key

    def _folder_key(self, folder: str) -> str:
        return "INBOX" if folder.upper() == "INBOX" else folder

    def _load_cursor(self, store: StateStore, folder_key: str) -> dict[str, Any] | None:
        """The saved cursor, taking over one saved under an older account key."""
        cursor = store.load_cursor(self.account_key, folder_key)
        if cursor is not None:
            return cursor
        for legacy in self.endpoint.legacy_account_keys:
            cursor = store.load_cursor(legacy, folder_key)
            if cursor is None:
                continue
            copy = getattr(store, "copy_folder_state", None)
            if copy is not None:  # cursor and delivered set, in one transaction
                copy(legacy, self.account_key, folder_key)
            else:
                store.save_cursor(self.account_key, folder_key, cursor)
            log.info("%s: took over the sync cursor saved as %s", self.endpoint.display, legacy)
            return cursor
        return None

    def _known(self, folder: str) -> Callable[[Iterable[str]], set[str]]:
        def known(identities: Iterable[str]) -> set[str]:
            return self.state.known(self.account_key, self._folder_key(folder), identities)

        return known


class Retriever(_StateMixin, abc.ABC):
    """Pulls mail from one account. Get one with :func:`mailsync.connect`.

    Backends subclass this and implement the abstract methods; the rest has working defaults.
    Retrievers connect lazily, are context managers, and are closed by :meth:`close`.

    Attributes:
        endpoint: The parsed URL and options.
        capabilities: What this backend offers, from ``"folders" "flags" "move" "delete"
            "append" "search" "idle" "labels" "threads"``.
    """

    scheme: ClassVar[str] = ""
    capabilities: frozenset[str] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Every backend's messages()/folders() gain collect(), progress= and FolderList here.
        super().__init_subclass__(**kwargs)
        finish_retriever_class(cls, asynchronous=False)

    def __init__(self, endpoint: Endpoint, *, state: Any = None) -> None:
        self.endpoint = endpoint
        self._state_arg = state
        self._store: StateStore | None = None
        self._stop = threading.Event()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.endpoint.url}>"

    def __enter__(self: T) -> T:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- what backends implement -------------------------------------------------------------

    @abc.abstractmethod
    def folders(self) -> list[Folder]:
        """Every folder of the account, as a :class:`~mailsync.FolderList` (a list that shows
        as a table in Jupyter)."""

    @abc.abstractmethod
    def messages(
        self,
        folder: str = "INBOX",
        *,
        query: Q | None = None,
        headers_only: bool = False,
        limit: int | None = None,
    ) -> Iterator[Message]:
        """The messages of ``folder`` in arrival order, streamed in batches.

        Every backend's ``messages()`` returns a :class:`~mailsync.MessageStream`: an
        iterator (memory stays flat) whose ``collect()`` gives a :class:`~mailsync.MessageList`
        instead, and also takes ``progress=True`` (keyword only): a progress bar in Jupyter or
        on a terminal, nothing when output goes elsewhere.

        Args:
            folder: The folder name; ``"INBOX"`` in any case is the inbox.
            query: Only messages matching this :class:`Q`.
            headers_only: Fetch only the header block (``raw`` holds just that).
            limit: Stop after this many messages.

        Raises:
            FolderNotFound: No such folder.
        """

    @abc.abstractmethod
    def get(self, id: str) -> Message:
        """One message by its :attr:`Message.id`.

        Raises:
            MessageNotFound: No message has this id.
        """

    @abc.abstractmethod
    def _sync_steps(
        self,
        folder: str,
        cursor: dict[str, Any] | None,
        known: Callable[[Iterable[str]], set[str]],
    ) -> Iterator[SyncStep]:
        """What is new since ``cursor`` (None: everything), oldest first.

        ``known`` says which identities were delivered before; use it when the cursor is no
        longer valid (UIDVALIDITY changed, history expired) so a resync yields nothing twice.
        """

    def _wait_for_change(self, folder: str, timeout: float) -> None:
        """Block until the folder may have changed or ``timeout`` passed (default: sleep).

        Backends with IDLE or push override this. It returns early when :meth:`close` is
        called from another thread.
        """
        self._stop.wait(timeout)

    def _disconnect(self) -> None:
        """Drop the connection so that the next call reconnects (after a failure)."""

    def close(self) -> None:
        """Close the connection and stop any ``watch()`` loop."""
        self._stop.set()
        self._disconnect()

    # -- shared behaviour --------------------------------------------------------------------

    def sync(
        self, folder: str = "INBOX", *, wait: bool | float = True, progress: bool = False
    ) -> SyncRun:
        """Only the messages no earlier ``sync()`` of this account and folder yielded.

        The cursor is saved as each next message is requested and when the loop ends. A
        cursor the server invalidated triggers a resync that yields no message twice. From
        its first step until it ends the run holds the account+folder's lease in the state
        store, so a concurrent ``sync()`` elsewhere (thread, process, machine) waits for it.

        Args:
            folder: The folder name.
            wait: When another run holds the lease: True waits for it, False raises at once,
                a number of seconds waits at most that long.
            progress: Show a progress bar (Jupyter or a terminal only).

        Raises:
            FolderNotFound: No such folder.
            SyncBusy: Another run held the lease longer than ``wait`` allows.
            LeaseLost: Another run saved the cursor under this one (the lease was lost).
        """
        return self._leased_sync(folder, wait, lambda: False, time.sleep, progress=progress)

    def _leased_sync(
        self,
        folder: str,
        wait: bool | float,
        stopped: Callable[[], bool],
        sleep: Callable[[float], object],
        *,
        progress: bool = False,
    ) -> SyncRun:
        """:meth:`sync`; waiting for the lease ends when ``stopped()`` is true, and ``sleep``
        is how it waits between attempts (watch() wakes it when closed)."""
        store, key = self.state, self._folder_key(folder)
        lease = SyncLease(store, self.account_key, key, wait)

        def steps() -> Iterator[SyncStep]:
            if not lease.acquire(stopped, sleep):
                return
            if lease.cursor is None and self._load_cursor(store, key) is not None:
                lease.release()  # a cursor saved under an older account key was copied:
                if not lease.acquire(stopped, sleep):  # read it under the lease
                    return
            yield from self._sync_steps(folder, lease.cursor, self._known(folder))

        return SyncRun(counted_steps(steps(), progress=progress, desc=folder), lease)

    def watch(self, folder: str = "INBOX", *, poll_interval: float = 60.0) -> Iterator[Message]:
        """Yield new messages as they arrive, forever (until :meth:`close`).

        Built on :meth:`sync`, so nothing is missed across restarts. Uses IDLE or the
        provider's push where the backend has it, else polls every ``poll_interval`` seconds.
        A dropped connection is reopened with exponential backoff and jitter.

        :meth:`close` (from any thread) ends it at once, whatever it is doing: waiting for
        mail, backing off, or in the middle of fetching; the message being handled then
        counts as not delivered.
        """
        backoff = Backoff()
        try:
            while not self._stop.is_set():
                try:
                    run = self._leased_sync(folder, True, self._stop.is_set, self._stop.wait)
                    try:
                        for message in run:
                            if self._stop.is_set():
                                return  # closed: the message being handled comes again
                            yield message
                            if self._stop.is_set():
                                return  # closed while the message was handled
                    finally:
                        run.close()
                    backoff.reset()
                    if self._stop.is_set():
                        return
                    self._wait_for_change(folder, poll_interval)
                except MailsyncError as exc:
                    if self._stop.is_set():
                        return  # close() cut the connection: what that broke is not news
                    if not isinstance(exc, _RECOVERABLE):
                        raise
                    delay = _retry_delay(backoff, exc)
                    with _observe.reconnect(self.endpoint, exc, delay):
                        self._disconnect()
                        self._stop.wait(delay)
        finally:
            if self._stop.is_set():
                self._disconnect()  # a connection this loop opened while close() ran

    def set_flags(
        self,
        msgs: MessageRef | Sequence[MessageRef],
        *,
        add: Iterable[str] = (),
        remove: Iterable[str] = (),
    ) -> None:
        """Add and remove flags on messages.

        Raises:
            Unsupported: The backend has no flags.
        """
        raise Unsupported(f"{self.scheme} cannot change flags")

    def move(self, msgs: MessageRef | Sequence[MessageRef], folder: str) -> None:
        """Move messages to another folder.

        Raises:
            Unsupported: The backend has no folders to move to.
        """
        raise Unsupported(f"{self.scheme} cannot move messages")

    def delete(self, msgs: MessageRef | Sequence[MessageRef], *, permanent: bool = False) -> None:
        """Delete messages: to the Trash folder where there is one, for good with
        ``permanent=True``.

        Raises:
            Unsupported: The backend cannot delete.
        """
        raise Unsupported(f"{self.scheme} cannot delete messages")

    def append(
        self, folder: str, message: OutgoingMessage, flags: Iterable[str] = ()
    ) -> str | None:
        """Store a message in a folder; returns its id when the backend can tell.

        Raises:
            Unsupported: The backend cannot store messages.
        """
        raise Unsupported(f"{self.scheme} cannot append messages")


class AsyncRetriever(_StateMixin, abc.ABC):
    """The async twin of :class:`Retriever`: same methods, awaited or ``async for``.

    Get one with :func:`mailsync.connect_async`.
    """

    scheme: ClassVar[str] = ""
    capabilities: frozenset[str] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        finish_retriever_class(cls, asynchronous=True)

    def __init__(self, endpoint: Endpoint, *, state: Any = None) -> None:
        self.endpoint = endpoint
        self._state_arg = state
        self._store: StateStore | None = None
        self._stopped = False
        import asyncio

        # Set by aclose(): wakes a watch() that is waiting between polls or backing off.
        self._stop_event = asyncio.Event()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.endpoint.url}>"

    async def __aenter__(self: T) -> T:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @abc.abstractmethod
    async def folders(self) -> list[Folder]:
        """Every folder of the account."""

    @abc.abstractmethod
    def messages(
        self,
        folder: str = "INBOX",
        *,
        query: Q | None = None,
        headers_only: bool = False,
        limit: int | None = None,
    ) -> AsyncIterator[Message]:
        """The messages of ``folder`` in arrival order (see :meth:`Retriever.messages`), as an
        :class:`~mailsync.AsyncMessageStream`: ``async for`` it, or ``await .collect()``."""

    @abc.abstractmethod
    async def get(self, id: str) -> Message:
        """One message by its :attr:`Message.id`."""

    @abc.abstractmethod
    def _sync_steps(
        self,
        folder: str,
        cursor: dict[str, Any] | None,
        known: Callable[[Iterable[str]], set[str]],
    ) -> AsyncIterator[SyncStep]:
        """What is new since ``cursor``; see :meth:`Retriever._sync_steps`."""

    def _is_stopped(self) -> bool:
        return self._stopped

    async def _wait_for_change(self, folder: str, timeout: float) -> None:
        """Wait until the folder may have changed or ``timeout`` passed (default: sleep).

        Backends with IDLE or push override this. It returns early when :meth:`aclose` is
        called from another task.
        """
        await self._sleep_unless_stopped(timeout)

    async def _sleep_unless_stopped(self, seconds: float) -> None:
        """Sleep, but wake as soon as :meth:`aclose` is called."""
        import asyncio

        try:
            async with asyncio.timeout(seconds):
                await self._stop_event.wait()
        except TimeoutError:
            pass

    async def _disconnect(self) -> None:
        """Drop the connection so that the next call reconnects."""

    async def aclose(self) -> None:
        """Close the connection and stop any ``watch()`` loop."""
        self._stopped = True
        self._stop_event.set()
        await self._disconnect()

    def sync(
        self, folder: str = "INBOX", *, wait: bool | float = True, progress: bool = False
    ) -> AsyncSyncRun:
        """Only messages no earlier ``sync()`` yielded; see :meth:`Retriever.sync`.

        The state store is only ever called on worker threads (taking the lease, reading the
        cursor, asking which messages were delivered, saving), never on the event loop: a
        SQLite call can wait for another process's or thread's write.
        """
        import asyncio

        return self._leased_sync(folder, wait, lambda: False, asyncio.sleep, progress=progress)

    def _leased_sync(
        self,
        folder: str,
        wait: bool | float,
        stopped: Callable[[], bool],
        sleep: Callable[[float], Awaitable[object]],
        *,
        progress: bool = False,
    ) -> AsyncSyncRun:
        """:meth:`sync`, with :meth:`Retriever._leased_sync`'s ``stopped`` and ``sleep``."""
        key = self._folder_key(folder)
        store = self._store if self._store is not None else _StoreOnFirstUse(self)
        lease = SyncLease(store, self.account_key, key, wait)
        steps = self._leased_steps(folder, key, store, lease, (stopped, sleep))
        return AsyncSyncRun(acounted_steps(steps, progress=progress, desc=folder), lease)

    async def _leased_steps(
        self,
        folder: str,
        key: str,
        store: StateStore,
        lease: SyncLease,
        waiting: tuple[Callable[[], bool], Callable[[float], Awaitable[object]]],
    ) -> AsyncIterator[SyncStep]:
        import asyncio

        if not await lease.acquire_async(*waiting):
            return
        # A lambda: even looking the method up opens a store not opened yet.
        if lease.cursor is None and await asyncio.to_thread(
            lambda: self._load_cursor(store, key) is not None
        ):
            await asyncio.to_thread(lease.release)  # as in Retriever._leased_sync
            if not await lease.acquire_async(*waiting):
                return
        steps = self._sync_steps(folder, lease.cursor, self._known(folder))
        try:
            async for step in steps:
                yield step
        finally:
            aclose = getattr(steps, "aclose", None)
            if aclose is not None:
                await aclose()

    async def watch(
        self, folder: str = "INBOX", *, poll_interval: float = 60.0
    ) -> AsyncIterator[Message]:
        """Yield new messages as they arrive; see :meth:`Retriever.watch`."""
        backoff = Backoff()
        try:
            while not self._is_stopped():
                run = self._leased_sync(folder, True, self._is_stopped, self._sleep_unless_stopped)
                try:
                    async for message in run:
                        if self._is_stopped():
                            return  # closed: the message being handled comes again
                        yield message
                        if self._is_stopped():
                            return  # closed while the message was handled
                    backoff.reset()
                    if self._is_stopped():
                        return
                    await self._wait_for_change(folder, poll_interval)
                except MailsyncError as exc:
                    if self._is_stopped():
                        return  # aclose() cut the connection: what that broke is not news
                    if not isinstance(exc, _RECOVERABLE):
                        raise
                    delay = _retry_delay(backoff, exc)
                    with _observe.reconnect(self.endpoint, exc, delay):
                        await self._disconnect()
                        await self._sleep_unless_stopped(delay)
                finally:
                    await run.aclose()
        finally:
            if self._is_stopped():
                await self._disconnect()  # a connection this loop opened while aclose() ran

    async def set_flags(
        self,
        msgs: MessageRef | Sequence[MessageRef],
        *,
        add: Iterable[str] = (),
        remove: Iterable[str] = (),
    ) -> None:
        """Add and remove flags on messages (see :meth:`Retriever.set_flags`)."""
        raise Unsupported(f"{self.scheme} cannot change flags")

    async def move(self, msgs: MessageRef | Sequence[MessageRef], folder: str) -> None:
        """Move messages to another folder (see :meth:`Retriever.move`)."""
        raise Unsupported(f"{self.scheme} cannot move messages")

    async def delete(
        self, msgs: MessageRef | Sequence[MessageRef], *, permanent: bool = False
    ) -> None:
        """Delete messages (see :meth:`Retriever.delete`)."""
        raise Unsupported(f"{self.scheme} cannot delete messages")

    async def append(
        self, folder: str, message: OutgoingMessage, flags: Iterable[str] = ()
    ) -> str | None:
        """Store a message in a folder (see :meth:`Retriever.append`)."""
        raise Unsupported(f"{self.scheme} cannot append messages")


def message_refs(msgs: MessageRef | Sequence[MessageRef]) -> list[str]:
    """Normalise the ``msgs`` argument of the changing methods to a list of ids."""
    if isinstance(msgs, Message | str):
        msgs = [msgs]
    return [m.id if isinstance(m, Message) else m for m in msgs]


def __getattr__(name: str) -> Any:
    # ThreadedAsyncRetriever and ThreadedAsyncSender moved to mailsync._threaded (which
    # imports this module); code that imported them from here keeps working.
    if name in ("ThreadedAsyncRetriever", "ThreadedAsyncSender"):
        from mailsync import _threaded

        return getattr(_threaded, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
