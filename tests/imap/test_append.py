"""What APPEND stores: the same bytes from the sync and the async backend for the same input,
with CRLF line endings as RFC 5322 requires, on both test servers (Cyrus refuses bare
newlines outright; Dovecot would keep a bare CR)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

import mailsync
from tests.imap.conftest import imap_url
from tests.servers import Account, MailboxClients

INPUTS = {
    "lf": b"From: a@example.test\nSubject: lf\n\nline one\nline two\n",
    "bare-cr": b"From: a@example.test\r\nSubject: cr\r\n\r\nline one\rline two\r\n",
    "mixed": b"From: a@example.test\r\nSubject: mixed\nX-A: 1\r\n\nbody\r\r\nend\n",
    "no-final-line-break": b"From: a@example.test\r\nSubject: open end\r\n\r\nno line break",
    # A CR that ends no line is part of its header field (as Dovecot and Postfix read it):
    # stored as a space, as Postfix stores it, never as a line break that starts a Bcc.
    "cr-in-a-header": b"From: a@example.test\r\nSubject: x\rBcc: carol@example.test\r\n\r\nb\r",
}
# What each input is stored as: CRLF line endings, and a space for a CR inside a header.
STORED = {name: re.sub(rb"\r\n|\r|\n", b"\r\n", raw) for name, raw in INPUTS.items()}
STORED["cr-in-a-header"] = (
    b"From: a@example.test\r\nSubject: x Bcc: carol@example.test\r\n\r\nb\r\n"
)


@pytest.fixture(params=["dovecot", "cyrus"])
def store(request: pytest.FixtureRequest) -> tuple[MailboxClients, Account]:
    servers: MailboxClients = request.getfixturevalue(
        "mail_servers" if request.param == "dovecot" else "cyrus"
    )
    return servers, servers.new_account("ap")


def _append_all(servers: MailboxClients, account: Account, *, asynchronous: bool) -> None:
    target = imap_url(servers, account)
    if not asynchronous:
        with mailsync.connect(target.url, state=":memory:", **target.options) as box:
            for raw in INPUTS.values():
                box.append("INBOX", raw)
        return

    async def append() -> None:
        options: dict[str, Any] = {"state": ":memory:", **target.options}
        async with mailsync.connect_async(target.url, **options) as box:
            for raw in INPUTS.values():
                await box.append("INBOX", raw)

    asyncio.run(append())


@pytest.mark.reliability(
    area="IMAP",
    fault="APPEND of raw bytes with bare LF, bare CR and mixed line ends, no final line break, "
    "and a CR inside a header ('Subject: x\\rBcc: carol@...')",
    inputs="sync and async backends, on Dovecot and on Cyrus",
    outcome="both backends store the same bytes, with CRLF line ends; the CR inside a header "
    "is stored as a space, so no Bcc field appears",
)
@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_append_stores_crlf_line_endings(
    store: tuple[MailboxClients, Account], asynchronous: bool
) -> None:
    servers, account = store
    _append_all(servers, account, asynchronous=asynchronous)
    stored = [raw for _uid, _flags, raw in servers.imap_messages(account)]
    assert stored == list(STORED.values())
    assert mailsync.Message(stored[-1]).bcc == ()
