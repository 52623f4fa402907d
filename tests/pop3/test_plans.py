"""The POP3 session plans (login, STLS, pipelining windows) against scripted server replies.

The plans do no I/O, so the logins Dovecot is not configured for here (APOP, XOAUTH2,
OAUTHBEARER, a server without STLS or without PIPELINING, LOGIN-DELAY, [IN-USE]) are checked
by driving them with canned replies, exactly as the socket drivers would.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest

import mailsync
from mailsync._config import Endpoint, parse_url
from mailsync.backends.pop3 import (
    Plan,
    _Emit,
    _Entry,
    _fetch_plan,
    _open_plan,
    _Read,
    _StartTLS,
    _State,
    _Write,
)
from mailsync.protocol.pop3 import Capabilities, POP3Connection

Handler = Callable[[str], bytes]
DOVECOT_CAPA = b"+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nUSER\r\n"


class Script:
    """A scripted server: ``replies`` maps a command line (or its keyword) to reply bytes."""

    def __init__(self, greeting: bytes, replies: dict[str, bytes | Handler]) -> None:
        self.output = bytearray(greeting)
        self.replies = replies
        self.lines: list[str] = []
        self.tls_started = False
        self.max_outstanding = 0

    def handle(self, data: bytes) -> None:
        for line in data.decode().split("\r\n")[:-1]:
            self.lines.append(line)
            reply = self.replies.get(line, self.replies.get(line.split(" ")[0]))
            if reply is None:
                self.output += b"-ERR Unknown command\r\n"
            else:
                self.output += reply(line) if callable(reply) else reply

    def run(self, state: _State, plan: Plan[Any]) -> tuple[Any, list[Any]]:
        emitted: list[Any] = []
        value: Any = None
        while True:
            try:
                action = next(plan) if value is None else plan.send(value)
            except StopIteration as stop:
                return stop.value, emitted
            value = []
            if isinstance(action, _Write):
                self.handle(action.data)
            elif isinstance(action, _Read):
                self.max_outstanding = max(self.max_outstanding, state.conn.pending)
                value = state.conn.receive(bytes(self.output))
                self.output.clear()
                assert value, "the plan waits for a reply the script does not send"
            elif isinstance(action, _StartTLS):
                self.tls_started = True
            elif isinstance(action, _Emit):
                emitted.append(action.item)


def _endpoint(**options: Any) -> Endpoint:
    tls = options.pop("tls", "none")
    password = options.pop("password", "tanstaaf")
    token = options.pop("token", None)
    return parse_url(
        "pop3://mrose@mail.example.test",
        password=password,
        token=token,
        tls=tls,
        options=options,
    )


def _login(script: Script, endpoint: Endpoint) -> _State:
    state = _State("POP3 test")
    script.run(state, _open_plan(state, endpoint))
    return state


def test_apop_when_offered_and_asked() -> None:
    script = Script(
        b"+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>\r\n",
        {"CAPA": DOVECOT_CAPA + b".\r\n", "APOP": b"+OK maildrop has 1 message\r\n"},
    )
    _login(script, _endpoint(apop=True))
    assert "APOP mrose c4c9334bac560ecc979e58001b3e22fb" in script.lines
    assert not any(line.startswith(("USER", "PASS", "AUTH")) for line in script.lines)


def test_apop_from_the_url_query() -> None:
    endpoint = parse_url("pop3://mrose@host?apop=1", password="tanstaaf", tls="none")
    script = Script(b"+OK ready <1.2@host>\r\n", {"CAPA": b"-ERR\r\n", "APOP": b"+OK\r\n"})
    _login(script, endpoint)
    assert script.lines[1].startswith("APOP mrose ")


def test_plain_when_offered_user_pass_otherwise() -> None:
    plain = Script(
        b"+OK ready\r\n",
        {"CAPA": DOVECOT_CAPA + b"SASL PLAIN LOGIN\r\n.\r\n", "AUTH": b"+OK Logged in.\r\n"},
    )
    _login(plain, _endpoint())
    expected = base64.b64encode(b"\0mrose\0tanstaaf").decode()
    assert f"AUTH PLAIN {expected}" in plain.lines
    classic = Script(
        b"+OK ready\r\n",
        {"CAPA": DOVECOT_CAPA + b".\r\n", "USER": b"+OK\r\n", "PASS": b"+OK\r\n"},
    )
    _login(classic, _endpoint())
    assert classic.lines[1:3] == ["USER mrose", "PASS tanstaaf"]


@pytest.mark.parametrize(
    ("offered", "mechanism"),
    [(b"XOAUTH2", "XOAUTH2"), (b"XOAUTH2 OAUTHBEARER", "OAUTHBEARER"), (b"", "XOAUTH2")],
)
def test_token_login(offered: bytes, mechanism: str) -> None:
    calls: list[int] = []

    def token() -> str:
        calls.append(1)
        return "ya29.token"

    capa = DOVECOT_CAPA + (b"SASL " + offered + b"\r\n" if offered else b"") + b".\r\n"
    script = Script(b"+OK ready\r\n", {"CAPA": capa, "AUTH": b"+OK\r\n"})
    _login(script, _endpoint(token=token, password=None))
    (auth,) = [line for line in script.lines if line.startswith("AUTH")]
    _, sent_mechanism, initial = auth.split(" ")
    assert sent_mechanism == mechanism
    assert b"auth=Bearer ya29.token\x01\x01" in base64.b64decode(initial)
    assert calls == [1]  # a callable is asked at every login


def test_token_refused_reports_authentication_error() -> None:
    detail = base64.b64encode(b'{"status":"401","schemes":"bearer"}')
    answers = iter([b"+ " + detail + b"\r\n", b"-ERR [AUTH] Invalid token\r\n"])
    script = Script(
        b"+OK ready\r\n",
        {
            "CAPA": DOVECOT_CAPA + b"SASL XOAUTH2\r\n.\r\n",
            "AUTH": lambda line: next(answers),
            "": lambda line: next(answers),  # the empty answer to the error challenge
        },
    )
    with pytest.raises(mailsync.AuthenticationError, match="Invalid token") as caught:
        _login(script, _endpoint(token="secret-token", password=None))
    assert "secret-token" not in str(caught.value)
    assert script.lines[-1] == ""


def test_starttls_required_fails_closed() -> None:
    script = Script(b"+OK ready\r\n", {"CAPA": DOVECOT_CAPA + b".\r\n"})
    with pytest.raises(mailsync.ConnectionFailed, match="STLS"):
        _login(script, _endpoint(tls="starttls"))
    assert script.lines == ["CAPA"]
    assert not script.tls_started


def test_starttls_then_capabilities_again() -> None:
    script = Script(
        b"+OK ready\r\n",
        {
            "CAPA": DOVECOT_CAPA + b"STLS\r\nSASL PLAIN\r\n.\r\n",
            "STLS": b"+OK Begin TLS negotiation now.\r\n",
            "AUTH": b"+OK\r\n",
        },
    )
    _login(script, _endpoint(tls="starttls"))
    assert script.tls_started
    assert script.lines[:3] == ["CAPA", "STLS", "CAPA"]


def test_in_use_is_a_temporary_failure() -> None:
    script = Script(
        b"+OK ready\r\n",
        {
            "CAPA": b"+OK\r\nRESP-CODES\r\nUSER\r\n.\r\n",
            "USER": b"+OK\r\n",
            "PASS": b"-ERR [IN-USE] Do you have another POP session running?\r\n",
        },
    )
    with pytest.raises(mailsync.TemporaryFailure, match="another POP3 session"):
        _login(script, _endpoint())


def test_login_delay_is_learnt_after_login() -> None:
    capas = iter([DOVECOT_CAPA + b".\r\n", DOVECOT_CAPA + b"LOGIN-DELAY 900\r\n.\r\n"])
    script = Script(
        b"+OK ready\r\n",
        {"CAPA": lambda line: next(capas), "USER": b"+OK\r\n", "PASS": b"+OK\r\n"},
    )
    state = _login(script, _endpoint())
    assert state.caps.login_delay == 900


def _retr_handler(line: str) -> bytes:
    number = int(line.split()[1])
    body = b"Subject: %d\r\n\r\nbody\r\n" % number
    return b"+OK %d octets\r\n" % len(body) + body + b".\r\n"


def test_without_pipelining_one_command_at_a_time() -> None:
    script = Script(b"", {"RETR": _retr_handler, "RSET": b"+OK\r\n"})
    state = _State("POP3 test")
    state.conn = POP3Connection(greeting=False)
    entries = [_Entry(n, f"u{n}", 20) for n in range(1, 6)]
    _, emitted = script.run(state, _fetch_plan(state, entries, top=False))
    assert [entry.number for entry, _reply in emitted] == [1, 2, 3, 4, 5]
    assert script.max_outstanding == 1
    assert script.lines[-1] == "RSET"


def test_pipelined_windows_are_bounded() -> None:
    script = Script(b"", {"RETR": _retr_handler, "RSET": b"+OK\r\n"})
    state = _State("POP3 test")
    state.conn = POP3Connection(greeting=False)
    state.caps = Capabilities.parse(["PIPELINING"])
    entries = [_Entry(n, f"u{n}", 20) for n in range(1, 301)]
    _, emitted = script.run(state, _fetch_plan(state, entries, top=False))
    assert [entry.number for entry, _reply in emitted] == list(range(1, 301))
    assert 1 < script.max_outstanding <= 65  # the window (64) plus the trailing RSET
