"""The SMTP senders against the real Postfix -> Dovecot of tests/servers.py.

What arrives is read back with plain imaplib (``MailServers.imap_messages``), never with
mailsync. Ports: the plain port takes mail for example.test without AUTH and relays nothing;
the submission port needs STARTTLS + AUTH; the smtps port is implicit TLS + AUTH. SMTPUTF8 mail
goes to utf8.test, which Postfix delivers itself, read back with ``MailServers.utf8_maildir``.
"""

from __future__ import annotations

import collections
import email
import email.policy
import re
import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from typing import Any

import pytest

import mailsync
from mailsync._envelope import prepare
from mailsync.backends._socket import SocketChannel
from mailsync.backends.smtp import AsyncSMTPSender, SMTPSender
from tests.proxy import TCPProxy
from tests.servers import Account, MailServers

ProxyFactory = Callable[[str, int], TCPProxy]
OUTSIDE = "someone@outside.example"


def _submission(
    servers: MailServers, account: Account, *, port: int | None = None, **options: Any
) -> Any:
    options.setdefault("password", account.password)
    options.setdefault("verify", servers.ssl_context())
    url = f"smtp://{account.user}@{servers.host}:{port or servers.submission_port}"
    maker = mailsync.sender_async if options.pop("asynchronous", False) else mailsync.sender
    return maker(url, **options)


def _plain(servers: MailServers, *, port: int | None = None, **options: Any) -> SMTPSender:
    out = mailsync.sender(
        f"smtp://{servers.host}:{port or servers.smtp_port}", tls="none", **options
    )
    assert isinstance(out, SMTPSender)
    return out


def _arrived(servers: MailServers, account: Account, count: int) -> list[bytes]:
    """The raw messages in the INBOX once there are at least ``count`` (polled, deadline)."""

    def ready() -> list[bytes] | None:
        raws = [raw for _uid, _flags, raw in servers.imap_messages(account)]
        return raws if len(raws) >= count else None

    return servers.wait_for(ready, timeout=30, interval=0.1, message=f"{count} message(s)")


def _rich(sender: Account, to: Account, **fields: Any) -> EmailMessage:
    return mailsync.compose(
        from_=("Ann Sender", sender.email),
        to=[("Bob Empfänger", to.email)],
        subject="Grüße — a test with ünïcode and a long subject line " + "x" * 40,
        text="Hello,\n.a line starting with a dot\n\nçà et là\n",
        html="<p>Hello <b>there</b></p>",
        attachments=[("report.bin", bytes(range(256)) * 4, "application/octet-stream")],
        **fields,
    )


def _message_ids(raws: list[bytes]) -> list[str]:
    ids = []
    for raw in raws:
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        ids.append(str(parsed["Message-ID"]).strip("<>"))
    return ids


def _small(sender: Account, to: Account, n: int) -> EmailMessage:
    return mailsync.compose(from_=sender.email, to=to.email, subject=f"n{n}", text=f"body {n}\n")


# -- arrival ---------------------------------------------------------------------------------


def test_message_arrives_byte_correct_and_bcc_is_hidden(
    mail_servers: MailServers, account: Account, other_account: Account
) -> None:
    hidden = mail_servers.new_account("h")
    message = _rich(account, other_account, bcc=hidden.email)
    expected = prepare(message).data
    with _submission(mail_servers, account) as out:
        result = out.send(message)
    assert set(result.accepted) == {other_account.email, hidden.email}
    assert result.message_id == str(message["Message-ID"]).strip("<>")

    for mailbox in (other_account, hidden):
        (raw,) = _arrived(mail_servers, mailbox, 1)
        # Dovecot and Postfix only prepend trace headers: the rest is what was composed.
        assert raw.endswith(expected)
        received = email.message_from_bytes(raw, policy=email.policy.default)
        assert "Bcc" not in received
        assert received["Subject"] == message["Subject"]
        assert received["To"] == message["To"]
        assert received["Message-ID"] == message["Message-ID"]
        body = received.get_body(("plain",))
        assert body is not None
        text = body.get_content().replace("\r\n", "\n")  # 8bit parts keep the wire's CRLF
        assert text == "Hello,\n.a line starting with a dot\n\nçà et là\n"
        (attachment,) = received.iter_attachments()
        assert attachment.get_content() == bytes(range(256)) * 4
    assert b"Bcc" not in expected


def test_plain_port_without_auth_and_smtps_port(
    mail_servers: MailServers, account: Account, other_account: Account
) -> None:
    with _plain(mail_servers) as out:
        assert out.send(_small(account, other_account, 1)).ok
    url = f"smtps://{account.user}@{mail_servers.host}:{mail_servers.smtps_port}"
    with mailsync.sender(url, password=account.password, verify=mail_servers.ssl_context()) as out:
        assert out.send(_small(account, other_account, 2)).ok
    subjects = sorted(
        email.message_from_bytes(raw)["Subject"] for raw in _arrived(mail_servers, other_account, 2)
    )
    assert subjects == ["n1", "n2"]


def test_envelope_can_differ_from_the_headers(
    mail_servers: MailServers, account: Account, other_account: Account
) -> None:
    third = mail_servers.new_account("c")
    message = _small(account, other_account, 1)
    with _submission(mail_servers, account) as out:
        result = out.send(message, rcpt_to=[third.email], mail_from=account.email)
    assert result.accepted == (third.email,)
    (raw,) = _arrived(mail_servers, third, 1)
    assert b"Return-Path: <" + account.email.encode() + b">" in raw
    assert mail_servers.imap_uids(other_account) == []


# -- refusals --------------------------------------------------------------------------------


def test_relay_to_an_outside_domain_is_refused(mail_servers: MailServers, account: Account) -> None:
    message = mailsync.compose(from_=account.email, to=OUTSIDE, subject="relay?")
    with _plain(mail_servers) as out, pytest.raises(mailsync.RecipientsRefused) as caught:
        out.send(message)
    code, text = caught.value.refused[OUTSIDE]
    assert code == 554
    assert "Relay access denied" in text


def test_partial_refusal_returns_the_accepted_part(
    mail_servers: MailServers, account: Account, other_account: Account
) -> None:
    message = mailsync.compose(
        from_=account.email, to=[OUTSIDE, other_account.email], subject="partial"
    )
    with _plain(mail_servers) as out:
        result = out.send(message)
    assert result.accepted == (other_account.email,)
    assert result.refused[OUTSIDE][0] == 554
    assert not result.ok
    (raw,) = _arrived(mail_servers, other_account, 1)
    assert b"Subject: partial" in raw


def test_wrong_password_is_an_authentication_error(
    mail_servers: MailServers, account: Account, other_account: Account
) -> None:
    out = _submission(mail_servers, account, password="not-the-password-123")
    with pytest.raises(mailsync.AuthenticationError) as caught:
        out.send(_small(account, other_account, 1))
    assert "not-the-password-123" not in f"{caught.value} {caught.value!r} {out!r}"
    assert "535" in str(caught.value)


def test_password_on_a_port_without_auth(mail_servers: MailServers, account: Account) -> None:
    url = f"smtp://{account.user}@{mail_servers.host}:{mail_servers.smtp_port}"
    out = mailsync.sender(url, tls="none", password=account.password)
    with pytest.raises(mailsync.AuthenticationError, match="no AUTH"):
        out.send(_small(account, account, 1))


# -- delivery reports ------------------------------------------------------------------------


def _reports(servers: MailServers, account: Account, count: int) -> list[bytes]:
    raws = _arrived(servers, account, count)
    return [raw for raw in raws if b"multipart/report" in raw]


def test_notify_success_comes_back_as_a_dsn_the_tracker_understands(
    mail_servers: MailServers, account: Account, other_account: Account
) -> None:
    message = _small(account, other_account, 1)
    with _submission(mail_servers, account) as out:
        result = out.send(message, notify="success", envid="ms-success-1")
    assert result.envid == "ms-success-1"
    (raw,) = _reports(mail_servers, account, 1)

    report = mailsync.parse_report(raw)
    assert report is not None
    assert report.kind == "dsn"
    assert report.envid == "ms-success-1"
    assert report.original_message_id == result.message_id
    (recipient,) = report.recipients
    assert recipient.recipient == other_account.email
    # Postfix reports its hand-over to Dovecot's LMTP as "relayed" (2.0.0).
    assert recipient.action in ("relayed", "delivered")
    assert recipient.status is not None
    assert recipient.status.startswith("2.")

    tracker = mailsync.DeliveryTracker(mailsync.SQLiteStateStore(":memory:"))
    tracker.record(result)
    tracked = tracker.feed(raw)
    assert tracked is not None
    assert tracked.message_id == result.message_id
    assert tracked.recipients[other_account.email].state == "delivered"
    assert tracked.pending == ()


def test_unknown_recipient_comes_back_as_a_failure_dsn(
    mail_servers: MailServers, account: Account
) -> None:
    nobody = "nobody-here@example.test"
    message = mailsync.compose(from_=account.email, to=nobody, subject="to nobody")
    with _submission(mail_servers, account) as out:
        result = out.send(message, notify=["failure", "delay"])
    assert result.accepted == (nobody,)  # Postfix takes it; Dovecot's LMTP refuses it
    (raw,) = _reports(mail_servers, account, 1)

    report = mailsync.parse_report(raw)
    assert report is not None
    assert report.envid == result.envid
    assert report.original_message_id == result.message_id
    (recipient,) = report.recipients
    assert recipient.action == "failed"
    assert recipient.status is not None
    assert recipient.status.startswith("5.")

    tracker = mailsync.DeliveryTracker(mailsync.SQLiteStateStore(":memory:"))
    tracker.record(result)
    tracked = tracker.feed(raw)
    assert tracked is not None
    assert tracked.failed == (nobody,)


# -- connections -----------------------------------------------------------------------------


def test_send_many_100_uses_one_connection(
    mail_servers: MailServers, account: Account, other_account: Account, tcp_proxy: ProxyFactory
) -> None:
    proxy = tcp_proxy(mail_servers.host, mail_servers.submission_port)
    messages = [_small(account, other_account, n) for n in range(100)]
    with _submission(mail_servers, account, port=proxy.port) as out:
        results = out.send_many(messages)
    assert proxy.connections == 1
    assert [r.ok for r in results] == [True] * 100
    assert [r.message_id for r in results] == [str(m["Message-ID"]).strip("<>") for m in messages]
    arrived = _message_ids(_arrived(mail_servers, other_account, 100))
    assert sorted(arrived) == sorted(r.message_id for r in results)


def test_send_many_with_refusals_mixed_in(
    mail_servers: MailServers, account: Account, other_account: Account
) -> None:
    messages = []
    for n in range(10):
        to: list[str] = [other_account.email]
        if n in (3, 6, 7):
            to = [OUTSIDE]  # refused by Postfix: nothing to send
        elif n == 5:
            to = [OUTSIDE, other_account.email]  # partly refused
        messages.append(
            mailsync.compose(from_=account.email, to=to, subject=f"n{n}", text=f"body {n}\n")
        )
    with _plain(mail_servers) as out:
        results = out.send_many(messages)
        assert out.connections_opened == 1
    assert [bool(r.accepted) for r in results] == [n not in (3, 6, 7) for n in range(10)]
    assert results[5].accepted == (other_account.email,)
    assert results[5].refused[OUTSIDE][0] == 554
    assert results[6].refused[OUTSIDE][0] == 554
    arrived = _arrived(mail_servers, other_account, 7)
    subjects = sorted(email.message_from_bytes(raw)["Subject"] for raw in arrived)
    assert subjects == sorted(f"n{n}" for n in range(10) if n not in (3, 6, 7))


def test_connection_kept_between_sends_and_reopened_when_stale(
    mail_servers: MailServers, account: Account, other_account: Account, tcp_proxy: ProxyFactory
) -> None:
    proxy = tcp_proxy(mail_servers.host, mail_servers.submission_port)
    with _submission(mail_servers, account, port=proxy.port) as out:
        out.send(_small(account, other_account, 1))
        out.send(_small(account, other_account, 2))
        assert proxy.connections == 1
        assert proxy.cut_all() == 1  # the network drops the idle connection
        out.send(_small(account, other_account, 3))
        assert proxy.connections == 2
    subjects = sorted(
        email.message_from_bytes(r)["Subject"] for r in _arrived(mail_servers, other_account, 3)
    )
    assert subjects == ["n1", "n2", "n3"]


def _wait_for_unread(servers: MailServers, out: SMTPSender, marker: bytes) -> None:
    """Poll (with a deadline) until ``marker`` waits, not yet read, in the sender's socket."""
    channel = out._session.channel
    assert isinstance(channel, SocketChannel)
    sock = channel.sock
    servers.wait_for(
        lambda: marker in sock.recv(65536, socket.MSG_PEEK),
        timeout=10,
        interval=0.01,
        message=f"{marker!r} received",
    )


@pytest.mark.reliability(
    area="SMTP",
    fault="the connection to the real Postfix is cut in the middle of send_many(), after a "
    "message's end of data was written and before Postfix saw it",
    inputs="by default; with resend_uncertain=True",
    outcome="no accepted message is sent twice and the rest are sent; the message whose end "
    "of data got no answer is reported in DeliveryUncertain and not sent again (with "
    "resend_uncertain: sent once more, and it arrives once, as Postfix never saw it)",
)
@pytest.mark.parametrize("resend", [False, True], ids=["default", "resend_uncertain"])
def test_dropped_connection_mid_send_many_resends_no_accepted_message(
    mail_servers: MailServers,
    account: Account,
    other_account: Account,
    tcp_proxy: ProxyFactory,
    resend: bool,
) -> None:
    proxy = tcp_proxy(mail_servers.host, mail_servers.smtp_port)

    def cut_and_resume() -> None:
        proxy.cut_all()
        proxy.resume()

    def messages() -> Iterator[EmailMessage]:
        for n in range(30):
            if n == 15:
                # send_many pulls message 15 once message 13's data and message 14's envelope
                # are out. When their answers are back, message 14's data and message 15's
                # envelope go out next: hold them in the proxy and cut the connection, so the
                # server never sees either.
                _wait_for_unread(mail_servers, out, b"354 ")
                proxy.stall()
                threading.Timer(0.3, cut_and_resume).start()
            yield _small(account, other_account, n)

    with _plain(mail_servers, port=proxy.port, resend_uncertain=resend) as out:
        if resend:
            results = out.send_many(messages())
        else:
            with pytest.raises(mailsync.DeliveryUncertain) as caught:
                out.send_many(messages())
            results = caught.value.results
            # Message 14's end of data went out unanswered: reported, never sent again.
            assert [n for n, r in enumerate(results) if r is None] == [14]
            assert len(caught.value.message_ids) == 1
    assert proxy.cuts == 1
    assert proxy.connections == 2
    sent = [r for r in results if r is not None]
    assert all(r.ok for r in sent)
    assert len(sent) == (30 if resend else 29)
    counts = collections.Counter(_message_ids(_arrived(mail_servers, other_account, len(sent))))
    assert set(counts) == {r.message_id for r in sent}
    assert set(counts.values()) == {1}


@pytest.mark.reliability(
    area="SMTP",
    fault="the server stops answering (the proxy stalls)",
    outcome="MailTimeout; the next send reconnects",
)
def test_a_hung_server_is_a_timeout_and_the_next_send_reconnects(
    mail_servers: MailServers, account: Account, other_account: Account, tcp_proxy: ProxyFactory
) -> None:
    proxy = tcp_proxy(mail_servers.host, mail_servers.smtp_port)
    with _plain(mail_servers, port=proxy.port, timeout=1.0) as out:
        assert out.send(_small(account, other_account, 1)).ok
        proxy.stall()
        with pytest.raises(mailsync.MailTimeout):
            out.send(_small(account, other_account, 2))
        proxy.resume()
        assert out.send(_small(account, other_account, 3)).ok
        assert out.connections_opened == 2
    subjects = sorted(
        email.message_from_bytes(raw)["Subject"] for raw in _arrived(mail_servers, other_account, 2)
    )
    assert subjects == ["n1", "n3"]


def test_etrn_against_postfix(mail_servers: MailServers) -> None:
    # This Postfix has no fast-flush domains, so it declines with 459; the point is that the
    # command goes through and the reply is translated.
    with _plain(mail_servers) as out, pytest.raises(mailsync.TemporaryFailure) as caught:
        out.etrn("example.test")
    assert caught.value.code == 459


# -- async -----------------------------------------------------------------------------------


async def test_async_sender_sends_the_same(
    mail_servers: MailServers, account: Account, other_account: Account, tcp_proxy: ProxyFactory
) -> None:
    hidden = mail_servers.new_account("h")
    message = _rich(account, other_account, bcc=hidden.email)
    expected = prepare(message).data
    proxy = tcp_proxy(mail_servers.host, mail_servers.submission_port)
    out = _submission(mail_servers, account, port=proxy.port, asynchronous=True)
    assert isinstance(out, AsyncSMTPSender)
    async with out:
        result = await out.send(message, notify="success")
        batch = await out.send_many([_small(account, other_account, n) for n in range(20)])
    assert set(result.accepted) == {other_account.email, hidden.email}
    assert all(r.ok for r in batch)
    assert proxy.connections == 1
    raws = _arrived(mail_servers, other_account, 21)
    assert any(raw.endswith(expected) for raw in raws)
    (hidden_raw,) = _arrived(mail_servers, hidden, 1)
    assert hidden_raw.endswith(expected)
    (report_raw,) = _reports(mail_servers, account, 1)
    report = mailsync.parse_report(report_raw)
    assert report is not None
    assert report.envid == result.envid


async def test_async_wrong_password(
    mail_servers: MailServers, account: Account, other_account: Account
) -> None:
    out = _submission(mail_servers, account, password="wrong-one-456", asynchronous=True)
    with pytest.raises(mailsync.AuthenticationError) as caught:
        await out.send(_small(account, other_account, 1))
    assert "wrong-one-456" not in str(caught.value)
    await out.aclose()


async def test_async_sender_reconnects_after_a_cut(
    mail_servers: MailServers, account: Account, other_account: Account, tcp_proxy: ProxyFactory
) -> None:
    proxy = tcp_proxy(mail_servers.host, mail_servers.submission_port)
    async with _submission(mail_servers, account, port=proxy.port, asynchronous=True) as out:
        first = await out.send_many([_small(account, other_account, n) for n in range(5)])
        assert proxy.cut_all() == 1
        second = await out.send_many([_small(account, other_account, n) for n in range(5, 10)])
    assert all(r.ok for r in first + second)
    assert proxy.connections == 2
    counts = collections.Counter(_message_ids(_arrived(mail_servers, other_account, 10)))
    assert set(counts.values()) == {1}
    assert len(counts) == 10


# -- SMTPUTF8 (RFC 6531) ---------------------------------------------------------------------
# Dovecot's LMTP does not offer SMTPUTF8, so SMTPUTF8 mail is sent to utf8.test, which Postfix
# delivers itself into a Maildir (MailServers.utf8_maildir). Every test takes local parts of
# its own: the servers and that Maildir live for the whole session.

_RECEIVED_WITH = re.compile(rb"^Received:.*?\bwith (\S+)", re.MULTILINE | re.DOTALL)


def _utf8_names() -> tuple[str, str]:
    """A fresh non-ASCII sender and recipient local part."""
    tag = secrets.token_hex(3)
    return f"josé-{tag}", f"用户-{tag}"


def _utf8_arrived(servers: MailServers, localpart: str, count: int = 1) -> list[bytes]:
    """The files delivered to ``<localpart>@utf8.test`` once there are ``count`` (polled)."""

    def ready() -> list[bytes]:
        files = servers.utf8_maildir(localpart)
        return [path.read_bytes() for path in files] if len(files) >= count else []

    return servers.wait_for(ready, timeout=30, interval=0.05, message=f"{localpart}: {count}")


def _utf8_message(sender: str, recipient: str, **fields: Any) -> EmailMessage:
    return mailsync.compose(
        from_=("Jösé Müller", sender),
        to=[("王小明", recipient)],
        subject="Grüße aus Köln — 你好",
        text="Hallo 用户,\n.a line starting with a dot\nçà et là\n",
        **fields,
    )


def _head(raw: bytes) -> bytes:
    return raw.partition(b"\n\n")[0]


def _check_utf8_arrival(raw: bytes, message: EmailMessage, sender: str, recipient: str) -> None:
    """``raw`` is ``message`` byte for byte after Postfix's trace headers, its UTF-8 header
    fields unencoded, with the UTF-8 envelope in the trace headers."""
    expected = prepare(message).data
    assert raw.replace(b"\n", b"\r\n").endswith(expected)  # virtual(8) stores LF line ends
    head = _head(raw.replace(b"\r\n", b"\n"))
    assert "Subject: Grüße aus Köln — 你好".encode() in head
    assert f"From: Jösé Müller <{sender}>".encode() in head
    assert f"To: 王小明 <{recipient}>".encode() in head
    assert b"=?" not in head  # nothing was RFC 2047-encoded
    assert f"Return-Path: <{sender}>".encode() in head
    assert f"Delivered-To: {recipient}".encode() in head
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["Subject"] == "Grüße aus Köln — 你好"
    assert parsed["Message-ID"] == message["Message-ID"]
    body = parsed.get_body(("plain",))
    assert body is not None
    assert body.get_content() == "Hallo 用户,\n.a line starting with a dot\nçà et là\n"


def test_smtputf8_message_arrives_byte_correct(mail_servers: MailServers, account: Account) -> None:
    local_from, local_to = _utf8_names()
    sender, recipient = f"{local_from}@utf8.test", f"{local_to}@utf8.test"
    message = _utf8_message(sender, recipient)
    assert prepare(message).needs_smtputf8
    with _submission(mail_servers, account) as out:
        result = out.send(message)
    assert result.accepted == (recipient,)
    assert result.ok

    (raw,) = _utf8_arrived(mail_servers, local_to)
    _check_utf8_arrival(raw, message, sender, recipient)
    # RFC 6531 section 3.7.3: "UTF8SMTPSA" is SMTPUTF8 over TLS with AUTH; without
    # SMTPUTF8 in MAIL FROM Postfix would write "ESMTPSA".
    assert _RECEIVED_WITH.findall(raw) == [b"UTF8SMTPSA"]


async def test_async_smtputf8_message_arrives_byte_correct(mail_servers: MailServers) -> None:
    local_from, local_to = _utf8_names()
    sender, recipient = f"{local_from}@utf8.test", f"{local_to}@utf8.test"
    message = _utf8_message(sender, recipient)
    out = mailsync.sender_async(f"smtp://{mail_servers.host}:{mail_servers.smtp_port}", tls="none")
    assert isinstance(out, AsyncSMTPSender)
    async with out:
        result = await out.send(message)
    assert result.accepted == (recipient,)

    (raw,) = _utf8_arrived(mail_servers, local_to)
    _check_utf8_arrival(raw, message, sender, recipient)
    assert _RECEIVED_WITH.findall(raw) == [b"UTF8SMTP"]  # plain port: no TLS, no AUTH


def test_smtputf8_success_dsn_names_the_utf8_recipient(
    mail_servers: MailServers, account: Account
) -> None:
    local_from, local_to = _utf8_names()
    sender, recipient = f"{local_from}@utf8.test", f"{local_to}@utf8.test"
    message = _utf8_message(sender, recipient)
    with _submission(mail_servers, account) as out:
        # ORCPT goes out as RFC 6533 "utf-8;" for the non-ASCII recipient.
        result = out.send(message, notify="success", envid="ms-utf8-1")
    _utf8_arrived(mail_servers, local_to)
    (raw,) = _utf8_arrived(mail_servers, local_from)

    assert b"message/global-delivery-status" in raw  # RFC 6533, as the original was SMTPUTF8
    # Postfix echoes the ORCPT mailsync sent, in RFC 6533's "utf-8;" form.
    assert f"Original-Recipient: utf-8;{recipient}".encode() in raw
    report = mailsync.parse_report(raw)
    assert report is not None
    assert report.kind == "dsn"
    assert report.envid == "ms-utf8-1"
    assert report.original_message_id == result.message_id
    (entry,) = report.recipients
    assert entry.recipient == recipient
    assert entry.action == "delivered"  # virtual(8) is the final delivery
    assert entry.status is not None
    assert entry.status.startswith("2.")


def test_smtputf8_message_to_the_dovecot_domain_fails_with_5_6_7(
    mail_servers: MailServers, account: Account
) -> None:
    # Postfix offers SMTPUTF8, so mailsync sends and Postfix accepts; its LMTP client then
    # finds that Dovecot does not offer SMTPUTF8 and bounces the message (5.6.7) rather than
    # downgrade it. The failure DSN is SMTPUTF8 mail itself (message/global-delivery-status
    # carrying the UTF-8 original), so it can only reach a sender whose mailbox takes SMTPUTF8:
    # here one on utf8.test. (To a sender on example.test it would bounce again, and Postfix
    # drops a bounce of a bounce: that sender never learns.)
    local_from, _ = _utf8_names()
    sender = f"{local_from}@utf8.test"
    message = _utf8_message(sender, account.email)
    with _submission(mail_servers, account) as out:
        result = out.send(message, notify=["failure", "delay"])
    assert result.accepted == (account.email,)
    assert result.ok  # the refusal comes later, as a DSN

    (raw,) = _utf8_arrived(mail_servers, local_from)
    report = mailsync.parse_report(raw)
    assert report is not None
    assert report.kind == "dsn"
    assert report.envid == result.envid
    assert report.original_message_id == result.message_id
    (entry,) = report.recipients
    assert entry.recipient == account.email
    assert entry.action == "failed"
    assert entry.status == "5.6.7"
    assert entry.diagnostic is not None
    assert "SMTPUTF8" in entry.diagnostic
    # The DSN is written after the one delivery attempt, so nothing can arrive later.
    assert mail_servers.imap_uids(account) == []

    tracker = mailsync.DeliveryTracker(mailsync.SQLiteStateStore(":memory:"))
    tracker.record(result)
    tracked = tracker.feed(raw)
    assert tracked is not None
    assert tracked.failed == (account.email,)
