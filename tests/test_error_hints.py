"""Errors a person causes by configuration say what to change, with the host and port.

Against the real servers: a URL of one protocol pointed at another's port, implicit TLS on a
STARTTLS port, a certificate from a private CA, a host that does not resolve, a closed port.
Each message is one line that names the host:port and the fix.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from typing import Any

import pytest

import mailsync
from mailsync._hints import greeting_problem, other_protocol, socket_error_text
from tests.servers import Account, MailServers


def _fail(call: Callable[[], Any]) -> mailsync.MailsyncError:
    with pytest.raises(mailsync.MailsyncError) as info:
        call()
    return info.value


def _folders(url: str, **options: Any) -> Callable[[], Any]:
    options.setdefault("password", "pw")
    return lambda: mailsync.connect(url, state=":memory:", **options).folders()


def _pop3(url: str, **options: Any) -> Callable[[], Any]:
    options.setdefault("password", "pw")
    return lambda: list(mailsync.connect(url, state=":memory:", **options).messages())


def _send(url: str, account: Account, **options: Any) -> Callable[[], Any]:
    message = mailsync.compose(from_=account.email, to=account.email, subject="x", text="x")
    return lambda: mailsync.sender(url, **options).send(message)


def _async_folders(url: str, **options: Any) -> Callable[[], Any]:
    options.setdefault("password", "pw")

    async def run() -> None:
        async with mailsync.connect_async(url, state=":memory:", **options) as box:
            await box.folders()

    return lambda: asyncio.run(asyncio.wait_for(run(), 60))


def _one_line(error: BaseException, *needles: str) -> str:
    text = str(error)
    assert "\n" not in text
    for needle in needles:
        assert needle in text, text
    return text


# -- another protocol on the port ---------------------------------------------------------------


def test_imap_url_on_a_pop3_port_says_it_looks_like_pop3(
    mail_servers: MailServers, account: Account
) -> None:
    host, ctx = mail_servers.host, mail_servers.ssl_context()
    for call in (
        _folders(f"imaps://{account.user}@{host}:{mail_servers.pop3s_port}", verify=ctx),
        _folders(f"imap://{account.user}@{host}:{mail_servers.pop3_port}", tls="none"),
        _async_folders(f"imaps://{account.user}@{host}:{mail_servers.pop3s_port}", verify=ctx),
    ):
        error = _fail(call)
        assert isinstance(error, mailsync.ProtocolError)
        _one_line(error, f"{host}:", "looks like POP3", "pop3://", "IMAP port")
        assert "None" not in str(error)


def test_imap_url_on_an_smtp_port_fails_at_once(
    mail_servers: MailServers, account: Account
) -> None:
    """aioimaplib waited for a greeting until the timeout; now the hang-up is immediate."""
    host = mail_servers.host
    url = f"imap://{account.user}@{host}:{mail_servers.smtp_port}"
    for call in (_folders(url, tls="none"), _async_folders(url, tls="none", timeout=60)):
        error = _fail(call)
        _one_line(error, f"{host}:{mail_servers.smtp_port}", "looks like SMTP", "smtp://")


def test_pop3_url_on_an_imap_port_says_this_looks_like_imap(
    mail_servers: MailServers, account: Account
) -> None:
    host = mail_servers.host
    error = _fail(_pop3(f"pop3://{account.user}@{host}:{mail_servers.imap_port}", tls="none"))
    _one_line(error, f"POP3 {host}:{mail_servers.imap_port}", "looks like IMAP", "imap://")
    error = _fail(
        _pop3(
            f"pop3s://{account.user}@{host}:{mail_servers.imaps_port}",
            verify=mail_servers.ssl_context(),
        )
    )
    _one_line(error, f"POP3 {host}:{mail_servers.imaps_port}", "looks like IMAP")


def test_smtp_url_on_an_imap_port_names_the_host(
    mail_servers: MailServers, account: Account
) -> None:
    host = mail_servers.host
    error = _fail(_send(f"smtp://{host}:{mail_servers.imap_port}", account, tls="none"))
    _one_line(error, f"SMTP {host}:{mail_servers.imap_port}", "looks like IMAP", "imap://")


# -- TLS ------------------------------------------------------------------------------------------


def test_implicit_tls_on_a_starttls_port_suggests_the_plain_scheme(
    mail_servers: MailServers, account: Account
) -> None:
    host, ctx = mail_servers.host, mail_servers.ssl_context()
    cases = [
        (_folders(f"imaps://{account.user}@{host}:{mail_servers.imap_port}", verify=ctx), "imap"),
        (_async_folders(f"imaps://{account.user}@{host}:{mail_servers.imap_port}"), "imap"),
        (_pop3(f"pop3s://{account.user}@{host}:{mail_servers.pop3_port}", verify=ctx), "pop3"),
        (_send(f"smtps://{host}:{mail_servers.submission_port}", account, verify=ctx), "smtp"),
    ]
    for call, scheme in cases:
        error = _fail(call)
        assert isinstance(error, mailsync.ConnectionFailed)
        _one_line(error, f"{host}:", "STARTTLS", f"use {scheme}://", f"instead of {scheme}s://")
        assert "WRONG_VERSION_NUMBER" not in str(error)


def test_untrusted_certificates_say_how_to_trust_a_private_ca(
    mail_servers: MailServers, account: Account
) -> None:
    """Every protocol, implicit TLS and STARTTLS: the same words and the same fix."""
    host, user = mail_servers.host, account.user
    calls = [
        _folders(f"imaps://{user}@{host}:{mail_servers.imaps_port}", password=account.password),
        _folders(f"imap://{user}@{host}:{mail_servers.imap_port}", password=account.password),
        _async_folders(f"imaps://{user}@{host}:{mail_servers.imaps_port}", password="x"),
        _pop3(f"pop3s://{user}@{host}:{mail_servers.pop3s_port}", password=account.password),
        _pop3(f"pop3://{user}@{host}:{mail_servers.pop3_port}", password=account.password),
        _send(f"smtps://{host}:{mail_servers.smtps_port}", account),
        _send(f"smtp://{host}:{mail_servers.submission_port}", account),
    ]
    for call in calls:
        error = _fail(call)
        assert isinstance(error, mailsync.ConnectionFailed)
        _one_line(error, f"{host}:", "certificate verification failed", "ca_file", "--ca-file")


def test_unresolvable_host_and_closed_port(mail_servers: MailServers, account: Account) -> None:
    for call in (
        _folders("imaps://u@no-such-host.invalid", password="x"),
        _pop3("pop3s://u@no-such-host.invalid", password="x"),
        _send("smtps://no-such-host.invalid", account),
    ):
        error = _fail(call)
        _one_line(error, "no-such-host.invalid", "cannot resolve the host name", "check the host")
        assert "Errno" not in str(error)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    error = _fail(_folders(f"imap://u@127.0.0.1:{port}", tls="none", password="x"))
    _one_line(error, f"127.0.0.1:{port}", "nothing listens", "993")


# -- the wording itself (no server) -------------------------------------------------------------


def test_greeting_problem_recognises_the_usual_protocols() -> None:
    assert "looks like POP3" in greeting_problem("IMAP", "+OK ready")
    assert "looks like IMAP" in greeting_problem("POP3", b"* OK [CAPABILITY IMAP4rev1] hi")
    assert "looks like SMTP" in greeting_problem("POP3", "220 mx ESMTP")
    assert "looks like HTTP" in greeting_problem("SMTP", "HTTP/1.1 400 Bad Request")
    assert "not an IMAP greeting" in greeting_problem("IMAP", "garbage")
    assert "nothing" in greeting_problem("POP3", "")
    assert other_protocol("IMAP", "* OK hi") is None  # its own protocol is not "another"


def test_socket_error_text_only_words_what_it_knows() -> None:
    assert socket_error_text(ValueError("x"), "IMAP h:1") is None
    assert socket_error_text(ConnectionResetError("reset"), "IMAP h:1") is None
    text = socket_error_text(socket.gaierror(-2, "Name or service not known"), "SMTP mx.test:25")
    assert text is not None
    assert "'mx.test'" in text
    expired = ssl.SSLCertVerificationError(1, "certificate verify failed")
    expired.verify_code, expired.verify_message = 10, "certificate has expired"
    text = socket_error_text(expired, "IMAP h:993")
    assert text is not None
    assert "renew" in text
    assert "ca_file" not in text
    mismatch = ssl.SSLCertVerificationError(1, "certificate verify failed")
    mismatch.verify_code, mismatch.verify_message = 62, "Hostname mismatch"
    text = socket_error_text(mismatch, "IMAP mail.test:993")
    assert text is not None
    assert "'mail.test'" in text


def test_the_suggested_fix_works_verify_takes_the_ca_path(
    mail_servers: MailServers, account: Account
) -> None:
    """What the certificate error suggests (verify="/path/ca.pem") is enough, everywhere."""
    host, ca = mail_servers.host, mail_servers.cafile
    imap = f"imaps://{account.user}@{host}:{mail_servers.imaps_port}"
    with mailsync.connect(imap, password=account.password, verify=ca, state=":memory:") as box:
        assert "INBOX" in [f.name for f in box.folders()]
    pop3 = f"pop3://{account.user}@{host}:{mail_servers.pop3_port}"
    with mailsync.connect(pop3, password=account.password, verify=ca, state=":memory:") as box:
        assert list(box.messages()) == []
    smtp = f"smtp://{account.user}@{host}:{mail_servers.submission_port}"
    with mailsync.sender(smtp, password=account.password, verify=ca) as out:
        message = mailsync.compose(from_=account.email, to=account.email, subject="ca", text="x")
        assert out.send(message).accepted == (account.email,)
