"""What the limits tests share (tests/*/test_limits.py and the scripted servers' limit
behaviours): a server side that drips bytes for ever, reading an account through either API,
and waiting for a condition with a deadline. Standard library and mailsync only.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Any

import mailsync

__all__ = ["MiB", "drip", "read", "wait_for"]

MiB = 1024 * 1024


def drip(conn: socket.socket, data: bytes) -> None:
    """Send ``data`` (without its final CRLF) a byte every 50 ms, then ``x`` the same way, for
    ever: never silent long enough for a read timeout, never complete. Returns when the client
    hangs up."""
    data = data.removesuffix(b"\r\n")
    try:
        for byte in data:
            conn.sendall(bytes([byte]))
            time.sleep(0.05)
        while True:
            conn.sendall(b"x")
            time.sleep(0.05)
    except OSError:
        return


def read(url: str, asynchronous: bool, action: str = "messages", **options: Any) -> list[str]:
    """Connect (sync or async) and read ``messages()`` or ``sync()``: the subjects, in order.
    Plain text, password ``x`` and a state store in memory unless ``options`` say otherwise."""
    options.setdefault("tls", "none")
    options.setdefault("password", "x")
    options.setdefault("state", ":memory:")
    if not asynchronous:
        with mailsync.connect(url, **options) as box:
            source = box.sync() if action == "sync" else box.messages()
            return [message.subject or "" for message in source]

    async def run() -> list[str]:
        async with mailsync.connect_async(url, **options) as box:
            source = box.sync() if action == "sync" else box.messages()
            return [message.subject or "" async for message in source]

    return asyncio.run(run())


def wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    """Poll ``condition`` until it holds or ``seconds`` pass; whether it held."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()
