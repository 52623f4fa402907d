"""The ``mailsync`` command: fetch, sync, watch, send and list folders from the shell.

``mailsync fetch|sync|watch|send|folders|bounces [ACCOUNT|URL]``. An argument with a ``:`` is a URL,
anything else an account name from the config file; with none, the default account (the
embedded local Maildir when there is no config). Errors print one line and exit non-zero:
never a traceback. A progress bar goes to stderr when stderr is a terminal (``--no-progress``
turns it off).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import IO, Any, cast

from mailsync import _cli_bounces
from mailsync._accounts import Account, account
from mailsync._base import Retriever, Sender
from mailsync._compose import compose
from mailsync._errors import ConfigError, MailsyncError
from mailsync._facade import connect, sender
from mailsync._message import Message

__all__ = ["main"]

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailsync",
        description="Push and pull email: IMAP, POP3, SMTP, Maildir, mbox behind one tool.",
    )
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "target",
            nargs="?",
            metavar="ACCOUNT|URL",
            help="an account from the config file, or a URL (default: the default account)",
        )
        sub.add_argument(
            "--password-env", metavar="VAR", help="read the password from this environment variable"
        )
        sub.add_argument("--tls", choices=["ssl", "starttls", "none"], help="TLS mode")
        sub.add_argument(
            "--insecure", action="store_true", help="do not verify the server certificate"
        )
        sub.add_argument(
            "--timeout",
            type=float,
            default=None,
            help="seconds per network operation (default: the account's, else 30)",
        )
        return sub

    for name, text in (
        ("fetch", "List (and optionally store) the messages of a folder."),
        ("sync", "Only the messages not seen by an earlier sync of this account and folder."),
        ("watch", "Wait for new messages and print them as they arrive (Ctrl-C to stop)."),
    ):
        sub = add(name, text)
        sub.add_argument("-f", "--folder", default="INBOX", help="folder (default INBOX)")
        sub.add_argument("--json", action="store_true", help="one JSON object per line")
        sub.add_argument(
            "--to",
            dest="store",
            metavar="maildir:PATH|mbox:PATH",
            help="also store each message there",
        )
        sub.add_argument("--state", metavar="PATH", help="sync state file (default: user data)")
        if name != "watch":
            sub.add_argument(
                "--progress",
                action=argparse.BooleanOptionalAction,
                default=True,
                help="a progress bar on stderr when it is a terminal (default: on)",
            )
        if name == "fetch":
            sub.add_argument("--limit", type=int, help="at most this many messages")
            sub.add_argument("--headers-only", action="store_true", help="fetch headers only")
        if name == "watch":
            sub.add_argument(
                "--poll-interval",
                type=float,
                default=60.0,
                help="seconds between polls where the server has no push",
            )

    _cli_bounces.add_arguments(add("bounces", _cli_bounces.HELP))

    folders = add("folders", "List the folders of an account.")
    folders.add_argument("--json", action="store_true", help="one JSON object per line")

    send = add("send", "Send a message (or a raw message read from stdin).")
    send.add_argument("--from", dest="from_", metavar="ADDRESS", help="the author")
    send.add_argument("--to", dest="to", action="append", default=[], metavar="ADDRESS")
    send.add_argument("--cc", action="append", default=[], metavar="ADDRESS")
    send.add_argument("--bcc", action="append", default=[], metavar="ADDRESS")
    send.add_argument("--subject", default=None)
    send.add_argument("--text", help="plain-text body ('-' reads it from stdin)")
    send.add_argument("--html", help="html body")
    send.add_argument("--attach", action="append", default=[], metavar="PATH")
    send.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def _version() -> str:
    from mailsync import __version__

    return f"mailsync {__version__}"


def _resolve(target: str | None) -> tuple[str | None, Account | None]:
    if target and ":" in target:
        return target, None
    return None, account(target)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if args.timeout is not None:
        options["timeout"] = args.timeout
    if args.tls:
        options["tls"] = args.tls
    if args.insecure:
        options["verify"] = False
    if args.password_env:
        value = os.environ.get(args.password_env)
        if value is None:
            raise ConfigError(f"the environment variable {args.password_env!r} is not set")
        options["password"] = value
    return options


def _retriever(args: argparse.Namespace) -> Retriever:
    url, named = _resolve(args.target)
    options = _options(args)
    if getattr(args, "state", None):
        options["state"] = args.state
    if url is not None:
        return connect(url, **options)
    assert named is not None
    if not named.retrieve:
        raise ConfigError(f"account {named.name!r} has no 'retrieve' URL")
    merged = {**named._kwargs(retriever=True), **options}
    return connect(named.retrieve, **merged)


def _sender(args: argparse.Namespace) -> Sender:
    url, named = _resolve(args.target)
    options = _options(args)
    if url is not None:
        return sender(url, **options)
    assert named is not None
    if not named.send:
        raise ConfigError(f"account {named.name!r} has no 'send' URL")
    return sender(named.send, **{**named._kwargs(retriever=False), **options})


def _line(message: Message) -> str:
    when = message.date.strftime("%Y-%m-%d %H:%M") if message.date else "????-??-?? ??:??"
    who = str(message.from_) if message.from_ else "(no sender)"
    subject = message.subject or "(no subject)"
    return f"{when}  {who}  {subject}  [{message.size} bytes]"


def _emit(messages: Iterable[Message], args: argparse.Namespace, out: IO[str]) -> int:
    # --to keeps a copy, so it appends: sending would add a Date and a Message-ID where they
    # are missing and drop Bcc, and the copy would no longer be the server's message.
    store = connect(args.store, state=":memory:") if args.store else None
    count = 0
    try:
        for message in messages:
            if store is not None:
                store.append("INBOX", message)
            out.write(
                json.dumps(message.as_dict(), ensure_ascii=False) if args.json else _line(message)
            )
            out.write("\n")
            out.flush()
            count += 1
    finally:
        if store is not None:
            store.close()
    return count


def _fetch(args: argparse.Namespace, out: IO[str]) -> int:
    if args.headers_only and args.store:
        raise ConfigError(
            "--headers-only cannot be combined with --to: the copies would lack bodies"
        )
    with _retriever(args) as box:
        # The backend declares messages() without progress=; the base class adds it.
        messages = cast("Callable[..., Iterable[Message]]", box.messages)
        found = messages(
            args.folder, limit=args.limit, headers_only=args.headers_only, progress=args.progress
        )
        _emit(found, args, out)
    return 0


def _sync(args: argparse.Namespace, out: IO[str]) -> int:
    with _retriever(args) as box:
        _emit(box.sync(args.folder, progress=args.progress), args, out)
    return 0


def _watch(args: argparse.Namespace, out: IO[str]) -> int:
    with _retriever(args) as box:
        _emit(box.watch(args.folder, poll_interval=args.poll_interval), args, out)
    return 0


def _folders(args: argparse.Namespace, out: IO[str]) -> int:
    with _retriever(args) as box:
        for folder in box.folders():
            if args.json:
                out.write(
                    json.dumps(
                        {
                            "name": folder.name,
                            "delimiter": folder.delimiter,
                            "special_use": folder.special_use,
                        },
                        ensure_ascii=False,
                    )
                    + "\n"
                )
            else:
                out.write(
                    folder.name + (f"  {folder.special_use}" if folder.special_use else "") + "\n"
                )
    return 0


def _send(args: argparse.Namespace, out: IO[str]) -> int:
    composing = any((args.subject is not None, args.text, args.html, args.attach))
    if composing:
        if not args.from_ or not (args.to or args.cc or args.bcc):
            raise ConfigError("send needs --from and at least one --to/--cc/--bcc")
        text = sys.stdin.read() if args.text == "-" else args.text
        message: Any = compose(
            from_=args.from_,
            to=args.to,
            cc=args.cc,
            bcc=args.bcc,
            subject=args.subject or "",
            text=text,
            html=args.html,
            attachments=args.attach,
        )
    else:
        if sys.stdin.isatty():
            raise ConfigError("give --subject/--text/--html, or pipe a raw message into send")
        message = sys.stdin.buffer.read()
        if not message.strip():
            raise ConfigError("the message read from stdin is empty")
    extra: dict[str, Any] = {}
    if not composing and args.to:
        extra["rcpt_to"] = args.to
    with _sender(args) as outbox:
        result = outbox.send(message, **extra)
    if args.json:
        out.write(
            json.dumps(
                {
                    "message_id": result.message_id,
                    "accepted": list(result.accepted),
                    "refused": {k: list(v) for k, v in result.refused.items()},
                }
            )
            + "\n"
        )
    else:
        out.write(f"sent <{result.message_id}> to {', '.join(result.accepted)}\n")
        for address, (code, text) in result.refused.items():
            out.write(f"refused {address}: {code} {text}\n")
    return 0


def _bounces(args: argparse.Namespace, out: IO[str]) -> int:
    with _retriever(args) as box:
        return _cli_bounces.run(box, args, out)


_COMMANDS = {
    "fetch": _fetch,
    "sync": _sync,
    "watch": _watch,
    "folders": _folders,
    "send": _send,
    "bounces": _bounces,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args, sys.stdout)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (``mailsync fetch | head``): not an error worth a message.
        sys.stderr.close()
        return 0
    except MailsyncError as exc:
        print(f"mailsync: error: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_ERROR
    except OSError as exc:
        print(f"mailsync: error: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:
        if os.environ.get("MAILSYNC_DEBUG"):
            raise
        print(
            f"mailsync: unexpected error: {type(exc).__name__}: {exc} "
            "(set MAILSYNC_DEBUG=1 to see the traceback)",
            file=sys.stderr,
        )
        return EXIT_ERROR
