"""Running the ``mailsync`` command as a person does: a real subprocess, in an isolated home
(its own data directory and config file)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

__all__ = ["PARTIAL", "one_line_error", "run", "send_args"]

#: The exit status of a command done for some of what it was asked (recipients refused).
PARTIAL = 3


def run(
    home: Path, *args: str, stdin: bytes | None = None, config: str = "config.toml", **env: str
) -> subprocess.CompletedProcess[str]:
    """``python -m mailsync ARGS`` with ``home``'s data dir and config file, and ``env``."""
    environment = {
        **os.environ,
        "MAILSYNC_DATA_DIR": str(home / "data"),
        "MAILSYNC_CONFIG": str(home / config),
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "mailsync", *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=False,
    )


def send_args(sender: str, to: str, subject: str, *more: str) -> list[str]:
    """The arguments of ``mailsync send`` composing a one-line message."""
    return ["send", "--from", sender, "--to", to, "--subject", subject, "--text", "x", *more]


def one_line_error(done: subprocess.CompletedProcess[str], *needles: str) -> str:
    """The one ``mailsync: error:`` line a failed command printed, holding every needle."""
    assert done.returncode not in (0, PARTIAL), done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("mailsync: error: ")
    assert "Traceback" not in done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]
