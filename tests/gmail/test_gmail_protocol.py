"""The pure Gmail protocol code: query translation, labels and flags, history pages, cursors,
the header block of a metadata reply, compact ids, and plans replayed against canned replies."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from mailsync import Message, ProtocolError, Q, RateLimited, Unsupported
from mailsync._config import parse_url
from mailsync._plans import Sleep, replay
from mailsync.protocol.gmail import GmailAPI
from mailsync.protocol.gmail_wire import (
    GmailLabel,
    IdList,
    decode_raw,
    find_label,
    flags_of,
    folder_of,
    header_block_from,
    history_additions,
    history_start,
    in_folder,
    label_changes,
    native_query,
    upload_root,
    user_id,
)
from mailsync.protocol.http import Response, Send


@pytest.mark.parametrize(
    ("query", "q", "exact"),
    [
        (None, "", True),
        (Q(seen=True), "-is:unread", True),
        (Q(seen=False, flagged=True), "(is:unread is:starred)", True),
        (~Q(seen=True), "is:unread", True),
        (~Q(seen=True, flagged=True), "(is:unread OR -is:starred)", True),
        (Q(seen=True) | Q(flagged=True), "(-is:unread OR is:starred)", True),
        (~(Q(seen=True) | Q(flagged=False)), "(is:unread is:starred)", True),
        # Text, dates and sizes cannot narrow: Gmail matches words, arrival times, estimates.
        (Q(subject="invoice"), "", False),
        (Q(subject="invoice", seen=False), "is:unread", False),
        (Q(from_="bob") & Q(flagged=True), "is:starred", False),
        (Q(from_="bob") | Q(flagged=True), "", False),
        (~Q(seen=True, subject="x"), "", False),
        (~(Q(subject="x") | Q(seen=True)), "is:unread", False),
        (Q(larger=10, since=datetime(2026, 1, 1, tzinfo=UTC)), "", False),
    ],
)
def test_native_query(query: Q | None, q: str, exact: bool) -> None:
    assert native_query(query) == (q, exact)


def test_native_query_is_a_superset_of_every_match() -> None:
    """Brute force over the four flag states: whatever the query, no message matching it is
    left out by the translated search."""
    from tests.fakes.gmail import _search

    queries = [
        Q(seen=True) & Q(subject="x"),
        ~(Q(seen=True) & Q(flagged=True)) | Q(text="y"),
        ~(~Q(flagged=True) | Q(subject="z")),
        (Q(seen=False) | Q(text="a")) & ~Q(flagged=False),
    ]
    for query in queries:
        q, _ = native_query(query)
        search = _search(q)
        for unread in (False, True):
            for starred in (False, True):
                labels = (
                    {"INBOX"}
                    | ({"UNREAD"} if unread else set())
                    | ({"STARRED"} if starred else set())
                )
                for subject in ("x", "z", "other"):
                    raw = f"Subject: {subject}\r\n\r\na y\r\n".encode()
                    message = Message(raw, flags=flags_of(labels))
                    if query.matches(message):
                        assert search(labels), (query, q, labels, subject)


def test_flags_and_label_changes() -> None:
    assert flags_of(["INBOX", "UNREAD"]) == frozenset()
    assert flags_of(["INBOX"]) == {"\\Seen"}
    assert flags_of(["STARRED", "DRAFT", "UNREAD"]) == {"\\Flagged", "\\Draft"}
    assert label_changes(["\\Seen", "\\Flagged"], []) == (["STARRED"], ["UNREAD"])
    assert label_changes([], ["\\SEEN", "\\flagged"]) == (["UNREAD"], ["STARRED"])
    for flag in ("\\Answered", "\\Draft", "$Label1", "\\Deleted"):
        with pytest.raises(Unsupported, match="label"):
            label_changes([flag], [])


def test_folders_from_labels() -> None:
    labels = {
        "INBOX": GmailLabel("INBOX", "INBOX", "system"),
        "SENT": GmailLabel("SENT", "SENT", "system"),
        "SPAM": GmailLabel("SPAM", "SPAM", "system"),
        "Label_1": GmailLabel("Label_1", "Work/2024", "user"),
        "Label_2": GmailLabel("Label_2", "SENT-ish", "user"),
    }
    assert folder_of(labels["SENT"]).special_use == "\\Sent"
    assert folder_of(labels["SPAM"]).special_use == "\\Junk"
    assert folder_of(labels["Label_1"]).name == "Work/2024"
    assert folder_of(labels["Label_1"]).delimiter == "/"
    assert folder_of(GmailLabel("Label_9", "SENT", "user")).special_use is None
    assert find_label(labels, "inbox") == labels["INBOX"]
    assert find_label(labels, "work/2024") == labels["Label_1"]
    assert find_label(labels, "Label_2") == labels["Label_2"]
    assert find_label(labels, "Nope") is None
    assert find_label({}, "Inbox") == GmailLabel("INBOX", "INBOX", "system")
    assert in_folder(["INBOX", "UNREAD"], "INBOX")
    assert not in_folder(["INBOX", "TRASH"], "INBOX")
    assert in_folder(["INBOX", "TRASH"], "TRASH")


def test_history_additions() -> None:
    page = {
        "history": [
            {"id": "110", "messagesAdded": [{"message": {"id": "a", "labelIds": ["INBOX"]}}]},
            {"id": "115", "messagesAdded": [{"message": {"id": "b", "labelIds": ["SENT"]}}]},
            {"id": "120", "labelsAdded": [{"message": {"id": "b"}, "labelIds": ["INBOX"]}]},
            {"id": "130", "labelsAdded": [{"message": {"id": "c"}, "labelIds": ["STARRED"]}]},
            {"id": "140", "labelsAdded": [{"message": {"id": "a"}, "labelIds": ["INBOX"]}]},
            {"id": "150", "messagesAdded": [{"message": {"id": "d"}}]},
        ],
        "historyId": "160",
    }
    added, position = history_additions(page, "INBOX", "100")
    assert added == [("a", "100"), ("b", "115"), ("d", "140")]
    assert position == "150"
    assert history_additions({"historyId": "7"}, "INBOX", "5") == ([], "5")
    with pytest.raises(ProtocolError):
        history_additions({"history": [{"messagesAdded": []}]}, "INBOX", "1")
    with pytest.raises(ProtocolError):
        history_additions({"history": "nope"}, "INBOX", "1")


def test_history_start() -> None:
    assert history_start(None) is None
    assert history_start({"historyId": "123"}) == "123"
    assert history_start({"historyId": "123", "resync": True}) is None
    assert history_start({"historyId": 123}) is None
    assert history_start({"uid": 5}) is None


def test_header_block_from_metadata() -> None:
    payload = {
        "headers": [
            {"name": "Subject", "value": "=?utf-8?q?Gr=C3=BC=C3=9Fe?="},
            {"name": "To", "value": "a@example.test,\n b@example.test"},
            {"name": "X-Bare", "value": "one\ntwo"},
            {"name": "From", "value": "Jörg <j@example.test>"},
        ]
    }
    block = header_block_from(payload, "t")
    assert block.endswith(b"\r\n\r\n")
    assert b"\nX-Bare: one\r\n two\r\n" in block
    message = Message(block, headers_only=True)
    assert message.subject == "Grüße"
    assert [a.email for a in message.to] == ["a@example.test", "b@example.test"]
    assert message.from_ is not None
    assert message.from_.name == "Jörg"
    assert header_block_from(None, "t") == b"\r\n"
    with pytest.raises(ProtocolError):
        header_block_from({"headers": [{"name": "X"}]}, "t")


def test_decode_raw() -> None:
    data = b"Subject: x\r\n\r\n\xff\xfe?>"
    padded = base64.urlsafe_b64encode(data).decode()
    assert decode_raw(padded, "t") == data
    assert decode_raw(padded.rstrip("="), "t") == data
    with pytest.raises(ProtocolError, match="base64url"):
        decode_raw("not base64!", "t")


def test_id_list_is_compact_and_falls_back() -> None:
    ids = IdList()
    for value in ("18c2f0a000000001", "18c2f0a000000002", "ff"):
        ids.append(value)
    assert list(ids.reversed()) == ["ff", "18c2f0a000000002", "18c2f0a000000001"]
    assert ids._plain is None
    assert len(ids) == 3
    # Anything that would not come back the same from an integer is kept as it is.
    for odd in ("0abc", "ABC", "12345678901234567", "id-1"):
        mixed = IdList()
        mixed.append("18c2f0a000000001")
        mixed.append(odd)
        assert list(mixed.reversed()) == [odd, "18c2f0a000000001"]


def test_user_id_and_upload_root() -> None:
    assert user_id(parse_url("gmail://me")) == "me"
    assert user_id(parse_url("gmail://alice@example.com")) == "alice@example.com"
    assert user_id(parse_url("gmail://alice%40example.com@gmail")) == "alice@example.com@gmail"
    assert upload_root("https://gmail.googleapis.com/gmail/v1") == (
        "https://gmail.googleapis.com/upload/gmail/v1"
    )
    assert upload_root("http://127.0.0.1:8080/gmail/v1/") == "http://127.0.0.1:8080/upload/gmail/v1"


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(status, headers or {}, json.dumps(body).encode())


def test_get_waits_out_retry_after_then_reads_the_labels() -> None:
    api = GmailAPI(parse_url("gmail://me", token="t"))
    raw = base64.urlsafe_b64encode(b"Subject: hi\r\n\r\nbody\r\n").decode()
    busy = {"error": {"code": 429, "message": "busy", "errors": [{"reason": "rateLimitExceeded"}]}}
    ops, message = replay(
        api.get("18c2f0a000000001"),
        [
            _json(429, busy, {"retry-after": "7"}),
            _json(200, {"id": "18c2f0a000000001", "labelIds": ["INBOX", "Label_3"], "raw": raw}),
            _json(
                200,
                {
                    "labels": [
                        {"id": "INBOX", "name": "INBOX", "type": "system"},
                        {"id": "Label_3", "name": "Work", "type": "user"},
                    ]
                },
            ),
        ],
    )
    assert Sleep(7.0) in ops
    sends = [op.request for op in ops if isinstance(op, Send)]
    assert [r.url for r in sends] == [
        "users/me/messages/18c2f0a000000001",
        "users/me/messages/18c2f0a000000001",
        "users/me/labels",
    ]
    assert sends[0].params == (("format", "raw"),)
    assert sends[0].headers["Authorization"] == "Bearer t"
    assert message.subject == "hi"
    assert message.labels == {"INBOX", "Work"}
    assert message.folder == "INBOX"
    assert message.seen


def test_a_spent_daily_quota_is_not_retried() -> None:
    api = GmailAPI(parse_url("gmail://me", token="t"))
    spent = {
        "error": {
            "code": 403,
            "message": "Daily Limit",
            "errors": [{"reason": "dailyLimitExceeded"}],
        }
    }
    with pytest.raises(RateLimited, match="daily quota"):
        replay(api.get("18c2f0a000000001"), [_json(403, spent)])
