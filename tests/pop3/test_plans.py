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
from mailsync._plans import Emit, Plan
from mailsync.protocol import pop3_session as pop3
from mailsync.protocol.pop3 import Capabilities, POP3Connection
from mailsync.protocol.pop3_session import Entry, Session
from mailsync.protocol.stream import Connect, Read, StartTLS, Write

Handler = Callable[[str], bytes]


class _Channel:
    """What the plans are given as their connection: the script is the server."""

    local_address = "127.0.0.1"

    def abort(self) -> None:
        pass


_CHANNEL = _Channel()
DOVECOT_CAPA = b"+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nUSER\r\n"


class Script:
    """A scripted server: ``replies`` maps a command line (or its keyword) to reply bytes."""

    def __init__(self, greeting: bytes, replies: dict[str, bytes | Handler]) -> None:
        self.output = bytearray(greeting)
        self.replies = replies
        self.lines: list[str] = []
        self.writes: list[bytes] = []
        self.tls_started = False
        self.max_outstanding = 0

    def handle(self, data: bytes) -> None:
        self.writes.append(data)
        for line in data.decode().split("\r\n")[:-1]:
            self.lines.append(line)
            reply = self.replies.get(line, self.replies.get(line.split(" ")[0]))
            if reply is None:
                self.output += b"-ERR Unknown command\r\n"
            else:
                self.output += reply(line) if callable(reply) else reply

    def run(self, state: Session, plan: Plan[Any]) -> tuple[Any, list[Any]]:
        emitted: list[Any] = []
        value: Any = None
        while True:
            try:
                action = next(plan) if value is None else plan.send(value)
            except StopIteration as stop:
                return stop.value, emitted
            value = []
            if isinstance(action, Connect):
                value = _CHANNEL
            elif isinstance(action, Write):
                self.handle(action.data)
            elif isinstance(action, Read):
                self.max_outstanding = max(self.max_outstanding, state.conn.pending)
                value = state.conn.receive(bytes(self.output))
                self.output.clear()
                assert value, "the plan waits for a reply the script does not send"
            elif isinstance(action, StartTLS):
                self.tls_started = True
            elif isinstance(action, Emit):
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


def _login(script: Script, endpoint: Endpoint) -> Session:
    state = Session("POP3 test")
    script.run(state, pop3.open_session(state, endpoint))
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


LISTING = {
    "UIDL": b"+OK\r\n1 u1\r\n2 u2\r\n.\r\n",
    "LIST": b"+OK\r\n1 20\r\n2 20\r\n.\r\n",
}


def _two_capas(before: bytes, after: bytes) -> Script:
    """A server answering CAPA with ``before`` until a USER/PASS login, ``after`` from then."""
    logged_in: list[bool] = []

    def capa(line: str) -> bytes:
        return after if logged_in else before

    def password(line: str) -> bytes:
        logged_in.append(True)
        return b"+OK Logged in.\r\n"

    replies = {"CAPA": capa, "USER": b"+OK\r\n", "PASS": password, "RSET": b"+OK\r\n"}
    return Script(b"+OK ready\r\n", {**replies, **LISTING, "RETR": _retr_handler})


@pytest.mark.parametrize("pipelining_before_login", [True, False], ids=["deferred", "alone"])
def test_login_delay_is_learnt_after_login(pipelining_before_login: bool) -> None:
    before = DOVECOT_CAPA if pipelining_before_login else DOVECOT_CAPA.replace(b"PIPE", b"XPIPE")
    script = _two_capas(before + b".\r\n", DOVECOT_CAPA + b"LOGIN-DELAY 900\r\n.\r\n")
    told: list[int | None] = []
    state = Session("POP3 test", on_login_caps=lambda caps: told.append(caps.login_delay))
    script.run(state, pop3.open_session(state, _endpoint()))
    assert told == ([] if pipelining_before_login else [900])
    script.run(state, pop3.listing(state))
    assert state.caps.login_delay == 900
    assert told == [900]  # once, whichever way the CAPA went


def test_post_login_capa_rides_with_the_first_commands() -> None:
    # PIPELINING before login (RFC 2449 section 5: then after it too): the CAPA goes in the
    # listing's write, its reply is read first, and what it says counts from then on.
    script = _two_capas(
        DOVECOT_CAPA + b".\r\n",
        b"+OK\r\nUIDL\r\nPIPELINING\r\nEXPIRE 30\r\nLOGIN-DELAY 60\r\n.\r\n",
    )
    state = _login(script, _endpoint())
    assert script.writes == [b"CAPA\r\n", b"USER mrose\r\n", b"PASS tanstaaf\r\n"]
    entries = script.run(state, pop3.listing(state))[0]
    assert [e.uid for e in entries] == ["u1", "u2"]
    assert script.writes[3:] == [b"CAPA\r\nUIDL\r\nLIST\r\n"]
    assert state.caps.login_delay == 60
    assert "EXPIRE" in state.caps
    assert not state.caps.top  # the post-login set replaces the one from before login
    assert not state.capa_due
    assert not state.capa_awaited
    assert state.idle


def test_pipelining_only_after_login_keeps_the_capa_alone() -> None:
    # No PIPELINING before login: the CAPA after it is a round trip of its own, as the server
    # may not take pipelined commands yet; what it says (PIPELINING) counts from then on.
    script = _two_capas(b"+OK\r\nUIDL\r\nUSER\r\n.\r\n", DOVECOT_CAPA + b".\r\n")
    state = _login(script, _endpoint())
    assert state.caps.pipelining
    assert script.writes == [
        b"CAPA\r\n",
        b"USER mrose\r\n",
        b"PASS tanstaaf\r\n",
        b"CAPA\r\n",
    ]
    script.run(state, pop3.listing(state))
    assert script.writes[4:] == [b"UIDL\r\nLIST\r\n"]


@pytest.mark.parametrize("pipelining_before_login", [True, False], ids=["deferred", "alone"])
def test_post_login_capa_refused_means_no_capabilities(pipelining_before_login: bool) -> None:
    before = DOVECOT_CAPA if pipelining_before_login else DOVECOT_CAPA.replace(b"PIPE", b"XPIPE")
    script = _two_capas(before + b".\r\n", b"-ERR not now\r\n")
    told: list[Capabilities] = []
    state = Session("POP3 test", on_login_caps=told.append)
    script.run(state, pop3.open_session(state, _endpoint()))
    entries, _ = script.run(state, pop3.listing(state))
    assert told == [Capabilities()]
    assert state.caps == Capabilities()
    if pipelining_before_login:  # the CAPA went with the listing, pipelined as announced
        assert script.writes[3:] == [b"CAPA\r\nUIDL\r\nLIST\r\n"]
    else:  # the CAPA alone, and after its -ERR nothing is pipelined
        assert script.writes[3:] == [b"CAPA\r\n", b"UIDL\r\n", b"LIST\r\n"]
    # No PIPELINING any more: one RETR at a time, then RSET on its own.
    _, emitted = script.run(state, pop3.fetch(state, entries, top=False))
    assert len(emitted) == 2
    assert script.writes[-3:] == [b"RETR 1\r\n", b"RETR 2\r\n", b"RSET\r\n"]


def test_post_login_capa_rides_with_whatever_comes_first() -> None:
    # delete() starts with RSET, a session closed unused with QUIT: the CAPA goes with
    # them, so LOGIN-DELAY is known whatever the session did.
    for plan, first in (
        (lambda s: pop3.delete(s, ["u2"]), b"CAPA\r\nRSET\r\n"),
        (pop3.close, b"CAPA\r\nQUIT\r\n"),
    ):
        script = _two_capas(DOVECOT_CAPA + b".\r\n", DOVECOT_CAPA + b"LOGIN-DELAY 60\r\n.\r\n")
        script.replies.update(DELE=b"+OK\r\n", QUIT=b"+OK\r\n")
        state = _login(script, _endpoint())
        script.run(state, plan(state))
        assert script.writes[3] == first
        assert state.caps.login_delay == 60


def _retr_handler(line: str) -> bytes:
    number = int(line.split()[1])
    body = b"Subject: %d\r\n\r\nbody\r\n" % number
    return b"+OK %d octets\r\n" % len(body) + body + b".\r\n"


def test_without_pipelining_one_command_at_a_time() -> None:
    script = Script(b"", {"RETR": _retr_handler, "RSET": b"+OK\r\n"})
    state = Session("POP3 test", channel=_CHANNEL)
    state.conn = POP3Connection(greeting=False)
    entries = [Entry(n, f"u{n}", 20) for n in range(1, 6)]
    _, emitted = script.run(state, pop3.fetch(state, entries, top=False))
    assert [entry.number for entry, _reply in emitted] == [1, 2, 3, 4, 5]
    assert script.max_outstanding == 1
    assert script.lines[-1] == "RSET"


def test_pipelined_windows_are_bounded() -> None:
    script = Script(b"", {"RETR": _retr_handler, "RSET": b"+OK\r\n"})
    state = Session("POP3 test", channel=_CHANNEL)
    state.conn = POP3Connection(greeting=False)
    state.caps = Capabilities.parse(["PIPELINING"])
    entries = [Entry(n, f"u{n}", 20) for n in range(1, 301)]
    _, emitted = script.run(state, pop3.fetch(state, entries, top=False))
    assert [entry.number for entry, _reply in emitted] == list(range(1, 301))
    assert 1 < script.max_outstanding <= 65  # the window (64) plus the trailing RSET


def _listed_session(rset: bytes = b"+OK\r\n") -> tuple[Script, Session, list[Entry]]:
    script = _two_capas(DOVECOT_CAPA + b".\r\n", DOVECOT_CAPA + b".\r\n")
    script.replies.update(RSET=rset, QUIT=b"+OK\r\n", TOP=_retr_handler)
    state = _login(script, _endpoint())
    entries, _ = script.run(state, pop3.listing(state))
    return script, state, entries


def test_close_after_a_confirmed_rset_is_quit_alone() -> None:
    # The retrieval's trailing RSET was answered +OK and nothing marking went out since: a
    # second RSET before QUIT would undo nothing.
    script, state, entries = _listed_session()
    script.run(state, pop3.fetch(state, entries, top=False))
    assert script.writes[-1] == b"RETR 1\r\nRETR 2\r\nRSET\r\n"
    script.run(state, pop3.close(state))
    assert script.writes[-1] == b"QUIT\r\n"


def test_close_after_unreset_retrievals_resets_first() -> None:
    # Header digests (get() on a server without UIDL) use TOP without a trailing RSET, and a
    # refused RSET undoes nothing: then the goodbye is RSET and QUIT, as always.
    script, state, entries = _listed_session()
    script.run(state, pop3.fetch(state, entries, top=True, reset=False))
    script.run(state, pop3.close(state))
    assert script.writes[-2:] == [b"TOP 1 0\r\nTOP 2 0\r\n", b"RSET\r\nQUIT\r\n"]
    script, state, entries = _listed_session(rset=b"-ERR not now\r\n")
    script.run(state, pop3.fetch(state, entries, top=False))
    script.run(state, pop3.close(state))
    assert script.writes[-1] == b"RSET\r\nQUIT\r\n"


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_login_delay_reaches_the_retrievers_policy(asynchronous: bool) -> None:
    # watch() waits out LOGIN-DELAY between polls: the value of the deferred CAPA must reach
    # the retriever once its reply has been read, not only the session.
    connect = mailsync.connect_async if asynchronous else mailsync.connect
    box = connect("pop3://mrose@mail.example.test", password="x", tls="none", state=":memory:")
    script = _two_capas(DOVECOT_CAPA + b".\r\n", DOVECOT_CAPA + b"LOGIN-DELAY 60\r\n.\r\n")
    state = box._new_state()
    script.run(state, pop3.open_session(state, _endpoint()))
    box._note_login()
    assert box._poll_wait(0.5) == 0.5  # not known yet: nothing has been read
    script.run(state, pop3.listing(state))
    assert 59 < box._poll_wait(0.5) <= 60
    assert state.on_login_caps is None  # told once, then the session lets go of the retriever
