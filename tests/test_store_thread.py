"""State store calls from asyncio (mailsync._store_thread): each on the store's one worker
thread, off the event loop, results and errors back to their own awaiter, calls made while
the worker is busy taken together in the order they were made."""

from __future__ import annotations

import asyncio
import threading
from functools import partial

import pytest

from mailsync._store_thread import store_call


class _Store:
    """Records which thread ran each call, and can hold the worker busy."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, str]] = []
        self.busy = threading.Event()
        self.release = threading.Event()

    def hold(self) -> str:
        self.busy.set()
        self.release.wait(30)
        return "held"

    def record(self, name: str) -> str:
        self.calls.append((threading.get_ident(), name))
        return name.upper()

    def fail(self) -> str:
        raise LookupError("no such cursor")


async def test_calls_run_off_the_loop_in_order_and_answer_their_own_awaiter() -> None:
    store = _Store()
    holding = asyncio.ensure_future(store_call(store, store.hold))
    await asyncio.to_thread(store.busy.wait, 30)
    # Made while the worker is busy: queued, then run together, in this order.
    waiting = [
        asyncio.ensure_future(store_call(store, partial(store.record, name)))
        for name in ("a", "b", "c")
    ]
    failing = asyncio.ensure_future(store_call(store, store.fail))
    store.release.set()
    assert await holding == "held"
    assert await asyncio.gather(*waiting) == ["A", "B", "C"]
    with pytest.raises(LookupError, match="no such cursor"):
        await failing
    assert [name for _, name in store.calls] == ["a", "b", "c"]
    threads = {ident for ident, _ in store.calls}
    assert len(threads) == 1
    assert threading.get_ident() not in threads


async def test_two_stores_do_not_wait_for_each_other() -> None:
    slow, quick = _Store(), _Store()
    holding = asyncio.ensure_future(store_call(slow, slow.hold))
    await asyncio.to_thread(slow.busy.wait, 30)
    try:
        assert await asyncio.wait_for(store_call(quick, lambda: quick.record("x")), 30) == "X"
    finally:
        slow.release.set()
    assert await holding == "held"


async def test_a_cancelled_wait_leaves_the_call_to_finish() -> None:
    store = _Store()
    holding = asyncio.ensure_future(store_call(store, store.hold))
    await asyncio.to_thread(store.busy.wait, 30)
    holding.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holding
    store.release.set()
    # The worker goes on with later calls as usual.
    assert await store_call(store, lambda: store.record("after")) == "AFTER"
