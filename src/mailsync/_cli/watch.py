"""``watch``: wait for new messages and print them as they arrive."""

from __future__ import annotations

import argparse

from mailsync._cli._common import Commands, Output, add_command, open_retriever, query_of
from mailsync._cli.read import emit, listing_options, matching

__all__ = ["register"]


def register(commands: Commands) -> None:
    """Add ``watch``."""
    watch = add_command(
        commands,
        "watch",
        summary="Wait for new messages and print them as they arrive (Ctrl-C to stop).",
        details=(
            "Built on sync: what arrived while it was not running comes first, and nothing is\n"
            "printed twice. IMAP IDLE where the server has it, else a poll every\n"
            "--poll-interval seconds; a dropped connection is reopened."
        ),
        examples=[
            ("mailsync watch work", "print new mail of the INBOX as it comes"),
            ("mailsync watch work --from alerts@ --json", "only alerts, as JSON lines"),
            ("mailsync watch work --to maildir:~/Mail", "keep a local copy as mail arrives"),
        ],
    )
    listing_options(watch)
    watch.add_argument("--state", metavar="PATH", help="the sync state file (default: user data)")
    watch.add_argument(
        "--poll-interval",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="between polls where the server has no push (default 60)",
    )
    watch.set_defaults(run=run_watch)


def run_watch(args: argparse.Namespace, out: Output) -> int:
    """``mailsync watch``."""
    query = query_of(args)
    with open_retriever(args) as box:
        emit(matching(box.watch(args.folder, poll_interval=args.poll_interval), query), args, out)
    return 0
