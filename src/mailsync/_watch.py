"""Watching many accounts at once: one asyncio engine behind :func:`watch_many` (sync) and
:func:`watch_many_async`.

The engine runs every account as one task on one event loop; the sync API runs that loop on
one thread of its own and hands pairs across, so 5,000 accounts cost 5,000 tasks, not 5,000
threads. It is built only on what every :class:`~mailsync.AsyncRetriever` offers (``sync()``,
the base class's wait-for-change hook, reconnect-on-next-call), so IMAP, POP3, the local
backends and the HTTP APIs are watched alike; a sync retriever is watched through its
backend's async twin, sharing its state store.

What the engine owns:

- Isolation. Each account's failures stay in its task: its :class:`AccountStatus` says why,
  and a :class:`RetryPolicy` decides when it is tried again. Connection trouble, busy
  mailboxes, rate and connection limits back off exponentially with jitter; refused
  credentials and other permanent errors mark the account ``failed`` and are retried on a
  slow schedule (never under a minute) or never.
- Delivery. At least once, per account as ``sync()`` is: a message is committed (its cursor
  saved) only after the consumer has finished with it, that is when it asks for the next pair
  or its handler returns; a handler that raises leaves the message uncommitted and the
  account backs off and gets it again. An account produces its next message only after the
  consumer acknowledged the previous one.
- Load. At most ``per_host`` accounts of one server host talk to it at once while catching up
  (connecting, searching, fetching), so restarting thousands of accounts does not hammer it;
  waiting for mail (IDLE, push, polling) holds no slot.
- Shutdown. :meth:`WatchMany.run` finishes the message in hand on SIGINT/SIGTERM, commits it,
  and closes every account; leaving a ``for`` loop closes everything too, without
  committing the message in hand.

The engine itself (accounts, statuses, retry policy, delivery and the per-host bound) is
:mod:`mailsync._watch_engine`; this module is the two public faces over it. Neither must know
any protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
)
from types import TracebackType
from typing import Any, Generic

from mailsync._base import AsyncRetriever, Retriever
from mailsync._errors import (
    ConfigError,
)
from mailsync._message import Message
from mailsync._watch_engine import (
    AccountState,
    AccountStatus,
    Delivery,
    Engine,
    K,
    RetryPolicy,
    StatusCallback,
)

__all__ = [
    "AccountState",
    "AccountStatus",
    "AsyncWatchMany",
    "RetryPolicy",
    "WatchMany",
    "watch_many",
    "watch_many_async",
]

log = logging.getLogger("mailsync.watch")


def _async_twin(box: Retriever) -> AsyncRetriever:
    """The async retriever of the same account and state store, for the engine."""
    from mailsync import _registry

    try:
        cls = _registry.load(box.endpoint.scheme, "async_retriever")
    except ConfigError:
        # The backend's async library is missing (IMAP without the "async" extra): watch
        # this account through its sync retriever on a worker thread of its own.
        from mailsync._threaded import ThreadedAsyncRetriever

        return ThreadedAsyncRetriever(box)
    twin: AsyncRetriever = cls(box.endpoint, state=box.state)
    return twin


Handler = Callable[[K, Message], Any]


class _Facade(Generic[K]):
    """What both twins share: the accounts, the status table and the subscribers."""

    def __init__(
        self,
        accounts: list[tuple[K, AsyncRetriever]],
        folder: str,
        *,
        poll_interval: float,
        retry: RetryPolicy | None,
        per_host: int,
        on_status: StatusCallback[K] | None,
    ) -> None:
        self._callbacks: list[StatusCallback[K]] = [on_status] if on_status else []
        self._engine = Engine(
            accounts,
            folder,
            poll_interval=poll_interval,
            retry=retry or RetryPolicy(),
            per_host=per_host,
            callbacks=self._callbacks,
        )

    def status(self, account: K) -> AccountStatus:
        """The current status of one account (as passed in).

        Raises:
            KeyError: Not one of the watched accounts.
        """
        return self._engine.by_key[account].status

    @property
    def statuses(self) -> list[tuple[K, AccountStatus]]:
        """Every account with its current status, in the order given."""
        return [(entry.key, entry.status) for entry in self._engine.accounts]

    def subscribe(self, callback: StatusCallback[K]) -> None:
        """Call ``callback(account, status)`` at every status change, from the engine's
        loop: keep it quick and do not block in it."""
        self._callbacks.append(callback)


class WatchMany(_Facade[Retriever], Iterator[tuple[Retriever, Message]]):
    """What :func:`watch_many` returns: an iterator of ``(retriever, message)`` pairs that
    also shows each account's status and can run a handler with graceful shutdown.

    The engine starts on first use, on a thread of its own; leaving the loop (or
    :meth:`close`) stops it.
    """

    def __init__(
        self,
        retrievers: Iterable[Retriever],
        folder: str = "INBOX",
        *,
        poll_interval: float = 60.0,
        retry: RetryPolicy | None = None,
        per_host: int = 20,
        on_status: StatusCallback[Retriever] | None = None,
    ) -> None:
        boxes = list(retrievers)
        super().__init__(
            [(box, _async_twin(box)) for box in boxes],
            folder,
            poll_interval=poll_interval,
            retry=retry,
            per_host=per_host,
            on_status=on_status,
        )
        self._boxes = boxes
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pairs: Iterator[tuple[Retriever, Message]] | None = None
        self._stop_requested = False
        #: The signal that stopped :meth:`run` (SIGINT, SIGTERM), or None.
        self.stop_signal: int | None = None

    def __enter__(self) -> WatchMany:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _start(self) -> None:
        if self._loop is not None:
            return
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="mailsync-watch-many")
        self._thread.daemon = True
        self._thread.start()

        async def start() -> None:
            self._engine.start()

        self._call(start())

    def _iterate(self) -> Iterator[tuple[Retriever, Message]]:
        self._start()
        delivery: Delivery[Retriever] | None = None
        acked: Delivery[Retriever] | None = None
        try:
            while not self._stop_requested:
                # Acknowledging the pair handled and asking for the next: one hop to the loop.
                delivery, acked = self._call(self._engine.next(acked)), None
                if delivery is None:
                    return
                yield delivery.account.key, delivery.message
                delivery, acked = None, delivery
            if acked is not None:  # stopped: the pair handled counts as delivered
                self._call(self._engine.ack(acked))
        finally:
            if delivery is not None:
                self._signal(self._engine.nack, delivery)
            self.close()

    def __iter__(self) -> WatchMany:
        return self

    def __next__(self) -> tuple[Retriever, Message]:
        if self._pairs is None:
            self._pairs = self._iterate()
        return next(self._pairs)

    def _signal(self, function: Callable[..., Any], *args: Any) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(function, *args)

    def run(self, handler: Handler[Retriever], *, handle_signals: bool = True) -> None:
        """Call ``handler(retriever, message)`` for every message until stopped.

        A handler that raises does not stop the others: that message stays uncommitted, its
        account backs off and gets it again. On SIGINT/SIGTERM (when called from the main
        thread and ``handle_signals``) the message in hand is finished and committed, then
        every account is closed and ``run`` returns.
        """
        self._start()
        restore = self._install_signals() if handle_signals else {}
        acked: Delivery[Retriever] | None = None
        try:
            while not self._stop_requested:
                delivery, acked = self._call(self._engine.next(acked)), None
                if delivery is None:
                    return
                try:
                    handler(delivery.account.key, delivery.message)
                except Exception as exc:
                    self._signal(self._engine.handler_failed, delivery, exc)
                    continue
                acked = delivery
            if acked is not None:  # stopped (a signal): the message in hand is committed
                self._call(self._engine.ack(acked))
        finally:
            for signum, previous in restore.items():
                signal.signal(signum, previous)
            self.close()

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def stop(signum: int, frame: object) -> None:
            log.info("signal %d: finishing the message in hand, then stopping", signum)
            self.stop_signal = signum
            self._stop_requested = True
            self._signal(self._engine.request_stop)

        return {signum: signal.signal(signum, stop) for signum in (signal.SIGINT, signal.SIGTERM)}

    def stop(self) -> None:
        """Ask the iteration (or :meth:`run`) to end after the message in hand; safe from
        any thread and from a signal handler."""
        self._stop_requested = True
        self._signal(self._engine.request_stop)

    def close(self) -> None:
        """Stop every account and the engine's thread (the message in hand, if any, stays
        uncommitted)."""
        loop, self._loop = self._loop, None
        if loop is None:
            for box in self._boxes:
                box.close()
            return
        self._stop_requested = True
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._engine.stop(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(30)
        if not loop.is_running():
            loop.close()
        for box in self._boxes:
            box.close()


class AsyncWatchMany(_Facade[AsyncRetriever], AsyncIterator[tuple[AsyncRetriever, Message]]):
    """What :func:`watch_many_async` returns: the async twin of :class:`WatchMany`."""

    def __init__(
        self,
        retrievers: Iterable[AsyncRetriever],
        folder: str = "INBOX",
        *,
        poll_interval: float = 60.0,
        retry: RetryPolicy | None = None,
        per_host: int = 20,
        on_status: StatusCallback[AsyncRetriever] | None = None,
    ) -> None:
        super().__init__(
            [(box, box) for box in retrievers],
            folder,
            poll_interval=poll_interval,
            retry=retry,
            per_host=per_host,
            on_status=on_status,
        )
        self._started = False
        self._stop_requested = False
        self._pairs: AsyncIterator[tuple[AsyncRetriever, Message]] | None = None
        #: The signal that stopped :meth:`run` (SIGINT, SIGTERM), or None.
        self.stop_signal: int | None = None

    async def __aenter__(self) -> AsyncWatchMany:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _start(self) -> None:
        if not self._started:
            self._started = True
            self._engine.start()

    async def _iterate(self) -> AsyncIterator[tuple[AsyncRetriever, Message]]:
        self._start()
        delivery: Delivery[AsyncRetriever] | None = None
        try:
            while not self._stop_requested:
                delivery = await self._engine.next()
                if delivery is None:
                    return
                yield delivery.account.key, delivery.message
                await self._engine.ack(delivery)
                delivery = None
        finally:
            if delivery is not None:
                self._engine.nack(delivery)
            await self.aclose()

    def __aiter__(self) -> AsyncWatchMany:
        return self

    async def __anext__(self) -> tuple[AsyncRetriever, Message]:
        if self._pairs is None:
            self._pairs = self._iterate()
        return await anext(self._pairs)

    async def run(
        self,
        handler: Callable[[AsyncRetriever, Message], Awaitable[Any] | Any],
        *,
        handle_signals: bool = True,
    ) -> None:
        """Call (and await, if it is a coroutine function) ``handler(retriever, message)``
        for every message until stopped; see :meth:`WatchMany.run`."""
        self._start()
        loop = asyncio.get_running_loop()
        installed = self._install_signals(loop) if handle_signals else []
        try:
            while not self._stop_requested:
                delivery = await self._engine.next()
                if delivery is None:
                    return
                try:
                    result = handler(delivery.account.key, delivery.message)
                    if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                        await result
                except Exception as exc:
                    self._engine.handler_failed(delivery, exc)
                    continue
                await self._engine.ack(delivery)
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)
            await self.aclose()

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> list[int]:
        if threading.current_thread() is not threading.main_thread():
            return []
        installed: list[int] = []
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(signum, self._stopped_by, signum)
            except (NotImplementedError, RuntimeError):  # not on this loop or platform
                continue
            installed.append(signum)
        return installed

    def _stopped_by(self, signum: int) -> None:
        self.stop_signal = signum
        self.stop()

    def stop(self) -> None:
        """Ask the iteration (or :meth:`run`) to end after the message in hand."""
        self._stop_requested = True
        self._engine.request_stop()

    async def aclose(self) -> None:
        """Stop every account and close its retriever."""
        self._stop_requested = True
        if self._started:
            await self._engine.stop()
        else:
            for box in [entry.box for entry in self._engine.accounts]:
                await box.aclose()


def watch_many(
    retrievers: Iterable[Retriever],
    folder: str = "INBOX",
    *,
    poll_interval: float = 60.0,
    retry: RetryPolicy | None = None,
    per_host: int = 20,
    on_status: StatusCallback[Retriever] | None = None,
) -> WatchMany:
    """Yield ``(retriever, message)`` as mail arrives on any of the retrievers.

    One asyncio engine on one thread watches every account (through its backend's async
    twin, sharing its state store); an account that fails backs off or fails on its own
    while the others go on, and its status says why (:meth:`WatchMany.status`,
    :meth:`WatchMany.subscribe`).

    Args:
        retrievers: The accounts to watch (each watched as its ``watch()`` does).
        folder: The folder to watch on every account.
        poll_interval: Seconds between polls where a backend has no push (with push, such as
            IDLE, an account is synced anyway about every ten minutes, as a safety net).
        retry: When failed accounts are tried again (default :class:`RetryPolicy`).
        per_host: At most this many accounts of one server host connect or catch up at once.
        on_status: Called with ``(retriever, AccountStatus)`` at every status change.

    Returns:
        A :class:`WatchMany`: iterate it, or call its :meth:`~WatchMany.run` with a handler.
    """
    return WatchMany(
        retrievers,
        folder,
        poll_interval=poll_interval,
        retry=retry,
        per_host=per_host,
        on_status=on_status,
    )


def watch_many_async(
    retrievers: Iterable[AsyncRetriever],
    folder: str = "INBOX",
    *,
    poll_interval: float = 60.0,
    retry: RetryPolicy | None = None,
    per_host: int = 20,
    on_status: StatusCallback[AsyncRetriever] | None = None,
) -> AsyncWatchMany:
    """The async twin of :func:`watch_many`: ``async for retriever, message in ...``.

    Returns:
        An :class:`AsyncWatchMany`.
    """
    return AsyncWatchMany(
        retrievers,
        folder,
        poll_interval=poll_interval,
        retry=retry,
        per_host=per_host,
        on_status=on_status,
    )
