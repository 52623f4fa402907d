"""The sans-I/O POP3 core with canned byte streams, split at every possible point."""

from __future__ import annotations

import base64

import pytest

import mailsync
from mailsync.protocol import sasl
from mailsync.protocol.pop3 import (
    Capabilities,
    Challenge,
    Command,
    Event,
    Greeting,
    POP3Connection,
    Reply,
    apop_digest,
    reply_error,
    trim_to_octets,
)


def feed(conn: POP3Connection, *chunks: bytes) -> list[Event]:
    events: list[Event] = []
    for chunk in chunks:
        events.extend(conn.receive(chunk))
    return events


def every_split(data: bytes, commands: list[tuple[str, ...]]) -> list[list[Event]]:
    """The events from ``data`` fed as two chunks split at every offset, and byte by byte."""
    outcomes = []
    splits = [[data[:i], data[i:]] for i in range(len(data) + 1)]
    splits.append([data[i : i + 1] for i in range(len(data))])
    for chunks in splits:
        conn = POP3Connection(greeting=False)
        for name, *args in commands:
            conn.send(name, *args)
        outcomes.append(feed(conn, *chunks))
        assert conn.idle
    return outcomes


def the_same(data: bytes, commands: list[tuple[str, ...]]) -> list[Event]:
    outcomes = every_split(data, commands)
    for outcome in outcomes[1:]:
        assert outcome == outcomes[0]
    return outcomes[0]


# -- framing ---------------------------------------------------------------------------------


def test_greeting_with_apop_timestamp() -> None:
    conn = POP3Connection()
    assert not conn.greeted
    (greeting,) = feed(conn, b"+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>\r\n")
    assert greeting == Greeting(
        True,
        "POP3 server ready <1896.697170952@dbc.mtview.ca.us>",
        "<1896.697170952@dbc.mtview.ca.us>",
    )
    assert conn.greeted
    assert conn.idle


def test_greeting_without_timestamp_and_refusal() -> None:
    (greeting,) = feed(POP3Connection(), b"+OK Dovecot ready.\r\n")
    assert isinstance(greeting, Greeting)
    assert greeting.timestamp is None
    (refusal,) = feed(POP3Connection(), b"-ERR [SYS/TEMP] too busy\r\n")
    assert isinstance(refusal, Greeting)
    assert not refusal.ok


def test_garbage_greeting() -> None:
    with pytest.raises(mailsync.ProtocolError):
        feed(POP3Connection(), b"* OK IMAP4rev1 ready\r\n")


def test_retr_dot_stuffing_at_every_split() -> None:
    # Lines of exactly "." and "..", a first line starting with ".", a line "..." and text
    # that merely contains dots; on the wire every line starting with "." has one more.
    message = b".first\r\nSubject: x\r\n\r\n.\r\n..\r\n...\r\na.b\r\n. \r\n.x.\r\nend\r\n"
    wire = b"+OK 62 octets\r\n" + message.replace(b"\r\n.", b"\r\n..").replace(
        b".first", b"..first", 1
    )
    wire += b".\r\n"
    (reply,) = the_same(wire, [("RETR", "1")])
    assert isinstance(reply, Reply)
    assert reply.ok
    assert reply.data == message
    assert reply.octets == 62


def test_empty_body_and_single_dot_line() -> None:
    events = the_same(
        b"+OK 0 octets\r\n.\r\n+OK\r\n..\r\n.\r\n",
        [("RETR", "1"), ("RETR", "2")],
    )
    assert [e.data for e in events if isinstance(e, Reply)] == [b"", b".\r\n"]


def test_message_missing_its_final_crlf() -> None:
    # The server must end the last line with CRLF; the announced size tells it was added.
    stored = b"Subject: x\r\n\r\nno final line break"
    wire = b"+OK %d octets\r\n" % len(stored) + stored + b"\r\n.\r\n"
    (reply,) = the_same(wire, [("RETR", "1")])
    assert isinstance(reply, Reply)
    assert reply.data == stored + b"\r\n"
    assert trim_to_octets(reply.data, reply.octets) == stored
    # A message that really ends in CRLF keeps it.
    assert trim_to_octets(b"a\r\n", 3) == b"a\r\n"
    assert trim_to_octets(b"a\r\n", None) == b"a\r\n"


def test_pipelined_replies_in_order_at_every_split() -> None:
    wire = (
        b"+OK\r\n1 AAA\r\n2 BBB\r\n.\r\n"
        b"+OK 2 messages\r\n1 120\r\n2 5\r\n.\r\n"
        b"+OK 5 octets\r\nhi\r\n.\r\n"
        b"-ERR [SYS/TEMP] cannot read message 2 now\r\n"
        b"+OK\r\nSubject: x\r\n\r\n.\r\n"
        b"+OK 2 120\r\n"
        b"+OK\r\n"
    )
    commands = [("UIDL",), ("LIST",), ("RETR", "1"), ("RETR", "2"), ("TOP", "1", "0")]
    commands += [("LIST", "1"), ("RSET",)]
    events = the_same(wire, commands)
    replies = [e for e in events if isinstance(e, Reply)]
    assert [r.command.name for r in replies] == [
        "UIDL",
        "LIST",
        "RETR",
        "RETR",
        "TOP",
        "LIST",
        "RSET",
    ]
    assert replies[0].lines() == ["1 AAA", "2 BBB"]
    assert replies[1].lines() == ["1 120", "2 5"]
    assert replies[2].data == b"hi\r\n"
    assert (replies[3].ok, replies[3].code, replies[3].data) == (False, "SYS/TEMP", None)
    assert replies[3].text == "cannot read message 2 now"
    assert replies[4].data == b"Subject: x\r\n\r\n"
    assert (replies[5].data, replies[5].text) == (None, "2 120")


def test_large_body_in_small_chunks_is_linear_and_exact() -> None:
    body = b"".join(b"line %d .\r\n.dot %d\r\n" % (i, i) for i in range(5000))
    wire = b"+OK\r\n" + body.replace(b"\r\n.", b"\r\n..") + b".\r\n"
    conn = POP3Connection(greeting=False)
    conn.send("RETR", "1")
    events = feed(conn, *(wire[i : i + 7] for i in range(0, len(wire), 7)))
    assert [e.data for e in events if isinstance(e, Reply)] == [body]


def test_lowercase_indicators_are_accepted() -> None:
    (reply,) = the_same(b"+ok fine\r\n", [("NOOP",)])
    assert isinstance(reply, Reply)
    assert reply.ok


def test_single_line_replies_with_lf_only() -> None:
    (reply,) = the_same(b"+OK 3 300\n", [("STAT",)])
    assert isinstance(reply, Reply)
    assert reply.text == "3 300"


def test_multiline_only_where_rfc_says() -> None:
    assert Command.of("LIST").multiline
    assert not Command.of("LIST", "1").multiline
    assert Command.of("UIDL").multiline
    assert not Command.of("UIDL", "3").multiline
    assert Command.of("retr", "1").multiline
    assert Command.of("TOP", "1", "0").multiline
    assert Command.of("CAPA").multiline
    assert not Command.of("DELE", "1").multiline
    assert Command.of("top", "2", "0").line == b"TOP 2 0\r\n"


# -- what is not POP3 ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "wire",
    [
        b"* 1 FETCH (UID 1)\r\n",  # IMAP, not POP3
        b"OK\r\n",
        b"+ c29tZQ==\r\n",  # a continuation outside AUTH
        b"\r\n",
    ],
)
def test_garbage_is_a_protocol_error(wire: bytes) -> None:
    conn = POP3Connection(greeting=False)
    conn.send("STAT")
    with pytest.raises(mailsync.ProtocolError):
        conn.receive(wire)
    # Out of step for good: refuse to guess what later bytes mean.
    with pytest.raises(mailsync.ProtocolError):
        conn.receive(b"+OK\r\n")


def test_unsolicited_replies() -> None:
    conn = POP3Connection(greeting=False)
    with pytest.raises(mailsync.ProtocolError):
        conn.receive(b"+OK surprise\r\n")
    closing = POP3Connection(greeting=False)
    with pytest.raises(mailsync.ConnectionFailed, match="inactivity"):
        closing.receive(b"-ERR Disconnected for inactivity.\r\n")


def test_overlong_line_is_refused() -> None:
    conn = POP3Connection(greeting=False)
    conn.send("STAT")
    with pytest.raises(mailsync.ProtocolError):
        conn.receive(b"+OK " + b"x" * 70000)


def test_eof_mid_reply_is_a_broken_connection() -> None:
    conn = POP3Connection(greeting=False)
    conn.send("RETR", "1")
    conn.receive(b"+OK\r\nSubject: cut here\r\n")
    with pytest.raises(mailsync.ConnectionFailed, match="RETR"):
        conn.receive_eof()
    done = POP3Connection(greeting=False)
    done.send("QUIT")
    done.receive(b"+OK bye\r\n")
    done.receive_eof()  # nothing outstanding: a normal end


def test_data_after_stls_reply_is_refused() -> None:
    conn = POP3Connection(greeting=False)
    conn.send("STLS")
    conn.receive(b"+OK Begin TLS\r\n")
    conn.check_tls_start()
    # Bytes sent in plaintext right after the reply must not be read as if they were secure.
    injected = POP3Connection(greeting=False)
    injected.send("STLS")
    injected.receive(b"+OK Begin TLS\r\n+OK inject")
    with pytest.raises(mailsync.ProtocolError, match="STLS"):
        injected.check_tls_start()
    whole_line = POP3Connection(greeting=False)
    whole_line.send("STLS")
    with pytest.raises(mailsync.ProtocolError, match="unsolicited"):
        whole_line.receive(b"+OK Begin TLS\r\n+OK injected\r\n")


def test_arguments_cannot_smuggle_commands() -> None:
    conn = POP3Connection(greeting=False)
    with pytest.raises(ValueError, match="CR"):
        conn.send("USER", "alice\r\nDELE 1")
    with pytest.raises(ValueError, match="keyword"):
        conn.send("RE TR")
    assert conn.pending == 0


def test_secrets_stay_out_of_repr() -> None:
    assert "hunter2" not in repr(Command.of("PASS", "hunter2"))
    assert "hunter2" not in repr(Command.of("AUTH", "PLAIN", "aHVudGVyMg=="))
    assert repr(Command.of("RETR", "7")) == "Command('RETR 7')"


# -- capabilities ----------------------------------------------------------------------------


def test_capa_parsing() -> None:
    wire = (
        b"+OK Capability list follows\r\n"
        b"TOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nSTLS\r\nUSER\r\n"
        b"SASL PLAIN login XOAUTH2\r\nLOGIN-DELAY 900\r\nIMPLEMENTATION Shlemazle-Plotz-v302\r\n"
        b".\r\n"
    )
    (reply,) = the_same(wire, [("CAPA",)])
    assert isinstance(reply, Reply)
    caps = Capabilities.parse(reply.lines())
    for name in ("pipelining", "uidl", "top", "stls", "user", "resp_codes", "auth_resp_code"):
        assert getattr(caps, name), name
    assert caps.sasl == ("PLAIN", "LOGIN", "XOAUTH2")
    assert caps.login_delay == 900
    assert "implementation" in caps
    assert caps.names["IMPLEMENTATION"] == ("Shlemazle-Plotz-v302",)


def test_no_capabilities() -> None:
    caps = Capabilities()
    assert not caps
    assert not caps.pipelining
    assert caps.sasl == ()
    assert caps.login_delay is None
    assert Capabilities.parse(["LOGIN-DELAY USER"]).login_delay is None


# -- errors ----------------------------------------------------------------------------------


def _err(command: Command, code: str | None, text: str = "no") -> Reply:
    return Reply(command, False, text, code)


@pytest.mark.parametrize(
    ("command", "code", "expected"),
    [
        (Command.of("PASS", "x"), "AUTH", mailsync.AuthenticationError),
        (Command.of("AUTH", "PLAIN", "x"), "AUTH", mailsync.AuthenticationError),
        (Command.of("APOP", "u", "d"), None, mailsync.AuthenticationError),
        (Command.of("PASS", "x"), "IN-USE", mailsync.TemporaryFailure),
        (Command.of("PASS", "x"), "LOGIN-DELAY", mailsync.RateLimited),
        (Command.of("RETR", "1"), "SYS/TEMP", mailsync.TemporaryFailure),
        (Command.of("RETR", "1"), "SYS/PERM", mailsync.ServerError),
        (Command.of("RETR", "9"), None, mailsync.MessageNotFound),
        (Command.of("DELE", "9"), None, mailsync.MessageNotFound),
        (Command.of("STAT"), None, mailsync.ServerError),
    ],
)
def test_reply_errors(command: Command, code: str | None, expected: type[Exception]) -> None:
    error = reply_error(_err(command, code), context="POP3 host:110", login_delay=300)
    assert type(error) is expected
    assert str(error).startswith("POP3 host:110: ")


def test_in_use_is_clear_and_retryable() -> None:
    wire = b"-ERR [IN-USE] Mailbox locked by another session\r\n"
    (reply,) = the_same(wire, [("PASS", "secret")])
    assert isinstance(reply, Reply)
    assert reply.code == "IN-USE"
    error = reply_error(reply)
    assert isinstance(error, mailsync.TemporaryFailure)
    assert "locked by another POP3 session" in str(error)
    assert "secret" not in str(error)


def test_login_delay_error_carries_retry_after() -> None:
    error = reply_error(_err(Command.of("PASS", "x"), "LOGIN-DELAY"), login_delay=600)
    assert isinstance(error, mailsync.RateLimited)
    assert error.retry_after == 600


def test_login_failure_without_auth_code_under_auth_resp_code() -> None:
    # RFC 3206: with AUTH-RESP-CODE, a failure that is the credentials' fault says [AUTH].
    error = reply_error(_err(Command.of("PASS", "x"), None), auth_resp_code=True)
    assert type(error) is mailsync.ServerError


# -- authentication --------------------------------------------------------------------------


def test_apop_digest_rfc1939_example() -> None:
    digest = apop_digest("<1896.697170952@dbc.mtview.ca.us>", "tanstaaf")
    assert digest == "c4c9334bac560ecc979e58001b3e22fb"


def test_auth_plain_with_initial_response() -> None:
    exchange = sasl.exchange("plain", "alice", "pw")
    conn = POP3Connection(greeting=False)
    line = conn.auth(exchange)
    assert line == b"AUTH PLAIN " + base64.b64encode(b"\0alice\0pw") + b"\r\n"
    (reply,) = feed(conn, b"+OK Logged in.\r\n")
    assert isinstance(reply, Reply)
    assert reply.ok


def test_long_initial_response_waits_for_the_empty_challenge() -> None:
    token = "t" * 400
    exchange = sasl.exchange("XOAUTH2", "alice", token)
    conn = POP3Connection(greeting=False)
    assert conn.auth(exchange) == b"AUTH XOAUTH2\r\n"
    (challenge,) = feed(conn, b"+ \r\n")
    assert challenge == Challenge(Command.of("AUTH", "XOAUTH2"), b"")
    assert isinstance(challenge, Challenge)
    answer = conn.answer(sasl.encode(exchange.respond(challenge.data)))
    assert base64.b64decode(answer.strip()) == sasl.xoauth2("alice", token)


@pytest.mark.parametrize(
    ("mechanism", "answer"), [("XOAUTH2", b"\r\n"), ("OAUTHBEARER", b"AQ==\r\n"), ("X", b"*\r\n")]
)
def test_error_challenge_is_answered_so_the_server_says_err(mechanism: str, answer: bytes) -> None:
    known = mechanism in sasl.TOKEN_MECHANISMS
    exchange = sasl.exchange(mechanism, "u", "t") if known else sasl.Exchange("X", [b"short"])
    conn = POP3Connection(greeting=False)
    conn.auth(exchange)
    detail = b'{"status":"401"}'
    events = the_split_auth(conn, b"+ " + base64.b64encode(detail) + b"\r\n")
    (challenge,) = events
    assert isinstance(challenge, Challenge)
    assert conn.answer(sasl.encode(exchange.respond(challenge.data))) == answer
    assert exchange.error_detail == detail
    (reply,) = feed(conn, b"-ERR [AUTH] Authentication failed.\r\n")
    assert isinstance(reply, Reply)
    assert isinstance(reply_error(reply), mailsync.AuthenticationError)


def the_split_auth(conn: POP3Connection, wire: bytes) -> list[Event]:
    return feed(conn, wire[:3], wire[3:])


def test_bad_base64_challenge() -> None:
    conn = POP3Connection(greeting=False)
    conn.send("AUTH", "PLAIN")
    with pytest.raises(mailsync.ProtocolError, match="base64"):
        conn.receive(b"+ !!!\r\n")


def test_answer_needs_an_auth_in_progress() -> None:
    with pytest.raises(mailsync.ProtocolError):
        POP3Connection(greeting=False).answer("x")


# -- framing by the announced size -----------------------------------------------------------


def _retr(message: bytes, announced: int | None) -> bytes:
    status = b"+OK\r\n" if announced is None else b"+OK %d octets\r\n" % announced
    return status + message.replace(b"\r\n.", b"\r\n..") + b".\r\n"


@pytest.mark.parametrize(
    "announced",
    [None, 0, 1, 41, 42, 43, 44, 45, 46, 90, 10**9],
    ids=lambda n: f"announced={n}",
)
def test_any_announced_size_frames_the_same(announced: int | None) -> None:
    # Right (43 stored, 45 sent), wrong by a little or by a lot, or absent: the bytes must
    # come out the same, also when nothing follows the terminator (a server that stops there).
    message = b"Subject: s\r\n\r\nfirst line\r\nlast line\r\nabcdef"  # no final CRLF
    assert len(message) == 43
    wire = _retr(message + b"\r\n", announced)
    for events in [*every_split(wire, [("RETR", "1")])]:
        assert [e.data for e in events if isinstance(e, Reply)] == [message + b"\r\n"]
    pipelined = wire + b"+OK 2 octets\r\nx\r\n.\r\n+OK\r\n"
    commands = [("RETR", "1"), ("RETR", "2"), ("RSET",)]
    for events in every_split(pipelined, commands):
        data = [e.data for e in events if isinstance(e, Reply)]
        assert data == [message + b"\r\n", b"x\r\n", None]


def test_announced_size_with_dot_stuffing() -> None:
    message = b"Subject: s\r\n\r\n.\r\n..\r\n.x\r\n"
    (reply,) = the_same(_retr(message, len(message)), [("RETR", "1")])
    assert isinstance(reply, Reply)
    assert reply.data == message


def test_message_larger_than_the_buffer_through_get_buffer() -> None:
    message = b"Subject: big\r\n\r\n" + b"".join(b"%08d .line\r\n" % i for i in range(200_000))
    wire = _retr(message, len(message))
    conn = POP3Connection(greeting=False)
    conn.send("RETR", "1")
    events: list[Event] = []
    position = 0
    while position < len(wire):
        with conn.get_buffer() as view:
            count = min(len(view), 300_000, len(wire) - position)
            view[:count] = wire[position : position + count]
        position += count
        events += conn.buffer_updated(count)
    assert [e.data for e in events if isinstance(e, Reply)] == [message]
    assert conn.idle


def test_marks_last_until_an_rset_is_confirmed() -> None:
    conn = POP3Connection(greeting=False)
    conn.send("UIDL")
    conn.send("LIST")
    conn.send("CAPA")
    assert not conn.marked  # listing marks nothing
    feed(conn, b"+OK\r\n.\r\n+OK\r\n.\r\n+OK\r\n.\r\n")
    for marking in (("RETR", "1"), ("TOP", "1", "0"), ("DELE", "1")):
        conn.send(*marking)
        assert conn.marked
        conn.send("RSET")
        feed(conn, b"-ERR no such message\r\n")  # refused, yet counted: nothing is assumed
        assert conn.marked
        feed(conn, b"+OK\r\n")
        assert not conn.marked


def test_marks_sent_after_a_pipelined_rset_remain() -> None:
    conn = POP3Connection(greeting=False)
    for command in (("RETR", "1"), ("RSET",), ("RETR", "2")):
        conn.send(*command)
    feed(conn, _retr(b"x\r\n", 3), b"+OK\r\n")
    assert conn.marked  # RETR 2 went out after the RSET
    conn.send("RSET")
    feed(conn, _retr(b"y\r\n", 3), b"-ERR not now\r\n")
    assert conn.marked  # a refused RSET undoes nothing
    conn.send("RSET")
    feed(conn, b"+OK\r\n")
    assert not conn.marked
