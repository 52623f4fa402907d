"""Fixtures of the framework integrations: Django configured in this process (once, as a
project's settings module would), and accounts files pointing at the test servers."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.extras import require
from tests.servers import Account, MailServers


@pytest.fixture(scope="session")
def django_settings() -> object:
    """Django set up with mailsync's app and email backend (settings a test overrides with
    ``override_settings``)."""
    django = require("django", "django")
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            INSTALLED_APPS=["mailsync.integrations.django"],
            DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
            EMAIL_BACKEND="mailsync.integrations.django.EmailBackend",
            MAILSYNC_SEND="maildir:/nonexistent",
            DEFAULT_FROM_EMAIL="webmaster@example.test",
            USE_TZ=True,
        )
        django.setup()
    return settings


def accounts_file(path: Path, servers: MailServers, account: Account, name: str) -> Path:
    """A mailsync accounts file with ``name``: ``account`` on the test servers (IMAPS to
    read, submission to send), its password in ``$TEST_MAIL_PASSWORD``."""
    path.write_text(
        f"""
[accounts.{name}]
retrieve = "imaps://{account.user}@{servers.host}:{servers.imaps_port}"
send = "smtp://{account.user}@{servers.host}:{servers.submission_port}"
password_env = "TEST_MAIL_PASSWORD"
verify = "{servers.cafile}"
""",
        encoding="utf-8",
    )
    return path
