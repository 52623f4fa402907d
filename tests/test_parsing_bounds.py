"""What reading a hostile message may cost: bounded memory and time per MB of input.

Issue 14 found ``msg.to`` on a 50 MB To header taking 90 s and 1.2 GB, and listing the
attachments of a 103 MB message decoding every payload (4.9 s, 719 MB). Each case below
reads one attribute of a hostile message and asserts a bound that the old code broke by far:

- memory: the tracemalloc peak while reading, per byte of input (the same on any machine);
- work that is capped whatever the size (addresses, header fields, references, parts): a
  10 MB input must read within a wall-clock limit generous enough for a loaded machine, yet
  far below what the uncapped code took (minutes), and within the same memory as 1 MB does.

The bounds are stated in docs/reliability.md, generated from the markers here. No server.
"""

from __future__ import annotations

import base64
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailsync import Attachment, Message, _mime_body
from mailsync import _addresses as model
from mailsync._message import MAX_ADDRESSES, MAX_REFERENCES
from mailsync._mime import MAX_HEADER_FIELDS

MB = 1_000_000


def _to(item: bytes) -> Callable[[int], bytes]:
    return lambda size: b"To: " + item * (size // len(item)) + b"\r\n\r\nbody\r\n"


def _attachments(size: int) -> bytes:
    payload = base64.encodebytes(bytes(range(256)) * (size // 4 // 342))
    parts = b"".join(
        b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
        b"Content-Disposition: attachment; filename=f%d.bin\r\n\r\n" % n + payload
        for n in range(4)
    )
    return b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + parts + b"--b--\r\n"


@dataclass(frozen=True)
class Case:
    """A hostile input (made at any size), what is read from it, and the memory bound."""

    input: str
    make: Callable[[int], bytes]
    read: Callable[[Message], Any]
    attribute: str
    memory: float  # tracemalloc peak per byte of input, at ``size``
    capped: bool  # the work stops growing past a cap: also read at 10 MB, timed
    size: int = MB


CASES = {
    "to-junk-items": Case(
        "a To header of 'a, a, a, ...'",
        _to(b"a, "),
        lambda m: m.to,
        "to",
        6,
        True,
    ),
    "to-one-word-list": Case(
        "a To header of 'a a a ...' (one item of half a million words)",
        _to(b"a "),
        lambda m: m.to,
        "to",
        6,
        True,
    ),
    "to-empty-comments": Case(
        "a To header of '(), (), ...'",
        _to(b"(), "),
        lambda m: m.to,
        "to",
        6,
        True,
    ),
    "to-addresses": Case(
        "a To header of 'userN@example.test, ...' (45,000 addresses per MB)",
        _to(b"user12345@example.test, "),
        lambda m: m.to,
        "to",
        10,
        True,
    ),
    "tiny-fields": Case(
        "a header block of 'X: b' fields (170,000 per MB)",
        lambda size: b"X: b\r\n" * (size // 6) + b"\r\nbody",
        lambda m: m.headers,
        "headers",
        3,
        True,
    ),
    "references": Case(
        "a References header of '<a@b> <a@b> ...' (170,000 ids per MB)",
        lambda size: b"References: " + b"<a@b> " * (size // 6) + b"\r\n\r\nbody",
        lambda m: m.references,
        "references",
        5,
        True,
        3 * MB,  # past the cap of 100,000 ids (at 1 MB the ids themselves weigh 6x)
    ),
    "many-parts": Case(
        "a multipart/mixed of 28,000 tiny parts per MB",
        lambda size: (
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
            + b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" * (size // 36)
            + b"--b--\r\n"
        ),
        lambda m: m.attachments,
        "attachments",
        6,
        True,
    ),
    "attachment-list": Case(
        "a message of four base64 attachments",
        _attachments,
        lambda m: [(a.filename, a.content_type) for a in m.attachments],
        "attachments",
        0.05,
        True,
    ),
    "attachment-size": Case(
        "a message of four base64 attachments",
        _attachments,
        lambda m: [a.size for a in m.attachments],
        "attachments[i].size",
        0.2,
        True,
    ),
    "encoded-words": Case(
        "a Subject of '=?utf-8?q?abc?= ' repeated (62,000 encoded words per MB)",
        lambda size: b"Subject: " + b"=?utf-8?q?abc?= " * (size // 16) + b"\r\n\r\nbody",
        lambda m: m.subject,
        "subject",
        12,
        False,
    ),
    "blank-lines": Case(
        "a multipart body of blank lines with no boundary parameter",
        lambda size: (
            b"Content-Type: multipart/mixed\r\n\r\n"
            + b"\r\n" * (size // 2)
            + b"--x\r\nContent-Type: text/plain\r\n\r\nhi\r\n--x--\r\n"
        ),
        lambda m: m.text,
        "text",
        0.1,
        False,
    ),
}
CAPPED_SECONDS = 30  # for 10 MB of capped work: the uncapped code took 40 s to minutes
LINEAR_SECONDS = 10  # for 1 MB of work that grows with the input (well under 1 s when idle)


def peak_per_byte(case: Case, size: int) -> float:
    raw = case.make(size)
    message = Message(raw)
    tracemalloc.start()
    try:
        case.read(message)
        return tracemalloc.get_traced_memory()[1] / len(raw)
    finally:
        tracemalloc.stop()


def _marker(name: str) -> pytest.MarkDecorator:
    case = CASES[name]
    timed = (
        f"; 10 MB read in under {CAPPED_SECONDS} s"
        if case.capped
        else f"; 1 MB read in under {LINEAR_SECONDS} s"
    )
    return pytest.mark.reliability(
        area="Parsing cost",
        fault=f"{case.input}: reading `{case.attribute}`",
        inputs=f"{case.size // MB} MB" + (" and 10 MB" if case.capped else ""),
        outcome=f"peak memory at most {case.memory:g} bytes per byte of input{timed}",
    )


@pytest.mark.parametrize(
    "name", [pytest.param(name, marks=_marker(name), id=name) for name in CASES]
)
def test_reading_a_hostile_message_is_bounded(name: str) -> None:
    case = CASES[name]
    assert peak_per_byte(case, case.size) <= case.memory
    size, limit = (10 * MB, CAPPED_SECONDS) if case.capped else (MB, LINEAR_SECONDS)
    message = Message(case.make(size))
    started = time.perf_counter()
    case.read(message)
    elapsed = time.perf_counter() - started
    assert elapsed < limit, f"{name}: {elapsed:.1f} s for {size // MB} MB"


def test_the_caps_hold_and_say_what_they_keep() -> None:
    many = _to(b"u@example.test, ")(MAX_ADDRESSES * 16 + 16 * 100)
    assert len(Message(many).to) == MAX_ADDRESSES
    fields = b"".join(b"X-%d: v\r\n" % n for n in range(MAX_HEADER_FIELDS + 5)) + b"\r\nbody\r\n"
    message = Message(fields)
    assert len(message.headers.items_all()) == MAX_HEADER_FIELDS
    assert message.text == "body\n"  # the body is still found after the skipped fields
    ids = b"References: " + b" ".join(b"<%d@x>" % n for n in range(MAX_REFERENCES + 7))
    references = Message(ids + b"\r\n\r\nx").references
    assert len(references) == MAX_REFERENCES
    assert references[-1] == f"{MAX_REFERENCES + 6}@x"  # the nearest ancestors are kept


def test_the_stdlib_address_parser_is_called_a_bounded_number_of_times(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Items the fast path cannot take go to the stdlib's character-by-character parser
    # (~1 us a character) within a budget; past it, addr-specs are picked out by a regex.
    calls: list[str] = []
    real = model._stdlib_pairs

    def counting(item: str) -> Any:
        calls.append(item)
        return real(item)

    monkeypatch.setattr(model, "_stdlib_pairs", counting)
    header = _to(b"(comment) a@example.test, ")(4 * MB)
    found = Message(header).to
    assert len(calls) <= model._PARSE_BUDGET // model._CALL_COST
    assert sum(len(item) for item in calls) <= model._PARSE_BUDGET
    assert len(found) > 100_000 // 2  # past the budget the addresses are still found
    assert found[0].name == "comment"  # ...and names from comments while the budget lasts


# -- attachments: listed without decoding, sized without decoding ---------------------------

ENCODINGS = ["base64", "quoted-printable", "x-uuencode", "7bit", "binary", "bogus"]


@settings(max_examples=600, deadline=None)
@given(
    st.lists(
        st.sampled_from([b"QUJD", b"=", b"==", b"\r\n", b" ", b"=3D", b"=\r\n", b"_", b"\xff"])
        | st.binary(max_size=6),
        max_size=30,
    ).map(b"".join),
    st.sampled_from(ENCODINGS),
    st.sampled_from([1, 2, 3, 5, 64, 1 << 16]),
)
def test_decoded_size_is_the_length_of_the_decoded_data(
    data: bytes, encoding: str, window: int
) -> None:
    original = _mime_body._SIZE_WINDOW
    _mime_body._SIZE_WINDOW = window  # small windows cut runs and lines everywhere
    try:
        decoded = _mime_body.decode_transfer(data, encoding)
        assert _mime_body.decoded_size(data, encoding) == len(decoded)
        framed = b"junk" + data + b"junk"
        assert _mime_body.decoded_size(framed, encoding, 4, 4 + len(data)) == len(decoded)
    finally:
        _mime_body._SIZE_WINDOW = original


def test_attachments_are_decoded_on_first_use_only() -> None:
    big = base64.encodebytes(bytes(range(256)) * 1024)  # 256 kB: sized by counting
    raw = (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
        b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="r.pdf"\r\n\r\n' + big + b"--b--\r\n"
    )
    (attachment,) = Message(raw).attachments
    assert attachment._data is None  # listed: nothing decoded
    assert attachment.size == 256 * 1024
    assert attachment._data is None  # sized: still nothing decoded
    assert attachment.data == bytes(range(256)) * 1024
    assert attachment == Attachment("r.pdf", "application/pdf", bytes(range(256)) * 1024)
    assert hash(attachment) == hash(Attachment("r.pdf", "application/pdf", attachment.data))
    assert repr(attachment) == (
        "Attachment(filename='r.pdf', content_type='application/pdf', content_id=None, "
        "inline=False)"
    )
    with pytest.raises(AttributeError):
        attachment.filename = "other.pdf"  # type: ignore[misc]
