"""What every command shares: how a command is declared, which account it talks to, the
connection options, the message filters, and output that a progress counter never garbles.

A command module calls :func:`add_command` (which gives it ``ACCOUNT|URL`` and the connection
options, and puts its examples in ``--help``), adds its own options, and sets ``run`` to a
function ``run(args, out) -> int`` (see the package docstring). It opens what it talks to with
:func:`open_retriever` / :func:`open_sender`, which apply the command line's options over the
account's. Errors are raised as :class:`~mailsync.MailsyncError`: the package's ``main`` turns
them into one line and the exit status.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import IO, Any, TypeAlias

from mailsync._accounts import Account, Direction, account
from mailsync._base import Retriever, Sender
from mailsync._errors import ConfigError
from mailsync._facade import connect, sender
from mailsync._message import Message
from mailsync._query import Q, parse_query, parse_size, parse_when

__all__ = [
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_PARTIAL",
    "EXIT_USAGE",
    "Commands",
    "Output",
    "Target",
    "add_command",
    "add_filters",
    "message_line",
    "open_retriever",
    "open_sender",
    "query_of",
    "resolve",
]

EXIT_ERROR = 1
EXIT_USAGE = 2
#: Done, but not for everything: some recipients refused, some messages not found.
EXIT_PARTIAL = 3
EXIT_INTERRUPTED = 130

Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_command(
    commands: Commands,
    name: str,
    *,
    summary: str,
    examples: Sequence[tuple[str, str]],
    details: str = "",
    target: bool = True,
) -> argparse.ArgumentParser:
    """A new subcommand with ``ACCOUNT|URL``, the connection options and ``--help``
    examples (``(command line, what it does)`` pairs)."""
    lines = ["examples:"]
    for line, meaning in examples:
        lines += [f"  {line}", f"      {meaning}"]
    parser = commands.add_parser(
        name,
        help=summary,
        description=f"{summary}\n\n{details}".strip(),
        epilog="\n".join(lines),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if target:
        parser.add_argument(
            "target",
            nargs="?",
            metavar="ACCOUNT|URL",
            help="an account of the config file, or a URL (default: the default account)",
        )
    add_connection_options(parser)
    return parser


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    """``--config``, ``--password-env``, ``--tls``, ``--insecure``, ``--ca-file``, ``--timeout``."""
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,  # so it does not hide a --config given before the command
        help="the accounts file (default: $MAILSYNC_CONFIG, else ~/.config/mailsync/config.toml)",
    )
    group.add_argument(
        "--password-env", metavar="VAR", help="read the password from this environment variable"
    )
    group.add_argument(
        "--tls",
        choices=["ssl", "starttls", "none"],
        help="TLS mode (default: the URL scheme's: ssl for imaps/pop3s/smtps, else starttls)",
    )
    trust = group.add_mutually_exclusive_group()
    trust.add_argument(
        "--ca-file",
        metavar="PEM",
        help="trust the CA certificates in this file (a private or self-signed CA)",
    )
    trust.add_argument(
        "--insecure", action="store_true", help="do not verify the server certificate at all"
    )
    group.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="per network operation (default: the account's, else 30)",
    )


def add_filters(parser: argparse.ArgumentParser) -> None:
    """The message filters: ``--since --before --from --subject --unseen --flagged -q``."""
    group = parser.add_argument_group("which messages (all must hold)")
    group.add_argument("--since", metavar="WHEN", help="on or after: 2026-01-31, today, 7d, 2w")
    group.add_argument("--before", metavar="WHEN", help="before that date")
    group.add_argument("--from", dest="from_", metavar="TEXT", help="From contains TEXT")
    group.add_argument("--subject", dest="subject_filter", metavar="TEXT", help="Subject contains")
    group.add_argument("--unseen", action="store_true", help="only messages not yet seen")
    group.add_argument("--flagged", action="store_true", help="only flagged messages")
    group.add_argument(
        "-q",
        "--query",
        metavar="QUERY",
        help="a query: 'from:bob is:unseen since:7d larger:1M', with OR, -, ( )",
    )


def query_of(args: argparse.Namespace) -> Q | None:
    """The :class:`Q` the filter options describe, or None for every message."""
    parts: list[Q] = []
    if args.query:
        parts.append(parse_query(args.query))
    if args.since:
        parts.append(Q(since=parse_when(args.since)))
    if args.before:
        parts.append(Q(before=parse_when(args.before)))
    if args.from_:
        parts.append(Q(from_=args.from_))
    if args.subject_filter:
        parts.append(Q(subject=args.subject_filter))
    if args.unseen:
        parts.append(Q(seen=False))
    if args.flagged:
        parts.append(Q(flagged=True))
    if getattr(args, "larger", None):
        parts.append(Q(larger=parse_size(args.larger)))
    if not parts:
        return None
    query = parts[0]
    for part in parts[1:]:
        query = query & part
    return query


# -- which account ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """What a command talks to: a URL, or a named account.

    Attributes:
        url: The URL given on the command line, or None.
        account: The named account, or None.
    """

    url: str | None
    account: Account | None

    @property
    def name(self) -> str:
        """How error messages name it."""
        if self.account is not None:
            return f"account {self.account.name!r}"
        return str(self.url)


def resolve(args: argparse.Namespace) -> Target:
    """The target of ``args``: an argument with a ``:`` is a URL, anything else an account
    name; none is the default account. Remembered on ``args`` for error messages."""
    given: str | None = getattr(args, "target", None)
    if given and ":" in given:
        found = Target(given, None)
    else:
        found = Target(None, account(given, config=getattr(args, "config", None)))
    args.resolved = found
    return found


def _overrides(args: argparse.Namespace, url: str, where: str) -> dict[str, Any]:
    """The connection options the command line gives, over the account's."""
    options: dict[str, Any] = {}
    if args.timeout is not None:
        options["timeout"] = args.timeout
    if args.tls:
        _check_tls(url, args.tls, where)
        options["tls"] = args.tls
    if args.insecure:
        options["verify"] = False
    if args.ca_file:
        options["verify"] = args.ca_file
    if args.password_env:
        value = os.environ.get(args.password_env)
        if value is None:
            raise ConfigError(f"the environment variable {args.password_env!r} is not set")
        options["password"] = value
    return options


def _check_tls(url: str, tls: str, where: str) -> None:
    scheme, _, rest = url.partition("://")
    if scheme.lower() in ("imaps", "pop3s", "smtps") and tls != "ssl":
        raise ConfigError(
            f"{where}: {scheme}:// always uses implicit TLS, so --tls {tls} cannot apply; "
            f"give the URL as {scheme.lower()[:-1]}://{rest} --tls {tls}"
        )


def _open(
    args: argparse.Namespace, direction: Direction, factory: Callable[..., Any], named: Any
) -> Any:
    target = resolve(args)
    if target.url is not None:
        options = _overrides(args, target.url, target.url)
        if direction == "retrieve" and getattr(args, "state", None):
            options["state"] = args.state
        return factory(target.url, **options)
    assert target.account is not None
    url = target.account.url(direction)
    options = _overrides(args, url, target.name)
    if direction == "retrieve" and getattr(args, "state", None):
        options["state"] = args.state
    return named(target.account, **options)


def open_retriever(args: argparse.Namespace) -> Retriever:
    """The retriever the command's ``ACCOUNT|URL`` and options describe (not yet connected)."""
    box: Retriever = _open(args, "retrieve", connect, Account.retriever)
    return box


_ACCOUNTS_CHOICE: Any = object()


def open_sender(args: argparse.Namespace, *, save_to: str | None = _ACCOUNTS_CHOICE) -> Sender:
    """The sender the command's ``ACCOUNT|URL`` and options describe; ``save_to`` (a folder,
    or None for no copy) replaces the account's ``save_to``.

    Raises:
        ConfigError: ``save_to`` with a URL: it takes an account, whose mailbox keeps the copy.
    """

    def named(found: Account, **options: Any) -> Sender:
        if save_to is not _ACCOUNTS_CHOICE:
            found = replace(found, save_to=save_to)
        return found.sender(**options)

    if save_to is not _ACCOUNTS_CHOICE and save_to is not None and resolve(args).url:
        raise ConfigError("saving a copy takes an account (whose mailbox keeps it), not a URL")
    out: Sender = _open(args, "send", sender, named)
    return out


# -- output --------------------------------------------------------------------------------------


def message_line(message: Message) -> str:
    """One line per message: date, sender, subject, size and id."""
    when = message.date.strftime("%Y-%m-%d %H:%M") if message.date else "(no date)       "
    who = str(message.from_) if message.from_ else "(no sender)"
    subject = message.subject or "(no subject)"
    return f"{when}  {who}  {subject}  [{message.size} bytes]  {message.id}"


class Output:
    """stdout and stderr for a command, with a progress counter on stderr that never
    garbles stdout.

    The counter shows only when stderr is a terminal and stdout is not (on a terminal, the
    lines themselves show the progress). It is erased before anything else is written, and
    drawn again after, so on a terminal that shows both streams a line is never written
    after it on the same row.
    """

    def __init__(self, stdout: IO[str] | None = None, stderr: IO[str] | None = None) -> None:
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self._progress = _isatty(self.stderr) and not _isatty(self.stdout)
        self._shown = False
        self._count = 0
        self._started = time.monotonic()
        self._drawn = 0.0

    def line(self, text: str) -> None:
        """Write one line to stdout."""
        self._erase()
        self.stdout.write(text + "\n")
        self.stdout.flush()

    def binary(self, data: bytes) -> None:
        """Write bytes to stdout as they are (a raw message)."""
        self._erase()
        self.stdout.flush()
        buffer = getattr(self.stdout, "buffer", None)
        if buffer is None:
            self.stdout.write(data.decode("utf-8", "surrogateescape"))
        else:
            buffer.write(data)
            buffer.flush()

    def note(self, text: str) -> None:
        """Write one line to stderr (a warning, a summary)."""
        self._erase()
        self.stderr.write(text + "\n")
        self.stderr.flush()

    def hide_progress(self) -> None:
        """Show no counter (``--no-progress``)."""
        self._erase()
        self._progress = False

    def step(self) -> None:
        """Count one more message; redraw the counter now and then."""
        self._count += 1
        now = time.monotonic()
        if not self._progress or now - self._drawn < 0.1:
            return
        self._drawn = now
        rate = self._count / max(now - self._started, 1e-6)
        noun = "message" if self._count == 1 else "messages"
        self.stderr.write(f"\r\033[K{self._count} {noun} ({rate:.0f}/s)")
        self.stderr.flush()
        self._shown = True

    def done(self) -> None:
        """Erase the counter (at the end of a command)."""
        self._erase()

    def _erase(self) -> None:
        if self._shown:
            self.stderr.write("\r\033[K")
            self.stderr.flush()
            self._shown = False


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed, or not a real file
        return False
