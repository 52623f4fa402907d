"""``flag``, ``move`` and ``delete``: change messages chosen by id or by filters.

Messages are chosen by ``--id`` (repeated, or ``--id -`` for ids on stdin, one per line, as
``fetch --ids`` prints them) or by the filters of ``fetch``. With neither, nothing is chosen:
acting on a whole folder takes ``--all``. ``--dry-run`` prints what would change.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from mailsync._base import Retriever
from mailsync._cli._common import (
    EXIT_PARTIAL,
    Commands,
    Output,
    add_command,
    add_filters,
    message_line,
    open_retriever,
    query_of,
)
from mailsync._errors import ConfigError, MessageNotFound

__all__ = ["register"]

# Flag names as people write them; anything else is taken as an IMAP keyword.
_FLAGS = {
    "seen": "\\Seen",
    "read": "\\Seen",
    "flagged": "\\Flagged",
    "starred": "\\Flagged",
    "answered": "\\Answered",
    "draft": "\\Draft",
    "deleted": "\\Deleted",
}


def register(commands: Commands) -> None:
    """Add ``flag``, ``move`` and ``delete``."""
    flag = add_command(
        commands,
        "flag",
        summary="Add or remove flags (seen, flagged, answered, draft, or keywords).",
        examples=[
            ("mailsync flag work --id 'INBOX;1712;42' --add seen", "mark one message read"),
            ("mailsync flag work --from bob --unseen --add seen", "read everything from bob"),
            ("mailsync flag work --all --remove flagged --dry-run", "what would be unflagged"),
        ],
    )
    _choice_options(flag)
    flag.add_argument("--add", action="append", default=[], metavar="FLAG", help="(repeatable)")
    flag.add_argument("--remove", action="append", default=[], metavar="FLAG", help="(repeatable)")
    flag.set_defaults(run=run_flag)

    move = add_command(
        commands,
        "move",
        summary="Move messages to another folder.",
        examples=[
            ("mailsync move work --id 'INBOX;1712;42' --into Archive", "one message"),
            ("mailsync move work --from newsletter@ --before 30d --into Archive", "by filter"),
            (
                "mailsync fetch work --subject '[spam]' --ids "
                "| mailsync move work --id - --into Junk",
                "ids from another command",
            ),
        ],
    )
    _choice_options(move)
    move.add_argument("--into", required=True, metavar="FOLDER", help="the folder to move to")
    move.set_defaults(run=run_move)

    delete = add_command(
        commands,
        "delete",
        summary="Delete messages: to the Trash folder, or for good with --permanent.",
        examples=[
            ("mailsync delete work --id 'INBOX;1712;42'", "to the Trash"),
            ("mailsync delete work --before 1y -f Junk --permanent", "old junk, for good"),
        ],
    )
    _choice_options(delete)
    delete.add_argument(
        "--permanent", action="store_true", help="remove for good instead of moving to Trash"
    )
    delete.set_defaults(run=run_delete)


def _choice_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--folder", default="INBOX", help="the folder (default INBOX)")
    parser.add_argument(
        "--id",
        dest="ids",
        action="append",
        default=[],
        metavar="ID",
        help="a message id (repeatable; '-' reads ids from stdin, one per line)",
    )
    parser.add_argument("--all", action="store_true", help="every message of the folder")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the messages it would change, change none"
    )
    add_filters(parser)


def _chosen(box: Retriever, args: argparse.Namespace, out: Output) -> list[str]:
    """The ids the command acts on: given, or found by the filters."""
    ids = [i for given in args.ids for i in (_stdin_ids() if given == "-" else [given])]
    query = query_of(args)
    if ids and (query is not None or args.all):
        raise ConfigError("give message ids or filters (or --all), not both")
    if ids:
        if args.dry_run:
            for message_id in ids:
                out.line(message_line(box.get(message_id)))
        return ids
    if query is None and not args.all:
        raise ConfigError(
            "which messages? give --id ID, filters (--from, --since, -q ...), or --all for "
            "the whole folder"
        )
    found = []
    for message in box.messages(args.folder, query=query, headers_only=True):
        found.append(message.id)
        if args.dry_run:
            out.line(message_line(message))
    return found


def _stdin_ids() -> list[str]:
    return [line.strip() for line in sys.stdin if line.strip()]


def _act(
    args: argparse.Namespace, out: Output, verb: tuple[str, str], change: Callable[..., None]
) -> int:
    """Choose the messages, then change them; ``verb`` is ``(to do, done)`` for messages."""
    todo, done = verb
    with open_retriever(args) as box:
        ids = _chosen(box, args, out)
        if args.dry_run:
            out.note(f"would {todo} {_count(ids)} (dry run: nothing changed)")
            return 0
        if not ids:
            out.note(f"no message to {todo}")
            return 0
        try:
            change(box, ids)
        except MessageNotFound as exc:
            out.note(f"mailsync: error: {exc}")
            return EXIT_PARTIAL
    out.note(f"{done}: {_count(ids)}")
    return 0


def _count(ids: list[str]) -> str:
    return f"{len(ids)} message" + ("" if len(ids) == 1 else "s")


def _flag_names(names: list[str]) -> list[str]:
    flags = []
    for name in names:
        if not name.strip() or any(c in name for c in " ()\r\n"):
            raise ConfigError(f"{name!r} is not a flag name")
        flags.append(_FLAGS.get(name.lower().lstrip("\\"), name))
    return flags


def run_flag(args: argparse.Namespace, out: Output) -> int:
    """``mailsync flag``."""
    add, remove = _flag_names(args.add), _flag_names(args.remove)
    if not add and not remove:
        raise ConfigError("flag needs --add FLAG or --remove FLAG")
    return _act(
        args, out, ("flag", "flagged"), lambda box, ids: box.set_flags(ids, add=add, remove=remove)
    )


def run_move(args: argparse.Namespace, out: Output) -> int:
    """``mailsync move``."""
    verb = (f"move to {args.into}", f"moved to {args.into}")
    return _act(args, out, verb, lambda box, ids: box.move(ids, args.into))


def run_delete(args: argparse.Namespace, out: Output) -> int:
    """``mailsync delete``."""
    verb = ("delete for good", "deleted for good") if args.permanent else ("delete", "deleted")
    return _act(args, out, verb, lambda box, ids: box.delete(ids, permanent=args.permanent))
