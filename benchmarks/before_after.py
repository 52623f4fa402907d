"""Before/after benchmark: the same mailsync rows measured on two checkouts in one session.

A change that must not make anything slower (issue 10's refactor, say) is judged by this
script: it starts the test servers of ``tests/servers.py`` once, seeds them once, and then runs
the mailsync programs of the other benchmarks (``imap_fetch.py``, ``imap_async_fetch.py``,
``pop3_fetch.py``, ``smtp_send.py``) with each checkout's own interpreter and code, taking turns
run by run: before, after, after, before, ... so that a burst of load from other work on a
shared machine, or a drift over the minutes, weighs on both columns alike. Each run is a whole
fresh process (interpreter start, imports, connect, work, exit), as in those benchmarks; a row
reports the median of ``--rounds`` runs per checkout and the ratio after/before.

Rows: IMAP full fetch (plain, TLS, async plain), IMAP ``sync()`` picking up 10 new messages in
folders of 1,000 and ``--messages``, POP3 full download (sync and async) and SMTP
``send_many`` (sync and async; submission and plain ports, the sending alone as the child
measures it).

A checkout is a directory with the code and a virtualenv in ``.venv`` (``pip install -e
'.[dev,async]'``); the current one is the "after" side unless ``--after`` says otherwise:

    git worktree add --detach ../before <commit>    # then make its .venv
    python benchmarks/before_after.py --before ../before
    python benchmarks/before_after.py --before ../before --messages 1000 --rounds 3   # a look

Needs root and the Dovecot/Postfix packages, as the test servers do.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import imap_fetch  # noqa: E402
import pop3_fetch  # noqa: E402
import smtp_send  # noqa: E402

TIME = "/usr/bin/time"  # GNU time: the peak RSS of the process it starts (see pop3_fetch)
ENV = smtp_send.ENV  # children run from bytecode, as installed software does
SIDES = ("before", "after")


@dataclass
class Checkout:
    """One side of the comparison: a source tree and the interpreter of its virtualenv."""

    label: str
    root: Path

    @property
    def python(self) -> str:
        return str(self.root / ".venv" / "bin" / "python")

    @property
    def benchmarks(self) -> Path:
        return self.root / "benchmarks"


@dataclass
class Row:
    """One measured program, timed on both checkouts."""

    name: str
    command: Callable[[Checkout], list[str]]
    stdin: Callable[[Checkout], str | None] = lambda _: None
    before_each: Callable[[Checkout], None] = lambda _: None
    # SMTP rows time the sending alone, as the child reports it, besides the whole process.
    reports_send: bool = False
    walls: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in SIDES})
    sends: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in SIDES})
    rss: dict[str, float] = field(default_factory=lambda: dict.fromkeys(SIDES, 0.0))
    # The child's own CPU seconds (user + system): far steadier than wall time when other
    # work shares the machine, though blind to waiting (round trips, the server's pace).
    cpu: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in SIDES})


def run_once(row: Row, checkout: Checkout, workdir: Path) -> None:
    """One run of ``row`` on ``checkout``: wall time, peak RSS and the child's own report."""
    row.before_each(checkout)
    rss_file = workdir / "maxrss"
    command = [TIME, "-f", "%M %U %S", "-o", str(rss_file), *row.command(checkout)]
    started = time.perf_counter()
    done = subprocess.run(
        command,
        input=row.stdin(checkout),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        cwd=checkout.benchmarks,
        env=ENV,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{row.name} ({checkout.label}) failed:\n{done.stderr[-3000:]}")
    row.walls[checkout.label].append(wall)
    peak_kb, user, system = rss_file.read_text().split()[-3:]
    row.rss[checkout.label] = max(row.rss[checkout.label], int(peak_kb) / 1024)
    row.cpu[checkout.label].append(float(user) + float(system))
    if row.reports_send:
        report = json.loads(done.stdout.strip().splitlines()[-1])
        row.sends[checkout.label].append(float(report["send_seconds"]))
    print(f"  {row.name:42} {checkout.label:6} {wall:6.2f}s", file=sys.stderr, flush=True)


def measure(rows: list[Row], checkouts: list[Checkout], rounds: int, workdir: Path) -> None:
    """Every row, ``rounds`` runs per checkout, alternating and swapping who goes first."""
    for row in rows:
        run_once(row, checkouts[0], workdir)  # untimed: server caches, bytecode
        row.walls["before"].clear()
        row.rss["before"] = 0.0
        row.sends["before"].clear()
        row.cpu["before"].clear()
        for n in range(rounds):
            for checkout in checkouts if n % 2 == 0 else checkouts[::-1]:
                run_once(row, checkout, workdir)


def table(rows: list[Row], rounds: int) -> str:
    lines = [
        "| row | before s (median) | after s (median) | after/before | before runs | "
        "after runs | client CPU s before / after (median) | CPU after/before | "
        "peak RSS MB before / after |",
        "|---|---:|---:|---:|---|---|---:|---:|---:|",
    ]
    for row in rows:
        cpu = {s: statistics.median(row.cpu[s]) for s in SIDES}
        columns = [(row.name, row.walls)]
        if row.reports_send:
            columns = [
                (f"{row.name}, sending", row.sends),
                (f"{row.name}, whole process", row.walls),
            ]
        for name, runs in columns:
            before, after = (statistics.median(runs[s]) for s in SIDES)
            lines.append(
                f"| {name} | {before:.3f} | {after:.3f} | {after / before:.3f} | "
                + " | ".join(", ".join(f"{t:.2f}" for t in runs[s]) for s in SIDES)
                + f" | {cpu['before']:.2f} / {cpu['after']:.2f} | "
                f"{cpu['after'] / cpu['before']:.3f} | "
                f"{row.rss['before']:.0f} / {row.rss['after']:.0f} |"
            )
    lines.append("")
    lines.append(f"Median of {rounds} runs per side, taken in alternation.")
    return "\n".join(lines)


# -- the rows ---------------------------------------------------------------------------------


def imap_rows(servers: Any, args: argparse.Namespace, workdir: Path) -> list[Row]:
    """Full fetch plain, TLS and async, and sync() +10 in 1,000 and ``--messages``."""
    from _seed import seed_folder

    account = servers.new_account("bench")
    seed_folder(servers, account, args.messages)
    plain, tls = imap_fetch.account_configs(servers, account)

    def case(name: str, cfg: dict[str, Any]) -> Callable[[Checkout], list[str]]:
        return lambda c: [
            c.python,
            str(c.benchmarks / "imap_fetch.py"),
            "--child",
            name,
            *[json.dumps(cfg)],
        ]

    rows = [
        Row(f"IMAP full fetch {args.messages}, plain", case("mailsync", plain)),
        Row(f"IMAP full fetch {args.messages}, TLS", case("mailsync", tls)),
        Row(f"IMAP async full fetch {args.messages}, plain", case("mailsync async", plain)),
    ]
    for size in sorted({min(1000, args.messages), args.messages}):
        folder = "INBOX" if size == args.messages else f"Sync{size}"
        if folder != "INBOX":
            seed_folder(servers, account, size, folder=folder)
        cfg = {**plain, "folder": folder}
        # Each side makes its own cursor with its own code (the state store's schema is that
        # code's), and every run starts from a copy of it.
        states = {s: workdir / f"state-{size}-{s}.sqlite" for s in SIDES}
        for side, state in states.items():
            _initial_sync(args.checkouts[side], cfg, state, account.password)
        seed_folder(servers, account, 10, folder=folder, start=10_000_000 + size, seed=1)
        rows.append(_sync_row(f"IMAP sync() +10 in {size}", cfg, states))
    return rows


def _initial_sync(checkout: Checkout, cfg: dict[str, Any], state: Path, password: str) -> None:
    program = (
        "import sys, mailsync\n"
        "url, password, state, folder = sys.argv[1:5]\n"
        "with mailsync.connect(url, password=password, tls='none', state=state) as box:\n"
        "    for _ in box.sync(folder):\n"
        "        pass\n"
    )
    url = f"imap://{cfg['user']}@{cfg['host']}:{cfg['port']}"
    subprocess.run(
        [checkout.python, "-c", program, url, password, str(state), cfg["folder"]],
        check=True,
        env=ENV,
    )
    imap_fetch._copy_database(state, state.with_suffix(".pristine"))


def _sync_row(name: str, cfg: dict[str, Any], states: dict[str, Path]) -> Row:
    def command(c: Checkout) -> list[str]:
        mine = json.dumps({**cfg, "state": str(states[c.label])})
        return [c.python, str(c.benchmarks / "imap_fetch.py"), "--child", "mailsync sync()", mine]

    def restore(c: Checkout) -> None:
        state = states[c.label]
        imap_fetch._copy_database(state.with_suffix(".pristine"), state)

    return Row(name, command, before_each=restore)


def pop3_rows(servers: Any, args: argparse.Namespace) -> list[Row]:
    """POP3 full download, sync and async, of pop3_fetch.py's corpus."""
    account = servers.new_account("pop")
    pop3_fetch.seed(servers, account, args.messages)
    argv = [servers.host, str(servers.pop3_port), account.user, account.password]
    return [
        Row(
            f"POP3 full download {args.messages}, sync",
            lambda c: [c.python, "-c", pop3_fetch.MAILSYNC_SYNC, *argv],
        ),
        Row(
            f"POP3 full download {args.messages}, async",
            lambda c: [c.python, "-c", pop3_fetch.MAILSYNC_ASYNC, *argv],
        ),
    ]


def smtp_rows(servers: Any, args: argparse.Namespace, workdir: Path) -> list[Row]:
    """send_many, sync and async, on the submission port (STARTTLS + AUTH) and the plain one."""
    rows = []
    for label, port, tls in (
        ("submission", servers.submission_port, "starttls"),
        ("plain", servers.smtp_port, "none"),
    ):
        setup = smtp_send.Setup(label, args.smtp_count, port, tls)
        config = smtp_send.config_for(servers, setup, port, workdir)
        smtp_send.warm_up(config)
        for name, title in (("mailsync", "sync"), ("mailsync-async", "async")):
            rows.append(
                Row(
                    f"SMTP send_many {args.smtp_count}, {label}, {title}",
                    _smtp_command(name),
                    stdin=lambda _c, config=config: json.dumps(config),
                    before_each=lambda _c: smtp_send.wait_for_empty_queue(servers),
                    reports_send=True,
                )
            )
    return rows


def _smtp_command(name: str) -> Callable[[Checkout], list[str]]:
    program = "import sys, smtp_send; smtp_send.child(sys.argv[1])"
    return lambda c: [c.python, "-c", program, name]


def _check_imports_own_code(checkout: Checkout) -> None:
    """Refuse a checkout whose interpreter would import some other tree's mailsync."""
    where = subprocess.run(
        [checkout.python, "-c", "import mailsync; print(mailsync.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=checkout.benchmarks,
    ).stdout.strip()
    if not Path(where).resolve().is_relative_to(checkout.root):
        raise SystemExit(f"{checkout.python} imports mailsync from {where}, not {checkout.root}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="checkout with a .venv")
    parser.add_argument("--after", type=Path, default=ROOT, help="checkout (default: this one)")
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--smtp-count", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=7, help="runs per side and row")
    parser.add_argument("--only", default="imap,pop3,smtp", help="comma-separated: imap,pop3,smtp")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    args.checkouts = {
        "before": Checkout("before", args.before.resolve()),
        "after": Checkout("after", args.after.resolve()),
    }
    for checkout in args.checkouts.values():
        _check_imports_own_code(checkout)
        compileall.compile_dir(checkout.root / "src", quiet=1)
        compileall.compile_dir(checkout.benchmarks, quiet=1, maxlevels=0)
    if smtp_send.tmpfs_usable(smtp_send.TMPFS):
        tempfile.tempdir = str(smtp_send.TMPFS)  # as smtp_send.py: no disk behind fsync
    from tests.servers import MailServers

    wanted = args.only.split(",")
    with MailServers() as servers, tempfile.TemporaryDirectory() as temp:
        workdir = Path(temp)
        rows: list[Row] = []
        if "imap" in wanted:
            rows += imap_rows(servers, args, workdir)
        if "pop3" in wanted:
            rows += pop3_rows(servers, args)
        if "smtp" in wanted:
            rows += smtp_rows(servers, args, workdir)
        print(f"seeded; load average {os.getloadavg()}", file=sys.stderr)
        measure(rows, list(args.checkouts.values()), args.rounds, workdir)
    text = table(rows, args.rounds)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
