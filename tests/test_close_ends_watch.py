"""close() (aclose()) ends a running watch() within half a second on every backend, whatever
the watch is doing: waiting in IDLE, waiting between polls, backing off after a dropped
connection, in the middle of fetching, or saying goodbye to a server that no longer answers.
The watch ends quietly (the errors the close itself causes are not raised to its consumer).

Each backend runs sync and async; network backends against the test Dovecot (through a
proxy that can stall, for the fetch), local ones on a temporary Maildir or mbox, Gmail and
Graph against their in-process fakes.
"""

from __future__ import annotations

import asyncio
import mailbox
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import mailsync
from mailsync.backends import _aioimap
from mailsync.backends import imap as imap_backend
from mailsync.backends.imap import IMAPRetriever
from tests.contract import make_raw, wait_for
from tests.fakes.gmail import FakeGmail
from tests.fakes.graph import FakeGraph
from tests.gmail.conftest import options as gmail_options
from tests.proxy import TCPProxy
from tests.servers import Account, MailServers

#: What the issue asks: a watch ends this soon after close().
BOUND = 0.5


class Watcher:
    """Consumes ``box.watch()`` where its close can come from elsewhere: on a thread (sync),
    or on an event loop running in a thread (async).

    Args:
        box: The retriever.
        handle: Called (on a worker thread) with each message, before the next is asked for.
    """

    def __init__(self, box: Any, handle: Callable[[mailsync.Message], None]) -> None:
        self.box = box
        self.asynchronous = isinstance(box, mailsync.AsyncRetriever)
        self.handle = handle
        self.got: list[mailsync.Message] = []
        self.error: BaseException | None = None
        self.ended: float | None = None
        self._done = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Watcher:
        if self.asynchronous:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
            self._thread.start()
            asyncio.run_coroutine_threadsafe(self._consume_async(), self._loop)
        else:
            self._thread = threading.Thread(target=self._consume, daemon=True)
            self._thread.start()
        return self

    def _consume(self) -> None:
        try:
            for message in self.box.watch(poll_interval=600):
                self.got.append(message)
                self.handle(message)
        except BaseException as exc:
            self.error = exc
        finally:
            self.ended = time.monotonic()
            self._done.set()

    async def _consume_async(self) -> None:
        try:
            async for message in self.box.watch(poll_interval=600):
                self.got.append(message)
                await asyncio.to_thread(self.handle, message)
        except BaseException as exc:
            self.error = exc
        finally:
            self.ended = time.monotonic()
            self._done.set()

    def close(self) -> float:
        """Close the retriever from this (other) thread; the seconds until watch() ended."""
        started = time.monotonic()
        if self._loop is not None:
            future = asyncio.run_coroutine_threadsafe(self.box.aclose(), self._loop)
        else:
            self.box.close()
        assert self._done.wait(10), "close() did not end the watch"
        if self._loop is not None:
            future.result(10)
        assert self.ended is not None
        return self.ended - started

    def stop(self) -> None:
        """Clean up whatever a failed test left running."""
        if not self._done.is_set():
            self.close()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            assert self._thread is not None
            self._thread.join(10)
            self._loop.close()


@dataclass
class Backend:
    """How to make and seed one kind of retriever."""

    name: str
    asynchronous: bool
    make: Callable[..., Any]
    seed: Callable[[list[bytes]], None]
    network: bool = False


def _maildir_seed(root: Path) -> Callable[[list[bytes]], None]:
    def seed(raws: list[bytes]) -> None:
        box = mailbox.Maildir(root)
        for raw in raws:
            box.add(raw)
        box.close()

    return seed


def _mbox_seed(path: Path) -> Callable[[list[bytes]], None]:
    def seed(raws: list[bytes]) -> None:
        box = mailbox.mbox(path)
        box.lock()
        try:
            for raw in raws:
                box.add(raw)
            box.flush()
        finally:
            box.unlock()
            box.close()

    return seed


KINDS = ("imap", "pop3", "maildir", "mbox", "gmail", "graph")
BACKENDS = [f"{name}{suffix}" for name in KINDS for suffix in ("", "-async")]


def _api_backend(name: str, kind: str, asynchronous: bool) -> Backend:
    """Gmail or Graph against its in-process fake (JMAP's waits on its event stream are
    tested against Cyrus in tests/jmap). The fake answers at once, so "mid-fetch" is the
    local case: between two messages of a long sync."""
    connect = mailsync.connect_async if asynchronous else mailsync.connect
    if kind == "gmail":
        gmail = FakeGmail()

        def make_gmail(**options: Any) -> Any:
            return connect("gmail://me", **gmail_options(gmail), **options)

        def seed_gmail(raws: list[bytes]) -> None:
            for raw in raws:
                gmail.deliver(raw)

        return Backend(name, asynchronous, make_gmail, seed_gmail)
    graph = FakeGraph()

    def make_graph(**options: Any) -> Any:
        options = {"token": graph.token, "transport": graph, "retry_delay": 0, **options}
        return connect("graph://me", **options)

    def seed_graph(raws: list[bytes]) -> None:
        for raw in raws:
            graph.deliver(raw)

    return Backend(name, asynchronous, make_graph, seed_graph)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    name: str = request.param
    kind, _, mode = name.partition("-")
    asynchronous = mode == "async"
    connect = mailsync.connect_async if asynchronous else mailsync.connect
    if kind in ("gmail", "graph"):
        return _api_backend(name, kind, asynchronous)
    if kind in ("imap", "pop3"):
        servers: MailServers = request.getfixturevalue("mail_servers")
        account: Account = request.getfixturevalue("account")

        def make(port: int | None = None, **options: Any) -> Any:
            default = servers.imap_port if kind == "imap" else servers.pop3_port
            url = f"{kind}://{account.user}@{servers.host}:{port or default}"
            options.setdefault("timeout", 30.0)
            return connect(url, password=account.password, tls="none", **options)

        def seed(raws: list[bytes]) -> None:
            servers.append_many(account, raws)

        return Backend(name, asynchronous, make, seed, network=True)
    if kind == "maildir":
        root = tmp_path / "Maildir"
        mailbox.Maildir(root, create=True).close()
        return Backend(
            name,
            asynchronous,
            lambda **options: connect(f"maildir:{root}", **options),
            _maildir_seed(root),
        )
    path = tmp_path / "inbox.mbox"
    path.touch()
    return Backend(
        name, asynchronous, lambda **options: connect(f"mbox:{path}", **options), _mbox_seed(path)
    )


@pytest.fixture
def watchers() -> Iterator[list[Watcher]]:
    started: list[Watcher] = []
    yield started
    for watcher in started:
        watcher.stop()


def _entered(box: Any, method: str) -> threading.Event:
    """An event set when ``box.method`` is next called (the call then goes on as usual)."""
    entered = threading.Event()
    original = getattr(box, method)
    if isinstance(box, mailsync.AsyncRetriever):

        async def wrapped_async(*args: Any, **kwargs: Any) -> Any:
            entered.set()
            return await original(*args, **kwargs)

        setattr(box, method, wrapped_async)
    else:

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            entered.set()
            return original(*args, **kwargs)

        setattr(box, method, wrapped)
    return entered


def _hide_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    """IMAP servers without IDLE: both IMAP backends then poll with NOOP."""
    monkeypatch.setattr(
        IMAPRetriever, "_has", lambda self, cap: cap != b"IDLE" and cap in self._caps
    )
    original = _aioimap.Session._set_capabilities

    def without_idle(self: Any, names: Any) -> None:
        original(self, [name for name in names if name.upper() != "IDLE"])

    monkeypatch.setattr(_aioimap.Session, "_set_capabilities", without_idle)


def _ignore(message: mailsync.Message) -> None:
    pass


def _closes_quickly(
    box: Any,
    state: threading.Event,
    watchers: list[Watcher],
    handle: Callable[[mailsync.Message], None] = _ignore,
) -> Watcher:
    """Watch ``box``; once ``state`` is set (the watch is where the test wants it), close
    it and check the watch ended within :data:`BOUND`, quietly."""
    watcher = Watcher(box, handle).start()
    watchers.append(watcher)
    assert state.wait(30), "the watch never got there"
    assert watcher.close() < BOUND
    assert watcher.error is None
    return watcher


def test_close_during_the_wait_between_polls(
    backend: Backend, watchers: list[Watcher], monkeypatch: pytest.MonkeyPatch
) -> None:
    _hide_idle(monkeypatch)
    backend.seed([make_raw(1)])
    box = backend.make(state=":memory:")
    waiting = _entered(box, "_wait_for_change")
    watcher = _closes_quickly(box, waiting, watchers)
    assert [m.subject for m in watcher.got] == ["Message 1"]


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_close_during_idle(
    mail_servers: MailServers,
    account: Account,
    watchers: list[Watcher],
    monkeypatch: pytest.MonkeyPatch,
    asynchronous: bool,
) -> None:
    idling = threading.Event()
    if asynchronous:
        original = _aioimap.Session.idle

        async def idle(self: Any, seconds: float) -> bool:
            idling.set()
            return await original(self, seconds)

        monkeypatch.setattr(_aioimap.Session, "idle", idle)
    else:
        original_wait = imap_backend.wait_for_line

        def idle_wait(*args: Any) -> bool:
            idling.set()
            return original_wait(*args)

        monkeypatch.setattr(imap_backend, "wait_for_line", idle_wait)
    connect = mailsync.connect_async if asynchronous else mailsync.connect
    url = f"imap://{account.user}@{mail_servers.host}:{mail_servers.imap_port}"
    box = connect(url, password=account.password, tls="none", state=":memory:")
    _closes_quickly(box, idling, watchers)


def test_close_during_the_backoff_after_a_dropped_connection(
    backend: Backend, watchers: list[Watcher], monkeypatch: pytest.MonkeyPatch
) -> None:
    backing_off = threading.Event()

    def long_delay(backoff: Any, exc: BaseException) -> float:
        backing_off.set()
        return 600.0

    monkeypatch.setattr("mailsync._base._retry_delay", long_delay)
    box = backend.make(state=":memory:")

    def dropped(*args: Any) -> Any:
        raise mailsync.ConnectionFailed("the connection dropped (a test)")

    async def dropped_async(*args: Any) -> Any:
        raise mailsync.ConnectionFailed("the connection dropped (a test)")
        yield  # pragma: no cover - an async generator that fails at once

    box._sync_steps = dropped_async if backend.asynchronous else dropped
    _closes_quickly(box, backing_off, watchers)


def test_close_in_the_middle_of_a_fetch(
    backend: Backend,
    watchers: list[Watcher],
    tcp_proxy: Callable[[str, int], TCPProxy],
    request: pytest.FixtureRequest,
) -> None:
    raws = [make_raw(n, extra=20_000) for n in range(60)]
    backend.seed(raws)
    first = threading.Event()
    if backend.network:
        # A slow link (64 KiB every 50 ms: the 1.2 MB take a second): once the first message
        # is in, the watch is mostly blocked reading the next ones (one message per FETCH for
        # IMAP, a pipelined window for POP3).
        servers: MailServers = request.getfixturevalue("mail_servers")
        port = servers.imap_port if backend.name.startswith("imap") else servers.pop3_port
        proxy = tcp_proxy(servers.host, port)
        proxy.throttle(64 * 1024, 0.05)
        options = {"batch_size": 1} if backend.name.startswith("imap") else {}
        box = backend.make(port=proxy.port, state=":memory:", **options)

        watcher = _closes_quickly(box, first, watchers, lambda message: first.set())
    else:
        # Local files do not block: the watch is between two messages of a long sync, its
        # consumer busy with the first. Asking for the next must end it, not go on.
        closed = threading.Event()

        def handle(message: mailsync.Message) -> None:
            first.set()
            assert closed.wait(30)

        box = backend.make(state=":memory:")
        watcher = Watcher(box, handle).start()
        watchers.append(watcher)
        assert first.wait(30)
        assert _close_then(watcher, closed) < BOUND
        assert len(watcher.got) == 1
    assert watcher.error is None
    assert len(watcher.got) < len(raws)


def _close_then(watcher: Watcher, closed: threading.Event) -> float:
    """Close, then let the consumer's handler return; the seconds until watch() ended."""
    started = time.monotonic()
    if watcher._loop is not None:
        asyncio.run_coroutine_threadsafe(watcher.box.aclose(), watcher._loop).result(10)
    else:
        watcher.box.close()
    closed.set()
    wait_for(lambda: watcher.ended is not None, 10)
    assert watcher.ended is not None
    return watcher.ended - started


@pytest.mark.parametrize("name", ["imap", "imap-async", "pop3", "pop3-async"])
def test_close_while_saying_goodbye_to_a_server_that_stopped_answering(
    name: str,
    mail_servers: MailServers,
    account: Account,
    watchers: list[Watcher],
    tcp_proxy: Callable[[str, int], TCPProxy],
) -> None:
    # After a dropped connection (or, for POP3, between two polls) the watch logs out: LOGOUT
    # or RSET/QUIT, which a stalled server leaves unanswered for a whole read timeout.
    kind, _, mode = name.partition("-")
    port = mail_servers.imap_port if kind == "imap" else mail_servers.pop3_port
    proxy = tcp_proxy(mail_servers.host, port)
    mail_servers.append_many(account, [make_raw(1)])
    connect = mailsync.connect_async if mode else mailsync.connect
    url = f"{kind}://{account.user}@{mail_servers.host}:{proxy.port}"
    box = connect(url, password=account.password, tls="none", state=":memory:", timeout=30)
    saying_goodbye = threading.Event()
    original = box._disconnect

    def dropped(*args: Any) -> None:
        raise mailsync.ConnectionFailed("the connection dropped (a test)")

    async def dropped_async(*args: Any) -> None:
        dropped()

    def disconnect() -> Any:
        proxy.stall()
        saying_goodbye.set()
        return original()

    box._wait_for_change = dropped_async if mode else dropped
    box._disconnect = disconnect
    watcher = Watcher(box, _ignore).start()
    watchers.append(watcher)
    assert saying_goodbye.wait(30)
    time.sleep(0.2)  # let the goodbye reach its wait for the answer
    try:
        assert watcher.close() < BOUND
    finally:
        proxy.resume()
    assert watcher.error is None
