"""The sync lease and damaged state (issue 14, defects 1 and 7), on the SQLite store.

Concurrent runs are real processes sharing one state file, as in the defect report; a killed
holder is killed with SIGKILL. The same lease rules run against PostgreSQL in
tests/test_state_contract.py.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import signal
import sqlite3
import threading
import time
import warnings
from pathlib import Path

import pytest

import mailsync
from mailsync._state_sqlite import SQLiteStateStore
from tests.servers import Account, MailServers, wait_for
from tests.test_local_contract import _maildir_seed

_SPAWN = multiprocessing.get_context("spawn")


def _raw(n: int) -> bytes:
    return (
        f"From: a@example.test\r\nTo: b@example.test\r\nSubject: Message {n}\r\n"
        f"Message-ID: <m{n}@example.test>\r\n\r\nbody {n}\r\n"
    ).encode()


@pytest.fixture
def maildir(tmp_path: Path) -> Path:
    root = tmp_path / "Maildir"
    for sub in ("tmp", "new", "cur"):
        (root / sub).mkdir(parents=True)
    return root


def _seed(root: Path, numbers: range) -> list[str]:
    seed = _maildir_seed(root)
    for n in numbers:
        seed(_raw(n))
    return [f"Message {n}" for n in numbers]


# -- processes ----------------------------------------------------------------------------------


def _sync_slowly(maildir: str, state: str, out: str, go: object, delay: float) -> None:
    """A child: wait for the start signal, then sync, writing each subject as it is handled."""
    go.wait(60)  # type: ignore[attr-defined]
    with mailsync.connect(f"maildir:{maildir}", state=state) as box, open(out, "a") as file:
        for message in box.sync():
            file.write(f"{message.subject}\n")
            file.flush()
            time.sleep(delay)


def test_two_processes_syncing_one_folder_never_yield_a_message_twice(
    tmp_path: Path, maildir: Path
) -> None:
    expected = _seed(maildir, range(40))
    state = str(tmp_path / "state.sqlite3")
    SQLiteStateStore(state).close()
    go = _SPAWN.Event()
    outs = [tmp_path / f"out{i}.txt" for i in range(2)]
    procs = [
        _SPAWN.Process(target=_sync_slowly, args=(str(maildir), state, str(out), go, delay))
        for out, delay in zip(outs, (0.01, 0.002), strict=True)
    ]
    for proc in procs:
        proc.start()
    go.set()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    got = [line for out in outs if out.exists() for line in out.read_text().splitlines()]
    assert sorted(got) == sorted(expected)  # every message once, none twice
    with mailsync.connect(f"maildir:{maildir}", state=state) as box:
        assert list(box.sync()) == []  # and the cursor stands past all of them


def _imap_sync(url: str, password: str, state: str, out: str, go: object, use_async: bool) -> None:
    go.wait(60)  # type: ignore[attr-defined]
    options = {"password": password, "tls": "none", "state": state}
    with open(out, "a") as file:
        if not use_async:
            with mailsync.connect(url, **options) as box:
                for message in box.sync():
                    file.write(f"{message.subject}\n")
                    file.flush()
            return

        async def run() -> None:
            async with mailsync.connect_async(url, **options) as box:
                async for message in box.sync():
                    file.write(f"{message.subject}\n")
                    file.flush()

        asyncio.run(run())


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_two_processes_syncing_one_imap_folder_never_yield_a_message_twice(
    tmp_path: Path, mail_servers: MailServers, account: Account, use_async: bool
) -> None:
    raws = [_raw(n) for n in range(120)]
    mail_servers.append_many(account, raws)
    state = str(tmp_path / "state.sqlite3")
    url = f"imap://{account.user}@{mail_servers.host}:{mail_servers.imap_port}"
    go = _SPAWN.Event()
    outs = [tmp_path / f"out{i}.txt" for i in range(3)]
    procs = [
        _SPAWN.Process(
            target=_imap_sync,
            args=(url, account.password, state, str(out), go, use_async),
        )
        for out in outs
    ]
    for proc in procs:
        proc.start()
    go.set()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    got = [line for out in outs if out.exists() for line in out.read_text().splitlines()]
    assert sorted(got) == sorted(f"Message {n}" for n in range(120))
    store = SQLiteStateStore(state)
    cursors = [value for _key, value in _cursors(store)]
    assert len(cursors) == 1
    assert cursors[0]["uid"] == 120


def _cursors(store: SQLiteStateStore) -> list[tuple[str, dict[str, object]]]:
    rows = store._read("SELECT account, cursor FROM cursors", ())
    return [(account, json.loads(cursor)) for account, cursor in rows]


def _hold_the_lease(maildir: str, state: str, ready: str) -> None:
    """A child: take the first message and then hang while "handling" it."""
    box = mailsync.connect(f"maildir:{maildir}", state=state)
    run = box.sync()
    message = next(run)
    Path(ready).write_text(message.subject)
    time.sleep(600)


def test_a_holder_killed_with_sigkill_loses_its_lease_at_once(
    tmp_path: Path, maildir: Path
) -> None:
    expected = _seed(maildir, range(3))
    state = str(tmp_path / "state.sqlite3")
    ready = tmp_path / "ready"
    proc = _SPAWN.Process(target=_hold_the_lease, args=(str(maildir), state, str(ready)))
    proc.start()
    try:
        wait_for(ready.exists, timeout=60, message="the child holds the lease")
        with mailsync.connect(f"maildir:{maildir}", state=state) as box:
            with pytest.raises(mailsync.SyncBusy) as info:
                next(box.sync(wait=False))
            assert "Maildir" in info.value.account
            assert info.value.folder == "INBOX"
            assert "wait=True" in str(info.value)
            os.kill(proc.pid, signal.SIGKILL)
            proc.join(30)
            # The message the killed process had in hand was never acknowledged: it comes
            # again (at least once), and so does everything after it.
            assert [m.subject for m in box.sync(wait=30)] == expected
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(30)


# -- one process --------------------------------------------------------------------------------


def test_a_second_run_waits_for_the_first_or_raises_when_asked_not_to(
    tmp_path: Path, maildir: Path
) -> None:
    expected = _seed(maildir, range(4))
    state = SQLiteStateStore(tmp_path / "state.sqlite3")
    with (
        mailsync.connect(f"maildir:{maildir}", state=state) as first,
        mailsync.connect(f"maildir:{maildir}", state=state) as second,
    ):
        run = first.sync()
        assert next(run).subject == "Message 0"
        with pytest.raises(mailsync.SyncBusy):
            next(second.sync(wait=False))
        started = time.monotonic()
        with pytest.raises(mailsync.SyncBusy):
            next(second.sync(wait=0.3))
        assert time.monotonic() - started >= 0.3
        got: list[str] = []
        waiter = threading.Thread(target=lambda: got.extend(m.subject for m in second.sync()))
        waiter.start()
        time.sleep(0.2)  # the waiter is waiting; what the first run has not finished stays
        assert not got
        assert next(run).subject == "Message 1"  # acknowledges Message 0
        run.close()  # Message 1 was not acknowledged: it comes to the waiter
        waiter.join(30)
        assert got == expected[1:]


def test_a_run_dropped_mid_loop_gives_its_lease_back(maildir: Path) -> None:
    _seed(maildir, range(3))
    with mailsync.connect(f"maildir:{maildir}", state=":memory:") as box:
        for _message in box.sync():
            break
        assert [m.subject for m in box.sync(wait=False)] == [f"Message {n}" for n in range(3)]


def test_a_run_that_lost_its_lease_never_moves_the_cursor_back(maildir: Path) -> None:
    """The defect's outcome, a slow run writing an old cursor over a newer one, cannot
    happen: a save must descend from the cursor the run read."""
    _seed(maildir, range(3))
    store = SQLiteStateStore(":memory:")
    with mailsync.connect(f"maildir:{maildir}", state=store) as box:
        run = box.sync()
        next(run)
        # Someone else writes a newer cursor while this run holds the message in hand (what
        # a run elsewhere would do if this one's lock were lost).
        store.save_cursor(box.account_key, "INBOX", {"newer": True})
        with pytest.raises(mailsync.LeaseLost) as info:
            next(run)
        assert "nothing was saved" in str(info.value)
        assert store.load_cursor(box.account_key, "INBOX") == {"newer": True}
        assert list(box.sync(wait=False)) is not None  # the lease was given back


def test_lease_saves_compare_and_set_on_the_generation() -> None:
    store = SQLiteStateStore(":memory:")
    lease = store.try_lease("acct", "INBOX")
    assert lease is not None
    assert lease.cursor is None
    assert store.try_lease("acct", "INBOX") is None  # exclusive
    other = store.try_lease("acct", "Other")  # per folder
    assert other is not None
    lease.save({"uid": 5}, ["mid:a"])
    lease.save({"uidvalidity": 2, "uid": 1})  # "smaller" cursors are the backend's business
    assert store.load_cursor("acct", "INBOX") == {"uidvalidity": 2, "uid": 1}
    assert store.known("acct", "INBOX", ["mid:a"]) == {"mid:a"}
    store.reset("acct", "INBOX")
    with pytest.raises(mailsync.LeaseLost):
        lease.save({"uid": 9})
    assert store.load_cursor("acct", "INBOX") is None
    lease.release()
    lease.release()  # twice is fine
    again = store.try_lease("acct", "INBOX")
    assert again is not None
    assert again.cursor is None
    again.save({"uid": 10})
    again.release()
    with pytest.raises(mailsync.LeaseLost):
        again.save({"uid": 11})  # a released lease saves nothing
    other.release()


def test_wait_must_be_a_bool_or_seconds(maildir: Path) -> None:
    with mailsync.connect(f"maildir:{maildir}", state=":memory:") as box:
        for bad in (-1, "soon"):
            with pytest.raises(mailsync.ConfigError):
                box.sync(wait=bad)  # type: ignore[arg-type]


async def test_async_runs_share_the_lease(tmp_path: Path, maildir: Path) -> None:
    expected = _seed(maildir, range(3))
    state = SQLiteStateStore(tmp_path / "state.sqlite3")
    async with (
        mailsync.connect_async(f"maildir:{maildir}", state=state) as first,
        mailsync.connect_async(f"maildir:{maildir}", state=state) as second,
    ):
        run = first.sync()
        assert (await anext(run)).subject == "Message 0"
        with pytest.raises(mailsync.SyncBusy):
            await anext(second.sync(wait=False))
        waiting = asyncio.create_task(_subjects(second.sync()))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        async for _message in run:
            pass
        assert await asyncio.wait_for(waiting, 30) == []
    assert expected


async def _subjects(run: mailsync.AsyncSyncRun) -> list[str]:
    return [message.subject async for message in run]


# -- damaged state --------------------------------------------------------------------------------


def test_an_empty_state_file_is_an_error_not_a_new_store(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    path.touch()
    with pytest.raises(mailsync.StateError) as info:
        SQLiteStateStore(path)
    assert str(path) in str(info.value)
    assert "Delete it" in str(info.value)
    assert info.value.store == str(path)
    assert path.stat().st_size == 0  # left as it was


def test_a_file_that_is_not_a_state_store_is_an_error(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"this is not SQLite at all\n" * 100)
    with pytest.raises(mailsync.StateError, match="Move it aside"):
        SQLiteStateStore(garbage)
    other_app = tmp_path / "other.sqlite3"
    db = sqlite3.connect(other_app)
    db.execute("CREATE TABLE contacts (name TEXT)")
    db.commit()
    db.close()
    with pytest.raises(mailsync.StateError, match="contacts"):
        SQLiteStateStore(other_app)


def _corrupt_cursor(path: Path, text: str) -> None:
    db = sqlite3.connect(path)
    db.execute("UPDATE cursors SET cursor = ?", (text,))
    db.commit()
    db.close()


@pytest.mark.parametrize(
    ("text", "what"), [("{not json", "not JSON"), ("[1, 2]", "list"), ('"x"', "str")]
)
def test_a_damaged_cursor_is_an_error_that_says_how_to_reset_it(
    tmp_path: Path, maildir: Path, text: str, what: str
) -> None:
    _seed(maildir, range(2))
    path = tmp_path / "state.sqlite3"
    with mailsync.connect(f"maildir:{maildir}", state=path) as box:
        assert len(list(box.sync())) == 2
        key = box.account_key
    _corrupt_cursor(path, text)
    store = SQLiteStateStore(path)
    for attempt in (
        lambda: store.load_cursor(key, "INBOX"),
        lambda: store.try_lease(key, "INBOX"),
    ):
        with pytest.raises(mailsync.StateError) as info:
            attempt()
        assert what in str(info.value)
        assert str(path) in str(info.value)
        assert f".reset({key!r}, 'INBOX')" in str(info.value)
    with mailsync.connect(f"maildir:{maildir}", state=store) as box:
        with pytest.raises(mailsync.StateError):
            list(box.sync())
        store.reset(key, "INBOX")  # what the message says to do: it works
        assert [m.subject for m in box.sync()] == ["Message 0", "Message 1"]


def test_a_damaged_item_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    store = SQLiteStateStore(path)
    store.set_item("ns", "k", {"a": 1})
    db = sqlite3.connect(path)
    db.execute("UPDATE items SET value = '[1]'")
    db.commit()
    db.close()
    for attempt in (
        lambda: store.get_item("ns", "k"),
        lambda: list(store.items("ns")),
        lambda: store.update_item("ns", "k", lambda current: current),
    ):
        with pytest.raises(mailsync.StateError, match=r"delete_item\('ns', 'k'\)"):
            attempt()


def test_a_store_written_before_leases_opens_and_works(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE cursors (account TEXT NOT NULL, folder TEXT NOT NULL,
            cursor TEXT NOT NULL, updated REAL NOT NULL, PRIMARY KEY (account, folder));
        CREATE TABLE delivered (account TEXT NOT NULL, folder TEXT NOT NULL,
            identity TEXT NOT NULL, PRIMARY KEY (account, folder, identity)) WITHOUT ROWID;
        CREATE TABLE items (namespace TEXT NOT NULL, key TEXT NOT NULL,
            value TEXT NOT NULL, PRIMARY KEY (namespace, key)) WITHOUT ROWID;
        """
    )
    db.execute("INSERT INTO cursors VALUES ('a', 'INBOX', ?, 0)", (json.dumps({"uid": 3}),))
    db.commit()
    db.close()
    store = SQLiteStateStore(path)
    lease = store.try_lease("a", "INBOX")
    assert lease is not None
    assert lease.cursor == {"uid": 3}
    lease.save({"uid": 4})
    assert store.load_cursor("a", "INBOX") == {"uid": 4}


def _open_store(path: str, go: object) -> None:
    go.wait(60)  # type: ignore[attr-defined]
    store = SQLiteStateStore(path)
    store.save_cursor("a", f"f{os.getpid()}", {"n": 1})
    store.close()


def test_processes_creating_one_store_at_once_all_succeed(tmp_path: Path) -> None:
    """A new store is built aside and linked into place: no opener sees it half-made (an
    empty file would now be an error)."""
    path = str(tmp_path / "new" / "state.sqlite3")
    go = _SPAWN.Event()
    procs = [_SPAWN.Process(target=_open_store, args=(path, go)) for _ in range(4)]
    for proc in procs:
        proc.start()
    go.set()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    assert not [p for p in Path(path).parent.iterdir() if p.name.endswith(".new")]


def test_a_forked_child_does_not_keep_the_parents_lease(tmp_path: Path) -> None:
    store = SQLiteStateStore(tmp_path / "state.sqlite3")
    lease = store.try_lease("a", "INBOX")
    assert lease is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads around
        pid = os.fork()
    if pid == 0:  # the child: it may not take the parent's lease, and holds nothing
        code = 0 if store.try_lease("a", "INBOX") is None else 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    lease.release()
    again = store.try_lease("a", "INBOX")  # the child's exit did not leave it locked
    assert again is not None
    again.release()


class _SlowStore:
    """A SQLite store whose try_lease waits until the test lets it go on: a database slow to
    answer while the caller is cancelled."""

    def __init__(self, path: Path) -> None:
        self.inner = SQLiteStateStore(path)
        self.asked = threading.Event()
        self.go_on = threading.Event()

    def try_lease(self, account: str, folder: str) -> object:
        self.asked.set()
        self.go_on.wait(10)
        return self.inner.try_lease(account, folder)


def test_a_lease_taken_while_its_caller_was_cancelled_is_given_back(tmp_path: Path) -> None:
    # A watcher giving an account away cancels that account's sync while the store is being
    # asked for the lease; the attempt still takes it. Before the fix nobody gave it back, and
    # every later sync of that account in the process was SyncBusy for good.
    from mailsync._state import SyncLease

    store = _SlowStore(tmp_path / "state.db")

    async def run() -> None:
        lease = SyncLease(store, "acct", "INBOX", wait=False)  # type: ignore[arg-type]
        task = asyncio.ensure_future(lease.acquire_async())
        await asyncio.to_thread(store.asked.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        store.go_on.set()  # the attempt goes on and takes the lease
        again = SyncLease(store.inner, "acct", "INBOX", wait=2.0)
        assert await again.acquire_async()  # given back: free again within the wait
        await again.release_async()

    asyncio.run(run())
