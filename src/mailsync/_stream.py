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

The same wrappers are where every backend is observed (:mod:`mailsync._observe`: structured
log records, and spans and metrics when an instrumentation is installed): ``messages``,
``get``, the ``sync`` steps, ``send``, ``send_many`` and the method that opens a connection
(``_connect`` or ``_open``, whichever the class has). A class that only delegates to another
backend object (``_delegating = True``: the thread adapters, the Sent-copy sender) is not
observed itself, so nothing is counted twice. Unobserved, a wrapper costs one check per call.

This module does no I/O; bars are opened by :mod:`mailsync._progress` only when asked for.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
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

from mailsync import _observe
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


def _signature(func: Callable[..., Any]) -> inspect.Signature | None:
    """The backend method's own signature: a wrapper that only observes shows it unchanged."""
    try:
        return inspect.signature(func)
    except (TypeError, ValueError):  # pragma: no cover - C callables have none
        return None


def _finish(func: Callable[..., Any], wrapper: Callable[..., Any], returns: str) -> None:
    functools.update_wrapper(wrapper, func)
    del wrapper.__wrapped__  # type: ignore[attr-defined]  # inspect must see the new signature
    signature = _with_progress(func, returns) if returns else _signature(func)
    if signature is not None:
        wrapper.__signature__ = signature  # type: ignore[attr-defined]
    setattr(wrapper, _MARK, True)


def _activity(
    logger: Any, operation: str, *, lag: bool = False
) -> Callable[[Any, str | None], Callable[[], _observe.Activity]]:
    def maker(box: Any, folder: str | None) -> Callable[[], _observe.Activity]:
        return lambda: _observe.Activity(logger, operation, box.endpoint, folder=folder, lag=lag)

    return maker


_fetching = _activity(_observe.FETCH, "fetch")
_syncing = _activity(_observe.SYNC, "sync", lag=True)


def _sync_messages(
    func: Callable[..., Iterator[Message]], *, observed: bool = True
) -> Callable[..., MessageStream]:
    def messages(self: Any, *args: Any, progress: bool = False, **kwargs: Any) -> MessageStream:
        folder = _folder_argument(args, kwargs)
        bar = _bar(progress, kwargs.get("limit"), folder)
        source = func(self, *args, **kwargs)
        if observed and _observe.enabled(_observe.FETCH):
            source = _observe.iterate(_fetching(self, folder), source)
        return MessageStream(source, bar=bar)

    _finish(func, messages, "MessageStream")
    return messages


def _async_messages(
    func: Callable[..., Any], *, observed: bool = True
) -> Callable[..., AsyncMessageStream]:
    def messages(
        self: Any, *args: Any, progress: bool = False, **kwargs: Any
    ) -> AsyncMessageStream:
        folder = _folder_argument(args, kwargs)
        bar = _bar(progress, kwargs.get("limit"), folder)
        source = func(self, *args, **kwargs)
        if observed and _observe.enabled(_observe.FETCH):
            source = _observe.aiterate(_fetching(self, folder), source)
        return AsyncMessageStream(source, bar=bar)

    _finish(func, messages, "AsyncMessageStream")
    return messages


# -- observed without changing anything else ---------------------------------------------


def _sync_steps(func: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
    def _sync_steps(self: Any, folder: str, *args: Any, **kwargs: Any) -> Iterator[Any]:
        steps = func(self, folder, *args, **kwargs)
        if not _observe.enabled(_observe.SYNC, logging.INFO):
            return steps
        return _observe.iterate(_syncing(self, folder), steps, steps=True)

    _finish(func, _sync_steps, "")
    return _sync_steps


def _async_sync_steps(func: Callable[..., AsyncIterator[Any]]) -> Callable[..., Any]:
    def _sync_steps(self: Any, folder: str, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        steps = func(self, folder, *args, **kwargs)
        if not _observe.enabled(_observe.SYNC, logging.INFO):
            return steps
        return _observe.aiterate(_syncing(self, folder), steps, steps=True)

    _finish(func, _sync_steps, "")
    return _sync_steps


def _get(func: Callable[..., Message]) -> Callable[..., Message]:
    def get(self: Any, *args: Any, **kwargs: Any) -> Message:
        if not _observe.enabled(_observe.FETCH):
            return func(self, *args, **kwargs)
        activity = _observe.Activity(_observe.FETCH, "get", self.endpoint)
        with _observe.running(activity), activity.current():
            message = func(self, *args, **kwargs)
            activity.add(message)
        return message

    _finish(func, get, "")
    return get


def _async_get(func: Callable[..., Any]) -> Callable[..., Any]:
    async def get(self: Any, *args: Any, **kwargs: Any) -> Message:
        if not _observe.enabled(_observe.FETCH):
            return await func(self, *args, **kwargs)  # type: ignore[no-any-return]
        activity = _observe.Activity(_observe.FETCH, "get", self.endpoint)
        with _observe.running(activity), activity.current():
            message: Message = await func(self, *args, **kwargs)
            activity.add(message)
        return message

    _finish(func, get, "")
    return get


def _connecting(self: Any) -> _observe.Activity:
    return _observe.Activity(_observe.CONNECT, "connect", self.endpoint)


def _connect(func: Callable[..., Any]) -> Callable[..., Any]:
    """A backend's connect (and log in) method, whether it returns its session, a coroutine
    or a plan (a generator the plan driver runs)."""
    if inspect.iscoroutinefunction(func):

        async def connect_async(self: Any, *args: Any, **kwargs: Any) -> Any:
            if not _observe.enabled(_observe.CONNECT):
                return await func(self, *args, **kwargs)
            activity = _connecting(self)
            with _observe.running(activity), activity.current():
                return await func(self, *args, **kwargs)

        _finish(func, connect_async, "")
        return connect_async

    if inspect.isgeneratorfunction(func):

        def connect_plan(self: Any, *args: Any, **kwargs: Any) -> Any:
            plan = func(self, *args, **kwargs)
            if not _observe.enabled(_observe.CONNECT):
                return (yield from plan)
            # No span made current here: a plan's steps may run in different contexts.
            with _observe.running(_connecting(self)):
                return (yield from plan)

        _finish(func, connect_plan, "")
        return connect_plan

    def connect(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not _observe.enabled(_observe.CONNECT):
            return func(self, *args, **kwargs)
        activity = _connecting(self)
        with _observe.running(activity), activity.current():
            return func(self, *args, **kwargs)

    _finish(func, connect, "")
    return connect


@contextlib.contextmanager
def _sending(self: Any, operation: str) -> Iterator[_observe.Activity]:
    """The block sends, observed: a sender that delegates (``send_many`` calling ``send``)
    meanwhile is not observed again."""
    activity = _observe.Activity(_observe.SEND, operation, self.endpoint)
    opened = getattr(self, "connections_opened", None)
    if isinstance(opened, int):
        activity.extra["connections_before"] = opened
    token = _observe.sending.set(True)
    try:
        with _observe.running(activity), activity.current():
            yield activity
    finally:
        _observe.sending.reset(token)


def _sent(self: Any, activity: _observe.Activity, results: list[Any], sizes: list[Any]) -> None:
    """Count what was sent (messages with a recipient accepted) and refused."""
    refused = 0
    for result, size in zip(results, sizes, strict=False):
        refused += len(result.refused)
        if result.accepted:
            activity.messages += 1
            activity.add_bytes(size)
    activity.extra["refused"] = refused
    before = activity.extra.pop("connections_before", None)
    opened = getattr(self, "connections_opened", None)
    if isinstance(before, int) and isinstance(opened, int):
        activity.extra["connections_opened"] = opened - before


_send_logged = functools.partial(_observe.SEND.isEnabledFor, logging.INFO)


def _observes_send() -> bool:
    # The cheap checks first: this runs on every send, observed or not.
    if _observe.probe is None and not _send_logged():
        return False
    return not _observe.sending.get()


def _sync_send(func: Callable[..., Any]) -> Callable[..., Any]:
    def send(self: Any, message: Any, *args: Any, **kwargs: Any) -> Any:
        if not _observes_send():
            return func(self, message, *args, **kwargs)
        with _sending(self, "send") as activity:
            result = func(self, message, *args, **kwargs)
            _sent(self, activity, [result], [_observe.outgoing_size(message)])
        return result

    _finish(func, send, "")
    return send


def _async_send(func: Callable[..., Any]) -> Callable[..., Any]:
    async def send(self: Any, message: Any, *args: Any, **kwargs: Any) -> Any:
        if not _observes_send():
            return await func(self, message, *args, **kwargs)
        with _sending(self, "send") as activity:
            result = await func(self, message, *args, **kwargs)
            _sent(self, activity, [result], [_observe.outgoing_size(message)])
        return result

    _finish(func, send, "")
    return send


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


def _sync_send_many(func: Callable[..., Any], *, observed: bool = True) -> Callable[..., Any]:
    def send_many(
        self: Any, messages: Iterable[Any], *args: Any, progress: bool = False, **kwargs: Any
    ) -> Any:
        if not (observed and _observes_send()):
            return plain(self, messages, *args, progress=progress, **kwargs)
        batch = list(messages)
        with _sending(self, "send_many") as activity:
            results = plain(self, batch, *args, progress=progress, **kwargs)
            _sent(self, activity, results, [_observe.outgoing_size(m) for m in batch])
        return results

    def plain(
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


def _async_send_many(func: Callable[..., Any], *, observed: bool = True) -> Callable[..., Any]:
    async def send_many(
        self: Any, messages: Iterable[Any], *args: Any, progress: bool = False, **kwargs: Any
    ) -> Any:
        if not (observed and _observes_send()):
            return await plain(self, messages, *args, progress=progress, **kwargs)
        batch = list(messages)
        with _sending(self, "send_many") as activity:
            results = await plain(self, batch, *args, progress=progress, **kwargs)
            _sent(self, activity, results, [_observe.outgoing_size(m) for m in batch])
        return results

    async def plain(
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


#: The names a backend's connect-and-log-in method goes by.
CONNECT_METHODS = ("_connect", "_open")


def finish_retriever_class(cls: type, *, asynchronous: bool) -> None:
    """Give a retriever class the shared ``messages()``/``folders()`` behaviour and its
    observation (once)."""
    observed = not getattr(cls, "_delegating", False)
    messages = _async_messages if asynchronous else _sync_messages
    _wrap(cls, "messages", functools.partial(messages, observed=observed))
    _wrap(cls, "folders", _async_folders if asynchronous else _sync_folders)
    if not observed:
        return
    _wrap(cls, "get", _async_get if asynchronous else _get)
    _wrap(cls, "_sync_steps", _async_sync_steps if asynchronous else _sync_steps)
    for name in CONNECT_METHODS:
        _wrap(cls, name, _connect)


def finish_sender_class(cls: type, *, asynchronous: bool) -> None:
    """Give a sender class ``send_many(..., progress=...)`` and its observation (once)."""
    observed = not getattr(cls, "_delegating", False)
    send_many = _async_send_many if asynchronous else _sync_send_many
    _wrap(cls, "send_many", functools.partial(send_many, observed=observed))
    if observed:
        _wrap(cls, "send", _async_send if asynchronous else _sync_send)
