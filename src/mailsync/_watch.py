"""Watching many accounts at once: :func:`watch_many` and :func:`watch_many_async`.

Each account is watched exactly as its own ``watch()`` does (IDLE/push/polling, reconnects),
in its own thread (sync) or task (async). Delivery keeps ``sync()``'s at-least-once rule across
the merge: an account's watcher does not go on to its next message (which would commit the
previous one) until the consumer has asked for the next pair.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import AsyncIterator, Iterable, Iterator

from mailsync._base import AsyncRetriever, Retriever
from mailsync._message import Message

__all__ = ["watch_many", "watch_many_async"]

_DONE = object()


def watch_many(
    retrievers: Iterable[Retriever], folder: str = "INBOX", *, poll_interval: float = 60.0
) -> Iterator[tuple[Retriever, Message]]:
    """Yield ``(retriever, message)`` as mail arrives on any of the retrievers.

    Args:
        retrievers: The accounts to watch (each watched as its ``watch()`` does).
        folder: The folder to watch on every account.
        poll_interval: Seconds between polls where a backend has no push.

    Raises:
        MailsyncError: The first error that stops an account's watcher (other than the
            connection failures ``watch()`` recovers from); the others are closed.
    """
    boxes = list(retrievers)
    results: queue.Queue[tuple[Retriever, object, threading.Event | None]] = queue.Queue()
    stop = threading.Event()

    def run(box: Retriever) -> None:
        try:
            for message in box.watch(folder, poll_interval=poll_interval):
                consumed = threading.Event()
                results.put((box, message, consumed))
                while not consumed.wait(0.5):
                    if stop.is_set():
                        return
                if stop.is_set():
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            results.put((box, exc, None))
        finally:
            results.put((box, _DONE, None))

    threads = [
        threading.Thread(target=run, args=(box,), name=f"mailsync-watch-{i}", daemon=True)
        for i, box in enumerate(boxes)
    ]
    for thread in threads:
        thread.start()
    running = len(threads)
    try:
        while running:
            box, item, consumed = results.get()
            if item is _DONE:
                running -= 1
                continue
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, Message)
            assert consumed is not None
            yield box, item
            consumed.set()
    finally:
        stop.set()
        for box in boxes:
            box.close()


async def watch_many_async(
    retrievers: Iterable[AsyncRetriever], folder: str = "INBOX", *, poll_interval: float = 60.0
) -> AsyncIterator[tuple[AsyncRetriever, Message]]:
    """The async twin of :func:`watch_many`: one task per account."""
    import asyncio  # only async programs pay for importing it

    boxes = list(retrievers)
    results: asyncio.Queue[tuple[AsyncRetriever, object, asyncio.Event | None]] = asyncio.Queue()

    async def run(box: AsyncRetriever) -> None:
        try:
            async for message in box.watch(folder, poll_interval=poll_interval):
                consumed = asyncio.Event()
                await results.put((box, message, consumed))
                await consumed.wait()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            await results.put((box, exc, None))
        finally:
            results.put_nowait((box, _DONE, None))

    tasks = [asyncio.create_task(run(box)) for box in boxes]
    running = len(tasks)
    try:
        while running:
            box, item, consumed = await results.get()
            if item is _DONE:
                running -= 1
                continue
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, Message)
            assert consumed is not None
            yield box, item
            consumed.set()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for box in boxes:
            await box.aclose()
