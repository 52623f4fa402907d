"""Senders: :class:`Sender`, :class:`AsyncSender` and what they return, :class:`SendResult`.

The contract every sending backend implements (SMTP, the local mailboxes, the HTTP APIs).
Re-exported by :mod:`mailsync._base`, beside the retrievers. No protocol code lives here.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias, TypeVar

from mailsync._config import Endpoint
from mailsync._message import Message
from mailsync._stream import finish_sender_class

if TYPE_CHECKING:
    from email.message import EmailMessage

__all__ = ["AsyncSender", "OutgoingMessage", "SendResult", "Sender"]

#: What senders and ``append`` accept.
# A string, so that the stdlib email package loads only when a program uses it.
OutgoingMessage: TypeAlias = "EmailMessage | bytes | Message"

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SendResult:
    """What became of one sent message.

    Attributes:
        message_id: The Message-ID sent, without angle brackets.
        accepted: The recipients the server accepted.
        refused: Refused recipients: address -> ``(code, text)``.
        envid: The DSN envelope id sent with the message, if any.
        saved_to: The folder a copy was filed in (``save_to``), or None.
        delivery: Recipient -> the delivery status the server reported when the message was
            sent (JMAP's ``deliveryStatus``: ``"queued"``, ``"yes"``, ``"no"``,
            ``"unknown"``); empty where the backend cannot tell (reports then come as DSNs).
    """

    message_id: str
    accepted: tuple[str, ...]
    refused: Mapping[str, tuple[int, str]] = field(default_factory=dict)
    envid: str | None = None
    saved_to: str | None = None
    delivery: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no recipient was refused."""
        return not self.refused


class Sender(abc.ABC):
    """Pushes mail out. Get one with :func:`mailsync.sender`.

    Senders connect lazily, are context managers, and are closed by :meth:`close`.

    Attributes:
        saves_sent_copy: True for transports that file what they send in the Sent folder
            themselves (the Gmail API, Microsoft Graph): ``save_to`` then adds nothing.
    """

    scheme: ClassVar[str] = ""
    saves_sent_copy: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        finish_sender_class(cls, asynchronous=False)

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.endpoint.url}>"

    def __enter__(self: T) -> T:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @abc.abstractmethod
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
        """Send one message.

        Args:
            message: An ``EmailMessage`` (e.g. from :func:`mailsync.compose`), bytes or a
                :class:`Message`.
            notify: DSN NOTIFY: ``"never"`` or some of ``"success"``, ``"failure"``,
                ``"delay"``.
            ret: DSN RET: ``"full"`` or ``"hdrs"``.
            envid: DSN ENVID, returned in reports to tie them to this message.
            mail_from: Envelope sender; the From (or Sender) header by default.
            rcpt_to: Envelope recipients; To + Cc + Bcc by default.

        Returns:
            The per-recipient outcome.

        Raises:
            RecipientsRefused: Every recipient was refused.
            Unsupported: DSN was asked for and the server does not offer it.
        """

    def send_many(self, messages: Iterable[OutgoingMessage]) -> list[SendResult]:
        """Send several messages, in order, over one connection where the backend can.

        Every sender's ``send_many`` also takes ``progress=True`` (keyword only): a bar
        counting the messages as they go out, in Jupyter or on a terminal.

        Returns:
            One :class:`SendResult` per message, in the same order.
        """
        return [self.send(message) for message in messages]

    def close(self) -> None:
        """Close the connection, if any."""


class AsyncSender(abc.ABC):
    """The async twin of :class:`Sender`. Get one with :func:`mailsync.sender_async`."""

    scheme: ClassVar[str] = ""
    saves_sent_copy: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        finish_sender_class(cls, asynchronous=True)

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.endpoint.url}>"

    async def __aenter__(self: T) -> T:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @abc.abstractmethod
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
        """Send one message; see :meth:`Sender.send`."""

    async def send_many(self, messages: Iterable[OutgoingMessage]) -> list[SendResult]:
        """Send several messages in order; see :meth:`Sender.send_many`."""
        return [await self.send(message) for message in messages]

    async def aclose(self) -> None:
        """Close the connection, if any."""
