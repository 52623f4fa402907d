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
