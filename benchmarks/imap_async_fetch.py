"""Async IMAP fetch benchmark: mailsync's async backend against aioimaplib's own batched fetch,
and 20 folders fetched concurrently against the same folders one after another.

One run starts the test servers of ``tests/servers.py`` (Dovecot on loopback), seeds the
deterministic corpus of ``benchmarks/_seed.py`` with stdlib imaplib (never mailsync): INBOX with
``--messages`` messages (10,000, ~505 MB by default) and 20 folders of ``--folder-messages``
each. Every measurement is a whole process (interpreter start, imports, connect, login, fetch
every body, exit): the median wall time of ``--runs`` runs (3), and the largest peak RSS.

Cases:

- full fetch of INBOX (plain text, and with ``--tls`` over implicit TLS): aioimaplib with
  500-UID ``UID FETCH (BODY.PEEK[])`` batches (the batch size of the raw imaplib baseline),
  aioimaplib with 100-UID batches (its reader rescans the response for every line, so smaller
  batches suit it), mailsync ``async for m in box.messages()``, and raw stdlib imaplib
  (500-UID batches) for reference;
- 20 folders: mailsync async, one retriever reading the folders one after another, against 20
  retrievers (one connection each) reading them concurrently with ``asyncio.gather``.

``CASES`` and ``FULL_FETCH`` follow the plug-in convention of ``benchmarks/imap_fetch.py`` (a
case takes the config dict and returns ``(messages, bytes)``), so that benchmark can run these
cases in its own table too.

    python benchmarks/imap_async_fetch.py                        # the full run (minutes)
    python benchmarks/imap_async_fetch.py --messages 500 --folder-messages 20 --runs 1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

FOLDERS = 20

# -- the measured programs (run in a child process) ---------------------------------------------


async def _aioimaplib_fetch(cfg: dict[str, Any], batch: int) -> tuple[int, int]:
    import ssl

    import aioimaplib

    if cfg["tls"]:
        context = ssl.create_default_context(cafile=cfg["cafile"])
        client = aioimaplib.IMAP4_SSL(cfg["host"], cfg["port"], ssl_context=context)
    else:
        client = aioimaplib.IMAP4(cfg["host"], cfg["port"])
    await client.wait_hello_from_server()
    await client.login(cfg["user"], cfg["password"])
    await client.select(f'"{cfg["folder"]}"')
    found = await client.uid_search("ALL", charset=None)
    uids = found.lines[0].split()
    count = total = 0
    for start in range(0, len(uids), batch):
        uid_set = b",".join(uids[start : start + batch]).decode()
        response = await client.uid("fetch", uid_set, "(BODY.PEEK[])")
        assert response.result == "OK", response
        for line in response.lines:
            if isinstance(line, bytearray):  # aioimaplib hands each literal over as one
                count += 1
                total += len(line)
    await client.logout()
    return count, total


def case_aioimaplib_500(cfg: dict[str, Any]) -> tuple[int, int]:
    """aioimaplib: UID SEARCH ALL, then 500-UID ``UID FETCH (BODY.PEEK[])`` batches."""
    return asyncio.run(_aioimaplib_fetch(cfg, 500))


def case_aioimaplib_100(cfg: dict[str, Any]) -> tuple[int, int]:
    """aioimaplib: the same with 100-UID batches."""
    return asyncio.run(_aioimaplib_fetch(cfg, 100))


def _async_box(cfg: dict[str, Any]) -> Any:
    import ssl

    import mailsync

    scheme = "imaps" if cfg["tls"] else "imap"
    options: dict[str, Any] = {"password": cfg["password"], "state": ":memory:"}
    if cfg["tls"]:
        options["verify"] = ssl.create_default_context(cafile=cfg["cafile"])
    else:
        options["tls"] = "none"
    return mailsync.connect_async(
        f"{scheme}://{cfg['user']}@{cfg['host']}:{cfg['port']}", **options
    )


async def _read(box: Any, folder: str) -> tuple[int, int]:
    count = total = 0
    async for message in box.messages(folder):
        count += 1
        total += len(message.raw)
    return count, total


def case_mailsync_async(cfg: dict[str, Any]) -> tuple[int, int]:
    """mailsync async: ``async for m in box.messages(folder)``."""

    async def run() -> tuple[int, int]:
        async with _async_box(cfg) as box:
            return await _read(box, cfg["folder"])

    return asyncio.run(run())


def case_raw_imaplib(cfg: dict[str, Any]) -> tuple[int, int]:
    """Stdlib imaplib: UID SEARCH ALL, then 500-UID ``UID FETCH (BODY.PEEK[])`` batches."""
    import imaplib
    import ssl

    if cfg["tls"]:
        context = ssl.create_default_context(cafile=cfg["cafile"])
        conn: imaplib.IMAP4 = imaplib.IMAP4_SSL(cfg["host"], cfg["port"], ssl_context=context)
    else:
        conn = imaplib.IMAP4(cfg["host"], cfg["port"])
    conn.login(cfg["user"], cfg["password"])
    conn.select(f'"{cfg["folder"]}"', readonly=True)
    _typ, data = conn.uid("SEARCH", None, "ALL")
    uids = (data[0] or b"").split()
    count = total = 0
    for start in range(0, len(uids), 500):
        _typ, items = conn.uid(
            "FETCH", b",".join(uids[start : start + 500]).decode(), "(BODY.PEEK[])"
        )
        for item in items:
            if isinstance(item, tuple):
                count += 1
                total += len(item[1])
    conn.logout()
    return count, total


def case_folders_sequential(cfg: dict[str, Any]) -> tuple[int, int]:
    """mailsync async: one retriever reads the 20 folders one after another."""

    async def run() -> tuple[int, int]:
        count = total = 0
        async with _async_box(cfg) as box:
            for folder in cfg["folders"]:
                got, size = await _read(box, folder)
                count, total = count + got, total + size
        return count, total

    return asyncio.run(run())


def case_folders_concurrent(cfg: dict[str, Any]) -> tuple[int, int]:
    """mailsync async: 20 retrievers (one connection each) read the folders concurrently."""

    async def one(folder: str) -> tuple[int, int]:
        async with _async_box(cfg) as box:
            return await _read(box, folder)

    async def run() -> tuple[int, int]:
        results = await asyncio.gather(*(one(folder) for folder in cfg["folders"]))
        return sum(r[0] for r in results), sum(r[1] for r in results)

    return asyncio.run(run())


CASES: dict[str, Callable[[dict[str, Any]], tuple[int, int]]] = {
    "aioimaplib (500-UID batches)": case_aioimaplib_500,
    "aioimaplib (100-UID batches)": case_aioimaplib_100,
    "mailsync async": case_mailsync_async,
    "raw imaplib (500-UID batches)": case_raw_imaplib,
    "20 folders one after another": case_folders_sequential,
    "20 folders concurrently": case_folders_concurrent,
}
#: The cases that read INBOX whole (what ``benchmarks/imap_fetch.py`` may add to its table).
FULL_FETCH = ["aioimaplib (500-UID batches)", "mailsync async"]


# -- the parent: servers, seeding, runs, table --------------------------------------------------


@dataclass
class Result:
    """The measurements of one case: whole-process wall times, and the time the reading
    itself took inside the process (connect to last message, imports excluded)."""

    section: str
    name: str
    times: list[float] = field(default_factory=list)
    work: list[float] = field(default_factory=list)
    rss_mb: float = 0.0
    messages: int = 0
    megabytes: float = 0.0

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def work_median(self) -> float:
        return statistics.median(self.work)


def child(name: str, cfg_json: str) -> None:
    """Run one case in this process and print its result as JSON."""
    import aioimaplib  # noqa: F401 - imported before the clock starts, like mailsync

    import mailsync
    import mailsync.backends.imap_async  # noqa: F401

    started = time.perf_counter()
    count, total = CASES[name](json.loads(cfg_json))
    seconds = time.perf_counter() - started
    print(json.dumps({"messages": count, "bytes": total, "seconds": seconds}))


def measure(command: Sequence[str]) -> None:
    """Run ``command`` as a child and print its wall time, peak RSS and output as JSON.

    A helper process per measurement, so that ``RUSAGE_CHILDREN`` is exactly that child's.
    """
    started = time.perf_counter()
    completed = subprocess.run(list(command), capture_output=True, cwd=str(ROOT), check=False)
    wall = time.perf_counter() - started
    if completed.returncode != 0:
        sys.stderr.write(completed.stderr.decode(errors="replace")[-4000:])
        sys.exit(completed.returncode)
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    output = json.loads(completed.stdout.decode().strip().splitlines()[-1])
    print(json.dumps({"wall": wall, "rss_mb": rss, "output": output}))


def run_once(result: Result, cfg: dict[str, Any], timeout: float) -> None:
    """Run the case of ``result`` once in a fresh process and add what it measured."""
    me = str(HERE / "imap_async_fetch.py")
    command = [sys.executable, me, "--measure", "--", sys.executable, me, "--child", result.name]
    command.append(json.dumps(cfg))
    completed = subprocess.run(
        command, capture_output=True, cwd=str(ROOT), timeout=timeout, check=False
    )
    if completed.returncode != 0:
        tail = completed.stderr.decode(errors="replace")[-2000:]
        raise RuntimeError(f"{result.name} failed: {tail}")
    report = json.loads(completed.stdout.decode().strip().splitlines()[-1])
    output = report["output"]
    result.times.append(report["wall"])
    result.work.append(output["seconds"])
    result.rss_mb = max(result.rss_mb, report["rss_mb"])
    result.messages = output["messages"]
    result.megabytes = output["bytes"] / 1e6


def run_section(
    section: str, names: Sequence[str], cfg: dict[str, Any], args: argparse.Namespace
) -> list[Result]:
    """Every case of a section, ``--runs`` times, interleaved so that a slow spell of the
    (shared) machine does not land on one case only."""
    results = [Result(section, name) for name in names]
    for _ in range(args.runs):
        for result in results:
            run_once(result, cfg, args.timeout)
    for r in results:
        runs = ", ".join(f"{t:.2f}" for t in r.times)
        print(f"  {section} / {r.name}: {runs} s", file=sys.stderr)
    return results


def format_table(results: list[Result], baselines: dict[str, str]) -> str:
    """A Markdown table; each row compared with its section's baseline case."""
    by_name = {(r.section, r.name): r for r in results}
    lines = [
        "| case | tool | messages | MB | wall s (median) | runs (s) | vs baseline "
        "| reading s (median) | vs baseline | peak RSS MB |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in results:
        base = by_name.get((r.section, baselines.get(r.section, "")))
        ratio = f"{r.median / base.median:.2f}×" if base else "—"
        work_ratio = f"{r.work_median / base.work_median:.2f}×" if base else "—"
        runs = ", ".join(f"{t:.2f}" for t in r.times)
        lines.append(
            f"| {r.section} | {r.name} | {r.messages} | {r.megabytes:.0f} | {r.median:.2f} "
            f"| {runs} | {ratio} | {r.work_median:.2f} | {work_ratio} | {r.rss_mb:.0f} |"
        )
    return "\n".join(lines)


def benchmark(args: argparse.Namespace) -> tuple[list[Result], dict[str, str]]:
    from _seed import seed_folder
    from tests.servers import MailServers

    results: list[Result] = []
    baselines: dict[str, str] = {}
    with MailServers() as servers:
        account = servers.new_account("bench")
        started = time.perf_counter()
        size = seed_folder(servers, account, args.messages)
        folders = [f"Folder{i:02d}" for i in range(FOLDERS)]
        for i, folder in enumerate(folders):
            start = args.messages + i * args.folder_messages
            size += seed_folder(servers, account, args.folder_messages, folder=folder, start=start)
        print(
            f"seeded {size / 1e6:.0f} MB in {time.perf_counter() - started:.1f}s", file=sys.stderr
        )
        cfg = {
            "host": servers.host,
            "port": servers.imap_port,
            "tls": False,
            "user": account.user,
            "password": account.password,
            "cafile": servers.cafile,
            "folder": "INBOX",
            "folders": folders,
        }
        full = [
            "aioimaplib (500-UID batches)",
            "aioimaplib (100-UID batches)",
            "mailsync async",
            "raw imaplib (500-UID batches)",
        ]
        section = f"full fetch {args.messages}, plain"
        baselines[section] = full[0]
        results += run_section(section, full, cfg, args)
        if args.tls:
            tls = {**cfg, "port": servers.imaps_port, "tls": True}
            section = f"full fetch {args.messages}, TLS"
            baselines[section] = full[0]
            results += run_section(section, [full[0], *full[2:]], tls, args)
        section = f"{FOLDERS} folders × {args.folder_messages}, plain"
        names = ["20 folders one after another", "20 folders concurrently"]
        baselines[section] = names[0]
        results += run_section(section, names, cfg, args)
    return results, baselines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Async IMAP fetch benchmark (see docstring)")
    parser.add_argument("--messages", type=int, default=10_000, help="messages in INBOX")
    parser.add_argument(
        "--folder-messages", type=int, default=250, help="messages in each of the 20 folders"
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per case (median reported)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per run")
    parser.add_argument("--tls", action="store_true", help="also the full fetch over TLS")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    parser.add_argument("--child", nargs=2, metavar=("CASE", "CONFIG"), help=argparse.SUPPRESS)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("command", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return
    if args.measure:
        measure(args.command)
        return
    results, baselines = benchmark(args)
    table = format_table(results, baselines)
    print(table)
    if args.markdown:
        with contextlib.suppress(OSError):
            args.markdown.write_text(table + "\n")


if __name__ == "__main__":
    main()
