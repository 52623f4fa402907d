"""watch_many at scale and under failure (issue 18): one engine, isolated accounts, statuses,
retry policy, per-host bounds, graceful shutdown. Real Dovecot accounts; mail comes by LMTP.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import mailsync
from mailsync._watch import RetryPolicy
from mailsync._watch_engine import is_transient
from tests.proxy import TCPProxy
from tests.servers import Account, MailServers, wait_for

FAST = RetryPolicy(backoff_base=0.2, backoff_cap=1.0, failed_retry=None)


def _raw(subject: str) -> bytes:
    return (
        f"From: s@example.test\r\nTo: r@example.test\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject}@example.test>\r\n\r\nbody\r\n"
    ).encode()


def _url(servers: MailServers, account: Account, port: int | None = None) -> str:
    return f"imap://{account.user}@{servers.host}:{port or servers.imap_port}"


def _connect(
    servers: MailServers,
    account: Account,
    state: Any,
    *,
    password: str | None = None,
    port: int | None = None,
) -> mailsync.Retriever:
    return mailsync.connect(
        _url(servers, account, port),
        password=password or account.password,
        tls="none",
        timeout=20,
        state=state,
    )


class _Consumer:
    """Iterates a WatchMany on a thread, collecting ``(user, subject)``."""

    def __init__(self, watcher: mailsync.WatchMany) -> None:
        self.watcher = watcher
        self.got: list[tuple[str, str]] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._consume, daemon=True)
        self.thread.start()

    def _consume(self) -> None:
        try:
            for box, message in self.watcher:
                self.got.append((box.endpoint.username or "", message.subject or ""))
        except BaseException as exc:
            self.error = exc

    def stop(self) -> None:
        self.watcher.stop()
        self.thread.join(60)
        assert not self.thread.is_alive()
        assert self.error is None


@pytest.fixture
def store(tmp_path: Path) -> Iterator[mailsync.SQLiteStateStore]:
    store = mailsync.SQLiteStateStore(tmp_path / "state.sqlite3")
    yield store
    store.close()


def test_a_refused_password_does_not_stop_the_other_accounts(
    mail_servers: MailServers, store: mailsync.SQLiteStateStore
) -> None:
    """The issue's case: 20 good accounts and one with a wrong password."""
    good = [mail_servers.new_account("g") for _ in range(20)]
    bad = mail_servers.new_account("bad")
    boxes = [_connect(mail_servers, a, store) for a in good]
    wrong = _connect(mail_servers, bad, store, password="not-the-password")
    changes: list[tuple[str, str]] = []
    watcher = mailsync.watch_many(
        [wrong, *boxes],
        retry=RetryPolicy(backoff_base=0.2, backoff_cap=1.0, failed_retry=3600),
        on_status=lambda box, status: changes.append((box.endpoint.username or "", status.state)),
    )
    consumer = _Consumer(watcher)
    try:
        wait_for(
            lambda: all(s.state == "watching" for _, s in watcher.statuses[1:]),
            timeout=90,
            message="the good accounts are watching",
        )
        for account in good:
            mail_servers.deliver(account, _raw(f"to-{account.user.split('@')[0]}"))
        wait_for(lambda: len(consumer.got) == 20, timeout=90, message="20 messages arrived")
        assert sorted(user for user, _ in consumer.got) == sorted(a.user for a in good)
        status = watcher.status(wrong)
        assert status.state == "failed"
        assert status.reason is not None
        assert status.reason.startswith("AuthenticationError")
        assert "not-the-password" not in status.reason
        assert status.retry_at is not None
        assert status.retry_at - time.time() > 3000  # the policy's hour, not a tight loop
        assert [s for u, s in changes if u == bad.user] == ["failed"]  # from "connecting"
        assert watcher.status(boxes[0]).delivered == 1
    finally:
        consumer.stop()


def test_a_server_that_is_down_backs_off_and_recovers(
    mail_servers: MailServers, store: mailsync.SQLiteStateStore
) -> None:
    account, other = mail_servers.new_account("d"), mail_servers.new_account("u")
    proxy = TCPProxy(mail_servers.host, mail_servers.imap_port).start()
    try:
        proxy.refuse()
        down = _connect(mail_servers, account, store, port=proxy.address[1])
        up = _connect(mail_servers, other, store)
        mail_servers.deliver(account, _raw("waited"))
        mail_servers.deliver(other, _raw("direct"))
        watcher = mailsync.watch_many([down, up], retry=FAST)
        consumer = _Consumer(watcher)
        try:
            wait_for(lambda: consumer.got == [(other.user, "direct")], timeout=60)
            wait_for(lambda: watcher.status(down).state == "backing_off", timeout=60)
            status = watcher.status(down)
            assert status.reason is not None
            assert status.reason.startswith("ConnectionFailed")
            assert status.retry_at is not None
            proxy.allow()
            wait_for(lambda: len(consumer.got) == 2, timeout=60, message="it recovered")
            assert consumer.got[1] == (account.user, "waited")
            wait_for(lambda: watcher.status(down).failures == 0, timeout=30)
        finally:
            consumer.stop()
    finally:
        proxy.stop()


def test_a_handler_that_raises_leaves_its_message_for_later(
    mail_servers: MailServers, store: mailsync.SQLiteStateStore
) -> None:
    accounts = [mail_servers.new_account("h") for _ in range(3)]
    boxes = [_connect(mail_servers, a, store) for a in accounts]
    for account in accounts:
        mail_servers.deliver(account, _raw(f"m-{account.user.split('@')[0]}"))
    handled: list[str] = []
    failures: list[str] = []
    watcher = mailsync.watch_many(boxes, retry=FAST)

    def handler(box: mailsync.Retriever, message: mailsync.Message) -> None:
        if box is boxes[0] and not failures:
            failures.append(message.subject or "")
            raise RuntimeError("the handler broke once")
        handled.append(message.subject or "")
        if len(handled) == 3:
            watcher.stop()

    runner = threading.Thread(target=watcher.run, args=(handler,), daemon=True)
    runner.start()
    runner.join(90)
    assert not runner.is_alive()
    first = accounts[0].user.split("@")[0]
    assert failures == [f"m-{first}"]
    assert sorted(handled) == sorted(f"m-{a.user.split('@')[0]}" for a in accounts)
    with _connect(mail_servers, accounts[0], store) as box:
        assert list(box.sync()) == []  # committed once the handler took it


def test_a_refused_commit_is_the_accounts_failure_not_the_consumers(
    mail_servers: MailServers, store: mailsync.SQLiteStateStore
) -> None:
    # The consumer acknowledges and goes on at once; the commit runs beside it. When the
    # commit is refused (here the cursor was reset under the run: LeaseLost), that account
    # backs off and hands the message out again, and the consumer never sees the error.
    reset, other = mail_servers.new_account("r"), mail_servers.new_account("o")
    boxes = [_connect(mail_servers, a, store) for a in (reset, other)]
    assert list(boxes[0].sync()) == []  # a cursor saved: resetting it is then noticed
    mail_servers.deliver(reset, _raw("reset-under-it"))
    got: list[str] = []
    watcher = mailsync.watch_many(boxes, retry=FAST)

    def handler(box: mailsync.Retriever, message: mailsync.Message) -> None:
        got.append(message.subject or "")
        if len(got) == 1:
            store.reset(box.account_key, "INBOX")
            mail_servers.deliver(other, _raw("other"))
        if sorted(got) == ["other", "reset-under-it", "reset-under-it"]:
            watcher.stop()  # the message in hand is committed, then everything closes

    runner = threading.Thread(target=watcher.run, args=(handler,), daemon=True)
    runner.start()
    runner.join(90)
    assert not runner.is_alive()
    assert sorted(got) == ["other", "reset-under-it", "reset-under-it"]
    for account in (reset, other):
        with _connect(mail_servers, account, store) as box:
            assert list(box.sync()) == []  # every message committed in the end


def test_catch_up_is_bounded_per_host(
    mail_servers: MailServers, store: mailsync.SQLiteStateStore
) -> None:
    accounts = [mail_servers.new_account("p") for _ in range(12)]
    proxy = TCPProxy(mail_servers.host, mail_servers.imap_port).start()
    try:
        proxy.stall()  # every catch-up hangs on the greeting, holding its slot
        boxes = [_connect(mail_servers, a, store, port=proxy.address[1]) for a in accounts]
        watcher = mailsync.watch_many(boxes, per_host=3, retry=FAST)
        consumer = _Consumer(watcher)
        try:
            wait_for(lambda: proxy.live == 3, timeout=30, message="three connections")
            peak = 0
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                peak = max(peak, proxy.live)
                time.sleep(0.02)
            assert peak == 3
            proxy.resume()
            wait_for(
                lambda: all(s.state == "watching" for _, s in watcher.statuses),
                timeout=90,
                message="every account caught up",
            )
            assert proxy.live == 12  # waiting for mail holds no slot
        finally:
            consumer.stop()
    finally:
        proxy.stop()


def test_the_sync_api_runs_one_thread_not_one_per_account(
    mail_servers: MailServers, store: mailsync.SQLiteStateStore
) -> None:
    accounts = [mail_servers.new_account("t") for _ in range(40)]
    boxes = [_connect(mail_servers, a, store) for a in accounts]
    before = threading.active_count()
    watcher = mailsync.watch_many(boxes)
    consumer = _Consumer(watcher)
    try:
        wait_for(lambda: all(s.state == "watching" for _, s in watcher.statuses), timeout=90)
        # The consumer, the loop thread and the default executor's few workers (state
        # store writes), whatever the number of accounts.
        assert threading.active_count() - before <= 2 + min(32, (os.cpu_count() or 1) + 4)
        mail_servers.deliver(accounts[-1], _raw("last"))
        wait_for(lambda: consumer.got == [(accounts[-1].user, "last")], timeout=60)
    finally:
        consumer.stop()


async def test_watch_many_async_isolates_and_reports(
    mail_servers: MailServers, store: mailsync.SQLiteStateStore
) -> None:
    good, bad = mail_servers.new_account("ag"), mail_servers.new_account("ab")
    boxes = [
        mailsync.connect_async(
            _url(mail_servers, a), password=p, tls="none", timeout=20, state=store
        )
        for a, p in ((bad, "wrong"), (good, good.password))
    ]
    mail_servers.deliver(good, _raw("async-one"))
    watcher = mailsync.watch_many_async(boxes, retry=FAST)
    got: list[str] = []
    async with watcher:
        async for _box, message in watcher:
            got.append(message.subject or "")
            break
        deadline = time.monotonic() + 60
        while watcher.status(boxes[0]).state != "failed" and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert watcher.status(boxes[0]).state == "failed"
    assert got == ["async-one"]
    assert watcher.status(boxes[1]).state == "stopped"


def test_connection_limits_and_outages_are_transient() -> None:
    dovecot = mailsync.ServerError(
        "IMAP 127.0.0.1:143: Maximum number of connections from user+IP exceeded "
        "(mail_max_userip_connections=10)"
    )
    gmail = mailsync.AuthenticationError("[ALERT] Too many simultaneous connections. (Failure)")
    assert is_transient(dovecot)
    assert is_transient(gmail)
    assert not is_transient(mailsync.AuthenticationError("[AUTHENTICATIONFAILED] no"))
    assert not is_transient(mailsync.FolderNotFound("no folder"))
    assert is_transient(mailsync.StateError("unreachable"))
    assert not is_transient(mailsync.StateError("damaged", damaged=True))
    assert is_transient(mailsync.LeaseLost("lost"))
    with pytest.raises(mailsync.ConfigError):
        RetryPolicy(failed_retry=5)  # a refused password is never retried that fast
    delay, for_good = RetryPolicy().delay(mailsync.AuthenticationError("no"), 1)
    assert (delay, for_good) == (900.0, True)


_GRACEFUL = textwrap.dedent(
    """
    import sys, time, mailsync
    url, password, state, log = sys.argv[1:5]
    box = mailsync.connect(url, password=password, tls="none", state=state)

    def handler(box, message):
        with open(log, "a") as out:
            out.write("start\\n")
        time.sleep(2)  # SIGTERM arrives here
        with open(log, "a") as out:
            out.write(f"done {message.subject}\\n")

    mailsync.watch_many([box]).run(handler)
    with open(log, "a") as out:
        out.write("exited\\n")
    """
)


def test_sigterm_finishes_the_message_in_hand_commits_and_exits(
    tmp_path: Path, mail_servers: MailServers, account: Account
) -> None:
    mail_servers.deliver(account, _raw("in-hand"))
    mail_servers.deliver(account, _raw("next-time"))
    state, log = tmp_path / "state.sqlite3", tmp_path / "log.txt"
    script = tmp_path / "graceful.py"
    script.write_text(_GRACEFUL)
    proc = subprocess.Popen(
        [
            sys.executable,
            str(script),
            _url(mail_servers, account),
            account.password,
            str(state),
            str(log),
        ]
    )
    try:
        wait_for(lambda: log.exists() and "start" in log.read_text(), timeout=60)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert log.read_text().splitlines() == ["start", "done in-hand", "exited"]
    with _connect(mail_servers, account, str(state)) as box:
        assert [m.subject for m in box.sync()] == ["next-time"]  # in-hand was committed


def test_status_as_dict_is_json_ready() -> None:
    status = mailsync.AccountStatus("backing_off", 1.0, reason="x", retry_at=2.0, failures=1)
    assert status.as_dict() == {
        "state": "backing_off",
        "since": 1.0,
        "reason": "x",
        "retry_at": 2.0,
        "failures": 1,
        "delivered": 0,
    }
