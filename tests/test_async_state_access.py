"""The async retrievers never call the state store on the event loop: opening it, taking the
sync lease, reading the cursor, asking which messages were delivered, saving and giving the
lease back all happen on worker threads (a
SQLite call may wait for another writer, and the loop must not wait with it)."""

from __future__ import annotations

import asyncio
import mailbox
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

import mailsync
from mailsync._state import CursorLease, shared_state_store
from tests.contract import make_raw
from tests.servers import Account, MailServers


class RecordingStore(mailsync.SQLiteStateStore):
    """A SQLite store that notes the thread of every call."""

    def __init__(self) -> None:
        super().__init__(":memory:")
        self.calls: list[tuple[str, threading.Thread]] = []

    def load_cursor(self, account: str, folder: str) -> dict[str, Any] | None:
        self.calls.append(("load_cursor", threading.current_thread()))
        return super().load_cursor(account, folder)

    def save_cursor(
        self, account: str, folder: str, cursor: Mapping[str, Any], delivered: Iterable[str] = ()
    ) -> None:
        self.calls.append(("save_cursor", threading.current_thread()))
        super().save_cursor(account, folder, cursor, delivered)

    def known(self, account: str, folder: str, identities: Iterable[str]) -> set[str]:
        self.calls.append(("known", threading.current_thread()))
        return super().known(account, folder, identities)

    def try_lease(self, account: str, folder: str) -> CursorLease | None:
        self.calls.append(("try_lease", threading.current_thread()))
        lease = super().try_lease(account, folder)
        return None if lease is None else RecordingLease(lease, self.calls)

    def _save_if(
        self,
        account: str,
        folder: str,
        expected: int | None,
        cursor: Mapping[str, Any],
        delivered: Iterable[str],
    ) -> int:
        self.calls.append(("save", threading.current_thread()))
        return super()._save_if(account, folder, expected, cursor, delivered)


class RecordingLease:
    """A sync lease that notes the thread it is given back on."""

    def __init__(self, lease: CursorLease, calls: list[tuple[str, threading.Thread]]) -> None:
        self._lease = lease
        self._calls = calls

    @property
    def cursor(self) -> dict[str, Any] | None:
        return self._lease.cursor

    def save(self, cursor: Mapping[str, Any], delivered: Iterable[str] = ()) -> None:
        self._lease.save(cursor, delivered)

    def release(self) -> None:
        self._calls.append(("release", threading.current_thread()))
        self._lease.release()


@pytest.fixture(params=["imap", "pop3", "maildir", "mbox"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict[str, Any], Any]:
    """``(url, options, seed)`` of one async backend."""
    kind: str = request.param
    if kind in ("imap", "pop3"):
        servers: MailServers = request.getfixturevalue("mail_servers")
        account: Account = request.getfixturevalue("account")
        port = servers.imap_port if kind == "imap" else servers.pop3_port
        options = {"password": account.password, "tls": "none"}

        def seed_remote(raws: list[bytes]) -> None:
            servers.append_many(account, raws)

        return f"{kind}://{account.user}@{servers.host}:{port}", options, seed_remote
    if kind == "maildir":
        root = tmp_path / "Maildir"
        box = mailbox.Maildir(root, create=True)

        def seed_maildir(raws: list[bytes]) -> None:
            for raw in raws:
                box.add(raw)

        return f"maildir:{root}", {}, seed_maildir
    path = tmp_path / "inbox.mbox"
    path.touch()

    def seed_mbox(raws: list[bytes]) -> None:
        box = mailbox.mbox(path)
        for raw in raws:
            box.add(raw)
        box.close()

    return f"mbox:{path}", {}, seed_mbox


def test_sync_calls_the_store_off_the_event_loop(
    url: tuple[str, dict[str, Any], Any],
) -> None:
    target, options, seed = url
    store = RecordingStore()
    seed([make_raw(1), make_raw(2)])

    async def main() -> threading.Thread:
        async with mailsync.connect_async(target, state=store, **options) as box:
            assert len([m async for m in box.sync()]) == 2  # a first sync: identities checked
            seed([make_raw(3)])
            assert len([m async for m in box.sync()]) == 1
        return threading.current_thread()

    loop_thread = asyncio.run(main())
    called = {name for name, _thread in store.calls}
    assert {"try_lease", "load_cursor", "save", "release"} <= called
    on_loop = [name for name, thread in store.calls if thread is loop_thread]
    assert on_loop == [], f"called on the event loop: {on_loop}"


def test_the_store_is_opened_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[threading.Thread] = []

    def recording_open(arg: Any) -> mailsync.StateStore:
        opened.append(threading.current_thread())
        return shared_state_store(arg)

    monkeypatch.setattr("mailsync._base.shared_state_store", recording_open)
    root = tmp_path / "Maildir"
    mailbox.Maildir(root, create=True).add(make_raw(1))
    state = tmp_path / "new" / "dir" / "state.sqlite"

    async def main() -> threading.Thread:
        async with mailsync.connect_async(f"maildir:{root}", state=str(state)) as box:
            assert len([m async for m in box.sync()]) == 1
        return threading.current_thread()

    loop_thread = asyncio.run(main())
    assert opened
    assert loop_thread not in opened
    assert state.exists()
