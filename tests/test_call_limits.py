"""``CallLimits``, the deadline every network read keeps: ``Timeout.total`` from the start of a
call, pushed later by each byte received at ``min_rate``, and each wait capped by the read
timeout or by ``most``. CallLimits keeps that arithmetic itself (it runs for every chunk and
every message of a FETCH), so it is held here to what ``Timeout`` documents. The limits as
servers meet them are tested in tests/*/test_limits.py."""

from __future__ import annotations

import time

import pytest

from mailsync import MailTimeout, Timeout
from mailsync._config import parse_url
from mailsync.backends._limits import CallLimits


def _limits(timeout: Timeout) -> CallLimits:
    return CallLimits(parse_url("imap://alice@mail.example.test", timeout=timeout))


def test_a_call_lasts_total_plus_what_its_bytes_buy_at_min_rate() -> None:
    # total and the bytes' time well under the read timeout, so the wait is what is left of
    # the call; the bounds leave a machine under load tens of seconds between two lines.
    limits = _limits(Timeout(read=1000.0, total=100.0, min_rate=1000.0))
    limits.start()
    assert 50.0 < (limits.wait() or 0.0) <= 100.0
    limits.received(50_000)  # 50 s more at 1,000 bytes/s
    assert 100.0 < (limits.wait() or 0.0) <= 150.0
    limits.start()  # the next call starts afresh: what the last one received is gone
    assert 50.0 < (limits.wait() or 0.0) <= 100.0


def test_without_min_rate_total_is_a_hard_bound() -> None:
    limits = _limits(Timeout(read=1000.0, total=100.0, min_rate=None))
    limits.start()
    limits.received(10**9)
    assert 50.0 < (limits.wait() or 0.0) <= 100.0


def test_each_wait_is_capped_by_the_read_timeout_and_by_most() -> None:
    limits = _limits(Timeout(read=10.0, total=1000.0))
    assert limits.wait() == 10.0  # no call started: the read timeout alone
    limits.start()
    assert limits.wait() == 10.0  # the deadline is far: the read timeout
    limits.most = 2.0
    assert limits.most == 2.0
    assert limits.wait() == 2.0
    limits.most = 50.0  # longer than the read timeout: the read timeout still bounds a wait
    assert limits.wait() == 10.0
    limits.most = None
    assert limits.wait() == 10.0


def test_no_read_timeout_means_no_bound_unless_most_says() -> None:
    limits = _limits(Timeout(read=None))
    limits.start()
    limits.received(1000)
    assert limits.wait() is None
    limits.check()
    limits.most = 1.5
    assert limits.wait() == 1.5


def test_past_the_deadline_a_wait_is_refused_and_a_timeout_is_the_call_s() -> None:
    limits = _limits(Timeout(read=30.0, total=0.001, min_rate=None))
    limits.check()  # no call started: no deadline
    limits.start()
    time.sleep(0.01)  # past the 1 ms deadline (not waiting for anything to arrive)
    with pytest.raises(MailTimeout, match=r"Timeout\.total"):
        limits.wait()
    with pytest.raises(MailTimeout):
        limits.check()
