"""The accounts file: per-direction settings, private CAs, and errors that name the file, the
account and the key (with the closest valid key for a typo)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

import mailsync
from mailsync._accounts import account, accounts


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MAILSYNC_DATA_DIR", str(tmp_path / "data"))
    path = tmp_path / "config.toml"
    monkeypatch.setenv("MAILSYNC_CONFIG", str(path))
    return path


def error_of(path: Path, text: str) -> str:
    path.write_text(text)
    with pytest.raises(mailsync.ConfigError) as info:
        accounts()
    message = str(info.value)
    assert str(path) in message
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("body", "needles"),
    [
        (
            '[accounts.work]\nretrieve = "imaps://u@h"\ntimout = 5\n',
            ["accounts.work", "'timout'", "did you mean 'timeout'"],
        ),
        (
            '[accounts.work]\nretrieve = "imaps://u@h"\n[accounts.work.send]\n'
            'url = "smtp://h"\nverfy = false\n',
            ["accounts.work.send", "'verfy'", "did you mean 'verify'"],
        ),
        ('defualt = "x"\n', ["'defualt'", "did you mean 'default'"]),
        (
            '[accounts.work]\nretrieve = "imaps://u@h"\napop = true\n',
            ["accounts.work", "'apop'"],  # a POP3 option on an IMAP account
        ),
        (
            '[accounts.work]\nretrieve = "imaps://u@h"\ntimeout = "slow"\n',
            ["accounts.work.timeout", "positive number"],
        ),
        (
            '[accounts.work]\nretrieve = "imaps://u@h"\ntls = "maybe"\n',
            ["accounts.work.tls", "'maybe'"],
        ),
        (
            '[accounts.work]\nretrieve = "imaps://u@h"\ntls = "none"\n',
            ["accounts.work.tls", "imaps:// always uses implicit TLS", "imap://u@h"],
        ),
        (
            '[accounts.work]\nretrieve = "imaps://u@h"\nca_file = "nowhere.pem"\n',
            ["accounts.work.ca_file", "nowhere.pem"],
        ),
        (
            '[accounts.work]\nretrieve = "imaps://u@h"\nca_file = "a.pem"\nverify = false\n',
            ["accounts.work.retrieve", "either ca_file or verify"],
        ),
        (
            '[accounts.work]\nretrieve = "ftp://h"\n',
            ["accounts.work.retrieve", "unknown URL scheme"],
        ),
        (
            '[accounts.work]\nsend = { url = "smtp://relay:25", password_env = "PW" }\n',
            ["accounts.work.send", "password_env needs a user"],
        ),
        (
            '[accounts.work]\nsend = "smtp://relay:25"\nsave_to = "Sent"\n',
            ["accounts.work.save_to", "'retrieve' mailbox"],
        ),
        ('default = "nope"\n[accounts.a]\nretrieve = "maildir:/x"\n', ["'nope'", "accounts: a"]),
        ("[accounts.work]\ntimeout = 5\n", ["accounts.work", "'retrieve' or 'send'"]),
        (
            '[accounts.work]\nretrieve = "imaps://u@h"\nuser = "x"\n',
            ["accounts.work.user", "in the URL"],
        ),
    ],
)
def test_every_mistake_names_file_account_and_key(
    config: Path, body: str, needles: list[str]
) -> None:
    message = error_of(config, body)
    for needle in needles:
        assert needle in message, message


def test_per_direction_settings_let_imap_and_an_open_relay_live_in_one_account(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's case: the IMAP password and TLS must not leak onto an unauthenticated relay."""
    config.write_text(
        """
[accounts.work]
retrieve = "imaps://alice@example.test@imap.example.test"
password_env = "WORK_PW"
timeout = 20

[accounts.work.send]
url = "smtp://relay.example.test:25"
tls = "none"
timeout = 5
"""
    )
    monkeypatch.setenv("WORK_PW", "s3cret")
    work = account("work")
    assert work.connect_options("retrieve") == {"timeout": 20, "password": "s3cret"}
    assert work.connect_options("send") == {"timeout": 5, "tls": "none"}
    out = work.sender()
    assert out.endpoint.password is None
    assert out.endpoint.tls == "none"
    assert work.retriever().endpoint.password is not None


def test_a_direction_can_have_its_own_user_password_and_backend_options(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config.write_text(
        """
[accounts.mixed]
retrieve = "pop3s://alice@pop.example.test"
apop = true
password_env = "POP_PW"
retries = 5

[accounts.mixed.send]
url = "smtps://smtp.example.test"
user = "alice@example.test"
password_command = "echo smtp-secret"
"""
    )
    monkeypatch.setenv("POP_PW", "pop-secret")
    mixed = account("mixed")
    assert mixed.send == "smtps://alice@example.test@smtp.example.test"
    assert mixed.connect_options("retrieve") == {"apop": True, "password": "pop-secret"}
    assert mixed.connect_options("send") == {"retries": 5, "password": "smtp-secret"}
    assert mixed.sender().endpoint.username == "alice@example.test"


def test_ca_file_and_verify_path_are_taken_from_the_config_directory(config: Path) -> None:
    bundle = ssl.get_default_verify_paths().cafile or ssl.get_default_verify_paths().openssl_cafile
    if not bundle or not Path(bundle).is_file():
        pytest.skip("no system CA bundle file to copy")
    (config.parent / "corp-ca.pem").write_bytes(Path(bundle).read_bytes())
    config.write_text(
        """
[accounts.a]
retrieve = "imaps://u@h"
ca_file = "corp-ca.pem"
[accounts.b]
retrieve = "imaps://u@h"
verify = "corp-ca.pem"
[accounts.c]
retrieve = "imaps://u@h"
verify = false
"""
    )
    for name in ("a", "b"):
        options = account(name).connect_options("retrieve")
        assert options == {"verify": str(config.parent / "corp-ca.pem")}
        assert isinstance(account(name).retriever().endpoint.verify, ssl.SSLContext)
    assert account("c").retriever().endpoint.verify is False


def test_several_accounts_and_no_default_is_an_error_listing_them(config: Path) -> None:
    config.write_text(
        '[accounts.work]\nretrieve = "maildir:/w"\n[accounts.home]\nretrieve = "maildir:/h"\n'
    )
    for name in (None, "default"):
        with pytest.raises(mailsync.ConfigError) as info:
            account(name)
        assert "no default" in str(info.value)
        assert "home, work" in str(info.value)
    assert account("work").retrieve == "maildir:/w"


def test_an_explicit_config_file(tmp_path: Path, config: Path) -> None:
    other = tmp_path / "other.toml"
    other.write_text('[accounts.only]\nretrieve = "maildir:/o"\n')
    assert account(config=other).name == "only"
    assert list(accounts(config=other)) == ["only"]
    with pytest.raises(mailsync.ConfigError, match="no config file at"):
        account(config=tmp_path / "missing.toml")


def test_the_embedded_default_is_created_empty_on_first_use(config: Path) -> None:
    default = account()
    with default.retriever() as box:
        assert list(box.messages()) == []
        assert list(box.sync()) == []


def test_save_to_files_sent_mail_in_the_retrieve_mailbox(config: Path, tmp_path: Path) -> None:
    mail = tmp_path / "Mail"
    config.write_text(
        f"""
[accounts.local]
retrieve = "maildir:{mail}?create=1"
send = "maildir:{mail}"
save_to = "Sent"
"""
    )
    (mail / ".Sent" / "cur").mkdir(parents=True)
    (mail / ".Sent" / "new").mkdir()
    (mail / ".Sent" / "tmp").mkdir()
    with account("local").sender() as out:
        result = out.send(
            mailsync.compose(from_="a@example.test", to="b@example.test", subject="x", text="y")
        )
    assert result.saved_to == "Sent"
    with account("local").retriever() as box:
        assert [m.subject for m in box.messages("Sent")] == ["x"]
        assert [m.subject for m in box.messages()] == ["x"]
