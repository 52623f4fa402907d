"""``watch``: watch one or many accounts and print (or ``--exec``) each new message as it
arrives, on the :func:`~mailsync.watch_many` engine.

Each new message is printed on stdout (one line, ``--json`` or ``--ids``), or with ``--exec``
piped as raw bytes into ``CMD`` (run by ``/bin/sh -c``, with ``MAILSYNC_ACCOUNT``,
``MAILSYNC_FOLDER`` and ``MAILSYNC_MESSAGE_ID`` set): exit status 0 acknowledges the message,
anything else leaves it uncommitted, and its account backs off and gets it again. Every change
of an account's status is one line on stderr (a JSON event with ``--json``), so stdout holds
only messages. SIGINT/SIGTERM finish the message in hand, commit it and close everything;
the exit status is then 130 for SIGINT, as for any interrupted command, and 0 for SIGTERM, a
service manager's ordinary stop.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import threading
import time
from typing import TYPE_CHECKING, Any

from mailsync._accounts import accounts
from mailsync._base import Retriever
from mailsync._cli._common import (
    EXIT_INTERRUPTED,
    Commands,
    Output,
    add_command,
    message_line,
    open_retriever,
    query_of,
)
from mailsync._cli.read import listing_options
from mailsync._facade import connect
from mailsync._message import Message

if TYPE_CHECKING:
    from mailsync._watch import AccountStatus

__all__ = ["register"]


def register(commands: Commands) -> None:
    """Add ``watch``."""
    watch = add_command(
        commands,
        "watch",
        summary="Watch accounts and print (or --exec) each new message as it arrives.",
        details=(
            "Built on sync: what arrived while it was not running comes first, and nothing is\n"
            "handed out twice. IMAP IDLE where the server has it, else a poll every\n"
            "--poll-interval seconds. Many accounts are watched from one process; one that\n"
            "fails (a refused password, a server down) backs off or waits on its own, and its\n"
            "status changes go to stderr. SIGINT or SIGTERM finishes the message in hand."
        ),
        examples=[
            ("mailsync watch work", "print new mail of the INBOX as it comes"),
            ("mailsync watch work home --json", "two accounts, as JSON lines"),
            ("mailsync watch --all --exec 'archive-it'", "every account, each message piped"),
            ("mailsync watch work --to maildir:~/Mail", "keep a local copy as mail arrives"),
        ],
        target=False,
    )
    watch.add_argument(
        "targets",
        nargs="*",
        metavar="ACCOUNT|URL",
        help="accounts of the config file, or URLs (default: the default account)",
    )
    watch.add_argument("--all", action="store_true", help="every account of the config file")
    watch.add_argument(
        "--exec",
        dest="exec_command",
        metavar="CMD",
        help="run CMD with each raw message on stdin; exit status 0 acknowledges it",
    )
    listing_options(watch)
    watch.add_argument(
        "--state", metavar="PATH|URL", help="the sync state: a file, or postgresql://..."
    )
    watch.add_argument(
        "--poll-interval",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="between polls where the server has no push (default 60)",
    )
    watch.set_defaults(run=run_watch)


def _retrievers(args: argparse.Namespace) -> dict[Retriever, str]:
    """Each account to watch, with the label its lines carry."""
    names: list[str | None] = list(args.targets)
    if args.all:
        found = accounts(config=getattr(args, "config", None))
        names += [name for name, entry in found.items() if entry.retrieve]
    boxes: dict[Retriever, str] = {}
    for name in dict.fromkeys(names or [None]):
        box = open_retriever(argparse.Namespace(**{**vars(args), "target": name}))
        boxes[box] = box.endpoint.url if name is None or ":" in name else name
    return boxes


class _Lines:
    """Message lines to stdout, status lines to stderr, whole lines from either thread."""

    def __init__(self, out: Output, args: argparse.Namespace) -> None:
        self.out = out
        self.json = bool(args.json)
        self.ids = bool(args.ids)
        self._lock = threading.Lock()

    def message(self, label: str, message: Message, extra: dict[str, Any]) -> None:
        if self.json:
            data = {**message.as_dict(), "account": label, **extra}
            text = json.dumps(data, ensure_ascii=False)
        elif self.ids:
            text = message.id
        else:
            text = f"{label}  {message_line(message)}"
            if "exec_status" in extra:
                text += f"  exec: {extra['exec_status']}"
        with self._lock:
            self.out.line(text)

    def status(self, label: str, status: AccountStatus) -> None:
        if self.json:
            text = json.dumps({"event": "status", "account": label, **status.as_dict()})
        else:
            state = status.state.replace("_", " ")
            if status.retry_at is not None:
                state += f" until {time.strftime('%H:%M:%S', time.localtime(status.retry_at))}"
            text = f"{time.strftime('%Y-%m-%d %H:%M:%S')}  {label}  {state}"
            if status.reason:
                text += f": {status.reason}"
        with self._lock:
            self.out.note(text)


def _execute(command: str, message: Message, label: str, folder: str) -> int:
    env = {
        **os.environ,
        "MAILSYNC_ACCOUNT": label,
        "MAILSYNC_FOLDER": folder,
        "MAILSYNC_MESSAGE_ID": message.message_id or "",
    }
    return subprocess.run(
        ["/bin/sh", "-c", command], input=message.raw, env=env, check=False
    ).returncode


def run_watch(args: argparse.Namespace, out: Output) -> int:
    """``mailsync watch``."""
    from mailsync._watch import watch_many  # asyncio: only this command pays for it

    query = query_of(args)
    boxes = _retrievers(args)
    lines = _Lines(out, args)
    store = connect(args.store, state=":memory:") if args.store else None

    def handle(box: Retriever, message: Message) -> None:
        if query is not None and not query.matches(message):
            return  # synced past, not shown: watch() takes no query
        label = boxes[box]
        if store is not None:
            store.append("INBOX", message, message.flags)  # a copy, as fetch --to keeps it
        extra: dict[str, Any] = {"message_id": message.message_id}
        if args.exec_command:
            code = _execute(args.exec_command, message, label, args.folder)
            extra["exec_status"] = code
            lines.message(label, message, extra)
            if code != 0:
                raise RuntimeError(f"{args.exec_command!r} exited with status {code}")
            return
        lines.message(label, message, extra)

    # The status lines say what the engine's log would (failures, backoffs): once is enough.
    engine_log = logging.getLogger("mailsync.watch")
    engine_log.propagate = False
    engine_log.addHandler(logging.NullHandler())
    watcher = watch_many(
        boxes,
        args.folder,
        poll_interval=args.poll_interval,
        on_status=lambda box, status: lines.status(boxes[box], status),
    )
    try:
        watcher.run(handle)
    finally:
        if store is not None:
            store.close()
    return EXIT_INTERRUPTED if watcher.stop_signal == signal.SIGINT else 0
