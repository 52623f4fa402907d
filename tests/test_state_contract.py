"""The StateStore contract, one abstract class run against every store: SQLite (a file) and
PostgreSQL (a real server from tests/databases.py).

Each concrete class only supplies ``spec`` (what ``state=`` takes to open the store, so a child
process can open it too) and ``corrupt_cursor`` (writes a damaged cursor with the database's
own client, as a broken tool or disk would).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import mailsync
from mailsync._state import open_state_store
from tests.servers import wait_for

_SPAWN = multiprocessing.get_context("spawn")


def _run_processes(jobs: list[tuple[Callable[..., None], tuple[Any, ...]]]) -> None:
    procs = [_SPAWN.Process(target=target, args=args) for target, args in jobs]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0


def _writer(spec: str, worker: int) -> None:
    store = open_state_store(spec)
    for i in range(100):
        store.save_cursor("acct", f"f{worker}", {"i": i}, [f"w{worker}-{i}"])
    store.close()


def _increment(current: dict[str, int] | None) -> dict[str, int]:
    return {"n": (current or {"n": 0})["n"] + 1}


def _incrementer(spec: str) -> None:
    store = open_state_store(spec)
    for _ in range(50):
        store.update_item("ns", "counter", _increment)  # type: ignore[attr-defined]
    store.close()


def _hold(spec: str, ready: str) -> None:
    store = open_state_store(spec)
    lease = store.try_lease("acct", "INBOX")
    assert lease is not None
    lease.save({"uid": 1})
    Path(ready).touch()
    time.sleep(600)


class StateStoreContract:
    """What every StateStore must do; subclasses supply the fixtures."""

    @pytest.fixture
    def spec(self) -> str:
        raise NotImplementedError

    @pytest.fixture
    def corrupt_cursor(self, spec: str) -> Callable[[str], None]:
        raise NotImplementedError

    @pytest.fixture
    def store(self, spec: str) -> Iterator[mailsync.StateStore]:
        store = open_state_store(spec)
        yield store
        store.close()

    def test_is_a_state_store(self, store: mailsync.StateStore) -> None:
        assert isinstance(store, mailsync.StateStore)
        assert "password" not in repr(store)

    def test_cursor_round_trip_and_known(self, store: mailsync.StateStore) -> None:
        assert store.load_cursor("acct", "INBOX") is None
        store.save_cursor("acct", "INBOX", {"uidvalidity": 7, "uid": 42}, ["mid:a", "mid:b"])
        assert store.load_cursor("acct", "INBOX") == {"uidvalidity": 7, "uid": 42}
        assert store.known("acct", "INBOX", ["mid:a", "mid:c"]) == {"mid:a"}
        assert store.known("acct", "Other", ["mid:a"]) == set()
        assert store.known("other", "INBOX", ["mid:a"]) == set()
        assert store.known("acct", "INBOX", []) == set()

    def test_known_takes_thousands_of_identities(self, store: mailsync.StateStore) -> None:
        ids = [f"id{i}" for i in range(2500)]
        store.save_cursor("a", "f", {}, ids[::2])
        assert store.known("a", "f", ids) == set(ids[::2])

    def test_reset(self, store: mailsync.StateStore) -> None:
        store.save_cursor("a", "INBOX", {"x": 1}, ["i"])
        store.save_cursor("a", "Sent", {"x": 2}, ["j"])
        store.reset("a", "INBOX")
        assert store.load_cursor("a", "INBOX") is None
        assert store.load_cursor("a", "Sent") == {"x": 2}
        store.reset("a")
        assert store.load_cursor("a", "Sent") is None
        assert store.known("a", "Sent", ["j"]) == set()

    def test_items(self, store: mailsync.StateStore) -> None:
        store.set_item("ns", "k1", {"a": 1})
        store.set_item("ns", "k2", {"b": [1, 2]})
        store.set_item("other", "k1", {"c": 3})
        store.set_item("ns", "k2", {"b": [3]})
        assert store.get_item("ns", "k1") == {"a": 1}
        assert list(store.items("ns")) == [("k1", {"a": 1}), ("k2", {"b": [3]})]
        store.delete_item("ns", "k1")
        assert store.get_item("ns", "k1") is None

    def test_update_item_reads_changes_writes_and_rolls_back(self, store: Any) -> None:
        assert store.update_item("ns", "k", lambda current: None) is None
        assert store.get_item("ns", "k") is None
        assert store.update_item("ns", "k", lambda c: {"n": 1, "when": Path("x")}) == {
            "n": 1,
            "when": "x",
        }
        store.update_item("ns", "k", lambda current: {**(current or {}), "n": 2})
        assert store.get_item("ns", "k") == {"n": 2, "when": "x"}

        def broken(current: dict[str, object] | None) -> dict[str, object]:
            raise KeyError("boom")

        with pytest.raises(KeyError):
            store.update_item("ns", "k", broken)
        assert store.get_item("ns", "k") == {"n": 2, "when": "x"}

    def test_update_item_loses_no_update_across_processes(self, spec: str, store: Any) -> None:
        _run_processes([(_incrementer, (spec,)) for _ in range(3)])
        assert store.get_item("ns", "counter") == {"n": 150}

    @pytest.mark.reliability(
        area="Sync state",
        fault="several processes use one state store at once",
        outcome="every write lands; none is lost",
    )
    def test_several_processes_write_at_once(self, spec: str, store: Any) -> None:
        _run_processes([(_writer, (spec, w)) for w in range(3)])
        for worker in range(3):
            assert store.load_cursor("acct", f"f{worker}") == {"i": 99}
            wanted = [f"w{worker}-{i}" for i in range(100)]
            assert store.known("acct", f"f{worker}", wanted) == set(wanted)

    # -- the sync lease ------------------------------------------------------------------------

    def test_lease_is_exclusive_per_account_and_folder(
        self, spec: str, store: mailsync.StateStore
    ) -> None:
        other_store = open_state_store(spec)  # another connection, as another worker has
        try:
            lease = store.try_lease("acct", "INBOX")
            assert lease is not None
            assert lease.cursor is None
            assert store.try_lease("acct", "INBOX") is None
            assert other_store.try_lease("acct", "INBOX") is None
            elsewhere = other_store.try_lease("acct", "Sent")
            assert elsewhere is not None
            lease.release()
            again = other_store.try_lease("acct", "INBOX")
            assert again is not None
            again.release()
            elsewhere.release()
        finally:
            other_store.close()

    def test_lease_saves_compare_and_set(self, store: mailsync.StateStore) -> None:
        lease = store.try_lease("acct", "INBOX")
        assert lease is not None
        lease.save({"uid": 5}, ["mid:a"])
        lease.save({"uidvalidity": 2, "uid": 1})  # "smaller": the backend's business
        assert lease.cursor == {"uidvalidity": 2, "uid": 1}
        assert store.load_cursor("acct", "INBOX") == {"uidvalidity": 2, "uid": 1}
        assert store.known("acct", "INBOX", ["mid:a"]) == {"mid:a"}
        store.save_cursor("acct", "INBOX", {"uid": 99})  # someone else saves meanwhile
        with pytest.raises(mailsync.LeaseLost):
            lease.save({"uid": 6}, ["mid:b"])
        assert store.load_cursor("acct", "INBOX") == {"uid": 99}
        assert store.known("acct", "INBOX", ["mid:b"]) == set()
        lease.release()
        fresh = store.try_lease("acct", "INBOX")
        assert fresh is not None
        assert fresh.cursor == {"uid": 99}
        store.reset("acct", "INBOX")
        with pytest.raises(mailsync.LeaseLost):
            fresh.save({"uid": 100})
        assert store.load_cursor("acct", "INBOX") is None
        fresh.release()
        fresh.release()
        with pytest.raises(mailsync.LeaseLost):
            fresh.save({"uid": 101})  # a released lease saves nothing

    def test_first_save_under_a_lease_refuses_a_cursor_that_appeared(
        self, store: mailsync.StateStore
    ) -> None:
        lease = store.try_lease("acct", "INBOX")
        assert lease is not None
        store.save_cursor("acct", "INBOX", {"uid": 7})
        with pytest.raises(mailsync.LeaseLost):
            lease.save({"uid": 1})
        assert store.load_cursor("acct", "INBOX") == {"uid": 7}
        lease.release()

    def test_a_killed_holder_loses_its_lease(
        self, spec: str, store: mailsync.StateStore, tmp_path: Path
    ) -> None:
        ready = tmp_path / "ready"
        proc = _SPAWN.Process(target=_hold, args=(spec, str(ready)))
        proc.start()
        try:
            wait_for(ready.exists, timeout=60, message="the child holds the lease")
            assert store.try_lease("acct", "INBOX") is None
            os.kill(proc.pid, signal.SIGKILL)
            proc.join(30)
            lease = wait_for(
                lambda: store.try_lease("acct", "INBOX"),
                timeout=30,
                message="the lease is free after its holder was killed",
            )
            assert lease.cursor == {"uid": 1}
            lease.release()
        finally:
            if proc.is_alive():
                proc.kill()
            proc.join(30)

    def test_copy_folder_state_to_a_new_account_key(self, store: Any) -> None:
        store.save_cursor("old-key", "INBOX", {"uid": 4}, ["mid:a"])
        store.save_cursor("new-key", "Sent", {"uid": 1})
        store.copy_folder_state("old-key", "new-key", "INBOX")
        assert store.load_cursor("new-key", "INBOX") == {"uid": 4}
        assert store.known("new-key", "INBOX", ["mid:a"]) == {"mid:a"}
        lease = store.try_lease("new-key", "INBOX")  # the copy is a save like any other
        assert lease is not None
        lease.save({"uid": 5})
        store.copy_folder_state("old-key", "new-key", "INBOX")  # keeps what is there
        assert store.load_cursor("new-key", "INBOX") == {"uid": 5}
        lease.release()

    # -- damage --------------------------------------------------------------------------------

    @pytest.mark.parametrize("text", ["{not json", "[1, 2]", "17"])
    def test_a_damaged_cursor_is_a_state_error(
        self, store: mailsync.StateStore, corrupt_cursor: Callable[[str], None], text: str
    ) -> None:
        store.save_cursor("acct", "INBOX", {"uid": 1})
        corrupt_cursor(text)
        for attempt in (
            lambda: store.load_cursor("acct", "INBOX"),
            lambda: store.try_lease("acct", "INBOX"),
        ):
            with pytest.raises(mailsync.StateError, match=r"reset\('acct', 'INBOX'\)"):
                attempt()
        store.reset("acct", "INBOX")
        lease = store.try_lease("acct", "INBOX")  # the failed attempt left it free
        assert lease is not None
        lease.release()


class TestSQLiteStateStore(StateStoreContract):
    @pytest.fixture
    def spec(self, tmp_path: Path) -> str:
        return str(tmp_path / "state.sqlite3")

    @pytest.fixture
    def corrupt_cursor(self, spec: str) -> Callable[[str], None]:
        def corrupt(text: str) -> None:
            with sqlite3.connect(spec) as db:
                db.execute("UPDATE cursors SET cursor = ?", (text,))
            db.close()

        return corrupt


class TestPostgresStateStore(StateStoreContract):
    @pytest.fixture
    def spec(self, postgres_url: str) -> str:
        return postgres_url

    @pytest.fixture
    def corrupt_cursor(self, spec: str) -> Callable[[str], None]:
        import psycopg

        def corrupt(text: str) -> None:
            with psycopg.connect(spec, autocommit=True) as conn:
                conn.execute("UPDATE mailsync_cursors SET cursor = %s", (text,))

        return corrupt

    def test_state_url_opens_a_postgres_store(self, spec: str, tmp_path: Path) -> None:
        root = tmp_path / "Maildir"
        for sub in ("tmp", "new", "cur"):
            (root / sub).mkdir(parents=True)
        with mailsync.connect(f"maildir:{root}", state=spec) as box:
            assert isinstance(box.state, mailsync.PostgresStateStore)
            assert list(box.sync()) == []

    def test_password_is_never_shown(self, spec: str) -> None:
        url = spec.replace("postgres@", "postgres:s3cret-pw@")
        store = mailsync.PostgresStateStore(url)  # trust auth ignores the password
        assert "s3cret-pw" not in repr(store)
        assert "s3cret-pw" not in store.display
        store.close()
        broken = url.rsplit(":", 1)[0] + ":1/none"  # nothing listens on port 1
        with pytest.raises(mailsync.StateError) as info:
            mailsync.PostgresStateStore(broken)
        assert "s3cret-pw" not in str(info.value)
