"""The SMTP client's pure pieces (:mod:`mailsync.protocol.smtp`, no server): xtext, DSN
options, reply parsing, EHLO features, the DATA payload, the retry options."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

import mailsync
from mailsync.protocol.smtp import (
    Features,
    Reply,
    ReplyParser,
    RetryPolicy,
    data_payload,
    dsn_options,
    orcpt,
    xtext,
)


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        ("abc@example.test", "abc@example.test"),
        ("a+b=c", "a+2Bb+3Dc"),
        ("two words", "two+20words"),
        ("é", "+C3+A9"),
        ("", ""),
    ],
)
def test_xtext(value: str, encoded: str) -> None:
    assert xtext(value) == encoded


def test_orcpt_ascii_and_utf8() -> None:
    assert orcpt("a+b@example.test") == "rfc822;a+2Bb@example.test"
    assert orcpt("jörg+x@example.test") == "utf-8;jörg\\x{2B}x@example.test"


def test_dsn_options_normalise_and_add_an_envid() -> None:
    dsn = dsn_options(["success", "FAILURE"], "hdrs", None)
    assert dsn.notify == "SUCCESS,FAILURE"
    assert dsn.ret == "HDRS"
    assert dsn.envid is not None
    assert len(dsn.envid) == 24
    assert dsn_options("success,delay", None, "my-id").envid == "my-id"
    assert dsn_options("never", None, None).envid is None
    assert not dsn_options(None, None, None).requested


@pytest.mark.parametrize(
    ("notify", "ret", "envid"),
    [
        ("sometimes", None, None),
        (["never", "success"], None, None),
        ("", None, None),
        (None, "all", None),
        (None, None, "x" * 101),
        (None, None, "line\nbreak"),
        (None, None, "é"),
    ],
)
def test_dsn_options_refuse_invalid_values(
    notify: object, ret: str | None, envid: str | None
) -> None:
    with pytest.raises(mailsync.ConfigError):
        dsn_options(notify, ret, envid)  # type: ignore[arg-type]


def test_reply_parser_multiline_and_split_chunks() -> None:
    parser = ReplyParser()
    assert parser.feed(b"250-mx.example.test\r\n250-PIPE") == []
    assert parser.pending
    replies = parser.feed(b"LINING\r\n250 SIZE 100\r\n354 go on\r\n")
    assert replies == [
        Reply(250, ("mx.example.test", "PIPELINING", "SIZE 100")),
        Reply(354, ("go on",)),
    ]
    assert not parser.pending
    assert parser.feed(b"250\n") == [Reply(250, ("",))]


@pytest.mark.parametrize("line", [b"hello\r\n", b"25 ok\r\n", b"250xok\r\n"])
def test_reply_parser_rejects_garbage(line: bytes) -> None:
    with pytest.raises(mailsync.ProtocolError):
        ReplyParser().feed(line)


@given(st.lists(st.integers(0, 60), max_size=6))
def test_reply_parser_gives_the_same_replies_however_the_bytes_arrive(cuts: list[int]) -> None:
    data = b"250-mx.example.test\r\n250-PIPELINING\r\n250 SIZE 100\n354 go on\r\n221 bye\r\n"
    parser = ReplyParser()
    replies: list[Reply] = []
    start = 0
    for end in [*sorted(cuts), len(data)]:
        replies += parser.feed(data[start:end])
        start = max(start, end)
    assert replies == ReplyParser().feed(data)
    assert [r.code for r in replies] == [250, 354, 221]
    assert replies[0].lines == ("mx.example.test", "PIPELINING", "SIZE 100")
    assert not parser.pending


def test_reply_parser_rejects_endless_lines() -> None:
    with pytest.raises(mailsync.ProtocolError):
        ReplyParser().feed(b"250 " + b"x" * 10000)


def test_features_from_ehlo() -> None:
    reply = Reply(
        250,
        ("mx", "PIPELINING", "SIZE 52428800", "AUTH PLAIN LOGIN", "AUTH=XOAUTH2", "dsn", "SIZE"),
    )
    features = Features.parse(reply)
    assert "PIPELINING" in features
    assert "DSN" in features
    assert "STARTTLS" not in features
    assert features.auth == {"PLAIN", "LOGIN", "XOAUTH2"}
    assert features.size == 52428800
    assert Features.parse(Reply(250, ("mx", "SIZE"))).size is None


@pytest.mark.parametrize(
    ("data", "payload"),
    [
        (b"a\r\nb\r\n", b"a\r\nb\r\n.\r\n"),
        (b"a\r\nb", b"a\r\nb\r\n.\r\n"),
        (b".hidden\r\n..two\r\n", b"..hidden\r\n...two\r\n.\r\n"),
        (b"bare\nlf\r\nand\rcr\r\n", b"bare\r\nlf\r\nand\r\ncr\r\n.\r\n"),
        (b"\r\n.\r\n", b"\r\n..\r\n.\r\n"),
        (b"a\n.b\r\n", b"a\r\n..b\r\n.\r\n"),
        (b"a\r.b\r\n", b"a\r\n..b\r\n.\r\n"),
        (b"a\r\r\nb\r\n", b"a\r\n\r\nb\r\n.\r\n"),
        (b"", b"\r\n.\r\n"),
    ],
)
def test_data_payload(data: bytes, payload: bytes) -> None:
    assert data_payload(data) == payload


@given(st.lists(st.sampled_from([b"a", b".", b"\r", b"\n", b"\r\n"]), max_size=12))
def test_data_payload_fast_paths_change_nothing(pieces: list[bytes]) -> None:
    # The payload skips its regular expressions when the data needs no fixing: the result
    # must be what applying them always gives.
    data = b"".join(pieces)
    expected = re.sub(rb"(?m)^\.", b"..", re.sub(rb"\r\n|\r|\n", b"\r\n", data))
    expected += b"" if expected.endswith(b"\r\n") else b"\r\n"
    assert data_payload(data) == expected + b".\r\n"


def test_retry_policy_from_options() -> None:
    assert RetryPolicy.from_params({}) == RetryPolicy()
    policy = RetryPolicy.from_params({"retries": "5", "retry_delay": "0.01", "reconnects": 0})
    assert (policy.attempts, policy.delay, policy.reconnects) == (5, 0.01, 0)
    with pytest.raises(mailsync.ConfigError):
        RetryPolicy.from_params({"retries": "zero"})
    with pytest.raises(mailsync.ConfigError):
        RetryPolicy.from_params({"retries": 0})


def test_registry_maps_smtp_schemes() -> None:
    out = mailsync.sender("smtps://user@mail.example.test", password="pw")
    assert type(out).__name__ == "SMTPSender"
    assert "pw" not in repr(out)
    aout = mailsync.sender_async("smtp://mail.example.test:587")
    assert type(aout).__name__ == "AsyncSMTPSender"
