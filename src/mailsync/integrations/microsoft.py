"""OAuth2 tokens for Microsoft Graph (and Outlook's IMAP/POP3/SMTP) from MSAL.

``pip install "mailsync[microsoft]"`` installs `msal <https://pypi.org/project/msal/>`_, the
library Microsoft maintains for its identity platform: it owns the flows, the token cache and
the refresh, so this module only adapts an MSAL application to what mailsync takes as ``token=``
(a zero-argument callable returning an access token)::

    import msal, mailsync
    from mailsync.integrations.microsoft import msal_token

    app = msal.PublicClientApplication(CLIENT_ID, authority="https://login.microsoftonline.com/common")
    box = mailsync.connect("graph://me", token=msal_token(app, ["Mail.ReadWrite", "Mail.Send"]))

- A ``ConfidentialClientApplication`` uses the client credentials flow (application
  permissions, a daemon or service): the scope is ``https://graph.microsoft.com/.default``, and
  the mailbox is named in the URL (``graph://user@tenant.example``).
- A ``PublicClientApplication`` takes a cached token (refreshed silently by MSAL) for the
  account, and otherwise runs the device code flow: the message telling the user where to go
  and which code to enter is handed to ``prompt`` (``print`` by default).

The core of mailsync never imports this module, nor msal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from mailsync._errors import AuthenticationError, ConfigError

__all__ = ["GRAPH_DEFAULT_SCOPE", "msal_token"]

#: The scope an application-permission (client credentials) token asks for.
GRAPH_DEFAULT_SCOPE = "https://graph.microsoft.com/.default"


def msal_token(
    app: Any,
    scopes: Sequence[str] | None = None,
    *,
    account: str | None = None,
    prompt: Callable[[str], Any] = print,
) -> Callable[[], str]:
    """A token callable (for ``token=``) backed by an MSAL application.

    Args:
        app: An ``msal.ConfidentialClientApplication`` or ``msal.PublicClientApplication``.
        scopes: The scopes to ask for: ``["Mail.ReadWrite", "Mail.Send"]`` for a user;
            ignored for a confidential client, which always asks for
            :data:`GRAPH_DEFAULT_SCOPE`.
        account: For a public client, the user name whose cached token to use (by default the
            only cached account, if there is exactly one).
        prompt: Shows the device code flow's instructions to the user.

    Returns:
        A callable that returns a current access token (MSAL refreshes and caches it).

    Raises:
        ConfigError: ``app`` is not an MSAL application, or msal is not installed.
    """
    try:
        import msal
    except ImportError as exc:  # pragma: no cover - exercised without the extra only
        raise ConfigError('msal_token needs msal: pip install "mailsync[microsoft]"') from exc
    if isinstance(app, msal.ConfidentialClientApplication):
        return lambda: _checked(app.acquire_token_for_client(scopes=[GRAPH_DEFAULT_SCOPE]))
    if not isinstance(app, msal.PublicClientApplication):
        raise ConfigError(
            "msal_token takes an msal.ConfidentialClientApplication or PublicClientApplication, "
            f"not {type(app).__name__}"
        )
    wanted = list(scopes or ("Mail.ReadWrite", "Mail.Send"))

    def token() -> str:
        accounts = app.get_accounts(username=account) if account else app.get_accounts()
        if len(accounts) == 1 or (account and accounts):
            cached = app.acquire_token_silent(wanted, account=accounts[0])
            if cached and "access_token" in cached:
                return str(cached["access_token"])
        flow = app.initiate_device_flow(scopes=wanted)
        if "user_code" not in flow:
            raise AuthenticationError(f"Microsoft sign-in could not start: {_reason(flow)}")
        prompt(str(flow.get("message", "")))
        return _checked(app.acquire_token_by_device_flow(flow))

    return token


def _checked(result: Any) -> str:
    if not isinstance(result, dict) or "access_token" not in result:
        raise AuthenticationError(f"Microsoft sign-in failed: {_reason(result)}")
    return str(result["access_token"])


def _reason(result: Any) -> str:
    if not isinstance(result, dict):
        return "no answer"
    error = result.get("error") or "unknown error"
    description = str(result.get("error_description") or "").splitlines()
    return f"{error}: {description[0]}" if description else str(error)
