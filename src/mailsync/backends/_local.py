"""What the local senders (Maildir, mbox) share: a message is stored, not transmitted.

Every recipient is accepted, since the one local mailbox is where they all land, and DSN
options are accepted and ignored, since local delivery is final at once.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable

from mailsync._base import OutgoingMessage, Sender, SendResult
from mailsync._envelope import prepare


class LocalSender(Sender):
    """A Sender that stores each message in a local mailbox; subclasses say how."""

    @abc.abstractmethod
    def _store(self, data: bytes) -> None:
        """Store one message's bytes (CRLF line endings, Bcc removed) atomically."""

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
        """Store one message; every recipient is accepted (DSN options are ignored)."""
        envelope = prepare(message, mail_from=mail_from, rcpt_to=rcpt_to)
        self._store(envelope.data)
        return SendResult(envelope.message_id, envelope.recipients, {}, envid)
