"""The read timeout bounds silence, not the length of a reply: a large message streaming over
a slow link must arrive whole, while a server that stops sending still times out."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

import mailsync
from tests.contract import make_raw
from tests.servers import Account, MailServers

pytestmark = pytest.mark.servers


@contextlib.contextmanager
def throttled(host: str, port: int, *, chunk: int = 16384, pause: float = 0.02) -> Iterator[int]:
    """A loopback proxy passing server->client bytes in small, paced chunks (~0.8 MB/s)."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def pump(src: socket.socket, dst: socket.socket, slow: bool) -> None:
        with contextlib.suppress(OSError):
            while not stop.is_set():
                data = src.recv(chunk)
                if not data:
                    break
                dst.sendall(data)
                if slow:
                    time.sleep(pause)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def serve() -> None:
        with contextlib.suppress(OSError):
            while not stop.is_set():
                client, _ = listener.accept()
                upstream = socket.create_connection((host, port))
                for args in ((client, upstream, False), (upstream, client, True)):
                    threading.Thread(target=pump, args=args, daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        listener.close()


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_a_large_message_over_a_slow_link_is_not_cut_off(
    mail_servers: MailServers, account: Account, asynchronous: bool
) -> None:
    raw = make_raw(1, extra=1_500_000)  # ~1.5 MB: about 2 s through the proxy
    mail_servers.append(account, raw)
    with throttled(mail_servers.host, mail_servers.pop3_port) as port:
        url = f"pop3://{account.user}@{mail_servers.host}:{port}"
        options = {"password": account.password, "tls": "none", "timeout": 0.5}
        started = time.monotonic()
        if asynchronous:

            async def fetch() -> list[mailsync.Message]:
                async with mailsync.connect_async(url, state=":memory:", **options) as box:
                    return [m async for m in box.messages()]

            messages = asyncio.run(fetch())
        else:
            with mailsync.connect(url, state=":memory:", **options) as box:
                messages = list(box.messages())
        elapsed = time.monotonic() - started
    assert [m.raw for m in messages] == [raw]
    assert elapsed > 1.0, "the proxy did not slow the transfer: the test proves nothing"
