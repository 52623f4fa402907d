"""SMTP on the wire, without I/O: replies and their parser, EHLO extensions, the EHLO name, the
MAIL/RCPT lines with the DSN parameters (RFC 3461) and what the server must offer for them,
the DATA payload, and the retry options.

Written by hand, not taken from smtplib: smtplib's reply reader is tied to its socket and
cannot be fed bytes read elsewhere (asyncio, a pipelined group), and aiosmtplib is asyncio
only. What a client says with these pieces, and when, is :mod:`mailsync.protocol.smtp_session`.

This module must not do I/O.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from mailsync._envelope import Envelope
from mailsync._errors import ConfigError, ConnectionFailed, ProtocolError, SendError, Unsupported
from mailsync._hints import other_protocol

__all__ = [
    "CRLF",
    "DSN",
    "Features",
    "Lost",
    "Reply",
    "ReplyParser",
    "RetryPolicy",
    "check_extensions",
    "check_lost",
    "data_payload",
    "dsn_options",
    "envelope_commands",
    "hello_name",
    "is_drop",
    "on_off",
    "orcpt",
    "xtext",
]

CRLF = b"\r\n"
#: The longest reply line accepted (RFC 5321 allows 512; servers send more in EHLO).
_MAX_LINE = 8192
#: The most lines one reply may have.
_MAX_REPLY_LINES = 1000
#: Bytes read at a time.
_READ_SIZE = 65536
_NOTIFY_VALUES = ("success", "failure", "delay")
_ENVID_MAX = 100
#: Messages larger than this declare their SIZE in MAIL FROM: declaring it makes Postfix look
#: at its free disk space for every message, which costs small messages more than an early
#: refusal could save (the limit is checked before sending either way).
_DECLARE_SIZE_OVER = 64 * 1024
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


def orcpt(address: str) -> str:
    """The DSN ORCPT parameter value of a recipient (RFC 3461; RFC 6533 for UTF-8)."""
    if address.isascii():
        return "rfc822;" + xtext(address)
    return "utf-8;" + _unitext(address)


def data_payload(data: bytes) -> bytes:
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


class ReplyParser:
    """Turns the bytes a server sends into :class:`Reply` values (no I/O).

    Feed it with :meth:`feed`, or let a performer read into :meth:`get_buffer` and report
    with :meth:`buffer_updated` (the receiver of :mod:`mailsync.protocol.stream`).
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._lines: list[str] = []
        self._read = bytearray(_READ_SIZE)

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """Space for the next read (replies are small: a fixed 64 KiB)."""
        return memoryview(self._read)

    def buffer_updated(self, nbytes: int) -> list[Reply]:
        """Parse the ``nbytes`` written into the buffer; return the replies completed."""
        return self.feed(bytes(self._read[:nbytes]))

    def receive_eof(self) -> None:
        """The server closed the connection: nothing to say (the performer reports it)."""

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
            problem = other_protocol("SMTP", line)
            raise ProtocolError(
                f"the server sent a malformed reply line: {line[:80]!r}"
                + (f", {problem}" if problem else "")
            )
        self._lines.append(line[4:].decode("utf-8", "replace"))
        if len(self._lines) > _MAX_REPLY_LINES:
            raise ProtocolError("the server sent a reply of more than 1000 lines")
        if line[3:4] == b"-":
            return None
        lines, self._lines = tuple(self._lines), []
        return Reply(int(line[:3]), lines)


@dataclass(frozen=True, slots=True)
class Features:
    """What the server announced in its EHLO reply.

    Attributes:
        keywords: Extension keyword (upper case) -> its parameters.
        esmtp: False for a server that only took HELO (no extensions at all).
    """

    keywords: dict[str, str] = field(default_factory=dict)
    esmtp: bool = True

    @classmethod
    def parse(cls, reply: Reply) -> Features:
        """The extensions of an EHLO reply (older servers' ``AUTH=LOGIN`` included)."""
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
        """The SASL mechanisms offered, upper case."""
        return frozenset(self.keywords.get("AUTH", "").upper().split())

    @property
    def size(self) -> int | None:
        """The largest message the server takes, or None when it did not say."""
        value = self.keywords.get("SIZE", "").strip()
        return int(value) if value.isdigit() and int(value) > 0 else None


@dataclass(frozen=True, slots=True)
class DSN:
    """The RFC 3461 parameters of one message (None: not asked for).

    Attributes:
        notify: The NOTIFY value (``SUCCESS,FAILURE``).
        ret: The RET value (``FULL``, ``HDRS``).
        envid: The ENVID, not yet xtext-encoded.
    """

    notify: str | None = None
    ret: str | None = None
    envid: str | None = None

    @property
    def requested(self) -> bool:
        """Whether any DSN parameter is sent."""
        return any(v is not None for v in (self.notify, self.ret, self.envid))


def dsn_options(notify: Iterable[str] | str | None, ret: str | None, envid: str | None) -> DSN:
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
    return DSN(
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


class Lost(Exception):
    """The connection broke (or the server said 421) where sending again is safe. Never
    leaves a plan: it becomes a :class:`~mailsync.ConnectionFailed` first."""


def hello_name(configured: str | None, local_ip: str, fqdn: str) -> str:
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


def on_off(value: object) -> bool:
    """An on/off option from a URL query (``"0"``, ``"false"``, ``"no"``, ``"off"``) or code."""
    if isinstance(value, str):
        return value.strip().lower() not in ("0", "false", "no", "off", "")
    return bool(value)


def check_extensions(features: Features, envelope: Envelope, dsn: DSN, display: str) -> None:
    """Refuse a message the server cannot take as asked, before anything is sent.

    Raises:
        Unsupported: DSN, SMTPUTF8 or 8BITMIME needed and not offered.
        SendError: The message is larger than the server's SIZE.
    """
    if dsn.requested and "DSN" not in features:
        raise Unsupported(
            f"{display} does not offer DSN, so delivery notifications (notify, ret, "
            "envid) cannot be requested; send without them"
        )
    if envelope.needs_smtputf8 and "SMTPUTF8" not in features:
        raise Unsupported(
            f"{display} does not offer SMTPUTF8, which this message needs "
            "(non-ASCII addresses or raw UTF-8 headers)"
        )
    if envelope.eight_bit and "8BITMIME" not in features:
        raise Unsupported(
            f"{display} does not offer 8BITMIME and the message has 8-bit content; "
            "encode it as quoted-printable or base64"
        )
    limit = features.size
    if limit is not None and len(envelope.data) > limit:
        raise SendError(
            f"the message is {len(envelope.data)} bytes; {display} takes at most {limit}"
        )


def envelope_commands(
    features: Features, envelope: Envelope, dsn: DSN, recipients: list[str]
) -> tuple[bytes, list[bytes]]:
    """The MAIL FROM line and the RCPT TO lines (without CRLF) of a transaction."""
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
        original = f" ORCPT={orcpt(address)}" if dsn.requested else ""
        rcpts.append(f"RCPT TO:<{address}>{rcpt_params}{original}".encode())
    return mail.encode(), rcpts


def check_lost(reply: Reply, *, after_data: bool = False) -> None:
    """Raise :class:`Lost` for a 421 reply: the server is closing the connection."""
    if reply.code == 421:
        note = " after the message was sent" if after_data else ""
        raise Lost(f"the server is closing the connection{note}: {reply}")


def is_drop(exc: ConnectionFailed) -> bool:
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
