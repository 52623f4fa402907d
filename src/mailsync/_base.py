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
- :class:`ThreadedAsyncRetriever`/:class:`ThreadedAsyncSender`: the async API over a sync
  backend, running its blocking calls on one worker thread (never ``asyncio.run``).

No protocol code lives here. asyncio is imported inside the async code paths only: it costs
~20 ms at start-up, which sync programs (a cron job, a CLI call) should not pay.
"""

from __future__ import annotations

import abc
import logging
import random
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias, TypeVar

from mailsync import _observe
from mailsync._config import Endpoint
from mailsync._errors import (
    ConnectionFailed,
    MailTimeout,
    RateLimited,
    TemporaryFailure,
    Unsupported,
)
from mailsync._message import Folder, Message
from mailsync._query import Q
from mailsync._state import StateStore, SyncLease, shared_state_store
from mailsync._stream import (
    AsyncMessageStream,
    MessageStream,
    acounted_steps,
    counted_steps,
    finish_retriever_class,
    finish_sender_class,
)

if TYPE_CHECKING:
    from email.message import EmailMessage

    from mailsync._message import MessageList

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
    "ThreadedAsyncRetriever",
    "ThreadedAsyncSender",
]

log = logging.getLogger("mailsync")

#: What the changing methods accept: messages, or their ids.
MessageRef: TypeAlias = Message | str
#: What senders and ``append`` accept.
# A string, so that the stdlib email package loads only when a program uses it.
OutgoingMessage: TypeAlias = "EmailMessage | bytes | Message"

CAPABILITIES = frozenset(
    {"folders", "flags", "move", "delete", "append", "search", "idle", "labels", "threads"}
)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SyncStep:
    """One step of a backend's answer to "what changed since this cursor".

    Attributes:
        message: The new message, or None for a step that only advances the cursor.
        cursor: The cursor to save once ``message`` has been delivered.
        identity: Recorded in the delivered set so a later resync skips the message.
    """

    message: Message | None
    cursor: Mapping[str, Any]
    identity: str | None = None


@dataclass(frozen=True, slots=True)
class SendResult:
    """What became of one sent message.

    Attributes:
        message_id: The Message-ID sent, without angle brackets.
        accepted: The recipients the server accepted.
        refused: Refused recipients: address -> ``(code, text)``.
        envid: The DSN envelope id sent with the message, if any.
        saved_to: The folder a copy was filed in (``save_to``), or None.
        delivery: Recipient -> the delivery status the server reported when the message was
            sent (JMAP's ``deliveryStatus``: ``"queued"``, ``"yes"``, ``"no"``,
            ``"unknown"``); empty where the backend cannot tell (reports then come as DSNs).
    """

    message_id: str
    accepted: tuple[str, ...]
    refused: Mapping[str, tuple[int, str]] = field(default_factory=dict)
    envid: str | None = None
    saved_to: str | None = None
    delivery: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no recipient was refused."""
        return not self.refused


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


# -- sync ------------------------------------------------------------------------------------


class SyncRun(Iterator[Message]):
    """The iterator ``Retriever.sync()`` returns.

    A message counts as delivered, and the cursor moves past it, when the next message is
    requested or the loop ends normally. Breaking out of the loop leaves the message being
    handled undelivered (it comes again next time) unless you call :meth:`commit` first.
    The run holds its account+folder's sync lease from its first step until it ends.
    """

    def __init__(self, steps: Iterator[SyncStep], lease: SyncLease) -> None:
        self._steps = steps
        self._lease = lease
        self._pending: SyncStep | None = None
        self._done = False

    def __iter__(self) -> SyncRun:
        return self

    def __next__(self) -> Message:
        if self._done:
            raise StopIteration
        try:
            self.commit()
            for step in self._steps:
                if step.message is None:
                    self._lease.save(step.cursor)
                    continue
                self._pending = step
                return step.message
        except BaseException:
            self.close()
            raise
        self._done = True
        self._lease.release()
        raise StopIteration

    def commit(self) -> None:
        """Mark the message last returned as delivered now."""
        step, self._pending = self._pending, None
        if step is None:
            return
        identities = [step.identity] if step.identity else []
        self._lease.save(step.cursor, identities)

    def collect(self) -> MessageList:
        """Every new message in a :class:`~mailsync.MessageList`, all marked delivered."""
        from mailsync._message import MessageList

        return MessageList(self)

    def close(self) -> None:
        """Stop without marking the message being handled as delivered."""
        self._pending = None
        self._done = True
        try:
            close = getattr(self._steps, "close", None)
            if close is not None:
                close()
        finally:
            self._lease.release()

    def __del__(self) -> None:
        # A run dropped mid-loop must not keep its folder locked until the process ends.
        try:  # noqa: SIM105 - at interpreter exit, module globals (contextlib) may be gone
            self._lease.release()
        except Exception:  # noqa: S110 - nothing to tell anyone from a finaliser
            pass


class AsyncSyncRun(AsyncIterator[Message]):
    """The async iterator ``AsyncRetriever.sync()`` returns; same rules as :class:`SyncRun`."""

    def __init__(self, steps: AsyncIterator[SyncStep], lease: SyncLease) -> None:
        self._steps = steps
        self._lease = lease
        self._pending: SyncStep | None = None
        self._done = False

    def __aiter__(self) -> AsyncSyncRun:
        return self

    async def __anext__(self) -> Message:
        import asyncio

        if self._done:
            raise StopAsyncIteration
        try:
            await self.commit()
            async for step in self._steps:
                if step.message is None:
                    await asyncio.to_thread(self._lease.save, step.cursor)
                    continue
                self._pending = step
                return step.message
        except BaseException:
            await self.aclose()
            raise
        self._done = True
        await asyncio.to_thread(self._lease.release)
        raise StopAsyncIteration

    async def commit(self) -> None:
        """Mark the message last returned as delivered now."""
        step, self._pending = self._pending, None
        if step is None:
            return
        identities = [step.identity] if step.identity else []
        import asyncio

        await asyncio.to_thread(self._lease.save, step.cursor, identities)

    async def collect(self) -> MessageList:
        """Every new message in a :class:`~mailsync.MessageList`, all marked delivered."""
        from mailsync._message import MessageList

        return MessageList([message async for message in self])

    async def aclose(self) -> None:
        """Stop without marking the message being handled as delivered."""
        import asyncio

        self._pending = None
        self._done = True
        try:
            aclose = getattr(self._steps, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            # Not cancellable half-way: a lease must not stay held by a cancelled run.
            await asyncio.shield(asyncio.to_thread(self._lease.release))

    def __del__(self) -> None:
        try:  # noqa: SIM105 - at interpreter exit, module globals (contextlib) may be gone
            self._lease.release()
        except Exception:  # noqa: S110 - nothing to tell anyone from a finaliser
            pass


# -- retrievers ------------------------------------------------------------------------------


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
        return self._leased_sync(folder, wait, lambda: False, progress=progress)

    def _leased_sync(
        self,
        folder: str,
        wait: bool | float,
        stopped: Callable[[], bool],
        *,
        progress: bool = False,
    ) -> SyncRun:
        store, key = self.state, self._folder_key(folder)
        lease = SyncLease(store, self.account_key, key, wait)

        def steps() -> Iterator[SyncStep]:
            if not lease.acquire(stopped):
                return
            if lease.cursor is None and self._load_cursor(store, key) is not None:
                lease.release()  # a cursor saved under an older account key was copied:
                if not lease.acquire(stopped):  # take the lease again to read it under it
                    return
            yield from self._sync_steps(folder, lease.cursor, self._known(folder))

        return SyncRun(counted_steps(steps(), progress=progress, desc=folder), lease)

    def watch(self, folder: str = "INBOX", *, poll_interval: float = 60.0) -> Iterator[Message]:
        """Yield new messages as they arrive, forever (until :meth:`close`).

        Built on :meth:`sync`, so nothing is missed across restarts. Uses IDLE or the
        provider's push where the backend has it, else polls every ``poll_interval`` seconds.
        A dropped connection is reopened with exponential backoff and jitter.
        """
        backoff = Backoff()
        while not self._stop.is_set():
            try:
                yield from self._leased_sync(folder, True, self._stop.is_set)
                backoff.reset()
                if self._stop.is_set():
                    return
                self._wait_for_change(folder, poll_interval)
            except _RECOVERABLE as exc:
                delay = _retry_delay(backoff, exc)
                with _observe.reconnect(self.endpoint, exc, delay):
                    self._disconnect()
                    self._stop.wait(delay)

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
        """Only messages no earlier ``sync()`` yielded; see :meth:`Retriever.sync`."""
        return self._leased_sync(folder, wait, lambda: False, progress=progress)

    def _leased_sync(
        self,
        folder: str,
        wait: bool | float,
        stopped: Callable[[], bool],
        *,
        progress: bool = False,
    ) -> AsyncSyncRun:
        import asyncio

        store, key = self.state, self._folder_key(folder)
        lease = SyncLease(store, self.account_key, key, wait)

        async def steps() -> AsyncIterator[SyncStep]:
            if not await lease.acquire_async(stopped):
                return
            if (
                lease.cursor is None
                and (await asyncio.to_thread(self._load_cursor, store, key)) is not None
            ):
                await asyncio.to_thread(lease.release)  # as in Retriever._leased_sync
                if not await lease.acquire_async(stopped):
                    return
            async for step in self._sync_steps(folder, lease.cursor, self._known(folder)):
                yield step

        return AsyncSyncRun(acounted_steps(steps(), progress=progress, desc=folder), lease)

    async def watch(
        self, folder: str = "INBOX", *, poll_interval: float = 60.0
    ) -> AsyncIterator[Message]:
        """Yield new messages as they arrive; see :meth:`Retriever.watch`."""
        backoff = Backoff()
        while not self._stopped:
            run = self._leased_sync(folder, True, self._is_stopped)
            try:
                async for message in run:
                    yield message
                backoff.reset()
                if self._is_stopped():
                    return
                await self._wait_for_change(folder, poll_interval)
            except _RECOVERABLE as exc:
                delay = _retry_delay(backoff, exc)
                with _observe.reconnect(self.endpoint, exc, delay):
                    await self._disconnect()
                    await self._sleep_unless_stopped(delay)
            finally:
                await run.aclose()

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


# -- async over sync -------------------------------------------------------------------------


class _Worker:
    """One thread that runs a sync backend's calls in order, for an async facade.

    One thread (not the default pool) because a protocol connection must not be used from two
    threads at once, and the calls must keep their order.
    """

    def __init__(self, name: str) -> None:
        import concurrent.futures

        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def run(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        import asyncio
        import contextvars

        loop = asyncio.get_running_loop()
        # In the caller's context, as asyncio.to_thread does: a span current in the caller
        # (a web request's) is the parent of what the sync backend does for it.
        context = contextvars.copy_context()
        return await loop.run_in_executor(self._pool, lambda: context.run(func, *args, **kwargs))

    async def iterate(self, iterator: Iterator[T]) -> AsyncIterator[T]:
        sentinel = object()
        try:
            while True:
                item = await self.run(next, iterator, sentinel)
                if item is sentinel:
                    return
                yield item
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                await self.run(close)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False)


class ThreadedAsyncRetriever(AsyncRetriever):
    """The async API over a sync :class:`Retriever`, its calls run on one worker thread.

    Used for backends whose I/O is local (Maildir, mbox) or that have no async library.
    """

    _delegating: ClassVar[bool] = True  # the inner retriever is the one observed

    def __init__(self, inner: Retriever) -> None:
        super().__init__(inner.endpoint, state=inner._state_arg)
        self.inner = inner
        self.scheme = inner.scheme  # type: ignore[misc]
        self.capabilities = inner.capabilities
        self._worker = _Worker(f"mailsync-{inner.scheme}")

    @property
    def state(self) -> StateStore:
        """The inner retriever's state store."""
        return self.inner.state

    async def folders(self) -> list[Folder]:
        """Every folder of the account."""
        return await self._worker.run(self.inner.folders)

    async def messages(
        self,
        folder: str = "INBOX",
        *,
        query: Q | None = None,
        headers_only: bool = False,
        limit: int | None = None,
    ) -> AsyncIterator[Message]:
        """The messages of ``folder`` in arrival order."""
        iterator = await self._worker.run(
            self.inner.messages, folder, query=query, headers_only=headers_only, limit=limit
        )
        async for message in self._worker.iterate(iterator):
            yield message

    async def get(self, id: str) -> Message:
        """One message by its id."""
        return await self._worker.run(self.inner.get, id)

    async def _sync_steps(
        self,
        folder: str,
        cursor: dict[str, Any] | None,
        known: Callable[[Iterable[str]], set[str]],
    ) -> AsyncIterator[SyncStep]:
        iterator = await self._worker.run(self.inner._sync_steps, folder, cursor, known)
        async for step in self._worker.iterate(iterator):
            yield step

    async def _wait_for_change(self, folder: str, timeout: float) -> None:
        await self._worker.run(self.inner._wait_for_change, folder, timeout)

    async def _disconnect(self) -> None:
        await self._worker.run(self.inner._disconnect)

    async def aclose(self) -> None:
        """Close the inner retriever and the worker thread."""
        self._stopped = True
        self._stop_event.set()
        self.inner._stop.set()  # wakes a poll wait at once
        await self._worker.run(self.inner.close)
        self._worker.shutdown()

    async def set_flags(
        self,
        msgs: MessageRef | Sequence[MessageRef],
        *,
        add: Iterable[str] = (),
        remove: Iterable[str] = (),
    ) -> None:
        """Add and remove flags on messages."""
        await self._worker.run(self.inner.set_flags, msgs, add=add, remove=remove)

    async def move(self, msgs: MessageRef | Sequence[MessageRef], folder: str) -> None:
        """Move messages to another folder."""
        await self._worker.run(self.inner.move, msgs, folder)

    async def delete(
        self, msgs: MessageRef | Sequence[MessageRef], *, permanent: bool = False
    ) -> None:
        """Delete messages."""
        await self._worker.run(self.inner.delete, msgs, permanent=permanent)

    async def append(
        self, folder: str, message: OutgoingMessage, flags: Iterable[str] = ()
    ) -> str | None:
        """Store a message in a folder."""
        return await self._worker.run(self.inner.append, folder, message, flags)


# -- senders ---------------------------------------------------------------------------------


class Sender(abc.ABC):
    """Pushes mail out. Get one with :func:`mailsync.sender`.

    Senders connect lazily, are context managers, and are closed by :meth:`close`.

    Attributes:
        saves_sent_copy: True for transports that file what they send in the Sent folder
            themselves (the Gmail API, Microsoft Graph): ``save_to`` then adds nothing.
    """

    scheme: ClassVar[str] = ""
    saves_sent_copy: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        finish_sender_class(cls, asynchronous=False)

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

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

    @abc.abstractmethod
    def send(
        self,
        message: OutgoingMessage,
        *,
        notify: Iterable[str] | str | None = None,
        ret: str | None = None,
        envid: str | None = None,
        mail_from: str | None = None,
        rcpt_to: Iterable[str] | None = None,
    ) -> SendResult:
        """Send one message.

        Args:
            message: An ``EmailMessage`` (e.g. from :func:`mailsync.compose`), bytes or a
                :class:`Message`.
            notify: DSN NOTIFY: ``"never"`` or some of ``"success"``, ``"failure"``,
                ``"delay"``.
            ret: DSN RET: ``"full"`` or ``"hdrs"``.
            envid: DSN ENVID, returned in reports to tie them to this message.
            mail_from: Envelope sender; the From (or Sender) header by default.
            rcpt_to: Envelope recipients; To + Cc + Bcc by default.

        Returns:
            The per-recipient outcome.

        Raises:
            RecipientsRefused: Every recipient was refused.
            Unsupported: DSN was asked for and the server does not offer it.
        """

    def send_many(self, messages: Iterable[OutgoingMessage]) -> list[SendResult]:
        """Send several messages, in order, over one connection where the backend can.

        Every sender's ``send_many`` also takes ``progress=True`` (keyword only): a bar
        counting the messages as they go out, in Jupyter or on a terminal.

        Returns:
            One :class:`SendResult` per message, in the same order.
        """
        return [self.send(message) for message in messages]

    def close(self) -> None:
        """Close the connection, if any."""


class AsyncSender(abc.ABC):
    """The async twin of :class:`Sender`. Get one with :func:`mailsync.sender_async`."""

    scheme: ClassVar[str] = ""
    saves_sent_copy: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        finish_sender_class(cls, asynchronous=True)

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

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
    async def send(
        self,
        message: OutgoingMessage,
        *,
        notify: Iterable[str] | str | None = None,
        ret: str | None = None,
        envid: str | None = None,
        mail_from: str | None = None,
        rcpt_to: Iterable[str] | None = None,
    ) -> SendResult:
        """Send one message; see :meth:`Sender.send`."""

    async def send_many(self, messages: Iterable[OutgoingMessage]) -> list[SendResult]:
        """Send several messages in order; see :meth:`Sender.send_many`."""
        return [await self.send(message) for message in messages]

    async def aclose(self) -> None:
        """Close the connection, if any."""


class ThreadedAsyncSender(AsyncSender):
    """The async API over a sync :class:`Sender`, its calls run on one worker thread."""

    _delegating: ClassVar[bool] = True  # the inner sender is the one observed

    def __init__(self, inner: Sender) -> None:
        super().__init__(inner.endpoint)
        self.inner = inner
        self.scheme = inner.scheme  # type: ignore[misc]
        self._worker = _Worker(f"mailsync-{inner.scheme}-send")

    async def send(
        self,
        message: OutgoingMessage,
        *,
        notify: Iterable[str] | str | None = None,
        ret: str | None = None,
        envid: str | None = None,
        mail_from: str | None = None,
        rcpt_to: Iterable[str] | None = None,
    ) -> SendResult:
        """Send one message; see :meth:`Sender.send`."""
        return await self._worker.run(
            self.inner.send,
            message,
            notify=notify,
            ret=ret,
            envid=envid,
            mail_from=mail_from,
            rcpt_to=rcpt_to,
        )

    async def send_many(self, messages: Iterable[OutgoingMessage]) -> list[SendResult]:
        """Send several messages in order over one connection."""
        return await self._worker.run(self.inner.send_many, list(messages))

    async def aclose(self) -> None:
        """Close the inner sender and the worker thread."""
        await self._worker.run(self.inner.close)
        self._worker.shutdown()
