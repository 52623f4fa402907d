"""save_to: a copy of what was sent, filed in the Sent folder over IMAP (real servers)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import mailsync
from mailsync._base import SendResult
from mailsync._sent import saving_sender
from tests.servers import Account, MailServers


def _urls(servers: MailServers, account: Account) -> tuple[str, str]:
    imap = f"imap://{account.user}@{servers.host}:{servers.imap_port}"
    smtp = f"smtp://{account.user}@{servers.host}:{servers.submission_port}"
    return imap, smtp


def _message(account: Account, subject: str) -> Any:
    return mailsync.compose(
        from_=account.email,
        to=account.email,
        bcc="hidden@example.test",
        subject=subject,
        text="kept",
    )


def test_sent_mail_is_filed_in_the_sent_folder(mail_servers: MailServers, account: Account) -> None:
    imap, smtp = _urls(mail_servers, account)
    options = {"password": account.password, "verify": mail_servers.cafile}
    with mailsync.connect(imap, state=":memory:", **options) as box:
        with mailsync.sender(smtp, save_to=box, **options) as out:  # its \\Sent folder
            result = out.send(_message(account, "filed"))
    assert result.saved_to == "Sent"
    ((_uid, flags, raw),) = mail_servers.imap_messages(account, "Sent")  # read with imaplib
    copy = mailsync.Message(raw)
    assert copy.message_id == result.message_id
    assert "\\Seen" in flags
    assert [a.email for a in copy.bcc] == ["hidden@example.test"]  # you see whom you copied


def test_named_folder_and_send_many(mail_servers: MailServers, account: Account) -> None:
    imap, smtp = _urls(mail_servers, account)
    options = {"password": account.password, "verify": mail_servers.cafile}
    mail_servers.create_folder(account, "Outbox Copies")
    box = mailsync.connect(imap, state=":memory:", **options)
    with mailsync.sender(smtp, save_to=(box, "Outbox Copies"), **options) as out:
        results = out.send_many([_message(account, f"many {n}") for n in range(3)])
    assert [r.saved_to for r in results] == ["Outbox Copies"] * 3
    with box:
        assert sorted(m.subject for m in box.messages("Outbox Copies")) == [
            "many 0",
            "many 1",
            "many 2",
        ]


def test_async_sender_files_the_copy(mail_servers: MailServers, account: Account) -> None:
    imap, smtp = _urls(mail_servers, account)
    options = {"password": account.password, "verify": mail_servers.cafile}

    async def main() -> tuple[SendResult, list[str]]:
        async with mailsync.connect_async(imap, state=":memory:", **options) as box:
            async with mailsync.sender_async(smtp, save_to=(box, "Sent"), **options) as out:
                result = await out.send(_message(account, "async filed"))
            return result, [m.subject async for m in box.messages("Sent")]

    result, subjects = asyncio.run(asyncio.wait_for(main(), 60))
    assert result.saved_to == "Sent"
    assert subjects == ["async filed"]


def test_a_failed_copy_does_not_fail_the_send(tmp_path: Path) -> None:
    """The message went out; not filing it is a warning and a None, never an exception."""
    box = mailsync.connect(f"mbox:{tmp_path / 'missing.mbox'}", state=":memory:")
    out = mailsync.sender(f"maildir:{tmp_path / 'out'}", save_to=(box, "\\Sent"))
    result = out.send(
        mailsync.compose(from_="a@example.test", to="b@example.test", subject="x", text="x")
    )
    assert result.accepted == ("b@example.test",)
    assert result.saved_to is None
    assert "missing.mbox" in str(out.save_error)


def test_transports_that_file_sent_mail_themselves_are_not_wrapped(tmp_path: Path) -> None:
    inner = mailsync.sender(f"maildir:{tmp_path}")
    box = mailsync.connect(f"maildir:{tmp_path}", state=":memory:")
    assert saving_sender(inner, box) is not inner
    type(inner).saves_sent_copy = True  # as the Gmail API and Graph senders declare
    try:
        assert saving_sender(inner, box) is inner
    finally:
        type(inner).saves_sent_copy = False


def test_save_to_must_name_a_mailbox(tmp_path: Path) -> None:
    with pytest.raises(mailsync.ConfigError, match="save_to takes a Retriever"):
        mailsync.sender(f"maildir:{tmp_path}", save_to="Sent")  # type: ignore[arg-type]
    with pytest.raises(mailsync.ConfigError, match="did you mean 'save_to'"):
        mailsync.sender(f"maildir:{tmp_path}", save_too="Sent")
