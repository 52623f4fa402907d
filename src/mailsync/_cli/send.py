"""``send``: compose and send a message, or send a raw one read from stdin."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from mailsync._cli._common import EXIT_PARTIAL, Commands, Output, add_command, open_sender
from mailsync._compose import compose
from mailsync._errors import ConfigError

__all__ = ["register"]


def register(commands: Commands) -> None:
    """Add ``send``."""
    send = add_command(
        commands,
        "send",
        summary="Send a message composed from options, or a raw message read from stdin.",
        details=("Exit status 3 when the server refused some recipients (the others got it)."),
        examples=[
            (
                "mailsync send work --from me@example.com --to bob@example.com "
                "--subject Hi --text 'See you'",
                "compose and send",
            ),
            (
                "mailsync send work --from me@example.com --to a@example.com --to b@example.com "
                "--subject Report --text - --attach report.pdf < body.txt",
                "two recipients, body from stdin, an attachment",
            ),
            ("mailsync send work < message.eml", "a raw message, recipients from its headers"),
            (
                "mailsync send smtp://relay.internal:25 --tls none --to ops@example.com "
                "< alert.eml",
                "through a relay, to these recipients only",
            ),
        ],
    )
    send.add_argument("--from", dest="from_", metavar="ADDRESS", help="the author")
    send.add_argument(
        "--to",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="a recipient (repeatable; with a raw message: the only ones it goes to)",
    )
    send.add_argument(
        "--cc", action="append", default=[], metavar="ADDRESS", help="a copy (repeatable)"
    )
    send.add_argument(
        "--bcc",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="a blind copy, not shown to the others (repeatable)",
    )
    send.add_argument("--subject", default=None, help="the subject")
    send.add_argument("--text", help="the plain-text body ('-' reads it from stdin)")
    send.add_argument("--html", help="an html body (an alternative to the text)")
    send.add_argument(
        "--attach", action="append", default=[], metavar="PATH", help="a file (repeatable)"
    )
    saving = send.add_mutually_exclusive_group()
    saving.add_argument(
        "--save-to",
        metavar="FOLDER",
        help="file a copy in this folder of the account's mailbox (e.g. Sent)",
    )
    saving.add_argument(
        "--no-save", action="store_true", help="do not file a copy, whatever the account says"
    )
    send.add_argument("--json", action="store_true", help="print the result as JSON")
    send.set_defaults(run=run_send)


def _message(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The message to send and the envelope options."""
    composing = any((args.subject is not None, args.text, args.html, args.attach))
    if composing:
        if not args.from_ or not (args.to or args.cc or args.bcc):
            raise ConfigError("send needs --from and at least one --to, --cc or --bcc")
        text = sys.stdin.read() if args.text == "-" else args.text
        message = compose(
            from_=args.from_,
            to=args.to,
            cc=args.cc,
            bcc=args.bcc,
            subject=args.subject or "",
            text=text,
            html=args.html,
            attachments=args.attach,
        )
        return message, {}
    if sys.stdin.isatty():
        raise ConfigError("give --subject/--text/--html, or pipe a raw message into send")
    raw = sys.stdin.buffer.read()
    if not raw.strip():
        raise ConfigError("the message read from stdin is empty")
    return raw, ({"rcpt_to": args.to} if args.to else {})


def run_send(args: argparse.Namespace, out: Output) -> int:
    """``mailsync send``."""
    message, extra = _message(args)
    choice = (
        {"save_to": None} if args.no_save else {"save_to": args.save_to} if args.save_to else {}
    )
    with open_sender(args, **choice) as outbox:
        result = outbox.send(message, **extra)
        save_error = getattr(outbox, "save_error", None)
    if args.json:
        out.line(
            json.dumps(
                {
                    "message_id": result.message_id,
                    "accepted": list(result.accepted),
                    "refused": {k: list(v) for k, v in result.refused.items()},
                    "saved_to": result.saved_to,
                }
            )
        )
    else:
        out.line(f"sent <{result.message_id}> to {', '.join(result.accepted)}")
        if result.saved_to:
            out.line(f"saved a copy in {result.saved_to}")
    for address, (code, text) in result.refused.items():
        out.note(f"mailsync: refused {address}: {code} {text}")
    if save_error is not None:
        out.note(f"mailsync: warning: sent, but no copy was saved: {save_error}")
    return EXIT_PARTIAL if result.refused else 0
