"""``accounts``: list the accounts of the config file, and check one against its servers."""

from __future__ import annotations

import argparse
import json
from typing import Any

from mailsync._accounts import Account, Direction, accounts
from mailsync._base import Retriever
from mailsync._cli._common import (
    EXIT_ERROR,
    Commands,
    Output,
    add_command,
    open_retriever,
    open_sender,
    resolve,
)
from mailsync._config import Endpoint
from mailsync._errors import MailsyncError

__all__ = ["register"]


def register(commands: Commands) -> None:
    """Add ``accounts`` (``accounts``, ``accounts check NAME``)."""
    parser = add_command(
        commands,
        "accounts",
        summary="List the accounts of the config file, or check one against its servers.",
        details=(
            "check connects to the account's retrieve and send servers, logs in, and reports\n"
            "the TLS version and certificate and what each server offers. Nothing is sent and\n"
            "nothing changes."
        ),
        examples=[
            ("mailsync accounts", "the accounts, their URLs, which is the default"),
            ("mailsync accounts check work", "connect, log in, report TLS and capabilities"),
            ("mailsync accounts check imaps://me@imap.example.com --password-env PW", "a URL"),
            ("mailsync accounts --names", "one name per line (for scripts and completion)"),
        ],
        target=False,
    )
    parser.add_argument("action", nargs="?", choices=["list", "check"], default="list")
    parser.add_argument(
        "target", nargs="?", metavar="ACCOUNT|URL", help="the account to check (default: default)"
    )
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true", help="one JSON object per account")
    shape.add_argument("--names", action="store_true", help="only the names, one per line")
    parser.set_defaults(run=run_accounts)


def run_accounts(args: argparse.Namespace, out: Output) -> int:
    """``mailsync accounts`` and ``mailsync accounts check``."""
    if args.action == "check":
        return _check(args, out)
    from mailsync._accounts import account

    found = accounts(config=getattr(args, "config", None))
    try:
        default: str | None = account(config=getattr(args, "config", None)).name
    except MailsyncError:
        default = None  # several accounts and no default: none is marked
    for name, entry in found.items():
        if args.names:
            out.line(name)
        elif args.json:
            out.line(json.dumps(_as_json(entry, default), ensure_ascii=False))
        else:
            out.line(name + ("  (default)" if name == default else ""))
            for direction in ("retrieve", "send"):
                url = getattr(entry, direction)
                if url:
                    out.line(f"  {direction:<9}{url}")
            if entry.save_to:
                out.line(f"  {'save to':<9}{entry.save_to}")
    return 0


def _as_json(entry: Account, default: str | None) -> dict[str, Any]:
    return {
        "name": entry.name,
        "default": entry.name == default,
        "retrieve": entry.retrieve,
        "send": entry.send,
        "save_to": entry.save_to,
        "source": entry.source or None,
    }


def _check(args: argparse.Namespace, out: Output) -> int:
    target = resolve(args)
    out.line(target.name if target.account is not None else f"URL {target.url}")
    directions: list[Direction] = ["retrieve"]
    if target.account is not None:
        directions = [d for d in ("retrieve", "send") if getattr(target.account, d)]
    elif target.url and target.url.partition(":")[0].lower() in ("smtp", "smtps"):
        directions = ["send"]
    failed = False
    for direction in directions:
        failed |= not _check_direction(args, direction, out)
    return EXIT_ERROR if failed else 0


def _check_direction(args: argparse.Namespace, direction: Direction, out: Output) -> bool:
    try:
        handle: Any = open_retriever(args) if direction == "retrieve" else open_sender(args)
    except MailsyncError as exc:
        out.line(f"{direction}  FAILED: {exc}")
        return False
    with handle:
        endpoint: Endpoint = handle.endpoint
        out.line(f"{direction}  {endpoint.url}  ({_where(endpoint)})")
        if direction == "retrieve":
            return _check_retriever(handle, out)
        if not endpoint.host:
            out.line("  store    ok: a local mailbox (created by the first message sent)")
            return True
        return _step(out, "connect", lambda: _probe(endpoint, out, login=True))


def _where(endpoint: Endpoint) -> str:
    if not endpoint.host:
        return endpoint.path or endpoint.scheme
    return f"{endpoint.host}:{endpoint.port}, tls {endpoint.tls}"


def _check_retriever(box: Retriever, out: Output) -> bool:
    def log_in() -> str:
        if "folders" in box.capabilities:
            count = len(box.folders())
            what = f"{count} folder" + ("" if count == 1 else "s")
        else:
            what = "INBOX " + (
                "has mail" if list(box.messages(limit=1, headers_only=True)) else "is empty"
            )
        return f"ok: {what}; mailsync can: {' '.join(sorted(box.capabilities)) or '(read only)'}"

    if not _step(out, "login", log_in):
        return False
    endpoint = box.endpoint
    if not endpoint.host:
        return True
    return _step(out, "connect", lambda: _probe(endpoint, out, login=False))


def _probe(endpoint: Endpoint, out: Output, *, login: bool) -> str:
    from mailsync._cli._probe import probe

    found = probe(endpoint, login=login)
    if found.capabilities:
        out.line(f"  server   {' '.join(found.capabilities)}")
    if found.certificate:
        out.line(f"  cert     {found.certificate}")
    if found.login:
        out.line(f"  login    {found.login}")
    return f"ok: TLS {found.tls}" if found.tls != "none" else "ok: no TLS (plaintext)"


def _step(out: Output, what: str, action: Any) -> bool:
    try:
        result = action()
    except MailsyncError as exc:
        out.line(f"  {what:<8} FAILED: {exc}")
        return False
    out.line(f"  {what:<8} {result}")
    return True
