"""What ``mailsync accounts check`` learns about a server beyond "it works": the TLS version,
cipher and certificate, and the capabilities the server announces.

mailsync's backends do not expose their sockets (and should not), so this opens one more,
short connection with the standard library's clients (imaplib, poplib, smtplib), which can
STARTTLS and report what they negotiated; for a sender, whose API has no "log in without
sending", it also logs in with smtplib. Errors are translated as the backends translate theirs,
so a failing check says what to change.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from mailsync._config import Endpoint
from mailsync._errors import AuthenticationError, ProtocolError, map_exceptions

__all__ = ["Probe", "probe"]


@dataclass
class Probe:
    """What one connection showed.

    Attributes:
        tls: ``"TLSv1.3 TLS_AES_256_GCM_SHA384"``, or ``"none"``.
        certificate: Subject, issuer and expiry of the server's certificate, when verified.
        capabilities: What the server announces (IMAP CAPABILITY, POP3 CAPA, SMTP EHLO).
        login: What logging in said (``"ok"``), for senders; empty when not tried.
    """

    tls: str = "none"
    certificate: str = ""
    capabilities: list[str] = field(default_factory=list)
    login: str = ""


def probe(endpoint: Endpoint, *, login: bool = False) -> Probe:
    """Connect to ``endpoint`` with the standard library's client for its protocol.

    Args:
        endpoint: A network endpoint (``imap``, ``pop3``, ``smtp`` or an HTTP API).
        login: Also log in (SMTP only: retrievers log in through mailsync itself).

    Raises:
        MailsyncError: The connection failed; the message says why and what to change.
    """
    import imaplib
    import poplib
    import smtplib

    found = Probe()
    errors: dict[type[BaseException], Any] = {
        smtplib.SMTPAuthenticationError: AuthenticationError,
        smtplib.SMTPException: ProtocolError,
        imaplib.IMAP4.error: ProtocolError,
        poplib.error_proto: ProtocolError,
    }
    with map_exceptions(errors, context=endpoint.display):
        if endpoint.scheme == "imap":
            _imap(endpoint, found)
        elif endpoint.scheme == "pop3":
            _pop3(endpoint, found)
        elif endpoint.scheme == "smtp":
            _smtp(endpoint, found, login=login)
        elif endpoint.tls == "ssl":
            _plain_tls(endpoint, found)
    return found


def _timeout(endpoint: Endpoint) -> float:
    # A check should not hang: "no timeout" still gets one here.
    return endpoint.timeout.connect_timeout or 60.0


def _context(endpoint: Endpoint) -> ssl.SSLContext:
    return endpoint.ssl_context()


def _describe(found: Probe, sock: Any) -> None:
    if not isinstance(sock, ssl.SSLSocket):
        return
    cipher = sock.cipher()
    found.tls = f"{sock.version()} {cipher[0] if cipher else ''}".strip()
    cert = sock.getpeercert()
    if not cert:
        found.certificate = "not verified (--insecure / verify=false)"
        return
    subject = _name(cert.get("subject", ()))
    issuer = _name(cert.get("issuer", ()))
    found.certificate = f"{subject}, issued by {issuer}, valid until {cert.get('notAfter', '?')}"


def _name(rdns: Any) -> str:
    parts = [f"{key}={value}" for rdn in rdns for key, value in rdn if key in ("commonName", "O")]
    return ", ".join(parts).replace("commonName", "CN") or "(no name)"


def _imap(endpoint: Endpoint, found: Probe) -> None:
    import imaplib

    timeout = endpoint.timeout.connect_timeout
    conn: imaplib.IMAP4
    if endpoint.tls == "ssl":
        conn = imaplib.IMAP4_SSL(
            endpoint.host, endpoint.port, ssl_context=_context(endpoint), timeout=timeout
        )
    else:
        conn = imaplib.IMAP4(endpoint.host, endpoint.port, timeout=timeout)
        if endpoint.tls == "starttls":
            conn.starttls(_context(endpoint))
    with _closing(conn.logout):
        _describe(found, conn.sock)
        found.capabilities = sorted(str(c) for c in conn.capabilities)


def _pop3(endpoint: Endpoint, found: Probe) -> None:
    import poplib

    timeout = _timeout(endpoint)
    conn: poplib.POP3
    if endpoint.tls == "ssl":
        conn = poplib.POP3_SSL(
            endpoint.host, endpoint.port, context=_context(endpoint), timeout=timeout
        )
    else:
        conn = poplib.POP3(endpoint.host, endpoint.port, timeout=timeout)
        if endpoint.tls == "starttls":
            conn.stls(_context(endpoint))
    with _closing(conn.quit):
        _describe(found, conn.sock)
        with contextlib.suppress(poplib.error_proto):  # CAPA is optional (RFC 2449)
            found.capabilities = sorted(
                " ".join([name, *values]) for name, values in conn.capa().items()
            )


def _smtp(endpoint: Endpoint, found: Probe, *, login: bool) -> None:
    import smtplib

    timeout = _timeout(endpoint)
    conn: smtplib.SMTP
    if endpoint.tls == "ssl":
        conn = smtplib.SMTP_SSL(
            endpoint.host, endpoint.port, context=_context(endpoint), timeout=timeout
        )
    else:
        conn = smtplib.SMTP(endpoint.host, endpoint.port, timeout=timeout)
    with _closing(conn.quit):
        conn.ehlo()
        if endpoint.tls == "starttls":
            conn.starttls(context=_context(endpoint))
            conn.ehlo()
        _describe(found, conn.sock)
        found.capabilities = sorted(
            f"{name.upper()} {value}".strip() for name, value in conn.esmtp_features.items()
        )
        if not login:
            return
        if not endpoint.username or endpoint.password is None:
            found.login = "not tried (no user and password: sends without logging in)"
            return
        conn.login(endpoint.username, endpoint.password.reveal())
        found.login = f"ok ({endpoint.username})"


def _plain_tls(endpoint: Endpoint, found: Probe) -> None:
    timeout = endpoint.timeout.connect_timeout
    with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout) as raw:
        context = _context(endpoint)
        with context.wrap_socket(raw, server_hostname=endpoint.host) as sock:
            _describe(found, sock)


@contextlib.contextmanager
def _closing(close: Any) -> Iterator[None]:
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            close()
