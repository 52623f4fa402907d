"""SMTP submission (``smtp://``, ``smtps://``): :class:`SMTPSender` and :class:`AsyncSMTPSender`.

This module owns mailsync's SMTP client: connecting (implicit TLS, or STARTTLS that fails
closed when the server does not offer it), EHLO, AUTH (PLAIN/LOGIN with a password,
XOAUTH2/OAUTHBEARER with a token), mail transactions with the RFC 3461 DSN parameters, SIZE,
8BITMIME and SMTPUTF8, PIPELINING, the retry policy, reconnects, and ETRN.

Why not smtplib: it sends MAIL, each RCPT and DATA one at a time and waits for each reply (four
round trips per message), offers no pipelining, and cannot be used from asyncio. Pipelining on
smtplib's socket would mean driving its private reply reader behind its back, and an asyncio
sender would still need a second client. So the protocol is written once here, sans-I/O in the
style of h11: :class:`_Session` is a state machine whose methods are generators that *yield*
operations (write these bytes, read one reply, start TLS, (re)connect, sleep) and receive their
results. Two thin drivers perform those operations: :class:`_SocketDriver` on a blocking socket
for :class:`SMTPSender`, :class:`_StreamDriver` on asyncio streams for
:class:`AsyncSMTPSender`. Both senders therefore behave identically, and the async one never
blocks the event loop and never calls ``asyncio.run()`` (it works inside Jupyter).

Behaviour worth knowing:

- With PIPELINING, MAIL, every RCPT and DATA go out in one write, and ``send_many`` sends each
  message's data in the same write as the next message's envelope (RFC 2920 allows message
  content as the first "command" of a group): one round trip per message, against four for
  smtplib. While the server works on a group, the next message is prepared (pulled from the
  caller's iterable, one ahead, no more); one that cannot be prepared still fails at its own
  turn, after the messages before it were sent. Anything but a clean acceptance ends that
  chain and the message goes through the careful one-at-a-time path with its retries.
  ``pipelining=off`` (URL query or keyword) turns all of this off for a server that
  mishandles it.
- The connection opens lazily and stays open between ``send`` calls. A transaction that never
  reached its end of data (recipients or DATA refused) is cleared with RSET before the next
  one, in the same write as MAIL/RCPT/DATA when the server offers PIPELINING. Otherwise no
  RSET is sent: the reply to the end of data already ended the transaction (RFC 5321
  4.1.1.4), and Postfix measurably spends time on each RSET. The first command on a
  reused connection is its liveness check: a connection the server dropped while idle fails
  there, before any message data went out, and the message is sent on a new connection.
- SIZE is declared in MAIL FROM only for messages over 64 KiB (the limit is always checked
  before sending): declaring it makes Postfix look at its free disk space for every message,
  which costs small messages more than an early refusal could save.
- A connection lost in the middle of a transaction is reopened (a bounded number of times) and
  the message sent again. Messages whose end-of-data was acknowledged are never sent again; a
  message whose acknowledgement itself was lost may arrive twice (the unavoidable RFC 1047
  case).
- 4xx replies are retried with exponential backoff and jitter (``retries`` attempts, first
  delay ``retry_delay`` seconds: URL query or keyword options); recipients still deferred after
  that are reported as refused, a whole message still deferred raises
  :class:`~mailsync.TemporaryFailure`. 5xx replies are final and never retried.
- Secrets (passwords, tokens) are sent only inside AUTH exchanges and never logged or shown.

This module must not import smtplib or any third-party SMTP library.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import ipaddress
import logging
import re
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

from mailsync._base import AsyncSender, Backoff, OutgoingMessage, Sender, SendResult
from mailsync._compose import Envelope, prepare
from mailsync._config import Endpoint, Secret
from mailsync._errors import (
    AuthenticationError,
    ConfigError,
    ConnectionFailed,
    MailsyncError,
    MailTimeout,
    ProtocolError,
    RecipientsRefused,
    SendError,
    ServerError,
    TemporaryFailure,
    Unsupported,
    map_exceptions,
)
from mailsync.protocol import sasl

if TYPE_CHECKING:
    import asyncio  # imported on the async paths only: it costs ~20 ms at start-up

__all__ = ["AsyncSMTPSender", "RetryPolicy", "SMTPSender", "xtext"]

log = logging.getLogger("mailsync.smtp")

T = TypeVar("T")
CRLF = b"\r\n"
#: The longest reply line accepted (RFC 5321 allows 512; servers send more in EHLO).
_MAX_LINE = 8192
#: The most lines one reply may have.
_MAX_REPLY_LINES = 1000
_NOTIFY_VALUES = ("success", "failure", "delay")
#: Messages larger than this declare their SIZE in MAIL FROM (see the module docstring).
_DECLARE_SIZE_OVER = 64 * 1024
_ENVID_MAX = 100
_DOT_AT_LINE_START = re.compile(rb"(?m)^\.")
_BARE_LINE_ENDS = re.compile(rb"\r\n|\r|\n")


# -- pure helpers ----------------------------------------------------------------------------


def xtext(value: str) -> str:
    """Encode a DSN parameter value as RFC 3461 xtext.

    Printable ASCII except ``+`` and ``=`` stays as is; every other byte of the UTF-8 encoding
    becomes ``+HH``.
    """
    out = []
    for byte in value.encode("utf-8"):
        if 33 <= byte <= 126 and byte not in (0x2B, 0x3D):
            out.append(chr(byte))
        else:
            out.append(f"+{byte:02X}")
    return "".join(out)


def _unitext(value: str) -> str:
    """RFC 6533 utf-8-addr-unitext: UTF-8 stays, ``+ = \\``, space and controls as ``\\x{HH}``."""
    out = []
    for char in value:
        code = ord(char)
        if code <= 0x20 or code == 0x7F or char in "+=\\":
            out.append(f"\\x{{{code:X}}}")
        else:
            out.append(char)
    return "".join(out)


def _orcpt(address: str) -> str:
    if address.isascii():
        return "rfc822;" + xtext(address)
    return "utf-8;" + _unitext(address)


def _data_payload(data: bytes) -> bytes:
    """The DATA payload: CRLF line endings, leading dots doubled, and the final ``.`` line."""
    line_ends = data.count(CRLF)
    if data.count(b"\r") != line_ends or data.count(b"\n") != line_ends:
        data = _BARE_LINE_ENDS.sub(CRLF, data)
    if data.startswith(b".") or b"\n." in data:
        data = _DOT_AT_LINE_START.sub(b"..", data)
    if not data.endswith(CRLF):
        data += CRLF
    return data + b"." + CRLF


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply.

    Attributes:
        code: The three-digit reply code.
        lines: The text of each line, without the code.
    """

    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        """The reply text on one line."""
        return " ".join(line.strip() for line in self.lines if line.strip())

    @property
    def positive(self) -> bool:
        """True for 2xx (and 3xx intermediate) replies."""
        return 200 <= self.code < 400

    @property
    def transient(self) -> bool:
        """True for 4xx replies."""
        return 400 <= self.code < 500

    def __str__(self) -> str:
        return f"{self.code} {self.text}".strip()


class _ReplyParser:
    """Turns the bytes a server sends into :class:`Reply` values (no I/O)."""

    def __init__(self) -> None:
        self._buffer = b""
        self._lines: list[str] = []

    @property
    def pending(self) -> bool:
        """True when bytes of an unfinished reply are buffered."""
        return bool(self._buffer or self._lines)

    def feed(self, data: bytes) -> list[Reply]:
        """Add received bytes; return every reply they complete.

        Raises:
            ProtocolError: A line is not ``NNN[ -]text`` or is absurdly long.
        """
        lines = (self._buffer + data).split(b"\n")
        self._buffer = lines.pop()  # the start of a line still to come
        replies: list[Reply] = []
        for line in lines:
            reply = self._line(line.rstrip(b"\r"))
            if reply is not None:
                replies.append(reply)
        if len(self._buffer) > _MAX_LINE:
            raise ProtocolError("the server sent a reply line longer than 8 KiB")
        return replies

    def _line(self, line: bytes) -> Reply | None:
        if len(line) < 3 or not line[:3].isdigit() or line[3:4] not in (b"", b" ", b"-"):
            raise ProtocolError(f"the server sent a malformed reply line: {line[:80]!r}")
        self._lines.append(line[4:].decode("utf-8", "replace"))
        if len(self._lines) > _MAX_REPLY_LINES:
            raise ProtocolError("the server sent a reply of more than 1000 lines")
        if line[3:4] == b"-":
            return None
        lines, self._lines = tuple(self._lines), []
        return Reply(int(line[:3]), lines)


@dataclass(frozen=True, slots=True)
class _Features:
    """What the server announced in its EHLO reply."""

    keywords: dict[str, str] = field(default_factory=dict)
    esmtp: bool = True

    @classmethod
    def parse(cls, reply: Reply) -> _Features:
        keywords: dict[str, str] = {}
        for line in reply.lines[1:]:
            name, _, params = line.strip().partition(" ")
            name, _, old_style = name.partition("=")  # "AUTH=LOGIN" from older servers
            name = name.upper()
            if not name:
                continue
            params = f"{old_style} {params}".strip()
            keywords[name] = f"{keywords[name]} {params}".strip() if name in keywords else params
        return cls(keywords)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.upper() in self.keywords

    @property
    def auth(self) -> frozenset[str]:
        return frozenset(self.keywords.get("AUTH", "").upper().split())

    @property
    def size(self) -> int | None:
        """The largest message the server takes, or None when it did not say."""
        value = self.keywords.get("SIZE", "").strip()
        return int(value) if value.isdigit() and int(value) > 0 else None


@dataclass(frozen=True, slots=True)
class _DSN:
    """The RFC 3461 parameters of one message (None: not asked for)."""

    notify: str | None = None
    ret: str | None = None
    envid: str | None = None

    @property
    def requested(self) -> bool:
        return any(v is not None for v in (self.notify, self.ret, self.envid))


def _dsn_options(notify: Iterable[str] | str | None, ret: str | None, envid: str | None) -> _DSN:
    """Validate the DSN arguments of ``send``; add an ENVID when reports were asked for.

    Raises:
        ConfigError: A value RFC 3461 does not allow.
    """
    words = _notify_words(notify)
    if ret is not None and ret.lower() not in ("full", "hdrs"):
        raise ConfigError(f"ret must be 'full' or 'hdrs', not {ret!r}")
    if envid is not None:
        if not envid or not envid.isascii() or not envid.isprintable():
            raise ConfigError("envid must be non-empty printable ASCII")
        if len(xtext(envid)) > _ENVID_MAX:
            raise ConfigError("envid must be at most 100 characters once xtext-encoded")
    wants_reports = words is not None and words != ["never"]
    if envid is None and (wants_reports or ret is not None):
        # Reports are matched to what was sent by ENVID first: give every such message one.
        envid = secrets.token_hex(12)
    return _DSN(
        notify=",".join(w.upper() for w in words) if words is not None else None,
        ret=ret.upper() if ret is not None else None,
        envid=envid,
    )


def _notify_words(notify: Iterable[str] | str | None) -> list[str] | None:
    if notify is None:
        return None
    items = notify.split(",") if isinstance(notify, str) else list(notify)
    words = [str(w).strip().lower() for w in items if str(w).strip()]
    if not words:
        raise ConfigError("notify must name 'never' or some of 'success', 'failure', 'delay'")
    if "never" in words:
        if len(words) > 1:
            raise ConfigError("notify 'never' cannot be combined with other values")
        return words
    unknown = [w for w in words if w not in _NOTIFY_VALUES]
    if unknown:
        raise ConfigError(
            f"notify values must be 'never', 'success', 'failure' or 'delay', not {unknown[0]!r}"
        )
    return list(dict.fromkeys(words))


@dataclass(frozen=True)
class RetryPolicy:
    """How :class:`SMTPSender` retries 4xx replies and lost connections.

    Attributes:
        attempts: Tries in all for a message or recipient that gets 4xx replies (1: no retry).
        delay: The first backoff delay in seconds; it doubles (with jitter) up to ``cap``.
        cap: The longest delay.
        reconnects: How often one message may reconnect after the connection dropped.
    """

    attempts: int = 3
    delay: float = 1.0
    cap: float = 30.0
    reconnects: int = 3

    @classmethod
    def from_params(cls, params: Any) -> RetryPolicy:
        """Read ``retries``, ``retry_delay`` and ``reconnects`` from the endpoint's options.

        Raises:
            ConfigError: Not numbers, or out of range.
        """
        try:
            attempts = int(params.get("retries", cls.attempts))
            delay = float(params.get("retry_delay", cls.delay))
            reconnects = int(params.get("reconnects", cls.reconnects))
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"retries, retry_delay and reconnects must be numbers: {exc}"
            ) from exc
        if attempts < 1 or delay < 0 or reconnects < 0:
            raise ConfigError("retries must be >= 1; retry_delay and reconnects >= 0")
        return cls(attempts=attempts, delay=delay, cap=max(cls.cap, delay), reconnects=reconnects)


# -- the operations the protocol core asks its driver to perform -----------------------------


@dataclass(frozen=True, slots=True)
class _Connect:
    """Open the TCP connection (and implicit TLS); the result is ``(local IP, host FQDN)``."""


@dataclass(frozen=True, slots=True)
class _Write:
    data: bytes


@dataclass(frozen=True, slots=True)
class _Read:
    """Read one reply; the result is a :class:`Reply`."""


@dataclass(frozen=True, slots=True)
class _ReadReplies:
    """Read ``count`` replies (a pipelined group's); the result is a list of :class:`Reply`."""

    count: int


@dataclass(frozen=True, slots=True)
class _StartTLS:
    """Wrap the connection in TLS (after the server's 220 to STARTTLS)."""


@dataclass(frozen=True, slots=True)
class _Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class _Token:
    """Get a fresh OAuth2 token (the callable may block, so the driver runs it)."""


@dataclass(frozen=True, slots=True)
class _Close:
    """Drop the connection without a word."""


_Op: TypeAlias = _Connect | _Write | _Read | _ReadReplies | _StartTLS | _Sleep | _Token | _Close
_Steps: TypeAlias = Generator[_Op, Any, T]
_READ = _Read()


class _Lost(Exception):
    """The connection broke (or the server said 421) where sending again is safe."""


@dataclass(slots=True)
class _Outcome:
    """What one transaction did."""

    accepted: list[str] = field(default_factory=list)
    refused: dict[str, tuple[int, str]] = field(default_factory=dict)
    deferred: dict[str, tuple[int, str]] = field(default_factory=dict)
    temporary: Reply | None = None


@functools.cache
def _local_fqdn() -> str:
    # getfqdn() may ask DNS; once per process is enough.
    return socket.getfqdn()


def _hello_name(configured: str | None, local_ip: str, fqdn: str) -> str:
    """The EHLO argument: the configured name, the host's FQDN, or an address literal."""
    if configured:
        return configured
    if "." in fqdn and not fqdn.startswith("localhost"):
        return fqdn
    try:
        address = ipaddress.ip_address(local_ip)
    except ValueError:
        return "localhost"
    return f"[IPv6:{address}]" if address.version == 6 else f"[{address}]"


# -- the protocol core -----------------------------------------------------------------------


class _Session:
    """The SMTP client state machine for one sender (sans-I/O).

    Every public method returns a generator to be run by a driver (see the module docstring).
    """

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.policy = RetryPolicy.from_params(endpoint.params)
        self.display = endpoint.display
        self.hello_name: str | None = endpoint.params.get("local_hostname")
        if self.hello_name is not None and (
            not isinstance(self.hello_name, str)
            or not self.hello_name.isprintable()
            or " " in self.hello_name
            or not self.hello_name.isascii()
        ):
            raise ConfigError("local_hostname must be a host name or an address literal")
        self.connected = False
        self.features = _Features()
        self.dirty = False  # a transaction is open that no end of data closed
        self.pipelining = _flag(endpoint.params.get("pipelining", True))
        self.connections = 0

    # -- connection ------------------------------------------------------------------------

    def forget(self) -> None:
        """The driver dropped the connection: open a new one next time."""
        self.connected = False
        self.dirty = False

    def _drop(self) -> _Steps[None]:
        self.forget()
        yield _Close()

    def ensure_open(self) -> _Steps[None]:
        """Connect, greet, STARTTLS and authenticate unless a connection is open."""
        if self.connected:
            return
        local_ip, fqdn = yield _Connect()
        self.connected = True
        self.dirty = False
        self.connections += 1
        try:
            yield from self._handshake(_hello_name(self.hello_name, local_ip, fqdn))
        except MailsyncError:
            yield from self._drop()
            raise

    def _handshake(self, hello: str) -> _Steps[None]:
        greeting: Reply = yield _READ
        if greeting.code == 421 or not greeting.positive:
            raise ConnectionFailed(f"{self.display} refused the connection: {greeting}")
        self.features = yield from self._ehlo(hello)
        if self.endpoint.tls == "starttls":
            yield from self._starttls(hello)
        yield from self._authenticate()

    def _ehlo(self, hello: str) -> _Steps[_Features]:
        yield _Write(f"EHLO {hello}".encode("ascii", "replace") + CRLF)
        reply: Reply = yield _READ
        if reply.code == 250:
            return _Features.parse(reply)
        if reply.code == 421:
            raise ConnectionFailed(f"{self.display} closed the connection: {reply}")
        # A server from before ESMTP: HELO, and no extensions at all.
        yield _Write(f"HELO {hello}".encode("ascii", "replace") + CRLF)
        reply = yield _READ
        if reply.code != 250:
            raise ProtocolError(f"{self.display} refused EHLO and HELO: {reply}")
        return _Features(esmtp=False)

    def _starttls(self, hello: str) -> _Steps[None]:
        if "STARTTLS" not in self.features:
            raise ConnectionFailed(
                f"{self.display} does not offer STARTTLS; refusing to continue without TLS "
                "(use tls='ssl' for implicit TLS, or tls='none' to allow plaintext)"
            )
        yield _Write(b"STARTTLS" + CRLF)
        reply: Reply = yield _READ
        if reply.code != 220:
            raise ConnectionFailed(f"{self.display} refused STARTTLS: {reply}")
        yield _StartTLS()
        self.features = yield from self._ehlo(hello)

    # -- AUTH ------------------------------------------------------------------------------

    def _authenticate(self) -> _Steps[None]:
        """AUTH with the mechanism :mod:`mailsync.protocol.sasl` picks from what EHLO offered."""
        endpoint = self.endpoint
        if endpoint.token is None and endpoint.password is None:
            return
        user = endpoint.username
        if not user:
            raise ConfigError("a password or token needs a user name in the URL (smtp://user@host)")
        offered = self.features.auth
        token = endpoint.token is not None
        if endpoint.token is not None:
            secret = Secret((yield _Token()))
        else:
            assert endpoint.password is not None
            secret = endpoint.password
        mechanism = sasl.choose(offered, token=token)
        if mechanism is None:
            hint = "" if offered else " (is this the submission port, after TLS?)"
            raise sasl.no_mechanism(self.display, offered, token=token, hint=hint)
        exchange = sasl.exchange(
            mechanism, user, secret.reveal(), host=endpoint.host, port=endpoint.port
        )
        initial = exchange.initial()
        line = f"AUTH {mechanism}" + ("" if initial is None else f" {initial}")
        yield _Write(line.encode("ascii") + CRLF)
        reply: Reply = yield _READ
        while reply.code == 334:
            try:
                challenge = base64.b64decode(reply.text, validate=True)
            except ValueError as exc:
                raise ProtocolError(f"{self.display} sent a challenge that is not base64") from exc
            yield _Write(sasl.encode(exchange.respond(challenge)).encode("ascii") + CRLF)
            reply = yield _READ
        detail = exchange.error_detail
        self._check_auth(reply, user, " " + detail.decode("utf-8", "replace") if detail else "")

    def _check_auth(self, reply: Reply, user: str, detail: str = "") -> None:
        if reply.code == 235:
            return
        message = f"{self.display} refused the credentials of {user}: {reply}{detail}"
        if reply.transient:
            raise TemporaryFailure(message, code=reply.code)
        raise AuthenticationError(message)

    # -- sending ---------------------------------------------------------------------------

    def send_many(self, items: Iterator[tuple[Envelope, _DSN]]) -> _Steps[list[SendResult]]:
        """Send each message in turn; a message whose recipients were all refused gives a
        result with nothing accepted instead of stopping the others.

        With PIPELINING, each message's data goes out in the same write as the next message's
        envelope (RFC 2920 allows message content first in a group), so a message costs one
        round trip. Anything but a clean acceptance (a refusal, a 4xx, a dropped connection)
        finishes the chain and goes through :meth:`send`, retries and all.
        """
        slots: list[SendResult | None] = []
        chain = _Chain()
        upcoming = _Upcoming(items)
        try:
            while True:
                try:
                    item = upcoming.take()
                except Exception:
                    # A message that could not be prepared fails at its own turn: the ones
                    # before it are sent and settled first.
                    yield from self._finish_chain(slots, chain)
                    raise
                if item is None:
                    break
                envelope, dsn = item
                index = len(slots)
                slots.append(None)
                if chain.waiting is None and not self._can_chain():
                    slots[index] = yield from self._send_counting_refusals(envelope, dsn, None)
                    continue
                step = _Pending(index, envelope, dsn)
                yield from self._chain_step(step, slots, chain, upcoming)
                if chain.later:  # something needs the careful path: finish the chain first
                    yield from self._finish_chain(slots, chain)
            yield from self._finish_chain(slots, chain)
        except MailsyncError as exc:
            done = sum(slot is not None for slot in slots)
            exc.add_note(f"{done} message(s) of this send_many were sent before")
            raise
        results = [slot for slot in slots if slot is not None]
        assert len(results) == len(slots), "send_many lost track of a message"
        return results

    def _can_chain(self) -> bool:
        return self.connected and self.pipelining and "PIPELINING" in self.features

    def _send_counting_refusals(
        self, envelope: Envelope, dsn: _DSN, first: _Outcome | None
    ) -> _Steps[SendResult]:
        try:
            return (yield from self.send(envelope, dsn, first))
        except RecipientsRefused as exc:
            return SendResult(envelope.message_id, (), exc.refused, dsn.envid)

    def _chain_step(
        self, item: _Pending, slots: list[SendResult | None], chain: _Chain, upcoming: _Upcoming
    ) -> _Steps[None]:
        """Write the waiting message's data with this message's envelope; read both answers.

        The next message is prepared between the write and the reads, while the server works.
        """
        envelope, dsn = item.envelope, item.dsn
        try:
            self._check_extensions(envelope, dsn)
        except MailsyncError:
            yield from self._finish_chain(slots, chain)  # the waiting message still goes
            raise
        waiting, chain.waiting = chain.waiting, None
        recipients = list(envelope.recipients)
        mail, rcpts = self._envelope_commands(envelope, dsn, recipients)
        carry = b""
        if waiting is not None:
            carry = _data_payload(waiting.envelope.data)
            self.dirty = False  # the server ends that transaction before it reads on
        commands = self._group(mail, rcpts)
        outstanding = True  # answers are on their way until the group is read
        try:
            yield _Write(carry + b"".join(command + CRLF for command in commands))
            upcoming.prefetch()
            if waiting is not None:
                final: Reply = yield _READ
                self._settle(waiting, final, slots, chain)
                waiting = None
            replies = yield from self._read_group(commands, len(rcpts))
            outstanding = False
            outcome, ready = yield from self._after_envelope(envelope, recipients, *replies)
        except (_Lost, ConnectionFailed) as exc:
            yield from self._drop()
            if isinstance(exc, ConnectionFailed) and not _is_drop(exc):
                raise
            log.info("%s: %s; sending again on a new connection", self.display, exc)
            if waiting is not None:  # its data went out but no answer came back
                chain.later.append(_Pending(waiting.index, waiting.envelope, waiting.dsn))
            chain.later.append(item)
            return
        except MailsyncError:
            if outstanding:  # the connection is out of step with its answers
                yield from self._drop()
            raise
        if ready:
            chain.waiting = _Pending(item.index, envelope, dsn, outcome)
        else:
            chain.later.append(_Pending(item.index, envelope, dsn, outcome))

    def _settle(
        self, waiting: _Pending, final: Reply, slots: list[SendResult | None], chain: _Chain
    ) -> None:
        assert waiting.outcome is not None
        outcome = self._after_data(waiting.outcome, final)
        if outcome.temporary is None and not outcome.deferred:
            slots[waiting.index] = SendResult(
                waiting.envelope.message_id,
                tuple(outcome.accepted),
                outcome.refused,
                waiting.dsn.envid,
            )
        else:
            chain.later.append(_Pending(waiting.index, waiting.envelope, waiting.dsn, outcome))

    def _finish_chain(self, slots: list[SendResult | None], chain: _Chain) -> _Steps[None]:
        """Send the waiting message's data alone, then what needs retries, one by one."""
        waiting, chain.waiting = chain.waiting, None
        if waiting is not None:
            try:
                yield _Write(_data_payload(waiting.envelope.data))
                final: Reply = yield _READ
                self.dirty = False  # any reply to the end of data ends the transaction
                self._settle(waiting, final, slots, chain)
            except (_Lost, ConnectionFailed) as exc:
                yield from self._drop()
                if isinstance(exc, ConnectionFailed) and not _is_drop(exc):
                    raise
                chain.later.append(_Pending(waiting.index, waiting.envelope, waiting.dsn))
            except (MailTimeout, ProtocolError):
                yield from self._drop()
                raise
        later, chain.later = chain.later, []
        for item in later:
            slots[item.index] = yield from self._send_counting_refusals(
                item.envelope, item.dsn, item.outcome
            )

    def send(
        self, envelope: Envelope, dsn: _DSN, first: _Outcome | None = None
    ) -> _Steps[SendResult]:
        """Send one message, retrying 4xx replies and reconnecting after a dropped connection.

        ``first`` is the outcome of a first attempt made elsewhere (by ``send_many``'s chain),
        to be judged, and retried if need be, as if this method had made it.

        Raises:
            RecipientsRefused: Every recipient was refused.
            TemporaryFailure: The message got 4xx replies on every attempt.
            SendError: The server refused the sender or the message (5xx), or it is too big.
            Unsupported: DSN, SMTPUTF8 or 8BITMIME needed and not offered.
        """
        pending = list(envelope.recipients)
        accepted: list[str] = []
        refused: dict[str, tuple[int, str]] = {}
        backoff = Backoff(self.policy.delay, self.policy.cap)
        attempts = losses = 0
        while pending:
            try:
                if first is not None:
                    outcome, first = first, None
                else:
                    outcome = yield from self._attempt(envelope, dsn, pending)
            except _Lost as exc:
                losses += 1
                if losses > self.policy.reconnects:
                    raise ConnectionFailed(f"{self.display}: {exc}") from exc
                log.info("%s: %s; reconnecting", self.display, exc)
                if losses > 1:
                    yield _Sleep(backoff.next())
                continue
            accepted += outcome.accepted
            refused.update(outcome.refused)
            attempts += 1
            temporary = outcome.temporary
            if temporary is None:
                deferred = outcome.deferred
            else:
                deferred = {
                    a: (temporary.code, temporary.text) for a in pending if a not in refused
                }
            pending = list(deferred)
            if not pending:
                break
            if attempts >= self.policy.attempts:
                if temporary is not None and not accepted:
                    raise TemporaryFailure(
                        f"{self.display} deferred the message {attempts} time(s): {temporary}",
                        code=temporary.code,
                    )
                refused.update(deferred)
                break
            delay = backoff.next()
            log.info("%s: 4xx reply, trying again in %.2fs", self.display, delay)
            yield _Sleep(delay)
        if not accepted:
            summary = "; ".join(f"<{a}>: {c} {t}" for a, (c, t) in refused.items())
            raise RecipientsRefused(
                f"{self.display} refused every recipient: {summary}", refused=refused
            )
        log.debug(
            "%s: sent <%s> to %d recipient(s)", self.display, envelope.message_id, len(accepted)
        )
        return SendResult(envelope.message_id, tuple(accepted), refused, dsn.envid)

    def _attempt(self, envelope: Envelope, dsn: _DSN, recipients: list[str]) -> _Steps[_Outcome]:
        """One transaction on an open connection, with dropped connections turned into _Lost."""
        try:
            yield from self.ensure_open()
            self._check_extensions(envelope, dsn)
            return (yield from self._transaction(envelope, dsn, recipients))
        except (_Lost, ConnectionFailed) as exc:
            yield from self._drop()
            if isinstance(exc, ConnectionFailed) and not _is_drop(exc):
                raise
            raise _Lost(str(exc) or "the connection was lost") from exc
        except (MailTimeout, ProtocolError):
            yield from self._drop()
            raise

    def _check_extensions(self, envelope: Envelope, dsn: _DSN) -> None:
        features = self.features
        if dsn.requested and "DSN" not in features:
            raise Unsupported(
                f"{self.display} does not offer DSN, so delivery notifications (notify, ret, "
                "envid) cannot be requested; send without them"
            )
        if envelope.needs_smtputf8 and "SMTPUTF8" not in features:
            raise Unsupported(
                f"{self.display} does not offer SMTPUTF8, which this message needs "
                "(non-ASCII addresses or raw UTF-8 headers)"
            )
        if envelope.eight_bit and "8BITMIME" not in features:
            raise Unsupported(
                f"{self.display} does not offer 8BITMIME and the message has 8-bit content; "
                "encode it as quoted-printable or base64"
            )
        limit = features.size
        if limit is not None and len(envelope.data) > limit:
            raise SendError(
                f"the message is {len(envelope.data)} bytes; {self.display} takes at most {limit}"
            )

    def _envelope_commands(
        self, envelope: Envelope, dsn: _DSN, recipients: list[str]
    ) -> tuple[bytes, list[bytes]]:
        features = self.features
        params = []
        if "SIZE" in features and len(envelope.data) > _DECLARE_SIZE_OVER:
            params.append(f"SIZE={len(envelope.data)}")
        if envelope.eight_bit:
            params.append("BODY=8BITMIME")
        if envelope.needs_smtputf8:
            params.append("SMTPUTF8")
        if dsn.ret is not None:
            params.append(f"RET={dsn.ret}")
        if dsn.envid is not None:
            params.append(f"ENVID={xtext(dsn.envid)}")
        mail = f"MAIL FROM:<{envelope.mail_from}>" + "".join(" " + p for p in params)
        rcpt_params = ""
        if dsn.notify is not None:
            rcpt_params = f" NOTIFY={dsn.notify}"
        rcpts = []
        for address in recipients:
            orcpt = f" ORCPT={_orcpt(address)}" if dsn.requested else ""
            rcpts.append(f"RCPT TO:<{address}>{rcpt_params}{orcpt}".encode())
        return mail.encode(), rcpts

    def _transaction(
        self, envelope: Envelope, dsn: _DSN, recipients: list[str]
    ) -> _Steps[_Outcome]:
        mail, rcpts = self._envelope_commands(envelope, dsn, recipients)
        replies: tuple[Reply, list[Reply], Reply | None]
        if self.pipelining and "PIPELINING" in self.features:
            commands = self._group(mail, rcpts)
            yield _Write(b"".join(command + CRLF for command in commands))
            replies = yield from self._read_group(commands, len(rcpts))
        else:
            replies = yield from self._lockstep(mail, rcpts)
        outcome, ready = yield from self._after_envelope(envelope, recipients, *replies)
        if not ready:
            return outcome
        yield _Write(_data_payload(envelope.data))
        final: Reply = yield _READ
        self.dirty = False  # any reply to the end of data ends the transaction
        return self._after_data(outcome, final)

    def _group(self, mail: bytes, rcpts: list[bytes]) -> list[bytes]:
        """One pipelined group: [RSET,] MAIL, RCPT..., DATA."""
        commands = [mail, *rcpts, b"DATA"]
        if self.dirty:
            commands.insert(0, b"RSET")
        self.dirty = True  # until an end of data is answered
        return commands

    def _read_group(
        self, commands: list[bytes], rcpt_count: int
    ) -> _Steps[tuple[Reply, list[Reply], Reply]]:
        replies: list[Reply] = yield _ReadReplies(len(commands))
        if len(commands) > rcpt_count + 2:
            _check_lost(replies.pop(0))  # RSET
        return replies[0], replies[1:-1], replies[-1]

    def _lockstep(
        self, mail: bytes, rcpts: list[bytes]
    ) -> _Steps[tuple[Reply, list[Reply], Reply | None]]:
        if self.dirty:
            yield _Write(b"RSET" + CRLF)
            _check_lost((yield _READ))
        self.dirty = True  # until an end of data is answered
        yield _Write(mail + CRLF)
        mail_reply: Reply = yield _READ
        if not mail_reply.positive:
            return mail_reply, [], None
        rcpt_replies: list[Reply] = []
        for rcpt in rcpts:
            yield _Write(rcpt + CRLF)
            rcpt_replies.append((yield _READ))
        if not any(reply.positive for reply in rcpt_replies):
            return mail_reply, rcpt_replies, None
        yield _Write(b"DATA" + CRLF)
        return mail_reply, rcpt_replies, (yield _READ)

    def _after_envelope(
        self,
        envelope: Envelope,
        recipients: list[str],
        mail_reply: Reply,
        rcpt_replies: list[Reply],
        data_reply: Reply | None,
    ) -> _Steps[tuple[_Outcome, bool]]:
        """Judge the replies to MAIL, RCPT and DATA; True when the server awaits the data."""
        outcome = _Outcome()
        for address, reply in zip(recipients, rcpt_replies, strict=False):
            _check_lost(reply)
            if reply.positive:
                outcome.accepted.append(address)
            elif reply.transient:
                outcome.deferred[address] = (reply.code, reply.text)
            else:
                outcome.refused[address] = (reply.code, reply.text)
        _check_lost(mail_reply)
        if not mail_reply.positive:
            yield from self._abort_data(data_reply)
            return self._sender_refused(envelope, mail_reply), False
        if data_reply is not None:
            _check_lost(data_reply)
        if not outcome.accepted:
            yield from self._abort_data(data_reply)
            return outcome, False
        if data_reply is None or data_reply.code != 354:
            return self._message_refused(outcome, data_reply), False
        return outcome, True

    def _after_data(self, outcome: _Outcome, final: Reply) -> _Outcome:
        """Judge the reply to the end of data (which ended the transaction either way)."""
        _check_lost(final, after_data=True)
        if final.positive:
            return outcome
        return self._message_refused(outcome, final)

    def _abort_data(self, data_reply: Reply | None) -> _Steps[None]:
        # A server that said 354 although no recipient was accepted expects a message: give
        # it an empty one, which it must reject for want of recipients.
        if data_reply is not None and data_reply.code == 354:
            yield _Write(b"." + CRLF)
            yield _READ

    def _sender_refused(self, envelope: Envelope, reply: Reply) -> _Outcome:
        if reply.transient:
            return _Outcome(temporary=reply)
        raise SendError(f"{self.display} refused the sender <{envelope.mail_from}>: {reply}")

    def _message_refused(self, outcome: _Outcome, reply: Reply | None) -> _Outcome:
        if reply is None:  # pragma: no cover - lockstep always reads DATA's reply here
            raise ProtocolError(f"{self.display}: no reply to DATA")
        if reply.transient:
            return _Outcome(refused=outcome.refused, temporary=reply)
        raise SendError(f"{self.display} refused the message: {reply}")

    # -- other commands ----------------------------------------------------------------------

    def etrn(self, domain: str) -> _Steps[Reply]:
        """Ask the server to flush its queue for ``domain`` (RFC 1985)."""
        if not domain or any(c.isspace() for c in domain) or not domain.isascii():
            raise ConfigError(f"ETRN needs a domain name (or @domain, #queue), not {domain!r}")
        yield from self.ensure_open()
        if "ETRN" not in self.features:
            raise Unsupported(f"{self.display} does not offer ETRN")
        try:
            if self.dirty:  # ETRN is refused inside a transaction a failed send left open
                yield _Write(b"RSET" + CRLF)
                _check_lost((yield _READ))
                self.dirty = False
            yield _Write(f"ETRN {domain}".encode() + CRLF)
            reply: Reply = yield _READ
            _check_lost(reply)
        except (_Lost, ConnectionFailed, MailTimeout, ProtocolError) as exc:
            yield from self._drop()
            if isinstance(exc, _Lost):
                raise ConnectionFailed(f"{self.display}: {exc}") from exc
            raise
        if reply.positive:
            return reply
        if reply.transient:
            raise TemporaryFailure(f"{self.display} ETRN {domain}: {reply}", code=reply.code)
        raise ServerError(f"{self.display} ETRN {domain}: {reply}", code=reply.code)

    def quit(self) -> _Steps[None]:
        """Say QUIT (ignoring any failure) and drop the connection."""
        if not self.connected:
            return
        with contextlib.suppress(MailsyncError):
            yield _Write(b"QUIT" + CRLF)
            yield _READ
        yield from self._drop()


@dataclass(slots=True)
class _Pending:
    """A message of a ``send_many`` on its way, with the outcome of its envelope if known."""

    index: int
    envelope: Envelope
    dsn: _DSN
    outcome: _Outcome | None = None


class _Upcoming:
    """``send_many``'s messages, pulled one ahead so that the next one is prepared while the
    server works on the current one (the iterator stays lazy: one message ahead, no more).

    An error from pulling (``prepare()`` refusing a message) is kept and raised by
    :meth:`take` at that message's own turn.
    """

    __slots__ = ("_error", "_item", "_items", "_pulled")

    def __init__(self, items: Iterator[tuple[Envelope, _DSN]]) -> None:
        self._items = items
        self._pulled = False
        self._item: tuple[Envelope, _DSN] | None = None
        self._error: Exception | None = None

    def prefetch(self) -> None:
        """Pull the next message now, unless it has been pulled already."""
        if self._pulled:
            return
        self._pulled = True
        try:
            self._item = next(self._items, None)
        except Exception as exc:  # raised at its turn, by take()
            self._error = exc

    def take(self) -> tuple[Envelope, _DSN] | None:
        """The next message (None at the end), or the error pulling it raised."""
        self.prefetch()
        item, error = self._item, self._error
        self._pulled, self._item, self._error = False, None, None
        if error is not None:
            raise error
        return item


@dataclass(slots=True)
class _Chain:
    """``send_many``'s pipeline: the message whose data goes out with the next envelope, and
    those that need the careful path (:meth:`_Session.send`) once the chain is finished."""

    waiting: _Pending | None = None
    later: list[_Pending] = field(default_factory=list)


def _flag(value: object) -> bool:
    """An on/off option from a URL query (``"0"``, ``"false"``, ``"no"``, ``"off"``) or code."""
    if isinstance(value, str):
        return value.strip().lower() not in ("0", "false", "no", "off", "")
    return bool(value)


def _check_lost(reply: Reply, *, after_data: bool = False) -> None:
    if reply.code == 421:
        note = " after the message was sent" if after_data else ""
        raise _Lost(f"the server is closing the connection{note}: {reply}")


def _is_drop(exc: ConnectionFailed) -> bool:
    """True when an established connection broke (as opposed to TLS or a refusal)."""
    cause = exc.__cause__
    return isinstance(
        cause,
        ConnectionResetError
        | BrokenPipeError
        | ConnectionAbortedError
        | EOFError
        | ssl.SSLEOFError  # a TLS connection cut without close_notify
        | ssl.SSLZeroReturnError,
    )


# -- drivers ---------------------------------------------------------------------------------


def _translated(exc: Exception, context: str) -> MailsyncError:
    """The mailsync error :func:`~mailsync._errors.map_exceptions` makes of a library or
    socket error; an error it does not translate is raised again as it is.

    The drivers call this only when an operation failed, rather than entering
    ``map_exceptions`` around every operation (several per message in ``send_many``).
    """
    try:
        with map_exceptions(context=context):
            raise exc
    except MailsyncError as mapped:
        return mapped
    raise AssertionError("unreachable: map_exceptions raises")  # pragma: no cover


class _SocketDriver:
    """Performs the core's operations on a blocking socket."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._display = endpoint.display
        self._sock: socket.socket | None = None
        self._parser = _ReplyParser()
        self._replies: list[Reply] = []

    def run(self, session: _Session, steps: _Steps[T]) -> T:
        result: Any = None
        error: MailsyncError | None = None
        try:
            while True:
                try:
                    op = steps.throw(error) if error is not None else steps.send(result)
                except StopIteration as stop:
                    return stop.value  # type: ignore[no-any-return]
                result, error = None, None
                try:
                    result = self._perform(op)
                except MailsyncError as exc:
                    error = exc
                except Exception as exc:
                    error = _translated(exc, self._display)
        except BaseException as exc:
            # Anything the core did not handle leaves the connection in an unknown state
            # unless it was a clean refusal (the core keeps it open for those).
            if not isinstance(exc, MailsyncError | _Lost) or not session.connected:
                self.close()
                session.forget()
            raise
        finally:
            steps.close()

    def _perform(self, op: _Op) -> Any:
        if isinstance(op, _Read):
            return self._read()
        if isinstance(op, _ReadReplies):
            return [self._read() for _ in range(op.count)]
        if isinstance(op, _Write):
            self._socket().sendall(op.data)
            return None
        if isinstance(op, _Connect):
            return self._connect()
        if isinstance(op, _StartTLS):
            return self._start_tls()
        if isinstance(op, _Sleep):
            time.sleep(op.seconds)
            return None
        if isinstance(op, _Token):
            assert self.endpoint.token is not None
            return self.endpoint.token.fresh()
        self.close()
        return None

    def _socket(self) -> socket.socket:
        if self._sock is None:
            raise ConnectionFailed(f"{self.endpoint.display}: not connected")
        return self._sock

    def _connect(self) -> tuple[str, str]:
        self.close()
        endpoint = self.endpoint
        timeout = endpoint.timeout
        sock = socket.create_connection(
            (endpoint.host, endpoint.port), timeout=timeout.connect_timeout
        )
        try:
            if endpoint.tls == "ssl":
                sock = endpoint.ssl_context().wrap_socket(sock, server_hostname=endpoint.host)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(timeout.read)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        return str(sock.getsockname()[0]), _local_fqdn()

    def _start_tls(self) -> None:
        if self._parser.pending or self._replies:
            # Bytes sent before the handshake must not be read as if they came over TLS.
            raise ProtocolError(f"{self.endpoint.display} sent data after its STARTTLS reply")
        sock = self._socket()
        sock.settimeout(self.endpoint.timeout.connect_timeout)
        wrapped = self.endpoint.ssl_context().wrap_socket(sock, server_hostname=self.endpoint.host)
        wrapped.settimeout(self.endpoint.timeout.read)
        self._sock = wrapped

    def _read(self) -> Reply:
        while not self._replies:
            data = self._socket().recv(65536)
            if not data:
                raise ConnectionFailed(
                    f"{self.endpoint.display} closed the connection"
                ) from ConnectionResetError("EOF")
            self._replies.extend(self._parser.feed(data))
        return self._replies.pop(0)

    def close(self) -> None:
        sock, self._sock = self._sock, None
        self._parser = _ReplyParser()
        self._replies = []
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()


class _StreamDriver:
    """Performs the core's operations on asyncio streams."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._display = endpoint.display
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._parser = _ReplyParser()
        self._replies: list[Reply] = []

    async def run(self, session: _Session, steps: _Steps[T]) -> T:
        result: Any = None
        error: MailsyncError | None = None
        try:
            while True:
                try:
                    op = steps.throw(error) if error is not None else steps.send(result)
                except StopIteration as stop:
                    return stop.value  # type: ignore[no-any-return]
                result, error = None, None
                try:
                    result = await self._perform(op)
                except MailsyncError as exc:
                    error = exc
                except Exception as exc:
                    error = _translated(exc, self._display)
        except BaseException as exc:
            if not isinstance(exc, MailsyncError | _Lost) or not session.connected:
                await self.close()
                session.forget()
            raise
        finally:
            steps.close()

    async def _perform(self, op: _Op) -> Any:
        import asyncio

        if isinstance(op, _Read):
            return await self._read()
        if isinstance(op, _ReadReplies):
            return [await self._read() for _ in range(op.count)]
        if isinstance(op, _Write):
            writer = self._stream()[1]
            writer.write(op.data)
            async with asyncio.timeout(self.endpoint.timeout.read):
                await writer.drain()
            return None
        if isinstance(op, _Connect):
            return await self._connect()
        if isinstance(op, _StartTLS):
            return await self._start_tls()
        if isinstance(op, _Sleep):
            await asyncio.sleep(op.seconds)
            return None
        if isinstance(op, _Token):
            assert self.endpoint.token is not None
            return await asyncio.to_thread(self.endpoint.token.fresh)
        await self.close()
        return None

    def _stream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None:
            raise ConnectionFailed(f"{self.endpoint.display}: not connected")
        return self._reader, self._writer

    async def _connect(self) -> tuple[str, str]:
        import asyncio

        await self.close()
        endpoint = self.endpoint
        context = endpoint.ssl_context() if endpoint.tls == "ssl" else None
        async with asyncio.timeout(endpoint.timeout.connect_timeout):
            reader, writer = await asyncio.open_connection(
                endpoint.host,
                endpoint.port,
                ssl=context,
                server_hostname=endpoint.host if context else None,
            )
        self._reader, self._writer = reader, writer
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        local = writer.get_extra_info("sockname")
        fqdn = await asyncio.to_thread(_local_fqdn)  # may ask DNS, once per process
        return (str(local[0]) if local else "127.0.0.1"), fqdn

    async def _start_tls(self) -> None:
        import asyncio

        if self._parser.pending or self._replies:
            raise ProtocolError(f"{self.endpoint.display} sent data after its STARTTLS reply")
        writer = self._stream()[1]
        async with asyncio.timeout(self.endpoint.timeout.connect_timeout):
            await writer.start_tls(self.endpoint.ssl_context(), server_hostname=self.endpoint.host)

    async def _read(self) -> Reply:
        import asyncio

        reader = self._stream()[0]
        while not self._replies:
            async with asyncio.timeout(self.endpoint.timeout.read):
                data = await reader.read(65536)
            if not data:
                raise ConnectionFailed(
                    f"{self.endpoint.display} closed the connection"
                ) from ConnectionResetError("EOF")
            self._replies.extend(self._parser.feed(data))
        return self._replies.pop(0)

    def abandon(self) -> None:
        """Forget a connection that belongs to an event loop no longer running."""
        writer, self._reader, self._writer = self._writer, None, None
        self._parser = _ReplyParser()
        self._replies = []
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.transport.abort()

    async def close(self) -> None:
        import asyncio

        writer, self._reader, self._writer = self._writer, None, None
        self._parser = _ReplyParser()
        self._replies = []
        if writer is None:
            return
        writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await writer.wait_closed()


# -- the public senders ----------------------------------------------------------------------


def _envelopes(
    messages: Iterable[OutgoingMessage],
    notify: Iterable[str] | str | None,
    ret: str | None,
) -> Iterator[tuple[Envelope, _DSN]]:
    for message in messages:
        # One ENVID per message: each report must name the message it is about.
        yield prepare(message), _dsn_options(notify, ret, None)


class SMTPSender(Sender):
    """Sends mail over SMTP (``smtp://user@host:587``, ``smtps://user@host``).

    The connection opens on the first send and stays open until :meth:`close` (or the end of a
    ``with`` block). The sender can be shared between threads; sends are serialised.

    Options (URL query or keyword arguments of :func:`mailsync.sender`): ``retries`` (tries
    for 4xx replies, default 3), ``retry_delay`` (first backoff delay in seconds, default 1),
    ``reconnects`` (per message, default 3), ``local_hostname`` (the EHLO name),
    ``pipelining`` (default on; ``off`` sends one command at a time).
    """

    scheme = "smtp"

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(endpoint)
        self._session = _Session(endpoint)
        self._driver = _SocketDriver(endpoint)
        self._lock = threading.Lock()

    @property
    def connections_opened(self) -> int:
        """How many connections this sender has opened so far."""
        return self._session.connections

    def _run(self, steps: _Steps[T]) -> T:
        with self._lock:
            return self._driver.run(self._session, steps)

    def send(
        self,
        message: OutgoingMessage,
        *,
        notify: Iterable[str] | str | None = None,
        ret: str | None = None,
        envid: str | None = None,
        mail_from: str | None = None,
        rcpt_to: Iterable[str] | None = None,
    ) -> SendResult:
        """Send one message; see :meth:`mailsync.Sender.send`.

        When ``notify`` or ``ret`` asks for delivery reports and no ``envid`` is given, a
        random one is made and returned in the result, so reports can be tied to the message.

        Raises:
            RecipientsRefused: Every recipient was refused.
            TemporaryFailure: 4xx replies on every attempt.
            SendError: The sender or the message was refused, or the message is too big.
            Unsupported: DSN, SMTPUTF8 or 8BITMIME needed and not offered by the server.
            AuthenticationError: The credentials were refused.
            ConnectionFailed: The server cannot be reached, or STARTTLS is not offered.
        """
        dsn = _dsn_options(notify, ret, envid)
        envelope = prepare(message, mail_from=mail_from, rcpt_to=rcpt_to)
        return self._run(self._session.send(envelope, dsn))

    def send_many(
        self,
        messages: Iterable[OutgoingMessage],
        *,
        notify: Iterable[str] | str | None = None,
        ret: str | None = None,
    ) -> list[SendResult]:
        """Send several messages in order over one connection (pipelined where offered).

        A message whose recipients were all refused does not stop the others: its result has
        nothing in ``accepted``. Any other error stops the run; its notes say how many
        messages had been sent.

        Args:
            messages: The messages.
            notify: DSN NOTIFY for every message (each gets its own ENVID).
            ret: DSN RET for every message.

        Returns:
            One :class:`~mailsync.SendResult` per message, in order.
        """
        return self._run(self._session.send_many(_envelopes(messages, notify, ret)))

    def etrn(self, domain: str) -> str:
        """Ask the server to deliver the mail it holds for ``domain`` now (RFC 1985 ETRN).

        Args:
            domain: A domain, ``@domain`` for it and its subdomains, or ``#queue``.

        Returns:
            The server's reply text.

        Raises:
            Unsupported: The server does not offer ETRN.
            TemporaryFailure: The server cannot do it now (4xx).
            ServerError: The server refused (5xx).
        """
        return self._run(self._session.etrn(domain)).text

    def close(self) -> None:
        """Say QUIT and close the connection, if one is open."""
        self._run(self._session.quit())


class AsyncSMTPSender(AsyncSender):
    """The asyncio SMTP sender: same protocol core and behaviour as :class:`SMTPSender`.

    Runs on asyncio streams in the caller's event loop (no thread, no ``asyncio.run``).
    Concurrent sends on one sender are serialised; use several senders for parallelism.
    """

    scheme = "smtp"

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(endpoint)
        self._session = _Session(endpoint)
        self._driver = _StreamDriver(endpoint)
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def connections_opened(self) -> int:
        """How many connections this sender has opened so far."""
        return self._session.connections

    async def _run(self, steps: _Steps[T]) -> T:
        import asyncio

        loop = asyncio.get_running_loop()
        if self._lock is None or self._loop is not loop:
            # First use, or a new event loop (a second asyncio.run): the old loop's
            # connection cannot be used from this one.
            if self._loop is not None:
                self._driver.abandon()
                self._session.forget()
            self._loop, self._lock = loop, asyncio.Lock()
        async with self._lock:
            return await self._driver.run(self._session, steps)

    async def send(
        self,
        message: OutgoingMessage,
        *,
        notify: Iterable[str] | str | None = None,
        ret: str | None = None,
        envid: str | None = None,
        mail_from: str | None = None,
        rcpt_to: Iterable[str] | None = None,
    ) -> SendResult:
        """Send one message; see :meth:`SMTPSender.send`."""
        dsn = _dsn_options(notify, ret, envid)
        envelope = prepare(message, mail_from=mail_from, rcpt_to=rcpt_to)
        return await self._run(self._session.send(envelope, dsn))

    async def send_many(
        self,
        messages: Iterable[OutgoingMessage],
        *,
        notify: Iterable[str] | str | None = None,
        ret: str | None = None,
    ) -> list[SendResult]:
        """Send several messages over one connection; see :meth:`SMTPSender.send_many`."""
        return await self._run(self._session.send_many(_envelopes(messages, notify, ret)))

    async def etrn(self, domain: str) -> str:
        """Ask the server to flush its queue for ``domain``; see :meth:`SMTPSender.etrn`."""
        return (await self._run(self._session.etrn(domain))).text

    async def aclose(self) -> None:
        """Say QUIT and close the connection, if one is open."""
        await self._run(self._session.quit())
