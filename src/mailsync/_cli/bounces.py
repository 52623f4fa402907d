"""``mailsync bounces``: the delivery reports in a folder, one line per recipient.

The everyday job of a list owner: which addresses bounced, how (``failed`` or ``delayed``),
with which status and :data:`~mailsync._reports.Reason`, and which message of ours it was
about. It reads the folder with ``messages()`` (nothing is marked seen, nothing deleted) and
asks each message for its ``delivery_report``; ordinary mail is skipped.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Iterator
from typing import Any

from mailsync._cli._common import Commands, Output, add_command, open_retriever
from mailsync._message import Message
from mailsync._reports import DeliveryReport, RecipientReport

__all__ = ["register", "rows"]

_COLUMNS = ("recipient", "action", "status", "reason", "original_message_id")


def register(commands: Commands) -> None:
    """Add ``bounces``."""
    parser = add_command(
        commands,
        "bounces",
        summary="List the delivery reports (bounces, DSNs, read receipts) in a folder, per "
        "recipient.",
        examples=[
            ("mailsync bounces work", "recipient, action, status, reason, original Message-ID"),
            ("mailsync bounces work -f Bounces --failed", "only failed deliveries"),
            ("mailsync bounces work --json | jq .recipient", "JSON lines"),
        ],
    )
    parser.add_argument("-f", "--folder", default="INBOX", help="the folder (default INBOX)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--limit", type=int, metavar="N", help="look at no more than N messages")
    parser.add_argument(
        "--failed",
        action="store_true",
        help="only recipients whose delivery failed (hard and soft bounces)",
    )
    parser.set_defaults(run=run_bounces)


def run_bounces(args: argparse.Namespace, out: Output) -> int:
    """``mailsync bounces``."""
    with open_retriever(args) as box:
        found = rows(box.messages(args.folder, limit=args.limit), failed_only=args.failed)
        for row in found:
            if args.json:
                out.line(json.dumps(row, ensure_ascii=False))
            else:
                out.line("  ".join(_cell(row, column) for column in _COLUMNS))
    return 0


def rows(messages: Iterable[Message], *, failed_only: bool = False) -> Iterator[dict[str, Any]]:
    """One dict per recipient of every report among ``messages``, in folder order."""
    for message in messages:
        report = message.delivery_report
        if report is None:
            continue
        for recipient in report.recipients:
            if failed_only and recipient.action != "failed":
                continue
            yield _row(message, report, recipient)


def _row(message: Message, report: DeliveryReport, recipient: RecipientReport) -> dict[str, Any]:
    return {
        "recipient": recipient.recipient,
        "action": recipient.action,
        "status": recipient.status,
        "reason": recipient.reason,
        "permanent": recipient.permanent,
        "original_message_id": report.original_message_id,
        "kind": report.kind,
        "diagnostic": recipient.diagnostic,
        "reporting_mta": report.reporting_mta,
        "date": message.date.isoformat() if message.date else None,
        "report_id": message.id,
    }


def _cell(row: dict[str, Any], column: str) -> str:
    value = row[column]
    if column == "original_message_id":
        return f"<{value}>" if value else "-"
    return str(value) if value is not None else "-"
