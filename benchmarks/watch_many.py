"""watch_many at scale: N IMAP accounts (IDLE) watched by one process, against the test Dovecot.

For each N: create N accounts, start ``mailsync.watch_many`` over them (one SQLite state store),
wait until every account is watching (the start-up time), let it settle, measure the CPU used
while idle, then deliver one message to every account over LMTP from a separate process,
spread over ``--spread`` seconds, and time each from the moment its LMTP delivery finished to
the moment the consumer got it. Prints one table row per N: start-up time, latency
percentiles, peak RSS of the watching process, CPU while idle and while delivering.

    python benchmarks/watch_many.py --accounts 100 1000 5000
    python benchmarks/watch_many.py --accounts 1000 --profile /tmp/watch.raw   # where CPU goes

Dovecot is tuned as DESIGN.md says (imap processes shared by 50 sessions, process limits
raised to fit N, ``mailbox_idle_check_interval = 1 secs`` because past ~128 IDLE sessions
the mail user runs out of inotify instances). Needs root and the Dovecot/Postfix packages,
like the tests.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import resource
import shutil
import signal
import smtplib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.servers import HOST, MailServers, wait_for

import mailsync

PASSWORD = "bench-password"
SESSIONS_PER_PROCESS = 50


class TunedServers(MailServers):
    """The test servers with room for ``sessions`` IMAP sessions."""

    def __init__(self, sessions: int) -> None:
        super().__init__()
        self.sessions = sessions

    def _write_dovecot_config(self) -> None:
        super()._write_dovecot_config()
        path = Path(self.dovecot_config)
        text = path.read_text()
        processes = self.sessions // SESSIONS_PER_PROCESS + 20
        clients = self.sessions * 2 + 1000
        text = re.sub(r"default_process_limit = \d+", f"default_process_limit = {processes}", text)
        text = re.sub(r"default_client_limit = \d+", f"default_client_limit = {clients}", text)
        text = re.sub(
            r"(service imap \{\n  service_count = 0\n  client_limit = \d+\n  process_limit = )\d+",
            rf"\g<1>{processes}",
            text,
        )
        text = text.replace(
            "service imap-login {\n  service_count = 0\n  process_min_avail = 2",
            "service imap-login {\n  service_count = 0\n  process_min_avail = 2\n"
            f"  client_limit = {clients}",
        )
        path.write_text(text)


def _deliver(port: int, addresses: list[str], spread: float, out: str) -> None:
    """A separate process: one message per address, evenly over ``spread`` seconds; writes
    ``address time`` once each LMTP transaction has finished."""
    start = time.time()
    lines = []
    lmtp = smtplib.LMTP(HOST, port, timeout=60)
    for i, address in enumerate(addresses):
        due = start + spread * i / max(len(addresses), 1)
        time.sleep(max(0.0, due - time.time()))
        raw = f"From: b@example.test\r\nTo: {address}\r\nSubject: {address}\r\n\r\nx\r\n"
        lmtp.sendmail("bench@example.test", [address], raw.encode())
        lines.append(f"{address} {time.time()}\n")
    lmtp.quit()
    Path(out).write_text("".join(lines))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _profiler(path: str | None) -> subprocess.Popen[bytes] | None:
    """py-spy sampling this process (every thread) into ``path``, in its collapsed-stack
    ("raw") format, or None when not asked for."""
    if path is None:
        return None
    spy = shutil.which("py-spy")
    if spy is None:
        raise SystemExit("--profile needs py-spy (pip install py-spy)")
    command = [spy, "record", "--pid", str(os.getpid()), "--format", "raw", "--output", path]
    command += ["--rate", "250", "--nonblocking", "--full-filenames", "--gil"]
    profiler = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)  # attaching takes a moment
    return profiler


def measure(
    count: int, spread: float, per_host: int, profile: str | None = None
) -> dict[str, float]:
    with TunedServers(count) as servers, tempfile.TemporaryDirectory() as tmp:
        accounts = [servers.new_account("w", password=PASSWORD) for _ in range(count)]
        store = mailsync.SQLiteStateStore(Path(tmp) / "state.sqlite3")
        boxes = [
            mailsync.connect(
                f"imap://{a.user}@{HOST}:{servers.imap_port}",
                password=PASSWORD,
                tls="none",
                timeout=60,
                state=store,
            )
            for a in accounts
        ]
        arrived: dict[str, float] = {}
        watcher = mailsync.watch_many(boxes, per_host=per_host)

        def consume() -> None:
            for _box, message in watcher:
                arrived[message.subject or ""] = time.time()

        started = time.monotonic()
        thread = threading.Thread(target=consume, daemon=True)
        thread.start()
        wait_for(
            lambda: all(s.state == "watching" for _, s in watcher.statuses),
            timeout=600,
            interval=0.5,
            message=f"{count} accounts watching",
        )
        startup = time.monotonic() - started
        # "Watching" is set as an account turns to wait for mail; the last of thousands are
        # still issuing IDLE then: let that settle before calling the process idle.
        time.sleep(15)
        cpu0, idle0 = _cpu(), time.monotonic()
        time.sleep(10)
        idle_cpu = (_cpu() - cpu0) / (time.monotonic() - idle0)
        out = Path(tmp) / "delivered.txt"
        profiler = _profiler(profile)
        cpu1 = _cpu()
        proc = multiprocessing.get_context("spawn").Process(
            target=_deliver, args=(servers.lmtp_port, [a.email for a in accounts], spread, str(out))
        )
        proc.start()
        proc.join(spread + 600)
        wait_for(lambda: len(arrived) >= count, timeout=300, interval=0.2, message="all arrived")
        busy_cpu = _cpu() - cpu1
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)  # py-spy writes its file when interrupted
            profiler.wait(60)
        delivered = {
            line.split()[0]: float(line.split()[1]) for line in out.read_text().splitlines()
        }
        latencies = sorted(max(0.0, arrived[a] - t) for a, t in delivered.items())
        watcher.stop()
        watcher.close()
        thread.join(60)
        store.close()
        cuts = statistics.quantiles(latencies, n=100)
        return {
            "accounts": count,
            "startup": startup,
            "p50": cuts[49],
            "p90": cuts[89],
            "p99": cuts[98],
            "max": latencies[-1],
            "rss": _rss_mb(),
            "idle_cpu": idle_cpu * 100,
            "busy_cpu": busy_cpu,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--spread", type=float, default=None, help="delivery seconds (N/200)")
    parser.add_argument("--per-host", type=int, default=20)
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="with one --accounts size: sample the watcher with py-spy while mail is "
        "delivered, into FILE (collapsed stacks)",
    )
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child measuring one N
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.spread, args.per_host, args.profile)))
        return
    if args.profile and len(args.accounts) != 1:
        parser.error("--profile takes one --accounts size")
    print("| accounts | start-up | p50 | p90 | p99 | max | peak RSS | idle CPU | CPU delivering |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for count in args.accounts:
        spread = args.spread if args.spread is not None else max(5.0, min(30.0, count / 200))
        # Each size in a fresh process, so peak RSS is that size's own.
        child = subprocess.run(
            [
                *(sys.executable, __file__, "--one", str(count)),
                *("--spread", str(spread), "--per-host", str(args.per_host)),
                *(("--profile", args.profile) if args.profile else ()),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        row = json.loads(child.stdout.strip().splitlines()[-1])
        print(
            f"| {row['accounts']:,} | {row['startup']:.0f} s | {row['p50']:.2f} s "
            f"| {row['p90']:.2f} s | {row['p99']:.2f} s | {row['max']:.2f} s "
            f"| {row['rss']:.0f} MB | {row['idle_cpu']:.1f}% | {row['busy_cpu']:.1f} s "
            f"(over {spread:.0f} s) |",
            flush=True,
        )


if __name__ == "__main__":
    main()
