"""POP3 maildrops whose messages cannot be told apart by UIDL (issue 14, item 2), against a
scripted server (tests/pop3/scripted.py): two messages sharing a UIDL got the same id,
``get()`` returned the second and ``delete(first)`` removed the second. Ids must be unique and
stable, and ``delete()`` must never remove a message other than the one it was given."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

import mailsync
from tests.pop3.scripted import Mail, ScriptedPOP3

T = TypeVar("T")
OPTIONS: dict[str, Any] = {"password": "x", "tls": "none"}


def _raw(subject: str, body: str) -> bytes:
    return f"Subject: {subject}\r\nMessage-ID: <{subject}@example.test>\r\n\r\n{body}\r\n".encode()


def _run(server: ScriptedPOP3, asynchronous: bool, work: str, *args: Any) -> Any:
    """Run one retriever call (``messages``, ``get``, ``delete``, ``sync``) on a fresh
    connection, sync or async; ``state`` (a store) is passed on to ``connect``."""
    state = args[-1] if work == "sync" else ":memory:"
    if asynchronous:

        async def call() -> Any:
            async with mailsync.connect_async(server.url(), state=state, **OPTIONS) as box:
                if work in ("messages", "sync"):
                    return [m async for m in getattr(box, work)()]
                return await getattr(box, work)(*args)

        return _arun(call)
    with mailsync.connect(server.url(), state=state, **OPTIONS) as box:
        if work in ("messages", "sync"):
            return list(getattr(box, work)())
        return getattr(box, work)(*args)


def _arun(call: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(call())


MODES = pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])


@pytest.mark.reliability(
    area="POP3",
    fault="the server lists two different messages under one UIDL",
    inputs="sync and async; a third message with a UIDL of its own",
    outcome="unique ids (the shared UIDL names neither message: they get header-digest "
    "ids); get() returns the message named; delete() removes exactly the message named; "
    "the shared UIDL itself names nothing (MessageNotFound, nothing deleted)",
)
@MODES
def test_a_shared_uidl_never_picks_the_wrong_message(asynchronous: bool) -> None:
    first, second, third = (
        Mail("dup", _raw("first", "one")),
        Mail("dup", _raw("second", "two")),
        Mail("u3", _raw("third", "three")),
    )
    with ScriptedPOP3([first, second, third]) as server:
        listed = _run(server, asynchronous, "messages")
        assert [m.subject for m in listed] == ["first", "second", "third"]
        ids = [m.id for m in listed]
        assert len(set(ids)) == 3
        assert "dup" not in ids
        assert ids[2] == "u3"
        assert _run(server, asynchronous, "messages")[0].id == ids[0]  # stable
        for message in listed:
            assert _run(server, asynchronous, "get", message.id).raw == message.raw
        with pytest.raises(mailsync.MessageNotFound, match="UIDL 'dup'"):
            _run(server, asynchronous, "get", "dup")
        with pytest.raises(mailsync.MessageNotFound, match="UIDL 'dup'"):
            _run(server, asynchronous, "delete", "dup")
        assert server.removed == []
        _run(server, asynchronous, "delete", listed[0])
        assert server.removed == [first]
        # The second is alone with its UIDL now: known by it again.
        assert [(m.id, m.subject) for m in _run(server, asynchronous, "messages")] == [
            ("dup", "second"),
            ("u3", "third"),
        ]


@pytest.mark.reliability(
    area="POP3",
    fault="two messages alike in header block and size, on a server without UIDL (or "
    "sharing a UIDL)",
    inputs="no UIDL at all; one shared UIDL; sync and async",
    outcome="ids unique (the digest, then the digest with #2); get() returns each; delete() "
    "of one of them alone is refused (Unsupported, nothing deleted); both together are "
    "deleted",
)
@MODES
@pytest.mark.parametrize("uidl", [None, "same"], ids=["no UIDL", "shared UIDL"])
def test_messages_alike_are_deleted_together_or_not_at_all(
    uidl: str | None, asynchronous: bool
) -> None:
    head = b"Subject: twin\r\nMessage-ID: <twin@example.test>\r\n\r\n"
    twins = [Mail(uidl, head + b"body A\r\n"), Mail(uidl, head + b"body B\r\n")]
    capabilities = ("UIDL", "TOP", "USER") if uidl else ("TOP", "USER")
    with ScriptedPOP3(
        [*twins, Mail(None, _raw("other", "x"))], capabilities=capabilities
    ) as server:
        listed = _run(server, asynchronous, "messages")
        ids = [m.id for m in listed]
        assert ids[1] == ids[0] + "#2"
        assert len(set(ids)) == 3
        assert [_run(server, asynchronous, "get", i).text for i in ids[:2]] == [
            "body A\n",
            "body B\n",
        ]
        with pytest.raises(mailsync.Unsupported, match="all of them or none"):
            _run(server, asynchronous, "delete", ids[1])
        assert server.removed == []
        _run(server, asynchronous, "delete", ids[:2])
        assert server.removed == twins


@pytest.mark.reliability(
    area="POP3",
    fault="a message arrives under a UIDL the server already gave to a message that sync() "
    "delivered",
    inputs="sync and async",
    outcome="the new message is delivered (nothing is lost); the earlier one may be "
    "delivered once more, as the UIDL it was recorded under now names neither",
)
@MODES
def test_sync_delivers_a_message_whose_uidl_is_repeated(asynchronous: bool) -> None:
    state = mailsync.SQLiteStateStore(":memory:")
    with ScriptedPOP3([Mail("dup", _raw("first", "one"))]) as server:
        assert [m.subject for m in _run(server, asynchronous, "sync", state)] == ["first"]
        server.maildrop.append(Mail("dup", _raw("second", "two")))
        again = [m.subject for m in _run(server, asynchronous, "sync", state)]
        assert "second" in again
        assert set(again) <= {"first", "second"}
        assert _run(server, asynchronous, "sync", state) == []
