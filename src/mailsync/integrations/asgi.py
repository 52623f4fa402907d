"""mailsync inside an asyncio web app (FastAPI, Starlette, Quart, aiohttp...): a
:class:`SenderPool` that request handlers send through, and a :class:`Watcher` that watches
mailboxes for as long as the app runs. Both live in the app's lifespan::

    @asynccontextmanager
    async def lifespan(app):
        account = mailsync.account("support")
        async with (
            SenderPool(account.sender_async, size=4) as mail,
            Watcher([account.retriever_async()], on_message) as watcher,
        ):
            app.state.mail, app.state.watcher = mail, watcher
            yield

    @app.post("/contact")
    async def contact(request):
        result = await request.app.state.mail.send(mailsync.compose(...))

Why a pool: a sender holds one connection and serialises what is sent through it, so one
sender shared by every request makes them queue, and one sender per request pays a connect
and a login (and an SMTP server's connection limit) each time. The pool keeps up to ``size``
senders, each reusing its connection, and a request waits for a free one: connections are
reused and concurrency is bounded.

The watcher runs :func:`mailsync.watch_many_async` as a task of the app's event loop (no
thread, no blocking: a plain, non-async handler runs on a worker thread). Stopping it, when
the app shuts down, finishes the message in hand, commits it and closes every account.
Signals are the server's business (uvicorn, hypercorn): the watcher installs no handler.

Needs no extra: this is asyncio and mailsync only; nothing imports this module but you.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any

from mailsync._base import AsyncRetriever, AsyncSender, OutgoingMessage, SendResult
from mailsync._errors import ConfigError
from mailsync._message import Message
from mailsync._watch import AccountStatus, AsyncWatchMany, RetryPolicy, watch_many_async

__all__ = ["SenderPool", "Watcher"]

log = logging.getLogger("mailsync.asgi")

Handler = Callable[[AsyncRetriever, Message], Awaitable[Any] | Any]


class SenderPool:
    """Up to ``size`` async senders, each reusing its connection, lent to one caller at a time.

    Args:
        sender: A sender URL (made with :func:`mailsync.sender_async` and ``options``), or a
            zero-argument function making a sender (``account.sender_async``).
        size: At most this many senders (and connections) at once.
        **options: Keyword arguments of :func:`mailsync.sender_async` (with a URL).

    Raises:
        ConfigError: ``size`` is below 1, or ``options`` come with a function.
    """

    def __init__(
        self, sender: str | Callable[[], AsyncSender], *, size: int = 4, **options: Any
    ) -> None:
        if size < 1:
            raise ConfigError("SenderPool needs size >= 1")
        if callable(sender) and options:
            raise ConfigError("SenderPool takes options with a URL only")
        self._make = sender if callable(sender) else _url_sender(sender, options)
        self.size = size
        #: Every sender made so far (at most ``size``).
        self.senders: list[AsyncSender] = []
        self._idle: asyncio.Queue[AsyncSender] = asyncio.Queue()
        self._closed = False

    @property
    def in_use(self) -> int:
        """How many senders are lent out now."""
        return len(self.senders) - self._idle.qsize()

    @asynccontextmanager
    async def sender(self) -> AsyncIterator[AsyncSender]:
        """Borrow a sender for a few sends (``async with pool.sender() as out:``)."""
        if self._closed:
            raise ConfigError("the SenderPool is closed")
        if self._idle.empty() and len(self.senders) < self.size:
            made = self._make()
            self.senders.append(made)
            self._idle.put_nowait(made)
        lent = await self._idle.get()
        try:
            yield lent
        finally:
            self._idle.put_nowait(lent)

    async def send(self, message: OutgoingMessage, **options: Any) -> SendResult:
        """Send one message on a free sender; ``options`` are those of ``AsyncSender.send``
        (``notify``, ``ret``, ``envid``, ``mail_from``, ``rcpt_to``)."""
        async with self.sender() as out:
            return await out.send(message, **options)

    async def send_many(self, messages: Iterable[OutgoingMessage]) -> list[SendResult]:
        """Send several messages on one free sender (pipelined over SMTP)."""
        async with self.sender() as out:
            return await out.send_many(list(messages))

    async def aclose(self) -> None:
        """Close every sender (wait for the ones lent out to come back first)."""
        self._closed = True
        closing = [self._idle.get() for _ in self.senders]
        senders = await asyncio.gather(*closing)
        await asyncio.gather(*(out.aclose() for out in senders), return_exceptions=True)
        self.senders.clear()

    async def __aenter__(self) -> SenderPool:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _url_sender(url: str, options: dict[str, Any]) -> Callable[[], AsyncSender]:
    from mailsync._facade import sender_async

    return lambda: sender_async(url, **options)


class Watcher:
    """:func:`mailsync.watch_many_async` as a background task of the running event loop.

    Args:
        retrievers: The accounts to watch (async retrievers).
        handler: Called as ``handler(retriever, message)`` for each new message; a coroutine
            function is awaited, any other callable runs on a worker thread so it cannot
            block the loop. A message is committed once it returns; if it raises, the
            message comes again after a backoff (at least once: be idempotent).
        folder: The folder to watch on every account.
        poll_interval: Seconds between polls where a server has no push.
        retry: When failed accounts are tried again.
        per_host: At most this many accounts of one host catch up at once.
        stop_timeout: Seconds :meth:`stop` waits for the message in hand before cancelling.
    """

    def __init__(
        self,
        retrievers: Iterable[AsyncRetriever],
        handler: Handler,
        *,
        folder: str = "INBOX",
        poll_interval: float = 60.0,
        retry: RetryPolicy | None = None,
        per_host: int = 20,
        stop_timeout: float = 30.0,
    ) -> None:
        self._retrievers = list(retrievers)
        self._handler = handler
        self._options: dict[str, Any] = {
            "folder": folder,
            "poll_interval": poll_interval,
            "retry": retry,
            "per_host": per_host,
        }
        self.stop_timeout = stop_timeout
        self._watch: AsyncWatchMany | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """Whether the watch task is running."""
        return self._task is not None and not self._task.done()

    @property
    def statuses(self) -> list[tuple[AsyncRetriever, AccountStatus]]:
        """Every account with its status (for a health endpoint)."""
        return [] if self._watch is None else self._watch.statuses

    async def start(self) -> None:
        """Start watching, in a task of the running loop."""
        if self._task is not None:
            return
        self._watch = watch_many_async(self._retrievers, **self._options)
        self._task = asyncio.create_task(
            self._watch.run(self._handle, handle_signals=False), name="mailsync-watcher"
        )

    async def _handle(self, box: AsyncRetriever, message: Message) -> None:
        handler = self._handler
        if _is_async(handler):
            await handler(box, message)
        else:
            await asyncio.to_thread(handler, box, message)

    async def stop(self) -> None:
        """Finish the message in hand, commit it, close every account.

        Raises:
            Exception: Whatever ended the watch task, if it failed.
        """
        task, watch = self._task, self._watch
        if task is None or watch is None:
            for box in self._retrievers:
                await box.aclose()
            return
        watch.stop()
        try:
            await asyncio.wait_for(asyncio.shield(task), self.stop_timeout)
        except TimeoutError:
            log.warning("the watcher did not stop in %.0fs: cancelled", self.stop_timeout)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        finally:
            await watch.aclose()

    async def __aenter__(self) -> Watcher:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def _is_async(handler: Any) -> bool:
    call = getattr(handler, "__call__", None)  # noqa: B004 - an object with async __call__
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(call)
