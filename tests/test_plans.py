"""The plan drivers: both run the same plan to the same result, emit the same items, throw
translated errors into the plan where the operation failed, and close the plan when the caller
stops early."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from mailsync import ConnectionFailed, MailTimeout, ProtocolError
from mailsync._plans import (
    Call,
    Emit,
    Items,
    Operation,
    Plan,
    Sleep,
    arun,
    astream,
    collect,
    replay,
    run,
    stream,
)

T = TypeVar("T")


@dataclass(frozen=True)
class Ask(Operation):
    question: str


def _answer(op: Operation) -> Any:
    assert isinstance(op, Ask)
    if op.question == "reset":
        raise ConnectionResetError("peer reset")
    if op.question == "slow":
        raise TimeoutError("timed out")
    if op.question == "bug":
        raise KeyError("not a transport error")
    return op.question.upper()


async def _aanswer(op: Operation) -> Any:
    await asyncio.sleep(0)
    return _answer(op)


def _conversation(log: list[str]) -> Plan[str]:
    first = yield Ask("hello")
    yield Emit(first)
    try:
        yield Ask("reset")
    except ConnectionFailed as exc:
        log.append(f"caught: {exc}")
    yield Sleep(0.0)
    thread = yield Call(lambda: threading.current_thread().name)
    log.append(thread)
    yield Emit("second")
    return "done"


def test_blocking_and_async_drivers_agree() -> None:
    sync_log: list[str] = []
    steps = stream(_conversation(sync_log), _answer, context="TEST host:1")
    items = []
    while True:
        try:
            items.append(next(steps))
        except StopIteration as stop:
            result = stop.value
            break
    assert items == ["HELLO", "second"]
    assert result == "done"
    assert sync_log[0] == "caught: TEST host:1: peer reset"
    assert sync_log[1] == threading.current_thread().name

    async def main() -> list[Any]:
        async_log: list[str] = []
        got = [item async for item in astream(_conversation(async_log), _aanswer, context="T")]
        # Call ran on a worker thread, not on the event loop's.
        assert async_log[1] != threading.current_thread().name
        assert async_log[0] == "caught: T: peer reset"
        return got

    assert asyncio.run(main()) == ["HELLO", "second"]


def _one_question(question: str) -> Plan[str]:
    answer: str = yield Ask(question)
    return answer


def test_run_returns_and_errors_are_translated() -> None:
    assert run(_one_question("x"), _answer) == "X"
    with pytest.raises(MailTimeout, match="IMAP h:1: timed out"):
        run(_one_question("slow"), _answer, context="IMAP h:1")
    assert asyncio.run(arun(_one_question("y"), _aanswer)) == "Y"
    with pytest.raises(MailTimeout):
        asyncio.run(arun(_one_question("slow"), _aanswer))


def test_untranslatable_errors_propagate_unchanged() -> None:
    with pytest.raises(KeyError):
        run(_one_question("bug"), _answer)
    with pytest.raises(KeyError):
        asyncio.run(arun(_one_question("bug"), _aanswer))


def _emitting() -> Plan[None]:
    yield Emit(1)
    return None


def test_run_refuses_a_plan_that_emits() -> None:
    with pytest.raises(AssertionError, match="emitted"):
        run(_emitting(), _answer)
    with pytest.raises(AssertionError, match="emitted"):
        asyncio.run(arun(_emitting(), _aanswer))


def test_stopping_early_closes_the_plan() -> None:
    closed: list[str] = []

    def endless() -> Plan[None]:
        try:
            n = 0
            while True:
                n += 1
                yield Ask(str(n))
                yield Emit(n)
        finally:
            closed.append("plan")

    steps = stream(endless(), _answer)
    assert [next(steps), next(steps)] == [1, 2]
    steps.close()
    assert closed == ["plan"]

    async def main() -> None:
        gen = astream(endless(), _aanswer)
        assert [await gen.__anext__(), await gen.__anext__()] == [1, 2]
        await gen.aclose()

    asyncio.run(main())
    assert closed == ["plan", "plan"]


def test_sleep_goes_to_the_drivers_sleeper() -> None:
    slept: list[float] = []

    def napping() -> Plan[int]:
        yield Sleep(2.5)
        return 7

    assert run(napping(), _answer, sleep=slept.append) == 7
    assert slept == [2.5]

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    assert asyncio.run(arun(napping(), _aanswer, sleep=fake_sleep)) == 7
    assert slept == [2.5, 2.5]


def test_collect_hands_items_to_the_outer_plan_and_passes_errors_in() -> None:
    got: list[Any] = []

    def inner() -> Plan[None]:
        yield Emit("a")
        try:
            yield Ask("reset")
        except ConnectionFailed:
            yield Emit("recovered")

    def outer() -> Plan[int]:
        yield from collect(inner(), got.append)
        return len(got)

    assert run(outer(), _answer) == 2
    assert got == ["a", "recovered"]


def test_replay_answers_from_a_script() -> None:
    ops, value = replay(_one_question("q"), ["canned"])
    assert value == "canned"
    assert ops == [Ask("q")]

    def failing() -> Plan[str]:
        try:
            yield Ask("q")
        except ProtocolError as exc:
            return f"saw {exc}"
        return "no error"

    assert replay(failing(), [ProtocolError("garbled")])[1] == "saw garbled"


def test_items_pulls_a_sub_plans_items_one_at_a_time() -> None:
    closed: list[str] = []

    def inner() -> Plan[str]:
        try:
            yield Emit("a")
            try:
                yield Ask("reset")
            except ConnectionFailed:
                yield Emit("after the error")
            yield Emit("c")
            return "inner done"
        finally:
            closed.append("inner")

    def outer(stop_after: int) -> Plan[tuple[list[str], Any]]:
        items = Items(inner())
        seen: list[str] = []
        try:
            while (item := (yield from items.next())) is not Items.END:
                seen.append(item)
                yield Emit(item.upper())
                if len(seen) == stop_after:
                    break
        finally:
            items.close()
        return seen, items.result

    assert list(stream(outer(99), _answer)) == ["A", "AFTER THE ERROR", "C"]
    assert run(_returning(outer(99)), _answer) == (["a", "after the error", "c"], "inner done")
    assert closed == ["inner", "inner"]
    assert run(_returning(outer(1)), _answer) == (["a"], None)  # stopped early: closed
    assert closed == ["inner", "inner", "inner"]


def _returning(plan: Plan[T]) -> Plan[T]:
    """The plan's return value, its items dropped."""
    return (yield from collect(plan, lambda item: None))
