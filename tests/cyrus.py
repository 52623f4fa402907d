"""A real Cyrus IMAP server on loopback, for tests: IMAP, POP3, LMTP and JMAP from one store.

Cyrus is the suite's second, independent IMAP/POP3 server (Dovecot, in tests/servers.py, is the
first) and its JMAP server. :class:`CyrusServer` starts Debian 12's Cyrus 3.6 from the system
binaries, ``cyrmaster -C imapd.conf -M cyrus.conf``, with configuration, databases, sockets and
mail in a fresh directory (in memory, /dev/shm, where there is room: Cyrus fsyncs every commit)
and every listener on 127.0.0.1 at free high ports, so several instances can run side by side:

========================  ===================================================================
``imap_port``             IMAP (STARTTLS offered; IDLE through ``idled``, so new mail is
                          announced at once rather than by imapd's 60 s poll)
``imaps_port``            IMAP over implicit TLS
``pop3_port``             POP3 (STLS offered); ``pop3s_port`` over implicit TLS
``lmtp_port``             LMTP (pre-authenticated); unknown users are refused
``http_port``             JMAP (RFC 8620/8621) over plain http with Basic auth at
                          ``http_url``: ``jmap_session_url``, which ``/.well-known/jmap``
                          answers 301 to; the session's URLs are paths under ``http_url``
========================  ===================================================================

The API, for the contract runs and the JMAP backend's tests:

- ``CyrusServer(smtp_relay=("127.0.0.1", port))``: where JMAP EmailSubmission hands mail on
  (``smtp_backend: host``), e.g. the test Postfix's ``smtp_port``, so a JMAP send really
  travels. Without it submissions fail (nothing listens on the discard port it names).
- ``start()``/``stop()`` or ``with``; ``log_text()`` for failure messages.
- ``new_account(prefix)``: a fresh ``<prefix><n>-<hex>@cyrus.test`` (an Account of
  tests/servers.py; ``maildir`` is the INBOX's spool directory, one file per message) with
  INBOX, ``Sent``, ``Trash``, ``Drafts``, ``Junk`` and ``Archive`` (special-use) in place.
  The login is the full address, which is also the JMAP accountId. ``admin`` is the
  server-wide administrator (for ACLs and the like).
- Everything :class:`tests.servers.MailboxClients` offers: ``imap()``/``pop3()`` clients,
  ``append``/``append_many`` (imaplib APPEND: stored as sent, line endings made CRLF),
  ``deliver`` (LMTP), ``create_folder``, ``folders``, ``imap_messages`` ... (stdlib only).
- ``http_url``, ``jmap_session_url``, ``jmap_url(account)`` (mailsync's ``jmap://`` form),
  ``cafile``, ``ssl_context()``, ``config_path`` (the imapd.conf, for Cyrus's own tools).
- ``expire_expunged(account)``: ``cyr_expire`` now for that user, so messages expunged before
  are gone for good; a JMAP ``Email/changes`` from a state older than them then answers
  ``cannotCalculateChanges``, as a server that kept less history would.

What Cyrus does differently from Dovecot, as configured here (its defaults, on purpose):
APPEND of a message with NUL bytes is refused (``Message contains NUL characters``) and of one
with bare newlines too (imaplib turns them into CRLF first; a raw client must); raw 8-bit bytes
in header fields are each stored as ``X``; creating ``A/B`` creates ``A`` as a real, selectable
mailbox; special-use attributes come in lower case (``\\sent``); LMTP delivery adds
``Return-Path``, ``Received`` and, where missing, a ``Message-ID`` and a ``Date``. Cyrus has no
search engine here, so JMAP's text filters (``text``, ``subject``, ``from``...) answer
``serverFail``. Debian builds Cyrus without wslay, and without it push is off: the session
names an ``eventSourceUrl``, but it answers ``204 No Content``. Duplicate suppression is off,
so delivering the same message twice stores it twice, as on Dovecot.

Binaries: ``cyrmaster``, ``lmtpd`` and ``httpd`` come from ``cyrus-common``/``cyrus-caldav``
(apt), but ``imapd``, ``pop3d`` and ``idled`` are in ``cyrus-imapd``/``cyrus-pop3d``, which
conflict with Dovecot's packages. Unless they are installed (``/usr/lib/cyrus/bin``) or named
by ``MAILSYNC_CYRUS_BIN``, :func:`server_binaries` fetches them once with ``apt-get
download`` (the version of the installed cyrus-common) and unpacks them with ``dpkg-deb -x``
into a cache, ``$MAILSYNC_CYRUS_CACHE`` or ``/var/cache/mailsync-tests``, which the ``cyrus``
user can traverse. ``python3 -m tests.cyrus install`` does that ahead of time (``.ci/run``).

Cyrus logs only to syslog; ``log_text()`` has the master's own output and the configuration.
Needs root. Seeding and inspection never use mailsync.
"""

from __future__ import annotations

import contextlib
import dataclasses
import grp
import os
import pwd
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from tests.servers import (
    HOST,
    Account,
    MailboxClients,
    ServerStartError,
    _base_dir,
    _free_ports,
    _kill_group,
    _read_tail,
    make_certificate,
    wait_for,
)

__all__ = [
    "CYRUS_DOMAIN",
    "CyrusServer",
    "find_binaries",
    "missing_reason",
    "server_binaries",
]

CYRUS_DOMAIN = "cyrus.test"
SPECIAL_USE_FOLDERS = ("Sent", "Trash", "Drafts", "Junk", "Archive")
_LIBEXEC = Path("/usr/lib/cyrus/bin")
# From cyrus-imapd / cyrus-pop3d, which conflict with Dovecot's packages: fetched, see above.
_SERVER_BINARIES = ("imapd", "pop3d", "idled")
# From cyrus-common (lmtpd, mbpath, cyr_expire; the master is /usr/sbin/cyrmaster),
# cyrus-caldav (httpd).
_LIBEXEC_BINARIES = ("lmtpd", "httpd", "mbpath", "cyr_expire")
_SYSTEM_BINARIES = ("cyrmaster", "saslpasswd2", "openssl", "dpkg-query", "apt-get", "dpkg-deb")
_APT_HINT = "apt-get install -y --no-install-recommends cyrus-common cyrus-caldav sasl2-bin"
_PACKAGES = ("cyrus-imapd", "cyrus-pop3d")
_TIMEOUT = 30.0
# A port on which nothing listens (RFC 863 discard, privileged): JMAP submissions fail there.
_NO_RELAY = (HOST, 9)
# Free memory /dev/shm must have to hold the store: a whole test run uses under 10 MiB, and
# a container's /dev/shm is often 64 MiB.
_SHM_NEEDED = 32 * 1024 * 1024


class CyrusUnavailable(RuntimeError):
    """The Cyrus server binaries are not installed and could not be fetched."""


# --------------------------------------------------------------------------- binaries


def _search_path() -> str:
    return os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin", "/sbin"])


def find_binaries() -> dict[str, str | None]:
    """The installed programs the server needs (not the fetched ones), or None where missing."""
    found = {name: shutil.which(name, path=_search_path()) for name in _SYSTEM_BINARIES}
    for name in _LIBEXEC_BINARIES:
        path = _LIBEXEC / name
        found[f"cyrus:{name}"] = str(path) if os.access(path, os.X_OK) else None
    return found


def _complete(folder: Path) -> bool:
    return all(os.access(folder / name, os.X_OK) for name in _SERVER_BINARIES)


def _cache_root() -> Path:
    return Path(os.environ.get("MAILSYNC_CYRUS_CACHE") or "/var/cache/mailsync-tests")


def _installed_version() -> str:
    """The version of cyrus-common: the fetched binaries must match its libraries."""
    query = shutil.which("dpkg-query", path=_search_path()) or "dpkg-query"
    result = subprocess.run(
        [query, "-W", "-f=${Version}", "cyrus-common"],
        capture_output=True,
        text=True,
        timeout=_TIMEOUT,
    )
    if result.returncode != 0 or not result.stdout.strip():
        raise CyrusUnavailable(f"cyrus-common is not installed (install: {_APT_HINT})")
    return result.stdout.strip()


def server_binaries(*, fetch: bool = True) -> Path:
    """The directory holding ``imapd``, ``pop3d`` and ``idled``, fetched into the cache first
    when neither ``MAILSYNC_CYRUS_BIN`` nor an installed cyrus-imapd provides them.

    Raises:
        CyrusUnavailable: They are not there and ``fetch`` is off or the download failed.
    """
    override = os.environ.get("MAILSYNC_CYRUS_BIN")
    if override:
        if _complete(Path(override)):
            return Path(override)
        raise CyrusUnavailable(f"MAILSYNC_CYRUS_BIN={override} lacks {_SERVER_BINARIES}")
    if _complete(_LIBEXEC):
        return _LIBEXEC
    version = _installed_version()
    unpacked = _cache_root() / f"cyrus-{version}"
    binaries = unpacked / "usr" / "lib" / "cyrus" / "bin"
    if _complete(binaries):
        return binaries
    if not fetch:
        raise CyrusUnavailable(f"{' '.join(_PACKAGES)} {version} not fetched into {unpacked}")
    _fetch(version, unpacked)
    if not _complete(binaries):
        raise CyrusUnavailable(f"{' '.join(_PACKAGES)} {version} unpacked without {binaries}")
    return binaries


def _fetch(version: str, unpacked: Path) -> None:
    """``apt-get download`` the packages of ``version`` and unpack them into ``unpacked``."""
    cache = _cache_root()
    cache.mkdir(parents=True, exist_ok=True)
    cache.chmod(0o755)  # the cyrus user runs the binaries from here
    with tempfile.TemporaryDirectory(dir=cache, prefix=".fetch-") as work:
        # The sandbox user (_apt) could not write into a root-owned temp dir.
        command = ["apt-get", "download", "-o", "APT::Sandbox::User=root"]
        command += [f"{name}={version}" for name in _PACKAGES]
        result = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise CyrusUnavailable(
                f"`{' '.join(command)}` failed (is the archive reachable, and does it still"
                f" have {version}?): {(result.stderr or result.stdout).strip()[-500:]}"
            )
        root = Path(work, "root")
        for deb in sorted(Path(work).glob("*.deb")):
            unpack = ["dpkg-deb", "-x", str(deb), str(root)]
            result = subprocess.run(unpack, capture_output=True, text=True, timeout=60)
            if result.returncode != 0:
                raise CyrusUnavailable(f"`{' '.join(unpack)}` failed: {result.stderr.strip()}")
        root.chmod(0o755)
        try:
            os.rename(root, unpacked)  # atomic: a concurrent run sees all of it or nothing
        except OSError:
            if not _complete(unpacked / "usr" / "lib" / "cyrus" / "bin"):
                raise


def missing_reason(*, fetch: bool = True) -> str | None:
    """Why a Cyrus server cannot run here, or None when it can (fetching its binaries, once,
    unless ``fetch`` is off)."""
    if os.geteuid() != 0:
        return "the Cyrus test server must run as root (its services switch to the cyrus user)"
    missing = [name for name, path in find_binaries().items() if path is None]
    if missing:
        return f"Cyrus binaries missing: {', '.join(missing)} (install: {_APT_HINT})"
    try:
        pwd.getpwnam("cyrus")
    except KeyError:
        return f"system user 'cyrus' missing (is {_APT_HINT} complete?)"
    try:
        server_binaries(fetch=fetch)
    except (CyrusUnavailable, OSError, subprocess.SubprocessError) as error:
        return f"Cyrus imapd/pop3d unavailable: {error}"
    return None


# --------------------------------------------------------------------------- the server


class CyrusServer(MailboxClients):
    """A private Cyrus (IMAP, POP3, LMTP, JMAP) on loopback; a context manager."""

    domain: str = CYRUS_DOMAIN
    _root_prefix = "mailsync-cyrus-"

    def __init__(
        self, *, smtp_relay: tuple[str, int] | None = None, keep: bool | None = None
    ) -> None:
        """Args:
        smtp_relay: ``(host, port)`` of the SMTP server JMAP submissions go to.
        keep: Leave the temp dir behind after ``stop()``; defaults to the environment
            variable ``MAILSYNC_KEEP_SERVERS`` being set.
        """
        self.keep = bool(os.environ.get("MAILSYNC_KEEP_SERVERS")) if keep is None else keep
        self.smtp_relay = smtp_relay
        self.root: Path | None = None
        self.http_port = 0
        # Unique per instance, so a greeting proves the port is ours and not a neighbour's.
        self.servername = f"mail-{secrets.token_hex(4)}.{CYRUS_DOMAIN}"
        self.admin = Account(
            user="admin", password=secrets.token_urlsafe(12), email="", maildir=Path()
        )
        self._binaries = Path()
        self._master: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._counter = 0

    # ----------------------------------------------------------------- paths

    @property
    def config_path(self) -> str:
        """The imapd.conf every service of this instance reads (``-C``)."""
        return str(self._path("imapd.conf"))

    @property
    def http_url(self) -> str:
        """The root of the http service: session, API, upload and download URLs are paths."""
        return f"http://{self.host}:{self.http_port}"

    @property
    def jmap_session_url(self) -> str:
        """The JMAP session resource (``/.well-known/jmap`` redirects here)."""
        return f"{self.http_url}/jmap"

    def jmap_url(self, account: Account) -> str:
        """mailsync's URL for ``account`` over JMAP (plain http: pass ``tls="none"``)."""
        return f"jmap://{account.user}@{self.host}:{self.http_port}"

    def log_text(self, max_chars: int = 20000) -> str:
        """The master's own output (Cyrus logs everything else to syslog) and the config."""
        if self.root is None:
            return "(cyrus not started)"
        parts = []
        for label, path in (
            ("cyrmaster output", self._path("master.out")),
            ("cyrmaster early log", self._path("master.log")),
            ("imapd.conf", self._path("imapd.conf")),
            ("cyrus.conf", self._path("cyrus.conf")),
        ):
            text = _read_tail(path, max_chars)
            if text.strip():
                parts.append(f"----- {label} ({path}) -----\n{text}")
        return "\n".join(parts) or "(cyrus wrote nothing; it logs to syslog)"

    def daemon_pids(self) -> dict[str, int]:
        """The master's PID (it leads a process group holding every service)."""
        master = self._master
        return {"cyrus": master.pid} if master is not None and master.poll() is None else {}

    # ----------------------------------------------------------------- lifecycle

    def _prepare(self) -> None:
        reason = missing_reason()
        if reason:
            raise ServerStartError(reason)
        self._binaries = server_binaries()

    def _root_parent(self) -> str:
        """Memory (tmpfs) where there is room, else the temp dir.

        Cyrus fsyncs every database commit: on a disk, a new user's first login (six
        folders, conversations, counters) takes most of a second and each APPEND tens of
        milliseconds, on tmpfs a few milliseconds. The test data is worth nothing after
        the run anyway.
        """
        shm = "/dev/shm"
        with contextlib.suppress(OSError):
            stat = os.statvfs(shm)
            if stat.f_bavail * stat.f_frsize >= _SHM_NEEDED and os.access(shm, os.W_OK | os.X_OK):
                return shm
        return _base_dir()

    def _start_once(self) -> None:
        binaries = self._binaries
        root = self._path()
        (
            self.imap_port,
            self.imaps_port,
            self.pop3_port,
            self.pop3s_port,
            self.lmtp_port,
            self.http_port,
        ) = _free_ports(6)
        for sub in ("conf", "conf/socket", "conf/proc", "conf/log", "spool", "tls"):
            self._path(sub).mkdir(parents=True)
        make_certificate(self._path("tls"), str(find_binaries()["openssl"]))
        self._path("imapd.conf").write_text(self._imapd_conf())
        self._path("cyrus.conf").write_text(self._cyrus_conf(binaries))
        self._set_password(self.admin.user, self.admin.password)
        # The services run as cyrus (group mail) and own everything under the root.
        cyrus = pwd.getpwnam("cyrus").pw_uid
        mail = grp.getgrnam("mail").gr_gid
        for path in (root, *root.rglob("*")):
            os.chown(path, cyrus, mail)
        root.chmod(0o755)
        master = str(find_binaries()["cyrmaster"])
        command = [master, "-D", "-C", self.config_path, "-M", str(self._path("cyrus.conf"))]
        command += ["-p", str(self._path("master.pid")), "-L", str(self._path("master.log"))]
        with open(self._path("master.out"), "wb") as output:
            # Foreground (no -d), in our own process group so stop() takes every service
            # down even if the master died first; -D keeps its stderr for log_text().
            self._master = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                start_new_session=True,
            )
        self._wait_ready()

    def _imapd_conf(self) -> str:
        conf, tls = self._path("conf"), self._path("tls")
        relay_host, relay_port = self.smtp_relay or _NO_RELAY
        special_use = "\n".join(f"xlist-{name.lower()}: {name}" for name in SPECIAL_USE_FOLDERS)
        return f"""\
# Generated by tests/cyrus.py for one test session.
configdirectory: {conf}
partition-default: {self._path("spool")}
defaultpartition: default
servername: {self.servername}
admins: {self.admin.user}
# Logins are full addresses, kept whole (also the JMAP accountId); no defaultdomain.
virtdomains: userid
# Folders beside INBOX, "/" between levels (the 3.x defaults, stated).
altnamespace: yes
unixhierarchysep: yes
sasl_pwcheck_method: auxprop
sasl_auxprop_plugin: sasldb
sasl_sasldb_path: {self._path("sasldb2")}
sasl_mech_list: PLAIN LOGIN
allowplaintext: yes
# Failed-login tests would otherwise each wait the default 3 s.
failedloginpause: 0
tls_server_cert: {tls}/cert.pem
tls_server_key: {tls}/key.pem
# A user's INBOX and special-use folders appear at the first login (new_account logs in).
# Not at the first LMTP delivery (autocreate_post): that would accept any address at all.
autocreate_quota: 0
autocreate_inbox_folders: {" | ".join(SPECIAL_USE_FOLDERS)}
autocreate_subscribe_folders: {" | ".join(SPECIAL_USE_FOLDERS)}
{special_use}
# The same message delivered twice is stored twice, as on Dovecot.
duplicatesuppression: no
# IDLE: imapd binds {{configdirectory}}/socket/idle.PID and idled (cyrus.conf DAEMON) wakes
# it; without the socket directory imapd silently polls every 60 s instead.
idlesocket: {conf}/socket/idle
# JMAP on the http service.
httpmodules: jmap
conversations: yes
smtp_backend: host
smtp_host: {relay_host}:{relay_port}
syslog_prefix: mailsync-cyrus
"""

    def _cyrus_conf(self, binaries: Path) -> str:
        # Every command needs its own -C: the master does not pass its config on, and a
        # service reading /etc/imapd.conf fails on a missing /run/cyrus/proc.
        conf = self.config_path
        imapd, pop3d, idled = (binaries / name for name in _SERVER_BINARIES)
        lmtpd, httpd = _LIBEXEC / "lmtpd", _LIBEXEC / "httpd"

        def listen(port: int) -> str:
            return f'listen="{HOST}:{port}"'

        return f"""\
# Generated by tests/cyrus.py for one test session.
SERVICES {{
  imap  cmd="{imapd} -C {conf}" {listen(self.imap_port)} prefork=1
  imaps cmd="{imapd} -s -C {conf}" {listen(self.imaps_port)} prefork=0
  pop3  cmd="{pop3d} -C {conf}" {listen(self.pop3_port)} prefork=0
  pop3s cmd="{pop3d} -s -C {conf}" {listen(self.pop3s_port)} prefork=0
  lmtp  cmd="{lmtpd} -a -C {conf}" {listen(self.lmtp_port)} prefork=0
  http  cmd="{httpd} -C {conf}" {listen(self.http_port)} prefork=0
}}
EVENTS {{
}}
DAEMON {{
  idled cmd="{idled} -C {conf}"
}}
"""

    def _wait_ready(self) -> None:
        ours = self.servername.encode()
        checks = [
            ("imap", self.imap_port, False),
            ("imaps", self.imaps_port, True),
            ("pop3", self.pop3_port, False),
            ("pop3s", self.pop3s_port, True),
            ("lmtp", self.lmtp_port, False),
        ]
        for name, port, tls in checks:

            def answers(port: int = port, tls: bool = tls, name: str = name) -> bool:
                self._check_master()
                greeting = self._greeting(port, tls=tls)
                if greeting is not None and ours not in greeting:
                    raise ServerStartError(f"{name} port {port} in use by another server")
                return greeting is not None

            self._wait(answers, f"cyrus {name} greeting on port {self.host}:{port}")
        self._wait(self._http_answers, f"cyrus http on port {self.http_port}")

    def _wait(self, predicate: Callable[[], bool], what: str) -> None:
        try:
            wait_for(predicate, timeout=_TIMEOUT, interval=0.02, message=what)
        except TimeoutError as error:
            raise self._fail(str(error)) from error

    def _check_master(self) -> None:
        master = self._master
        if master is not None and master.poll() is not None:
            raise self._fail(f"cyrmaster exited with status {master.returncode}")

    def _greeting(self, port: int, *, tls: bool) -> bytes | None:
        try:
            with socket.create_connection((self.host, port), timeout=5) as sock:
                if not tls:
                    return sock.recv(512)
                with self.ssl_context().wrap_socket(sock, server_hostname=self.host) as wrapped:
                    return wrapped.recv(512)
        except (OSError, ssl.SSLError):
            return None

    def _http_answers(self) -> bool:
        self._check_master()
        # Cyrus names no Server; its redirect echoes the Host asked for, our unique name.
        request = f"GET /.well-known/jmap HTTP/1.0\r\nHost: {self.servername}\r\n\r\n"
        try:
            with socket.create_connection((self.host, self.http_port), timeout=5) as sock:
                sock.sendall(request.encode())
                reply = sock.recv(1024)
        except OSError:
            return False
        if not reply:
            return False
        if f"Location: http://{self.servername}/jmap".encode() not in reply:
            raise ServerStartError(f"http port {self.http_port} in use by another server")
        return True

    # ----------------------------------------------------------------- shutdown

    def _stop_daemons(self) -> None:
        process, self._master = self._master, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # the master takes its services along
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
        _kill_group(process.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)

    # ----------------------------------------------------------------- accounts

    def _set_password(self, user: str, password: str) -> None:
        saslpasswd2 = str(find_binaries()["saslpasswd2"])
        sasldb = self._path("sasldb2")
        with self._lock:
            # A user without a domain (the admin) is looked up in the realm of the server's
            # name; saslpasswd2 would file it under this machine's host name.
            realm = [] if "@" in user else ["-u", self.servername]
            result = subprocess.run(
                [saslpasswd2, "-p", "-c", "-f", str(sasldb), *realm, user],
                input=password.encode(),
                capture_output=True,
                timeout=_TIMEOUT,
            )
        if result.returncode != 0:
            raise RuntimeError(f"saslpasswd2 failed: {result.stderr.decode(errors='replace')}")

    def new_account(self, prefix: str = "c", *, password: str | None = None) -> Account:
        """A fresh user ``<prefix><n>-<hex>@cyrus.test`` with its INBOX and special-use
        folders already created, usable at once over IMAP, POP3, LMTP and JMAP.

        ``password`` may be given to test awkward characters (not NUL or line breaks).
        """
        if not prefix or not all(c.isascii() and (c.isalnum() or c in "._-") for c in prefix):
            raise ValueError(f"prefix must be ASCII letters, digits, '.', '_' or '-': {prefix!r}")
        if password is None:
            password = secrets.token_urlsafe(12)
        if any(char in password for char in "\r\n\0"):
            raise ValueError("password cannot contain NUL or line breaks")
        with self._lock:
            self._counter += 1
            local = f"{prefix.lower()}{self._counter}-{secrets.token_hex(3)}"
        address = f"{local}@{CYRUS_DOMAIN}"
        self._set_password(address, password)
        login = Account(user=address, password=password, email=address, maildir=Path())
        with self.imap(login):  # the first login creates the folders (autocreate_*)
            pass
        return dataclasses.replace(login, maildir=self._spool(login))

    def expire_expunged(self, account: Account) -> None:
        """Remove ``account``'s expunged messages for good now (``cyr_expire -X 0``): the
        JMAP history before them is gone, and ``Email/changes`` from an older state answers
        ``cannotCalculateChanges``."""
        command = [str(_LIBEXEC / "cyr_expire"), "-C", self.config_path, "-X", "0", "-D", "0"]
        result = subprocess.run(
            [*command, "-u", account.user],
            capture_output=True,
            text=True,
            timeout=_TIMEOUT,
            user="cyrus",
            group="mail",
        )
        if result.returncode != 0:
            raise RuntimeError(f"cyr_expire failed: {(result.stderr or result.stdout).strip()}")

    def _spool(self, account: Account) -> Path:
        """The directory of the account's INBOX, one file per message (``<uid>.``)."""
        result = subprocess.run(
            [str(_LIBEXEC / "mbpath"), "-C", self.config_path, "-u", account.user],
            capture_output=True,
            text=True,
            timeout=_TIMEOUT,
        )
        if result.returncode != 0:
            raise RuntimeError(f"mbpath failed: {result.stderr.strip()}")
        return Path(result.stdout.strip())


def _main(argv: list[str]) -> int:
    """``python3 -m tests.cyrus install``: fetch the server binaries now (for CI)."""
    if argv != ["install"]:
        print("usage: python3 -m tests.cyrus install", file=sys.stderr)
        return 2
    reason = missing_reason()
    if reason is not None:
        print(reason, file=sys.stderr)
        return 1
    print(f"Cyrus imapd, pop3d and idled are in {server_binaries()}")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
