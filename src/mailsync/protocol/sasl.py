"""SASL (RFC 4422) for IMAP, POP3 and SMTP: which mechanism to use, and what the client says.

One module for the three protocols, so that they log in the same way with the same
credentials. Each protocol wraps the exchange in its own command (``AUTHENTICATE``, ``AUTH``)
and line syntax; what goes in those lines is decided here.

The preference order, the same everywhere:

- **With a token**: ``OAUTHBEARER`` (RFC 7628, the standard), then ``XOAUTH2`` (Google's and
  Microsoft's earlier mechanism, which both still accept). A server that does not list its
  mechanisms (a POP3 server without the ``SASL`` capability may still take ``AUTH``) is tried
  with ``XOAUTH2``, which every provider that issues tokens accepts.
- **With a password**: ``PLAIN`` (RFC 4616: one message, UTF-8 user names and passwords), then
  ``LOGIN`` (the obsolete two-step mechanism, for servers that offer nothing else). IMAP and
  POP3 have a login command of their own (``LOGIN``, ``USER``/``PASS``) that takes the place of
  SASL ``LOGIN``: the same secret in fewer round trips. Challenge-response mechanisms
  (CRAM-MD5, SCRAM) are not offered: mailsync sends passwords only over TLS unless told
  otherwise, where they add nothing but round trips.

``OAUTHBEARER`` carries the host and port the client connected to (RFC 7628 section 3.1).
A failed OAuth exchange ends with an error challenge (a JSON document); the client answers it
as the mechanism says (``XOAUTH2``: an empty response; ``OAUTHBEARER``: ``%x01``) so that the
server ends the exchange with its refusal, and any other mechanism cancels (``*``).

This module must not do I/O or know any protocol's command syntax.
"""

from __future__ import annotations

import base64
from collections import deque
from collections.abc import Callable, Collection, Iterable

from mailsync._errors import AuthenticationError, ProtocolError, Unsupported

__all__ = [
    "PASSWORD_MECHANISMS",
    "TOKEN_MECHANISMS",
    "Exchange",
    "NoMechanism",
    "choose",
    "encode",
    "encode_initial",
    "exchange",
    "no_mechanism",
    "oauthbearer",
    "plain",
    "xoauth2",
]

#: Mechanisms for an OAuth2 access token, most preferred first.
TOKEN_MECHANISMS = ("OAUTHBEARER", "XOAUTH2")
#: Mechanisms for a password, most preferred first.
PASSWORD_MECHANISMS = ("PLAIN", "LOGIN")
#: Tried with a token when the server does not list its mechanisms.
_UNLISTED = "XOAUTH2"
#: What a client answers to an error challenge, per mechanism (None: cancel with ``*``).
_ABORT: dict[str, bytes | None] = {"XOAUTH2": b"", "OAUTHBEARER": b"\x01"}


class NoMechanism(AuthenticationError, Unsupported):
    """The server offers no mechanism that can log in with the credential given.

    Both an :class:`~mailsync.AuthenticationError` (the login cannot happen) and an
    :class:`~mailsync.Unsupported` (the server lacks what the credential needs).
    """


def plain(user: str, password: str, authzid: str = "") -> bytes:
    """The PLAIN message (RFC 4616): ``authzid NUL authcid NUL passwd``, UTF-8."""
    return f"{authzid}\0{user}\0{password}".encode()


def xoauth2(user: str, token: str) -> bytes:
    """The XOAUTH2 initial response."""
    return f"user={user}\x01auth=Bearer {token}\x01\x01".encode()


def oauthbearer(user: str, token: str, host: str = "", port: int = 0) -> bytes:
    """The OAUTHBEARER initial response (RFC 7628): a GS2 header naming the user, then the
    host and port connected to, then the bearer token."""
    saslname = user.replace("=", "=3D").replace(",", "=2C")  # RFC 5801
    fields = [f"n,a={saslname},"]
    if host:
        fields.append(f"host={host}")
    if port:
        fields.append(f"port={port}")
    fields.append(f"auth=Bearer {token}")
    return ("\x01".join(fields) + "\x01\x01").encode()


def choose(
    offered: Iterable[str] | None,
    *,
    token: bool,
    usable: Collection[str] = PASSWORD_MECHANISMS + TOKEN_MECHANISMS,
) -> str | None:
    """The mechanism to log in with: the first of the preference order (see the module
    docstring) that the server offers and the protocol can run.

    Args:
        offered: The mechanisms the server lists (any case), or None when it does not say.
        token: Log in with a token (else a password).
        usable: The mechanisms the caller can run (IMAP and POP3 leave out ``LOGIN``, whose
            place their own login command takes).

    Returns:
        The mechanism's name, or None when there is none (then a password logs in with the
        protocol's own command, where it has one).
    """
    order = TOKEN_MECHANISMS if token else PASSWORD_MECHANISMS
    if offered is None:
        return _UNLISTED if token and _UNLISTED in usable else None
    names = {name.upper() for name in offered}
    return next((m for m in order if m in names and m in usable), None)


def no_mechanism(
    context: str, offered: Iterable[str] | None, *, token: bool, hint: str = ""
) -> NoMechanism:
    """The error for a server with no mechanism :func:`choose` could pick."""
    listed = sorted({name.upper() for name in offered or ()})
    what = f"offers {' '.join(listed)}" if listed else "offers no AUTH mechanism at all"
    wanted = " or ".join(TOKEN_MECHANISMS if token else PASSWORD_MECHANISMS)
    credential = "a token" if token else "a password"
    return NoMechanism(
        f"{context}: {credential} was given, but the server {what}, not {wanted}{hint}"
    )


class Exchange:
    """The client side of one SASL exchange: the initial response, and the answer to each
    challenge. Secrets never appear in its repr.

    Args:
        mechanism: The mechanism's name.
        responses: What the client says, in order.
        initial: Whether the first response is an initial response (sent with the command
            where the protocol allows; else in answer to the server's empty challenge).
            ``LOGIN`` has none: the server asks for each response.
        abort: The answer to a challenge after the last response, which can only report an
            error (None: cancel with ``*``).
    """

    def __init__(
        self,
        mechanism: str,
        responses: Iterable[bytes],
        *,
        initial: bool = True,
        abort: bytes | None = None,
    ) -> None:
        self.mechanism = mechanism.upper()
        self._responses = deque(responses)
        self._has_initial = initial
        self._abort = abort
        self._aborted = False
        self._inline: bytes | None = None  # the initial response, when sent with the command
        #: The server's error challenge, once it sent one (XOAUTH2/OAUTHBEARER: JSON).
        self.error_detail: bytes | None = None

    def __repr__(self) -> str:
        return f"Exchange({self.mechanism!r})"

    def initial(self, fits: Callable[[str], bool] = lambda _argument: True) -> str | None:
        """The initial response as a command argument (base64, ``=`` when empty), taken to
        be sent with the command; None when the mechanism has none or ``fits`` says the
        argument is too long for the command line. Then it answers the server's first
        (empty) challenge instead."""
        if not self._has_initial or not self._responses:
            return None
        argument = encode_initial(self._responses[0])
        if not fits(argument):
            return None
        self._has_initial = False
        self._inline = self._responses.popleft()
        return argument

    def secrets(self) -> tuple[bytes, ...]:
        """Every response of the exchange, sent or still to send: they carry the credentials,
        for the connection's :class:`~mailsync._errors.SecretScrubber`."""
        sent = () if self._inline is None else (self._inline,)
        return (*sent, *self._responses)

    def respond(self, challenge: bytes) -> bytes | None:
        """The answer to a challenge (decoded); None means cancel (``*``).

        An empty challenge right after an initial response went with the command asks for
        it again (a server that does not take initial responses): it is sent again.

        Raises:
            ProtocolError: The server challenged again after the exchange was given up.
        """
        self._has_initial = False
        inline, self._inline = self._inline, None
        if inline is not None and not challenge:
            return inline
        if self._responses:
            return self._responses.popleft()
        if self._aborted:
            raise ProtocolError(
                f"the server went on challenging after the {self.mechanism} exchange ended"
            )
        self._aborted = True
        self.error_detail = challenge
        return self._abort


def encode(response: bytes | None) -> str:
    """A response as the line the client sends: base64 (an empty response is an empty line),
    or ``*`` to cancel."""
    if response is None:
        return "*"
    return base64.b64encode(response).decode("ascii")


def encode_initial(response: bytes) -> str:
    """An initial response as a command argument: base64, or ``=`` when empty (RFC 4954,
    RFC 5034, RFC 4959)."""
    return base64.b64encode(response).decode("ascii") or "="


def exchange(mechanism: str, user: str, secret: str, *, host: str = "", port: int = 0) -> Exchange:
    """The exchange for ``mechanism`` with a password or token ``secret``.

    Args:
        mechanism: One of :data:`PASSWORD_MECHANISMS` or :data:`TOKEN_MECHANISMS`.
        user: The user name.
        secret: The password, or the access token.
        host: The server's host name (OAUTHBEARER).
        port: The server's port (OAUTHBEARER).

    Raises:
        ValueError: A mechanism this module does not implement.
    """
    name = mechanism.upper()
    abort = _ABORT.get(name)
    if name == "PLAIN":
        return Exchange(name, [plain(user, secret)])
    if name == "LOGIN":
        return Exchange(name, [user.encode(), secret.encode()], initial=False)
    if name == "XOAUTH2":
        return Exchange(name, [xoauth2(user, secret)], abort=abort)
    if name == "OAUTHBEARER":
        return Exchange(name, [oauthbearer(user, secret, host, port)], abort=abort)
    raise ValueError(f"mailsync does not implement the SASL mechanism {mechanism!r}")
