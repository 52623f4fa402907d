"""A Maildir message file over ``max_message_size`` (issue 14.3): a file is as untrusted as
a server's reply, and reading one whole into memory is what the limit prevents."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

import mailsync

MiB = 1024 * 1024


def _maildir(root: Path, sizes: list[int]) -> None:
    for sub in ("new", "cur", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for number, size in enumerate(sizes, start=1):
        raw = b"Subject: %d\r\n\r\n%s\r\n" % (number, b"x" * size)
        (root / "new" / f"{number}.host").write_bytes(raw)


@pytest.mark.reliability(
    area="Limits",
    fault="a Maildir message file larger than max_message_size",
    inputs="sync and async retrievers; max_message_size of 1 MiB, file 2 of 3 is 2 MiB",
    outcome="sync() skips it with a warning naming it (every sync, until one with a larger "
    "limit delivers it), never reading it; get() raises MessageTooLarge",
)
@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_a_maildir_file_over_the_limit_is_skipped_by_sync(
    tmp_path: Path, asynchronous: bool, caplog: pytest.LogCaptureFixture
) -> None:
    _maildir(tmp_path / "mail", [0, 2 * MiB, 0])
    url = f"maildir:{tmp_path / 'mail'}"
    state = mailsync.SQLiteStateStore(":memory:")

    def sync(limit: int | None) -> list[str]:
        if not asynchronous:
            with mailsync.connect(url, state=state, max_message_size=limit) as box:
                return sorted(message.subject or "" for message in box.sync())

        async def run() -> list[str]:
            async with mailsync.connect_async(url, state=state, max_message_size=limit) as box:
                return sorted([message.subject or "" async for message in box.sync()])

        return asyncio.run(run())

    with caplog.at_level(logging.WARNING, logger="mailsync"):
        assert sync(MiB) == ["1", "3"]
        assert sync(MiB) == []
    assert len([r for r in caplog.records if "2.host" in r.getMessage()]) == 2
    assert sync(None) == ["2"]
    with mailsync.connect(url, state=":memory:", max_message_size=MiB) as box:
        with pytest.raises(mailsync.MessageTooLarge) as info:
            box.get("INBOX/2.host")
    assert info.value.size is not None
    assert info.value.size > 2 * MiB


def _mbox(path: Path, messages: list[bytes]) -> None:
    with path.open("wb") as out:
        for raw in messages:
            out.write(b"From MAILER-DAEMON Thu Dec  3 12:00:00 2026\n" + raw + b"\n")


@pytest.mark.reliability(
    area="Limits",
    fault="an mbox message larger than max_message_size, with no Message-ID",
    inputs="max_message_size of 1 MiB, message 2 of 3 is 2 MiB with Status flags and no "
    "Message-ID (its id is a digest of its bytes)",
    outcome="it keeps the id a retriever without the limit gives it (computed a piece at a "
    "time, never held whole), with its flags; sync() skips it with a warning naming that id "
    "every time, until one with a larger limit delivers it; get() raises MessageTooLarge",
)
def test_an_oversized_mbox_message_keeps_its_id_and_is_never_held(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    big = b"Subject: 2\nStatus: RO\nX-Status: F\n\n" + b"x" * (2 * MiB) + b"\n"
    _mbox(tmp_path / "inbox", [b"Subject: 1\n\none\n", big, b"Subject: 3\n\nthree\n"])
    url = f"mbox:{tmp_path / 'inbox'}"
    state = mailsync.SQLiteStateStore(":memory:")
    with mailsync.connect(url, state=":memory:", max_message_size=None) as full:
        whole = {m.subject: m for m in full.messages()}
    big_id = whole["2"].id
    assert big_id.startswith("sha256:")
    with mailsync.connect(url, state=state, max_message_size=MiB) as small:
        headers = {m.subject: m for m in small.messages(headers_only=True)}
        assert headers["2"].id == big_id
        assert headers["2"].flags == whole["2"].flags == {"\\Seen", "\\Flagged"}
        assert headers["2"].size == whole["2"].size
        with caplog.at_level(logging.WARNING, logger="mailsync"):
            assert sorted(m.subject or "" for m in small.sync()) == ["1", "3"]
            assert list(small.sync()) == []
        with pytest.raises(mailsync.MessageTooLarge) as info:
            small.get(big_id)
    assert len([r for r in caplog.records if big_id in r.getMessage()]) == 2
    assert info.value.size is not None
    assert info.value.size > 2 * MiB
    with mailsync.connect(url, state=state, max_message_size=None) as larger:
        assert [m.subject for m in larger.sync()] == ["2"]


@pytest.mark.reliability(
    area="Limits",
    fault="a local message whose header block never ends (no blank line) and is larger "
    "than max_message_size, read with headers_only",
    inputs="Maildir and mbox; max_message_size of 64 KiB, a 1 MiB header",
    outcome="MessageTooLarge (it was read whole before)",
)
@pytest.mark.parametrize("scheme", ["maildir", "mbox"])
def test_a_header_block_larger_than_the_limit_is_refused(tmp_path: Path, scheme: str) -> None:
    endless = b"Subject: x\n" + b"X-Filler: " + b"y" * MiB + b"\n"
    if scheme == "maildir":
        _maildir(tmp_path / "mail", [])
        (tmp_path / "mail" / "new" / "1.host").write_bytes(endless)
        url = f"maildir:{tmp_path / 'mail'}"
    else:
        _mbox(tmp_path / "inbox", [endless])
        url = f"mbox:{tmp_path / 'inbox'}"
    with (
        mailsync.connect(url, state=":memory:", max_message_size=64 * 1024) as box,
        pytest.raises(mailsync.MessageTooLarge),
    ):
        list(box.messages(headers_only=True))
