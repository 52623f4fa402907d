"""Google sign-in for mailsync: google-auth credentials as the ``token=`` callable.

Install the extra (``pip install "mailsync[google]"``: google-auth and requests), then::

    import mailsync
    from mailsync.integrations.google import GMAIL_MODIFY, service_account_token

    token = service_account_token("sa.json", subject="alice@example.com", scopes=[GMAIL_MODIFY])
    box = mailsync.connect("gmail://alice@example.com", token=token)

Three ways in, all ending in :class:`CredentialsToken`:

- :func:`service_account_token`: a service account with domain-wide delegation acting for one
  user of a Google Workspace domain (``subject``);
- :func:`authorized_user_token`: the ``authorized_user`` JSON an installed-app OAuth flow saved
  (google-auth-oauthlib's ``InstalledAppFlow``, ``gcloud auth application-default login``);
- :func:`token_from_credentials`: any google-auth credentials object you already have.

The callable hands out the credentials' access token, refreshing it when it has expired or is
about to (google-auth's own rule), and also when mailsync asks again for the token it was
last given: mailsync asks again only after the server refused it (HTTP 401) or for a new
connection. Refresh failures are mailsync errors (:class:`~mailsync.AuthenticationError` for
a refused grant, :class:`~mailsync.ConnectionFailed` when the token endpoint cannot be
reached), the google-auth error chained; no token or key appears in a message or a repr.

mailsync's core never imports Google's libraries: this module imports google-auth only when
one of its functions is called, and says which extra to install when it is missing. Written
by hand because it is the small glue between two libraries that neither ships.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from mailsync._errors import AuthenticationError, ConfigError, ConnectionFailed

__all__ = [
    "GMAIL_FULL",
    "GMAIL_MODIFY",
    "GMAIL_READONLY",
    "GMAIL_SEND",
    "CredentialsToken",
    "authorized_user_token",
    "service_account_token",
    "token_from_credentials",
]

#: Read messages, labels and the history (``gmail://`` retrieval without changes).
GMAIL_READONLY = "https://www.googleapis.com/auth/gmail.readonly"
#: Read, change flags and labels, move to the trash, insert, send (not delete for good).
GMAIL_MODIFY = "https://www.googleapis.com/auth/gmail.modify"
#: Send only (``mailsync.sender("gmail://...")``).
GMAIL_SEND = "https://www.googleapis.com/auth/gmail.send"
#: Everything, including ``delete(permanent=True)`` and IMAP/SMTP with XOAUTH2.
GMAIL_FULL = "https://mail.google.com/"

_WHO = "mailsync.integrations.google"
_EXTRA_HINT = 'this needs google-auth: pip install "mailsync[google]"'


def _google(module: str) -> Any:
    """``google.<module>``, imported now (typed Any: google-auth is optional, and partly
    untyped)."""
    try:
        return importlib.import_module(f"google.{module}")
    except ImportError as exc:
        raise ConfigError(f"{_WHO}: {_EXTRA_HINT}") from exc


def _default_request() -> Any:
    try:
        transport = importlib.import_module("google.auth.transport.requests")
    except ImportError as exc:
        raise ConfigError(
            f"{_WHO}: refreshing a token {_EXTRA_HINT} (it brings requests), or pass "
            "request= (a google.auth.transport.Request)"
        ) from exc
    return transport.Request()


class CredentialsToken:
    """A zero-argument callable returning a fresh access token from google-auth credentials;
    pass it as ``token=``.

    Args:
        credentials: A ``google.auth.credentials.Credentials`` object (service account, user
            credentials from an installed-app flow, Compute Engine...).
        request: The ``google.auth.transport.Request`` used to refresh; by default
            ``google.auth.transport.requests.Request()``.
    """

    def __init__(self, credentials: Any, *, request: Any = None) -> None:
        self.credentials = credentials
        self._request = request
        self._lock = threading.Lock()
        self._handed: str | None = None

    def __call__(self) -> str:
        """The access token, refreshed when expired or when asked again for the same one.

        Raises:
            AuthenticationError: Google refused to issue a token (a revoked grant, a key that
                was deleted, delegation not granted for these scopes).
            ConnectionFailed: The token endpoint could not be reached.
        """
        with self._lock:
            credentials = self.credentials
            token = getattr(credentials, "token", None)
            if not credentials.valid or token is None or token == self._handed:
                self._refresh()
                token = credentials.token
            if not isinstance(token, str) or not token:
                raise AuthenticationError("google-auth: the credentials hold no access token")
            self._handed = token
            return token

    def _refresh(self) -> None:
        errors = _google("auth.exceptions")
        if self._request is None:
            self._request = _default_request()
        what = type(self.credentials).__module__ + "." + type(self.credentials).__qualname__
        try:
            self.credentials.refresh(self._request)
        except errors.RefreshError as exc:
            raise AuthenticationError(
                f"google-auth: {what} could not refresh: {_reason(exc)}"
            ) from exc
        except errors.TransportError as exc:
            raise ConnectionFailed(
                f"google-auth: {what} could not reach the token endpoint: {_reason(exc)}"
            ) from exc
        except errors.GoogleAuthError as exc:
            raise AuthenticationError(f"google-auth: {what}: {_reason(exc)}") from exc

    def __repr__(self) -> str:
        return f"<CredentialsToken {type(self.credentials).__qualname__}>"


def _reason(exc: BaseException) -> str:
    """The error's first argument (google-auth puts the server's reason there, never the
    token), shortened to one line."""
    first = exc.args[0] if exc.args else type(exc).__name__
    text = " ".join(str(first).split())
    return text[:300]


def token_from_credentials(credentials: Any, *, request: Any = None) -> Callable[[], str]:
    """A ``token=`` callable for any google-auth credentials (see :class:`CredentialsToken`).

    Example:
        ``mailsync.connect("gmail://me", token=token_from_credentials(creds))``
    """
    return CredentialsToken(credentials, request=request)


def service_account_token(
    key: str | os.PathLike[str] | Mapping[str, Any],
    *,
    subject: str,
    scopes: Iterable[str] = (GMAIL_MODIFY,),
    request: Any = None,
) -> Callable[[], str]:
    """A ``token=`` callable for a service account acting for ``subject`` (domain-wide
    delegation: a Workspace admin grants the account's client id these scopes).

    Args:
        key: The service account's JSON key file, or its parsed contents.
        subject: The user whose mailbox is used (``alice@example.com``).
        scopes: The OAuth scopes; the delegation must grant each of them.
        request: A ``google.auth.transport.Request`` for the token endpoint (default: requests).

    Raises:
        ConfigError: google-auth is missing, or the key is not a service account key.
    """
    service_account = _google("oauth2.service_account")

    options = {"scopes": list(scopes), "subject": subject}
    try:
        if isinstance(key, Mapping):
            credentials = service_account.Credentials.from_service_account_info(
                dict(key), **options
            )
        else:
            credentials = service_account.Credentials.from_service_account_file(
                os.fspath(key), **options
            )
    except (ValueError, KeyError, OSError) as exc:
        raise ConfigError(f"{_WHO}: not a usable service account key ({_reason(exc)})") from exc
    return CredentialsToken(credentials, request=request)


def authorized_user_token(
    info: str | os.PathLike[str] | Mapping[str, Any],
    *,
    scopes: Iterable[str] | None = None,
    request: Any = None,
) -> Callable[[], str]:
    """A ``token=`` callable for user credentials saved by an installed-app OAuth flow (the
    ``authorized_user`` JSON with ``client_id``, ``client_secret`` and ``refresh_token``).

    Args:
        info: The JSON file, or its parsed contents.
        scopes: The scopes the refresh token was granted (informational for google-auth).
        request: A ``google.auth.transport.Request`` for the token endpoint (default: requests).

    Raises:
        ConfigError: google-auth is missing, or the file lacks a refresh token.
    """
    user_credentials = _google("oauth2.credentials")

    wanted = list(scopes) if scopes is not None else None
    try:
        if isinstance(info, Mapping):
            credentials = user_credentials.Credentials.from_authorized_user_info(dict(info), wanted)
        else:
            credentials = user_credentials.Credentials.from_authorized_user_file(
                os.fspath(info), wanted
            )
    except (ValueError, KeyError, OSError) as exc:
        raise ConfigError(
            f"{_WHO}: not usable authorized-user credentials ({_reason(exc)})"
        ) from exc
    return CredentialsToken(credentials, request=request)
