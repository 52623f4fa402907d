"""JMAP fixtures: the test Cyrus's JMAP service (tests/cyrus.py) for a fresh account.

- :func:`jmap_target`: the URL and options that reach ``account`` over JMAP (plain http on
  loopback, Basic auth with the account's password);
- ``seed`` / ``make_folder``: deposit messages (imaplib APPEND) and create folders (CREATE)
  with the standard library only, never with mailsync;
- ``jmap_account``: a fresh Cyrus account, ``target``: its JMAP target.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from tests.contract import imap_seed

if TYPE_CHECKING:
    from tests.cyrus import CyrusServer
    from tests.servers import Account, MailboxClients

Seed = Callable[..., None]


@dataclass(frozen=True)
class JMAPTarget:
    """Where and how to connect: ``mailsync.connect(target.url, **target.options)``."""

    url: str
    options: dict[str, Any]


def jmap_target(cyrus: CyrusServer, account: Account, **options: Any) -> JMAPTarget:
    """``account`` over the test Cyrus's JMAP (``tls="none"``: plain http on loopback)."""
    return JMAPTarget(
        cyrus.jmap_url(account),
        {"password": account.password, "tls": "none", "timeout": 20.0, **options},
    )


@pytest.fixture
def seed(mail_store: MailboxClients, account: Account) -> Seed:
    """``seed(raw, folder="INBOX", flags=())``: APPEND with stdlib imaplib (never mailsync)."""
    return imap_seed(mail_store, account)


@pytest.fixture
def make_folder(mail_store: MailboxClients, account: Account) -> Callable[[str], None]:
    """``make_folder(name)``: CREATE with stdlib imaplib."""

    def create(name: str) -> None:
        mail_store.create_folder(account, name)

    return create


JMAP_USING = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"]


def jmap_call(
    cyrus: CyrusServer, account: Account, *calls: tuple[str, dict[str, Any]]
) -> list[Any]:
    """One raw JMAP request with httpx (never mailsync): each call's reply as
    ``[name, arguments]``, in order."""
    import httpx

    auth = (account.user, account.password)
    with httpx.Client(base_url=cyrus.http_url, auth=auth, timeout=30) as client:
        session = client.get(cyrus.jmap_session_url).json()
        account_id = session["primaryAccounts"]["urn:ietf:params:jmap:mail"]
        method_calls = [
            [name, {"accountId": account_id, **arguments}, str(n)]
            for n, (name, arguments) in enumerate(calls)
        ]
        reply = client.post(
            session["apiUrl"], json={"using": JMAP_USING, "methodCalls": method_calls}
        )
    reply.raise_for_status()
    return [response[:2] for response in reply.json()["methodResponses"]]
