"""Generic fixtures: the real mail servers (Dovecot and Postfix; Cyrus), fresh accounts and a
breakable TCP proxy.

Backend-specific fixtures belong in the conftest.py of their own test folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator

import pytest

from tests import reliability
from tests.cyrus import CyrusServer
from tests.cyrus import missing_reason as cyrus_missing_reason
from tests.databases import PostgresServer, RedisServer, postgres_missing, redis_missing
from tests.proxy import TCPProxy
from tests.servers import Account, MailboxClients, MailServers, missing_reason


def pytest_addoption(parser: pytest.Parser) -> None:
    reliability.addoption(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "servers: needs the real Dovecot/Postfix or Cyrus servers (tests/servers.py, cyrus.py)",
    )
    reliability.configure(config)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Anything that uses the servers is a server test, marked or not: `-m "not servers"` works.
    for item in items:
        if {"mail_servers", "cyrus"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.servers)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    if report.failed:
        funcargs = getattr(item, "funcargs", {})
        for name in ("mail_servers", "cyrus"):
            servers = funcargs.get(name)
            if isinstance(servers, MailServers | CyrusServer):
                report.sections.append((f"{name} logs", servers.log_text(max_chars=8000)))
    return report


def _needs(reason: str | None) -> None:
    """Skip for a missing server, except under CI (``CI`` set), which must run them all."""
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the server tests, but: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def mail_servers() -> Iterator[MailServers]:
    """Dovecot + Postfix on loopback, started once per session.

    Skipped when the binaries are missing, except under CI (``CI`` set), which must run them.
    """
    _needs(missing_reason())
    with MailServers() as servers:
        yield servers


@pytest.fixture(scope="session")
def cyrus(request: pytest.FixtureRequest) -> Iterator[CyrusServer]:
    """Cyrus (IMAP, POP3, LMTP, JMAP) on loopback, started once per session; its JMAP
    submissions go to the test Postfix when that can run. Skipped like ``mail_servers``."""
    _needs(cyrus_missing_reason())
    relay = None
    if missing_reason() is None:
        servers = request.getfixturevalue("mail_servers")
        relay = (servers.host, servers.smtp_port)
    with CyrusServer(smtp_relay=relay) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """PostgreSQL on loopback, started once per session. Skipped like ``mail_servers``."""
    _needs(postgres_missing())
    with PostgresServer() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh, empty database of the test PostgreSQL."""
    return postgres_server.new_database()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """Redis on loopback (the Celery broker), started once per session."""
    _needs(redis_missing())
    with RedisServer() as server:
        yield server


@pytest.fixture
def mail_store(mail_servers: MailServers) -> MailboxClients:
    """The server holding ``account``: Dovecot, unless a test class overrides both (as
    :class:`tests.contract.OnCyrus` does) to run the same tests against another server."""
    return mail_servers


@pytest.fixture
def account(mail_servers: MailServers) -> Account:
    return mail_servers.new_account("a")


@pytest.fixture
def other_account(mail_servers: MailServers) -> Account:
    return mail_servers.new_account("b")


@pytest.fixture
def cyrus_account(cyrus: CyrusServer) -> Account:
    """A fresh Cyrus user, its INBOX and special-use folders in place."""
    return cyrus.new_account("c")


@pytest.fixture
def tcp_proxy() -> Iterator[Callable[[str, int], TCPProxy]]:
    """Factory: ``tcp_proxy(host, port)`` returns a started proxy, stopped after the test."""
    proxies: list[TCPProxy] = []

    def make(host: str, port: int) -> TCPProxy:
        proxy = TCPProxy(host, port).start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.stop()
