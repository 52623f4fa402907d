"""``manage.py mailsync_watch ACCOUNT [ACCOUNT ...]``: watch mail accounts and send Django's
``message_received`` signal for each new message.

Built on :func:`mailsync.watch_many` (one engine for every account, each isolated: an account
that fails backs off alone, and its status changes are written to stderr). Delivery is at
least once: a message is committed (its sync cursor saved) only after every receiver of the
signal returned; a receiver that raises leaves it uncommitted, and it comes again after a
backoff, also after a restart. SIGINT and SIGTERM finish the message in hand, commit it and
exit 0. ``--once`` hands over what is new and exits, for a cron job or a scheduler.

Around each message Django's stale database connections are closed, as around a request,
so a watcher that runs for weeks survives database restarts and ``CONN_MAX_AGE``.
"""

from __future__ import annotations

import contextlib
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import close_old_connections, connections

import mailsync
from mailsync.integrations.django.backend import is_url
from mailsync.integrations.django.signals import message_received


class Command(BaseCommand):
    """The ``mailsync_watch`` management command."""

    help = (
        "Watch mail accounts (names from the mailsync config file, or retriever URLs) and "
        "send the mailsync message_received signal for each new message."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        """The command's arguments."""
        parser.add_argument(
            "accounts", nargs="+", metavar="ACCOUNT", help="account names or retriever URLs"
        )
        parser.add_argument("--folder", default="INBOX", help="the folder to watch")
        parser.add_argument(
            "--poll-interval",
            type=float,
            default=60.0,
            help="seconds between polls where the server has no push (default 60)",
        )
        parser.add_argument("--once", action="store_true", help="hand over what is new, then exit")
        parser.add_argument(
            "--state",
            help="where sync cursors live: a path or a postgresql:// URL (default: the "
            "MAILSYNC_STATE setting, else the account's own)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        """Watch until stopped (or, with ``--once``, until caught up)."""
        names: list[str] = options["accounts"]
        self.verbosity = int(options.get("verbosity", 1))
        state = options["state"] or getattr(settings, "MAILSYNC_STATE", None)
        try:
            boxes = [(name, self._retriever(name, state)) for name in names]
        except mailsync.MailsyncError as exc:
            raise CommandError(str(exc)) from exc
        if options["once"]:
            self._once(boxes, options["folder"])
            return
        self._watch(boxes, options["folder"], options["poll_interval"])

    def _retriever(self, name: str, state: str | None) -> mailsync.Retriever:
        overrides: dict[str, Any] = {} if state is None else {"state": state}
        if is_url(name):
            return mailsync.connect(name, **overrides)
        config = getattr(settings, "MAILSYNC_CONFIG", None)
        return mailsync.account(name, config=config).retriever(**overrides)

    def _once(self, boxes: list[tuple[str, mailsync.Retriever]], folder: str) -> None:
        failed = []
        for name, box in boxes:
            try:
                with box, contextlib.closing(box.sync(folder)) as run:
                    for message in run:  # committed as the next one is asked for
                        deliver(name, box, message)
            except mailsync.MailsyncError as exc:
                self.stderr.write(f"{name}: {type(exc).__name__}: {exc}")
                failed.append(name)
        if failed:
            raise CommandError(f"could not sync: {', '.join(failed)}")

    def _watch(
        self, boxes: list[tuple[str, mailsync.Retriever]], folder: str, poll_interval: float
    ) -> None:
        name_of = {id(box): name for name, box in boxes}
        shown: dict[int, str] = {}

        def status(box: mailsync.Retriever, now: mailsync.AccountStatus) -> None:
            # Each change of state (not each message counted) is a line on stderr.
            if self.verbosity < 1 or shown.get(id(box)) == now.state:
                return
            shown[id(box)] = now.state
            why = f": {now.reason}" if now.reason else ""
            self.stderr.write(f"{name_of[id(box)]}: {now.state}{why}")

        def handle(box: mailsync.Retriever, message: mailsync.Message) -> None:
            deliver(name_of[id(box)], box, message)

        watcher = mailsync.watch_many(
            [box for _, box in boxes], folder, poll_interval=poll_interval, on_status=status
        )
        watcher.run(handle)
        if watcher.stop_signal is not None and self.verbosity >= 1:
            self.stderr.write(f"stopped by signal {watcher.stop_signal}")


def deliver(account: str, retriever: mailsync.Retriever, message: mailsync.Message) -> None:
    """Send ``message_received`` for one message, as the command does (a receiver that raises
    makes this raise: the message is then not committed)."""
    _close_stale_connections()
    try:
        message_received.send(
            sender=type(retriever), account=account, retriever=retriever, message=message
        )
    finally:
        _close_stale_connections()


def _close_stale_connections() -> None:
    # Not inside a transaction the caller holds (a TestCase's, or its own): closing there
    # would break it, and it is the caller's to end.
    if any(db.in_atomic_block for db in connections.all(initialized_only=True)):
        return
    close_old_connections()
