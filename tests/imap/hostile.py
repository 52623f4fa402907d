"""A scripted hostile IMAP server on loopback, for faults the real Dovecot never shows.

It speaks just enough IMAP for both mailsync IMAP backends (greeting with capabilities,
CAPABILITY, LOGIN, AUTHENTICATE with or without SASL-IR, ENABLE, LIST, SELECT/EXAMINE of a
folder of ``messages`` messages, UID SEARCH, UID FETCH, NOOP, LOGOUT), and lets a test make
it misbehave:

- ``echo_login``: refuse every login with ``NO`` (or ``BAD``) quoting the command line it
  received, password and all, and every SASL response it was sent;
- ``echo_after_login``: accept the login, then refuse LIST quoting a text the test gives
  (the password, say);
- ``bye_after``: in a UID FETCH, send that many messages, then ``* BYE`` and hang up.

Faults of the defects work (issue 14: items 6 and the smaller ones), each a keyword option
with its own block in :meth:`HostileIMAP._defects`:

- ``refuse_starttls``: answer STARTTLS (offer it in ``capabilities``) with this status and
  text (``"NO [UNAVAILABLE] not now"``, ``"BAD no"``);
- ``omit_uids``: leave these UIDs out of every UID FETCH answer (which still ends OK) while
  SEARCH lists them; ``omit_times`` bounds how many answers leave each one out;
- ``expunged``: UIDs gone between the SEARCH before a FETCH and a re-check after it: the
  first lists them, FETCH leaves them out, a ``UID SEARCH`` of a UID set does not list them;
- ``no_uid_for``: send the FETCH response of these UIDs without its UID item;
- ``sizes``: UID -> the RFC822.SIZE to announce (a negative one, say).

Limits (issue 14.3, 14.4, 14.10), each a separate keyword naming where it strikes:

- ``drip``: ``"greeting"`` or ``"fetch"``: that reply goes out a byte at a time, a byte every
  50 ms, for ever (never silent long enough for a read timeout);
- ``flood``: ``"SELECT"`` or ``"UID FETCH"``: in answer to that command, untagged responses
  (``* 1 RECENT``) without end;
- ``long_line``: ``"greeting"`` or ``"SELECT"``: a 2 MB line there (then the rest as usual);
- ``endless_literal``: UID FETCH announces a ``{99999999999}`` literal and streams bytes into it
  until the client hangs up;
- ``mute``: a command (``"LOGOUT"``) the server never answers: it waits for the client to hang
  up.

Each connection is served on its own thread; every line received is recorded. Standard
library only.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from tests.limits import drip
from tests.loopback import LoopbackServer

__all__ = ["HostileIMAP"]


class HostileIMAP(LoopbackServer):
    """See the module docstring. Use as a context manager; ``port`` is where it listens."""

    scheme = "imap"

    def __init__(
        self,
        capabilities: str = "IMAP4rev1",
        *,
        echo_login: str | None = None,
        echo_after_login: str | None = None,
        bye_after: int | None = None,
        messages: int = 0,
        make_raw: Callable[[int], bytes] | None = None,
        refuse_starttls: str | None = None,
        omit_uids: frozenset[int] = frozenset(),
        omit_times: int | None = None,
        expunged: frozenset[int] = frozenset(),
        no_uid_for: frozenset[int] = frozenset(),
        sizes: dict[int, int] | None = None,
        # -- limits ------------------------------------------------------------------------
        drip: str | None = None,
        flood: str | None = None,
        long_line: str | None = None,
        endless_literal: bool = False,
        mute: str | None = None,
    ) -> None:
        super().__init__()
        self.capabilities = capabilities
        self.echo_login = echo_login  # "NO" or "BAD"
        self.echo_after_login = echo_after_login
        self.bye_after = bye_after
        self.messages = messages
        self.make_raw = make_raw or (lambda uid: b"Subject: %d\r\n\r\nbody %d\r\n" % (uid, uid))
        # -- defects options (see the module docstring) --
        self.refuse_starttls = refuse_starttls
        self.omit_uids = set(omit_uids)
        self.omit_times = omit_times
        self.omitted: dict[int, int] = {}  # UID -> how many FETCH answers left it out
        self.expunged = set(expunged)
        self.no_uid_for = set(no_uid_for)
        self.sizes = dict(sizes or {})
        # -- limits ------------------------------------------------------------------------
        self.drip = drip
        self.flood = flood
        self.long_line = long_line
        self.endless_literal = endless_literal
        self.mute = mute
        #: How many connections the client dropped while a limit behaviour was sending.
        self.hung_up = 0
        # ------------------------------------------------------------------------------------
        self.received: list[bytes] = []

    def _line(self, reader: Any) -> bytes:
        line: bytes = reader.readline()
        self.received.append(line)
        return line

    def _session(self, conn: socket.socket, reader: Any) -> None:
        greeting = b"* OK [CAPABILITY " + self.capabilities.encode() + b"] hostile\r\n"
        if self._misbehave(conn, "greeting", greeting):
            return
        conn.sendall(greeting)
        while line := self._line(reader):
            tag, _, rest = line.rstrip(b"\r\n").partition(b" ")
            words = rest.split(b" ")
            command = words[0].upper()
            if command == b"UID" and len(words) > 1:
                command = b"UID " + words[1].upper()
            if self.mute is not None and command == self.mute.encode():
                while self._line(reader):  # silent until the client hangs up
                    pass
                return
            reply = self._answer(conn, reader, tag, command, words, line)
            if reply is None:
                return
            conn.sendall(reply)
            if command == b"LOGOUT":
                return

    def _answer(
        self,
        conn: socket.socket,
        reader: Any,
        tag: bytes,
        command: bytes,
        words: list[bytes],
        line: bytes,
    ) -> bytes | None:
        ok = tag + b" OK done\r\n"
        defects = self._defects(tag, command, words)
        if defects is not None:
            return defects
        if command == b"CAPABILITY":
            return b"* CAPABILITY " + self.capabilities.encode() + b"\r\n" + ok
        if command == b"LOGIN":
            return self._refuse(tag, line.rstrip(b"\r\n")) if self.echo_login else ok
        if command == b"AUTHENTICATE":
            if len(words) < 3:  # no SASL-IR: the response comes when asked for
                conn.sendall(b"+ \r\n")
                words.append(self._line(reader).strip())
            if self.echo_login:
                return self._refuse(tag, b"AUTHENTICATE " + b" ".join(words[1:3]))
            return ok
        if command == b"LIST":
            if self.echo_after_login is not None:
                echoed = self.echo_after_login.encode()
                return tag + b" NO [SERVERBUG] you logged in with " + echoed + b"\r\n"
            return b'* LIST (\\HasNoChildren) "/" INBOX\r\n' + ok
        if command in (b"SELECT", b"EXAMINE"):
            count = self.messages
            if self._misbehave(conn, "SELECT", b""):
                return None
            return (
                b"* %d EXISTS\r\n* OK [UIDVALIDITY 7] v\r\n* OK [UIDNEXT %d] n\r\n"
                % (count, count + 1)
                + tag
                + b" OK [READ-WRITE] done\r\n"
            )
        if command == b"UID SEARCH":
            found = b" ".join(b"%d" % uid for uid in self._search(words))
            return b"* SEARCH " + found + b"\r\n" + ok
        if command == b"UID FETCH":
            return self._fetch(conn, tag, words)
        if command == b"LOGOUT":
            return b"* BYE bye\r\n" + ok
        if command in (b"NOOP", b"ENABLE", b"CHECK", b"CLOSE", b"UNSELECT"):
            return ok
        return tag + b" BAD unknown\r\n"

    def _refuse(self, tag: bytes, echoed: bytes) -> bytes:
        status = (self.echo_login or "NO").encode()
        return tag + b" " + status + b" [AUTHENTICATIONFAILED] you sent: " + echoed + b"\r\n"

    def _fetch(self, conn: socket.socket, tag: bytes, words: list[bytes]) -> bytes | None:
        uids = _uids(words[2] if len(words) > 2 else b"", self.messages)
        first = uids[0] if uids else 1
        head = b"* %d FETCH (UID %d FLAGS () BODY[] {99999999999}\r\n" % (first, first)
        if self.endless_literal and self._endless(conn, head, b"x" * 65536):
            return None
        raw = self.make_raw(first)
        reply = b"* %d FETCH (UID %d BODY[] {%d}\r\n%s)\r\n" % (first, first, len(raw), raw)
        if self._misbehave(conn, "fetch", reply) or self._misbehave(conn, "UID FETCH", b""):
            return None
        for count, uid in enumerate(uids):
            if self.bye_after is not None and count >= self.bye_after:
                conn.sendall(b"* BYE the server is going away\r\n")
                return None  # and the connection closes
            if self._omitted(uid):
                continue
            raw = self.make_raw(uid)
            uid_item = b"" if uid in self.no_uid_for else b"UID %d " % uid
            size = self.sizes.get(uid, len(raw))
            conn.sendall(
                b"* %d FETCH (%sFLAGS () RFC822.SIZE %d BODY[] {%d}\r\n"
                % (uid, uid_item, size, len(raw))
                + raw
                + b")\r\n"
            )
        return tag + b" OK done\r\n"

    # -- defects options (issue 14: items 6 and the smaller ones) -----------------------------

    def _defects(self, tag: bytes, command: bytes, words: list[bytes]) -> bytes | None:
        """The answer the defects options give instead of the usual one, or None."""
        if command == b"STARTTLS" and self.refuse_starttls is not None:
            return tag + b" " + self.refuse_starttls.encode() + b"\r\n"
        return None

    def _search(self, words: list[bytes]) -> list[int]:
        """UID SEARCH ALL, ``UID n:*`` or ``UID <set>``; the expunged UIDs are listed by the
        first two (the SEARCH before the FETCH) and not by a set without ``*`` (a re-check
        after it): gone in between."""
        present = list(range(1, self.messages + 1))
        if len(words) >= 4 and words[2].upper() == b"UID":
            asked = set(_uids(words[3], self.messages))
            present = [uid for uid in present if uid in asked]
            if b"*" not in words[3]:
                present = [uid for uid in present if uid not in self.expunged]
        return present

    def _omitted(self, uid: int) -> bool:
        """Whether this FETCH answer leaves ``uid`` out (counting the times it did)."""
        if uid in self.expunged:
            return True
        if uid not in self.omit_uids:
            return False
        times = self.omitted.get(uid, 0)
        if self.omit_times is not None and times >= self.omit_times:
            return False
        self.omitted[uid] = times + 1
        return True

    # -- limits ------------------------------------------------------------------------------

    def _misbehave(self, conn: socket.socket, where: str, reply: bytes) -> bool:
        """Send what the limit options say for ``where`` (True: the session is over)."""
        if self.drip == where:
            self._drip(conn, reply)
            return True
        if self.flood == where:
            self._endless(conn, b"", b"* 1 RECENT\r\n" * 4096)
            return True
        if self.long_line == where:
            conn.sendall(b"* OK " + b"A" * 2_000_000 + b"\r\n")
        return False

    def _drip(self, conn: socket.socket, reply: bytes) -> None:
        drip(conn, reply)
        self.hung_up += 1

    def _endless(self, conn: socket.socket, head: bytes, block: bytes) -> bool:
        """``head``, then ``block`` over and over until the client hangs up."""
        try:
            conn.sendall(head)
            while True:
                conn.sendall(block)
        except OSError:
            self.hung_up += 1
        return True


def _uids(uid_set: bytes, last: int) -> list[int]:
    uids: list[int] = []
    for part in uid_set.decode("ascii", "replace").split(","):
        first, _, end = part.partition(":")
        if not first.isdigit():
            continue
        stop = last if end == "*" else int(end or first)
        uids.extend(range(int(first), min(stop, last) + 1))
    return uids
