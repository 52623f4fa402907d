"""``mailsync bounces``: the delivery reports in a folder, one line per recipient.

The everyday job of a list owner: which addresses bounced, how (``failed`` or ``delayed``),
with which status and :data:`~mailsync._reports.Reason`, and which message of ours it was
about. It reads the folder with ``messages()`` (nothing is marked seen, nothing deleted) and
asks each message for its ``delivery_report``; ordinary mail is skipped.

Kept apart from :mod:`mailsync._cli` so that the command is one function and one
registration there; this module never opens a connection itself.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Iterator
from typing import IO, Any

from mailsync._message import Message
from mailsync._reports import DeliveryReport, RecipientReport

__all__ = ["HELP", "add_arguments", "rows", "run"]

HELP = "List the delivery reports (bounces, DSNs, read receipts) in a folder, per recipient."

_COLUMNS = ("recipient", "action", "status", "reason", "original_message_id")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's own options, on the subparser :mod:`mailsync._cli` made for it."""
    parser.add_argument("-f", "--folder", default="INBOX", help="folder (default INBOX)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--limit", type=int, help="look at no more than this many messages")
    parser.add_argument(
        "--failed",
        action="store_true",
        help="only recipients whose delivery failed (hard and soft bounces)",
    )


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


def run(box: Any, args: argparse.Namespace, out: IO[str]) -> int:
    """Print the reports in ``args.folder`` of the open retriever ``box``; returns 0."""
    found = rows(box.messages(args.folder, limit=args.limit), failed_only=args.failed)
    for row in found:
        if args.json:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
        else:
            out.write("  ".join(_cell(row, column) for column in _COLUMNS) + "\n")
        out.flush()
    return 0


def _cell(row: dict[str, Any], column: str) -> str:
    value = row[column]
    if column == "original_message_id":
        return f"<{value}>" if value else "-"
    return str(value) if value is not None else "-"
