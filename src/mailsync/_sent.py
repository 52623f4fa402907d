"""Keeping a copy of what was sent in a Sent folder, where the transport does not.

SMTP only transmits: a mail program that wants "what I sent" in the mailbox appends a copy to
the Sent folder over IMAP after each send. :class:`SavingSender` (and its async twin) wrap any
sender and do that with any retriever that can ``append``. Transports that file the copy
themselves (the Gmail API, Microsoft Graph) say so with ``Sender.saves_sent_copy`` and are not
wrapped: the copy would be there twice.

The copy is the message as composed, Bcc included (so you can see later who was copied), with
the Message-ID the sender used and ``\\Seen``. A failure to file it does not undo or fail the
send: the result says where the copy went (``SendResult.saved_to``), None when it could not be
filed, and the reason is logged and kept on the sender (``save_error``).

Folders: a name (``"Sent"``), or a special-use attribute (``"\\Sent"``, the default), looked
up among the mailbox's folders once.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from typing import Any, ClassVar, TypeAlias

from mailsync._base import (
    AsyncRetriever,
    AsyncSender,
    OutgoingMessage,
    Retriever,
    Sender,
    SendResult,
)
from mailsync._errors import ConfigError, FolderNotFound, MailsyncError
from mailsync._message import Message, as_bytes

__all__ = [
    "AsyncSaveTo",
    "AsyncSavingSender",
    "SaveTo",
    "SavingSender",
    "saving_sender",
    "saving_sender_async",
    "sent_copy",
]

log = logging.getLogger("mailsync")

#: What ``save_to=`` takes: a retriever (its ``\\Sent`` folder) or ``(retriever, folder)``.
SaveTo: TypeAlias = "Retriever | tuple[Retriever, str]"
AsyncSaveTo: TypeAlias = "AsyncRetriever | tuple[AsyncRetriever, str]"

SENT = "\\Sent"


def _split(save_to: object, kind: type) -> tuple[Any, str]:
    mailbox, folder = save_to if isinstance(save_to, tuple) else (save_to, SENT)
    if not isinstance(mailbox, kind) or not isinstance(folder, str) or not folder:
        raise ConfigError(
            f"save_to takes a {kind.__name__} or ({kind.__name__}, folder), such as "
            "(mailsync.connect('imaps://you@imap.example.com'), 'Sent'), not "
            f"{type(save_to).__name__}"
        )
    return mailbox, folder


def saving_sender(inner: Sender, save_to: SaveTo, *, own_mailbox: bool = False) -> Sender:
    """``inner``, filing a copy of each message it sends as ``save_to`` says.

    Raises:
        ConfigError: ``save_to`` is not a retriever or ``(retriever, folder)``.
    """
    if inner.saves_sent_copy:
        return inner
    mailbox, folder = _split(save_to, Retriever)
    return SavingSender(inner, mailbox, folder, own_mailbox=own_mailbox)


def saving_sender_async(
    inner: AsyncSender, save_to: AsyncSaveTo, *, own_mailbox: bool = False
) -> AsyncSender:
    """The async twin of :func:`saving_sender`."""
    if inner.saves_sent_copy:
        return inner
    mailbox, folder = _split(save_to, AsyncRetriever)
    return AsyncSavingSender(inner, mailbox, folder, own_mailbox=own_mailbox)


def sent_copy(message: OutgoingMessage, result: SendResult) -> bytes:
    """The bytes to file: the message as given, with the Message-ID (and a Date) it was sent
    with when it had none."""
    raw = as_bytes(message)
    head = Message(raw, id="")
    added = b""
    if head.message_id is None:
        added += f"Message-ID: <{result.message_id}>\r\n".encode()
    if "Date" not in head.headers:
        import email.utils

        added += f"Date: {email.utils.format_datetime(email.utils.localtime())}\r\n".encode()
    return added + raw


def _folder_named(folder: str, folders: Iterable[Any]) -> str:
    if not folder.startswith("\\"):
        return folder
    for candidate in folders:
        if (candidate.special_use or "").lower() == folder.lower():
            return str(candidate.name)
    raise FolderNotFound(
        f"the mailbox has no folder marked {folder}: name the folder to save sent mail in "
        '(save_to = "Sent")'
    )


class _Filing:
    """Where copies go and how the last one went: what both sender twins keep."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.resolved: str | None = None
        self.error: MailsyncError | None = None

    def resolve(self, folders: Iterable[Any]) -> str:
        self.resolved = _folder_named(self.folder, folders)
        return self.resolved

    def filed(self, result: SendResult) -> SendResult:
        self.error = None
        return dataclasses.replace(result, saved_to=self.resolved)

    def failed(self, exc: MailsyncError, result: SendResult) -> SendResult:
        self.error = exc
        log.warning("sent <%s>, but could not save a copy: %s", result.message_id, exc)
        return result


class SavingSender(Sender):
    """A :class:`~mailsync.Sender` that files a copy of each message it sends.

    Args:
        inner: The sender that transmits.
        mailbox: The retriever to append the copies with.
        folder: A folder name, or a special-use attribute such as ``"\\Sent"``.
        own_mailbox: Close ``mailbox`` with this sender.

    Attributes:
        save_error: Why the last copy could not be filed, or None.
    """

    _delegating: ClassVar[bool] = True  # the inner sender is the one observed

    def __init__(
        self, inner: Sender, mailbox: Retriever, folder: str, *, own_mailbox: bool = False
    ) -> None:
        super().__init__(inner.endpoint)
        self.inner = inner
        self.mailbox = mailbox
        self._filing = _Filing(folder)
        self._own_mailbox = own_mailbox
        self.scheme = inner.scheme  # type: ignore[misc]

    @property
    def save_error(self) -> MailsyncError | None:
        """Why the last copy could not be filed, or None."""
        return self._filing.error

    def __getattr__(self, name: str) -> Any:
        # What the inner sender offers beyond the Sender API (etrn, connections_opened...).
        return getattr(self.inner, name)

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
        """Send with the inner sender, then file a copy; see :meth:`Sender.send`."""
        result = self.inner.send(
            message, notify=notify, ret=ret, envid=envid, mail_from=mail_from, rcpt_to=rcpt_to
        )
        return self._save(message, result)

    def send_many(self, messages: Iterable[OutgoingMessage]) -> list[SendResult]:
        """Send with the inner sender, then file a copy of each; see :meth:`Sender.send_many`."""
        batch = list(messages)
        results = self.inner.send_many(batch)
        return [self._save(m, r) for m, r in zip(batch, results, strict=True)]

    def _save(self, message: OutgoingMessage, result: SendResult) -> SendResult:
        if not result.accepted:
            return result
        filing = self._filing
        try:
            folder = filing.resolved or filing.resolve(self.mailbox.folders())
            self.mailbox.append(folder, sent_copy(message, result), flags=["\\Seen"])
        except MailsyncError as exc:
            return filing.failed(exc, result)
        return filing.filed(result)

    def close(self) -> None:
        """Close the inner sender (and the mailbox, when this sender opened it)."""
        try:
            self.inner.close()
        finally:
            if self._own_mailbox:
                self.mailbox.close()


class AsyncSavingSender(AsyncSender):
    """The async twin of :class:`SavingSender`."""

    _delegating: ClassVar[bool] = True

    def __init__(
        self,
        inner: AsyncSender,
        mailbox: AsyncRetriever,
        folder: str,
        *,
        own_mailbox: bool = False,
    ) -> None:
        super().__init__(inner.endpoint)
        self.inner = inner
        self.mailbox = mailbox
        self._filing = _Filing(folder)
        self._own_mailbox = own_mailbox
        self.scheme = inner.scheme  # type: ignore[misc]

    @property
    def save_error(self) -> MailsyncError | None:
        """Why the last copy could not be filed, or None."""
        return self._filing.error

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

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
        """Send with the inner sender, then file a copy; see :meth:`Sender.send`."""
        result = await self.inner.send(
            message, notify=notify, ret=ret, envid=envid, mail_from=mail_from, rcpt_to=rcpt_to
        )
        return await self._save(message, result)

    async def send_many(self, messages: Iterable[OutgoingMessage]) -> list[SendResult]:
        """Send with the inner sender, then file a copy of each."""
        batch = list(messages)
        results = await self.inner.send_many(batch)
        return [await self._save(m, r) for m, r in zip(batch, results, strict=True)]

    async def _save(self, message: OutgoingMessage, result: SendResult) -> SendResult:
        if not result.accepted:
            return result
        filing = self._filing
        try:
            folder = filing.resolved or filing.resolve(await self.mailbox.folders())
            await self.mailbox.append(folder, sent_copy(message, result), ["\\Seen"])
        except MailsyncError as exc:
            return filing.failed(exc, result)
        return filing.filed(result)

    async def aclose(self) -> None:
        """Close the inner sender (and the mailbox, when this sender opened it)."""
        try:
            await self.inner.aclose()
        finally:
            if self._own_mailbox:
                await self.mailbox.aclose()
