"""Proof that the test harness (tests/servers.py, tests/proxy.py) does what tests rely on.

Only stdlib clients here: these tests must hold whatever state mailsync is in.
"""

from __future__ import annotations

import contextlib
import email
import email.message
import email.policy
import email.utils
import imaplib
import poplib
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable

import pytest

from tests.proxy import TCPProxy
from tests.servers import (
    DOMAIN,
    Account,
    MailServers,
    group_processes,
    imap_utf7_decode,
    imap_utf7_encode,
    wait_for,
)

IMAP_EXTENSIONS = ("IDLE", "CONDSTORE", "QRESYNC", "MOVE", "SPECIAL-USE", "UIDPLUS")


def make_message(sender: str, to: str, subject: str, body: str = "hello\n", size: int = 0) -> bytes:
    message = email.message.EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = email.utils.make_msgid(domain=DOMAIN)
    message.set_content(body + "x" * size)
    return message.as_bytes(policy=email.policy.SMTP)


def reports(servers: MailServers, account: Account) -> list[email.message.EmailMessage]:
    return [
        message
        for message in servers.parsed_messages(account)
        if message.get_content_type() == "multipart/report"
    ]


def status_fields(report: email.message.EmailMessage) -> tuple[dict[str, str], dict[str, str]]:
    """Per-message and (first) per-recipient fields of a delivery-status report."""
    assert report.get_param("report-type") == "delivery-status", report["Content-Type"]
    for part in report.iter_parts():
        if part.get_content_type() == "message/delivery-status":
            blocks = part.get_payload()
            assert isinstance(blocks, list)
            assert len(blocks) >= 2
            per_message, per_recipient = blocks[0], blocks[1]
            assert isinstance(per_message, email.message.Message)
            assert isinstance(per_recipient, email.message.Message)
            return (
                {key.lower(): str(value) for key, value in per_message.items()},
                {key.lower(): str(value) for key, value in per_recipient.items()},
            )
    raise AssertionError("no message/delivery-status part")


def connect_and_read(address: tuple[str, int]) -> bytes:
    # The reset may already fail connect() (it is reported there when it beats the
    # handshake's completion to the caller), or else the first read.
    with socket.create_connection(address, timeout=10) as sock:
        return sock.recv(100)


def read_until_closed(sock: socket.socket, into: bytearray) -> None:
    while chunk := sock.recv(100):
        into += chunk


# --------------------------------------------------------------------------- IMAP


def test_imap_login_and_capabilities(mail_servers: MailServers, account: Account) -> None:
    conn = imaplib.IMAP4(mail_servers.host, mail_servers.imap_port, timeout=10)
    try:
        assert "STARTTLS" in conn.capabilities
        conn.login(account.user, account.password)
        typ, data = conn.capability()
        assert typ == "OK"
        capabilities = set(data[0].decode().upper().split())
        assert capabilities >= set(IMAP_EXTENSIONS), capabilities
    finally:
        conn.logout()


def test_failed_logins_do_not_slow_later_ones(mail_servers: MailServers, account: Account) -> None:
    # All tests share 127.0.0.1, so Dovecot's per-IP auth penalty (>= 2 s after a failure)
    # must be off, or one deliberate wrong password would slow every later login.
    for _ in range(2):
        conn = imaplib.IMAP4(mail_servers.host, mail_servers.imap_port, timeout=10)
        try:
            with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
                conn.login(account.user, account.password + "-wrong")
        finally:
            conn.logout()
    started = time.monotonic()
    with mail_servers.imap(account):
        pass
    assert time.monotonic() - started < 1.5


def test_list_shows_special_use(mail_servers: MailServers, account: Account) -> None:
    folders = mail_servers.folders(account)
    assert "INBOX" in folders
    for name, flag in {
        "Sent": "\\Sent",
        "Trash": "\\Trash",
        "Drafts": "\\Drafts",
        "Junk": "\\Junk",
        "Archive": "\\Archive",
    }.items():
        assert flag in folders[name], (name, folders[name])


def test_idle_hears_new_mail(mail_servers: MailServers, account: Account) -> None:
    with socket.create_connection((mail_servers.host, mail_servers.imap_port), timeout=5) as sock:
        reader = sock.makefile("rb")
        reader.readline()
        login = f"a LOGIN {account.user} {account.password}\r\nb SELECT INBOX\r\nc IDLE\r\n"
        sock.sendall(login.encode())
        while not reader.readline().startswith(b"+ idling"):
            pass
        mail_servers.deliver(account, make_message("x@example.test", account.email, "push"))
        line = reader.readline()  # a 5 s read timeout: far below the 30 s fallback poll
        assert line == b"* 1 EXISTS\r\n"
        sock.sendall(b"DONE\r\nd LOGOUT\r\n")
        reader.close()


def test_new_accounts_log_in_at_once(mail_servers: MailServers) -> None:
    # Keep Dovecot's auth busy meanwhile: a shared passwd-file would then be served from a
    # cache up to a second old, and a brand-new user would be unknown.
    stop = threading.Event()
    busy = mail_servers.new_account("busy")

    def churn() -> None:
        while not stop.is_set():
            with mail_servers.imap(busy):
                pass

    worker = threading.Thread(target=churn)
    worker.start()
    try:
        for _ in range(15):
            fresh = mail_servers.new_account("fresh")
            with mail_servers.imap(fresh) as conn:
                assert conn.select("INBOX")[0] == "OK"
    finally:
        stop.set()
        worker.join()


def test_append_helpers_and_folders(mail_servers: MailServers, account: Account) -> None:
    raws = [make_message("a@example.test", account.email, f"m{i}") for i in range(3)]
    uids = mail_servers.append_many(account, raws)
    assert uids == sorted(uids)
    assert len(set(uids)) == 3
    flagged = mail_servers.append(account, raws[0], flags=("\\Seen", "\\Flagged", "$Label"))
    assert mail_servers.imap_uids(account) == [*uids, flagged]
    flags = mail_servers.imap_flags(account)
    assert flags[flagged] >= {"\\Seen", "\\Flagged", "$Label"}
    assert "\\Seen" not in flags[uids[0]]

    for name in ("Projects/2024", "Ünïcode & more", "dotted.name"):
        mail_servers.create_folder(account, name)
        assert name in mail_servers.folders(account)
        mail_servers.append(account, raws[1], folder=name)
        assert len(mail_servers.imap_uids(account, name)) == 1
    mail_servers.delete_folder(account, "dotted.name")
    assert "dotted.name" not in mail_servers.folders(account)
    assert (account.maildir / "cur").is_dir()  # Maildir++: INBOX at the root


def test_imap_utf7_round_trip() -> None:
    for name in ("INBOX", "Ünïcode & more", "日本語/フォルダ", "&", "a&b"):
        assert imap_utf7_decode(imap_utf7_encode(name)) == name
    assert imap_utf7_encode("Entwürfe") == "Entw&APw-rfe"


# --------------------------------------------------------------------------- POP3, LMTP, TLS


def test_pop3_stat_and_uidl_after_lmtp(mail_servers: MailServers, account: Account) -> None:
    mail_servers.deliver(account, make_message("x@example.test", account.email, "one"))
    mail_servers.deliver(account, make_message("x@example.test", account.email, "two"))
    pop = poplib.POP3(mail_servers.host, mail_servers.pop3_port, timeout=10)
    try:
        assert "STLS" in pop.capa()  # offered before login only
        pop.user(account.user)
        pop.pass_(account.password)
        count, _size = pop.stat()
        assert count == 2
    finally:
        pop.quit()
    first = mail_servers.pop3_uidls(account)
    assert len(first) == 2
    assert len(set(first)) == 2
    assert mail_servers.pop3_uidls(account) == first  # stable across sessions


def test_lmtp_unix_socket(mail_servers: MailServers, account: Account) -> None:
    lmtp = smtplib.LMTP(mail_servers.lmtp_socket)
    try:
        lmtp.sendmail("x@example.test", [account.email], make_message("x@x", account.email, "s"))
    finally:
        lmtp.quit()
    assert len(mail_servers.imap_uids(account)) == 1


def test_lmtp_rejects_unknown_user(mail_servers: MailServers) -> None:
    lmtp = smtplib.LMTP(mail_servers.host, mail_servers.lmtp_port)
    try:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            lmtp.sendmail("x@example.test", [f"nobody@{DOMAIN}"], b"Subject: x\r\n\r\nx\r\n")
        code, _text = refused.value.recipients[f"nobody@{DOMAIN}"]
        assert code == 550
    finally:
        lmtp.quit()


def test_implicit_tls_ports(mail_servers: MailServers, account: Account) -> None:
    mail_servers.deliver(account, make_message("x@example.test", account.email, "tls"))
    context = mail_servers.ssl_context()
    imap = imaplib.IMAP4_SSL(
        mail_servers.host, mail_servers.imaps_port, ssl_context=context, timeout=10
    )
    try:
        imap.login(account.user, account.password)
        typ, data = imap.select("INBOX", readonly=True)
        assert (typ, data) == ("OK", [b"1"])
    finally:
        imap.logout()
    pops = poplib.POP3_SSL(mail_servers.host, mail_servers.pop3s_port, context=context, timeout=10)
    try:
        pops.user(account.user)
        pops.pass_(account.password)
        assert pops.stat()[0] == 1
    finally:
        pops.quit()
    pop = poplib.POP3(mail_servers.host, mail_servers.pop3_port, timeout=10)
    try:
        pop.stls(context=context)
        pop.user(account.user)
        pop.pass_(account.password)
        assert pop.stat()[0] == 1
    finally:
        pop.quit()


def test_certificate_is_checked(mail_servers: MailServers) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        imaplib.IMAP4_SSL(
            mail_servers.host,
            mail_servers.imaps_port,
            ssl_context=ssl.create_default_context(),
            timeout=10,
        )


# --------------------------------------------------------------------------- SMTP


def test_smtp_delivers_to_example_test(
    mail_servers: MailServers, account: Account, other_account: Account
) -> None:
    raw = make_message(other_account.email, account.email, "via postfix")
    with smtplib.SMTP(mail_servers.host, mail_servers.smtp_port, timeout=10) as smtp:
        smtp.ehlo()
        for extension in ("pipelining", "8bitmime", "smtputf8", "dsn", "size", "starttls"):
            assert smtp.has_extn(extension), extension
        assert not smtp.has_extn("auth")
        assert smtp.sendmail(other_account.email, [account.email], raw) == {}
    wait_for(lambda: mail_servers.imap_uids(account), message="mail in INBOX")
    [message] = mail_servers.parsed_messages(account)
    assert message["Subject"] == "via postfix"


def test_success_dsn_comes_back(
    mail_servers: MailServers, account: Account, other_account: Account
) -> None:
    raw = make_message(account.email, other_account.email, "please confirm")
    with smtplib.SMTP(mail_servers.host, mail_servers.smtp_port, timeout=10) as smtp:
        refused = smtp.sendmail(
            account.email,
            [other_account.email],
            raw,
            mail_options=["RET=HDRS", "ENVID=x1"],
            rcpt_options=["NOTIFY=SUCCESS"],
        )
    assert refused == {}
    [report] = wait_for(lambda: reports(mail_servers, account), message="success DSN")
    per_message, per_recipient = status_fields(report)
    assert per_message["original-envelope-id"] == "x1"
    assert per_recipient["action"] in ("relayed", "delivered")
    assert per_recipient["status"].startswith("2.")
    assert other_account.email in per_recipient["final-recipient"]
    assert len(mail_servers.imap_uids(other_account)) == 1


def test_failure_dsn_for_unknown_user(mail_servers: MailServers, account: Account) -> None:
    nobody = f"nobody-{account.user.split('@')[0]}@{DOMAIN}"
    raw = make_message(account.email, nobody, "to nobody")
    with smtplib.SMTP(mail_servers.host, mail_servers.smtp_port, timeout=10) as smtp:
        assert smtp.sendmail(account.email, [nobody], raw) == {}  # Postfix does not pre-check
    [report] = wait_for(lambda: reports(mail_servers, account), message="failure DSN")
    _per_message, per_recipient = status_fields(report)
    assert per_recipient["action"] == "failed"
    assert per_recipient["status"].startswith("5.")
    assert nobody in per_recipient["final-recipient"]


def test_relay_to_outside_is_refused(mail_servers: MailServers, account: Account) -> None:
    raw = make_message(account.email, "someone@outside.invalid", "relay?")
    with smtplib.SMTP(mail_servers.host, mail_servers.smtp_port, timeout=10) as smtp:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            smtp.sendmail(account.email, ["someone@outside.invalid"], raw)
    code, text = refused.value.recipients["someone@outside.invalid"]
    assert code == 554
    assert b"5.7.1" in text


def test_submission_needs_starttls_and_auth(
    mail_servers: MailServers, account: Account, other_account: Account
) -> None:
    raw = make_message(account.email, other_account.email, "submitted")
    with smtplib.SMTP(mail_servers.host, mail_servers.submission_port, timeout=10) as smtp:
        smtp.ehlo()
        assert not smtp.has_extn("auth")  # only after STARTTLS
        with pytest.raises(smtplib.SMTPException):
            smtp.sendmail(account.email, [other_account.email], raw)
    with smtplib.SMTP(mail_servers.host, mail_servers.submission_port, timeout=10) as smtp:
        smtp.starttls(context=mail_servers.ssl_context())
        smtp.ehlo()
        assert set(smtp.esmtp_features["auth"].split()) >= {"PLAIN", "LOGIN"}
        with pytest.raises(smtplib.SMTPRecipientsRefused):  # TLS alone is not enough
            smtp.sendmail(account.email, [other_account.email], raw)
        smtp.rset()
        with pytest.raises(smtplib.SMTPAuthenticationError):
            smtp.login(account.user, "wrong")
        smtp.login(account.user, account.password)
        assert smtp.sendmail(account.email, [other_account.email], raw) == {}
    with smtplib.SMTP_SSL(
        mail_servers.host, mail_servers.smtps_port, context=mail_servers.ssl_context(), timeout=10
    ) as smtp:
        smtp.ehlo()
        # LOGIN as well as PLAIN (smtplib's login() picks PLAIN).
        smtp.user, smtp.password = account.user, account.password
        smtp.auth("LOGIN", smtp.auth_login)
        assert smtp.sendmail(account.email, [other_account.email], raw) == {}
    wait_for(lambda: len(mail_servers.imap_uids(other_account)) == 2, message="2 submitted")


# --------------------------------------------------------------------------- proxy


def test_proxy_cut_after_breaks_mid_fetch(
    mail_servers: MailServers,
    account: Account,
    tcp_proxy: Callable[[str, int], TCPProxy],
) -> None:
    raw = make_message("x@example.test", account.email, "big", size=300_000)
    mail_servers.append(account, raw)
    proxy = tcp_proxy(mail_servers.host, mail_servers.imap_port)
    conn = imaplib.IMAP4(proxy.host, proxy.port, timeout=10)
    conn.login(account.user, account.password)
    conn.select("INBOX", readonly=True)
    proxy.cut_after(10_000)
    assert proxy.cut_pending
    with pytest.raises((imaplib.IMAP4.abort, OSError)):
        conn.uid("FETCH", "1", "(BODY.PEEK[])")
    assert (proxy.cuts, proxy.cut_pending) == (1, False)
    with contextlib.suppress(OSError):
        conn.shutdown()

    conn = imaplib.IMAP4(proxy.host, proxy.port, timeout=10)  # reconnecting just works
    try:
        conn.login(account.user, account.password)
        conn.select("INBOX", readonly=True)
        typ, data = conn.uid("FETCH", "1", "(BODY.PEEK[])")
        assert typ == "OK"
        assert isinstance(data[0], tuple)
        assert data[0][1].replace(b"\r\n", b"\n") == raw.replace(b"\r\n", b"\n")
    finally:
        conn.logout()
    assert proxy.connections == 2


def test_proxy_cut_after_delivers_exactly_n_bytes(
    mail_servers: MailServers, tcp_proxy: Callable[[str, int], TCPProxy]
) -> None:
    proxy = tcp_proxy(mail_servers.host, mail_servers.imap_port)
    proxy.cut_after(5)  # armed before the connection exists: applies to the next one
    with socket.create_connection(proxy.address, timeout=10) as sock:
        received = bytearray()
        with pytest.raises(ConnectionResetError):
            read_until_closed(sock, received)
        assert received == b"* OK "
    assert proxy.cuts == 1


def test_proxy_cut_all_refuse_and_stall(
    mail_servers: MailServers,
    account: Account,
    tcp_proxy: Callable[[str, int], TCPProxy],
) -> None:
    proxy = tcp_proxy(mail_servers.host, mail_servers.pop3_port)
    pops = [poplib.POP3(proxy.host, proxy.port, timeout=10) for _ in range(2)]
    wait_for(lambda: proxy.live == 2)
    assert proxy.cut_all() == 2
    for pop in pops:
        with pytest.raises((poplib.error_proto, OSError)):
            pop.user(account.user)
        pop.close()
    wait_for(lambda: proxy.live == 0)

    with proxy.refusing(), pytest.raises(ConnectionRefusedError):
        socket.create_connection(proxy.address, timeout=10)
    with proxy.refusing(reset=True), pytest.raises(ConnectionResetError):
        connect_and_read(proxy.address)
    assert proxy.refused == 1

    proxy.stall()
    with socket.create_connection(proxy.address, timeout=10) as sock:
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(100)  # no greeting while stalled
        proxy.resume()
        sock.settimeout(10)
        assert sock.recv(100).startswith(b"+OK")
    with mail_servers.pop3(account) as pop:
        assert pop.stat()[0] == 0


# --------------------------------------------------------------------------- lifecycle


def test_independent_instances_run_side_by_side(mail_servers: MailServers) -> None:
    with MailServers() as second:
        assert not {second.imap_port, second.smtp_port, second.lmtp_port} & {
            mail_servers.imap_port,
            mail_servers.smtp_port,
            mail_servers.lmtp_port,
        }
        user = second.new_account()
        with smtplib.SMTP(second.host, second.smtp_port, timeout=10) as smtp:
            smtp.sendmail(user.email, [user.email], make_message(user.email, user.email, "2nd"))
        wait_for(lambda: second.imap_uids(user), message="mail through the second Postfix")
        root = second.root
        daemons = second.daemon_pids()
        assert set(daemons) == {"dovecot", "postfix"}
        assert root is not None
        assert root.is_dir()
    assert not root.exists()
    for pid in daemons.values():
        assert group_processes(pid, leader=True) == []  # the masters and all children
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((second.host, second.imap_port), timeout=5)


# -- tests/extras.py ---------------------------------------------------------------------------


def test_a_missing_extra_skips_outside_ci_and_fails_under_ci(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.extras import require

    assert require("json", "none").__name__ == "json"
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs the otel extra"):
        require("mailsync_no_such_module", "otel")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run every extra's tests"):
        require("mailsync_no_such_module", "otel")
