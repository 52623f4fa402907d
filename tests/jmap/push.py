"""An event source in front of the real Cyrus, for the JMAP push tests.

Debian 12 builds Cyrus without wslay, and Cyrus 3.6 turns push off without it: the session
names an ``eventSourceUrl``, but a GET of it answers ``204 No Content``. No other JMAP server
runs offline here. :class:`EventSourceProxy` stands in front of the real Cyrus on loopback:
every request goes to Cyrus unchanged (the Host header too, so Cyrus's redirects and the
session's relative URLs lead back to the proxy), except the event source, which the proxy
serves itself as RFC 8620 section 7.3 describes. It reads the account's Email state from Cyrus
(with the client's own credentials) every 50 ms and writes a ``state`` event, a StateChange,
when the state moves; a ``ping`` event every ``ping`` seconds otherwise. So each event a client
gets stands for a real change of the real server, an LMTP delivery for instance.

Standard library only; it never uses mailsync.
"""

from __future__ import annotations

import http.client
import json
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["EventSourceProxy"]

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "alt-svc",
    }
)
_POLL = 0.05


class EventSourceProxy:
    """Forwards to Cyrus's http port and serves ``/jmap/eventsource/`` itself.

    Attributes:
        url: ``http://127.0.0.1:PORT``, the proxy's root.
        streams: Event streams open right now.
        opened: Event streams opened so far.
        events: ``state`` events sent so far.
    """

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.streams = 0
        self.opened = 0
        self.events = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> EventSourceProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def __enter__(self) -> EventSourceProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def wait_for_stream(self, timeout: float = 30.0) -> None:
        """Return once a client is waiting on an event stream."""
        deadline = time.monotonic() + timeout
        while self.streams == 0:
            if time.monotonic() > deadline:
                raise AssertionError("no client opened the event stream")
            time.sleep(0.01)

    def _count(self, name: str, delta: int) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + delta)

    def _cyrus(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(*self.target, timeout=30)
        try:
            connection.request(method, path, body=body, headers=headers)
            reply = connection.getresponse()
            return reply.status, reply.getheaders(), reply.read()
        finally:
            connection.close()

    def _email_state(self, authorization: str) -> tuple[str, str]:
        """The account id and its Email state, as Cyrus says now."""
        headers = {"Authorization": authorization}
        _, _, body = self._cyrus("GET", "/jmap", headers, None)
        session = json.loads(body)
        account = session["primaryAccounts"]["urn:ietf:params:jmap:mail"]
        request = {
            "using": ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"],
            "methodCalls": [["Email/get", {"accountId": account, "ids": []}, "0"]],
        }
        headers["Content-Type"] = "application/json"
        _, _, body = self._cyrus("POST", session["apiUrl"], headers, json.dumps(request).encode())
        return account, json.loads(body)["methodResponses"][0][1]["state"]

    def _events(
        self,
        authorization: str,
        ping: int,
        last_id: str | None,
        gone: Callable[[float], bool],
    ) -> Iterator[bytes]:
        """The stream's events. Event ids are Email states (as Cyrus's are its modseqs): a
        ``Last-Event-ID`` makes that state the starting point, so a change made between two
        streams is sent at once."""
        account, state = self._email_state(authorization)
        if last_id:
            state = last_id
        self._count("streams", 1)  # only now: a change from here on is seen
        self._count("opened", 1)
        try:
            last_write = time.monotonic()
            while not self._stopping.is_set():
                _, now = self._email_state(authorization)
                if now != state:
                    state = now
                    change = {"@type": "StateChange", "changed": {account: {"Email": state}}}
                    self._count("events", 1)
                    last_write = time.monotonic()
                    yield f"event: state\nid: {state}\ndata: {json.dumps(change)}\n\n".encode()
                elif ping and time.monotonic() - last_write >= ping:
                    last_write = time.monotonic()
                    yield f'event: ping\ndata: {{"interval": {ping}}}\n\n'.encode()
                if gone(_POLL):
                    return
        finally:
            self._count("streams", -1)


class _Handler(BaseHTTPRequestHandler):
    owner: EventSourceProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        status, reply_headers, content = self.owner._cyrus(self.command, self.path, headers, body)
        self.send_response(status)
        for name, value in reply_headers:
            if name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def _event_source(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        ping = int((query.get("ping") or ["0"])[0] or 0)
        authorization = self.headers.get("Authorization", "")
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")  # the stream ends when the connection does
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        last_id = self.headers.get("Last-Event-ID")
        try:
            for chunk in self.owner._events(authorization, ping, last_id, self._client_gone):
                self.wfile.write(chunk)
                self.wfile.flush()
        except OSError:
            pass  # the client went away

    def _client_gone(self, wait: float) -> bool:
        """Wait up to ``wait`` seconds; whether the client closed its end meanwhile."""
        readable, _, _ = select.select([self.connection], [], [], wait)
        if not readable:
            return False
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def do_GET(self) -> None:
        if urlsplit(self.path).path.startswith("/jmap/eventsource"):
            self._event_source()
        else:
            self._forward()

    def do_POST(self) -> None:
        self._forward()
