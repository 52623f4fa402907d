"""``manage.py mailsync_watch``: in this process on a Maildir (the signal, at-least-once, bad
input), and the example project of docs/examples/django_project run as a user would: its own
tests through Django's test runner, and the watcher as a process stopped by SIGTERM."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import mailsync
from tests.contract import make_raw
from tests.extras import require
from tests.integrations.conftest import accounts_file
from tests.servers import Account, MailServers

require("django", "django")  # before the imports below, which need Django

from django.core.management import CommandError, call_command  # noqa: E402

from mailsync.integrations.django.signals import message_received  # noqa: E402

pytestmark = pytest.mark.usefixtures("django_settings")

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "django_project"


@pytest.fixture
def received() -> Iterator[list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []

    def receiver(**kwargs: Any) -> None:
        seen.append(kwargs)

    message_received.connect(receiver)
    yield seen
    message_received.disconnect(receiver)


def _maildir(tmp_path: Path, count: int) -> str:
    url = f"maildir:{tmp_path / 'box'}?create=true"
    with mailsync.sender(url) as out:
        out.send_many([make_raw(n) for n in range(1, count + 1)])
    return url


def test_once_sends_the_signal_for_each_new_message(
    tmp_path: Path, received: list[dict[str, Any]]
) -> None:
    url = _maildir(tmp_path, 2)
    state = str(tmp_path / "state.sqlite3")
    call_command("mailsync_watch", url, "--once", "--state", state)
    assert [r["message"].subject for r in received] == ["Message 1", "Message 2"]
    assert received[0]["account"] == url
    assert isinstance(received[0]["retriever"], mailsync.Retriever)
    assert received[0]["sender"] is type(received[0]["retriever"])
    call_command("mailsync_watch", url, "--once", "--state", state)
    assert len(received) == 2  # committed: nothing comes twice


def test_a_receiver_that_raises_gets_the_message_again(
    tmp_path: Path, received: list[dict[str, Any]]
) -> None:
    url = _maildir(tmp_path, 2)
    state = str(tmp_path / "state.sqlite3")

    def flaky(message: mailsync.Message, **kwargs: Any) -> None:
        if message.subject == "Message 2":
            raise RuntimeError("the database is down")

    message_received.connect(flaky)
    try:
        with pytest.raises(RuntimeError, match="database is down"):
            call_command("mailsync_watch", url, "--once", "--state", state)
    finally:
        message_received.disconnect(flaky)
    call_command("mailsync_watch", url, "--once", "--state", state)
    # Message 1 was committed before Message 2 failed; Message 2 comes again.
    assert [r["message"].subject for r in received] == ["Message 1", "Message 2", "Message 2"]


def test_an_account_that_does_not_exist_is_a_command_error(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[accounts.real]\nretrieve = "maildir:/tmp/x"\n', encoding="utf-8")
    from django.test import override_settings

    with override_settings(MAILSYNC_CONFIG=str(config)):
        with pytest.raises(CommandError, match="no account 'typo'"):
            call_command("mailsync_watch", "typo", "--once")


# -- the example project ---------------------------------------------------------------------


def _example_env(servers: MailServers, account: Account, tmp_path: Path) -> dict[str, str]:
    config = accounts_file(tmp_path / "config.toml", servers, account, "support")
    env = dict(os.environ)
    env.update(
        MAILSYNC_CONFIG=str(config),
        TEST_MAIL_PASSWORD=account.password,
        SUPPORT_ADDRESS=account.email,
        MAILSYNC_STATE=str(tmp_path / "state.sqlite3"),
        EXAMPLE_DATABASE=str(tmp_path / "example.sqlite3"),
        PYTHONWARNINGS="error",
    )
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


def _manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


@pytest.mark.servers
@pytest.mark.timeout(300)
def test_the_example_projects_own_tests_pass_under_djangos_runner(
    mail_servers: MailServers, account: Account, tmp_path: Path
) -> None:
    done = _manage(_example_env(mail_servers, account, tmp_path), "test", "inbox", "-v", "2")
    assert done.returncode == 0, done.stderr[-4000:]
    assert "Ran 2 tests" in done.stderr


@pytest.mark.servers
@pytest.mark.timeout(300)
def test_the_example_watcher_stores_mail_as_it_arrives_and_stops_on_sigterm(
    mail_servers: MailServers, account: Account, tmp_path: Path
) -> None:
    env = _example_env(mail_servers, account, tmp_path)
    migrated = _manage(env, "migrate", "-v", "0")
    assert migrated.returncode == 0, migrated.stderr[-4000:]
    watcher = subprocess.Popen(
        [sys.executable, "manage.py", "mailsync_watch", "support", "--poll-interval", "2"],
        cwd=EXAMPLE,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        mail_servers.deliver(account, make_raw(1, subject="Arrived while watching"))

        def stored() -> list[tuple[str, str]] | None:
            try:
                with sqlite3.connect(env["EXAMPLE_DATABASE"]) as db:
                    rows = db.execute("SELECT account, subject FROM inbox_inboundmessage")
                    found = rows.fetchall()
            except sqlite3.OperationalError:  # locked by the watcher's write: ask again
                return None
            return found or None

        rows = mail_servers.wait_for(stored, timeout=90, interval=0.2, message="a stored row")
        assert rows == [("support", "Arrived while watching")]
    finally:
        watcher.send_signal(signal.SIGTERM)
        _out, err = watcher.communicate(timeout=60)
    assert watcher.returncode == 0, err[-4000:]
    assert err.count("support: catching_up") == 1  # a line per change of state
    assert err.splitlines()[-2:] == ["support: stopped", f"stopped by signal {int(signal.SIGTERM)}"]
