"""A tiny scripted POP3 server on loopback, for what the real Dovecot cannot be made to do.

Dovecot gives every message a unique UIDL and always agrees to STLS; the faults here need a
server that does not: a maildrop whose messages share a UIDL (RFC 1939 forbids it), a server
without UIDL, a refused STLS. It speaks enough POP3 for both mailsync POP3 retrievers
(greeting, CAPA, STLS, USER/PASS, UIDL, LIST, RETR, TOP, DELE, RSET, NOOP, QUIT), applies
DELE at QUIT as RFC 1939 says, and records every command and what each QUIT removed.
Standard library only.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["Mail", "ScriptedPOP3"]

from tests.loopback import LoopbackServer


@dataclass
class Mail:
    """One message of the maildrop: its UIDL (None: UIDL lists nothing for it) and bytes."""

    uidl: str | None
    raw: bytes


class ScriptedPOP3(LoopbackServer):
    """A loopback POP3 server with a scripted maildrop.

    Args:
        maildrop: The messages, in maildrop order (message 1 first).
        capabilities: The CAPA lines (``"UIDL"``, ``"TOP"``, ``"PIPELINING"``, ``"STLS"``...).
        stls_reply: The reply to STLS (``"-ERR not now"``); STLS is offered in CAPA when set.
    """

    scheme = "pop3"

    def __init__(
        self,
        maildrop: Sequence[Mail],
        *,
        capabilities: Iterable[str] = ("UIDL", "TOP", "USER"),
        stls_reply: str | None = None,
    ) -> None:
        super().__init__()
        self.maildrop = list(maildrop)
        self.capabilities = list(capabilities) + (["STLS"] if stls_reply else [])
        self.stls_reply = stls_reply
        self.commands: list[str] = []
        self.removed: list[Mail] = []  # what QUITs removed, in order

    def _session(self, conn: socket.socket, reader: socket.SocketIO) -> None:
        with self._lock:
            snapshot = list(self.maildrop)  # a login sees a snapshot of the maildrop
        marked: set[int] = set()
        conn.sendall(b"+OK scripted POP3 ready\r\n")
        while line := reader.readline():
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            with self._lock:
                self.commands.append(text)
            verb, *args = text.split(" ")
            verb = verb.upper()
            if verb == "QUIT":
                self._quit(snapshot, marked)
                conn.sendall(b"+OK bye\r\n")
                return
            conn.sendall(self._answer(verb, args, snapshot, marked))

    def _answer(self, verb: str, args: list[str], snapshot: list[Mail], marked: set[int]) -> bytes:
        if verb == "CAPA":
            return _multi("capabilities", [c.encode() for c in self.capabilities])
        if verb == "STLS" and self.stls_reply is not None:
            return self.stls_reply.encode() + b"\r\n"
        if verb in ("USER", "PASS", "NOOP"):
            return b"+OK\r\n"
        if verb == "RSET":
            marked.clear()
            return b"+OK\r\n"
        listed = [(n, mail) for n, mail in enumerate(snapshot, 1) if n not in marked]
        if verb == "UIDL" and not args:
            if "UIDL" not in self.capabilities:
                return b"-ERR no UIDL here\r\n"
            lines = [b"%d %s" % (n, m.uidl.encode()) for n, m in listed if m.uidl is not None]
            return _multi("unique ids", lines)
        if verb == "LIST" and not args:
            return _multi("sizes", [b"%d %d" % (n, len(m.raw)) for n, m in listed])
        number = int(args[0]) if args and args[0].isdigit() else 0
        if not 0 < number <= len(snapshot) or number in marked:
            return b"-ERR no such message\r\n"
        raw = snapshot[number - 1].raw
        if verb == "RETR":
            return _multi("message follows", raw.split(b"\r\n")[:-1] if raw else [])
        if verb == "TOP":
            head = raw.split(b"\r\n\r\n", 1)[0]
            return _multi("headers follow", [*head.split(b"\r\n"), b""])
        if verb == "DELE":
            marked.add(number)
            return b"+OK marked\r\n"
        return b"-ERR unknown command\r\n"

    def _quit(self, snapshot: list[Mail], marked: set[int]) -> None:
        gone = [snapshot[n - 1] for n in sorted(marked)]
        with self._lock:
            self.removed.extend(gone)
            self.maildrop = [mail for mail in self.maildrop if all(mail is not g for g in gone)]


def _multi(status: str, lines: list[bytes]) -> bytes:
    stuffed = [b"." + line if line.startswith(b".") else line for line in lines]
    return b"+OK " + status.encode() + b"\r\n" + b"".join(x + b"\r\n" for x in stuffed) + b".\r\n"
