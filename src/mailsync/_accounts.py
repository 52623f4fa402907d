"""Named accounts from ``~/.config/mailsync/config.toml`` (or ``$MAILSYNC_CONFIG``).

::

    default = "work"

    [accounts.work]
    retrieve = "imaps://alice@example.com@imap.example.com"
    send = "smtps://alice@example.com@smtp.example.com"
    password_env = "WORK_MAIL_PASSWORD"        # or password_command / password_keyring
    save_to = "Sent"                           # file a copy of what is sent there

    [accounts.work.send]                       # the sender's own settings, when they differ
    url = "smtp://relay.internal:25"
    tls = "none"

The file's format and its checks live in :mod:`mailsync._configfile`; this module owns the
:class:`Account` value and how it makes retrievers and senders.

With no config file, the default account is a local Maildir in the user data dir: the embedded
default, which works with no server (it is created, empty, on first use).

Secrets are only read when a connection is made, and never stored on the objects' ``repr``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mailsync._base import AsyncRetriever, AsyncSender, Retriever, Sender
from mailsync._config import Secret
from mailsync._errors import ConfigError
from mailsync._facade import connect, connect_async, sender, sender_async
from mailsync._state import default_data_dir

__all__ = ["Account", "Direction", "account", "accounts", "config_path", "default_maildir"]

SECRET_KEYS = ("password", "password_env", "password_command", "password_keyring")

Direction = Literal["retrieve", "send"]


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
class _Settings:
    """What one direction (retrieve or send) of an account connects with.

    Attributes:
        options: Keyword options for ``connect``/``sender`` (``tls``, ``verify``, backend
            options...), already merged from the account's and the direction's own.
        secret_source: Where its password comes from (``password_env``...), if anywhere.
    """

    options: Mapping[str, Any] = field(default_factory=dict)
    secret_source: Mapping[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Account:
    """A named account: where to retrieve, where to send, and how to get its secrets.

    Attributes:
        name: The account's name in the config file.
        retrieve: The retriever URL, or None.
        send: The sender URL, or None.
        options: Keyword options shared by both directions (``tls``, ``verify``,
            ``timeout``, ``state``...), as written at the account's top level.
        save_to: The folder of the retrieve mailbox where a copy of what is sent is filed
            (``"\\\\Sent"``: the folder marked as such), or None.
        source: The config file the account comes from (empty for the embedded default).
    """

    name: str
    retrieve: str | None
    send: str | None
    options: Mapping[str, Any] = field(default_factory=dict)
    secret_source: Mapping[str, str] = field(default_factory=dict, repr=False)
    save_to: str | None = None
    source: str = ""
    _retrieve_settings: _Settings | None = field(default=None, repr=False)
    _send_settings: _Settings | None = field(default=None, repr=False)

    def _settings(self, direction: Direction) -> _Settings:
        """The options and secret source one direction connects with."""
        own = self._retrieve_settings if direction == "retrieve" else self._send_settings
        if own is not None:
            return own
        options = dict(self.options)
        if direction == "send":
            options.pop("state", None)
        return _Settings(options, self.secret_source)

    def password(self, direction: Direction = "retrieve") -> Secret | None:
        """Read the secret of one direction from where the config says (env var, command,
        keyring), or None when it has none."""
        source = self._settings(direction).secret_source
        if "password" in source:
            return Secret(source["password"])
        if "password_env" in source:
            value = os.environ.get(source["password_env"])
            if value is None:
                raise ConfigError(
                    f"account {self.name!r}{self._where()}: password_env: the environment "
                    f"variable {source['password_env']!r} is not set"
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
                f"account {self.name!r}{self._where()}: password_command failed "
                f"({type(exc).__name__})"
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
            raise ConfigError(
                f"account {self.name!r}{self._where()}: password_keyring: no keyring entry "
                f"for {spec!r}"
            )
        return str(value)

    def connect_options(self, direction: Direction, **overrides: Any) -> dict[str, Any]:
        """The keyword arguments ``connect``/``sender`` get for one direction, the secret
        read now; ``overrides`` (from a command line) win."""
        options = dict(self._settings(direction).options)
        secret = self.password(direction)
        if secret is not None:
            options["password"] = secret.reveal()
        options.update(overrides)
        return options

    def url(self, direction: Direction) -> str:
        """The URL of one direction.

        Raises:
            ConfigError: The account has none.
        """
        found = self.retrieve if direction == "retrieve" else self.send
        if not found:
            raise ConfigError(f"account {self.name!r} has no {direction!r} URL{self._where()}")
        return found

    def _where(self) -> str:
        return f" in {self.source}" if self.source else ""

    def retriever(self, **overrides: Any) -> Retriever:
        """A retriever for this account (``overrides``: keyword options that win)."""
        return connect(self.url("retrieve"), **self.connect_options("retrieve", **overrides))

    def retriever_async(self, **overrides: Any) -> AsyncRetriever:
        """An async retriever for this account."""
        return connect_async(self.url("retrieve"), **self.connect_options("retrieve", **overrides))

    def sender(self, **overrides: Any) -> Sender:
        """A sender for this account; with ``save_to`` set, it files a copy of what it sends
        in that folder of the account's retrieve mailbox."""
        out = sender(self.url("send"), **self.connect_options("send", **overrides))
        if self.save_to is None:
            return out
        from mailsync._sent import saving_sender

        return saving_sender(out, (self.retriever(), self.save_to), own_mailbox=True)

    def sender_async(self, **overrides: Any) -> AsyncSender:
        """An async sender for this account (see :meth:`sender`)."""
        out = sender_async(self.url("send"), **self.connect_options("send", **overrides))
        if self.save_to is None:
            return out
        from mailsync._sent import saving_sender_async

        return saving_sender_async(out, (self.retriever_async(), self.save_to), own_mailbox=True)


def embedded_default() -> Account:
    """The account used when there is no config file: a local Maildir, created on first use."""
    url = f"maildir:{default_maildir()}"
    return Account(
        name="default",
        retrieve=url,
        send=url,
        _retrieve_settings=_Settings({"create": True}),
    )


def _load(config: str | os.PathLike[str] | None) -> tuple[dict[str, Account], str | None, Path]:
    from mailsync._configfile import load

    if config is not None:
        path = Path(config).expanduser()
        if not path.is_file():
            raise ConfigError(f"no config file at {path}")
    else:
        path = config_path()
    found, default = load(path)
    return found, default, path


def accounts(*, config: str | os.PathLike[str] | None = None) -> dict[str, Account]:
    """Every account in the config file; just the embedded default when there is none.

    Args:
        config: Another config file than the default one.

    Raises:
        ConfigError: The file is not valid; the message names the file, account and key.
    """
    found, _, _ = _load(config)
    return found or {"default": embedded_default()}


def account(name: str | None = None, *, config: str | os.PathLike[str] | None = None) -> Account:
    """An account by name; without one, the config file's ``default`` (or its only account),
    else, with no account configured at all, the embedded default Maildir.

    Args:
        name: The account's name.
        config: Another config file than the default one.

    Raises:
        ConfigError: No account of that name, several accounts and no ``default`` to choose
            one, or a file that is not valid; the message lists the accounts there are.
    """
    found, default, path = _load(config)
    if name is None or (name == "default" and name not in found):
        if not found:
            return embedded_default()
        if default is None and len(found) > 1:
            raise ConfigError(
                f"{path} has {len(found)} accounts and no default: name one (accounts: "
                f'{", ".join(sorted(found))}), or add default = "NAME" at the top of the file'
            )
        name = default or next(iter(found))
    if name in found:
        return found[name]
    known = ", ".join(sorted(found)) or "none configured"
    raise ConfigError(f"no account {name!r} in {path} (accounts: {known})")
