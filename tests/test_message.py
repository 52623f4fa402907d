"""Unit tests of the Message model on tricky MIME.

The corpus in ``tests/data/mime/`` (described in its README) holds hand-made samples of broken
and exotic mail; every sample must give a value for every attribute, and most have exact
expectations here. A hypothesis test mutates the samples and checks that reading still never
raises. No server is needed.
"""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mailsync
from mailsync import Address, Attachment, HeaderMap, Message
from mailsync._message import parse_addresses, split_body
from mailsync._mime import (
    decode_bytes,
    decode_header_value,
    parse_date,
    split_params,
    text_codec,
)
from mailsync._mime_body import decode_transfer
from tests.scaling import growth

CORPUS = Path(__file__).parent / "data" / "mime"
SAMPLES = sorted(CORPUS.glob("*.eml"))
ADDRESS_FIELDS = ("to", "cc", "bcc", "reply_to")


def load(name: str) -> Message:
    return Message.from_bytes((CORPUS / name).read_bytes())


def assert_text(value: object) -> None:
    """A str that is valid Unicode: no lone surrogates left over from 8-bit bytes."""
    assert isinstance(value, str)
    value.encode("utf-8")


def read_everything(message: Message) -> dict[str, Any]:
    """Read every attribute and check its type; raise on the first broken one."""
    headers = message.headers
    assert isinstance(headers, HeaderMap)
    for name in headers:
        assert_text(name)
        for value in headers.get_all(name):
            assert_text(value)
            assert "\r" not in value
            assert "\n" not in value
    assert_text(message.subject)
    assert "\n" not in message.subject
    assert message.from_ is None or isinstance(message.from_, Address)
    for field in ADDRESS_FIELDS:
        addresses = getattr(message, field)
        assert isinstance(addresses, tuple)
        for address in addresses:
            assert isinstance(address, Address)
            assert_text(address.name)
            assert_text(address.email)
            assert_text(str(address))
    if message.from_ is not None:
        assert_text(message.from_.name)
        assert_text(message.from_.email)
    date = message.date
    assert date is None or (isinstance(date, datetime) and date.tzinfo is not None)
    for identifier in (message.message_id, message.in_reply_to):
        assert identifier is None or isinstance(identifier, str)
    for reference in message.references:
        assert_text(reference)
    for body in (message.text, message.html):
        assert_text(body)
        assert "\r" not in body
    for attachment in message.attachments:
        assert isinstance(attachment, Attachment)
        assert attachment.filename is None or isinstance(attachment.filename, str)
        if attachment.filename is not None:
            assert_text(attachment.filename)
        assert isinstance(attachment.data, bytes)
        assert attachment.size == len(attachment.data)
        assert_text(attachment.content_type)
    assert isinstance(message.email, EmailMessage)
    report = message.delivery_report
    summary = message.as_dict()
    json.dumps(summary, ensure_ascii=False).encode("utf-8")
    assert_text(repr(message))
    assert_text(message.identity)
    return {"summary": summary, "report": report}


# -- the corpus -----------------------------------------------------------------------------


@pytest.mark.reliability(
    area="Message parsing",
    fault="malformed and exotic MIME from tests/data/mime (bad charsets, broken base64 and "
    "quoted-printable, missing and wrong boundaries, truncated multiparts, NUL bytes, "
    "bare CR line endings, binary garbage...)",
    outcome="every attribute of the Message gives a value of its type, never an exception; "
    "every string is valid Unicode",
)
@pytest.mark.parametrize("path", SAMPLES, ids=[p.name for p in SAMPLES])
def test_corpus_sample_reads_without_error(path: Path) -> None:
    read_everything(Message.from_bytes(path.read_bytes()))


def test_corpus_is_documented() -> None:
    readme = (CORPUS / "README.md").read_text(encoding="utf-8")
    undocumented = [p.name for p in SAMPLES if f"`{p.name}`" not in readme]
    assert not undocumented, f"describe these samples in {CORPUS / 'README.md'}"
    assert len(SAMPLES) >= 30


CHARSET_SAMPLES = {
    "utf-8": "Grüße, 世界 ✓",
    "iso-8859-1": "Café crème",
    "iso-8859-2": "Żółć łódź",
    "iso-8859-15": "Prix: 10 €",
    "windows-1251": "Привет мир",
    "windows-1252": "“Smart” – quotes",
    "koi8-r": "Съешь же ещё",
    "shift_jis": "日本語のテスト",
    "iso-2022-jp": "こんにちは世界",
    "euc-kr": "안녕하세요",
    "gb2312": "你好世界",
    "gbk": "中文測試",
    "gb18030": "𠀀汉字",
    "big5": "繁體中文",
}


def test_encoded_words_in_many_charsets() -> None:
    message = load("encoded-words-charsets.eml")
    assert message.subject == "Grüße, 世界 ✓"
    for charset, expected in CHARSET_SAMPLES.items():
        assert message.headers[f"x-charset-{charset}"] == expected, charset


@pytest.mark.parametrize("charset", sorted(CHARSET_SAMPLES))
@pytest.mark.parametrize("encoding", ["B", "Q"])
def test_encoded_word_and_body_round_trip(charset: str, encoding: str) -> None:
    expected = CHARSET_SAMPLES[charset]
    data = expected.encode(charset)
    if encoding == "B":
        word = f"=?{charset}?B?{base64.b64encode(data).decode()}?="
    else:
        word = f"=?{charset}?Q?" + "".join(f"={b:02X}" for b in data) + "?="
    raw = (
        f"Subject: {word}\r\nFrom: {word} <a@example.test>\r\n"
        f"Content-Type: text/plain; charset={charset}\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    ).encode() + data
    message = Message(raw)
    assert message.subject == expected
    assert message.from_ == Address(expected, "a@example.test")
    assert message.text == expected


def test_adjacent_encoded_words_are_joined() -> None:
    message = load("encoded-words-adjacent.eml")
    # A UTF-8 character split across two words, words folded onto two lines.
    assert message.subject == "ééé and plain text"
    assert message.headers["X-Split-Q"] == "Grüße"
    assert message.headers["X-Mixed-Charsets"] == "café naïve"
    assert message.headers["X-Kept-Space"] == "a b c"
    assert message.headers["X-Lang-Tag"] == "tagged"
    assert message.headers["X-Not-A-Word"] == "=?utf-8?x?nope?= stays"


def test_addresses_split_before_names_are_decoded() -> None:
    message = load("addresses-tricky.eml")
    assert message.from_ == Address("Jörg Müller", "jorg@example.test")
    assert message.to == (
        Address("Doe, John", "john@example.test"),
        Address("Smith, Ann", "ann@example.test"),
        Address("", "plain@example.test"),
    )
    assert message.cc == (Address("", "x@example.test"), Address("André", "andre@example.test"))
    assert message.bcc == (Address("Иван", "ivan@example.test"),)
    assert message.reply_to == (Address("", "reply@example.test"),)
    assert message.as_dict()["to"][0] == '"Doe, John" <john@example.test>'


def test_raw_8bit_headers_mixing_utf8_and_latin1() -> None:
    message = load("headers-8bit.eml")
    assert message.subject == "café crème brûlée"
    assert message.from_ == Address("Jörg Müller", "jorg@example.test")
    assert message.to == (Address("André", "andre@example.test"),)
    assert message.text == "naïve body\n"


def test_unknown_and_hostile_charsets_fall_back() -> None:
    message = load("charsets-unknown.eml")
    assert message.subject == "caféabcxn--"
    assert message.text == "naïve café"
    assert message.html == "<p>café</p>"
    assert [a.filename for a in message.attachments] == ["notes.txt"]


@pytest.mark.parametrize(
    "charset",
    ["idna", "undefined", "punycode", "base64", "zlib", "utf-8\x00", "x" * 300, "", None, "rot13"],
)
def test_decode_bytes_never_raises(charset: str | None) -> None:
    assert_text(decode_bytes(b"caf\xc3\xa9 \xff" * 40, charset))
    assert decode_bytes("café".encode(), charset) == "café"


@pytest.mark.parametrize(
    ("label", "codec"),
    [
        ("ISO-8859-1", "cp1252"),
        ("shift_jis", "cp932"),
        ("gb2312", "gb18030"),
        ("ks_c_5601-1987", "cp949"),
        ("windows-1251", "cp1251"),
        ("cp-1252", "cp1252"),
        ('"utf-8"', "utf-8"),
        ("utf-8*en", "utf-8"),
        ("unknown-8bit", None),
        ("x-bogus", None),
        ("undefined", None),
    ],
)
def test_charset_labels_map_to_what_mail_clients_use(label: str, codec: str | None) -> None:
    assert text_codec(label) == codec


def test_rfc2231_and_other_file_names() -> None:
    message = load("rfc2231-filenames.eml")
    assert message.text == "See the attachments."
    assert [a.filename for a in message.attachments] == [
        "été report.pdf",
        "résumé long name à la suite.txt",
        "图片.png",
        "données.csv",
        "C:\\Users\\bob\\archive.zip",
        "notes.txt",
    ]
    assert message.attachments[0].data == b"%PDF-1.4\n"
    assert message.attachments[3].data == b"a,b\r\n1,2"
    assert message.attachments[-1].inline


def test_split_params_rfc2231_continuations_and_quotes() -> None:
    main, params = split_params(
        'Attachment; filename*0*=utf-8\'\'a%20b; filename*1="; c"; FileName="ignored"; '
        'x="q\\"uote"; y=unquoted value ; bad; =empty'
    )
    assert main == "attachment"
    assert params["filename"] == "a b; c"
    assert params["x"] == 'q"uote'
    assert params["y"] == "unquoted value"
    assert "bad" not in params


def test_rfc2231_value_with_raw_8bit_bytes() -> None:
    # Found by the mutation fuzzer: percent-decoding choked on an undecodable byte.
    raw = b"Content-Disposition: attachment; filename*=utf-8''\xe9t\xc3\xa9%20x.txt\r\n\r\nx"
    _, params = split_params(Message(raw)._raw_values("Content-Disposition")[0])
    assert params["filename"] == "\ufffdté x.txt"


def test_nested_mixed_alternative_related() -> None:
    message = load("nested-mixed-alternative-related.eml")
    assert message.text == "Hello in plain text ✓\nSecond line"
    assert message.html == '<p>Hello <img src="cid:logo@example.test"></p>'
    image, pdf = message.attachments
    assert (image.content_type, image.content_id, image.inline, image.filename) == (
        "image/png",
        "logo@example.test",
        True,
        None,
    )
    assert image.data.startswith(b"\x89PNG")
    assert (pdf.filename, pdf.inline, pdf.data[:4]) == ("report.pdf", False, b"%PDF")
    assert message.date == datetime(2024, 4, 3, 8, 30, tzinfo=timezone(timedelta(hours=-7)))


def test_attached_messages_are_attachments_not_bodies() -> None:
    message = load("message-rfc822-attachment.eml")
    assert message.text == "See the forwarded message."
    assert message.html == ""
    first, second = message.attachments
    assert (first.content_type, first.filename) == ("message/rfc822", "original.eml")
    inner = Message(first.data)
    assert inner.subject == "the original"
    assert inner.message_id == "original@example.test"
    assert inner.text.startswith("The original body")
    assert Message(second.data).html == "<p>inner html must not become the outer html</p>"


def test_attached_message_with_base64_transfer_encoding() -> None:
    (attached,) = load("message-rfc822-base64.eml").attachments
    assert Message(attached.data).subject == "inner via base64"


def test_inline_image_by_disposition() -> None:
    message = load("inline-image-disposition.eml")
    assert message.text == ""
    assert message.html == "<p>see below</p>"
    (image,) = message.attachments
    assert (image.inline, image.content_id, image.filename) == (True, "dot", "dot.gif")
    assert image.data.startswith(b"GIF89a")


@pytest.mark.parametrize(
    "name", ["line-endings-lf.eml", "line-endings-bare-cr.eml", "line-endings-mixed.eml"]
)
def test_text_has_newline_line_endings_whatever_the_wire(name: str) -> None:
    message = load(name)
    assert "\r" not in message.text
    if name == "line-endings-mixed.eml":
        assert message.text == "a\nb\nc\nd\n"
    else:
        assert message.text == "one\ntwo\n\nfour"
        assert message.html == "<p>one</p>\n<p>two</p>"
        assert message.subject == "line endings"


@pytest.mark.reliability(
    area="Message parsing",
    fault="a lone CR in a header ('Subject: x\\rBcc: carol@...'); a message with no LF at all",
    outcome="a lone CR ends no line: one Subject field, no Bcc, as Dovecot and Postfix read "
    "it; a message with no LF at all reads as its LF twin",
)
def test_a_lone_cr_ends_no_line_as_servers_read_it() -> None:
    # Dovecot (checked against the real one in tests/smtp/test_header_injection.py) and
    # Postfix end lines at LF only: a "\rBcc:" inside a value starts no field. Reading it
    # otherwise lets a sender's view of who the recipients are differ from the server's.
    injected = Message(b"From: a@x.test\r\nSubject: x\rBcc: carol@x.test\r\n\r\nbody\r\n")
    assert injected.subject == "x Bcc: carol@x.test"
    assert injected.bcc == ()
    assert list(injected.headers) == ["From", "Subject"]
    assert injected.text == "body\n"
    # A message with no LF at all ends its lines with CRs (old Mac mail): it mixes no
    # conventions, and reads as its LF twin (line-endings-bare-cr.eml above).
    cr_only = Message(b"From: a@x.test\rSubject: x\rBcc: carol@x.test\r\rbody\r")
    assert (cr_only.subject, cr_only.bcc, cr_only.text) == (
        "x",
        (Address("", "carol@x.test"),),
        "body\n",
    )


def test_bad_base64_is_decoded_leniently() -> None:
    message = load("bad-base64.eml")
    assert message.subject == "bad padding"
    assert message.text == "Hello world"
    data = {a.filename: a.data for a in message.attachments}
    assert data["concat.bin"] == b"abc"
    assert data["one-char.bin"] == b""
    assert isinstance(data["garbage.bin"], bytes)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"YWJj", b"abc"),
        (b"YWJ", b"ab"),
        (b"Y W\r\nJ j", b"abc"),
        (b"YQ==Yg==", b"ab"),
        (b"!!!", b""),
        (b"Q", b""),
    ],
)
def test_lenient_base64(data: bytes, expected: bytes) -> None:
    assert decode_transfer(data, "base64") == expected


def test_bad_quoted_printable() -> None:
    message = load("bad-quoted-printable.eml")
    assert message.subject == "bad=ZZq=3"
    assert message.text == "Soft break, bad escape =ZZ, good escape é, lower case é, trailing "


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Tue, 02 Apr 2024 12:00:00 +0200", datetime(2024, 4, 2, 10, 0, tzinfo=UTC)),
        ("2 Apr 2024 12:00:00 GMT", datetime(2024, 4, 2, 12, 0, tzinfo=UTC)),
        ("Tue, 2 Apr 2024 12:00:00 -0000", datetime(2024, 4, 2, 12, 0, tzinfo=UTC)),
        ("5 Jan 98 10:00:00", datetime(1998, 1, 5, 10, 0, tzinfo=UTC)),
        ("2024-04-02T12:00:00Z", datetime(2024, 4, 2, 12, 0, tzinfo=UTC)),
        ("Mon, 32 Foo 99999 25:61:61 +9999", None),
        ("Tue, 02 Apr 2024 12:00:00 +9900", None),
        ("yesterday", None),
        ("", None),
        ("\x00", None),
    ],
)
def test_parse_date(value: str, expected: datetime | None) -> None:
    assert parse_date(value) == expected


def test_bad_date_falls_back_to_arrival_time() -> None:
    arrived = datetime(2024, 1, 1, tzinfo=UTC)
    raw = (CORPUS / "bad-date.eml").read_bytes()
    assert Message(raw).date is None
    assert Message(raw, internal_date=arrived).date == arrived
    assert load("date-two-digit-year-no-tz.eml").date == datetime(1998, 1, 5, 10, tzinfo=UTC)


def test_missing_boundary_is_recovered() -> None:
    message = load("missing-boundary.eml")
    assert message.text == "recovered text"
    (data,) = message.attachments
    assert (data.filename, data.data) == ("data.bin", b"\x00\x01\x02")


def test_wrong_boundary_is_recovered() -> None:
    message = load("wrong-boundary.eml")
    assert (message.text, message.html) == ("plain part", "<b>html part</b>")


def test_multipart_without_parts_is_text() -> None:
    message = load("multipart-no-parts.eml")
    assert message.text == "just some text\n-- \nsignature\n"
    assert message.attachments == ()


def test_truncated_multipart_keeps_what_arrived() -> None:
    message = load("truncated-multipart.eml")
    assert message.text == "complete text part"
    (cut,) = message.attachments
    assert cut.filename == "cut.pdf"
    assert cut.data.startswith(b"%PDF-1.4")


def test_nul_bytes() -> None:
    message = load("nul-bytes.eml")
    assert message.subject == "ab"
    assert message.from_ == Address("NulName", "nul@example.test")
    assert message.text == "before\x00after\n"


def test_digest_parts_are_messages() -> None:
    message = load("multipart-digest.eml")
    assert [a.content_type for a in message.attachments] == ["message/rfc822"] * 2
    assert [Message(a.data).subject for a in message.attachments] == ["first", "second"]


def test_delivery_status_attachment_keeps_every_block() -> None:
    message = load("delivery-status-blocks.eml")
    status = message.attachments[0]
    assert status.content_type == "message/delivery-status"
    assert b"one@example.test" in status.data
    assert b"two@example.test" in status.data
    assert b"5.2.2" in status.data


def test_html_only_and_japanese_and_cp932() -> None:
    html_only = load("html-only.eml")
    assert (html_only.text, html_only.html) == ("", "<p>only html ✓</p>\n")
    japanese = load("iso-2022-jp.eml")
    assert japanese.subject == "日本語の件名"
    assert japanese.from_ == Address("山田太郎", "yamada@example.test")
    assert japanese.text == "こんにちは、世界。\n二行目です。\n"
    assert load("shift-jis-mislabelled.eml").text == "①番の丸数字\n"


def test_uuencoded_attachment() -> None:
    (attachment,) = load("uuencode.eml").attachments
    assert (attachment.filename, attachment.data) == ("hello.txt", b"hello uuencode\n")


@pytest.mark.parametrize(
    "name",
    [
        "empty.eml",
        "headers-only-no-blank-line.eml",
        "binary-garbage.eml",
        "not-a-header-first-line.eml",
    ],
)
def test_degenerate_input(name: str) -> None:
    message = load(name)
    read_everything(message)
    if name == "headers-only-no-blank-line.eml":
        assert message.subject == "only headers"
        assert message.text == ""
    if name == "not-a-header-first-line.eml":
        assert message.from_ is None
        assert message.text.startswith("this is not a header")


def test_headers_case_insensitive_read_only_mapping() -> None:
    message = load("headers-case-duplicates.eml")
    headers = message.headers
    assert headers["subject"] == headers["SUBJECT"] == "folded subject with a tab and a space"
    assert len(headers.get_all("Received")) == 3
    assert headers.get_all("received")[2].startswith("from e by f")
    assert headers.get_all("X-Missing") == []
    assert headers.get_all("X-Missing", ["default"]) == ["default"]
    assert headers.get("X-Missing") is None
    assert headers.get("X-Empty") == ""
    assert "from" in headers
    assert "FROM" in headers
    assert 42 not in headers  # type: ignore[comparison-overlap]
    assert list(headers).count("Received") == 1
    assert len(headers) == len({name.lower() for name in headers})
    assert len(headers.items_all()) == 10
    with pytest.raises(TypeError):
        headers["Subject"] = "changed"  # type: ignore[index]
    with pytest.raises(KeyError):
        headers["X-Missing"]
    assert message.message_id == "case@example.test"
    assert message.in_reply_to == "parent@example.test"
    assert message.references == ("grand@example.test", "parent@example.test", "also@example.test")
    assert message.from_ == Address("Lower Case", "lower@example.test")


def test_bad_content_headers() -> None:
    message = load("bad-content-headers.eml")
    assert message.text == "typeless text"
    (attachment,) = message.attachments
    assert (attachment.filename, attachment.data) == (None, b"abc")


def test_decoded_line_breaks_stay_on_one_line() -> None:
    message = load("encoded-newline.eml")
    assert message.subject == "line one line two"
    assert message.from_ == Address("Evil Bcc: x@example.test", "evil@example.test")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain", "plain"),
        ("a\r\n b", "a b"),
        ("a\r\n\tb", "a b"),
        ("=?utf-8?q?a?=\r\n =?utf-8?q?b?=", "ab"),
        ("x=?utf-8?q?a?=y", "xay"),
        ("=?utf-8?b?w6k?=", "é"),  # missing padding
        ("=?utf-8?q?=E9?=", "\ufffd"),  # invalid UTF-8 stays UTF-8, replaced
        ("=?unknown?q?caf=C3=A9?=", "café"),
        ("  spaced  ", "spaced"),
        ("bell\x07 and del\x7f", "bell and del"),
        ("=?utf-8?q?a=0D=0Ab?=", "a b"),
    ],
)
def test_decode_header_value(value: str, expected: str) -> None:
    assert decode_header_value(value) == expected


def test_parse_addresses_salvages_junk() -> None:
    assert parse_addresses(["a@example.test, <b@example.test>"]) == (
        Address("", "a@example.test"),
        Address("", "b@example.test"),
    )
    assert parse_addresses(["undisclosed-recipients:;"]) == ()
    assert parse_addresses([""]) == ()
    for junk in ['"unterminated <a@b', "<<<<>>>>", "@@@", "(((", ","]:
        for address in parse_addresses([junk]):
            assert_text(address.email)


def test_split_body_helper_accepts_any_message_like_value() -> None:
    raw = (CORPUS / "nested-mixed-alternative-related.eml").read_bytes()
    message = Message(raw)
    text, html, attachments = split_body(message.email)
    assert (text, html) == (message.text, message.html)
    assert [a.filename for a in attachments] == [a.filename for a in message.attachments]


# -- the model's own behaviour ---------------------------------------------------------------


def test_message_is_immutable() -> None:
    message = load("html-only.eml")
    with pytest.raises(AttributeError):
        message.subject = "x"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        message.raw = b""
    with pytest.raises(AttributeError):
        del message.folder
    with pytest.raises(TypeError):
        Message("not bytes")  # type: ignore[arg-type]


def test_id_is_derived_lazily_and_replace_keeps_it_right() -> None:
    raw = (CORPUS / "html-only.eml").read_bytes()
    message = Message(bytearray(raw))  # type: ignore[arg-type]
    assert message.raw == raw
    assert message.id.startswith("sha256:")
    assert message.id == Message(raw).id
    assert Message(raw, id="given").id == "given"
    flagged = message.replace(flags={"\\Seen"})
    assert flagged.id == message.id
    assert flagged.seen
    assert not message.seen
    changed = message.replace(raw=raw + b"more")
    assert changed.id != message.id
    assert changed.size == len(raw)  # trimming to the header block keeps the full size
    assert Message(raw, id="kept").replace(raw=b"x").id == "kept"
    assert message == Message(raw)
    assert hash(message) == hash(Message(raw))
    assert Message(raw, flags="\\Seen").flags == frozenset({"\\Seen"})


def test_construction_parses_nothing() -> None:
    """Backends build 10,000s of messages; construction must stay a handful of stores."""
    raw = (CORPUS / "nested-mixed-alternative-related.eml").read_bytes() * 20
    tiny = b"Subject: x\r\n\r\n"

    def build(data: bytes) -> list[Message]:
        return [
            Message(data, id=str(n), folder="INBOX", uid=n, flags=("\\Seen",), size=len(data))
            for n in range(10_000)
        ]

    messages = build(raw)
    unnamed = [Message(raw) for _ in range(10_000)]
    assert all(not m._cache for m in messages)
    assert all(not m._cache for m in unnamed)  # not even hashed until .id is read
    # Nothing may read or copy the bytes: a message thousands of times larger costs the
    # same to build (compared in the same run, so a loaded machine slows both alike).
    ratio = growth(lambda: build(tiny), lambda: build(raw))
    size = len(raw) // len(tiny)
    assert ratio < 5, f"a {size} times larger message took {ratio:.1f} times as long"


def test_reading_a_header_does_not_parse_the_body() -> None:
    raw = (CORPUS / "nested-mixed-alternative-related.eml").read_bytes()
    message = Message(raw)
    assert message.subject == "Nested structure"
    assert "email" not in message._cache
    assert "layout" not in message._cache
    assert message.text
    assert "attachments" not in message._cache  # the bodies alone do not decode attachments


def test_reading_headers_of_a_large_message_does_not_touch_the_body() -> None:
    raw = b"Subject: big\r\nFrom: a@example.test\r\n\r\n" + b"x" * 20_000_000
    messages = [Message(raw) for _ in range(100)]
    start = time.perf_counter()
    assert all(m.subject == "big" and m.from_ is not None for m in messages)
    elapsed = time.perf_counter() - start
    assert elapsed < 0.3, f"100 header reads of a 20 MB message took {elapsed:.2f}s"


def test_delivery_report_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    import mailsync._reports

    def broken(message: object) -> None:
        raise RuntimeError("parser bug")

    monkeypatch.setattr(mailsync._reports, "parse_report", broken)
    assert load("delivery-status-blocks.eml").delivery_report is None


def test_address_str_is_readable_unicode() -> None:
    assert str(Address("Zoë", "z@example.test")) == "Zoë <z@example.test>"
    assert str(Address("", "z@example.test")) == "z@example.test"
    assert str(Address('Doe, "J"', "j@example.test")) == '"Doe, \\"J\\"" <j@example.test>'


# -- hostile sizes and shapes --------------------------------------------------------------

HOSTILE = {
    "long subject of words": b"Subject: " + b"word " * 200_000 + b"\r\n\r\nbody",
    "one huge word": b"Subject: " + b"x" * 1_000_000 + b"\r\n\r\nbody",
    "50,000 encoded words": b"Subject: " + b"=?utf-8?q?a?= " * 50_000 + b"\r\n\r\nbody",
    "20,000 recipients": b"To: "
    + b", ".join(b"User %d <u%d@example.test>" % (n, n) for n in range(20_000))
    + b"\r\n\r\nbody",
    "100,000 references": b"References: "
    + b" ".join(b"<id%d@x>" % n for n in range(100_000))
    + b"\r\n\r\nbody",
    "10,000 parameters": b"Content-Type: text/plain; "
    + b"; ".join(b"p%d=v%d" % (n, n) for n in range(10_000))
    + b"\r\n\r\nbody",
    "10,000 headers": b"".join(b"X-H%d: v\r\n" % n for n in range(10_000)) + b"\r\nbody",
    "nested comments": b"From: " + b"(" * 5_000 + b"a@b" + b")" * 5_000 + b"\r\n\r\n",
    "open quotes": b"To: " + b'"a\\' * 10_000 + b"\r\n\r\n",
    "angle brackets": b"To: " + b"<" * 50_000 + b"\r\n\r\n",
    "5,000 parts": b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
    + b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" * 5_000
    + b"--b--\r\n",
}


def nested_multipart(depth: int) -> bytes:
    opening = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (n, n)
        for n in range(depth)
    )
    closing = b"".join(b"\r\n--b%d--" % n for n in reversed(range(depth)))
    return b"Subject: deep\r\n" + opening + b"Content-Type: text/plain\r\n\r\nhello" + closing


def nested_messages(depth: int) -> bytes:
    body = b"Content-Type: text/plain\r\n\r\nhi\r\n"
    for _ in range(depth):
        body = b"Content-Type: message/rfc822\r\n\r\n" + body
    return b"Subject: deep\r\n" + body


@pytest.mark.reliability(
    area="Parsing cost",
    fault="hostile sizes: a 1 MB word, 200,000 words and 50,000 encoded words in a Subject, "
    "20,000 recipients, 100,000 references, 10,000 parameters and headers, 5,000 nested "
    "comments, open quotes and angle brackets, 5,000 parts",
    outcome="headers, addresses, references, text and attachments all read within 5 s",
)
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_sizes_read_quickly(name: str) -> None:
    message = Message(HOSTILE[name])
    start = time.perf_counter()
    for attribute in ("headers", "subject", "from_", "to", "references", "text", "attachments"):
        getattr(message, attribute)
    message.as_dict()
    repr(message)
    elapsed = time.perf_counter() - start
    assert elapsed < 5.0, f"{name}: {elapsed:.1f}s"


def test_hostile_values_are_right() -> None:
    assert len(Message(HOSTILE["20,000 recipients"]).to) == 20_000
    assert len(Message(HOSTILE["100,000 references"]).references) == 100_000
    assert Message(HOSTILE["50,000 encoded words"]).subject == "a" * 50_000
    assert len(Message(HOSTILE["5,000 parts"]).attachments) == 4_999


@pytest.mark.reliability(
    area="Message parsing",
    fault="multiparts nested absurdly deep",
    outcome="read without recursion errors: deeper than 100 levels is kept whole as one part",
)
@pytest.mark.parametrize("depth", [50, 1_000, 5_000])
def test_absurd_multipart_nesting(depth: int) -> None:
    message = Message(nested_multipart(depth))
    read_everything(message)
    if depth <= 50:
        assert message.text == "hello"


@pytest.mark.reliability(
    area="Message parsing",
    fault="message/rfc822 parts nested absurdly deep",
    outcome="read without recursion errors; the outer attachment is the attached message",
)
@pytest.mark.parametrize("depth", [50, 1_000, 5_000])
def test_absurd_message_nesting(depth: int) -> None:
    message = Message(nested_messages(depth))
    read_everything(message)
    (attached,) = message.attachments
    assert attached.content_type == "message/rfc822"


# -- mutation fuzzing ------------------------------------------------------------------------

SEEDS = [path.read_bytes() for path in SAMPLES if path.stat().st_size < 20_000]
SEEDS.append(
    mailsync.compose(
        from_="Zoë <z@example.test>",
        to=["a@example.test", ("Ann, B", "b@example.test")],
        subject="Grüße ✓",
        text="hello\n",
        html="<p>hello</p>",
        attachments=[("résumé.pdf", b"%PDF-1.4 data", "application/pdf")],
        inline={"logo": ("logo.png", b"\x89PNG", "image/png")},
    ).as_bytes()
)

HEADER_NAMES = [
    b"Subject",
    b"From",
    b"To",
    b"Cc",
    b"Date",
    b"Message-ID",
    b"References",
    b"Content-Type",
    b"Content-Transfer-Encoding",
    b"Content-Disposition",
]
NASTY_VALUES = [
    b"=?utf-8?B?",
    b"=?utf-8?q?=E2=82?=",
    b"=?x?q?=?=",
    b"multipart/mixed; boundary=",
    b"multipart/mixed",
    b"message/rfc822",
    b"text/plain; charset=undefined",
    b"attachment; filename*0*=bogus'';filename*1*=%ZZ",
    b"base64",
    b"quoted-printable",
    b'"\\',
    b"<<<@>>>",
    b"Mon, 99 Xyz 0 99:99:99 +99999",
    b"\xff\xfe\x00",
]
header_lines = st.builds(
    lambda name, value: name + b": " + value + b"\r\n",
    st.sampled_from(HEADER_NAMES) | st.binary(max_size=12),
    st.sampled_from(NASTY_VALUES) | st.binary(max_size=60),
)


@st.composite
def mutated_messages(draw: st.DrawFn) -> bytes:
    raw = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 5))):
        operation = draw(st.sampled_from(["flip", "truncate", "insert", "header", "delete"]))
        position = draw(st.integers(0, len(raw)))
        if operation == "flip" and raw:
            raw[min(position, len(raw) - 1)] ^= draw(st.integers(1, 255))
        elif operation == "truncate":
            del raw[position:]
        elif operation == "insert":
            raw[position:position] = draw(st.binary(min_size=1, max_size=30))
        elif operation == "header":
            raw[0:0] = draw(header_lines)
        else:
            del raw[position : position + draw(st.integers(1, 200))]
    return bytes(raw)


@pytest.mark.reliability(
    area="Message parsing",
    fault="the corpus samples mutated at random (byte flips, truncation, header garbage; "
    "hypothesis)",
    outcome="every attribute gives a value, never an exception",
)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_messages())
def test_mutated_messages_never_raise(raw: bytes) -> None:
    read_everything(Message(raw))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2_000))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    read_everything(Message(raw))
