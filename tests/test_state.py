"""The SQLite state store: cursors, delivered identities, items, several processes."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import mailsync
from mailsync._state import SQLiteStateStore, open_state_store


def test_cursor_round_trip_and_known() -> None:
    store = SQLiteStateStore(":memory:")
    assert store.load_cursor("acct", "INBOX") is None
    store.save_cursor("acct", "INBOX", {"uidvalidity": 7, "uid": 42}, ["mid:a", "mid:b"])
    assert store.load_cursor("acct", "INBOX") == {"uidvalidity": 7, "uid": 42}
    assert store.known("acct", "INBOX", ["mid:a", "mid:c"]) == {"mid:a"}
    assert store.known("acct", "Other", ["mid:a"]) == set()
    assert store.known("other", "INBOX", ["mid:a"]) == set()


def test_known_handles_more_than_sqlite_parameter_limit() -> None:
    store = SQLiteStateStore(":memory:")
    ids = [f"id{i}" for i in range(2500)]
    store.save_cursor("a", "f", {}, ids[::2])
    assert store.known("a", "f", ids) == set(ids[::2])


def test_reset() -> None:
    store = SQLiteStateStore(":memory:")
    store.save_cursor("a", "INBOX", {"x": 1}, ["i"])
    store.save_cursor("a", "Sent", {"x": 2}, ["j"])
    store.reset("a", "INBOX")
    assert store.load_cursor("a", "INBOX") is None
    assert store.load_cursor("a", "Sent") == {"x": 2}
    store.reset("a")
    assert store.load_cursor("a", "Sent") is None
    assert store.known("a", "Sent", ["j"]) == set()


def test_items() -> None:
    store = SQLiteStateStore(":memory:")
    store.set_item("ns", "k1", {"a": 1})
    store.set_item("ns", "k2", {"b": [1, 2]})
    store.set_item("other", "k1", {"c": 3})
    assert store.get_item("ns", "k1") == {"a": 1}
    assert list(store.items("ns")) == [("k1", {"a": 1}), ("k2", {"b": [1, 2]})]
    store.delete_item("ns", "k1")
    assert store.get_item("ns", "k1") is None


def test_file_store_creates_parents_and_persists(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "state.sqlite3"
    store = SQLiteStateStore(path)
    store.save_cursor("a", "INBOX", {"n": 1}, ["x"])
    store.close()
    again = SQLiteStateStore(path)
    assert again.load_cursor("a", "INBOX") == {"n": 1}
    assert again.known("a", "INBOX", ["x"]) == {"x"}
    again.close()


def _writer(path: str, worker: int) -> None:
    store = SQLiteStateStore(path)
    for i in range(200):
        store.save_cursor("acct", f"f{worker}", {"i": i}, [f"w{worker}-{i}"])
    store.close()


def _run_processes(jobs: list[tuple[Callable[..., None], tuple[Any, ...]]], path: str) -> None:
    """Run each ``(target, args)`` in its own spawned process at once over the store at
    ``path`` (created first), and check they all ended well."""
    SQLiteStateStore(path).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=target, args=args) for target, args in jobs]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0


def test_several_processes_share_one_file(tmp_path: Path) -> None:
    path = str(tmp_path / "state.sqlite3")
    _run_processes([(_writer, (path, w)) for w in range(3)], path)
    store = SQLiteStateStore(path)
    for worker in range(3):
        assert store.load_cursor("acct", f"f{worker}") == {"i": 199}
        wanted = [f"w{worker}-{i}" for i in range(200)]
        assert store.known("acct", f"f{worker}", wanted) == set(wanted)
    store.close()


def test_update_item_reads_changes_and_writes() -> None:
    store = SQLiteStateStore(":memory:")
    assert store.update_item("ns", "k", lambda current: None) is None  # absent, nothing written
    assert store.get_item("ns", "k") is None
    assert store.update_item("ns", "k", lambda current: {"n": 1, "when": Path("x")}) == {
        "n": 1,
        "when": "x",  # stored as JSON, as set_item stores it
    }
    assert store.update_item("ns", "k", lambda current: None) == {"n": 1, "when": "x"}
    store.update_item("ns", "k", lambda current: {**(current or {}), "n": 2})
    assert store.get_item("ns", "k") == {"n": 2, "when": "x"}


def test_update_item_rolls_back_when_the_update_raises() -> None:
    store = SQLiteStateStore(":memory:")
    store.set_item("ns", "k", {"n": 1})

    def broken(current: dict[str, object] | None) -> dict[str, object]:
        raise KeyError("boom")

    with pytest.raises(KeyError):
        store.update_item("ns", "k", broken)
    assert store.get_item("ns", "k") == {"n": 1}
    store.set_item("ns", "k", {"n": 3})  # the store is usable afterwards
    assert store.get_item("ns", "k") == {"n": 3}


def _increment(current: dict[str, int] | None) -> dict[str, int]:
    return {"n": (current or {"n": 0})["n"] + 1}


def _incrementer(path: str) -> None:
    store = SQLiteStateStore(path)
    for _ in range(100):
        store.update_item("ns", "counter", _increment)
    store.close()


def test_update_item_loses_no_update_across_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "state.sqlite3")
    _run_processes([(_incrementer, (path,)) for _ in range(3)], path)
    store = SQLiteStateStore(path)
    assert store.get_item("ns", "counter") == {"n": 300}
    store.close()


def test_open_state_store_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILSYNC_DATA_DIR", str(tmp_path / "data"))
    default = open_state_store(None)
    assert isinstance(default, SQLiteStateStore)
    assert Path(default.path) == tmp_path / "data" / "state.sqlite3"
    mine = SQLiteStateStore(":memory:")
    assert open_state_store(mine) is mine
    assert isinstance(open_state_store(":memory:"), SQLiteStateStore)
    with pytest.raises(mailsync.ConfigError):
        open_state_store(42)  # type: ignore[arg-type]


def test_custom_store_is_used_by_sync(tmp_path: Path) -> None:
    class Recording(SQLiteStateStore):
        saved: list[str] = []

        def save_cursor(self, account, folder, cursor, delivered=()):  # type: ignore[no-untyped-def]
            delivered = list(delivered)
            self.saved.extend(delivered)
            super().save_cursor(account, folder, cursor, delivered)

    store = Recording(":memory:")
    with mailsync.sender(f"maildir:{tmp_path}") as out:
        out.send(mailsync.compose(from_="a@example.test", to="b@example.test", subject="s"))
    with mailsync.connect(f"maildir:{tmp_path}", state=store) as box:
        assert len(list(box.sync())) == 1
    assert len(store.saved) == 1


def test_no_state_file_until_sync_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILSYNC_DATA_DIR", str(tmp_path / "data"))
    with mailsync.connect(f"maildir:{tmp_path / 'md'}", create=True) as box:
        assert [f.name for f in box.folders()] == ["INBOX"]
    assert not (tmp_path / "data").exists()
