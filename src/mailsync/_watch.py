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

This module must not know any protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import signal
import threading
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
)
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar

from mailsync import _observe
from mailsync._base import AsyncRetriever, AsyncSyncRun, Retriever
from mailsync._errors import (
    AuthenticationError,
    ConfigError,
    ConnectionFailed,
    MailsyncError,
    MailTimeout,
    RateLimited,
    StateError,
    SyncBusy,
    TemporaryFailure,
)
from mailsync._message import Message

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

AccountState = Literal["connecting", "catching_up", "watching", "backing_off", "failed", "stopped"]

K = TypeVar("K")  # how the caller names an account: the retriever it passed

#: What the server says when a client has too many connections (Dovecot's
#: mail_max_userip_connections, Gmail's 15 per account, Exchange's per-user limits). However a
#: backend classed it, this is a reason to wait, not a failure.
_CONNECTION_LIMIT = re.compile(
    r"too many (simultaneous |concurrent )?connections|maximum number of connections|"
    r"connection limit|max_userip_connections|too many sessions",
    re.IGNORECASE,
)
#: Seconds between safety-net syncs of an account whose backend pushes (IMAP IDLE).
_PUSH_RECHECK = 600.0
#: Errors that pass by themselves: back off and try again.
_TRANSIENT = (ConnectionFailed, MailTimeout, TemporaryFailure, RateLimited, SyncBusy, StateError)


@dataclass(frozen=True, slots=True)
class AccountStatus:
    """Where one watched account stands.

    Attributes:
        state: ``"connecting"``, ``"catching_up"`` (handing out what arrived while away),
            ``"watching"`` (waiting for new mail), ``"backing_off"`` (until ``retry_at``),
            ``"failed"`` (``reason`` says why; retried at ``retry_at`` if the policy says so,
            else never) or ``"stopped"``.
        since: When the account entered this state (``time.time()``).
        reason: Why it is backing off or failed.
        retry_at: When it is tried again (``time.time()`` scale), or None.
        failures: Failures in a row (0 once it works again).
        delivered: Messages the consumer has acknowledged since the start.
    """

    state: AccountState
    since: float
    reason: str | None = None
    retry_at: float | None = None
    failures: int = 0
    delivered: int = 0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able form, e.g. for a log line."""
        return {
            "state": self.state,
            "since": self.since,
            "reason": self.reason,
            "retry_at": self.retry_at,
            "failures": self.failures,
            "delivered": self.delivered,
        }


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When a failing account is tried again.

    Attributes:
        backoff_base: The first delay after a passing failure (a dropped connection, a busy
            mailbox, a connection limit, a handler that raised), in seconds; it doubles with
            each failure in a row, with full jitter.
        backoff_cap: The longest such delay.
        failed_retry: Seconds before an account that failed for good (credentials refused,
            folder missing, an error mailsync cannot classify) is tried again; None leaves it
            failed. At least 60: a refused password is never retried in a tight loop.
    """

    backoff_base: float = 1.0
    backoff_cap: float = 300.0
    failed_retry: float | None = 900.0

    def __post_init__(self) -> None:
        if self.backoff_base <= 0 or self.backoff_cap < self.backoff_base:
            raise ConfigError("RetryPolicy needs 0 < backoff_base <= backoff_cap")
        if self.failed_retry is not None and self.failed_retry < 60:
            raise ConfigError("RetryPolicy.failed_retry must be None or at least 60 seconds")

    def delay(self, error: BaseException, failures: int) -> tuple[float | None, bool]:
        """``(seconds until the next try or None for never, whether it failed for good)``
        after the ``failures``-th failure in a row ended with ``error``."""
        if is_transient(error):
            bound = min(self.backoff_cap, self.backoff_base * 2.0 ** max(failures - 1, 0))
            delay = random.uniform(bound / 2, bound)
            if isinstance(error, RateLimited) and error.retry_after:
                delay = max(delay, error.retry_after)
            return delay, False
        return self.failed_retry, True


def is_transient(error: BaseException) -> bool:
    """Whether an account that failed with ``error`` should simply back off and retry."""
    if isinstance(error, HandlerFailed):
        return True
    if isinstance(error, MailsyncError) and _CONNECTION_LIMIT.search(str(error)):
        return True
    if isinstance(error, StateError):
        return not error.damaged
    return isinstance(error, _TRANSIENT) and not isinstance(error, AuthenticationError)


class HandlerFailed(MailsyncError):
    """The consumer did not acknowledge a message (its handler raised or its command
    failed): the message stays uncommitted and comes again after a backoff."""


@dataclass(slots=True)
class _Account(Generic[K]):
    key: K
    box: AsyncRetriever
    host: str
    status: AccountStatus
    failures: int = 0
    connected: bool = False
    task: asyncio.Task[None] | None = None


@dataclass(slots=True)
class _Delivery(Generic[K]):
    account: _Account[K]
    message: Message
    run: AsyncSyncRun
    done: asyncio.Future[bool] = field(repr=False)
    reason: str = ""


StatusCallback = Callable[[K, AccountStatus], None]


class _Engine(Generic[K]):
    """Every account's task, on the running loop. Not thread-safe: the sync facade calls it
    through ``run_coroutine_threadsafe``."""

    def __init__(
        self,
        accounts: list[tuple[K, AsyncRetriever]],
        folder: str,
        *,
        poll_interval: float,
        retry: RetryPolicy,
        per_host: int,
        callbacks: list[StatusCallback[K]],
        open_ended: bool = False,
    ) -> None:
        if per_host < 1:
            raise ConfigError("per_host must be at least 1")
        now = time.time()
        self.accounts = [
            _Account(key, box, box.endpoint.host or box.scheme, AccountStatus("connecting", now))
            for key, box in accounts
        ]
        self.by_key = {entry.key: entry for entry in self.accounts}
        self.folder = folder
        self.poll_interval = poll_interval
        self.retry = retry
        self.per_host = per_host
        self.callbacks = callbacks
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._queue: asyncio.Queue[_Delivery[K] | None] = asyncio.Queue()
        self._stopping = asyncio.Event()
        self._live = 0
        # A watcher process's engine: accounts come and go, and none left is no reason to end.
        self._open_ended = open_ended

    def add(self, key: K, box: AsyncRetriever) -> None:
        """Watch one more account (on the running loop)."""
        account = _Account(
            key, box, box.endpoint.host or box.scheme, AccountStatus("connecting", time.time())
        )
        self.accounts.append(account)
        self.by_key[key] = account
        self._live += 1
        account.task = asyncio.create_task(self._serve(account))

    async def remove(self, key: K) -> None:
        """Stop watching one account (its message in hand, if any, stays uncommitted) and
        close its retriever."""
        account = self.by_key.pop(key)
        self.accounts.remove(account)
        if account.task is not None:
            account.task.cancel()
            await asyncio.gather(account.task, return_exceptions=True)
        await self._close(account)

    # -- the consumer's side ---------------------------------------------------------------

    def start(self) -> None:
        for account in self.accounts:
            self._live += 1
            account.task = asyncio.create_task(self._serve(account))
        if not self.accounts and not self._open_ended:
            self.request_stop()

    async def next(self) -> _Delivery[K] | None:
        """The next message to hand out, or None once every account stopped."""
        while True:
            if self._stopping.is_set() and self._queue.empty():
                return None
            delivery = await self._queue.get()
            if delivery is None or self.by_key.get(delivery.account.key) is delivery.account:
                return delivery
            # Queued by an account removed since: its run is closed, the message uncommitted.

    async def ack(self, delivery: _Delivery[K]) -> None:
        """The consumer is done with the message: commit it, then let the account go on."""
        if delivery.done.done():
            return  # the account was stopped meanwhile: its run is closed, nothing to commit
        try:
            await delivery.run.commit()
        finally:
            if not delivery.done.done():
                delivery.done.set_result(True)
        account = delivery.account
        self._set(account, account.status.state, delivered=account.status.delivered + 1)

    def nack(self, delivery: _Delivery[K], reason: str = "") -> None:
        """The consumer failed on the message: leave it uncommitted."""
        delivery.reason = reason
        if not delivery.done.done():
            delivery.done.set_result(False)

    def handler_failed(self, delivery: _Delivery[K], exc: BaseException) -> None:
        """The consumer's handler raised: say so, and leave the message uncommitted."""
        endpoint = delivery.account.box.endpoint
        extra = _observe.fields(endpoint, "watch", error_type=type(exc).__name__)
        log.warning(
            "%s: the handler failed on %s: %s",
            endpoint.display,
            delivery.message.id,
            exc,
            extra=extra,
        )
        self.nack(delivery, _reason(exc))

    def request_stop(self) -> None:
        """End the iteration: the consumer's next request gets None."""
        if not self._stopping.is_set():
            self._stopping.set()
            self._queue.put_nowait(None)

    async def stop(self) -> None:
        """Stop every account (uncommitted messages stay so) and close its retriever."""
        self.request_stop()
        tasks = [a.task for a in self.accounts if a.task is not None and not a.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        closing = [self._close(account) for account in self.accounts]
        await asyncio.gather(*closing, return_exceptions=True)

    async def _close(self, account: _Account[K]) -> None:
        try:
            async with asyncio.timeout(30):
                await account.box.aclose()
        except Exception as exc:
            log.debug("%s: closing failed: %s", account.box.endpoint.display, exc)
        self._set(account, "stopped")

    # -- one account -----------------------------------------------------------------------

    async def _serve(self, account: _Account[K]) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    await self._catch_up(account)
                    account.failures = 0
                    self._set(account, "watching")
                    await account.box._wait_for_change(self.folder, self._wait_seconds(account))
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if not await self._after_failure(account, exc):
                        return
        finally:
            self._live -= 1
            if self._live == 0 and not self._open_ended:
                self.request_stop()

    async def _catch_up(self, account: _Account[K]) -> None:
        """One ``sync()`` run, each message handed to the consumer and awaited."""
        if not account.connected:
            self._set(account, "connecting")
        # Not waiting for a lease another process holds: that would keep a host slot.
        run = account.box.sync(self.folder, wait=False)
        try:
            while True:
                async with self._slot(account.host):
                    try:
                        message = await anext(run)
                    except StopAsyncIteration:
                        account.connected = True
                        return
                account.connected = True
                if account.status.state != "catching_up":
                    self._set(account, "catching_up")
                delivery = await self._hand_over(account, message, run)
                if not await delivery.done:
                    why = f": {delivery.reason}" if delivery.reason else ""
                    raise HandlerFailed(f"the handler failed on message {message.id}{why}")
        finally:
            await run.aclose()

    async def _hand_over(
        self, account: _Account[K], message: Message, run: AsyncSyncRun
    ) -> _Delivery[K]:
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        delivery = _Delivery(account, message, run, done)
        await self._queue.put(delivery)
        return delivery

    def _wait_seconds(self, account: _Account[K]) -> float:
        """How long an account waits for mail before syncing anyway."""
        if "idle" not in account.box.capabilities:
            return self.poll_interval
        # With push the server says when mail comes; a sync now and then is only a safety
        # net. Every poll_interval it would keep a core busy for 5,000 idle accounts, and in
        # step (they started together) it would hit the server all at once: spread it out.
        return max(self.poll_interval, _PUSH_RECHECK) * random.uniform(0.75, 1.0)

    def _slot(self, host: str) -> asyncio.Semaphore:
        slot = self._slots.get(host)
        if slot is None:
            slot = self._slots[host] = asyncio.Semaphore(self.per_host)
        return slot

    async def _after_failure(self, account: _Account[K], exc: Exception) -> bool:
        """Mark the account and sleep until its retry; False when it is left failed."""
        account.failures += 1
        account.connected = False
        delay, for_good = self.retry.delay(exc, account.failures)
        reason = _reason(exc)
        display = account.box.endpoint.display
        with contextlib.suppress(Exception):
            await account.box._disconnect()
        if delay is None:
            extra = _observe.fields(
                account.box.endpoint, "watch", state="failed", error_type=type(exc).__name__
            )
            log.error("%s: failed, not retried: %s", display, reason, extra=extra)
            self._set(account, "failed", reason=reason)
            return False
        state: AccountState = "failed" if for_good else "backing_off"
        self._set(account, state, reason=reason, retry_at=time.time() + delay)
        backoff = _observe.reconnect(account.box.endpoint, exc, delay, state=state)
        with backoff, contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._stopping.wait()
        return True

    def _set(self, account: _Account[K], state: AccountState, **changes: Any) -> None:
        current = account.status
        if state == current.state and not changes:
            return
        fields: dict[str, Any] = {"reason": None, "retry_at": None}
        fields.update(changes)
        if state != current.state:
            fields["since"] = time.time()
        account.status = replace(current, state=state, failures=account.failures, **fields)
        for callback in self.callbacks:
            try:
                callback(account.key, account.status)
            except Exception:
                log.exception("a status callback failed")


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def _async_twin(box: Retriever) -> AsyncRetriever:
    """The async retriever of the same account and state store, for the engine."""
    from mailsync import _registry

    try:
        cls = _registry.load(box.endpoint.scheme, "async_retriever")
    except ConfigError:
        # The backend's async library is missing (IMAP without the "async" extra): watch
        # this account through its sync retriever on a worker thread of its own.
        from mailsync._base import ThreadedAsyncRetriever

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
        self._engine = _Engine(
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
        delivery: _Delivery[Retriever] | None = None
        try:
            while not self._stop_requested:
                delivery = self._call(self._engine.next())
                if delivery is None:
                    return
                yield delivery.account.key, delivery.message
                self._call(self._engine.ack(delivery))
                delivery = None
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
        try:
            while not self._stop_requested:
                delivery = self._call(self._engine.next())
                if delivery is None:
                    return
                try:
                    handler(delivery.account.key, delivery.message)
                except Exception as exc:
                    self._signal(self._engine.handler_failed, delivery, exc)
                    continue
                self._call(self._engine.ack(delivery))
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
        delivery: _Delivery[AsyncRetriever] | None = None
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
