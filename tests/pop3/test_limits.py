"""Both POP3 retrievers against the scripted hostile POP3 server (tests/pop3/hostile.py): a
RETR that never ends, a message over ``max_message_size``, a server dripping a byte at a time
(issue 14.3, 14.4). Limits are small (1 MiB, ``Timeout(1, total=2)``) so each test is quick.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

import mailsync
from tests.limits import MiB, read, wait_for
from tests.pop3.hostile import HostilePOP3

BOTH = pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
HANG = 30.0


def _raw(number: int, size: int = 0) -> bytes:
    return b"Subject: %d\r\n\r\n%s\r\n" % (number, b"x" * size)


@pytest.mark.reliability(
    area="Limits",
    fault="the POP3 server answers RETR with +OK and then lines without end, never the "
    "terminating '.' (and LIST gave a small size)",
    inputs="sync and async retrievers; max_message_size of 1 MiB",
    outcome="MessageTooLarge naming the message once 1 MiB has arrived (it grew to a "
    "MemoryError before); the connection dropped; the next sync() of that retriever (a "
    "watch() goes on so) skips the message with a warning instead of stalling on it",
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
                read(server.url(), True, "messages", **options)
            assert info.value.id == "uid-2"
        else:
            with mailsync.connect(server.url(), password="x", tls="none", **options) as box:
                with pytest.raises(mailsync.MessageTooLarge) as info:
                    list(box.messages())
                assert info.value.id == "uid-2"
                assert wait_for(lambda: server.hung_up >= 1), "the connection was kept"
                with pytest.raises(mailsync.MessageTooLarge):
                    list(box.sync())
                with caplog.at_level(logging.WARNING, logger="mailsync"):
                    # The same retriever (a watch() goes on like this): skipped, not stalled.
                    rest = [message.subject for message in box.sync()]
                assert "3" in rest
                assert "2" not in rest
                assert any("uid-2" in r.getMessage() for r in caplog.records)
        assert wait_for(lambda: server.hung_up >= 1), "the connection was kept"
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
            first = read(server.url(), asynchronous, "sync", **limited)
            again = read(server.url(), asynchronous, "sync", **limited)
        assert 2 not in server.retrieved
        larger = read(server.url(), asynchronous, "sync", state=state, max_message_size=None)
        with pytest.raises(mailsync.MessageTooLarge) as info:
            read(server.url(), asynchronous, "messages", max_message_size=MiB)
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
            read(server.url(), asynchronous, "messages", timeout=timeout)
        took = time.monotonic() - started
        assert wait_for(lambda: server.hung_up >= 1), "the connection was kept"
    assert "Timeout.total" in str(info.value)
    assert took < HANG
