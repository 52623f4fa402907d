"""IMAP fetch benchmark: mailsync against raw imaplib, imapclient and other IMAP clients.

One run starts the test servers of ``tests/servers.py`` (Dovecot on loopback), seeds the
deterministic corpus of ``benchmarks/_seed.py`` once (10,000 messages, ~505 MB by default), and
then times every tool on the same folder. Each measurement is a whole process (a subprocess:
interpreter start, imports, connect, login, fetch every body, exit): the median wall time of
``--runs`` runs (3) and the largest peak RSS of those runs (``RUSAGE_CHILDREN`` of a helper
process that runs just that one child).

Cases:

- full fetch, plain text: raw ``imaplib`` with 500-UID ``UID FETCH (BODY.PEEK[])`` batches,
  imapclient's ``fetch`` in the same batches, mailsync ``messages()``, imap_tools (bulk and
  default, when installed), mbsync (isync, ``FSync no``), getmail6 and offlineimap (when
  installed and ``--slow-peers`` is given: they take minutes);
- full fetch over implicit TLS: raw imaplib and mailsync;
- full fetch in plain text again through a proxy that adds ``--rtt-ms`` of round-trip time
  (10 ms): raw imaplib and mailsync;
- incremental: +10 new messages in folders of 1,000 and N messages: raw imaplib
  ``UID SEARCH UID n+1:*`` + FETCH, and mailsync ``sync()`` from a saved cursor; and the
  1,000 case again through a proxy that adds ``--rtt-ms`` of round-trip time (10 ms), where
  the number of round trips, not the bytes, sets the time.

The async IMAP backend adds its cases (aioimaplib, mailsync async) through
``benchmarks/imap_async_fetch.py``: a module with ``CASES: dict[str, Callable[[dict],
tuple[int, int]]]`` (config -> (messages, bytes)) and ``FULL_FETCH: list[str]`` naming those to
run in the full-fetch table (see :data:`PLUGINS`).

Peers that are not installed are listed as skipped; they install with
``pip install imap-tools`` and ``apt-get install isync getmail6 offlineimap3``.

    python benchmarks/imap_fetch.py                     # the full run (several minutes)
    python benchmarks/imap_fetch.py --slow-peers        # also getmail6 and offlineimap
    python benchmarks/imap_fetch.py --messages 500 --runs 1 --no-peers   # a quick look
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import importlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

BATCH = 500
# Measure programs as users run them: with compiled bytecode. (A PYTHONDONTWRITEBYTECODE
# development shell would make every run compile mailsync from source, while the stdlib
# that raw imaplib uses ships precompiled.)
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

# -- the measured programs (run in a child process) ---------------------------------------------


def _imaplib_connect(cfg: dict[str, Any], timeout: float | None = None) -> Any:
    import imaplib
    import ssl

    if cfg["tls"]:
        context = ssl.create_default_context(cafile=cfg["cafile"])
        conn = imaplib.IMAP4_SSL(cfg["host"], cfg["port"], ssl_context=context, timeout=timeout)
    else:
        conn = imaplib.IMAP4(cfg["host"], cfg["port"], timeout=timeout)
    conn.login(cfg["user"], cfg["password"])
    conn.select(f'"{cfg["folder"]}"', readonly=True)
    return conn


def _imaplib_fetch(conn: Any, uids: list[bytes], items: str = "(BODY.PEEK[])") -> tuple[int, int]:
    count = total = 0
    for start in range(0, len(uids), BATCH):
        batch = b",".join(uids[start : start + BATCH]).decode()
        typ, data = conn.uid("FETCH", batch, items)
        assert typ == "OK", data
        for item in data:
            if isinstance(item, tuple):
                count += 1
                total += len(item[1])
    return count, total


def case_raw_imaplib(cfg: dict[str, Any]) -> tuple[int, int]:
    """Stdlib imaplib: UID SEARCH ALL, then 500-UID UID FETCH (BODY.PEEK[]) batches."""
    conn = _imaplib_connect(cfg)
    _typ, data = conn.uid("SEARCH", None, "ALL")
    result = _imaplib_fetch(conn, (data[0] or b"").split())
    conn.logout()
    return result


def case_raw_imaplib_items(cfg: dict[str, Any]) -> tuple[int, int]:
    """Raw imaplib doing what mailsync does: asking for the flags, the size and the arrival
    time a Message carries with each body, on a socket with a read timeout (mailsync's
    default 30 s). Over TLS both cost: the server answers more, and CPython polls before
    reading a TLS record whenever a socket has a timeout."""
    conn = _imaplib_connect(cfg, timeout=30.0)
    _typ, data = conn.uid("SEARCH", None, "ALL")
    items = "(UID FLAGS RFC822.SIZE INTERNALDATE BODY.PEEK[])"
    result = _imaplib_fetch(conn, (data[0] or b"").split(), items)
    conn.logout()
    return result


def case_raw_imaplib_since(cfg: dict[str, Any]) -> tuple[int, int]:
    """Stdlib imaplib incremental: UID SEARCH UID n+1:*, then FETCH those."""
    conn = _imaplib_connect(cfg)
    since = cfg["since_uid"]
    _typ, data = conn.uid("SEARCH", None, f"UID {since + 1}:*")
    uids = [uid for uid in (data[0] or b"").split() if int(uid) > since]
    result = _imaplib_fetch(conn, uids)
    conn.logout()
    return result


def case_imapclient(cfg: dict[str, Any]) -> tuple[int, int]:
    """imapclient: search ALL, fetch BODY.PEEK[] in 500-UID batches."""
    import ssl

    from imapclient import IMAPClient

    context = ssl.create_default_context(cafile=cfg["cafile"]) if cfg["tls"] else None
    client = IMAPClient(cfg["host"], port=cfg["port"], ssl=cfg["tls"], ssl_context=context)
    client.login(cfg["user"], cfg["password"])
    client.select_folder(cfg["folder"], readonly=True)
    uids = client.search("ALL")
    count = total = 0
    for start in range(0, len(uids), BATCH):
        for data in client.fetch(uids[start : start + BATCH], ["BODY.PEEK[]"]).values():
            count += 1
            total += len(data[b"BODY[]"])
    client.logout()
    return count, total


def _mailsync_box(cfg: dict[str, Any], state: str) -> Any:
    import ssl

    import mailsync

    scheme = "imaps" if cfg["tls"] else "imap"
    url = f"{scheme}://{cfg['user']}@{cfg['host']}:{cfg['port']}"
    options: dict[str, Any] = {"password": cfg["password"], "state": state}
    if cfg["tls"]:
        options["verify"] = ssl.create_default_context(cafile=cfg["cafile"])
    else:
        options["tls"] = "none"
    return mailsync.connect(url, **options)


def case_mailsync(cfg: dict[str, Any]) -> tuple[int, int]:
    """mailsync: ``for m in box.messages(folder)``."""
    count = total = 0
    with _mailsync_box(cfg, ":memory:") as box:
        for message in box.messages(cfg["folder"]):
            count += 1
            total += len(message.raw)
    return count, total


def case_mailsync_sync(cfg: dict[str, Any]) -> tuple[int, int]:
    """mailsync: ``for m in box.sync(folder)`` from a saved cursor."""
    count = total = 0
    with _mailsync_box(cfg, cfg["state"]) as box:
        for message in box.sync(cfg["folder"]):
            count += 1
            total += len(message.raw)
    return count, total


def _imap_tools(cfg: dict[str, Any], bulk: bool) -> tuple[int, int]:
    import ssl

    from imap_tools import MailBox, MailBoxUnencrypted

    if cfg["tls"]:
        context = ssl.create_default_context(cafile=cfg["cafile"])
        mailbox: Any = MailBox(cfg["host"], cfg["port"], ssl_context=context)
    else:
        mailbox = MailBoxUnencrypted(cfg["host"], cfg["port"])
    count = total = 0
    with mailbox.login(cfg["user"], cfg["password"], initial_folder=cfg["folder"]) as box:
        for message in box.fetch(mark_seen=False, bulk=BATCH if bulk else False):
            count += 1
            total += message.size_rfc822
    return count, total


def case_imap_tools_bulk(cfg: dict[str, Any]) -> tuple[int, int]:
    """imap_tools: ``fetch(mark_seen=False, bulk=500)`` (parses every message)."""
    return _imap_tools(cfg, True)


def case_imap_tools(cfg: dict[str, Any]) -> tuple[int, int]:
    """imap_tools: ``fetch(mark_seen=False)``, its default one FETCH per message."""
    return _imap_tools(cfg, False)


CASES: dict[str, Callable[[dict[str, Any]], tuple[int, int]]] = {
    "raw imaplib": case_raw_imaplib,
    "raw imaplib UID SEARCH": case_raw_imaplib_since,
    "raw imaplib, same request and timeout": case_raw_imaplib_items,
    "imapclient": case_imapclient,
    "mailsync": case_mailsync,
    "mailsync sync()": case_mailsync_sync,
    "imap_tools (bulk)": case_imap_tools_bulk,
    "imap_tools (default)": case_imap_tools,
}
FULL_FETCH = ["raw imaplib", "mailsync", "imapclient"]
#: The cases every other one in its section is compared with.
BASELINES = ("raw imaplib", "raw imaplib UID SEARCH")

#: Modules that add cases (the async backend's benchmark), loaded only when needed so that
#: their imports never weigh on the processes measuring other cases.
PLUGINS = ("imap_async_fetch", "imap_fetch_async")


def load_plugins() -> list[str]:
    """Add the plug-in modules' cases to CASES; returns their full-fetch case names."""
    names: list[str] = []
    for module_name in PLUGINS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        CASES.update(module.CASES)
        names.extend(name for name in module.FULL_FETCH if name not in names)
    return names


def child(name: str, cfg_json: str) -> None:
    """Run one case in this process and print its result as JSON."""
    cfg = json.loads(cfg_json)
    if name not in CASES:
        load_plugins()
    count, total = CASES[name](cfg)
    print(json.dumps({"messages": count, "bytes": total}))


# -- external programs ------------------------------------------------------------------------


def mbsync_command(cfg: dict[str, Any], workdir: Path) -> list[str] | None:
    """An mbsync (isync) run pulling the folder into a fresh Maildir, without fsync."""
    binary = shutil.which("mbsync")
    if binary is None:
        return None
    maildir = workdir / "mbsync-mail"
    shutil.rmtree(maildir, ignore_errors=True)
    maildir.mkdir(parents=True)
    config = workdir / "mbsyncrc"
    ssl_type = "IMAPS" if cfg["tls"] else "None"
    config.write_text(
        f"FSync no\n\nIMAPAccount bench\nHost {cfg['host']}\nPort {cfg['port']}\n"
        f"User {cfg['user']}\nPass {cfg['password']}\nSSLType {ssl_type}\n"
        f"CertificateFile {cfg['cafile']}\nAuthMechs LOGIN PLAIN\n\n"
        "IMAPStore remote\nAccount bench\n\n"
        f"MaildirStore local\nPath {maildir}/\nInbox {maildir}/INBOX\n\n"
        "Channel bench\nFar :remote:\nNear :local:\n"
        f"Patterns {cfg['folder']}\nCreate Near\nSync Pull\nSyncState *\n"
    )
    return [binary, "-q", "-c", str(config), "bench"]


def getmail_command(cfg: dict[str, Any], workdir: Path) -> list[str] | None:
    """A getmail6 run retrieving every message of the folder into a Maildir."""
    binary = shutil.which("getmail")
    if binary is None:
        return None
    maildir = workdir / "getmail-mail"
    rc = workdir / "getmailrc"
    rc.write_text(
        "[retriever]\ntype = SimpleIMAPRetriever\n"
        f"server = {cfg['host']}\nport = {cfg['port']}\n"
        f"username = {cfg['user']}\npassword = {cfg['password']}\n"
        f'mailboxes = ("{cfg["folder"]}",)\n\n'
        f"[destination]\ntype = Maildir\npath = {maildir}/\n"
        # getmail refuses to deliver as root: deliver as the unprivileged mail user.
        + ("user = mail\n\n" if os.geteuid() == 0 else "\n")
        + "[options]\nread_all = true\ndelete = false\nverbose = 0\n"
    )
    return [binary, f"--getmaildir={workdir}", f"--rcfile={rc}"]


def offlineimap_command(cfg: dict[str, Any], workdir: Path) -> list[str] | None:
    """An offlineimap run pulling the folder into a Maildir, without fsync."""
    binary = shutil.which("offlineimap")
    if binary is None:
        return None
    rc = workdir / "offlineimaprc"
    rc.write_text(
        f"[general]\naccounts = bench\nmetadata = {workdir}/offlineimap-meta\n"
        "fsync = false\n\n[Account bench]\nlocalrepository = local\n"
        "remoterepository = remote\n\n"
        f"[Repository local]\ntype = Maildir\nlocalfolders = {workdir}/offlineimap-mail\n\n"
        f"[Repository remote]\ntype = IMAP\nremotehost = {cfg['host']}\n"
        f"remoteport = {cfg['port']}\nremoteuser = {cfg['user']}\n"
        f"remotepass = {cfg['password']}\nssl = no\nstarttls = no\nreadonly = true\n"
        f"folderfilter = lambda name: name == '{cfg['folder']}'\n"
    )
    return [binary, "-c", str(rc), "-o", "-u", "quiet"]


def _fresh_dirs(workdir: Path) -> None:
    for name in ("mbsync-mail", "getmail-mail", "offlineimap-mail", "offlineimap-meta"):
        shutil.rmtree(workdir / name, ignore_errors=True)
    for sub in ("cur", "new", "tmp"):
        (workdir / "getmail-mail" / sub).mkdir(parents=True)
    if os.geteuid() == 0:  # getmail delivers as the mail user (see getmail_command)
        import pwd

        mail = pwd.getpwnam("mail")
        workdir.chmod(0o755)
        for path in [workdir / "getmail-mail", *(workdir / "getmail-mail").iterdir()]:
            os.chown(path, mail.pw_uid, mail.pw_gid)
    (workdir / "mbsync-mail").mkdir()
    for path in workdir.glob("oldmail-*"):  # getmail's record of what it retrieved
        path.unlink()


def _maildir_count(root: Path) -> tuple[int, float]:
    files = [f for f in root.rglob("*") if f.is_file() and f.parent.name in ("cur", "new")]
    return len(files), sum(f.stat().st_size for f in files) / 1e6


# -- the parent: servers, seeding, runs, table --------------------------------------------------


@dataclass
class Result:
    """The measurements of one case."""

    section: str
    name: str
    times: list[float]
    rss_mb: float
    messages: int
    megabytes: float
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.times) if self.times else float("nan")


def run_process(command: Sequence[str], timeout: float) -> str:
    """Run a command and return its stdout; raise with its stderr when it fails."""
    completed = subprocess.run(
        list(command), capture_output=True, cwd=str(ROOT), timeout=timeout, check=False, env=ENV
    )
    if completed.returncode != 0:
        tail = completed.stderr.decode(errors="replace")[-2000:]
        raise RuntimeError(f"{list(command)[:4]} failed ({completed.returncode}): {tail}")
    return completed.stdout.decode(errors="replace")


def run_case(
    section: str,
    name: str,
    command: Sequence[str],
    runs: int,
    timeout: float,
    before_each: Callable[[], None] | None = None,
) -> Result:
    """Time ``command`` ``runs`` times; RSS is measured in a fresh helper per run."""
    return run_alternating(section, [(name, command, before_each)], runs, timeout)[0]


def run_alternating(
    section: str,
    cases: Sequence[tuple[str, Sequence[str], Callable[[], None] | None]],
    runs: int,
    timeout: float,
) -> list[Result]:
    """Time several ``(name, command, before_each)`` cases, taking turns run by run, so that
    a burst of background load hits every contender alike instead of one of them."""
    results = [Result(section, name, [], 0.0, 0, 0.0) for name, _, _ in cases]
    for _ in range(runs):
        for result, (_name, command, before_each) in zip(results, cases, strict=True):
            if before_each is not None:
                before_each()
            wrapped = [sys.executable, str(HERE / "imap_fetch.py"), "--measure", "--", *command]
            report = json.loads(run_process(wrapped, timeout).strip().splitlines()[-1])
            result.times.append(report["wall"])
            result.rss_mb = max(result.rss_mb, report["rss_mb"])
            output = report.get("output") or {}
            # The fewest of any run: a run that lost messages must show in the table.
            count = int(output.get("messages", 0))
            if len(result.times) == 1 or count < result.messages:
                result.messages = count
                result.megabytes = float(output.get("bytes", 0)) / 1e6
    return results


def measure(command: Sequence[str]) -> None:
    """Run ``command`` as a child, then print its wall time, peak RSS and JSON output.

    A helper process per measurement, so that ``RUSAGE_CHILDREN`` is exactly that child's.
    """
    import resource

    started = time.perf_counter()
    completed = subprocess.run(
        list(command), capture_output=True, cwd=str(ROOT), check=False, env=ENV
    )
    wall = time.perf_counter() - started
    if completed.returncode != 0:
        sys.stderr.write(completed.stderr.decode(errors="replace")[-4000:])
        sys.exit(completed.returncode)
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    lines = completed.stdout.decode(errors="replace").strip().splitlines()
    output = None
    if lines:
        with contextlib.suppress(ValueError):
            output = json.loads(lines[-1])
    print(json.dumps({"wall": wall, "rss_mb": rss, "output": output}))


def python_case(name: str, cfg: dict[str, Any]) -> list[str]:
    return [sys.executable, str(HERE / "imap_fetch.py"), "--child", name, json.dumps(cfg)]


def format_table(results: list[Result], baselines: dict[str, float]) -> str:
    lines = [
        "| case | tool | messages | MB | median s | runs (s) | vs raw imaplib | peak RSS MB |",
        "|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for r in results:
        base = baselines.get(r.section)
        ratio = f"{r.median / base:.2f}×" if base and r.times else "—"
        runs = ", ".join(f"{t:.2f}" for t in r.times) or r.note
        median = f"{r.median:.2f}" if r.times else "skipped"
        lines.append(
            f"| {r.section} | {r.name} | {r.messages} | {r.megabytes:.0f} | {median} | {runs} "
            f"| {ratio} | {r.rss_mb:.0f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="IMAP fetch benchmark (see module docstring)")
    parser.add_argument("--messages", type=int, default=10_000, help="messages in the folder")
    parser.add_argument("--runs", type=int, default=3, help="runs per case (median reported)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per run")
    parser.add_argument("--no-peers", action="store_true", help="only raw imaplib and mailsync")
    parser.add_argument("--slow-peers", action="store_true", help="also getmail6, offlineimap")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    parser.add_argument(
        "--rtt-ms",
        type=float,
        default=10.0,
        help="round-trip time of the delayed path, full fetch and incremental (0: skip them)",
    )
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
    results = benchmark(args)
    baselines = {r.section: r.median for r in results if r.name in BASELINES and r.times}
    table = format_table(results, baselines)
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")


def benchmark(args: argparse.Namespace) -> list[Result]:
    from _seed import corpus, seed_folder
    from tests.servers import MailServers

    results: list[Result] = []
    workdir = Path(tempfile.mkdtemp(prefix="mailsync-bench-"))
    compileall.compile_dir(ROOT / "src", quiet=1)
    compileall.compile_dir(HERE, quiet=1, maxlevels=0)
    with MailServers() as servers:
        account = servers.new_account("bench")
        started = time.perf_counter()
        size = seed_folder(servers, account, args.messages)
        print(
            f"seeded {args.messages} messages ({size / 1e6:.0f} MB) in "
            f"{time.perf_counter() - started:.1f}s",
            file=sys.stderr,
        )
        plain, tls = account_configs(servers, account)
        section = f"full fetch {args.messages}, plain"
        names = [*FULL_FETCH, *load_plugins()]
        if not args.no_peers:
            names += ["imap_tools (bulk)", "imap_tools (default)"]
        else:
            names = ["raw imaplib", "mailsync"]
        results.extend(_head_to_head(section, plain, args))
        for name in names:
            if name not in ("raw imaplib", "mailsync"):
                results.append(_python(section, name, plain, args))
        if not args.no_peers:
            _fresh_dirs(workdir)
            results.append(
                _external(
                    section,
                    "mbsync (FSync no)",
                    mbsync_command(plain, workdir),
                    args,
                    workdir,
                    "mbsync-mail",
                )
            )
        if args.slow_peers:  # minutes per run: measured once
            results.append(
                _external(
                    section,
                    "getmail6 (1 run)",
                    getmail_command(plain, workdir),
                    args,
                    workdir,
                    "getmail-mail",
                    runs=1,
                )
            )
            results.append(
                _external(
                    section,
                    "offlineimap (1 run)",
                    offlineimap_command(plain, workdir),
                    args,
                    workdir,
                    "offlineimap-mail",
                    runs=1,
                )
            )
        elif not args.no_peers:
            for peer in ("getmail6", "offlineimap"):
                results.append(Result(section, peer, [], 0, 0, 0, "not run: --slow-peers"))
        # Over TLS the server's work sets the pace: show raw imaplib on mailsync's request too.
        section = f"full fetch {args.messages}, TLS"
        results.extend(_head_to_head(section, tls, args, "raw imaplib, same request and timeout"))
        if args.rtt_ms > 0:
            results.extend(_full_fetch_delayed(servers, plain, args))
        results.extend(_incremental(servers, account, plain, args, workdir, corpus, seed_folder))
    shutil.rmtree(workdir, ignore_errors=True)
    return results


def account_configs(servers: Any, account: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The children's config for ``account``'s INBOX: plain text, and implicit TLS."""
    base = {
        "host": servers.host,
        "user": account.user,
        "password": account.password,
        "cafile": servers.cafile,
        "folder": "INBOX",
    }
    plain = {**base, "port": servers.imap_port, "tls": False}
    return plain, {**base, "port": servers.imaps_port, "tls": True}


def _head_to_head(
    section: str, cfg: dict[str, Any], args: argparse.Namespace, *extra: str
) -> list[Result]:
    """Raw imaplib and mailsync (and ``extra`` cases), taking turns run by run (see
    :func:`run_alternating`)."""
    names = ("raw imaplib", *extra, "mailsync")
    print(f"{section}: {', '.join(names)} ...", file=sys.stderr)
    cases = [(name, python_case(name, cfg), None) for name in names]
    return run_alternating(section, cases, args.runs, args.timeout)


def _python(section: str, name: str, cfg: dict[str, Any], args: argparse.Namespace) -> Result:
    if name not in CASES:
        return Result(section, name, [], 0, 0, 0, "not available")
    try:
        __import__(
            {"imap_tools (bulk)": "imap_tools", "imap_tools (default)": "imap_tools"}.get(
                name, "json"
            )
        )
    except ImportError:
        return Result(section, name, [], 0, 0, 0, "not installed")
    print(f"{section}: {name} ...", file=sys.stderr)
    result = run_case(section, name, python_case(name, cfg), args.runs, args.timeout)
    print(f"  median {result.median:.2f}s, RSS {result.rss_mb:.0f} MB", file=sys.stderr)
    return result


def _external(
    section: str,
    name: str,
    command: list[str] | None,
    args: argparse.Namespace,
    workdir: Path,
    maildir: str,
    runs: int | None = None,
) -> Result:
    if command is None:
        return Result(section, name, [], 0, 0, 0, "not installed")
    print(f"{section}: {name} ...", file=sys.stderr)
    try:
        result = run_case(
            section,
            name,
            command,
            runs or args.runs,
            args.timeout,
            before_each=lambda: _fresh_dirs(workdir),
        )
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        reason = str(exc).strip().splitlines()[-1][:120]
        print(f"  failed: {reason}", file=sys.stderr)
        return Result(section, name, [], 0, 0, 0, f"failed here: {reason}")
    result.messages, result.megabytes = _maildir_count(workdir / maildir)
    print(f"  median {result.median:.2f}s", file=sys.stderr)
    return result


def _copy_database(source: Path, target: Path) -> None:
    """Copy a SQLite state store whole (WAL included) with the backup API."""
    import sqlite3

    for suffix in ("", "-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    with (
        contextlib.closing(sqlite3.connect(source)) as src,
        contextlib.closing(sqlite3.connect(target)) as dst,
    ):
        src.backup(dst)


def _full_fetch_delayed(
    servers: Any, plain: dict[str, Any], args: argparse.Namespace
) -> list[Result]:
    """The plain full fetch again over a path with ``--rtt-ms`` of round-trip time, where
    each 500-UID batch boundary costs a client that waits for a batch before asking for the
    next one a round trip."""
    from smtp_send import DelayProxy

    with DelayProxy(servers.imap_port, args.rtt_ms / 2000) as delayed:
        section = f"full fetch {args.messages} over a {args.rtt_ms:g} ms round-trip path"
        return _head_to_head(section, {**plain, "port": delayed.port}, args)


def _incremental(
    servers: Any,
    account: Any,
    plain: dict[str, Any],
    args: argparse.Namespace,
    workdir: Path,
    corpus: Any,
    seed_folder: Any,
) -> list[Result]:
    """+10 new messages after a saved cursor, in folders of 1,000 and ``--messages``, and
    in the 1,000 folder again over a path with ``--rtt-ms`` of round-trip time."""
    from smtp_send import DelayProxy

    results: list[Result] = []
    sizes = sorted({min(1000, args.messages), args.messages})
    with contextlib.ExitStack() as stack:
        delayed = None
        if args.rtt_ms > 0:
            delayed = stack.enter_context(DelayProxy(servers.imap_port, args.rtt_ms / 2000))
        for size in sizes:
            folder = "INBOX" if size == args.messages else f"Sync{size}"
            if folder != "INBOX":
                seed_folder(servers, account, size, folder=folder)
            # A cursor per path: the port is part of the account a cursor belongs to.
            paths = [("", {**plain, "folder": folder})]
            if delayed is not None and size == sizes[0]:
                label = f" over a {args.rtt_ms:g} ms round-trip path"
                paths.append((label, {**plain, "folder": folder, "port": delayed.port}))
            states = []
            for label, cfg in paths:
                state = workdir / f"state-{size}{'-rtt' if label else ''}.sqlite"
                _initial_sync(account, cfg, state)
                states.append(state)
            since = max(servers.imap_uids(account, folder))
            seed_folder(servers, account, 10, folder=folder, start=10_000_000 + size, seed=1)
            for (label, cfg), state in zip(paths, states, strict=True):
                section = f"sync() +10 in {size}{label}"
                results.extend(_incremental_runs(section, cfg, since, state, args))
    del corpus
    return results


def _initial_sync(account: Any, cfg: dict[str, Any], state: Path) -> None:
    import mailsync

    url = f"imap://{account.user}@{cfg['host']}:{cfg['port']}"
    with mailsync.connect(url, password=account.password, tls="none", state=str(state)) as box:
        for _ in box.sync(cfg["folder"]):
            pass


def _incremental_runs(
    section: str, cfg: dict[str, Any], since: int, state: Path, args: argparse.Namespace
) -> list[Result]:
    pristine = state.with_suffix(".pristine")
    _copy_database(state, pristine)

    def restore() -> None:
        _copy_database(pristine, state)

    # A case this short (about 0.1 s) is at the mercy of background load: alternate.
    print(f"{section}: raw imaplib UID SEARCH and mailsync sync() ...", file=sys.stderr)
    raw = python_case("raw imaplib UID SEARCH", {**cfg, "since_uid": since})
    ours = python_case("mailsync sync()", {**cfg, "state": str(state)})
    cases = [("raw imaplib UID SEARCH", raw, None), ("mailsync sync()", ours, restore)]
    return run_alternating(section, cases, args.runs, args.timeout)


if __name__ == "__main__":
    main()
