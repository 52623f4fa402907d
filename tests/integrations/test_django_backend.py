"""Django's email API through ``mailsync.integrations.django.EmailBackend``, against the test
Postfix (what arrives is read back with plain imaplib), and a Maildir for development."""

from __future__ import annotations

import email
import email.policy
import logging
import socket
from collections.abc import Iterator
from email.message import EmailMessage as StdMessage
from pathlib import Path
from typing import Any

import pytest

import mailsync
from tests.extras import require
from tests.integrations.conftest import accounts_file
from tests.servers import Account, MailServers

require("django", "django")  # before the imports below, which need Django

from django.core import mail  # noqa: E402
from django.test import override_settings  # noqa: E402

from mailsync.integrations.django.signals import message_sent  # noqa: E402

pytestmark = pytest.mark.usefixtures("django_settings")


def _submission(servers: MailServers, account: Account, **more: Any) -> Any:
    """Settings that send as ``account`` through the submission port."""
    return override_settings(
        MAILSYNC_SEND=f"smtp://{account.user}@{servers.host}:{servers.submission_port}",
        MAILSYNC_SEND_OPTIONS={"password": account.password, "verify": servers.cafile},
        **more,
    )


def _arrived(servers: MailServers, account: Account, count: int = 1) -> list[StdMessage]:
    def ready() -> list[bytes] | None:
        raws = [raw for _uid, _flags, raw in servers.imap_messages(account)]
        return raws if len(raws) >= count else None

    raws = servers.wait_for(ready, timeout=60, interval=0.1, message=f"{count} message(s)")
    return [email.message_from_bytes(raw, policy=email.policy.default) for raw in raws]  # type: ignore[misc]


@pytest.fixture
def sent() -> Iterator[list[dict[str, Any]]]:
    """What ``message_sent`` carried."""
    seen: list[dict[str, Any]] = []

    def receiver(**kwargs: Any) -> None:
        seen.append(kwargs)

    message_sent.connect(receiver)
    yield seen
    message_sent.disconnect(receiver)


@pytest.mark.servers
def test_a_rich_message_arrives_as_django_built_it(
    mail_servers: MailServers,
    account: Account,
    other_account: Account,
    sent: list[dict[str, Any]],
) -> None:
    blind = mail_servers.new_account("blind")
    message = mail.EmailMultiAlternatives(
        subject="Grüße from Django",
        body="Plain text.\n",
        from_email=f"Ann <{account.email}>",
        to=[f"Bob <{other_account.email}>"],
        cc=[account.email],
        bcc=[blind.email],
        reply_to=["replies@example.test"],
        headers={"X-Campaign": "spring"},
    )
    message.attach_alternative("<p>HTML <b>text</b></p>", "text/html")
    message.attach("report.bin", bytes(range(256)), "application/octet-stream")
    with _submission(mail_servers, account):
        assert message.send() == 1

    for who in (other_account, blind, account):
        (got,) = _arrived(mail_servers, who)
        assert got["Subject"] == "Grüße from Django"
        assert got["Bcc"] is None  # the blind copy is delivered, the header never is
        assert got["Reply-To"] == "replies@example.test"
        assert got["X-Campaign"] == "spring"
        assert got["Cc"] == account.email
        assert got.get_body(("html",)).get_content() == "<p>HTML <b>text</b></p>"  # type: ignore[union-attr]
        (attachment,) = got.iter_attachments()
        assert attachment.get_content() == bytes(range(256))
        assert got["Message-ID"].strip("<>") == sent[0]["result"].message_id
    assert sent[0]["message"] is message
    assert set(sent[0]["result"].accepted) == {other_account.email, account.email, blind.email}


@pytest.mark.servers
def test_mass_mail_is_pipelined_over_one_connection(
    mail_servers: MailServers,
    account: Account,
    caplog: pytest.LogCaptureFixture,
    sent: list[dict[str, Any]],
) -> None:
    caplog.set_level(logging.INFO, logger="mailsync.send")
    datatuples = [(f"Mass {n}", "Body.\n", account.email, [account.email]) for n in range(3)]
    with _submission(mail_servers, account):
        with mail.get_connection() as connection:
            assert mail.send_mass_mail(datatuples, connection=connection) == 3
            assert connection.sender.connections_opened == 1
    subjects = sorted(str(m["Subject"]) for m in _arrived(mail_servers, account, 3))
    assert subjects == ["Mass 0", "Mass 1", "Mass 2"]
    (batch,) = [r for r in caplog.records if r.__dict__.get("operation") == "send_many"]
    assert batch.messages == 3
    assert len(sent) == 3


@pytest.mark.servers
def test_delivery_reports_are_asked_for_per_message_and_the_headers_never_leave(
    mail_servers: MailServers, account: Account, other_account: Account
) -> None:
    message = mail.EmailMessage(
        "Tracked",
        "Body.\n",
        account.email,
        [other_account.email],
        headers={"X-Mailsync-Notify": "success,failure", "X-Mailsync-Envid": "django-42"},
    )
    with _submission(mail_servers, account):
        assert message.send() == 1
    (got,) = _arrived(mail_servers, other_account)
    assert [k for k in got if k.lower().startswith("x-mailsync")] == []

    def report() -> mailsync.DeliveryReport | None:
        for _uid, _flags, raw in mail_servers.imap_messages(account):
            found = mailsync.parse_report(raw)
            if found is not None:
                return found
        return None

    found = mail_servers.wait_for(report, timeout=60, interval=0.2, message="a DSN")
    assert found.envid == "django-42"
    assert found.recipients[0].recipient == other_account.email


@pytest.mark.servers
def test_delivery_reports_for_every_message_from_settings_unless_a_message_says_otherwise(
    mail_servers: MailServers,
    account: Account,
    other_account: Account,
    sent: list[dict[str, Any]],
) -> None:
    quiet = mail.EmailMessage(
        "Quiet", "Body.\n", account.email, [other_account.email],
        headers={"X-Mailsync-Notify": "never"},
    )  # fmt: skip
    tracked = mail.EmailMessage("Tracked", "Body.\n", account.email, [other_account.email])
    with _submission(mail_servers, account, MAILSYNC_DSN={"notify": "success", "ret": "hdrs"}):
        with mail.get_connection() as connection:
            assert connection.send_messages([quiet, tracked]) == 2
    _arrived(mail_servers, other_account, 2)

    def reports() -> list[mailsync.DeliveryReport] | None:
        raws = [raw for _uid, _flags, raw in mail_servers.imap_messages(account)]
        found = [r for r in map(mailsync.parse_report, raws) if r is not None]
        return found or None

    (report,) = mail_servers.wait_for(reports, timeout=60, interval=0.2, message="a DSN")
    assert report.kind == "dsn"
    (tracked_id,) = [r["result"].message_id for r in sent if r["message"] is tracked]
    assert report.original_message_id == tracked_id
    assert report.recipients[0].action in ("relayed", "delivered")


def test_an_unknown_mailsync_header_is_refused(tmp_path: Path) -> None:
    message = mail.EmailMessage(
        "Typo", "Body.\n", "a@example.test", ["b@example.test"], headers={"X-Mailsync-Notfy": "x"}
    )
    with override_settings(MAILSYNC_SEND=f"maildir:{tmp_path}/dev?create=true"):
        with pytest.raises(mailsync.ConfigError, match="X-Mailsync-Notfy"):
            message.send()
    assert not list((tmp_path / "dev").rglob("*,*"))  # nothing was stored


@pytest.mark.servers
def test_an_envelope_other_than_the_headers_is_honoured(
    mail_servers: MailServers, account: Account, other_account: Account
) -> None:
    """Django sends to ``to`` even when ``extra_headers`` shows another To."""
    message = mail.EmailMessage(
        "Shown to a list",
        "Body.\n",
        account.email,
        [other_account.email],
        headers={"To": "everyone@lists.example.test"},
    )
    with _submission(mail_servers, account):
        assert message.send() == 1
    (got,) = _arrived(mail_servers, other_account)
    assert got["To"] == "everyone@lists.example.test"


def _dead_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_fail_silently_is_honoured_and_says_why_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="mailsync")
    url = f"smtp://ann:S3cret-pw@127.0.0.1:{_dead_port()}"
    with override_settings(MAILSYNC_SEND=url, MAILSYNC_SEND_OPTIONS={"tls": "none"}):
        assert mail.send_mail("s", "b", "a@example.test", ["b@example.test"], True) == 0
        with pytest.raises(mailsync.ConnectionFailed):
            mail.send_mail("s", "b", "a@example.test", ["b@example.test"])
    (record,) = [r for r in caplog.records if r.name == "mailsync.django"]
    assert record.error_type == "ConnectionFailed"
    assert "S3cret-pw" not in f"{record.getMessage()} {record.__dict__!r}"


def test_an_account_name_and_a_maildir_for_development(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[accounts.dev]\nsend = "maildir:{tmp_path}/dev?create=true"\n', encoding="utf-8"
    )
    with override_settings(MAILSYNC_SEND="dev", MAILSYNC_CONFIG=str(config)):
        assert mail.send_mail("Hi", "Body.\n", "a@example.test", ["b@example.test"]) == 1
        assert mail.send_mail("No one", "Body.\n", "a@example.test", []) == 0
    with mailsync.connect(f"maildir:{tmp_path}/dev", state=":memory:") as box:
        assert [m.subject for m in box.messages()] == ["Hi"]


def test_settings_that_cannot_work_are_refused_early() -> None:
    from django.core.exceptions import ImproperlyConfigured

    with override_settings(MAILSYNC_SEND=""), pytest.raises(ImproperlyConfigured):
        mail.get_connection()
    with override_settings(MAILSYNC_DSN={"notfy": "success"}):
        with pytest.raises(ImproperlyConfigured):
            mail.get_connection()


@pytest.mark.servers
def test_the_accounts_file_sender_of_a_named_account(
    mail_servers: MailServers, account: Account, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = accounts_file(tmp_path / "config.toml", mail_servers, account, "work")
    monkeypatch.setenv("TEST_MAIL_PASSWORD", account.password)
    with override_settings(MAILSYNC_SEND="work", MAILSYNC_CONFIG=str(config)):
        assert mail.send_mail("Named", "Body.\n", account.email, [account.email]) == 1
    (got,) = _arrived(mail_servers, account)
    assert got["Subject"] == "Named"


def test_bcc_through_an_api_that_takes_recipients_from_the_headers() -> None:
    """The Gmail API sends to whom the message names: Bcc goes in as a header it removes, and
    an envelope other than the headers is refused rather than sent elsewhere."""
    from tests.fakes.gmail import FakeGmail
    from tests.gmail.conftest import options

    gmail = FakeGmail()
    message = mail.EmailMessage(
        "Blind", "Body.\n", "me@example.test", ["bob@example.test"], bcc=["carol@example.test"]
    )
    with override_settings(MAILSYNC_SEND="gmail://me", MAILSYNC_SEND_OPTIONS=options(gmail)):
        assert message.send() == 1
        shown = mail.EmailMessage(
            "Shown", "Body.\n", "me@example.test", ["bob@example.test"], headers={"To": "x@y.test"}
        )
        with pytest.raises(mailsync.Unsupported, match="rcpt_to"):
            shown.send()
    ((raw, recipients),) = gmail.outbox
    assert sorted(recipients) == ["bob@example.test", "carol@example.test"]
    assert b"carol@example.test" not in raw


def test_through_the_microsoft_graph_api() -> None:
    """Graph's sendMail: the alternatives and the blind copy arrive, the Bcc header never."""
    from tests.fakes.graph import FakeGraph

    graph = FakeGraph()
    bob, carol = graph.mailbox("bob@contoso.test"), graph.mailbox("carol@contoso.test")
    message = mail.EmailMultiAlternatives(
        "Quarterly", "Numbers.\n", "alice@contoso.test", ["bob@contoso.test"]
    )
    message.bcc = ["carol@contoso.test"]
    message.attach_alternative("<p>Numbers.</p>", "text/html")
    options = {"token": graph.token, "transport": graph, "retry_delay": 0}
    with override_settings(MAILSYNC_SEND="graph://me", MAILSYNC_SEND_OPTIONS=options):
        assert message.send() == 1
    (shown,) = bob.messages.values()
    (blind,) = carol.messages.values()
    for received in (shown, blind):
        head = received.mime.split(b"\r\n\r\n")[0]
        assert b"Subject: Quarterly" in head
        assert b"carol@" not in head
        assert b"<p>Numbers.</p>" in received.mime


@pytest.mark.servers
def test_through_jmap_email_submission(
    cyrus: Any, cyrus_account: Account, mail_servers: MailServers, other_account: Account
) -> None:
    """JMAP (Cyrus, relaying to the test Postfix): Django's message arrives, Bcc delivered."""
    from tests.jmap.conftest import jmap_target

    target = jmap_target(cyrus, cyrus_account)
    blind = mail_servers.new_account("blind")
    message = mail.EmailMessage(
        "Over JMAP from Django",
        "Body.\n",
        cyrus_account.email,
        [other_account.email],
        bcc=[blind.email],
        headers={"X-Mailsync-Envid": "django-jmap-1"},
    )
    with override_settings(MAILSYNC_SEND=target.url, MAILSYNC_SEND_OPTIONS=target.options):
        assert message.send() == 1
    for who in (other_account, blind):
        (got,) = _arrived(mail_servers, who)
        assert got["Subject"] == "Over JMAP from Django"
        assert got["Bcc"] is None
        assert [k for k in got if k.lower().startswith("x-mailsync")] == []
