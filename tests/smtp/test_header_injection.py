"""Header injection through control characters, end to end through the real Postfix and
Dovecot (issue 14, defects 8 and 9).

Postfix and Dovecot end header lines at LF: ``Subject: x\\rBcc: carol@...`` is one Subject
to them (Postfix even turns the CR into a space). mailsync used to read a lone CR as a line
end, took carol as a recipient and sent her the message; now prepare() refuses a header
block holding a control character, and the Message model reads such a header as Dovecot
does. What arrives is read with plain imaplib.
"""

from __future__ import annotations

import re
import socket

import pytest

import mailsync
from tests.servers import Account, MailServers

pytestmark = pytest.mark.servers


def _raw_smtp(servers: MailServers, sender: str, recipients: list[str], data: bytes) -> None:
    """Submit ``data`` byte for byte on the plain port: smtplib would turn a lone CR into a
    line end first, which is what this test must not do."""
    with socket.create_connection((servers.host, servers.smtp_port), timeout=30) as sock:
        reader = sock.makefile("rb")

        def reply(line: bytes = b"") -> bytes:
            if line:
                sock.sendall(line)
            while True:
                got = reader.readline()
                if got[3:4] != b"-":
                    return got

        assert reply().startswith(b"220")
        commands = [b"EHLO test\r\n", b"MAIL FROM:<%s>\r\n" % sender.encode()]
        commands += [b"RCPT TO:<%s>\r\n" % rcpt.encode() for rcpt in recipients]
        for command in commands:
            assert reply(command).startswith(b"250"), command
        assert reply(b"DATA\r\n").startswith(b"354")
        assert reply(data + b".\r\n").startswith(b"250")
        reply(b"QUIT\r\n")


def _subjects(servers: MailServers, account: Account, count: int) -> list[bytes]:
    def ready() -> list[bytes] | None:
        raws = [raw for _uid, _flags, raw in servers.imap_messages(account)]
        return raws if len(raws) >= count else None

    raws = servers.wait_for(ready, timeout=30, interval=0.1, message=f"{count} message(s)")
    return [re.search(rb"(?m)^Subject: (.*?)\r?$", raw).group(1) for raw in raws]  # type: ignore[union-attr]


@pytest.mark.reliability(
    area="Sending",
    fault="raw bytes sent with 'Subject: x\\rBcc: carol@...' (a lone CR in a header) through "
    "the real Postfix",
    outcome="ConfigError before anything is sent; carol receives nothing (a marker message "
    "sent after it is the only mail she has), as Postfix itself would not have made her a "
    "recipient",
)
@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_a_lone_cr_cannot_add_a_recipient(
    mail_servers: MailServers, account: Account, other_account: Account, asynchronous: bool
) -> None:
    carol = mail_servers.new_account("carol")
    raw = (
        f"From: {account.email}\r\nTo: {other_account.email}\r\n"
        f"Subject: x\rBcc: {carol.email}\r\n\r\nhello\r\n"
    ).encode()
    url = f"smtp://{mail_servers.host}:{mail_servers.smtp_port}"
    if asynchronous:
        import asyncio

        async def send() -> None:
            async with mailsync.sender_async(url, tls="none") as out:
                await out.send(raw)

        with pytest.raises(mailsync.ConfigError, match="control character"):
            asyncio.run(send())
    else:
        with mailsync.sender(url, tls="none") as out, pytest.raises(mailsync.ConfigError):
            out.send(raw)
    marker = f"From: {account.email}\r\nSubject: marker\r\n\r\nm\r\n".encode()
    _raw_smtp(mail_servers, account.email, [carol.email, other_account.email], marker)
    assert _subjects(mail_servers, carol, 1) == [b"marker"]
    assert _subjects(mail_servers, other_account, 1) == [b"marker"]


def _append_raw(servers: MailServers, account: Account, raw: bytes) -> None:
    """APPEND ``raw`` byte for byte (imaplib's append would turn a lone CR into CRLF)."""
    with servers.imap(account) as conn:
        tag = conn._new_tag()
        conn.send(tag + b" APPEND INBOX {%d}\r\n" % len(raw))
        assert conn._get_line().startswith(b"+")
        conn.send(raw + b"\r\n")
        while not (line := conn._get_line()).startswith(tag):
            pass
        assert line.split()[1] == b"OK", line


@pytest.mark.reliability(
    area="Message parsing",
    fault="a stored message whose header holds a lone CR ('Subject: x\\rBcc: carol@...')",
    outcome="the Message read back over IMAP has the Subject and the (empty) Bcc that "
    "Dovecot's own ENVELOPE gives: a lone CR starts no header",
)
def test_the_model_reads_a_lone_cr_as_dovecot_does(
    mail_servers: MailServers, account: Account
) -> None:
    carol = "carol@example.test"
    raw = (
        f"From: {account.email}\r\nTo: {account.email}\r\n"
        f"Subject: x\rBcc: {carol}\r\nMessage-ID: <cr@example.test>\r\n\r\nhello\r\n"
    ).encode()
    _append_raw(mail_servers, account, raw)
    ((_uid, _flags, stored),) = mail_servers.imap_messages(account)
    assert stored == raw  # the lone CR is still there
    with mail_servers.imap(account) as conn:
        conn.select("INBOX", readonly=True)
        _typ, data = conn.fetch("1", "(ENVELOPE)")
    envelope = b"".join(b"".join(p) if isinstance(p, tuple) else p for p in data)
    # Dovecot: one Subject (the CR shown as a space) and no Bcc in the ENVELOPE.
    assert b"x Bcc: " + carol.encode() in envelope
    assert b'"carol"' not in envelope
    url = f"imap://{account.user}@{mail_servers.host}:{mail_servers.imap_port}"
    with mailsync.connect(url, password=account.password, tls="none", state=":memory:") as box:
        (message,) = box.messages()
    assert message.subject == f"x Bcc: {carol}"
    assert message.bcc == ()
    assert message.message_id == "cr@example.test"
