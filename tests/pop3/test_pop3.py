"""The POP3 retrievers against a real Dovecot: the Retriever contract (POP3 with STLS and
POP3S, sync and async), broken connections through a proxy, and login failures.

Mail is seeded with imaplib APPEND into the same account's INBOX (byte-exact, unlike LMTP,
which adds trace headers), never with mailsync.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

import mailsync
from mailsync.backends.pop3 import AsyncPOP3Retriever, POP3Retriever
from tests.contract import AsyncRetrieverContract, RetrieverContract
from tests.servers import Account, MailServers


def _url(servers: MailServers, account: Account, *, tls: bool, port: int | None = None) -> str:
    scheme = "pop3s" if tls else "pop3"
    default = servers.pop3s_port if tls else servers.pop3_port
    return f"{scheme}://{account.user}@{servers.host}:{port or default}"


def _connect(
    servers: MailServers,
    account: Account,
    *,
    tls: bool = False,
    port: int | None = None,
    asynchronous: bool = False,
    **options: Any,
) -> Any:
    connect = mailsync.connect_async if asynchronous else mailsync.connect
    options.setdefault("password", account.password)
    options.setdefault("verify", servers.ssl_context())
    return connect(_url(servers, account, tls=tls, port=port), **options)


class DovecotPOP3:
    """Fixtures: one fresh account per test, seeded over IMAP."""

    implicit_tls = False
    asynchronous = False
    exact_bytes = True
    exact_size = True

    @pytest.fixture
    def make_retriever(self, mail_servers: MailServers, account: Account) -> Callable[..., Any]:
        def make(state: Any) -> Any:
            return _connect(
                mail_servers,
                account,
                tls=self.implicit_tls,
                asynchronous=self.asynchronous,
                state=state,
            )

        return make

    @pytest.fixture
    def seed(self, mail_servers: MailServers, account: Account) -> Callable[..., None]:
        def seed(raw: bytes, folder: str = "INBOX", flags: tuple[str, ...] = ()) -> None:
            mail_servers.append(account, raw, folder=folder, flags=flags)

        return seed

    @pytest.fixture
    def make_folder(self) -> Callable[[str], None]:
        def make(name: str) -> None:
            pytest.skip("POP3 has no folders")

        return make


class TestPOP3(DovecotPOP3, RetrieverContract):
    def test_classes(self, make_retriever: Callable[..., Any]) -> None:
        box = make_retriever(None)
        assert type(box) is POP3Retriever
        assert box.capabilities == frozenset({"delete"})


class TestPOP3S(DovecotPOP3, RetrieverContract):
    implicit_tls = True


class TestAsyncPOP3(DovecotPOP3, AsyncRetrieverContract):
    asynchronous = True

    def test_classes(self, make_retriever: Callable[..., Any]) -> None:
        box = make_retriever(None)
        assert type(box) is AsyncPOP3Retriever
        asyncio.run(box.aclose())


class TestAsyncPOP3S(DovecotPOP3, AsyncRetrieverContract):
    implicit_tls = True
    asynchronous = True
