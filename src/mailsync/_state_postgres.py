"""The PostgreSQL state store, :class:`PostgresStateStore`, for fleets of workers on many
machines (psycopg 3, the ``postgres`` extra; ``state="postgresql://..."`` opens one).

It keeps exactly what :class:`~mailsync.SQLiteStateStore` keeps, in four ``mailsync_*``
objects created on first use, and passes the same contract tests. Cursors are saved in one
transaction with their delivered identities, as a compare-and-set on a generation drawn from
one sequence (see :mod:`mailsync._state` for why that is what "never backwards" means). The sync
lease is a session-level advisory lock (``pg_try_advisory_lock``) taken on a connection of its
own: PostgreSQL releases it when that session ends, so a worker killed with SIGKILL frees its
mailboxes as soon as the server sees the connection close (at once for a killed process; after
TCP keepalive for a lost machine, which ``keepalives_idle`` in the URL tunes).

Two connections per store, each behind a lock: one for data, one holding advisory locks, so
a long sync never holds a data transaction open. A broken connection is opened again on the
next call; leases held on a lock connection that broke are gone, and the generation check then
refuses any save that would overwrite another worker's. This module imports psycopg and no
backend.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from mailsync._errors import ConfigError, StateError
from mailsync._state import CursorLease, _GenerationLease, decode_object, lease_lost, lock_key

try:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ConfigError(
        "PostgresStateStore needs psycopg 3: pip install 'mailsync[postgres]'"
    ) from exc

__all__ = ["PostgresStateStore"]

_SCHEMA = """
CREATE SEQUENCE IF NOT EXISTS mailsync_generation;
CREATE TABLE IF NOT EXISTS mailsync_cursors (
    account    TEXT NOT NULL,
    folder     TEXT NOT NULL,
    cursor     TEXT NOT NULL,
    updated    DOUBLE PRECISION NOT NULL,
    generation BIGINT NOT NULL,
    PRIMARY KEY (account, folder)
);
CREATE TABLE IF NOT EXISTS mailsync_delivered (
    account  TEXT NOT NULL,
    folder   TEXT NOT NULL,
    identity TEXT NOT NULL,
    PRIMARY KEY (account, folder, identity)
);
CREATE TABLE IF NOT EXISTS mailsync_items (
    namespace TEXT NOT NULL,
    key       TEXT NOT NULL,
    value     TEXT NOT NULL,
    PRIMARY KEY (namespace, key)
);
"""

#: The advisory lock (two int4 keys: a class and an object) that serialises creating the
#: schema, since concurrent CREATE ... IF NOT EXISTS can still collide in the catalogue.
_SCHEMA_LOCK = (0x6D61696C, 0)

_UPSERT_CURSOR = (
    "INSERT INTO mailsync_cursors (account, folder, cursor, updated, generation) "
    "VALUES (%s, %s, %s, %s, nextval('mailsync_generation')) "
    "ON CONFLICT (account, folder) DO UPDATE SET cursor = excluded.cursor, "
    "updated = excluded.updated, generation = excluded.generation RETURNING generation"
)

_INSERT_CURSOR = (
    "INSERT INTO mailsync_cursors (account, folder, cursor, updated, generation) "
    "VALUES (%s, %s, %s, %s, nextval('mailsync_generation')) "
    "ON CONFLICT (account, folder) DO NOTHING RETURNING generation"
)


def _advisory_key(account: str, folder: str) -> int:
    """The signed 64-bit advisory lock key of one account+folder's lease."""
    return int.from_bytes(lock_key(account, folder)[:8], "big", signed=True)


class _Session:
    """One psycopg connection, opened on first use and again after it broke; its users
    take :attr:`lock` around every use."""

    def __init__(self, conninfo: str, display: str, *, autocommit: bool) -> None:
        self._conninfo = conninfo
        self._display = display
        self._autocommit = autocommit
        self._conn: psycopg.Connection[Any] | None = None
        self.lock = threading.RLock()
        self.opened = 0  # how many times it was opened: a lease knows its own session

    def get(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            try:
                self._conn = psycopg.connect(
                    self._conninfo, autocommit=self._autocommit, connect_timeout=30
                )
            except psycopg.Error as exc:
                raise StateError(
                    f"cannot reach the state store {self._display}: {exc}", store=self._display
                ) from exc
            self.opened += 1
        return self._conn

    def close(self) -> None:
        with self.lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class PostgresStateStore:
    """A :class:`~mailsync.StateStore` in PostgreSQL, shared by processes on any number of
    machines. Safe to share between threads.

    Args:
        conninfo: A ``postgresql://user:password@host:port/dbname`` URL or a libpq
            connection string. The password never appears in ``repr`` or errors.

    Raises:
        StateError: The database cannot be reached or the schema cannot be created.
    """

    def __init__(self, conninfo: str) -> None:
        try:
            params = conninfo_to_dict(conninfo)
        except psycopg.Error as exc:
            raise ConfigError("the PostgreSQL connection string is not valid") from exc
        host = params.get("host") or "localhost"
        self.display = f"postgresql://{params.get('user') or ''}@{host}:" + (
            f"{params.get('port') or 5432}/{params.get('dbname') or ''}"
        )
        self._data = _Session(conninfo, self.display, autocommit=False)
        self._locks = _Session(conninfo, self.display, autocommit=True)
        self._held: dict[int, int] = {}  # advisory key -> the lock session's opening number
        self._held_lock = threading.Lock()
        with self._transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", _SCHEMA_LOCK)
            conn.execute(_SCHEMA)

    def __repr__(self) -> str:
        return f"PostgresStateStore({self.display!r})"

    # -- plumbing --------------------------------------------------------------------------

    def _failed(self, exc: psycopg.Error) -> StateError:
        return StateError(f"the state store {self.display} failed: {exc}", store=self.display)

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection[Any]]:
        with self._data.lock:
            conn = self._data.get()
            try:
                with conn.transaction():
                    yield conn
            except psycopg.Error as exc:
                raise self._failed(exc) from exc

    def _rows(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self._transaction() as conn:
            return conn.execute(sql, args).fetchall()

    def _reset_hint(self, account: str, folder: str) -> str:
        return (
            f"reset that folder with PostgresStateStore(...).reset({account!r}, {folder!r}) "
            "(it is then synced from the beginning, skipping what was delivered)"
        )

    def _decode_item(self, text: str, namespace: str, key: str) -> dict[str, Any]:
        hint = f"remove it with PostgresStateStore(...).delete_item({namespace!r}, {key!r})"
        return decode_object(text, f"the stored item {namespace}/{key}", self.display, hint)

    # -- cursors ---------------------------------------------------------------------------

    def load_cursor(self, account: str, folder: str) -> dict[str, Any] | None:
        """The saved cursor of ``account``/``folder``, or None.

        Raises:
            StateError: The saved cursor is damaged (the message says how to reset it).
        """
        return self._load(account, folder)[0]

    def _load(self, account: str, folder: str) -> tuple[dict[str, Any] | None, int | None]:
        rows = self._rows(
            "SELECT cursor, generation FROM mailsync_cursors WHERE account = %s AND folder = %s",
            (account, folder),
        )
        if not rows:
            return None, None
        what = f"the saved cursor of {account} {folder!r}"
        cursor = decode_object(rows[0][0], what, self.display, self._reset_hint(account, folder))
        return cursor, int(rows[0][1])

    def save_cursor(
        self, account: str, folder: str, cursor: Mapping[str, Any], delivered: Iterable[str] = ()
    ) -> None:
        """Save the cursor and add identities to the delivered set, in one transaction."""
        with self._transaction() as conn:
            self._store_cursor(conn, _UPSERT_CURSOR, account, folder, cursor, delivered)

    @staticmethod
    def _store_cursor(
        conn: psycopg.Connection[Any],
        sql: str,
        account: str,
        folder: str,
        cursor: Mapping[str, Any],
        delivered: Iterable[str],
    ) -> int | None:
        data = json.dumps(dict(cursor), sort_keys=True)
        row = conn.execute(sql, (account, folder, data, time.time())).fetchone()
        if row is None:
            return None
        identities = [(account, folder, identity) for identity in delivered]
        if identities:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO mailsync_delivered VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                    identities,
                )
        return int(row[0])

    def _save_if(
        self,
        account: str,
        folder: str,
        expected: int | None,
        cursor: Mapping[str, Any],
        delivered: Iterable[str],
    ) -> int:
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT generation FROM mailsync_cursors WHERE account = %s AND folder = %s "
                "FOR UPDATE",
                (account, folder),
            ).fetchone()
            if (int(row[0]) if row else None) != expected:
                raise lease_lost(self.display, account, folder)
            # With no row to lock, a concurrent first save could slip in: the upsert then
            # finds its row, and only an insert of our own may pass.
            sql = _UPSERT_CURSOR if row else _INSERT_CURSOR
            generation = self._store_cursor(conn, sql, account, folder, cursor, delivered)
            if generation is None:
                raise lease_lost(self.display, account, folder)
            return generation

    def known(self, account: str, folder: str, identities: Iterable[str]) -> set[str]:
        """Which of ``identities`` were delivered before for ``account``/``folder``."""
        wanted = list(dict.fromkeys(identities))
        if not wanted:
            return set()
        rows = self._rows(
            "SELECT identity FROM mailsync_delivered WHERE account = %s AND folder = %s "
            "AND identity = ANY(%s)",
            (account, folder, wanted),
        )
        return {row[0] for row in rows}

    def reset(self, account: str, folder: str | None = None) -> None:
        """Forget the cursor and delivered set of one folder, or of every folder.

        A run holding the folder's lease meanwhile gets :class:`~mailsync.LeaseLost` at its
        next save rather than write its old cursor back.
        """
        where, args = "account = %s", tuple[str, ...]((account,))
        if folder is not None:
            where, args = "account = %s AND folder = %s", (account, folder)
        with self._transaction() as conn:
            conn.execute(f"DELETE FROM mailsync_cursors WHERE {where}", args)  # noqa: S608
            conn.execute(f"DELETE FROM mailsync_delivered WHERE {where}", args)  # noqa: S608

    def copy_folder_state(self, from_account: str, to_account: str, folder: str) -> None:
        """Copy a folder's cursor and delivered set to another account key, in one
        transaction; what ``to_account`` has already is kept."""
        args = (to_account, from_account, folder)
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO mailsync_cursors (account, folder, cursor, updated, generation) "
                "SELECT %s, folder, cursor, updated, nextval('mailsync_generation') "
                "FROM mailsync_cursors WHERE account = %s AND folder = %s "
                "ON CONFLICT DO NOTHING",
                args,
            )
            conn.execute(
                "INSERT INTO mailsync_delivered SELECT %s, folder, identity "
                "FROM mailsync_delivered WHERE account = %s AND folder = %s "
                "ON CONFLICT DO NOTHING",
                args,
            )

    # -- leases ----------------------------------------------------------------------------

    def try_lease(self, account: str, folder: str) -> CursorLease | None:
        """Take the sync lease of ``account``/``folder`` (an advisory lock) if free, else None.

        Raises:
            StateError: The database cannot be reached, or the saved cursor is damaged.
        """
        key = _advisory_key(account, folder)
        with self._held_lock:
            if key in self._held:  # advisory locks nest within one session: check here
                return None
            self._held[key] = -1
        try:
            if self._lock(key) is None:
                return None
            loaded = self._load(account, folder)
        except BaseException:
            self._unlock(key)
            raise
        return _GenerationLease(self, account, folder, loaded, lambda: self._unlock(key))

    def _lock(self, key: int) -> int | None:
        """Try the advisory lock; the lock session's opening number when taken."""
        with self._locks.lock:
            try:
                conn = self._locks.get()
                row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
            except psycopg.Error as exc:
                raise self._failed(exc) from exc
            if not (row and row[0]):
                with self._held_lock:
                    self._held.pop(key, None)
                return None
            with self._held_lock:
                self._held[key] = self._locks.opened
            return self._locks.opened

    def _unlock(self, key: int) -> None:
        with self._held_lock:
            opened = self._held.pop(key, None)
        if opened is None or opened < 0:
            return
        with self._locks.lock:
            if opened != self._locks.opened:
                return  # that session is gone, and its locks with it
            try:
                self._locks.get().execute("SELECT pg_advisory_unlock(%s)", (key,))
            except psycopg.Error:
                self._locks.close()  # dropping the session drops its locks all the same

    # -- items -----------------------------------------------------------------------------

    def get_item(self, namespace: str, key: str) -> dict[str, Any] | None:
        """A stored JSON object, or None."""
        rows = self._rows(
            "SELECT value FROM mailsync_items WHERE namespace = %s AND key = %s", (namespace, key)
        )
        return self._decode_item(rows[0][0], namespace, key) if rows else None

    def set_item(self, namespace: str, key: str, value: Mapping[str, Any]) -> None:
        """Store a JSON object under ``namespace``/``key``, replacing any earlier one."""
        data = json.dumps(dict(value), sort_keys=True, default=str)
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO mailsync_items VALUES (%s, %s, %s) "
                "ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value",
                (namespace, key, data),
            )

    def delete_item(self, namespace: str, key: str) -> None:
        """Remove a stored object if present."""
        with self._transaction() as conn:
            conn.execute(
                "DELETE FROM mailsync_items WHERE namespace = %s AND key = %s", (namespace, key)
            )

    def update_item(
        self,
        namespace: str,
        key: str,
        update: Callable[[dict[str, Any] | None], Mapping[str, Any] | None],
    ) -> dict[str, Any] | None:
        """Read, change and write one stored object in a single transaction; see
        :meth:`~mailsync.SQLiteStateStore.update_item`."""
        item_key = int.from_bytes(lock_key(namespace, key)[:8], "big", signed=True)
        with self._transaction() as conn:
            # Serialises updaters of this object even when it does not exist yet.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (item_key,))
            row = conn.execute(
                "SELECT value FROM mailsync_items WHERE namespace = %s AND key = %s",
                (namespace, key),
            ).fetchone()
            current = self._decode_item(row[0], namespace, key) if row else None
            value = update(current)
            if value is None:
                return current
            data = json.dumps(dict(value), sort_keys=True, default=str)
            conn.execute(
                "INSERT INTO mailsync_items VALUES (%s, %s, %s) "
                "ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value",
                (namespace, key, data),
            )
        stored: dict[str, Any] = json.loads(data)
        return stored

    def items(self, namespace: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every ``(key, value)`` in a namespace, in key order."""
        rows = self._rows(
            "SELECT key, value FROM mailsync_items WHERE namespace = %s ORDER BY key",
            (namespace,),
        )
        for key, value in rows:
            yield key, self._decode_item(value, namespace, key)

    def __del__(self) -> None:
        # A store opened from state="postgresql://..." belongs to its retriever, which may be
        # dropped without closing it: its sessions (and their locks) must not linger.
        try:  # noqa: SIM105 - at interpreter exit, module globals (contextlib) may be gone
            self.close()
        except Exception:  # noqa: S110 - nothing to tell anyone from a finaliser
            pass

    def close(self) -> None:
        """Close both connections (which gives back every lease still held)."""
        with self._held_lock:
            self._held.clear()
        self._locks.close()
        self._data.close()
