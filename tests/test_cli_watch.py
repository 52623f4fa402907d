"""``mailsync watch ACCOUNT... [--all] [--exec CMD] [--json]`` as a real process: many accounts,
the command's exit status as the acknowledgement, JSON events, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.servers import wait_for
from tests.test_local_contract import _maildir_seed


def _raw(subject: str) -> bytes:
    return (
        f"From: a@example.test\r\nTo: b@example.test\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject}@example.test>\r\n\r\nbody\r\n"
    ).encode()


def _events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_watch_many_accounts_with_exec_acknowledgement_and_json(tmp_path: Path) -> None:
    roots = [tmp_path / f"box{i}" for i in range(3)]
    for root in roots:
        for sub in ("tmp", "new", "cur"):
            (root / sub).mkdir(parents=True)
    for i, root in enumerate(roots):
        _maildir_seed(root)(_raw(f"first-{i}"))
    got = tmp_path / "got"
    got.mkdir()
    # The command fails once on first-1 (its account backs off and gets it again) and saves
    # every message it acknowledges.
    command = (
        f'if [ "$MAILSYNC_MESSAGE_ID" = first-1@example.test ] && [ ! -e {tmp_path}/failed ];'
        f" then touch {tmp_path}/failed; exit 3; fi; "
        f'cat > "{got}/$MAILSYNC_MESSAGE_ID"'
    )
    out, err = tmp_path / "messages.jsonl", tmp_path / "statuses.jsonl"
    env = {**os.environ, "MAILSYNC_DATA_DIR": str(tmp_path / "data")}
    with open(out, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "mailsync", "watch"),
                *(f"maildir:{r}" for r in roots),
                *("--json", "--poll-interval", "0.2", "--exec", command),
            ],
            stdout=stdout,
            stderr=stderr,
            env=env,
        )
    try:
        wait_for(lambda: len(list(got.iterdir())) == 3, timeout=60, message="3 acknowledged")
        _maildir_seed(roots[2])(_raw("second-2"))
        wait_for(lambda: len(list(got.iterdir())) == 4, timeout=60, message="new mail too")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0  # SIGTERM: an ordinary stop
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert sorted(p.name for p in got.iterdir()) == sorted(
        [f"first-{i}@example.test" for i in range(3)] + ["second-2@example.test"]
    )
    assert (got / "second-2@example.test").read_bytes() == _raw("second-2")
    messages = _events(out)  # stdout: only messages
    assert {m["account"] for m in messages} == {f"maildir:{r}" for r in roots}
    assert [m["exec_status"] for m in messages if m["message_id"] == "first-1@example.test"] == [
        3,
        0,
    ]
    statuses = _events(err)  # stderr: the status events
    assert {e["event"] for e in statuses} == {"status"}
    assert {e["account"] for e in statuses} == {f"maildir:{r}" for r in roots}
    backing = [e for e in statuses if e["state"] == "backing_off"]
    assert len(backing) == 1
    assert "exited with status 3" in backing[0]["reason"]
    assert [e["state"] for e in statuses if e["account"] == f"maildir:{roots[0]}"][-1] == "stopped"


def test_watch_to_a_local_mailbox_keeps_the_flags(tmp_path: Path) -> None:
    source, backup = tmp_path / "source", tmp_path / "backup"
    _maildir_seed(source)(_raw("read-and-flagged"), flags=("\\Seen", "\\Flagged"))
    env = {**os.environ, "MAILSYNC_DATA_DIR": str(tmp_path / "data")}
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "mailsync", "watch", f"maildir:{source}"),
            *("--poll-interval", "0.2", "--to", f"maildir:{backup}"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        wait_for(lambda: any(backup.glob("cur/*")), timeout=60, message="the copy")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    (copy,) = backup.glob("[nc][eu][wr]/*")
    assert copy.name.endswith(":2,FS")  # read without mailsync, as mutt would
