"""Big folders: ``messages(headers_only=True)`` and ``sync()`` of a folder of 200,000 messages on
the test Dovecot, whose one-line ``UID SEARCH`` answer is longer than the 1 MiB line both IMAP
backends take, read with the real line cap (the suite cuts the cap to test the same code fast:
tests/imap/test_big_folder.py).

Seeding writes the messages' files straight into the account's Maildir, as tests/servers.py
lays it out (``maildir:<mail>/<user>``, one file per message in ``cur/``, owned by the mail
user), and lets Dovecot index them on the next SELECT: APPEND takes ~3 ms a message here, ten
minutes for 200,000. Never mailsync.

Layouts:

- ``dense``: N messages, UIDs 1..N: searched in fixed UID ranges;
- ``gaps``: N messages among 1.5 N UIDs, half of the first N UIDs expunged (files removed, so
  Dovecot expunges them): searched between UIDs looked up at sequence positions.

For each layout: the length of the whole answer to one ``UID SEARCH ALL`` (read by stdlib
imaplib with its cap raised) and what each backend makes of that one search (the failure
every read of such a folder ended with before searches were windowed); then, per backend,
``messages(headers_only=True)`` and ``sync()``: messages yielded, distinct, the ``UID
SEARCH`` round trips (windows, and look-ups), the seconds spent searching and in all.

    python benchmarks/big_folder.py                      # 200,000 messages (several minutes)
    python benchmarks/big_folder.py --messages 20000     # a quick look (fits one line)
"""

from __future__ import annotations

import argparse
import asyncio
import imaplib
import os
import pwd
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.servers import Account, MailServers

import mailsync
from mailsync.protocol.imap_literals import MAX_LINE
from mailsync.protocol.imap_search import Search, search_window

FOLDER = "INBOX"


def message(index: int) -> bytes:
    """Message ``index``: small, with its own Message-ID."""
    return (
        f"From: Sender {index % 97} <sender{index % 97}@example.test>\r\n"
        f"To: Big <big@example.test>\r\n"
        f"Subject: Big folder message {index}\r\n"
        f"Date: Thu, 01 Jan 2026 12:00:00 +0000\r\n"
        f"Message-ID: <big-{index}@example.test>\r\n"
        "\r\n"
        f"Body of message {index}.\r\n"
    ).encode()


def seed(servers: MailServers, account: Account, count: int, drop_every_other: int) -> int:
    """Write ``count`` message files into the account's INBOX, let Dovecot give them UIDs,
    then remove every other one of the first ``drop_every_other`` (Dovecot expunges them).
    Returns how many are left."""
    with servers.imap(account) as conn:  # Dovecot makes the Maildir at the first login
        conn.select(FOLDER)
    mail = pwd.getpwnam("mail")
    cur = account.maildir / "cur"
    paths = []
    for index in range(count):
        path = cur / f"1767268800.M{index}P1.bench:2,"
        path.write_bytes(message(index))
        os.chown(path, mail.pw_uid, mail.pw_gid)
        paths.append(path)
    with servers.imap(account) as conn:
        conn.select(FOLDER)  # UIDs in the order Dovecot reads the directory
    for path in paths[:drop_every_other:2]:
        path.unlink()
    with servers.imap(account) as conn:
        typ, data = conn.select(FOLDER)
    assert typ == "OK", data
    return int(data[0] or 0)


def one_search_line(servers: MailServers, account: Account) -> int:
    """The length of the whole answer to ``UID SEARCH ALL``, read by stdlib imaplib with its
    line cap raised for the occasion."""
    cap = imaplib._MAXLINE  # type: ignore[attr-defined]
    imaplib._MAXLINE = 64 << 20  # type: ignore[attr-defined]
    try:
        with servers.imap(account) as conn:
            conn.select(FOLDER, readonly=True)
            _typ, data = conn.uid("SEARCH", "ALL")
    finally:
        imaplib._MAXLINE = cap  # type: ignore[attr-defined]
    return len(b"* SEARCH " + (data[0] or b"") + b"\r\n")


@dataclass
class Searches:
    """The ``UID SEARCH`` commands one call made, and the seconds they took."""

    count: int = 0
    seconds: float = 0.0


def _counting(box: Any, names: Sequence[str], searches: Searches, asynchronous: bool) -> None:
    """Count the Search operations the retriever's performers carry out."""
    for name in names:
        original = getattr(box, name)
        if asynchronous:

            async def perform(op: Any, original: Any = original) -> Any:
                started = time.perf_counter()
                result = await original(op)
                if isinstance(op, Search):
                    searches.count += 1
                    searches.seconds += time.perf_counter() - started
                return result

        else:

            def perform(op: Any, original: Any = original) -> Any:  # type: ignore[misc]
                started = time.perf_counter()
                result = original(op)
                if isinstance(op, Search):
                    searches.count += 1
                    searches.seconds += time.perf_counter() - started
                return result

        setattr(box, name, perform)


@dataclass
class Row:
    layout: str
    backend: str
    call: str
    messages: int
    distinct: int
    searches: int
    search_seconds: float
    seconds: float


def measure(
    url: str, password: str, layout: str, asynchronous: bool, call: str
) -> tuple[Row, list[str]]:
    """Run ``call`` (``messages`` or ``sync``) once on a fresh retriever."""
    options: dict[str, Any] = {"password": password, "tls": "none", "timeout": 120.0}
    options["state"] = mailsync.SQLiteStateStore(":memory:")
    searches = Searches()
    names = ("_perform", "_perform_search") if asynchronous else ("_perform",)

    def source(box: Any) -> Any:
        _counting(box, names, searches, asynchronous)
        if call == "messages":
            return box.messages(FOLDER, headers_only=True)
        return box.sync(FOLDER)

    started = time.perf_counter()
    if asynchronous:

        async def run() -> list[str]:
            async with mailsync.connect_async(url, **options) as box:
                return [m.message_id or "" async for m in source(box)]

        ids = asyncio.run(run())
    else:
        with mailsync.connect(url, **options) as box:
            ids = [m.message_id or "" for m in source(box)]
    seconds = time.perf_counter() - started
    backend = "async" if asynchronous else "sync"
    row = Row(
        layout, backend, call, len(ids), len(set(ids)), searches.count, searches.seconds, seconds
    )
    return row, ids


def before(url: str, password: str, asynchronous: bool) -> str:
    """What one ``UID SEARCH ALL`` of the whole folder (as before windows) comes to."""
    options: dict[str, Any] = {"password": password, "tls": "none", "state": ":memory:"}
    try:
        if asynchronous:

            async def run() -> None:
                async with (
                    mailsync.connect_async(url, **options) as box,
                    box._selected(FOLDER, fresh=True) as (session, _mailbox),
                ):
                    await box._search_criteria(session, [b"ALL"])

            asyncio.run(run())
        else:
            with mailsync.connect(url, **options) as box:
                box._select(FOLDER, readonly=True)
                box._search([b"ALL"], None)
    except mailsync.ProtocolError as exc:
        return f"ProtocolError ({str(exc).split(': ', 1)[-1]})"
    return "answered"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--layouts", default="dense,gaps")
    parser.add_argument("--backends", default="sync,async")
    args = parser.parse_args(argv)
    print(f"line cap {MAX_LINE} bytes: SEARCH windows of at most {search_window()} messages")
    rows: list[Row] = []
    expected: dict[str, set[str]] = {}
    with MailServers() as running:
        for layout in args.layouts.split(","):
            account = running.new_account("big")
            total = args.messages if layout == "dense" else args.messages * 3 // 2
            drop = 0 if layout == "dense" else 2 * (total - args.messages)
            started = time.perf_counter()
            left = seed(running, account, total, drop)
            seeded = time.perf_counter() - started
            expected[layout] = {
                f"big-{index}@example.test"
                for index in range(total)
                if index >= drop or index % 2 == 1
            }
            assert len(expected[layout]) == left, (len(expected[layout]), left)
            line = one_search_line(running, account)
            url = f"imap://{account.user}@{running.host}:{running.imap_port}"
            print(
                f"\n{layout}: {left} messages (seeded in {seeded:.0f} s); one UID SEARCH ALL "
                f"answers a line of {line} bytes"
            )
            for backend in args.backends.split(","):
                asynchronous = backend == "async"
                outcome = before(url, account.password, asynchronous)
                print(f"  {backend} backend, the whole UID SEARCH ALL at once: {outcome}")
                for call in ("messages", "sync"):
                    row, ids = measure(url, account.password, layout, asynchronous, call)
                    assert set(ids) == expected[layout], f"{layout} {backend} {call}: not all"
                    rows.append(row)
    _table(rows)


def _table(rows: list[Row]) -> None:
    print()
    print(
        "| layout | backend | call | messages | distinct | UID SEARCH round trips | searching "
        "| in all |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r.layout} | {r.backend} | {r.call} | {r.messages:,} | {r.distinct:,} | "
            f"{r.searches} | {r.search_seconds:.2f} s | {r.seconds:.1f} s |"
        )


if __name__ == "__main__":
    main()
