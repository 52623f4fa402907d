"""A server that offers STARTTLS (STLS) and then refuses it: every protocol, sync and async,
fails with ConnectionFailed (TLS could not be set up), as when STARTTLS is not offered at all,
and sends no credentials. Issue 14: IMAP and POP3 said ServerError, SMTP ConnectionFailed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

import mailsync
from tests.imap.hostile import HostileIMAP
from tests.pop3.scripted import Mail, ScriptedPOP3
from tests.smtp.scripted import ScriptedSMTP

PASSWORD = "Secret-pw-1"


def _imap(reply: str) -> tuple[Any, Callable[[], bool]]:
    server = HostileIMAP("IMAP4rev1 STARTTLS AUTH=PLAIN", refuse_starttls=reply)
    return server, lambda: not any(b"LOGIN" in x or b"AUTHENTICATE" in x for x in server.received)


def _pop3(reply: str) -> tuple[Any, Callable[[], bool]]:
    server = ScriptedPOP3([Mail("a", b"Subject: a\r\n\r\nx\r\n")], stls_reply=reply)
    return (
        server,
        lambda: not any(c.upper().startswith(("USER", "PASS", "AUTH")) for c in server.commands),
    )


def _smtp(reply: str) -> tuple[Any, Callable[[], bool]]:
    server = ScriptedSMTP(extensions=("PIPELINING", "STARTTLS", "AUTH PLAIN"))
    server.queue("STARTTLS", reply)
    return server, lambda: "AUTH" not in server.verbs()


SERVERS = {
    "IMAP NO": (_imap, "NO [UNAVAILABLE] TLS is not available now"),
    "IMAP BAD": (_imap, "BAD STARTTLS not now"),
    "POP3 -ERR": (_pop3, "-ERR TLS is not available now"),
    "SMTP 454": (_smtp, "454 4.7.0 TLS not available due to temporary reason"),
}


def _use(url: str, smtp: bool, asynchronous: bool) -> None:
    options: dict[str, Any] = {"password": PASSWORD, "tls": "starttls"}
    if smtp:
        message = mailsync.compose(from_="a@example.test", to="b@example.test", subject="s")
        if asynchronous:

            async def send() -> None:
                async with mailsync.sender_async(url, **options) as out:
                    await out.send(message)

            asyncio.run(send())
        else:
            with mailsync.sender(url, **options) as out:
                out.send(message)
        return
    options["state"] = ":memory:"
    if asynchronous:

        async def read() -> None:
            async with mailsync.connect_async(url, **options) as box:
                async for _ in box.messages():
                    pass

        asyncio.run(read())
    else:
        with mailsync.connect(url, **options) as box:
            list(box.messages())


@pytest.mark.reliability(
    area="Connections",
    fault="the server offers STARTTLS (POP3: STLS) and refuses it when asked",
    inputs="IMAP NO and BAD, POP3 -ERR, SMTP 454; sync and async",
    outcome="ConnectionFailed saying STARTTLS was refused, as when it is not offered; no "
    "credentials sent",
)
@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("case", list(SERVERS))
def test_a_refused_starttls_is_connection_failed(case: str, asynchronous: bool) -> None:
    make, reply = SERVERS[case]
    server, no_credentials = make(reply)
    with server:
        url = server.url(user="alice")
        with pytest.raises(mailsync.MailsyncError) as caught:
            _use(url, case.startswith("SMTP"), asynchronous)
    assert type(caught.value) is mailsync.ConnectionFailed, repr(caught.value)
    assert "STARTTLS" in str(caught.value) or "STLS" in str(caught.value)
    assert no_credentials()
