"""The Microsoft Graph backend against the in-process fake (tests/fakes/graph.py): the
Retriever contract, sync and async, then what is particular to Graph: folder paths and paging,
immutable ids, delta rounds and their expiry, throttling, concurrency, tokens, sending."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

import mailsync
from mailsync import Q
from tests.contract import AsyncRetrieverContract, RetrieverContract, make_raw
from tests.fakes.graph import FakeGraph


@pytest.fixture
def fake() -> FakeGraph:
    return FakeGraph()


def _connect(fake: FakeGraph, state: Any = ":memory:", **options: Any) -> Any:
    options = {"token": fake.token, "transport": fake, "retry_delay": 0, **options}
    return mailsync.connect("graph://me", state=state, **options)


def _connect_async(fake: FakeGraph, state: Any = ":memory:", **options: Any) -> Any:
    options = {"token": fake.token, "transport": fake, "retry_delay": 0, **options}
    return mailsync.connect_async("graph://me", state=state, **options)


class GraphFixtures:
    # Graph creates a folder inside an existing one: make_folder("A/B") makes A first, a real
    # folder like any other.
    implicit_parent_selectable = True

    @pytest.fixture
    def seed(self, fake: FakeGraph) -> Callable[..., None]:
        def seed(raw: bytes, folder: str = "INBOX", flags: tuple[str, ...] = ()) -> None:
            fake.deliver(raw, "inbox" if folder.upper() == "INBOX" else folder, flags=flags)

        return seed

    @pytest.fixture
    def make_folder(self, fake: FakeGraph) -> Callable[[str], None]:
        def make(name: str) -> None:
            parts = name.split("/")
            for depth in range(1, len(parts) + 1):
                path = "/".join(parts[:depth])
                if not _exists(fake, path):
                    fake.add_folder(path)

        return make


def _exists(fake: FakeGraph, name: str) -> bool:
    try:
        fake.find_folder(name)
    except KeyError:
        return False
    return True


class TestGraphContract(GraphFixtures, RetrieverContract):
    watch_timeout = 10.0

    @pytest.fixture
    def make_retriever(self, fake: FakeGraph) -> Callable[..., Any]:
        return lambda state, **options: _connect(fake, state, **options)


class TestAsyncGraphContract(GraphFixtures, AsyncRetrieverContract):
    watch_timeout = 10.0

    @pytest.fixture
    def make_retriever(self, fake: FakeGraph) -> Callable[..., Any]:
        return lambda state, **options: _connect_async(fake, state, **options)


# -- folders ---------------------------------------------------------------------------------


def test_folders_are_paths_with_special_use_and_the_inbox_as_INBOX(fake: FakeGraph) -> None:
    fake.add_folder("Inbox/Receipts")
    fake.add_folder("Inbox/Receipts/2026")
    fake.add_folder("Projects")
    with _connect(fake) as box:
        folders = {f.name: f for f in box.folders()}
    assert folders["INBOX"].special_use is None
    assert folders["Sent Items"].special_use == "\\Sent"
    assert folders["Deleted Items"].special_use == "\\Trash"
    assert folders["Drafts"].special_use == "\\Drafts"
    assert folders["Junk Email"].special_use == "\\Junk"
    assert folders["Archive"].special_use == "\\Archive"
    assert "INBOX/Receipts/2026" in folders
    assert folders["INBOX/Receipts"].delimiter == "/"
    assert "\\HasChildren" in folders["INBOX/Receipts"].flags
    assert "Conversation History" not in folders  # hidden folders are left out
    assert next(iter(folders)) == "INBOX"


def test_folder_names_are_case_insensitive_and_pages_are_followed(fake: FakeGraph) -> None:
    for n in range(130):  # more than a page of folders ($top=100)
        fake.add_folder(f"Box {n:03d}")
    fake.add_folder("Inbox/Receipts")
    fake.deliver(make_raw(1), "Inbox/Receipts")
    fake.deliver(make_raw(2), "Box 129")
    with _connect(fake) as box:
        assert len([f for f in box.folders() if f.name.startswith("Box ")]) == 130
        assert [m.subject for m in box.messages("inbox/receipts")] == ["Message 1"]
        assert [m.subject for m in box.messages("BOX 129")] == ["Message 2"]
        assert [m.folder for m in box.messages("Inbox/Receipts")] == ["INBOX/Receipts"]


# -- messages --------------------------------------------------------------------------------


def test_messages_page_through_large_folders_oldest_first(fake: FakeGraph) -> None:
    for n in range(230):
        fake.deliver(make_raw(n))
    with _connect(fake) as box:
        assert [m.subject for m in box.messages()] == [f"Message {n}" for n in range(230)]
    listings = [p for m, p in fake.requests if p.endswith("/messages")]
    assert len(listings) == 3  # 100 a page


def test_size_comes_from_the_extended_property_and_flags_from_the_properties(
    fake: FakeGraph,
) -> None:
    raw = make_raw(1, extra=9000)
    fake.deliver(raw, flags=("\\Seen", "\\Flagged"))
    with _connect(fake) as box:
        (message,) = box.messages(headers_only=True)
    assert message.size == len(raw)
    assert message.flags == {"\\Seen", "\\Flagged"}
    assert message.thread_id
    assert message.internal_date is not None


def test_headers_only_downloads_no_mime(fake: FakeGraph) -> None:
    fake.deliver(make_raw(1, body="SECRET\r\n"))
    with _connect(fake) as box:
        (message,) = box.messages(headers_only=True, query=Q(subject="message"))
    assert message.subject == "Message 1"
    assert not any(path.endswith("/$value") for _, path in fake.requests)


def test_queries_narrow_with_filter_and_agree_with_the_client_side_meaning(
    fake: FakeGraph,
) -> None:
    fake.deliver(make_raw(0), flags=("\\Seen",))
    fake.deliver(make_raw(1), flags=("\\Flagged",))
    fake.deliver(make_raw(2, date=datetime(2020, 5, 1, tzinfo=UTC)))
    with _connect(fake) as box:
        fake.requests.clear()
        assert [m.subject for m in box.messages(query=~Q(seen=True) & Q(flagged=True))] == [
            "Message 1"
        ]
        since = Q(since=datetime(2026, 1, 1, tzinfo=UTC))
        assert [m.subject for m in box.messages(query=since)] == ["Message 0", "Message 1"]
    # The server was asked to narrow (the order property filtered first, as Graph demands).
    assert fake.requests[0][1].endswith("/messages")


def test_graph_refuses_a_filter_that_does_not_start_with_the_order_property(
    fake: FakeGraph,
) -> None:
    import httpx

    client = httpx.Client(transport=fake, base_url="https://graph.microsoft.com/v1.0")
    reply = client.get(
        "me/mailFolders/inbox/messages",
        params={"$filter": "isRead eq false", "$orderby": "receivedDateTime asc"},
        headers={"Authorization": f"Bearer {fake.token}"},
    )
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "InefficientFilter"


def test_ids_survive_a_move(fake: FakeGraph) -> None:
    fake.add_folder("Archive/2026")
    fake.deliver(make_raw(1))
    with _connect(fake) as box:
        (message,) = box.messages()
        box.move(message, "Archive/2026")
        again = box.get(message.id)
        assert again.id == message.id
        assert again.folder == "Archive/2026"
        (moved,) = box.messages("Archive/2026")
        assert moved.id == message.id
    # Without the Prefer header the fake (like Graph) hands out ids that change on a move.
    stored = next(iter(fake.mailbox().messages.values()))
    assert stored.rest_id != stored.immutable_id


def test_unknown_ids_are_message_not_found_with_graphs_code(fake: FakeGraph) -> None:
    fake.deliver(make_raw(1))
    with _connect(fake) as box:
        with pytest.raises(mailsync.MessageNotFound, match="ErrorItemNotFound"):
            box.get("AAMk" + "x" * 40)
        with pytest.raises(mailsync.MessageNotFound, match="ErrorInvalidIdMalformed"):
            box.get("not-a-graph-id")
        with pytest.raises(mailsync.MessageNotFound):
            box.get("../../sendMail")


def test_keywords_are_unsupported_and_append_makes_a_draft(fake: FakeGraph) -> None:
    with _connect(fake) as box:
        new_id = box.append("INBOX", make_raw(1), flags=["\\Seen", "\\Flagged"])
        (message,) = box.messages()
        assert message.id == new_id
        assert {"\\Seen", "\\Flagged", "\\Draft"} <= message.flags
        with pytest.raises(mailsync.Unsupported, match="Work"):
            box.set_flags(message, add=["Work"])
        with pytest.raises(mailsync.Unsupported):
            box.set_flags(message, remove=["\\Answered"])


# -- sync ------------------------------------------------------------------------------------


def test_sync_follows_delta_rounds_and_ignores_updates(fake: FakeGraph) -> None:
    for n in range(250):  # more than a delta page (200)
        fake.deliver(make_raw(n))
    with _connect(fake) as box:
        assert [m.subject for m in box.sync()] == [f"Message {n}" for n in range(250)]
        first = next(iter(box.messages()))
        box.set_flags(first, add=["\\Seen"])  # an update, not new mail
        fake.deliver(make_raw(300))
        assert [m.subject for m in box.sync()] == ["Message 300"]
        assert list(box.sync()) == []


def test_a_message_moved_in_is_new_to_that_folder(fake: FakeGraph) -> None:
    fake.add_folder("Other")
    fake.deliver(make_raw(1), "Other")
    with _connect(fake) as box:
        assert list(box.sync()) == []
        (message,) = box.messages("Other")
        box.move(message, "INBOX")
        assert [m.subject for m in box.sync()] == ["Message 1"]


def test_an_expired_delta_token_resyncs_without_repeating(fake: FakeGraph) -> None:
    for n in range(3):
        fake.deliver(make_raw(n))
    with _connect(fake) as box:
        assert len(list(box.sync())) == 3
        fake.expire_delta_tokens()
        fake.deliver(make_raw(9))
        assert [m.subject for m in box.sync()] == ["Message 9"]
        assert list(box.sync()) == []
    assert any(p.endswith("/delta") for _, p in fake.requests)


def test_an_interrupted_round_is_resumed_without_repeating(fake: FakeGraph) -> None:
    for n in range(5):
        fake.deliver(make_raw(n))
    with _connect(fake) as box:
        run = box.sync()
        assert [next(run).subject for _ in range(3)] == ["Message 0", "Message 1", "Message 2"]
        run.close()  # Message 2 was being handled: it comes again
        assert [m.subject for m in box.sync()] == ["Message 2", "Message 3", "Message 4"]


# -- throttling, concurrency, tokens ---------------------------------------------------------


def test_throttling_is_retried_then_raised_with_retry_after(fake: FakeGraph) -> None:
    fake.deliver(make_raw(1))
    with _connect(fake) as box:
        fake.throttle(2, retry_after=0)
        assert [m.subject for m in box.messages()] == ["Message 1"]
    with _connect(fake, retries=1) as box:
        fake.throttle(5, retry_after=7)
        with pytest.raises(mailsync.RateLimited) as info:
            list(box.messages())
    assert info.value.retry_after == 7


def test_at_most_four_requests_per_mailbox_in_flight(fake: FakeGraph) -> None:
    for n in range(24):
        fake.deliver(make_raw(n))
    fake.latency = 0.01
    with _connect(fake, concurrency=8) as box:  # asking for more than Graph allows
        assert len(list(box.messages())) == 24
    assert 2 <= fake.most_concurrent <= 4

    fake.most_concurrent = 0

    async def main() -> int:
        async with _connect_async(fake) as abox:
            return len([m async for m in abox.messages()])

    assert asyncio.run(main()) == 24
    assert 2 <= fake.most_concurrent <= 4


def test_an_expired_token_is_refreshed_once(fake: FakeGraph) -> None:
    fake.deliver(make_raw(1))
    tokens = iter(["stale", fake.token])
    with _connect(fake, token=lambda: next(tokens)) as box:
        assert [m.subject for m in box.messages()] == ["Message 1"]
    fake.token = "rotated"
    with (
        _connect(fake, token=lambda: "wrong") as box,
        pytest.raises(mailsync.AuthenticationError, match="InvalidAuthenticationToken"),
    ):
        list(box.messages())


def test_a_message_over_the_size_bound_is_refused(fake: FakeGraph) -> None:
    fake.deliver(make_raw(1, extra=20_000))
    with (
        _connect(fake, max_message_size=10_000) as box,
        pytest.raises(mailsync.ProtocolError, match="larger than 10000 bytes"),
    ):
        list(box.messages())


def test_another_users_mailbox(fake: FakeGraph) -> None:
    fake.deliver(make_raw(1), address="bob@contoso.test")
    with mailsync.connect(
        "graph://bob@contoso.test", token=fake.token, transport=fake, state=":memory:"
    ) as box:
        assert [m.subject for m in box.messages()] == ["Message 1"]
    assert any(p.startswith("/v1.0/users/bob@contoso.test/") for _, p in fake.requests)


def test_close_ends_a_watch_at_once(fake: FakeGraph) -> None:
    box = _connect(fake)
    finished = threading.Event()

    def watch() -> None:
        for _ in box.watch(poll_interval=60):
            pass
        finished.set()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not any(p.endswith("/delta") for _, p in fake.requests):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    box.close()
    assert finished.wait(0.5)


# -- sending ---------------------------------------------------------------------------------


def test_send_keeps_bcc_for_graph_and_saves_to_sent_items(fake: FakeGraph) -> None:
    bob = fake.mailbox("bob@contoso.test")
    carol = fake.mailbox("carol@contoso.test")
    message = mailsync.compose(
        from_="alice@contoso.test",
        to="bob@contoso.test",
        bcc="carol@contoso.test",
        subject="Quarterly",
        text="Numbers.",
    )
    with mailsync.sender("graph://me", token=fake.token, transport=fake) as out:
        result = out.send(message)
    assert result.accepted == ("bob@contoso.test", "carol@contoso.test")
    assert result.message_id == message["Message-ID"].strip("<>")
    (received,) = carol.messages.values()
    assert b"Quarterly" in received.mime
    assert b"carol@" not in received.mime.split(b"\r\n\r\n")[0]  # Bcc removed on delivery
    assert len(bob.messages) == 1
    sent = fake.find_folder("sentitems")
    assert [m.folder_id for m in fake.mailbox().messages.values()] == [sent.id]
    # What went over the wire was base64 MIME with Content-Type text/plain.
    assert ("POST", "/v1.0/me/sendMail") in fake.requests


def test_send_refuses_what_graph_cannot_do(fake: FakeGraph) -> None:
    message = mailsync.compose(from_="a@contoso.test", to="b@contoso.test", subject="x", text="y")
    with mailsync.sender("graph://me", token=fake.token, transport=fake) as out:
        with pytest.raises(mailsync.Unsupported, match="notification"):
            out.send(message, notify=["failure"])
        with pytest.raises(mailsync.Unsupported, match="rcpt_to"):
            out.send(message, rcpt_to=["someone@else.test"])


def test_async_sender(fake: FakeGraph) -> None:
    bob = fake.mailbox("bob@contoso.test")

    async def main() -> mailsync.SendResult:
        message = mailsync.compose(
            from_="a@contoso.test", to="bob@contoso.test", subject="Async", text="y"
        )
        async with mailsync.sender_async("graph://me", token=fake.token, transport=fake) as out:
            return await out.send(message)

    assert asyncio.run(main()).ok
    assert len(bob.messages) == 1


def test_delta_links_carry_the_options_of_the_first_request(fake: FakeGraph) -> None:
    fake.deliver(make_raw(1))
    with _connect(fake) as box:
        list(box.sync())
    first = next(p for m, p in fake.requests if p.endswith("/delta"))
    assert first == "/v1.0/me/mailFolders/inbox/messages/delta"
