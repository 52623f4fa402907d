"""The reason taxonomy: status codes, reply codes and words (English, German, Japanese)."""

from __future__ import annotations

import pytest

from mailsync._reports import REASONS, parse_report, refusal_outcome
from mailsync._reports._taxonomy import classify, implied_status, text_reason


@pytest.mark.parametrize(
    ("status", "diagnostic", "reason", "permanent"),
    [
        # A precise status settles it, whatever the words.
        ("5.1.1", "550 5.1.1 Sorry, no mailbox here by that name", "user_unknown", True),
        ("5.2.2", "552 5.2.2 over quota", "mailbox_full", False),
        ("5.1.2", "Host or domain name not found", "host_unknown", True),
        ("5.3.4", "552 5.3.4 Message size exceeds fixed limit", "message_too_large", False),
        ("5.7.26", "550 5.7.26 Unauthenticated email is not accepted", "auth_failure", False),
        ("4.4.7", "Delivery time expired", "expired", False),
        # A generic status lets the words decide.
        ("5.7.1", "554 5.7.1 Message rejected as spam", "spam_detected", False),
        ("5.7.1", "554 5.7.1 Client host blocked using zen.example.test", "blocked", False),
        ("5.7.1", "554 5.7.1 <a@b>: Relay access denied", "policy", False),
        ("5.0.0", "550 No such user here", "user_unknown", True),
        ("5.0.0", "550 Requested action not taken: mailbox unavailable", "user_unknown", True),
        (
            "5.1.10",
            "RecipientNotFound; Recipient not found by SMTP address lookup",
            "user_unknown",
            True,
        ),
        ("5.1.10", "Domain does not accept mail (null MX)", "host_unknown", True),
        ("5.7.1", "550 5.7.1 Email rejected per DMARC policy", "auth_failure", False),
        # No status: the words, then the reply code.
        (None, "The recipient's mailbox is full", "mailbox_full", False),
        (None, "552 Requested mail action aborted", "mailbox_full", False),
        (None, "530 Must issue a STARTTLS command first", "auth_failure", False),
        (None, "Unrouteable address", "host_unknown", True),
        (None, "Connection timed out", "network_error", False),
        (None, "mail loop detected: too many hops", "system_error", False),
        (None, "Das Postfach des Empfängers ist voll.", "mailbox_full", False),
        (None, "Benutzer unbekannt", "user_unknown", True),
        (None, "Die Nachricht ist zu groß", "message_too_large", False),
        (None, "宛先のメールアドレスが存在しません", "user_unknown", True),
        (None, "メールボックスの容量がいっぱいです", "mailbox_full", False),
        (None, "迷惑メールと判定されました", "spam_detected", False),
        (None, "something nobody can read", "unknown", False),
    ],
)
def test_failures(status: str | None, diagnostic: str, reason: str, permanent: bool) -> None:
    assert classify("failed", status, diagnostic) == (reason, permanent)


@pytest.mark.parametrize(
    ("action", "status", "diagnostic", "reason"),
    [
        # A temporary cause that became a failure after days of retrying has expired...
        ("failed", "4.4.1", "connect to mx.example.net: Connection timed out", "expired"),
        ("failed", "4.0.0", "426 connection timed out", "expired"),
        # ...unless its cause says more: a full mailbox stays a full mailbox.
        ("failed", "4.2.2", "452 4.2.2 over quota", "mailbox_full"),
        (
            "delayed",
            "4.2.1",
            "421 4.2.1 receiving mail at a rate that prevents delivery",
            "rate_limited",
        ),
        ("delayed", "4.7.0", "450 4.7.0 Greylisted, please try again", "on_hold"),
        ("delayed", None, "retry time not reached", "on_hold"),
        ("delayed", "4.4.1", "No route to host", "network_error"),
    ],
)
def test_delays_and_expiry(action: str, status: str | None, diagnostic: str, reason: str) -> None:
    assert classify(action, status, diagnostic) == (reason, False)


@pytest.mark.parametrize("action", ["delivered", "relayed", "expanded", "displayed"])
def test_successes_have_no_reason(action: str) -> None:
    assert classify(action, "2.0.0", "250 OK") == ("unknown", False)


def test_every_reason_the_words_give_is_in_the_taxonomy() -> None:
    samples = ["frozen", "spam", "user unknown", "quota", "timed out", "policy", "expired"]
    assert {text_reason(s) for s in samples} <= set(REASONS)


@pytest.mark.parametrize(
    ("status", "action", "reason", "implied"),
    [
        (None, "failed", "user_unknown", "5.1.1"),
        ("5.0.0", "failed", "mailbox_full", "5.2.2"),
        (None, "delayed", "mailbox_full", "4.2.2"),
        ("5.0.0", "failed", "unknown", "5.0.0"),
        (None, "failed", "policy", None),  # no single code stands for it
        ("2.0.0", "delivered", "user_unknown", "2.0.0"),
    ],
)
def test_implied_status(status: str | None, action: str, reason: str, implied: str | None) -> None:
    assert implied_status(status, action, reason) == implied  # type: ignore[arg-type]


def test_refusal_outcome() -> None:
    assert refusal_outcome(550, "5.1.1 <a@b>: User unknown") == ("5.1.1", "user_unknown", True)
    assert refusal_outcome(452, "4.5.3 Too many recipients") == ("4.5.3", "rate_limited", False)


def test_a_generic_status_yields_to_the_diagnostics_precise_code() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example.org\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
        b"--b\nContent-Type: text/plain\n\nFailed.\n"
        b"--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx\n\n"
        b"Final-Recipient: rfc822; a@example.net\nAction: failed\nStatus: 5.0.0\n"
        b"Diagnostic-Code: smtp; 554 5.7.1 <a@example.net>: Message rejected as spam\n"
        b"\nFinal-Recipient: rfc822; b@example.net\nAction: failed\nStatus: 5.1.0\n"
        b"Diagnostic-Code: smtp; 550 5.1.1 user unknown\n"
        b"\nFinal-Recipient: rfc822; c@example.net\nAction: failed\nStatus: 5.2.2\n"
        b"Diagnostic-Code: smtp; 450 4.2.0 different class, the field stands\n--b--\n"
    )
    report = parse_report(raw)
    assert report is not None
    assert [(r.status, r.reason) for r in report.recipients] == [
        ("5.7.1", "spam_detected"),
        ("5.1.1", "user_unknown"),
        ("5.2.2", "mailbox_full"),
    ]
