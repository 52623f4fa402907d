"""Message.reply() and Message.forward(): recipients, subject, thread, quoting, attachments."""

from __future__ import annotations

import pytest

import mailsync
from mailsync import Address, Message
from mailsync._reply import forward_subject, reply_subject
from tests.servers import Account, MailServers

ORIGINAL = (
    b"From: Alice <alice@example.test>\r\n"
    b"To: Bob <bob@example.test>, carol@example.test\r\n"
    b"Cc: Dave <dave@example.test>, BOB@EXAMPLE.TEST\r\n"
    b"Delivered-To: bob@example.test\r\n"
    b"Subject: AW: Re[2]: Lunch\r\n"
    b"Date: Tue, 01 Dec 2026 12:30:00 +0100\r\n"
    b"Message-ID: <m3@example.test>\r\n"
    b"In-Reply-To: <m2@example.test>\r\n"
    b"References: <m1@example.test> <m2@example.test>\r\n"
    b"\r\n"
    b"Noon?\r\n> earlier quote\r\n\r\nAlice\r\n"
)


def parsed(message: object) -> Message:
    return Message.from_email(message)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Lunch", "Re: Lunch"),
        ("Re: Lunch", "Re: Lunch"),
        ("RE: re: Lunch", "Re: Lunch"),
        ("AW: Re[2]: Lunch", "Re: Lunch"),
        ("Re(3): Lunch", "Re: Lunch"),
        ("RE : Lunch", "Re: Lunch"),  # French spacing
        ("SV: VS: Lunch", "Re: Lunch"),
        ("回复：Lunch", "Re: Lunch"),
        ("Fwd: Lunch", "Re: Fwd: Lunch"),  # a reply to a forward says so
        ("Return: policy", "Re: Return: policy"),  # a word with a colon, not a prefix
        ("Re:", "Re:"),
        ("", "Re:"),
    ],
)
def test_reply_subjects_never_stack(subject: str, expected: str) -> None:
    assert reply_subject(subject) == expected


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Lunch", "Fwd: Lunch"),
        ("Fwd: Lunch", "Fwd: Lunch"),
        ("WG: FW: Lunch", "Fwd: Lunch"),
        ("TR: Lunch", "Fwd: Lunch"),
        ("Re: Lunch", "Fwd: Re: Lunch"),
    ],
)
def test_forward_subjects_never_stack(subject: str, expected: str) -> None:
    assert forward_subject(subject) == expected


def test_reply_goes_to_the_sender_and_keeps_the_thread() -> None:
    reply = parsed(Message(ORIGINAL).reply("Yes!"))
    assert reply.from_ == Address("Bob", "bob@example.test")  # from Delivered-To
    assert [a.email for a in reply.to] == ["alice@example.test"]
    assert reply.cc == ()
    assert reply.subject == "Re: Lunch"
    assert reply.in_reply_to == "m3@example.test"
    assert reply.references == ("m1@example.test", "m2@example.test", "m3@example.test")
    assert reply.message_id
    assert reply.message_id != "m3@example.test"


def test_reply_quotes_the_original_below_the_answer() -> None:
    text = parsed(Message(ORIGINAL).reply("Yes!")).text
    assert text.startswith("Yes!\n\nOn Tue, 01 Dec 2026 12:30:00 +0100, Alice <alice@example.test>")
    assert "> Noon?\n>> earlier quote\n>\n> Alice" in text
    bare = parsed(Message(ORIGINAL).reply("Yes!", quote=False)).text
    assert bare == "Yes!\n"


def test_reply_all_copies_everyone_but_me_once() -> None:
    reply = parsed(Message(ORIGINAL).reply("Yes!", all=True, cc="eve@example.test"))
    assert [a.email for a in reply.to] == ["alice@example.test"]
    assert [a.email for a in reply.cc] == [
        "carol@example.test",
        "dave@example.test",
        "eve@example.test",
    ]


def test_reply_to_header_wins_and_my_own_message_goes_to_its_recipients() -> None:
    with_reply_to = ORIGINAL.replace(b"Subject:", b"Reply-To: list@example.test\r\nSubject:")
    assert [a.email for a in parsed(Message(with_reply_to).reply("x")).to] == ["list@example.test"]
    mine = Message(ORIGINAL).reply("x", from_="alice@example.test")
    assert [a.email for a in parsed(mine).to] == ["bob@example.test", "carol@example.test"]


def test_reply_without_a_known_me_asks_for_from() -> None:
    raw = ORIGINAL.replace(b"Delivered-To: bob@example.test\r\n", b"")
    with pytest.raises(mailsync.ConfigError, match="from_"):
        Message(raw).reply("x")
    assert parsed(Message(raw).reply("x", from_="Carol <carol@example.test>")).from_ == Address(
        "Carol", "carol@example.test"
    )
    with pytest.raises(mailsync.ConfigError, match="headers_only"):
        Message(raw, headers_only=True).reply("x", from_="c@example.test")


def test_html_reply_quotes_the_html_and_keeps_its_images() -> None:
    original = mailsync.compose(
        from_="alice@example.test",
        to="bob@example.test",
        subject="Chart",
        text="see chart",
        html='<html><body><p>See <img src="cid:chart@x"></p></body></html>',
        inline={"chart@x": ("chart.png", b"\x89PNG...", "image/png")},
    )
    reply = parsed(Message.from_email(original).reply("ok", html="<p>ok</p>"))
    assert reply.html.startswith("<p>ok</p>")
    assert '<blockquote type="cite"' in reply.html
    assert '<p>See <img src="cid:chart@x"></p>' in reply.html
    assert "<body>" not in reply.html
    assert [(a.content_id, a.data) for a in reply.attachments] == [("chart@x", b"\x89PNG...")]
    assert "> see chart" in reply.text


def test_a_html_only_original_is_quoted_as_text() -> None:
    original = mailsync.compose(
        from_="alice@example.test",
        to="bob@example.test",
        subject="News",
        html="<html><head><style>p{}</style></head><body><p>Line one</p><p>Line &amp; two"
        "<br>three</p><script>x()</script></body></html>",
    )
    text = parsed(Message.from_email(original).reply("ok")).text
    assert "> Line one\n>\n> Line & two\n> three" in text
    assert "x()" not in text
    assert "p{}" not in text


def test_forward_attaches_the_original_unchanged() -> None:
    forward = Message(ORIGINAL).forward("eve@example.test", "FYI")
    sent = parsed(forward)
    assert sent.subject == "Fwd: AW: Re[2]: Lunch"
    assert [a.email for a in sent.to] == ["eve@example.test"]
    assert sent.references == ("m1@example.test", "m2@example.test", "m3@example.test")
    assert sent.in_reply_to is None
    assert sent.text == "FYI\n"
    (attached,) = sent.attachments
    assert attached.content_type == "message/rfc822"
    assert attached.data == ORIGINAL
    assert attached.filename == "AW_ Re[2]_ Lunch.eml"
    assert b"Content-Transfer-Encoding: 7bit" in sent.raw


def test_forward_inline_quotes_with_a_heading_and_keeps_attachments() -> None:
    original = mailsync.compose(
        from_="alice@example.test",
        to="bob@example.test",
        subject="Report",
        text="attached",
        attachments=[("report.pdf", b"%PDF-1.7", "application/pdf")],
    )
    forward = Message.from_email(original).forward("eve@example.test", "see", attach=False)
    sent = parsed(forward)
    assert "---------- Forwarded message ----------" in sent.text
    assert "From: alice@example.test" in sent.text
    assert "Subject: Report" in sent.text
    assert sent.text.rstrip().endswith("attached")
    assert [(a.filename, a.data) for a in sent.attachments] == [("report.pdf", b"%PDF-1.7")]


def test_reply_travels_through_a_real_server_threaded(
    mail_servers: MailServers, account: Account, other_account: Account
) -> None:
    """Reply built from what IMAP returned, sent over SMTP, read back: the thread holds."""
    mail_servers.deliver(
        account,
        b"From: "
        + other_account.email.encode()
        + b"\r\nTo: "
        + account.email.encode()
        + b"\r\nSubject: Question\r\nMessage-ID: <q1@example.test>\r\n\r\nWhen?\r\n",
    )
    url = f"imap://{account.user}@{mail_servers.host}:{mail_servers.imap_port}"
    with mailsync.connect(url, password=account.password, verify=mail_servers.cafile) as box:
        (question,) = list(box.messages())
    reply = question.reply("Tomorrow.")  # Dovecot's LMTP adds Delivered-To: that is me
    smtp = f"smtp://{account.user}@{mail_servers.host}:{mail_servers.submission_port}"
    with mailsync.sender(smtp, password=account.password, verify=mail_servers.cafile) as out:
        out.send(reply)
    other = f"imap://{other_account.user}@{mail_servers.host}:{mail_servers.imap_port}"
    found: list[Message] = []

    def arrived() -> bool:
        with mailsync.connect(
            other, password=other_account.password, verify=mail_servers.cafile
        ) as box:
            found[:] = list(box.messages())
        return bool(found)

    mail_servers.wait_for(arrived, timeout=60)
    (answer,) = found
    assert answer.subject == "Re: Question"
    assert answer.in_reply_to == "q1@example.test"
    assert answer.references == ("q1@example.test",)
    assert answer.from_ is not None
    assert answer.from_.email == account.email
    assert "> When?" in answer.text
