"""The IMAP sync walk both IMAP backends run (:func:`mailsync.protocol.imap_sync.sync_steps`),
replayed against canned answers: what it asks for, in which batches, and what it yields."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

import mailsync
from mailsync._base import SyncStep
from mailsync._plans import Emit, replay
from mailsync.protocol import imap_sync
from mailsync.protocol.imap import FETCH_BODY, FolderStatus
from mailsync.protocol.imap_sync import (
    MESSAGE_ID_ITEMS,
    Batching,
    Fetch,
    Search,
    SyncCursor,
    message_ids,
    sync_steps,
)

STATUS = FolderStatus(uidvalidity=7, uidnext=11, exists=10, highestmodseq=None)


def _raw(uid: int, *, message_id: bool = True) -> bytes:
    head = f"Message-ID: <m{uid}@example.test>\r\n" if message_id else ""
    return f"{head}Subject: {uid}\r\n\r\nbody {uid}\r\n".encode()


def _bodies(uids: Iterable[int], **options: Any) -> list[dict[bytes, Any]]:
    return [{b"UID": uid, b"FLAGS": (), b"BODY[]": _raw(uid, **options)} for uid in uids]


def _steps(ops: list[Any]) -> list[SyncStep]:
    return [op.item for op in ops if isinstance(op, Emit)]


def _nothing_known(identities: Iterable[str]) -> set[str]:
    return set()


def test_incremental_asks_for_newer_uids_in_sized_batches() -> None:
    cursor = SyncCursor(7, 4).as_dict()
    batching = Batching(first=2, most=3, budget=None)
    answers: list[Any] = [[4, 5, 6, 7, 8, 9, 10], _bodies([5, 6]), _bodies([7, 8, 9])]
    answers.append(_bodies([10]))
    ops, end = replay(sync_steps("INBOX", cursor, STATUS, _nothing_known, batching), answers)
    asked = [op for op in ops if isinstance(op, Search | Fetch)]
    assert asked == [
        Search("INBOX", 7, (b"UID", b"5:*"), up_to_now=True),
        Fetch("INBOX", 7, (5, 6), FETCH_BODY, gmail=True),
        Fetch("INBOX", 7, (7, 8, 9), FETCH_BODY, gmail=True),  # the most, once sized
        Fetch("INBOX", 7, (10,), FETCH_BODY, gmail=True),
    ]
    steps = _steps(ops)
    assert [s.message.uid for s in steps if s.message is not None] == [5, 6, 7, 8, 9, 10]
    assert steps[0].cursor == SyncCursor(7, 5).as_dict()
    assert steps[0].identity == "mid:m5@example.test"
    assert end == SyncCursor(7, 10)


def test_the_cursor_moves_past_a_batch_whose_messages_vanished() -> None:
    # UIDs 5 and 6 were expunged between SEARCH and FETCH: fetched again, then looked for
    # (UID SEARCH finds neither), the batch still completes.
    cursor = SyncCursor(7, 4).as_dict()
    ops, end = replay(
        sync_steps("INBOX", cursor, STATUS, _nothing_known, Batching(first=5)),
        [[5, 6], [], [], []],
    )
    assert ops[3] == Search("INBOX", 7, (b"UID", b"5:6"))
    steps = _steps(ops)
    assert all(s.message is None for s in steps)
    assert steps[-1].cursor == SyncCursor(7, 6).as_dict()
    assert end == SyncCursor(7, 6)


def test_a_uid_left_out_once_comes_with_the_second_fetch() -> None:
    cursor = SyncCursor(7, 4).as_dict()
    ops, end = replay(
        sync_steps("INBOX", cursor, STATUS, _nothing_known, Batching(first=5)),
        [[5, 6, 7], _bodies([5, 7]), _bodies([6])],
    )
    assert ops[2] == Fetch("INBOX", 7, (6,), FETCH_BODY, gmail=True)
    steps = _steps(ops)
    assert [s.message.uid for s in steps if s.message is not None] == [5, 6, 7]
    assert end == SyncCursor(7, 7)


def test_a_uid_still_there_but_never_fetched_is_held_back_then_fetched_again() -> None:
    # SEARCH lists 5..7, every FETCH leaves 6 out, and UID SEARCH says 6 is still there:
    # 7 is delivered, the cursor passes 6 only by holding it back, with a warning.
    cursor = SyncCursor(7, 4).as_dict()
    ops, end = replay(
        sync_steps("INBOX", cursor, STATUS, _nothing_known, Batching(first=5)),
        [[5, 6, 7], _bodies([5, 7]), [], [6]],
    )
    steps = _steps(ops)
    assert [s.message.uid for s in steps if s.message is not None] == [5, 7]
    assert steps[1].cursor == SyncCursor(7, 7, held=(6,)).as_dict()
    assert end == SyncCursor(7, 7, held=(6,))
    assert end.as_dict()["held"] == [6]
    # The next sync fetches 6 first, with what is new; now it comes, and is let go.
    status = FolderStatus(uidvalidity=7, uidnext=9, exists=8, highestmodseq=None)
    ops, end = replay(
        sync_steps("INBOX", end.as_dict(), status, _nothing_known, Batching(first=5)),
        [[7, 8], _bodies([6, 8])],
    )
    assert ops[1] == Fetch("INBOX", 7, (6, 8), FETCH_BODY, gmail=True)
    assert [s.message.uid for s in _steps(ops) if s.message is not None] == [6, 8]
    assert end == SyncCursor(7, 8)


def test_a_held_uid_is_asked_for_even_when_nothing_is_new() -> None:
    cursor = SyncCursor(7, 10, held=(6,)).as_dict()  # UIDNEXT 11: nothing new above 10
    ops, end = replay(sync_steps("INBOX", cursor, STATUS, _nothing_known, Batching()), [[], [], []])
    assert [op for op in ops if isinstance(op, Search | Fetch)] == [
        Fetch("INBOX", 7, (6,), FETCH_BODY, gmail=True),
        Fetch("INBOX", 7, (6,), FETCH_BODY, gmail=True),
        Search("INBOX", 7, (b"UID", b"6")),
    ]
    assert end == SyncCursor(7, 10)  # gone now: no longer held


def test_past_the_most_held_uids_the_cursor_stops_before_the_next_missing_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(imap_sync, "MAX_HELD", 2)
    cursor = SyncCursor(7, 0, held=(1,)).as_dict()
    status = FolderStatus(uidvalidity=7, uidnext=9, exists=8, highestmodseq=None)
    missing = [1, 3, 5, 6]  # 1 already held; 3 fits; 5 is one too many
    delivered = [2, 4, 7, 8]
    ops, end = replay(
        sync_steps("INBOX", cursor, status, _nothing_known, Batching(first=10)),
        [list(range(1, 9)), _bodies(delivered), [], missing],
    )
    assert [s.message.uid for s in _steps(ops) if s.message is not None] == [2, 4]
    assert end == SyncCursor(7, 4, held=(1, 3))


def test_nothing_new_asks_nothing() -> None:
    cursor = SyncCursor(7, 10).as_dict()
    ops, end = replay(sync_steps("INBOX", cursor, STATUS, _nothing_known, Batching()), [])
    assert ops == []
    assert end == SyncCursor(7, 10)


def test_a_resync_fetches_only_what_was_not_delivered_before() -> None:
    delivered = {"mid:m1@example.test", "mid:m3@example.test"}
    asked: list[list[str]] = []

    def known(identities: Iterable[str]) -> set[str]:
        asked.append(sorted(identities))
        return delivered & set(identities)

    cursor = SyncCursor(6, 99).as_dict()  # another UIDVALIDITY: resync
    headers = [
        {b"UID": 1, b"BODY[HEADER.FIELDS (MESSAGE-ID)]": b"Message-ID: <m1@example.test>\r\n"},
        {b"UID": 2, b"FLAGS": (b"\\Seen",)},  # an unsolicited flag update: no header item
        {b"UID": 3, b"BODY[HEADER.FIELDS (MESSAGE-ID)]": b"Message-ID: <m3@example.test>\r\n"},
    ]
    ops, end = replay(
        sync_steps("INBOX", cursor, STATUS, known, Batching(first=3, most=3, budget=None)),
        [[1, 2, 3], headers, _bodies([2], message_id=False)],
    )
    fetches = [op for op in ops if isinstance(op, Fetch)]
    assert fetches == [
        Fetch("INBOX", 7, (1, 2, 3), MESSAGE_ID_ITEMS),
        Fetch("INBOX", 7, (2,), FETCH_BODY, gmail=True),
    ]
    (message,) = [s.message for s in _steps(ops) if s.message is not None]
    assert message.uid == 2
    assert asked[0] == ["mid:m1@example.test", "mid:m3@example.test"]
    assert asked[1][0].startswith("sha256:")  # no Message-ID: judged by its bytes
    assert end == SyncCursor(7, 3)


def test_message_ids_tolerate_responses_without_the_header() -> None:
    assert (
        message_ids([{b"UID": 5}, {b"FLAGS": ()}, {b"UID": 6, b"BODY[HEADER]": b"X: y\r\n"}]) == {}
    )


def test_batching_from_options() -> None:
    assert Batching.from_params({}) == Batching(50, 500, 8 << 20)
    assert Batching.from_params({"batch_size": "7"}) == Batching(7, 7, 8 << 20)
    assert Batching.from_params({"batch_size": 7}).streaming() == Batching(7, 7, None)
    for bad in ("zero", 0, -3):
        with pytest.raises(mailsync.ConfigError):
            Batching.from_params({"batch_size": bad})


def test_batches_follow_the_weight_of_the_last_one() -> None:
    sizer = Batching(first=2, most=100, budget=1000).sizer()
    batches = sizer.split(list(range(1, 50)))
    assert next(batches) == [1, 2]
    sizer.learn([mailsync.Message.from_bytes(b"x" * 300)] * 2)  # 300 bytes each: 3 fit
    assert next(batches) == [3, 4, 5]
