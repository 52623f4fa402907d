"""IMAP fixtures shared by the sync and async IMAP tests.

- :func:`imap_url` / ``imap_target``: how to reach the test Dovecot for an account, over plain
  text (``tls="none"``), STARTTLS or implicit TLS, trusting exactly the test certificate;
- ``seed`` / ``make_folder``: deposit messages and create folders with stdlib imaplib only;
- :data:`TRICKY_MIME`: a corpus of awkward messages (8-bit, odd charsets, nested parts,
  literal-looking body text, bare LF, long lines, no Message-ID) to read back byte-exact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from tests.contract import imap_seed

if TYPE_CHECKING:
    from tests.servers import Account, MailboxClients

Seed = Callable[..., None]


@dataclass(frozen=True)
class IMAPTarget:
    """Where and how to connect: ``mailsync.connect(target.url, **target.options)``."""

    url: str
    options: dict[str, Any]


def imap_url(servers: MailboxClients, account: Account, transport: str = "plain") -> IMAPTarget:
    """The URL and options for ``account`` over ``plain``, ``starttls`` or ``tls`` (993-style).

    Args:
        servers: The running test servers.
        account: The account to log in as.
        transport: ``"plain"`` (tls="none"), ``"starttls"`` or ``"tls"`` (implicit TLS).
    """
    host = servers.host
    options: dict[str, Any] = {"password": account.password, "timeout": 20.0}
    if transport == "tls":
        url = f"imaps://{account.user}@{host}:{servers.imaps_port}"
        options["verify"] = servers.ssl_context()
    elif transport == "starttls":
        url = f"imap://{account.user}@{host}:{servers.imap_port}"
        options["tls"] = "starttls"
        options["verify"] = servers.ssl_context()
    else:
        url = f"imap://{account.user}@{host}:{servers.imap_port}"
        options["tls"] = "none"
    return IMAPTarget(url, options)


@pytest.fixture
def seed(mail_store: MailboxClients, account: Account) -> Seed:
    """``seed(raw, folder="INBOX", flags=())``: APPEND with stdlib imaplib (never mailsync)."""
    return imap_seed(mail_store, account)


@pytest.fixture
def make_folder(mail_store: MailboxClients, account: Account) -> Callable[[str], None]:
    """``make_folder(name)``: CREATE with stdlib imaplib."""

    def create(name: str) -> None:
        mail_store.create_folder(account, name)

    return create


# -- the tricky MIME corpus ----------------------------------------------------------------------


def _crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


TRICKY_MIME: dict[str, bytes] = {
    "latin1-8bit-undeclared": (
        b"From: =?iso-8859-1?q?J=F6rg?= <joerg@example.test>\r\n"
        b"To: b@example.test\r\nSubject: =?iso-8859-1?q?Gr=FC=DFe_aus_K=F6ln?=\r\n"
        b"Message-ID: <latin1@example.test>\r\nDate: Thu, 01 Jan 2026 10:00:00 +0100\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: 8bit\r\n"
        b"\r\nS\xfc\xdfe Gr\xfc\xdfe \xe0 tous\r\n"
    ),
    "alternative-base64-utf8": _crlf(
        "From: a@example.test\nTo: b@example.test\nSubject: =?utf-8?b?8J+YgCDDqW1vamk=?=\n"
        "Message-ID: <alt@example.test>\nMIME-Version: 1.0\n"
        'Content-Type: multipart/alternative; boundary="b1"\n\n--b1\n'
        "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n"
        "w6lsw6h2ZSDwn5iAIHRleHQK\n--b1\nContent-Type: text/html; charset=utf-8\n"
        "Content-Transfer-Encoding: quoted-printable\n\n<p>=C3=A9l=C3=A8ve soft=\nbreak</p>\n"
        "--b1--\n"
    ),
    "nested-with-rfc822-and-rfc2231": _crlf(
        "From: a@example.test\nTo: b@example.test\nSubject: nested\n"
        "Message-ID: <nested@example.test>\nMIME-Version: 1.0\n"
        'Content-Type: multipart/mixed; boundary="outer"\n\npreamble\n--outer\n'
        'Content-Type: multipart/related; boundary="inner"\n\n--inner\n'
        "Content-Type: text/html; charset=us-ascii\n\n<img src=cid:logo@x>\n--inner\n"
        "Content-Type: image/png\nContent-ID: <logo@x>\nContent-Transfer-Encoding: base64\n\n"
        "iVBORw0KGgo=\n--inner--\n--outer\n"
        "Content-Type: application/pdf\n"
        "Content-Disposition: attachment; filename*=UTF-8''%E2%82%AC%20r%C3%A9sum%C3%A9.pdf\n"
        "Content-Transfer-Encoding: base64\n\nJVBERi0xLjQK\n--outer\n"
        "Content-Type: message/rfc822\n\nFrom: inner@example.test\nSubject: forwarded\n\n"
        "inner body\n--outer--\nepilogue\n"
    ),
    "literal-lookalikes-in-body": _crlf(
        "From: a@example.test\nTo: b@example.test\nSubject: {42}\n"
        "Message-ID: <lookalike@example.test>\n\n"
        "* 3 EXISTS\nA0001 OK done\n)\n{17}\n* 1 FETCH (UID 1 BODY[] {5}\nhello)\n"
    ),
    "no-message-id-no-date": _crlf(
        "From: a@example.test\nTo: b@example.test\nSubject: anonymous\n\nno id here\n"
    ),
    "bare-lf-and-long-line": (
        b"From: a@example.test\nTo: b@example.test\nSubject: bare LF\n"
        b"Message-ID: <barelf@example.test>\n\n" + b"y" * 2500 + b"\nend\n"
    ),
    "unknown-charset-and-folding": (
        b'From: "Weird, Name" <weird@example.test>\r\nTo: b@example.test,\r\n'
        b"  c@example.test\r\nSubject: =?x-unknown?q?caf=E9?= and\r\n folded text\r\n"
        b"Message-ID: <weird@example.test>\r\nContent-Type: text/plain; charset=x-bogus\r\n"
        b"\r\ncaf\xe9\r\n"
    ),
    "missing-closing-boundary": _crlf(
        "From: a@example.test\nSubject: truncated\nMessage-ID: <trunc@example.test>\n"
        'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="zz"\n\n--zz\n'
        "Content-Type: text/plain\n\npart one\n"
    ),
    "empty-body": b"Subject: empty\r\nMessage-ID: <empty@example.test>\r\n\r\n",
}
