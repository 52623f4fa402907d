"""What ``sync()`` returns: :class:`SyncRun` and :class:`AsyncSyncRun`, the iterators that
deliver a backend's :class:`SyncStep` values one message at a time and save the cursor
through the run's :class:`~mailsync._state.SyncLease` as each message counts as delivered.

The rule for when a message counts as delivered lives here, once for both APIs, and the one
wording of the warning every backend logs when ``sync()`` leaves out a message over
``max_message_size`` (:func:`warn_skipped`); what is new since a cursor is each backend's
(``_sync_steps``). This module must not import the retriever
base classes (:mod:`mailsync._base` re-exports these names).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mailsync._message import Message

if TYPE_CHECKING:
    from mailsync._message import MessageList
    from mailsync._state import SyncLease

__all__ = ["AsyncSyncRun", "SyncRun", "SyncStep", "warn_skipped"]


def warn_skipped(
    log: logging.Logger,
    message_id: object,
    *,
    size: int | None,
    limit: int | None,
    context: str = "",
) -> None:
    """Log that ``sync()`` leaves out a message over ``max_message_size``, naming it so that
    it can be fetched with ``get()`` on a retriever with a larger limit.

    ``sync()`` never stalls on such a message (issue 14): it goes on with the others. Whether a
    later sync warns about it again is the backend's (its module docstring says).
    """
    how_big = "" if size is None else f"{size} bytes, "
    log.warning(
        "%ssync skips message %s (%sover max_message_size=%s): fetch it with get() on a "
        "retriever connected with a larger max_message_size (or None)",
        f"{context}: " if context else "",
        message_id,
        how_big,
        limit,
    )


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
        if self._done:
            raise StopAsyncIteration
        try:
            await self.commit()
            async for step in self._steps:
                if step.message is None:
                    await self._lease.save_async(step.cursor)
                    continue
                self._pending = step
                return step.message
        except BaseException:
            await self.aclose()
            raise
        self._done = True
        await self._lease.release_async()
        raise StopAsyncIteration

    async def commit(self) -> None:
        """Mark the message last returned as delivered now."""
        step, self._pending = self._pending, None
        if step is None:
            return
        identities = [step.identity] if step.identity else []
        await self._lease.save_async(step.cursor, identities)

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
            if self._lease.held:
                await asyncio.shield(self._lease.release_async())

    def __del__(self) -> None:
        try:  # noqa: SIM105 - at interpreter exit, module globals (contextlib) may be gone
            self._lease.release()
        except Exception:  # noqa: S110 - nothing to tell anyone from a finaliser
            pass
