"""Real Dovecot and Postfix servers on loopback, for tests and benchmarks.

``MailServers`` starts a private Dovecot (IMAP, POP3, LMTP) and a private second Postfix
instance (SMTP, submission, SMTPS) from the system binaries, with all configuration, sockets,
queues, logs and mail in a fresh temporary directory and every listener on 127.0.0.1 at free
high ports, so several harnesses can run side by side. Nothing is sent beyond loopback: Postfix
delivers ``@example.test`` to Dovecot over LMTP, delivers ``@utf8.test`` itself (its virtual(8)
agent, into a Maildir in the temp dir; Dovecot's LMTP does not offer SMTPUTF8, so this is
where SMTPUTF8 mail can arrive), and turns every other destination into a bounce.

The seeding and inspection helpers (``MailboxClients``, shared with the Cyrus server in
tests/cyrus.py) use the standard library only (never mailsync), so tests of mailsync do not
depend on the code under test to set up or check their data.

Needs root (Dovecot switches to the ``mail`` user, Postfix to ``postfix``) and the Debian
packages ``dovecot-imapd dovecot-pop3d dovecot-lmtpd postfix``.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import dataclasses
import email
import email.message
import email.policy
import grp
import imaplib
import os
import poplib
import pwd
import random
import re
import secrets
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

__all__ = [
    "DOMAIN",
    "HOST",
    "UTF8_DOMAIN",
    "Account",
    "MailServers",
    "MailboxClients",
    "ServerStartError",
    "find_binaries",
    "group_processes",
    "imap_utf7_decode",
    "imap_utf7_encode",
    "make_certificate",
    "missing_reason",
    "wait_for",
]

HOST = "127.0.0.1"
DOMAIN = "example.test"
# Delivered by Postfix itself, which takes SMTPUTF8 mail (any local part is a mailbox).
UTF8_DOMAIN = "utf8.test"
SPECIAL_USE = {
    "Drafts": "\\Drafts",
    "Sent": "\\Sent",
    "Trash": "\\Trash",
    "Junk": "\\Junk",
    "Archive": "\\Archive",
}
# Deferred mail (e.g. Dovecot answering 4xx) turns into a failure DSN after this long.
QUEUE_LIFETIME_SECONDS = 15
_TIMEOUT = 30.0
_START_ATTEMPTS = 3
_BINARIES = ("dovecot", "doveconf", "postfix", "postconf", "openssl")
_DOVECOT_PROTOCOL_BINARIES = ("imap", "imap-login", "pop3", "pop3-login", "lmtp")
_DOVECOT_LIBEXEC = Path("/usr/lib/dovecot")
_APT_HINT = "apt-get install -y dovecot-imapd dovecot-pop3d dovecot-lmtpd postfix openssl"
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]*")

_T = TypeVar("_T")


class ServerStartError(RuntimeError):
    """Dovecot or Postfix did not come up; the message carries their logs."""


# --------------------------------------------------------------------------- discovery


def find_binaries() -> dict[str, str | None]:
    """Map each needed program to its path, or None when it is not installed."""
    # /usr/sbin is often not on a non-root PATH, but that is where both daemons live.
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin", "/sbin"])
    found: dict[str, str | None] = {name: shutil.which(name, path=search) for name in _BINARIES}
    for name in _DOVECOT_PROTOCOL_BINARIES:
        path = _DOVECOT_LIBEXEC / name
        found[f"dovecot:{name}"] = str(path) if os.access(path, os.X_OK) else None
    return found


def missing_reason() -> str | None:
    """Why the servers cannot run here, or None when they can."""
    missing = [name for name, path in find_binaries().items() if path is None]
    if missing:
        return f"mail server binaries missing: {', '.join(missing)} (install: {_APT_HINT})"
    if os.geteuid() != 0:
        return "the Dovecot/Postfix test servers must run as root (they switch users)"
    for user in ("mail", "postfix", "dovecot", "dovenull"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            return f"system user {user!r} missing (is {_APT_HINT} complete?)"
    return None


# --------------------------------------------------------------------------- small helpers


def wait_for(
    predicate: Callable[[], _T],
    timeout: float = 20.0,
    interval: float = 0.05,
    message: str | None = None,
) -> _T:
    """Poll ``predicate`` until it returns something truthy, and return that.

    Raises ``TimeoutError`` at the deadline. Exceptions from the predicate propagate, so a
    broken check fails at once instead of looking like a slow one.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            what = message or getattr(predicate, "__qualname__", repr(predicate))
            raise TimeoutError(f"not true after {timeout:g}s: {what}")
        time.sleep(interval)


def imap_utf7_encode(name: str) -> str:
    """Encode a mailbox name in IMAP's modified UTF-7 (RFC 3501 5.1.3)."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            data = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(data).decode().rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return "".join(out)


def imap_utf7_decode(name: str) -> str:
    """Decode a mailbox name from IMAP's modified UTF-7."""

    def decode(match: re.Match[str]) -> str:
        chunk = match.group(1)
        if not chunk:
            return "&"
        data = chunk.replace(",", "/")
        data += "=" * (-len(data) % 4)
        return base64.b64decode(data).decode("utf-16-be")

    return re.sub(r"&([^-]*)-", decode, name)


def _quote(name: str) -> str:
    encoded = imap_utf7_encode(name)
    return '"' + encoded.replace("\\", "\\\\").replace('"', '\\"') + '"'


_LIST_RE = re.compile(rb'\((?P<flags>[^)]*)\) (?P<delim>NIL|"(?:[^"\\]|\\.)*") (?P<name>.*)')


def _parse_list_line(item: bytes | tuple[bytes, bytes]) -> tuple[str, frozenset[str]]:
    if isinstance(item, tuple):  # the name came as a literal
        head, name_bytes = item[0], item[1]
    else:
        head, name_bytes = item, b""
    match = _LIST_RE.match(head)
    if match is None:
        raise ValueError(f"unexpected LIST response: {item!r}")
    flags = frozenset(match.group("flags").decode().split())
    if not name_bytes:
        name_bytes = match.group("name")
        if name_bytes.startswith(b'"'):
            name_bytes = re.sub(rb"\\(.)", rb"\1", name_bytes[1:-1])
    return imap_utf7_decode(name_bytes.decode()), flags


def _check(typ: str, data: Sequence[object], what: str) -> None:
    if typ != "OK":
        raise imaplib.IMAP4.error(f"{what} failed: {typ} {data!r}")


def make_certificate(folder: Path, openssl: str = "openssl") -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and ``localhost`` in ``folder``.

    Returns:
        The paths of ``cert.pem`` and ``key.pem``.

    Raises:
        ServerStartError: openssl failed.
    """
    cert, key = folder / "cert.pem", folder / "key.pem"
    # EC keys are generated in milliseconds, RSA would dominate the start-up time.
    result = subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        capture_output=True,
        timeout=_TIMEOUT,
    )
    if result.returncode != 0:
        raise ServerStartError(f"openssl failed: {result.stderr.decode(errors='replace')}")
    return cert, key


def _free_ports(count: int) -> list[int]:
    """Distinct ports that are free on 127.0.0.1 right now.

    They come from below the kernel's ephemeral range when possible, so the many outgoing
    connections of a test run cannot grab one between this check and the daemon's bind.
    """
    low, high = 10000, 30000
    with contextlib.suppress(OSError, ValueError):
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
        high = min(high, ephemeral_low)
    candidates: list[int] = []
    pool = random.sample(range(low, high), min(high - low, 400)) if high - low >= 1000 else []
    for port in pool:
        if len(candidates) == count:
            break
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                continue
        candidates.append(port)
    while len(candidates) < count:  # fall back to the kernel's choice
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port = sock.getsockname()[1]
        if port not in candidates:
            candidates.append(port)
    return candidates


def _base_dir() -> str:
    """The temp dir, unless the mail users cannot traverse it or its path is so long that
    the daemons' socket paths would pass the 108-byte limit of unix socket names."""
    base = Path(tempfile.gettempdir()).resolve()
    traversable = all(os.stat(path).st_mode & 0o001 for path in (base, *base.parents))
    return str(base) if traversable and len(str(base)) <= 40 else "/tmp"


def _read_tail(path: Path, max_chars: int) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-max_chars:].decode("utf-8", "replace")


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie does not (init may take a while to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rpartition(")")[2].split()[:1] in (["Z"], ["X"]):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it if it is ours
        return False
    return True


# --------------------------------------------------------------------------- accounts


@dataclasses.dataclass(frozen=True)
class Account:
    """A mailbox on the test servers. ``user`` is the login (the full address)."""

    user: str
    password: str
    email: str
    maildir: Path

    def __repr__(self) -> str:  # keep passwords out of test output
        return f"Account(user={self.user!r}, maildir={str(self.maildir)!r})"


# --------------------------------------------------------------------------- the servers


class MailboxClients:
    """What :class:`MailServers` (Dovecot) and :class:`tests.cyrus.CyrusServer` share: the life
    of a private server on loopback, and stdlib clients of its store (IMAP, POP3, LMTP) with
    the seeding and inspection helpers built on them.

    ``start()`` makes a fresh directory (``root``, holding ``tls/cert.pem``, which
    ``imaps_port``/``pop3s_port`` present) and starts the daemons in it, again in a new one if
    a port chosen as free was taken before a daemon bound it; ``stop()`` (at exit at the
    latest) stops them and removes the directory unless ``keep``. A subclass says how its
    daemons start (``_start_once``, which sets the ports) and stop (``_stop_daemons``), what
    must hold first (``_prepare``), and what its logs say (``log_text``).
    """

    host: str = HOST
    domain: str = DOMAIN
    wait_for = staticmethod(wait_for)
    keep: bool = False
    root: Path | None = None
    imap_port = imaps_port = pop3_port = pop3s_port = lmtp_port = 0
    _root_prefix = "mailsync-servers-"

    # ----------------------------------------------------------------- lifecycle

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Self:
        """Start the daemons and wait until they answer.

        Raises:
            ServerStartError: They cannot run here or did not come up (with their logs).
        """
        if self.root is not None:
            raise RuntimeError(f"{type(self).__name__} already started")
        self._prepare()
        atexit.register(self.stop)
        for attempt in range(1, _START_ATTEMPTS + 1):
            parent = self._root_parent()
            self.root = Path(tempfile.mkdtemp(prefix=self._root_prefix, dir=parent))
            try:
                self._start_once()
                return self
            except ServerStartError as error:
                self._shutdown(remove=not self.keep)
                # Another process may take a port between our check and the daemon's bind.
                if "in use" not in str(error) or attempt == _START_ATTEMPTS:
                    atexit.unregister(self.stop)
                    raise
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Stop the daemons and remove the directory; safe to call twice."""
        atexit.unregister(self.stop)
        self._shutdown(remove=not self.keep)

    def log_text(self, max_chars: int = 20000) -> str:
        """The tails of the daemons' logs, for failure messages."""
        raise NotImplementedError

    def _prepare(self) -> None:
        """Check the daemons can run here (raise :class:`ServerStartError` if not)."""

    def _root_parent(self) -> str:
        return _base_dir()

    def _start_once(self) -> None:
        raise NotImplementedError

    def _stop_daemons(self) -> None:
        raise NotImplementedError

    def _shutdown(self, *, remove: bool) -> None:
        with contextlib.suppress(Exception):
            self._stop_daemons()
        if remove and self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def _fail(self, what: str) -> ServerStartError:
        return ServerStartError(f"{what}\n{self.log_text()}")

    # ----------------------------------------------------------------- paths

    def _path(self, *parts: str) -> Path:
        if self.root is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self.root.joinpath(*parts)

    @property
    def cafile(self) -> str:
        """The self-signed certificate every TLS port presents (also its own CA)."""
        return str(self._path("tls", "cert.pem"))

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts exactly the test certificate (hostname 127.0.0.1)."""
        return ssl.create_default_context(cafile=self.cafile)

    def new_account(self, prefix: str = "u", *, password: str | None = None) -> Account:
        """A fresh, empty account, usable at once (each server says how it makes one)."""
        raise NotImplementedError

    # ----------------------------------------------------------------- clients

    @contextlib.contextmanager
    def imap(self, account: Account, *, tls: bool = False) -> Iterator[imaplib.IMAP4]:
        """A logged-in stdlib IMAP connection (plain port, or the implicit-TLS port)."""
        conn: imaplib.IMAP4
        if tls:
            conn = imaplib.IMAP4_SSL(
                self.host, self.imaps_port, ssl_context=self.ssl_context(), timeout=_TIMEOUT
            )
        else:
            conn = imaplib.IMAP4(self.host, self.imap_port, timeout=_TIMEOUT)
        # imaplib sends an APPEND's literal and its closing CRLF in two writes: with Nagle's
        # algorithm the second waits for the server's delayed ACK, 40 ms per message.
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            conn.login(account.user, account.password)
            yield conn
        finally:
            with contextlib.suppress(Exception):
                conn.logout()

    @contextlib.contextmanager
    def pop3(self, account: Account, *, tls: bool = False) -> Iterator[poplib.POP3]:
        """A logged-in stdlib POP3 connection; QUIT (and so expunge) on exit."""
        conn: poplib.POP3
        if tls:
            conn = poplib.POP3_SSL(
                self.host, self.pop3s_port, context=self.ssl_context(), timeout=_TIMEOUT
            )
        else:
            conn = poplib.POP3(self.host, self.pop3_port, timeout=_TIMEOUT)
        try:
            conn.user(account.user)
            conn.pass_(account.password)
            yield conn
        finally:
            with contextlib.suppress(Exception):
                conn.quit()

    # ----------------------------------------------------------------- seeding

    def append(
        self,
        account: Account,
        raw: bytes,
        folder: str = "INBOX",
        flags: Iterable[str] = (),
    ) -> int:
        """APPEND one message and return its UID (from UIDPLUS' APPENDUID)."""
        return self.append_many(account, [raw], folder=folder, flags=flags)[0]

    def append_many(
        self,
        account: Account,
        raws: Iterable[bytes],
        folder: str = "INBOX",
        flags: Iterable[str] = (),
    ) -> list[int]:
        """APPEND messages over one connection, in order; returns their UIDs."""
        flag_list = " ".join(flags)
        uids: list[int] = []
        with self.imap(account) as conn:
            for raw in raws:
                typ, data = conn.append(
                    _quote(folder), f"({flag_list})" if flag_list else None, None, raw
                )
                _check(typ, data, f"APPEND to {folder}")
                match = re.search(rb"APPENDUID \d+ (\d+)", data[0] or b"")
                if match is None:
                    raise imaplib.IMAP4.error(f"no APPENDUID in {data!r}")
                uids.append(int(match.group(1)))
        return uids

    def deliver(self, account: Account, raw: bytes, *, sender: str | None = None) -> None:
        """Deliver one message to the account's INBOX over LMTP (done when this returns)."""
        lmtp = smtplib.LMTP(self.host, self.lmtp_port, timeout=_TIMEOUT)
        try:
            lmtp.sendmail(sender or f"seeder@{self.domain}", [account.email], raw)
        finally:
            with contextlib.suppress(Exception):
                lmtp.quit()

    def create_folder(self, account: Account, name: str, *, subscribe: bool = True) -> None:
        with self.imap(account) as conn:
            typ, data = conn.create(_quote(name))
            _check(typ, data, f"CREATE {name}")
            if subscribe:
                typ, data = conn.subscribe(_quote(name))
                _check(typ, data, f"SUBSCRIBE {name}")

    def delete_folder(self, account: Account, name: str) -> None:
        with self.imap(account) as conn:
            typ, data = conn.delete(_quote(name))
            _check(typ, data, f"DELETE {name}")

    # ----------------------------------------------------------------- inspection

    def folders(self, account: Account) -> dict[str, frozenset[str]]:
        """Every folder's (decoded) name mapped to its LIST attributes."""
        with self.imap(account) as conn:
            typ, data = conn.list()
            _check(typ, data, "LIST")
        result: dict[str, frozenset[str]] = {}
        items: list[object] = list(data)  # a name sent as a literal comes as a tuple
        for item in items:
            if isinstance(item, bytes | tuple):
                name, flags = _parse_list_line(item)
                result[name] = flags
        return result

    def imap_uids(self, account: Account, folder: str = "INBOX") -> list[int]:
        """UIDs in the folder, ascending."""
        with self.imap(account) as conn:
            typ, data = conn.select(_quote(folder), readonly=True)
            _check(typ, data, f"EXAMINE {folder}")
            typ, data = conn.uid("SEARCH", "ALL")
            _check(typ, data, "UID SEARCH")
        return sorted(int(uid) for uid in (data[0] or b"").split())

    def imap_messages(
        self, account: Account, folder: str = "INBOX"
    ) -> list[tuple[int, frozenset[str], bytes]]:
        """``(uid, flags, raw)`` for every message in the folder, ascending UID.

        Uses BODY.PEEK so that looking does not set ``\\Seen``.
        """
        with self.imap(account) as conn:
            typ, data = conn.select(_quote(folder), readonly=True)
            _check(typ, data, f"EXAMINE {folder}")
            typ, data = conn.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[])")
            _check(typ, data, "UID FETCH")
        messages: list[tuple[int, frozenset[str], bytes]] = []
        items: list[object] = list(data)
        for item in items:
            if not isinstance(item, tuple):
                continue  # the closing ")" of each FETCH response
            head, body = item
            uid_match = re.search(rb"UID (\d+)", head)
            flags_match = re.search(rb"FLAGS \(([^)]*)\)", head)
            if uid_match is None:
                continue
            flags = frozenset(flags_match.group(1).decode().split()) if flags_match else frozenset()
            messages.append((int(uid_match.group(1)), flags, body))
        return sorted(messages, key=lambda message: message[0])

    def imap_flags(self, account: Account, folder: str = "INBOX") -> dict[int, frozenset[str]]:
        return {uid: flags for uid, flags, _raw in self.imap_messages(account, folder)}

    def parsed_messages(
        self, account: Account, folder: str = "INBOX"
    ) -> list[email.message.EmailMessage]:
        """The folder's messages parsed by the stdlib (``policy.default``), ascending UID."""
        return [
            email.message_from_bytes(raw, policy=email.policy.default)
            for _uid, _flags, raw in self.imap_messages(account, folder)
        ]

    def pop3_uidls(self, account: Account) -> list[str]:
        """The UIDL of every message, in POP3 order."""
        with self.pop3(account) as conn:
            _resp, lines, _octets = conn.uidl()
        return [line.split()[1].decode() for line in lines]


class MailServers(MailboxClients):
    """Private Dovecot + Postfix on loopback; a context manager (``start()``/``stop()``)."""

    utf8_domain: str = UTF8_DOMAIN

    def __init__(self, *, keep: bool | None = None) -> None:
        """``keep`` leaves the temp dir (config, logs, mail) behind after ``stop()``.

        Defaults to the environment variable ``MAILSYNC_KEEP_SERVERS`` being set.
        """
        self.keep = bool(os.environ.get("MAILSYNC_KEEP_SERVERS")) if keep is None else keep
        self.root: Path | None = None
        self.imap_port = self.imaps_port = self.pop3_port = self.pop3s_port = 0
        self.lmtp_port = self.smtp_port = self.submission_port = self.smtps_port = 0
        self._binaries: dict[str, str | None] = {}
        self._dovecot: subprocess.Popen[bytes] | None = None
        self._postfix_started = False
        self._lock = threading.Lock()
        self._counter = 0
        self._mail_uid = self._mail_gid = 0

    # ----------------------------------------------------------------- paths

    @property
    def lmtp_socket(self) -> str:
        return str(self._path("dovecot", "run", "lmtp"))

    @property
    def auth_socket(self) -> str:
        """Dovecot's auth-client socket that Postfix uses for SASL."""
        return str(self._path("dovecot", "run", "auth-postfix"))

    @property
    def dovecot_config(self) -> str:
        return str(self._path("dovecot", "dovecot.conf"))

    @property
    def postfix_config_dir(self) -> str:
        return str(self._path("postfix", "etc"))

    def maildir_of(self, account: Account) -> Path:
        """The account's Maildir++ root (INBOX there, other folders as ``.Name``).

        Dovecot creates it on the first login or delivery.
        """
        return account.maildir

    def utf8_maildir(self, localpart: str) -> list[Path]:
        """The message files Postfix delivered to ``<localpart>@utf8.test``, oldest first.

        Postfix's own virtual(8) agent writes them, as it received them plus its trace
        headers (Return-Path, Delivered-To, Received), into one Maildir under the temp dir
        shared by the whole domain: every local part is a recipient there, non-ASCII ones
        included, which is what makes SMTPUTF8 testable (Dovecot's LMTP does not offer it).
        The files are told apart by the ``Delivered-To`` header virtual(8) prepends, compared
        case-insensitively. An empty list until the first delivery; poll with
        :func:`wait_for`.
        """
        wanted = f"{localpart}@{UTF8_DOMAIN}".casefold()
        try:
            entries = list(os.scandir(self._path("utf8mail", "new")))
        except FileNotFoundError:  # virtual(8) creates the Maildir at the first delivery
            return []
        files = [entry for entry in entries if _delivered_to(Path(entry.path)) == wanted]
        files.sort(key=lambda entry: (entry.stat().st_mtime_ns, entry.name))
        return [Path(entry.path) for entry in files]

    def log_text(self, max_chars: int = 20000) -> str:
        """The tails of the Dovecot and Postfix logs, for failure messages."""
        if self.root is None:
            return "(servers not started)"
        parts = []
        for label, path in (
            ("dovecot", self._path("dovecot.log")),
            ("dovecot stderr", self._path("dovecot.stderr")),
            ("postfix", self._path("postfix.log")),
        ):
            text = _read_tail(path, max_chars)
            if text.strip():
                parts.append(f"----- {label} ({path}) -----\n{text}")
        return "\n".join(parts) or "(logs are empty)"

    def daemon_pids(self) -> dict[str, int]:
        """PIDs of the running masters; each leads a process group holding all its children."""
        pids: dict[str, int] = {}
        if self._dovecot is not None and self._dovecot.poll() is None:
            pids["dovecot"] = self._dovecot.pid
        postfix = self._postfix_master_pid() if self._postfix_started else None
        if postfix is not None and _alive(postfix):
            pids["postfix"] = postfix
        return pids

    # ----------------------------------------------------------------- lifecycle

    def _prepare(self) -> None:
        reason = missing_reason()
        if reason:
            raise ServerStartError(reason)
        self._binaries = find_binaries()
        self._mail_uid = pwd.getpwnam("mail").pw_uid
        self._mail_gid = grp.getgrnam("mail").gr_gid

    def _start_once(self) -> None:
        binaries = self._binaries
        root = self._path()
        root.chmod(0o755)  # the mail, dovecot and postfix users must traverse it
        (
            self.imap_port,
            self.imaps_port,
            self.pop3_port,
            self.pop3s_port,
            self.lmtp_port,
            self.smtp_port,
            self.submission_port,
            self.smtps_port,
        ) = _free_ports(8)
        self._make_certificate(str(binaries["openssl"]))
        self._write_dovecot_config()
        dovecot = str(binaries["dovecot"])
        with open(self._path("dovecot.stderr"), "wb") as stderr:
            # Our own process group, so stop() can take down every child even if the master
            # died first.
            self._dovecot = subprocess.Popen(
                [dovecot, "-F", "-c", self.dovecot_config],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
            )
        # Postfix starts while Dovecot comes up: it needs Dovecot only when mail flows.
        self._start_postfix(str(binaries["postfix"]))
        self._wait_dovecot_ready()

    def _make_certificate(self, openssl: str) -> None:
        tls = self._path("tls")
        tls.mkdir(mode=0o755)
        cert, key = make_certificate(tls, openssl)
        cert.chmod(0o644)
        key.chmod(0o600)

    # ----------------------------------------------------------------- dovecot

    def _write_dovecot_config(self) -> None:
        base = self._path("dovecot")
        for sub in ("", "run", "state"):
            (base / sub).mkdir(mode=0o755, exist_ok=True)
        users = self._path("users")
        users.mkdir(mode=0o750)
        os.chown(users, 0, grp.getgrnam("dovecot").gr_gid)
        for sub in ("mail", "home"):
            path = self._path(sub)
            path.mkdir(mode=0o755)
            os.chown(path, self._mail_uid, self._mail_gid)
        tls = self._path("tls")
        dh = Path("/usr/share/dovecot/dh.pem")
        mailboxes = "\n".join(
            f"  mailbox {name} {{\n    special_use = {flag}\n    auto = subscribe\n  }}"
            for name, flag in SPECIAL_USE.items()
        )
        config = f"""\
# Generated by tests/servers.py for one test session.
instance_name = mailsync-test-{secrets.token_hex(4)}
base_dir = {base}/run
state_dir = {base}/state
log_path = {self._path("dovecot.log")}
protocols = imap pop3 lmtp
listen = {HOST}
hostname = mail.{DOMAIN}
postmaster_address = postmaster@{DOMAIN}
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = {self._mail_uid}
mail_uid = mail
mail_gid = mail
mail_location = maildir:{self._path("mail")}/%u
# Watch-many tests hold hundreds of connections, far above the defaults (100 / 1000).
default_process_limit = 1000
default_client_limit = 5000
mail_max_userip_connections = 1000
# IDLE learns of new mail through inotify; should the per-uid inotify instance limit run
# out all the same, this poll takes over.
mailbox_idle_check_interval = 1 secs
# Failed-login tests would otherwise each wait the default 2 s (what remains is Dovecot's
# fixed half-second flush of failures).
auth_failure_delay = 0
auth_mechanisms = plain login
auth_verbose = yes
disable_plaintext_auth = no
ssl = yes
ssl_cert = <{tls}/cert.pem
ssl_key = <{tls}/key.pem
{f"ssl_dh = <{dh}" if dh.exists() else ""}
pop3_uidl_format = %08Xu%08Xv
# Maildir++ keeps folders as ".Name" dirs, so "." could not appear in a folder name with
# the "/" separator; listescape stores it as "\2e" instead, as servers allow dots.
mail_plugins = listescape
lmtp_save_to_detail_mailbox = no

# One passwd-file per user: Dovecot stats a passwd-file at most once a second, so a user
# appended to a shared file may stay invisible for up to a second; a file that has never
# been looked up is read at once, and a missing one just means "unknown user".
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {users}/%u
}}
userdb {{
  driver = passwd-file
  args = {users}/%u
}}

namespace inbox {{
  inbox = yes
  separator = /
  prefix =
{mailboxes}
}}

# Login processes serving many clients each ("performance mode") and imap processes
# shared by up to 50 sessions (all users have the mail uid) set up hundreds of
# connections several times faster than a process per connection, and keep the imap
# processes below the per-uid inotify instance limit, so IDLE hears of new mail at once.
service imap-login {{
  service_count = 0
  process_min_avail = 2
  inet_listener imap {{
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = {self.imaps_port}
    ssl = yes
  }}
}}
service imap {{
  service_count = 0
  client_limit = 50
  process_limit = 100
}}
service pop3-login {{
  service_count = 0
  process_min_avail = 1
  inet_listener pop3 {{
    port = {self.pop3_port}
  }}
  inet_listener pop3s {{
    port = {self.pop3s_port}
    ssl = yes
  }}
}}
service lmtp {{
  unix_listener lmtp {{
    mode = 0666
  }}
  inet_listener lmtp {{
    port = {self.lmtp_port}
  }}
}}
service auth {{
  client_limit = 10000
  unix_listener auth-postfix {{
    mode = 0666
  }}
}}
service anvil {{
  client_limit = 20000
  # Every test logs in from 127.0.0.1, so after one deliberate wrong password Dovecot's
  # per-IP auth penalty (2 s, doubling) would slow all later logins; mode 0 turns it off.
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""
        Path(self.dovecot_config).write_text(config)

    def _wait_dovecot_ready(self) -> None:
        def ready() -> bool:
            assert self._dovecot is not None
            if self._dovecot.poll() is not None:
                raise self._fail(f"dovecot exited with status {self._dovecot.returncode}")
            if not (os.path.exists(self.lmtp_socket) and os.path.exists(self.auth_socket)):
                return False
            try:
                with socket.create_connection((HOST, self.imap_port), timeout=5) as sock:
                    return sock.recv(64).startswith(b"* OK")
            except OSError:
                return False

        try:
            wait_for(ready, timeout=_TIMEOUT, interval=0.01, message="dovecot accepting IMAP")
        except TimeoutError as error:
            raise self._fail(str(error)) from error

    # ----------------------------------------------------------------- postfix

    def _postfix_main_cf(self) -> str:
        tls = self._path("tls")
        return f"""\
# Generated by tests/servers.py for one test session.
compatibility_level = 3.6
queue_directory = {self._path("postfix", "spool")}
data_directory = {self._path("postfix", "data")}
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
maillog_file = {self._path("postfix.log")}
maillog_file_prefixes = {self._path()}
inet_interfaces = {HOST}
inet_protocols = ipv4
myhostname = mx.{DOMAIN}
mydomain = {DOMAIN}
myorigin = {DOMAIN}
mydestination =
# Loopback is deliberately not trusted: unauthenticated relaying must be refused.
mynetworks =
relay_domains =
relayhost =
alias_maps =
alias_database =
local_recipient_maps =
local_transport = error:local delivery is disabled in tests
default_transport = error:outside mail is disabled in tests
relay_transport = error:outside mail is disabled in tests
virtual_mailbox_domains = {DOMAIN}, {UTF8_DOMAIN}
virtual_mailbox_maps =
virtual_transport = lmtp:unix:{self.lmtp_socket}
# {UTF8_DOMAIN} goes to Postfix's own virtual(8) agent ("utf8virtual" in master.cf), which
# takes SMTPUTF8 mail; Dovecot's LMTP would bounce it (5.6.7).
transport_maps = inline:{{ {UTF8_DOMAIN}=utf8virtual: }}
# Dovecot decides which users exist, so that an unknown one yields a failure DSN.
smtpd_reject_unlisted_recipient = no
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
smtpd_recipient_restrictions =
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
lmtp_dns_support_level = disabled
smtputf8_enable = yes
message_size_limit = 52428800
notify_classes =
biff = no
append_dot_mydomain = no
in_flow_delay = 0
# Failures must bounce within a test's patience.
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
maximal_queue_lifetime = {QUEUE_LIFETIME_SECONDS}s
bounce_queue_lifetime = {QUEUE_LIFETIME_SECONDS}s
# Tests open many connections and make mistakes on purpose; do not slow them down.
default_process_limit = 500
smtpd_client_connection_count_limit = 0
smtpd_error_sleep_time = 0
smtpd_soft_error_limit = 1000
smtpd_hard_error_limit = 1000
smtpd_junk_command_limit = 100000
smtpd_tls_security_level = may
smtpd_tls_cert_file = {tls}/cert.pem
smtpd_tls_key_file = {tls}/key.pem
smtpd_tls_auth_only = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = {self.auth_socket}
smtpd_sasl_auth_enable = no
"""

    def _postfix_master_cf(self) -> str:
        auth_only = (
            "  -o smtpd_sasl_auth_enable=yes\n"
            "  -o smtpd_client_restrictions=permit_sasl_authenticated,reject\n"
            "  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject\n"
        )
        # Every service unchrooted: the queue, sockets and certs live in the temp dir.
        return f"""\
# service type  private unpriv  chroot  wakeup  maxproc command + args
{HOST}:{self.smtp_port} inet n - n - - smtpd
{HOST}:{self.submission_port} inet n - n - - smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
{auth_only}{HOST}:{self.smtps_port} inet n - n - - smtpd
  -o syslog_name=postfix/smtps
  -o smtpd_tls_wrappermode=yes
{auth_only}pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
utf8virtual unix -      n       n       -       -       virtual
  -o virtual_mailbox_base={self._path()}
  -o virtual_mailbox_maps=static:utf8mail/
  -o virtual_uid_maps=static:{self._mail_uid}
  -o virtual_gid_maps=static:{self._mail_gid}
  -o virtual_minimum_uid={self._mail_uid}
  -o virtual_mailbox_limit=0
"""

    def _start_postfix(self, postfix: str) -> None:
        etc = Path(self.postfix_config_dir)
        etc.mkdir(parents=True, mode=0o755)
        self._path("postfix").chmod(0o755)
        self._path("postfix", "spool").mkdir(mode=0o755)
        utf8mail = self._path("utf8mail")
        utf8mail.mkdir(mode=0o755)
        os.chown(utf8mail, self._mail_uid, self._mail_gid)  # virtual(8) writes as mail
        for name, text in (
            ("main.cf", self._postfix_main_cf()),
            ("master.cf", self._postfix_master_cf()),
        ):
            (etc / name).write_text(text)
            # Postfix waits ("lets the file cool down") until a config file is about 2 s old,
            # lest it read one still being edited; ours is complete, so backdate it.
            stamp = time.time() - 60
            os.utime(etc / name, (stamp, stamp))
        for command in ("set-permissions", "start"):
            result = subprocess.run(
                [postfix, "-c", str(etc), command],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=_TIMEOUT,
            )
            if result.returncode != 0:
                output = (result.stdout + result.stderr).decode(errors="replace")
                raise self._fail(f"postfix {command} failed ({result.returncode}):\n{output}")
            if command == "set-permissions":
                # set-permissions has just created and checked the queue; the marker makes
                # `start` skip repeating that (what Postfix itself does after quick-stop).
                self._path("postfix", "spool", "quick-start").touch()
            else:
                self._postfix_started = True

    def _postfix_master_pid(self) -> int | None:
        try:
            return int(self._path("postfix", "spool", "pid", "master.pid").read_text().strip())
        except (OSError, ValueError, RuntimeError):
            return None

    # ----------------------------------------------------------------- shutdown

    def _stop_daemons(self) -> None:
        with contextlib.suppress(Exception):
            self._stop_postfix()
        self._stop_dovecot()

    def _stop_postfix(self) -> None:
        self._postfix_started = False
        # Also after a failed `postfix start`: its master may have got as far as the pid file.
        pid = self._postfix_master_pid()
        if pid is None or not _is_postfix_master(pid):
            return
        # What `postfix stop` does (SIGTERM to the master, which takes its children along),
        # minus its one-second sleep between checks.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: not _alive(pid), timeout=5, interval=0.01)
        _kill_group(pid)

    def _stop_dovecot(self) -> None:
        process, self._dovecot = self._dovecot, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            # After its children have gone the master idles a fixed second for its log
            # process, which by then has written what they logged: no need to wait along.
            with contextlib.suppress(TimeoutError):
                wait_for(
                    lambda: process.poll() is not None or _only_log_left(process.pid),
                    timeout=5,
                    interval=0.01,
                )
        _kill_group(process.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)

    # ----------------------------------------------------------------- accounts

    def new_account(self, prefix: str = "u", *, password: str | None = None) -> Account:
        """Create a fresh user ``<prefix><n>-<random>@example.test``; usable at once.

        ``password`` may be given to test awkward characters (not ``:`` or line breaks,
        which the passwd-file format cannot hold).
        """
        if not _NAME_RE.fullmatch(prefix):
            raise ValueError(f"prefix must match {_NAME_RE.pattern}: {prefix!r}")
        if password is None:
            password = secrets.token_urlsafe(12)
        if any(char in password for char in ":\r\n\0"):
            raise ValueError("password cannot contain ':', NUL or line breaks")
        with self._lock:
            self._counter += 1
            local = f"{prefix}{self._counter}-{secrets.token_hex(3)}"
        address = f"{local}@{DOMAIN}"
        home = self._path("home", address)
        line = f"{address}:{{PLAIN}}{password}:{self._mail_uid}:{self._mail_gid}::{home}::\n"
        users = self._path("users")
        # Written aside and renamed in, so Dovecot never reads a half-written entry.
        temp = users / f".new-{secrets.token_hex(6)}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            os.fchown(fd, 0, grp.getgrnam("dovecot").gr_gid)
            os.write(fd, line.encode())
        finally:
            os.close(fd)
        os.rename(temp, users / address)
        return Account(
            user=address,
            password=password,
            email=address,
            maildir=self._path("mail", address),
        )

    # ----------------------------------------------------------------- clients

    @contextlib.contextmanager
    def smtp(self, account: Account | None = None) -> Iterator[smtplib.SMTP]:
        """Submission port after STARTTLS, logged in as ``account`` if given."""
        conn = smtplib.SMTP(HOST, self.submission_port, timeout=_TIMEOUT)
        try:
            conn.starttls(context=self.ssl_context())
            if account is not None:
                conn.login(account.user, account.password)
            yield conn
        finally:
            with contextlib.suppress(Exception):
                conn.quit()

    # ----------------------------------------------------------------- sending

    def send(
        self,
        sender: Account,
        recipients: Sequence[str],
        raw: bytes,
        *,
        mail_options: Sequence[str] = (),
        rcpt_options: Sequence[str] = (),
    ) -> dict[str, tuple[int, bytes]]:
        """Submit through Postfix (submission port, STARTTLS, AUTH); returns refusals."""
        with self.smtp(sender) as conn:
            return conn.sendmail(
                sender.email, list(recipients), raw, list(mail_options), list(rcpt_options)
            )


def group_processes(pgid: int, *, leader: bool = False) -> list[int]:
    """Live (not zombie) processes in the process group ``pgid``, without its leader
    unless ``leader``. Each daemon's master leads a group holding all its children."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or (int(entry.name) == pgid and not leader):
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command: state, ppid, pgrp, ...
        fields = stat.rpartition(")")[2].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def _delivered_to(path: Path) -> str | None:
    """The casefolded first ``Delivered-To`` address of a delivered file, if any."""
    try:
        with open(path, "rb") as file:
            for line in file:
                if line in (b"\n", b"\r\n"):
                    return None  # end of the header block
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"delivered-to":
                    return value.strip().decode("utf-8", "replace").casefold()
    except FileNotFoundError:
        return None
    return None


def _is_postfix_master(pid: int) -> bool:
    """Guards against a stale pid file naming some unrelated process."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return False
    return command.endswith(b"/master") and _alive(pid)


def _only_log_left(pgid: int) -> bool:
    members = group_processes(pgid)
    for pid in members:
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if not title.rstrip(b"\0 ").endswith(b"/log"):
            return False
    return True


def _kill_group(pid: int) -> None:
    """SIGKILL what is left of a daemon's process group (it leads the group), and wait
    until it is gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(TimeoutError):
        wait_for(lambda: not group_processes(pid, leader=True), timeout=5, interval=0.01)
