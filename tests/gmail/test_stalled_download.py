"""close() while a Gmail download is blocked on a server that stopped sending mid-body.

The in-process fake answers at once, so here it is served over a real loopback socket by a
small HTTP server that, for a message download, sends the status line, the headers and half
of the body, and then nothing more. mailsync is then blocked reading a socket; close()
(aclose()) from elsewhere must end that read at once with ConnectionFailed, not leave the
reader waiting out its read timeout.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

import mailsync
from tests.contract import make_raw, wait_for
from tests.fakes.gmail import FakeGmail
from tests.gmail.conftest import TOKEN, deposit

#: How soon after close() the blocked reader must be free (the read timeout is 20 s).
BOUND = 2.0


class _StallingServer(ThreadingHTTPServer):
    """Serves ``fake.handler`` over HTTP/1.1; stalls every ``format=raw`` message download
    after half its body, until :meth:`release`."""

    daemon_threads = True

    def __init__(self, fake: FakeGmail) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake
        self.stalled = threading.Event()
        self.released = threading.Event()

    def release(self) -> None:
        self.released.set()
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _StallingServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        request = httpx.Request(
            self.command,
            f"http://{self.server.server_address[0]}{self.path}",
            headers=dict(self.headers.items()),
            content=self.rfile.read(length) if length else b"",
        )
        reply = self.server.fake.handler(request)
        body = reply.read()
        self.send_response(reply.status_code)
        for name, value in reply.headers.items():
            if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if "/messages/" in self.path and "format=raw" in self.path:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.server.stalled.set()
            self.server.released.wait(60)
            return
        self.wfile.write(body)


@pytest.fixture
def server(gmail: FakeGmail) -> Iterator[_StallingServer]:
    server = _StallingServer(gmail)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release()
        thread.join(10)


@pytest.mark.reliability(
    area="Connections",
    fault="the HTTP API server stops sending in the middle of a message download, and the "
    "retriever is closed from another thread (a watch being stopped, a shutdown)",
    inputs="Gmail over a real loopback socket, sync and async; read timeout 20 s",
    outcome="the blocked download ends within 2 s of close() with ConnectionFailed, not "
    "after the read timeout",
)
@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_close_ends_a_download_stalled_mid_body(
    gmail: FakeGmail, server: _StallingServer, asynchronous: bool
) -> None:
    deposit(gmail, make_raw(1, extra=200_000))
    host, port = server.server_address[:2]
    options: dict[str, Any] = {
        "token": TOKEN,
        "base_url": f"http://{host!s}:{port}/gmail/v1",
        "retry_delay": 0,
        "timeout": 20,
    }
    outcome: dict[str, Any] = {}
    loop = asyncio.new_event_loop() if asynchronous else None
    box: Any = (mailsync.connect_async if asynchronous else mailsync.connect)(
        "gmail://me", state=":memory:", **options
    )

    def read() -> None:
        try:
            if loop is None:
                outcome["got"] = list(box.messages())
            else:

                async def collect() -> list[mailsync.Message]:
                    return [message async for message in box.messages()]

                outcome["got"] = loop.run_until_complete(collect())
        except BaseException as exc:
            outcome["error"] = exc
        outcome["ended"] = time.monotonic()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert server.stalled.wait(20), "the download never started"
        started = time.monotonic()
        if loop is None:
            box.close()
        else:
            while not loop.is_running():
                time.sleep(0.01)
            asyncio.run_coroutine_threadsafe(box.aclose(), loop).result(10)
        wait_for(lambda: "ended" in outcome, timeout=30)
        assert outcome["ended"] - started < BOUND
        assert isinstance(outcome.get("error"), mailsync.ConnectionFailed), outcome
    finally:
        server.released.set()
        reader.join(30)
        if loop is not None:
            loop.close()
