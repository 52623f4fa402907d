"""DeliveryTracker: recording sends, matching reports to them, and the state rules."""

from __future__ import annotations

import json
import multiprocessing
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mailsync._base import SendResult
from mailsync._message import HeaderMap, Message
from mailsync._reports import DeliveryReport, RecipientReport
from mailsync._state_sqlite import SQLiteStateStore
from mailsync._tracker import DeliveryTracker, TrackedMessage

CORPUS = Path(__file__).parent / "data" / "reports"
T0 = datetime(2024, 4, 2, 12, 0, tzinfo=UTC)
POSTFIX_MID = "171205920112.4242.998877@client.example.com"


def load(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


class Clock:
    """Each call is one minute after the previous one."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(minutes=1)
        return self.now


class DictStore:
    """The least an item store needs; values go through JSON as they would in SQLite."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, str], str] = {}

    def get_item(self, namespace: str, key: str) -> dict[str, Any] | None:
        value = self.data.get((namespace, key))
        return None if value is None else json.loads(value)

    def set_item(self, namespace: str, key: str, value: Mapping[str, Any]) -> None:
        self.data[(namespace, key)] = json.dumps(dict(value))

    def delete_item(self, namespace: str, key: str) -> None:
        self.data.pop((namespace, key), None)

    def items(self, namespace: str) -> Iterator[tuple[str, dict[str, Any]]]:
        for (ns, key), value in sorted(self.data.items()):
            if ns == namespace:
                yield key, json.loads(value)


@pytest.fixture
def store() -> Iterator[SQLiteStateStore]:
    state = SQLiteStateStore(":memory:")
    yield state
    state.close()


@pytest.fixture
def tracker(store: SQLiteStateStore) -> DeliveryTracker:
    return DeliveryTracker(store, clock=Clock())


def sent(
    message_id: str,
    *accepted: str,
    refused: Mapping[str, tuple[int, str]] | None = None,
    envid: str | None = None,
) -> SendResult:
    return SendResult(message_id, tuple(accepted), dict(refused or {}), envid)


def report(
    message_id: str,
    recipient: str,
    action: str,
    *,
    kind: str = "dsn",
    status: str | None = None,
    permanent: bool = False,
) -> DeliveryReport:
    entry = RecipientReport(
        recipient, action, status=status, final_recipient=recipient, permanent=permanent
    )
    return DeliveryReport(kind, original_message_id=message_id, recipients=(entry,))  # type: ignore[arg-type]


def test_a_bounce_marks_the_recipient_failed(tracker: DeliveryTracker) -> None:
    tracker.record(sent(POSTFIX_MID, "bob@example.net"))
    tracked = tracker.feed(load("postfix-failed.eml"))
    assert tracked is not None
    bob = tracked.recipients["bob@example.net"]
    assert (bob.state, bob.status) == ("failed", "5.1.1")
    assert bob.diagnostic is not None
    assert bob.diagnostic.startswith("550 5.1.1 <bob@example.net>")
    assert tracker.status(POSTFIX_MID) == tracked
    assert tracked.failed == ("bob@example.net",)
    assert tracker.pending() == []


def test_the_envid_finds_the_message_before_the_message_id(tracker: DeliveryTracker) -> None:
    tracker.record(
        sent("rewritten-by-a-gateway@mailsync.test", "bob@mailsync.test", envid="env-0042")
    )
    tracked = tracker.feed(load("postfix-relayed-success.eml"))
    assert tracked is not None
    assert tracked.message_id == "rewritten-by-a-gateway@mailsync.test"
    assert tracked.recipients["bob@mailsync.test"].state == "delivered"
    assert tracked.pending == ()  # a relay sends no further news


def test_an_envid_echoed_in_xtext_still_matches(tracker: DeliveryTracker) -> None:
    tracker.record(sent("other@example.com", "nina@example.org", envid="nested-env"))
    tracked = tracker.feed(load("dsn-nested-in-mixed.eml"))  # Original-Envelope-Id: nested+2Denv
    assert tracked is not None
    assert tracked.recipients["nina@example.org"].state == "failed"


def test_recipients_match_by_original_recipient_ignoring_case(tracker: DeliveryTracker) -> None:
    tracker.record(
        sent("lunch-42@example.com", "Carol@Example.NET", "dave@example.org", "erin@example.com")
    )
    tracked = tracker.feed(load("rfc3464-multi-recipient.eml"))
    assert tracked is not None
    states = {address: s.state for address, s in tracked.recipients.items()}
    # Carol's Final-Recipient is an alias target; her Original-Recipient is what we sent to.
    assert states == {
        "Carol@Example.NET": "failed",
        "dave@example.org": "delayed",
        "erin@example.com": "delivered",
    }
    assert tracked.pending == ("dave@example.org",)
    assert [t.message_id for t in tracker.pending()] == ["lunch-42@example.com"]


@pytest.mark.parametrize(
    ("reports", "final"),
    [
        ([("dsn", "delivered"), ("dsn", "delayed")], "delivered"),
        ([("dsn", "failed"), ("dsn", "delayed")], "failed"),
        ([("dsn", "failed"), ("dsn", "relayed")], "failed"),
        ([("dsn", "delayed"), ("dsn", "delivered")], "delivered"),
        ([("dsn", "relayed"), ("bounce", "failed")], "failed"),
        ([("dsn", "relayed"), ("dsn", "delayed")], "delivered"),
        ([("dsn", "relayed")], "delivered"),
        ([("dsn", "expanded")], "delivered"),
        ([("dsn", "delivered"), ("mdn", "displayed")], "displayed"),
        ([("mdn", "displayed"), ("dsn", "delivered")], "displayed"),
        ([("mdn", "deleted")], "delivered"),
        ([("dsn", "something-new")], "sent"),
    ],
)
def test_state_rules(tracker: DeliveryTracker, reports: list[tuple[str, str]], final: str) -> None:
    tracker.record(sent("m-1@example.com", "a@example.net"))
    for kind, action in reports:
        tracker.feed(report("m-1@example.com", "a@example.net", action, kind=kind))
    tracked = tracker.status("m-1@example.com")
    assert tracked is not None
    assert tracked.recipients["a@example.net"].state == final


def test_read_receipts(tracker: DeliveryTracker) -> None:
    tracker.record(sent("199509192301.23456@huge.example.com", "Joe_Recipient@mega.example.com"))
    tracker.record(sent("newsletter-2024-15@example.com", "frida@example.org"))
    displayed = tracker.feed(load("mdn-displayed.eml"))
    deleted = tracker.feed(load("mdn-deleted-auto.eml"))
    assert displayed is not None
    assert deleted is not None
    assert displayed.recipients["Joe_Recipient@mega.example.com"].state == "displayed"
    assert deleted.recipients["frida@example.org"].state == "delivered"


def test_refused_recipients_start_failed(tracker: DeliveryTracker) -> None:
    tracked = tracker.record(
        sent("m-2@example.com", "ok@example.net", refused={"no@example.net": (550, "5.1.1 Nope")}),
        sent_at=T0,
    )
    no = tracked.recipients["no@example.net"]
    assert (no.state, no.status, no.diagnostic) == ("failed", "5.1.1", "550 5.1.1 Nope")
    assert tracked.recipients["ok@example.net"].state == "sent"
    assert tracked.recipients["ok@example.net"].updated_at == T0
    assert tracked.pending == ("ok@example.net",)
    assert tracked.sent_at == T0


def test_recipients_can_be_narrowed_and_duplicates_collapse(tracker: DeliveryTracker) -> None:
    result = sent("m-3@example.com", "a@example.net", "b@example.net")
    tracked = tracker.record(result, recipients=["a@example.net", "A@example.net"])
    assert list(tracked.recipients) == ["a@example.net"]


def test_the_quoted_message_id_is_the_last_resort(tracker: DeliveryTracker) -> None:
    tracker.record(sent("quoted-1@example.com", "a@example.net"))
    entry = RecipientReport("a@example.net", "failed", status="5.0.0")
    quoted = DeliveryReport(
        "bounce",
        original_headers=HeaderMap([("Message-ID", "<quoted-1@example.com>")]),
        recipients=(entry,),
    )
    tracked = tracker.feed(quoted)
    assert tracked is not None
    assert tracked.recipients["a@example.net"].state == "failed"


def test_unrelated_mail_and_unknown_messages_give_none(tracker: DeliveryTracker) -> None:
    assert tracker.feed(load("postfix-failed.eml")) is None  # nothing recorded yet
    tracker.record(sent(POSTFIX_MID, "bob@example.net"))
    assert tracker.feed(load("neg-human-reply.eml")) is None
    assert tracker.feed(b"") is None


def test_a_recipient_we_did_not_send_to_is_ignored(tracker: DeliveryTracker) -> None:
    tracker.record(sent(POSTFIX_MID, "someone@else.example"))
    tracked = tracker.feed(load("postfix-failed.eml"))
    assert tracked is not None
    assert tracked.recipients["someone@else.example"].state == "sent"


def test_status_takes_angle_brackets_and_forget_drops_everything(
    tracker: DeliveryTracker,
) -> None:
    tracker.record(sent("<m-4@example.com>", "bob@mailsync.test", envid="env-0042"))
    assert tracker.status("<m-4@example.com>") is not None
    assert tracker.status("m-4@example.com") is not None
    tracker.forget("m-4@example.com")
    assert tracker.status("m-4@example.com") is None
    assert tracker.feed(load("postfix-relayed-success.eml")) is None  # the envid went too


def test_state_is_kept_in_the_store(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    first = SQLiteStateStore(path)
    DeliveryTracker(first).record(sent(POSTFIX_MID, "bob@example.net", envid="e-1"))
    first.close()
    second = SQLiteStateStore(path)
    try:
        tracker = DeliveryTracker(second)
        assert tracker.feed(load("postfix-failed.eml")) is not None
        tracked = tracker.status(POSTFIX_MID)
        assert tracked is not None
        assert tracked.envid == "e-1"
        assert tracked.recipients["bob@example.net"].state == "failed"
    finally:
        second.close()


def test_any_item_store_will_do() -> None:
    clock = Clock()
    tracker = DeliveryTracker(DictStore(), clock=clock)
    tracker.record(sent(POSTFIX_MID, "bob@example.net"), sent_at=T0)
    tracked = tracker.feed(Message.from_bytes(load("postfix-failed.eml")))
    assert tracked is not None
    assert tracked.recipients["bob@example.net"].updated_at == clock.now
    assert tracked.sent_at == T0


def test_tracked_messages_are_read_only(tracker: DeliveryTracker) -> None:
    tracked = tracker.record(sent("m-5@example.com", "a@example.net"))
    with pytest.raises(TypeError):
        tracked.recipients["b@example.net"] = tracked.recipients["a@example.net"]  # type: ignore[index]


class FakeRetriever:
    def __init__(self, messages: list[Message]) -> None:
        self.messages = messages
        self.calls: list[tuple[str, Any]] = []

    def sync(self, folder: str = "INBOX") -> Iterator[Message]:
        self.calls.append(("sync", folder))
        yield from self.messages

    def watch(self, folder: str = "INBOX", *, poll_interval: float = 60.0) -> Iterator[Message]:
        self.calls.append(("watch", (folder, poll_interval)))
        yield from self.messages


def inbox() -> list[Message]:
    names = ["neg-newsletter.eml", "postfix-failed.eml", "qmail-failed.eml", "postfix-delayed.eml"]
    return [Message.from_bytes(load(name)) for name in names]


def record_two(tracker: DeliveryTracker) -> None:
    tracker.record(sent(POSTFIX_MID, "bob@example.net"))
    tracker.record(sent("invoice-2024-117@example.com", "grace@slow.example.org"))


def states(updates: list[TrackedMessage]) -> list[tuple[str, str]]:
    return [(t.message_id, next(iter(t.recipients.values())).state) for t in updates]


def test_scan_feeds_what_sync_yields(tracker: DeliveryTracker) -> None:
    record_two(tracker)
    retriever = FakeRetriever(inbox())
    updates = tracker.scan(retriever, "Bounces")
    assert retriever.calls == [("sync", "Bounces")]
    assert states(updates) == [
        (POSTFIX_MID, "failed"),
        ("invoice-2024-117@example.com", "delayed"),
    ]


def test_watch_yields_each_update(tracker: DeliveryTracker) -> None:
    record_two(tracker)
    retriever = FakeRetriever(inbox())
    updates = list(tracker.watch(retriever, poll_interval=5.0))
    assert retriever.calls == [("watch", ("INBOX", 5.0))]
    assert states(updates) == [
        (POSTFIX_MID, "failed"),
        ("invoice-2024-117@example.com", "delayed"),
    ]


def test_clock_defaults_to_aware_utc(store: SQLiteStateStore) -> None:
    tracked = DeliveryTracker(store).record(sent("m-6@example.com", "a@example.net"))
    assert tracked.sent_at.tzinfo is not None
    assert abs(tracked.sent_at - datetime.now(UTC)) < timedelta(minutes=1)


# -- several processes -------------------------------------------------------------------

FEEDERS = 4
SHARED_MESSAGES = 20


def shared_recipient(worker: int) -> str:
    return f"rcpt{worker}@example.net"


def _slow_clock() -> datetime:
    # The tracker reads the clock while applying a report, between reading the record and
    # writing it back: a slow moment there (a busy machine, a GC pause) is when another
    # process's update can be overwritten. Make that moment long enough to happen every time.
    time.sleep(0.01)
    return datetime.now(UTC)


def _feed_one_recipient(path: str, worker: int, step: Any) -> None:
    """Child process: feed a report about ``worker``'s recipient of every shared message."""
    store = SQLiteStateStore(path)
    tracker = DeliveryTracker(store, clock=_slow_clock)
    for number in range(SHARED_MESSAGES):
        step.wait(60)  # all processes on the same message at once
        tracker.feed(report(f"shared-{number}@example.com", shared_recipient(worker), "delivered"))
    store.close()


def test_processes_feeding_one_message_lose_no_report(tmp_path: Path) -> None:
    # Each process applies a different recipient's report to the same messages at the same
    # time. A read-modify-write outside one transaction lets a process write back a record it
    # read before another process's update, and that update is lost.
    path = str(tmp_path / "state.sqlite3")
    store = SQLiteStateStore(path)
    tracker = DeliveryTracker(store)
    everyone = [shared_recipient(worker) for worker in range(FEEDERS)]
    for number in range(SHARED_MESSAGES):
        tracker.record(sent(f"shared-{number}@example.com", *everyone))
    ctx = multiprocessing.get_context("spawn")
    step = ctx.Barrier(FEEDERS)
    procs = [
        ctx.Process(target=_feed_one_recipient, args=(path, worker, step))
        for worker in range(FEEDERS)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    lost = []
    for number in range(SHARED_MESSAGES):
        tracked = tracker.status(f"shared-{number}@example.com")
        assert tracked is not None
        lost += [(number, a) for a, s in tracked.recipients.items() if s.state != "delivered"]
    store.close()
    assert lost == []


def test_update_item_is_used_and_writes_only_on_change(store: SQLiteStateStore) -> None:
    calls: list[str] = []
    original = store.update_item

    def spy(namespace: str, key: str, update: Any) -> dict[str, Any] | None:
        calls.append(key)
        return original(namespace, key, update)

    store.update_item = spy  # type: ignore[method-assign]
    tracker = DeliveryTracker(store, clock=Clock())
    tracker.record(sent("m-7@example.com", "a@example.net"))
    first = tracker.feed(report("m-7@example.com", "a@example.net", "delivered"))
    again = tracker.feed(report("m-7@example.com", "a@example.net", "delayed"))  # no change
    assert calls == ["m-7@example.com", "m-7@example.com"]
    assert first is not None
    assert again == first
    assert tracker.feed(report("unknown@example.com", "a@example.net", "failed")) is None


# -- hard and soft bounces ------------------------------------------------------------------


def test_a_bounce_records_its_reason_and_whether_it_is_hard(tracker: DeliveryTracker) -> None:
    tracker.record(sent(POSTFIX_MID, "bob@example.net"))
    tracked = tracker.feed(load("postfix-failed.eml"))
    assert tracked is not None
    bob = tracked.recipients["bob@example.net"]
    assert (bob.reason, bob.permanent) == ("user_unknown", True)
    assert tracked.bounced == ("bob@example.net",)


@pytest.mark.parametrize(
    ("later", "final"),
    [
        (("dsn", "delivered"), "failed"),
        (("dsn", "relayed"), "failed"),
        (("mdn", "displayed"), "failed"),
        (("dsn", "delayed"), "failed"),
    ],
)
def test_a_hard_bounce_is_final(
    tracker: DeliveryTracker, later: tuple[str, str], final: str
) -> None:
    tracker.record(sent("m-9@example.com", "a@example.net"))
    tracker.feed(report("m-9@example.com", "a@example.net", "failed", permanent=True))
    kind, action = later
    tracker.feed(report("m-9@example.com", "a@example.net", action, kind=kind))
    tracked = tracker.status("m-9@example.com")
    assert tracked is not None
    assert tracked.recipients["a@example.net"].state == final
    assert tracked.recipients["a@example.net"].permanent


def test_a_soft_bounce_may_still_be_followed_by_a_success(tracker: DeliveryTracker) -> None:
    tracker.record(sent("m-10@example.com", "a@example.net"))
    soft = tracker.feed(report("m-10@example.com", "a@example.net", "failed", status="4.2.2"))
    assert soft is not None
    assert (soft.recipients["a@example.net"].state, soft.bounced) == ("failed", ())
    later = tracker.feed(report("m-10@example.com", "a@example.net", "delivered"))
    assert later is not None
    assert later.recipients["a@example.net"].state == "delivered"
    assert not later.recipients["a@example.net"].permanent


@pytest.mark.parametrize(
    ("reply", "reason", "permanent"),
    [
        (
            (550, "5.1.1 <no@example.net>: Recipient address rejected: User unknown"),
            "user_unknown",
            True,
        ),
        ((552, "5.2.2 Mailbox full"), "mailbox_full", False),
        ((554, "5.7.1 Client host blocked using zen.example.test"), "blocked", False),
        ((450, "4.2.0 Greylisted, try again later"), "on_hold", False),
        ((550, "No such user here"), "user_unknown", True),
    ],
)
def test_refused_recipients_get_a_reason(
    tracker: DeliveryTracker, reply: tuple[int, str], reason: str, permanent: bool
) -> None:
    tracked = tracker.record(sent("m-11@example.com", refused={"no@example.net": reply}))
    no = tracked.recipients["no@example.net"]
    assert (no.state, no.reason, no.permanent) == ("failed", reason, permanent)


def test_records_written_before_reasons_existed_still_load(store: SQLiteStateStore) -> None:
    store.set_item(
        "mailsync.delivery",
        "old@example.com",
        {
            "message_id": "old@example.com",
            "envid": None,
            "sent_at": T0.isoformat(),
            "recipients": {"a@example.net": {"state": "failed", "status": "5.1.1"}},
        },
    )
    tracked = DeliveryTracker(store).status("old@example.com")
    assert tracked is not None
    assert (tracked.recipients["a@example.net"].reason, tracked.bounced) == ("unknown", ())
