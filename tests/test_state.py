"""The SQLite state store where it differs from the others (the shared contract is in
tests/test_state_contract.py): its file, ``state=`` arguments, custom stores."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

import mailsync
from mailsync._state import CursorLease, open_state_store
from mailsync._state_sqlite import SQLiteStateStore


def test_file_store_creates_parents_and_persists(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "state.sqlite3"
    store = SQLiteStateStore(path)
    store.save_cursor("a", "INBOX", {"n": 1}, ["x"])
    store.close()
    again = SQLiteStateStore(path)
    assert again.load_cursor("a", "INBOX") == {"n": 1}
    assert again.known("a", "INBOX", ["x"]) == {"x"}
    again.close()


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

    class Incomplete:  # a StateStore written before the sync lease existed
        def load_cursor(self, account: str, folder: str) -> None:
            return None

        def save_cursor(self, *args: object) -> None:
            pass

    with pytest.raises(mailsync.ConfigError, match="lacks known, reset, try_lease"):
        open_state_store(Incomplete())  # type: ignore[arg-type]


def test_custom_store_is_used_by_sync(tmp_path: Path) -> None:
    saved: list[str] = []

    class RecordingLease:
        def __init__(self, inner: CursorLease) -> None:
            self.inner = inner
            self.cursor = inner.cursor

        def save(self, cursor: Mapping[str, Any], delivered: Iterable[str] = ()) -> None:
            delivered = list(delivered)
            saved.extend(delivered)
            self.inner.save(cursor, delivered)

        def release(self) -> None:
            self.inner.release()

    class Recording(SQLiteStateStore):
        def try_lease(self, account: str, folder: str) -> CursorLease | None:
            lease = super().try_lease(account, folder)
            return RecordingLease(lease) if lease is not None else None

    store = Recording(":memory:")
    with mailsync.sender(f"maildir:{tmp_path}") as out:
        out.send(mailsync.compose(from_="a@example.test", to="b@example.test", subject="s"))
    with mailsync.connect(f"maildir:{tmp_path}", state=store) as box:
        assert len(list(box.sync())) == 1
    assert len(saved) == 1


def test_no_state_file_until_sync_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILSYNC_DATA_DIR", str(tmp_path / "data"))
    with mailsync.connect(f"maildir:{tmp_path / 'md'}", create=True) as box:
        assert [f.name for f in box.folders()] == ["INBOX"]
    assert not (tmp_path / "data").exists()


def test_retrievers_naming_one_file_share_one_store(tmp_path: Path) -> None:
    """A fleet of retrievers on one state file holds one connection, not one each."""
    path = tmp_path / "state.sqlite3"
    boxes = [mailsync.connect(f"maildir:{tmp_path / f'm{i}'}", state=path) for i in range(3)]
    assert boxes[0].state is boxes[1].state is boxes[2].state
    other = mailsync.connect(f"maildir:{tmp_path / 'x'}", state=str(path))
    assert other.state is boxes[0].state
    memory = [mailsync.connect(f"maildir:{tmp_path / 'y'}", state=":memory:") for _ in range(2)]
    assert memory[0].state is not memory[1].state  # each its own, as before
    boxes[0].state.close()
    again = mailsync.connect(f"maildir:{tmp_path / 'z'}", state=path)
    assert again.state is not boxes[0].state  # a closed store is not handed out
    assert again.state.load_cursor("a", "INBOX") is None
