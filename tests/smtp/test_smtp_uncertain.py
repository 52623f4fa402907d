"""What the SMTP sender does when the outcome of a message is not known, or only deferred
(issue 14): a server that reads the whole message and hangs up (or garbles its reply) before
answering, and a server that answers 4xx to every recipient on every attempt."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

import mailsync
from tests.smtp.scripted import DROP, ScriptedSMTP

SENDER = "ann@example.test"
RCPT = "bob@example.test"
NO_REPLY = {"drop": DROP, "garbled": "this is no SMTP reply"}


@pytest.fixture
def server() -> Iterator[ScriptedSMTP]:
    with ScriptedSMTP() as scripted:
        yield scripted


def _message(n: int, **fields: Any) -> Any:
    fields.setdefault("to", RCPT)
    return mailsync.compose(from_=SENDER, subject=f"m{n}", text=f"message {n}\n", **fields)


def _options(**options: Any) -> dict[str, Any]:
    return {"tls": "none", "retry_delay": 0.01, **options}


def _call(server: ScriptedSMTP, method: str, arg: Any, asynchronous: bool, **options: Any) -> Any:
    """``send(arg)`` or ``send_many(arg)`` on a new sender, sync or async."""
    if asynchronous:

        async def run() -> Any:
            async with mailsync.sender_async(server.url(), **_options(**options)) as out:
                return await getattr(out, method)(arg)

        return asyncio.run(run())
    with mailsync.sender(server.url(), **_options(**options)) as out:
        return getattr(out, method)(arg)


def _send(server: ScriptedSMTP, message: Any, asynchronous: bool, **options: Any) -> Any:
    return _call(server, "send", message, asynchronous, **options)


def _send_many(
    server: ScriptedSMTP, messages: list[Any], asynchronous: bool, **options: Any
) -> Any:
    return _call(server, "send_many", messages, asynchronous, **options)


def _times_sent(server: ScriptedSMTP, n: int) -> int:
    """How many times message ``n``'s data reached the server (answered or not)."""
    return b"".join(server.chunks).count(b"Subject: m%d\r\n" % n)


@pytest.mark.reliability(
    area="SMTP",
    fault="the server reads the whole message, then hangs up (or sends garbage) instead of "
    "answering the end of data",
    inputs="send(), sync and async",
    outcome="DeliveryUncertain (a SendError) carrying the Message-ID; the message is not "
    "sent again",
)
@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("reply", list(NO_REPLY))
def test_no_answer_to_the_end_of_data_is_uncertain_and_not_sent_again(
    server: ScriptedSMTP, reply: str, asynchronous: bool
) -> None:
    server.queue(".", NO_REPLY[reply])
    message = _message(1)
    with pytest.raises(mailsync.DeliveryUncertain) as caught:
        _send(server, message, asynchronous)
    assert isinstance(caught.value, mailsync.SendError)
    assert caught.value.message_id == message["Message-ID"].strip("<>")
    assert caught.value.message_ids == (caught.value.message_id,)
    assert "not sent again" in str(caught.value)
    assert _times_sent(server, 1) == 1
    assert server.verbs().count("DATA") == 1


@pytest.mark.reliability(
    area="SMTP",
    fault="the end of data gets no answer, with resend_uncertain=True",
    inputs="no answer once, then an answer; no answer twice",
    outcome="sent exactly once more: delivered on the second try, or DeliveryUncertain after it",
)
@pytest.mark.parametrize("drops", [1, 2])
def test_resend_uncertain_sends_once_more(server: ScriptedSMTP, drops: int) -> None:
    server.queue(".", *[DROP] * drops)
    if drops == 1:
        result = _send(server, _message(1), False, resend_uncertain=True)
        assert result.accepted == (RCPT,)
    else:
        with pytest.raises(mailsync.DeliveryUncertain):
            _send(server, _message(1), False, resend_uncertain="on")
    assert _times_sent(server, 1) == 2


@pytest.mark.reliability(
    area="SMTP",
    fault="in a pipelined send_many(), the server reads a message's data and hangs up "
    "without answering its end of data",
    inputs="the 2nd of 5 messages, sync and async, pipelined and not",
    outcome="the other messages are sent (each once), then DeliveryUncertain names the "
    "uncertain one and carries every result (None for it); it is not sent again",
)
@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "lockstep"])
def test_send_many_reports_an_uncertain_message_and_sends_the_rest(
    server: ScriptedSMTP, asynchronous: bool, pipelining: bool
) -> None:
    server.queue(".", "250 2.0.0 Ok", DROP)
    messages = [_message(n) for n in range(5)]
    with pytest.raises(mailsync.DeliveryUncertain) as caught:
        _send_many(server, messages, asynchronous, pipelining=pipelining)
    error = caught.value
    assert error.message_ids == (messages[1]["Message-ID"].strip("<>"),)
    assert [r is None for r in error.results] == [False, True, False, False, False]
    assert all(r.accepted == (RCPT,) for r in error.results if r is not None)
    assert [_times_sent(server, n) for n in range(5)] == [1] * 5
    assert [m.data.split(b"Subject: ")[1][:2] for m in server.messages] == [
        b"m0",
        b"m2",
        b"m3",
        b"m4",
    ]


def test_send_many_resends_an_uncertain_message_once_when_asked(server: ScriptedSMTP) -> None:
    server.queue(".", "250 2.0.0 Ok", DROP)
    results = _send_many(server, [_message(n) for n in range(4)], False, resend_uncertain=True)
    assert all(r.accepted == (RCPT,) for r in results)
    assert [_times_sent(server, n) for n in range(4)] == [1, 2, 1, 1]


@pytest.mark.reliability(
    area="SMTP",
    fault="every recipient gets a 4xx reply (451 greylisting) on every attempt",
    inputs="send(), sync and async",
    outcome="RecipientsDeferred: a TemporaryFailure (code 451) and a RecipientsRefused "
    "(refused says why); a mix of 4xx and 5xx stays a plain RecipientsRefused",
)
@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_every_recipient_deferred_is_a_temporary_failure(
    server: ScriptedSMTP, asynchronous: bool
) -> None:
    server.queue("RCPT", *["451 4.7.1 greylisted, try later"] * 6)
    message = _message(1, to=[RCPT, "carol@example.test"])
    with pytest.raises(mailsync.RecipientsDeferred) as caught:
        _send(server, message, asynchronous, retries=2)
    assert isinstance(caught.value, mailsync.TemporaryFailure)
    assert isinstance(caught.value, mailsync.RecipientsRefused)
    assert caught.value.code == 451
    assert caught.value.refused == {
        RCPT: (451, "4.7.1 greylisted, try later"),
        "carol@example.test": (451, "4.7.1 greylisted, try later"),
    }
    assert server.verbs().count("MAIL") == 2
    assert server.messages == []


def test_a_mix_of_deferred_and_refused_recipients_is_refused(server: ScriptedSMTP) -> None:
    server.refuse["carol@example.test"] = "550 5.1.1 no such user"
    server.queue("RCPT", *["451 4.7.1 greylisted"] * 6)
    with pytest.raises(mailsync.RecipientsRefused) as caught:
        _send(server, _message(1, to=[RCPT, "carol@example.test"]), False, retries=2)
    assert not isinstance(caught.value, mailsync.TemporaryFailure)
    assert caught.value.refused["carol@example.test"][0] == 550
