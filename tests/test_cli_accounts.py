"""Accounts from the config file, and the command line, run as a real subprocess."""

from __future__ import annotations

import json
import mailbox
import sys
from pathlib import Path

import pytest

import mailsync
from mailsync._accounts import account, accounts
from tests.cli import run, send_args
from tests.servers import MailServers


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated user: its own data dir and config file location."""
    monkeypatch.setenv("MAILSYNC_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MAILSYNC_CONFIG", str(tmp_path / "config.toml"))
    return tmp_path


# -- accounts ----------------------------------------------------------------------------------


def test_no_config_means_the_embedded_default(home: Path) -> None:
    default = account()
    assert default.name == "default"
    assert default.retrieve == f"maildir:{home / 'data' / 'Maildir'}"
    assert default.send == default.retrieve
    assert list(accounts()) == ["default"]


def test_config_accounts_and_secrets(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (home / "config.toml").write_text(
        f"""
default = "local"

[accounts.local]
retrieve = "maildir:{home / "md"}"
send = "maildir:{home / "md"}"

[accounts.work]
retrieve = "imaps://alice@example.test@imap.example.test"
password_env = "WORK_PW"
timeout = 5

[accounts.cmd]
retrieve = "imaps://bob@imap.example.test"
password_command = "{sys.executable} -c 'print(\\"from-command\\")'"
"""
    )
    assert sorted(accounts()) == ["cmd", "local", "work"]
    assert account().name == "local"
    work = account("work")
    assert work.options == {"timeout": 5}
    with pytest.raises(mailsync.ConfigError, match="WORK_PW"):
        work.password()
    monkeypatch.setenv("WORK_PW", "s3cret")
    secret = work.password()
    assert secret is not None
    assert secret.reveal() == "s3cret"
    assert "s3cret" not in repr(work)
    cmd_secret = account("cmd").password()
    assert cmd_secret is not None
    assert cmd_secret.reveal() == "from-command"
    with pytest.raises(mailsync.ConfigError, match="no account 'nope'"):
        account("nope")

    local = account("local")
    with local.sender() as out:
        out.send(mailsync.compose(from_="a@example.test", to="b@example.test", subject="cfg"))
    with local.retriever() as box:
        assert [m.subject for m in box.messages()] == ["cfg"]


def test_bad_config_files(home: Path) -> None:
    (home / "config.toml").write_text("this is = = not toml")
    with pytest.raises(mailsync.ConfigError, match="not valid TOML"):
        accounts()
    (home / "config.toml").write_text("[accounts.x]\nfoo = 1\n")
    with pytest.raises(mailsync.ConfigError, match="needs a 'retrieve' or 'send'"):
        accounts()


def test_failing_password_command_hides_output(home: Path) -> None:
    (home / "config.toml").write_text(
        f"""[accounts.x]
retrieve = "imaps://u@h"
password_command = "{sys.executable} -c 'import sys; print(\\"leaked\\"); sys.exit(3)'"
"""
    )
    with pytest.raises(mailsync.ConfigError) as info:
        account("x").password()
    assert "leaked" not in str(info.value)


# -- the command line --------------------------------------------------------------------------


def test_round_trip_on_the_embedded_default(home: Path) -> None:
    sent = run(
        home,
        "send",
        "--from",
        "me@example.test",
        "--to",
        "me@example.test",
        "--subject",
        "Hello",
        "--text",
        "It works",
    )
    assert sent.returncode == 0, sent.stderr
    assert "sent <" in sent.stdout
    fetched = run(home, "fetch")
    assert fetched.returncode == 0, fetched.stderr
    assert "Hello" in fetched.stdout
    assert "me@example.test" in fetched.stdout


def test_json_lines_and_sync(home: Path) -> None:
    for n in range(2):
        assert (
            run(
                home,
                *send_args("a@example.test", "b@example.test", f"S{n}"),
            ).returncode
            == 0
        )
    first = run(home, "sync", "--json")
    assert first.returncode == 0, first.stderr
    rows = [json.loads(line) for line in first.stdout.splitlines()]
    assert [r["subject"] for r in rows] == ["S0", "S1"]
    assert set(rows[0]) == {"id", "folder", "date", "from", "to", "subject", "size", "flags"}
    assert run(home, "sync", "--json").stdout == ""


def test_fetch_to_mbox_stores_messages(home: Path) -> None:
    run(
        home,
        *send_args("a@example.test", "b@example.test", "keep"),
    )
    target = home / "copy.mbox"
    done = run(home, "fetch", "--to", f"mbox:{target}")
    assert done.returncode == 0, done.stderr
    with mailsync.connect(f"mbox:{target}", state=":memory:") as box:
        assert [m.subject for m in box.messages()] == ["keep"]


# What a backup must keep: no Date or Message-ID (none may be invented), a Bcc, a field
# without a space after its colon, an unterminated multipart, 8-bit text.
BACKUP_CORPUS = [
    b"From: a@example.test\r\nTo: b@example.test\r\nSubject: anonymous\r\n\r\nno id\r\n",
    b"From: a@example.test\r\nTo: b@example.test\r\nBcc: hidden@example.test\r\n"
    b"Subject: tight\r\nX-Tight:value\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="zz"\r\n\r\n--zz\r\n'
    b"Content-Type: text/plain; charset=utf-8\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n",
]


def test_fetch_to_a_local_mailbox_is_a_byte_copy(
    home: Path, mail_servers: MailServers, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = mail_servers.new_account("cli")
    mail_servers.append_many(owner, BACKUP_CORPUS)
    on_server = sorted(raw for _uid, _flags, raw in mail_servers.imap_messages(owner))
    monkeypatch.setenv("MAILSYNC_TEST_PASSWORD", owner.password)
    url = f"imap://{owner.user}@{mail_servers.host}:{mail_servers.imap_port}"
    login = ["--tls", "none", "--password-env", "MAILSYNC_TEST_PASSWORD"]
    for target in (f"maildir:{home / 'backup'}", f"mbox:{home / 'backup.mbox'}"):
        done = run(home, "fetch", url, *login, "--to", target)
        assert done.returncode == 0, done.stderr
    # Read back without mailsync: the files as another mail program would.
    files = [path.read_bytes() for path in (home / "backup" / "new").iterdir()]
    assert sorted(files) == on_server
    box = mailbox.mbox(home / "backup.mbox")
    try:
        in_mbox = sorted(box.get_bytes(key) for key in box.iterkeys())
    finally:
        box.close()
    assert in_mbox == sorted(raw.replace(b"\r\n", b"\n") for raw in on_server)


def test_fetch_to_a_local_mailbox_keeps_the_flags(
    home: Path, mail_servers: MailServers, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = mail_servers.new_account("cli")
    mail_servers.append(owner, BACKUP_CORPUS[0], flags=("\\Seen", "\\Flagged"))
    mail_servers.append(owner, BACKUP_CORPUS[1])
    monkeypatch.setenv("MAILSYNC_TEST_PASSWORD", owner.password)
    url = f"imap://{owner.user}@{mail_servers.host}:{mail_servers.imap_port}"
    login = ["--tls", "none", "--password-env", "MAILSYNC_TEST_PASSWORD"]
    for target in (f"maildir:{home / 'backup'}", f"mbox:{home / 'backup.mbox'}"):
        done = run(home, "fetch", url, *login, "--to", target)
        assert done.returncode == 0, done.stderr
    # Read back without mailsync: the info suffix, and the Status fields, as mutt reads them.
    names = sorted(path.name for path in (home / "backup").glob("*/*"))
    assert [name.rpartition(":")[2] for name in names if ":" in name] == ["2,FS"]
    box = mailbox.mbox(home / "backup.mbox")
    try:
        flags = sorted("".join(sorted(box.get_message(key).get_flags())) for key in box.iterkeys())
    finally:
        box.close()
    assert flags == ["", "FOR"]


def test_send_raw_message_from_stdin(home: Path) -> None:
    raw = b"From: a@example.test\r\nTo: b@example.test\r\nSubject: raw in\r\n\r\nbody\r\n"
    done = run(home, "send", stdin=raw)
    assert done.returncode == 0, done.stderr
    assert "raw in" in run(home, "fetch").stdout


def test_folders_command(home: Path) -> None:
    run(
        home,
        *send_args("a@example.test", "b@example.test", "x"),
    )
    done = run(home, "folders", "--json")
    assert json.loads(done.stdout.splitlines()[0])["name"] == "INBOX"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["fetch", "imap://"], "no host"),
        (["fetch", "nosuchaccount"], "no account"),
        (
            ["send", "--from", "bad address", "--to", "b@example.test", "--subject", "x"],
            "invalid email address",
        ),
        (["fetch", "ftp://x"], "unknown URL scheme"),
        (["fetch", "maildir:/nonexistent/dir", "--folder", "Nope"], "no Maildir"),
        (["fetch", "--headers-only", "--to", "mbox:/nonexistent/x"], "--headers-only"),
    ],
)
def test_errors_are_one_line_without_traceback(home: Path, args: list[str], needle: str) -> None:
    done = run(home, *args)
    assert done.returncode != 0
    assert needle in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
