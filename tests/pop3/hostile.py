"""A scripted hostile POP3 server on loopback, for the limits a real Dovecot never tests.

It speaks enough POP3 for both mailsync POP3 retrievers (greeting, CAPA with UIDL, USER/PASS,
UIDL, LIST, RETR, TOP, RSET, NOOP, QUIT) over the ``messages`` it is given, and can misbehave:

- ``list_sizes``: message number -> the size LIST gives for it (a lie, or a large one);
- ``no_terminator``: RETR of that message number answers ``+OK`` and then lines without end,
  never the terminating ``.``;
- ``drip``: ``"greeting"`` or ``"RETR"``: that reply goes out a byte every 50 ms, for ever.

Each connection is served on its own thread; ``hung_up`` counts the connections the client
dropped while the server was still sending. Standard library only.
"""

from __future__ import annotations

import socket
from typing import Any

from tests.limits import drip
from tests.loopback import LoopbackServer

__all__ = ["HostilePOP3"]


class HostilePOP3(LoopbackServer):
    """See the module docstring. Use as a context manager; ``port`` is where it listens."""

    scheme = "pop3"

    def __init__(
        self,
        messages: list[bytes],
        *,
        list_sizes: dict[int, int] | None = None,
        no_terminator: int | None = None,
        drip: str | None = None,
    ) -> None:
        super().__init__()
        self.messages = messages
        self.list_sizes = list_sizes or {}
        self.no_terminator = no_terminator
        self.drip = drip
        self.hung_up = 0
        self.retrieved: list[int] = []

    def _session(self, conn: socket.socket, reader: Any) -> None:
        greeting = b"+OK hostile POP3 ready\r\n"
        if self.drip == "greeting":
            self._drip(conn, greeting)
            return
        conn.sendall(greeting)
        while line := reader.readline():
            words = line.strip().split()
            command = words[0].upper() if words else b""
            if command == b"QUIT":
                conn.sendall(b"+OK bye\r\n")
                return
            if not self._answer(conn, command, words[1:]):
                return

    def _answer(self, conn: socket.socket, command: bytes, args: list[bytes]) -> bool:
        if command == b"CAPA":
            conn.sendall(b"+OK\r\nUIDL\r\nUSER\r\nTOP\r\n.\r\n")
        elif command in (b"USER", b"PASS", b"RSET", b"NOOP"):
            conn.sendall(b"+OK\r\n")
        elif command == b"UIDL":
            lines = b"".join(b"%d uid-%d\r\n" % (n, n) for n in self._numbers())
            conn.sendall(b"+OK\r\n" + lines + b".\r\n")
        elif command == b"LIST":
            lines = b"".join(b"%d %d\r\n" % (n, self._size(n)) for n in self._numbers())
            conn.sendall(b"+OK\r\n" + lines + b".\r\n")
        elif command in (b"RETR", b"TOP"):
            return self._retrieve(conn, int(args[0]))
        else:
            conn.sendall(b"-ERR unknown command\r\n")
        return True

    def _numbers(self) -> range:
        return range(1, len(self.messages) + 1)

    def _size(self, number: int) -> int:
        return self.list_sizes.get(number, len(self.messages[number - 1]))

    def _retrieve(self, conn: socket.socket, number: int) -> bool:
        self.retrieved.append(number)
        if number == self.no_terminator:
            try:
                conn.sendall(b"+OK here it comes\r\n")
                while True:
                    conn.sendall(b"Subject: more and more\r\n" * 4096)
            except OSError:
                self.hung_up += 1
            return False
        raw = self.messages[number - 1]
        reply = b"+OK %d octets\r\n" % len(raw) + raw + b".\r\n"
        if self.drip == "RETR":
            self._drip(conn, reply)
            return False
        conn.sendall(reply)
        return True

    def _drip(self, conn: socket.socket, reply: bytes) -> None:
        drip(conn, reply)
        self.hung_up += 1
