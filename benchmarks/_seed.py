"""The deterministic benchmark corpus, and seeding it into the test Dovecot with stdlib imaplib.

``corpus(n)`` yields ``n`` messages: multipart/alternative text + html bodies of 2–20 KB, and
every twentieth (5%) also carries a 100 KB–1 MB binary attachment; 10,000 of them make about
500 MB. The same ``n`` and ``seed`` always give the same bytes, so every tool in a benchmark
run reads identical mail. Seeding uses stdlib ``imaplib`` APPEND over a few parallel
connections (never mailsync), so the benchmark does not depend on the code it measures.

Shared by the IMAP and POP3 benchmarks; run ``python benchmarks/_seed.py --messages 100`` to
print the size of a corpus without seeding anything.
"""

from __future__ import annotations

import argparse
import base64
import random
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

if TYPE_CHECKING:
    from tests.servers import Account, MailServers

__all__ = ["corpus", "make_message", "seed_folder"]

_WORDS = [
    "mail",
    "sync",
    "folder",
    "message",
    "server",
    "client",
    "protocol",
    "literal",
    "fetch",
    "batch",
    "cursor",
    "idle",
    "invoice",
    "meeting",
    "report",
    "quarter",
    "budget",
    "review",
    "draft",
    "project",
    "deadline",
    "update",
    "notes",
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "theta",
    "kappa",
    "lambda",
    "sigma",
    "omega",
    "the",
    "of",
    "and",
    "to",
    "in",
]
_ATTACHMENT_EVERY = 20  # 5% of messages


def _text(rng: random.Random, size: int) -> str:
    words: list[str] = []
    length = 0
    while length < size:
        line = " ".join(rng.choice(_WORDS) for _ in range(12))
        words.append(line)
        length += len(line) + 2
    return "\r\n".join(words)


def make_message(index: int, *, seed: int = 0) -> bytes:
    """Message number ``index`` of the corpus (bytes with CRLF line endings)."""
    rng = random.Random(seed * 1_000_003 + index)
    body_size = rng.randint(2_000, 20_000)
    text = _text(rng, body_size // 2)
    html = "<html><body><p>" + _text(rng, body_size // 2 - 40) + "</p></body></html>"
    when = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(minutes=index)
    boundary = f"b{index:06d}"
    head = (
        f"From: Sender {index % 97} <sender{index % 97}@example.test>\r\n"
        f"To: Bench <bench@example.test>\r\n"
        f"Subject: Benchmark message {index}\r\n"
        f"Date: {format_datetime(when)}\r\n"
        f"Message-ID: <bench-{seed}-{index}@example.test>\r\n"
        "MIME-Version: 1.0\r\n"
    )
    alternative = (
        f'Content-Type: multipart/alternative; boundary="{boundary}a"\r\n\r\n'
        f"--{boundary}a\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"
        f"--{boundary}a\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n"
        f"--{boundary}a--\r\n"
    )
    if index % _ATTACHMENT_EVERY != _ATTACHMENT_EVERY - 1:
        return (head + alternative).encode()
    blob = rng.randbytes(rng.randint(100_000, 1_000_000))
    encoded = base64.encodebytes(blob).replace(b"\n", b"\r\n")
    return (
        (
            head + f'Content-Type: multipart/mixed; boundary="{boundary}m"\r\n\r\n'
            f"--{boundary}m\r\n" + alternative + f"--{boundary}m\r\n"
            "Content-Type: application/octet-stream\r\n"
            f'Content-Disposition: attachment; filename="data-{index}.bin"\r\n'
            "Content-Transfer-Encoding: base64\r\n\r\n"
        ).encode()
        + encoded
        + f"--{boundary}m--\r\n".encode()
    )


def corpus(count: int, *, start: int = 0, seed: int = 0) -> Iterator[bytes]:
    """Messages ``start`` to ``start + count - 1`` of the corpus."""
    for index in range(start, start + count):
        yield make_message(index, seed=seed)


def _quote(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def seed_folder(
    servers: MailServers,
    account: Account,
    count: int,
    *,
    folder: str = "INBOX",
    start: int = 0,
    seed: int = 0,
) -> int:
    """APPEND messages ``start .. start + count - 1`` to ``folder`` in order over one stdlib
    connection (UIDs ascend with the index), creating the folder if needed.

    Returns:
        The number of bytes appended.
    """
    if folder.upper() != "INBOX" and folder not in servers.folders(account):
        servers.create_folder(account, folder)
    total = 0
    with servers.imap(account) as conn:
        for raw in corpus(count, start=start, seed=seed):
            typ, data = conn.append(_quote(folder), None, None, raw)
            if typ != "OK":
                raise RuntimeError(f"APPEND to {folder} failed: {data!r}")
            total += len(raw)
    return total


def main(argv: Sequence[str] | None = None) -> None:
    """Print the size of a corpus (no server needed)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    args = parser.parse_args(argv)
    sizes = [len(raw) for raw in corpus(args.messages)]
    with_attachment = sum(1 for i in range(args.messages) if i % _ATTACHMENT_EVERY == 19)
    print(
        f"{args.messages} messages, {sum(sizes) / 1e6:.1f} MB, {with_attachment} with "
        f"attachments, largest {max(sizes) / 1e6:.2f} MB"
    )


if __name__ == "__main__":
    main()
