"""The sync walk as both IMAP backends run it (one plan, :mod:`mailsync.protocol.imap_sync`),
against Dovecot: a sync whose caller reads another folder between two messages stays in its
own folder, and a folder replaced meanwhile ends the walk instead of mixing two folders."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

import mailsync
from tests.contract import make_raw, wait_for
from tests.imap.conftest import imap_url
from tests.servers import Account, MailServers

pytestmark = pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])


def _walk(
    mail_servers: MailServers,
    account: Account,
    asynchronous: bool,
    between: Callable[[Any, int], None],
    **options: Any,
) -> tuple[list[str], BaseException | None]:
    """Subjects a sync() of folder A yields (batches of 2), calling ``between(box, n)``
    after message ``n``, and the error that ended it, if any."""
    target = imap_url(mail_servers, account)
    got: list[str] = []
    if not asynchronous:
        with mailsync.connect(target.url, **target.options, **options) as box:
            try:
                for message in box.sync("A"):
                    assert message.folder == "A"
                    got.append(message.subject)
                    between(box, len(got))
            except mailsync.MailsyncError as exc:
                return got, exc
        return got, None

    async def walk() -> BaseException | None:
        async with mailsync.connect_async(target.url, **target.options, **options) as box:
            try:
                async for message in box.sync("A"):
                    assert message.folder == "A"
                    got.append(message.subject)
                    await asyncio.to_thread(between, _Blocking(box), len(got))
            except mailsync.MailsyncError as exc:
                return exc
        return None

    return got, asyncio.run(walk())


class _Blocking:
    """The async retriever's messages(), called from the thread ``between`` runs on."""

    def __init__(self, box: Any) -> None:
        self._box = box
        self._loop = asyncio.get_running_loop()

    def messages(self, folder: str) -> list[mailsync.Message]:
        async def read() -> list[mailsync.Message]:
            return [m async for m in self._box.messages(folder)]

        return asyncio.run_coroutine_threadsafe(read(), self._loop).result(60)


def _folders(mail_servers: MailServers, account: Account) -> list[bytes]:
    a = [make_raw(n, subject=f"A{n}") for n in range(5)]
    mail_servers.create_folder(account, "A")
    mail_servers.create_folder(account, "B")
    mail_servers.append_many(account, a, folder="A")
    mail_servers.append_many(account, [make_raw(n, subject=f"B{n}") for n in range(3)], "B")
    return a


def test_reading_another_folder_between_two_messages(
    mail_servers: MailServers, account: Account, asynchronous: bool
) -> None:
    _folders(mail_servers, account)

    def read_b(box: Any, count: int) -> None:
        assert [m.subject for m in box.messages("B")] == ["B0", "B1", "B2"]

    got, error = _walk(mail_servers, account, asynchronous, read_b, batch_size=2, state=":memory:")
    assert error is None
    assert got == ["A0", "A1", "A2", "A3", "A4"]


def test_a_folder_replaced_during_a_sync_ends_it_and_the_next_one_resyncs(
    mail_servers: MailServers, account: Account, asynchronous: bool
) -> None:
    raws = _folders(mail_servers, account)
    state = mailsync.SQLiteStateStore(":memory:")

    def replace_a(box: Any, count: int) -> None:
        if count != 1:
            return
        list(box.messages("B"))  # A is not selected while another session replaces it
        mail_servers.delete_folder(account, "A")
        stamp = int(time.time())
        wait_for(lambda: int(time.time()) > stamp, 3)  # Dovecot's UIDVALIDITY is a timestamp
        mail_servers.create_folder(account, "A")
        mail_servers.append_many(account, raws, folder="A")

    got, error = _walk(mail_servers, account, asynchronous, replace_a, batch_size=2, state=state)
    assert got == ["A0", "A1"]  # the rest of the first batch was already in
    assert isinstance(error, mailsync.TemporaryFailure), error
    again, error = _walk(
        mail_servers, account, asynchronous, lambda box, n: None, batch_size=2, state=state
    )
    assert error is None
    # A0 and A1 count as delivered (asking for the message after A1 committed it); the
    # resync of the new folder skips them by Message-ID.
    assert again == ["A2", "A3", "A4"]
