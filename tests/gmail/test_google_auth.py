"""mailsync.integrations.google: google-auth's own credential classes (a service account with
domain-wide delegation, an installed-app flow's user credentials) as the ``token=`` callable.

Offline, Google's token endpoint is a :class:`TokenEndpoint`: a ``google.auth.transport.Request``
(the interface google-auth refreshes through) that reads the grant google-auth sends and
answers as https://oauth2.googleapis.com/token does. Everything else is google-auth's real
code: the JWT is signed with a fresh RSA key and checked with google-auth's own verifier.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import pytest

import mailsync
from tests.contract import make_raw
from tests.fakes.gmail import FakeGmail
from tests.gmail.conftest import deposit, options

google_auth = pytest.importorskip("google.auth", reason="needs the google extra (google-auth)")
from google.auth import exceptions, jwt, transport  # noqa: E402

from mailsync.integrations.google import (  # noqa: E402
    GMAIL_MODIFY,
    GMAIL_SEND,
    CredentialsToken,
    authorized_user_token,
    service_account_token,
    token_from_credentials,
)

TOKEN_URI = "https://oauth2.googleapis.com/token"


class _Reply(transport.Response):  # type: ignore[misc]
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self._status = status
        self._data = json.dumps(body).encode()

    @property
    def status(self) -> int:
        return self._status

    @property
    def headers(self) -> dict[str, str]:
        return {"content-type": "application/json"}

    @property
    def data(self) -> bytes:
        return self._data


class TokenEndpoint(transport.Request):  # type: ignore[misc]
    """Google's OAuth 2.0 token endpoint, as far as google-auth's refresh talks to it."""

    def __init__(self, on_issue: Callable[[str], None] = lambda token: None) -> None:
        self.grants: list[dict[str, str]] = []
        self.refuse = False
        self.unreachable = False
        self.on_issue = on_issue

    def __call__(
        self, url: str, method: str = "GET", body: Any = None, headers: Any = None, **kwargs: Any
    ) -> _Reply:
        if self.unreachable:
            raise exceptions.TransportError("Failed to resolve 'oauth2.googleapis.com'")
        assert (url, method) == (TOKEN_URI, "POST")
        text = body.decode() if isinstance(body, bytes) else str(body)
        self.grants.append(dict(parse_qsl(text)))
        if self.refuse:
            return _Reply(
                400,
                {
                    "error": "invalid_grant",
                    "error_description": "Token has been expired or revoked.",
                },
            )
        token = f"ya29.fake-{len(self.grants)}"
        self.on_issue(token)
        return _Reply(200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"})


@pytest.fixture(scope="module")
def key_pair() -> tuple[str, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@pytest.fixture
def service_account(key_pair: tuple[str, str]) -> dict[str, str]:
    return {
        "type": "service_account",
        "project_id": "mailsync-test",
        "private_key_id": "k1",
        "private_key": key_pair[0],
        "client_email": "mailer@mailsync-test.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "token_uri": TOKEN_URI,
    }


@pytest.fixture
def endpoint() -> TokenEndpoint:
    return TokenEndpoint()


def test_service_account_with_delegation(
    service_account: dict[str, str], key_pair: tuple[str, str], endpoint: TokenEndpoint
) -> None:
    token = service_account_token(
        service_account,
        subject="alice@example.com",
        scopes=[GMAIL_MODIFY, GMAIL_SEND],
        request=endpoint,
    )
    assert token() == "ya29.fake-1"
    (grant,) = endpoint.grants
    assert grant["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    claims = jwt.decode(grant["assertion"], certs=key_pair[1], audience=TOKEN_URI)
    assert claims["sub"] == "alice@example.com"
    assert claims["iss"] == service_account["client_email"]
    assert claims["scope"].split() == [GMAIL_MODIFY, GMAIL_SEND]
    # Asked again for the token it handed out: mailsync only does that after a refusal.
    assert token() == "ya29.fake-2"
    assert "ya29" not in repr(token)
    assert "PRIVATE" not in repr(token)


def test_service_account_key_file(
    service_account: dict[str, str], endpoint: TokenEndpoint, tmp_path: Any
) -> None:
    path = tmp_path / "key.json"
    path.write_text(json.dumps(service_account))
    assert (
        service_account_token(path, subject="bob@example.com", request=endpoint)() == "ya29.fake-1"
    )
    with pytest.raises(mailsync.ConfigError, match="service account"):
        service_account_token({"type": "service_account"}, subject="x@example.com")
    with pytest.raises(mailsync.ConfigError, match="service account"):
        service_account_token(tmp_path / "missing.json", subject="x@example.com")


def test_the_gmail_backend_refreshes_through_google_auth(
    service_account: dict[str, str], endpoint: TokenEndpoint
) -> None:
    gmail = FakeGmail(tokens=set())
    endpoint.on_issue = gmail.tokens.add
    deposit(gmail, make_raw(1))
    token = service_account_token(service_account, subject="me@example.test", request=endpoint)
    kwargs = {**options(gmail), "token": token}
    with mailsync.connect("gmail://me@example.test", **kwargs) as box:
        assert [m.subject for m in box.messages()] == ["Message 1"]
        gmail.tokens.clear()  # revoked: the next request gets a 401
        assert [m.subject for m in box.messages()] == ["Message 1"]
        endpoint.refuse = True
        gmail.tokens.clear()
        with pytest.raises(mailsync.AuthenticationError, match="could not refresh") as info:
            box.folders()
    assert len(endpoint.grants) == 3
    assert isinstance(info.value.__cause__, exceptions.RefreshError)
    assert "ya29" not in str(info.value)
    assert "BEGIN PRIVATE KEY" not in str(info.value)


def test_installed_app_credentials(endpoint: TokenEndpoint, tmp_path: Any) -> None:
    saved = {
        "type": "authorized_user",
        "client_id": "client.apps.googleusercontent.com",
        "client_secret": "s3cret",
        "refresh_token": "1//refresh",
    }
    token = authorized_user_token(saved, scopes=[GMAIL_MODIFY], request=endpoint)
    assert token() == "ya29.fake-1"
    (grant,) = endpoint.grants
    assert (grant["grant_type"], grant["refresh_token"]) == ("refresh_token", "1//refresh")
    path = tmp_path / "token.json"
    path.write_text(json.dumps(saved))
    assert authorized_user_token(path, request=endpoint)() == "ya29.fake-2"
    with pytest.raises(mailsync.ConfigError, match="authorized-user"):
        authorized_user_token({"client_id": "x"})


def test_a_token_still_valid_is_used_without_a_refresh(endpoint: TokenEndpoint) -> None:
    import datetime

    from google.oauth2.credentials import Credentials

    later = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) + datetime.timedelta(hours=1)
    credentials = Credentials(
        token="ya29.current",
        expiry=later,
        refresh_token="1//r",
        token_uri=TOKEN_URI,
        client_id="c",
        client_secret="s",
    )
    token = token_from_credentials(credentials, request=endpoint)
    assert isinstance(token, CredentialsToken)
    assert token() == "ya29.current"
    assert endpoint.grants == []


def test_refresh_failures_are_mailsync_errors(
    service_account: dict[str, str], endpoint: TokenEndpoint
) -> None:
    token = service_account_token(service_account, subject="a@example.com", request=endpoint)
    endpoint.unreachable = True
    with pytest.raises(mailsync.ConnectionFailed, match="token endpoint") as info:
        token()
    assert isinstance(info.value.__cause__, exceptions.TransportError)
    endpoint.unreachable = False
    endpoint.refuse = True
    with pytest.raises(mailsync.AuthenticationError, match="invalid_grant"):
        token()


def test_without_google_auth_the_hint_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "google.oauth2.service_account", None)
    with pytest.raises(mailsync.ConfigError, match=r"mailsync\[google\]"):
        service_account_token({}, subject="a@example.com")


def test_the_core_never_imports_google() -> None:
    import subprocess

    code = (
        "import sys, mailsync; mailsync.connect('gmail://me', token='t');"
        "import mailsync.backends.gmail;"
        "print(any(m == 'google' or m.startswith('google.') for m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
