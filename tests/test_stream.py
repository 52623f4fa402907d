"""What every backend gains from the base classes: ``messages()`` as a MessageStream with
``collect()``, ``folders()`` as a FolderList, and ``progress=`` on ``messages()``, ``sync()``
and ``send_many()``; shown on backends written in the test (as a future one would be), on the
local backends, and on IMAP, POP3 and SMTP against the real servers."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import io
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

import mailsync
from mailsync import _progress
from mailsync._base import AsyncRetriever, Retriever, Sender, SendResult, SyncStep
from mailsync._config import parse_url
from tests.imap.conftest import imap_url
from tests.servers import Account, MailServers


def _raw(n: int) -> bytes:
    return f"From: s{n}@example.test\r\nSubject: number {n}\r\n\r\nbody {n}\r\n".encode()


class ToyRetriever(Retriever):
    """A backend as a newcomer writes one: plain generators and lists, nothing more."""

    scheme = "toy"

    def __init__(self, count: int = 3) -> None:
        super().__init__(parse_url("maildir:/nonexistent"), state=":memory:")
        self.count = count
        self.closed_iterators = 0

    def folders(self) -> list[mailsync.Folder]:
        return [mailsync.Folder("INBOX"), mailsync.Folder("Sent", None, "\\Sent")]

    def messages(
        self,
        folder: str = "INBOX",
        *,
        query: mailsync.Q | None = None,
        headers_only: bool = False,
        limit: int | None = None,
    ) -> Iterator[mailsync.Message]:
        try:
            for n in range(self.count if limit is None else min(limit, self.count)):
                yield mailsync.Message.from_bytes(_raw(n), uid=n)
        finally:
            self.closed_iterators += 1

    def get(self, id: str) -> mailsync.Message:
        raise mailsync.MessageNotFound(id)

    def _sync_steps(
        self, folder: str, cursor: dict[str, Any] | None, known: Callable[[Iterable[str]], set[str]]
    ) -> Iterator[SyncStep]:
        start = cursor["next"] if cursor else 0
        for n in range(start, self.count):
            message = mailsync.Message.from_bytes(_raw(n), uid=n)
            yield SyncStep(message, {"next": n + 1}, message.identity)


class ToyAsyncRetriever(AsyncRetriever):
    scheme = "toy"

    def __init__(self, count: int = 3) -> None:
        super().__init__(parse_url("maildir:/nonexistent"), state=":memory:")
        self.count = count

    async def folders(self) -> list[mailsync.Folder]:
        return [mailsync.Folder("INBOX")]

    async def messages(
        self,
        folder: str = "INBOX",
        *,
        query: mailsync.Q | None = None,
        headers_only: bool = False,
        limit: int | None = None,
    ) -> AsyncIterator[mailsync.Message]:
        for n in range(self.count):
            yield mailsync.Message.from_bytes(_raw(n))

    async def get(self, id: str) -> mailsync.Message:
        raise mailsync.MessageNotFound(id)

    async def _sync_steps(
        self, folder: str, cursor: dict[str, Any] | None, known: Callable[[Iterable[str]], set[str]]
    ) -> AsyncIterator[SyncStep]:
        for n in range(self.count):
            message = mailsync.Message.from_bytes(_raw(n))
            yield SyncStep(message, {"next": n + 1}, message.identity)


class ToySender(Sender):
    """Implements send() only: send_many() is the base class's."""

    scheme = "toy"

    def __init__(self) -> None:
        super().__init__(parse_url("maildir:/nonexistent"))
        self.sent: list[Any] = []

    def send(self, message: Any, **options: Any) -> SendResult:
        self.sent.append(message)
        return SendResult(f"m{len(self.sent)}", ("x@example.test",))


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@contextlib.contextmanager
def stderr_is(stream: io.StringIO) -> Iterator[io.StringIO]:
    """Inside the test body: pytest's capture sets sys.stderr again between fixture and test."""
    saved, sys.stderr = sys.stderr, stream
    try:
        yield stream
    finally:
        sys.stderr = saved


def on_terminal() -> contextlib.AbstractContextManager[io.StringIO]:
    """stderr is a terminal (where progress bars go)."""
    return stderr_is(Terminal())


def on_pipe() -> contextlib.AbstractContextManager[io.StringIO]:
    """stderr is not a terminal (a log file, a pipe)."""
    return stderr_is(io.StringIO())


# -- any backend, written without knowing about streams ---------------------------------------


def test_a_new_backend_gets_collect_progress_and_a_folder_list() -> None:
    box = ToyRetriever()
    stream = box.messages()
    assert isinstance(stream, mailsync.MessageStream)
    assert isinstance(stream, Iterator)
    listing = stream.collect()
    assert isinstance(listing, mailsync.MessageList)
    assert [m.subject for m in listing] == ["number 0", "number 1", "number 2"]
    assert [m.uid for m in box.messages(limit=2, progress=False)] == [0, 1]
    assert isinstance(box.folders(), mailsync.FolderList)
    assert box.folders()[1].special_use == "\\Sent"
    assert "progress" in inspect.signature(ToyRetriever.messages).parameters
    assert "progress" in inspect.signature(ToySender.send_many).parameters
    assert ToyRetriever.messages.__doc__ is None or "progress" not in ToyRetriever.messages.__doc__


def test_closing_a_stream_closes_the_backends_iterator() -> None:
    box = ToyRetriever(count=10)
    stream = box.messages(progress=True)
    assert next(stream).uid == 0
    stream.close()
    assert box.closed_iterators == 1
    with pytest.raises(StopIteration):
        next(stream)


def test_sync_collect_marks_everything_delivered() -> None:
    box = ToyRetriever()
    assert len(box.sync(progress=True).collect()) == 3
    box.count = 5
    assert [m.uid for m in box.sync().collect()] == [3, 4]


def test_async_backend_gets_collect_and_folder_list() -> None:
    async def main() -> None:
        box = ToyAsyncRetriever()
        stream = box.messages(progress=True)
        assert isinstance(stream, mailsync.AsyncMessageStream)
        listing = await stream.collect()
        assert isinstance(listing, mailsync.MessageList)
        assert len(listing) == 3
        assert [m.subject async for m in box.messages()][-1] == "number 2"
        assert isinstance(await box.folders(), mailsync.FolderList)
        assert len(await box.sync(progress=True).collect()) == 3

    asyncio.run(main())


def test_send_many_takes_progress_on_the_default_implementation() -> None:
    out = ToySender()
    with on_terminal() as terminal:
        results = out.send_many([b"a", b"b", b"c"], progress=True)
    assert [r.message_id for r in results] == ["m1", "m2", "m3"]
    assert out.sent == [b"a", b"b", b"c"]
    assert "sending:   0%|          | 0/3" in terminal.getvalue()


# -- where the bar goes -----------------------------------------------------------------------


def test_progress_draws_on_a_terminal() -> None:
    with on_terminal() as terminal:
        assert len(ToyRetriever(count=4).messages(limit=4, progress=True).collect()) == 4
    shown = terminal.getvalue()
    assert "INBOX:   0%|          | 0/4" in shown
    assert shown.endswith("\r")  # a terminal bar is erased at the end (leave=False)


def test_no_progress_unless_asked() -> None:
    with on_terminal() as terminal:
        ToyRetriever().messages().collect()
        ToyRetriever().sync().collect()
        ToySender().send_many([b"a"])
    assert terminal.getvalue() == ""


def test_no_progress_when_output_is_not_a_terminal() -> None:
    with on_pipe() as pipe:
        ToyRetriever().messages(progress=True).collect()
        ToyRetriever().sync(progress=True).collect()
        ToySender().send_many([b"a"], progress=True)
    assert pipe.getvalue() == ""


def test_without_tqdm_a_terminal_gets_a_counter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tqdm.std", None)
    with on_terminal() as terminal:
        assert len(ToyRetriever(count=3).messages(progress=True).collect()) == 3
    shown = terminal.getvalue()
    assert "\rINBOX: 1 messages (" in shown
    assert shown.endswith("\r\033[K")  # erased at the end


def test_in_a_notebook_the_bar_is_tqdms_widget(monkeypatch: pytest.MonkeyPatch) -> None:
    from tqdm.notebook import tqdm_notebook

    monkeypatch.setattr(_progress, "in_notebook", lambda: True)
    bar = _progress.open_bar(total=3, desc="INBOX")
    try:
        assert isinstance(bar, tqdm_notebook)
    finally:
        assert bar is not None
        bar.close()


def test_in_a_notebook_without_tqdm_there_is_no_bar_and_one_hint(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_progress, "in_notebook", lambda: True)
    monkeypatch.setitem(sys.modules, "tqdm.std", None)
    _progress._hint_once.cache_clear()
    assert _progress.open_bar(desc="x") is None
    assert _progress.open_bar(desc="x") is None
    hints = [r for r in caplog.records if "mailsync[notebook]" in r.getMessage()]
    assert len(hints) == 1


def test_in_notebook_detects_a_kernel_not_a_terminal_ipython(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Shell:
        kernel: object = None

    class FakeIPython:
        shell: Shell | None = None

        @classmethod
        def get_ipython(cls) -> Shell | None:
            return cls.shell

    monkeypatch.setitem(sys.modules, "IPython", FakeIPython)  # type: ignore[arg-type]
    assert not _progress.in_notebook()  # IPython imported, no shell
    FakeIPython.shell = Shell()
    assert not _progress.in_notebook()  # terminal IPython: no kernel
    FakeIPython.shell.kernel = object()
    assert _progress.in_notebook()


# -- the local backends -----------------------------------------------------------------------


def _fill(path: Path, count: int) -> None:
    with mailsync.sender(f"maildir:{path}") as out:
        for n in range(count):
            out.send(mailsync.compose(from_="a@example.test", to="b@example.test", subject=f"{n}"))


def test_maildir_and_its_async_twin(tmp_path: Path) -> None:
    _fill(tmp_path, 3)
    with (
        on_terminal() as terminal,
        mailsync.connect(f"maildir:{tmp_path}", state=":memory:") as box,
    ):
        assert [m.subject for m in box.messages(progress=True).collect()] == ["0", "1", "2"]
        assert isinstance(box.folders(), mailsync.FolderList)
        assert len(box.sync(progress=True).collect()) == 3
        assert box.sync().collect() == []

    async def main() -> int:
        async with mailsync.connect_async(f"maildir:{tmp_path}", state=":memory:") as box:
            listing = await box.messages(limit=2, progress=True).collect()
            assert isinstance(await box.folders(), mailsync.FolderList)
            return len(listing)

    with stderr_is(terminal):
        assert asyncio.run(main()) == 2
    assert terminal.getvalue().count("INBOX:") == 3  # messages(), sync(), async messages()


# -- the real servers -------------------------------------------------------------------------


def _seed(servers: MailServers, account: Account, count: int) -> None:
    servers.append_many(account, [_raw(n) for n in range(count)])


def test_imap_collect_sync_and_async(mail_servers: MailServers, account: Account) -> None:
    _seed(mail_servers, account, 4)
    target = imap_url(mail_servers, account)
    with mailsync.connect(target.url, state=":memory:", **target.options) as box:
        assert [m.subject for m in box.messages(limit=3).collect()] == [
            "number 0",
            "number 1",
            "number 2",
        ]
        assert "INBOX" in [f.name for f in box.folders()]
        assert isinstance(box.folders(), mailsync.FolderList)
        assert len(box.sync(progress=True).collect()) == 4

    async def main() -> list[str]:
        async with mailsync.connect_async(target.url, state=":memory:", **target.options) as box:
            assert isinstance(await box.folders(), mailsync.FolderList)
            return [m.subject for m in await box.messages(progress=True).collect()]

    assert len(asyncio.run(main())) == 4


def test_pop3_collect_sync_and_async(mail_servers: MailServers, account: Account) -> None:
    _seed(mail_servers, account, 2)
    url = f"pop3://{account.user}@{mail_servers.host}:{mail_servers.pop3_port}"
    options: dict[str, Any] = {"password": account.password, "tls": "none"}
    with mailsync.connect(url, state=":memory:", **options) as box:
        assert len(box.messages().collect()) == 2

    async def main() -> int:
        async with mailsync.connect_async(url, state=":memory:", **options) as box:
            return len(await box.messages().collect())

    assert asyncio.run(main()) == 2


def test_the_sync_api_works_inside_a_running_event_loop(
    mail_servers: MailServers, account: Account
) -> None:
    """What a notebook cell does: blocking calls while the kernel's loop runs."""
    _seed(mail_servers, account, 2)
    target = imap_url(mail_servers, account)
    url = f"smtp://{account.user}@{mail_servers.host}:{mail_servers.submission_port}"

    async def cell() -> tuple[int, list[SendResult]]:
        with mailsync.connect(target.url, state=":memory:", **target.options) as box:
            count = len(box.messages().collect())
        with mailsync.sender(
            url, password=account.password, verify=mail_servers.ssl_context()
        ) as out:
            mail = mailsync.compose(from_=account.email, to=account.email, subject="in a loop")
            results = out.send_many([mail], progress=True)
        return count, results

    count, results = asyncio.run(cell())
    assert count == 2
    assert results[0].accepted == (account.email,)


def test_smtp_send_many_with_progress_pipelined(
    mail_servers: MailServers, account: Account
) -> None:
    url = f"smtp://{account.user}@{mail_servers.host}:{mail_servers.submission_port}"
    mails = [
        mailsync.compose(from_=account.email, to=account.email, subject=f"batch {n}")
        for n in range(5)
    ]
    terminal = Terminal()
    with (
        stderr_is(terminal),
        mailsync.sender(url, password=account.password, verify=mail_servers.ssl_context()) as out,
    ):
        results = out.send_many(mails, progress=True)
    assert [r.accepted for r in results] == [(account.email,)] * 5
    assert "0/5" in terminal.getvalue()

    async def main() -> list[SendResult]:
        async with mailsync.sender_async(
            url, password=account.password, verify=mail_servers.ssl_context()
        ) as out:
            return await out.send_many(mails[:2], progress=True)

    with stderr_is(terminal):
        assert len(asyncio.run(main())) == 2
    assert "0/2" in terminal.getvalue()


def test_cli_shows_progress_on_a_terminal_unless_told_not_to(tmp_path: Path) -> None:
    from mailsync._cli import main

    _fill(tmp_path, 2)
    state = str(tmp_path / "state.sqlite3")
    for argv, expected in (
        (["fetch", f"maildir:{tmp_path}"], True),
        (["fetch", f"maildir:{tmp_path}", "--no-progress"], False),
        (["sync", f"maildir:{tmp_path}", "--state", state], True),
        (["sync", f"maildir:{tmp_path}", "--state", state, "--no-progress"], False),
    ):
        with on_terminal() as terminal, contextlib.redirect_stdout(io.StringIO()):
            assert main(argv) == 0
        # The CLI's own counter (stdout is not a terminal here), erased at the end.
        assert ("1 message (" in terminal.getvalue()) is expected, argv
