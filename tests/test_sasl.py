"""SASL for IMAP, POP3 and SMTP (:mod:`mailsync.protocol.sasl`): the messages, the one
preference order, and the exchange, with canned challenges."""

from __future__ import annotations

import pytest

import mailsync
from mailsync.protocol import sasl


def test_initial_responses() -> None:
    assert sasl.plain("alice", "pw") == b"\0alice\0pw"
    assert sasl.plain("alice", "pw", "admin") == b"admin\0alice\0pw"
    assert sasl.plain("jörg", "pässwörd") == "\0jörg\0pässwörd".encode()
    assert sasl.xoauth2("a@x.test", "tok") == b"user=a@x.test\x01auth=Bearer tok\x01\x01"
    assert sasl.oauthbearer("a,b=c@x.test", "tok", "mail.x.test", 995) == (
        b"n,a=a=2Cb=3Dc@x.test,\x01host=mail.x.test\x01port=995\x01auth=Bearer tok\x01\x01"
    )
    assert sasl.oauthbearer("a@x.test", "tok") == b"n,a=a@x.test,\x01auth=Bearer tok\x01\x01"


@pytest.mark.parametrize(
    ("offered", "token", "usable", "chosen"),
    [
        # A token: OAUTHBEARER first, XOAUTH2 where it is all there is.
        (["XOAUTH2", "OAUTHBEARER", "PLAIN"], True, None, "OAUTHBEARER"),
        (["plain", "xoauth2"], True, None, "XOAUTH2"),
        (["PLAIN", "LOGIN"], True, None, None),
        (None, True, None, "XOAUTH2"),  # the server does not say: what every provider takes
        ([], True, None, None),  # it says: nothing
        # A password: PLAIN, then LOGIN where the protocol has no login command of its own.
        (["LOGIN", "PLAIN", "XOAUTH2"], False, None, "PLAIN"),
        (["LOGIN", "CRAM-MD5"], False, None, "LOGIN"),
        (["LOGIN"], False, ("PLAIN",), None),
        (None, False, None, None),
        (["XOAUTH2"], False, None, None),
    ],
)
def test_one_preference_order(
    offered: list[str] | None, token: bool, usable: tuple[str, ...] | None, chosen: str | None
) -> None:
    if usable is None:
        assert sasl.choose(offered, token=token) == chosen
    else:
        assert sasl.choose(offered, token=token, usable=usable) == chosen


def test_no_mechanism_is_an_authentication_error_and_unsupported() -> None:
    error = sasl.no_mechanism("SMTP h:587", [], token=False, hint=" (try the submission port)")
    assert isinstance(error, mailsync.AuthenticationError)
    assert isinstance(error, mailsync.Unsupported)
    assert str(error) == (
        "SMTP h:587: a password was given, but the server offers no AUTH mechanism at all, "
        "not PLAIN or LOGIN (try the submission port)"
    )
    error = sasl.no_mechanism("IMAP h:143", ["plain", "LOGIN"], token=True)
    assert "offers LOGIN PLAIN, not OAUTHBEARER or XOAUTH2" in str(error)


def test_plain_inline_then_nothing_more() -> None:
    exchange = sasl.exchange("PLAIN", "alice", "pw")
    assert exchange.initial() == "AGFsaWNlAHB3"
    assert exchange.respond(b"") == b"\0alice\0pw"  # asked again: the server took none
    assert exchange.respond(b"what?") is None  # anything more is cancelled ("*")
    assert sasl.encode(None) == "*"
    with pytest.raises(mailsync.ProtocolError):
        exchange.respond(b"again")


def test_an_initial_response_too_long_for_the_line_answers_the_empty_challenge() -> None:
    exchange = sasl.exchange("XOAUTH2", "alice", "t" * 400)
    assert exchange.initial(lambda argument: len(argument) < 255) is None
    assert exchange.respond(b"") == sasl.xoauth2("alice", "t" * 400)


@pytest.mark.parametrize(("mechanism", "abort"), [("XOAUTH2", ""), ("OAUTHBEARER", "AQ==")])
def test_an_oauth_error_challenge_is_answered_so_the_server_can_refuse(
    mechanism: str, abort: str
) -> None:
    exchange = sasl.exchange(mechanism, "alice", "expired", host="h", port=1)
    assert exchange.initial() is not None
    assert sasl.encode(exchange.respond(b'{"status":"401"}')) == abort
    assert exchange.error_detail == b'{"status":"401"}'


def test_login_answers_each_prompt() -> None:
    exchange = sasl.exchange("LOGIN", "ann", "päss")
    assert exchange.initial() is None  # LOGIN has no initial response: the server asks
    assert exchange.respond(b"Username:") == b"ann"
    assert exchange.respond(b"Password:") == "päss".encode()
    assert exchange.respond(b"?") is None


def test_empty_initial_response_is_an_equals_sign() -> None:
    assert sasl.Exchange("EXTERNAL", [b""]).initial() == "="


def test_secrets_stay_out_of_repr_and_unknown_mechanisms_are_refused() -> None:
    exchange = sasl.exchange("PLAIN", "alice", "s3cret")
    assert "s3cret" not in repr(exchange)
    assert "s3cret" not in str(vars(exchange).get("mechanism"))
    with pytest.raises(ValueError, match="CRAM-MD5"):
        sasl.exchange("CRAM-MD5", "alice", "pw")
