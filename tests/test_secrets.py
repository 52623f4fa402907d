"""Secrets never appear in logs, reprs or error messages, with every logger at DEBUG."""

from __future__ import annotations

import asyncio
import logging

import pytest

import mailsync
from tests.contract import make_raw
from tests.servers import Account, MailServers

pytestmark = pytest.mark.servers


def _urls(servers: MailServers, account: Account) -> list[tuple[str, dict[str, object]]]:
    user, host = account.user, servers.host
    tls = {"verify": servers.ssl_context()}
    return [
        (f"imap://{user}@{host}:{servers.imap_port}", {"tls": "none"}),
        (f"imaps://{user}@{host}:{servers.imaps_port}", tls),
        (f"pop3://{user}@{host}:{servers.pop3_port}", {"tls": "none"}),
        (f"pop3s://{user}@{host}:{servers.pop3s_port}", tls),
    ]


@pytest.mark.reliability(
    area="Secrets",
    fault="every logger at DEBUG while reading over IMAP, IMAPS, POP3, POP3S (sync and async) "
    "and sending over SMTP",
    outcome="the password is in no log record and no repr",
)
def test_no_password_in_debug_logs_or_reprs(
    mail_servers: MailServers, account: Account, caplog: pytest.LogCaptureFixture
) -> None:
    mail_servers.append(account, make_raw(1))
    caplog.set_level(logging.DEBUG)
    for url, options in _urls(mail_servers, account):
        with mailsync.connect(url, password=account.password, state=":memory:", **options) as box:
            assert [m.subject for m in box.messages()] == ["Message 1"]
            assert account.password not in repr(box)
            assert account.password not in repr(box.endpoint)

        async def run(url: str = url, options: dict[str, object] = options) -> None:
            box = mailsync.connect_async(
                url, password=account.password, state=":memory:", **options
            )
            async with box:
                assert [m.subject async for m in box.messages()] == ["Message 1"]

        asyncio.run(run())
    with mailsync.sender(
        f"smtp://{account.user}@{mail_servers.host}:{mail_servers.submission_port}",
        password=account.password,
        verify=mail_servers.ssl_context(),
    ) as out:
        out.send(mailsync.compose(from_=account.email, to=account.email, subject="s", text="x"))
    logged = "\n".join(_logged(record) for record in caplog.records)
    assert caplog.records, "expected some debug logging to inspect"
    assert {"connect", "fetch", "send"} <= {r.__dict__.get("operation") for r in caplog.records}
    assert account.password not in logged


@pytest.mark.reliability(
    area="Secrets",
    fault="a wrong password against Dovecot over IMAP, IMAPS, POP3 and POP3S",
    outcome="AuthenticationError whose text, cause and context hold no password; no log record "
    "does",
)
def test_no_password_in_authentication_errors(
    mail_servers: MailServers, account: Account, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "Wr0ng-" + account.password
    for url, options in _urls(mail_servers, account):
        with pytest.raises(mailsync.AuthenticationError) as info:
            with mailsync.connect(url, password=wrong, state=":memory:", **options) as box:
                list(box.messages())
        text = f"{info.value} {info.value.__cause__!r} {info.value.__context__!r}"
        assert wrong not in text
    logged = "\n".join(_logged(record) for record in caplog.records)
    assert "AuthenticationError" in logged  # the failed connects are logged, by error type
    assert wrong not in logged


def _logged(record: logging.LogRecord) -> str:
    """Everything a handler could write of a record: its text, arguments and every field,
    the structured ``extra`` ones included."""
    return f"{record.getMessage()} {record.args!r} {record.__dict__!r}"
