"""A tiny scripted SMTP server on loopback, for what the real Postfix cannot be made to do.

Postfix always offers STARTTLS, DSN, SMTPUTF8 and PIPELINING and never answers 4xx on demand;
the edge cases of the client (STARTTLS missing, DSN missing, 4xx then success, a server that
hangs up after accepting a message, XOAUTH2) need a server that does exactly that. This one
speaks enough SMTP to take mail, records every chunk and command it received, and lets a test
queue the replies it should give instead of the default ones. It uses the standard library
only.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import threading
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import TracebackType

__all__ = ["Received", "ScriptedSMTP"]

#: A queued reply that closes the connection instead of answering.
DROP = "DROP"


@dataclass
class Received:
    """One message the server accepted."""

    mail_from: str
    recipients: list[str]
    data: bytes
    mail_line: str
    rcpt_lines: list[str]
    connection: int


@dataclass
class _State:
    number: int
    mail_line: str | None = None
    rcpt_lines: list[str] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)


class ScriptedSMTP:
    """A loopback SMTP server whose replies a test scripts.

    Args:
        extensions: The EHLO keywords offered (``"SIZE 1000"``, ``"AUTH PLAIN"``...).
        refuse: Recipient address -> the reply that refuses it (``"550 5.1.1 no"``).
        auth: Mechanism -> accepted base64 initial response (anything else is refused).
    """

    def __init__(
        self,
        *,
        extensions: Iterable[str] = ("PIPELINING", "8BITMIME", "SIZE 10000000", "DSN"),
        refuse: dict[str, str] | None = None,
        auth: dict[str, str] | None = None,
    ) -> None:
        self.extensions = list(extensions)
        self.refuse = dict(refuse or {})
        self.auth = dict(auth or {})
        self.queued: dict[str, deque[str]] = defaultdict(deque)
        self.commands: list[str] = []
        self.chunks: list[bytes] = []
        self.messages: list[Received] = []
        self.connections = 0
        self.drop_after_messages: int | None = None
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._open: set[socket.socket] = set()
        self._running = True
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def __enter__(self) -> ScriptedSMTP:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def url(self, scheme: str = "smtp", user: str | None = None) -> str:
        return f"{scheme}://{user + '@' if user else ''}127.0.0.1:{self.port}"

    def queue(self, verb: str, *replies: str) -> None:
        """Answer the next ``verb`` commands (``MAIL``, ``RCPT``, ``DATA``, ``.`` for the end of
        data, ``AUTH``, ``RSET``...) with these replies, in order; ``DROP`` hangs up instead."""
        self.queued[verb.upper()].extend(replies)

    def verbs(self) -> list[str]:
        """The verb of every command received, in order."""
        return [c.split(" ", 1)[0].split(":", 1)[0].upper() for c in self.commands]

    def stop(self) -> None:
        self._running = False
        with contextlib.suppress(OSError):
            # Wakes the thread blocked in accept(); close() alone leaves the port listening.
            self._listener.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._listener.close()
        self._acceptor.join(timeout=5)
        with self._lock:
            sockets = list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
        for thread in self._threads:
            thread.join(timeout=5)

    # ----------------------------------------------------------------- serving

    def _accept(self) -> None:
        while self._running:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                number = self.connections
                self._open.add(sock)
            thread = threading.Thread(target=self._serve, args=(sock, number), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket, number: int) -> None:
        try:
            with contextlib.suppress(OSError):
                self._session(sock, _State(number))
        finally:
            with self._lock:
                self._open.discard(sock)
            with contextlib.suppress(OSError):
                sock.close()

    def _session(self, sock: socket.socket, state: _State) -> None:
        reader = _Lines(sock, self.chunks, self._lock)
        sock.sendall(b"220 scripted.test ESMTP\r\n")
        while True:
            line = reader.line()
            if line is None:
                return
            with self._lock:
                self.commands.append(line)
            replies = self._handle(line, state, reader)
            if replies is None:
                return
            if replies:
                sock.sendall("".join(r + "\r\n" for r in replies).encode())
            if line.upper() == "QUIT":
                return
            if self.drop_after_messages is not None and len(self.messages) >= (
                self.drop_after_messages
            ):
                self.drop_after_messages = None
                return

    def _next(self, verb: str, default: str) -> str:
        with self._lock:
            queue = self.queued.get(verb)
            return queue.popleft() if queue else default

    def _handle(self, line: str, state: _State, reader: _Lines) -> list[str] | None:
        verb = line.split(" ", 1)[0].split(":", 1)[0].upper()
        if verb in ("EHLO", "HELO"):
            reply = self._next(verb, "250 scripted.test")
            if reply == DROP:
                return None
            if not reply.startswith("250") or verb == "HELO":
                return [reply]
            lines = ["scripted.test", *self.extensions]
            return [f"250-{x}" for x in lines[:-1]] + [f"250 {lines[-1]}"]
        if verb == "AUTH":
            return self._auth(line, reader)
        if verb == "MAIL":
            if state.mail_line is not None:
                return ["503 5.5.1 Error: nested MAIL command"]  # as Postfix says
            reply = self._next("MAIL", "250 2.1.0 Ok")
            state.mail_line = line if reply.startswith("2") else None
            state.rcpt_lines, state.accepted = [], []
            return None if reply == DROP else [reply]
        if verb == "RCPT":
            return self._rcpt(line, state)
        if verb == "DATA":
            return self._data(state, reader)
        if verb == "RSET":
            state.mail_line, state.rcpt_lines, state.accepted = None, [], []
        if verb == "QUIT":
            return ["221 2.0.0 Bye"]
        reply = self._next(verb, "250 2.0.0 Ok")
        return None if reply == DROP else [reply]

    def _rcpt(self, line: str, state: _State) -> list[str] | None:
        address = line.split("<", 1)[1].split(">", 1)[0] if "<" in line else ""
        if state.mail_line is None:
            return ["503 5.5.1 Error: need MAIL command"]
        reply = self.refuse.get(address) or self._next("RCPT", "250 2.1.5 Ok")
        if reply == DROP:
            return None
        state.rcpt_lines.append(line)
        if reply.startswith("2"):
            state.accepted.append(address)
        return [reply]

    def _data(self, state: _State, reader: _Lines) -> list[str] | None:
        if state.mail_line is None or not state.accepted:
            return ["554 5.5.1 Error: no valid recipients"]
        reply = self._next("DATA", "354 End data with <CR><LF>.<CR><LF>")
        if reply == DROP:
            return None
        if not reply.startswith("354"):
            return [reply]
        reader.sock.sendall(reply.encode() + b"\r\n")
        data = reader.data()
        if data is None:
            return None
        final = self._next(".", "250 2.0.0 Ok: queued")
        if final == DROP:
            return None
        if final.startswith("2"):
            mail_from = state.mail_line.split("<", 1)[1].split(">", 1)[0]
            with self._lock:
                self.messages.append(
                    Received(
                        mail_from,
                        list(state.accepted),
                        data,
                        state.mail_line,
                        list(state.rcpt_lines),
                        state.number,
                    )
                )
        state.mail_line, state.rcpt_lines, state.accepted = None, [], []
        return [final]

    def _auth(self, line: str, reader: _Lines) -> list[str] | None:
        parts = line.split()
        mechanism = parts[1].upper() if len(parts) > 1 else ""
        response = parts[2] if len(parts) > 2 else ""
        queued = self._next("AUTH", "")
        if queued == DROP:
            return None
        if queued:
            return [queued]
        if mechanism == "LOGIN" and not response:
            answers = []
            for prompt in (b"VXNlcm5hbWU6", b"UGFzc3dvcmQ6"):  # "Username:", "Password:"
                reader.sock.sendall(b"334 " + prompt + b"\r\n")
                answer = reader.line()
                if answer is None:
                    return None
                answers.append(answer)
            response = " ".join(answers)
        expected = self.auth.get(mechanism)
        if expected is not None and response == expected:
            return ["235 2.7.0 Authentication successful"]
        if mechanism in ("XOAUTH2", "OAUTHBEARER"):
            challenge = base64.b64encode(b'{"status":"401","schemes":"bearer"}').decode()
            reader.sock.sendall(f"334 {challenge}\r\n".encode())
            reader.line()  # the client's empty line
        return ["535 5.7.8 Error: authentication failed"]


class _Lines:
    """Reads CRLF lines and DATA bodies from a socket, recording every chunk."""

    def __init__(self, sock: socket.socket, chunks: list[bytes], lock: threading.Lock) -> None:
        self.sock = sock
        self._chunks = chunks
        self._lock = lock
        self._buffer = b""

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        if not chunk:
            return False
        with self._lock:
            self._chunks.append(chunk)
        self._buffer += chunk
        return True

    def line(self) -> str | None:
        while b"\r\n" not in self._buffer:
            if not self._fill():
                return None
        line, self._buffer = self._buffer.split(b"\r\n", 1)
        return line.decode("utf-8", "replace")

    def data(self) -> bytes | None:
        """The message up to the ``.`` line, dot-unstuffed."""
        while True:
            if self._buffer.startswith(b".\r\n"):
                self._buffer = self._buffer[3:]
                return b""
            end = self._buffer.find(b"\r\n.\r\n")
            if end >= 0:
                body, self._buffer = self._buffer[: end + 2], self._buffer[end + 5 :]
                lines = body.split(b"\r\n")
                return b"\r\n".join(x[1:] if x.startswith(b".") else x for x in lines)
            if not self._fill():
                return None
