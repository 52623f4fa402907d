"""The async IMAP backend (aioimaplib) against the test suite's real Dovecot.

The Retriever contract runs over plaintext and implicit TLS; the rest covers what only IMAP
has: STARTTLS, logins, timeouts, tricky MIME read back byte-exact, a connection cut in the
middle of a FETCH and during IDLE (watch() must lose nothing and repeat nothing), folders
fetched concurrently, and the sync backend giving identical messages.

Seeding and checking go through tests/servers.py (stdlib imaplib/LMTP), never through mailsync.
Two things the test Dovecot cannot show (a server without STARTTLS, OAuth2 logins) are checked
against small scripted servers in this module.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import pytest

pytest.importorskip("aioimaplib")

import mailsync
from mailsync import Q
from mailsync.backends.imap_async import AsyncIMAPRetriever
from mailsync.protocol.imap_sync import Batching
from tests.contract import AsyncRetrieverContract, OnCyrus, make_raw
from tests.imap.conftest import TRICKY_MIME, imap_url
from tests.proxy import TCPProxy
from tests.servers import Account, MailboxClients, MailServers

# -- helpers -----------------------------------------------------------------------------------


def _connect(
    servers: MailboxClients,
    account: Account,
    transport: str = "plain",
    *,
    port: int | None = None,
    state: Any = ":memory:",
    **options: Any,
) -> mailsync.AsyncRetriever:
    """An async retriever for ``account`` (through ``port``, e.g. a proxy, if given)."""
    target = imap_url(servers, account, transport)
    url = target.url
    if port is not None:
        url = url.rsplit(":", 1)[0] + f":{port}"
    return mailsync.connect_async(url, state=state, **{**target.options, **options})


async def _collect(aiter: AsyncIterator[mailsync.Message]) -> list[mailsync.Message]:
    return [message async for message in aiter]


async def _seed(servers: MailServers, account: Account, raws: Iterable[bytes], **kw: Any) -> None:
    # imaplib blocks: keep it off the loop that runs the retriever under test.
    await asyncio.to_thread(servers.append_many, account, list(raws), **kw)


# -- the contract ------------------------------------------------------------------------------


class TestAsyncIMAPContract(AsyncRetrieverContract):
    """The shared Retriever contract, over plaintext and over implicit TLS (``seed`` and
    ``make_folder`` come from tests/imap/conftest.py)."""

    nul_byte = b"\x80"  # Dovecot's IMAP sends each NUL as 0x80 (its POP3 keeps them)

    @pytest.fixture(params=["plain", "tls"])
    def transport(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)

    @pytest.fixture
    def make_retriever(
        self, mail_store: MailboxClients, account: Account, transport: str
    ) -> Callable[[Any], mailsync.AsyncRetriever]:
        def make(state: Any, **options: Any) -> mailsync.AsyncRetriever:
            return _connect(mail_store, account, transport, state=state, **options)

        return make


class TestAsyncCyrusIMAPContract(OnCyrus, TestAsyncIMAPContract):
    """The contract against Cyrus, the second server (plain text: TLS is the same code)."""

    @pytest.fixture
    def transport(self) -> str:
        return "plain"


# -- connecting and logging in -----------------------------------------------------------------


async def test_registry_maps_the_async_scheme(mail_servers: MailServers, account: Account) -> None:
    box = _connect(mail_servers, account)
    assert isinstance(box, AsyncIMAPRetriever)
    await box.aclose()


async def test_starttls(mail_servers: MailServers, account: Account) -> None:
    await asyncio.to_thread(mail_servers.append, account, make_raw(1))
    async with _connect(mail_servers, account, "starttls") as box:
        (message,) = await _collect(box.messages())
        assert message.subject == "Message 1"


@pytest.mark.reliability(
    area="IMAP",
    fault="a self-signed server certificate, over implicit TLS and STARTTLS (async backend)",
    outcome="ConnectionFailed",
)
async def test_tls_verification_is_on_by_default(
    mail_servers: MailServers, account: Account
) -> None:
    # The test certificate is self-signed: the default context must refuse it.
    for transport in ("tls", "starttls"):
        box = _connect(mail_servers, account, transport, verify=True)
        with pytest.raises(mailsync.ConnectionFailed):
            await box.folders()
        await box.aclose()


@pytest.mark.reliability(
    area="IMAP",
    fault="STARTTLS stripped: the server does not offer it (async backend)",
    outcome="ConnectionFailed; no login command and no password is ever sent",
)
async def test_starttls_fails_closed_when_not_offered() -> None:
    # A server that never offers STARTTLS: the backend must not fall back to plaintext (and so
    # must never send the password). Dovecot always offers it, hence this scripted greeter.
    received: list[bytes] = []
    handlers: list[asyncio.Task[None]] = []

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(b"* OK IMAP4rev1 ready\r\n")
            while line := await reader.readline():
                received.append(line)
                tag = line.split(b" ", 1)[0]
                if b"CAPABILITY" in line.upper():
                    writer.write(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n" + tag + b" OK done\r\n")
                else:
                    writer.write(tag + b" BAD no\r\n")
        finally:
            writer.close()

    async def greeter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.append(task)
        await greet(reader, writer)

    server = await asyncio.start_server(greeter, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        box = mailsync.connect_async(
            f"imap://someone@127.0.0.1:{port}", password="hunter2", state=":memory:"
        )
        with pytest.raises(mailsync.ConnectionFailed, match="STARTTLS"):
            await box.folders()
        await box.aclose()
        await asyncio.wait_for(asyncio.gather(*handlers), 5)
    finally:
        server.close()
        await server.wait_closed()
    assert not any(b"hunter2" in line or b"AUTHENTICATE" in line for line in received)


class _ScriptedIMAP:
    """A tiny IMAP server for what the test Dovecot cannot do (it has no OAuth2 set up):
    greets, answers CAPABILITY, AUTHENTICATE (accepting the token "good"), LIST, LOGOUT."""

    def __init__(self, capabilities: str) -> None:
        self.capabilities = capabilities
        self.initial: list[bytes] = []  # decoded SASL initial responses
        self.answers: list[bytes] = []  # what the client sent after a failure challenge
        self.handlers: list[asyncio.Task[None]] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.wait_for(asyncio.gather(*self.handlers), 5)
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.append(task)
        try:
            writer.write(b"* OK ready\r\n")
            while line := await reader.readline():
                tag, _, rest = line.rstrip(b"\r\n").partition(b" ")
                reply = await self._answer(tag, rest.split(b" "), reader, writer)
                writer.write(reply)
                if rest.upper() == b"LOGOUT":
                    break
        finally:
            writer.close()

    async def _answer(
        self,
        tag: bytes,
        words: list[bytes],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bytes:
        command = words[0].upper()
        if command == b"CAPABILITY":
            return f"* CAPABILITY {self.capabilities}\r\n".encode() + tag + b" OK done\r\n"
        if command == b"LIST":
            return b'* LIST (\\HasNoChildren) "/" INBOX\r\n' + tag + b" OK done\r\n"
        if command == b"LOGOUT":
            return b"* BYE\r\n" + tag + b" OK bye\r\n"
        if command != b"AUTHENTICATE":
            return tag + b" BAD unknown\r\n"
        if len(words) < 3:  # no SASL-IR: ask for the initial response
            writer.write(b"+ \r\n")
            words.append((await reader.readline()).strip())
        initial = base64.b64decode(words[2])
        self.initial.append(initial)
        if b"auth=Bearer good\1" in initial:
            return tag + b" OK [CAPABILITY IMAP4rev1] logged in\r\n"
        writer.write(b"+ " + base64.b64encode(b'{"status":"401"}') + b"\r\n")
        self.answers.append((await reader.readline()).strip())
        return tag + b" NO [AUTHENTICATIONFAILED] invalid token\r\n"


@pytest.mark.parametrize(
    ("mechanism", "sasl_ir"),
    [("XOAUTH2", True), ("OAUTHBEARER", True), ("XOAUTH2", False)],
)
async def test_oauth_on_the_wire(mechanism: str, sasl_ir: bool) -> None:
    capabilities = f"IMAP4rev1 AUTH={mechanism}" + (" SASL-IR" if sasl_ir else "")
    scripted = _ScriptedIMAP(capabilities)
    async with scripted as port:
        url = f"imap://alice@example.test@127.0.0.1:{port}"
        bad = mailsync.connect_async(url, token="expired", tls="none", state=":memory:")
        with pytest.raises(mailsync.AuthenticationError):
            await bad.folders()
        await bad.aclose()
        good = mailsync.connect_async(url, token=lambda: "good", tls="none", state=":memory:")
        assert [f.name for f in await good.folders()] == ["INBOX"]
        await good.aclose()
    expected = {
        "XOAUTH2": b"user=alice@example.test\1auth=Bearer good\1\1",
        "OAUTHBEARER": (
            b"n,a=alice@example.test,\1host=127.0.0.1\1port=%d\1auth=Bearer good\1\1" % port
        ),
    }[mechanism]
    assert scripted.initial[-1] == expected
    # After the error challenge the client must answer so the server can say NO (an empty
    # line for XOAUTH2, a ^A for OAUTHBEARER) rather than leave the exchange hanging.
    assert scripted.answers == [b"" if mechanism == "XOAUTH2" else b"AQ=="]


async def test_wrong_password(mail_servers: MailServers, account: Account) -> None:
    box = _connect(mail_servers, account, password="not-the-password")
    with pytest.raises(mailsync.AuthenticationError) as info:
        await box.folders()
    assert "not-the-password" not in str(info.value)
    await box.aclose()


async def test_non_ascii_password(mail_servers: MailServers) -> None:
    account = mail_servers.new_account("u", password="pässwörd-ü")
    async with _connect(mail_servers, account) as box:
        assert "INBOX" in [f.name for f in await box.folders()]


async def test_token_callable_called_at_every_connect(
    mail_servers: MailServers, account: Account
) -> None:
    # Dovecot here offers no OAuth mechanism: the login fails clearly, after asking the
    # callable for a fresh token on each attempt.
    calls: list[int] = []

    def token() -> str:
        calls.append(1)
        return "an-access-token"

    box = _connect(mail_servers, account, password=None, token=token)
    for attempt in (1, 2):
        with pytest.raises(mailsync.AuthenticationError, match="OAUTHBEARER"):
            await box.folders()
        assert len(calls) == attempt
    await box.aclose()


@pytest.mark.reliability(
    area="IMAP",
    fault="a server that never answers, at connect and after login (async backend)",
    outcome="MailTimeout within the timeouts asked for",
)
async def test_connect_and_read_timeouts(
    mail_servers: MailServers, account: Account, tcp_proxy: Callable[[str, int], TCPProxy]
) -> None:
    proxy = tcp_proxy("127.0.0.1", mail_servers.imap_port)
    timeout = mailsync.Timeout(read=0.5, connect=0.5)
    await _seed(mail_servers, account, [make_raw(1)])

    proxy.stall()  # accepted, but the greeting never comes
    box = _connect(mail_servers, account, port=proxy.port, timeout=timeout)
    with pytest.raises(mailsync.MailTimeout):
        await box.folders()
    proxy.resume()
    proxy.cut_all()

    assert [m.subject for m in await _collect(box.messages())] == ["Message 1"]
    proxy.stall()  # connected and logged in, then the server goes quiet
    with pytest.raises(mailsync.MailTimeout):
        await _collect(box.messages())
    proxy.resume()
    assert [m.subject for m in await _collect(box.messages())] == ["Message 1"]
    await box.aclose()


async def test_connection_refused(mail_servers: MailServers, account: Account) -> None:
    with TCPProxy("127.0.0.1", mail_servers.imap_port) as proxy:
        proxy.refuse()
        box = _connect(mail_servers, account, port=proxy.port)
        with pytest.raises(mailsync.ConnectionFailed):
            await box.folders()
        await box.aclose()


# -- reading -----------------------------------------------------------------------------------


async def test_tricky_mime_is_read_back_byte_exact(
    mail_servers: MailServers, account: Account
) -> None:
    corpus = list(TRICKY_MIME.values())
    await _seed(mail_servers, account, corpus)
    # What the server holds, read with stdlib imaplib: the bytes to get back exactly.
    expected = [
        raw for _uid, _flags, raw in await asyncio.to_thread(mail_servers.imap_messages, account)
    ]
    async with _connect(mail_servers, account) as box:
        got = await _collect(box.messages())
        heads = await _collect(box.messages(headers_only=True))
        again = [await box.get(m.id) for m in got]
    assert len(expected) == len(corpus)
    assert [m.raw for m in got] == expected
    assert [m.raw for m in again] == expected
    for message, head in zip(got, heads, strict=True):
        parsed = email.message_from_bytes(message.raw, policy=email.policy.default)
        assert message.email.as_bytes() == parsed.as_bytes()
        assert message.size == len(message.raw)
        assert head.headers_only
        assert message.raw.startswith(head.raw)
        assert head.size == message.size


async def test_aioimaplib_parser_and_fast_reader_agree(
    mail_servers: MailServers, account: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Bulk FETCH goes through the pure reader; aioimaplib's own parser is the fallback.
    await _seed(mail_servers, account, [*TRICKY_MIME.values(), make_raw(1, extra=300_000)])
    async with _connect(mail_servers, account) as box:
        fast = await _collect(box.messages())
        fast_heads = await _collect(box.messages(headers_only=True))
    monkeypatch.setattr("mailsync.backends._aioimap.Session.fast_fetch", False)
    async with _connect(mail_servers, account) as box:
        slow = await _collect(box.messages())
        slow_heads = await _collect(box.messages(headers_only=True))
    assert len(fast) == len(TRICKY_MIME) + 1
    assert fast == slow
    assert fast_heads == slow_heads


async def test_non_ascii_folder_names(mail_servers: MailServers, account: Account) -> None:
    name = "Prüfung/Ärger & Co"
    await asyncio.to_thread(mail_servers.create_folder, account, name)
    await _seed(mail_servers, account, [make_raw(1)], folder=name)
    async with _connect(mail_servers, account) as box:
        assert name in [f.name for f in await box.folders()]
        (message,) = await _collect(box.messages(name))
        assert message.folder == name
        assert (await box.get(message.id)).raw == message.raw
        await box.move(message, "INBOX")
        assert [m.subject for m in await _collect(box.messages())] == ["Message 1"]


async def test_query_with_non_ascii_text(mail_servers: MailServers, account: Account) -> None:
    await _seed(
        mail_servers,
        account,
        [make_raw(1, subject="Grüße aus Köln"), make_raw(2, subject="Hello")],
    )
    async with _connect(mail_servers, account) as box:
        found = await _collect(box.messages(query=Q(subject="köln")))
        assert [m.subject for m in found] == ["Grüße aus Köln"]
        found = await _collect(box.messages(query=~Q(subject="köln"), headers_only=True))
        assert [m.subject for m in found] == ["Hello"]


@pytest.mark.reliability(
    area="IMAP",
    fault="query text holding CRLF and a command (async backend)",
    outcome="refused with ConfigError; no command is injected",
)
async def test_search_text_cannot_inject_a_command(
    mail_servers: MailServers, account: Account
) -> None:
    await _seed(mail_servers, account, [make_raw(1)])
    async with _connect(mail_servers, account) as box:
        with pytest.raises(mailsync.ConfigError):
            await _collect(box.messages(query=Q(subject='x"\r\nA1 DELETE INBOX\r\n')))
        assert [m.subject for m in await _collect(box.messages())] == ["Message 1"]


async def test_streams_in_bounded_batches(
    mail_servers: MailServers, account: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _seed(mail_servers, account, [make_raw(i) for i in range(25)])
    sizes: list[int] = []
    original = AsyncIMAPRetriever._fetch

    async def spy(self: Any, folder: str, uidvalidity: int, uids: Any, items: str) -> Any:
        sizes.append(len(uids))
        return await original(self, folder, uidvalidity, uids, items)

    monkeypatch.setattr(AsyncIMAPRetriever, "_fetch", spy)
    async with _connect(mail_servers, account) as box:
        assert isinstance(box, AsyncIMAPRetriever)
        box.batching = Batching(first=4, most=10, budget=1)
        subjects = [m.subject for m in await _collect(box.messages())]
    assert subjects == [f"Message {i}" for i in range(25)]
    assert sizes[0] == 4
    assert max(sizes) <= 10
    assert sum(sizes) == 25


@pytest.mark.parametrize("hidden", [{"MOVE"}, {"MOVE", "UIDPLUS"}])
async def test_move_without_move_extension(
    mail_servers: MailServers,
    account: Account,
    monkeypatch: pytest.MonkeyPatch,
    hidden: set[str],
) -> None:
    # COPY + STORE \Deleted + (UID) EXPUNGE, for servers without MOVE (or UIDPLUS).
    from mailsync.backends import _aioimap

    original = _aioimap.Session._set_capabilities

    def without(self: Any, names: Iterable[str]) -> None:
        original(self, [name for name in names if name.upper() not in hidden])

    monkeypatch.setattr(_aioimap.Session, "_set_capabilities", without)
    await asyncio.to_thread(mail_servers.create_folder, account, "Elsewhere")
    await _seed(mail_servers, account, [make_raw(i) for i in range(3)])
    async with _connect(mail_servers, account) as box:
        first, second, third = await _collect(box.messages())
        await box.move([first, third], "Elsewhere")
        assert [m.subject for m in await _collect(box.messages())] == ["Message 1"]
        moved = await _collect(box.messages("Elsewhere"))
        assert [m.subject for m in moved] == ["Message 0", "Message 2"]
        assert [m.raw for m in moved] == [first.raw, third.raw]
        await box.delete(second)
        assert await _collect(box.messages()) == []
        assert [m.subject for m in await _collect(box.messages("Trash"))] == ["Message 1"]


async def test_reading_never_blocks_the_event_loop(
    mail_servers: MailServers, account: Account
) -> None:
    await _seed(mail_servers, account, [make_raw(i, extra=300_000) for i in range(40)])
    loop = asyncio.get_running_loop()
    gaps: list[float] = []
    reading = True

    async def ticker() -> None:
        while reading:
            before = loop.time()
            await asyncio.sleep(0.005)
            gaps.append(loop.time() - before)

    task = asyncio.create_task(ticker())
    try:
        async with _connect(mail_servers, account, "tls") as box:
            assert len(await _collect(box.messages())) == 40
    finally:
        reading = False
        await task
    assert len(gaps) > 5
    assert max(gaps) < 0.5, f"the loop stalled for {max(gaps):.2f}s"


async def test_folders_concurrently_on_separate_retrievers(
    mail_servers: MailServers, account: Account
) -> None:
    names = [f"Box{i}" for i in range(4)]
    for i, name in enumerate(names):
        await asyncio.to_thread(mail_servers.create_folder, account, name)
        await _seed(mail_servers, account, [make_raw(10 * i + j) for j in range(5)], folder=name)
    boxes = [_connect(mail_servers, account) for _ in names]
    try:
        results = await asyncio.gather(
            *(_collect(box.messages(name)) for box, name in zip(boxes, names, strict=True))
        )
    finally:
        await asyncio.gather(*(box.aclose() for box in boxes))
    for i, (name, messages) in enumerate(zip(names, results, strict=True)):
        assert [m.subject for m in messages] == [f"Message {10 * i + j}" for j in range(5)]
        assert {m.folder for m in messages} == {name}


@pytest.mark.reliability(
    area="IMAP",
    fault="UIDVALIDITY changes: the folder is deleted and recreated (async backend)",
    outcome="sync() resyncs and yields no message twice",
)
async def test_folder_recreated_resyncs_without_repeats(
    mail_servers: MailServers, account: Account
) -> None:
    raws = [make_raw(i) for i in range(3)]
    await asyncio.to_thread(mail_servers.create_folder, account, "Work")
    await _seed(mail_servers, account, raws, folder="Work")
    async with _connect(mail_servers, account) as box:
        assert len(await _collect(box.sync("Work"))) == 3
        await asyncio.to_thread(mail_servers.delete_folder, account, "Work")
        await asyncio.to_thread(mail_servers.create_folder, account, "Work")
        await _seed(mail_servers, account, [*raws, make_raw(7)], folder="Work")
        assert [m.subject for m in await _collect(box.sync("Work"))] == ["Message 7"]
        assert await _collect(box.sync("Work")) == []


# -- broken connections ------------------------------------------------------------------------


async def _watch_into(
    box: mailsync.AsyncRetriever,
    got: list[mailsync.Message],
    errors: list[BaseException],
    *,
    poll_interval: float = 0.2,
) -> None:
    try:
        async for message in box.watch(poll_interval=poll_interval):
            got.append(message)
    except BaseException as exc:
        errors.append(exc)
        raise


async def _until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.02)


def _idling(box: mailsync.AsyncRetriever) -> bool:
    session = getattr(box, "_session_now", None)
    client = getattr(session, "_client", None)
    return bool(client is not None and client.protocol.has_pending_idle_command())


@pytest.mark.reliability(
    area="IMAP",
    fault="the connection is cut mid-FETCH and during IDLE while watch() runs (async backend)",
    outcome="watch() reconnects and yields every new message once",
)
async def test_watch_survives_a_cut_mid_fetch_and_during_idle(
    mail_servers: MailServers, account: Account, tcp_proxy: Callable[[str, int], TCPProxy]
) -> None:
    proxy = tcp_proxy("127.0.0.1", mail_servers.imap_port)
    first = [make_raw(i, extra=40_000) for i in range(30)]
    await _seed(mail_servers, account, first)
    # About 1.2 MB go down for the first 30 messages: cut the first connection well inside.
    proxy.cut_after(500_000)
    box = _connect(mail_servers, account, port=proxy.port)
    got: list[mailsync.Message] = []
    errors: list[BaseException] = []
    watcher = asyncio.create_task(_watch_into(box, got, errors))
    try:
        await _until(lambda: len(got) >= 30 or bool(errors))
        assert proxy.cuts == 1, "the cut mid-FETCH did not happen"
        await _until(lambda: _idling(box) or bool(errors))

        # Cut while idling; new mail arrives while the client is away.
        with proxy.refusing():
            proxy.cut_all()
            await _seed(mail_servers, account, [make_raw(100), make_raw(101)])
        await _until(lambda: len(got) >= 32 or bool(errors))
        await _until(lambda: _idling(box) or bool(errors))

        # And mail arriving while it idles is announced by IDLE.
        await _seed(mail_servers, account, [make_raw(102)])
        await _until(lambda: len(got) >= 33 or bool(errors))
    finally:
        await box.aclose()
        await asyncio.wait_for(watcher, 10)
    assert not errors, errors
    assert proxy.cuts == 2
    subjects = [m.subject for m in got]
    assert subjects == [f"Message {i}" for i in [*range(30), 100, 101, 102]]
    assert len({m.id for m in got}) == len(got)


async def test_idle_is_renewed_and_still_sees_new_mail(
    mail_servers: MailServers, account: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailsync.backends import _aioimap

    idles: list[float] = []
    original = _aioimap.Session.idle

    async def counting(self: Any, seconds: float) -> bool:
        idles.append(seconds)
        return await original(self, seconds)

    monkeypatch.setattr(_aioimap.Session, "idle", counting)
    box = _connect(mail_servers, account)
    assert isinstance(box, AsyncIMAPRetriever)
    box.idle_renew = 0.2  # stands in for the 25 minutes a real server allows
    got: list[mailsync.Message] = []
    errors: list[BaseException] = []
    watcher = asyncio.create_task(_watch_into(box, got, errors, poll_interval=60.0))
    try:
        await _until(lambda: len(idles) >= 3 or bool(errors))
        assert max(idles) <= 0.2
        await _seed(mail_servers, account, [make_raw(1)])
        await _until(lambda: len(got) == 1 or bool(errors))
    finally:
        await box.aclose()
        await asyncio.wait_for(watcher, 10)
    assert not errors
    assert [m.subject for m in got] == ["Message 1"]


async def test_mail_announced_by_idle_is_synced_without_select_or_search(
    mail_servers: MailServers, account: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    # After IDLE announced mail, the sync uses the folder as selected and the next IDLE
    # waits without a SEARCH: the session's EXISTS count says whether mail came meanwhile.
    # Mail that comes while a message is being handled is announced when IDLE starts, and
    # must still arrive well before the watch's 60 s safety-net sync.
    searches_after: list[int] = []
    original = AsyncIMAPRetriever._newest_uid

    async def counting(self: Any, session: Any) -> int:
        newest = await original(self, session)
        searches_after.append(newest)
        return newest

    monkeypatch.setattr(AsyncIMAPRetriever, "_newest_uid", counting)
    box = _connect(mail_servers, account)
    assert isinstance(box, AsyncIMAPRetriever)
    got: list[mailsync.Message] = []
    selects: list[int] = []

    async def watch() -> None:
        async for message in box.watch(poll_interval=60.0):
            got.append(message)
            session = box._session_now
            assert session is not None
            selects.append(session.selects)
            if len(got) == 1:  # the next one arrives while this one is handled
                await _seed(mail_servers, account, [make_raw(2)])

    watcher = asyncio.create_task(watch())
    try:
        await _until(lambda: _idling(box) or watcher.done())
        await _seed(mail_servers, account, [make_raw(1)])
        await _until(lambda: len(got) == 2 or watcher.done())
        await _until(lambda: _idling(box) or watcher.done())
    finally:
        await box.aclose()
        await asyncio.wait_for(watcher, 10)
    assert [m.subject for m in got] == ["Message 1", "Message 2"]
    assert selects == [1, 1]  # the first sync's SELECT only
    assert searches_after == []


@pytest.mark.reliability(
    area="IMAP",
    fault="mail arrives between a sync and the IDLE that follows, announced only at the end "
    "of the command that checks for it (Dovecot's UID SEARCH answers without it)",
    outcome="the wait ends at once and the next sync() yields it (async backend)",
)
async def test_mail_arriving_between_sync_and_idle_ends_the_wait(
    mail_servers: MailServers, account: Account
) -> None:
    box = _connect(mail_servers, account)
    try:
        assert await _collect(box.sync()) == []
        await _seed(mail_servers, account, [make_raw(1)])
        # Without it, the wait idles until its timeout (ten minutes in watch_many): IDLE
        # never repeats the EXISTS that came with the check before it.
        await asyncio.wait_for(box._wait_for_change("INBOX", 600.0), 60)
        got = await _collect(box.sync())
    finally:
        await box.aclose()
    assert [m.subject for m in got] == ["Message 1"]


async def test_mail_announced_while_idle_ends_is_not_dropped(
    mail_servers: MailServers, account: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailsync.backends import _aioimap

    original = _aioimap.Session._idle_done
    seeded: list[bool] = []

    async def late_mail(self: Any, idle: Any) -> None:
        # The wait has just timed out (an IDLE renewal): mail announced before DONE is
        # answered waits in the queue, and the next IDLE starts by emptying it.
        if not seeded:
            seeded.append(True)
            await _seed(mail_servers, account, [make_raw(1)])
            await _until(lambda: not self._client.protocol.idle_queue.empty())
        await original(self, idle)

    monkeypatch.setattr(_aioimap.Session, "_idle_done", late_mail)
    box = _connect(mail_servers, account)
    assert isinstance(box, AsyncIMAPRetriever)
    box.idle_renew = 0.2
    try:
        assert await _collect(box.sync()) == []
        await asyncio.wait_for(box._wait_for_change("INBOX", 600.0), 60)
        got = await _collect(box.sync())
    finally:
        await box.aclose()
    assert seeded
    assert [m.subject for m in got] == ["Message 1"]


async def test_mail_announced_with_the_reply_before_idle_is_not_missed(
    mail_servers: MailServers, account: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message stored while the last command before IDLE runs is announced (EXISTS) with
    that command's reply, which aioimaplib drops, and never again: watch() must still see it
    now, not at the next safety-net sync minutes later."""
    original = AsyncIMAPRetriever._search_criteria
    checks: list[object] = []

    async def arriving_meanwhile(self: Any, session: Any, criteria: Any, *args: Any) -> list[int]:
        found = await original(self, session, criteria, *args)
        checks.append(criteria)
        if len(checks) == 1:
            # The sync's search ran before the message was stored; the server then says so
            # in the reply to whatever command comes next (here another search).
            await _seed(mail_servers, account, [make_raw(1)])
            await session.command("SEARCH", "UID 4294967295", uid=True)
        return found

    monkeypatch.setattr(AsyncIMAPRetriever, "_search_criteria", arriving_meanwhile)
    box = _connect(mail_servers, account)
    got: list[mailsync.Message] = []
    errors: list[BaseException] = []
    watcher = asyncio.create_task(_watch_into(box, got, errors, poll_interval=600.0))
    try:
        await _until(lambda: len(got) == 1 or bool(errors), timeout=60)
    finally:
        await box.aclose()
        await asyncio.wait_for(watcher, 10)
    assert not errors
    assert [m.subject for m in got] == ["Message 1"]


async def test_watch_polls_with_noop_without_idle(
    mail_servers: MailServers, account: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailsync.backends import _aioimap

    original = _aioimap.Session._set_capabilities

    def without_idle(self: Any, names: Iterable[str]) -> None:
        original(self, [name for name in names if name.upper() != "IDLE"])

    monkeypatch.setattr(_aioimap.Session, "_set_capabilities", without_idle)
    box = _connect(mail_servers, account)
    got: list[mailsync.Message] = []
    errors: list[BaseException] = []
    watcher = asyncio.create_task(_watch_into(box, got, errors, poll_interval=0.2))
    try:
        await _seed(mail_servers, account, [make_raw(1)])
        await _until(lambda: len(got) == 1 or bool(errors))
        await _seed(mail_servers, account, [make_raw(2)])
        await _until(lambda: len(got) == 2 or bool(errors))
        assert not _idling(box)
    finally:
        await box.aclose()
        await asyncio.wait_for(watcher, 10)
    assert not errors
    assert [m.subject for m in got] == ["Message 1", "Message 2"]


async def test_aclose_ends_watch_promptly(mail_servers: MailServers, account: Account) -> None:
    box = _connect(mail_servers, account)
    got: list[mailsync.Message] = []
    errors: list[BaseException] = []
    watcher = asyncio.create_task(_watch_into(box, got, errors))
    await _until(lambda: _idling(box) or bool(errors))
    await box.aclose()
    await asyncio.wait_for(watcher, 5)
    assert not errors


# -- the sync backend agrees -------------------------------------------------------------------


async def test_sync_and_async_backends_give_identical_messages(
    mail_servers: MailServers, account: Account
) -> None:
    pytest.importorskip("mailsync.backends.imap")
    await asyncio.to_thread(mail_servers.create_folder, account, "Ünïcode/Sub")
    await _seed(mail_servers, account, [*TRICKY_MIME.values(), make_raw(5)])
    await _seed(mail_servers, account, [make_raw(6)], flags=["\\Seen", "$Label1"])
    target = imap_url(mail_servers, account)
    query = Q(subject="message") | Q(seen=True)

    def read_sync() -> tuple[Any, ...]:
        with mailsync.connect(target.url, state=":memory:", **target.options) as box:
            messages = list(box.messages())
            return (
                messages,
                list(box.messages(headers_only=True)),
                list(box.messages(query=query)),
                box.folders(),
                box.get(messages[-1].id),
                list(box.sync()),
            )

    expected = await asyncio.to_thread(read_sync)
    async with _connect(mail_servers, account) as box:
        messages = await _collect(box.messages())
        got = (
            messages,
            await _collect(box.messages(headers_only=True)),
            await _collect(box.messages(query=query)),
            await box.folders(),
            await box.get(messages[-1].id),
            await _collect(box.sync()),
        )
    assert [(m.id, m.uid, m.flags, m.size, m.raw, m.internal_date) for m in got[0]] == [
        (m.id, m.uid, m.flags, m.size, m.raw, m.internal_date) for m in expected[0]
    ]
    assert got == expected


@pytest.mark.reliability(
    area="IMAP",
    fault="the connection breaks after N bytes from the server, from the greeting to the last "
    "FETCH (async backend)",
    inputs="byte offsets",
    outcome="sync() again yields every message exactly once",
)
@pytest.mark.parametrize("cut", [0, 1, 90, 250, 600, 1000, 1700, 3000, 9000, 24000, 33000])
async def test_sync_broken_anywhere_loses_and_repeats_nothing(
    mail_servers: MailServers,
    account: Account,
    tcp_proxy: Callable[[str, int], TCPProxy],
    tmp_path: Any,
    cut: int,
) -> None:
    # Byte counts from the greeting, through login, EXAMINE and SEARCH, into the FETCH batches.
    proxy = tcp_proxy("127.0.0.1", mail_servers.imap_port)
    await _seed(mail_servers, account, [make_raw(n, extra=3000) for n in range(12)])
    expected = [f"Message {n}" for n in range(12)]
    state = str(tmp_path / "state.sqlite")
    box = _connect(mail_servers, account, port=proxy.port, state=state, batch_size=7)
    got: list[str] = []
    failures: list[BaseException] = []
    async with box:
        proxy.cut_after(cut)
        for _attempt in range(3):
            try:
                async for message in box.sync():
                    got.append(message.subject)
                break
            except (mailsync.ConnectionFailed, mailsync.MailTimeout) as exc:
                failures.append(exc)
        assert await _collect(box.sync()) == []
    assert got == expected
    assert len(failures) == proxy.cuts == 1


@pytest.mark.parametrize("transport", ["plain", "starttls"])
async def test_an_incremental_sync_costs_no_needless_round_trip(
    mail_servers: MailServers,
    account: Account,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
    transport: str,
) -> None:
    # The greeting's and the login reply's capabilities are used (after STARTTLS they are
    # asked again: what was said before TLS is not trusted); CONDSTORE comes with SELECT,
    # PLAIN's answer with AUTHENTICATE (SASL-IR).
    state = str(tmp_path / "state.sqlite")
    await _seed(mail_servers, account, [make_raw(1)])
    async with _connect(mail_servers, account, transport, state=state) as box:
        await _collect(box.sync())
    await _seed(mail_servers, account, [make_raw(2)])
    import aioimaplib

    sent: list[str] = []
    send = aioimaplib.IMAP4ClientProtocol.send

    def recording(self: Any, line: str, scrub: str | None = None) -> None:
        sent.append(" ".join(line.split(" ", 3)[1:3]).upper())
        send(self, line, scrub)

    monkeypatch.setattr(aioimaplib.IMAP4ClientProtocol, "send", recording)
    async with _connect(mail_servers, account, transport, state=state) as box:
        assert [m.subject for m in await _collect(box.sync())] == ["Message 2"]
    tls = ["STARTTLS", "CAPABILITY"] if transport == "starttls" else []
    # UID FETCH is written by the fast reader's own path, not through aioimaplib's send.
    assert sent == [*tls, "AUTHENTICATE PLAIN", "SELECT INBOX", "UID SEARCH", "LOGOUT"]
