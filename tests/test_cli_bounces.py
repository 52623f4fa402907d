"""``mailsync bounces`` against the real Dovecot, reading DSNs the real Postfix wrote."""

from __future__ import annotations

import json
from email.utils import make_msgid

import pytest

from mailsync._cli import main
from tests.servers import Account, MailServers


def message(sender: Account, to: str, message_id: str) -> bytes:
    return (
        f"From: {sender.email}\r\nTo: {to}\r\nSubject: bounces command\r\n"
        f"Message-ID: {message_id}\r\n\r\nHello.\r\n"
    ).encode()


@pytest.fixture
def reports_inbox(
    mail_servers: MailServers, account: Account, other_account: Account
) -> tuple[str, str]:
    """The account's INBOX with a failure DSN, a success DSN and one ordinary message."""
    failed_id, relayed_id = make_msgid(domain="example.test"), make_msgid(domain="example.test")
    nobody = f"nobody-{account.user.partition('@')[0]}@{mail_servers.domain}"
    mail_servers.send(
        account, [nobody], message(account, nobody, failed_id), rcpt_options=["NOTIFY=FAILURE"]
    )
    mail_servers.send(
        account,
        [other_account.email],
        message(account, other_account.email, relayed_id),
        rcpt_options=["NOTIFY=SUCCESS"],
    )
    mail_servers.deliver(account, message(other_account, account.email, "<plain@example.test>"))
    mail_servers.wait_for(
        lambda: len(mail_servers.imap_uids(account)) >= 3, timeout=60, message="two reports"
    )
    return failed_id.strip("<>"), relayed_id.strip("<>")


def run(
    mail_servers: MailServers,
    account: Account,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    *options: str,
) -> list[str]:
    monkeypatch.setenv("BOUNCES_TEST_PASSWORD", account.password)
    url = f"imap://{account.user}@{mail_servers.host}:{mail_servers.imap_port}"
    status = main(
        ["bounces", url, "--tls", "none", "--password-env", "BOUNCES_TEST_PASSWORD", *options]
    )
    captured = capsys.readouterr()
    assert status == 0, captured.err
    return captured.out.splitlines()


def test_bounces_lists_each_recipient_of_each_report(
    mail_servers: MailServers,
    account: Account,
    other_account: Account,
    reports_inbox: tuple[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    failed_id, relayed_id = reports_inbox
    rows = [json.loads(line) for line in run(mail_servers, account, capsys, monkeypatch, "--json")]
    by_id = {row["original_message_id"]: row for row in rows}
    assert len(rows) == 2  # the ordinary message is no report
    failed = by_id[failed_id]
    assert failed["recipient"].startswith("nobody-")
    assert (failed["action"], failed["reason"], failed["permanent"]) == (
        "failed",
        "user_unknown",
        True,
    )
    assert failed["status"].startswith("5.1.")
    relayed = by_id[relayed_id]
    assert (relayed["recipient"], relayed["action"]) == (other_account.email, "relayed")
    assert relayed["status"].startswith("2.")
    # Reading is no side effect: the reports are still unseen.
    assert all("\\Seen" not in flags for flags in mail_servers.imap_flags(account).values())


def test_bounces_text_and_failed_only(
    mail_servers: MailServers,
    account: Account,
    reports_inbox: tuple[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    failed_id, _ = reports_inbox
    (line,) = run(mail_servers, account, capsys, monkeypatch, "--failed")
    recipient, action, status, reason, original = line.split("  ")
    assert recipient.startswith("nobody-")
    assert (action, reason, original) == ("failed", "user_unknown", f"<{failed_id}>")
    assert status.startswith("5.1.")


def test_bounces_on_a_missing_folder_is_one_line_of_error(
    mail_servers: MailServers,
    account: Account,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(AssertionError, match="mailsync: error:"):
        run(mail_servers, account, capsys, monkeypatch, "--folder", "No/Such/Folder")
