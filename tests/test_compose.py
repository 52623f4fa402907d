"""``compose()`` builds correct messages, refuses header injection and bad addresses, and
round-trips through :class:`~mailsync.Message`; ``prepare()`` gives senders the right envelope."""

from __future__ import annotations

import email.policy
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mailsync
from mailsync import Address, ConfigError, InvalidAddress, Message, check_address, compose
from mailsync._envelope import prepare
from mailsync._message import as_bytes, parse_addresses

FROM = "Alice <alice@example.test>"
TO = "bob@example.test"


def structure(message: EmailMessage) -> list[str]:
    """The MIME tree as indented content types."""
    lines: list[str] = []

    def walk(part: EmailMessage, depth: int) -> None:
        lines.append("  " * depth + part.get_content_type())
        if part.is_multipart():
            for child in part.iter_parts():
                assert isinstance(child, EmailMessage)
                walk(child, depth + 1)

    walk(message, 0)
    return lines


def round_trip(message: EmailMessage) -> Message:
    return Message.from_email(message)


# -- structure -------------------------------------------------------------------------------


def test_text_only() -> None:
    message = compose(from_=FROM, to=TO, subject="Hi", text="Hello\n")
    assert structure(message) == ["text/plain"]
    received = round_trip(message)
    assert received.text == "Hello\n"
    assert received.subject == "Hi"
    assert received.from_ == Address("Alice", "alice@example.test")
    assert received.to == (Address("", "bob@example.test"),)


def test_text_gets_a_final_line_break_and_crlf_becomes_lf() -> None:
    assert round_trip(compose(from_=FROM, to=TO, subject="s", text="Hello")).text == "Hello\n"
    received = round_trip(compose(from_=FROM, to=TO, subject="s", text="a\r\nb\rc\n"))
    assert received.text == "a\nb\nc\n"
    assert round_trip(compose(from_=FROM, to=TO, subject="s")).text == "\n"


def test_html_alternative() -> None:
    message = compose(from_=FROM, to=TO, subject="s", text="plain\n", html="<p>html</p>\n")
    assert structure(message) == ["multipart/alternative", "  text/plain", "  text/html"]
    received = round_trip(message)
    assert (received.text, received.html) == ("plain\n", "<p>html</p>\n")
    assert received.attachments == ()


def test_html_only() -> None:
    message = compose(from_=FROM, to=TO, subject="s", html="<p>x</p>\n")
    assert structure(message) == ["text/html"]
    assert round_trip(message).html == "<p>x</p>\n"


def test_attachments_from_tuples_and_paths(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"file on disk\n")
    pdf = b"%PDF-1.4\x00\xff binary"
    message = compose(
        from_=FROM,
        to=TO,
        subject="files",
        text="see files\n",
        html="<p>see files</p>\n",
        attachments=[("résumé.pdf", pdf, "application/pdf"), path, str(path)],
    )
    assert structure(message) == [
        "multipart/mixed",
        "  multipart/alternative",
        "    text/plain",
        "    text/html",
        "  application/pdf",
        "  text/plain",
        "  text/plain",
    ]
    received = round_trip(message)
    assert received.text == "see files\n"
    assert [(a.filename, a.content_type, a.data, a.inline) for a in received.attachments] == [
        ("résumé.pdf", "application/pdf", pdf, False),
        ("notes.txt", "text/plain", b"file on disk\n", False),
        ("notes.txt", "text/plain", b"file on disk\n", False),
    ]


def test_inline_images_go_in_multipart_related() -> None:
    png = b"\x89PNG\r\n\x1a\nimage"
    message = compose(
        from_=FROM,
        to=TO,
        subject="logo",
        text="logo below\n",
        html='<p><img src="cid:logo"></p>\n',
        inline={"logo": ("logo.png", png, "image/png")},
        attachments=[("a.txt", b"x", "text/plain")],
    )
    assert structure(message) == [
        "multipart/mixed",
        "  multipart/alternative",
        "    text/plain",
        "    multipart/related",
        "      text/html",
        "      image/png",
        "  text/plain",
    ]
    received = round_trip(message)
    assert received.html == '<p><img src="cid:logo"></p>\n'
    logo, attached = received.attachments
    assert (logo.content_id, logo.inline, logo.data, logo.filename) == (
        "logo",
        True,
        png,
        "logo.png",
    )
    assert not attached.inline


def test_inline_with_html_only_and_without_html() -> None:
    message = compose(
        from_=FROM,
        to=TO,
        subject="s",
        html='<img src="cid:a@b">',
        inline={"<a@b>": ("a.gif", b"GIF89a", "image/gif")},
    )
    assert structure(message) == ["multipart/related", "  text/html", "  image/gif"]
    assert round_trip(message).attachments[0].content_id == "a@b"
    with pytest.raises(ConfigError, match="html"):
        compose(from_=FROM, to=TO, subject="s", text="t", inline={"a": ("a", b"", "image/gif")})


def test_message_id_and_date_are_set() -> None:
    received = round_trip(compose(from_=FROM, to=TO, subject="s", text="t"))
    assert received.message_id is not None
    assert received.message_id.endswith("@example.test")
    assert received.date is not None
    assert abs((datetime.now(UTC) - received.date).total_seconds()) < 60
    fixed = datetime(2024, 4, 2, 12, 0, tzinfo=UTC)
    chosen = round_trip(
        compose(from_=FROM, to=TO, subject="s", message_id="<x.1@example.test>", date=fixed)
    )
    assert (chosen.message_id, chosen.date) == ("x.1@example.test", fixed)


def test_custom_headers() -> None:
    message = compose(
        from_=FROM,
        to=TO,
        subject="s",
        text="t",
        headers={
            "X-Mailer": "mailsync",
            "X-Unicode": "Grüße ✓",
            "In-Reply-To": "<parent@example.test>",
            "Sender": "Robot <robot@example.test>",
            "Message-ID": "<override@example.test>",
        },
    )
    received = round_trip(message)
    assert received.headers["X-Mailer"] == "mailsync"
    assert received.headers["X-Unicode"] == "Grüße ✓"
    assert received.in_reply_to == "parent@example.test"
    assert received.message_id == "override@example.test"
    assert received.headers.get_all("Message-ID") == ["<override@example.test>"]
    assert prepare(message).mail_from == "robot@example.test"


@pytest.mark.parametrize(
    "name", ["From", "to", "CC", "Bcc", "Reply-To", "Subject", "Content-Type", "MIME-Version"]
)
def test_custom_headers_cannot_replace_what_arguments_set(name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        compose(from_=FROM, to=TO, subject="s", text="t", headers={name: "x@example.test"})


def test_custom_address_headers_are_checked() -> None:
    with pytest.raises(InvalidAddress):
        compose(from_=FROM, to=TO, subject="s", headers={"Sender": "not an address"})


def test_parts_do_not_repeat_mime_version() -> None:
    message = compose(from_=FROM, to=TO, subject="s", text="t", html="h", attachments=[])
    assert as_bytes(message).count(b"MIME-Version") == 1


# -- non-ASCII -------------------------------------------------------------------------------


def test_non_ascii_subject_names_and_filenames_are_encoded() -> None:
    message = compose(
        from_=("Zoë Ünïcode", "zoe@example.test"),
        to=[("Ann, B.", "ann@example.test"), "Иван <ivan@example.test>"],
        subject="Grüße aus Köln ✓ " + "long " * 30,
        text="Grüße\n",
        attachments=[("日本語.txt", b"x", "text/plain")],
    )
    wire = as_bytes(message)
    head = wire.split(b"\r\n\r\n", 1)[0]
    assert head.isascii()
    assert all(len(line) <= 78 for line in head.split(b"\r\n"))
    received = Message(wire)
    assert received.subject == "Grüße aus Köln ✓ " + " ".join(["long"] * 30)
    assert received.from_ == Address("Zoë Ünïcode", "zoe@example.test")
    assert received.to == (
        Address("Ann, B.", "ann@example.test"),
        Address("Иван", "ivan@example.test"),
    )
    assert received.attachments[0].filename == "日本語.txt"
    envelope = prepare(message)
    assert not envelope.needs_smtputf8


def test_non_ascii_local_part_makes_an_smtputf8_message() -> None:
    message = compose(from_=FROM, to="δοκιμή@example.test", subject="Ωmega", text="t")
    assert message.policy.utf8  # type: ignore[attr-defined]
    wire = as_bytes(message)
    assert "To: δοκιμή@example.test".encode() in wire
    assert Message(wire).to == (Address("", "δοκιμή@example.test"),)
    envelope = prepare(message)
    assert envelope.needs_smtputf8
    assert envelope.recipients == ("δοκιμή@example.test",)


def test_internationalised_domain_is_sent_as_punycode() -> None:
    message = compose(from_=FROM, to="bob@münchen.test", subject="s", text="t")
    assert Message.from_email(message).to == (Address("", "bob@xn--mnchen-3ya.test"),)
    assert not prepare(message).needs_smtputf8


# -- addresses -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "a@example.test",
        "a@host.internal",
        "a@localhost",
        "a@printer.local",
        "a@x.invalid",
        "a@host.example",
        "first.last+tag@sub.example.com",
        "a@[127.0.0.1]",
        "δοκιμή@παράδειγμα.test",
        "A@EXAMPLE.TEST",
    ],
)
def test_syntax_check_accepts_special_use_domains(address: str) -> None:
    normalised = check_address(address)
    assert "@" in normalised
    compose(from_=FROM, to=address, subject="s", text="t")


def test_check_address_normalises() -> None:
    assert check_address("A@EXAMPLE.TEST") == "A@example.test"
    assert check_address("a@LOCALHOST") == "a@localhost"


@pytest.mark.parametrize(
    "address",
    [
        "",
        "plain",
        "a@",
        "@example.test",
        "a@@example.test",
        "a b@example.test",
        "a@exa mple.test",
        "a..b@example.test",
        "a@example..test",
        ".a@example.test",
        "a@-example.test",
        "a@example.test\n",
        "a\r@example.test",
        "a\x00@example.test",
        "a@" + "x" * 300 + ".test",
    ],
)
def test_bad_addresses_raise_invalid_address(address: str) -> None:
    with pytest.raises(InvalidAddress):
        check_address(address)
    with pytest.raises(InvalidAddress):
        compose(from_=FROM, to=address, subject="s", text="t")
    with pytest.raises(InvalidAddress):
        compose(from_=address, to=TO, subject="s", text="t")


def test_invalid_address_is_a_mailsync_error() -> None:
    with pytest.raises(mailsync.MailsyncError):
        check_address("nope")


def test_deliverability_is_checked_only_on_request() -> None:
    # No network needed: a special-use domain can never be delivered, so the public-domain
    # rules refuse it before any DNS lookup.
    check_address("a@example.test")
    with pytest.raises(InvalidAddress):
        check_address("a@example.test", deliverability=True)
    with pytest.raises(InvalidAddress):
        check_address("a@localhost", deliverability=True)
    with pytest.raises(InvalidAddress):
        compose(from_=FROM, to="a@localhost", subject="s", text="t", check_deliverability=True)


def test_syntax_checks_are_remembered_but_not_refusals_or_dns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import email_validator

    calls: list[tuple[str, bool]] = []
    validate = email_validator.validate_email

    def counting(address: str, **options: Any) -> Any:
        calls.append((address, options["check_deliverability"]))
        return validate(address, **{**options, "check_deliverability": False})  # no network

    monkeypatch.setattr(email_validator, "validate_email", counting)
    address = "remembered.once@example.test"  # no other test checks it: not cached yet
    assert check_address(address) == check_address(address) == address
    assert len(calls) == 1
    messages = set()
    for _ in range(2):  # a refusal is checked afresh, and raises the same way each time
        with pytest.raises(InvalidAddress) as caught:
            check_address("refused.twice@@example.test")
        assert isinstance(caught.value.__cause__, email_validator.EmailNotValidError)
        messages.add(str(caught.value))
    assert len(messages) == 1
    assert len(calls) == 3
    check_address("twice@example.com", deliverability=True)
    check_address("twice@example.com", deliverability=True)  # DNS answers change: asked again
    assert calls[-2:] == [("twice@example.com", True)] * 2


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                b"To: b@example.test, =?utf-8?q?C=2C_D?= <c@example.test>",
                b"to: B <b@EXAMPLE.test>",
                b'Cc: "x, y" <c@example.test>',
                b"Bcc: e@example.test",
                b"From: Ann <a@example.test>",
                b"Sender: s@example.test",
                b"Message-ID: <m@x>",
                b"message-id: <second@x>",
                b"Date: Mon, 1 Jan 2024 00:00:00 +0000",
                b"Subject: =?utf-8?q?caf=C3=A9?=",
                b" , folded@example.test",
            ]
        ),
        max_size=8,
    )
)
def test_prepare_reads_the_header_block_as_the_message_model_does(lines: list[bytes]) -> None:
    raw = b"\r\n".join(lines) + b"\r\n\r\nbody\r\n"
    view = Message(raw)
    listed = [a.email for a in (*view.to, *view.cc, *view.bcc)]
    try:
        envelope = prepare(raw)
    except InvalidAddress:
        assert not listed
        return
    expected: dict[str, str] = {}
    for address in listed:  # deduplicated with the domain compared case-insensitively
        local, _, domain = address.rpartition("@")
        expected.setdefault(f"{local}@{domain.lower()}", address)
    assert envelope.recipients == tuple(expected.values())
    senders = [a.email for a in parse_addresses(view.headers.get_all("Sender")) if a.email]
    author = view.from_.email if view.from_ else ""
    assert envelope.mail_from == (senders[0] if senders else author)
    if view.message_id is not None:
        assert envelope.message_id == view.message_id
    assert "Date" in Message(envelope.data).headers
    assert envelope.data.endswith(b"\r\n\r\nbody\r\n")


def test_address_forms() -> None:
    message = compose(
        from_=Address("Alice", "alice@example.test"),
        to=("a@example.test", "b@example.test"),  # two addresses, not (name, address)
        cc="c@example.test, Dee <d@example.test>",
        bcc=[("Eve", "e@example.test")],
        reply_to="replies@example.test",
        subject="s",
        text="t",
    )
    received = round_trip(message)
    assert received.from_ == Address("Alice", "alice@example.test")
    assert [a.email for a in received.to] == ["a@example.test", "b@example.test"]
    assert received.cc == (Address("", "c@example.test"), Address("Dee", "d@example.test"))
    assert received.bcc == (Address("Eve", "e@example.test"),)
    assert received.reply_to == (Address("", "replies@example.test"),)
    single = round_trip(compose(from_=FROM, to=("Bob", "bob@example.test"), subject="s"))
    assert single.to == (Address("Bob", "bob@example.test"),)


def test_address_argument_errors() -> None:
    with pytest.raises(InvalidAddress, match="exactly one"):
        compose(from_="a@example.test, b@example.test", to=TO, subject="s")
    with pytest.raises(InvalidAddress, match="recipient"):
        compose(from_=FROM, to=[], subject="s")
    with pytest.raises(InvalidAddress):
        compose(from_=FROM, to="Doe, John <j@example.test>", subject="s")  # unquoted comma
    with pytest.raises(InvalidAddress):
        compose(from_=FROM, to=[42], subject="s")  # type: ignore[list-item]


# -- header injection ------------------------------------------------------------------------

BREAKS = ["\r", "\n", "\r\n", "\x00", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029"]


@pytest.mark.reliability(
    area="Sending",
    fault="header injection through compose(): every line break str.splitlines knows, and NUL, "
    "in the subject, names, addresses, custom headers and their names, attachment names "
    "and types, the Message-ID and inline Content-IDs",
    outcome="ConfigError or InvalidAddress; no message is built",
)
@pytest.mark.parametrize("brk", BREAKS, ids=repr)
def test_line_breaks_are_refused_everywhere(brk: str) -> None:
    injected = f"x{brk}Bcc: victim@example.test"
    cases: list[tuple[type[Exception], dict[str, Any]]] = [
        (ConfigError, {"subject": injected}),
        (InvalidAddress, {"from_": (injected, "alice@example.test")}),
        (InvalidAddress, {"to": f"{injected} <bob@example.test>"}),
        (InvalidAddress, {"to": ("Bob", f"bob@example.test{brk}")}),
        (InvalidAddress, {"cc": [(injected, "c@example.test")]}),
        (InvalidAddress, {"reply_to": f"r@example.test{brk}Bcc: v@example.test"}),
        (ConfigError, {"headers": {"X-Custom": injected}}),
        (ConfigError, {"headers": {f"X{brk}Bcc": "v"}}),
        (ConfigError, {"attachments": [(f"a{brk}.txt", b"", "text/plain")]}),
        (ConfigError, {"attachments": [("a.txt", b"", f"text/plain{brk}Bcc: v")]}),
        (ConfigError, {"message_id": f"id@example.test{brk}Bcc: v"}),
        (ConfigError, {"html": "<p>", "inline": {f"cid{brk}x": ("a", b"", "image/gif")}}),
    ]
    for error, arguments in cases:
        base: dict[str, Any] = {"from_": FROM, "to": TO, "subject": "s", "text": "t"}
        base.update(arguments)
        with pytest.raises(error):
            compose(**base)


@pytest.mark.parametrize("name", ["", "X Space", "X:Colon", "Ünïcode", "X\tTab"])
def test_bad_header_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigError):
        compose(from_=FROM, to=TO, subject="s", headers={name: "v"})


def test_unencodable_text_is_refused() -> None:
    with pytest.raises(ConfigError):
        compose(from_=FROM, to=TO, subject="\udce9")


def test_bad_attachment_specs() -> None:
    for spec in [("a", b"x"), ("a", "text", "text/plain"), ("a", b"x", "nosubtype"), 42]:
        with pytest.raises(ConfigError):
            compose(from_=FROM, to=TO, subject="s", attachments=[spec])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="cannot read"):
        compose(from_=FROM, to=TO, subject="s", attachments=["/nonexistent/file.pdf"])


# -- round trip ------------------------------------------------------------------------------

printable = st.characters(blacklist_categories=["Cc", "Cs", "Zl", "Zp"])
# A 2-tuple whose first item holds "@" means two addresses (see compose's docstring).
names = st.text(printable, max_size=30).map(str.strip).filter(lambda name: "@" not in name)
local_parts = st.from_regex(r"[a-z0-9]{1,10}(\.[a-z0-9]{1,5})?", fullmatch=True)
addresses = st.builds(lambda local: f"{local}@example.test", local_parts)
bodies = st.text(st.characters(blacklist_categories=["Cs"]), max_size=300)
files = st.tuples(
    st.text(printable, min_size=1, max_size=20).filter(lambda s: s.strip() == s and s != ""),
    st.binary(max_size=300),
    st.sampled_from(["application/pdf", "image/png", "application/octet-stream", "text/csv"]),
)


def expected_body(text: str) -> str:
    normal = text.replace("\r\n", "\n").replace("\r", "\n")
    return normal if normal.endswith("\n") else normal + "\n"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    subject=st.text(printable, max_size=120),
    author=st.tuples(names, addresses),
    recipients=st.lists(st.tuples(names, addresses), min_size=1, max_size=4),
    text=bodies,
    html=st.none() | bodies,
    attachments=st.lists(files, max_size=3),
)
def test_round_trip(
    subject: str,
    author: tuple[str, str],
    recipients: list[tuple[str, str]],
    text: str,
    html: str | None,
    attachments: list[tuple[str, bytes, str]],
) -> None:
    message = compose(
        from_=author,
        to=recipients,
        subject=subject,
        text=text,
        html=html,
        attachments=attachments,
    )
    received = Message.from_email(message)
    assert received.subject == subject.strip()
    assert received.from_ == Address(*author)
    assert list(received.to) == [Address(*recipient) for recipient in recipients]
    assert received.text == expected_body(text)
    assert received.html == (expected_body(html) if html is not None else "")
    assert [(a.filename, a.data, a.content_type) for a in received.attachments] == [
        (name, data, ctype) for name, data, ctype in attachments
    ]
    envelope = prepare(message)
    assert list(envelope.recipients) == list(dict.fromkeys(email for _, email in recipients))


# -- prepare ---------------------------------------------------------------------------------


def test_prepare_strips_bcc_but_keeps_the_recipient() -> None:
    message = compose(
        from_=FROM,
        to=TO,
        cc="carol@example.test",
        bcc=["Secret <secret@example.test>", "bob@EXAMPLE.TEST"],
        subject="s",
        text="t",
    )
    envelope = prepare(message)
    assert envelope.recipients == ("bob@example.test", "carol@example.test", "secret@example.test")
    assert b"secret@example.test" not in envelope.data
    assert b"\r\nBcc:" not in envelope.data
    assert envelope.mail_from == "alice@example.test"
    assert message["Bcc"] is not None  # the caller's message is left alone
    received = Message(envelope.data)
    assert received.bcc == ()
    assert received.message_id == envelope.message_id


def test_prepare_keeps_the_bytes_it_was_given() -> None:
    raw = (
        b"From: a@example.test\r\nTo: b@example.test\r\nBcc: hidden@example.test,\r\n"
        b" other@example.test\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n"
        b"Message-ID: <keep@example.test>\r\nDate: Tue, 02 Apr 2024 12:00:00 +0000\r\n"
        b"DKIM-Signature: v=1; a=rsa-sha256;\r\n\tb=abc\r\n\r\nbody line\r\n"
    )
    envelope = prepare(raw)
    assert envelope.data == raw.replace(
        b"Bcc: hidden@example.test,\r\n other@example.test\r\n", b""
    )
    assert envelope.recipients == (
        "b@example.test",
        "hidden@example.test",
        "other@example.test",
    )
    assert envelope.message_id == "keep@example.test"
    assert (envelope.needs_smtputf8, envelope.eight_bit) == (False, False)


def test_prepare_adds_message_id_and_date_and_fixes_line_endings() -> None:
    envelope = prepare(
        b"From: a@example.test\nTo: b@example.test\nresent-bcc: r@example.test\n\nx\n"
    )
    received = Message(envelope.data)
    assert envelope.message_id
    assert received.message_id == envelope.message_id
    assert envelope.message_id.endswith("@example.test")
    assert received.date is not None
    assert b"\n" not in envelope.data.replace(b"\r\n", b"")
    assert b"r@example.test" not in envelope.data
    assert envelope.data.endswith(b"\r\n\r\nx\r\n")


def test_prepare_recipients_from_encoded_names_with_commas() -> None:
    raw = (
        b"From: =?utf-8?q?Doe=2C_Jane?= <jane@example.test>\r\n"
        b'To: =?utf-8?q?Doe=2C_John?= <john@example.test>, "Roe, R" <r@example.test>\r\n'
        b"\r\nbody\r\n"
    )
    envelope = prepare(raw)
    assert envelope.recipients == ("john@example.test", "r@example.test")
    assert envelope.mail_from == "jane@example.test"


def test_prepare_overrides_and_dedupe() -> None:
    message = compose(from_=FROM, to=TO, subject="s", text="t")
    envelope = prepare(
        message,
        mail_from="<bounces@example.test>",
        rcpt_to=["x@example.test", "x@EXAMPLE.test", " y@example.test "],
    )
    assert envelope.mail_from == "bounces@example.test"
    assert envelope.recipients == ("x@example.test", "y@example.test")
    assert prepare(message, mail_from="").mail_from == ""  # the null sender
    with pytest.raises(InvalidAddress):
        prepare(message, rcpt_to=[])
    with pytest.raises(InvalidAddress):
        prepare(message, rcpt_to=["not an address"])
    with pytest.raises(InvalidAddress):
        prepare(b"From: a@example.test\r\nSubject: nobody\r\n\r\nx")


def test_prepare_eight_bit_and_smtputf8() -> None:
    ascii_message = compose(from_=FROM, to=TO, subject="Grüße", text="plain ascii")
    assert (prepare(ascii_message).needs_smtputf8, prepare(ascii_message).eight_bit) == (
        False,
        False,
    )
    eight_bit = compose(from_=FROM, to=TO, subject="s", text="Grüße")
    assert (prepare(eight_bit).needs_smtputf8, prepare(eight_bit).eight_bit) == (False, True)
    raw_utf8_header = b"From: a@example.test\r\nTo: b@example.test\r\nSubject: caf\xc3\xa9\r\n\r\nx"
    assert prepare(raw_utf8_header).needs_smtputf8
    assert prepare(b"From: a@example.test\r\nTo: b@example.test\r\n\r\nx", rcpt_to=["é@x.test"])


def test_prepare_accepts_every_message_form() -> None:
    message = compose(from_=FROM, to=TO, subject="s", text="t")
    from_email = prepare(message)
    from_bytes = prepare(as_bytes(message))
    from_model = prepare(Message.from_email(message))
    assert from_email.data == from_bytes.data == from_model.data
    legacy = EmailMessage(policy=email.policy.compat32)
    legacy["From"] = "a@example.test"
    legacy["To"] = "b@example.test"
    legacy.set_payload("x")
    assert prepare(legacy).recipients == ("b@example.test",)
    with pytest.raises(ConfigError, match="headers_only"):
        prepare(Message(as_bytes(message), headers_only=True))


def test_prepare_drops_an_mbox_envelope_line_and_handles_headerless_input() -> None:
    raw = (
        b"From MAILER-DAEMON Tue Apr  2 12:00:00 2024\n"
        b"From: a@example.test\nTo: b@example.test\n\nx"
    )
    envelope = prepare(raw)
    assert envelope.data.startswith(b"From: a@example.test\r\n")
    headerless = prepare(b"\r\nbody only\r\n", mail_from="", rcpt_to=["b@example.test"])
    received = Message(headerless.data)
    assert received.message_id == headerless.message_id
    assert received.text == "body only\n"
    only_headers = prepare(b"To: b@example.test")
    assert Message(only_headers.data).to == (Address("", "b@example.test"),)
    with pytest.raises(ConfigError, match="no header field"):
        prepare(b"To: b@example.test\r\nnot a header\r\nBcc: secret@example.test\r\n\r\nx")


@pytest.mark.reliability(
    area="Sending",
    fault="raw messages mangled at random before prepare() (hypothesis)",
    outcome="a MailsyncError, or an envelope with recipients, no Bcc line, CRLF only, and the "
    "Message-ID the recipient reads",
)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(
        [
            b"From: a@example.test\r\nTo: b@example.test, =?utf-8?q?C=2C_D?= <c@example.test>\r\n"
            b"Bcc: e@example.test\r\nSubject: s\r\n\r\nbody\r\n",
            b'From: a@example.test\nCc: "x, y" <c@example.test>\nMessage-ID: <m@x>\n\nb',
        ]
    ),
    st.lists(st.tuples(st.integers(0, 200), st.binary(min_size=1, max_size=8)), max_size=4),
)
def test_prepare_on_mangled_input_raises_only_mailsync_errors(
    raw: bytes, edits: list[tuple[int, bytes]]
) -> None:
    data = bytearray(raw)
    for position, junk in edits:
        data[position : position + len(junk)] = junk
    try:
        envelope = prepare(bytes(data))
    except mailsync.MailsyncError:
        return
    assert envelope.recipients
    head = envelope.data.split(b"\r\n\r\n", 1)[0]
    assert not [line for line in head.split(b"\r\n") if line.lower().startswith(b"bcc:")]
    assert b"\n" not in envelope.data.replace(b"\r\n", b"")
    assert Message(envelope.data).message_id == envelope.message_id


def test_prepare_can_keep_bcc_for_transports_that_read_recipients_from_the_message() -> None:
    raw = b"From: a@example.test\r\nTo: b@example.test\r\nBcc: hidden@example.test\r\n\r\nhi\r\n"
    dropped = prepare(raw)
    kept = prepare(raw, keep_bcc=True)
    assert b"hidden@" not in dropped.data
    assert b"Bcc: hidden@example.test\r\n" in kept.data
    assert kept.recipients == dropped.recipients == ("b@example.test", "hidden@example.test")


@pytest.mark.parametrize(
    ("typed", "quoted"),
    [
        ("not an address", "'not an address'"),
        ("bob@@example.test", "'bob@@example.test'"),
        ("Bob <bob@@example.test>", "'Bob <bob@@example.test>'"),
        ("a@example.test, c", "'c' in 'a@example.test, c'"),
        ("Bob <>", "'Bob <>'"),
    ],
)
def test_address_errors_quote_what_was_typed(typed: str, quoted: str) -> None:
    with pytest.raises(InvalidAddress) as info:
        compose(from_="me@example.test", to=typed, subject="x")
    assert f"invalid email address {quoted}" in str(info.value)
    assert ":" in str(info.value).split(quoted, 1)[1]  # and why


@pytest.mark.parametrize(
    ("typed", "what"),
    [
        ("Bob <bob@example.test", "'<' without a closing '>'"),
        ("<bob@example.test", "'<' without a closing '>'"),
        ("bob@example.test>", "'>' without an opening '<'"),
        ('"Bob <bob@example.test>', "without its closing"),
        ("bob@example.test (Bob", "'(' without a closing ')'"),
    ],
)
def test_unbalanced_addresses_are_errors_not_repaired(typed: str, what: str) -> None:
    """The stdlib parser silently completed these; the user meant something else."""
    for field in ("to", "cc", "from_"):
        arguments = {"from_": "me@example.test", "to": "you@example.test", field: typed}
        with pytest.raises(InvalidAddress) as info:
            compose(subject="x", **arguments)  # type: ignore[arg-type]
        assert repr(typed) in str(info.value)
        assert what in str(info.value)


def test_balanced_punctuation_in_names_is_fine() -> None:
    message = compose(
        from_='"Smith, J. <Sales>" <j@example.test>',
        to=["Alice (work) <a@example.test>", " b@example.test "],
        subject="x",
    )
    assert Message(message.as_bytes()).from_ == Address("Smith, J. <Sales>", "j@example.test")
    assert [a.email for a in Message(message.as_bytes()).to] == ["a@example.test", "b@example.test"]
