"""Connection settings: URL parsing, TLS modes, timeouts, secrets and tokens.

:func:`parse_url` turns ``imap://alice@example.test@mail.example.test:143`` into an
:class:`Endpoint`, the one value every backend is constructed from. Secrets (passwords, tokens)
are wrapped so they never show in a ``repr``, a log line or an exception message.

This module does no I/O beyond expanding ``~`` in local paths.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeAlias
from urllib.parse import parse_qsl, unquote

from mailsync._errors import ConfigError

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_PORTS",
    "LOCAL_SCHEMES",
    "MAX_RESPONSE_BYTES",
    "Deadline",
    "Endpoint",
    "Secret",
    "TLSMode",
    "Timeout",
    "TokenProvider",
    "max_message_size",
    "parse_url",
    "trust",
    "whole_number_option",
]

TLSMode: TypeAlias = Literal["ssl", "starttls", "none"]
TLS_MODES: tuple[TLSMode, ...] = ("ssl", "starttls", "none")

#: Schemes whose "host" part is a filesystem path.
LOCAL_SCHEMES = frozenset({"maildir", "mbox"})
#: Schemes spoken over HTTP to a provider's API.
HTTP_SCHEMES = frozenset({"gmail", "graph", "jmap"})

DEFAULT_PORTS: Mapping[tuple[str, TLSMode], int] = {
    ("imap", "ssl"): 993,
    ("imap", "starttls"): 143,
    ("imap", "none"): 143,
    ("pop3", "ssl"): 995,
    ("pop3", "starttls"): 110,
    ("pop3", "none"): 110,
    ("smtp", "ssl"): 465,
    ("smtp", "starttls"): 587,
    ("smtp", "none"): 25,
    ("jmap", "ssl"): 443,
    ("jmap", "none"): 80,
}

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})
_IMPLICIT_TLS = {"imaps": "imap", "pop3s": "pop3", "smtps": "smtp"}
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")  # RFC 3986 section 3.1


class Secret:
    """A string that never shows itself in ``repr``, ``str`` or f-strings.

    Call :meth:`reveal` at the one place the value is sent to a server.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the secret value."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)


class TokenProvider:
    """An OAuth2 access token, fixed or fetched from a callable at every (re)connect.

    Args:
        source: The token, or a zero-argument callable returning one.
    """

    __slots__ = ("_cached", "_source")

    def __init__(self, source: str | Callable[[], str]) -> None:
        self._source = source
        self._cached: Secret | None = None

    def get(self, *, refresh: bool = False) -> str:
        """Return a token, calling the callable when there is none cached or ``refresh`` is set.

        Raises:
            ConfigError: The callable did not return a non-empty string.
        """
        if isinstance(self._source, str):
            return self._source
        if self._cached is None or refresh:
            token = self._source()
            if not isinstance(token, str) or not token:
                raise ConfigError("the token callable must return a non-empty string")
            self._cached = Secret(token)
        return self._cached.reveal()

    @property
    def refreshable(self) -> bool:
        """Whether asking again may give a new token (a callable, not a fixed string)."""
        return not isinstance(self._source, str)

    def fresh(self) -> str:
        """Return a token for a new connection: callables are called again every time."""
        return self.get(refresh=True)

    def __repr__(self) -> str:
        kind = "fixed" if isinstance(self._source, str) else "callable"
        return f"TokenProvider({kind})"


#: The largest message a retriever accepts unless told otherwise (``max_message_size=``).
DEFAULT_MAX_MESSAGE_SIZE = 256 * 1024 * 1024
#: The slowest transfer a call is allowed, in bytes per second, unless told otherwise: past
#: :attr:`Timeout.total`, each byte received buys this much more time (1 / rate seconds).
DEFAULT_MIN_RATE = 8 * 1024
#: :attr:`Timeout.total` when not given, as a multiple of the read timeout.
TOTAL_PER_READ = 4
#: Bytes of response text one command may bring, message bodies aside (each of those is
#: bounded by ``max_message_size``): a POP3 LIST or UIDL, IMAP untagged responses, SMTP
#: reply lines.
MAX_RESPONSE_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Timeout:
    """Limits, in seconds, on waiting for a server.

    ``read`` bounds silence: how long to wait for the next byte. ``total`` bounds a whole
    call (a greeting, one reply, one message of a FETCH or RETR, an SMTP DATA), so that a
    server that keeps sending a byte now and then cannot hold a call for ever: a call may
    last ``total`` seconds plus the time its bytes take at ``min_rate`` bytes per second. A
    large message over a slow link is not cut off; a server dripping a byte a second is, a
    little after ``total``.

    Args:
        read: Seconds to wait for each server reply (``None`` waits forever).
        connect: Seconds to wait for the connection and greeting; defaults to ``read``.
        total: Seconds one call may take before its bytes are counted; defaults to four
            times ``read`` (``None`` when ``read`` is None: no bound).
        min_rate: Bytes per second a call must average past ``total``: every byte received
            extends the call's deadline by ``1 / min_rate`` seconds (``None``: ``total`` is a
            hard bound, whatever the size).
    """

    read: float | None = 30.0
    connect: float | None = None
    total: float | None = None
    min_rate: float | None = DEFAULT_MIN_RATE

    def __post_init__(self) -> None:
        for name in ("read", "connect", "total", "min_rate"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"Timeout({name}=...) must be a positive number, not {value!r}")

    @property
    def connect_timeout(self) -> float | None:
        """The connect limit, falling back to the read limit."""
        return self.read if self.connect is None else self.connect

    @property
    def total_timeout(self) -> float | None:
        """The fixed part of a call's deadline: ``total``, else four times ``read``."""
        if self.total is not None:
            return self.total
        return None if self.read is None else TOTAL_PER_READ * self.read

    def deadline(self, clock: Callable[[], float]) -> Deadline | None:
        """A fresh :class:`Deadline` for one call starting now on ``clock`` (None: no bound)."""
        total = self.total_timeout
        if total is None:
            return None
        return Deadline(clock() + total, 0.0 if self.min_rate is None else 1.0 / self.min_rate)

    @classmethod
    def of(cls, value: float | Timeout | None) -> Timeout:
        """Normalise what users pass as ``timeout=``.

        Raises:
            ConfigError: A negative or non-numeric value.
        """
        if isinstance(value, Timeout):
            return value
        if value is None:
            return cls(read=None)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ConfigError(f"timeout must be a positive number of seconds, not {value!r}")
        return cls(read=float(value))


class Deadline:
    """When one call must end: a fixed point in time, pushed later by every byte received
    (:attr:`Timeout.min_rate`). Kept per call by the code that reads; checked once per chunk
    read, never per byte.

    Attributes:
        at: The clock time the call must end by, as it stands.
    """

    __slots__ = ("_per_byte", "at")

    def __init__(self, at: float, per_byte: float) -> None:
        self.at = at
        self._per_byte = per_byte

    def received(self, nbytes: int) -> None:
        """Account for ``nbytes`` received: the deadline moves later by their share."""
        self.at += nbytes * self._per_byte

    def remaining(self, now: float) -> float:
        """Seconds left at clock time ``now`` (<= 0: past it)."""
        return self.at - now


def max_message_size(params: Mapping[str, Any]) -> int | None:
    """The ``max_message_size`` option of a retriever (bytes; a keyword argument or a URL
    query parameter), :data:`DEFAULT_MAX_MESSAGE_SIZE` when not given; None (``"none"`` in a
    URL) for no limit.

    Raises:
        ConfigError: Anything but a whole number >= 1 or None.
    """
    return whole_number_option(
        params, "max_message_size", DEFAULT_MAX_MESSAGE_SIZE, none_allowed=True
    )


def whole_number_option(
    params: Mapping[str, Any], key: str, default: int | None, *, none_allowed: bool = False
) -> int | None:
    """A backend option that is a whole number >= 1 (``concurrency``, ``batch_size``,
    ``max_message_size``), given as a keyword argument or a URL query parameter (a string).
    With ``none_allowed``, None (or ``"none"`` in a URL) means "no limit".

    Raises:
        ConfigError: Anything else.
    """
    value = params.get(key, default)
    if none_allowed and (value is None or (isinstance(value, str) and value.lower() == "none")):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1 or isinstance(value, bool):
        also = " or None" if none_allowed else ""
        raise ConfigError(f"{key} must be a whole number >= 1{also}, not {value!r}")
    return number


@dataclass(frozen=True)
class Endpoint:
    """Everything a backend needs to reach one account.

    Attributes:
        url: The URL as given, with any password removed.
        scheme: The base scheme (``imap``, ``pop3``, ``smtp``, ``maildir`` ...): ``imaps`` is
            ``imap`` with ``tls="ssl"``.
        host: Host name or address; empty for local schemes.
        port: TCP port (the scheme's default when the URL gives none); 0 for local schemes.
        username: The login, percent-decoded; may itself contain ``@``.
        password: The password, if any.
        token: OAuth2 token provider, if any.
        tls: ``"ssl"``, ``"starttls"`` or ``"none"``.
        verify: ``True``, ``False`` or an ``ssl.SSLContext`` to use.
        timeout: Connect, read and whole-call timeouts.
        path: The filesystem path (local schemes) or the URL path otherwise.
        params: Query-string parameters and backend-specific keyword options.
    """

    url: str
    scheme: str
    host: str = ""
    port: int = 0
    username: str | None = None
    password: Secret | None = field(default=None, repr=False)
    token: TokenProvider | None = field(default=None, repr=False)
    tls: TLSMode = "starttls"
    verify: bool | ssl.SSLContext = True
    timeout: Timeout = field(default_factory=Timeout)
    path: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def account_key(self) -> str:
        """A stable name for this account in the state store (never includes a secret).

        It names the mailbox, not the way to it: the protocol family (``imap`` for imaps://
        and imap:// alike, whose cursors are the same), the user and the host, without the
        port or the TLS mode. So the same mailbox reached over implicit TLS from one program
        and over STARTTLS (or through a tunnel on another port) from another shares one
        cursor. Local mailboxes are named by their resolved path.
        """
        if self.scheme in LOCAL_SCHEMES:
            return f"{self.scheme}:{Path(self.path).resolve()}"
        return f"{self.scheme}://{self.username or ''}@{self._host_key()}"

    @property
    def legacy_account_keys(self) -> tuple[str, ...]:
        """What :attr:`account_key` was before it left out the port (mailsync 0.1), for this
        port first and then the family's usual ones: cursors saved under them are taken over
        on first use, so nobody downloads everything again after upgrading."""
        if self.scheme in LOCAL_SCHEMES:
            return ()
        ports = [self.port]
        ports += [port for (family, _), port in DEFAULT_PORTS.items() if family == self.scheme]
        user = self.username or ""
        host = self.host.lower()
        return tuple(f"{self.scheme}://{user}@{host}:{port}" for port in dict.fromkeys(ports))

    def _host_key(self) -> str:
        host = self.host.lower().rstrip(".")
        return f"[{host}]" if ":" in host else host

    @property
    def display(self) -> str:
        """A short human-readable name, e.g. for error messages."""
        if self.scheme in LOCAL_SCHEMES:
            return f"{self.scheme}:{self.path}"
        return f"{self.scheme.upper()} {self.host}:{self.port}" if self.host else self.scheme

    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context for this endpoint: verifying by default, as asked otherwise."""
        if isinstance(self.verify, ssl.SSLContext):
            return self.verify
        context = ssl.create_default_context()
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def flag(self, name: str, default: bool = False) -> bool:
        """A yes/no backend option: ``True``/``False`` as given in Python, or ``1``, ``true``,
        ``yes``, ``on`` (any case) and ``0``, ``false``, ``no``, ``off`` from a URL query.

        Raises:
            ConfigError: Any other value; the message names the option.
        """
        value = self.params.get(name, default)
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ConfigError(f"option {name!r} takes true or false, not {value!r}")

    @property
    def max_message_size(self) -> int | None:
        """The largest message to accept, in bytes (None: no limit); see
        :func:`max_message_size`."""
        return max_message_size(self.params)

    def with_options(self, **changes: Any) -> Endpoint:
        """Return a copy with some fields changed."""
        return replace(self, **changes)


def parse_url(
    url: str,
    *,
    password: str | None = None,
    token: str | Callable[[], str] | None = None,
    tls: str | None = None,
    verify: bool | ssl.SSLContext | str | os.PathLike[str] = True,
    timeout: float | Timeout | None = 30.0,
    options: Mapping[str, Any] | None = None,
) -> Endpoint:
    """Parse a mailsync URL and the keyword options given with it.

    ``imap://alice@example.test@host:143`` is fine: the last ``@`` separates the host. Local
    schemes take a path: ``maildir:~/Mail``, ``maildir:///var/mail/alice``, ``mbox:inbox.mbox``.

    Args:
        url: The account URL.
        password: Overrides a password given in the URL.
        token: OAuth2 access token or a callable returning one.
        tls: ``"ssl"``, ``"starttls"`` or ``"none"``; the scheme's default when None.
        verify: Certificate verification: True, False, an ``ssl.SSLContext``, or the path of
            CA certificates to trust (see :func:`trust`).
        timeout: Seconds, or a :class:`Timeout`.
        options: Backend-specific keyword options (e.g. ``base_url``).

    Returns:
        The parsed endpoint.

    Raises:
        ConfigError: The URL or an option is not valid; the message says what to change.
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigError("the URL is empty: give one like imaps://user@host or maildir:~/Mail")
    url = url.strip()
    scheme, sep, rest = url.partition(":")
    scheme = scheme.lower()
    if not sep or not _SCHEME.fullmatch(scheme):
        raise ConfigError(
            f"{_safe(url)!r} is not a mailsync URL: it needs a scheme such as imaps://, "
            "pop3s://, smtps://, maildir: or mbox:"
        )
    common: dict[str, Any] = {
        "verify": trust(verify),
        "timeout": Timeout.of(timeout),
        "token": TokenProvider(token) if token is not None else None,
        "params": dict(options or {}),
    }
    if scheme in LOCAL_SCHEMES:
        return _parse_local(scheme, rest, common)
    return _parse_network(url, scheme, rest, password, tls, common)


def trust(verify: object) -> bool | ssl.SSLContext:
    """What ``verify=`` means: True, False and an ``ssl.SSLContext`` as they are; a path (``~``
    expanded) to a PEM file of CA certificates, or a directory of them (``c_rehash`` names),
    becomes a context that verifies against those CAs instead of the system's, as
    ``ssl.create_default_context(cafile=...)`` does.

    Raises:
        ConfigError: Anything else, a path that does not exist, or a file that holds no
            certificate; the message names the path.
    """
    if isinstance(verify, bool | ssl.SSLContext):
        return verify
    if not isinstance(verify, str | os.PathLike) or not str(verify).strip():
        raise ConfigError(
            "verify must be True, False, an ssl.SSLContext or the path of a CA certificate "
            f"file, not {verify!r}"
        )
    path = Path(verify).expanduser()
    if not path.exists():
        raise ConfigError(f"verify: no CA certificate file or directory at {str(path)!r}")
    try:
        if path.is_dir():
            return ssl.create_default_context(capath=str(path))
        return ssl.create_default_context(cafile=str(path))
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ConfigError(
            f"verify: {str(path)!r} is not a PEM file of CA certificates ({exc})"
        ) from exc


def _parse_local(scheme: str, rest: str, common: dict[str, Any]) -> Endpoint:
    path, _, query = rest.partition("?")
    if path.startswith("//"):
        path = path[2:]
    path = unquote(path)
    if not path:
        raise ConfigError(f"{scheme}: needs a path, e.g. {scheme}:~/Mail or {scheme}:///var/mail")
    common["params"] = {**dict(parse_qsl(query)), **common["params"]}
    path = os.path.expanduser(path)
    return Endpoint(url=f"{scheme}:{path}", scheme=scheme, path=path, tls="none", **common)


def _parse_network(
    url: str,
    scheme: str,
    rest: str,
    password: str | None,
    tls: str | None,
    common: dict[str, Any],
) -> Endpoint:
    base = _IMPLICIT_TLS.get(scheme, scheme)
    if not rest.startswith("//"):
        raise ConfigError(f"{_safe(url)!r}: expected {scheme}://[user@]host[:port]")
    authority, _, tail = rest[2:].partition("/")
    path, _, query = tail.partition("?")
    if "?" in authority:
        authority, _, query = authority.partition("?")
    userinfo, at, hostport = authority.rpartition("@")
    if not at:
        userinfo, hostport = "", authority
    user, colon, url_password = userinfo.partition(":")
    host, port = _split_host_port(hostport, url)
    if not host and base not in HTTP_SCHEMES:
        raise ConfigError(f"{_safe(url)!r} has no host: expected {scheme}://[user@]host[:port]")
    mode = _tls_mode(scheme, base, tls)
    if port is None:
        port = DEFAULT_PORTS.get((base, mode), 443 if base in HTTP_SCHEMES else 0)
    secret = password if password is not None else (unquote(url_password) if colon else None)
    params = {**dict(parse_qsl(query)), **common.pop("params")}
    shown = f"{scheme}://{(unquote(user) + '@') if user else ''}{hostport}"
    if path:
        shown += "/" + path
    return Endpoint(
        url=shown,
        scheme=base,
        host=host,
        port=port,
        username=unquote(user) or None,
        password=Secret(secret) if secret is not None else None,
        tls=mode,
        path=unquote(path),
        params=params,
        **common,
    )


def _split_host_port(hostport: str, url: str) -> tuple[str, int | None]:
    if hostport.startswith("["):  # IPv6 literal
        host, _, after = hostport[1:].partition("]")
        port_text = after[1:] if after.startswith(":") else ""
        if after and not after.startswith(":"):
            raise ConfigError(f"{_safe(url)!r}: malformed IPv6 address")
    else:
        host, _, port_text = hostport.partition(":")
    if not port_text:
        return host, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"{_safe(url)!r}: port {port_text!r} is not a number from 1 to 65535")
    return host, int(port_text)


def _tls_mode(scheme: str, base: str, tls: str | None) -> TLSMode:
    if tls is None:
        return "ssl" if scheme in _IMPLICIT_TLS or base in HTTP_SCHEMES else "starttls"
    if tls not in TLS_MODES:
        raise ConfigError(f"tls must be one of 'ssl', 'starttls', 'none', not {tls!r}")
    if scheme in _IMPLICIT_TLS and tls != "ssl":
        raise ConfigError(f"{scheme}:// always uses implicit TLS; use {base}:// with tls={tls!r}")
    return tls


def _safe(url: str) -> str:
    """The URL with any password replaced, for error messages."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, tail = rest.partition("/")
    userinfo, at, hostport = authority.rpartition("@")
    if at and ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":********"
        authority = f"{userinfo}@{hostport}"
    return f"{scheme}://{authority}{slash}{tail}"
