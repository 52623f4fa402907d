"""The behaviour every Retriever backend must share, as abstract pytest classes.

A backend's test module subclasses :class:`RetrieverContract` (sync) or
:class:`AsyncRetrieverContract` (async) and supplies three fixtures:

- ``make_retriever``: a factory ``make_retriever(state, **options) -> Retriever |
  AsyncRetriever`` for ONE fresh, empty account (the same account on every call, so two
  instances can share state); ``options`` are passed to ``connect`` (``max_message_size``);
- ``seed``: ``seed(raw: bytes, folder="INBOX", flags=()) -> None`` deposits a message WITHOUT
  mailsync (imaplib APPEND, LMTP, writing a file);
- ``make_folder``: ``make_folder(name) -> None`` creates a folder without mailsync (or skips).

Class attributes tune what the backend promises: ``exact_bytes`` (raw comes back byte-exact),
``exact_size``, ``watch_timeout`` (how long new mail may take to show in ``watch()``). Others
state what the server behind the backend does where servers differ acceptably, so each is
asserted rather than skipped: ``nul_byte`` (what a NUL byte reads back as, None where the
server refuses such a message: the seed raises :class:`SeedRefused`), ``header_8bit_byte``
(what each raw 8-bit byte in a header field reads back as, None where it is kept) and
``implicit_parent_selectable`` (whether creating ``Parent/Child`` makes ``Parent`` a folder)
and ``identical_append_merges`` (whether appending the very bytes of a message the folder
holds gives back that message instead of a second one: JMAP servers that identify an Email by
its content, such as Cyrus, answer ``alreadyExists``).

The async contract runs every same test through :class:`SyncProxy`, which drives the async
backend on a dedicated event-loop thread, so both APIs are held to identical assertions.
"""

from __future__ import annotations

import asyncio
import imaplib
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any

import pytest

import mailsync
from mailsync import Q

if TYPE_CHECKING:
    from tests.cyrus import CyrusServer
    from tests.servers import Account, MailboxClients

Seed = Callable[..., None]


class SeedRefused(Exception):
    """The store refused a message a test tried to deposit (a seed raises it)."""


def imap_seed(servers: MailboxClients, account: Account) -> Seed:
    """``seed(raw, folder="INBOX", flags=())`` by stdlib imaplib APPEND (never mailsync); a
    message the server refuses raises :class:`SeedRefused`."""

    def deposit(raw: bytes, folder: str = "INBOX", flags: Iterable[str] = ()) -> None:
        try:
            servers.append(account, raw, folder=folder, flags=flags)
        except imaplib.IMAP4.error as error:
            raise SeedRefused(str(error)) from error

    return deposit


def make_raw(
    n: int,
    *,
    subject: str | None = None,
    sender: str = "Alice Example <alice@example.test>",
    to: str = "Bob <bob@example.test>",
    body: str | None = None,
    date: datetime | None = None,
    extra: int = 0,
) -> bytes:
    """A small, valid RFC 5322 message with CRLF line endings."""
    when = date or datetime(2026, 1, 1, 12, 0, tzinfo=UTC) + timedelta(hours=n)
    text = body if body is not None else f"Body of message {n}.\r\n" + ("x" * extra)
    lines = [
        f"From: {sender}",
        f"To: {to}",
        f"Subject: {subject if subject is not None else f'Message {n}'}",
        f"Date: {format_datetime(when)}",
        f"Message-ID: <contract-{n}-{time.monotonic_ns()}@example.test>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "",
        text,
    ]
    return "\r\n".join(lines).encode()


def norm(raw: bytes) -> bytes:
    """Line endings made uniform, for backends that store LF (mbox)."""
    return raw.replace(b"\r\n", b"\n").rstrip(b"\n")


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0, interval: float = 0.05) -> None:
    """Poll ``predicate`` until it is true, failing the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


class RetrieverContract:
    """Tests every sync Retriever must pass. Subclasses provide the fixtures above."""

    exact_bytes = True
    exact_size = True
    watch_timeout = 20.0
    nul_byte: bytes | None = b"\0"
    header_8bit_byte: bytes | None = None
    implicit_parent_selectable = False
    identical_append_merges = False

    # -- fixtures ------------------------------------------------------------------------------

    @pytest.fixture
    def state(self) -> mailsync.StateStore:
        return mailsync.SQLiteStateStore(":memory:")

    @pytest.fixture
    def box(self, make_retriever: Callable[..., Any], state: mailsync.StateStore) -> Iterator[Any]:
        retriever = make_retriever(state)
        try:
            yield retriever
        finally:
            retriever.close()

    def _connect(self, make_retriever: Callable[..., Any], state: Any, **options: Any) -> Any:
        """A retriever from the fixture, with ``options``: one the sync API can drive."""
        return make_retriever(state, **options)

    def _needs(self, box: Any, capability: str) -> None:
        if capability not in box.capabilities:
            pytest.skip(f"{type(box).__name__} does not offer {capability!r}")

    def _seed_many(self, seed: Seed, count: int, **kwargs: Any) -> list[bytes]:
        raws = [make_raw(i, **kwargs) for i in range(count)]
        for raw in raws:
            seed(raw)
        return raws

    def _same(self, got: bytes, expected: bytes) -> bool:
        return got == expected if self.exact_bytes else norm(got) == norm(expected)

    # -- reading -------------------------------------------------------------------------------

    def test_capabilities_are_known_names(self, box: Any) -> None:
        assert isinstance(box.capabilities, frozenset)
        assert box.capabilities <= {
            "folders",
            "flags",
            "move",
            "delete",
            "append",
            "search",
            "idle",
            "labels",
            "threads",
        }

    def test_folders_include_inbox(self, box: Any) -> None:
        names = [f.name.upper() for f in box.folders()]
        assert "INBOX" in names
        assert all(isinstance(f, mailsync.Folder) for f in box.folders())

    def test_empty_folder_has_no_messages(self, box: Any) -> None:
        assert list(box.messages()) == []

    def test_messages_in_arrival_order_with_exact_bytes(self, box: Any, seed: Seed) -> None:
        raws = self._seed_many(seed, 3)
        got = list(box.messages())
        assert [m.subject for m in got] == ["Message 0", "Message 1", "Message 2"]
        for message, raw in zip(got, raws, strict=True):
            assert self._same(message.raw, raw)
            assert message.folder.upper() == "INBOX"
            assert isinstance(message.id, str)
            assert message.id
        assert len({m.id for m in got}) == 3

    def test_lists_for_notebooks(self, box: Any, seed: Seed) -> None:
        """messages().collect(), sync().collect(), progress= and FolderList: from the base
        class, whatever the backend."""
        raws = self._seed_many(seed, 3)
        listing = box.messages(progress=True).collect()
        assert isinstance(listing, mailsync.MessageList)
        assert all(self._same(m.raw, r) for m, r in zip(listing, raws, strict=True))
        assert isinstance(box.folders(), mailsync.FolderList)
        assert len(box.sync(progress=True).collect()) == 3
        assert box.sync().collect() == []

    def test_inbox_name_is_case_insensitive(self, box: Any, seed: Seed) -> None:
        self._seed_many(seed, 1)
        assert [m.subject for m in box.messages("inbox")] == ["Message 0"]

    def test_decoded_fields(self, box: Any, seed: Seed) -> None:
        seed(make_raw(7, subject="=?utf-8?q?Gr=C3=BC=C3=9Fe?=", body="Hallo Welt\r\n"))
        (message,) = list(box.messages())
        assert message.subject == "Grüße"
        assert message.from_ == mailsync.Address("Alice Example", "alice@example.test")
        assert message.to == (mailsync.Address("Bob", "bob@example.test"),)
        assert message.date == datetime(2026, 1, 1, 19, 0, tzinfo=UTC)
        assert message.text == "Hallo Welt\n"
        assert message.message_id is not None
        assert message.message_id.startswith("contract-7-")

    def test_size(self, box: Any, seed: Seed) -> None:
        raw = make_raw(1, extra=5000)
        seed(raw)
        (message,) = list(box.messages())
        if self.exact_size:
            assert message.size == len(raw)
        else:
            assert abs(message.size - len(raw)) < 200

    def test_headers_only(self, box: Any, seed: Seed) -> None:
        raw = make_raw(1, body="SECRET-BODY-MARKER\r\n", extra=3000)
        seed(raw)
        (message,) = list(box.messages(headers_only=True))
        assert message.headers_only
        assert b"SECRET-BODY-MARKER" not in message.raw
        assert message.subject == "Message 1"
        assert message.size > len(message.raw)

    def test_limit(self, box: Any, seed: Seed) -> None:
        self._seed_many(seed, 5)
        assert [m.subject for m in box.messages(limit=2)] == ["Message 0", "Message 1"]

    def test_get_round_trip(self, box: Any, seed: Seed) -> None:
        raws = self._seed_many(seed, 2)
        listed = list(box.messages())
        again = box.get(listed[1].id)
        assert again.id == listed[1].id
        assert self._same(again.raw, raws[1])

    def test_get_unknown_id(self, box: Any, seed: Seed) -> None:
        self._seed_many(seed, 1)
        (message,) = list(box.messages())
        with pytest.raises(mailsync.MessageNotFound):
            box.get(message.id + "0")
        with pytest.raises(mailsync.MessageNotFound):
            box.get("no-such-message")

    def test_missing_folder(self, box: Any) -> None:
        self._needs(box, "folders")
        with pytest.raises(mailsync.FolderNotFound):
            list(box.messages("No such folder"))

    def test_query(self, box: Any, seed: Seed) -> None:
        seed(make_raw(0, subject="Invoice 42", sender="Carol <carol@example.test>"))
        seed(make_raw(1, subject="Lunch?", sender="Dave <dave@example.test>", extra=4000))
        seed(
            make_raw(
                2,
                subject="Re: invoice 42",
                sender="Dave <dave@example.test>",
                body="Ünïcode bödy\r\n",
            )
        )

        def subjects(query: Q) -> list[str]:
            return [m.subject for m in box.messages(query=query)]

        assert subjects(Q(subject="INVOICE")) == ["Invoice 42", "Re: invoice 42"]
        assert subjects(Q(from_="dave")) == ["Lunch?", "Re: invoice 42"]
        assert subjects(Q(from_="Carol")) == ["Invoice 42"]
        assert subjects(Q(subject="invoice") & ~Q(from_="carol")) == ["Re: invoice 42"]
        assert subjects(Q(subject="lunch") | Q(from_="carol")) == ["Invoice 42", "Lunch?"]
        assert subjects(Q(larger=3000)) == ["Lunch?"]
        assert subjects(Q(smaller=3000)) == ["Invoice 42", "Re: invoice 42"]
        assert subjects(Q(text="bödy")) == ["Re: invoice 42"]
        assert subjects(Q(since=datetime(2026, 1, 1, 12, 30, tzinfo=UTC))) == [
            "Lunch?",
            "Re: invoice 42",
        ]
        assert subjects(Q(before=datetime(2026, 1, 1, 13, 30, tzinfo=UTC))) == [
            "Invoice 42",
            "Lunch?",
        ]
        assert subjects(Q(subject="nothing matches this")) == []

    def test_query_on_flags(self, box: Any, seed: Seed) -> None:
        self._needs(box, "flags")
        seed(make_raw(0), flags=["\\Seen"])
        seed(make_raw(1), flags=["\\Flagged"])
        seed(make_raw(2))
        assert [m.subject for m in box.messages(query=Q(seen=True))] == ["Message 0"]
        assert [m.subject for m in box.messages(query=~Q(seen=True))] == ["Message 1", "Message 2"]
        assert [m.subject for m in box.messages(query=Q(flagged=True))] == ["Message 1"]
        flags = [m.flags for m in box.messages()]
        assert "\\Seen" in flags[0]
        assert "\\Flagged" in flags[1]
        assert not flags[2] & {"\\Seen", "\\Flagged"}

    def test_reading_marks_nothing_seen(self, box: Any, seed: Seed) -> None:
        self._needs(box, "flags")
        self._seed_many(seed, 2)
        list(box.messages())
        box.get(next(iter(box.messages())).id)
        assert [m.seen for m in box.messages()] == [False, False]

    def test_nul_bytes(self, box: Any, seed: Seed) -> None:
        raw = make_raw(1, body="before\0after\r\n")
        if self.nul_byte is None:
            with pytest.raises(SeedRefused):
                seed(raw)
            assert list(box.messages()) == []
            return
        seed(raw)
        (message,) = list(box.messages())
        assert self._same(message.raw, raw.replace(b"\0", self.nul_byte))
        assert message.subject == "Message 1"
        assert message.text.startswith("before")

    def test_raw_8bit_header_bytes(self, box: Any, seed: Seed) -> None:
        # UTF-8 straight in the header fields, as RFC 6532 allows and much real mail does.
        raw = make_raw(1, subject="Grüße", sender="Jörg <joerg@example.test>")
        seed(raw)
        (message,) = list(box.messages())
        replacement = self.header_8bit_byte

        def stored(text: str) -> str:
            data = text.encode()
            return (
                data.decode()
                if replacement is None
                else re.sub(rb"[\x80-\xff]", replacement, data).decode()
            )

        head, blank, body = raw.partition(b"\r\n\r\n")
        assert self._same(message.raw, stored(head.decode()).encode() + blank + body)
        assert message.subject == stored("Grüße")
        assert message.from_ == mailsync.Address(stored("Jörg"), "joerg@example.test")

    def test_many_messages_stream_in_order(self, box: Any, seed: Seed) -> None:
        count = 60
        self._seed_many(seed, count)
        subjects = [m.subject for m in box.messages()]
        assert subjects == [f"Message {i}" for i in range(count)]

    # -- sync ----------------------------------------------------------------------------------

    def test_sync_yields_only_new_messages(self, box: Any, seed: Seed) -> None:
        assert list(box.sync()) == []
        self._seed_many(seed, 2)
        assert [m.subject for m in box.sync()] == ["Message 0", "Message 1"]
        assert list(box.sync()) == []
        seed(make_raw(9))
        assert [m.subject for m in box.sync()] == ["Message 9"]
        assert list(box.sync()) == []

    def test_sync_state_survives_a_new_instance(
        self, make_retriever: Callable[..., Any], state: mailsync.StateStore, seed: Seed
    ) -> None:
        self._seed_many(seed, 2)
        first = make_retriever(state)
        try:
            assert len(list(first.sync())) == 2
        finally:
            first.close()
        seed(make_raw(5))
        second = make_retriever(state)
        try:
            assert [m.subject for m in second.sync()] == ["Message 5"]
        finally:
            second.close()

    @pytest.mark.reliability(
        area="Limits",
        fault="a message over max_message_size in a folder that sync() reads",
        inputs="every Retriever backend, sync and async (the contract); max_message_size of "
        "100 KB, message 2 of 3 is 300 KB",
        outcome="sync() yields the other two and logs a warning naming it; get() and "
        "messages() raise MessageTooLarge, headers_only lists it; a retriever with "
        "max_message_size=None fetches it",
    )
    def test_sync_skips_a_message_over_max_message_size(
        self,
        make_retriever: Callable[..., Any],
        state: mailsync.StateStore,
        seed: Seed,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """Issue 14: ``sync()`` goes on past a message over ``max_message_size`` with a
        warning naming it, never stalling on it; reading it is refused with MessageTooLarge,
        its headers are not, and a retriever with a larger limit fetches it."""
        seed(make_raw(1))
        seed(make_raw(2, extra=300_000))
        seed(make_raw(3))
        small = self._connect(make_retriever, state, max_message_size=100_000)
        full = self._connect(make_retriever, ":memory:", max_message_size=None)
        try:
            ids = {m.subject: m.id for m in full.messages()}
            with caplog.at_level(logging.WARNING, logger="mailsync"):
                assert [m.subject for m in small.sync()] == ["Message 1", "Message 3"]
            warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
            assert any(ids["Message 2"] in w and "max_message_size" in w for w in warnings)
            with pytest.raises(mailsync.MessageTooLarge):
                small.get(ids["Message 2"])
            with pytest.raises(mailsync.MessageTooLarge):
                list(small.messages())
            listed = [m.subject for m in small.messages(headers_only=True)]
            assert listed == ["Message 1", "Message 2", "Message 3"]
            assert full.get(ids["Message 2"]).size > 300_000
        finally:
            small.close()
            full.close()

    def test_sync_commits_when_the_next_message_is_requested(self, box: Any, seed: Seed) -> None:
        self._seed_many(seed, 3)
        run = box.sync()
        first = next(run)
        second = next(run)  # requesting the second commits the first
        assert (first.subject, second.subject) == ("Message 0", "Message 1")
        run.close()  # breaking out: the second was never acknowledged
        assert [m.subject for m in box.sync()] == ["Message 1", "Message 2"]

    def test_sync_explicit_commit(self, box: Any, seed: Seed) -> None:
        self._seed_many(seed, 2)
        run = box.sync()
        next(run)
        run.commit()
        run.close()
        assert [m.subject for m in box.sync()] == ["Message 1"]

    def test_sync_is_per_folder(
        self, box: Any, seed: Seed, make_folder: Callable[[str], None]
    ) -> None:
        self._needs(box, "folders")
        make_folder("Other")
        seed(make_raw(1))
        seed(make_raw(2), folder="Other")
        assert [m.subject for m in box.sync()] == ["Message 1"]
        assert [m.subject for m in box.sync("Other")] == ["Message 2"]
        assert list(box.sync()) == []

    def test_implicit_parent_folder(
        self, box: Any, seed: Seed, make_folder: Callable[[str], None]
    ) -> None:
        self._needs(box, "folders")
        delimiter = next(f.delimiter for f in box.folders() if f.name.upper() == "INBOX")
        if not delimiter:
            pytest.skip(f"{type(box).__name__} has a flat folder namespace")
        child = f"Parent{delimiter}Child"
        make_folder(child)
        seed(make_raw(1), folder=child)
        assert [m.subject for m in box.messages(child)] == ["Message 1"]
        if self.implicit_parent_selectable:
            assert list(box.messages("Parent")) == []
        else:
            with pytest.raises(mailsync.FolderNotFound):
                list(box.messages("Parent"))

    # -- watch ---------------------------------------------------------------------------------

    def test_watch_yields_new_mail(
        self, make_retriever: Callable[..., Any], state: mailsync.StateStore, seed: Seed
    ) -> None:
        seed(make_raw(0))
        watcher = make_retriever(state)
        got: list[str] = []
        errors: list[BaseException] = []

        def consume() -> None:
            try:
                for message in watcher.watch(poll_interval=0.2):
                    got.append(message.subject)
            except BaseException as exc:  # surfaced by the assertion below
                errors.append(exc)

        thread = threading.Thread(target=consume, daemon=True)
        thread.start()
        try:
            wait_for(lambda: got == ["Message 0"] or bool(errors), self.watch_timeout)
            seed(make_raw(1))
            wait_for(lambda: got == ["Message 0", "Message 1"] or bool(errors), self.watch_timeout)
        finally:
            watcher.close()
            thread.join(10)
        assert not errors, errors
        assert not thread.is_alive(), "watch() did not stop after close()"

    # -- changing ------------------------------------------------------------------------------

    def test_set_flags(self, box: Any, seed: Seed) -> None:
        self._needs(box, "flags")
        self._seed_many(seed, 1)
        (message,) = list(box.messages())
        box.set_flags(message, add=["\\Flagged", "\\Seen"])
        (after,) = list(box.messages())
        assert {"\\Flagged", "\\Seen"} <= after.flags
        box.set_flags([after.id], remove=["\\Seen"])
        (final,) = list(box.messages())
        assert "\\Seen" not in final.flags
        assert "\\Flagged" in final.flags

    def test_move(self, box: Any, seed: Seed, make_folder: Callable[[str], None]) -> None:
        self._needs(box, "move")
        make_folder("Archive2")
        raws = self._seed_many(seed, 2)
        first, _ = list(box.messages())
        box.move(first, "Archive2")
        assert [m.subject for m in box.messages()] == ["Message 1"]
        (moved,) = list(box.messages("Archive2"))
        assert self._same(moved.raw, raws[0])

    def test_delete_to_trash_and_permanently(self, box: Any, seed: Seed) -> None:
        self._needs(box, "delete")
        self._seed_many(seed, 2)
        first, second = list(box.messages())
        box.delete(first)
        assert [m.subject for m in box.messages()] == ["Message 1"]
        box.delete([second.id], permanent=True)
        assert list(box.messages()) == []

    def test_append(self, box: Any) -> None:
        self._needs(box, "append")
        raw = make_raw(3)
        new_id = box.append("INBOX", raw, flags=["\\Seen"])
        (message,) = list(box.messages())
        assert self._same(message.raw, raw)
        if "flags" in box.capabilities:
            assert message.seen
        if new_id is not None:
            assert box.get(new_id).subject == "Message 3"

    def test_append_makes_bare_line_endings_whole(self, box: Any) -> None:
        # Python code writes "\n"; what is stored is the same message (CRLF on the wire).
        self._needs(box, "append")
        raw = make_raw(4).replace(b"\r\n", b"\n")
        box.append("INBOX", raw)
        (message,) = list(box.messages())
        assert norm(message.raw) == norm(raw)
        assert message.subject == "Message 4"

    def test_append_of_a_retrieved_message_is_a_copy(self, box: Any, seed: Seed) -> None:
        # No Date, no Message-ID, a Bcc, a field without a space after its colon and an
        # unterminated multipart: a copy keeps them all as they were (line endings aside).
        self._needs(box, "append")
        raw = (
            b"From: a@example.test\r\nTo: b@example.test\r\nBcc: hidden@example.test\r\n"
            b"Subject: copy me\r\nX-Tight:value\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/mixed; boundary="zz"\r\n\r\n--zz\r\n'
            b"Content-Type: text/plain\r\n\r\npart one\r\n"
        )
        seed(raw)
        (original,) = list(box.messages())
        new_id = box.append("INBOX", original)
        if self.identical_append_merges:
            (again,) = list(box.messages())
            assert new_id == original.id == again.id
            assert self._same(again.raw, raw)
            return
        first, copy = list(box.messages())
        assert self._same(copy.raw, first.raw)
        assert self._same(copy.raw, raw)
        assert copy.headers.get("Date") is None
        assert copy.message_id is None

    def test_append_refuses_a_headers_only_message(self, box: Any, seed: Seed) -> None:
        # It holds only its header block: storing it would store the message without its
        # body, as if that were the whole of it.
        self._needs(box, "append")
        seed(make_raw(1, body="the body\r\n"))
        (headers,) = list(box.messages(headers_only=True))
        with pytest.raises(mailsync.ConfigError, match="headers_only"):
            box.append("INBOX", headers)
        assert len(list(box.messages())) == 1

    def test_append_accepts_email_message(self, box: Any) -> None:
        self._needs(box, "append")
        msg = mailsync.compose(
            from_="a@example.test", to="b@example.test", subject="Composed", text="hi"
        )
        box.append("INBOX", msg)
        assert [m.subject for m in box.messages()] == ["Composed"]

    def test_unsupported_operations_say_so(self, box: Any, seed: Seed) -> None:
        self._seed_many(seed, 1)
        (message,) = list(box.messages())
        calls = {
            "flags": lambda: box.set_flags(message, add=["\\Flagged"]),
            "move": lambda: box.move(message, "Elsewhere"),
            "append": lambda: box.append("INBOX", make_raw(2)),
        }
        for capability, call in calls.items():
            if capability not in box.capabilities:
                with pytest.raises(mailsync.Unsupported):
                    call()


class SyncProxy:
    """Drives an AsyncRetriever from sync code on its own event-loop thread, so the async
    backends run through exactly the same contract tests."""

    def __init__(self, inner: mailsync.AsyncRetriever) -> None:
        self.inner = inner
        self.capabilities = inner.capabilities
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._closed = False

    def _run(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(120)

    def _iterate(self, aiter: AsyncIterator[Any]) -> Iterator[Any]:
        try:
            while True:
                try:
                    yield self._run(aiter.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            aclose = getattr(aiter, "aclose", None)
            if aclose is not None and not self._closed:
                self._run(aclose())

    @staticmethod
    async def _drain() -> None:
        current = asyncio.current_task()
        pending = [task for task in asyncio.all_tasks() if task is not current]
        if pending:
            await asyncio.wait(pending, timeout=10)

    def folders(self) -> list[mailsync.Folder]:
        return self._run(self.inner.folders())  # type: ignore[no-any-return]

    def messages(self, folder: str = "INBOX", **kwargs: Any) -> Iterator[mailsync.Message]:
        return self._iterate(self.inner.messages(folder, **kwargs))

    def get(self, id: str) -> mailsync.Message:
        return self._run(self.inner.get(id))  # type: ignore[no-any-return]

    def sync(self, folder: str = "INBOX") -> _SyncRunProxy:
        return _SyncRunProxy(self, self.inner.sync(folder))

    def watch(self, folder: str = "INBOX", **kwargs: Any) -> Iterator[mailsync.Message]:
        return self._iterate(self.inner.watch(folder, **kwargs))

    def set_flags(self, msgs: Any, **kwargs: Any) -> None:
        self._run(self.inner.set_flags(msgs, **kwargs))

    def move(self, msgs: Any, folder: str) -> None:
        self._run(self.inner.move(msgs, folder))

    def delete(self, msgs: Any, **kwargs: Any) -> None:
        self._run(self.inner.delete(msgs, **kwargs))

    def append(self, folder: str, message: Any, flags: Iterable[str] = ()) -> Any:
        return self._run(self.inner.append(folder, message, flags))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._run(self.inner.aclose())
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        # Let iterations still in flight (a watch() another thread consumes) see the close
        # and finish, before the loop that would complete them stops.
        self._run(self._drain())
        self._run(self._loop.shutdown_asyncgens())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


class _SyncRunProxy:
    def __init__(self, proxy: SyncProxy, run: mailsync.AsyncSyncRun) -> None:
        self._proxy = proxy
        self._run = run

    def __iter__(self) -> _SyncRunProxy:
        return self

    def __next__(self) -> mailsync.Message:
        try:
            return self._proxy._run(self._run.__anext__())  # type: ignore[no-any-return]
        except StopAsyncIteration:
            raise StopIteration from None

    def commit(self) -> None:
        self._proxy._run(self._run.commit())

    def close(self) -> None:
        self._proxy._run(self._run.aclose())


class AsyncRetrieverContract(RetrieverContract):
    """The same tests for AsyncRetriever backends. ``make_retriever`` returns an
    AsyncRetriever here; the contract wraps it in :class:`SyncProxy`."""

    @pytest.fixture
    def box(self, make_retriever: Callable[..., Any], state: mailsync.StateStore) -> Iterator[Any]:
        proxy = SyncProxy(make_retriever(state))
        try:
            yield proxy
        finally:
            proxy.close()

    def _connect(self, make_retriever: Callable[..., Any], state: Any, **options: Any) -> Any:
        return SyncProxy(make_retriever(state, **options))

    def test_is_async(self, make_retriever: Callable[..., Any], state: mailsync.StateStore) -> None:
        retriever = make_retriever(state)
        assert isinstance(retriever, mailsync.AsyncRetriever)
        SyncProxy(retriever).close()

    def test_lists_for_notebooks(self, box: Any, seed: Seed) -> None:
        raws = self._seed_many(seed, 3)
        inner = box.inner
        listing = box._run(inner.messages(progress=True).collect())
        assert isinstance(listing, mailsync.MessageList)
        assert all(self._same(m.raw, r) for m, r in zip(listing, raws, strict=True))
        assert isinstance(box._run(inner.folders()), mailsync.FolderList)
        assert len(box._run(inner.sync(progress=True).collect())) == 3
        assert box._run(inner.sync().collect()) == []

    def test_sync_state_survives_a_new_instance(
        self, make_retriever: Callable[..., Any], state: mailsync.StateStore, seed: Seed
    ) -> None:
        super().test_sync_state_survives_a_new_instance(
            lambda s: SyncProxy(make_retriever(s)), state, seed
        )

    def test_watch_yields_new_mail(
        self, make_retriever: Callable[..., Any], state: mailsync.StateStore, seed: Seed
    ) -> None:
        super().test_watch_yields_new_mail(lambda s: SyncProxy(make_retriever(s)), state, seed)


class OnCyrus:
    """Mixed in before a contract class whose fixtures take the server from ``mail_store`` and
    the account from ``account`` (the Dovecot ones), it runs the same tests against Cyrus,
    the second, independent server (tests/cyrus.py). The attributes state what Cyrus stores
    differently from Dovecot, asserted rather than skipped."""

    nul_byte = None  # APPEND is refused: "Message contains NUL characters"
    header_8bit_byte = b"X"  # each raw 8-bit header byte (Cyrus' munge8bit default)
    implicit_parent_selectable = True  # creating A/B creates A as a real mailbox

    @pytest.fixture
    def mail_store(self, cyrus: CyrusServer) -> CyrusServer:
        return cyrus

    @pytest.fixture
    def account(self, cyrus_account: Account) -> Account:
        return cyrus_account
