"""The async retrievers that run a sync backend on a worker thread (Maildir, mbox, and sync
backends without an async library) after ``aclose()``: a call made after it, or one racing
it, fails with ``ConnectionFailed`` as the native async backends do, never with the thread
pool's RuntimeError ("cannot schedule new futures after shutdown"); closing twice is fine.
"""

from __future__ import annotations

import mailbox
from pathlib import Path

import pytest

import mailsync
from mailsync._threaded import ThreadedAsyncRetriever
from tests.contract import make_raw


def _maildir(root: Path, count: int) -> None:
    box = mailbox.Maildir(root, create=True)
    for n in range(count):
        box.add(make_raw(n))


async def test_calls_after_aclose_fail_as_mailsync_errors(tmp_path: Path) -> None:
    _maildir(tmp_path / "mail", 3)
    box = mailsync.connect_async(f"maildir:{tmp_path / 'mail'}", state=":memory:")
    assert isinstance(box, ThreadedAsyncRetriever)
    reading = box.messages()
    assert (await anext(reading)).subject == "Message 0"
    await box.aclose()  # while a listing is half-read, as a watch_many shutdown does
    await box.aclose()
    with pytest.raises(mailsync.ConnectionFailed, match="closed"):
        await anext(reading)
    with pytest.raises(mailsync.ConnectionFailed, match="closed"):
        await box.folders()
    await box._wait_for_change("INBOX", 600.0)  # returns at once: the retriever is closed
