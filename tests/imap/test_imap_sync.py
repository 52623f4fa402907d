"""The sync IMAP backend against the test Dovecot: the shared contract over plain text and
TLS, the tricky MIME corpus, reconnects through a breaking proxy, resync after a folder is
recreated, and every error the issue names."""

from __future__ import annotations

import base64
import email
import email.policy
import imaplib
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import pytest

import mailsync
from mailsync.backends.imap import IMAPRetriever
from mailsync.protocol import imap as proto
from tests.contract import OnCyrus, RetrieverContract, make_raw, wait_for
from tests.imap.conftest import TRICKY_MIME, IMAPTarget, Seed, imap_url
from tests.proxy import TCPProxy
from tests.servers import Account, MailboxClients, MailServers


def connect(target: IMAPTarget, state: Any = ":memory:", **extra: Any) -> IMAPRetriever:
    box = mailsync.connect(target.url, state=state, **{**target.options, **extra})
    assert isinstance(box, IMAPRetriever)
    return box


class TestIMAPContract(RetrieverContract):
    """The contract over plain text (``tls="none"``)."""

    transport = "plain"
    nul_byte = b"\x80"  # Dovecot's IMAP sends each NUL as 0x80 (its POP3 keeps them)

    @pytest.fixture
    def make_retriever(
        self, mail_store: MailboxClients, account: Account
    ) -> Callable[[Any], IMAPRetriever]:
        target = imap_url(mail_store, account, self.transport)
        return lambda state, **options: connect(target, state, **options)


class TestIMAPContractTLS(TestIMAPContract):
    """The contract again over implicit TLS with certificate verification."""

    transport = "tls"


class TestCyrusIMAPContract(OnCyrus, TestIMAPContract):
    """The contract against Cyrus, the second server (plain text: TLS is the same code)."""


# -- fixtures for the tests below ---------------------------------------------------------------


@pytest.fixture
def target(mail_servers: MailServers, account: Account) -> IMAPTarget:
    return imap_url(mail_servers, account)


@pytest.fixture
def box(target: IMAPTarget) -> Iterator[IMAPRetriever]:
    retriever = connect(target)
    try:
        yield retriever
    finally:
        retriever.close()


# -- the tricky MIME corpus ---------------------------------------------------------------------


def test_tricky_mime_reads_back_byte_exact_and_decodes_like_the_stdlib(
    box: IMAPRetriever, mail_servers: MailServers, account: Account
) -> None:
    names = list(TRICKY_MIME)
    mail_servers.append_many(account, [TRICKY_MIME[name] for name in names])
    stored = [raw for _uid, _flags, raw in mail_servers.imap_messages(account)]
    got = list(box.messages())
    assert len(got) == len(names)
    for name, message, raw in zip(names, got, stored, strict=True):
        assert message.raw == raw, name  # what the server holds, byte for byte
        if b"\r" in TRICKY_MIME[name] and b"\n\n" not in TRICKY_MIME[name]:
            assert message.raw == TRICKY_MIME[name], name
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        assert message.email.as_bytes() == parsed.as_bytes(), name
        assert message.size == len(raw), name
        body = parsed.get_body(("plain",))
        try:
            content = body.get_content() if body is not None else ""
        except LookupError:  # an unknown charset: the stdlib gives up, mailsync falls back
            content = ""
        if content and "\ufffd" not in content:  # where the stdlib decodes cleanly, we agree
            # (The final line break before a missing closing boundary is the stdlib's guess.)
            assert message.text.rstrip("\n") == content.replace("\r\n", "\n").rstrip("\n"), name
    by_name = dict(zip(names, got, strict=True))
    assert by_name["latin1-8bit-undeclared"].subject == "Grüße aus Köln"
    assert by_name["alternative-base64-utf8"].subject == "😀 émoji"
    assert by_name["alternative-base64-utf8"].text == "élève 😀 text\n"
    nested = by_name["nested-with-rfc822-and-rfc2231"]
    assert "€ résumé.pdf" in [a.filename for a in nested.attachments]
    assert by_name["literal-lookalikes-in-body"].subject == "{42}"
    assert by_name["no-message-id-no-date"].message_id is None


def test_tricky_mime_headers_only_and_get(
    box: IMAPRetriever, mail_servers: MailServers, account: Account
) -> None:
    mail_servers.append_many(account, list(TRICKY_MIME.values()))
    stored = [raw for _uid, _flags, raw in mail_servers.imap_messages(account)]
    heads = list(box.messages(headers_only=True))
    for head, raw in zip(heads, stored, strict=True):
        assert head.headers_only
        assert raw.startswith(head.raw)
        assert box.get(head.id).raw == raw


# -- reconnects through a breaking proxy --------------------------------------------------------


@pytest.fixture
def proxied(
    mail_servers: MailServers, account: Account, tcp_proxy: Callable[[str, int], TCPProxy]
) -> tuple[IMAPTarget, TCPProxy]:
    proxy = tcp_proxy(mail_servers.host, mail_servers.imap_port)
    url = f"imap://{account.user}@{proxy.host}:{proxy.port}"
    options = {"password": account.password, "tls": "none", "timeout": 10.0, "batch_size": 7}
    return IMAPTarget(url, options), proxy


def _tls_through(
    proxy: TCPProxy, servers: MailServers, account: Account, **options: Any
) -> IMAPTarget:
    """``account`` over implicit TLS through ``proxy`` (in front of the imaps port)."""
    url = f"imaps://{account.user}@{proxy.host}:{proxy.port}"
    return IMAPTarget(
        url, {"password": account.password, "verify": servers.ssl_context(), **options}
    )


def _seed_numbered(
    servers: MailServers, account: Account, numbers: range, extra: int = 3000
) -> list[str]:
    servers.append_many(account, [make_raw(n, extra=extra) for n in numbers])
    return [f"Message {n}" for n in numbers]


@pytest.mark.reliability(
    area="IMAP",
    fault="the connection is cut in the middle of a FETCH batch (sync backend, through a proxy "
    "to Dovecot)",
    outcome="ConnectionFailed; the next sync() reconnects by itself and yields the rest, none "
    "twice",
)
def test_cut_mid_fetch_then_sync_again_loses_and_repeats_nothing(
    proxied: tuple[IMAPTarget, TCPProxy], mail_servers: MailServers, account: Account
) -> None:
    target, proxy = proxied
    expected = _seed_numbered(mail_servers, account, range(30))
    got: list[str] = []
    with connect(target) as box:
        proxy.cut_after(45_000)  # in the middle of the second or third batch
        run = box.sync()
        with pytest.raises(mailsync.ConnectionFailed):
            got.extend(message.subject for message in run)
        assert 0 < len(got) < 30
        assert proxy.cuts == 1
        got.extend(m.subject for m in box.sync())  # reconnects by itself
    assert got == expected


def _sync_until_whole(box: IMAPRetriever) -> tuple[list[str], list[BaseException]]:
    """``sync()`` again after each broken run (at most 3): the subjects delivered and the
    failures seen; then checks that the cursor says everything was delivered."""
    got: list[str] = []
    failures: list[BaseException] = []
    for _attempt in range(3):
        try:
            got.extend(message.subject for message in box.sync())
            break
        except (mailsync.ConnectionFailed, mailsync.MailTimeout) as exc:
            failures.append(exc)
    assert list(box.sync()) == []
    return got, failures


# Server-to-client byte counts after which the connection breaks: in the greeting, the
# CAPABILITY reply, the login reply, EXAMINE, SEARCH, and all through the FETCH batches.
CUT_POINTS = [0, 1, 30, 90, 160, 250, 400, 600, 800, 1000, 1300, 1700, 2200, 3000, 6000]
CUT_POINTS += [9000, 15000, 24000, 33000]


@pytest.mark.reliability(
    area="IMAP",
    fault="the connection breaks after N bytes from the server: in the greeting, CAPABILITY, "
    "login, EXAMINE, SEARCH and all through the FETCH batches (sync backend)",
    inputs="byte offsets",
    outcome="one ConnectionFailed or MailTimeout; sync() again yields every message exactly once",
)
@pytest.mark.parametrize("cut", CUT_POINTS)
def test_sync_broken_anywhere_loses_and_repeats_nothing(
    proxied: tuple[IMAPTarget, TCPProxy],
    mail_servers: MailServers,
    account: Account,
    tmp_path: Any,
    cut: int,
) -> None:
    target, proxy = proxied
    expected = _seed_numbered(mail_servers, account, range(12))
    with connect(target, state=str(tmp_path / "state.sqlite")) as box:
        proxy.cut_after(cut)
        got, failures = _sync_until_whole(box)
    assert got == expected
    assert len(failures) == proxy.cuts == 1


# The same over implicit TLS, counted in ciphertext: in the handshake (the certificate ends
# near 1,000 bytes), the greeting and login, and inside records all through the FETCH.
TLS_CUT_POINTS = [0, 1, 200, 700, 1200, 1600, 2000, 2600, 4000, 9000, 20000, 33000]


@pytest.mark.reliability(
    area="IMAP",
    fault="an implicit-TLS connection breaks after N bytes of ciphertext (reset or closed), in "
    "the handshake, login and inside records of the FETCH (sync backend)",
    inputs="ciphertext offsets × reset/close",
    outcome="one ConnectionFailed; sync() again yields every message exactly once",
)
@pytest.mark.parametrize("rst", [True, False], ids=["reset", "closed"])
@pytest.mark.parametrize("cut", TLS_CUT_POINTS)
def test_tls_sync_broken_anywhere_loses_and_repeats_nothing(
    mail_servers: MailServers,
    account: Account,
    tcp_proxy: Callable[[str, int], TCPProxy],
    tmp_path: Any,
    cut: int,
    rst: bool,
) -> None:
    # A reset reaches the TLS reader as a failed recv(); a plain close as the end of the
    # stream in the middle of a record, which OpenSSL reports as an unexpected EOF.
    proxy = tcp_proxy(mail_servers.host, mail_servers.imaps_port)
    target = _tls_through(proxy, mail_servers, account, timeout=10.0, batch_size=7)
    expected = _seed_numbered(mail_servers, account, range(12))
    with connect(target, state=str(tmp_path / "state.sqlite")) as box:
        proxy.cut_after(cut, rst=rst)
        got, failures = _sync_until_whole(box)
    assert got == expected
    assert len(failures) == proxy.cuts == 1
    assert all(isinstance(f, mailsync.ConnectionFailed) for f in failures), failures


@pytest.mark.reliability(
    area="IMAP",
    fault="the connection is cut mid-FETCH and again during IDLE while watch() runs (sync backend)",
    outcome="watch() reconnects and yields every new message once",
)
def test_watch_reconnects_after_cuts_mid_fetch_and_during_idle(
    proxied: tuple[IMAPTarget, TCPProxy],
    mail_servers: MailServers,
    account: Account,
    seed: Seed,
) -> None:
    target, proxy = proxied
    expected = _seed_numbered(mail_servers, account, range(20))
    got: list[str] = []
    errors: list[BaseException] = []
    watcher = connect(target)
    proxy.cut_after(40_000)  # the first sync breaks mid-FETCH

    def consume() -> None:
        try:
            for message in watcher.watch(poll_interval=30):
                got.append(message.subject)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    try:
        wait_for(lambda: len(got) >= 20 or bool(errors), 30)
        assert proxy.cuts == 1
        assert got == expected
        wait_for(lambda: watcher._selected is not None and proxy.live == 1, 10)
        # Now idling: cut the connection, then deliver while it is down.
        assert proxy.cut_all() == 1
        seed(make_raw(100))
        wait_for(lambda: len(got) >= 21 or bool(errors), 30)
        seed(make_raw(101))  # and IDLE on the new connection still works
        wait_for(lambda: len(got) >= 22 or bool(errors), 30)
    finally:
        watcher.close()
        thread.join(10)
    assert not errors, errors
    assert got == [*expected, "Message 100", "Message 101"]
    assert not thread.is_alive()


def _watch_in_background(
    watcher: IMAPRetriever, *, poll_interval: float
) -> tuple[list[str], threading.Thread]:
    """Run ``watcher.watch()`` in a daemon thread; the subjects arrive in the list."""
    got: list[str] = []
    thread = threading.Thread(
        target=lambda: got.extend(m.subject for m in watcher.watch(poll_interval=poll_interval)),
        daemon=True,
    )
    thread.start()
    return got, thread


def test_idle_over_tls_sees_a_short_line_after_large_bodies(
    mail_servers: MailServers, account: Account, seed: Seed
) -> None:
    # Large literals make the TLS reader raise the socket's low-water mark; IDLE then waits
    # in poll() for a line of a few bytes, which a mark left up would hide.
    expected = [f"Message {n}" for n in range(3)]
    for n in range(3):
        seed(make_raw(n, extra=600_000))
    watcher = connect(imap_url(mail_servers, account, "tls"))
    got, thread = _watch_in_background(watcher, poll_interval=600)
    try:
        wait_for(lambda: got == expected, 20)
        wait_for(lambda: watcher._wake is not None, 10)  # idling now
        seed(make_raw(3))
        wait_for(lambda: got == [*expected, "Message 3"], 15)
    finally:
        watcher.close()
        thread.join(10)
    assert not thread.is_alive()


def test_tls_fetch_over_a_link_slower_than_the_timeout_allows_per_mark(
    mail_servers: MailServers,
    account: Account,
    seed: Seed,
    tcp_proxy: Callable[[str, int], TCPProxy],
) -> None:
    # ~160 KB/s with a 0.5 s timeout: bytes never stop coming, but a 256 KiB low-water mark
    # would not fill within one timeout. That is a slow link, not a dead one.
    raw = make_raw(1, extra=400_000)
    seed(raw)
    proxy = tcp_proxy(mail_servers.host, mail_servers.imaps_port)
    with connect(_tls_through(proxy, mail_servers, account, timeout=0.5)) as box:
        box.folders()  # log in at full speed
        proxy.throttle(8192, 0.05)
        assert [m.raw for m in box.messages()] == [raw]


def test_close_wakes_an_idle_watch_at_once(target: IMAPTarget, seed: Seed) -> None:
    seed(make_raw(0))
    watcher = connect(target)
    got, thread = _watch_in_background(watcher, poll_interval=600)
    wait_for(lambda: got == ["Message 0"], 20)
    wait_for(lambda: watcher._wake is not None, 10)  # idling now
    started = time.monotonic()
    watcher.close()
    thread.join(10)
    assert not thread.is_alive()
    assert time.monotonic() - started < 3


@pytest.mark.reliability(
    area="IMAP",
    fault="the server stops answering (the proxy stalls; sync backend)",
    outcome="MailTimeout after the read timeout; the next call reconnects",
)
def test_timeout_when_the_server_hangs(proxied: tuple[IMAPTarget, TCPProxy], seed: Seed) -> None:
    target, proxy = proxied
    seed(make_raw(1))
    with connect(target, timeout=mailsync.Timeout(read=1.0, connect=5.0)) as box:
        assert len(box.folders()) > 1
        proxy.stall()
        try:
            with pytest.raises(mailsync.MailTimeout):
                list(box.messages())
        finally:
            proxy.resume()
        assert [m.subject for m in box.messages()] == ["Message 1"]  # reconnected


@pytest.mark.reliability(
    area="IMAP",
    fault="the server refuses the TCP connection",
    outcome="ConnectionFailed",
)
def test_connection_refused(proxied: tuple[IMAPTarget, TCPProxy]) -> None:
    target, proxy = proxied
    with proxy.refusing(), connect(target) as box, pytest.raises(mailsync.ConnectionFailed):
        box.folders()


# -- resync -------------------------------------------------------------------------------------


@pytest.mark.reliability(
    area="IMAP",
    fault="UIDVALIDITY changes: the folder is deleted and recreated with the same messages and "
    "one new one (sync backend)",
    outcome="sync() resyncs and yields only the new message; old ids give MessageNotFound",
)
def test_folder_deleted_and_recreated_with_the_same_messages_yields_nothing_again(
    box: IMAPRetriever, mail_servers: MailServers, account: Account
) -> None:
    folder = "Recreated"
    mail_servers.create_folder(account, folder)
    raws = [make_raw(n) for n in range(4)]
    raws.append(b"Subject: no id\r\nFrom: x@example.test\r\n\r\nsame bytes\r\n")
    mail_servers.append_many(account, raws, folder=folder)
    first = list(box.sync(folder))
    assert len(first) == 5
    old = box._status
    assert old is not None
    mail_servers.delete_folder(account, folder)
    stamp = int(time.time())
    wait_for(lambda: int(time.time()) > stamp, 3)  # Dovecot's UIDVALIDITY is a timestamp
    mail_servers.create_folder(account, folder)
    mail_servers.append_many(account, [*raws, make_raw(99)], folder=folder)
    again = list(box.sync(folder))
    assert box._status is not None
    assert box._status.uidvalidity != old.uidvalidity
    assert [m.subject for m in again] == ["Message 99"]
    assert list(box.sync(folder)) == []
    with pytest.raises(mailsync.MessageNotFound):
        box.get(first[0].id)  # ids of the old folder are gone


def test_first_sync_of_an_empty_folder_remembers_uidvalidity(
    box: IMAPRetriever, seed: Seed
) -> None:
    assert list(box.sync()) == []
    cursor = box.state.load_cursor(box.account_key, "INBOX")
    assert cursor is not None
    assert cursor["uidvalidity"] > 0
    assert cursor["uid"] == 0
    seed(make_raw(1))
    assert [m.subject for m in box.sync()] == ["Message 1"]
    assert box.state.load_cursor(box.account_key, "INBOX")["uid"] == 1  # type: ignore[index]


# -- connecting, TLS and errors -----------------------------------------------------------------


def test_registry_maps_imap_and_imaps(target: IMAPTarget) -> None:
    assert isinstance(mailsync.connect(target.url, password="x", tls="none"), IMAPRetriever)
    assert isinstance(mailsync.connect("imaps://u@127.0.0.1:1", password="x"), IMAPRetriever)


def test_starttls_with_verification(mail_servers: MailServers, account: Account) -> None:
    mail_servers.append(account, make_raw(1))
    with connect(imap_url(mail_servers, account, "starttls")) as box:
        assert [m.subject for m in box.messages()] == ["Message 1"]
        assert box._imap is not None
        assert box._imap.tls_version() in ("TLSv1.2", "TLSv1.3")


@pytest.mark.reliability(
    area="IMAP",
    fault="a self-signed server certificate",
    outcome="ConnectionFailed naming the certificate unless verify=False is asked for",
)
def test_certificate_verification_is_on_by_default(
    mail_servers: MailServers, account: Account
) -> None:
    target = imap_url(mail_servers, account, "tls")
    options = {k: v for k, v in target.options.items() if k != "verify"}
    with mailsync.connect(target.url, state=":memory:", **options) as box:
        with pytest.raises(mailsync.ConnectionFailed, match="certificate"):
            box.folders()
    with mailsync.connect(target.url, state=":memory:", verify=False, **options) as box:
        assert any(f.name == "INBOX" for f in box.folders())


def test_wrong_password(mail_servers: MailServers, account: Account) -> None:
    target = imap_url(mail_servers, account)
    options = {**target.options, "password": "not-" + account.password}
    with mailsync.connect(target.url, state=":memory:", **options) as box:
        with pytest.raises(mailsync.AuthenticationError) as info:
            box.folders()
    assert account.password not in str(info.value)
    assert account.password not in repr(box)


def test_non_ascii_password(mail_servers: MailServers) -> None:
    account = mail_servers.new_account("pw", password="pässwörd-日本")
    with connect(imap_url(mail_servers, account)) as box:
        assert any(f.name == "INBOX" for f in box.folders())


def test_missing_folder_errors(box: IMAPRetriever, seed: Seed) -> None:
    seed(make_raw(1))
    (message,) = list(box.messages())
    with pytest.raises(mailsync.FolderNotFound):
        box.move(message, "Nowhere")
    with pytest.raises(mailsync.FolderNotFound):
        box.append("Nowhere", make_raw(2))
    with pytest.raises(mailsync.FolderNotFound):
        list(box.sync("Nowhere"))
    with pytest.raises(mailsync.MessageNotFound):
        box.get("Nowhere;1;1")
    assert [m.subject for m in box.messages()] == ["Message 1"]  # the connection still works


def test_folders_special_use_and_non_ascii_names(
    box: IMAPRetriever, mail_servers: MailServers, account: Account
) -> None:
    name = "Entwürfe & 日本語;1;2"
    mail_servers.create_folder(account, name)
    mail_servers.append(account, make_raw(5), folder=name)
    folders = {f.name: f for f in box.folders()}
    assert folders["Sent"].special_use == "\\Sent"
    assert folders["Trash"].special_use == "\\Trash"
    assert folders["INBOX"].delimiter == "/"
    assert name in folders
    (message,) = list(box.messages(name))
    assert message.folder == name
    assert box.get(message.id).subject == "Message 5"
    box.move(message, "INBOX")
    assert [m.subject for m in box.messages()] == ["Message 5"]


def test_append_returns_a_usable_id_and_delete_goes_to_trash(
    box: IMAPRetriever, mail_servers: MailServers, account: Account
) -> None:
    new_id = box.append("INBOX", make_raw(1), flags=["\\Flagged", "$Custom"])
    assert new_id is not None
    message = box.get(new_id)
    assert {"\\Flagged", "$Custom"} <= message.flags
    box.delete(new_id)
    assert list(box.messages()) == []
    (trashed,) = list(box.messages("Trash"))
    assert trashed.subject == "Message 1"
    box.delete(trashed)  # already in the Trash: gone for good
    assert mail_servers.imap_uids(account, "Trash") == []


def test_query_needing_the_body_with_headers_only(box: IMAPRetriever, seed: Seed) -> None:
    seed(make_raw(1, body="needle in the body\r\n"))
    seed(make_raw(2, body="nothing here\r\n"))
    (found,) = list(box.messages(query=mailsync.Q(text="NEEDLE"), headers_only=True))
    assert found.subject == "Message 1"
    assert found.headers_only
    assert b"needle" not in found.raw


def test_streams_in_bounded_batches(
    mail_servers: MailServers, account: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    mail_servers.append_many(account, [make_raw(n) for n in range(23)])
    target = imap_url(mail_servers, account)
    sizes: list[int] = []
    original = proto.uid_set

    def spy(uids: list[int]) -> str:  # the UID set of each FETCH command sent
        sizes.append(len(uids))
        return original(uids)

    monkeypatch.setattr(proto, "uid_set", spy)
    with connect(target, batch_size=10) as box:
        assert len(list(box.messages())) == 23
        assert [m.subject for m in box.messages(limit=3)] == [f"Message {n}" for n in range(3)]
    assert sizes == [10, 10, 3, 3]


def test_the_next_batch_is_asked_for_while_the_current_one_arrives(
    mail_servers: MailServers, account: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    # So the server goes straight on at each batch boundary instead of waiting a round trip:
    # from the second batch on, with its first response; in the first, once half is in.
    mail_servers.append_many(account, [make_raw(n) for n in range(23)])
    log: list[str] = []
    original = proto.uid_set

    def spy(uids: list[int]) -> str:
        log.append(f"FETCH {len(uids)}")
        return original(uids)

    monkeypatch.setattr(proto, "uid_set", spy)
    with connect(imap_url(mail_servers, account), batch_size=10) as box:
        log.extend(m.subject.split()[1] for m in box.messages())
    first, second, third = (list(map(str, range(a, b))) for a, b in ((0, 10), (10, 20), (20, 23)))
    assert log == [
        "FETCH 10", *first[:4], "FETCH 10", *first[4:],
        "FETCH 3", *second, *third,
    ]  # fmt: skip


@pytest.mark.parametrize("taken", [2, 7, 12])
def test_stopping_early_leaves_the_connection_usable(
    mail_servers: MailServers, account: Account, taken: int
) -> None:
    # After 7 messages the second batch is already asked for; stopping then means reading
    # both replies off before the next command.
    expected = _seed_numbered(mail_servers, account, range(25), extra=0)
    with connect(imap_url(mail_servers, account), batch_size=10) as box:
        got = []
        for message in box.messages():
            got.append(message.subject)
            if len(got) == taken:
                break
        assert got == expected[:taken]
        assert [m.subject for m in box.messages()] == expected
        assert [m.subject for m in box.sync()] == expected


# -- a scripted server for what Dovecot here does not offer -------------------------------------


class ScriptedIMAP:
    """A one-connection-at-a-time IMAP server on loopback that speaks just enough:
    configurable capabilities, LOGIN and AUTHENTICATE, EXAMINE of a one-message folder, UID
    SEARCH, a canned UID FETCH reply, LOGOUT. It records every line it receives."""

    def __init__(
        self,
        capabilities: str,
        accept_token: str | None = None,
        fetch_reply: bytes = b"",
        select_extra: bytes = b"",
        messages: int = 1,
        parallel: bool = False,
    ) -> None:
        self.capabilities = capabilities
        self.accept_token = accept_token
        self.fetch_reply = fetch_reply
        self.select_extra = select_extra
        # With more than one message and no canned reply, FETCH answers with real messages
        # (make_raw(uid)); ``parallel`` answers the way Dovecot does when commands are
        # pipelined: the first FETCH's completion comes only after the next one's responses.
        self.messages = messages
        self.parallel = parallel
        self.received: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn, conn.makefile("rb") as reader:
                self._session(conn, reader)

    def _session(self, conn: socket.socket, reader: Any) -> None:
        held: bytes | None = None  # a FETCH completion held back (``parallel``)
        conn.sendall(b"* OK [CAPABILITY " + self.capabilities.encode() + b"] scripted\r\n")
        while line := reader.readline():
            self.received.append(line)
            tag, _, rest = line.strip().partition(b" ")
            command = rest.split(b" ")[0].upper()
            if command == b"CAPABILITY":
                conn.sendall(b"* CAPABILITY " + self.capabilities.encode() + b"\r\n")
                conn.sendall(tag + b" OK done\r\n")
            elif command == b"AUTHENTICATE":
                words = rest.split()
                if len(words) > 2:  # SASL-IR: the answer came with the command
                    answer = base64.b64decode(words[2])
                else:
                    conn.sendall(b"+ \r\n")
                    answer = base64.b64decode(reader.readline().strip())
                self.received.append(answer)
                ok = self.accept_token is not None and self.accept_token.encode() in answer
                conn.sendall(
                    tag + (b" OK authenticated\r\n" if ok else b" NO [AUTHENTICATIONFAILED] no\r\n")
                )
            elif command in (b"LOGIN", b"ENABLE", b"NOOP"):
                conn.sendall(tag + b" OK done\r\n")
            elif command in (b"EXAMINE", b"SELECT"):
                conn.sendall(
                    b"* %d EXISTS\r\n* OK [UIDVALIDITY 7] v\r\n* OK [UIDNEXT %d] n\r\n"
                    % (self.messages, self.messages + 1)
                    + self.select_extra
                    + tag
                    + b" OK [READ-ONLY] done\r\n"
                )
            elif command == b"UID" and b" SEARCH " in line.upper():
                found = " ".join(str(uid) for uid in range(1, self.messages + 1)).encode()
                conn.sendall(b"* SEARCH " + found + b"\r\n" + tag + b" OK done\r\n")
            elif command == b"UID" and b" FETCH " in line.upper() and self.messages > 1:
                uids = _uids_of(line.split()[3])
                replies = b"".join(_fetch_reply(uid) for uid in uids)
                conn.sendall(replies)
                # The completion waits only while a next command is on its way.
                more = self.parallel and held is None and max(uids) < self.messages
                if more and select.select([conn], [], [], 0.5)[0]:
                    held = tag
                    continue
                done = (held + b" OK done\r\n" if held else b"") + tag + b" OK done\r\n"
                conn.sendall(done)
                held = None
            elif command == b"UID" and b" FETCH " in line.upper():
                conn.sendall(self.fetch_reply + tag + b" OK done\r\n")
            elif command == b"LOGOUT":
                conn.sendall(b"* BYE bye\r\n" + tag + b" OK bye\r\n")
                return
            else:
                conn.sendall(tag + b" BAD unknown\r\n")

    def close(self) -> None:
        self.listener.close()


def _uids_of(uid_set: bytes) -> list[int]:
    uids: list[int] = []
    for part in uid_set.decode().split(","):
        first, _, last = part.partition(":")
        uids.extend(range(int(first), int(last or first) + 1))
    return uids


def _fetch_reply(uid: int) -> bytes:
    raw = make_raw(uid)
    return (
        b'* %d FETCH (UID %d FLAGS () RFC822.SIZE %d INTERNALDATE "01-Jan-2026 12:00:00 +0000"'
        b" BODY[] {%d}\r\n" % (uid, uid, len(raw), len(raw)) + raw + b")\r\n"
    )


@pytest.fixture
def scripted() -> Iterator[Callable[..., ScriptedIMAP]]:
    servers: list[ScriptedIMAP] = []

    def make(capabilities: str, accept_token: str | None = None, **kw: Any) -> ScriptedIMAP:
        server = ScriptedIMAP(capabilities, accept_token, **kw)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


@pytest.mark.reliability(
    area="IMAP",
    fault="STARTTLS stripped: the server does not offer it (sync backend)",
    outcome="ConnectionFailed; no LOGIN and no password is ever sent",
)
def test_starttls_fails_closed_when_not_offered(scripted: Callable[..., ScriptedIMAP]) -> None:
    server = scripted("IMAP4rev1 AUTH=PLAIN")
    url = f"imap://alice@127.0.0.1:{server.port}"
    with mailsync.connect(url, password="secret", state=":memory:") as box:  # starttls default
        with pytest.raises(mailsync.ConnectionFailed, match="STARTTLS"):
            box.folders()
    sent = b"".join(server.received)
    assert b"secret" not in sent
    assert b"LOGIN" not in sent.upper()
    assert b"AUTHENTICATE" not in sent.upper()


@pytest.mark.parametrize("mechanism", ["OAUTHBEARER", "XOAUTH2"])
def test_token_callable_is_called_at_every_connect(
    scripted: Callable[..., ScriptedIMAP], mechanism: str
) -> None:
    server = scripted(f"IMAP4rev1 AUTH={mechanism}", accept_token="tok-2")
    calls: list[int] = []

    def token() -> str:
        calls.append(1)
        return f"tok-{len(calls)}"

    url = f"imap://alice@example.test@127.0.0.1:{server.port}"
    box = mailsync.connect(url, token=token, tls="none", state=":memory:")
    with pytest.raises(mailsync.AuthenticationError):
        box._conn()  # tok-1 is refused
    box._conn()  # a new connection asks the callable again: tok-2 is accepted
    box.close()
    assert len(calls) == 2
    answers = [line for line in server.received if b"auth=Bearer" in line]
    assert answers[-1].startswith(
        b"n,a=alice@example.test," if mechanism == "OAUTHBEARER" else b"user=alice@example.test\x01"
    )
    assert f"AUTHENTICATE {mechanism}".encode() in b"".join(server.received)


GMAIL_BODY = b"Subject: labelled\r\nMessage-ID: <gm@example.test>\r\n\r\nhi\r\n"


def test_gmail_extensions(scripted: Callable[..., ScriptedIMAP]) -> None:
    reply = (
        b"* 1 FETCH (X-GM-THRID 1278455344230334865 X-GM-MSGID 1278455344230334866 "
        b'X-GM-LABELS ("\\\\Important" "Entw&APw-rfe" Work) UID 1 FLAGS (\\Seen) '
        b'RFC822.SIZE %d INTERNALDATE "01-Jan-2026 12:00:00 +0000" BODY[] {%d}\r\n'
        % (len(GMAIL_BODY), len(GMAIL_BODY))
        + GMAIL_BODY
        + b")\r\n"
    )
    server = scripted("IMAP4rev1 X-GM-EXT-1 IDLE", fetch_reply=reply)
    url = f"imap://alice@127.0.0.1:{server.port}"
    with mailsync.connect(url, password="pw", tls="none", state=":memory:") as box:
        assert "labels" not in box.capabilities  # not known before connecting
        (message,) = list(box.messages())
        assert {"labels", "threads"} <= box.capabilities
    assert message.labels == {"\\Important", "Entwürfe", "Work"}
    assert message.thread_id == "1278455344230334865"
    assert message.id == "gmail;1278455344230334866"
    assert message.seen
    assert message.subject == "labelled"
    fetch = next(line for line in server.received if b"UID FETCH" in line)
    assert b"X-GM-LABELS X-GM-THRID X-GM-MSGID" in fetch
    assert b"BODY.PEEK[]" in fetch


@pytest.mark.reliability(
    area="IMAP",
    fault="malformed FETCH responses: an unbalanced literal, an unclosed list, a non-numeric "
    "UID, an untagged line of garbage",
    outcome="ProtocolError; the connection is dropped, not trusted further",
)
@pytest.mark.parametrize(
    "reply",
    [
        b"* 1 FETCH (UID 1 BODY[] {5}\r\nabcde UNBALANCED\r\n",
        b"* 1 FETCH (UID 1 FLAGS (\\Seen BODY[] {3}\r\nabc)\r\n",
        b"* 1 FETCH (UID one BODY[] {3}\r\nabc)\r\n",
        b"garbage without a tag\r\n",
    ],
)
def test_malformed_fetch_response_is_a_protocol_error(
    scripted: Callable[..., ScriptedIMAP], reply: bytes
) -> None:
    server = scripted("IMAP4rev1", fetch_reply=reply)
    url = f"imap://alice@127.0.0.1:{server.port}"
    with mailsync.connect(url, password="pw", tls="none", state=":memory:") as box:
        with pytest.raises(mailsync.ProtocolError):
            list(box.messages())
        assert box._imap is None  # the connection is not trusted any further


@pytest.mark.reliability(
    area="IMAP",
    fault="a literal announced as {1000000000000} followed by three bytes, in a FETCH and in a "
    "SELECT reply",
    inputs="sync backend; the default max_message_size, and max_message_size=None",
    outcome="MessageTooLarge before a byte of it is read (with no limit: MailTimeout after the "
    "read timeout); no allocation of the announced size; the connection dropped",
)
@pytest.mark.parametrize(
    "where",
    ["fetch", "select"],
    ids=["bulk FETCH reader", "imaplib's reader"],
)
@pytest.mark.parametrize("limited", [True, False], ids=["default limit", "no limit"])
def test_an_absurd_literal_size_costs_only_what_arrives(
    scripted: Callable[..., ScriptedIMAP], where: str, limited: bool
) -> None:
    # A broken server announces a terabyte and sends three bytes. Reading must refuse it from
    # the announced size, or (no limit) wait for the bytes and time out, never try to
    # allocate the announced size (a bare MemoryError).
    absurd = b"* 1 FETCH (UID 1 BODY[] {1000000000000}\r\nabc"
    if where == "fetch":
        server = scripted("IMAP4rev1", fetch_reply=absurd)
    else:
        server = scripted("IMAP4rev1", select_extra=absurd)
    url = f"imap://alice@127.0.0.1:{server.port}"
    options: dict[str, Any] = {} if limited else {"max_message_size": None}
    expected = mailsync.MessageTooLarge if limited else mailsync.MailTimeout
    with mailsync.connect(
        url, password="pw", tls="none", state=":memory:", timeout=1, **options
    ) as box:
        with pytest.raises(expected):
            list(box.messages())
        assert box._imap is None


def test_responses_to_the_next_batch_before_this_ones_completion_are_kept(
    scripted: Callable[..., ScriptedIMAP],
) -> None:
    # Dovecot runs pipelined UID FETCH commands in parallel: all responses of the next
    # batch can come before the current batch's tagged completion. A reader that took
    # them for unsolicited lost a whole batch.
    server = scripted("IMAP4rev1", messages=6, parallel=True)
    url = f"imap://alice@127.0.0.1:{server.port}"
    expected = [f"Message {n}" for n in range(1, 7)]
    options: dict[str, Any] = {"password": "pw", "tls": "none", "timeout": 5, "batch_size": 2}
    with mailsync.connect(url, state=":memory:", **options) as box:
        assert [m.subject for m in box.messages()] == expected
        assert [m.subject for m in box.sync()] == expected
        assert list(box.sync()) == []


def test_noop_polling_without_idle(
    target: IMAPTarget,
    seed: Seed,
    monkeypatch: pytest.MonkeyPatch,
    mail_servers: MailServers,
    account: Account,
) -> None:
    original = IMAPRetriever._has
    monkeypatch.setattr(
        IMAPRetriever, "_has", lambda self, cap: cap != b"IDLE" and original(self, cap)
    )
    noops = [0]
    noop = imaplib.IMAP4.noop

    def counting_noop(self: imaplib.IMAP4) -> Any:
        noops[0] += 1
        return noop(self)

    monkeypatch.setattr(imaplib.IMAP4, "noop", counting_noop)
    monkeypatch.setattr(IMAPRetriever, "poll_most", 0.1)
    watcher = connect(target)
    got, thread = _watch_in_background(watcher, poll_interval=30)
    try:
        wait_for(lambda: watcher._selected is not None, 10)
        seed(make_raw(1))
        wait_for(lambda: got == ["Message 1"], 20)
        # Flag changes from elsewhere come as unasked FETCH responses on each NOOP; a watch
        # that polls for months must not pile them up.
        polls = noops[0]
        with mail_servers.imap(account) as other:
            other.select("INBOX")
            for flag in ("\\Flagged", "\\Answered", "$Label1"):
                other.store("1", "+FLAGS", flag)
        wait_for(lambda: noops[0] >= polls + 3, 20)
        assert watcher._imap is not None
        assert "FETCH" not in watcher._imap.untagged_responses
    finally:
        watcher.close()
        thread.join(10)
    assert not thread.is_alive()


def test_date_queries_keep_messages_without_a_date_header(box: IMAPRetriever, seed: Seed) -> None:
    # Such messages are dated by their arrival (Message.date), which SENTSINCE never sees.
    seed(b"Subject: no date\r\nMessage-ID: <nd@example.test>\r\n\r\nbody\r\n")
    seed(b"Subject: bad date\r\nDate: not a date\r\nMessage-ID: <bd@example.test>\r\n\r\nb\r\n")
    seed(make_raw(1, date=datetime(2020, 5, 5, tzinfo=UTC)))
    now = datetime.now(UTC)
    since = [m.subject for m in box.messages(query=mailsync.Q(since=now - timedelta(hours=1)))]
    assert since == ["no date", "bad date"]
    before = [m.subject for m in box.messages(query=mailsync.Q(before=now - timedelta(days=30)))]
    assert before == ["Message 1"]


@pytest.mark.reliability(
    area="IMAP",
    fault="a user name with a space and a quote, a password carrying 'CRLF A1 DELETE INBOX'",
    outcome="LOGIN quotes them; the line break is refused with AuthenticationError and nothing "
    "is sent",
)
def test_login_quotes_the_user_and_refuses_line_breaks(
    scripted: Callable[..., ScriptedIMAP],
) -> None:
    server = scripted("IMAP4rev1")  # no AUTH=PLAIN: LOGIN it is
    url = f"imap://al ice@127.0.0.1:{server.port}"
    with mailsync.connect(url, password='p"w', tls="none", state=":memory:") as box:
        box._conn()
    login = next(line for line in server.received if b" LOGIN " in line.upper())
    assert login.endswith(b' LOGIN "al ice" "p\\"w"\r\n')

    received = len(server.received)
    with mailsync.connect(url, password="pw\r\nA1 DELETE INBOX", tls="none") as box:
        with pytest.raises(mailsync.AuthenticationError, match="line breaks"):
            list(box.messages())
    assert not any(b"DELETE" in line for line in server.received[received:])


def test_capabilities_are_the_post_login_list(target: IMAPTarget, seed: Seed) -> None:
    seed(make_raw(1))
    with connect(target) as box:
        list(box.messages())
        # Dovecot's post-login list (its greeting's pre-login one lacks CONDSTORE)
        assert box._has(b"IDLE")
        assert box._has(b"CONDSTORE")
        assert box._imap is not None
        assert b"ENABLE" in {c.encode() for c in box._imap.capabilities}


SYNC_WITHOUT_IMAPCLIENT = """
import json, sys
import mailsync
options = json.loads(sys.stdin.read())
with mailsync.connect(options.pop("url"), **options) as box:
    count = sum(1 for _ in box.sync())
print(json.dumps({"count": count, "imapclient": "imapclient" in sys.modules}))
"""


def test_sync_does_not_import_imapclient(
    mail_servers: MailServers, account: Account, tmp_path: Any
) -> None:
    # Importing imapclient costs more than an incremental sync() against a local server:
    # the hot path speaks imaplib directly, and imapclient loads only for LIST/STORE/....
    import json
    import subprocess
    import sys

    mail_servers.append(account, make_raw(1))
    target = imap_url(mail_servers, account, "plain")
    options = {"url": target.url, "password": account.password, "tls": "none"}
    options["state"] = str(tmp_path / "state.sqlite")
    done = subprocess.run(
        [sys.executable, "-c", SYNC_WITHOUT_IMAPCLIENT],
        input=json.dumps(options),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(done.stdout) == {"count": 1, "imapclient": False}
    with connect(target) as box:  # and what does need imapclient works on that connection
        assert "INBOX" in [f.name for f in box.folders()]
        (message,) = list(box.messages())
        box.set_flags(message, add=["\\Flagged"])
        assert box.get(message.id).flags >= {"\\Flagged"}


@pytest.mark.parametrize("literal_plus", [True, False])
def test_non_ascii_search_with_and_without_literal_plus(
    box: IMAPRetriever, seed: Seed, monkeypatch: pytest.MonkeyPatch, literal_plus: bool
) -> None:
    # With LITERAL+ the text travels as a literal; without, quoted UTF-8 after CHARSET UTF-8.
    original = IMAPRetriever._has
    monkeypatch.setattr(
        IMAPRetriever,
        "_has",
        lambda self, cap: (literal_plus or cap != b"LITERAL+") and original(self, cap),
    )
    seed(make_raw(1, subject="Grüße aus Köln"))
    seed(make_raw(2, subject="Hello"))
    found = [m.subject for m in box.messages(query=mailsync.Q(subject="grüße"))]
    assert found == ["Grüße aus Köln"]


def test_plain_answer_goes_with_the_command_where_sasl_ir_is_offered(
    scripted: Callable[..., ScriptedIMAP],
) -> None:
    server = scripted("IMAP4rev1 SASL-IR AUTH=PLAIN", accept_token="\0alice\0pw")
    url = f"imap://alice@127.0.0.1:{server.port}"
    with mailsync.connect(url, password="pw", tls="none", state=":memory:") as box:
        box._session()
    (line,) = [line for line in server.received if b"AUTHENTICATE" in line.upper()]
    assert line.split()[1:3] == [b"AUTHENTICATE", b"PLAIN"]
    assert base64.b64decode(line.split()[3]) == b"\0alice\0pw"

    with mailsync.connect(url, password="wrong", tls="none", state=":memory:") as box:
        with pytest.raises(mailsync.AuthenticationError):
            box._session()


def test_sync_cursor_records_highestmodseq(target: IMAPTarget, seed: Seed) -> None:
    # CONDSTORE is switched on by the EXAMINE itself (RFC 7162), not by a separate ENABLE.
    seed(make_raw(1))
    with connect(target) as box:
        assert [m.subject for m in box.sync()] == ["Message 1"]
        cursor = box.state.load_cursor(box.account_key, "INBOX")
    assert cursor is not None
    assert int(cursor["modseq"]) >= 1


def _commands_sent(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Record the command words of every line imaplib sends (tag dropped)."""
    from mailsync.backends._imaplib import Connection

    sent: list[bytes] = []
    send = Connection.send

    def recording(self: Connection, data: bytes) -> None:
        words = bytes(data).split(b" ", 3)
        sent.append(b" ".join(words[1:3]).strip().upper())
        send(self, data)

    monkeypatch.setattr(Connection, "send", recording)
    return sent


@pytest.mark.parametrize("transport", ["plain", "starttls"])
def test_an_incremental_sync_costs_no_needless_round_trip(
    mail_servers: MailServers,
    account: Account,
    seed: Seed,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
    transport: str,
) -> None:
    # On a network path the round trips, not the bytes, set the time of a small sync().
    target = imap_url(mail_servers, account, transport)
    state = str(tmp_path / "state.sqlite")
    seed(make_raw(1))
    with connect(target, state=state) as box:
        list(box.sync())
    seed(make_raw(2))
    sent = _commands_sent(monkeypatch)
    with connect(target, state=state) as box:
        assert [m.subject for m in box.sync()] == ["Message 2"]
    # The greeting's and the login reply's capabilities are used; CONDSTORE comes with
    # EXAMINE; PLAIN's answer with AUTHENTICATE (SASL-IR). After STARTTLS the capabilities
    # are asked again: what was said before TLS is not trusted.
    tls = [b"STARTTLS", b"CAPABILITY"] if transport == "starttls" else []
    assert sent == [
        *tls,
        b"AUTHENTICATE PLAIN",
        b'EXAMINE "INBOX"',
        b"UID SEARCH",
        b"UID FETCH",
        b"LOGOUT",
    ]


def test_imapclient_takes_over_without_asking_capabilities_again(
    target: IMAPTarget, seed: Seed, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(make_raw(1))
    with connect(target) as box:
        (message,) = list(box.messages())
        sent = _commands_sent(monkeypatch)
        # imapclient checks UIDPLUS before UID EXPUNGE: from what it was handed, not by asking.
        box.delete(message, permanent=True)
        assert list(box.messages()) == []
    assert b"CAPABILITY" not in sent
    assert b"UID EXPUNGE" in sent
