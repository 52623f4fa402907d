"""The mailsync error hierarchy and the one translator every backend uses at its boundary.

Everything mailsync raises is a :class:`MailsyncError`. Errors from libraries (imapclient,
aioimaplib, smtplib, poplib, httpx) and from sockets are translated where a backend calls them,
with :func:`map_exceptions`, and the original is kept as ``__cause__``. Builtin bases are mixed in
so that generic handlers keep working (``except ConnectionError``, ``except TimeoutError``,
``except ValueError``).

    MailsyncError
     ├── ConfigError (ValueError)            bad URL, option or config file
     │    └── InvalidAddress                 an address that is not valid syntax
     ├── Unsupported                         the backend cannot do this
     ├── AuthenticationError                 credentials refused
     ├── ConnectionFailed (ConnectionError)  could not connect, or the connection broke
     ├── MailTimeout (TimeoutError)          the server did not answer in time
     ├── ProtocolError                       the server said something we cannot understand
     │    └── MessageTooLarge                a message over ``max_message_size``; ``size``, ``id``
     ├── ServerError                         the server understood and said no
     │    ├── FolderNotFound
     │    ├── MessageNotFound
     │    ├── RateLimited                    slow down; ``retry_after`` seconds if known
     │    └── TemporaryFailure               try again later (busy mailbox, 4xx replies)
     ├── SendError                           a message could not be sent
     │    ├── RecipientsRefused              every recipient was refused; ``refused`` says why
     │    │    └── RecipientsDeferred        ... only for now (4xx on every attempt); also a
     │    │                                  TemporaryFailure
     │    └── DeliveryUncertain              the message went, its answer never came:
     │                                       not sent again; ``message_id``
     ├── StorageError (OSError)              a local file or directory could not be written
     ├── StateError                          the state store is damaged or failed; ``store``
     │    └── LeaseLost                      another run saved this cursor: nothing was saved
     └── SyncBusy                            another sync of this account+folder is running

Server text quoted in an error is scrubbed of the secrets sent on that connection
(:class:`SecretScrubber`): some servers echo the command they refused, password and all.

This module must not import any backend library: it is imported by everything.
"""

from __future__ import annotations

import base64
import contextlib
import re
import socket
import ssl
from collections.abc import Iterator, Mapping
from typing import Any, TypeAlias

from mailsync._hints import socket_error_text

__all__ = [
    "AuthenticationError",
    "ConfigError",
    "ConnectionFailed",
    "DeliveryUncertain",
    "FolderNotFound",
    "InvalidAddress",
    "LeaseLost",
    "MailTimeout",
    "MailsyncError",
    "MessageNotFound",
    "MessageTooLarge",
    "ProtocolError",
    "RateLimited",
    "RecipientsDeferred",
    "RecipientsRefused",
    "SecretScrubber",
    "SendError",
    "ServerError",
    "StateError",
    "StorageError",
    "SyncBusy",
    "TemporaryFailure",
    "Unsupported",
    "map_exceptions",
]


class MailsyncError(Exception):
    """Base class of every error mailsync raises."""


class ConfigError(MailsyncError, ValueError):
    """A URL, option or configuration file is wrong; the message says which and how."""


class InvalidAddress(ConfigError):
    """An email address is not valid.

    Attributes:
        address: The address as it was given.
    """

    def __init__(self, message: str, *, address: str = "") -> None:
        super().__init__(message)
        self.address = address


class Unsupported(MailsyncError):
    """The backend cannot do what was asked (e.g. ``move`` on POP3)."""


class AuthenticationError(MailsyncError):
    """The server refused the credentials or the token."""


class ConnectionFailed(MailsyncError, ConnectionError):
    """Connecting failed, TLS could not be set up, or an open connection broke."""


class MailTimeout(MailsyncError, TimeoutError):
    """The server did not answer within the timeout."""


class ProtocolError(MailsyncError):
    """The server sent something that does not follow the protocol."""


class MessageTooLarge(ProtocolError):
    """A message (or a reply) is larger than the connection's ``max_message_size``: it was
    refused from its announced size, or once that much of it had arrived, and never held
    whole. The connection it came on is dropped (the rest of it was still on the wire).

    A :class:`ProtocolError` because, like one, it is about what the server sent and
    retrying will not change it; it is not a :class:`ServerError` (the server refused
    nothing). ``sync()`` and ``watch()`` skip such a message with a logged warning; fetch it
    with ``get(id)`` on a retriever connected with a larger ``max_message_size`` (or None).

    Attributes:
        size: The size announced or reached, in bytes, when known.
        limit: The limit it exceeded.
        id: The message's ``Message.id`` when known.
        uid: The message's IMAP UID (None elsewhere, or when not known).
    """

    def __init__(
        self,
        message: str,
        *,
        size: int | None = None,
        limit: int | None = None,
        id: str | None = None,
        uid: int | None = None,
    ) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit
        self.id = id
        self.uid = uid


class ServerError(MailsyncError):
    """The server understood the request and refused it.

    Attributes:
        code: The server's status code or keyword, when it gave one.
    """

    def __init__(self, message: str, *, code: int | str | None = None) -> None:
        super().__init__(message)
        self.code = code


class FolderNotFound(ServerError):
    """The folder does not exist."""


class MessageNotFound(ServerError):
    """No message has this id (any more)."""


class RateLimited(ServerError):
    """The server asks to slow down.

    Attributes:
        retry_after: Seconds to wait before trying again, when the server said.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        code: int | str | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class TemporaryFailure(ServerError):
    """A transient refusal (mailbox in use, 4xx reply): the same call may work later."""


class SendError(MailsyncError):
    """A message could not be sent."""


class RecipientsRefused(SendError):
    """Every recipient was refused, so nothing was sent.

    Attributes:
        refused: Address -> ``(code, text)`` as the server replied.
    """

    def __init__(self, message: str, *, refused: Mapping[str, tuple[int, str]]) -> None:
        super().__init__(message)
        self.refused = dict(refused)


class RecipientsDeferred(RecipientsRefused, TemporaryFailure):
    """Every recipient was refused for now: each got a 4xx reply (greylisting, a full or busy
    mailbox) on every attempt, so nothing was sent, and the same message may go through
    later. Both a :class:`RecipientsRefused` (``refused`` has each address's last reply) and
    a :class:`TemporaryFailure` (``code`` is the last 4xx code).

    A refusal mixing 4xx and 5xx replies is a plain :class:`RecipientsRefused`: some
    recipients will never take the message.
    """

    def __init__(
        self,
        message: str,
        *,
        refused: Mapping[str, tuple[int, str]],
        code: int | str | None = None,
    ) -> None:
        MailsyncError.__init__(self, message)
        self.refused = dict(refused)
        self.code = code


class DeliveryUncertain(SendError):
    """The message's end of data went out, and no answer came back (the connection dropped,
    the wait timed out, or the answer was garbled): the server may have taken the message or
    not, and mailsync cannot tell. It is not sent again, as sending it again could deliver it
    twice; the sender's ``resend_uncertain`` option sends it once more instead.

    From ``send_many`` it comes after every other message was dealt with, and says which
    messages are uncertain.

    Attributes:
        message_id: The Message-ID of the (first) message whose delivery is uncertain.
        message_ids: Every such Message-ID, in the order sent (one for ``send``).
        results: ``send_many``: one entry per message, in order: its
            :class:`~mailsync.SendResult`, or None where delivery is uncertain. ``send``:
            empty.
    """

    def __init__(
        self,
        message: str,
        *,
        message_id: str,
        message_ids: tuple[str, ...] = (),
        results: list[Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message_id = message_id
        self.message_ids = message_ids or (message_id,)
        # SendResult | None each (not named here: _base, which defines it, imports this module)
        self.results: list[Any] = list(results or [])


class StorageError(MailsyncError, OSError):
    """A local file or directory could not be written (``Attachment.save`` into a directory
    that cannot be created, a full disk, no permission); the message names the path."""


class StateError(MailsyncError):
    """The state store cannot be used: its file is damaged, a saved value is not what
    mailsync wrote, or the database failed. The message names the store and how to reset it.

    Attributes:
        store: The store's file or URL (no password), when known.
        damaged: True when what is stored is damaged (it will not pass by itself), False
            when the store failed (unreachable, locked) and a retry may work.
    """

    def __init__(self, message: str, *, store: str = "", damaged: bool = False) -> None:
        super().__init__(message)
        self.store = store
        self.damaged = damaged


class LeaseLost(StateError):
    """Another run saved this account+folder's cursor since this run read it, so this run
    no longer holds the sync lease (its process lost the lock, or someone reset the folder).
    Nothing was saved: the message in hand comes again at the next ``sync()``."""


class SyncBusy(MailsyncError):
    """Another ``sync()`` of this account and folder holds the lease, and the caller asked
    not to wait (``sync(folder, wait=False)``) or waited as long as it allowed.

    Attributes:
        account: The account's key in the state store.
        folder: The folder.
    """

    def __init__(self, message: str, *, account: str = "", folder: str = "") -> None:
        super().__init__(message)
        self.account = account
        self.folder = folder


ExceptionMap: TypeAlias = Mapping[type[BaseException], type[MailsyncError]]

#: The socket-level translations every backend wants; a backend passes its own map for the rest.
SOCKET_ERRORS: ExceptionMap = {
    socket.timeout: MailTimeout,
    TimeoutError: MailTimeout,
    ssl.SSLCertVerificationError: ConnectionFailed,
    ssl.SSLError: ConnectionFailed,
    socket.gaierror: ConnectionFailed,
    ConnectionError: ConnectionFailed,
    EOFError: ConnectionFailed,
    OSError: ConnectionFailed,
}


class SecretScrubber:
    """The secrets one connection has sent, to be scrubbed from server text quoted in errors.

    A backend makes one per connection, gives it each password, token or SASL response
    it sends (:meth:`add`), and passes every piece of server text it puts into an error
    message through :meth:`scrub` (:func:`map_exceptions` does so for the library errors it
    describes). A server that echoes ``LOGIN alice "hunter2"`` in its refusal then shows
    ``LOGIN alice "***"``. Each secret is also looked for in the forms a server could echo
    it in: quoted (backslashes and double quotes escaped) and base64-encoded, as SASL
    exchanges carry it.

    Only the text is scrubbed: the exception chained as ``__cause__`` is the library's own,
    which backends keep free of server text where a secret can be in it.
    """

    __slots__ = ("_forms", "_pattern")

    _MARK = "***"

    def __init__(self) -> None:
        self._forms: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def add(self, secret: str | bytes | None) -> None:
        """Remember a secret sent on this connection (bytes: a SASL response as sent)."""
        if not secret:
            return
        data = secret if isinstance(secret, bytes) else secret.encode("utf-8")
        forms = {base64.b64encode(data).decode("ascii")}
        if isinstance(secret, str):
            forms |= {secret, secret.replace("\\", "\\\\").replace('"', '\\"')}
        else:
            forms.add(secret.decode("utf-8", "replace"))
        self._forms |= {form for form in forms if form}
        # Compiled when first needed: every connection logs in, few ever quote an error.
        self._pattern = None

    def scrub(self, text: str) -> str:
        """``text`` with every form of every secret replaced by ``***``."""
        if not self._forms:
            return text
        pattern = self._pattern
        if pattern is None:
            longest_first = sorted(self._forms, key=len, reverse=True)
            pattern = re.compile("|".join(re.escape(form) for form in longest_first))
            self._pattern = pattern
        # A secret made of asterisks would survive its own mark: it is dropped instead.
        mark = "" if any(form.strip("*") == "" for form in self._forms) else self._MARK
        # Replacing can join what is left around a mark into a secret again ("aa*" less
        # "a*"): repeat until none is left. Each round removes characters no mark has.
        while pattern.search(text):
            text = pattern.sub(mark, text)
        return text


@contextlib.contextmanager
def map_exceptions(
    mapping: ExceptionMap | None = None,
    *,
    context: str = "",
    secrets: SecretScrubber | None = None,
) -> Iterator[None]:
    """Translate library and socket errors raised inside the block into mailsync errors.

    The first matching entry wins, so put specific classes before their bases. Errors that
    already are :class:`MailsyncError` pass through untouched. The original error is chained.

    Args:
        mapping: Extra translations, tried before the socket-level ones.
        context: Prefixed to the message, e.g. ``"IMAP 127.0.0.1:143"``.
        secrets: The connection's secrets, scrubbed from the library error's text (which
            may quote the server).

    Raises:
        MailsyncError: The translated error.
    """
    try:
        yield
    except MailsyncError:
        raise
    except BaseException as exc:
        target = _lookup(exc, mapping or {}) or _lookup(exc, SOCKET_ERRORS)
        if target is None:
            raise
        text = _describe(exc, context)
        raise target(secrets.scrub(text) if secrets is not None else text) from exc


def _lookup(exc: BaseException, mapping: ExceptionMap) -> type[MailsyncError] | None:
    for source, target in mapping.items():
        if isinstance(exc, source):
            return target
    return None


def _describe(exc: BaseException, context: str) -> str:
    if context:
        hinted = socket_error_text(exc, context)
        if hinted is not None:
            return hinted
    text = str(exc).strip() or type(exc).__name__
    return f"{context}: {text}" if context else text
