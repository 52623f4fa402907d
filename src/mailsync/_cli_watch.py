"""``mailsync watch ACCOUNT... [--all] [--exec CMD] [--json]``: watch many accounts from the
shell on the :func:`~mailsync.watch_many` engine.

Each new message is printed (one line, or one JSON event with ``--json``), or with ``--exec``
piped as raw bytes into ``CMD`` (run by ``/bin/sh -c``, with ``MAILSYNC_ACCOUNT``,
``MAILSYNC_FOLDER`` and ``MAILSYNC_MESSAGE_ID`` set): exit status 0 acknowledges the message,
anything else leaves it uncommitted and its account backs off and gets it again. Every status
change of an account is one more line (``status`` events in JSON). SIGINT/SIGTERM finish the
message in hand, commit it and exit 0.

This module owns only the ``watch`` command (its arguments and what it prints); the rest of
the command line is in :mod:`mailsync._cli`, which registers it with :func:`add_parser`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import threading
import time
from typing import IO, TYPE_CHECKING, Any

from mailsync._accounts import account, accounts
from mailsync._base import Retriever
from mailsync._errors import ConfigError
from mailsync._facade import connect, sender
from mailsync._message import Message

if TYPE_CHECKING:
    from mailsync._watch import AccountStatus

__all__ = ["add_parser", "run"]


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add the ``watch`` sub-command to ``commands`` (argparse sub-parsers)."""
    text = "Watch accounts and print (or --exec) each new message as it arrives."
    sub: argparse.ArgumentParser = commands.add_parser("watch", help=text, description=text)
    sub.add_argument(
        "targets",
        nargs="*",
        metavar="ACCOUNT|URL",
        help="accounts from the config file, or URLs (default: the default account)",
    )
    sub.add_argument("--all", action="store_true", help="every account of the config file")
    sub.add_argument(
        "--exec",
        dest="exec_command",
        metavar="CMD",
        help="run CMD with each raw message on stdin; exit status 0 acknowledges it",
    )
    sub.add_argument("--json", action="store_true", help="one JSON event per line")
    sub.add_argument("-f", "--folder", default="INBOX", help="folder (default INBOX)")
    sub.add_argument("--state", metavar="PATH|URL", help="sync state (SQLite file, postgresql://)")
    sub.add_argument(
        "--to", dest="store", metavar="maildir:PATH|mbox:PATH", help="also store each message"
    )
    sub.add_argument(
        "--poll-interval",
        type=float,
        default=60.0,
        help="seconds between polls where the server has no push",
    )
    sub.add_argument("--password-env", metavar="VAR", help="read passwords from this variable")
    sub.add_argument("--tls", choices=["ssl", "starttls", "none"], help="TLS mode")
    sub.add_argument("--insecure", action="store_true", help="do not verify certificates")
    sub.add_argument("--timeout", type=float, default=None, help="seconds per network operation")
    return sub


def _options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if args.timeout is not None:
        options["timeout"] = args.timeout
    if args.tls:
        options["tls"] = args.tls
    if args.insecure:
        options["verify"] = False
    if args.state:
        options["state"] = args.state
    if args.password_env:
        value = os.environ.get(args.password_env)
        if value is None:
            raise ConfigError(f"the environment variable {args.password_env!r} is not set")
        options["password"] = value
    return options


def _retrievers(args: argparse.Namespace) -> dict[Retriever, str]:
    """Each account to watch with the label its events carry."""
    names: list[str | None] = list(args.targets)
    if args.all:
        names += [name for name, entry in accounts().items() if entry.retrieve]
    if not names:
        names = [None]
    options = _options(args)
    found: dict[Retriever, str] = {}
    for name in dict.fromkeys(names):
        if name is not None and ":" in name:
            box = connect(name, **options)
            found[box] = box.endpoint.url
            continue
        entry = account(name)
        if not entry.retrieve:
            raise ConfigError(f"account {entry.name!r} has no 'retrieve' URL")
        found[connect(entry.retrieve, **{**entry._kwargs(retriever=True), **options})] = entry.name
    return found


class _Printer:
    """Writes events from the consumer and the engine's thread, one whole line at a time."""

    def __init__(self, out: IO[str], as_json: bool) -> None:
        self.out = out
        self.as_json = as_json
        self._lock = threading.Lock()

    def event(self, kind: str, label: str, text: str, data: dict[str, Any]) -> None:
        if self.as_json:
            line = json.dumps({"event": kind, "account": label, **data}, ensure_ascii=False)
        else:
            line = f"{time.strftime('%Y-%m-%d %H:%M:%S')}  {label}  {text}"
        with self._lock:
            self.out.write(line + "\n")
            self.out.flush()


def _status_text(status: AccountStatus) -> str:
    text = status.state.replace("_", " ")
    if status.retry_at is not None:
        text += f" until {time.strftime('%H:%M:%S', time.localtime(status.retry_at))}"
    return f"{text}: {status.reason}" if status.reason else text


def _execute(command: str, message: Message, label: str, folder: str) -> int:
    env = {
        **os.environ,
        "MAILSYNC_ACCOUNT": label,
        "MAILSYNC_FOLDER": folder,
        "MAILSYNC_MESSAGE_ID": message.message_id or "",
    }
    result = subprocess.run(["/bin/sh", "-c", command], input=message.raw, env=env, check=False)
    return result.returncode


def run(args: argparse.Namespace, out: IO[str]) -> int:
    """Run ``mailsync watch``; returns the exit status."""
    from mailsync._watch import watch_many  # asyncio: only the watch command pays for it

    boxes = _retrievers(args)
    printer = _Printer(out, args.json)
    store = sender(args.store) if args.store else None

    def on_status(box: Retriever, status: AccountStatus) -> None:
        printer.event("status", boxes[box], _status_text(status), status.as_dict())

    def handle(box: Retriever, message: Message) -> None:
        label = boxes[box]
        if store is not None:
            recipients = [a.email for a in (*message.to, *message.cc) if a.email]
            store.send(message, rcpt_to=recipients or ["undisclosed-recipients@localhost"])
        data: dict[str, Any] = {**message.as_dict(), "message_id": message.message_id}
        text = f"{message.subject or '(no subject)'}  <{message.message_id or message.id}>"
        if args.exec_command:
            code = _execute(args.exec_command, message, label, args.folder)
            data["exec_status"] = code
            text += f"  exec: {code}"
            printer.event("message", label, text, data)
            if code != 0:
                raise RuntimeError(f"{args.exec_command!r} exited with status {code}")
            return
        printer.event("message", label, text, data)

    watcher = watch_many(boxes, args.folder, poll_interval=args.poll_interval, on_status=on_status)
    try:
        watcher.run(handle)
    finally:
        if store is not None:
            store.close()
    return 0
