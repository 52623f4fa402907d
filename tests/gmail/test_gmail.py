"""The Gmail backend end to end against the fake Gmail API: what the contract suite does not
cover (sending, throttling, token refresh, the expired-history resync, labels, queries, memory
on a large label, bad input), sync and async where the two differ in I/O."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import mailsync
from mailsync import Q
from tests.contract import make_raw
from tests.fakes.gmail import FakeGmail
from tests.gmail.conftest import TOKEN, deposit, options


@pytest.fixture
def box(gmail: FakeGmail) -> Iterator[mailsync.Retriever]:
    with mailsync.connect("gmail://me", state=":memory:", **options(gmail)) as retriever:
        yield retriever


def _subjects(messages: Any) -> list[str]:
    return [m.subject for m in messages]


# -- the registry and options ------------------------------------------------------------------


def test_gmail_is_registered_for_all_four_roles(gmail: FakeGmail) -> None:
    kwargs = options(gmail)
    assert type(mailsync.connect("gmail://me", **kwargs)).__name__ == "GmailRetriever"
    assert type(mailsync.connect_async("gmail://me", **kwargs)).__name__ == "AsyncGmailRetriever"
    assert type(mailsync.sender("gmail://me", **kwargs)).__name__ == "GmailSender"
    assert type(mailsync.sender_async("gmail://me", **kwargs)).__name__ == "AsyncGmailSender"


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"token": None}, "token"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": "many"}, "batch_size"),
        ({"max_message_size": -1}, "max_message_size"),
        ({"retries": -1}, "retries"),
    ],
)
def test_bad_options_are_config_errors(gmail: FakeGmail, kwargs: dict[str, Any], text: str) -> None:
    with pytest.raises(mailsync.ConfigError, match=text):
        mailsync.connect("gmail://me", **{**options(gmail), **kwargs})


def test_a_base_url_that_is_not_http_is_a_config_error(gmail: FakeGmail) -> None:
    with (
        mailsync.connect("gmail://me", **options(gmail, base_url="ftp://x/gmail/v1")) as box,
        pytest.raises(mailsync.ConfigError, match="base_url"),
    ):
        box.folders()


def test_uploads_go_to_the_upload_root(gmail: FakeGmail) -> None:
    with mailsync.connect("gmail://me", **options(gmail)) as box:
        box.append("INBOX", make_raw(1))
    assert gmail.requests[-1][1] == "/upload/gmail/v1/users/me/messages"
    from mailsync._config import parse_url
    from mailsync.protocol.gmail import GmailAPI

    behind_proxy = parse_url("gmail://me", token="t", options={"base_url": "https://p.test/g/v1/"})
    assert GmailAPI(behind_proxy)._upload_url("messages") == (
        "https://p.test/upload/g/v1/users/me/messages"
    )
    custom = options(gmail, upload_url="https://x.test/upload/gmail/v1")
    with mailsync.connect("gmail://me", **custom) as box:
        box.append("INBOX", make_raw(3))
    with (
        mailsync.connect("gmail://me", **options(gmail, upload_url="ftp://x")) as box,
        pytest.raises(mailsync.ConfigError, match="upload_url"),
    ):
        box.append("INBOX", make_raw(4))


def test_the_user_goes_into_the_path(gmail: FakeGmail) -> None:
    deposit(gmail, make_raw(1))
    with mailsync.connect("gmail://me@example.test", **options(gmail)) as box:
        assert _subjects(box.messages()) == ["Message 1"]
    assert gmail.requests[-1][1].startswith("/gmail/v1/users/me@example.test/")
    with (
        mailsync.connect("gmail://someone@example.test", **options(gmail)) as other,
        pytest.raises(mailsync.AuthenticationError, match="Delegation denied"),
    ):
        other.folders()


def test_odd_ids_are_not_found_and_stay_in_their_path_segment(box: mailsync.Retriever) -> None:
    for bad in ("../labels", "a/b", "", "ZZZ", "18c2f0a000000001?format=full"):
        with pytest.raises(mailsync.MessageNotFound):
            box.get(bad)


# -- labels, flags, threads ------------------------------------------------------------------


def test_folders_are_labels_with_special_uses(gmail: FakeGmail, box: mailsync.Retriever) -> None:
    gmail.create_label("Work/2024")
    folders = {f.name: f for f in box.folders()}
    assert box.folders()[0].name == "INBOX"
    uses = {f.special_use: name for name, f in folders.items() if f.special_use}
    assert uses == {
        "\\Sent": "SENT",
        "\\Trash": "TRASH",
        "\\Drafts": "DRAFT",
        "\\Junk": "SPAM",
        "\\Flagged": "STARRED",
    }
    assert folders["Work/2024"].delimiter == "/"
    assert folders["Work/2024"].special_use is None


def test_a_label_created_later_is_found(gmail: FakeGmail, box: mailsync.Retriever) -> None:
    box.folders()
    deposit(gmail, make_raw(1), folder="Later")
    assert _subjects(box.messages("later")) == ["Message 1"]
    (message,) = box.messages("Later")
    assert message.labels == {"Later", "UNREAD"}


def test_labels_flags_threads_and_dates(gmail: FakeGmail, box: mailsync.Retriever) -> None:
    work = gmail.create_label("Work")
    first = make_raw(1)
    first_id = gmail.deliver(first, {"INBOX", work, "STARRED", "IMPORTANT"})
    reply = make_raw(2).replace(
        b"Subject:",
        b"In-Reply-To: <" + first.split(b"Message-ID: <")[1].split(b">")[0] + b">\r\nSubject:",
    )
    gmail.deliver(reply, {"INBOX", "UNREAD"})
    one, two = box.messages()
    assert one.labels == {"INBOX", "Work", "STARRED", "IMPORTANT"}
    assert one.flags == {"\\Seen", "\\Flagged"}
    assert two.flags == frozenset()
    assert one.thread_id == two.thread_id == first_id
    assert one.id == one.uid == first_id
    assert one.internal_date is not None
    assert one.internal_date < two.internal_date  # type: ignore[operator]
    got = box.get(first_id)
    assert got.folder == "INBOX"
    assert got.labels == one.labels


def test_set_flags_maps_to_labels(gmail: FakeGmail, box: mailsync.Retriever) -> None:
    message_id = deposit(gmail, make_raw(1))
    box.set_flags(message_id, add=["\\Seen", "\\Flagged"])
    assert gmail.messages[message_id].labels == {"INBOX", "STARRED"}
    box.set_flags([message_id], remove=["\\Flagged"], add=())
    assert gmail.messages[message_id].labels == {"INBOX"}
    with pytest.raises(mailsync.Unsupported, match="Answered"):
        box.set_flags(message_id, add=["\\Answered"])
    assert gmail.calls("messages.batchModify") == 2


def test_move_takes_away_only_the_label_it_was_read_from(
    gmail: FakeGmail, box: mailsync.Retriever
) -> None:
    work = gmail.create_label("Work")
    gmail.create_label("Archive")
    both = gmail.deliver(make_raw(1), {"INBOX", work})
    (from_work,) = box.messages("Work")
    box.move(from_work, "Archive")
    assert _subjects(box.messages("INBOX")) == ["Message 1"]
    assert _subjects(box.messages("Work")) == []
    assert _subjects(box.messages("Archive")) == ["Message 1"]
    box.move(both, "Work")  # a bare id: taken out of the INBOX
    assert gmail.messages[both].labels == {gmail.label_id("Archive"), work}
    with pytest.raises(mailsync.FolderNotFound):
        box.move(both, "Nowhere")


def test_delete_trashes_then_deletes_for_good(gmail: FakeGmail, box: mailsync.Retriever) -> None:
    ids = [deposit(gmail, make_raw(n)) for n in range(3)]
    box.delete(ids[:2])
    assert _subjects(box.messages()) == ["Message 2"]
    assert _subjects(box.messages("TRASH")) == ["Message 0", "Message 1"]
    assert box.get(ids[0]).folder == "TRASH"
    box.delete(ids[0], permanent=True)
    assert ids[0] not in gmail.messages
    with pytest.raises(mailsync.MessageNotFound):
        box.get(ids[0])
    with pytest.raises(mailsync.MessageNotFound):
        box.delete("18c2f0a000000001")


def test_append_uploads_exact_bytes_with_labels(gmail: FakeGmail, box: mailsync.Retriever) -> None:
    gmail.create_label("Notes")
    raw = make_raw(1, extra=200_000).replace(b"Body", b"\xc3\xa9 8-bit body")
    new_id = box.append("Notes", raw, flags=["\\Flagged"])
    assert new_id is not None
    stored = gmail.messages[new_id]
    assert stored.raw == raw
    assert stored.labels == {gmail.label_id("Notes"), "UNREAD", "STARRED"}
    assert gmail.requests[-1][2] == [("uploadType", "multipart")]
    with pytest.raises(mailsync.FolderNotFound):
        box.append("Nowhere", raw)


# -- queries ---------------------------------------------------------------------------------


def test_queries_are_substring_searches_whatever_gmail_words_are(
    gmail: FakeGmail, box: mailsync.Retriever
) -> None:
    deposit(gmail, make_raw(0, subject="Invoices for Q3", sender="Dave <dave.smith@example.test>"))
    deposit(gmail, make_raw(1, subject="lunch", body="see the attached voice memo\r\n"))
    assert _subjects(box.messages(query=Q(subject="voice"))) == ["Invoices for Q3"]
    assert _subjects(box.messages(query=Q(from_="e.smi"))) == ["Invoices for Q3"]
    assert _subjects(box.messages(query=Q(text="VOICE"))) == ["Invoices for Q3", "lunch"]
    # None of it went to Gmail's word search.
    assert all(not any(k == "q" for k, _ in params) for _, _, params in gmail.requests)


def test_flag_criteria_narrow_on_the_server(gmail: FakeGmail, box: mailsync.Retriever) -> None:
    deposit(gmail, make_raw(0), flags=["\\Seen"])
    deposit(gmail, make_raw(1), flags=["\\Flagged"])
    deposit(gmail, make_raw(2))
    before = gmail.calls("messages.get")
    assert _subjects(box.messages(query=~Q(seen=True) & Q(flagged=False))) == ["Message 2"]
    assert ("q", "(is:unread -is:starred)") in gmail.requests[-2][2]
    assert gmail.calls("messages.get") - before == 1  # only the one match was downloaded


def test_header_criteria_download_only_the_candidates(
    gmail: FakeGmail, box: mailsync.Retriever
) -> None:
    for n in range(10):
        deposit(
            gmail, make_raw(n, sender="Carol <carol@example.test>" if n % 5 else "Bob <b@x.test>")
        )
    gets = [p for m, _, p in gmail.requests if m == "messages.get"]
    assert gets == []
    assert _subjects(box.messages(query=Q(from_="bob"))) == ["Message 0", "Message 5"]
    formats = [dict(p)["format"] for m, _, p in gmail.requests if m == "messages.get"]
    assert formats.count("metadata") == 10
    assert formats.count("raw") == 2


def test_headers_only_never_downloads_a_body_unless_the_query_needs_it(
    gmail: FakeGmail, box: mailsync.Retriever
) -> None:
    deposit(gmail, make_raw(0, body="needle\r\n"))
    deposit(gmail, make_raw(1, extra=5000))
    headers = list(box.messages(headers_only=True))
    assert all(m.headers_only and b"Body" not in m.raw for m in headers)
    formats = {dict(p)["format"] for m, _, p in gmail.requests if m == "messages.get"}
    assert formats == {"metadata"}
    # text and exact sizes need the message itself; what comes back is still the header block.
    assert _subjects(box.messages(query=Q(text="needle"), headers_only=True)) == ["Message 0"]
    (big,) = box.messages(query=Q(larger=3000), headers_only=True)
    assert big.headers_only
    assert big.size == len(gmail.messages[big.id].raw)


def test_a_limit_with_a_client_side_query_fetches_in_batches(gmail: FakeGmail) -> None:
    for n in range(30):
        deposit(gmail, make_raw(n, subject="match" if n in (3, 4, 25) else "other"))
    with mailsync.connect("gmail://me", **options(gmail, batch_size=5)) as box:
        found = list(box.messages(query=Q(subject="match"), limit=2))
    assert [m.id for m in found] == sorted(m.id for m in found)
    assert len(found) == 2
    # One batch of five metadata reads, then only the two matches whole.
    formats = [dict(p)["format"] for m, _, p in gmail.requests if m == "messages.get"]
    assert formats == ["metadata"] * 5 + ["raw"] * 2


# -- sync and the history --------------------------------------------------------------------


def test_sync_follows_the_history(gmail: FakeGmail, box: mailsync.Retriever) -> None:
    deposit(gmail, make_raw(0))
    assert _subjects(box.sync()) == ["Message 0"]
    deposit(gmail, make_raw(1))
    assert _subjects(box.sync()) == ["Message 1"]
    assert gmail.calls("history.list") == 1
    cursor = box.state.load_cursor(box.account_key, "INBOX")
    assert cursor == {"historyId": str(gmail.history_id)}


def test_expired_history_resyncs_without_yielding_anything_twice(
    gmail: FakeGmail, box: mailsync.Retriever
) -> None:
    for n in range(3):
        deposit(gmail, make_raw(n))
    assert _subjects(box.sync()) == ["Message 0", "Message 1", "Message 2"]
    deposit(gmail, make_raw(3))
    gmail.expire_history()
    deposit(gmail, make_raw(4))
    history_calls = gmail.calls("history.list")
    assert _subjects(box.sync()) == ["Message 3", "Message 4"]
    assert gmail.calls("history.list") == history_calls + 1  # answered 404
    assert list(box.sync()) == []
    deposit(gmail, make_raw(5))
    assert _subjects(box.sync()) == ["Message 5"]


def test_a_resync_interrupted_midway_goes_on_where_it_stopped(
    gmail: FakeGmail, box: mailsync.Retriever
) -> None:
    for n in range(4):
        deposit(gmail, make_raw(n))
    run = box.sync()
    assert next(run).subject == "Message 0"
    assert next(run).subject == "Message 1"  # delivers Message 0
    run.close()
    deposit(gmail, make_raw(4))
    assert _subjects(box.sync()) == ["Message 1", "Message 2", "Message 3", "Message 4"]


def test_sync_counts_a_message_moved_into_the_folder_once(
    gmail: FakeGmail, box: mailsync.Retriever
) -> None:
    archive = gmail.create_label("Archive")
    kept = gmail.deliver(make_raw(0), {archive})
    assert _subjects(box.sync()) == []
    deposit(gmail, make_raw(1))
    gmail.relabel(kept, add=["INBOX"], remove=[archive])
    assert _subjects(box.sync()) == ["Message 1", "Message 0"]
    gmail.relabel(kept, add=[archive], remove=["INBOX"])  # archived, then back again
    gmail.relabel(kept, add=["INBOX"])
    assert list(box.sync()) == []


def test_sync_skips_what_left_the_folder_meanwhile(
    gmail: FakeGmail, box: mailsync.Retriever
) -> None:
    assert list(box.sync()) == []
    gone = deposit(gmail, make_raw(0))
    trashed = deposit(gmail, make_raw(1))
    deposit(gmail, make_raw(2))
    gmail.remove(gone)
    gmail.relabel(trashed, add=["TRASH"])
    assert _subjects(box.sync()) == ["Message 2"]


def test_history_pages_are_followed(gmail: FakeGmail, box: mailsync.Retriever) -> None:
    assert list(box.sync()) == []
    for n in range(1200):
        gmail.deliver(make_raw(n), {"INBOX"})
    assert len(list(box.sync())) == 1200
    assert gmail.calls("history.list") == 3  # 500 records a page


def test_async_sync_and_resync(gmail: FakeGmail) -> None:
    async def main() -> list[list[str]]:
        rounds = []
        async with mailsync.connect_async("gmail://me", state=":memory:", **options(gmail)) as box:
            deposit(gmail, make_raw(0))
            rounds.append([m.subject async for m in box.sync()])
            deposit(gmail, make_raw(1))
            gmail.expire_history()
            rounds.append([m.subject async for m in box.sync()])
            rounds.append([m.subject async for m in box.sync()])
        return rounds

    assert asyncio.run(main()) == [["Message 0"], ["Message 1"], []]


# -- sending ---------------------------------------------------------------------------------


def test_send_uploads_the_message_with_bcc_for_gmail_to_remove(gmail: FakeGmail) -> None:
    message = mailsync.compose(
        from_="me@example.test",
        to="Bob <bob@example.test>",
        cc="carol@example.test",
        bcc="dave@example.test",
        subject="Hello",
        text="hi",
    )
    with mailsync.sender("gmail://me", **options(gmail)) as out:
        result = out.send(message)
    assert result.message_id == message["Message-ID"].strip("<>")
    assert result.accepted == ("bob@example.test", "carol@example.test", "dave@example.test")
    assert result.refused == {}
    ((delivered, recipients),) = gmail.outbox
    assert sorted(recipients) == ["bob@example.test", "carol@example.test", "dave@example.test"]
    assert b"dave@example.test" not in delivered  # Gmail shows Bcc to no one
    (sent,) = gmail.messages.values()
    assert b"\r\nBcc: dave@example.test\r\n" in sent.raw  # the sender's copy keeps it
    sends = [p for m, _, p in gmail.requests if m == "messages.send"]
    assert sends == [[("uploadType", "media")]]


def test_send_refuses_what_gmail_cannot_do(gmail: FakeGmail) -> None:
    message = mailsync.compose(
        from_="me@example.test", to="bob@example.test", subject="x", text="y"
    )
    with mailsync.sender("gmail://me", **options(gmail)) as out:
        with pytest.raises(mailsync.Unsupported, match="delivery status"):
            out.send(message, notify=["failure"])
        with pytest.raises(mailsync.Unsupported, match="rcpt_to"):
            out.send(message, rcpt_to=["carol@example.test"])
        with pytest.raises(mailsync.Unsupported, match="mail_from"):
            out.send(message, mail_from="other@example.test")
        assert out.send(message, rcpt_to=["bob@example.test"]).accepted == ("bob@example.test",)
    assert len(gmail.outbox) == 1


def test_send_to_self_arrives_in_the_inbox(gmail: FakeGmail, box: mailsync.Retriever) -> None:
    assert list(box.sync()) == []
    message = mailsync.compose(
        from_="me@example.test", to="me@example.test", subject="Note", text="x"
    )
    with mailsync.sender("gmail://me", **options(gmail)) as out:
        out.send(message)
    assert _subjects(box.sync()) == ["Note"]
    assert "SENT" in next(iter(box.messages())).labels


def test_async_send_many(gmail: FakeGmail) -> None:
    messages = [
        mailsync.compose(
            from_="me@example.test", to=f"u{n}@example.test", subject=f"m{n}", text="x"
        )
        for n in range(3)
    ]

    async def main() -> list[mailsync.SendResult]:
        async with mailsync.sender_async("gmail://me", **options(gmail)) as out:
            return await out.send_many(messages)

    results = asyncio.run(main())
    assert [r.accepted for r in results] == [(f"u{n}@example.test",) for n in range(3)]
    assert [r for _, r in gmail.outbox] == [[f"u{n}@example.test"] for n in range(3)]


def test_a_send_is_not_sent_again_after_a_server_error(gmail: FakeGmail) -> None:
    message = mailsync.compose(
        from_="me@example.test", to="bob@example.test", subject="x", text="y"
    )
    is_send = lambda request: request.url.path.endswith("/send")  # noqa: E731
    with mailsync.sender("gmail://me", **options(gmail)) as out:
        gmail.fail_next(500, match=is_send)
        with pytest.raises(mailsync.TemporaryFailure, match="Backend Error"):
            out.send(message)
        assert gmail.calls("messages.send") == 1
        gmail.fail_next(
            429, "rateLimitExceeded", "Too many concurrent requests", retry_after="0", match=is_send
        )
        assert out.send(message).accepted == ("bob@example.test",)  # refused, so safe to resend
    assert gmail.calls("messages.send") == 3
    assert len(gmail.outbox) == 1


# -- throttling, errors, tokens ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (429, "rateLimitExceeded"),
        (403, "userRateLimitExceeded"),
        (403, "rateLimitExceeded"),
        (503, "backendError"),
    ],
)
def test_rate_limits_and_server_errors_are_retried(
    gmail: FakeGmail, box: mailsync.Retriever, status: int, reason: str
) -> None:
    for n in range(3):
        deposit(gmail, make_raw(n))
    gmail.fail_next(status, reason, "slow down", retry_after="0", count=3)
    assert _subjects(box.messages()) == ["Message 0", "Message 1", "Message 2"]
    assert not gmail.faults


def test_a_persistent_rate_limit_is_rate_limited_with_retry_after(gmail: FakeGmail) -> None:
    gmail.fail_next(
        403, "userRateLimitExceeded", "User Rate Limit Exceeded", retry_after="0", count=10
    )
    with (
        mailsync.connect("gmail://me", **options(gmail, retries=2)) as box,
        pytest.raises(mailsync.RateLimited) as info,
    ):
        box.folders()
    assert info.value.retry_after == 0
    assert len(gmail.faults) == 7


def test_persistent_server_errors_are_temporary_failures(gmail: FakeGmail) -> None:
    gmail.fail_next(500, count=10)
    with (
        mailsync.connect("gmail://me", **options(gmail, retries=1)) as box,
        pytest.raises(mailsync.TemporaryFailure, match="Backend Error"),
    ):
        box.folders()
    assert len(gmail.faults) == 8


def test_missing_scopes_and_quota_say_so(gmail: FakeGmail, box: mailsync.Retriever) -> None:
    gmail.fail_next(
        403, "insufficientPermissions", "Request had insufficient authentication scopes."
    )
    with pytest.raises(mailsync.AuthenticationError, match="scopes"):
        box.folders()
    gmail.fail_next(403, "dailyLimitExceeded", "Daily Limit Exceeded", count=5)
    with pytest.raises(mailsync.RateLimited, match="daily quota"):
        box.folders()
    assert len(gmail.faults) == 4  # not retried


@pytest.mark.parametrize(
    "body",
    [b"<html>oops</html>", b'{"labels": "no"}', b'{"labels": [{"id": 5, "name": "x"}]}', b"[]"],
)
def test_a_malformed_reply_is_a_protocol_error(
    gmail: FakeGmail, box: mailsync.Retriever, body: bytes
) -> None:
    gmail.fail_next(200, body=body)
    with pytest.raises(mailsync.ProtocolError):
        box.folders()


def test_a_raw_message_that_is_not_base64url_is_a_protocol_error(
    gmail: FakeGmail, box: mailsync.Retriever
) -> None:
    message_id = deposit(gmail, make_raw(1))
    bad = b'{"id": "%s", "raw": "!!not base64!!"}' % message_id.encode()
    gmail.fail_next(200, body=bad, match=lambda r: "format=raw" in str(r.url))
    with pytest.raises(mailsync.ProtocolError, match="base64url"):
        box.get(message_id)


def test_a_message_larger_than_max_message_size_is_refused(gmail: FakeGmail) -> None:
    message_id = deposit(gmail, make_raw(1, extra=300_000))
    with (
        mailsync.connect("gmail://me", **options(gmail, max_message_size=100_000)) as box,
        pytest.raises(mailsync.ProtocolError, match="larger than"),
    ):
        box.get(message_id)


def test_options_from_the_url_and_no_size_limit(gmail: FakeGmail) -> None:
    message_id = deposit(gmail, make_raw(1, extra=300_000))
    for n in range(2, 5):
        deposit(gmail, make_raw(n))
    url = "gmail://me?batch_size=2&max_message_size=none&concurrency=2"
    with mailsync.connect(url, **options(gmail)) as box:
        assert box.get(message_id).size > 300_000
        assert len(list(box.messages())) == 4
    with mailsync.connect("gmail://me", **options(gmail, max_message_size=None)) as box:
        assert box.get(message_id).size > 300_000


def test_transport_failures_are_translated(gmail: FakeGmail) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    with (
        mailsync.connect("gmail://me", token=TOKEN, transport=httpx.MockTransport(refuse)) as box,
        pytest.raises(mailsync.ConnectionFailed, match=r"Gmail API \(me\)") as info,
    ):
        box.folders()
    assert isinstance(info.value.__cause__, httpx.ConnectError)


def test_an_expired_token_is_refreshed_once(gmail: FakeGmail) -> None:
    handed: list[str] = []
    tokens = iter(["expired", TOKEN])

    def token() -> str:
        handed.append(next(tokens))
        return handed[-1]

    deposit(gmail, make_raw(1))
    with mailsync.connect("gmail://me", **{**options(gmail), "token": token}) as box:
        assert _subjects(box.messages()) == ["Message 1"]
    assert handed == ["expired", TOKEN]


def test_a_token_refused_twice_is_an_authentication_error(gmail: FakeGmail) -> None:
    handed: list[str] = []

    def token() -> str:
        handed.append(f"bad-{len(handed)}")
        return handed[-1]

    with (
        mailsync.connect("gmail://me", **{**options(gmail), "token": token}) as box,
        pytest.raises(mailsync.AuthenticationError, match="refused") as info,
    ):
        box.folders()
    assert handed == ["bad-0", "bad-1"]
    assert "bad-" not in str(info.value)
    with (
        mailsync.connect("gmail://me", **{**options(gmail), "token": "fixed-bad"}) as fixed,
        pytest.raises(mailsync.AuthenticationError),
    ):
        fixed.folders()
    assert gmail.calls("labels.list") == 3  # a fixed token cannot change: not asked again


def test_async_token_refresh_and_throttling(gmail: FakeGmail) -> None:
    tokens = iter(["expired", TOKEN])
    deposit(gmail, make_raw(1))
    gmail.fail_next(429, "rateLimitExceeded", "busy", retry_after="0", count=2)

    async def main() -> list[str]:
        kwargs = {**options(gmail), "token": lambda: next(tokens)}
        async with mailsync.connect_async("gmail://me", **kwargs) as box:
            return [m.subject async for m in box.messages()]

    assert asyncio.run(main()) == ["Message 1"]


# -- memory ----------------------------------------------------------------------------------


@pytest.mark.timeout(600)  # ~15 s on an idle machine; memory, not time, is what it checks
def test_memory_stays_flat_on_a_100000_message_label(gmail: FakeGmail) -> None:
    """100,000 ids are listed, then 1,000 messages of 100 KB (100 MB) stream through: what
    the iteration holds at its peak stays a small fraction of that."""
    raw = make_raw(0, extra=100_000)  # one bytes object: the fake's own memory stays small
    first = gmail.deliver(raw, {"INBOX"})
    for _ in range(99_999):
        gmail.deliver(raw, {"INBOX"})
    with mailsync.connect("gmail://me", **options(gmail, batch_size=25)) as box:
        box.folders()  # the labels are read before the measurement
        tracemalloc.start()
        try:
            baseline = tracemalloc.get_traced_memory()[0]
            count = 0
            for message in box.messages():
                if count == 0:
                    assert message.id == first  # oldest first
                count += 1
                if count == 1_000:
                    break
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert count == 1_000
    assert gmail.calls("messages.list") == 200
    assert peak - baseline < 24 * 1024 * 1024, f"peak {(peak - baseline) / 2**20:.1f} MiB"
