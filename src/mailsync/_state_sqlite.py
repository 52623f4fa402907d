"""The default state store, :class:`SQLiteStateStore`: one SQLite file (or ``":memory:"``)
keeping the cursors, the delivered identities and the key/value items that
:mod:`mailsync._state` describes, with ``flock`` sync leases beside the file.

It uses WAL and a busy timeout so several processes on one machine can share one file, and
saves every cursor as a compare-and-set on the store-wide generation. This module imports no
backend.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mailsync._errors import ConfigError, StateError
from mailsync._state import CursorLease, _GenerationLease, decode_object, lease_lost, lock_key

__all__ = ["SQLiteStateStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cursors (
    account    TEXT NOT NULL,
    folder     TEXT NOT NULL,
    cursor     TEXT NOT NULL,
    updated    REAL NOT NULL,
    generation INTEGER NOT NULL DEFAULT 0,
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
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta VALUES ('generation', 0);
"""

_UPSERT_CURSOR = (
    "INSERT INTO cursors (account, folder, cursor, updated, generation) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (account, folder) DO UPDATE SET cursor = excluded.cursor, "
    "updated = excluded.updated, generation = excluded.generation"
)
_NEXT_GENERATION = "UPDATE meta SET value = value + 1 WHERE key = 'generation' RETURNING value"

#: Every SQLite store of this process, so a forked child can let go of the leases it
#: inherited (an flock belongs to the open file, which a fork shares with the parent).
_STORES: weakref.WeakSet[SQLiteStateStore] = weakref.WeakSet()


def _forget_leases_after_fork() -> None:
    for store in list(_STORES):
        store._drop_inherited_locks()


os.register_at_fork(after_in_child=_forget_leases_after_fork)


class SQLiteStateStore:
    """The default :class:`StateStore`: one SQLite file (or ``":memory:"``).

    Safe to share between threads (one connection behind a lock) and between processes on
    one machine (WAL journal, busy timeout; the file must be on a local file system). Sync
    leases are ``flock`` locks on small files in ``<path>-locks/``, which the kernel drops
    when their process dies; a ``":memory:"`` store's leases are this process's only.

    Args:
        path: A file path (missing parent directories are created) or ``":memory:"``.

    Raises:
        StateError: The file exists but is empty, damaged, or not a mailsync state store.
        ConfigError: The file cannot be opened or created (a directory, no permission).
    """

    def __init__(self, path: str | os.PathLike[str] = ":memory:") -> None:
        self.path = str(path)
        self._lock = threading.RLock()
        self._held: dict[bytes, int] = {}  # lease key -> lock file descriptor (-1: in memory)
        self._locks_dir: Path | None = None
        self._closed = False
        if self.path != ":memory:":
            file = Path(self.path).expanduser()
            self.path = str(file)
            self._locks_dir = Path(f"{file}-locks")
            self._ensure_file(file)
        try:
            self._db = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open the state store {self.path!r}: {exc}") from exc
        try:
            self._prepare(self._db)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise self._damaged(str(exc)) from exc
        _STORES.add(self)

    def __repr__(self) -> str:
        return f"SQLiteStateStore({self.path!r})"

    # -- opening ---------------------------------------------------------------------------

    def _damaged(self, what: str) -> StateError:
        return StateError(
            f"the state store {self.path} is damaged or is not a mailsync state store "
            f"({what}). Move it aside to start over (every folder is then synced from the "
            "beginning) or restore a backup",
            store=self.path,
            damaged=True,
        )

    def _ensure_file(self, file: Path) -> None:
        """Make a new store only where there is no file, and refuse an empty one."""
        try:
            size = file.stat().st_size
        except FileNotFoundError:
            self._create(file)
            return
        except OSError as exc:
            raise ConfigError(f"cannot open the state store {self.path!r}: {exc}") from exc
        if size == 0:
            raise StateError(
                f"the state store {self.path} is an empty file, not a new store: it was "
                "probably truncated. Delete it to start over (every folder is then synced "
                "from the beginning) or restore a backup",
                store=self.path,
                damaged=True,
            )

    def _create(self, file: Path) -> None:
        """Build the store aside and link it into place, so that two processes creating it
        at once, or one opening it meanwhile, never see a half-made file."""
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            temp = file.with_name(f".{file.name}.{secrets.token_hex(6)}.new")
            db = sqlite3.connect(str(temp), isolation_level=None)
            try:
                self._prepare(db)
            finally:
                db.close()
            try:
                os.link(temp, file)
            except FileExistsError:
                pass  # someone else made it first: theirs is as good
            finally:
                temp.unlink(missing_ok=True)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"cannot create the state store {self.path!r}: {exc}") from exc

    @staticmethod
    def _prepare(db: sqlite3.Connection) -> None:
        tables = {
            row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        if tables and "cursors" not in tables:
            raise sqlite3.DatabaseError(f"it holds other tables: {', '.join(sorted(tables))}")
        db.execute("PRAGMA journal_mode=WAL")
        # NORMAL is durable against application crashes under WAL; only power loss can
        # drop the last commits, and a resync then dedupes them by identity.
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        columns = {row[1] for row in db.execute("PRAGMA table_info(cursors)")}
        if "generation" not in columns:  # a store written before leases existed
            with contextlib.suppress(sqlite3.OperationalError):  # another process added it
                db.execute("ALTER TABLE cursors ADD COLUMN generation INTEGER NOT NULL DEFAULT 0")

    # -- plumbing --------------------------------------------------------------------------

    def _failed(self, exc: sqlite3.Error) -> StateError:
        if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
            return self._damaged(str(exc))
        return StateError(f"the state store {self.path} failed: {exc}", store=self.path)

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
                raise self._failed(exc) from exc

    def _write(self, statements: Iterable[tuple[str, tuple[Any, ...]]]) -> None:
        with self._transaction() as db:
            for sql, args in statements:
                db.execute(sql, args)

    def _read(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise self._failed(exc) from exc

    def _reset_hint(self, account: str, folder: str) -> str:
        return (
            f"reset that folder with SQLiteStateStore({self.path!r}).reset({account!r}, "
            f"{folder!r}) (it is then synced from the beginning, skipping what was delivered)"
        )

    def _decode_cursor(self, text: str, account: str, folder: str) -> dict[str, Any]:
        what = f"the saved cursor of {account} {folder!r}"
        return decode_object(text, what, self.path, self._reset_hint(account, folder))

    def _decode_item(self, text: str, namespace: str, key: str) -> dict[str, Any]:
        hint = f"remove it with SQLiteStateStore({self.path!r}).delete_item({namespace!r}, {key!r})"
        return decode_object(text, f"the stored item {namespace}/{key}", self.path, hint)

    # -- cursors ---------------------------------------------------------------------------

    def load_cursor(self, account: str, folder: str) -> dict[str, Any] | None:
        """The saved cursor of ``account``/``folder``, or None.

        Raises:
            StateError: The saved cursor is damaged (the message says how to reset it).
        """
        return self._load(account, folder)[0]

    def _load(self, account: str, folder: str) -> tuple[dict[str, Any] | None, int | None]:
        rows = self._read(
            "SELECT cursor, generation FROM cursors WHERE account = ? AND folder = ?",
            (account, folder),
        )
        if not rows:
            return None, None
        return self._decode_cursor(rows[0][0], account, folder), rows[0][1]

    def save_cursor(
        self, account: str, folder: str, cursor: Mapping[str, Any], delivered: Iterable[str] = ()
    ) -> None:
        """Save the cursor and add identities to the delivered set, atomically."""
        with self._transaction() as db:
            self._store_cursor(db, account, folder, cursor, delivered)

    def _store_cursor(
        self,
        db: sqlite3.Connection,
        account: str,
        folder: str,
        cursor: Mapping[str, Any],
        delivered: Iterable[str],
    ) -> int:
        generation = int(db.execute(_NEXT_GENERATION).fetchone()[0])
        data = json.dumps(dict(cursor), sort_keys=True)
        db.execute(_UPSERT_CURSOR, (account, folder, data, time.time(), generation))
        db.executemany(
            "INSERT OR IGNORE INTO delivered VALUES (?, ?, ?)",
            [(account, folder, identity) for identity in delivered],
        )
        return generation

    def _save_if(
        self,
        account: str,
        folder: str,
        expected: int | None,
        cursor: Mapping[str, Any],
        delivered: Iterable[str],
    ) -> int:
        with self._transaction() as db:
            row = db.execute(
                "SELECT generation FROM cursors WHERE account = ? AND folder = ?",
                (account, folder),
            ).fetchone()
            if (row[0] if row else None) != expected:
                raise lease_lost(self.path, account, folder)
            return self._store_cursor(db, account, folder, cursor, delivered)

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
        """Forget the cursor and delivered set of one folder, or of every folder.

        A run holding the folder's lease meanwhile gets :class:`~mailsync.LeaseLost` at its
        next save rather than write its old cursor back.
        """
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
                # The copy is a save like any other: it takes the next generation.
                ("UPDATE meta SET value = value + 1 WHERE key = 'generation'", ()),
                (
                    "INSERT OR IGNORE INTO cursors (account, folder, cursor, updated, generation) "
                    "SELECT ?, folder, cursor, updated, "
                    "(SELECT value FROM meta WHERE key = 'generation') " + where.format("cursors"),
                    args,
                ),
                (
                    "INSERT OR IGNORE INTO delivered SELECT ?, folder, identity "
                    + where.format("delivered"),
                    args,
                ),
            ]
        )

    # -- leases ----------------------------------------------------------------------------

    def try_lease(self, account: str, folder: str) -> CursorLease | None:
        """Take the sync lease of ``account``/``folder`` if free, else None.

        Raises:
            StateError: The saved cursor is damaged.
        """
        key = lock_key(account, folder)
        fd = self._lock_file(key)
        if fd is None:
            return None
        try:
            loaded = self._load(account, folder)
        except BaseException:
            self._unlock(key)
            raise
        return _GenerationLease(self, account, folder, loaded, lambda: self._unlock(key))

    def _lock_file(self, key: bytes) -> int | None:
        with self._lock:
            if key in self._held:  # held here: no need to ask the kernel
                return None
            fd: int | None = -1
            if self._locks_dir is not None:
                fd = self._flock(self._locks_dir / key.hex()[:32])
            if fd is None:
                return None
            self._held[key] = fd
            return fd

    def _flock(self, file: Path) -> int | None:
        try:
            file.parent.mkdir(exist_ok=True)
            fd = os.open(file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StateError(f"cannot make the lease file {file}: {exc}", store=self.path) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except OSError as exc:
            os.close(fd)
            raise StateError(f"cannot lock the lease file {file}: {exc}", store=self.path) from exc
        return fd

    def _unlock(self, key: bytes) -> None:
        with self._lock:
            fd = self._held.pop(key, None)
        if fd is not None and fd >= 0:
            os.close(fd)  # closing the only descriptor drops the flock

    def _drop_inherited_locks(self) -> None:
        """In a forked child: close the lock files inherited from the parent, whose leases
        stay the parent's, and forget them here."""
        for fd in self._held.values():
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._held.clear()
        self._lock = threading.RLock()  # it may have been held by another parent thread

    # -- items -----------------------------------------------------------------------------

    def get_item(self, namespace: str, key: str) -> dict[str, Any] | None:
        """A stored JSON object, or None."""
        rows = self._read(
            "SELECT value FROM items WHERE namespace = ? AND key = ?", (namespace, key)
        )
        return self._decode_item(rows[0][0], namespace, key) if rows else None

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
            current = self._decode_item(rows[0][0], namespace, key) if rows else None
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
            yield key, self._decode_item(value, namespace, key)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def close(self) -> None:
        """Close the database connection and give back any lease still held."""
        for key in list(self._held):
            self._unlock(key)
        with self._lock:
            self._closed = True
            self._db.close()
