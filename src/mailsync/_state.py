"""Where sync cursors live: the :class:`StateStore` protocol, the sync lease, and what
``state=`` opens (the SQLite store is :mod:`mailsync._state_sqlite`, PostgreSQL
:mod:`mailsync._state_postgres`).

A cursor is a small JSON object a backend defines (IMAP: UIDVALIDITY + last UID + MODSEQ;
POP3: nothing, its UIDLs are the identities; Gmail: a historyId). Beside it the store keeps the
*identities* of the messages already delivered by ``sync()`` for that account and folder, so
that when a server invalidates a cursor (UIDVALIDITY changed, history expired) the resync can
skip what was delivered before. Cursor and identities are saved in one transaction.

The sync lease. ``sync()`` takes a :class:`CursorLease` for its account+folder before it reads
the cursor and gives it back when the run ends, so two runs (threads, processes, machines
sharing a PostgreSQL store) never sync one folder at once and never yield the same message.
A lease is a lock the operating system or the database server holds for the holder's process
(an ``flock`` on a lock file beside the SQLite file; a PostgreSQL advisory lock): a holder
killed with SIGKILL loses it at once, with no timeout to tune, and a live holder keeps it
however long its handler takes. A run only ever saves through its lease, and every save is a
compare-and-set on a store-wide, ever-growing *generation*: the save succeeds only if the
cursor is still the one the run read (or last saved itself). That is what "a cursor never moves
backwards" means here, whatever the backend's cursor holds: every saved cursor descends from
the one before it, so a run that lost its lease (a reset, a dropped database session) cannot
overwrite a newer cursor with an older one; it gets :class:`~mailsync.LeaseLost` instead. A
backend may legitimately save a cursor that looks smaller (IMAP after a UIDVALIDITY change);
the store never compares cursor contents.

Damage is an error, never a silent reset: a state file that exists but is empty or is not a
mailsync store, or a saved cursor that is not a JSON object, raises
:class:`~mailsync.StateError` naming the file and how to reset it. A new store is made only
where there was no file, atomically, so a concurrent opener never sees a half-made one.

There is also a small namespaced key/value area (JSON objects) for other features that need
to remember things, such as the delivery tracker. :meth:`SQLiteStateStore.update_item` changes
one such object in a single transaction, so processes updating the same object never lose each
other's changes.

This module must not import any backend, nor a store implementation at module level.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from mailsync._errors import ConfigError, LeaseLost, StateError, SyncBusy

__all__ = [
    "CursorLease",
    "StateStore",
    "SyncLease",
    "default_data_dir",
    "open_state_store",
]


@runtime_checkable
class CursorLease(Protocol):
    """The exclusive right to sync one account+folder, from :meth:`StateStore.try_lease`
    until :meth:`release`. Implement it with your :class:`StateStore`."""

    @property
    def cursor(self) -> dict[str, Any] | None:
        """The cursor as saved when the lease was taken, then as this lease last saved it."""
        ...

    def save(self, cursor: Mapping[str, Any], delivered: Iterable[str] = ()) -> None:
        """Save the cursor and add identities to the delivered set, atomically, but only if
        nobody saved this account+folder since this lease read or saved it.

        Raises:
            LeaseLost: Someone did: nothing was saved.
        """
        ...

    def release(self) -> None:
        """Give the lease back (safe to call twice)."""
        ...


@runtime_checkable
class StateStore(Protocol):
    """What mailsync needs from a place to keep sync state. Implement it to keep state in
    your own database; :class:`SQLiteStateStore` is the default and
    :class:`~mailsync.PostgresStateStore` serves fleets of machines.

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
        """Save the cursor and add identities to the delivered set, atomically (whoever
        holds the lease; ``sync()`` saves through its :class:`CursorLease` instead)."""
        ...

    def known(self, account: str, folder: str, identities: Iterable[str]) -> set[str]:
        """Which of ``identities`` were delivered before for ``account``/``folder``."""
        ...

    def reset(self, account: str, folder: str | None = None) -> None:
        """Forget the cursor and delivered set of one folder, or of every folder."""
        ...

    def try_lease(self, account: str, folder: str) -> CursorLease | None:
        """Take the sync lease of ``account``/``folder`` if no one holds it, else None.

        The lease must be exclusive across every thread, process and machine that shares
        the store, and must end by itself when its holder's process dies.
        """
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


# -- the lease as sync() uses it ---------------------------------------------------------------

#: The longest pause between two attempts to take a busy lease: a freed lease is noticed
#: within about this long, and a waiting run costs one cheap attempt per pause.
_LEASE_POLL_MOST = 0.5
#: Give-backs of leases taken by an attempt whose caller was cancelled (kept referenced, as
#: asyncio keeps only weak references to running tasks).
_abandoned: set[Any] = set()


class SyncLease:
    """A lease ``sync()`` asks for, taken on the run's first step (so a run that is never
    iterated never waits) and given back when the run ends.

    Args:
        store: The state store.
        account: The account's key in the store.
        folder: The folder's key in the store.
        wait: True waits as long as it takes, False not at all, a number at most that many
            seconds; past that, :class:`~mailsync.SyncBusy`.
    """

    def __init__(self, store: StateStore, account: str, folder: str, wait: bool | float) -> None:
        if not isinstance(wait, bool) and (not isinstance(wait, int | float) or wait < 0):
            raise ConfigError(f"wait must be True, False or seconds >= 0, not {wait!r}")
        self.store = store
        self.account = account
        self.folder = folder
        self.wait = wait
        self._held: CursorLease | None = None
        self._attempts = 0

    def _deadline(self) -> float:
        if self.wait is True:
            return float("inf")
        return time.monotonic() + (0.0 if self.wait is False else float(self.wait))

    def _attempt(self) -> bool:
        self._held = self.store.try_lease(self.account, self.folder)
        return self._held is not None

    def _pause(self, deadline: float) -> float:
        """Seconds to sleep before the next attempt (growing), or raise past the deadline."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SyncBusy(
                f"another sync of {self.account} {self.folder!r} is running (it holds the "
                "lease in the state store); wait for it with sync(folder, wait=True)",
                account=self.account,
                folder=self.folder,
            )
        self._attempts += 1
        return min(remaining, _LEASE_POLL_MOST, 0.01 * 2.0**self._attempts)

    def acquire(
        self,
        stopped: Callable[[], bool] = lambda: False,
        sleep: Callable[[float], object] = time.sleep,
    ) -> bool:
        """Take the lease, waiting as allowed; False when ``stopped()`` became true first.

        Args:
            stopped: Asked between attempts.
            sleep: Waits between attempts; one that returns early when the caller is
                stopped (``threading.Event.wait``) lets a close end the wait at once.

        Raises:
            SyncBusy: Another run held it for longer than ``wait`` allows.
        """
        deadline = self._deadline()
        while not self._attempt():
            if stopped():
                return False
            sleep(self._pause(deadline))
            if stopped():
                return False
        return True

    async def acquire_async(
        self,
        stopped: Callable[[], bool] = lambda: False,
        sleep: Callable[[float], Awaitable[object]] | None = None,
    ) -> bool:
        """:meth:`acquire` for asyncio: the store is asked on a worker thread, and ``sleep``
        (default :func:`asyncio.sleep`) is awaited between attempts."""
        import asyncio

        from mailsync._store_thread import store_call

        pause = asyncio.sleep if sleep is None else sleep
        deadline = self._deadline()
        while True:
            attempt = asyncio.ensure_future(store_call(self.store, self._attempt))
            try:
                taken = await asyncio.shield(attempt)
            except BaseException:
                # Cancelled while the store was being asked (a watcher giving an account
                # away, say): the attempt runs on regardless, and a lease it takes would be
                # held by nobody, refusing every later sync of this account+folder in this
                # process. Give it back once the attempt is over.
                _abandoned.add(task := asyncio.ensure_future(self._give_back(attempt)))
                task.add_done_callback(_abandoned.discard)
                raise
            if taken:
                return True
            if stopped():
                return False
            await pause(self._pause(deadline))
            if stopped():
                return False

    async def _give_back(self, attempt: Awaitable[bool]) -> None:
        with contextlib.suppress(BaseException):
            await attempt
        with contextlib.suppress(Exception):
            await self.release_async()

    @property
    def cursor(self) -> dict[str, Any] | None:
        """The cursor read under the lease."""
        return self._lease().cursor

    def _lease(self) -> CursorLease:
        if self._held is None:
            raise RuntimeError("the sync lease is not held")
        return self._held

    @property
    def held(self) -> bool:
        """Whether the lease is held (taken and not given back)."""
        return self._held is not None

    def changes(self, cursor: Mapping[str, Any], delivered: Iterable[str] = ()) -> bool:
        """Whether saving ``cursor`` and ``delivered`` would change anything: False for a
        held lease asked to save again the cursor it read or last saved, with no identity.
        The async run skips such a save rather than send it to a worker thread."""
        held = self._held
        if held is None or delivered:
            return True
        saved = held.cursor
        return saved is None or dict(cursor) != saved

    def save(self, cursor: Mapping[str, Any], delivered: Iterable[str] = ()) -> None:
        """Save through the lease (see :meth:`CursorLease.save`)."""
        self._lease().save(cursor, delivered)

    def release(self) -> None:
        """Give the lease back, if held."""
        held, self._held = self._held, None
        if held is not None:
            held.release()

    async def save_async(self, cursor: Mapping[str, Any], delivered: Iterable[str] = ()) -> None:
        """:meth:`save` from asyncio, on the store's worker thread; nothing to do (see
        :meth:`changes`) costs no thread hop."""
        if not self.changes(cursor, delivered):
            return
        from mailsync._store_thread import store_call

        await store_call(self.store, lambda: self.save(cursor, delivered))

    async def release_async(self) -> None:
        """:meth:`release` from asyncio, on the store's worker thread (if held)."""
        if self._held is None:
            return
        from mailsync._store_thread import store_call

        await store_call(self.store, self.release)


class _GenerationLease:
    """A :class:`CursorLease` for stores that keep a generation beside each cursor: the
    store's ``_save_if`` does the compare-and-set, ``unlock`` drops the lock."""

    def __init__(
        self,
        store: _CompareAndSet,
        account: str,
        folder: str,
        loaded: tuple[dict[str, Any] | None, int | None],
        unlock: Callable[[], None],
    ) -> None:
        self._store = store
        self._account = account
        self._folder = folder
        self._cursor, self._generation = loaded
        self._unlock: Callable[[], None] | None = unlock

    @property
    def cursor(self) -> dict[str, Any] | None:
        """The cursor as read under the lease, then as last saved through it."""
        return self._cursor

    def save(self, cursor: Mapping[str, Any], delivered: Iterable[str] = ()) -> None:
        """Compare-and-set the cursor (see :meth:`CursorLease.save`)."""
        if self._unlock is None:
            raise LeaseLost(f"the lease of {self._account} {self._folder!r} was released")
        delivered = list(delivered)
        if not delivered and self._generation is not None and dict(cursor) == self._cursor:
            return  # already saved as it is (a run's closing step after its last message)
        self._generation = self._store._save_if(
            self._account, self._folder, self._generation, cursor, delivered
        )
        self._cursor = dict(cursor)

    def release(self) -> None:
        """Drop the lock (safe to call twice)."""
        unlock, self._unlock = self._unlock, None
        if unlock is not None:
            unlock()


class _CompareAndSet(Protocol):
    def _save_if(
        self,
        account: str,
        folder: str,
        expected: int | None,
        cursor: Mapping[str, Any],
        delivered: Iterable[str],
    ) -> int: ...


def lease_lost(store: str, account: str, folder: str) -> LeaseLost:
    """The error for a save whose lease no longer holds."""
    return LeaseLost(
        f"the cursor of {account} {folder!r} in {store} was saved by another run (or reset) "
        "since this run read it: nothing was saved, the message in hand comes again next "
        "sync",
        store=store,
    )


def decode_object(text: str | bytes, what: str, store: str, reset_hint: str) -> dict[str, Any]:
    """A saved JSON object, or :class:`~mailsync.StateError` saying what is damaged and how
    to reset it."""
    try:
        value = json.loads(text)
    except (ValueError, TypeError) as exc:
        raise StateError(
            f"{what} in {store} is damaged (not JSON: {exc}); {reset_hint}",
            store=store,
            damaged=True,
        ) from exc
    if not isinstance(value, dict):
        raise StateError(
            f"{what} in {store} is damaged (a JSON {type(value).__name__}, not an object); "
            f"{reset_hint}",
            store=store,
            damaged=True,
        )
    return value


def lock_key(account: str, folder: str) -> bytes:
    """A fixed-size digest naming one account+folder's lease."""
    return hashlib.sha256(f"{account}\0{folder}".encode()).digest()


def default_data_dir() -> Path:
    """mailsync's per-user data directory (``$MAILSYNC_DATA_DIR`` overrides it)."""
    override = os.environ.get("MAILSYNC_DATA_DIR")
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("mailsync", appauthor=False))


def open_state_store(state: StateStore | str | os.PathLike[str] | None) -> StateStore:
    """What ``state=`` means: None is the default file, a path or ``":memory:"`` a SQLite
    store, a ``postgresql://`` URL a :class:`~mailsync.PostgresStateStore`, and a
    :class:`StateStore` is used as it is."""
    from mailsync._state_sqlite import SQLiteStateStore

    if state is None:
        return SQLiteStateStore(default_data_dir() / "state.sqlite3")
    if isinstance(state, str) and state.startswith(("postgresql://", "postgres://")):
        from mailsync._state_postgres import PostgresStateStore

        store: StateStore = PostgresStateStore(state)
        return store
    if isinstance(state, str | os.PathLike):
        return SQLiteStateStore(state)
    candidate: object = state  # anything may come from untyped callers
    if isinstance(candidate, StateStore):
        return candidate
    missing = [n for n in _PROTOCOL_METHODS if not callable(getattr(candidate, n, None))]
    if missing and len(missing) < len(_PROTOCOL_METHODS):
        raise ConfigError(
            f"{type(state).__name__} is not a complete StateStore: it lacks "
            f"{', '.join(missing)} (since the sync lease, a store implements try_lease)"
        )
    raise ConfigError(
        "state must be None, a path, ':memory:', a postgresql:// URL or a StateStore, "
        f"not {state!r}"
    )


_SHARED: dict[tuple[int, str], StateStore] = {}
_SHARED_LOCK = threading.Lock()


def shared_state_store(state: StateStore | str | os.PathLike[str] | None) -> StateStore:
    """:func:`open_state_store` for retrievers: those naming the same file or database in one
    process share one store, so 5,000 retrievers of a fleet hold one SQLite connection (or two
    PostgreSQL sessions), not 5,000. ``":memory:"`` stays one store per retriever."""
    if state == ":memory:" or not (state is None or isinstance(state, str | os.PathLike)):
        return open_state_store(state)
    if state is None:
        key = str(default_data_dir() / "state.sqlite3")
    elif isinstance(state, str) and state.startswith(("postgresql://", "postgres://")):
        key = state
    else:
        key = str(Path(state).expanduser().absolute())
    with _SHARED_LOCK:
        store = _SHARED.get((os.getpid(), key))
        if store is None or getattr(store, "closed", False):
            store = _SHARED[(os.getpid(), key)] = open_state_store(state)
        return store


_PROTOCOL_METHODS = (
    "load_cursor",
    "save_cursor",
    "known",
    "reset",
    "try_lease",
    "get_item",
    "set_item",
    "delete_item",
    "items",
    "close",
)
