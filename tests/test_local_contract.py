"""The Retriever contract on the local backends: Maildir and mbox, sync and async."""

from __future__ import annotations

import mailbox
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import mailsync
from mailsync.backends.maildir import info_from_flags
from tests.contract import AsyncRetrieverContract, RetrieverContract

_counter = 0


def _maildir_seed(root: Path) -> Callable[..., None]:
    """Write a message file directly, as an MDA would (never through mailsync)."""

    def seed(raw: bytes, folder: str = "INBOX", flags: tuple[str, ...] = ()) -> None:
        global _counter
        _counter += 1
        base = root if folder.upper() == "INBOX" else root / f".{folder}"
        for sub in ("tmp", "new", "cur"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        # Names start with the delivery time, as real MDAs write them: that gives the order.
        name = f"{int(time.time())}.M{_counter:06d}P{os.getpid()}.seed"
        tmp = base / "tmp" / name
        tmp.write_bytes(raw)
        target = base / "cur" / f"{name}:{info_from_flags(flags)}" if flags else base / "new" / name
        tmp.rename(target)

    return seed


class MaildirFixtures:
    @pytest.fixture
    def root(self, tmp_path: Path) -> Path:
        path = tmp_path / "Maildir"
        for sub in ("tmp", "new", "cur"):
            (path / sub).mkdir(parents=True)
        return path

    @pytest.fixture
    def seed(self, root: Path) -> Callable[..., None]:
        return _maildir_seed(root)

    @pytest.fixture
    def make_folder(self, root: Path) -> Callable[[str], None]:
        def make(name: str) -> None:
            for sub in ("tmp", "new", "cur"):
                (root / f".{name}" / sub).mkdir(parents=True, exist_ok=True)

        return make


class TestMaildir(MaildirFixtures, RetrieverContract):
    @pytest.fixture
    def make_retriever(self, root: Path) -> Callable[..., Any]:
        return lambda state, **options: mailsync.connect(f"maildir:{root}", state=state, **options)


class TestAsyncMaildir(MaildirFixtures, AsyncRetrieverContract):
    @pytest.fixture
    def make_retriever(self, root: Path) -> Callable[..., Any]:
        return lambda state, **options: mailsync.connect_async(
            f"maildir:{root}", state=state, **options
        )


class MboxFixtures:
    exact_bytes = False  # mbox stores LF line endings

    @pytest.fixture
    def path(self, tmp_path: Path) -> Path:
        path = tmp_path / "inbox.mbox"
        path.touch()  # an empty mailbox, as the Maildir fixture's empty directories are
        return path

    @pytest.fixture
    def seed(self, path: Path) -> Callable[..., None]:
        def seed(raw: bytes, folder: str = "INBOX", flags: tuple[str, ...] = ()) -> None:
            assert folder.upper() == "INBOX"
            # The bytes as they are (an email.message would be re-generated, not kept), with
            # the flags in Status/X-Status fields, as mutt writes them.
            letters = {"\\Seen": "RO", "\\Flagged": "F", "\\Answered": "A", "\\Draft": "T"}
            status = "".join(letters.get(f, "") for f in flags if f == "\\Seen")
            xstatus = "".join(letters.get(f, "") for f in flags if f != "\\Seen")
            fields = (f"Status: {status}\n" if status else "") + (
                f"X-Status: {xstatus}\n" if xstatus else ""
            )
            data = b"From seeder Thu Jan  1 00:00:00 2026\n" + fields.encode() + raw
            box = mailbox.mbox(path)
            box.lock()
            try:
                box.add(data.replace(b"\r\n", b"\n"))
                box.flush()
            finally:
                box.unlock()
                box.close()

        return seed

    @pytest.fixture
    def make_folder(self) -> Callable[[str], None]:
        def make(name: str) -> None:
            pytest.skip("an mbox file is a single folder")

        return make


class TestMbox(MboxFixtures, RetrieverContract):
    exact_size = False

    @pytest.fixture
    def make_retriever(self, path: Path) -> Callable[..., Any]:
        return lambda state, **options: mailsync.connect(f"mbox:{path}", state=state, **options)


class TestAsyncMbox(MboxFixtures, AsyncRetrieverContract):
    exact_size = False

    @pytest.fixture
    def make_retriever(self, path: Path) -> Callable[..., Any]:
        return lambda state, **options: mailsync.connect_async(
            f"mbox:{path}", state=state, **options
        )


_WRITER = """
import mailbox, sys, time
box = mailbox.mbox(sys.argv[1])
for n in range(int(sys.argv[2])):
    while True:
        try:
            box.lock()
            break
        except mailbox.ExternalClashError:  # the reader holds it for a moment
            time.sleep(0.01)
    try:
        body = ("line of text\\n" * 20000).encode()
        head = b"From: a@example.test\\nSubject: Concurrent %d\\n"
        head += b"Message-ID: <c%d@example.test>\\n\\n"
        box.add(head % (n, n) + body)
        box.flush()
    finally:
        box.unlock()
box.close()
"""


def test_mbox_sync_never_sees_a_half_written_message(tmp_path: Path) -> None:
    """Another process appends under the mbox lock while sync() runs: every message comes
    whole, exactly once (a reader without the lock used to record truncated messages)."""
    import subprocess
    import sys

    path = tmp_path / "busy.mbox"
    path.touch()
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(path), "10"])
    seen: list[str] = []
    with mailsync.connect(f"mbox:{path}", state=":memory:") as box:
        while True:
            done = writer.poll() is not None
            for message in box.sync():
                assert message.text.count("line of text") == 20000, message.subject
                seen.append(message.subject)
            if done:
                break
    assert writer.wait(30) == 0
    assert seen == [f"Concurrent {n}" for n in range(10)]


def test_async_maildir_creates_folders_as_the_sync_one_does(tmp_path: Path) -> None:
    import asyncio

    root = tmp_path / "Maildir"

    async def main() -> list[str]:
        async with mailsync.connect_async(f"maildir:{root}", state=":memory:") as box:
            await box.create_folder("Projects")
            await box.create_folder("Projects")  # no error when it exists
            return [folder.name for folder in await box.folders()]

    assert "Projects" in asyncio.run(main())
    assert (root / ".Projects" / "cur").is_dir()


@pytest.mark.parametrize("scheme", ["maildir", "mbox"])
def test_a_missing_mailbox_is_an_error_that_says_how_it_is_made(
    tmp_path: Path, scheme: str
) -> None:
    """A missing Maildir and a missing mbox file fail alike (an mbox used to read as empty):
    a mistyped path is not an empty mailbox."""
    path = tmp_path / "nothing-here"
    box = mailsync.connect(f"{scheme}:{path}", state=":memory:")
    for call in (box.folders, lambda: list(box.messages()), lambda: list(box.sync())):
        with pytest.raises(mailsync.FolderNotFound) as info:
            call()
        assert str(path) in str(info.value)
        assert "first message sent" in str(info.value)
    assert not path.exists()


def test_maildir_create_option_makes_an_empty_mailbox(tmp_path: Path) -> None:
    path = tmp_path / "fresh"
    with mailsync.connect(f"maildir:{path}", state=":memory:", create=True) as box:
        assert list(box.messages()) == []
        assert [f.name for f in box.folders()] == ["INBOX"]
    assert (path / "new").is_dir()
    with mailsync.connect(f"maildir:{tmp_path / 'by-url'}?create=yes", state=":memory:") as box:
        assert list(box.sync()) == []
    with pytest.raises(mailsync.ConfigError, match="'create'"):
        list(mailsync.connect(f"maildir:{path}", state=":memory:", create="maybe").messages())
