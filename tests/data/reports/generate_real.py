"""Make the ``real-*`` samples of this corpus with real mail servers; run by hand, not by tests.

    python tests/data/reports/generate_real.py [postfix] [exim]

``postfix``: the test harness's private Postfix (tests/servers.py) relays to a scripted SMTP
server on loopback (below) that answers each recipient as a remote server would (unknown user,
full mailbox, block, spam, DMARC, greylisting...), and to Postfix's own ``error:``/``retry:``
transports; the DSNs Postfix writes come back to the sender's Dovecot mailbox and are saved
as ``real/postfix-<case>.eml``. ``exim``: Exim 4 (the Debian package's binary, unpacked with
``dpkg -x`` into ``$EXIM_ROOT``, never installed: it would replace Postfix) runs in the
foreground with its own config and spool, relays to the same scripted server, pipes to a
failing command, and writes its bounces to files: ``real/exim-<case>.eml``.

Nothing is sent off this machine: every server listens on 127.0.0.1. Addresses and hosts are
the harness's (``example.test``) and made-up ``.test`` domains.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from email.utils import make_msgid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from tests.servers import DOMAIN, HOST, MailServers  # noqa: E402

OUT = HERE / "real"
REMOTE = "remote.test"

# Local part -> (phase, reply) of the scripted remote server.
REPLIES: dict[str, tuple[str, str]] = {
    "unknown": ("rcpt", "550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown"),
    "nosuchuser": ("rcpt", "550 No such user here"),
    "full": ("rcpt", "552 5.2.2 <{rcpt}>: Mailbox full"),
    "disabled": ("rcpt", "550 5.2.1 The email account that you tried to reach is disabled."),
    "blocked": (
        "rcpt",
        "554 5.7.1 Service unavailable; Client host [127.0.0.1] blocked using zen.example.test",
    ),
    "relay": ("rcpt", "554 5.7.1 <{rcpt}>: Relay access denied"),
    "dmarc": (
        "rcpt",
        "550 5.7.26 This message does not pass authentication checks (SPF and DKIM both do"
        " not pass).",
    ),
    "generic": ("rcpt", "550 5.0.0 <{rcpt}>... User unknown"),
    "german": ("rcpt", "550 Postfach nicht vorhanden - Benutzer unbekannt"),
    "spam": ("data", "550 5.7.1 Message rejected as spam by Content Filtering"),
    "toolarge": ("data", "552 5.3.4 Message size exceeds fixed maximum message size"),
    "overquota": ("rcpt", "452 4.2.2 The email account that you tried to reach is over quota"),
    "greylisted": ("rcpt", "450 4.2.0 <{rcpt}>: Recipient address rejected: Greylisted"),
    "ratelimit": ("rcpt", "421 4.7.28 Too many messages from your IP, try again later"),
    "ok": ("rcpt", "250 2.1.5 Ok"),
}


class _Remote(socketserver.StreamRequestHandler):
    """Just enough SMTP to answer each recipient from REPLIES."""

    def reply(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self) -> None:
        self.reply(f"220 mx.{REMOTE} ESMTP scripted")
        data_reply = "250 2.0.0 Ok: queued as 4F2A1"
        while line := self.rfile.readline():
            command = line.decode(errors="replace").strip()
            verb = command[:4].upper()
            if verb in ("EHLO", "HELO"):
                self.reply(f"250-mx.{REMOTE}\r\n250 8BITMIME")
            elif verb == "RCPT":
                rcpt = command.partition("<")[2].partition(">")[0]
                phase, text = REPLIES.get(rcpt.partition("@")[0], ("rcpt", "250 2.1.5 Ok"))
                if phase == "data":
                    data_reply, text = text, "250 2.1.5 Ok"
                self.reply(text.format(rcpt=rcpt))
                if text.startswith("421"):
                    return
            elif verb == "DATA":
                self.reply("354 End data with <CR><LF>.<CR><LF>")
                while self.rfile.readline() not in (b".\r\n", b".\n", b""):
                    pass
                self.reply(data_reply)
            elif verb == "QUIT":
                self.reply(f"221 2.0.0 mx.{REMOTE} closing")
                return
            else:
                self.reply("250 2.0.0 Ok")


def start_remote() -> int:
    server = socketserver.ThreadingTCPServer((HOST, 0), _Remote)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return int(server.server_address[1])


def message(sender: str, to: str, subject: str) -> bytes:
    return (
        f"From: Alice Example <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
        f"Message-ID: {make_msgid(domain=DOMAIN)}\r\nDate: Tue, 02 Apr 2024 12:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        "Hello, this is a test message for the delivery report corpus.\r\n"
    ).encode()


class _Servers(MailServers):
    """The harness's servers, with ``remote.test`` routed to the scripted server and a few
    made-up domains to Postfix's error and retry transports."""

    remote_port = 0

    def _postfix_main_cf(self) -> str:
        routes = (
            f"{{{REMOTE}=smtp:[{HOST}]:{self.remote_port}}}, "
            "{nx.test=error:5.4.4 Host or domain name not found. Name service error for "
            "name=nx.test type=MX: Host not found}, "
            "{slow.test=retry:4.4.1 connect to mx.slow.test[192.0.2.77]:25: Connection timed"
            " out}"
        )
        return (
            super()._postfix_main_cf()
            + f"transport_maps = inline:{{ {routes}, utf8.test=utf8virtual: }}\n"
            + "delay_warning_time = 4s\nsmtp_tls_security_level = none\n"
        )


def postfix_samples() -> None:
    with _Servers() as servers:
        pass  # checks the binaries; restarted below with the remote port known
    servers = _Servers()
    servers.remote_port = start_remote()
    with servers:
        cases: list[tuple[str, list[str], list[str]]] = [
            (name, [f"{name}@{REMOTE}"], ["NOTIFY=FAILURE,DELAY"]) for name in REPLIES
        ]
        cases += [
            ("success-relayed", [f"ok@{REMOTE}"], ["NOTIFY=SUCCESS"]),
            ("host-not-found", ["someone@nx.test"], ["NOTIFY=FAILURE"]),
            ("timeout-expired", ["someone@slow.test"], ["NOTIFY=FAILURE,DELAY"]),
            ("local-unknown", [f"nobody-here@{DOMAIN}"], ["NOTIFY=FAILURE"]),
            (
                "multi",
                [f"unknown@{REMOTE}", f"full@{REMOTE}", "someone@nx.test"],
                ["NOTIFY=FAILURE"],
            ),
        ]
        only = set(filter(None, os.environ.get("CASES", "").split(",")))
        for name, recipients, options in cases:
            if name == "ok" or (only and name not in only):
                continue
            sender = servers.new_account("sender")
            raw = message(sender.email, recipients[0], f"Corpus case {name}")
            servers.send(sender, recipients, raw, mail_options=["RET=HDRS"], rcpt_options=options)
            wanted = 2 if name in ("overquota", "greylisted", "ratelimit", "timeout-expired") else 1
            found = collect(servers, sender, wanted)
            for index, data in enumerate(found):
                suffix = f"-{index + 1}" if len(found) > 1 else ""
                (OUT / f"postfix-{name}{suffix}.eml").write_bytes(data)
                print("postfix", name + suffix, len(data))


def collect(servers: MailServers, account: object, count: int, deadline: float = 60) -> list[bytes]:
    maildir = servers.maildir_of(account)  # type: ignore[arg-type]
    end = time.monotonic() + deadline
    files: list[Path] = []
    while time.monotonic() < end:
        files = sorted((maildir / "new").glob("*"), key=lambda p: p.stat().st_mtime)
        if len(files) >= count:
            break
        time.sleep(0.5)
    return [path.read_bytes() for path in files[:count]]


# -- Exim -----------------------------------------------------------------------------------

EXIM_CONFIG = """\
exim_path = {exim}
keep_environment = LD_LIBRARY_PATH
primary_hostname = mx.exim.test
qualify_domain = exim.test
spool_directory = {spool}
log_file_path = {spool}/log/%slog
exim_user = mail
exim_group = mail
never_users =
trusted_users = root:mail
domainlist local_domains = exim.test
delay_warning = 2s
dsn_advertise_hosts = *
begin routers
remote:
  driver = manualroute
  domains = {remote}
  route_list = * {host}::{port}
  transport = remote_smtp
  self = send
pipes:
  driver = redirect
  domains = exim.test
  local_parts = piped
  data = |/bin/false
  pipe_transport = pipe
files:
  driver = redirect
  domains = exim.test
  local_parts = filed
  data = /nonexistent/dir/mbox
  file_transport = file
local:
  driver = accept
  domains = exim.test
  local_parts = alice
  transport = mbox
begin transports
remote_smtp:
  driver = smtp
  hosts_try_fastopen =
pipe:
  driver = pipe
  return_fail_output
  user = mail
file:
  driver = appendfile
  user = mail
mbox:
  driver = appendfile
  file = {spool}/alice.mbox
  user = mail
  delivery_date_add
  envelope_to_add
  return_path_add
begin retry
*  *  F,3s,1s
"""


def exim_samples() -> None:
    # The unpacked package: the binary re-executes itself (exim_path) and needs its
    # libraries (LD_LIBRARY_PATH, which a setuid binary ignores: chmod u-s it) and the
    # "Debian-exim" user it was built for to exist (useradd --system Debian-exim).
    root = Path(os.environ.get("EXIM_ROOT", "/tmp/mta/root"))
    exim = root / "usr/sbin/exim4"
    os.environ["LD_LIBRARY_PATH"] = str(root / "usr/lib/x86_64-linux-gnu")
    port = start_remote()
    with tempfile.TemporaryDirectory() as spool_name:
        spool = Path(spool_name)
        (spool / "log").mkdir()
        shutil.chown(spool, "mail", "mail")
        shutil.chown(spool / "log", "mail", "mail")
        config = spool / "exim.conf"
        config.write_text(
            EXIM_CONFIG.format(exim=exim, spool=spool, remote=REMOTE, host=HOST, port=port)
        )
        cases = ["unknown", "full", "spam", "nosuchuser", "toolarge", "overquota", "blocked"]
        targets = [f"{name}@{REMOTE}" for name in cases] + ["piped@exim.test", "filed@exim.test"]
        for target in targets:
            mbox = spool / "alice.mbox"
            mbox.unlink(missing_ok=True)
            raw = message("alice@exim.test", target, f"Exim case {target}")
            subprocess.run(
                [str(exim), "-C", str(config), "-odi", "-f", "alice@exim.test", target],
                input=raw,
                capture_output=True,
                timeout=60,
            )
            for _ in range(8):  # queue runs: retries, delay warnings, final bounces
                time.sleep(1.5)
                subprocess.run(
                    [str(exim), "-C", str(config), "-q"], capture_output=True, timeout=60
                )
            for index, data in enumerate(split_mbox(mbox)):
                name = f"exim-{target.partition('@')[0]}-{index + 1}.eml"
                (OUT / name).write_bytes(data)
                print("exim", name, len(data))


def split_mbox(path: Path) -> list[bytes]:
    """The messages of an mbox file, without their "From " separator lines."""
    if not path.exists():
        return []
    chunks = re.split(rb"(?m)^From [^\n]*\n", path.read_bytes())
    return [chunk.rstrip(b"\n") + b"\n" for chunk in chunks if chunk.strip()]


def main(argv: list[str]) -> None:
    OUT.mkdir(exist_ok=True)
    wanted = set(argv) or {"postfix", "exim"}
    steps: dict[str, Callable[[], None]] = {"postfix": postfix_samples, "exim": exim_samples}
    for name, step in steps.items():
        if name in wanted:
            step()
    socket.setdefaulttimeout(None)


if __name__ == "__main__":
    main(sys.argv[1:])
