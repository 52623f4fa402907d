"""Q objects: combination, validation and the client-side evaluator's exact meaning."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

import mailsync
from mailsync import Message, Q


def msg(
    subject: str = "Hello",
    sender: str = "Alice <alice@example.test>",
    to: str = "Bob <bob@example.test>",
    body: str = "body text",
    when: str = "Thu, 01 Jan 2026 12:00:00 +0000",
    flags: tuple[str, ...] = (),
    size: int | None = None,
) -> Message:
    raw = (
        f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: {when}\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    ).encode()
    return Message(raw, flags=flags, size=size)


def test_leaf_criteria_all_must_hold() -> None:
    q = Q(subject="hello", from_="alice")
    assert q.matches(msg())
    assert not q.matches(msg(sender="carol@example.test"))


def test_text_criteria_are_case_insensitive_substrings() -> None:
    assert Q(subject="ELL").matches(msg())
    assert Q(from_="ALICE@EXAMPLE").matches(msg())
    assert Q(from_="alice").matches(msg(sender="Alice <a@example.test>"))  # display name
    assert Q(to="bob").matches(msg())
    assert Q(text="BODY").matches(msg())
    assert Q(text="hello").matches(msg())  # subject counts as text
    assert Q(text="straße").matches(msg(body="Die STRASSE und die straße"))
    assert not Q(text="missing").matches(msg())


def test_flags() -> None:
    assert Q(seen=True).matches(msg(flags=("\\Seen",)))
    assert Q(seen=False).matches(msg())
    assert Q(flagged=True).matches(msg(flags=("\\Flagged",)))
    assert not Q(flagged=True).matches(msg(flags=("\\Seen",)))


def test_dates_are_inclusive_since_exclusive_before() -> None:
    m = msg(when="Thu, 01 Jan 2026 12:00:00 +0000")
    assert Q(since=datetime(2026, 1, 1, 12, 0, tzinfo=UTC)).matches(m)
    assert not Q(before=datetime(2026, 1, 1, 12, 0, tzinfo=UTC)).matches(m)
    assert Q(since=date(2026, 1, 1)).matches(m)
    assert not Q(since=date(2026, 1, 2)).matches(m)
    assert Q(before=date(2026, 1, 2)).matches(m)
    # A naive datetime is UTC; other zones compare as instants.
    assert Q(since=datetime(2026, 1, 1, 12, 0)).matches(m)
    plus2 = timezone(timedelta(hours=2))
    assert Q(since=datetime(2026, 1, 1, 14, 0, tzinfo=plus2)).matches(m)
    assert not Q(since=datetime(2026, 1, 1, 14, 1, tzinfo=plus2)).matches(m)


def test_message_without_a_date_never_matches_a_date_bound() -> None:
    m = msg(when="not a date")
    assert not Q(since=date(1970, 1, 1)).matches(m)
    assert not Q(before=date(2999, 1, 1)).matches(m)


def test_size() -> None:
    assert Q(larger=99).matches(msg(size=100))
    assert not Q(larger=100).matches(msg(size=100))
    assert Q(smaller=101).matches(msg(size=100))
    assert not Q(smaller=100).matches(msg(size=100))


def test_combinators() -> None:
    alice, carol = msg(), msg(sender="carol@example.test", subject="Other")
    q = Q(from_="alice") | Q(subject="other")
    assert q.matches(alice)
    assert q.matches(carol)
    assert not (Q(from_="alice") & Q(subject="other")).matches(alice)
    assert (~Q(from_="alice")).matches(carol)
    assert ~~Q(from_="alice") == Q(from_="alice")
    flat = Q(seen=True) & Q(flagged=True) & Q(subject="x")
    assert flat.op == "and"
    assert len(flat.children) == 3


def test_repr_and_needs_body() -> None:
    q = Q(subject="a") & ~Q(seen=True)
    assert repr(q) == "(Q(subject='a') & ~Q(seen=True))"
    assert not q.needs_body
    assert (q | Q(text="x")).needs_body


@pytest.mark.parametrize(
    "kwargs",
    [{"seen": "yes"}, {"subject": 3}, {"since": "2026-01-01"}, {"larger": "10"}, {"larger": True}],
)
def test_bad_values_are_config_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(mailsync.ConfigError):
        Q(**kwargs)  # type: ignore[arg-type]


def test_decide_on_a_partial_view() -> None:
    from mailsync._query import decide

    unknown = {"text", "larger"}
    alice = msg()
    assert decide(Q(from_="alice"), alice, unknown) is True
    assert decide(Q(from_="carol"), alice, unknown) is False
    assert decide(Q(text="x"), alice, unknown) is None
    # An "and" is settled by one false side, an "or" by one true side, whatever the rest.
    assert decide(Q(from_="carol") & Q(text="x"), alice, unknown) is False
    assert decide(Q(from_="carol", text="x"), alice, unknown) is False
    assert decide(Q(from_="alice", text="x"), alice, unknown) is None
    assert decide(Q(from_="alice") | Q(text="x"), alice, unknown) is True
    assert decide(Q(from_="carol") | Q(text="x"), alice, unknown) is None
    assert decide(Q(from_="carol") | Q(subject="nope"), alice, unknown) is False
    assert decide(~Q(text="x"), alice, unknown) is None
    assert decide(~(Q(from_="carol") & Q(larger=5)), alice, unknown) is True
    # With nothing unknown it is Q.matches.
    for q in (Q(text="body") & ~Q(seen=True), Q(larger=10) | Q(subject="zzz")):
        assert decide(q, alice, ()) is q.matches(alice)
