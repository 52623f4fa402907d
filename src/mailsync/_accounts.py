"""Named accounts from ``~/.config/mailsync/config.toml`` (or ``$MAILSYNC_CONFIG``).

::

    default = "work"

    [accounts.work]
    retrieve = "imaps://alice@example.com@imap.example.com"
    send = "smtps://alice@example.com@smtp.example.com"
    password_env = "WORK_MAIL_PASSWORD"        # or password_command / password_keyring
    # password_command = "pass show mail/work"
    # password_keyring = "mailsync/work"          (service/username; needs mailsync[keyring])

With no config file (or no account of that name, for ``"default"``), the default account is a
local Maildir in the user data dir: the embedded default, which works with no server.

Secrets are only read when a connection is made, and never stored on the objects' ``repr``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailsync._base import AsyncRetriever, AsyncSender, Retriever, Sender
from mailsync._config import Secret
from mailsync._errors import ConfigError
from mailsync._facade import connect, connect_async, sender, sender_async
from mailsync._state import default_data_dir

__all__ = ["Account", "account", "accounts", "config_path", "default_maildir"]

_SECRET_KEYS = ("password", "password_env", "password_command", "password_keyring")


def config_path() -> Path:
    """Where the account file is: ``$MAILSYNC_CONFIG`` or ``~/.config/mailsync/config.toml``."""
    override = os.environ.get("MAILSYNC_CONFIG")
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "mailsync" / "config.toml"


def default_maildir() -> Path:
    """The embedded default account's Maildir (in the user data dir)."""
    return default_data_dir() / "Maildir"


@dataclass(frozen=True)
class Account:
    """A named account: where to retrieve, where to send, and how to get its secret.

    Attributes:
        name: The account's name in the config file.
        retrieve: The retriever URL, or None.
        send: The sender URL, or None.
        options: Other keyword options passed to ``connect``/``sender`` (``tls``, ``verify``,
            ``timeout``, ``state``...).
    """

    name: str
    retrieve: str | None
    send: str | None
    options: Mapping[str, Any] = field(default_factory=dict)
    secret_source: Mapping[str, str] = field(default_factory=dict, repr=False)

    def password(self) -> Secret | None:
        """Read the secret from where the config says (env var, command, keyring)."""
        source = self.secret_source
        if "password" in source:
            return Secret(source["password"])
        if "password_env" in source:
            value = os.environ.get(source["password_env"])
            if value is None:
                raise ConfigError(
                    f"account {self.name!r}: the environment variable "
                    f"{source['password_env']!r} is not set"
                )
            return Secret(value)
        if "password_command" in source:
            return Secret(self._run_command(source["password_command"]))
        if "password_keyring" in source:
            return Secret(self._keyring(source["password_keyring"]))
        return None

    def _run_command(self, command: str) -> str:
        import shlex
        import subprocess

        try:
            done = subprocess.run(
                shlex.split(command), capture_output=True, text=True, timeout=60, check=True
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise ConfigError(
                f"account {self.name!r}: the password command failed ({type(exc).__name__})"
            ) from None  # the command's output may hold the secret: do not chain it
        return done.stdout.rstrip("\r\n")

    def _keyring(self, spec: str) -> str:
        try:
            import keyring
        except ImportError:
            raise ConfigError(
                f"account {self.name!r} reads its password from the keyring: "
                'pip install "mailsync[keyring]"'
            ) from None
        service, _, username = spec.partition("/")
        value = keyring.get_password(service, username or self.name)
        if value is None:
            raise ConfigError(f"account {self.name!r}: no keyring entry for {spec!r}")
        return str(value)

    def _kwargs(self, *, retriever: bool) -> dict[str, Any]:
        kwargs = dict(self.options)
        if not retriever:
            kwargs.pop("state", None)
        secret = self.password()
        if secret is not None:
            kwargs["password"] = secret.reveal()
        return kwargs

    def retriever(self) -> Retriever:
        """A retriever for this account."""
        if not self.retrieve:
            raise ConfigError(f"account {self.name!r} has no 'retrieve' URL")
        return connect(self.retrieve, **self._kwargs(retriever=True))

    def retriever_async(self) -> AsyncRetriever:
        """An async retriever for this account."""
        if not self.retrieve:
            raise ConfigError(f"account {self.name!r} has no 'retrieve' URL")
        return connect_async(self.retrieve, **self._kwargs(retriever=True))

    def sender(self) -> Sender:
        """A sender for this account."""
        if not self.send:
            raise ConfigError(f"account {self.name!r} has no 'send' URL")
        return sender(self.send, **self._kwargs(retriever=False))

    def sender_async(self) -> AsyncSender:
        """An async sender for this account."""
        if not self.send:
            raise ConfigError(f"account {self.name!r} has no 'send' URL")
        return sender_async(self.send, **self._kwargs(retriever=False))


def _embedded_default() -> Account:
    url = f"maildir:{default_maildir()}"
    return Account(name="default", retrieve=url, send=url)


def _load() -> tuple[dict[str, Account], str | None]:
    import tomllib

    path = config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}, None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    table = data.get("accounts", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [accounts] must be a table of accounts")
    result = {}
    for name, entry in table.items():
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: accounts.{name} must be a table")
        result[name] = _account(name, entry, path)
    default = data.get("default")
    return result, default if isinstance(default, str) else None


def _account(name: str, entry: dict[str, Any], path: Path) -> Account:
    retrieve, send = entry.get("retrieve"), entry.get("send")
    if not retrieve and not send:
        raise ConfigError(f"{path}: account {name!r} needs a 'retrieve' or 'send' URL")
    secrets = {k: str(entry[k]) for k in _SECRET_KEYS if k in entry}
    options = {k: v for k, v in entry.items() if k not in (*_SECRET_KEYS, "retrieve", "send")}
    return Account(name, retrieve, send, options, secrets)


def accounts() -> dict[str, Account]:
    """Every account in the config file; just the embedded default when there is none."""
    found, _ = _load()
    return found or {"default": _embedded_default()}


def account(name: str | None = None) -> Account:
    """An account by name; without a name, the config's ``default`` (or its only account),
    else the embedded default Maildir.

    Raises:
        ConfigError: No account of that name.
    """
    found, default = _load()
    if name is None:
        name = default or (next(iter(found)) if len(found) == 1 else "default")
    if name in found:
        return found[name]
    if name == "default":
        return _embedded_default()
    known = ", ".join(sorted(found)) or "none configured"
    raise ConfigError(f"no account {name!r} in {config_path()} (accounts: {known})")
