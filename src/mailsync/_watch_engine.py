"""The engine behind :func:`~mailsync.watch_many`: every account one task on one event loop,
with its own :class:`AccountStatus`, failures kept to it and retried by a
:class:`RetryPolicy`, at-least-once delivery (a message is committed only when the consumer
acknowledged it), and at most ``per_host`` accounts of one host catching up at once.

:mod:`mailsync._watch` gives it its sync and async faces. This module knows no protocol, only
what every :class:`~mailsync.AsyncRetriever` offers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
from collections.abc import (
    Callable,
)
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Literal, TypeVar

from mailsync import _observe
from mailsync._base import AsyncRetriever, AsyncSyncRun
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
    "Delivery",
    "Engine",
    "HandlerFailed",
    "RetryPolicy",
    "StatusCallback",
    "is_transient",
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
class Delivery(Generic[K]):
    account: _Account[K]
    message: Message
    run: AsyncSyncRun
    done: asyncio.Future[bool] = field(repr=False)
    reason: str = ""


StatusCallback = Callable[[K, AccountStatus], None]


class Engine(Generic[K]):
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
        self._queue: asyncio.Queue[Delivery[K] | None] = asyncio.Queue()
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

    async def next(self) -> Delivery[K] | None:
        """The next message to hand out, or None once every account stopped."""
        while True:
            if self._stopping.is_set() and self._queue.empty():
                return None
            delivery = await self._queue.get()
            if delivery is None or self.by_key.get(delivery.account.key) is delivery.account:
                return delivery
            # Queued by an account removed since: its run is closed, the message uncommitted.

    async def ack(self, delivery: Delivery[K]) -> None:
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

    def nack(self, delivery: Delivery[K], reason: str = "") -> None:
        """The consumer failed on the message: leave it uncommitted."""
        delivery.reason = reason
        if not delivery.done.done():
            delivery.done.set_result(False)

    def handler_failed(self, delivery: Delivery[K], exc: BaseException) -> None:
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
    ) -> Delivery[K]:
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        delivery = Delivery(account, message, run, done)
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
