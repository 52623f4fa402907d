"""The pure IMAP modules: SEARCH translation, folder names, FETCH parsing, the literal reader
(fed canned bytes split at every position) and the sync cursor rules. No server needed."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

import mailsync
from mailsync import Q
from mailsync.protocol import imap as p
from mailsync.protocol import imap_sync
from mailsync.protocol.imap_literals import (
    Continuation,
    FetchResponse,
    ResponseReader,
    Tagged,
    Untagged,
    fetch_command,
    parse_fetch_attributes,
)

# -- SEARCH -------------------------------------------------------------------------------------


def rendered(query: Q | None) -> bytes:
    return p.render_criteria(p.search_plan(query).criteria)


@pytest.mark.parametrize(
    ("query", "expected", "exact"),
    [
        (None, b"ALL", True),
        (Q(), b"ALL", True),
        (Q(seen=True), b"SEEN", True),
        (Q(seen=False), b"UNSEEN", True),
        (Q(flagged=True), b"FLAGGED", True),
        (Q(flagged=False), b"UNFLAGGED", True),
        (Q(larger=100, smaller=2000), b"LARGER 100 SMALLER 2000", True),
        (Q(from_="alice"), b'FROM "alice"', False),
        (Q(to='a "b" \\c'), b'TO "a \\"b\\" \\\\c"', False),
        (Q(subject="x y"), b'SUBJECT "x y"', False),
        (Q(text="hello"), b'TEXT "hello"', False),
        (Q(seen=True) & Q(flagged=False), b"SEEN UNFLAGGED", True),
        (Q(seen=True) | Q(flagged=True), b"OR SEEN FLAGGED", True),
        (Q(seen=True) | Q(flagged=True) | Q(larger=5), b"OR SEEN (OR FLAGGED (LARGER 5))", True),
        (~Q(seen=True), b"NOT SEEN", True),
        (~Q(seen=True, flagged=True), b"NOT (SEEN FLAGGED)", True),
        (~(Q(seen=True) | Q(larger=3)), b"NOT (OR SEEN (LARGER 3))", True),
        (Q(larger=1, smaller=9) | Q(seen=True), b"OR (LARGER 1 SMALLER 9) SEEN", True),
        # The complement of a superset is not a superset: left to the client.
        (~Q(subject="x"), b"ALL", False),
        (Q(seen=False) & ~Q(from_="carol"), b"UNSEEN", False),
        (Q(subject="a") | ~Q(from_="b"), b"ALL", False),
        (Q(subject="a") | Q(from_="b"), b'OR (SUBJECT "a") (FROM "b")', False),
    ],
)
def test_search_translation(query: Q | None, expected: bytes, exact: bool) -> None:
    plan = p.search_plan(query)
    assert p.render_criteria(plan.criteria) == expected
    assert plan.exact is exact
    assert plan.charset is None


def test_search_dates_are_widened_to_whole_days_in_any_zone() -> None:
    plan = p.search_plan(Q(since=datetime(2026, 3, 1, 12, 30, tzinfo=UTC), before=date(2026, 3, 9)))
    assert p.render_criteria(plan.criteria) == (
        b"OR (SENTSINCE 28-Feb-2026) (SINCE 28-Feb-2026) "
        b"OR (SENTBEFORE 11-Mar-2026) (BEFORE 11-Mar-2026)"
    )
    assert not plan.exact


def test_search_dates_are_locale_independent() -> None:
    assert p.imap_date(date(2026, 1, 5)) == b"5-Jan-2026"
    assert p.imap_date(date(1999, 12, 31)) == b"31-Dec-1999"


def test_search_with_non_ascii_uses_utf8() -> None:
    plan = p.search_plan(Q(subject="Grüße") & Q(seen=False))
    assert plan.charset == "UTF-8"
    assert plan.criteria == [b"SUBJECT", "Grüße", b"UNSEEN"]
    assert p.render_criteria(plan.criteria) == 'SUBJECT "Grüße" UNSEEN'.encode()
    literal = p.render_criteria(plan.criteria, literal_plus=True)
    assert literal == b"SUBJECT {7+}\r\n" + "Grüße".encode() + b" UNSEEN"


def test_search_plan_is_a_superset_of_q_matches() -> None:
    """Every message Q.matches must be one the native criteria (as Dovecot would evaluate the
    exact parts) keep: checked over a grid of flag/size combinations."""
    queries = [
        Q(seen=True) | ~Q(flagged=True),
        ~(Q(seen=True) & Q(larger=10)),
        Q(smaller=50) & ~(Q(seen=False) | Q(flagged=True)),
    ]
    for query in queries:
        plan = p.search_plan(query)
        assert plan.exact
        for seen in (False, True):
            for flagged in (False, True):
                for size in (5, 30, 70):
                    flags = {"\\Seen"} if seen else set()
                    flags |= {"\\Flagged"} if flagged else set()
                    msg = mailsync.Message(b"Subject: x\r\n\r\n", flags=flags, size=size)
                    assert _evaluate(plan.criteria, msg) == query.matches(msg)


def _evaluate(criteria: list[p.Criterion], msg: mailsync.Message) -> bool:
    """A tiny SEARCH evaluator for the exact keys, to check translations."""
    items = list(criteria)

    def key() -> bool:
        item = items.pop(0)
        if isinstance(item, list):
            return _evaluate(item, msg)
        word = item.decode() if isinstance(item, bytes) else item
        if word == "ALL":
            return True
        if word == "NOT":
            return not key()
        if word == "OR":
            left = key()
            right = key()
            return left or right
        if word in ("SEEN", "UNSEEN"):
            return ("\\Seen" in msg.flags) == (word == "SEEN")
        if word in ("FLAGGED", "UNFLAGGED"):
            return ("\\Flagged" in msg.flags) == (word == "FLAGGED")
        number = int(items.pop(0))  # type: ignore[arg-type]
        return msg.size > number if word == "LARGER" else msg.size < number

    result = True
    while items:
        result = key() and result
    return result


# -- folder names, flags, LIST --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "wire"),
    [
        ("INBOX", "INBOX"),
        ("Entwürfe", "Entw&APw-rfe"),
        ("&", "&-"),
        ("Tom & Jerry", "Tom &- Jerry"),
        ("日本語", "&ZeVnLIqe-"),
        ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
        ("😀 smile", "&2D3eAA- smile"),
        ("a;b;1;2", "a;b;1;2"),
    ],
)
def test_modified_utf7(name: str, wire: str) -> None:
    assert p.encode_folder(name) == wire
    assert p.decode_folder(wire.encode()) == name
    assert p.decode_folder(wire) == name


def test_decode_folder_tolerates_raw_utf8_and_bad_utf7() -> None:
    assert p.decode_folder("Café".encode()) == "Café"
    assert p.decode_folder(b"A&B") == "A&B" or p.decode_folder(b"A&B")  # never raises


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        (b"\\SEEN", "\\Seen"),
        ("\\seen", "\\Seen"),
        (b"\\Flagged", "\\Flagged"),
        (b"\\answered", "\\Answered"),
        (b"\\DRAFT", "\\Draft"),
        (b"\\deleted", "\\Deleted"),
        (b"$Forwarded", "$Forwarded"),
        (b"NonJunk", "NonJunk"),
    ],
)
def test_flag_normalisation(flag: bytes | str, expected: str) -> None:
    assert p.normalize_flag(flag) == expected


def test_recent_is_dropped_and_store_flags_checked() -> None:
    assert p.normalize_flags([b"\\Recent", b"\\seen"]) == {"\\Seen"}
    assert p.store_flags(["\\seen", "$Label1"]) == ["\\Seen", "$Label1"]
    for bad in ("has space", "(paren", "", "\\Recent", 'q"uote', "ünï"):
        with pytest.raises(ValueError, match=r"flag|Recent"):
            p.store_flags([bad])


def test_folders_from_list_with_special_use() -> None:
    folders = p.folders_from_list(
        [
            ((b"\\HasNoChildren", b"\\Sent"), b"/", b"Sent"),
            ((b"\\HasNoChildren",), b"/", b"inbox"),
            ((b"\\Noselect", b"\\HasChildren"), b"/", b"Entw&APw-rfe"),
            ((b"\\HasNoChildren",), b"/", b"Trash"),  # the server marks others: no guess
            ((b"\\All",), None, b"[Gmail]/All Mail"),
        ]
    )
    by_name = {f.name: f for f in folders}
    assert by_name["Sent"].special_use == "\\Sent"
    assert by_name["Sent"].delimiter == "/"
    assert by_name["INBOX"].special_use is None
    assert not by_name["Entwürfe"].selectable
    assert by_name["Trash"].special_use is None
    assert by_name["[Gmail]/All Mail"].special_use == "\\All"
    assert by_name["[Gmail]/All Mail"].delimiter is None


def test_folders_from_list_falls_back_to_names() -> None:
    folders = p.folders_from_list(
        [
            ((), b".", b"INBOX"),
            ((), b".", b"INBOX.Sent Items"),
            ((), b".", b"Deleted Messages"),
            ((), b".", b"Junk E-mail"),
            ((), b".", b"Projects"),
        ]
    )
    assert [f.special_use for f in folders] == [None, "\\Sent", "\\Trash", "\\Junk", None]


# -- ids, UID sets, response codes --------------------------------------------------------------


@pytest.mark.parametrize("folder", ["INBOX", "a;b", "x;1;2", "Entwürfe", "; ", "日本語/x"])
def test_message_id_round_trip(folder: str) -> None:
    text = p.format_message_id(folder, 1795707221, 42)
    assert p.parse_message_id(text) == p.UIDRef(folder, 1795707221, 42)


def test_message_id_gmail_and_garbage() -> None:
    assert p.parse_message_id(p.format_message_id("INBOX", 1, 2, 1278455344230334865)) == (
        p.GmailRef(1278455344230334865)
    )
    assert p.parse_message_id("inbox;1;2").folder == "INBOX"  # type: ignore[union-attr]
    for bad in ("no-such-message", "INBOX;1", "INBOX;x;2", ";1;2", "INBOX;1;²", ""):
        with pytest.raises(mailsync.MessageNotFound):
            p.parse_message_id(bad)


def test_uid_sets_and_batches() -> None:
    assert p.uid_set([1, 2, 3, 7, 9, 10, 3]) == "1:3,7,9:10"
    assert p.uid_set([5]) == "5"
    with pytest.raises(ValueError, match="empty"):
        p.uid_set([])
    batches = list(p.uid_batches(list(range(1, 1201)), 500))
    assert [len(b) for b in batches] == [500, 500, 200]
    assert batches[1][0] == 501
    assert list(p.uid_batches([], 500)) == []


def test_appenduid() -> None:
    assert p.parse_appenduid(b"[APPENDUID 38505 3955] APPEND completed") == (38505, 3955)
    assert p.parse_appenduid("APPEND completed") is None


# -- FETCH -------------------------------------------------------------------------------------


def test_internaldate() -> None:
    assert p.parse_internaldate(b"17-Jul-1996 02:44:25 -0700") == datetime(
        1996, 7, 17, 2, 44, 25, tzinfo=timezone(timedelta(hours=-7))
    )
    assert p.parse_internaldate(" 1-Feb-2026 00:00:00 +0000") == datetime(2026, 2, 1, tzinfo=UTC)
    assert p.parse_internaldate(b"garbage") is None
    assert p.parse_internaldate(b"31-Feb-2026 00:00:00 +0000") is None
    naive = datetime(2026, 1, 1)
    assert p.parse_internaldate(naive) == naive.replace(tzinfo=UTC)


RAW = b"Subject: Hello\r\nMessage-ID: <abc@example.test>\r\n\r\nBody (with parens) {5}\r\n"


def test_message_from_fetch() -> None:
    attrs = {
        b"UID": 7,
        b"FLAGS": (b"\\Seen", b"\\Recent", b"$Forwarded"),
        b"RFC822.SIZE": 999,
        b"INTERNALDATE": b"01-Jan-2026 12:00:00 +0100",
        b"BODY[]": RAW,
    }
    msg = p.message_from_fetch(attrs, folder="a;b", uidvalidity=11)
    assert msg.id == "a;b;11;7"
    assert msg.uid == 7
    assert msg.flags == {"\\Seen", "$Forwarded"}
    assert msg.size == 999
    assert msg.raw == RAW
    assert not msg.headers_only
    assert msg.internal_date == datetime(2026, 1, 1, 11, tzinfo=UTC)
    assert msg.subject == "Hello"


def test_message_from_fetch_gmail_and_headers() -> None:
    attrs = {
        b"FLAGS": (),
        b"BODY[HEADER]": b"Subject: x\r\n\r\n",
        b"X-GM-LABELS": (b"\\Inbox", b"Entw&APw-rfe"),
        b"X-GM-THRID": 1278455344230334865,
        b"X-GM-MSGID": 1278455344230334866,
    }
    msg = p.message_from_fetch(attrs, folder="INBOX", uidvalidity=1, uid=3)
    assert msg.headers_only
    assert msg.id == "gmail;1278455344230334866"
    assert msg.labels == {"\\Inbox", "Entwürfe"}
    assert msg.thread_id == "1278455344230334865"
    assert msg.size == len(b"Subject: x\r\n\r\n")


def test_message_from_fetch_without_uid_or_body() -> None:
    with pytest.raises(mailsync.ProtocolError):
        p.message_from_fetch({b"BODY[]": b"x"}, folder="INBOX", uidvalidity=1)
    with pytest.raises(mailsync.ProtocolError):
        p.message_from_fetch({b"UID": 1}, folder="INBOX", uidvalidity=1)


def test_parse_fetch_attributes() -> None:
    text = (
        b'(UID 5 FLAGS (\\Seen $x) MODSEQ (12) INTERNALDATE "01-Jan-2026 12:00:00 +0000" '
        b'X-GM-LABELS ("\\\\Important" Foo) BODY[HEADER.FIELDS (MESSAGE-ID)] {3} '
        b"BODY.PEEK[]<0> {4} ENVELOPE NIL)"
    )
    attrs = parse_fetch_attributes(text, [b"abc", b"wxyz"])
    assert attrs[b"UID"] == 5
    assert attrs[b"FLAGS"] == (b"\\Seen", b"$x")
    assert attrs[b"MODSEQ"] == (12,)
    assert attrs[b"INTERNALDATE"] == b"01-Jan-2026 12:00:00 +0000"
    assert attrs[b"X-GM-LABELS"] == (b"\\Important", b"Foo")
    assert attrs[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"] == b"abc"
    assert attrs[b"BODY[]"] == b"wxyz"
    assert attrs[b"ENVELOPE"] is None


@pytest.mark.parametrize(
    "text", [b"(UID 5", b"UID 5)", b"(UID)", b"(UID 5 BODY[] {3})", b"(UID 5 FLAGS (\\Seen)"]
)
def test_parse_fetch_attributes_rejects_malformed(text: bytes) -> None:
    with pytest.raises(mailsync.ProtocolError):
        parse_fetch_attributes(text)


# -- the literal reader -------------------------------------------------------------------------

BODY1 = b"From: a@example.test\r\nSubject: one\r\n\r\nline with {12}\r\nand ) paren\r\n"
BODY2 = b"Subject: two\r\n\r\n" + b"x" * 300 + b"\r\n"
STREAM = (
    b"* 1 FETCH (UID 11 FLAGS (\\Seen) RFC822.SIZE %d "
    b'INTERNALDATE "01-Jan-2026 12:00:00 +0000" BODY[] {%d}\r\n'
    % (len(BODY1), len(BODY1))
    + BODY1
    + b")\r\n"
    + b"* 3 EXISTS\r\n"
    + b"* 2 FETCH (BODY[] {%d}\r\n" % len(BODY2)
    + BODY2
    + b" UID 12 FLAGS () RFC822.SIZE %d)\r\n" % len(BODY2)
    + b"* 2 FETCH (FLAGS (\\Deleted) UID 12)\r\n"
    + b"* 4 FETCH (UID 13 BODY[] {0}\r\n)\r\n"
    + b"+ go ahead\r\n"
    + b"A0007 OK [READ-ONLY] Fetch completed.\r\n"
)


def _describe(events: list[object]) -> list[object]:
    out: list[object] = []
    for event in events:
        if isinstance(event, FetchResponse):
            out.append(("fetch", event.seq, event.attributes()))
        else:
            out.append(event)
    return out


EXPECTED = [
    (
        "fetch",
        1,
        {
            b"UID": 11,
            b"FLAGS": (b"\\Seen",),
            b"RFC822.SIZE": len(BODY1),
            b"INTERNALDATE": b"01-Jan-2026 12:00:00 +0000",
            b"BODY[]": BODY1,
        },
    ),
    Untagged(b"3 EXISTS"),
    ("fetch", 2, {b"BODY[]": BODY2, b"UID": 12, b"FLAGS": (), b"RFC822.SIZE": len(BODY2)}),
    ("fetch", 2, {b"FLAGS": (b"\\Deleted",), b"UID": 12}),
    ("fetch", 4, {b"UID": 13, b"BODY[]": b""}),
    Continuation(b"go ahead"),
    Tagged(b"A0007", b"OK", b"[READ-ONLY] Fetch completed."),
]


def test_reader_whole_stream() -> None:
    reader = ResponseReader()
    reader.feed(STREAM)
    assert _describe(list(reader.events())) == EXPECTED
    assert reader.buffered == 0


def test_reader_split_at_every_position() -> None:
    for cut in range(len(STREAM) + 1):
        reader = ResponseReader()
        events = []
        reader.feed(STREAM[:cut])
        events.extend(reader.events())
        reader.feed(STREAM[cut:])
        events.extend(reader.events())
        assert _describe(events) == EXPECTED, cut


def test_reader_split_at_every_pair_of_positions() -> None:
    stream = STREAM[:400]  # the first two responses: every (i, j) split of them
    expected = EXPECTED[:2]
    for i in range(0, len(stream) + 1, 3):
        for j in range(i, len(stream) + 1, 7):
            reader = ResponseReader()
            events = []
            for part in (stream[:i], stream[i:j], stream[j:]):
                reader.feed(part)
                events.extend(reader.events())
            assert _describe(events) == expected, (i, j)


def test_reader_byte_by_byte_and_wanted() -> None:
    reader = ResponseReader()
    events = []
    wanted_seen = []
    for index in range(len(STREAM)):
        reader.feed(memoryview(STREAM)[index : index + 1])
        events.extend(reader.events())
        wanted_seen.append(reader.wanted)
    assert _describe(events) == EXPECTED
    assert len(BODY1) in wanted_seen


def test_reader_large_literal_in_chunks() -> None:
    body = bytes(range(256)) * 8000  # 2 MB, every byte value, CRLFs and braces included
    stream = b"* 1 FETCH (UID 1 BODY[] {%d}\r\n" % len(body) + body + b")\r\nT1 OK done\r\n"
    reader = ResponseReader()
    events = []
    for start in range(0, len(stream), 65536):
        reader.feed(stream[start : start + 65536])
        events.extend(reader.events())
    assert len(events) == 2
    assert isinstance(events[0], FetchResponse)
    assert events[0].attributes()[b"BODY[]"] == body
    assert events[1] == Tagged(b"T1", b"OK", b"done")


def test_reader_untagged_with_literal_and_errors() -> None:
    reader = ResponseReader()
    reader.feed(b'* LIST () "/" {5}\r\nA b"c)\r\nX1 NO [NONEXISTENT] no\r\n')
    events = list(reader.events())
    assert events == [
        Untagged(b'LIST () "/" {5})', (b'A b"c',)),
        Tagged(b"X1", b"NO", b"[NONEXISTENT] no"),
    ]
    bad = ResponseReader()
    bad.feed(b"garbage\r\n")
    with pytest.raises(mailsync.ProtocolError):
        list(bad.events())


def test_reader_refuses_endless_lines() -> None:
    reader = ResponseReader()
    reader.feed(b"* " + b"x" * (2 << 20))
    with pytest.raises(mailsync.ProtocolError):
        reader.next_event()


def test_fetch_command() -> None:
    assert fetch_command("A1", "1:5", p.FETCH_BODY) == (
        b"A1 UID FETCH 1:5 (UID FLAGS RFC822.SIZE INTERNALDATE BODY.PEEK[])\r\n"
    )
    assert fetch_command("A2", "7", "UID", changedsince=5) == (
        b"A2 UID FETCH 7 (UID) (CHANGEDSINCE 5)\r\n"
    )


# -- identity and cursor rules ------------------------------------------------------------------


def test_fetched_identity() -> None:
    assert imap_sync.fetched_identity(RAW) == "mid:abc@example.test"
    folded = b"Subject: x\r\nMessage-Id:\r\n <folded@example.test>\r\n\r\nMessage-ID: <no@x>\r\n"
    assert imap_sync.fetched_identity(folded) == "mid:folded@example.test"
    raw = b"Subject: none\r\n\r\nMessage-ID: <in-body@x>\r\n"
    assert imap_sync.fetched_identity(raw) == "sha256:" + hashlib.sha256(raw).hexdigest()
    # The same identity the Message model would give.
    msg = mailsync.Message(RAW)
    assert imap_sync.fetched_identity(RAW) == msg.identity


STATUS = p.FolderStatus(uidvalidity=100, uidnext=51, exists=50, highestmodseq=7)


def test_plan_first_sync_is_full() -> None:
    plan = imap_sync.plan_sync(None, STATUS)
    assert plan.mode == "full"
    assert plan.checks_identities
    assert plan.cursor == imap_sync.SyncCursor(100, 0, 7)


def test_plan_incremental_and_unchanged() -> None:
    saved = imap_sync.SyncCursor(100, 40, 5).as_dict()
    plan = imap_sync.plan_sync(saved, STATUS)
    assert (plan.mode, plan.since_uid) == ("incremental", 40)
    assert not plan.checks_identities
    up_to_date = imap_sync.plan_sync(imap_sync.SyncCursor(100, 50).as_dict(), STATUS)
    assert up_to_date.mode == "unchanged"
    no_uidnext = imap_sync.plan_sync(saved, p.FolderStatus(100))
    assert no_uidnext.mode == "incremental"


def test_plan_resync_when_uidvalidity_changes() -> None:
    plan = imap_sync.plan_sync(imap_sync.SyncCursor(99, 40).as_dict(), STATUS)
    assert plan.mode == "resync"
    assert plan.checks_identities
    assert plan.cursor.uidvalidity == 100
    assert plan.since_uid == 0


def test_cursor_dict_round_trip_and_advance() -> None:
    cursor = imap_sync.SyncCursor(100, 3, None)
    assert imap_sync.SyncCursor.from_dict(cursor.as_dict()) == cursor
    assert "modseq" not in cursor.as_dict()
    assert imap_sync.SyncCursor.from_dict({"v": 1}) is None
    assert imap_sync.SyncCursor.from_dict(None) is None
    assert cursor.after(9, STATUS) == imap_sync.SyncCursor(100, 9, 7)
    assert cursor.after(1, STATUS).uid == 3


def test_folder_status_from_select() -> None:
    status = p.FolderStatus.from_select(
        {b"UIDVALIDITY": 5, b"UIDNEXT": 9, b"EXISTS": 3, b"HIGHESTMODSEQ": 12}
    )
    assert status == p.FolderStatus(5, 9, 3, 12)
    with pytest.raises(mailsync.ProtocolError):
        p.FolderStatus.from_select({b"EXISTS": 1})
