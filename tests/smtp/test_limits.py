"""Both SMTP senders against a server that drips its replies a byte every 50 ms, never silent
for a read timeout (issue 14.4): the whole-call deadline (``Timeout.total``) ends the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import mailsync
from tests.limits import drip, wait_for

HANG = 30.0
MESSAGE = b"From: a@example.test\r\nTo: b@example.test\r\nSubject: s\r\n\r\nbody\r\n"


class DrippingSMTP:
    """Greets (dripping when ``where == "greeting"``), answers EHLO, then drips its reply to
    ``MAIL FROM`` (``where == "MAIL"``) for ever. Counts the connections the client dropped."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.hung_up = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(10)

    def _serve(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except OSError:
            return
        with conn, conn.makefile("rb") as reader:
            try:
                if self.where == "greeting":
                    self._drip(conn, b"220 hello")
                conn.sendall(b"220 hello\r\n")
                while line := reader.readline():
                    verb = line[:4].upper()
                    if verb in (b"EHLO", b"HELO"):
                        conn.sendall(b"250 ok\r\n")
                    elif verb == b"MAIL":
                        self._drip(conn, b"250 sender ok")
                    else:
                        conn.sendall(b"250 ok\r\n")
            except OSError:
                return

    def _drip(self, conn: socket.socket, text: bytes) -> None:
        drip(conn, text)
        self.hung_up += 1
        raise ConnectionResetError  # the session is over


@pytest.fixture
def dripping() -> Iterator[type[DrippingSMTP]]:
    servers: list[DrippingSMTP] = []

    class Made(DrippingSMTP):
        def __init__(self, where: str) -> None:
            super().__init__(where)
            servers.append(self)

    yield Made
    for server in servers:
        server.close()


@pytest.mark.reliability(
    area="Limits",
    fault="the SMTP server sends its greeting, or its reply to MAIL FROM, one byte every 50 ms "
    "for ever",
    inputs="sync and async senders; Timeout(1.0, total=2.0)",
    outcome="MailTimeout naming Timeout.total a little after 2 s; the connection dropped",
)
@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("where", ["greeting", "MAIL"])
def test_a_dripping_smtp_server_cannot_hold_a_call(
    dripping: type[DrippingSMTP], asynchronous: bool, where: str
) -> None:
    server = dripping(where)
    url = f"smtp://127.0.0.1:{server.port}"
    options: dict[str, Any] = {
        "tls": "none",
        "timeout": mailsync.Timeout(1.0, total=2.0),
        "retries": 1,
        "reconnects": 0,
    }

    def send() -> None:
        if not asynchronous:
            with mailsync.sender(url, **options) as out:
                out.send(MESSAGE)
            return

        async def run() -> None:
            async with mailsync.sender_async(url, **options) as out:
                await out.send(MESSAGE)

        asyncio.run(run())

    started = time.monotonic()
    with pytest.raises(mailsync.MailTimeout) as info:
        send()
    took = time.monotonic() - started
    assert "Timeout.total" in str(info.value)
    assert took < HANG
    assert wait_for(lambda: server.hung_up >= 1), "the connection was kept"
