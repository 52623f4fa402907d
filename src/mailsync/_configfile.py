"""The accounts file: its format, and the checks that make every mistake in it a clear error.

::

    default = "work"                     # the account used when none is named

    [accounts.work]
    retrieve = "imaps://alice@example.com@imap.example.com"
    send = "smtp://alice@example.com@smtp.example.com"
    password_env = "WORK_PW"             # or password_command, password_keyring, password
    timeout = 60                         # tls, verify, ca_file, timeout: for both directions
    ca_file = "~/corp-ca.pem"            # trust a private CA (verify = "path" is the same)
    save_to = "Sent"                     # file a copy of what is sent (true: the \\Sent one)

    [accounts.work.send]                 # a direction as a table: its own settings
    url = "smtp://relay.internal:25"
    tls = "none"                         # and user, password_*, verify, ca_file, timeout...

A key at the account's top level applies to both directions unless a direction's table says
otherwise; a backend option (``apop``, ``batch_size``, ``retries``...) goes to the direction
whose backend takes it. The password of the top level is only given to a direction whose URL
names a user, so an authenticated IMAP server and an open relay live in one account.

Every error names the file, the account and the key (``config.toml: accounts.work.send:
unknown key 'timout' (did you mean 'timeout'?)``). Relative paths (``ca_file``, ``verify``,
``state``) are taken from the file's directory. No network I/O: URLs are parsed, not tried.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mailsync import _registry
from mailsync._accounts import SECRET_KEYS, Account, Direction, _Settings
from mailsync._config import TLS_MODES, parse_url
from mailsync._errors import ConfigError, Unsupported

__all__ = ["load"]

_TOP_KEYS = ("default", "accounts")
# Keys a direction's table and the account's top level both take.
_CONNECTION_KEYS = ("tls", "verify", "ca_file", "timeout", *SECRET_KEYS)
_ONLY = {"retrieve": ("state",), "send": ("save_to",)}
_ROLES = {"retrieve": "retriever", "send": "sender"}


class _Place:
    """Where a value is in the file, for error messages: ``file: accounts.work.send``."""

    def __init__(self, path: Path, *keys: str) -> None:
        self.path = path
        self.keys = keys

    def __truediv__(self, key: str) -> _Place:
        return _Place(self.path, *self.keys, key)

    def error(self, problem: str) -> ConfigError:
        where = ".".join(self.keys)
        return ConfigError(
            f"{self.path}: {where}: {problem}" if where else f"{self.path}: {problem}"
        )


def load(path: Path) -> tuple[dict[str, Account], str | None]:
    """The accounts of the file at ``path`` and its ``default``; nothing when it is missing.

    Raises:
        ConfigError: The file cannot be read or is not valid.
    """
    import tomllib

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
    top = _Place(path)
    _only_known(top, data, _TOP_KEYS)
    table = data.get("accounts", {})
    if not isinstance(table, dict):
        raise (top / "accounts").error("must be a table of accounts ([accounts.NAME])")
    found = {}
    for name, entry in table.items():
        place = top / "accounts" / name
        if not isinstance(entry, dict):
            raise place.error("must be a table ([accounts.NAME] with retrieve/send URLs)")
        found[name] = _account(name, entry, place)
    default = data.get("default")
    if default is not None:
        if not isinstance(default, str):
            raise (top / "default").error(f"must be an account name, not {default!r}")
        if default not in found:
            known = ", ".join(sorted(found)) or "none"
            raise (top / "default").error(f"no account {default!r} (accounts: {known})")
    return found, default


def _account(name: str, entry: dict[str, Any], place: _Place) -> Account:
    if "user" in entry:
        raise (place / "user").error(
            "put the user in the URL, or in [accounts.NAME.retrieve] / [accounts.NAME.send]"
        )
    urls: dict[Direction, tuple[str, dict[str, Any]]] = {}
    for direction in ("retrieve", "send"):
        value = entry.get(direction)
        if value is not None:
            urls[direction] = _direction_entry(value, place / direction)
    if not urls:
        raise place.error("needs a 'retrieve' or 'send' URL")
    shared = {k: v for k, v in entry.items() if k not in ("retrieve", "send")}
    backend_keys = _backend_keys(urls, place)
    if all(keys is not None for keys in backend_keys.values()):
        taken = {key for keys in backend_keys.values() for key in keys or ()}
        _only_known(place, shared, {*_CONNECTION_KEYS, *_ONLY["retrieve"], *_ONLY["send"], *taken})
    settings = {
        direction: _settings(direction, url, own, shared, backend_keys[direction], place)
        for direction, (url, own) in urls.items()
    }
    save_to = _save_to(shared, urls, place)
    top_options = {
        ("verify" if k == "ca_file" else k): _value(place / k, k, v)
        for k, v in shared.items()
        if k not in (*SECRET_KEYS, "save_to")
    }
    return Account(
        name=name,
        retrieve=settings["retrieve"][0] if "retrieve" in settings else None,
        send=settings["send"][0] if "send" in settings else None,
        options=top_options,
        secret_source={k: str(shared[k]) for k in SECRET_KEYS if k in shared},
        save_to=save_to,
        source=str(place.path),
        _retrieve_settings=settings["retrieve"][1] if "retrieve" in settings else None,
        _send_settings=settings["send"][1] if "send" in settings else None,
    )


def _direction_entry(value: Any, place: _Place) -> tuple[str, dict[str, Any]]:
    """A direction written as a URL string, or as a table with ``url`` and its settings."""
    if isinstance(value, str):
        return _url(value, place), {}
    if not isinstance(value, dict):
        raise place.error("must be a URL, or a table with url = ...")
    url = value.get("url")
    if not isinstance(url, str):
        raise (place / "url").error('a direction\'s table needs url = "scheme://..."')
    return _url(url, place / "url"), {k: v for k, v in value.items() if k != "url"}


def _url(url: str, place: _Place) -> str:
    try:
        parse_url(url)
    except ConfigError as exc:
        raise place.error(str(exc)) from None
    return url


def _backend_keys(
    urls: Mapping[Direction, tuple[str, dict[str, Any]]], place: _Place
) -> dict[Direction, frozenset[str] | None]:
    """The backend options each direction's scheme takes (None: it does not say, any)."""
    found: dict[Direction, frozenset[str] | None] = {}
    for direction, (url, _) in urls.items():
        try:
            found[direction] = _registry.spec_for(parse_url(url).scheme).options
        except (ConfigError, Unsupported) as exc:
            raise (place / direction).error(str(exc)) from None
    return found


def _settings(
    direction: Direction,
    url: str,
    own: dict[str, Any],
    shared: dict[str, Any],
    backend: frozenset[str] | None,
    account: _Place,
) -> tuple[str, _Settings]:
    place = account / direction
    mine = {*_CONNECTION_KEYS, *_ONLY[direction], *(backend or ())}
    if backend is not None:
        _only_known(place, own, {*mine, "user"})
    if "user" in own:
        url = _with_user(url, own["user"], place / "user")
    options: dict[str, Any] = {}
    origin: dict[str, _Place] = {}  # where each setting is written, for error messages
    for key, value in shared.items():  # the account's, where this direction takes them
        if (key in mine or backend is None) and key not in (*SECRET_KEYS, "save_to"):
            options[key], origin[key] = value, account / key
    for key, value in own.items():
        if key not in (*SECRET_KEYS, "user", "save_to"):
            options[key], origin[key] = value, place / key
    if "ca_file" in options and "verify" in options:
        raise place.error("give either ca_file or verify, not both")
    if "ca_file" in options:
        options["verify"], origin["verify"] = options.pop("ca_file"), origin["ca_file"]
    options = {key: _value(origin[key], key, value) for key, value in options.items()}
    if "tls" in options:
        _check_tls(url, options["tls"], origin["tls"])
    secret = {k: own[k] for k in SECRET_KEYS if k in own}
    if len(secret) > 1:
        raise place.error(f"give one password source, not {', '.join(sorted(secret))}")
    if not secret and parse_url(url).username:
        secret = {k: shared[k] for k in SECRET_KEYS if k in shared}
    elif secret and not parse_url(url).username:
        raise place.error(
            f'{next(iter(secret))} needs a user: put it in the URL or set user = "..."'
        )
    for key, value in secret.items():
        _check_value(place / key, key, value)
    return url, _Settings(options, {k: str(v) for k, v in secret.items()})


def _with_user(url: str, user: Any, place: _Place) -> str:
    if not isinstance(user, str) or not user:
        raise place.error(f"must be a user name, not {user!r}")
    scheme, _, rest = url.partition("://")
    authority, slash, tail = rest.partition("/")
    _, _, hostport = authority.rpartition("@")
    # "@" stays as it is (the last one separates the host); ":" would start a password.
    return f"{scheme}://{quote(user, safe='@')}@{hostport}{slash}{tail}"


def _check_tls(url: str, tls: Any, place: _Place) -> None:
    try:
        parse_url(url, tls=tls)
    except ConfigError:
        scheme = url.partition(":")[0].lower()
        plain = scheme[:-1]
        raise place.error(
            f"{scheme}:// always uses implicit TLS, so tls = {tls!r} cannot apply; write "
            f"the URL as {plain}://{url.partition('://')[2]} to use tls = {tls!r}"
        ) from None


def _save_to(
    shared: Mapping[str, Any], urls: Mapping[Direction, tuple[str, dict[str, Any]]], place: _Place
) -> str | None:
    value = urls["send"][1].get("save_to") if "send" in urls else None
    where = place / "send" / "save_to"
    if value is None:
        value, where = shared.get("save_to"), place / "save_to"
    if value is None or value is False:
        return None
    if "send" not in urls or "retrieve" not in urls:
        raise where.error("needs both a 'send' URL and a 'retrieve' mailbox to file copies in")
    if value is True:
        return "\\Sent"
    if not isinstance(value, str) or not value:
        raise where.error(f"must be a folder name or true, not {value!r}")
    return value


def _value(place: _Place, key: str, value: Any) -> Any:
    """A setting checked and made what ``connect()`` takes (paths resolved)."""
    _check_value(place, key, value)
    if key in ("verify", "state") and isinstance(value, str) and value != ":memory:":
        path = Path(value).expanduser()
        if not path.is_absolute():
            path = place.path.parent / path
        if key == "verify" and not path.exists():
            raise place.error(f"no CA certificate file at {str(path)!r}")
        return str(path)
    return value


def _check_value(place: _Place, key: str, value: Any) -> None:
    problem = _problem(key, value)
    if problem:
        raise place.error(problem)


def _problem(key: str, value: Any) -> str:
    if key == "tls" and value not in TLS_MODES:
        return f"must be one of {', '.join(repr(m) for m in TLS_MODES)}, not {value!r}"
    if key == "timeout" and (
        isinstance(value, bool) or not isinstance(value, int | float) or value <= 0
    ):
        return f"must be a positive number of seconds, not {value!r}"
    if key == "verify" and not isinstance(value, bool | str):
        return f"must be true, false or the path of a CA file, not {value!r}"
    if key in ("ca_file", "state", *SECRET_KEYS) and (not isinstance(value, str) or not value):
        return f"must be a non-empty string, not {value!r}"
    return ""


def _only_known(place: _Place, table: Mapping[str, Any], valid: Iterable[str]) -> None:
    allowed = set(valid)
    for key in table:
        if key not in allowed:
            raise place.error(_registry.unknown_name(key, allowed).replace("option", "key", 1))
