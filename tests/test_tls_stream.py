"""TLSStream, the IMAP backend's TLS reader, against an in-process TLS server that decides
exactly which ciphertext bytes go on the wire and when.

The stream asks the kernel to wake it only once much of a literal has arrived (SO_RCVLOWAT).
These tests hold it to its promise: a read never waits for bytes the server does not owe,
whatever the record sizes and wherever the network splits them; a link slower than the mark
still works; silence still times out after the timeout, not later.
"""

from __future__ import annotations

import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailsync.backends._tls import TLSStream
from tests.servers import make_certificate

_SERVER_GIVES_UP = 30.0  # the server thread's own guard, far above any test's wait


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("tls"))


class _Server:
    """The far end of a socketpair, doing TLS through memory BIOs so that a test can send any
    slice of the ciphertext: ``records(payload, size)`` encrypts ``payload`` as records of at
    most ``size`` bytes and returns the wire bytes; ``send(data)`` puts them on the socket."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext) -> None:
        self.sock = sock
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self._in, self._out, server_side=True)

    def handshake(self) -> None:
        self.sock.settimeout(_SERVER_GIVES_UP)
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                self._in.write(self.sock.recv(65536))
        self._flush()

    def records(self, payload: bytes, size: int) -> bytes:
        for start in range(0, len(payload), size):
            self.tls.write(payload[start : start + size])
        return self._out.read()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _flush(self) -> None:
        if self._out.pending:
            self.sock.sendall(self._out.read())


@pytest.fixture
def pair(
    certificate: tuple[Path, Path],
) -> Iterator[Callable[..., tuple[TLSStream, _Server]]]:
    """``pair(timeout, version="TLSv1.3")``: a connected (client stream, server) with the
    handshake done."""
    cert, key = certificate
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=str(cert))
    sockets: list[socket.socket] = []

    def make(timeout: float, version: str = "TLSv1.3") -> tuple[TLSStream, _Server]:
        server_context.maximum_version = ssl.TLSVersion[version.replace(".", "_")]
        # TCP, not a Unix socketpair: SO_RCVLOWAT is TCP's, as on a real connection.
        listener = socket.create_server(("127.0.0.1", 0))
        client_sock = socket.create_connection(listener.getsockname())
        server_sock, _ = listener.accept()
        listener.close()
        sockets.extend((client_sock, server_sock))
        server = _Server(server_sock, server_context)
        shaking = threading.Thread(target=server.handshake)
        shaking.start()
        client_sock.settimeout(timeout)
        stream = TLSStream(client_sock, client_context, "localhost")
        stream.handshake()
        shaking.join()
        return stream, server

    yield make
    for sock in sockets:
        sock.close()


def _in_background(work: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def _timed_read(stream: TLSStream, size: int) -> tuple[bytes, float]:
    started = time.monotonic()
    data = stream.read(size)
    return data, time.monotonic() - started


_PAYLOAD = bytes(range(256)) * 4096  # 1 MiB, every byte value


@pytest.mark.parametrize("version", ["TLSv1.3", "TLSv1.2"])
@pytest.mark.parametrize("record", [16384, 4000, 517])
@pytest.mark.parametrize("size", [1, 5000, 16384, 40_000, 300_000, 1_000_000])
def test_a_read_returns_when_its_bytes_are_in_though_the_server_then_waits(
    pair: Callable[..., tuple[TLSStream, _Server]], size: int, record: int, version: str
) -> None:
    # The server owes exactly `size` bytes and then says nothing (as after a literal whose
    # closing parenthesis comes later): a mark above what is owed would sit out the timeout.
    stream, server = pair(10.0, version)
    payload = _PAYLOAD[:size]
    server.send(server.records(payload, record))
    data, took = _timed_read(stream, size)
    assert stream.version() == version
    assert data == payload
    assert took < 5.0


@pytest.mark.parametrize("into_last_record", [1, 5, 6, 300, 16_000])
def test_a_record_split_by_the_network_is_not_counted_as_still_to_come(
    pair: Callable[..., tuple[TLSStream, _Server]], into_last_record: int
) -> None:
    # The first part ends inside the last record. OpenSSL takes that part in and holds it,
    # so what is still to come on the wire is less than the plaintext still owed: the mark
    # must leave room for a whole held record.
    stream, server = pair(10.0)
    payload = _PAYLOAD[: 5 * 16384]
    wire = server.records(payload, 16384)
    last_record = len(wire) - (16384 + 22)  # TLS 1.3: 5-byte header, type byte, 16-byte tag
    cut = last_record + into_last_record

    def send_in_two() -> None:
        server.send(wire[:cut])
        time.sleep(0.2)  # the network delays the rest
        server.send(wire[cut:])

    sender = _in_background(send_in_two)
    data, took = _timed_read(stream, len(payload))
    sender.join()
    assert stream.version() == "TLSv1.3"
    assert data == payload
    assert took < 5.0


def test_a_link_slower_than_the_mark_per_timeout_still_delivers(
    pair: Callable[..., tuple[TLSStream, _Server]],
) -> None:
    # 64 KiB at ~100 KB/s with a 0.25 s timeout: bytes arrive all the time, but waiting for
    # the whole mark would take longer than the timeout. That is not inactivity.
    stream, server = pair(0.25)
    payload = _PAYLOAD[: 64 * 1024]
    wire = server.records(payload, 2048)

    def trickle() -> None:
        for start in range(0, len(wire), 2048):
            server.send(wire[start : start + 2048])
            time.sleep(0.02)

    sender = _in_background(trickle)
    data, _ = _timed_read(stream, len(payload))
    sender.join()
    assert data == payload


def test_silence_times_out_after_the_timeout(
    pair: Callable[..., tuple[TLSStream, _Server]],
) -> None:
    stream, server = pair(0.3)
    server.send(server.records(b"* OK\r\n", 100))
    assert stream.readline() == b"* OK\r\n"  # TLS 1.3 session tickets are in by now, too
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        stream.read(100_000)  # owed, but the server says nothing
    assert time.monotonic() - started < 0.55  # one timeout, not a second one without the mark


@pytest.mark.skipif(sys.platform != "linux", reason="the mark is only used on Linux")
def test_the_mark_is_down_again_after_a_read(
    pair: Callable[..., tuple[TLSStream, _Server]],
) -> None:
    # IDLE waits in poll() on the socket for a short line: a mark left up would hide it.
    stream, server = pair(10.0)
    server.send(server.records(_PAYLOAD[:200_000], 16384))
    assert stream.read(200_000) == _PAYLOAD[:200_000]
    assert stream.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) == 1
    server.send(server.records(b"* 3 EXISTS\r\n", 100))
    assert stream.readline() == b"* 3 EXISTS\r\n"
