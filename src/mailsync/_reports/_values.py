"""The values :func:`~mailsync.parse_report` returns: :class:`DeliveryReport`,
:class:`RecipientReport`, and the :data:`Reason` taxonomy. Plain frozen data; no parsing."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, TypeAlias, get_args

from mailsync._parts import HeaderMap

__all__ = ["REASONS", "DeliveryReport", "Reason", "RecipientReport", "ReportKind"]

#: What kind of report a message is.
ReportKind: TypeAlias = Literal["dsn", "mdn", "bounce"]

#: Why a delivery failed or was delayed, in terms a program can act on; see
#: ``docs/delivery-reports.md`` for what each means and what to do about it.
Reason: TypeAlias = Literal[
    "user_unknown",
    "mailbox_full",
    "host_unknown",
    "blocked",
    "spam_detected",
    "policy",
    "message_too_large",
    "expired",
    "rate_limited",
    "auth_failure",
    "system_error",
    "network_error",
    "on_hold",
    "unknown",
]

#: Every :data:`Reason`, in the order the documentation lists them.
REASONS: tuple[Reason, ...] = get_args(Reason)


@dataclass(frozen=True, slots=True)
class RecipientReport:
    """What a report says about one recipient.

    Attributes:
        recipient: The bare address the report is about: the Original-Recipient when given
            (the address as it was sent to), else the Final-Recipient.
        action: Lower case. For a DSN or bounce ``failed``, ``delayed``, ``delivered``,
            ``relayed`` or ``expanded``; for an MDN the disposition type (``displayed``,
            ``deleted``, ``dispatched``, ``processed``, or the obsolete ``denied``/``failed``).
        status: The RFC 3463 status code, e.g. ``"5.1.1"``: the most specific one the report
            gives (a precise code in the diagnostic wins over a generic ``5.0.0`` field);
            None when absent (always for MDNs).
        diagnostic: The remote server's reply or the bounce's explanation, without the
            ``smtp;`` type prefix.
        remote_mta: The host that answered, without the ``dns;`` prefix.
        final_recipient: The Final-Recipient address, bare.
        original_recipient: The Original-Recipient address, bare.
        last_attempt: When delivery was last attempted (aware datetime).
        will_retry_until: For ``delayed``: when the reporting server will give up.
        reason: Why it failed or is delayed, one of :data:`Reason`, read from the status,
            the SMTP reply code and the diagnostic text (English, German, Japanese);
            ``unknown`` when none of them says, and for successes and MDNs.
        permanent: True when the address itself is bad (a failure for ``user_unknown`` or
            ``host_unknown``): stop sending to it. Other failures (a full mailbox, a block,
            a message too large) are about this message or this sender, not the address.
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
    reason: Reason = "unknown"
    permanent: bool = False


def no_headers() -> HeaderMap:
    """An empty header map: the default of :attr:`DeliveryReport.original_headers`."""
    return HeaderMap(())


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """A parsed delivery report; see :func:`~mailsync.parse_report`.

    Attributes:
        kind: ``"dsn"`` (RFC 3464), ``"mdn"`` (RFC 8098) or ``"bounce"`` (a non-standard
            notice, including a provider's JSON notification such as Amazon SES's).
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
    original_headers: HeaderMap = field(default_factory=no_headers, hash=False)
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

    @property
    def permanent_failures(self) -> tuple[RecipientReport, ...]:
        """The failed recipients whose address should no longer be sent to."""
        return tuple(r for r in self.recipients if r.permanent)

    def _with_action(self, action: str) -> tuple[RecipientReport, ...]:
        return tuple(r for r in self.recipients if r.action == action)

    def _repr_html_(self) -> str:
        from mailsync._notebook import report_html

        return report_html(self)
