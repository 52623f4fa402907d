"""``UID SEARCH`` in windows (:mod:`mailsync.protocol.imap_search`), replayed against canned
answers: what each folder shape is asked, that no window can list more UIDs than a line
holds, and that the windows cover every UID once."""

from __future__ import annotations

from typing import Any

import pytest

from mailsync._plans import replay
from mailsync.protocol import imap_literals
from mailsync.protocol.imap import FolderStatus
from mailsync.protocol.imap_search import (
    SEARCH_OVERHEAD,
    UID_WIDTH,
    Search,
    search_steps,
    search_window,
)
from mailsync.protocol.imap_sync import Batching, SyncCursor, sync_steps


def _status(exists: int, uidnext: int = 0) -> FolderStatus:
    return FolderStatus(uidvalidity=7, uidnext=uidnext, exists=exists)


def _searches(ops: list[Any]) -> list[tuple[Any, ...]]:
    assert all(isinstance(op, Search) for op in ops)
    return [op.criteria for op in ops]


def test_a_window_is_half_of_what_the_longest_line_holds() -> None:
    assert search_window(1 << 20) == 47_659
    for cap in (1 << 20, 1_000_000, 4096, 300):
        window = search_window(cap)
        # Twice the window of 10-digit UIDs still fits the line: room for mail that comes.
        assert 2 * window * UID_WIDTH + SEARCH_OVERHEAD <= cap
    assert search_window(10) == 1  # absurd caps still make progress
    assert search_window() == search_window(imap_literals.MAX_LINE)


def test_a_folder_that_fits_one_window_is_searched_once_as_before() -> None:
    ops, uids = replay(search_steps("INBOX", _status(90, 91), window=100), [[3, 1, 2]])
    assert _searches(ops) == [(b"ALL",)]
    assert uids == [1, 2, 3]
    ops, _ = replay(
        search_steps("INBOX", _status(5000, 5001), [b"UNSEEN"], window=100, after=4950),
        [[4990]],
    )
    assert _searches(ops) == [(b"UID", b"4951:*", b"UNSEEN")]  # 50 new: one window


def test_dense_uids_are_searched_in_fixed_uid_ranges_without_a_look_up() -> None:
    answers = [list(range(1, 101)), list(range(101, 201)), list(range(201, 251))]
    ops, uids = replay(search_steps("INBOX", _status(250, 251), window=100), answers)
    assert _searches(ops) == [(b"UID", b"1:100"), (b"UID", b"101:200"), (b"UID", b"201:*")]
    assert uids == list(range(1, 251))


def test_sparse_uids_are_windowed_between_the_uids_at_looked_up_positions() -> None:
    # 250 messages with UIDs 10, 20 ... 2500: UID ranges of 100 would take 25 searches.
    status = _status(250, 2501)
    every = list(range(10, 2501, 10))
    answers = [[1000, 2000], every[:100], every[100:200], every[200:]]
    ops, uids = replay(search_steps("INBOX", status, [b"FLAGGED"], window=100), answers)
    assert _searches(ops) == [
        (b"100,200",),  # the UIDs at positions 100 and 200
        (b"UID", b"1:1000", b"FLAGGED"),
        (b"UID", b"1001:2000", b"FLAGGED"),
        (b"UID", b"2001:*", b"FLAGGED"),
    ]
    assert uids == every


def test_without_uidnext_looked_up_uids_below_the_start_are_dropped() -> None:
    # After IDLE the async backend knows no current UIDNEXT: 10,000 messages may all be
    # newer than the cursor, so positions are looked up; all are below it, one window left.
    plan = search_steps("INBOX", _status(10_000), window=5000, after=20_000)
    ops, uids = replay(plan, [[19_000], [20_500, 25_000]])
    assert _searches(ops) == [(b"5000",), (b"UID", b"20001:*")]
    assert uids == [20_500, 25_000]


def test_positions_past_the_end_and_uids_below_the_start_are_dropped() -> None:
    # Messages were expunged since SELECT: the last position looked up is gone.
    status = _status(300, 100_000)
    ops, uids = replay(search_steps("INBOX", status, window=100), [[5000], [7], [9000]])
    assert _searches(ops) == [(b"100,200",), (b"UID", b"1:5000"), (b"UID", b"5001:*")]
    assert uids == [7, 9000]


def test_the_open_window_keeps_the_n_star_quirk_out() -> None:
    # "UID n:*" matches the highest UID even when it is below n (nothing newer exists).
    ops, uids = replay(search_steps("INBOX", _status(150, 151), window=100), [[50], [100]])
    assert _searches(ops) == [(b"UID", b"1:100"), (b"UID", b"101:*")]
    assert uids == [50]


def test_enough_stops_at_the_window_that_completes_the_answer() -> None:
    plan = search_steps("INBOX", _status(300, 301), [b"SEEN"], window=100, enough=3)
    ops, uids = replay(plan, [[5, 6], [150, 160, 170]])
    assert len(ops) == 2
    assert uids == [5, 6, 150, 160, 170]


def test_the_charset_goes_with_every_window() -> None:
    plan = search_steps("INBOX", _status(150, 151), ["é"], window=100, charset="UTF-8")
    ops, _ = replay(plan, [[], []])
    assert {op.charset for op in ops} == {"UTF-8"}


@pytest.mark.parametrize("seed", range(20))
def test_windows_cover_every_uid_once_and_none_lists_more_than_a_window(seed: int) -> None:
    import random

    rng = random.Random(seed)
    uids = sorted(rng.sample(range(1, 50_000), rng.randint(0, 3000)))
    window = rng.choice([7, 50, 333])
    after = rng.choice([0, 0, uids[len(uids) // 2] if uids else 0])
    status = _status(len(uids), (uids[-1] + 1) if uids else 1)
    plan = search_steps("INBOX", status, window=window, after=after)
    got = _serve(plan, uids, window)
    assert got == [uid for uid in uids if uid > after]


def _serve(plan: Any, uids: list[int], window: int) -> list[int]:
    """Run ``plan`` against a folder holding ``uids``, as a server would answer: each
    window's answer must fit in a window."""
    value: Any = None
    while True:
        try:
            op = plan.send(value)
        except StopIteration as stop:
            result: list[int] = stop.value
            return result
        keys = op.criteria
        if keys[0] == b"UID":
            low, _, high = keys[1].decode().partition(":")
            top = uids[-1] if uids and high == "*" else int(high) if high != "*" else 0
            value = [uid for uid in uids if int(low) <= uid <= max(top, int(low))]
            if high == "*" and uids:
                value = sorted(set(value) | {uids[-1]})  # "n:*" always has the highest
            assert len(value) <= window + 1
        elif keys == (b"ALL",):
            value = list(uids)
            assert len(value) <= window
        else:
            positions = [int(p) for p in keys[0].split(b",")]
            value = [uids[p - 1] for p in positions if p <= len(uids)]


def test_a_sync_of_a_big_folder_searches_in_windows_then_fetches_as_before() -> None:
    status = _status(250, 251)
    answers: list[Any] = [list(range(1, 101)), list(range(101, 201)), list(range(201, 251))]
    answers += [[] for _ in range(10)]
    plan = sync_steps("INBOX", None, status, lambda ids: set(), Batching(first=500), window=100)
    ops, _ = replay(plan, answers)
    searches = [op for op in ops if isinstance(op, Search)]
    assert [op.criteria for op in searches][:3] == [
        (b"UID", b"1:100"),
        (b"UID", b"101:200"),
        (b"UID", b"201:*"),
    ]


def test_an_incremental_sync_of_a_big_folder_asks_once_when_little_is_new() -> None:
    cursor = SyncCursor(7, 99_990).as_dict()
    status = _status(99_990, 100_001)
    plan = sync_steps("INBOX", cursor, status, lambda ids: set(), Batching(), window=100)
    ops, _ = replay(plan, [[99_995], [], [], []])  # then FETCH, and the re-checks: gone
    assert isinstance(ops[0], Search)
    assert ops[0].criteria == (b"UID", b"99991:*")


def test_only_the_open_window_of_a_sync_says_it_saw_everything_up_to_now() -> None:
    # The async watch notes when a sync asked what is new (mail announced later is newer);
    # the re-check of a UID the FETCH left out asks about that UID alone, so it must not
    # move the note: mail announced before it would wait for the next arrival.
    cursor = SyncCursor(7, 99_990).as_dict()
    plan = sync_steps("INBOX", cursor, _status(99_990, 100_001), lambda ids: set(), Batching())
    ops, _ = replay(plan, [[99_995], [], [], []])  # SEARCH, FETCH, FETCH again, re-check
    searches = [op for op in ops if isinstance(op, Search)]
    assert [(op.criteria, op.up_to_now) for op in searches] == [
        ((b"UID", b"99991:*"), True),
        ((b"UID", b"99995"), False),
    ]
    ops, _ = replay(search_steps("INBOX", _status(250, 251), window=100), [[], [], []])
    assert [op.up_to_now for op in ops] == [False, False, True]
    ops, _ = replay(search_steps("INBOX", _status(90, 91), [b"UNSEEN"], window=100), [[]])
    assert [op.up_to_now for op in ops] == [False]  # a filtered search covers only its kind
