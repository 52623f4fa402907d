"""What a delivery report says: :class:`DeliveryReport` and :class:`RecipientReport`, the
values :func:`mailsync.parse_report` returns and :attr:`mailsync.Message.delivery_report` holds.

Values only: the parser is :mod:`mailsync._reports`. Apart from them so that the message model
can name the type of ``delivery_report`` without importing the parser, which reads messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, TypeAlias

from mailsync._parts import HeaderMap

__all__ = ["DeliveryReport", "RecipientReport", "ReportKind"]

#: What kind of report a message is.
ReportKind: TypeAlias = Literal["dsn", "mdn", "bounce"]


@dataclass(frozen=True, slots=True)
class RecipientReport:
    """What a report says about one recipient.

    Attributes:
        recipient: The bare address the report is about: the Original-Recipient when given
            (the address as it was sent to), else the Final-Recipient.
        action: Lower case. For a DSN or bounce ``failed``, ``delayed``, ``delivered``,
            ``relayed`` or ``expanded``; for an MDN the disposition type (``displayed``,
            ``deleted``, ``dispatched``, ``processed``, or the obsolete ``denied``/``failed``).
        status: The RFC 3463 status code, e.g. ``"5.1.1"``; None when absent (always for MDNs).
        diagnostic: The remote server's reply or the bounce's explanation, without the
            ``smtp;`` type prefix.
        remote_mta: The host that answered, without the ``dns;`` prefix.
        final_recipient: The Final-Recipient address, bare.
        original_recipient: The Original-Recipient address, bare.
        last_attempt: When delivery was last attempted (aware datetime).
        will_retry_until: For ``delayed``: when the reporting server will give up.
    """

    recipient: str
    action: str
    status: str | None = None
    diagnostic: str | None = None
    remote_mta: str | None = None
    final_recipient: str | None = None
    original_recipient: str | None = None
    last_attempt: datetime | None = None
    will_retry_until: datetime | None = None


def _no_headers() -> HeaderMap:
    return HeaderMap(())


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """A parsed delivery report; see :func:`parse_report`.

    Attributes:
        kind: ``"dsn"`` (RFC 3464), ``"mdn"`` (RFC 8098) or ``"bounce"`` (a non-standard
            notice).
        original_message_id: The Message-ID of the message the report is about, without angle
            brackets: from the MDN's Original-Message-ID, the returned original's headers, a
            ``X-Original-Message-ID`` field, or the report's In-Reply-To, in that order.
        envid: The envelope id given when sending (RFC 3461 ENVID), echoed by DSNs.
        reporting_mta: The host that wrote the report (Reporting-MTA; for an MDN the
            Reporting-UA's name; for a bounce the domain of the daemon that sent it).
        recipients: One entry per recipient the report speaks of, in report order.
        original_headers: The headers of the returned original (attached, headers-only, or
            quoted in a text bounce), decoded, case-insensitive; empty when none came back.
        subject: The report's own Subject.
        arrival_date: When the reporting server received the original (DSN Arrival-Date).
    """

    kind: ReportKind
    original_message_id: str | None = None
    envid: str | None = None
    reporting_mta: str | None = None
    recipients: tuple[RecipientReport, ...] = ()
    original_headers: HeaderMap = field(default_factory=_no_headers, hash=False)
    subject: str | None = None
    arrival_date: datetime | None = None

    @property
    def failed(self) -> tuple[RecipientReport, ...]:
        """The recipients whose action is ``failed``."""
        return self._with_action("failed")

    @property
    def delayed(self) -> tuple[RecipientReport, ...]:
        """The recipients whose action is ``delayed``."""
        return self._with_action("delayed")

    @property
    def delivered(self) -> tuple[RecipientReport, ...]:
        """The recipients whose action is ``delivered`` (not ``relayed`` or ``expanded``)."""
        return self._with_action("delivered")

    def _with_action(self, action: str) -> tuple[RecipientReport, ...]:
        return tuple(r for r in self.recipients if r.action == action)
