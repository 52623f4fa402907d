"""mailsync in async web apps: the FastAPI example of docs/examples/fastapi_app through
Starlette's TestClient (lifespan included) against the test servers, and the
:mod:`mailsync.integrations.asgi` helpers' promises (bounded concurrency and reused
connections, a loop never blocked, a graceful stop that commits the message in hand)."""

from __future__ import annotations

import asyncio
import importlib.util
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import mailsync
from mailsync.integrations.asgi import SenderPool, Watcher
from tests.contract import make_raw
from tests.extras import require
from tests.integrations.conftest import accounts_file
from tests.servers import Account, MailServers

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "fastapi_app" / "app.py"


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mailsync_fastapi_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.servers
@pytest.mark.timeout(300)
def test_the_fastapi_example_sends_from_a_handler_and_watches_in_its_lifespan(
    mail_servers: MailServers,
    account: Account,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    require("fastapi", "dev")  # FastAPI is the example's, not an extra of mailsync
    from fastapi.testclient import TestClient

    config = accounts_file(tmp_path / "config.toml", mail_servers, account, "support")
    monkeypatch.setenv("MAILSYNC_CONFIG", str(config))
    monkeypatch.setenv("MAILSYNC_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TEST_MAIL_PASSWORD", account.password)
    monkeypatch.setenv("SUPPORT_ADDRESS", account.email)
    monkeypatch.setenv("MAIL_POLL_INTERVAL", "2")
    example = _load_example()

    with TestClient(example.app) as client:
        sent = client.post(
            "/contact",
            json={"email": "visitor@example.net", "subject": "Hello", "message": "Hi!"},
        )
        assert sent.status_code == 200, sent.text
        message_id = sent.json()["message_id"]

        def received() -> list[dict[str, str]] | None:
            return client.get("/inbox").json() or None

        (got,) = mail_servers.wait_for(received, timeout=90, interval=0.2, message="mail in")
        assert got["subject"] == "Contact form: Hello"
        assert got["from"] == account.email
        (health,) = client.get("/health/mail").json()
        assert health["state"] == "watching"
        assert health["account"] == f"imap://{account.user}@{mail_servers.host}"
        bad = client.post("/contact", json={"email": "no", "subject": "s", "message": "m"})
        assert bad.status_code == 422
        watcher = example.app.state.watcher
        pool = example.app.state.mail
    # The lifespan ended: the watch task is done and every connection closed.
    assert not watcher.running
    assert pool.senders == []
    raws = [raw for _uid, _flags, raw in mail_servers.imap_messages(account)]
    assert message_id.encode() in raws[0]


@pytest.mark.servers
def test_the_pool_bounds_concurrency_and_reuses_connections(
    mail_servers: MailServers, account: Account
) -> None:
    url = f"smtp://{account.user}@{mail_servers.host}:{mail_servers.submission_port}"

    async def main() -> tuple[int, list[int]]:
        pool = SenderPool(url, size=2, password=account.password, verify=mail_servers.cafile)
        most = 0

        async def send(n: int) -> None:
            nonlocal most
            async with pool.sender() as out:
                most = max(most, pool.in_use)
                await out.send(
                    mailsync.compose(
                        from_=account.email, to=account.email, subject=f"n{n}", text="x"
                    )
                )

        async with pool:
            await asyncio.gather(*(send(n) for n in range(8)))
            opened = [out.connections_opened for out in pool.senders]  # type: ignore[attr-defined]
        return most, opened

    most, opened = asyncio.run(main())
    assert most == 2
    assert opened == [1, 1]  # two senders, each on one connection for four messages

    def arrived() -> int | None:
        count = len(mail_servers.imap_uids(account))
        return count if count == 8 else None

    mail_servers.wait_for(arrived, timeout=60, interval=0.1, message="8 messages")


def _maildir(tmp_path: Path, count: int) -> str:
    url = f"maildir:{tmp_path / 'box'}?create=true"
    with mailsync.sender(url) as out:
        out.send_many([make_raw(n) for n in range(1, count + 1)])
    return url


def test_a_plain_handler_runs_off_the_loop(tmp_path: Path) -> None:
    url = _maildir(tmp_path, 1)
    handled = threading.Event()

    def slow(box: mailsync.AsyncRetriever, message: mailsync.Message) -> None:
        time.sleep(0.5)  # a blocking call (a database driver, a template...)
        handled.set()

    async def main() -> int:
        ticks = 0
        box = mailsync.connect_async(url, state=":memory:")
        async with Watcher([box], slow, poll_interval=0.2):
            while not handled.is_set():
                ticks += 1
                await asyncio.sleep(0.01)
        return ticks

    assert asyncio.run(main()) >= 10  # the loop kept running while the handler slept


def test_stopping_finishes_and_commits_the_message_in_hand(tmp_path: Path) -> None:
    url = _maildir(tmp_path, 2)
    state = str(tmp_path / "state.sqlite3")
    seen: list[str] = []

    async def main() -> None:
        started, release = asyncio.Event(), asyncio.Event()

        async def handler(box: Any, message: mailsync.Message) -> None:
            seen.append(message.subject or "")
            started.set()
            await release.wait()

        watcher = Watcher([mailsync.connect_async(url, state=state)], handler, poll_interval=0.2)
        await watcher.start()
        await asyncio.wait_for(started.wait(), 60)
        stopping = asyncio.create_task(watcher.stop())
        await asyncio.sleep(0.2)
        assert not stopping.done()  # it waits for the message in hand
        release.set()
        await asyncio.wait_for(stopping, 60)
        assert not watcher.running

    asyncio.run(main())
    assert seen == ["Message 1"]
    with mailsync.connect(url, state=state) as box:
        # Message 1 was committed when its handler returned; Message 2 was never handed out.
        assert [m.subject for m in box.sync().collect()] == ["Message 2"]
