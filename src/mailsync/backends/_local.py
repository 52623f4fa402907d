"""What the local backends (Maildir, mbox) share.

Senders: a message is stored, not transmitted. Every recipient is accepted, since the one
local mailbox is where they all land, and DSN options are accepted and ignored, since local
delivery is final at once. Retrievers: a file is as untrusted as a server's reply, so a
message over ``max_message_size`` is never read whole (:func:`read_bounded`).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Iterator

from mailsync._base import OutgoingMessage, Sender, SendResult
from mailsync._envelope import prepare
from mailsync._errors import MessageTooLarge
from mailsync._message import Message, Readable, header_block, read_header_block
from mailsync._query import Q


def selected(
    read: Callable[[bool], Iterator[Message]],
    query: Q | None,
    headers_only: bool,
    limit: int | None,
) -> Iterator[Message]:
    """``messages()`` of a local folder: the messages ``read(headers_only)`` gives, lazily,
    that match ``query``, at most ``limit``; with ``headers_only``, only header blocks are
    read unless the query needs the bodies (then messages are cut to their header block)."""
    if limit is not None and limit <= 0:
        return
    needs_body = query is not None and query.needs_body
    count = 0
    for message in read(headers_only and not needs_body):
        if query is not None and not query.matches(message):
            continue
        if headers_only and needs_body:
            message = message.replace(raw=header_block(message.raw), headers_only=True)
        yield message
        count += 1
        if limit is not None and count >= limit:
            return  # before reading one more


def read_bounded(
    file: Readable, *, size: int, limit: int | None, headers_only: bool, where: str, id: str
) -> bytes:
    """A stored message's bytes (``file`` at its start, ``size`` bytes long), or only its
    header block.

    Raises:
        MessageTooLarge: The message (or, with ``headers_only``, its header block) is over
            ``limit`` bytes; it was not read whole.
    """
    raw: bytes | None
    if headers_only:
        raw = read_header_block(file, limit)
    else:
        raw = None if limit is not None and size > limit else file.read(size)
    if raw is None:
        raise MessageTooLarge(
            f"{where}: message {id} is {size} bytes, over max_message_size ({limit} bytes): "
            "not read",
            size=size,
            limit=limit,
            id=id,
        )
    return raw


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
