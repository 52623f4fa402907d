"""The JMAP backend against the real Cyrus, beyond the contract: session discovery, mailbox
paths and roles, a message in two mailboxes, keywords, paging while the caller deletes,
Email/changes (paged, moves, a forced ``cannotCalculateChanges``), push (through an event
source in front of Cyrus, tests/jmap/push.py) and the polling fallback, and sending through
EmailSubmission to the test Postfix.

Seeding and checking use imaplib, LMTP and raw httpx only (tests/jmap/conftest.py)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import mailsync
from mailsync.protocol import jmap as jmap_protocol
from tests.contract import make_raw
from tests.cyrus import CyrusServer
from tests.jmap.conftest import JMAPTarget, jmap_call, jmap_target
from tests.jmap.push import EventSourceProxy
from tests.servers import Account, MailServers, wait_for


@pytest.fixture
def target(cyrus: CyrusServer, cyrus_account: Account) -> JMAPTarget:
    return jmap_target(cyrus, cyrus_account)


def connect(target: JMAPTarget, state: Any = ":memory:", **extra: Any) -> Any:
    return mailsync.connect(target.url, state=state, **{**target.options, **extra})


@pytest.fixture
def box(target: JMAPTarget) -> Iterator[Any]:
    retriever = connect(target)
    try:
        yield retriever
    finally:
        retriever.close()


def subjects(messages: Any) -> list[str]:
    return [m.subject for m in messages]


# -- session and folders -----------------------------------------------------------------------


def test_the_session_is_found_by_well_known_path_or_base_url(
    cyrus: CyrusServer, cyrus_account: Account, target: JMAPTarget
) -> None:
    cyrus.deliver(cyrus_account, make_raw(1))
    by_path = jmap_target(cyrus, cyrus_account)
    with mailsync.connect(by_path.url + "/jmap", **by_path.options, state=":memory:") as box:
        assert subjects(box.messages()) == ["Message 1"]
    options = {**target.options, "base_url": cyrus.jmap_session_url}
    with mailsync.connect("jmap://" + cyrus_account.user + "@", **options, state=":memory:") as box:
        assert subjects(box.messages()) == ["Message 1"]
    with (
        mailsync.connect(target.url + "/no-jmap-here", **target.options, state=":memory:") as box,
        pytest.raises(mailsync.ConfigError, match="no JMAP session"),
    ):
        box.folders()


def test_a_wrong_password_is_an_authentication_error(target: JMAPTarget) -> None:
    with (
        connect(target, password="wrong") as box,
        pytest.raises(mailsync.AuthenticationError, match="401"),
    ):
        box.folders()


def test_folders_are_paths_with_roles(cyrus: CyrusServer, cyrus_account: Account, box: Any) -> None:
    cyrus.create_folder(cyrus_account, "Projects/2026")
    cyrus.create_folder(cyrus_account, "INBOX/Receipts")
    cyrus.append(cyrus_account, make_raw(1), folder="INBOX/Receipts")
    folders = {f.name: f for f in box.folders()}
    assert next(iter(folders)) == "INBOX"
    assert {folders[name].special_use for name in ("Sent", "Trash", "Drafts", "Junk")} == {
        "\\Sent",
        "\\Trash",
        "\\Drafts",
        "\\Junk",
    }
    assert folders["Archive"].special_use == "\\Archive"
    assert "\\HasChildren" in folders["Projects"].flags
    assert "Projects/2026" in folders
    assert subjects(box.messages("inbox/Receipts")) == ["Message 1"]


# -- messages ----------------------------------------------------------------------------------


def test_a_message_in_two_mailboxes_has_both_as_labels(
    cyrus: CyrusServer, cyrus_account: Account, box: Any
) -> None:
    # Cyrus identifies an Email by its content: an IMAP COPY is the same Email in two places.
    cyrus.create_folder(cyrus_account, "Other")
    cyrus.create_folder(cyrus_account, "Elsewhere")
    cyrus.append(cyrus_account, make_raw(1))
    with cyrus.imap(cyrus_account) as conn:
        conn.select("INBOX")
        assert conn.copy("1", "Other")[0] == "OK"
    (message,) = box.messages()
    assert message.labels == {"INBOX", "Other"}
    assert box.get(message.id).folder == "INBOX"
    (from_other,) = box.messages("Other")
    box.move(from_other, "Elsewhere")  # out of Other, into Elsewhere; INBOX keeps it
    assert list(box.messages("Other")) == []
    (again,) = box.messages()
    assert again.labels == {"INBOX", "Elsewhere"}
    assert again.id == message.id


def test_keywords_are_flags(cyrus: CyrusServer, cyrus_account: Account, box: Any) -> None:
    cyrus.append(cyrus_account, make_raw(1), flags=("$Forwarded",))
    (message,) = box.messages()
    assert "$forwarded" in message.flags
    box.set_flags(message, add=["\\Answered", "\\Seen", "Work"], remove=["$Forwarded"])
    (flags,) = cyrus.imap_flags(cyrus_account).values()
    assert {"\\Answered", "\\Seen", "work"} <= {f.lower() if f[0] != "\\" else f for f in flags}
    assert not {f.lower() for f in flags} & {"$forwarded"}
    (after,) = box.messages(query=mailsync.Q(seen=True))
    assert {"\\Answered", "\\Seen", "work"} <= after.flags
    with pytest.raises(mailsync.Unsupported, match="Deleted"):
        box.set_flags(message, add=["\\Deleted"])
    with pytest.raises(mailsync.ConfigError, match="keyword"):
        box.set_flags(message, add=["two words"])


def test_delete_destroys_what_is_in_the_trash_already(
    cyrus: CyrusServer, cyrus_account: Account, box: Any
) -> None:
    cyrus.append(cyrus_account, make_raw(1))
    (message,) = box.messages()
    box.delete(message)
    assert subjects(box.messages("Trash")) == ["Message 1"]
    box.delete(message)  # in the Trash: for good
    assert list(box.messages("Trash")) == []
    with pytest.raises(mailsync.MessageNotFound):
        box.get(message.id)
    with pytest.raises(mailsync.MessageNotFound):
        box.delete(message)


@pytest.mark.parametrize("which", ["every", "last of each page"])
def test_paging_survives_deleting_while_iterating(
    cyrus: CyrusServer,
    cyrus_account: Account,
    box: Any,
    monkeypatch: pytest.MonkeyPatch,
    which: str,
) -> None:
    # Anchors are the last message of each page: deleting it answers anchorNotFound.
    monkeypatch.setattr(jmap_protocol, "_PAGE", 3)
    cyrus.append_many(cyrus_account, [make_raw(n) for n in range(8)])
    seen = []
    for index, message in enumerate(box.messages()):
        seen.append(message.subject)
        if which == "every" or index % 3 == 2:
            box.delete(message, permanent=True)
    assert seen == [f"Message {n}" for n in range(8)]


def test_a_message_over_the_size_bound_is_refused(
    cyrus: CyrusServer, cyrus_account: Account, target: JMAPTarget
) -> None:
    cyrus.append(cyrus_account, make_raw(1, extra=20_000))
    with (
        connect(target, max_message_size=10_000) as box,
        pytest.raises(mailsync.ProtocolError, match="larger than 10000 bytes"),
    ):
        list(box.messages())


# -- sync --------------------------------------------------------------------------------------


def test_sync_follows_email_changes_page_by_page(
    cyrus: CyrusServer, cyrus_account: Account, box: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jmap_protocol, "_CHANGES", 2)  # several Email/changes pages
    cyrus.create_folder(cyrus_account, "Other")
    cyrus.append(cyrus_account, make_raw(0), folder="Other")
    assert list(box.sync()) == []
    for n in range(1, 6):
        cyrus.deliver(cyrus_account, make_raw(n))
    assert subjects(box.sync()) == [f"Message {n}" for n in range(1, 6)]
    first = next(iter(box.messages()))
    box.set_flags(first, add=["\\Flagged"])  # an update, not new mail
    with cyrus.imap(cyrus_account) as conn:  # moved in: new to INBOX
        conn.select("Other")
        assert conn.uid("MOVE", "1:*", "INBOX")[0] == "OK"
    assert subjects(box.sync()) == ["Message 0"]
    assert list(box.sync()) == []


def test_an_interrupted_page_of_changes_comes_again(
    cyrus: CyrusServer, cyrus_account: Account, box: Any
) -> None:
    assert list(box.sync()) == []
    for n in range(3):
        cyrus.deliver(cyrus_account, make_raw(n))
    run = box.sync()
    assert [next(run).subject, next(run).subject] == ["Message 0", "Message 1"]
    run.close()  # Message 1 was being handled: it comes again
    assert subjects(box.sync()) == ["Message 1", "Message 2"]


def test_cannot_calculate_changes_resyncs_without_repeating(
    cyrus: CyrusServer, cyrus_account: Account, box: Any
) -> None:
    for n in range(3):
        cyrus.deliver(cyrus_account, make_raw(n))
    assert len(list(box.sync())) == 3
    ((_, before),) = jmap_call(cyrus, cyrus_account, ("Email/get", {"ids": []}))
    with cyrus.imap(cyrus_account) as conn:
        conn.select("INBOX")
        conn.store("1", "+FLAGS", "\\Deleted")
        conn.expunge()
    cyrus.deliver(cyrus_account, make_raw(9))
    cyrus.expire_expunged(cyrus_account)
    ((kind, error),) = jmap_call(
        cyrus, cyrus_account, ("Email/changes", {"sinceState": before["state"]})
    )
    assert (kind, error["type"]) == ("error", "cannotCalculateChanges")
    assert subjects(box.sync()) == ["Message 9"]
    assert list(box.sync()) == []
    cyrus.deliver(cyrus_account, make_raw(10))
    assert subjects(box.sync()) == ["Message 10"]


# -- push --------------------------------------------------------------------------------------


@pytest.fixture
def pushing(cyrus: CyrusServer) -> Iterator[EventSourceProxy]:
    with EventSourceProxy(cyrus.host, cyrus.http_port) as proxy:
        yield proxy


def _via(proxy: EventSourceProxy, account: Account, target: JMAPTarget) -> JMAPTarget:
    port = proxy.url.rsplit(":", 1)[1]
    return JMAPTarget(f"jmap://{account.user}@127.0.0.1:{port}", target.options)


def _watch_in_thread(box: Any) -> tuple[list[tuple[str, float]], threading.Thread, list[Any]]:
    got: list[tuple[str, float]] = []
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            for message in box.watch(poll_interval=120):
                got.append((message.subject, time.monotonic()))
        except BaseException as exc:  # surfaced by the test
            errors.append(exc)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    return got, thread, errors


def test_watch_is_woken_by_an_lmtp_delivery_at_once(
    cyrus: CyrusServer,
    cyrus_account: Account,
    target: JMAPTarget,
    pushing: EventSourceProxy,
) -> None:
    # poll_interval=120: only a pushed event can bring the message within the bound.
    box = connect(_via(pushing, cyrus_account, target))
    got, thread, errors = _watch_in_thread(box)
    try:
        pushing.wait_for_stream()
        cyrus.deliver(cyrus_account, make_raw(1))
        delivered = time.monotonic()
        wait_for(lambda: got or errors, timeout=30)
        assert not errors, errors
        assert got[0][0] == "Message 1"
        assert got[0][1] - delivered < 2.0
        pushing.wait_for_stream()  # waiting again, on a new stream
        cyrus.deliver(cyrus_account, make_raw(2))
        wait_for(lambda: len(got) == 2 or errors, timeout=30)
        assert [subject for subject, _ in got] == ["Message 1", "Message 2"]
    finally:
        started = time.monotonic()
        box.close()
        thread.join(10)
    assert not thread.is_alive()
    assert time.monotonic() - started < 0.5 + 0.5  # close() cut the stream (join overhead)
    assert not errors, errors


def test_close_ends_a_watch_waiting_on_the_event_stream(
    cyrus_account: Account, target: JMAPTarget, pushing: EventSourceProxy
) -> None:
    box = connect(_via(pushing, cyrus_account, target))
    _, thread, errors = _watch_in_thread(box)
    pushing.wait_for_stream()
    started = time.monotonic()
    box.close()
    thread.join(5)
    assert time.monotonic() - started < 0.5
    assert not thread.is_alive()
    assert not errors, errors
    wait_for(lambda: pushing.streams == 0, timeout=10)


def test_aclose_ends_an_async_watch_on_the_event_stream(
    cyrus: CyrusServer, cyrus_account: Account, target: JMAPTarget, pushing: EventSourceProxy
) -> None:
    via = _via(pushing, cyrus_account, target)

    async def main() -> tuple[list[str], float]:
        box = mailsync.connect_async(via.url, state=":memory:", **via.options)
        got: list[str] = []

        async def consume() -> None:
            async for message in box.watch(poll_interval=120):
                got.append(message.subject)

        task = asyncio.ensure_future(consume())
        while pushing.streams == 0:
            await asyncio.sleep(0.01)
        await asyncio.to_thread(cyrus.deliver, cyrus_account, make_raw(1))
        async with asyncio.timeout(30):
            while not got:
                await asyncio.sleep(0.01)
        while pushing.streams == 0:
            await asyncio.sleep(0.01)
        started = time.monotonic()
        await box.aclose()
        await asyncio.wait_for(task, 5)
        return got, time.monotonic() - started

    got, took = asyncio.run(main())
    assert got == ["Message 1"]
    assert took < 0.5


def test_an_event_source_that_answers_no_content_is_polled(
    cyrus: CyrusServer, cyrus_account: Account, target: JMAPTarget
) -> None:
    # Debian's Cyrus names an eventSourceUrl but answers 204: watch() polls instead.
    box = connect(target)
    got: list[str] = []
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            for message in box.watch(poll_interval=0.2):
                got.append(message.subject)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    try:
        wait_for(lambda: box.api._push is False or errors, timeout=20)
        cyrus.deliver(cyrus_account, make_raw(1))
        wait_for(lambda: got or errors, timeout=20)
    finally:
        box.close()
        thread.join(10)
    assert got == ["Message 1"]
    assert not errors
    assert box.api._push is False


def test_a_wait_on_the_event_stream_ends_at_its_deadline(
    cyrus_account: Account, target: JMAPTarget, pushing: EventSourceProxy
) -> None:
    # poll_interval bounds a wait on a quiet stream too (a safety net under push).
    box = connect(_via(pushing, cyrus_account, target))
    try:
        list(box.sync())
        started = time.monotonic()
        box._wait_for_change("INBOX", 0.5)
        assert 0.4 < time.monotonic() - started < 10
        assert pushing.opened == 1
    finally:
        box.close()


# -- sending -----------------------------------------------------------------------------------


@pytest.fixture
def sender_target(
    cyrus: CyrusServer, cyrus_account: Account, mail_servers: MailServers
) -> JMAPTarget:
    assert cyrus.smtp_relay == (mail_servers.host, mail_servers.smtp_port)
    return jmap_target(cyrus, cyrus_account)


def test_send_through_email_submission_arrives_and_is_kept_in_sent(
    cyrus: CyrusServer,
    cyrus_account: Account,
    sender_target: JMAPTarget,
    mail_servers: MailServers,
    account: Account,
    other_account: Account,
) -> None:
    message = mailsync.compose(
        from_=cyrus_account.email,
        to=account.email,
        bcc=other_account.email,
        subject="Over JMAP",
        text="Sent through EmailSubmission.",
    )
    with mailsync.sender(sender_target.url, **sender_target.options) as out:
        result = out.send(message, notify=["failure"], envid="jmap-envid-1")
    assert result.ok
    assert result.accepted == (account.email, other_account.email)
    assert result.envid == "jmap-envid-1"
    assert result.saved_to == "Sent"
    assert result.message_id == message["Message-ID"].strip("<>")
    (arrived,) = wait_for(lambda: mail_servers.parsed_messages(account), timeout=30)
    assert arrived["Subject"] == "Over JMAP"
    (hidden,) = wait_for(lambda: mail_servers.parsed_messages(other_account), timeout=30)
    assert hidden["Bcc"] is None
    assert hidden["Subject"] == "Over JMAP"
    # Kept in Sent, not a draft any more; Drafts is empty again.
    (kept,) = cyrus.imap_messages(cyrus_account, "Sent")
    assert "\\Draft" not in kept[1]
    parsed = email.message_from_bytes(kept[2], policy=email.policy.default)
    assert parsed["Subject"] == "Over JMAP"
    assert cyrus.imap_uids(cyrus_account, "Drafts") == []


def test_a_refused_recipient_is_reported_and_leaves_no_draft(
    cyrus: CyrusServer, cyrus_account: Account, sender_target: JMAPTarget
) -> None:
    message = mailsync.compose(
        from_=cyrus_account.email, to="someone@nowhere.invalid", subject="Lost", text="x"
    )
    with (
        mailsync.sender(sender_target.url, **sender_target.options) as out,
        pytest.raises(mailsync.RecipientsRefused) as info,
    ):
        out.send(message)
    assert list(info.value.refused) == ["someone@nowhere.invalid"]
    code, text = info.value.refused["someone@nowhere.invalid"]
    assert code == 550
    assert "Relay access denied" in text
    assert cyrus.imap_uids(cyrus_account, "Drafts") == []
    assert cyrus.imap_uids(cyrus_account, "Sent") == []


def test_async_sender(
    cyrus_account: Account,
    sender_target: JMAPTarget,
    mail_servers: MailServers,
    account: Account,
) -> None:
    async def main() -> mailsync.SendResult:
        message = mailsync.compose(
            from_=cyrus_account.email, to=account.email, subject="Async JMAP", text="y"
        )
        async with mailsync.sender_async(sender_target.url, **sender_target.options) as out:
            return await out.send(message)

    assert asyncio.run(main()).accepted == (account.email,)
    (arrived,) = wait_for(lambda: mail_servers.parsed_messages(account), timeout=30)
    assert arrived["Subject"] == "Async JMAP"
