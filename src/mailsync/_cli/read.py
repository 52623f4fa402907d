"""``fetch``, ``sync`` and ``show``: read messages, list them, store them, print one."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from mailsync._cli._common import (
    Commands,
    Output,
    add_command,
    add_filters,
    message_line,
    open_retriever,
    query_of,
)
from mailsync._errors import ConfigError
from mailsync._facade import connect
from mailsync._message import Message, safe_filename
from mailsync._query import Q

__all__ = ["emit", "listing_options", "matching", "register"]


def register(commands: Commands) -> None:
    """Add ``fetch``, ``sync`` and ``show``."""
    fetch = add_command(
        commands,
        "fetch",
        summary="List (and optionally store) the messages of a folder, oldest first.",
        examples=[
            ("mailsync fetch", "every message of the default account's INBOX"),
            ("mailsync fetch work --unseen --since 7d", "unread mail of the last week"),
            ("mailsync fetch work -q 'from:bob OR subject:invoice'", "a query"),
            ("mailsync fetch work -f Archive --json | jq .subject", "JSON lines, another folder"),
            ("mailsync fetch pop3s://me@pop.example.com --to maildir:~/Backup", "a local copy"),
        ],
    )
    listing_options(fetch)
    _progress_option(fetch)
    fetch.add_argument("--limit", type=int, metavar="N", help="at most N messages")
    fetch.add_argument("--headers-only", action="store_true", help="fetch the headers only")
    fetch.set_defaults(run=run_fetch)

    sync = add_command(
        commands,
        "sync",
        summary="Only the messages no earlier sync of this account and folder printed.",
        details=(
            "The cursor lives in the state file, keyed by the mailbox (user, host, protocol),\n"
            "so imaps:// and imap:// of one mailbox share it. With filters, the messages that\n"
            "do not match are passed over for good: they count as synced."
        ),
        examples=[
            ("mailsync sync work", "what arrived since the last run"),
            ("mailsync sync work --to maildir:~/Backup", "from cron: copy each message once"),
            ("mailsync sync work --from alerts@ --json", "only the alerts, as JSON lines"),
        ],
    )
    listing_options(sync)
    _progress_option(sync)
    sync.add_argument("--state", metavar="PATH", help="the sync state file (default: user data)")
    sync.set_defaults(run=run_sync)

    show = add_command(
        commands,
        "show",
        summary="Print one message, or save it and its attachments.",
        examples=[
            ("mailsync show 'INBOX;1712;42'", "headers and text of one message"),
            ("mailsync show work 'INBOX;1712;42' --raw > m.eml", "the message as it is"),
            ("mailsync show work 'INBOX;1712;42' --attachments ~/Downloads", "save attachments"),
        ],
    )
    show.add_argument("id", metavar="ID", help="the message id (the last column of fetch)")
    what = show.add_mutually_exclusive_group()
    what.add_argument("--raw", action="store_true", help="print the message bytes as they are")
    what.add_argument("--html", action="store_true", help="print the html body")
    what.add_argument("--json", action="store_true", help="print it as one JSON object")
    show.add_argument("--save", metavar="PATH", help="write the message (.eml) to a file or dir")
    show.add_argument("--attachments", metavar="DIR", help="save its attachments into DIR")
    show.set_defaults(run=run_show)


def listing_options(parser: argparse.ArgumentParser) -> None:
    """What the commands that list messages take: folder, output shape, --to, filters."""
    parser.add_argument("-f", "--folder", default="INBOX", help="the folder (default INBOX)")
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true", help="one JSON object per line")
    shape.add_argument("--ids", action="store_true", help="only the ids, one per line")
    parser.add_argument(
        "--to",
        dest="store",
        metavar="maildir:PATH|mbox:PATH",
        help="also store each message in that local mailbox",
    )
    add_filters(parser)


def _progress_option(parser: argparse.ArgumentParser) -> None:
    # fetch and sync only: watch prints each message as it comes, and never ends.
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="a message counter on stderr when it is a terminal and stdout is not (default: on)",
    )


def run_fetch(args: argparse.Namespace, out: Output) -> int:
    """``mailsync fetch``."""
    query = query_of(args)
    if args.limit is not None and args.limit < 0:
        raise ConfigError("--limit takes a number of messages, 0 or more")
    if args.headers_only and args.store:
        raise ConfigError(
            "--headers-only cannot be combined with --to: the copies would lack bodies"
        )
    with open_retriever(args) as box:
        emit(
            box.messages(
                args.folder, query=query, limit=args.limit, headers_only=args.headers_only
            ),
            args,
            out,
        )
    return 0


def run_sync(args: argparse.Namespace, out: Output) -> int:
    """``mailsync sync``."""
    query = query_of(args)
    with open_retriever(args) as box:
        emit(matching(box.sync(args.folder), query), args, out)
    return 0


def matching(messages: Iterable[Message], query: Q | None) -> Iterator[Message]:
    """The messages ``query`` matches (all with None): sync() and watch() take no query, so
    what does not match is synced past, not printed."""
    for message in messages:
        if query is None or query.matches(message):
            yield message


def emit(messages: Iterable[Message], args: argparse.Namespace, out: Output) -> int:
    """Print (and store, with ``--to``) each message; returns how many."""
    # --to keeps a copy, so it appends: sending would add a Date and a Message-ID where they
    # are missing and drop Bcc, and the copy would no longer be the server's message.
    store = connect(args.store, state=":memory:") if getattr(args, "store", None) else None
    if not getattr(args, "progress", True):
        out.hide_progress()
    count = 0
    try:
        for message in messages:
            if store is not None:
                # The flags too (\Seen, \Flagged...): a backup that forgot what was read is
                # not a copy. Flags the store cannot hold are dropped by it.
                store.append("INBOX", message, message.flags)
            if getattr(args, "json", False):
                out.line(json.dumps(message.as_dict(), ensure_ascii=False))
            elif getattr(args, "ids", False):
                out.line(message.id)
            else:
                out.line(message_line(message))
            count += 1
            out.step()
    finally:
        out.done()
        if store is not None:
            store.close()
    return count


def run_show(args: argparse.Namespace, out: Output) -> int:
    """``mailsync show``."""
    with open_retriever(args) as box:
        message = box.get(args.id)
    if args.save:
        out.note(f"saved {_save_message(message, Path(args.save))}")
    if args.attachments:
        for attachment in message.attachments:
            out.note(f"saved {attachment.save(args.attachments)}")
    if args.save or args.attachments:
        return 0
    if args.raw:
        out.binary(message.raw)
    elif args.json:
        out.line(json.dumps(_as_json(message), ensure_ascii=False))
    elif args.html:
        out.line(message.html.rstrip("\n"))
    else:
        for line in _readable(message):
            out.line(line)
    return 0


def _save_message(message: Message, path: Path) -> Path:
    from mailsync._errors import StorageError

    path = path.expanduser()
    if path.is_dir():
        stem = safe_filename((message.subject or "message")[:80], "message/rfc822")
        path = path / f"{stem}.eml"
    try:
        with open(path, "xb") as handle:  # never overwrite: that may be someone's mail
            handle.write(message.raw)
    except OSError as exc:
        raise StorageError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from exc
    return path


def _readable(message: Message) -> list[str]:
    lines = [f"Date: {message.date.isoformat() if message.date else '(none)'}"]
    for label, value in (
        ("From", str(message.from_) if message.from_ else ""),
        ("To", ", ".join(str(a) for a in message.to)),
        ("Cc", ", ".join(str(a) for a in message.cc)),
        ("Subject", message.subject),
        ("Message-ID", f"<{message.message_id}>" if message.message_id else ""),
        ("Flags", " ".join(sorted(message.flags))),
    ):
        if value:
            lines.append(f"{label}: {value}")
    for attachment in message.attachments:
        name = attachment.filename or "(no name)"
        lines.append(f"Attachment: {name} ({attachment.content_type}, {attachment.size} bytes)")
    body = message.text
    if not body and message.html:
        from mailsync._reply import html_to_text

        body = html_to_text(message.html)
    return [*lines, "", body.rstrip("\n")]


def _as_json(message: Message) -> dict[str, object]:
    found = message.as_dict()
    found.update(
        cc=[str(a) for a in message.cc],
        message_id=message.message_id,
        text=message.text,
        html=message.html,
        attachments=[
            {
                "filename": a.filename,
                "content_type": a.content_type,
                "size": a.size,
                "inline": a.inline,
            }
            for a in message.attachments
        ],
    )
    return found
