"""Folders whose ``UID SEARCH`` answer would outgrow the line a connection takes, against the
real Dovecot (and Cyrus): both IMAP backends read them whole, in windows
(:mod:`mailsync.protocol.imap_search`), keep the sync cursor's rules when messages go and
come between two windows, and change hundreds of scattered messages in bounded commands.

A real folder needs ~95,000 messages to make a 1 MiB line; here the line the backends take
is cut to 2 KiB or less (:func:`_cap_lines`), so a folder of a thousand messages does: the
same code, the same server, a second of seeding. The read tests first check that the cap is
in force (the folder's whole answer in one SEARCH is a ProtocolError, which is how every read
of such a folder failed before), then that ``messages()``, ``sync()`` and queries get every
message once. benchmarks/big_folder.py reads a real folder of 200,000 messages at the real
cap.
"""

from __future__ import annotations

import asyncio
import asyncio.selector_events
import imaplib
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import mailsync
from mailsync.backends import _aioimap_wire, _imaplib
from mailsync.protocol import imap_literals
from mailsync.protocol.imap_search import Search
from tests.contract import make_raw
from tests.cyrus import CyrusServer
from tests.imap.conftest import imap_url
from tests.servers import Account, MailboxClients, MailServers

BOTH = pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
#: The line the backends take in these tests (1 MiB in real use).
CAP = 2048
#: Messages in the template folder; every fourth is not flagged.
TEMPLATE = 1000


def _cap_lines(monkeypatch: pytest.MonkeyPatch, cap: int) -> None:
    """Make both backends refuse lines over ``cap`` bytes (and size their windows by it)."""
    for module in (imap_literals, _imaplib, _aioimap_wire):
        monkeypatch.setattr(module, "MAX_LINE", cap)
    # asyncio reads up to 256 KiB at once, and the async backend measures a line while it is
    # still arriving: small reads, as over a real network, so a line over a small cap shows.
    transport = asyncio.selector_events._SelectorSocketTransport
    monkeypatch.setattr(transport, "max_size", 256)


@pytest.fixture
def small_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    _cap_lines(monkeypatch, CAP)


def _flagged(index: int) -> bool:
    return index % 4 != 3


def _seed(servers: MailboxClients, account: Account, count: int, folder: str) -> None:
    """``count`` messages by stdlib imaplib APPEND (never mailsync), three in four flagged."""
    with servers.imap(account) as conn:
        conn.create(folder)
        for index in range(count):
            flags = "(\\Flagged)" if _flagged(index) else None
            typ, data = conn.append(folder, flags, None, make_raw(index))
            assert typ == "OK", data


@pytest.fixture(scope="module")
def library(mail_servers: MailServers) -> Account:
    """An account whose ``Template`` folder holds :data:`TEMPLATE` messages (UIDs 1..1000);
    each test copies it into a folder of its own (COPY is quick; APPEND is not)."""
    account = mail_servers.new_account("big")
    _seed(mail_servers, account, TEMPLATE, "Template")
    return account


@pytest.fixture(scope="module")
def cyrus_library(cyrus: CyrusServer) -> Account:
    """A Cyrus account whose ``Template`` holds 600 messages."""
    account = cyrus.new_account("big")
    _seed(cyrus, account, 600, "Template")
    return account


def _copy(
    servers: MailboxClients, account: Account, name: str, drop: range = range(0)
) -> list[int]:
    """A copy of ``Template`` as folder ``name``, less the messages at UIDs ``drop``; its
    UIDs."""
    with servers.imap(account) as conn:
        assert conn.create(name)[0] == "OK"
        conn.select("Template", readonly=True)
        assert conn.uid("COPY", "1:*", name)[0] == "OK"
        if drop:
            _expunge(conn, name, drop)
        conn.select(name, readonly=True)
        _typ, data = conn.uid("SEARCH", "ALL")
    return [int(uid) for uid in (data[0] or b"").split()]


def _expunge(conn: imaplib.IMAP4, folder: str, uids: range) -> None:
    conn.select(folder)
    conn.uid("STORE", f"{uids.start}:{uids.stop - 1}", "+FLAGS.SILENT", "(\\Deleted)")
    assert conn.expunge()[0] == "OK"


class Reader:
    """One IMAP retriever, sync or async (then on a loop of its own, kept across calls),
    whose ``messages()`` and ``sync()`` are read into lists of UIDs."""

    def __init__(
        self, servers: MailboxClients, account: Account, asynchronous: bool, **options: Any
    ) -> None:
        target = imap_url(servers, account)
        options = {**target.options, "state": ":memory:", **options}
        self.loop = asyncio.new_event_loop() if asynchronous else None
        if self.loop is None:
            self.box: Any = mailsync.connect(target.url, **options)
        else:

            async def connect() -> Any:
                return mailsync.connect_async(target.url, **options)

            self.box = self.loop.run_until_complete(connect())

    def uids(self, method: str, *args: Any, **kwargs: Any) -> list[int]:
        """The UIDs of what ``messages()`` or ``sync()`` yields, in order."""
        return [message.uid for message in self.read(method, *args, **kwargs)]

    def read(self, method: str, *args: Any, **kwargs: Any) -> list[mailsync.Message]:
        source = getattr(self.box, method)(*args, **kwargs)
        if self.loop is None:
            return list(source)

        async def read() -> list[mailsync.Message]:
            return [message async for message in source]

        return self.loop.run_until_complete(read())

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """A method that returns (``move``, ``set_flags`` ...), awaited if need be."""
        result = getattr(self.box, method)(*args, **kwargs)
        return result if self.loop is None else self.loop.run_until_complete(result)

    def whole_folder_in_one_search(self, folder: str) -> None:
        """``UID SEARCH ALL`` in ``folder`` as the backend asked it before windows."""
        box = self.box
        if self.loop is None:
            box._select(folder, readonly=True)
            box._search([b"ALL"], None)
            return

        async def search() -> None:
            async with box._selected(folder, fresh=True) as (session, _mailbox):
                await box._search_criteria(session, [b"ALL"])

        self.loop.run_until_complete(search())

    def after_first_window(self, action: Callable[[], None]) -> list[Search]:
        """Run ``action`` (blocking) once, right after the first windowed ``UID SEARCH`` of
        a sync was answered, then NOOP on the retriever's connection, so that the server
        tells it what changed meanwhile, as a server may with the answer to any UID command
        (Dovecot and Cyrus wait for a NOOP or a non-UID command); returns every Search the
        sync performs."""
        searches: list[Search] = []
        original = self.box._perform
        done: list[bool] = []

        def due(op: Any) -> bool:
            if not isinstance(op, Search):
                return False
            searches.append(op)
            windowed = op.criteria[:1] == (b"UID",)
            if windowed and not done:
                done.append(True)
                return True
            return False

        if self.loop is None:

            def perform(op: Any) -> Any:
                result = original(op)
                if due(op):
                    action()
                    self.box._session().noop()
                return result

        else:

            async def perform(op: Any) -> Any:
                result = await original(op)
                if due(op):
                    await asyncio.to_thread(action)
                    async with self.box._locked() as session:
                        await session.command("NOOP")
                return result

        self.box._perform = perform
        return searches

    def close(self) -> None:
        if self.loop is None:
            self.box.close()
            return
        self.loop.run_until_complete(self.box.aclose())
        self.loop.close()


@pytest.fixture
def reader(mail_servers: MailServers, library: Account) -> Iterator[Callable[..., Reader]]:
    """``reader(asynchronous)``: a :class:`Reader` on the library account, closed after."""
    made: list[Reader] = []

    def make(asynchronous: bool, **options: Any) -> Reader:
        made.append(Reader(mail_servers, library, asynchronous, **options))
        return made[-1]

    yield make
    for one in made:
        one.close()


def _line_is_too_long(reader: Reader, folder: str, cap: int = CAP) -> None:
    """The cap is in force: the whole answer in one line is refused (how every read of such
    a folder failed before searches were windowed)."""
    with pytest.raises(mailsync.ProtocolError, match=f"line over {cap} bytes"):
        reader.whole_folder_in_one_search(folder)


_folders = iter(range(1_000_000))


def _name(kind: str) -> str:
    return f"{kind}{next(_folders)}"


@pytest.mark.reliability(
    area="IMAP",
    fault="a folder so big that the answer to UID SEARCH, one line, is longer than the line "
    "the client takes (a 1 MiB line: ~95,000 messages)",
    inputs="sync and async backends; the line cut to 2 KiB and 1,000 messages (a 3.9 KB "
    "answer); messages(), headers only, and a query (exact and client-checked, with a limit)",
    outcome="before: ProtocolError on every call, the folder unreadable; now the search is "
    "asked in windows of UIDs that each fit a line, and every message comes once, in UID order",
)
@BOTH
def test_messages_and_queries_of_a_folder_too_big_for_one_search_line(
    small_lines: None,
    mail_servers: MailServers,
    library: Account,
    reader: Callable[..., Reader],
    asynchronous: bool,
) -> None:
    folder = _name("Dense")
    uids = _copy(mail_servers, library, folder)
    flagged = [uid for index, uid in enumerate(uids) if _flagged(index)]
    box = reader(asynchronous)
    _line_is_too_long(box, folder)
    assert box.uids("messages", folder, headers_only=True) == uids
    assert box.uids("messages", folder, query=mailsync.Q(flagged=True)) == flagged
    inexact = mailsync.Q(flagged=True) & mailsync.Q(subject="message")
    assert box.uids("messages", folder, query=inexact, headers_only=True) == flagged
    assert box.uids("messages", folder, query=mailsync.Q(flagged=True), limit=5) == flagged[:5]


@pytest.mark.reliability(
    area="IMAP",
    fault="sync() of a folder whose UID SEARCH answer is longer than a line, its UIDs dense "
    "or with a gap of 300 expunged messages",
    inputs="sync and async backends; the line cut to 2 KiB; 1,000 and 700 messages",
    outcome="before: ProtocolError on every sync, the folder never synced; now every message "
    "once, and the next sync() nothing",
)
@BOTH
@pytest.mark.parametrize("layout", ["dense", "gap"])
def test_sync_of_a_folder_too_big_for_one_search_line(
    small_lines: None,
    mail_servers: MailServers,
    library: Account,
    reader: Callable[..., Reader],
    asynchronous: bool,
    layout: str,
) -> None:
    folder = _name(layout)
    drop = range(201, 501) if layout == "gap" else range(0)
    uids = _copy(mail_servers, library, folder, drop)
    box = reader(asynchronous, state=mailsync.SQLiteStateStore(":memory:"))
    _line_is_too_long(box, folder)
    searches = box.after_first_window(lambda: None)
    assert box.uids("sync", folder) == uids
    assert box.uids("sync", folder) == []
    assert len(searches) > 2  # in windows (and, for the gap, a look-up of their ends)


@pytest.mark.reliability(
    area="IMAP",
    fault="messages are expunged and new ones arrive between two windows of a sync's "
    "UID SEARCH (the sequence numbers of every later message shift)",
    inputs="sync and async backends; the line cut to 2 KiB; 700 messages with a gap; after the "
    "first window 50 already listed and 50 not yet listed are expunged, 5 are appended",
    outcome="no message skipped, none twice: the survivors and the new ones come once over "
    "this sync and the next, the expunged ones never",
)
@BOTH
def test_messages_going_and_coming_between_search_windows(
    small_lines: None,
    mail_servers: MailServers,
    library: Account,
    reader: Callable[..., Reader],
    asynchronous: bool,
) -> None:
    folder = _name("Moving")
    uids = _copy(mail_servers, library, folder, range(201, 501))
    gone = set(uids[:50]) | set(uids[300:350])  # in the first window, and far beyond it
    added: list[int] = []

    def meanwhile() -> None:
        with mail_servers.imap(library) as conn:
            _expunge(conn, folder, range(uids[0], uids[49] + 1))
            _expunge(conn, folder, range(uids[300], uids[349] + 1))
            for index in range(5):
                typ, data = conn.append(folder, None, None, make_raw(5000 + index))
                match = re.search(rb"APPENDUID \d+ (\d+)", data[0] or b"")
                assert typ == "OK", data
                assert match is not None, data
                added.append(int(match.group(1)))

    box = reader(asynchronous, state=mailsync.SQLiteStateStore(":memory:"))
    searches = box.after_first_window(meanwhile)
    first = box.uids("sync", folder)
    second = box.uids("sync", folder)
    assert added, "the first window never came"
    got = first + second
    assert len(got) == len(set(got)), "a message came twice"
    assert sorted(got) == sorted((set(uids) - gone) | set(added))
    assert first == sorted(first)
    assert len([s for s in searches if s.criteria[:1] == (b"UID",)]) > 2


@pytest.mark.reliability(
    area="IMAP",
    fault="sync() of a folder whose UID SEARCH answer is longer than a line, on Cyrus (the "
    "second server: its own reading of sequence sets and UID ranges)",
    inputs="sync and async backends; the line cut to 1.5 KiB; 500 messages with a gap of 100",
    outcome="every message once, the next sync() nothing",
)
@BOTH
def test_sync_of_a_folder_too_big_for_one_search_line_on_cyrus(
    monkeypatch: pytest.MonkeyPatch, cyrus: CyrusServer, cyrus_library: Account, asynchronous: bool
) -> None:
    _cap_lines(monkeypatch, 1536)  # Cyrus's CAPABILITY line alone is 750 bytes
    account = cyrus_library
    folder = _name("Gap")
    uids = _copy(cyrus, account, folder, range(101, 201))
    box = Reader(cyrus, account, asynchronous, state=mailsync.SQLiteStateStore(":memory:"))
    try:
        _line_is_too_long(box, folder, 1536)
        searches = box.after_first_window(lambda: None)
        assert box.uids("sync", folder) == uids
        assert box.uids("sync", folder) == []
    finally:
        box.close()
    assert searches[0].criteria == (b"66,132,198,264,330,396,462",)  # the windows' ends


@pytest.mark.reliability(
    area="IMAP",
    fault="move(), delete() and set_flags() of hundreds of messages with scattered UIDs: the "
    "COPYUID code answering a MOVE lists them again, on one line, and a long command line is "
    "refused by servers (Dovecot: 64 KiB)",
    inputs="sync and async backends; the line cut to 1 KiB; every other message of 1,000 "
    "flagged, moved, then deleted to the Trash",
    outcome="before: ProtocolError (the COPYUID line); now each command names a bounded batch "
    "of UIDs, and every message is changed once",
)
@BOTH
def test_changing_many_scattered_messages_keeps_every_answer_within_a_line(
    monkeypatch: pytest.MonkeyPatch,
    mail_servers: MailServers,
    library: Account,
    reader: Callable[..., Reader],
    asynchronous: bool,
) -> None:
    source, target = _name("From"), _name("To")
    uids = _copy(mail_servers, library, source)
    mail_servers.create_folder(library, target)
    box = reader(asynchronous)
    every_other = box.read("messages", source, headers_only=True)[::2]
    assert len(every_other) == len(uids) // 2
    _cap_lines(monkeypatch, 1024)
    box.call("set_flags", every_other, add=["$Picked"])
    box.call("move", every_other, target)
    moved = box.read("messages", target, headers_only=True)
    assert [m.message_id for m in moved] == [m.message_id for m in every_other]
    assert all("$Picked" in m.flags for m in moved)
    assert box.uids("messages", source) == uids[1::2]
    box.call("delete", moved)
    assert box.uids("messages", target) == []
    trash = box.read("messages", "Trash", headers_only=True)
    assert {m.message_id for m in every_other} <= {m.message_id for m in trash}
