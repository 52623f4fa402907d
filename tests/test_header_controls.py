"""Header values mailsync writes hold no control character, and a lone CR never starts a
header (issue 14, defects 8 and 9).

``compose()`` refuses control characters in every value it writes; ``prepare()`` refuses a
header block that holds one, whoever wrote it (raw bytes, an ``EmailMessage``, a retrieved
``Message``), and splits header lines at LF only, as servers do; ``append`` holds an
``EmailMessage`` to the same rule. So ``SendResult.message_id`` is always the Message-ID the
recipient reads, and a recipient is never taken from text a server reads as part of another
field. The end-to-end checks against Postfix and Dovecot are in
tests/smtp/test_header_injection.py. No server is needed here.
"""

from __future__ import annotations

import email.policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mailsync
from mailsync import ConfigError, InvalidAddress, Message, compose
from mailsync._envelope import outgoing_bytes, prepare
from mailsync._message import MAX_ADDRESSES, crlf_bytes

FROM = "alice@example.test"
TO = "bob@example.test"
# C0 controls but tab, DEL, C1 (U+0085 is also a line break to str.splitlines).
CONTROLS = [chr(c) for c in (*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F, 0x80, 0x85, 0x9F)]
WRITTEN = [
    ("subject", lambda c: {"subject": f"a{c}b"}),
    ("custom header", lambda c: {"headers": {"X-Custom": f"a{c}b"}}),
    ("Message-ID header", lambda c: {"headers": {"Message-ID": f"<a{c}b@example.test>"}}),
    ("message_id", lambda c: {"message_id": f"idbf1d5b81{c}evil@example.test"}),
    ("display name", lambda c: {"to": (f"Bob{c}", TO)}),
    ("attachment name", lambda c: {"attachments": [(f"a{c}.txt", b"x", "text/plain")]}),
    ("inline content id", lambda c: {"html": "<p>", "inline": {f"c{c}id": ("a", b"", "a/b")}}),
]


@pytest.mark.reliability(
    area="Sending",
    fault="a control character in a value compose() would write into a header",
    inputs="NUL, every other C0 control but tab, DEL and C1 controls, in the subject, a "
    "custom header, the Message-ID (header or message_id=), a display name, an attachment "
    "file name and an inline Content-ID",
    outcome="ConfigError (InvalidAddress for addresses) before anything is built; the "
    "recipient can never get a value cut short or split where SendResult said otherwise",
)
@pytest.mark.parametrize("where", [name for name, _ in WRITTEN])
def test_compose_refuses_control_characters_in_every_header_value(where: str) -> None:
    arguments = dict(WRITTEN)[where]
    for control in CONTROLS:
        base: dict[str, Any] = {"from_": FROM, "to": TO, "subject": "s", "text": "t"}
        base.update(arguments(control))
        with pytest.raises(ConfigError):  # InvalidAddress is a ConfigError
            compose(**base)


def test_compose_keeps_tabs_where_rfc_5322_allows_white_space() -> None:
    message = compose(
        from_=FROM, to=("Bob\tB.", TO), subject="a\tb", headers={"X-Tab": "c\td"}, text="t"
    )
    received = Message.from_email(message)
    assert received.subject == "a b"  # decoded values are one line; the wire kept the tab
    assert b"\tb" in message.as_bytes()
    with pytest.raises(ConfigError):  # a message id has no white space at all
        compose(from_=FROM, to=TO, subject="s", message_id="a\tb@example.test")


def test_the_message_id_sent_is_the_one_reported() -> None:
    # The case: the recipient got "<idbf1d5b81" (cut at the NUL) while
    # SendResult.message_id said "idbf1d5b81evil@x".
    with pytest.raises(ConfigError, match="message_id"):
        compose(from_=FROM, to=TO, subject="s", message_id="idbf1d5b81\0evil@x")
    with pytest.raises(ConfigError, match="ASCII"):  # the stdlib cannot even write it
        compose(from_=FROM, to=TO, subject="s", headers={"Message-ID": "<ü@example.test>"})
    expected = {
        "<=?utf-8?q?abc?=@example.test>": "=?utf-8?q?abc?=@example.test",  # no RFC 2047 here
        "junk <m@example.test> more": "m@example.test",
        "<" + "b" * 200 + "@example.test>": "b" * 200 + "@example.test",  # past a line's length
    }
    for header, message_id in expected.items():
        message = compose(from_=FROM, to=TO, subject="s", headers={"Message-ID": header})
        envelope = prepare(message)
        assert envelope.message_id == message_id
        assert Message(envelope.data).message_id == message_id
        assert Message(prepare(envelope.data).data).message_id == message_id


RAW_HEAD = b"From: a@example.test\r\nTo: b@example.test\r\n"


@pytest.mark.reliability(
    area="Sending",
    fault="raw bytes given to send() with a control character in the header block",
    inputs="a lone CR before 'Bcc: carol@...', NUL in the Message-ID, other C0 controls "
    "and DEL, in bytes, an EmailMessage and a Message",
    outcome="ConfigError naming the field; nothing is sent, no recipient is taken from the "
    "text after a lone CR",
)
@pytest.mark.parametrize(
    "field",
    [
        b"Subject: x\rBcc: carol@example.test\r\n",
        b"Message-ID: <idbf1d5b81\x00evil@example.test>\r\n",
        b"Subject: a\x01b\r\n",
        b"Subject: a\x1bb\r\n",
        b"Subject: a\x7fb\r\n",
        b"X-Folded: a\r\n b\rCc: carol@example.test\r\n",
        b"Subject: x\r\r\n",
    ],
    ids=["lone CR", "NUL", "SOH", "ESC", "DEL", "lone CR in a continuation", "CR CR LF"],
)
def test_prepare_refuses_a_header_block_with_control_characters(field: bytes) -> None:
    raw = RAW_HEAD + field + b"\r\nbody\r\n"
    lf_only = raw.replace(b"\r\n", b"\n")  # "x\r\r\n" becomes a plain CRLF here
    for message in (raw, Message(raw), *([lf_only] * (b"\r\r" not in raw))):
        with pytest.raises(ConfigError, match="control character"):
            prepare(message)
    legacy = EmailMessage(policy=email.policy.compat32)  # it writes what it is given
    legacy["From"] = "a@example.test"
    legacy["To"] = "b@example.test"
    legacy["Subject"] = "a\x00b"
    with pytest.raises(ConfigError, match="'Subject'"):
        prepare(legacy)


def test_prepare_reads_headers_as_servers_do() -> None:
    # Control characters in the body are not the header block's business, and tabs in
    # values are fine.
    envelope = prepare(RAW_HEAD + b"Subject: a\tb\r\n\r\nbody \x00 \r with a lone CR\r\n")
    assert envelope.recipients == ("b@example.test",)
    assert Message(envelope.data).subject == "a b"
    # LF-only input is still sent with CRLF, Bcc removed.
    envelope = prepare(b"From: a@example.test\nTo: b@example.test\nBcc: c@example.test\n\nx\n")
    assert envelope.recipients == ("b@example.test", "c@example.test")
    assert envelope.data.startswith(b"From: a@example.test\r\nTo: b@example.test\r\n")
    assert envelope.data.endswith(b"\r\n\r\nx\r\n")
    assert b"Bcc" not in envelope.data
    assert b"\n" not in envelope.data.replace(b"\r\n", b"")


def test_append_holds_an_email_message_to_the_same_rule(tmp_path: Path) -> None:
    legacy = EmailMessage(policy=email.policy.compat32)
    legacy["Subject"] = "a\x00b"
    legacy.set_payload("x")
    with pytest.raises(ConfigError, match="control character"):
        outgoing_bytes(legacy)
    box = mailsync.connect(f"maildir:{tmp_path / 'mail'}", state=":memory:")
    with box, pytest.raises(ConfigError):
        box.append("INBOX", legacy)
    # Bytes and retrieved messages are stored as given: copying old mail stays byte-exact.
    old = b"Subject: a\x00b\r\n\r\nx"
    assert outgoing_bytes(old) == old
    assert outgoing_bytes(Message(old)) == old
    # ...but for line endings, and a CR in a header ends no line there either.
    mbox = mailsync.connect(f"mbox:{tmp_path / 'box.mbox'}", state=":memory:")
    with mbox:
        mbox.append("INBOX", b"From: a@example.test\r\nSubject: x\rBcc: c@example.test\r\n\r\nb")
        (stored,) = mbox.messages()
    assert stored.bcc == ()
    assert stored.subject == "x Bcc: c@example.test"


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [b"\r", b"\n", b"\r\n", b"\x00", b"\t", b" ", b"Bcc: c@example.test", b"x", b":"]
        )
        | st.binary(max_size=3),
        max_size=12,
    ).map(b"".join)
)
def test_what_prepare_accepts_it_reads_as_the_recipient_does(junk: bytes) -> None:
    # Whatever a Subject holds: either prepare refuses it, or the recipients it takes are
    # exactly those a recipient's parser (the Message model, Dovecot's rules) finds in the
    # bytes sent, and so is the Message-ID.
    raw = RAW_HEAD + b"Subject: " + junk + b"\r\nMessage-ID: <m@example.test>\r\n\r\nbody\r\n"
    try:
        envelope = prepare(raw)
    except mailsync.MailsyncError:
        return
    received = Message(envelope.data)
    listed = [a.email for a in received.to + received.cc] + [a.email for a in Message(raw).bcc]
    assert set(envelope.recipients) <= {a for a in listed if a}
    assert received.message_id == envelope.message_id


def test_addresses_past_the_cap_are_refused_not_dropped() -> None:
    cap = MAX_ADDRESSES
    many = b", ".join(b"u%d@example.test" % n for n in range(cap + 1))
    with pytest.raises(ConfigError, match="more than"):
        prepare(b"From: a@example.test\r\nTo: " + many + b"\r\n\r\nx")
    assert len(Message(b"To: " + many + b"\r\n\r\nx").to) == cap  # reading stops at the cap


def test_invalid_address_is_still_its_own_error() -> None:
    with pytest.raises(InvalidAddress):
        compose(from_=FROM, to="bob\x00@example.test", subject="s")


def test_a_message_with_no_lf_at_all_is_read_and_sent_with_cr_line_ends() -> None:
    # Old Mac mail ends every line with a CR alone: no convention is mixed, so its CRs are
    # line ends for the model, for prepare() (which sends CRLFs, so the server agrees) and
    # for append's CRLF pass.
    raw = b"From: a@example.test\rTo: b@example.test\rBcc: c@example.test\r\rbody\r"
    envelope = prepare(raw)
    assert envelope.recipients == ("b@example.test", "c@example.test")
    assert envelope.data.startswith(b"From: a@example.test\r\nTo: b@example.test\r\n")
    assert envelope.data.endswith(b"\r\n\r\nbody\r\n")
    assert b"Bcc" not in envelope.data
    assert crlf_bytes(raw) == raw.replace(b"\r", b"\r\n")
    assert [a.email for a in Message(raw).bcc] == ["c@example.test"]
