"""TLS for blocking clients over a plain socket, decrypting from memory in large chunks.

Written by hand for speed, because nothing else does it for a blocking client. CPython's
``ssl.SSLSocket`` hands back one TLS record per read. OpenSSL reads each record with two
``recv()`` system calls: its 5-byte header, then its body. Each of those calls goes through
``socket.py`` and ``ssl.py``. A 500 MB IMAP fetch from Dovecot, whose records carry about 4 KB,
therefore makes some 250,000 system calls, the same for imaplib as for any client built on
``SSLSocket``.

:class:`TLSStream` instead reads ciphertext 256 KiB at a time into an ``ssl.MemoryBIO``. It
decrypts from memory with ``ssl.SSLObject``, which the stdlib provides for exactly this. The
handshake, certificate and host name checks are the ``SSLContext``'s, as with ``wrap_socket``.

When a caller asks for more bytes than have arrived (the rest of an IMAP literal), the socket's
low-water mark (``SO_RCVLOWAT``, Linux) is raised to what is sure to come, so the thread
sleeps until a large part is in instead of waking for every record. On a 2-CPU machine the
server's TLS proxy gets the CPU time that saves (see docs/performance.md).

The stream offers what imaplib and the IMAP backend read with: ``read(n)``, ``readline(limit)``
and a non-blocking ``peek()``, plus ``sendall()`` for writing. Timeouts are the socket's own:
every blocking wait is a ``recv()`` or ``sendall()`` on it (a wait for a mark that times out
is tried once more without it, so a slow link is not taken for a dead one).

This module must not know about any mail protocol.
"""

from __future__ import annotations

import socket
import ssl
import sys

__all__ = ["TLSStream"]

#: Ciphertext read per recv(): many TLS records per system call.
CHUNK = 256 * 1024
#: Plaintext decrypted per SSLObject.read() when filling the line buffer.
_DECRYPT = 64 * 1024
#: Plaintext that may come with fewer new bytes on the wire than it has: at most one record
#: is partly received at a time, and a record carries at most 2**14 bytes of data, in TLS
#: 1.2 as in 1.3 (the rest is slack).
_HELD = 2**14 + 256 + 5
#: Below this, waiting for more data at once saves nothing worth a system call.
_MIN_LOWAT = 16 * 1024
#: SO_RCVLOWAT as poll() and recv() honour it on Linux; elsewhere not used.
_RCVLOWAT: int | None = getattr(socket, "SO_RCVLOWAT", None) if sys.platform == "linux" else None


class TLSStream:
    """A TLS connection over a connected, blocking ``sock``.

    Args:
        sock: The TCP socket (its timeout applies to every wait).
        context: The TLS settings and certificate checks.
        server_hostname: The name the certificate must carry (and SNI).
    """

    def __init__(
        self, sock: socket.socket, context: ssl.SSLContext, server_hostname: str | None
    ) -> None:
        self.sock = sock
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(
            self._incoming, self._outgoing, server_hostname=server_hostname
        )
        self._buffer = bytearray()  # decrypted, not yet taken: from _start on
        self._start = 0
        self._lowat = 1  # the socket's SO_RCVLOWAT as last set
        self._use_lowat = _RCVLOWAT is not None

    # -- set-up and writing --------------------------------------------------------------------

    def handshake(self) -> None:
        """Do the TLS handshake (raises ``ssl.SSLError`` and friends as ``wrap_socket`` would)."""
        while True:
            try:
                self._tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                if not self._refill():
                    raise ConnectionResetError(
                        "the server closed the connection in the TLS handshake"
                    ) from None
        self._flush()
        if self._tls.compression() is not None:
            # Compressed records can decrypt to more than they carry: the bound of
            # _receive() does not hold (Python's contexts turn compression off).
            self._use_lowat = False

    def version(self) -> str | None:
        """The TLS version agreed, e.g. ``"TLSv1.3"``."""
        return self._tls.version()

    def sendall(self, data: bytes) -> None:
        """Encrypt and send all of ``data``."""
        view = memoryview(data)
        while view:
            written = self._tls.write(view)
            view = view[written:]
            self._flush()

    def _flush(self) -> None:
        if self._outgoing.pending:
            self.sock.sendall(self._outgoing.read())

    # -- reading -------------------------------------------------------------------------------

    def _receive(self, expected: int = 0) -> bool:
        """Read ciphertext from the socket into the BIO; False at EOF.

        ``expected`` is how many more plaintext bytes the caller is sure to need (the rest of
        a literal). When that is much more than what has arrived, the kernel is asked not to
        wake this thread until a good part of it is there (SO_RCVLOWAT): one wake-up and one
        ``recv()`` per 256 KiB instead of one per TLS record. Every whole TLS record still to
        come carries at least as many bytes on the wire as it decrypts to, so after taking
        off what has arrived (the BIO's ciphertext and one partly received record), the data
        waited for is sure to come.
        """
        self._set_lowat(expected - self._incoming.pending - _HELD)
        try:
            data = self.sock.recv(CHUNK)
        except TimeoutError:
            data = self._after_timeout()
        if not data:
            self._incoming.write_eof()
            return False
        self._incoming.write(data)
        return True

    def _after_timeout(self) -> bytes:
        """A read timed out. With a low-water mark up, bytes may have trickled in all the same
        (a link slower than the mark per timeout): take them, and stop waiting for marks on
        this connection. The timeout keeps meaning "no byte for that long": it never fires
        early, and at worst once more after bytes that came before a silence."""
        if self._lowat <= 1:
            raise TimeoutError("the read operation timed out")
        self._use_lowat = False
        self._set_lowat(0)
        timeout = self.sock.gettimeout()
        # Not recv(MSG_DONTWAIT): on a socket with a timeout, Python polls before any recv().
        self.sock.setblocking(False)
        try:
            return self.sock.recv(CHUNK)
        except BlockingIOError:
            raise TimeoutError("the read operation timed out") from None
        finally:
            self.sock.settimeout(timeout)

    def _set_lowat(self, wanted: int) -> None:
        wanted = min(wanted, CHUNK) if self._use_lowat and wanted >= _MIN_LOWAT else 1
        if wanted == self._lowat or _RCVLOWAT is None:
            return
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, _RCVLOWAT, wanted)
        except OSError:
            self._use_lowat = False  # not this kernel's: read as everyone else does
            return
        self._lowat = wanted

    def _refill(self, expected: int = 0) -> bool:
        """After ``SSLWantReadError``: send what TLS has to say (TLS 1.3 tickets and key
        updates are handled inside ``read()``), then read more ciphertext; False at EOF."""
        self._flush()
        return self._receive(expected)

    def _decrypt(self, size: int) -> bytes:
        """Up to ``size`` decrypted bytes, reading the socket as needed; b"" at the end."""
        while True:
            try:
                return self._tls.read(size)
            except ssl.SSLWantReadError:
                if not self._refill():
                    return b""
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):  # close_notify, or a cut
                return b""

    def _decrypt_into(self, view: memoryview) -> int:
        """:meth:`_decrypt` straight into ``view``; the count, 0 at the end."""
        while True:
            try:
                return int(self._tls.read(len(view), view))
            except ssl.SSLWantReadError:
                if not self._refill(len(view)):
                    return 0
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return 0

    def _buffered(self) -> int:
        return len(self._buffer) - self._start

    def _take(self, count: int) -> bytes:
        data = bytes(self._buffer[self._start : self._start + count])
        self._start += count
        if self._start == len(self._buffer):
            self._buffer.clear()
            self._start = 0
        elif self._start > CHUNK:  # keep the front from growing without bound
            del self._buffer[: self._start]
            self._start = 0
        return data

    def read(self, size: int = -1) -> bytes:
        """``size`` bytes, fewer only at the end of the stream (the body of an IMAP literal is
        decrypted straight into the result: one copy)."""
        if size < 0:
            raise ValueError("TLSStream.read needs a size")
        have = self._buffered()
        if have >= size:
            return self._take(size)
        out = bytearray(size)
        out[:have] = self._take(have)
        view = memoryview(out)
        filled = have
        try:
            while filled < size:
                got = self._decrypt_into(view[filled:])
                if not got:
                    break
                filled += got
        finally:
            view.release()
            # Whoever waits on this socket next (poll() for IDLE, a line) must wake for a byte.
            self._set_lowat(0)
        if filled < size:
            del out[filled:]
        return bytes(out)

    def readline(self, limit: int = -1) -> bytes:
        """One line with its ``\\n``; at most ``limit`` bytes when ``limit`` is positive; what
        is left at the end of the stream."""
        searched = self._start
        while True:
            end = self._buffer.find(b"\n", searched)
            if end >= 0:
                count = end + 1 - self._start
                return self._take(count if limit < 0 else min(count, limit))
            if 0 <= limit <= self._buffered():
                return self._take(limit)
            searched = len(self._buffer)
            data = self._decrypt(_DECRYPT)
            if not data:
                return self._take(self._buffered())
            self._buffer += data

    def peek(self, size: int = 1) -> bytes:
        """What can be read now without waiting. On a non-blocking socket with nothing
        decrypted or decryptable, the socket's ``BlockingIOError`` comes through, so a caller
        can tell "nothing yet" from the end of the stream (``b""``)."""
        if not self._buffered():
            data = self._decrypt(_DECRYPT)
            if data:
                self._buffer += data
        return bytes(self._buffer[self._start : self._start + max(size, 1)])

    def close(self) -> None:
        """Forget the TLS state; the socket is its owner's to close."""
        self._buffer.clear()
        self._start = 0
