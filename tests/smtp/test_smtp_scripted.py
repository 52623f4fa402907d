"""The SMTP sender against a scripted server (tests/smtp/scripted.py), for the cases the real
Postfix cannot be made to produce: STARTTLS or DSN not offered, 4xx replies, a server that
hangs up mid-run, XOAUTH2/OAUTHBEARER, SIZE, SMTPUTF8, no PIPELINING."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Iterator
from typing import Any

import pytest

import mailsync
from mailsync.backends.smtp import AsyncSMTPSender, SMTPSender
from tests.smtp.scripted import DROP, ScriptedSMTP

SENDER = "ann@example.test"
RCPT = "bob@example.test"


@pytest.fixture
def server() -> Iterator[ScriptedSMTP]:
    with ScriptedSMTP() as scripted:
        yield scripted


def _sender(server: ScriptedSMTP, **options: Any) -> SMTPSender:
    options.setdefault("tls", "none")
    options.setdefault("retry_delay", 0.01)
    out = mailsync.sender(server.url(user=options.pop("user", None)), **options)
    assert isinstance(out, SMTPSender)
    return out


def _message(n: int = 0, **fields: Any) -> Any:
    fields.setdefault("to", RCPT)
    fields.setdefault("text", f"message {n}\n")
    return mailsync.compose(from_=SENDER, subject=f"m{n}", **fields)


def test_pipelines_the_envelope_in_one_write(server: ScriptedSMTP) -> None:
    with _sender(server) as out:
        out.send(_message(to=[RCPT, "cy@example.test"]))
    envelope = [c for c in server.chunks if c.startswith(b"MAIL FROM")]
    assert len(envelope) == 1
    assert envelope[0].count(b"\r\n") == 4  # MAIL, RCPT, RCPT, DATA together
    assert server.verbs()[-1] == "QUIT"


def test_lockstep_without_pipelining(server: ScriptedSMTP) -> None:
    server.extensions = ["8BITMIME", "SIZE 100000"]
    server.refuse["nobody@example.test"] = "550 5.1.1 no such user"
    with _sender(server) as out:
        first = out.send(_message(1, to=[RCPT, "nobody@example.test"]))
        second = out.send(_message(2))
    assert first.accepted == (RCPT,)
    assert first.refused == {"nobody@example.test": (550, "5.1.1 no such user")}
    assert second.ok
    assert all(chunk.count(b"\r\n") == 1 for chunk in server.chunks if b"RCPT" in chunk)
    # No RSET after an accepted message: its end of data ended the transaction.
    assert server.verbs() == [
        "EHLO", "MAIL", "RCPT", "RCPT", "DATA", "MAIL", "RCPT", "DATA", "QUIT"
    ]  # fmt: skip


def test_rset_after_an_unfinished_transaction(server: ScriptedSMTP) -> None:
    server.refuse["nobody@example.test"] = "550 5.1.1 no such user"
    with _sender(server) as out:
        with pytest.raises(mailsync.RecipientsRefused):
            out.send(_message(1, to="nobody@example.test"))  # MAIL accepted, no recipient
        assert out.send(_message(2)).ok
    assert server.verbs() == [
        "EHLO",
        "MAIL",
        "RCPT",
        "DATA",
        "RSET",
        "MAIL",
        "RCPT",
        "DATA",
        "QUIT",
    ]
    (rset_group,) = [c for c in server.chunks if c.startswith(b"RSET")]
    assert rset_group.startswith(b"RSET\r\nMAIL FROM:")  # pipelined with the next envelope


@pytest.mark.reliability(
    area="SMTP",
    fault="STARTTLS stripped: the server does not offer it",
    outcome="ConnectionFailed; no AUTH and no message sent in the clear",
)
def test_starttls_required_but_not_offered_fails_closed(server: ScriptedSMTP) -> None:
    out = _sender(server, tls="starttls", user=SENDER, password="secret-pw")
    with pytest.raises(mailsync.ConnectionFailed, match="STARTTLS") as caught:
        out.send(_message())
    assert server.verbs() == ["EHLO"]  # no AUTH, no MAIL: nothing went out in plaintext
    assert "secret-pw" not in str(caught.value)
    assert server.messages == []


def test_dsn_asked_but_not_offered_is_unsupported(server: ScriptedSMTP) -> None:
    server.extensions = ["PIPELINING", "8BITMIME"]
    with _sender(server) as out:
        with pytest.raises(mailsync.Unsupported, match="DSN"):
            out.send(_message(), notify="success")
        assert out.send(_message()).ok  # without DSN it goes
    assert "MAIL" in server.verbs()
    assert len(server.messages) == 1


def test_dsn_parameters_are_sent(server: ScriptedSMTP) -> None:
    with _sender(server) as out:
        result = out.send(
            _message(to="b+x@example.test"), notify=["success", "failure"], ret="hdrs",
            envid="id+1=2",
        )  # fmt: skip
    assert result.envid == "id+1=2"
    received = server.messages[0]
    assert "RET=HDRS" in received.mail_line
    assert "ENVID=id+2B1+3D2" in received.mail_line
    assert received.rcpt_lines == [
        "RCPT TO:<b+x@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+2Bx@example.test"
    ]


def test_smtputf8_and_8bitmime(server: ScriptedSMTP) -> None:
    server.extensions = ["PIPELINING", "8BITMIME", "SMTPUTF8"]
    with _sender(server) as out:
        out.send(_message(to="jörg@example.test", text="grüße\n"))
    mail_line = server.messages[0].mail_line
    assert "SMTPUTF8" in mail_line
    assert "BODY=8BITMIME" in mail_line
    assert server.messages[0].recipients == ["jörg@example.test"]


def test_smtputf8_needed_but_not_offered(server: ScriptedSMTP) -> None:
    with _sender(server) as out, pytest.raises(mailsync.Unsupported, match="SMTPUTF8"):
        out.send(_message(to="jörg@example.test"))
    assert "MAIL" not in server.verbs()


def test_8bit_needed_but_not_offered(server: ScriptedSMTP) -> None:
    server.extensions = ["PIPELINING"]
    with _sender(server) as out, pytest.raises(mailsync.Unsupported, match="8BITMIME"):
        out.send(_message(text="grüße\n"))


def test_size_is_checked_before_data(server: ScriptedSMTP) -> None:
    server.extensions = ["PIPELINING", "SIZE 100000"]
    with _sender(server) as out:
        with pytest.raises(mailsync.SendError, match="at most 100000"):
            out.send(_message(text="x\n" * 60_000))
        assert "MAIL" not in server.verbs()
        out.send(_message(1))
        out.send(_message(2, text="y\n" * 25_000))
    small, big = server.messages
    assert "SIZE=" not in small.mail_line  # small messages need not declare it
    assert f"SIZE={len(big.data)}" in big.mail_line


def test_4xx_is_retried_with_backoff(server: ScriptedSMTP) -> None:
    server.queue("MAIL", "451 4.3.0 try again")
    server.queue(".", "452 4.3.1 disk full")
    with _sender(server, retries=3) as out:
        result = out.send(_message())
    assert result.ok
    assert len(server.messages) == 1
    assert server.verbs().count("MAIL") == 3


@pytest.mark.reliability(
    area="SMTP",
    fault="4xx replies on every attempt",
    outcome="TemporaryFailure with the server's code after the retries asked for; nothing accepted",
)
def test_4xx_on_every_attempt_is_a_temporary_failure(server: ScriptedSMTP) -> None:
    server.queue("MAIL", *["421 4.7.0 not now"] * 0, *["450 4.7.1 greylisted"] * 5)
    with _sender(server, retries=2) as out, pytest.raises(mailsync.TemporaryFailure) as caught:
        out.send(_message())
    assert caught.value.code == 450
    assert server.verbs().count("MAIL") == 2
    assert server.messages == []


def test_5xx_is_not_retried(server: ScriptedSMTP) -> None:
    server.queue("MAIL", "550 5.7.1 sender rejected")
    with _sender(server) as out:
        with pytest.raises(mailsync.SendError, match="refused the sender"):
            out.send(_message())
        assert server.verbs().count("MAIL") == 1
        assert out.send(_message()).ok  # the connection is still usable


def test_deferred_recipient_is_retried_alone(server: ScriptedSMTP) -> None:
    server.refuse["gone@example.test"] = "550 5.1.1 gone"
    server.queue("RCPT", "250 2.1.5 Ok", "451 4.2.0 mailbox busy", "250 2.1.5 Ok")
    with _sender(server) as out:
        result = out.send(_message(to=[RCPT, "busy@example.test", "gone@example.test"]))
    assert result.accepted == (RCPT, "busy@example.test")
    assert result.refused == {"gone@example.test": (550, "5.1.1 gone")}
    assert [m.recipients for m in server.messages] == [[RCPT], ["busy@example.test"]]


def test_all_refused_raises_with_the_replies(server: ScriptedSMTP) -> None:
    server.refuse[RCPT] = "550 5.1.1 <bob@example.test>: unknown"
    with _sender(server) as out, pytest.raises(mailsync.RecipientsRefused) as caught:
        out.send(_message())
    assert caught.value.refused == {RCPT: (550, "5.1.1 <bob@example.test>: unknown")}
    assert isinstance(caught.value, mailsync.SendError)


@pytest.mark.reliability(
    area="SMTP",
    fault="the server hangs up in the middle of send_many()",
    outcome="only the messages not yet accepted are sent again, on a new connection",
)
def test_server_hanging_up_mid_send_many_resends_only_the_unaccepted(
    server: ScriptedSMTP,
) -> None:
    server.drop_after_messages = 4  # closes the connection right after its 4th 250
    messages = [_message(n) for n in range(12)]
    with _sender(server) as out:
        results = out.send_many(messages)
    assert [r.ok for r in results] == [True] * 12
    subjects = [m.data.split(b"Subject: ")[1].split(b"\r\n")[0] for m in server.messages]
    assert subjects == [f"m{n}".encode() for n in range(12)]  # each exactly once, in order
    assert server.connections == 2


def test_421_before_end_of_data_is_sent_again_on_a_new_connection(server: ScriptedSMTP) -> None:
    server.queue("DATA", "354 go ahead", "421 4.3.2 shutting down")
    with _sender(server) as out:
        results = out.send_many([_message(n) for n in range(3)])
    assert all(r.ok for r in results)
    assert len(server.messages) == 3
    assert server.connections == 2


def test_drop_while_idle_reconnects(server: ScriptedSMTP) -> None:
    server.queue("MAIL", "250 2.1.0 Ok", DROP)
    with _sender(server) as out:
        out.send(_message(1))
        out.send(_message(2))  # MAIL finds the connection dead: sent on a new one
        assert out.connections_opened == 2
    assert len(server.messages) == 2


@pytest.mark.reliability(
    area="SMTP",
    fault="the server drops every connection",
    outcome="a bounded number of reconnects, then ConnectionFailed",
)
def test_reconnects_are_bounded(server: ScriptedSMTP) -> None:
    server.queue("MAIL", DROP, DROP, DROP)
    with _sender(server, reconnects=2) as out, pytest.raises(mailsync.ConnectionFailed):
        out.send(_message())
    assert server.connections == 3


def test_xoauth2_calls_the_token_callable_per_connection(server: ScriptedSMTP) -> None:
    server.extensions = ["PIPELINING", "AUTH PLAIN XOAUTH2"]
    blob = base64.b64encode(b"user=ann@example.test\x01auth=Bearer tok-1\x01\x01").decode()
    server.auth["XOAUTH2"] = blob
    tokens = iter(["tok-1", "tok-2"])
    out = _sender(server, user=SENDER, token=lambda: next(tokens))
    assert out.send(_message()).ok
    out.close()
    with pytest.raises(mailsync.AuthenticationError) as caught:
        out.send(_message())  # new connection, new token, which the server refuses
    assert "401" in str(caught.value)
    assert "tok-2" not in str(caught.value)


def test_oauthbearer(server: ScriptedSMTP) -> None:
    # Preferred over XOAUTH2 when both are offered; with the host and port (RFC 7628 3.1).
    server.extensions = ["AUTH XOAUTH2 OAUTHBEARER"]
    gs2 = f"n,a=ann@example.test,\x01host=127.0.0.1\x01port={server.port}\x01"
    blob = base64.b64encode(f"{gs2}auth=Bearer tok\x01\x01".encode()).decode()
    server.auth["OAUTHBEARER"] = blob
    with _sender(server, user=SENDER, token="tok") as out:
        assert out.send(_message()).ok
    # A refused token: the error challenge is answered with %x01, so the server can say no.
    with _sender(server, user=SENDER, token="expired") as out:
        with pytest.raises(mailsync.AuthenticationError, match="401"):
            out.send(_message())
    assert b"\r\nAQ==\r\n" in b"".join(server.chunks)


def test_plain_and_login(server: ScriptedSMTP) -> None:
    server.extensions = ["AUTH PLAIN"]
    server.auth["PLAIN"] = base64.b64encode(b"\0ann@example.test\0p\xc3\xa4ss").decode()
    with _sender(server, user=SENDER, password="päss") as out:
        assert out.send(_message()).ok
    server.extensions = ["AUTH LOGIN"]
    server.auth["LOGIN"] = " ".join(base64.b64encode(x.encode()).decode() for x in (SENDER, "päss"))
    with _sender(server, user=SENDER, password="päss") as out:
        assert out.send(_message()).ok
    with _sender(server, user=SENDER, password="wrong") as out:
        with pytest.raises(mailsync.AuthenticationError, match="535"):
            out.send(_message())


def test_no_auth_without_credentials_and_none_offered(server: ScriptedSMTP) -> None:
    with _sender(server) as out:
        out.send(_message())
    assert "AUTH" not in server.verbs()
    with _sender(server, user=SENDER, password="pw") as out:
        with pytest.raises(mailsync.AuthenticationError, match="no AUTH"):
            out.send(_message())


@pytest.mark.reliability(
    area="Secrets",
    fault="SMTP AUTH refused, with every logger at DEBUG",
    outcome="the password is in no error text and no log record",
)
def test_secrets_stay_out_of_errors_and_logs(
    server: ScriptedSMTP, caplog: pytest.LogCaptureFixture
) -> None:
    server.extensions = ["AUTH PLAIN LOGIN"]
    caplog.set_level(logging.DEBUG, logger="mailsync")
    out = _sender(server, user=SENDER, password="hunter2-secret")
    with pytest.raises(mailsync.AuthenticationError) as caught:
        out.send(_message())
    text = f"{caught.value} {caught.value!r} {out!r} {caplog.text}"
    assert "hunter2-secret" not in text
    assert base64.b64encode(b"hunter2-secret").decode() not in text


def test_etrn(server: ScriptedSMTP) -> None:
    server.extensions = ["ETRN"]
    server.queue("ETRN", "250 2.0.0 Queuing started", "458 4.0.0 unable to queue")
    with _sender(server) as out:
        assert "Queuing started" in out.etrn("example.test")
        with pytest.raises(mailsync.TemporaryFailure):
            out.etrn("example.test")
        with pytest.raises(mailsync.ConfigError):
            out.etrn("bad domain")
    server.extensions = []
    with _sender(server) as out, pytest.raises(mailsync.Unsupported):
        out.etrn("example.test")


def test_connection_refused_is_connection_failed() -> None:
    with ScriptedSMTP() as scripted:
        url = scripted.url()
    out = mailsync.sender(url, tls="none", timeout=5)
    with pytest.raises(mailsync.ConnectionFailed) as caught:
        out.send(_message())
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)


@pytest.mark.reliability(
    area="SMTP",
    fault="the server refuses EHLO and HELO with 554",
    outcome="ProtocolError; nothing sent",
)
def test_greeting_refusal(server: ScriptedSMTP) -> None:
    server.queue("EHLO", "554 5.7.1 go away")
    server.queue("HELO", "554 5.7.1 go away")
    with _sender(server) as out, pytest.raises(mailsync.ProtocolError):
        out.send(_message())


async def test_async_sender_same_behaviour(server: ScriptedSMTP) -> None:
    server.queue("MAIL", "451 4.3.0 try again")
    server.refuse["nobody@example.test"] = "550 5.1.1 unknown"
    server.drop_after_messages = 2
    out = mailsync.sender_async(server.url(), tls="none", retry_delay=0.01)
    assert isinstance(out, AsyncSMTPSender)
    async with out:
        first = await out.send(_message(0, to=[RCPT, "nobody@example.test"]), notify="failure")
        results = await out.send_many([_message(n) for n in range(1, 6)])
        with pytest.raises(mailsync.RecipientsRefused):
            await out.send(_message(9, to="nobody@example.test"))
    assert first.accepted == (RCPT,)
    assert first.envid
    assert all(r.ok for r in results)
    assert len(server.messages) == 6
    assert server.connections == 2
    assert server.verbs().count("MAIL") == 8


# -- send_many's chain: each message's data travels with the next envelope -------------------


def _subjects(server: ScriptedSMTP) -> list[str]:
    return [m.data.split(b"Subject: ")[1].split(b"\r\n")[0].decode() for m in server.messages]


def test_send_many_sends_data_with_the_next_envelope(server: ScriptedSMTP) -> None:
    with _sender(server) as out:
        results = out.send_many([_message(n) for n in range(5)])
    assert all(r.ok for r in results)
    assert _subjects(server) == [f"m{n}" for n in range(5)]
    chained = [c for c in server.chunks if b"\r\n.\r\nMAIL FROM:" in c]
    assert len(chained) == 3  # m1..m3 ride with the next envelope; m0 and m4 go alone
    assert "RSET" not in server.verbs()
    assert server.connections == 1


def test_chain_retries_a_4xx_end_of_data(server: ScriptedSMTP) -> None:
    server.queue(".", "250 2.0.0 Ok", "451 4.3.0 try again")
    messages = [_message(n) for n in range(5)]
    with _sender(server) as out:
        results = out.send_many(messages)
    assert [r.message_id for r in results] == [str(m["Message-ID"]).strip("<>") for m in messages]
    assert all(r.ok for r in results)
    assert sorted(_subjects(server)) == [f"m{n}" for n in range(5)]
    assert _subjects(server)[:3] == ["m0", "m2", "m1"]  # m1 went again once the chain ended


def test_chain_keeps_going_past_a_refused_message(server: ScriptedSMTP) -> None:
    server.refuse["nobody@example.test"] = "550 5.1.1 unknown"
    messages = [_message(0), _message(1, to="nobody@example.test"), _message(2), _message(3)]
    with _sender(server) as out:
        results = out.send_many(messages)
    assert [r.accepted for r in results] == [(RCPT,), (), (RCPT,), (RCPT,)]
    assert results[1].refused == {"nobody@example.test": (550, "5.1.1 unknown")}
    assert _subjects(server) == ["m0", "m2", "m3"]
    assert server.verbs().count("RSET") == 1  # m1's transaction stayed open: cleared once


def test_chain_clears_a_transaction_left_open_mid_chain(server: ScriptedSMTP) -> None:
    # m2's envelope goes out with m1's data; m2's recipient is refused, leaving its MAIL
    # transaction open, so m3 must start with RSET (else: "nested MAIL command").
    server.refuse["nobody@example.test"] = "550 5.1.1 unknown"
    messages = [_message(0), _message(1), _message(2, to="nobody@example.test"), _message(3)]
    with _sender(server) as out:
        results = out.send_many(messages)
    assert [r.accepted for r in results] == [(RCPT,), (RCPT,), (), (RCPT,)]
    assert _subjects(server) == ["m0", "m1", "m3"]
    assert server.verbs().count("RSET") == 1


def test_chain_stops_at_a_refused_message_with_a_note(server: ScriptedSMTP) -> None:
    server.queue(".", "250 2.0.0 Ok", "554 5.7.1 looks like spam")
    with _sender(server) as out:
        with pytest.raises(mailsync.SendError, match="spam") as caught:
            out.send_many([_message(n) for n in range(4)])
        assert any("1 message(s)" in note for note in caught.value.__notes__)
        assert out.send(_message(9)).ok  # the sender is still usable
    assert _subjects(server) == ["m0", "m9"]


def test_chain_finishes_the_waiting_message_before_an_error(server: ScriptedSMTP) -> None:
    with _sender(server) as out, pytest.raises(mailsync.Unsupported, match="SMTPUTF8"):
        out.send_many([_message(0), _message(1), _message(2, to="jörg@example.test")])
    assert _subjects(server) == ["m0", "m1"]


_NO_RECIPIENT = b"From: ann@example.test\r\nSubject: bad\r\n\r\nno recipient\r\n"


@pytest.mark.parametrize("position", [0, 1, 2, 3])
def test_a_message_prepare_refuses_fails_at_its_turn(server: ScriptedSMTP, position: int) -> None:
    # The chain prepares each next message early; its error must still come at its turn,
    # after every message before it was sent, and leave the connection usable.
    messages = [*(_message(n) for n in range(position)), _NO_RECIPIENT, _message(8)]
    with _sender(server, timeout=5) as out:
        with pytest.raises(mailsync.InvalidAddress, match="no recipient") as caught:
            out.send_many(messages)
        assert caught.value.__notes__ == [
            f"{position} message(s) of this send_many were sent before"
        ]
        assert out.send(_message(9)).ok
    assert _subjects(server) == [*(f"m{n}" for n in range(position)), "m9"]
    assert server.connections == 1


async def test_async_a_message_prepare_refuses_fails_at_its_turn(server: ScriptedSMTP) -> None:
    messages = [_message(0), _message(1), _message(2), _NO_RECIPIENT, _message(8)]
    async with mailsync.sender_async(server.url(), tls="none", timeout=5) as out:
        with pytest.raises(mailsync.InvalidAddress) as caught:
            await out.send_many(messages)
        assert caught.value.__notes__ == ["3 message(s) of this send_many were sent before"]
        assert (await out.send(_message(9))).ok
    assert _subjects(server) == ["m0", "m1", "m2", "m9"]


def test_an_error_from_the_messages_iterator_comes_after_the_earlier_messages(
    server: ScriptedSMTP,
) -> None:
    def messages() -> Iterator[Any]:
        yield from (_message(n) for n in range(3))
        raise RuntimeError("the caller's generator broke")

    with _sender(server) as out, pytest.raises(RuntimeError, match="generator broke"):
        out.send_many(messages())
    assert _subjects(server) == ["m0", "m1", "m2"]


def test_send_many_pulls_messages_at_most_one_ahead(server: ScriptedSMTP) -> None:
    ahead: list[int] = []

    def messages() -> Iterator[Any]:
        for n in range(40):
            # Message n is pulled once n-2 was answered (n-1's envelope and n-2's data
            # are on their way): a lazy iterator streams, however long it is.
            ahead.append(n - len(server.messages))
            yield _message(n)

    with _sender(server) as out:
        results = out.send_many(messages())
    assert len(results) == 40
    assert all(r.ok for r in results)
    assert max(ahead) <= 2


def test_pipelining_can_be_turned_off(server: ScriptedSMTP) -> None:
    with _sender(server, pipelining="off") as out:
        results = out.send_many([_message(n) for n in range(3)])
    assert all(r.ok for r in results)
    assert all(c.count(b"\r\n") == 1 for c in server.chunks if c.startswith((b"MAIL", b"RCPT")))


async def test_async_sender_does_not_block_the_event_loop(server: ScriptedSMTP) -> None:
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    async with mailsync.sender_async(server.url(), tls="none") as out:
        results = await out.send_many([_message(n) for n in range(20)])
    done.set()
    await task
    assert all(r.ok for r in results)
    assert ticks > 10  # a blocking sender would leave the loop no turn at all
