"""Where sync cursors live: the :class:`StateStore` protocol and its SQLite implementation.

A cursor is a small JSON object a backend defines (IMAP: UIDVALIDITY + last UID + MODSEQ;
POP3: nothing, its UIDLs are the identities; Gmail: a historyId). Beside it the store keeps the
*identities* of the messages already delivered by ``sync()`` for that account and folder, so
that when a server invalidates a cursor (UIDVALIDITY changed, history expired) the resync can
skip what was delivered before. Cursor and identities are saved in one transaction.

There is also a small namespaced key/value area (JSON objects) for other features that need
to remember things, such as the delivery tracker. :meth:`SQLiteStateStore.update_item` changes
one such object in a single transaction, so processes updating the same object never lose each
other's changes.

The SQLite store uses WAL and a busy timeout so several processes can share one file. This
module must not import any backend.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from mailsync._errors import ConfigError, MailsyncError

__all__ = ["SQLiteStateStore", "StateStore", "default_data_dir", "open_state_store"]


@runtime_checkable
class StateStore(Protocol):
    """What mailsync needs from a place to keep sync state. Implement it to keep state in
    your own database; :class:`SQLiteStateStore` is the default.

    Optional: ``copy_folder_state(from_account, to_account, folder)``, which copies a folder's
    cursor and delivered set to another account key in one transaction. mailsync calls it
    when it takes over a cursor saved under an older account key; without it only the cursor
    is copied, and a resync may then yield again what was delivered before the upgrade.
    """

    def load_cursor(self, account: str, folder: str) -> dict[str, Any] | None:
        """The saved cursor of ``account``/``folder``, or None."""
        ...

    def save_cursor(
        self, account: str, folder: str, cursor: Mapping[str, Any], delivered: Iterable[str] = ()
    ) -> None:
        """Save the cursor and add identities to the delivered set, atomically."""
        ...

    def known(self, account: str, folder: str, identities: Iterable[str]) -> set[str]:
        """Which of ``identities`` were delivered before for ``account``/``folder``."""
        ...

    def reset(self, account: str, folder: str | None = None) -> None:
        """Forget the cursor and delivered set of one folder, or of every folder."""
        ...

    def get_item(self, namespace: str, key: str) -> dict[str, Any] | None:
        """A stored JSON object, or None."""
        ...

    def set_item(self, namespace: str, key: str, value: Mapping[str, Any]) -> None:
        """Store a JSON object under ``namespace``/``key``, replacing any earlier one."""
        ...

    def delete_item(self, namespace: str, key: str) -> None:
        """Remove a stored object if present."""
        ...

    def items(self, namespace: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every ``(key, value)`` in a namespace."""
        ...

    def close(self) -> None:
        """Release the store's resources."""
        ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS cursors (
    account TEXT NOT NULL,
    folder  TEXT NOT NULL,
    cursor  TEXT NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (account, folder)
);
CREATE TABLE IF NOT EXISTS delivered (
    account  TEXT NOT NULL,
    folder   TEXT NOT NULL,
    identity TEXT NOT NULL,
    PRIMARY KEY (account, folder, identity)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS items (
    namespace TEXT NOT NULL,
    key       TEXT NOT NULL,
    value     TEXT NOT NULL,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID;
"""


class SQLiteStateStore:
    """The default :class:`StateStore`: one SQLite file (or ``":memory:"``).

    Safe to share between threads (one connection behind a lock) and between processes (WAL
    journal, busy timeout).

    Args:
        path: A file path (missing parent directories are created) or ``":memory:"``.
    """

    def __init__(self, path: str | os.PathLike[str] = ":memory:") -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            self.path = str(Path(self.path).expanduser())
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            if self.path != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable against application crashes under WAL; only power loss can
            # drop the last commits, and a resync then dedupes them by identity.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open the state store {self.path!r}: {exc}") from exc

    def __repr__(self) -> str:
        return f"SQLiteStateStore({self.path!r})"

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: BEGIN IMMEDIATE takes the database's write lock before the
        first read, so a read-modify-write inside it cannot interleave with another
        process's; committed on success, rolled back on any exception."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise MailsyncError(f"the state store {self.path!r} failed: {exc}") from exc

    def _write(self, statements: Iterable[tuple[str, tuple[Any, ...]]]) -> None:
        with self._transaction() as db:
            for sql, args in statements:
                db.execute(sql, args)

    def _read(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise MailsyncError(f"the state store {self.path!r} failed: {exc}") from exc

    def load_cursor(self, account: str, folder: str) -> dict[str, Any] | None:
        """The saved cursor of ``account``/``folder``, or None."""
        rows = self._read(
            "SELECT cursor FROM cursors WHERE account = ? AND folder = ?", (account, folder)
        )
        return json.loads(rows[0][0]) if rows else None

    def save_cursor(
        self, account: str, folder: str, cursor: Mapping[str, Any], delivered: Iterable[str] = ()
    ) -> None:
        """Save the cursor and add identities to the delivered set, atomically."""
        statements: list[tuple[str, tuple[Any, ...]]] = [
            (
                "INSERT OR REPLACE INTO cursors VALUES (?, ?, ?, ?)",
                (account, folder, json.dumps(dict(cursor), sort_keys=True), time.time()),
            )
        ]
        statements += [
            ("INSERT OR IGNORE INTO delivered VALUES (?, ?, ?)", (account, folder, identity))
            for identity in delivered
        ]
        self._write(statements)

    def known(self, account: str, folder: str, identities: Iterable[str]) -> set[str]:
        """Which of ``identities`` were delivered before for ``account``/``folder``."""
        wanted = list(dict.fromkeys(identities))
        found: set[str] = set()
        for start in range(0, len(wanted), 500):  # SQLite caps bound parameters per statement
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._read(
                "SELECT identity FROM delivered WHERE account = ? AND folder = ? "
                f"AND identity IN ({marks})",  # only placeholders are interpolated
                (account, folder, *chunk),
            )
            found.update(row[0] for row in rows)
        return found

    def reset(self, account: str, folder: str | None = None) -> None:
        """Forget the cursor and delivered set of one folder, or of every folder."""
        where, args = "account = ?", tuple[str, ...]((account,))
        if folder is not None:
            where, args = "account = ? AND folder = ?", (account, folder)
        self._write(
            [
                (f"DELETE FROM cursors WHERE {where}", args),
                (f"DELETE FROM delivered WHERE {where}", args),
            ]
        )

    def copy_folder_state(self, from_account: str, to_account: str, folder: str) -> None:
        """Copy a folder's cursor and delivered set to another account key, in one
        transaction; what ``to_account`` has already is kept."""
        args = (to_account, from_account, folder)
        where = "FROM {} WHERE account = ? AND folder = ?"
        self._write(
            [
                (
                    "INSERT OR IGNORE INTO cursors SELECT ?, folder, cursor, updated "
                    + where.format("cursors"),
                    args,
                ),
                (
                    "INSERT OR IGNORE INTO delivered SELECT ?, folder, identity "
                    + where.format("delivered"),
                    args,
                ),
            ]
        )

    def get_item(self, namespace: str, key: str) -> dict[str, Any] | None:
        """A stored JSON object, or None."""
        rows = self._read(
            "SELECT value FROM items WHERE namespace = ? AND key = ?", (namespace, key)
        )
        return json.loads(rows[0][0]) if rows else None

    def set_item(self, namespace: str, key: str, value: Mapping[str, Any]) -> None:
        """Store a JSON object under ``namespace``/``key``, replacing any earlier one."""
        data = json.dumps(dict(value), sort_keys=True, default=str)
        self._write([("INSERT OR REPLACE INTO items VALUES (?, ?, ?)", (namespace, key, data))])

    def delete_item(self, namespace: str, key: str) -> None:
        """Remove a stored object if present."""
        self._write([("DELETE FROM items WHERE namespace = ? AND key = ?", (namespace, key))])

    def update_item(
        self,
        namespace: str,
        key: str,
        update: Callable[[dict[str, Any] | None], Mapping[str, Any] | None],
    ) -> dict[str, Any] | None:
        """Read, change and write one stored object in a single transaction.

        Other processes and threads sharing the store wait while ``update`` runs, so none of
        their changes to the same object is lost (``get_item`` then ``set_item`` can lose
        one). Keep ``update`` quick and free of I/O, and do not use the store inside it.

        Args:
            namespace: The object's namespace.
            key: The object's key.
            update: Called with the stored object (None when there is none); returns the
                object to store, or None to leave the store as it was. An exception it raises
                rolls the transaction back and propagates.

        Returns:
            The object as stored after the call (None when there is none).
        """
        select = "SELECT value FROM items WHERE namespace = ? AND key = ?"
        with self._transaction() as db:
            rows = db.execute(select, (namespace, key)).fetchall()
            current = json.loads(rows[0][0]) if rows else None
            value = update(current)
            if value is None:
                return current
            data = json.dumps(dict(value), sort_keys=True, default=str)
            db.execute("INSERT OR REPLACE INTO items VALUES (?, ?, ?)", (namespace, key, data))
        stored: dict[str, Any] = json.loads(data)  # what get_item would now give
        return stored

    def items(self, namespace: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every ``(key, value)`` in a namespace, in key order."""
        rows = self._read(
            "SELECT key, value FROM items WHERE namespace = ? ORDER BY key", (namespace,)
        )
        for key, value in rows:
            yield key, json.loads(value)

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()


def default_data_dir() -> Path:
    """mailsync's per-user data directory (``$MAILSYNC_DATA_DIR`` overrides it)."""
    override = os.environ.get("MAILSYNC_DATA_DIR")
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("mailsync", appauthor=False))


def open_state_store(state: StateStore | str | os.PathLike[str] | None) -> StateStore:
    """What ``state=`` means: None is the default file, a path or ``":memory:"`` a SQLite
    store, and a :class:`StateStore` is used as it is."""
    if state is None:
        return SQLiteStateStore(default_data_dir() / "state.sqlite3")
    if isinstance(state, str | os.PathLike):
        return SQLiteStateStore(state)
    if isinstance(state, StateStore):
        return state
    raise ConfigError(f"state must be None, a path, ':memory:' or a StateStore, not {state!r}")
