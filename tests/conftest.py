"""Generic fixtures: the real mail servers, fresh accounts and a breakable TCP proxy.

Backend-specific fixtures belong in the conftest.py of their own test folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator

import pytest

from tests.databases import PostgresServer, RedisServer, postgres_missing, redis_missing
from tests.proxy import TCPProxy
from tests.servers import Account, MailServers, missing_reason


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "servers: needs the real Dovecot/Postfix servers (tests/servers.py)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Anything that uses the servers is a server test, marked or not: `-m "not servers"` works.
    for item in items:
        if "mail_servers" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.servers)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    servers = getattr(item, "funcargs", {}).get("mail_servers")
    if report.failed and isinstance(servers, MailServers):
        report.sections.append(("mail server logs", servers.log_text(max_chars=8000)))
    return report


@pytest.fixture(scope="session")
def mail_servers() -> Iterator[MailServers]:
    """Dovecot + Postfix on loopback, started once per session.

    Skipped when the binaries are missing, except under CI (``CI`` set), which must run them.
    """
    reason = missing_reason()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the server tests, but: {reason}", pytrace=False)
        pytest.skip(reason)
    with MailServers() as servers:
        yield servers


def _skip_or_fail(reason: str | None) -> None:
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the server tests, but: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """PostgreSQL on loopback, started once per session (skipped without it outside CI)."""
    _skip_or_fail(postgres_missing())
    with PostgresServer() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh, empty database of the test PostgreSQL."""
    return postgres_server.new_database()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """Redis on loopback (the Celery broker), started once per session."""
    _skip_or_fail(redis_missing())
    with RedisServer() as server:
        yield server


@pytest.fixture
def account(mail_servers: MailServers) -> Account:
    return mail_servers.new_account("a")


@pytest.fixture
def other_account(mail_servers: MailServers) -> Account:
    return mail_servers.new_account("b")


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
