"""What every backend's public methods gain without writing it: ``messages()`` returns a
:class:`MessageStream` (an iterator that also has ``collect()``), ``folders()`` a
:class:`~mailsync.FolderList`, and ``messages()``, ``sync()`` and ``send_many()`` take
``progress=True``.

Backends implement ``messages``, ``folders`` and ``send_many`` as plain methods (generators,
lists). The base classes in :mod:`mailsync._base` call :func:`finish_retriever_class` and
:func:`finish_sender_class` from ``__init_subclass__``, which wrap those methods once per class,
so a backend written today or later (Gmail, Graph, JMAP, a third party's) gets the same
behaviour and signature with no code of its own. The wrappers only add; what the backend
returns is passed through untouched (same order, same laziness, ``close()`` forwarded).

This module does no I/O; bars are opened by :mod:`mailsync._progress` only when asked for.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Sized,
)
from typing import Any, TypeVar

from mailsync._message import FolderList, Message, MessageList

__all__ = [
    "AsyncMessageStream",
    "MessageStream",
    "acounted_steps",
    "counted_steps",
    "finish_retriever_class",
    "finish_sender_class",
]

T = TypeVar("T")
_MARK = "__mailsync_public__"


class MessageStream(Iterator[Message]):
    """The iterator ``Retriever.messages()`` returns: messages streamed in batches, in arrival
    order, as the backend yields them.

    It is an ordinary iterator (``for msg in box.messages(): ...`` keeps memory flat), and
    :meth:`collect` reads it all into a :class:`~mailsync.MessageList`, for a notebook or a
    small folder. :meth:`close` stops early and releases what the backend holds.
    """

    def __init__(self, source: Iterator[Message], *, bar: _LazyBar | None = None) -> None:
        self._iterator: Iterator[Message] = source if bar is None else _count(source, bar)

    def __iter__(self) -> MessageStream:
        return self

    def __next__(self) -> Message:
        return next(self._iterator)

    def collect(self) -> MessageList:
        """Every (remaining) message, in a :class:`~mailsync.MessageList`."""
        try:
            return MessageList(self)
        finally:
            self.close()

    def close(self) -> None:
        """Stop here: the backend's iterator is closed (its connection freed for other calls)."""
        close = getattr(self._iterator, "close", None)
        if close is not None:
            close()

    def __repr__(self) -> str:
        return "<MessageStream: iterate it, or .collect() for a MessageList>"


class AsyncMessageStream(AsyncIterator[Message]):
    """The async iterator ``AsyncRetriever.messages()`` returns (``async for``), with
    ``await stream.collect()`` for a :class:`~mailsync.MessageList`; see :class:`MessageStream`.
    """

    def __init__(self, source: AsyncIterator[Message], *, bar: _LazyBar | None = None) -> None:
        self._iterator = source if bar is None else _acount(source, bar)

    def __aiter__(self) -> AsyncMessageStream:
        return self

    async def __anext__(self) -> Message:
        return await self._iterator.__anext__()

    async def collect(self) -> MessageList:
        """Every (remaining) message, in a :class:`~mailsync.MessageList`."""
        try:
            return MessageList([message async for message in self])
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Stop here and release what the backend holds."""
        aclose = getattr(self._iterator, "aclose", None)
        if aclose is not None:
            await aclose()

    def __repr__(self) -> str:
        return "<AsyncMessageStream: async for it, or await .collect() for a MessageList>"


# -- counting --------------------------------------------------------------------------------


class _LazyBar:
    """A bar opened at the first count, so an iterator never started shows nothing."""

    def __init__(self, total: int | None, desc: str, unit: str = "msg") -> None:
        self._args = (total, desc, unit)
        self._bar: Any = None
        self._opened = False

    def update(self, n: int = 1) -> None:
        if not self._opened:
            from mailsync._progress import open_bar

            total, desc, unit = self._args
            self._bar, self._opened = open_bar(total=total, desc=desc, unit=unit), True
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._bar = None


def _bar(progress: bool, total: int | None, desc: str, unit: str = "msg") -> _LazyBar | None:
    return _LazyBar(total, desc, unit) if progress else None


def _every(item: object) -> bool:
    return True


def _carries_message(step: Any) -> bool:
    return step.message is not None


def _count(
    source: Iterable[T], bar: _LazyBar, counts: Callable[[T], bool] = _every
) -> Generator[T, None, None]:
    """``source``'s items, counted; closing this closes ``source`` (a backend's connection)."""
    try:
        for item in source:
            if counts(item):
                bar.update()
            yield item
    finally:
        bar.close()
        close = getattr(source, "close", None)
        if close is not None:
            close()


async def _acount(
    source: AsyncIterator[T], bar: _LazyBar, counts: Callable[[T], bool] = _every
) -> AsyncGenerator[T, None]:
    try:
        async for item in source:
            if counts(item):
                bar.update()
            yield item
    finally:
        bar.close()
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            await aclose()


def counted_steps(steps: Iterator[Any], *, progress: bool, desc: str) -> Iterator[Any]:
    """``sync()``'s steps, counting those that carry a message when ``progress`` is on."""
    bar = _bar(progress, None, desc)
    return steps if bar is None else _count(steps, bar, _carries_message)


def acounted_steps(steps: AsyncIterator[Any], *, progress: bool, desc: str) -> AsyncIterator[Any]:
    """The async twin of :func:`counted_steps`."""
    bar = _bar(progress, None, desc)
    return steps if bar is None else _acount(steps, bar, _carries_message)


# -- the wrappers ----------------------------------------------------------------------------


def _folder_argument(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    return str(args[0] if args else kwargs.get("folder", "INBOX"))


def _with_progress(func: Callable[..., Any], returns: str) -> inspect.Signature | None:
    """The backend method's signature plus ``progress``, for ``help()`` and ``inspect``."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):  # pragma: no cover - C callables have none
        return None
    parameters = list(signature.parameters.values())
    position = next(
        (i for i, p in enumerate(parameters) if p.kind is inspect.Parameter.VAR_KEYWORD),
        len(parameters),
    )
    flag = inspect.Parameter("progress", inspect.Parameter.KEYWORD_ONLY, default=False)
    parameters.insert(position, flag.replace(annotation="bool"))
    return signature.replace(parameters=parameters, return_annotation=returns)


def _finish(func: Callable[..., Any], wrapper: Callable[..., Any], returns: str) -> None:
    functools.update_wrapper(wrapper, func)
    del wrapper.__wrapped__  # type: ignore[attr-defined]  # inspect must see the new signature
    signature = _with_progress(func, returns) if returns else None
    if signature is not None:
        wrapper.__signature__ = signature  # type: ignore[attr-defined]
    setattr(wrapper, _MARK, True)


def _sync_messages(func: Callable[..., Iterator[Message]]) -> Callable[..., MessageStream]:
    def messages(self: Any, *args: Any, progress: bool = False, **kwargs: Any) -> MessageStream:
        bar = _bar(progress, kwargs.get("limit"), _folder_argument(args, kwargs))
        return MessageStream(func(self, *args, **kwargs), bar=bar)

    _finish(func, messages, "MessageStream")
    return messages


def _async_messages(func: Callable[..., Any]) -> Callable[..., AsyncMessageStream]:
    def messages(
        self: Any, *args: Any, progress: bool = False, **kwargs: Any
    ) -> AsyncMessageStream:
        bar = _bar(progress, kwargs.get("limit"), _folder_argument(args, kwargs))
        return AsyncMessageStream(func(self, *args, **kwargs), bar=bar)

    _finish(func, messages, "AsyncMessageStream")
    return messages


def _sync_folders(func: Callable[..., list[Any]]) -> Callable[..., FolderList]:
    def folders(self: Any, *args: Any, **kwargs: Any) -> FolderList:
        return FolderList(func(self, *args, **kwargs))

    _finish(func, folders, "")
    return folders


def _async_folders(func: Callable[..., Any]) -> Callable[..., Any]:
    async def folders(self: Any, *args: Any, **kwargs: Any) -> FolderList:
        return FolderList(await func(self, *args, **kwargs))

    _finish(func, folders, "")
    return folders


def _total(messages: Iterable[Any]) -> int | None:
    return len(messages) if isinstance(messages, Sized) else None


def _sync_send_many(func: Callable[..., Any]) -> Callable[..., Any]:
    def send_many(
        self: Any, messages: Iterable[Any], *args: Any, progress: bool = False, **kwargs: Any
    ) -> Any:
        bar = _bar(progress, _total(messages), "sending")
        if bar is None:
            return func(self, messages, *args, **kwargs)
        # Counted as the backend takes each message (a pipelining sender reads one ahead). The
        # generator expression keeps the caller's own iterator from being closed by ours.
        counted = _count((message for message in messages), bar)
        try:
            return func(self, counted, *args, **kwargs)
        finally:
            counted.close()

    _finish(func, send_many, "list[SendResult]")
    return send_many


def _async_send_many(func: Callable[..., Any]) -> Callable[..., Any]:
    async def send_many(
        self: Any, messages: Iterable[Any], *args: Any, progress: bool = False, **kwargs: Any
    ) -> Any:
        bar = _bar(progress, _total(messages), "sending")
        if bar is None:
            return await func(self, messages, *args, **kwargs)
        counted = _count((message for message in messages), bar)
        try:
            return await func(self, counted, *args, **kwargs)
        finally:
            counted.close()

    _finish(func, send_many, "list[SendResult]")
    return send_many


def _wrap(cls: type, name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    func = getattr(cls, name, None)
    if func is None or getattr(func, "__isabstractmethod__", False) or getattr(func, _MARK, False):
        return
    setattr(cls, name, make(func))


def finish_retriever_class(cls: type, *, asynchronous: bool) -> None:
    """Give a retriever class the shared ``messages()``/``folders()`` behaviour (once)."""
    _wrap(cls, "messages", _async_messages if asynchronous else _sync_messages)
    _wrap(cls, "folders", _async_folders if asynchronous else _sync_folders)


def finish_sender_class(cls: type, *, asynchronous: bool) -> None:
    """Give a sender class ``send_many(..., progress=...)`` (once)."""
    _wrap(cls, "send_many", _async_send_many if asynchronous else _sync_send_many)
