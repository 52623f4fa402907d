"""Django's ``EMAIL_BACKEND`` over any mailsync sender.

Settings::

    EMAIL_BACKEND = "mailsync.integrations.django.EmailBackend"
    MAILSYNC_SEND = "smtp://app@smtp.example.com:587"   # a URL, or an account name
    MAILSYNC_SEND_OPTIONS = {"password": os.environ["SMTP_PASSWORD"]}  # mailsync.sender() keywords
    MAILSYNC_DSN = {"notify": "failure,delay", "ret": "hdrs"}          # optional, for every message

What maps to what:

- The message is Django's own (``EmailMessage.message()``): body, alternatives, attachments,
  ``extra_headers``, Reply-To, Cc, the Date and Message-ID Django adds. Its Bcc addresses are
  put back as a Bcc header, which every mailsync sender removes before delivery (the Gmail
  and Graph APIs remove it themselves), so blind recipients get the mail and see no Bcc.
- The envelope is Django's: ``from_email`` and ``recipients()``. It is what the headers say
  unless ``extra_headers`` overrides From, To or Cc; then it is passed explicitly, which the
  Gmail and Graph APIs refuse (``mailsync.Unsupported``: they send to whom the message names).
- Messages with nothing particular go out together through ``send_many`` (pipelined over
  SMTP, one connection); one that asks for delivery reports, or whose envelope is explicit,
  goes through ``send``.
- Delivery reports (DSN, RFC 3461): ``MAILSYNC_DSN`` for every message, or per message the
  headers ``X-Mailsync-Notify`` (``never`` or some of ``success,failure,delay``),
  ``X-Mailsync-Ret`` (``full``/``hdrs``) and ``X-Mailsync-Envid``, removed before sending.
  Any other ``X-Mailsync-`` header is refused as a likely typo.
- ``fail_silently=True`` swallows mailsync's errors (logged at WARNING on ``mailsync.django``)
  and counts only what was sent.
- ``message_sent`` (:mod:`mailsync.integrations.django.signals`) is sent for each message sent,
  with its :class:`~mailsync.SendResult`.

This module does no mail protocol: it converts and hands over to a mailsync sender.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import getaddresses, parseaddr
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend

import mailsync
from mailsync._config import _safe
from mailsync._errors import ConfigError, MailsyncError, RecipientsRefused

__all__ = ["EmailBackend"]

log = logging.getLogger("mailsync.django")

#: The per-message DSN headers, as ``send()`` keywords.
DSN_HEADERS = {"x-mailsync-notify": "notify", "x-mailsync-ret": "ret", "x-mailsync-envid": "envid"}
#: Header fields that make the envelope differ from what the headers say.
_ENVELOPE_HEADERS = frozenset({"from", "sender", "to", "cc", "bcc"})


def is_url(target: str) -> bool:
    """Whether ``MAILSYNC_SEND`` names a URL (``smtp://``, ``maildir:PATH``) or an account."""
    return ":" in target


@dataclass(frozen=True)
class Outgoing:
    """One Django message as mailsync sends it.

    Attributes:
        original: Django's message.
        data: The message's bytes (Bcc included, DSN headers removed).
        dsn: ``notify``/``ret``/``envid`` keywords for ``send()``.
        mail_from: The envelope sender, when it must be given explicitly.
        rcpt_to: The envelope recipients, when they must be given explicitly.
    """

    original: EmailMessage
    data: bytes
    dsn: Mapping[str, Any]
    mail_from: str | None = None
    rcpt_to: tuple[str, ...] | None = None

    @property
    def batchable(self) -> bool:
        """Whether it can go out through ``send_many`` with others."""
        return not self.dsn and self.mail_from is None and self.rcpt_to is None


def _addresses(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(address for _, address in getaddresses(list(values)) if address)


def convert(message: EmailMessage, defaults: Mapping[str, Any] | None = None) -> Outgoing:
    """Django's ``message`` as mailsync sends it (see the module docstring).

    Args:
        message: The message.
        defaults: DSN keywords for every message (``MAILSYNC_DSN``); the message's own
            ``X-Mailsync-*`` headers win.

    Raises:
        ConfigError: An ``X-Mailsync-`` header mailsync does not know.
    """
    dsn = dict(defaults or {})
    names = {name.lower(): name for name in message.extra_headers}
    for lower, name in names.items():
        if not lower.startswith("x-mailsync-"):
            continue
        if lower not in DSN_HEADERS:
            known = ", ".join(sorted(DSN_HEADERS))
            raise ConfigError(f"unknown header {name!r}: the X-Mailsync- headers are {known}")
        dsn[DSN_HEADERS[lower]] = str(message.extra_headers[name]).strip()
    mime = message.message()
    for header in DSN_HEADERS:
        del mime[header]
    if message.bcc:
        # Django leaves Bcc out of the message; the sender takes it as recipients and removes it.
        mime["Bcc"] = ", ".join(str(address) for address in message.bcc)
    data: bytes = mime.as_bytes()
    explicit = not _ENVELOPE_HEADERS.isdisjoint(names)
    if not explicit:
        return Outgoing(message, data, dsn)
    return Outgoing(
        message,
        data,
        dsn,
        mail_from=parseaddr(str(message.from_email))[1] or None,
        rcpt_to=_addresses(str(r) for r in message.recipients()),
    )


def _dsn_setting(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not set(value) <= {"notify", "ret"}:
        raise ImproperlyConfigured('MAILSYNC_DSN takes a dict with "notify" and/or "ret"')
    return {key: item for key, item in value.items() if item is not None}


class EmailBackend(BaseEmailBackend):
    """A Django email backend that sends through a mailsync sender.

    Args:
        fail_silently: Swallow mailsync's errors (logged) instead of raising them.
        send: A sender URL or account name (default: the ``MAILSYNC_SEND`` setting).
        options: Keyword arguments for :func:`mailsync.sender` (default:
            ``MAILSYNC_SEND_OPTIONS``; these win over it), e.g. ``password``, ``tls``,
            ``verify``, ``timeout`` (else Django's ``EMAIL_TIMEOUT``).
        dsn: DSN ``notify``/``ret`` for every message (default: ``MAILSYNC_DSN``).
        **kwargs: Passed to Django's base backend.

    Attributes:
        sender: The open mailsync sender, or None.
    """

    def __init__(
        self,
        fail_silently: bool = False,
        *,
        send: str | None = None,
        options: Mapping[str, Any] | None = None,
        dsn: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(fail_silently=fail_silently, **kwargs)
        target = send or getattr(settings, "MAILSYNC_SEND", None)
        if not target or not isinstance(target, str):
            raise ImproperlyConfigured(
                "set MAILSYNC_SEND to a sender URL (smtp://user@host:587, maildir:PATH...) or "
                "the name of a mailsync account"
            )
        self.target = target
        self.options = {**getattr(settings, "MAILSYNC_SEND_OPTIONS", {}), **(options or {})}
        self.dsn = _dsn_setting(dsn if dsn is not None else getattr(settings, "MAILSYNC_DSN", None))
        self.sender: mailsync.Sender | None = None
        self._lock = threading.RLock()

    def _open_sender(self) -> mailsync.Sender:
        options = dict(self.options)
        timeout = getattr(settings, "EMAIL_TIMEOUT", None)
        if timeout is not None:
            options.setdefault("timeout", timeout)
        if is_url(self.target):
            return mailsync.sender(self.target, **options)
        config = getattr(settings, "MAILSYNC_CONFIG", None)
        return mailsync.account(self.target, config=config).sender(**options)

    def open(self) -> bool:
        """Make the sender (it connects on the first send); True when this call made it."""
        with self._lock:
            if self.sender is not None:
                return False
            try:
                self.sender = self._open_sender()
            except MailsyncError as exc:
                if not self.fail_silently:
                    raise
                self._report(exc)
                return False
            return True

    def close(self) -> None:
        """Close the sender (and its connection)."""
        with self._lock:
            sender, self.sender = self.sender, None
            if sender is None:
                return
            try:
                sender.close()
            except MailsyncError as exc:
                if not self.fail_silently:
                    raise
                self._report(exc)

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        """Send Django messages; return how many were sent.

        Raises:
            MailsyncError: Sending failed and ``fail_silently`` is off (``RecipientsRefused``
                when every recipient of a message was refused; the others were sent).
        """
        if not email_messages:
            return 0
        with self._lock:
            opened = self.open()
            if self.sender is None:
                return 0
            try:
                return self._send_all(self.sender, email_messages)
            finally:
                if opened:
                    self.close()

    def _send_all(self, sender: mailsync.Sender, messages: Sequence[EmailMessage]) -> int:
        sent = 0
        batch: list[Outgoing] = []
        refused: list[tuple[Outgoing, mailsync.SendResult]] = []
        try:
            for message in messages:
                if not message.recipients():
                    continue
                outgoing = convert(message, self.dsn)
                if outgoing.batchable:
                    batch.append(outgoing)
                    continue
                sent += self._flush(sender, batch, refused)
                batch = []
                sent += self._send_one(sender, outgoing)
            sent += self._flush(sender, batch, refused)
            if refused:
                outgoing, result = refused[0]
                raise RecipientsRefused(
                    f"every recipient of {len(refused)} message(s) was refused "
                    f"(first: {outgoing.original.subject!r})",
                    refused=result.refused,
                )
        except MailsyncError as exc:
            if not self.fail_silently:
                raise
            self._report(exc)
        return sent

    def _send_one(self, sender: mailsync.Sender, outgoing: Outgoing) -> int:
        result = sender.send(
            outgoing.data, mail_from=outgoing.mail_from, rcpt_to=outgoing.rcpt_to, **outgoing.dsn
        )
        self._sent(outgoing, result)
        return 1

    def _flush(
        self,
        sender: mailsync.Sender,
        batch: list[Outgoing],
        refused: list[tuple[Outgoing, mailsync.SendResult]],
    ) -> int:
        if not batch:
            return 0
        if len(batch) == 1:
            return self._send_one(sender, batch[0])
        results = sender.send_many([outgoing.data for outgoing in batch])
        sent = 0
        for outgoing, result in zip(batch, results, strict=True):
            if not result.accepted:
                refused.append((outgoing, result))
                continue
            self._sent(outgoing, result)
            sent += 1
        return sent

    def _sent(self, outgoing: Outgoing, result: mailsync.SendResult) -> None:
        from mailsync.integrations.django.signals import message_sent

        message_sent.send(sender=type(self), message=outgoing.original, result=result)

    def _report(self, exc: MailsyncError) -> None:
        # A URL may carry a password: only its safe form is logged.
        where = _safe(self.target) if is_url(self.target) else f"account {self.target}"
        log.warning(
            "mailsync email backend (%s): %s: %s",
            where,
            type(exc).__name__,
            exc,
            extra={"operation": "send", "error_type": type(exc).__name__},
        )
