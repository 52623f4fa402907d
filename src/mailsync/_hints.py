"""What to tell a person when connecting fails: the fix, not only the symptom.

The failures a user causes by configuration look alike at the socket: a certificate their
system does not trust, a port that expects STARTTLS given an implicit-TLS URL, a port that
speaks another protocol, a host name that does not resolve, nothing listening. This module
words them once, for every backend and the command line: one sentence that names the host and
port (from the ``"IMAP host:993"`` context every backend already puts in front of its errors)
and says what to change.

It is called from :func:`mailsync._errors.map_exceptions` (socket and TLS errors) and from the
few places where a protocol reads a server's greeting. Pure functions: no I/O, and nothing
here imports a backend.
"""

from __future__ import annotations

import re
import socket
import ssl

__all__ = ["TRUST_HINT", "greeting_problem", "other_protocol", "socket_error_text"]

#: How to trust a private or self-signed CA, in every form mailsync takes it.
TRUST_HINT = (
    'to trust a private or self-signed CA, give its certificate: ca_file = "/path/ca.pem" in '
    'the config file, --ca-file /path/ca.pem on the command line, or verify="/path/ca.pem" '
    "in Python"
)

# "IMAP host:993" and "IMAP host:993: UID FETCH" as backends write their context.
_CONTEXT = re.compile(r"^(?P<family>[A-Z0-9]+) (?P<host>\S+):(?P<port>\d+)\b")
_IMPLICIT_PORTS = {"IMAP": 993, "POP3": 995, "SMTP": 465}
_STARTTLS_PORTS = {"IMAP": 143, "POP3": 110, "SMTP": 587}
_SCHEMES = {"IMAP": "imap", "POP3": "pop3", "SMTP": "smtp"}

# OpenSSL's words for "the bytes that came back are not TLS": a plaintext greeting read as a
# TLS record (WRONG_VERSION_NUMBER; "record layer failure" since OpenSSL 3.2).
_NOT_TLS = frozenset(
    {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG", "HTTP_REQUEST"}
)
_NOT_TLS_TEXT = ("wrong version number", "record layer failure", "packet length too long")

# X.509 verification results (OpenSSL's X509_V_ERR_* codes) that mean different fixes.
_EXPIRED = frozenset({9, 10})  # not yet valid, expired
_NAME_MISMATCH = frozenset({62, 64})  # host name, IP address


def socket_error_text(exc: BaseException, context: str) -> str | None:
    """The message for a socket or TLS error that a person can fix, or None for the rest.

    Args:
        exc: The error as the socket or ``ssl`` module raised it.
        context: What failed, as backends write it: ``"IMAP host:993"``.

    Returns:
        One line starting with ``context``, or None when there is nothing better to say than
        the error itself.
    """
    where = _where(context)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"{context}: {_certificate(exc, where)}"
    if isinstance(exc, ssl.SSLError) and _not_tls(exc):
        return f"{context}: {_not_tls_text(where)}"
    if isinstance(exc, socket.gaierror):
        host = where[1] if where else "the host"
        reason = exc.strerror or str(exc)
        return (
            f"{context}: cannot resolve the host name {host!r} ({reason}): check the host in "
            "the URL, and that this machine can reach its DNS server"
        )
    if isinstance(exc, ConnectionRefusedError) and where is not None:
        return f"{context}: connection refused: {_refused(where)}"
    return None


def greeting_problem(expected: str, line: str | bytes) -> str:
    """Why a server's first line is not the greeting of protocol ``expected``, and the fix.

    Args:
        expected: ``"IMAP"``, ``"POP3"`` or ``"SMTP"``.
        line: The first line the server sent.

    Returns:
        A sentence such as ``"the server's greeting is '+OK ready', which looks like POP3, not
        IMAP: use pop3:// or pop3s:// for it, or the IMAP port (usually 993 for imaps://, 143
        for imap://)"``.
    """
    text = _text(line)
    shown = repr(text[:60]) if text else "nothing"
    other = other_protocol(expected, text)
    if other is not None:
        return f"the server's greeting is {shown}, {other}"
    article = "an" if expected[0] in "AEFHILMNORSX" else "a"
    return f"the server's greeting is {shown}, which is not {article} {expected} greeting"


def other_protocol(expected: str, line: str | bytes) -> str | None:
    """``"which looks like IMAP, not SMTP: use imap:// ..."`` when ``line`` is what another
    protocol's server says first; None when it does not look like one."""
    other = _looks_like(_text(line))
    if other is None or other == expected:
        return None
    port = f"the {expected} port ({_port_advice(expected)})"
    if other in _SCHEMES:
        scheme = _SCHEMES[other]
        fix = f"use {scheme}:// or {scheme}s:// for it, or {port}"
    else:
        fix = f"use {port}"
    return f"which looks like {other}, not {expected}: {fix}"


def _text(line: str | bytes) -> str:
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    return text.strip()


def _looks_like(text: str) -> str | None:
    upper = text.upper()
    if upper.startswith(("* OK", "* PREAUTH", "* BYE")):
        return "IMAP"
    if upper.startswith(("+OK", "-ERR")):
        return "POP3"
    if re.match(r"(220|421|554)[ -]", text):
        return "SMTP"
    if upper.startswith("HTTP/"):
        return "HTTP"
    if upper.startswith("SSH-"):
        return "SSH"
    return None


def _port_advice(family: str) -> str:
    scheme = _SCHEMES.get(family, family.lower())
    implicit, starttls = _IMPLICIT_PORTS.get(family), _STARTTLS_PORTS.get(family)
    return f"usually {implicit} for {scheme}s://, {starttls} for {scheme}://"


def _where(context: str) -> tuple[str, str, int] | None:
    match = _CONTEXT.match(context)
    if match is None:
        return None
    return match["family"], match["host"], int(match["port"])


def _certificate(exc: ssl.SSLCertVerificationError, where: tuple[str, str, int] | None) -> str:
    reason = exc.verify_message or exc.reason or str(exc)
    code = exc.verify_code
    if code in _EXPIRED:
        fix = "the server's certificate is outside its validity dates: the server must renew it"
    elif code in _NAME_MISMATCH:
        host = where[1] if where else "the host"
        fix = (
            f"the certificate is not issued for {host!r}: connect with a name the certificate "
            "names (in the URL), or fix the server's certificate"
        )
    else:
        fix = TRUST_HINT
    return f"certificate verification failed ({reason}); {fix}"


def _not_tls(exc: ssl.SSLError) -> bool:
    reason = (exc.reason or "").upper()
    text = str(exc).lower()
    return reason in _NOT_TLS or any(words in text for words in _NOT_TLS_TEXT)


def _not_tls_text(where: tuple[str, str, int] | None) -> str:
    if where is None or where[0] not in _SCHEMES:
        return (
            "the server did not answer in TLS: if this port expects STARTTLS, use the scheme "
            "without the s (imap://, pop3://, smtp://) instead of imaps://, pop3s://, smtps://"
        )
    family, _, port = where
    scheme = _SCHEMES[family]
    return (
        f"the server did not answer in TLS: port {port} probably expects STARTTLS; use "
        f"{scheme}:// (STARTTLS, usually port {_STARTTLS_PORTS[family]}) instead of "
        f"{scheme}s:// (implicit TLS, usually port {_IMPLICIT_PORTS[family]})"
    )


def _refused(where: tuple[str, str, int]) -> str:
    family, host, port = where
    if family not in _SCHEMES:
        return f"nothing listens on port {port} of {host}; check the host and the port"
    return (
        f"nothing listens on port {port} of {host}; check the host and the port "
        f"({family}: {_port_advice(family)})"
    )
