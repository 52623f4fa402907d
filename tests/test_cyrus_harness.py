"""Proof that the Cyrus test server (tests/cyrus.py) does what the tests rely on: IMAP with
IDLE that hears new mail at once, special-use folders, POP3 and LMTP from the same store, the
TLS ports, JMAP (a session with the mail capability, Basic auth, submissions that travel
through the test Postfix), and a clean stop.

Only stdlib clients and httpx here: these tests must hold whatever state mailsync is in.
"""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cyrus import CyrusServer, server_binaries
from tests.cyrus import missing_reason as cyrus_missing_reason
from tests.servers import Account, MailServers, group_processes, wait_for

JMAP_USING = [
    "urn:ietf:params:jmap:core",
    "urn:ietf:params:jmap:mail",
    "urn:ietf:params:jmap:submission",
]


def message(to: str, subject: str, *, message_id: bool = True) -> bytes:
    lines = ["From: Seeder <seeder@cyrus.test>", f"To: {to}", f"Subject: {subject}"]
    if message_id:
        lines += [f"Message-ID: <{subject.replace(' ', '-')}@cyrus.test>"]
        lines += ["Date: Thu, 01 Jan 2026 12:00:00 +0000"]
    return ("\r\n".join([*lines, "", "hello", ""])).encode()


# --------------------------------------------------------------------------- IMAP, POP3, LMTP


def test_imap_extensions_and_special_use(cyrus: CyrusServer, cyrus_account: Account) -> None:
    with cyrus.imap(cyrus_account) as conn:
        typ, data = conn.capability()
    assert typ == "OK"
    capabilities = set(data[0].decode().upper().split())
    wanted = {"IDLE", "CONDSTORE", "QRESYNC", "MOVE", "SPECIAL-USE", "UIDPLUS", "LITERAL+"}
    assert capabilities >= wanted, capabilities
    folders = cyrus.folders(cyrus_account)
    for name in ("Sent", "Trash", "Drafts", "Junk", "Archive"):
        # Cyrus sends the attributes in lower case (\sent): IMAP says they are case-insensitive.
        assert f"\\{name.lower()}" in {flag.lower() for flag in folders[name]}, folders


def test_idle_hears_new_mail_at_once(cyrus: CyrusServer, cyrus_account: Account) -> None:
    # Without idled (or its socket directory) imapd polls every 60 s; the 5 s read timeout
    # below would expire.
    with socket.create_connection((cyrus.host, cyrus.imap_port), timeout=5) as sock:
        reader = sock.makefile("rb")
        reader.readline()
        login = f"a LOGIN {cyrus_account.user} {cyrus_account.password}\r\nb SELECT INBOX\r\n"
        sock.sendall(login.encode() + b"c IDLE\r\n")
        while not reader.readline().startswith(b"+ "):
            pass
        cyrus.deliver(cyrus_account, message(cyrus_account.email, "push"))
        assert reader.readline() == b"* 1 EXISTS\r\n"
        sock.sendall(b"DONE\r\nd LOGOUT\r\n")
        reader.close()


def test_lmtp_pop3_and_imap_share_the_store(cyrus: CyrusServer, cyrus_account: Account) -> None:
    cyrus.deliver(cyrus_account, message(cyrus_account.email, "anonymous", message_id=False))
    with cyrus.pop3(cyrus_account) as pop:
        assert pop.stat()[0] == 1
        assert len(pop.uidl()[1]) == 1
    (stored,) = cyrus.parsed_messages(cyrus_account)
    # Cyrus's LMTP adds trace fields, and a Message-ID and a Date where they are missing.
    assert stored["Return-Path"] == "<seeder@cyrus.test>"
    assert stored["Received"] is not None
    assert stored["Message-ID"] is not None
    assert stored["Date"] is not None
    assert [path.name for path in Path(cyrus_account.maildir).glob("*.")] == ["1."]


def test_append_helpers_and_folders(cyrus: CyrusServer, cyrus_account: Account) -> None:
    uids = cyrus.append_many(cyrus_account, [message("x@cyrus.test", f"m{i}") for i in range(3)])
    assert uids == sorted(uids)
    assert len(set(uids)) == 3
    flagged = cyrus.append(cyrus_account, message("x@cyrus.test", "f"), flags=("\\Flagged",))
    assert "\\Flagged" in cyrus.imap_flags(cyrus_account)[flagged]
    for name in ("Projects/2024", "Ünïcode & more"):
        cyrus.create_folder(cyrus_account, name)
        cyrus.append(cyrus_account, message("x@cyrus.test", "in folder"), folder=name)
        assert len(cyrus.imap_uids(cyrus_account, name)) == 1
    # The parent that "Projects/2024" implied is a mailbox of its own on Cyrus.
    assert "\\Noselect" not in cyrus.folders(cyrus_account)["Projects"]
    assert cyrus.imap_uids(cyrus_account, "Projects") == []
    cyrus.delete_folder(cyrus_account, "Ünïcode & more")
    assert "Ünïcode & more" not in cyrus.folders(cyrus_account)


def test_accounts_are_separate_and_logins_checked(cyrus: CyrusServer) -> None:
    first, second = cyrus.new_account("sep"), cyrus.new_account("sep")
    assert first.user != second.user
    cyrus.deliver(first, message(first.email, "for the first"))
    assert len(cyrus.imap_uids(first)) == 1
    assert cyrus.imap_uids(second) == []
    wrong = Account(first.user, first.password + "-wrong", first.email, first.maildir)
    with pytest.raises(imaplib.IMAP4.error), cyrus.imap(wrong):
        pass
    with pytest.raises(poplib.error_proto), cyrus.pop3(wrong):
        pass


def test_admin_sees_every_user(cyrus: CyrusServer, cyrus_account: Account) -> None:
    with cyrus.imap(cyrus.admin) as conn:
        typ, data = conn.getacl(f'"user/{cyrus_account.user}"')
    assert typ == "OK"
    assert cyrus_account.user.encode() in data[0]


def test_lmtp_refuses_unknown_users(cyrus: CyrusServer) -> None:
    with (
        smtplib.LMTP(cyrus.host, cyrus.lmtp_port, timeout=10) as lmtp,
        pytest.raises(smtplib.SMTPRecipientsRefused),
    ):
        lmtp.sendmail("x@cyrus.test", ["nobody@cyrus.test"], message("nobody", "lost"))


def test_tls_ports_and_starttls(cyrus: CyrusServer, cyrus_account: Account) -> None:
    with cyrus.imap(cyrus_account, tls=True) as conn:
        assert conn.select("INBOX")[0] == "OK"
    with cyrus.pop3(cyrus_account, tls=True) as pop:
        assert pop.stat()[0] == 0
    conn = imaplib.IMAP4(cyrus.host, cyrus.imap_port, timeout=10)
    try:
        conn.starttls(ssl_context=cyrus.ssl_context())
        assert conn.login(cyrus_account.user, cyrus_account.password)[0] == "OK"
    finally:
        conn.logout()


# --------------------------------------------------------------------------- JMAP


@pytest.fixture
def jmap(cyrus: CyrusServer, cyrus_account: Account) -> Iterator[httpx.Client]:
    auth = (cyrus_account.user, cyrus_account.password)
    with httpx.Client(base_url=cyrus.http_url, auth=auth, timeout=30) as client:
        yield client


def jmap_call(client: httpx.Client, session: dict[str, Any], *calls: Any) -> list[Any]:
    """One JMAP request; the arguments of each method response, in order."""
    account_id = session["primaryAccounts"]["urn:ietf:params:jmap:mail"]
    method_calls = [
        [name, {"accountId": account_id, **arguments}, str(n)]
        for n, (name, arguments) in enumerate(calls)
    ]
    reply = client.post(session["apiUrl"], json={"using": JMAP_USING, "methodCalls": method_calls})
    reply.raise_for_status()
    return [response[1] for response in reply.json()["methodResponses"]]


def test_jmap_session_and_mailboxes(
    cyrus: CyrusServer, cyrus_account: Account, jmap: httpx.Client
) -> None:
    well_known = jmap.get("/.well-known/jmap")
    assert well_known.status_code == 301
    assert well_known.headers["Location"].endswith("/jmap")
    session = jmap.get(cyrus.jmap_session_url).json()
    assert "urn:ietf:params:jmap:mail" in session["capabilities"]
    assert "urn:ietf:params:jmap:submission" in session["capabilities"]
    assert session["primaryAccounts"]["urn:ietf:params:jmap:mail"] == cyrus_account.user
    limits = session["capabilities"]["urn:ietf:params:jmap:core"]
    assert limits["maxObjectsInGet"] > 0
    assert limits["maxCallsInRequest"] > 0
    cyrus.deliver(cyrus_account, message(cyrus_account.email, "over jmap"))
    mailboxes, query = jmap_call(
        jmap, session, ("Mailbox/get", {"properties": ["name", "role"]}), ("Email/query", {})
    )
    roles = {box["role"] for box in mailboxes["list"]}
    assert roles >= {"inbox", "sent", "trash", "drafts", "junk", "archive"}
    assert len(query["ids"]) == 1


def test_jmap_refuses_a_wrong_password(cyrus: CyrusServer, cyrus_account: Account) -> None:
    auth = (cyrus_account.user, cyrus_account.password + "-wrong")
    reply = httpx.get(cyrus.jmap_session_url, auth=auth, timeout=30)
    assert reply.status_code == 401


def test_jmap_submission_travels_through_the_test_postfix(
    cyrus: CyrusServer,
    cyrus_account: Account,
    jmap: httpx.Client,
    mail_servers: MailServers,
    account: Account,
) -> None:
    assert cyrus.smtp_relay == (mail_servers.host, mail_servers.smtp_port)
    session = jmap.get(cyrus.jmap_session_url).json()
    account_id = session["primaryAccounts"]["urn:ietf:params:jmap:mail"]
    raw = message(account.email, "sent over jmap").replace(
        b"seeder@cyrus.test", cyrus_account.email.encode()
    )
    upload = session["uploadUrl"].replace("{accountId}", account_id)
    blob = jmap.post(upload, content=raw, headers={"Content-Type": "message/rfc822"}).json()
    drafts, identities = jmap_call(
        jmap, session, ("Mailbox/query", {"filter": {"role": "drafts"}}), ("Identity/get", {})
    )
    envelope = {"mailFrom": {"email": cyrus_account.email}, "rcptTo": [{"email": account.email}]}
    imported, submitted = jmap_call(
        jmap,
        session,
        (
            "Email/import",
            {"emails": {"e": {"blobId": blob["blobId"], "mailboxIds": {drafts["ids"][0]: True}}}},
        ),
        (
            "EmailSubmission/set",
            {
                "create": {
                    "s": {
                        "identityId": identities["list"][0]["id"],
                        "emailId": "#e",
                        "envelope": envelope,
                    }
                }
            },
        ),
    )
    assert "e" in imported["created"], imported
    assert "s" in submitted["created"], submitted
    (arrived,) = wait_for(lambda: mail_servers.parsed_messages(account), timeout=30)
    assert arrived["Subject"] == "sent over jmap"
    assert f"<{cyrus_account.email}>" in str(arrived["Received"]) + str(arrived["Return-Path"])


# --------------------------------------------------------------------------- binaries, lifecycle


def test_binaries_come_from_the_cache_once_fetched(cyrus: CyrusServer) -> None:
    folder = server_binaries(fetch=False)  # the session's server found or fetched them
    assert all((folder / name).is_file() for name in ("imapd", "pop3d", "idled"))


def test_a_wrong_binary_directory_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cyrus: CyrusServer
) -> None:
    monkeypatch.setenv("MAILSYNC_CYRUS_BIN", str(tmp_path))
    reason = cyrus_missing_reason()
    assert reason is not None
    assert str(tmp_path) in reason


def test_stop_takes_every_service_down(cyrus: CyrusServer) -> None:
    with CyrusServer() as second:
        assert second.imap_port not in (cyrus.imap_port, cyrus.http_port)
        user = second.new_account()
        second.deliver(user, message(user.email, "second"))
        assert len(second.imap_uids(user)) == 1
        root, pids = second.root, second.daemon_pids()
        assert set(pids) == {"cyrus"}
        assert root is not None
        assert root.is_dir()
        assert second.smtp_relay is None
    assert not root.exists()
    assert group_processes(pids["cyrus"], leader=True) == []
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((second.host, second.imap_port), timeout=5)
