"""Untrusted text must never end an IMAP command line: a line break inside a search string,
folder name or flag would let the rest run as a command of its own."""

from __future__ import annotations

import asyncio

import pytest

import mailsync
from mailsync import Q
from mailsync.protocol.imap import quote, render_criteria
from tests.contract import make_raw
from tests.imap.conftest import imap_url
from tests.servers import Account, MailServers

pytestmark = pytest.mark.servers

HOSTILE = [
    "x\r\nA999 DELETE INBOX",
    "x\nA999 DELETE INBOX",
    "x\rA999 DELETE INBOX",
    "x\x00y",
]


@pytest.mark.reliability(
    area="IMAP",
    fault="strings with CR, LF or NUL given to the IMAP quoting",
    outcome="refused: a quoted string cannot end the command line",
)
@pytest.mark.parametrize("text", HOSTILE)
def test_quote_refuses_line_breaks_and_nul(text: str) -> None:
    with pytest.raises(mailsync.ConfigError, match=r"line break|NUL"):
        quote(text)
    with pytest.raises(mailsync.ConfigError):
        render_criteria(["SUBJECT", text])


def test_quote_still_escapes() -> None:
    assert quote('a "b" \\c') == b'"a \\"b\\" \\\\c"'


@pytest.mark.reliability(
    area="IMAP",
    fault="search text crafted to end the command and start another (sync backend, Dovecot)",
    outcome="refused or searched for literally; the injected command never runs",
)
@pytest.mark.parametrize("text", HOSTILE[:2])
def test_sync_search_cannot_inject(mail_servers: MailServers, account: Account, text: str) -> None:
    mail_servers.append(account, make_raw(1))
    target = imap_url(mail_servers, account)
    with mailsync.connect(target.url, state=":memory:", **target.options) as box:
        with pytest.raises(mailsync.ConfigError):
            list(box.messages(query=Q(subject=text)))
        assert [m.subject for m in box.messages()] == ["Message 1"]
    assert "INBOX" in mail_servers.folders(account)


@pytest.mark.reliability(
    area="IMAP",
    fault="search text crafted to end the command and start another (async backend, Dovecot)",
    outcome="refused or searched for literally; the injected command never runs",
)
@pytest.mark.parametrize("text", HOSTILE[:2])
def test_async_search_cannot_inject(mail_servers: MailServers, account: Account, text: str) -> None:
    mail_servers.append(account, make_raw(1))
    target = imap_url(mail_servers, account)

    async def main() -> list[str]:
        async with mailsync.connect_async(target.url, state=":memory:", **target.options) as box:
            with pytest.raises(mailsync.ConfigError):
                _ = [m async for m in box.messages(query=Q(subject=text))]
            return [m.subject async for m in box.messages()]

    assert asyncio.run(main()) == ["Message 1"]
    assert "INBOX" in mail_servers.folders(account)


@pytest.mark.reliability(
    area="IMAP",
    fault="folder names and flags crafted to inject commands (both backends, Dovecot)",
    outcome="refused; no command is injected",
)
@pytest.mark.parametrize("asynchronous", [False, True])
def test_folder_names_and_flags_cannot_inject(
    mail_servers: MailServers, account: Account, asynchronous: bool
) -> None:
    mail_servers.append(account, make_raw(1))
    mail_servers.create_folder(account, "Victim")
    target = imap_url(mail_servers, account)
    evil_folder = "x\r\nA999 DELETE Victim"
    evil_flag = "$x\r\nA998 DELETE Victim"

    def sync_attempts() -> None:
        with mailsync.connect(target.url, state=":memory:", **target.options) as box:
            (message,) = list(box.messages())
            with pytest.raises(mailsync.MailsyncError):
                list(box.messages(evil_folder))
            with pytest.raises(mailsync.MailsyncError):
                box.move(message, evil_folder)
            with pytest.raises(mailsync.MailsyncError):
                box.set_flags(message, add=[evil_flag])
            with pytest.raises(mailsync.MailsyncError):
                box.append(evil_folder, make_raw(2))

    async def async_attempts() -> None:
        async with mailsync.connect_async(target.url, state=":memory:", **target.options) as box:
            (message,) = [m async for m in box.messages()]
            with pytest.raises(mailsync.MailsyncError):
                _ = [m async for m in box.messages(evil_folder)]
            with pytest.raises(mailsync.MailsyncError):
                await box.move(message, evil_folder)
            with pytest.raises(mailsync.MailsyncError):
                await box.set_flags(message, add=[evil_flag])
            with pytest.raises(mailsync.MailsyncError):
                await box.append(evil_folder, make_raw(2))

    if asynchronous:
        asyncio.run(async_attempts())
    else:
        sync_attempts()
    assert "Victim" in mail_servers.folders(account)
