"""The Celery integration (``pip install "mailsync[celery]"``): :class:`CeleryFleet` wires
mailsync into a Celery app whose state lives in PostgreSQL::

    from mailsync.integrations.celery import CeleryFleet

    fleet = CeleryFleet(app, state="postgresql://mail@db/mailsync", on_message="myapp.handle")

Every new message of every account becomes one call of a Celery task of the user's choosing,
``on_message(account, raw)`` (``raw`` is the message's bytes in base64, as Celery's JSON
cannot carry bytes; :meth:`CeleryFleet.message` turns it back into a :class:`Message`). Two
things produce those calls, both through ``sync()`` and the same PostgreSQL
:class:`~mailsync.PostgresStateStore`, so they never hand out the same message twice:

- the ``mailsync.sync_account`` task, for polling: idempotent (a second concurrent run waits
  for the first's lease, and re-queues itself if the wait is long), acknowledged late so a
  worker killed mid-run hands it to another; :meth:`CeleryFleet.beat_schedule` runs it for
  every account on a schedule;
- watcher processes (:meth:`CeleryFleet.watcher`), for push: each holds IDLE (or the
  provider's push, or polls) for its share of the accounts through the :func:`watch_many`
  engine. The watchers split the accounts among themselves with PostgreSQL advisory locks:
  each holds one lock saying it is alive and one per account it owns, takes its fair share
  (accounts / live watchers) every ``rebalance`` seconds, and gives back what is over. A
  watcher that dies loses its locks with its database session, so the others take its
  accounts over within one rebalance interval (plus the time PostgreSQL takes to see the
  session gone: at once for a killed process, TCP keepalive for a lost machine).

Delivery is at least once, and does not rest on the broker. A broker can lose a task it
accepted: kombu's Redis transport pops a message and only then records it as unacknowledged,
so a worker killed between the two loses that task for good (celery/kombu#305), and a dead
worker's unacknowledged tasks come back only when some consumer restores them. So every
dispatch is first written to a *dispatch ledger* in the shared PostgreSQL
(``mailsync_dispatch``: task id, account, folder, the task's arguments, raw message included),
then sent with that task id; the message's cursor is committed only after both. The worker
marks the row started when the task begins and deletes it when the task has run (returned
or raised: a failure is the task's own outcome, reported by Celery; ``task.retry`` keeps the
row). A row not deleted ``redeliver_after`` seconds after it was sent (or, once started,
after it started) is sent again with the same task id by :meth:`CeleryFleet.redeliver`,
which the watchers run every few seconds and ``mailsync.sync_all`` runs with each beat; a
row is claimed atomically (``FOR UPDATE SKIP LOCKED``), so two watchers never resend it
both. A task sent 10 times without ever running to the end is given up, with an error in the
log (its workers most likely do not import the module that builds the fleet).

A message's ``on_message`` task therefore runs at least once. It runs more than once when:
a watcher or ``sync_account`` run dies after dispatching but before committing the cursor
(the message is dispatched again, under a new task id); a worker dies while running the
task, or after running it but before its row is deleted (the ledger resends it, and the
broker may also hand back its own copy, ``acks_late``); or the task waits in the queue, or
runs, longer than ``redeliver_after`` (set it well above the queue's usual wait plus the
task's longest run). Make ``on_message`` idempotent on :attr:`Message.identity` (the
Message-ID, else a digest of the bytes).

This module imports Celery's signals and otherwise reaches Celery only through the app it is
given; the core of mailsync never imports this module.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import math
import os
import secrets
import threading
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import psycopg

from mailsync._accounts import Account, account
from mailsync._base import AsyncRetriever, Retriever
from mailsync._errors import ConfigError, StateError, SyncBusy
from mailsync._facade import connect, connect_async
from mailsync._message import Message
from mailsync._state_postgres import _SCHEMA_LOCK, PostgresStateStore, _Session
from mailsync._watch import RetryPolicy
from mailsync._watch_engine import Engine

__all__ = ["CeleryFleet", "FleetWatcher"]

log = logging.getLogger("mailsync.celery")

#: The first key of the advisory locks the watchers use (two int4 keys: class, object), apart
#: from the sync leases' single bigint keys.
_MEMBER_CLASS = 0x6D730001
_OWNER_CLASS = 0x6D730002

_LIVE_MEMBERS = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
    "AND classid = %s AND objsubid = 2 "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


_LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS mailsync_dispatch (
    task_id  TEXT PRIMARY KEY,
    task     TEXT NOT NULL,
    account  TEXT NOT NULL,
    folder   TEXT NOT NULL,
    args     TEXT NOT NULL,
    sent     TIMESTAMPTZ NOT NULL DEFAULT now(),
    started  TIMESTAMPTZ,
    attempts INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS mailsync_dispatch_sent ON mailsync_dispatch (sent);
"""

#: How many times a task is sent before the ledger gives it up: a task that never reaches
#: the end this often is not being lost by chance (e.g. the workers never import the module
#: that builds the fleet, so nothing marks it done), and resending it forever would only
#: repeat it.
_MAX_SENDS = 10

_GIVE_UP = (
    "DELETE FROM mailsync_dispatch WHERE attempts >= %s "
    "AND coalesce(started, sent) < now() - make_interval(secs => %s) "
    "RETURNING task_id, account, attempts"
)

#: Claims the rows due again in one statement: the row locks (SKIP LOCKED) keep two claimers
#: apart, and a row another claimer just updated is re-checked against its new ``sent``.
_CLAIM = (
    "UPDATE mailsync_dispatch SET sent = now(), started = NULL, attempts = attempts + 1 "
    "WHERE task_id IN (SELECT task_id FROM mailsync_dispatch "
    "WHERE coalesce(started, sent) < now() - make_interval(secs => %s) AND attempts < %s "
    "ORDER BY sent LIMIT %s FOR UPDATE SKIP LOCKED) "
    "RETURNING task_id, task, args"
)


class _Ledger:
    """The dispatch ledger: one row per ``on_message`` task sent and not yet run. One per
    process (a database session does not survive a fork); safe to share between threads."""

    def __init__(self, conninfo: str, display: str) -> None:
        self._session = _Session(conninfo, display, autocommit=True)
        self._display = display
        self._ready = False

    def _run(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self._session.lock:
            try:
                conn = self._session.get()
                if not self._ready:
                    with conn.transaction():
                        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", _SCHEMA_LOCK)
                        conn.execute(_LEDGER_SCHEMA)
                    self._ready = True
                cur = conn.execute(sql, args)
                return cur.fetchall() if cur.description else []
            except psycopg.Error as exc:
                raise StateError(
                    f"the dispatch ledger in {self._display} failed: {exc}", store=self._display
                ) from exc

    def record(self, task_id: str, task: str, account: str, folder: str, args: Any) -> None:
        self._run(
            "INSERT INTO mailsync_dispatch (task_id, task, account, folder, args) "
            "VALUES (%s, %s, %s, %s, %s)",
            (task_id, task, account, folder, json.dumps(args)),
        )

    def started(self, task_id: str) -> None:
        self._run("UPDATE mailsync_dispatch SET started = now() WHERE task_id = %s", (task_id,))

    def done(self, task_id: str) -> None:
        self._run("DELETE FROM mailsync_dispatch WHERE task_id = %s", (task_id,))

    def claim(self, after: float, limit: int) -> list[tuple[str, str, Any]]:
        for task_id, name, attempts in self._run(_GIVE_UP, (_MAX_SENDS, after)):
            log.error(
                "task %s of account %s was sent %d times and never ran to the end: given up "
                "(do the workers import the module that builds the CeleryFleet?)",
                task_id,
                name,
                attempts,
            )
        rows = self._run(_CLAIM, (after, _MAX_SENDS, limit))
        return [(str(task_id), str(task), json.loads(args)) for task_id, task, args in rows]

    def close(self) -> None:
        self._session.close()


def _int4(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big", signed=True)


class CeleryFleet:
    """mailsync on a Celery app: the ``mailsync.sync_account`` task, a beat schedule and
    watcher processes, all sharing one PostgreSQL state store.

    Args:
        app: The ``celery.Celery`` app (workers must import the module that builds this).
        state: The ``postgresql://`` URL of the state store every process shares.
        on_message: The name of the user's task called as ``on_message(account, raw)``.
        accounts: Turns an account name into a :class:`~mailsync.Account` (default: the
            config file's, :func:`mailsync.account`).
        folder: The folder to watch on every account.
        poll_interval: Seconds between polls where a backend has no push.
        lease_wait: How long ``sync_account`` waits for another run of the same account
            before re-queueing itself.
        redeliver_after: Seconds after which an ``on_message`` task sent (or started) and
            not yet run to the end is sent again from the dispatch ledger. Keep it well above
            the queue's usual wait plus the task's longest run: beyond that, a task can run
            twice.
    """

    def __init__(
        self,
        app: Any,
        *,
        state: str,
        on_message: str,
        accounts: Callable[[str], Account] = account,
        folder: str = "INBOX",
        poll_interval: float = 60.0,
        lease_wait: float = 10.0,
        redeliver_after: float = 300.0,
    ) -> None:
        if not state.startswith(("postgresql://", "postgres://")):
            raise ConfigError("CeleryFleet needs a postgresql:// state store shared by all")
        if not redeliver_after > 0:
            raise ConfigError("redeliver_after must be a positive number of seconds")
        self.app = app
        self.state = state
        self.on_message = on_message
        self.accounts = accounts
        self.folder = folder
        self.poll_interval = poll_interval
        self.lease_wait = lease_wait
        self.redeliver_after = float(redeliver_after)
        self._store: PostgresStateStore | None = None
        self._store_pid = 0
        self._store_lock = threading.Lock()
        self._ledger: _Ledger | None = None
        self._ledger_pid = 0
        self.sync_account = app.task(
            name="mailsync.sync_account",
            bind=True,
            acks_late=True,
            reject_on_worker_lost=True,
            max_retries=None,
        )(self._sync_account)
        self.sync_all = app.task(name="mailsync.sync_all")(self._sync_all)
        self._connect_signals()

    # -- shared --------------------------------------------------------------------------

    @property
    def store(self) -> PostgresStateStore:
        """This process's connection to the shared state store (a forked worker opens its
        own: database sessions do not survive a fork)."""
        with self._store_lock:
            if self._store is None or self._store_pid != os.getpid():
                self._store = PostgresStateStore(self.state)
                self._store_pid = os.getpid()
            return self._store

    @property
    def _process_ledger(self) -> _Ledger:
        display = self.store.display  # outside the lock: the store takes it too
        with self._store_lock:
            if self._ledger is None or self._ledger_pid != os.getpid():
                self._ledger = _Ledger(self.state, display)
                self._ledger_pid = os.getpid()
            return self._ledger

    def close(self) -> None:
        """Close this process's connections to the state store and the dispatch ledger."""
        with self._store_lock:
            store, ledger, self._store, self._ledger = self._store, self._ledger, None, None
        if store is not None:
            store.close()
        if ledger is not None:
            ledger.close()

    def _options(self, name: str) -> tuple[str, dict[str, Any]]:
        entry = self.accounts(name)
        return entry.url("retrieve"), entry.connect_options("retrieve", state=self.store)

    def retriever(self, name: str) -> Retriever:
        """A retriever for account ``name`` on the shared state store."""
        url, options = self._options(name)
        return connect(url, **options)

    def retriever_async(self, name: str) -> AsyncRetriever:
        """An async retriever for account ``name`` on the shared state store."""
        url, options = self._options(name)
        return connect_async(url, **options)

    def dispatch(self, name: str, message: Message) -> None:
        """Hand one message to the user's task: returns once the dispatch ledger and the
        broker both have it, so the message's cursor may then be committed.

        Raises:
            StateError: The ledger could not record it (nothing was sent).
        """
        raw = base64.b64encode(message.raw).decode("ascii")
        args = [name, raw]
        task_id = str(uuid.uuid4())
        self._process_ledger.record(task_id, self.on_message, name, self.folder, args)
        try:
            self.app.send_task(self.on_message, args=args, task_id=task_id)
        except BaseException:
            # The message stays uncommitted and is dispatched again under a new id: drop this
            # row so the ledger does not send it a second time (if that fails, it may).
            with contextlib.suppress(StateError):
                self._process_ledger.done(task_id)
            raise

    def redeliver(self, limit: int = 500) -> int:
        """Send again, with their own task ids, the ``on_message`` tasks of the ledger that
        were sent (or started) more than ``redeliver_after`` seconds ago and have not run to
        the end: the broker lost them, or their worker died. Watchers call it every few
        seconds and ``mailsync.sync_all`` with each beat; safe to call from many processes
        at once (each row is claimed by one). Returns how many were sent.

        Raises:
            StateError: The ledger cannot be reached.
        """
        sent = 0
        for task_id, task, args in self._process_ledger.claim(self.redeliver_after, limit):
            log.warning("task %s of %s was not run in time: sending it again", task_id, task)
            self.app.send_task(task, args=args, task_id=task_id)
            sent += 1
        return sent

    def _connect_signals(self) -> None:
        from celery import signals

        def prerun(sender: Any = None, task_id: str | None = None, **_: Any) -> None:
            if task_id and getattr(sender, "name", None) == self.on_message:
                self._mark(self._process_ledger.started, task_id)

        def postrun(
            sender: Any = None, task_id: str | None = None, state: str | None = None, **_: Any
        ) -> None:
            # A retry is sent again with the same id, and may be lost too: keep its row.
            if task_id and getattr(sender, "name", None) == self.on_message and state != "RETRY":
                self._mark(self._process_ledger.done, task_id)

        signals.task_prerun.connect(prerun, weak=False)
        signals.task_postrun.connect(postrun, weak=False)

    @staticmethod
    def _mark(step: Callable[[str], None], task_id: str) -> None:
        try:
            step(task_id)
        except StateError as exc:  # the task ran; at worst the ledger sends it once more
            log.warning("the dispatch ledger did not record task %s: %s", task_id, exc)

    @staticmethod
    def message(raw: str) -> Message:
        """The :class:`Message` an ``on_message`` task received as ``raw``."""
        return Message.from_bytes(base64.b64decode(raw))

    # -- tasks ---------------------------------------------------------------------------

    def _sync_account(self, task: Any, name: str) -> int:
        """Dispatch every new message of account ``name``; the number dispatched."""
        count = 0
        try:
            with self.retriever(name) as box:
                for message in box.sync(self.folder, wait=self.lease_wait):
                    self.dispatch(name, message)
                    count += 1
        except SyncBusy as exc:
            # Another run holds the account: it may have searched before the mail that
            # triggered this run arrived, so look again shortly rather than drop it.
            raise task.retry(countdown=1.0, exc=exc) from exc
        return count

    def _sync_all(self, names: list[str]) -> None:
        for name in names:
            self.sync_account.delay(name)
        self.redeliver()

    def beat_schedule(self, names: Iterable[str], every: float = 300.0) -> dict[str, Any]:
        """A ``beat_schedule`` entry that syncs every account in ``names`` every ``every``
        seconds (for accounts no watcher serves, or as a safety net behind them).

        Use: ``app.conf.beat_schedule = fleet.beat_schedule(names, every=300)``.
        """
        return {
            "mailsync-sync-all": {
                "task": "mailsync.sync_all",
                "schedule": float(every),
                "args": (list(names),),
            }
        }

    def watcher(
        self,
        names: Iterable[str],
        *,
        rebalance: float = 10.0,
        per_host: int = 20,
        retry: RetryPolicy | None = None,
    ) -> FleetWatcher:
        """A watcher process's loop over its share of ``names`` (call its ``run()``)."""
        return FleetWatcher(self, names, rebalance=rebalance, per_host=per_host, retry=retry)


class FleetWatcher:
    """One watcher process: owns a fair share of the accounts (advisory locks), watches
    them with the :func:`~mailsync.watch_many` engine, hands each new message to the
    user's task. Get one from :meth:`CeleryFleet.watcher`.
    """

    def __init__(
        self,
        fleet: CeleryFleet,
        names: Iterable[str],
        *,
        rebalance: float,
        per_host: int,
        retry: RetryPolicy | None,
    ) -> None:
        self.fleet = fleet
        self.names = sorted(set(names))
        self.rebalance = rebalance
        self.member = secrets.randbits(31)
        self._engine: Engine[str] = Engine(
            [],
            fleet.folder,
            poll_interval=fleet.poll_interval,
            retry=retry or RetryPolicy(),
            per_host=per_host,
            callbacks=[],
            open_ended=True,
        )
        self._conn: psycopg.Connection[Any] | None = None
        self._stop: asyncio.Event | None = None

    @property
    def owned(self) -> list[str]:
        """The accounts this watcher serves now."""
        return sorted(self._engine.by_key)

    def run(self) -> None:
        """Watch until SIGINT/SIGTERM, then finish the message in hand and leave (the other
        watchers take this one's accounts over)."""
        asyncio.run(self.run_async())

    async def run_async(self) -> None:
        """:meth:`run` on the running loop."""
        import signal

        self._stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, self.stop)
        state = self.fleet.state
        await asyncio.to_thread(lambda: self.fleet.store)  # connect off the loop, once
        conn: psycopg.Connection[Any] = await asyncio.to_thread(
            lambda: psycopg.connect(state, autocommit=True)
        )
        self._conn = conn
        try:
            await self._locked("SELECT pg_advisory_lock(%s, %s)", _MEMBER_CLASS, self.member)
            self._engine.start()
            balancer = asyncio.create_task(self._balance())
            redeliverer = asyncio.create_task(self._redeliver())
            try:
                await self._consume()
            finally:
                balancer.cancel()
                redeliverer.cancel()
                await asyncio.gather(balancer, redeliverer, return_exceptions=True)
                await self._engine.stop()
        finally:
            await asyncio.to_thread(conn.close)

    def stop(self) -> None:
        """Leave after the message in hand."""
        if self._stop is not None:
            self._stop.set()
        self._engine.request_stop()

    async def _consume(self) -> None:
        while self._stop is not None and not self._stop.is_set():
            delivery = await self._engine.next()
            if delivery is None:
                return
            try:
                await asyncio.to_thread(self.fleet.dispatch, delivery.account.key, delivery.message)
            except Exception as exc:  # the broker is away: keep the message, back off
                log.warning("dispatching a message of %s failed: %s", delivery.account.key, exc)
                self._engine.nack(delivery, f"the broker did not take it: {exc}")
                continue
            await self._engine.ack(delivery)

    async def _locked(self, sql: str, *args: Any) -> Any:
        assert self._conn is not None
        conn = self._conn

        def run() -> Any:
            row = conn.execute(sql, args).fetchone()
            return row[0] if row else None

        return await asyncio.to_thread(run)

    async def _balance(self) -> None:
        assert self._stop is not None
        while not self._stop.is_set():
            try:
                await self._rebalance()
            except Exception as exc:
                log.warning("rebalancing failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.rebalance):
                    await self._stop.wait()

    async def _redeliver(self) -> None:
        assert self._stop is not None
        # Often enough that a lost task is sent again soon after it is due.
        interval = min(max(self.fleet.redeliver_after / 4, 1.0), 30.0)
        while not self._stop.is_set():
            try:
                await asyncio.to_thread(self.fleet.redeliver)
            except Exception as exc:
                log.warning("redelivering from the dispatch ledger failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._stop.wait()

    def _preference(self, name: str) -> bytes:
        """Rendezvous order: each watcher prefers a different, stable set of accounts, so
        watchers starting together rarely contend and a rebalance moves few accounts."""
        return hashlib.sha256(f"{self.member}\0{name}".encode()).digest()

    async def _rebalance(self) -> None:
        members = max(1, int(await self._locked(_LIVE_MEMBERS, _MEMBER_CLASS)))
        share = math.ceil(len(self.names) / members)
        owned = set(self._engine.by_key)
        for name in sorted(owned, key=self._preference, reverse=True)[: max(0, len(owned) - share)]:
            await self._engine.remove(name)
            await self._locked("SELECT pg_advisory_unlock(%s, %s)", _OWNER_CLASS, _int4(name))
            log.info("gave account %s back", name)
        for name in sorted(set(self.names) - owned, key=self._preference):
            if len(self._engine.by_key) >= share:
                break
            taken = await self._locked(
                "SELECT pg_try_advisory_lock(%s, %s)", _OWNER_CLASS, _int4(name)
            )
            if taken:
                self._engine.add(name, self.fleet.retriever_async(name))
