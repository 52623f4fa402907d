"""Where asyncio code calls a state store: :func:`store_call`, which runs the call on one
worker thread per store and hands back the result.

Why not ``asyncio.to_thread``: a store call (take a lease, save a cursor, give the lease
back) is short, and a fleet makes hundreds a second. Handing each to the default executor
costs more than the call itself (a work item, a pool semaphore, a condition notified per
call, a wake-up of the loop per result); with 5,000 watched accounts that hand-over was the
largest single cost of a delivered message. Here calls queued while the worker is busy are
taken in one go, and their results go back to the loop in one wake-up per batch. One thread
per store loses nothing: the SQLite store serialises its calls behind one lock anyway, and a
store's calls now run in the order they were made.

The worker ends after a few idle seconds and starts again on the next call; a forked child
starts its own. This module must not know what a store does: it only runs callables.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["store_call"]

T = TypeVar("T")

#: Seconds a worker waits for more work before its thread ends.
_IDLE_EXIT = 5.0

_Settled = tuple["asyncio.Future[Any]", bool, Any]


class _Worker:
    """One store's worker thread and the calls waiting for it."""

    def __init__(self, key: object) -> None:
        self.key = key
        self._cond = threading.Condition(threading.Lock())
        self._pending: list[tuple[Callable[[], Any], asyncio.Future[Any]]] = []
        self._running = False
        self._waiting = False

    def submit(self, func: Callable[[], Any]) -> asyncio.Future[Any]:
        future = asyncio.get_running_loop().create_future()
        with self._cond:
            self._pending.append((func, future))
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="mailsync-state", daemon=True).start()
            elif self._waiting:
                self._cond.notify()  # a busy worker takes it with its next batch unasked
        return future

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    self._waiting = True
                    self._cond.wait(_IDLE_EXIT)
                    self._waiting = False
                    if not self._pending:
                        self._running = False
                        with _WORKERS_LOCK:
                            if _WORKERS.get(self.key) is self:
                                del _WORKERS[self.key]
                        return
                batch, self._pending = self._pending, []
            _hand_back([_call(func, future) for func, future in batch])


def _call(func: Callable[[], Any], future: asyncio.Future[Any]) -> _Settled:
    try:
        return future, True, func()
    except BaseException as exc:  # as to_thread does: the awaiting task gets it
        return future, False, exc


def _hand_back(done: list[_Settled]) -> None:
    """Give the results to their loops, one wake-up per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Settled]] = {}
    for item in done:
        by_loop.setdefault(item[0].get_loop(), []).append(item)
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop closed meanwhile: nobody waits
            loop.call_soon_threadsafe(_settle, items)


def _settle(items: list[_Settled]) -> None:
    for future, ok, value in items:
        if future.cancelled():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


_WORKERS: dict[object, _Worker] = {}
_WORKERS_LOCK = threading.Lock()


def _forget_workers() -> None:
    global _WORKERS_LOCK
    _WORKERS.clear()  # their threads are the parent's: a forked child makes its own
    _WORKERS_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_forget_workers)


async def store_call(store: object, func: Callable[[], T]) -> T:
    """Run ``func`` (a call to ``store``) on the store's worker thread and return its
    result; what it raises is raised here. Cancelling the wait does not stop the call, as
    with :func:`asyncio.to_thread`."""
    # Looked up on the class: a lazily opened store answers every other name by opening.
    keyed = getattr(type(store), "store_thread_key", None)
    key = keyed(store) if keyed is not None else id(store)  # a reused id only shares a thread
    with _WORKERS_LOCK:
        worker = _WORKERS.get(key)
        if worker is None:
            worker = _WORKERS[key] = _Worker(key)
    result: T = await worker.submit(func)
    return result
