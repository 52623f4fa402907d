"""The ``mailsync`` command: read, watch, change and send mail from the shell.

``mailsync COMMAND [ACCOUNT|URL] [options]``. An argument with a ``:`` is a URL, anything else
an account name from the config file; with none, the default account (the embedded local
Maildir when there is no config). Errors print one line (``mailsync: error: ...``) that names
the account or host and what to change, and set the exit status: never a traceback.

Each command group lives in its own module of this package and is listed in
:data:`COMMAND_MODULES`. Adding a command is one module and one line:

1. write ``mailsync/_cli/<name>.py`` with ``register(commands)``, which calls
   :func:`~mailsync._cli._common.add_command` (that gives the command ``ACCOUNT|URL``, the
   connection options and the examples of its ``--help``), adds its own options, and sets
   ``run`` with ``parser.set_defaults(run=run_name)``;
2. write ``run_name(args, out) -> int``: it opens what it needs with ``open_retriever(args)``
   or ``open_sender(args)``, writes through ``out`` (an :class:`Output`, which keeps stdout
   clean of progress output), raises :class:`~mailsync.MailsyncError` for errors, and returns
   the exit status;
3. add the module's name to :data:`COMMAND_MODULES`. Completion scripts pick it up.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from mailsync._cli._common import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE, Output
from mailsync._errors import (
    AuthenticationError,
    ConfigError,
    FolderNotFound,
    MailsyncError,
    MailTimeout,
)

__all__ = ["COMMAND_MODULES", "main"]

#: The modules of this package that register commands, in the order ``--help`` lists them.
COMMAND_MODULES = (
    "read",
    "watch",
    "change",
    "send",
    "folders",
    "bounces",
    "accounts",
    "completion",
)

_EXAMPLES = """\
examples:
  mailsync send --from me@example.test --to me@example.test --subject Hi --text 'It works'
  mailsync fetch                            the default account's INBOX
  mailsync fetch work --unseen --since 7d   an account of the config file, filtered
  mailsync sync work --to maildir:~/Backup  only what is new, copied once
  mailsync accounts check work              is the account set up right?
  mailsync COMMAND --help                   each command's options and examples

accounts: ~/.config/mailsync/config.toml (or $MAILSYNC_CONFIG, or --config FILE)"""


def parser() -> argparse.ArgumentParser:
    """The whole command line, every command registered."""
    found = argparse.ArgumentParser(
        prog="mailsync",
        description="Push and pull email: IMAP, POP3, SMTP, Maildir, mbox behind one tool.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    found.add_argument("--version", action="version", version=_version())
    found.add_argument(
        "--config",
        metavar="FILE",
        help="the accounts file (default: $MAILSYNC_CONFIG, else ~/.config/mailsync/config.toml)",
    )
    commands = found.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"mailsync._cli.{name}").register(commands)
    found.set_defaults(parser=found)
    return found


def _version() -> str:
    from mailsync import __version__

    return f"mailsync {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = parser().parse_args(argv)
    out = Output()
    try:
        status: int = args.run(args, out)
        return status
    except KeyboardInterrupt:
        out.done()
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (``mailsync fetch | head``): not an error worth a message.
        sys.stderr.close()
        return 0
    except MailsyncError as exc:
        out.note(f"mailsync: error: {_named(exc, args)}")
        return EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_ERROR
    except OSError as exc:
        out.note(f"mailsync: error: {exc.strerror or exc}")
        return EXIT_ERROR
    except Exception as exc:
        if os.environ.get("MAILSYNC_DEBUG"):
            raise
        out.note(
            f"mailsync: unexpected error: {type(exc).__name__}: {exc} "
            "(set MAILSYNC_DEBUG=1 to see the traceback)"
        )
        return EXIT_ERROR


def _named(exc: MailsyncError, args: argparse.Namespace) -> str:
    """The error, after the account's name when a named account was used, with what to do
    where the backend's message cannot know the command line."""
    text = " ".join(str(exc).split())  # one line, whatever a server put in its reply
    text += _advice(exc, text, getattr(args, "target", None))
    target = getattr(args, "resolved", None)
    account = getattr(target, "account", None)
    # Connection and server errors name the host; which account that is helps too. Usage
    # errors are about the command line, and the config file's name their account already.
    if account is None or isinstance(exc, ConfigError) or f"account {account.name!r}" in text:
        return text
    return f"account {account.name!r}: {text}"


def _advice(exc: MailsyncError, text: str, target: str | None) -> str:
    name = f" {target}" if target else ""
    if isinstance(exc, AuthenticationError):
        return (
            "; check the user and the password (--password-env, or the account's password_* "
            "key); many providers want an app password"
        )
    if isinstance(exc, FolderNotFound) and "no folder" in text:
        return f"; mailsync folders{name} lists the folders"
    if isinstance(exc, MailTimeout):
        return "; the server may be slow (raise --timeout) or unreachable from here"
    return ""
