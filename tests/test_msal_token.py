"""msal_token: an MSAL application as mailsync's token callable, against a fake identity
platform handed to MSAL as its HTTP client (MSAL's own flows run, offline)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

import pytest

msal = pytest.importorskip("msal")

from mailsync import AuthenticationError, ConfigError  # noqa: E402
from mailsync.integrations.microsoft import GRAPH_DEFAULT_SCOPE, msal_token  # noqa: E402

AUTHORITY = "https://login.microsoftonline.com/contoso.test"


class _Reply:
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status_code = status
        self.text = json.dumps(body)
        self.headers: dict[str, str] = {"Content-Type": "application/json"}

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise RuntimeError(self.status_code)


class FakeIdentityPlatform:
    """The few endpoints MSAL uses: discovery, token (client credentials, device code), device
    authorization."""

    def __init__(self) -> None:
        self.grants: list[dict[str, list[str]]] = []
        self.device_codes_approved = True
        self.issued = 0
        self.device_scope = ""

    def get(self, url: str, params: Any = None, headers: Any = None, **kwargs: Any) -> _Reply:
        assert url.endswith("/v2.0/.well-known/openid-configuration"), url
        base = AUTHORITY + "/oauth2/v2.0"
        return _Reply(
            200,
            {
                "token_endpoint": f"{base}/token",
                "authorization_endpoint": f"{base}/authorize",
                "device_authorization_endpoint": f"{base}/devicecode",
                "issuer": "https://login.microsoftonline.com/contoso.test/v2.0",
            },
        )

    def post(
        self, url: str, params: Any = None, data: Any = None, headers: Any = None, **kwargs: Any
    ) -> _Reply:
        form = (
            parse_qs(data) if isinstance(data, str) else {k: [v] for k, v in (data or {}).items()}
        )
        if url.endswith("/devicecode"):
            self.device_scope = form.get("scope", [""])[0]
            return _Reply(
                200,
                {
                    "device_code": "dev-1",
                    "user_code": "ABCD-EFGH",
                    "verification_uri": "https://microsoft.com/devicelogin",
                    "expires_in": 900,
                    "interval": 0,
                    "message": "Go to https://microsoft.com/devicelogin and enter ABCD-EFGH",
                },
            )
        assert url.endswith("/token"), url
        self.grants.append(form)
        grant = form["grant_type"][0]
        if grant.endswith("device_code") and not self.device_codes_approved:
            return _Reply(400, {"error": "authorization_declined", "error_description": "No."})
        self.issued += 1
        body = {
            "token_type": "Bearer",
            "expires_in": 3600,
            "access_token": f"token-{self.issued}",
            "scope": form.get("scope", [self.device_scope])[0],
        }
        if grant.endswith("device_code"):  # a user signed in: MSAL caches the account
            claims = {
                "iss": "https://login.microsoftonline.com/contoso.test/v2.0",
                "sub": "alice",
                "aud": "client-id",
                "tid": "contoso.test",
                "oid": "alice-oid",
                "preferred_username": "alice@contoso.test",
                "exp": 4102444800,
                "iat": 1700000000,
            }
            body["id_token"] = ".".join([_b64({"alg": "none"}), _b64(claims), ""])
            body["client_info"] = _b64({"uid": "alice-oid", "utid": "contoso.test"})
            body["refresh_token"] = "refresh-1"
        return _Reply(200, body)


def _b64(data: dict[str, Any]) -> str:
    import base64

    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _confidential(platform: FakeIdentityPlatform) -> Any:
    return msal.ConfidentialClientApplication(
        "client-id",
        client_credential="s3cret",
        authority=AUTHORITY,
        http_client=platform,
        instance_discovery=False,
    )


def test_client_credentials_token_is_cached_by_msal() -> None:
    platform = FakeIdentityPlatform()
    token = msal_token(_confidential(platform))
    assert token() == "token-1"
    assert token() == "token-1"  # from MSAL's cache, no second grant
    assert len(platform.grants) == 1
    assert platform.grants[0]["grant_type"] == ["client_credentials"]
    assert GRAPH_DEFAULT_SCOPE in platform.grants[0]["scope"][0]


def test_device_code_flow_prompts_once_then_uses_the_cache() -> None:
    platform = FakeIdentityPlatform()
    app = msal.PublicClientApplication(
        "client-id", authority=AUTHORITY, http_client=platform, instance_discovery=False
    )
    shown: list[str] = []
    token = msal_token(app, ["Mail.Read"], prompt=shown.append)
    assert token() == "token-1"
    assert token() == "token-1"  # the signed-in account's cached token: no second prompt
    assert shown == ["Go to https://microsoft.com/devicelogin and enter ABCD-EFGH"]
    assert msal_token(app, ["Mail.Read"], account="alice@contoso.test", prompt=shown.append)()
    assert len(shown) == 1


def test_a_declined_sign_in_is_an_authentication_error() -> None:
    platform = FakeIdentityPlatform()
    platform.device_codes_approved = False
    app = msal.PublicClientApplication(
        "client-id", authority=AUTHORITY, http_client=platform, instance_discovery=False
    )
    with pytest.raises(AuthenticationError, match="authorization_declined"):
        msal_token(app, ["Mail.Read"], prompt=lambda text: None)()


def test_only_msal_applications_are_taken() -> None:
    with pytest.raises(ConfigError, match="PublicClientApplication"):
        msal_token(object())
