"""SMTP send benchmark: mailsync's ``send_many`` against smtplib and aiosmtplib, on the private
Postfix of tests/servers.py.

Every contender sends the same small messages (composed once, read from a file) in a fresh
process; the time is that process's whole wall time (interpreter start to exit), the median of
several runs, plus the time of the sending alone as the process measured it. A message counts
as sent when Postfix has answered 250 to its end of data: Postfix queues and delivers to
Dovecot afterwards, so the benchmark waits for the queue to drain between runs and measures
the client side only. Each setup first sends 20 untimed messages, so that Postfix's daemons
for that port are running before the first measured run.

Setups: the submission port (STARTTLS + AUTH) and the plain port (neither) over loopback, and
the submission port through a user-space proxy that adds a round-trip time (10 ms by default),
where the number of round trips per message, not Postfix, sets the pace.

Where the servers keep their files: on tmpfs (``/dev/shm``) when it is there and usable, else
(and with ``--disk``) in the temp dir, on disk. Postfix fsyncs every queue file it writes
(about 0.8 ms per message on this machine's disk) before it answers the end of data, and that
wait sets the pace of every single-connection client alike: on disk the benchmark measures
the disk, not the client. (The IMAP peers in benchmarks/imap_fetch.py run without fsync for
the same reason.) The table says which file system was used.

mailsync is compiled to bytecode before any run and the children may write bytecode, so wall
times do not include compiling mailsync from source (a ``PYTHONDONTWRITEBYTECODE``
development shell would otherwise make every run compile it, while the stdlib that smtplib
uses ships compiled).

Contenders:

- ``mailsync send_many`` / ``mailsync async send_many``: one connection, pipelined.
- ``smtplib, connection per message``: connect, (STARTTLS, AUTH,) ``sendmail``, QUIT for
  each message: what most wrappers do.
- ``smtplib, one connection``: the hand-written loop: one connection, ``sendmail`` each.
- ``aiosmtplib, one connection``: the same loop with aiosmtplib, if it is installed.

    python benchmarks/smtp_send.py                      # all setups, 1,000 (100) x 3, table
    python benchmarks/smtp_send.py --count 200 --runs 1 --setups plain
    python benchmarks/smtp_send.py --disk               # servers on disk (fsync per message)
    python benchmarks/smtp_send.py --write-docs         # also replace the SMTP section of
                                                        # docs/performance.md

Needs root and the Dovecot/Postfix packages, as the test servers do.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DOCS = ROOT / "docs" / "performance.md"
TMPFS = Path("/dev/shm")
# Children run mailsync as users do, from bytecode (see the module docstring).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
SECTION = "## SMTP send (`benchmarks/smtp_send.py`)"

READING = (
    "How to read this: the servers run on tmpfs because Postfix fsyncs every queue file "
    "before it answers the end of data; on this machine's disk that is about 0.8 ms per "
    "message, and every single-connection client then waits for the disk alike and ties "
    "(`--disk` shows it). The IMAP peers were measured without fsync for the same reason. "
    "Without the disk, Postfix's own work for each message (smtpd, cleanup, and the "
    "delivery to Dovecot running beside it on the same 2 CPUs) sets the pace on loopback, "
    "and what a client can still save is its own CPU time, round trips, and the connection "
    "set-up: expensive with STARTTLS + AUTH, cheap without, which is why a connection per "
    "message costs several times the loop on the submission port and far less on the plain "
    "one. Over a network the round trips per message dominate: `send_many` needs one (each "
    "message's data travels with the next envelope, and the next message is prepared while "
    "the server answers), smtplib and aiosmtplib four (MAIL, RCPT, DATA, end of data), a "
    "connection per message about a dozen."
)

CONTENDERS = {
    "mailsync": "mailsync send_many",
    "mailsync-async": "mailsync async send_many",
    "smtplib-per-message": "smtplib, connection per message",
    "smtplib-loop": "smtplib, one connection (hand-written loop)",
    "aiosmtplib-loop": "aiosmtplib, one connection",
}


# -- the child process: one contender, one run -------------------------------------------------


def _messages(config: dict[str, Any]) -> list[bytes]:
    """The messages the parent composed, as wire bytes (composing is not what is measured)."""
    data = Path(config["messages"]).read_bytes()
    return data.split(b"\0")[: config["count"]]


def _context(config: dict[str, Any]) -> Any:
    import ssl

    return ssl.create_default_context(cafile=config["cafile"])


def _run_mailsync(config: dict[str, Any]) -> None:
    import mailsync

    messages = _messages(config)
    start = time.perf_counter()
    with mailsync.sender(config["url"], **_mailsync_options(config)) as out:
        results = out.send_many(messages)
    _report(start, sum(r.ok for r in results))


def _mailsync_options(config: dict[str, Any]) -> dict[str, Any]:
    if config["tls"] == "none":
        return {"tls": "none"}
    return {"password": config["password"], "verify": _context(config)}


def _run_mailsync_async(config: dict[str, Any]) -> None:
    import asyncio

    import mailsync

    messages = _messages(config)

    async def main() -> int:
        async with mailsync.sender_async(config["url"], **_mailsync_options(config)) as out:
            results = await out.send_many(messages)
        return sum(r.ok for r in results)

    start = time.perf_counter()
    sent = asyncio.run(main())  # a benchmark script owns its loop
    _report(start, sent)


def _smtplib_connection(config: dict[str, Any]) -> Any:
    import smtplib

    conn = smtplib.SMTP(config["host"], config["port"], timeout=30)
    if config["tls"] != "none":
        conn.starttls(context=_context(config))
        conn.login(config["user"], config["password"])
    return conn


def _run_smtplib_per_message(config: dict[str, Any]) -> None:
    messages = _messages(config)
    start = time.perf_counter()
    for message in messages:
        conn = _smtplib_connection(config)
        conn.sendmail(config["sender"], [config["recipient"]], message)
        conn.quit()
    _report(start, len(messages))


def _run_smtplib_loop(config: dict[str, Any]) -> None:
    messages = _messages(config)
    start = time.perf_counter()
    conn = _smtplib_connection(config)
    for message in messages:
        conn.sendmail(config["sender"], [config["recipient"]], message)
    conn.quit()
    _report(start, len(messages))


def _run_aiosmtplib_loop(config: dict[str, Any]) -> None:
    import asyncio

    import aiosmtplib

    messages = _messages(config)

    async def main() -> None:
        tls = config["tls"] != "none"
        client = aiosmtplib.SMTP(
            hostname=config["host"],
            port=config["port"],
            start_tls=tls,
            tls_context=_context(config) if tls else None,
        )
        await client.connect()
        if tls:
            await client.login(config["user"], config["password"])
        for message in messages:
            await client.sendmail(config["sender"], [config["recipient"]], message)
        await client.quit()

    start = time.perf_counter()
    asyncio.run(main())
    _report(start, len(messages))


def _report(start: float, sent: int) -> None:
    print(json.dumps({"send_seconds": time.perf_counter() - start, "sent": sent}))


def child(name: str) -> None:
    sys.path.insert(0, str(ROOT / "src"))
    config = json.loads(sys.stdin.read())  # on stdin, so the password is not in `ps`
    runner = {
        "mailsync": _run_mailsync,
        "mailsync-async": _run_mailsync_async,
        "smtplib-per-message": _run_smtplib_per_message,
        "smtplib-loop": _run_smtplib_loop,
        "aiosmtplib-loop": _run_aiosmtplib_loop,
    }[name]
    runner(config)


# -- the parent: servers, runs, table ----------------------------------------------------------


@dataclass
class Result:
    name: str
    setup: str
    count: int
    walls: list[float] = field(default_factory=list)
    sends: list[float] = field(default_factory=list)

    @property
    def wall(self) -> float:
        return statistics.median(self.walls)

    @property
    def send(self) -> float:
        return statistics.median(self.sends)


def available(name: str) -> bool:
    if not name.startswith("aiosmtplib"):
        return True
    try:
        import aiosmtplib  # noqa: F401
    except ImportError:
        return False
    return True


def run_once(name: str, config: dict[str, Any]) -> tuple[float, float]:
    # Imported, not run as a script, so this file too is loaded from its bytecode.
    command = [sys.executable, "-c", "import sys, smtp_send; smtp_send.child(sys.argv[1])", name]
    start = time.perf_counter()
    done = subprocess.run(
        command,
        input=json.dumps(config),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        cwd=HERE,
        env=ENV,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{done.stdout}\n{done.stderr}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    if report["sent"] != config["count"]:
        raise RuntimeError(f"{name} sent {report['sent']} of {config['count']}")
    return wall, float(report["send_seconds"])


def wait_for_empty_queue(servers: Any, timeout: float = 300.0) -> None:
    """Let Postfix deliver what the last run queued, so runs do not slow each other down."""

    def empty() -> bool:
        done = subprocess.run(
            ["postqueue", "-c", servers.postfix_config_dir, "-j"],
            capture_output=True,
            text=True,
            check=False,
        )
        return done.returncode == 0 and not done.stdout.strip()

    servers.wait_for(empty, timeout=timeout, interval=0.2, message="Postfix queue empty")


class DelayProxy:
    """Forwards 127.0.0.1:<port> to a local port, holding every chunk back ``one_way``
    seconds in each direction: a network path with that much latency, in user space."""

    def __init__(self, target_port: int, one_way: float) -> None:
        self.target_port = target_port
        self.one_way = one_way
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> DelayProxy:
        self._thread.start()
        server = asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        self.port = server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _listen(self) -> asyncio.Server:
        return await asyncio.start_server(self._handle, "127.0.0.1", 0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = await asyncio.open_connection("127.0.0.1", self.target_port)
        await asyncio.gather(self._pump(reader, upstream[1]), self._pump(upstream[0], writer))

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    writer.close()
                    return
                await asyncio.sleep(max(0.0, due - loop.time()))
                writer.write(data)
                await writer.drain()

        task = asyncio.create_task(deliver())
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                queue.put_nowait((loop.time() + self.one_way, data))
        queue.put_nowait((0.0, b""))
        with contextlib.suppress(OSError):
            await task


@dataclass
class Setup:
    label: str
    count: int
    port: int
    tls: str
    rtt_ms: float = 0.0


def setups(servers: Any, args: argparse.Namespace) -> list[Setup]:
    chosen = []
    if "submission" in args.setups:
        chosen.append(
            Setup("submission (STARTTLS + AUTH)", args.count, servers.submission_port, "starttls")
        )
    if "plain" in args.setups:
        chosen.append(Setup("plain (no TLS, no AUTH)", args.count, servers.smtp_port, "none"))
    if "rtt" in args.setups:
        chosen.append(
            Setup(
                f"submission over a {args.rtt_ms:g} ms round-trip path",
                args.rtt_count,
                servers.submission_port,
                "starttls",
                args.rtt_ms,
            )
        )
    return chosen


def config_for(servers: Any, setup: Setup, port: int, workdir: Path) -> dict[str, Any]:
    sender = servers.new_account("bench")
    recipient = servers.new_account("sink")
    messages = workdir / f"messages-{setup.count}.bin"
    write_messages(messages, sender.email, recipient.email, setup.count)
    user = f"{sender.user}@" if setup.tls != "none" else ""
    return {
        "messages": str(messages),
        "host": servers.host,
        "port": port,
        "tls": setup.tls,
        "url": f"smtp://{user}{servers.host}:{port}",
        "count": setup.count,
        "sender": sender.email,
        "recipient": recipient.email,
        "cafile": servers.cafile,
        "user": sender.user,
        "password": sender.password,
    }


def write_messages(path: Path, sender: str, recipient: str, count: int) -> None:
    """Compose the messages once with ``mailsync.compose``, NUL-separated in one file."""
    sys.path.insert(0, str(ROOT / "src"))
    import mailsync

    raws = [
        mailsync.compose(
            from_=sender,
            to=recipient,
            subject=f"Benchmark message {n}",
            text=f"Hello,\nthis is benchmark message {n}.\n",
        ).as_bytes()
        for n in range(count)
    ]
    path.write_bytes(b"\0".join(raws))


def warm_up(config: dict[str, Any], count: int = 20) -> None:
    """Send a few untimed messages, so that Postfix has started the daemons this port
    uses (smtpd, cleanup, trivial-rewrite, TLS) before the first measured run pays for it."""
    conn = _smtplib_connection(config)
    for message in _messages(config)[:count]:
        conn.sendmail(config["sender"], [config["recipient"]], message)
    conn.quit()


def measure_setup(
    servers: Any, setup: Setup, runs: int, workdir: Path, names: list[str]
) -> list[Result]:
    with contextlib.ExitStack() as stack:
        port = setup.port
        if setup.rtt_ms:
            port = stack.enter_context(DelayProxy(setup.port, setup.rtt_ms / 2000)).port
        config = config_for(servers, setup, port, workdir)
        warm_up(config)
        mine = [Result(name, setup.label, setup.count) for name in names]
        for run in range(runs):
            # Interleaved, and rotated each run, so drift on a shared machine hits all alike.
            order = mine[run % len(mine) :] + mine[: run % len(mine)]
            for result in order:
                wait_for_empty_queue(servers)
                wall, send = run_once(result.name, config)
                result.walls.append(wall)
                result.sends.append(send)
                print(
                    f"  {setup.label:38} {CONTENDERS[result.name]:45} "
                    f"wall {wall:7.2f}s  send {send:7.2f}s",
                    file=sys.stderr,
                )
    return mine


def table(results: list[Result], runs: int, storage: str) -> str:
    lines = [
        SECTION,
        "",
        "Small messages (made once by `mailsync.compose`, about 450 bytes, read from a file by "
        "each contender) to one local recipient on the private Postfix of `tests/servers.py`; "
        f"each contender in a fresh process; median of {runs} runs, interleaved. *Wall* is the "
        "whole process (interpreter start, imports, connecting, sending, exit); *send* is the "
        "sending alone, until Postfix answered 250 to the last message. Each setup is warmed "
        "up with 20 untimed messages, and the Postfix queue is "
        f"drained between runs; its queue and the mailboxes are {storage}. mailsync takes "
        "the messages as bytes and works out each "
        "envelope from the headers (`prepare()`); the smtplib and aiosmtplib loops are handed "
        "the envelope. The round-trip path is loopback through a user-space proxy that holds "
        "every chunk back half the round trip in each direction.",
        "",
    ]
    for setup in dict.fromkeys(r.setup for r in results):
        group = [r for r in results if r.setup == setup]
        per_message = next(r for r in group if r.name == "smtplib-per-message")
        loop = next(r for r in group if r.name == "smtplib-loop")
        lines += [
            f"**{setup}**, {group[0].count:,} messages",
            "",
            "| contender | wall (s) | send (s) | msg/s | vs. connection per message | "
            "vs. hand-written loop |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for r in group:
            lines.append(
                f"| {CONTENDERS[r.name]} | {r.wall:.2f} | {r.send:.2f} | "
                f"{r.count / r.send:,.0f} | {per_message.wall / r.wall:.2f}x faster | "
                f"{r.wall / loop.wall:.2f}x the time |"
            )
        lines.append("")
    lines += [
        READING,
        "",
        f"Machine: {os.cpu_count()} CPUs shared with other work, so runs vary by 10-30 %. "
        "Targets: `send_many` at least 3x faster than a connection per message, and within "
        "1.2x of the hand-written single-connection loop (wall times). This run:",
        "",
        *verdicts(results),
        "",
    ]
    return "\n".join(lines)


def verdicts(results: list[Result]) -> list[str]:
    """Per setup and mailsync sender: both targets, met or missed, in this run's numbers."""
    lines = []
    for setup in dict.fromkeys(r.setup for r in results):
        group = {r.name: r for r in results if r.setup == setup}
        per_message, loop = group["smtplib-per-message"], group["smtplib-loop"]
        parts = []
        for name, label in (("mailsync", "sync"), ("mailsync-async", "async")):
            if name not in group:
                continue
            faster = per_message.wall / group[name].wall
            share = group[name].wall / loop.wall
            parts.append(
                f"{label} {faster:.2f}x faster than a connection per message "
                f"({'met' if faster >= 3 else '**missed**'}) and {share:.2f}x the loop's time "
                f"({'met' if share <= 1.2 else '**missed**'})"
            )
        lines.append(f"- {setup}: " + "; ".join(parts) + ".")
    return lines


def write_docs(section: str) -> None:
    """Replace this benchmark's section of docs/performance.md (or append it)."""
    text = DOCS.read_text() if DOCS.exists() else "# Performance\n"
    if SECTION in text:
        start = text.index(SECTION)
        following = text.find("\n## ", start + len(SECTION))
        end = len(text) if following < 0 else following + 1
        text = text[:start] + section + ("\n" if following >= 0 else "") + text[end:]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    DOCS.write_text(text.rstrip("\n") + "\n")


def tmpfs_usable(path: Path) -> bool:
    """Whether ``path`` is a tmpfs mount the test servers can live in: writable, and
    reachable by the mail users (tests/servers.py falls back to /tmp otherwise)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return (
        filesystem(path) == "tmpfs"
        and os.access(path, os.W_OK | os.X_OK)
        and bool(mode & 0o001)  # others may traverse it
    )


def filesystem(path: Path) -> str:
    """The type of the file system ``path`` is on, from /proc/mounts ("unknown" without)."""
    try:
        mounts = Path("/proc/mounts").read_text()
    except OSError:
        return "unknown"
    best, kind = "", "unknown"
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1]
        inside = str(path) == point or str(path).startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best):
            best, kind = point, fields[2]
    return kind


def describe_storage(root: Path) -> str:
    """Where the servers' files are, for the table."""
    kind = filesystem(root)
    where = str(root.parent)
    if kind == "tmpfs":
        return f"on tmpfs (`{where}`: no disk behind Postfix's fsync)"
    return f"on disk ({kind}, `{where}`: Postfix fsyncs each queue file)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--setups",
        default="submission,plain,rtt",
        help="comma-separated: submission, plain, rtt (default: all)",
    )
    parser.add_argument("--rtt-ms", type=float, default=10.0)
    parser.add_argument("--rtt-count", type=int, default=100)
    parser.add_argument(
        "--disk",
        action="store_true",
        help="keep the servers' files in the temp dir on disk instead of on tmpfs",
    )
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--child", metavar="NAME", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    sys.path.insert(0, str(ROOT / "tests"))
    from servers import MailServers

    names = [name for name in CONTENDERS if available(name)]
    if not args.disk and tmpfs_usable(TMPFS):
        # tests/servers.py makes its directory in tempfile.gettempdir().
        tempfile.tempdir = str(TMPFS)
    compileall.compile_dir(ROOT / "src", quiet=1)
    compileall.compile_dir(HERE, quiet=1, maxlevels=0)
    results: list[Result] = []
    with MailServers() as servers, tempfile.TemporaryDirectory() as workdir:
        assert servers.root is not None
        storage = describe_storage(servers.root)
        print(f"servers in {servers.root}: {storage}", file=sys.stderr)
        for setup in setups(servers, args):
            results += measure_setup(servers, setup, args.runs, Path(workdir), names)
    section = table(results, args.runs, storage)
    print(section)
    if args.write_docs:
        write_docs(section)


if __name__ == "__main__":
    main()
