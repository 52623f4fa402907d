"""The async API over a sync backend: :class:`ThreadedAsyncRetriever` and
:class:`ThreadedAsyncSender` run a sync retriever's or sender's calls on one worker thread of
their own (never ``asyncio.run``), for backends whose I/O is local (Maildir, mbox) or that have
no async library.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from typing import Any, ClassVar, TypeVar

from mailsync._base import (
    AsyncRetriever,
    AsyncSender,
    MessageRef,
    OutgoingMessage,
    Retriever,
    Sender,
    SendResult,
    SyncStep,
)
from mailsync._errors import ConnectionFailed
from mailsync._message import Folder, Message
from mailsync._query import Q
from mailsync._state import StateStore

__all__ = ["ThreadedAsyncRetriever", "ThreadedAsyncSender"]

T = TypeVar("T")


class _Worker:
    """One thread that runs a sync backend's calls in order, for an async facade.

    One thread (not the default pool) because a protocol connection must not be used from two
    threads at once, and the calls must keep their order.
    """

    def __init__(self, name: str, display: str) -> None:
        import concurrent.futures

        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._display = display
        self._closed = False

    async def run(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        import asyncio
        import contextvars

        if self._closed:
            # The pool would raise RuntimeError ("cannot schedule new futures after
            # shutdown"): a call after aclose(), or one racing it, fails as on other backends.
            raise ConnectionFailed(f"{self._display}: the retriever is closed")
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
            if close is not None and not self._closed:
                await self.run(close)
            elif close is not None:
                close()  # the thread is gone (aclose()): closing a local iterator is quick

    @property
    def closed(self) -> bool:
        """Whether :meth:`shutdown` was called."""
        return self._closed

    def shutdown(self) -> None:
        self._closed = True
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
        self._worker = _Worker(f"mailsync-{inner.scheme}", inner.endpoint.display)

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
        if self._worker.closed:
            return  # aclose() ends a wait: one starting after it ends at once
        await self._worker.run(self.inner._wait_for_change, folder, timeout)

    async def _disconnect(self) -> None:
        if not self._worker.closed:  # after aclose() the inner retriever is closed already
            await self._worker.run(self.inner._disconnect)

    async def aclose(self) -> None:
        """Close the inner retriever and the worker thread (a second call does nothing)."""
        if self._worker.closed:
            return
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


class ThreadedAsyncSender(AsyncSender):
    """The async API over a sync :class:`Sender`, its calls run on one worker thread."""

    _delegating: ClassVar[bool] = True  # the inner sender is the one observed

    def __init__(self, inner: Sender) -> None:
        super().__init__(inner.endpoint)
        self.inner = inner
        self.scheme = inner.scheme  # type: ignore[misc]
        self._worker = _Worker(f"mailsync-{inner.scheme}-send", inner.endpoint.display)

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
        """Close the inner sender and the worker thread (a second call does nothing)."""
        if self._worker.closed:
            return
        await self._worker.run(self.inner.close)
        self._worker.shutdown()
