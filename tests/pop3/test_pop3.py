"""The POP3 retrievers against a real Dovecot: the Retriever contract (POP3 with STLS and
POP3S, sync and async), broken connections through a proxy, and login failures.

Mail is seeded with imaplib APPEND into the same account's INBOX (byte-exact, unlike LMTP,
which adds trace headers), never with mailsync.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import mailsync
from mailsync.backends._socket import SocketChannel, StreamChannel
from mailsync.backends.pop3 import AsyncPOP3Retriever, POP3Retriever
from tests.contract import (
    AsyncRetrieverContract,
    OnCyrus,
    RetrieverContract,
    imap_seed,
    make_raw,
)
from tests.proxy import TCPProxy
from tests.servers import Account, MailboxClients, MailServers


def _url(
    servers: MailboxClients, account: Account, *, implicit_tls: bool, port: int | None = None
) -> str:
    scheme = "pop3s" if implicit_tls else "pop3"
    default = servers.pop3s_port if implicit_tls else servers.pop3_port
    return f"{scheme}://{account.user}@{servers.host}:{port or default}"


def _connect(
    servers: MailboxClients,
    account: Account,
    *,
    implicit_tls: bool = False,
    port: int | None = None,
    asynchronous: bool = False,
    **options: Any,
) -> Any:
    connect = mailsync.connect_async if asynchronous else mailsync.connect
    options.setdefault("password", account.password)
    options.setdefault("verify", servers.ssl_context())
    return connect(_url(servers, account, implicit_tls=implicit_tls, port=port), **options)


class DovecotPOP3:
    """Fixtures: one fresh account per test, seeded over IMAP."""

    implicit_tls = False
    asynchronous = False
    exact_bytes = True
    exact_size = True

    @pytest.fixture
    def make_retriever(self, mail_store: MailboxClients, account: Account) -> Callable[..., Any]:
        def make(state: Any, **options: Any) -> Any:
            return _connect(
                mail_store,
                account,
                implicit_tls=self.implicit_tls,
                asynchronous=self.asynchronous,
                state=state,
                **options,
            )

        return make

    @pytest.fixture
    def seed(self, mail_store: MailboxClients, account: Account) -> Callable[..., None]:
        return imap_seed(mail_store, account)

    @pytest.fixture
    def make_folder(self) -> Callable[[str], None]:
        def make(name: str) -> None:
            pytest.skip("POP3 has no folders")

        return make


class TestPOP3(DovecotPOP3, RetrieverContract):
    def test_classes(self, make_retriever: Callable[..., Any]) -> None:
        box = make_retriever(None)
        assert type(box) is POP3Retriever
        assert box.capabilities == frozenset({"delete"})


class TestPOP3S(DovecotPOP3, RetrieverContract):
    implicit_tls = True


class TestAsyncPOP3(DovecotPOP3, AsyncRetrieverContract):
    asynchronous = True

    def test_classes(self, make_retriever: Callable[..., Any]) -> None:
        box = make_retriever(None)
        assert type(box) is AsyncPOP3Retriever
        asyncio.run(box.aclose())


class TestAsyncPOP3S(DovecotPOP3, AsyncRetrieverContract):
    implicit_tls = True
    asynchronous = True


class TestCyrusPOP3(OnCyrus, TestPOP3):
    """The contract against Cyrus, the second server (plain text: TLS is the same code)."""


class TestAsyncCyrusPOP3(OnCyrus, TestAsyncPOP3):
    """The async contract against Cyrus."""


# -- failures, through proxies -----------------------------------------------------------------


class RewritingProxy:
    """A loopback TCP forwarder that rewrites bytes on the way (a man in the middle), and
    records what the client sent."""

    def __init__(
        self,
        port: int,
        *,
        downstream: Callable[[bytes], bytes] = lambda data: data,
        upstream: Callable[[bytes], bytes] = lambda data: data,
    ) -> None:
        self._target = port
        self._downstream = downstream
        self._upstream = upstream
        self.sent = bytearray()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self._target))
            self._sockets += [client, server]
            for source, sink, rewrite, record in (
                (server, client, self._downstream, False),
                (client, server, self._upstream, True),
            ):
                args = (source, sink, rewrite, record)
                threading.Thread(target=self._pump, args=args, daemon=True).start()

    def _pump(
        self,
        source: socket.socket,
        sink: socket.socket,
        rewrite: Callable[[bytes], bytes],
        record: bool,
    ) -> None:
        try:
            while data := source.recv(65536):
                if record:
                    self.sent += data
                sink.sendall(rewrite(data))
        except OSError:
            pass
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()


@pytest.fixture
def rewriting_proxy() -> Iterator[Callable[..., RewritingProxy]]:
    proxies: list[RewritingProxy] = []

    def make(port: int, **rewrites: Callable[[bytes], bytes]) -> RewritingProxy:
        proxy = RewritingProxy(port, **rewrites)
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.close()


def _subjects(count: int, extra: int = 0) -> list[bytes]:
    return [make_raw(i, extra=extra) for i in range(count)]


_RUNNER: asyncio.Runner | None = None
#: How late a timeout may fire on a loaded machine (2 shared cores, a full suite beside).
_SLACK = 0.75


def _run(asynchronous: bool, box: Any, method: str, *args: Any, **kwargs: Any) -> Any:
    """Call a retriever method, sync or async, returning a list for iterators.

    Async calls of one test share one event loop (the retriever's connection lives in it).
    """
    if not asynchronous:
        result = getattr(box, method)(*args, **kwargs)
        return list(result) if method in ("messages", "sync") else result

    async def call() -> Any:
        result = getattr(box, method)(*args, **kwargs)
        if method in ("messages", "sync"):
            return [message async for message in result]
        return await result

    assert _RUNNER is not None
    return _RUNNER.run(call())


def _close(asynchronous: bool, box: Any) -> None:
    if not asynchronous:
        box.close()
        return
    assert _RUNNER is not None
    _RUNNER.run(box.aclose())


@pytest.fixture(autouse=True)
def _event_loop() -> Iterator[None]:
    global _RUNNER
    with asyncio.Runner() as runner:
        _RUNNER = runner
        try:
            yield
        finally:
            _RUNNER = None


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
class TestFailures:
    @pytest.mark.reliability(
        area="POP3",
        fault="the connection is cut in the middle of a RETR (through a proxy to Dovecot)",
        outcome="ConnectionFailed; sync() again yields the rest, none lost, none twice",
    )
    def test_cut_mid_retr_loses_nothing_and_sync_resumes(
        self,
        mail_servers: MailServers,
        account: Account,
        tcp_proxy: Callable[[str, int], TCPProxy],
        asynchronous: bool,
    ) -> None:
        raws = _subjects(12, extra=20_000)
        mail_servers.append_many(account, raws)
        proxy = tcp_proxy(mail_servers.host, mail_servers.pop3_port)
        state = mailsync.SQLiteStateStore(":memory:")
        box = _connect(
            mail_servers,
            account,
            port=proxy.port,
            tls="none",
            asynchronous=asynchronous,
            state=state,
        )
        got: list[str] = []
        proxy.cut_after(70_000)  # inside the fourth RETR: greeting and listing are small

        async def consume_async() -> None:
            async for message in box.sync():
                got.append(message.subject)

        def consume() -> None:
            if asynchronous:
                assert _RUNNER is not None
                _RUNNER.run(consume_async())
                return
            for message in box.sync():
                got.append(message.subject)

        try:
            with pytest.raises(mailsync.ConnectionFailed) as caught:
                consume()
            assert proxy.cuts == 1, caught.value
            assert 0 < len(got) < 12
            rest = [m.subject for m in _run(asynchronous, box, "sync")]
        finally:
            _close(asynchronous, box)
        assert got + rest == [f"Message {i}" for i in range(12)]
        assert len(mail_servers.pop3_uidls(account)) == 12  # nothing lost on the server

    @pytest.mark.reliability(
        area="POP3",
        fault="the connection breaks before QUIT commits a DELE",
        outcome="ConnectionFailed saying the message was not deleted; it is still on the "
        "server (DELE without QUIT has no effect), and deleting again works",
    )
    def test_delete_is_reported_only_when_quit_succeeds(
        self,
        mail_servers: MailServers,
        account: Account,
        tcp_proxy: Callable[[str, int], TCPProxy],
        monkeypatch: pytest.MonkeyPatch,
        asynchronous: bool,
    ) -> None:
        mail_servers.append_many(account, _subjects(3))
        proxy = tcp_proxy(mail_servers.host, mail_servers.pop3_port)
        box = _connect(
            mail_servers, account, port=proxy.port, tls="none", asynchronous=asynchronous
        )
        try:
            first, *_ = _run(asynchronous, box, "messages")
            _break_before_quit(monkeypatch, proxy, asynchronous)
            with pytest.raises(mailsync.ConnectionFailed, match="reported not deleted"):
                _run(asynchronous, box, "delete", first)
            monkeypatch.undo()
            assert len(mail_servers.pop3_uidls(account)) == 3  # DELE without QUIT: no effect
            assert _run(asynchronous, box, "messages")[0].id == first.id
            _run(asynchronous, box, "delete", first)  # now QUIT succeeds
            assert first.uid not in mail_servers.pop3_uidls(account)
            assert len(_run(asynchronous, box, "messages")) == 2
        finally:
            _close(asynchronous, box)

    @pytest.mark.reliability(
        area="POP3",
        fault="delete() of an id the server does not have",
        outcome="MessageNotFound; nothing is deleted",
    )
    def test_delete_unknown_id_deletes_nothing(
        self, mail_servers: MailServers, account: Account, asynchronous: bool
    ) -> None:
        mail_servers.append_many(account, _subjects(2))
        box = _connect(mail_servers, account, asynchronous=asynchronous)
        try:
            first, _ = _run(asynchronous, box, "messages")
            with pytest.raises(mailsync.MessageNotFound):
                _run(asynchronous, box, "delete", [first.id, "no-such-id"])
            assert len(_run(asynchronous, box, "messages")) == 2
        finally:
            _close(asynchronous, box)

    def test_wrong_password(
        self, mail_servers: MailServers, account: Account, asynchronous: bool
    ) -> None:
        box = _connect(
            mail_servers, account, password="not-the-password", asynchronous=asynchronous
        )
        try:
            with pytest.raises(mailsync.AuthenticationError) as caught:
                _run(asynchronous, box, "messages")
            assert "not-the-password" not in str(caught.value)
        finally:
            _close(asynchronous, box)

    @pytest.mark.reliability(
        area="POP3",
        fault="STLS stripped from CAPA by a man in the middle",
        outcome="ConnectionFailed; nothing but CAPA was sent, no credential",
    )
    def test_stripped_stls_fails_closed(
        self,
        mail_servers: MailServers,
        account: Account,
        rewriting_proxy: Callable[..., RewritingProxy],
        asynchronous: bool,
    ) -> None:
        # A man in the middle hides STLS from CAPA: tls="starttls" (the pop3:// default)
        # must refuse to go on in plaintext, and must not have sent any credential.
        proxy = rewriting_proxy(
            mail_servers.pop3_port, downstream=lambda data: data.replace(b"STLS\r\n", b"")
        )
        box = _connect(mail_servers, account, port=proxy.port, asynchronous=asynchronous)
        try:
            with pytest.raises(mailsync.ConnectionFailed, match="STLS"):
                _run(asynchronous, box, "messages")
        finally:
            _close(asynchronous, box)
        assert bytes(proxy.sent) == b"CAPA\r\n"

    @pytest.mark.reliability(
        area="POP3",
        fault="a server without UIDL",
        outcome="ids from header digests; get() and sync() still work, nothing twice",
    )
    def test_server_without_uidl_falls_back_to_header_digests(
        self,
        mail_servers: MailServers,
        account: Account,
        rewriting_proxy: Callable[..., RewritingProxy],
        asynchronous: bool,
    ) -> None:
        # The proxy makes Dovecot look like a server without UIDL.
        proxy = rewriting_proxy(
            mail_servers.pop3_port,
            downstream=lambda data: data.replace(b"\r\nUIDL\r\n", b"\r\n"),
            upstream=lambda data: data.replace(b"UIDL\r\n", b"XUIDL\r\n"),
        )
        mail_servers.append_many(account, _subjects(3))
        box = _connect(
            mail_servers,
            account,
            port=proxy.port,
            tls="none",
            asynchronous=asynchronous,
            state=mailsync.SQLiteStateStore(":memory:"),
        )
        try:
            listed = _run(asynchronous, box, "messages")
            assert all(m.id.startswith("hdr:") and m.uid is None for m in listed)
            assert len({m.id for m in listed}) == 3
            assert _run(asynchronous, box, "get", listed[2].id).subject == "Message 2"
            assert [m.subject for m in _run(asynchronous, box, "sync")] == [
                "Message 0",
                "Message 1",
                "Message 2",
            ]
            mail_servers.append(account, make_raw(7))
            assert [m.subject for m in _run(asynchronous, box, "sync")] == ["Message 7"]
            assert _run(asynchronous, box, "sync") == []
        finally:
            _close(asynchronous, box)
        assert b"UIDL\r\n" in bytes(proxy.sent)  # asked, was refused, coped

    @pytest.mark.reliability(
        area="POP3",
        fault="something that is not POP3 answers (an IMAP-style greeting)",
        outcome="ProtocolError; not even CAPA is sent",
    )
    def test_garbage_from_the_server_is_a_protocol_error(
        self,
        mail_servers: MailServers,
        account: Account,
        rewriting_proxy: Callable[..., RewritingProxy],
        asynchronous: bool,
    ) -> None:
        # Something that is not POP3 answers (here: Dovecot's greeting made to look like IMAP).
        proxy = rewriting_proxy(
            mail_servers.pop3_port,
            downstream=lambda data: data.replace(b"+OK Dovecot", b"* OK Dovecot"),
        )
        box = _connect(mail_servers, account, port=proxy.port, asynchronous=asynchronous)
        try:
            with pytest.raises(mailsync.ProtocolError, match="greeting"):
                _run(asynchronous, box, "messages")
        finally:
            _close(asynchronous, box)
        assert bytes(proxy.sent) == b""  # not even CAPA went to a server that is not POP3

    @pytest.mark.reliability(
        area="POP3",
        fault="the server stops answering mid-session",
        outcome="MailTimeout after about the timeout; closing does not wait again",
    )
    def test_stalled_server_times_out(
        self,
        mail_servers: MailServers,
        account: Account,
        tcp_proxy: Callable[[str, int], TCPProxy],
        asynchronous: bool,
    ) -> None:
        # timeout=1.0 means a MailTimeout after about a second. The previous session's
        # RSET/QUIT is the first thing left unanswered; that is the timeout, not the start of
        # a new login that waits another one for a greeting (2 s sync, 3 s async with the
        # TLS close grace in between, before).
        mail_servers.append_many(account, _subjects(1))
        proxy = tcp_proxy(mail_servers.host, mail_servers.pop3_port)
        box = _connect(
            mail_servers, account, port=proxy.port, timeout=1.0, asynchronous=asynchronous
        )
        try:
            assert len(_run(asynchronous, box, "messages")) == 1
            proxy.stall()
            started = time.monotonic()
            with pytest.raises(mailsync.MailTimeout, match="within 1 s"):
                _run(asynchronous, box, "messages")
            assert 0.9 < time.monotonic() - started < 1.0 + _SLACK
            started = time.monotonic()
            _close(asynchronous, box)  # the stalled connection is gone: nothing to wait for
            assert time.monotonic() - started < _SLACK
        finally:
            proxy.resume()
            _close(asynchronous, box)

    def test_closing_a_stalled_session_waits_one_timeout(
        self,
        mail_servers: MailServers,
        account: Account,
        tcp_proxy: Callable[[str, int], TCPProxy],
        asynchronous: bool,
    ) -> None:
        # RSET/QUIT may wait one timeout for a server that stopped answering; the TLS
        # goodbye after it must not wait again (the async close added a 1 s grace, before).
        mail_servers.append_many(account, _subjects(1))
        proxy = tcp_proxy(mail_servers.host, mail_servers.pop3_port)
        box = _connect(
            mail_servers, account, port=proxy.port, timeout=1.0, asynchronous=asynchronous
        )
        try:
            assert len(_run(asynchronous, box, "messages")) == 1
            proxy.stall()
            started = time.monotonic()
            _close(asynchronous, box)
            assert time.monotonic() - started < 1.0 + _SLACK
        finally:
            proxy.resume()
            _close(asynchronous, box)

    def test_reading_marks_nothing_seen(
        self, mail_servers: MailServers, account: Account, asynchronous: bool
    ) -> None:
        mail_servers.append_many(account, _subjects(3))
        box = _connect(mail_servers, account, implicit_tls=True, asynchronous=asynchronous)
        try:
            listed = _run(asynchronous, box, "messages")
            _run(asynchronous, box, "get", listed[1].id)
            _run(asynchronous, box, "messages", headers_only=True)
            _run(asynchronous, box, "messages", limit=1)
        finally:
            _close(asynchronous, box)
        flags = mail_servers.imap_flags(account)
        assert not any("\\Seen" in f for f in flags.values()), flags

    def test_apop_asked_but_not_offered(
        self, mail_servers: MailServers, account: Account, asynchronous: bool
    ) -> None:
        box = _connect(mail_servers, account, apop=True, asynchronous=asynchronous)
        try:
            with pytest.raises(mailsync.Unsupported, match="APOP"):
                _run(asynchronous, box, "messages")
        finally:
            _close(asynchronous, box)

    def test_token_needs_an_oauth_mechanism(
        self, mail_servers: MailServers, account: Account, asynchronous: bool
    ) -> None:
        box = _connect(mail_servers, account, token="t0ken", asynchronous=asynchronous)
        try:
            with pytest.raises(mailsync.Unsupported, match="XOAUTH2") as caught:
                _run(asynchronous, box, "messages")
            assert "t0ken" not in str(caught.value)
        finally:
            _close(asynchronous, box)

    @pytest.mark.reliability(
        area="POP3",
        fault="a self-signed server certificate",
        outcome="ConnectionFailed unless verification is turned off",
    )
    def test_certificate_is_verified_by_default(
        self, mail_servers: MailServers, account: Account, asynchronous: bool
    ) -> None:
        box = _connect(
            mail_servers, account, implicit_tls=True, verify=True, asynchronous=asynchronous
        )
        try:
            with pytest.raises(mailsync.ConnectionFailed):
                _run(asynchronous, box, "messages")
        finally:
            _close(asynchronous, box)


def _break_before_quit(
    monkeypatch: pytest.MonkeyPatch, proxy: TCPProxy, asynchronous: bool
) -> None:
    """Cut the connection at the moment the client sends QUIT (after every DELE)."""
    if asynchronous:
        original_async = StreamChannel.write

        async def write_async(self: StreamChannel, data: bytes) -> None:
            if data == b"QUIT\r\n":
                proxy.cut_all()
                await asyncio.sleep(0.2)
            await original_async(self, data)

        monkeypatch.setattr(StreamChannel, "write", write_async)
        return
    original = SocketChannel.write

    def write(self: SocketChannel, data: bytes) -> None:
        if data == b"QUIT\r\n":
            proxy.cut_all()
            time.sleep(0.2)
        original(self, data)

    monkeypatch.setattr(SocketChannel, "write", write)


def test_polling_never_outpaces_login_delay(mail_servers: MailServers, account: Account) -> None:
    box = _connect(mail_servers, account)
    try:
        assert box._poll_wait(0.5) == 0.5
        box._last_login = time.monotonic()
        box._login_delay = 300  # as a server saying "LOGIN-DELAY 300" would
        assert 299 < box._poll_wait(0.5) <= 300
        assert 299 < box._poll_wait(120) <= 300
        assert box._poll_wait(900) == 900
    finally:
        box.close()


def test_get_while_a_listing_is_suspended(mail_servers: MailServers, account: Account) -> None:
    # The listing's pipelined RETRs are in flight on its own connection; get() must not
    # read their replies as its own.
    mail_servers.append_many(account, _subjects(5, extra=10_000))
    with _connect(mail_servers, account) as box:
        listing = box.messages()
        first = next(listing)
        again = box.get(first.id)
        assert again.raw == first.raw
        assert [m.subject for m in listing] == [f"Message {i}" for i in range(1, 5)]
        last = box.get(again.id)
        assert last.subject == "Message 0", last.raw[:200]


def test_async_get_while_a_listing_is_suspended(
    mail_servers: MailServers, account: Account
) -> None:
    mail_servers.append_many(account, _subjects(5, extra=10_000))

    async def scenario() -> None:
        async with _connect(mail_servers, account, asynchronous=True) as box:
            listing = box.messages()
            first = await anext(listing)
            again = await box.get(first.id)
            assert again.raw == first.raw
            assert [m.subject async for m in listing] == [f"Message {i}" for i in range(1, 5)]
            assert (await box.get(again.id)).subject == "Message 0"
            assert (await box.get(again.id)).subject == "Message 0"

    assert _RUNNER is not None
    _RUNNER.run(scenario())


def test_close_from_another_thread_ends_a_download(
    mail_servers: MailServers, account: Account, tcp_proxy: Callable[[str, int], TCPProxy]
) -> None:
    # More messages than one pipelining window: the reader must come back to the socket.
    mail_servers.append_many(account, _subjects(100, extra=20_000))
    proxy = tcp_proxy(mail_servers.host, mail_servers.pop3_port)
    box = _connect(mail_servers, account, port=proxy.port, tls="none", timeout=30)
    outcome: list[BaseException | None] = []
    first = threading.Event()

    def download() -> None:
        try:
            for _ in box.messages():
                first.set()
                proxy.stall()  # the reader now blocks in recv() for the next reply
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=download, daemon=True)
    thread.start()
    assert first.wait(20)
    time.sleep(0.2)
    started = time.monotonic()
    box.close()
    thread.join(10)
    proxy.resume()
    assert not thread.is_alive(), "close() did not wake the blocked reader"
    assert time.monotonic() - started < 5
    assert len(outcome) == 1
    assert isinstance(outcome[0], mailsync.ConnectionFailed)


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_sync_command_sequence(
    mail_servers: MailServers,
    account: Account,
    monkeypatch: pytest.MonkeyPatch,
    asynchronous: bool,
) -> None:
    # Pinned against Dovecot, which offers PIPELINING before login: the post-login CAPA goes
    # in the listing's write (RFC 2449 section 5), so a session costs no round trip for it.
    mail_servers.append_many(account, _subjects(2))
    writes = _record_writes(monkeypatch, asynchronous)
    box = _connect(mail_servers, account, tls="none", asynchronous=asynchronous, state=":memory:")
    try:
        assert len(_run(asynchronous, box, "sync")) == 2
        assert _run(asynchronous, box, "sync") == []  # a watch() poll: a new login
    finally:
        _close(asynchronous, box)
    login = [b"CAPA\r\n", b"AUTH PLAIN ...\r\n", b"CAPA\r\nUIDL\r\nLIST\r\n"]
    assert [_masked(data) for data in writes] == [
        *login,
        b"RETR 1\r\nRETR 2\r\nRSET\r\n",
        b"QUIT\r\n",  # that RSET was confirmed: nothing is marked any more
        *login,
        b"QUIT\r\n",
    ]
    flags = mail_servers.imap_flags(account)
    assert not any("\\Seen" in f for f in flags.values()), flags  # QUIT alone marked nothing


def _masked(data: bytes) -> bytes:
    """A write with the AUTH initial response (the credentials) left out."""
    return b"AUTH PLAIN ...\r\n" if data.startswith(b"AUTH PLAIN ") else data


def _record_writes(monkeypatch: pytest.MonkeyPatch, asynchronous: bool) -> list[bytes]:
    """Record every write of the driver, one entry per write (pipelined commands together)."""
    writes: list[bytes] = []
    if asynchronous:
        original_async = StreamChannel.write

        async def write_async(self: StreamChannel, data: bytes) -> None:
            writes.append(data)
            await original_async(self, data)

        monkeypatch.setattr(StreamChannel, "write", write_async)
        return writes
    original = SocketChannel.write

    def write(self: SocketChannel, data: bytes) -> None:
        writes.append(data)
        original(self, data)

    monkeypatch.setattr(SocketChannel, "write", write)
    return writes
