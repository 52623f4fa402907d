"""The public surface: names DESIGN.md fixes, docstrings, error hierarchy, watch_many."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from pathlib import Path

import pytest

import mailsync

CONTRACT_NAMES = """connect connect_async sender sender_async compose parse_report Q Message
MessageList Address Attachment MailsyncError ConfigError InvalidAddress Unsupported
AuthenticationError ConnectionFailed MailTimeout ProtocolError ServerError FolderNotFound
MessageNotFound RateLimited SendError RecipientsRefused watch_many watch_many_async
DeliveryReport Folder SendResult StateStore Retriever AsyncRetriever Sender AsyncSender
account""".split()


def test_contract_names_are_exported() -> None:
    missing = [name for name in CONTRACT_NAMES if not hasattr(mailsync, name)]
    assert not missing
    assert set(CONTRACT_NAMES) <= set(mailsync.__all__)


def test_all_is_complete_and_documented() -> None:
    for name in mailsync.__all__:
        obj = getattr(mailsync, name)
        if name.startswith("__"):
            continue
        assert inspect.getdoc(obj), f"mailsync.{name} has no docstring"
    public = {n for n in dir(mailsync) if not n.startswith("_")}
    # backends and protocol are subpackages (private by their docstrings), integrations the
    # home of the optional extras' modules: none of them are names of the core API.
    assert public - set(mailsync.__all__) <= {
        "annotations",
        "backends",
        "protocol",
        "integrations",
    }


def test_error_hierarchy() -> None:
    assert issubclass(mailsync.ConfigError, ValueError)
    assert issubclass(mailsync.InvalidAddress, mailsync.ConfigError)
    assert issubclass(mailsync.ConnectionFailed, ConnectionError)
    assert issubclass(mailsync.MailTimeout, TimeoutError)
    for name in ("FolderNotFound", "MessageNotFound", "RateLimited"):
        assert issubclass(getattr(mailsync, name), mailsync.ServerError)
    assert issubclass(mailsync.RecipientsRefused, mailsync.SendError)
    for name in CONTRACT_NAMES:
        obj = getattr(mailsync, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, mailsync.MailsyncError)
    assert mailsync.RateLimited("slow", retry_after=3).retry_after == 3
    refused = mailsync.RecipientsRefused("no", refused={"a@x.test": (550, "no such user")})
    assert refused.refused == {"a@x.test": (550, "no such user")}


def test_map_exceptions_translates_and_chains() -> None:
    from mailsync._errors import map_exceptions

    with pytest.raises(mailsync.ConnectionFailed) as info:
        with map_exceptions(context="IMAP h:1"):
            raise ConnectionResetError("reset by peer")
    assert isinstance(info.value.__cause__, ConnectionResetError)
    assert "IMAP h:1" in str(info.value)
    with pytest.raises(mailsync.MailTimeout):
        with map_exceptions():
            raise TimeoutError("slow")
    with pytest.raises(mailsync.ProtocolError):
        with map_exceptions({KeyError: mailsync.ProtocolError}):
            raise KeyError("x")
    with pytest.raises(ZeroDivisionError):  # unknown errors are not swallowed
        with map_exceptions():
            raise ZeroDivisionError


def _deliver(path: Path, subject: str) -> None:
    with mailsync.sender(f"maildir:{path}") as out:
        out.send(mailsync.compose(from_="a@example.test", to="b@example.test", subject=subject))


def test_watch_many_merges_accounts(tmp_path: Path) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    _deliver(first, "one-0")
    _deliver(second, "two-0")
    boxes = [
        mailsync.connect(f"maildir:{first}", state=":memory:"),
        mailsync.connect(f"maildir:{second}", state=":memory:"),
    ]
    got: list[tuple[str, str]] = []

    def consume() -> None:
        for box, message in mailsync.watch_many(boxes, poll_interval=0.2):
            got.append((box.endpoint.path, message.subject))
            if len(got) == 4:
                return

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while len(got) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    _deliver(second, "two-1")
    _deliver(first, "one-1")
    thread.join(20)
    assert not thread.is_alive()
    assert sorted(s for _, s in got) == ["one-0", "one-1", "two-0", "two-1"]
    assert {p for p, s in got if s.startswith("one")} == {str(first)}


def test_watch_many_async(tmp_path: Path) -> None:
    paths = [tmp_path / f"acct{i}" for i in range(3)]
    for i, path in enumerate(paths):
        _deliver(path, f"m{i}")

    async def main() -> list[str]:
        boxes = [mailsync.connect_async(f"maildir:{p}", state=":memory:") for p in paths]
        found = []
        async for _box, message in mailsync.watch_many_async(boxes, poll_interval=0.2):
            found.append(message.subject)
            if len(found) == 3:
                break
        return found

    assert sorted(asyncio.run(asyncio.wait_for(main(), 30))) == ["m0", "m1", "m2"]


def test_async_sender_and_retriever_work_inside_a_running_loop(tmp_path: Path) -> None:
    async def main() -> list[str]:
        async with mailsync.sender_async(f"maildir:{tmp_path}") as out:
            await out.send(
                mailsync.compose(from_="a@example.test", to="b@example.test", subject="async")
            )
        async with mailsync.connect_async(f"maildir:{tmp_path}", state=":memory:") as box:
            return [m.subject async for m in box.messages()]

    assert asyncio.run(main()) == ["async"]


def test_message_list_renders_in_notebooks() -> None:
    raw = b"From: A <a@example.test>\r\nSubject: <b>hi</b>\r\n\r\nx\r\n"
    listing = mailsync.MessageList([mailsync.Message.from_bytes(raw)])
    html = listing._repr_html_()
    assert "<table" in html
    assert "&lt;b&gt;hi&lt;/b&gt;" in html
    assert "1 message" in html


def test_aclose_wakes_a_watch_waiting_between_polls(tmp_path: Path) -> None:
    """watch() with a long poll interval must end promptly when another task closes it."""

    _deliver(tmp_path, "first")

    async def main() -> float:
        box = mailsync.connect_async(f"maildir:{tmp_path}", state=":memory:")

        async def consume() -> None:
            async for _ in box.watch(poll_interval=3600):
                pass

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.3)  # let it reach the wait between polls
        started = time.monotonic()
        await box.aclose()
        await asyncio.wait_for(task, 10)
        return time.monotonic() - started

    assert asyncio.run(main()) < 5


def test_base_async_watch_default_wait_is_woken_by_aclose() -> None:
    """The AsyncRetriever default poll wait (for native async backends without push)."""
    from collections.abc import AsyncIterator

    from mailsync._config import parse_url

    class Quiet(mailsync.AsyncRetriever):
        async def folders(self) -> list[mailsync.Folder]:
            return [mailsync.Folder("INBOX")]

        async def messages(
            self, folder: str = "INBOX", **_: object
        ) -> AsyncIterator[mailsync.Message]:  # type: ignore[override]
            return
            yield

        async def get(self, id: str) -> mailsync.Message:
            raise mailsync.MessageNotFound(id)

        async def _sync_steps(self, folder, cursor, known):  # type: ignore[no-untyped-def,override]
            return
            yield

    async def main() -> float:
        box = Quiet(parse_url("maildir:/nonexistent"), state=":memory:")
        task = asyncio.create_task(anext(box.watch(poll_interval=3600), None))
        await asyncio.sleep(0.2)
        started = time.monotonic()
        await box.aclose()
        assert await asyncio.wait_for(task, 10) is None
        return time.monotonic() - started

    assert asyncio.run(main()) < 2


def test_watch_rides_out_temporary_failures_and_rate_limits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A busy mailbox (POP3 [IN-USE]) or a rate limit makes watch() back off and retry;
    an authentication error ends it."""
    from collections.abc import Iterator

    from mailsync import _base
    from mailsync._config import parse_url

    monkeypatch.setattr(_base.Backoff, "next", lambda self: 0.01)
    failures: list[Exception] = [
        mailsync.TemporaryFailure("[IN-USE] mailbox locked"),
        mailsync.RateLimited("slow down", retry_after=0.05),
        mailsync.AuthenticationError("bad password"),
    ]
    raw = b"Subject: after the storm\r\n\r\nx\r\n"

    class Flaky(mailsync.Retriever):
        def folders(self) -> list[mailsync.Folder]:
            return [mailsync.Folder("INBOX")]

        def messages(self, folder: str = "INBOX", **_: object) -> Iterator[mailsync.Message]:  # type: ignore[override]
            return iter(())

        def get(self, id: str) -> mailsync.Message:
            raise mailsync.MessageNotFound(id)

        def _sync_steps(self, folder, cursor, known):  # type: ignore[no-untyped-def]
            if len(failures) == 3:
                raise failures.pop(0)
            if len(failures) == 2:
                failures.pop(0)
                yield _base.SyncStep(mailsync.Message(raw, id="1"), {"n": 1}, "1")
                raise mailsync.RateLimited("slow down", retry_after=0.05)
            raise failures.pop(0)

    box = Flaky(parse_url("maildir:/nonexistent"), state=":memory:")
    got: list[str] = []

    def consume() -> None:
        for message in box.watch(poll_interval=0.01):
            got.append(message.subject)

    with pytest.raises(mailsync.AuthenticationError):
        consume()
    assert got == ["after the storm"]
