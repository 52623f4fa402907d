"""Real PostgreSQL and Redis servers on loopback, for the fleet tests and benchmarks.

``PostgresServer`` runs ``initdb`` and ``pg_ctl`` from the Debian package's binaries as the
``postgres`` user, with the data directory, socket and log in a fresh temporary directory and
the listener on 127.0.0.1 at a free high port; ``RedisServer`` runs ``redis-server`` with a
temporary config the same way. Both are tuned for throw-away test data (no fsync, no
persistence) and stop and remove everything on ``stop()``, as tests/servers.py does for
Dovecot and Postfix.

Needs root (PostgreSQL refuses to run as root, so it switches to ``postgres``) and the Debian
packages ``postgresql redis-server``.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from tests.servers import HOST, _alive, _free_ports, wait_for

__all__ = ["PostgresServer", "RedisServer", "postgres_missing", "redis_missing"]

_APT_HINT = "apt-get install -y postgresql redis-server"
_TIMEOUT = 60.0


def _postgres_bin() -> Path | None:
    """The bin directory of the newest PostgreSQL installed (Debian keeps each version in
    /usr/lib/postgresql/N/bin, off the PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version)
    return Path(found[-1]).parent if found else None


def _version(path: str) -> int:
    try:
        return int(Path(path).parent.parent.name)
    except ValueError:
        return 0


def postgres_missing() -> str | None:
    """Why PostgreSQL cannot run here, or None when it can."""
    if _postgres_bin() is None:
        return f"PostgreSQL binaries missing (install: {_APT_HINT})"
    if os.geteuid() != 0:
        return "the PostgreSQL test server must be started as root (it switches to postgres)"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return f"system user 'postgres' missing (install: {_APT_HINT})"
    return None


def redis_missing() -> str | None:
    """Why Redis cannot run here, or None when it can."""
    if shutil.which("redis-server", path="/usr/bin:/usr/sbin:" + os.environ.get("PATH", "")):
        return None
    return f"redis-server missing (install: {_APT_HINT})"


class _Daemon:
    root: Path | None = None

    def __enter__(self) -> _Daemon:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> _Daemon:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class PostgresServer(_Daemon):
    """A private PostgreSQL cluster on 127.0.0.1 with trust authentication for ``postgres``.

    ``url(dbname)`` is a libpq URL; :meth:`new_database` makes a fresh empty database, so each
    test can have its own.
    """

    def __init__(self) -> None:
        self.port = 0
        self._bin: Path | None = None
        self._counter = 0

    def url(self, dbname: str = "postgres") -> str:
        """A ``postgresql://`` URL for a database of this server."""
        return f"postgresql://postgres@{HOST}:{self.port}/{dbname}"

    def start(self) -> PostgresServer:
        reason = postgres_missing()
        if reason:
            raise RuntimeError(reason)
        self._bin = _postgres_bin()
        self.root = Path(tempfile.mkdtemp(prefix="mailsync-pg-"))
        atexit.register(self.stop)
        try:
            self._start_once()
        except BaseException:
            self.stop()
            raise
        return self

    def _as_postgres(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        assert self._bin is not None
        result = subprocess.run(
            [str(self._bin / args[0]), *args[1:]],
            user="postgres",
            group="postgres",
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_TIMEOUT,
            cwd="/",
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace")
            raise RuntimeError(f"{args[0]} failed ({result.returncode}):\n{output}\n{self.log()}")
        return result

    def _start_once(self) -> None:
        assert self.root is not None
        self.root.chmod(0o755)
        data = self.root / "data"
        shutil.chown(self.root, "postgres", "postgres")
        self._as_postgres("initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8")
        (self.port,) = _free_ports(1)
        settings = {
            "listen_addresses": f"'{HOST}'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'",
            "max_connections": "300",
            # Throw-away data: durability would only cost time.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "64MB",
        }
        with open(data / "postgresql.conf", "a") as conf:
            conf.write("\n# tests/databases.py\n")
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())
        self._as_postgres(
            "pg_ctl", "-D", str(data), "-l", str(self.root / "postgres.log"), "-w", "start"
        )

    def log(self) -> str:
        """The tail of the server log, for failure messages."""
        if self.root is None:
            return ""
        with contextlib.suppress(OSError):
            return (self.root / "postgres.log").read_text(errors="replace")[-4000:]
        return ""

    def new_database(self, prefix: str = "t") -> str:
        """Create an empty database and return its URL."""
        import psycopg

        self._counter += 1
        name = f"{prefix}{self._counter}_{secrets.token_hex(3)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Stop the server (immediately: the data is thrown away) and remove its files."""
        atexit.unregister(self.stop)
        root, self.root = self.root, None
        if root is None:
            return
        if (root / "data" / "postmaster.pid").exists():
            self.root = root  # for _as_postgres's log on failure
            with contextlib.suppress(Exception):
                self._as_postgres("pg_ctl", "-D", str(root / "data"), "-m", "immediate", "stop")
            self.root = None
        shutil.rmtree(root, ignore_errors=True)


class RedisServer(_Daemon):
    """A private Redis on 127.0.0.1 (no persistence), for the Celery broker."""

    def __init__(self) -> None:
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        """A ``redis://`` URL for a database of this server."""
        return f"redis://{HOST}:{self.port}/{db}"

    def start(self) -> RedisServer:
        reason = redis_missing()
        if reason:
            raise RuntimeError(reason)
        self.root = Path(tempfile.mkdtemp(prefix="mailsync-redis-"))
        atexit.register(self.stop)
        (self.port,) = _free_ports(1)
        config = self.root / "redis.conf"
        config.write_text(
            f'bind {HOST}\nport {self.port}\ndir {self.root}\nsave ""\nappendonly no\n'
            f"daemonize no\nlogfile {self.root / 'redis.log'}\nprotected-mode yes\n"
        )
        redis = shutil.which("redis-server", path="/usr/bin:/usr/sbin:" + os.environ["PATH"])
        assert redis is not None
        self._process = subprocess.Popen(
            [redis, str(config)], stdin=subprocess.DEVNULL, start_new_session=True
        )
        try:
            wait_for(self._ready, timeout=_TIMEOUT, message="redis-server accepts connections")
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        import socket

        assert self._process is not None
        if self._process.poll() is not None:
            raise RuntimeError(f"redis-server exited with status {self._process.returncode}")
        with socket.socket() as sock:
            sock.settimeout(1)
            try:
                sock.connect((HOST, self.port))
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
            except OSError:
                return False

    def stop(self) -> None:
        """Stop the server and remove its files."""
        atexit.unregister(self.stop)
        process, self._process = self._process, None
        if process is not None and _alive(process.pid):
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
