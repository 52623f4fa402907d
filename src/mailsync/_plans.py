"""Plans and the two drivers that run them: the logic that talks, written once.

A *plan* is a generator. It yields *operations*, values that say what it needs done (write
these bytes, send this HTTP request, sleep, hand this item to the caller), and is sent each
operation's result. An operation that failed is thrown into the plan, already translated into
a :class:`~mailsync.MailsyncError`, at the point it was asked for, so the plan can say what
the failure means there (a QUIT that got no answer, a request worth sending again). What the
plan returns is the result of the whole. httpx's auth flow is the model: one generator, two
small drivers.

Plans compose with ``yield from``. They never touch a socket, an HTTP client, a clock or a
thread, so they are tested by feeding them results by hand (:func:`replay`).

Two drivers run every plan, and they are the only code that differs between the I/O models:

- :func:`run` and :func:`stream` block (sockets, ``httpx.Client``);
- :func:`arun` and :func:`astream` are asyncio (streams, ``httpx.AsyncClient``).

The operations on the network belong to a backend's *performer*: a callable the backend passes
in (``perform(op) -> result``, or a coroutine function for the async drivers) that knows its
transport. The generic operations below are performed by the drivers themselves, identically
for every backend: :class:`Sleep`, :class:`Emit` (a streaming plan's items) and :class:`Call`
(blocking work such as a token callable or the state store, which the async drivers run on a
worker thread so that the event loop never blocks).

Errors: a performer may raise anything. A :class:`~mailsync.MailsyncError` is thrown into the
plan as it is; anything else goes through the driver's ``translate`` (by default
:func:`~mailsync._errors.map_exceptions` with the driver's ``context``), and what that cannot
translate propagates unchanged, as a programming error should. ``BaseException`` subclasses that
are not ``Exception`` (``KeyboardInterrupt``, cancellation) are never caught.

This module must not import asyncio at module level (it costs ~20 ms at start-up that sync
programs should not pay), nor any backend library.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Iterable
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

from mailsync._errors import MailsyncError, map_exceptions

__all__ = [
    "AsyncPerformer",
    "Call",
    "Emit",
    "Items",
    "Operation",
    "Performer",
    "Plan",
    "Sleep",
    "arun",
    "astream",
    "collect",
    "replay",
    "run",
    "stream",
    "translator",
]

T = TypeVar("T")


class Operation:
    """Base class of everything a plan may yield."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Sleep(Operation):
    """Wait this many seconds (a backoff before retrying). The result is None."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Emit(Operation):
    """Hand ``item`` to whoever iterates the plan (:func:`stream`); the result is None."""

    item: Any


@dataclass(frozen=True, slots=True)
class Call(Operation):
    """Run ``func()``, which may block (a token callable, the state store); the result is what
    it returns. The async drivers run it on a worker thread."""

    func: Callable[[], Any]


#: A plan yields operations, is sent their results, and returns a value.
Plan: TypeAlias = Generator[Operation, Any, T]
#: Performs a backend's own operations (blocking).
Performer: TypeAlias = Callable[[Operation], Any]
#: Performs a backend's own operations (asyncio).
AsyncPerformer: TypeAlias = Callable[[Operation], Awaitable[Any]]
#: Turns a library or socket error into a mailsync error (or re-raises it untranslated).
Translate: TypeAlias = Callable[[Exception], MailsyncError]


def translator(context: str = "") -> Translate:
    """The default ``translate``: :func:`~mailsync._errors.map_exceptions` with ``context``
    (``"IMAP host:993"``) in front of the message; an error it does not know is re-raised."""

    def translate(exc: Exception) -> MailsyncError:
        try:
            with map_exceptions(context=context):
                raise exc
        except MailsyncError as mapped:
            return mapped
        raise AssertionError("unreachable: map_exceptions re-raises what it cannot map")

    return translate


def _advance(plan: Plan[Any], value: Any, error: MailsyncError | None) -> Operation:
    if error is not None:
        return plan.throw(error)
    return plan.send(value)


def _blocking(op: Operation, perform: Performer, sleep: Callable[[float], Any]) -> Any:
    if isinstance(op, Sleep):
        sleep(op.seconds)
        return None
    if isinstance(op, Call):
        return op.func()
    return perform(op)


def stream(
    plan: Plan[T],
    perform: Performer,
    *,
    context: str = "",
    translate: Translate | None = None,
    sleep: Callable[[float], Any] = time.sleep,
) -> Generator[Any, None, T]:
    """Run a plan, blocking: yield what it emits, return what it returns.

    Closing the returned generator (a ``break`` in the caller's loop) closes the plan, whose
    ``finally`` blocks then run (they may not yield operations any more).

    Args:
        plan: The plan.
        perform: Performs the backend's operations; may raise.
        context: Put in front of translated error messages.
        translate: Replaces the default error translation.
        sleep: Performs :class:`Sleep` (e.g. ``threading.Event.wait``, so that closing a
            retriever cuts a backoff short).
    """
    translate = translate or translator(context)
    value: Any = None
    error: MailsyncError | None = None
    try:
        while True:
            try:
                op = _advance(plan, value, error)
            except StopIteration as stop:
                result: T = stop.value
                return result
            value, error = None, None
            if isinstance(op, Emit):
                yield op.item
                continue
            try:
                value = _blocking(op, perform, sleep)
            except MailsyncError as exc:
                error = exc
            except Exception as exc:
                error = translate(exc)
    finally:
        plan.close()


def run(
    plan: Plan[T],
    perform: Performer,
    *,
    context: str = "",
    translate: Translate | None = None,
    sleep: Callable[[float], Any] = time.sleep,
) -> T:
    """Run a plan to completion, blocking, and return its value (see :func:`stream`).

    Raises:
        AssertionError: The plan emitted an item: it must be run with :func:`stream`.
    """
    steps = stream(plan, perform, context=context, translate=translate, sleep=sleep)
    while True:
        try:
            item = next(steps)
        except StopIteration as stop:
            result: T = stop.value
            return result
        steps.close()
        raise AssertionError(f"a plan run to completion emitted {type(item).__name__}")


async def _asyncio_sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


async def _awaiting(
    op: Operation, perform: AsyncPerformer, sleep: Callable[[float], Awaitable[Any]]
) -> Any:
    if isinstance(op, Sleep):
        await sleep(op.seconds)
        return None
    if isinstance(op, Call):
        import asyncio

        return await asyncio.to_thread(op.func)
    return await perform(op)


async def astream(
    plan: Plan[Any],
    perform: AsyncPerformer,
    *,
    context: str = "",
    translate: Translate | None = None,
    sleep: Callable[[float], Awaitable[Any]] = _asyncio_sleep,
) -> AsyncGenerator[Any, None]:
    """Run a plan on asyncio: yield what it emits (its return value is dropped: an async
    generator cannot return one; a plan whose caller needs both emits its result last).

    The arguments are those of :func:`stream`, with a coroutine function as ``perform`` and
    ``sleep``.
    """
    translate = translate or translator(context)
    value: Any = None
    error: MailsyncError | None = None
    try:
        while True:
            try:
                op = _advance(plan, value, error)
            except StopIteration:
                return
            value, error = None, None
            if isinstance(op, Emit):
                yield op.item
                continue
            try:
                value = await _awaiting(op, perform, sleep)
            except MailsyncError as exc:
                error = exc
            except Exception as exc:
                error = translate(exc)
    finally:
        plan.close()


async def arun(
    plan: Plan[T],
    perform: AsyncPerformer,
    *,
    context: str = "",
    translate: Translate | None = None,
    sleep: Callable[[float], Awaitable[Any]] = _asyncio_sleep,
) -> T:
    """Run a plan to completion on asyncio and return its value (see :func:`run`).

    Raises:
        AssertionError: The plan emitted an item: it must be run with :func:`astream`.
    """
    translate = translate or translator(context)
    value: Any = None
    error: MailsyncError | None = None
    try:
        while True:
            try:
                op = _advance(plan, value, error)
            except StopIteration as stop:
                result: T = stop.value
                return result
            value, error = None, None
            if isinstance(op, Emit):
                raise AssertionError(f"a plan run to completion emitted {type(op.item).__name__}")
            try:
                value = await _awaiting(op, perform, sleep)
            except MailsyncError as exc:
                error = exc
            except Exception as exc:
                error = translate(exc)
    finally:
        plan.close()


def collect(plan: Plan[T], handle: Callable[[Any], None]) -> Plan[T]:
    """A plan that runs ``plan``, handing each item it emits to ``handle`` instead of the
    caller (a sub-plan whose items the outer plan consumes itself), and returns what ``plan``
    returns."""
    value: Any = None
    error: MailsyncError | None = None
    while True:
        try:
            op = _advance(plan, value, error)
        except StopIteration as stop:
            result: T = stop.value
            return result
        value, error = None, None
        if isinstance(op, Emit):
            handle(op.item)
            continue
        try:
            value = yield op
        except MailsyncError as exc:
            error = exc


class Items:
    """The items a sub-plan emits, pulled one at a time by the plan that runs it (where
    :func:`collect` hands them to a callback)::

        items = Items(sub_plan)
        try:
            while (item := (yield from items.next())) is not Items.END:
                ...  # may yield operations, emit items of its own, or stop early
        finally:
            items.close()

    Errors thrown in while the sub-plan waits for an operation go to the sub-plan.
    """

    #: What :meth:`next` returns once the sub-plan has returned.
    END: Any = object()

    def __init__(self, plan: Plan[Any]) -> None:
        self._plan = plan
        self._value: Any = None
        self._error: MailsyncError | None = None
        #: What the sub-plan returned, once it has.
        self.result: Any = None

    def next(self) -> Plan[Any]:
        """A plan returning the next item, or :attr:`END`."""
        plan = self._plan
        while True:
            try:
                op = _advance(plan, self._value, self._error)
            except StopIteration as stop:
                self.result = stop.value
                return Items.END
            self._value, self._error = None, None
            if isinstance(op, Emit):
                return op.item
            try:
                self._value = yield op
            except MailsyncError as exc:
                self._error = exc

    def close(self) -> None:
        """Close the sub-plan (its ``finally`` blocks run; they may not yield)."""
        self._plan.close()


def replay(plan: Plan[T], results: Iterable[Any]) -> tuple[list[Operation], T]:
    """Run a plan against canned results, for tests: each non-generic operation it yields is
    answered with the next result (an exception instance is thrown in instead); generic ones
    are answered as the drivers would without waiting (Sleep: None, Call: called).

    Returns:
        Every operation the plan yielded, Emits included, and its return value.
    """
    answers = iter(results)
    seen: list[Operation] = []
    value: Any = None
    error: MailsyncError | None = None
    while True:
        try:
            op = _advance(plan, value, error)
        except StopIteration as stop:
            return seen, stop.value
        seen.append(op)
        value, error = None, None
        if isinstance(op, Emit | Sleep):
            continue
        if isinstance(op, Call):
            value = op.func()
            continue
        answer = next(answers)
        if isinstance(answer, MailsyncError):
            error = answer
        else:
            value = answer
