"""Both IMAP backends against the limits behaviours of the scripted hostile server
(tests/imap/hostile.py): a literal over ``max_message_size``, a message over it in a sync, a
server dripping a byte at a time, an untagged flood, a line over 1 MB (issue 14.3, 14.4, 14.10
and the async RecursionError).

Limits are small here (``max_message_size`` of 1 MiB, ``Timeout(1, total=2)``, a response cap
of a few thousand lines) so that each test takes a second or two.
"""

from __future__ import annotations

import logging
import time

import pytest

import mailsync
from mailsync.backends import _limits
from tests.imap.hostile import HostileIMAP
from tests.limits import MiB, read, wait_for

BOTH = pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
#: Generous: a call bounded at about 2 s must end well within this on a loaded machine.
HANG = 30.0


@pytest.mark.reliability(
    area="Limits",
    fault="the IMAP server announces a {99999999999} literal in a UID FETCH and streams bytes "
    "into it without end",
    inputs="sync and async backends; max_message_size of 1 MiB",
    outcome="MessageTooLarge naming the UID, before a byte of the literal is kept; the "
    "connection dropped",
)
@BOTH
def test_a_literal_over_the_limit_is_refused_from_its_announced_size(asynchronous: bool) -> None:
    with HostileIMAP(messages=3, endless_literal=True) as server:
        with pytest.raises(mailsync.MessageTooLarge) as info:
            read(server.url(), asynchronous, "messages", max_message_size=MiB)
        assert wait_for(lambda: server.hung_up >= 1), "the connection was kept"
    assert info.value.uid == 1
    assert info.value.size == 99999999999
    assert info.value.limit == MiB
    assert "max_message_size" in str(info.value)


@pytest.mark.reliability(
    area="Limits",
    fault="a message over max_message_size among others in a folder being synced",
    inputs="sync and async backends; max_message_size of 1 MiB, message 2 of 3 is 2 MiB",
    outcome="sync() yields the others and logs a warning naming the skipped message's id; the "
    "next sync() does not stall on it; get(id) with a larger limit fetches it",
)
@BOTH
def test_sync_skips_a_message_over_the_limit_and_says_so(
    asynchronous: bool, caplog: pytest.LogCaptureFixture
) -> None:
    def make_raw(uid: int) -> bytes:
        body = b"x" * (2 * MiB) if uid == 2 else b"small"
        return b"Subject: %d\r\n\r\n%s\r\n" % (uid, body)

    state = mailsync.SQLiteStateStore(":memory:")
    with HostileIMAP(messages=3, make_raw=make_raw) as server:
        with caplog.at_level(logging.WARNING, logger="mailsync"):
            got = read(server.url(), asynchronous, "sync", max_message_size=MiB, state=state)
            again = read(server.url(), asynchronous, "sync", max_message_size=MiB, state=state)
        with mailsync.connect(
            server.url(), password="x", tls="none", state=":memory:", max_message_size=None
        ) as box:
            skipped = box.get("INBOX;7;2")
    assert got == ["1", "3"]
    assert again == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("INBOX;7;2" in text and "max_message_size" in text for text in warnings), warnings
    assert skipped.subject == "2"
    assert len(skipped.raw) > 2 * MiB


@pytest.mark.reliability(
    area="Limits",
    fault="the IMAP server sends its greeting, or a FETCH response, one byte every 50 ms for "
    "ever (never silent for a read timeout)",
    inputs="sync and async backends; Timeout(1.0, total=2.0)",
    outcome="MailTimeout naming Timeout.total a little after 2 s (it hung for ever before); "
    "the connection dropped",
)
@BOTH
@pytest.mark.parametrize("where", ["greeting", "fetch"])
def test_a_dripping_server_cannot_hold_a_call(asynchronous: bool, where: str) -> None:
    timeout = mailsync.Timeout(1.0, total=2.0)
    with HostileIMAP(messages=1, drip=where) as server:
        started = time.monotonic()
        with pytest.raises(mailsync.MailTimeout) as info:
            read(server.url(), asynchronous, "messages", timeout=timeout)
        took = time.monotonic() - started
        assert wait_for(lambda: server.hung_up >= 1), "the connection was kept"
    if not (asynchronous and where == "greeting"):
        # aioimaplib bounds the wait for a whole greeting by the connect timeout itself.
        assert "Timeout.total" in str(info.value)
    assert took < HANG


@pytest.mark.reliability(
    area="Limits",
    fault="the IMAP server answers SELECT, or a UID FETCH, with untagged responses without end",
    inputs="sync and async backends; a cap of 5,000 responses per command (1,000,000 by default)",
    outcome="ProtocolError once the cap is passed, memory bounded, the connection dropped; "
    "async: no RecursionError or 'Fatal error' traceback from inside aioimaplib",
)
@BOTH
@pytest.mark.parametrize("where", ["SELECT", "UID FETCH"])
def test_an_untagged_flood_ends_with_a_protocol_error(
    asynchronous: bool,
    where: str,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(_limits, "MAX_RESPONSE_LINES", 5000)
    with HostileIMAP(messages=1, flood=where) as server:
        with pytest.raises(mailsync.ProtocolError) as info:
            read(server.url(), asynchronous, "messages", timeout=10)
        assert wait_for(lambda: server.hung_up >= 1), "the connection was kept"
    assert "5000 responses" in str(info.value)
    printed = capfd.readouterr()
    assert "Fatal error" not in printed.err + printed.out
    assert "RecursionError" not in printed.err + printed.out


@pytest.mark.reliability(
    area="Limits",
    fault="a response line of 2 MB (over the 1 MB a line may have) in the greeting or in the "
    "reply to SELECT",
    inputs="sync and async backends",
    outcome="ProtocolError and the connection dropped (sync: it was a server refusal that kept "
    "an out-of-step connection)",
)
@BOTH
@pytest.mark.parametrize("where", ["greeting", "SELECT"])
def test_a_line_over_1_mb_is_a_protocol_error(asynchronous: bool, where: str) -> None:
    with HostileIMAP(messages=1, long_line=where) as server:
        with pytest.raises(mailsync.ProtocolError) as info:
            read(server.url(), asynchronous, "messages", timeout=10)
    # Dropped, not logged out: LOGOUT would have been said on a connection kept in step.
    assert not [line for line in server.received if b"LOGOUT" in line.upper()]
    assert not isinstance(info.value, mailsync.ServerError)
    assert "line" in str(info.value)


@pytest.mark.reliability(
    area="Limits",
    fault="the IMAP server never answers LOGOUT",
    inputs="sync backend; timeout=30",
    outcome="close() gives up after about 2 s (the polite goodbye's own bound), not the read "
    "timeout or Timeout.total",
)
def test_close_does_not_wait_long_for_a_silent_logout() -> None:
    with HostileIMAP(messages=1, mute="LOGOUT") as server:
        box = mailsync.connect(server.url(), password="x", tls="none", state=":memory:", timeout=30)
        assert box.folders()
        started = time.monotonic()
        box.close()
        took = time.monotonic() - started
        assert wait_for(lambda: any(b"LOGOUT" in line for line in server.received))
    assert took < 10.0
