"""The command line as a person uses it, run as a real subprocess against the real servers:
every command, the config file, the errors (one line, the account or host, the fix)."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli import PARTIAL, one_line_error, run, send_args
from tests.servers import Account, MailServers


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "config.toml").touch()
    return tmp_path


def write_config(home: Path, servers: MailServers, account: Account, extra: str = "") -> None:
    (home / "config.toml").write_text(
        f"""
default = "work"

[accounts.work]
retrieve = "imap://{account.user}@{servers.host}:{servers.imap_port}"
password_env = "WORK_PW"
ca_file = "{servers.cafile}"

[accounts.work.send]
url = "smtp://{servers.host}:{servers.smtp_port}"
tls = "none"
{extra}
"""
    )


def seed(servers: MailServers, account: Account, subject: str, **headers: str) -> None:
    lines = [f"From: {headers.get('From', 'Alice <alice@example.test>')}", f"To: {account.email}"]
    lines += [f"Subject: {subject}"]
    lines += [f"{k}: {v}" for k, v in headers.items() if k != "From"]
    servers.deliver(account, ("\r\n".join(lines) + "\r\n\r\nbody of " + subject + "\r\n").encode())


# -- item 1: progress never garbles stdout ------------------------------------------------------


def _on_a_terminal(home: Path, *args: str) -> str:
    """Run with stdout and stderr on one pseudo-terminal, as an interactive user does."""
    controller, terminal = pty.openpty()
    env = {**os.environ, "MAILSYNC_DATA_DIR": str(home / "data"), "TERM": "xterm"}
    env["MAILSYNC_CONFIG"] = str(home / "config.toml")
    process = subprocess.Popen(
        [sys.executable, "-m", "mailsync", *args],
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
        env=env,
    )
    os.close(terminal)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 1.0)
        if ready:
            try:
                data = os.read(controller, 65536)
            except OSError:  # the terminal closed: the process is done
                break
            if not data:
                break
            chunks.append(data)
        elif process.poll() is not None:
            break
    process.wait(30)
    os.close(controller)
    return b"".join(chunks).decode()


def test_progress_never_lands_on_the_same_row_as_a_message(home: Path) -> None:
    for n in range(3):
        sent = run(
            home,
            *send_args("a@example.test", "b@example.test", f"row {n}"),
        )
        assert sent.returncode == 0, sent.stderr
    for command in ("fetch", "sync"):
        shown = _on_a_terminal(home, command)
        rows = [row for row in shown.replace("\r\n", "\n").split("\n") if row.strip()]
        assert len(rows) == 3, shown
        for row in rows:
            assert row[:2] == "20", repr(row)  # each row is a message line, from its start
            assert "messages (" not in row
            assert "\r" not in row


def test_only_the_commands_with_a_counter_take_the_progress_option(home: Path) -> None:
    assert run(home, "fetch", "--no-progress").returncode == 0
    assert run(home, "sync", "--no-progress").returncode == 0
    done = run(home, "watch", "--no-progress")  # accepted and ignored before
    assert done.returncode == 2
    assert "--no-progress" in done.stderr


def test_progress_goes_to_a_terminal_stderr_and_is_erased(home: Path) -> None:
    """With stdout in a file, the counter shows on the terminal and ends erased."""
    for n in range(2):
        run(
            home,
            *send_args("a@example.test", "b@example.test", f"p{n}"),
        )
    controller, terminal = pty.openpty()
    with open(home / "out.txt", "w") as stdout:
        env = {**os.environ, "MAILSYNC_DATA_DIR": str(home / "data")}
        env["MAILSYNC_CONFIG"] = str(home / "config.toml")
        subprocess.run(
            [sys.executable, "-m", "mailsync", "fetch"],
            stdout=stdout,
            stderr=terminal,
            env=env,
            timeout=120,
            check=True,
        )
    os.close(terminal)
    shown = os.read(controller, 65536).decode()
    os.close(controller)
    assert "1 message (" in shown  # one, not "1 messages"
    assert shown.endswith("\r\x1b[K")
    assert len((home / "out.txt").read_text().splitlines()) == 2


# -- items 7, 9, 10: defaults, exit statuses, help ----------------------------------------------


def test_a_brand_new_embedded_default_is_simply_empty(home: Path) -> None:
    (home / "config.toml").unlink()
    for command in ("fetch", "sync", "folders"):
        done = run(home, command)
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""
    assert run(home, "fetch").stdout == ""


def test_a_missing_folder_says_how_to_list_them(home: Path) -> None:
    (home / "config.toml").unlink()
    one_line_error(run(home, "fetch", "-f", "Archive"), "no folder 'Archive'", "mailsync folders")


def test_several_accounts_and_no_default_lists_them(home: Path) -> None:
    (home / "config.toml").write_text(
        '[accounts.work]\nretrieve = "maildir:/w"\n[accounts.home]\nretrieve = "maildir:/h"\n'
    )
    one_line_error(run(home, "fetch"), "no default", "home, work", 'default = "NAME"')


def test_config_mistakes_are_one_line_naming_file_account_and_key(home: Path) -> None:
    (home / "config.toml").write_text('[accounts.work]\nretrieve = "maildir:/w"\ntimout = 5\n')
    done = run(home, "fetch", "work")
    one_line_error(done, "config.toml", "accounts.work", "'timout'", "did you mean 'timeout'")
    assert done.returncode == 2


def test_config_option_names_another_file(home: Path) -> None:
    (home / "other.toml").write_text(f'[accounts.o]\nretrieve = "maildir:{home / "o"}"\n')
    for args in (
        ["--config", str(home / "other.toml"), "accounts"],
        ["accounts", "--config", str(home / "other.toml")],
    ):
        done = run(home, *args)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("o  (default)")
    one_line_error(run(home, "fetch", "--config", str(home / "nope.toml")), "no config file")


def test_send_help_says_what_repeats_and_every_command_has_examples(home: Path) -> None:
    text = run(home, "send", "--help").stdout
    for option in ("--to", "--cc", "--bcc", "--attach"):
        line = next(row for row in text.splitlines() if row.strip().startswith(option))
        following = text.split(line, 1)[1].splitlines()[0]
        assert "repeatable" in line + following, line
    commands = ["fetch", "sync", "show", "watch", "flag", "move", "delete", "send", "folders"]
    for command in [*commands, "accounts", "completion"]:
        shown = run(home, command, "--help")
        assert shown.returncode == 0
        assert "examples:" in shown.stdout, command
        assert "mailsync " + command in shown.stdout.split("examples:")[1]
    assert "examples:" in run(home, "--help").stdout


def test_missing_date_prints_something_sensible(
    mail_servers: MailServers, account: Account, home: Path
) -> None:
    mail_servers.deliver(account, b"From: a@example.test\r\nSubject: undated\r\n\r\nx\r\n")
    url = f"pop3://{account.user}@{mail_servers.host}:{mail_servers.pop3_port}"
    done = run(
        home,
        "fetch",
        url,
        "--ca-file",
        mail_servers.cafile,
        "--password-env",
        "PW",
        PW=account.password,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("(no date)")
    assert "?" not in done.stdout.split("undated")[0]


def test_send_exits_3_when_some_recipients_are_refused(
    mail_servers: MailServers, account: Account, home: Path
) -> None:
    url = f"smtp://{mail_servers.host}:{mail_servers.smtp_port}"
    done = run(
        home,
        "send",
        url,
        "--tls",
        "none",
        "--from",
        account.email,
        "--to",
        account.email,
        "--to",
        "someone@outside.example",
        "--subject",
        "partly",
        "--text",
        "x",
    )
    assert done.returncode == PARTIAL, done.stderr
    assert f"to {account.email}" in done.stdout
    assert "refused someone@outside.example: 554" in done.stderr


# -- item 2, 4: TLS and wrong-protocol errors on the command line --------------------------------


def test_untrusted_certificate_says_how_and_ca_file_fixes_it(
    mail_servers: MailServers, account: Account, home: Path
) -> None:
    url = f"imaps://{account.user}@{mail_servers.host}:{mail_servers.imaps_port}"
    env = {"PW": account.password}
    done = run(home, "folders", url, "--password-env", "PW", **env)
    one_line_error(
        done,
        f"{mail_servers.host}:{mail_servers.imaps_port}",
        "certificate verification failed",
        "--ca-file",
    )
    fixed = run(
        home, "folders", url, "--password-env", "PW", "--ca-file", mail_servers.cafile, **env
    )
    assert fixed.returncode == 0, fixed.stderr
    assert "INBOX" in fixed.stdout


def test_tls_none_with_an_implicit_tls_url_suggests_the_command_line_form(home: Path) -> None:
    line = one_line_error(run(home, "fetch", "imaps://u@h.example.test:993", "--tls", "none"))
    assert "imap://u@h.example.test:993 --tls none" in line
    assert "tls='none'" not in line  # not the Python spelling


def test_wrong_protocol_on_the_command_line_names_the_account(
    mail_servers: MailServers, account: Account, home: Path
) -> None:
    (home / "config.toml").write_text(
        f"""[accounts.oops]
retrieve = "imaps://{account.user}@{mail_servers.host}:{mail_servers.pop3s_port}"
password = "x"
ca_file = "{mail_servers.cafile}"
"""
    )
    one_line_error(run(home, "fetch", "oops"), "account 'oops'", "looks like POP3", "pop3://")


# -- everyday commands against IMAP, through the config file -------------------------------------


def test_one_account_with_authenticated_imap_and_an_open_relay(
    mail_servers: MailServers, account: Account, home: Path
) -> None:
    """The issue's item 3: the IMAP password must not be offered to the relay."""
    write_config(home, mail_servers, account)
    env = {"WORK_PW": account.password}
    sent = run(
        home,
        *send_args(account.email, account.email, "via relay"),
        **env,
    )
    assert sent.returncode == 0, sent.stderr
    mail_servers.wait_for(lambda: mail_servers.imap_uids(account), timeout=60)
    fetched = run(home, "fetch", "--subject", "relay", **env)
    assert fetched.returncode == 0, fetched.stderr
    assert "via relay" in fetched.stdout


def test_filters_and_queries_on_fetch_and_sync(
    mail_servers: MailServers, account: Account, home: Path
) -> None:
    write_config(home, mail_servers, account)
    env = {"WORK_PW": account.password}
    seed(mail_servers, account, "invoice 1", From="Bob <bob@example.test>")
    seed(mail_servers, account, "lunch", From="Carol <carol@example.test>")
    seed(mail_servers, account, "invoice 2", From="Carol <carol@example.test>")

    def subjects(*args: str) -> list[str]:
        done = run(home, *args, "--json", **env)
        assert done.returncode == 0, done.stderr
        return [json.loads(line)["subject"] for line in done.stdout.splitlines()]

    assert subjects("fetch", "--from", "carol") == ["lunch", "invoice 2"]
    assert subjects("fetch", "-q", "subject:invoice -from:bob") == ["invoice 2"]
    assert subjects("fetch", "-q", "from:bob OR subject:lunch") == ["invoice 1", "lunch"]
    assert subjects("fetch", "--since", "1d", "--unseen", "--subject", "1") == ["invoice 1"]
    assert subjects("fetch", "--before", "2000-01-01") == []
    assert subjects("sync", "--from", "carol") == ["lunch", "invoice 2"]
    assert subjects("sync") == []  # what did not match was synced past
    bad = run(home, "fetch", "-q", "frm:bob", **env)
    one_line_error(bad, "unknown key 'frm'", "did you mean 'from'")
    one_line_error(run(home, "fetch", "--since", "last tuesday", **env), "not a date")


def test_show_flag_move_delete_by_id_and_by_query(
    mail_servers: MailServers, account: Account, home: Path
) -> None:
    write_config(home, mail_servers, account)
    env = {"WORK_PW": account.password}
    mail_servers.deliver(
        account,
        b"From: a@example.test\r\nTo: " + account.email.encode() + b"\r\nSubject: with file\r\n"
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n"
        b"hello\r\n--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment;"
        b' filename="r.pdf"\r\n\r\n%PDF\r\n--b--\r\n',
    )
    seed(mail_servers, account, "news 1", From="news@example.test")
    seed(mail_servers, account, "news 2", From="news@example.test")
    ids = run(home, "fetch", "--ids", **env).stdout.split()
    assert len(ids) == 3

    shown = run(home, "show", ids[0], **env)
    assert shown.returncode == 0, shown.stderr
    assert "Subject: with file" in shown.stdout
    assert "Attachment: r.pdf (application/pdf, 4 bytes)" in shown.stdout
    assert shown.stdout.rstrip().endswith("hello")
    raw = run(home, "show", "work", ids[0], "--raw", **env)
    assert raw.stdout.startswith("Return-Path:") or "Subject: with file" in raw.stdout
    saved = run(home, "show", ids[0], "--attachments", str(home / "files"), **env)
    assert saved.returncode == 0, saved.stderr
    assert (home / "files" / "r.pdf").read_bytes() == b"%PDF"

    flagged = run(home, "flag", "--id", ids[0], "--add", "seen", "--add", "flagged", **env)
    assert flagged.returncode == 0, flagged.stderr
    assert run(home, "fetch", "--flagged", "--ids", **env).stdout.split() == [ids[0]]

    nothing = run(home, "move", "--into", "Archive", **env)
    one_line_error(nothing, "which messages?", "--all")
    dry = run(home, "move", "--from", "news@", "--into", "Archive", "--dry-run", **env)
    assert dry.returncode == 0, dry.stderr
    assert "news 1" in dry.stdout
    assert "would move to Archive 2 messages" in dry.stderr
    assert len(mail_servers.imap_uids(account, "Archive")) == 0
    moved = run(home, "move", "--from", "news@", "--into", "Archive", **env)
    assert moved.returncode == 0, moved.stderr
    assert len(mail_servers.imap_uids(account, "Archive")) == 2

    archived = run(home, "fetch", "-f", "Archive", "--ids", **env).stdout
    deleted = run(home, "delete", "--id", "-", "--permanent", stdin=archived.encode(), **env)
    assert deleted.returncode == 0, deleted.stderr
    assert "deleted for good: 2 messages" in deleted.stderr
    assert mail_servers.imap_uids(account, "Archive") == []


def test_accounts_list_and_check(mail_servers: MailServers, account: Account, home: Path) -> None:
    write_config(home, mail_servers, account)
    listed = run(home, "accounts")
    assert listed.stdout.splitlines()[0] == "work  (default)"
    assert run(home, "accounts", "--names").stdout == "work\n"
    assert json.loads(run(home, "accounts", "--json").stdout)["send"].startswith("smtp://")

    checked = run(home, "accounts", "check", "work", WORK_PW=account.password)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    text = checked.stdout
    assert "login    ok:" in text
    assert "connect  ok: TLS TLSv1." in text  # STARTTLS on the IMAP port
    assert "IMAP4REV1" in text.upper()
    assert "PIPELINING" in text  # the relay's EHLO
    assert "no TLS (plaintext)" in text

    wrong = run(home, "accounts", "check", "work", WORK_PW="wrong")
    assert wrong.returncode == 1
    assert "login    FAILED:" in wrong.stdout
    refused = run(home, "fetch", WORK_PW="wrong")
    one_line_error(refused, "account 'work'", f"{mail_servers.host}:", "app password")


def test_save_to_from_the_command_line(
    mail_servers: MailServers, account: Account, home: Path
) -> None:
    write_config(home, mail_servers, account)
    env = {"WORK_PW": account.password}
    sent = run(
        home,
        *send_args(account.email, account.email, "keep a copy"),
        "--save-to",
        "Sent",
        **env,
    )
    assert sent.returncode == 0, sent.stderr
    assert "saved a copy in Sent" in sent.stdout
    ((_uid, flags, raw),) = mail_servers.imap_messages(account, "Sent")
    assert b"Subject: keep a copy" in raw
    assert "\\Seen" in flags


def test_bash_completion_completes_commands_options_and_accounts(home: Path) -> None:
    (home / "config.toml").write_text('[accounts.work]\nretrieve = "maildir:/w"\n')
    script = run(home, "completion", "bash").stdout
    environment = {**os.environ, "MAILSYNC_CONFIG": str(home / "config.toml")}
    environment["PATH"] = f"{Path(sys.executable).parent}:{environment['PATH']}"

    def complete(*words: str) -> list[str]:
        line = " ".join(f"'{w}'" for w in words)
        probe = f"{script}\nCOMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _mailsync; "
        probe += 'printf "%s\\n" "${COMPREPLY[@]}"'
        done = subprocess.run(
            ["bash", "-c", probe],
            capture_output=True,
            text=True,
            env=environment,
            timeout=60,
            check=True,
        )
        return done.stdout.split()

    assert complete("mailsync", "fe") == ["fetch"]
    assert "--unseen" in complete("mailsync", "fetch", "--un")
    assert complete("mailsync", "fetch", "--tls", "st") == ["starttls"]
    assert complete("mailsync", "fetch", "w") == ["work"]
    for shell in ("zsh", "fish"):
        assert "fetch" in run(home, "completion", shell).stdout


def test_watch_prints_mail_as_it_arrives_and_stops_on_ctrl_c(home: Path) -> None:
    run(home, *send_args("a@example.test", "b@example.test", "before"))
    env = {**os.environ, "MAILSYNC_DATA_DIR": str(home / "data")}
    env["MAILSYNC_CONFIG"] = str(home / "config.toml")
    command = [sys.executable, "-m", "mailsync", "watch", "--json", "--poll-interval", "0.2"]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as process:
        try:
            assert process.stdout is not None
            assert json.loads(process.stdout.readline())["subject"] == "before"
            run(home, *send_args("a@example.test", "b@example.test", "while watching"))
            assert json.loads(process.stdout.readline())["subject"] == "while watching"
            process.send_signal(signal.SIGINT)
            assert process.wait(60) == 130
        finally:
            process.kill()
