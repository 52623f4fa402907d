"""Delivery reports: what a DSN, an MDN or a bounce says about a message sent earlier.

This package owns :func:`parse_report` and the values it returns, :class:`DeliveryReport` and
:class:`RecipientReport` with its :data:`Reason`. It understands:

- RFC 3464 delivery status notifications (``multipart/report; report-type=delivery-status``),
  RFC 6533's ``message/global-delivery-status``, and the usual damage (:mod:`._standard`);
- RFC 8098 message disposition notifications (:mod:`._standard`);
- the common non-standard bounces in English, German and Japanese (:mod:`._bounce`), and
  Amazon SES notifications mailed as JSON (:mod:`._json`);
- why each recipient failed, as a small taxonomy a program can act on (:mod:`._taxonomy`).

Reports are read from the :class:`~mailsync.Message` model, not from the stdlib parser: its
decoded headers and its MIME tree (:mod:`._tree`), which read hostile mail in milliseconds
where ``email.policy.default`` can take minutes. The report fields and the text bounces are
read by hand, because no maintained library parses DSNs, MDNs and free-text bounces into typed
values.

The package is pure: no I/O, no state, and :func:`parse_report` never raises on broken input.
It depends on the message model, never the other way round: :mod:`mailsync._message` imports
it only inside ``Message.delivery_report``.
"""

from __future__ import annotations

from mailsync._reports._parse import parse_report
from mailsync._reports._taxonomy import refusal_outcome
from mailsync._reports._values import (
    REASONS,
    DeliveryReport,
    Reason,
    RecipientReport,
    ReportKind,
)

__all__ = [
    "REASONS",
    "DeliveryReport",
    "Reason",
    "RecipientReport",
    "ReportKind",
    "parse_report",
    "refusal_outcome",
]
