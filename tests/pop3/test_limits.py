"""Both POP3 retrievers against the scripted hostile POP3 server (tests/pop3/hostile.py): a
RETR that never ends, a message over ``max_message_size``, a server dripping a byte at a time
(issue 14.3, 14.4). Limits are small (1 MiB, ``Timeout(1, total=2)``) so each test is quick.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

import mailsync
from tests.pop3.hostile import HostilePOP3

MiB = 1024 * 1024
BOTH = pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
HANG = 30.0


def _raw(number: int, size: int = 0) -> bytes:
    return b"Subject: %d\r\n\r\n%s\r\n" % (number, b"x" * size)


def _run(url: str, asynchronous: bool, action: str, **options: Any) -> list[str]:
    options.setdefault("tls", "none")
    options.setdefault("password", "x")
    options.setdefault("state", ":memory:")
    if not asynchronous:
        with mailsync.connect(url, **options) as box:
            source = box.sync() if action == "sync" else box.messages()
            return [message.subject or "" for message in source]

    async def run() -> list[str]:
        async with mailsync.connect_async(url, **options) as box:
            source = box.sync() if action == "sync" else box.messages()
            return [message.subject or "" async for message in source]

    return asyncio.run(run())


def _wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


@pytest.mark.reliability(
    area="Limits",
    fault="the POP3 server answers RETR with +OK and then lines without end, never the "
    "terminating '.' (and LIST gave a small size)",
    inputs="sync and async retrievers; max_message_size of 1 MiB",
    outcome="MessageTooLarge naming the message once 1 MiB has arrived (it grew to a "
    "MemoryError before); the connection dropped; the next sync() skips that message with a "
    "warning instead of stalling on it",
)
@BOTH
def test_a_retr_without_end_stops_at_the_limit(
    asynchronous: bool, caplog: pytest.LogCaptureFixture
) -> None:
    state = mailsync.SQLiteStateStore(":memory:")
    options: dict[str, Any] = {"max_message_size": MiB, "state": state}
    with HostilePOP3([_raw(1), _raw(2), _raw(3)], no_terminator=2) as server:
        if asynchronous:
            with pytest.raises(mailsync.MessageTooLarge) as info:
                _run(server.url(), True, "messages", **options)
            assert info.value.id == "uid-2"
        else:
            with mailsync.connect(server.url(), password="x", tls="none", **options) as box:
                with pytest.raises(mailsync.MessageTooLarge) as info:
                    list(box.messages())
                assert info.value.id == "uid-2"
                assert _wait_for(lambda: server.hung_up >= 1), "the connection was kept"
                with pytest.raises(mailsync.MessageTooLarge):
                    list(box.sync())
                with caplog.at_level(logging.WARNING, logger="mailsync"):
                    # The same retriever (a watch() goes on like this): skipped, not stalled.
                    rest = [message.subject for message in box.sync()]
                assert "3" in rest
                assert "2" not in rest
                assert any("uid-2" in r.getMessage() for r in caplog.records)
        assert _wait_for(lambda: server.hung_up >= 1), "the connection was kept"
    assert info.value.limit == MiB


@pytest.mark.reliability(
    area="Limits",
    fault="a message whose LIST size is over max_message_size, among others",
    inputs="sync and async retrievers; max_message_size of 1 MiB, message 2 of 3 is 2 MiB",
    outcome="sync() never asks for it, yields the others and logs a warning naming it (every "
    "sync, until a retriever with a larger limit delivers it); messages() raises "
    "MessageTooLarge after the messages before it",
)
@BOTH
def test_a_message_over_the_limit_by_its_list_size_is_never_retrieved(
    asynchronous: bool, caplog: pytest.LogCaptureFixture
) -> None:
    state = mailsync.SQLiteStateStore(":memory:")
    limited: dict[str, Any] = {"max_message_size": MiB, "state": state}
    with HostilePOP3([_raw(1), _raw(2, 2 * MiB), _raw(3)]) as server:
        with caplog.at_level(logging.WARNING, logger="mailsync"):
            first = _run(server.url(), asynchronous, "sync", **limited)
            again = _run(server.url(), asynchronous, "sync", **limited)
        assert 2 not in server.retrieved
        larger = _run(server.url(), asynchronous, "sync", state=state, max_message_size=None)
        with pytest.raises(mailsync.MessageTooLarge) as info:
            _run(server.url(), asynchronous, "messages", max_message_size=MiB)
    assert first == ["1", "3"]
    assert again == []
    assert larger == ["2"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len([text for text in warnings if "uid-2" in text]) == 2, warnings
    assert info.value.id == "uid-2"
    assert info.value.size == len(_raw(2, 2 * MiB))


@pytest.mark.reliability(
    area="Limits",
    fault="the POP3 server sends its greeting, or a RETR reply, one byte every 50 ms for ever",
    inputs="sync and async retrievers; Timeout(1.0, total=2.0)",
    outcome="MailTimeout naming Timeout.total a little after 2 s (a RETR hung more than 150 s "
    "before); the connection dropped",
)
@BOTH
@pytest.mark.parametrize("where", ["greeting", "RETR"])
def test_a_dripping_pop3_server_cannot_hold_a_call(asynchronous: bool, where: str) -> None:
    timeout = mailsync.Timeout(1.0, total=2.0)
    with HostilePOP3([_raw(1)], drip=where) as server:
        started = time.monotonic()
        with pytest.raises(mailsync.MailTimeout) as info:
            _run(server.url(), asynchronous, "messages", timeout=timeout)
        took = time.monotonic() - started
        assert _wait_for(lambda: server.hung_up >= 1), "the connection was kept"
    assert "Timeout.total" in str(info.value)
    assert took < HANG
