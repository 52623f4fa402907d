"""The sync IMAP backend against the test Dovecot: the shared contract over plain text and
TLS, the tricky MIME corpus, reconnects through a breaking proxy, resync after a folder is
recreated, and every error the issue names."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from typing import Any

import pytest

import mailsync
from mailsync.backends.imap import IMAPRetriever
from tests.contract import RetrieverContract
from tests.imap.conftest import TRICKY_MIME, IMAPTarget, imap_url
from tests.servers import Account, MailServers


def connect(target: IMAPTarget, state: Any = ":memory:", **extra: Any) -> IMAPRetriever:
    box = mailsync.connect(target.url, state=state, **{**target.options, **extra})
    assert isinstance(box, IMAPRetriever)
    return box


class TestIMAPContract(RetrieverContract):
    """The contract over plain text (``tls="none"``)."""

    transport = "plain"

    @pytest.fixture
    def make_retriever(
        self, mail_servers: MailServers, account: Account
    ) -> Callable[[Any], IMAPRetriever]:
        target = imap_url(mail_servers, account, self.transport)
        return lambda state: connect(target, state)


class TestIMAPContractTLS(TestIMAPContract):
    """The contract again over implicit TLS with certificate verification."""

    transport = "tls"


# -- fixtures for the tests below ---------------------------------------------------------------


@pytest.fixture
def target(mail_servers: MailServers, account: Account) -> IMAPTarget:
    return imap_url(mail_servers, account)


@pytest.fixture
def box(target: IMAPTarget) -> Iterator[IMAPRetriever]:
    retriever = connect(target)
    try:
        yield retriever
    finally:
        retriever.close()


# -- the tricky MIME corpus ---------------------------------------------------------------------


def test_tricky_mime_reads_back_byte_exact_and_decodes_like_the_stdlib(
    box: IMAPRetriever, mail_servers: MailServers, account: Account
) -> None:
    names = list(TRICKY_MIME)
    mail_servers.append_many(account, [TRICKY_MIME[name] for name in names])
    stored = [raw for _uid, _flags, raw in mail_servers.imap_messages(account)]
    got = list(box.messages())
    assert len(got) == len(names)
    for name, message, raw in zip(names, got, stored, strict=True):
        assert message.raw == raw, name  # what the server holds, byte for byte
        if b"\r" in TRICKY_MIME[name] and b"\n\n" not in TRICKY_MIME[name]:
            assert message.raw == TRICKY_MIME[name], name
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        assert message.email.as_bytes() == parsed.as_bytes(), name
        assert message.size == len(raw), name
        body = parsed.get_body(("plain",))
        try:
            content = body.get_content() if body is not None else ""
        except LookupError:  # an unknown charset: the stdlib gives up, mailsync falls back
            content = ""
        if content and "\ufffd" not in content:  # where the stdlib decodes cleanly, we agree
            assert message.text == content.replace("\r\n", "\n"), name
    by_name = dict(zip(names, got, strict=True))
    assert by_name["latin1-8bit-undeclared"].subject == "Grüße aus Köln"
    assert by_name["alternative-base64-utf8"].subject == "😀 émoji"
    assert by_name["alternative-base64-utf8"].text == "élève 😀 text\n"
    nested = by_name["nested-with-rfc822-and-rfc2231"]
    assert "€ résumé.pdf" in [a.filename for a in nested.attachments]
    assert by_name["literal-lookalikes-in-body"].subject == "{42}"
    assert by_name["no-message-id-no-date"].message_id is None


def test_tricky_mime_headers_only_and_get(
    box: IMAPRetriever, mail_servers: MailServers, account: Account
) -> None:
    mail_servers.append_many(account, list(TRICKY_MIME.values()))
    stored = [raw for _uid, _flags, raw in mail_servers.imap_messages(account)]
    heads = list(box.messages(headers_only=True))
    for head, raw in zip(heads, stored, strict=True):
        assert head.headers_only
        assert raw.startswith(head.raw)
        assert box.get(head.id).raw == raw
