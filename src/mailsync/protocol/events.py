"""Server-sent events (the WHATWG ``text/event-stream`` format) for the HTTP backends' push:
the :class:`AwaitEvent` operation, the bounded parser the performers feed, and the plan that
authorizes the wait.

A provider's push channel (JMAP's ``eventSourceUrl``, RFC 8620 section 7.3) is one long GET
whose reply never ends: the server writes an event when something changes, and a ``ping`` now
and then so that both sides notice a dead connection. A backend waits for new mail by yielding
:class:`AwaitEvent`: the performer opens the stream, reads events as they come and returns the
first whose type was asked for, or None when ``timeout`` passed (or the stream went quiet for
``idle`` seconds, or the server ended it: reasons to look again rather than errors). A reply
that is not an event stream (204, 404, an error) comes back as a
:class:`~mailsync.protocol.http.Response` for the plan to judge. Closing the retriever ends the
wait at once in both performers.

Why the parser is written here rather than taken from a library (httpx-sse): the reply is
endless by design and a hostile or broken server could send a line that never ends; the
parser must refuse one past a bound instead of buffering it, and none of the small SSE
libraries bounds its buffers. The format itself is a dozen rules (WHATWG HTML, "Parsing an
event stream"), all in :class:`EventStreamParser`.

This module is pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mailsync._errors import ProtocolError
from mailsync._plans import Operation, Plan
from mailsync.protocol.http import APIClient, Request, Response, _authorized

__all__ = ["AwaitEvent", "EventStreamParser", "ServerEvent", "await_event"]

#: The longest line, and the most data one event may carry, before the stream is refused.
MAX_EVENT_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ServerEvent:
    """One dispatched event.

    Attributes:
        type: The ``event:`` field, ``"message"`` when the server named none.
        data: The ``data:`` lines joined with ``\\n``.
        id: The last ``id:`` the stream set (sent back as ``Last-Event-ID`` to resume).
    """

    type: str
    data: str
    id: str | None = None


@dataclass(frozen=True, slots=True)
class AwaitEvent(Operation):
    """Open the event stream ``request`` names and wait for an event of one of ``types``.

    The result is the first such :class:`ServerEvent`; None when ``timeout`` seconds passed,
    nothing at all arrived for ``idle`` seconds (not even a ping: the connection is presumed
    dead) or the server ended the stream; or the :class:`~mailsync.protocol.http.Response`
    (its body read, bounded) when the reply was not a ``200 text/event-stream``.
    """

    request: Request
    types: frozenset[str]
    timeout: float
    idle: float


class EventStreamParser:
    """Turns the bytes of an event stream into :class:`ServerEvent` values, as they arrive.

    Lines end with CRLF, LF or CR (a CR at the end of one chunk and the LF at the start of the
    next are one line end); a leading BOM is dropped; ``:`` starts a comment; ``field: value``
    loses one space after the colon; a blank line dispatches the event being built (none when
    it has no data). Fields other than ``event``, ``data`` and ``id`` are ignored.

    Args:
        max_bytes: The longest line, and the most data one event may hold.
    """

    def __init__(self, *, max_bytes: int = MAX_EVENT_BYTES) -> None:
        self._max = max_bytes
        self._pending = b""
        self._after_cr = False
        self._started = False
        self._type = ""
        self._data: list[str] = []
        self._size = 0
        self.last_id: str | None = None

    def feed(self, chunk: bytes) -> list[ServerEvent]:
        """The events ``chunk`` completes, in order.

        Raises:
            ProtocolError: A line or an event's data is longer than ``max_bytes``.
        """
        if self._after_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]  # the LF of a CRLF split between two chunks
        self._after_cr = False
        buffer = self._pending + chunk
        events: list[ServerEvent] = []
        start = 0
        while True:
            cr, lf = buffer.find(b"\r", start), buffer.find(b"\n", start)
            ends = [index for index in (cr, lf) if index >= 0]
            if not ends:
                break
            end = min(ends)
            line = buffer[start:end]
            if end == cr and end + 1 == len(buffer):
                self._after_cr = True  # maybe the first half of a CRLF
                start = end + 1
            elif end == cr and buffer[end + 1 : end + 2] == b"\n":
                start = end + 2
            else:
                start = end + 1
            event = self._line(line)
            if event is not None:
                events.append(event)
        self._pending = buffer[start:]
        if len(self._pending) > self._max:
            raise ProtocolError(f"event stream: a line longer than {self._max} bytes")
        return events

    def _line(self, raw: bytes) -> ServerEvent | None:
        if not self._started:
            self._started = True
            raw = raw.removeprefix(b"\xef\xbb\xbf")
        if len(raw) > self._max:
            raise ProtocolError(f"event stream: a line longer than {self._max} bytes")
        if not raw:
            return self._dispatch()
        if raw.startswith(b":"):
            return None
        name, colon, value = raw.partition(b":")
        if colon and value.startswith(b" "):
            value = value[1:]
        text = value.decode("utf-8", "replace")
        if name == b"event":
            self._type = text
        elif name == b"data":
            self._size += len(value) + 1
            if self._size > self._max:
                raise ProtocolError(f"event stream: an event of more than {self._max} bytes")
            self._data.append(text)
        elif name == b"id" and "\0" not in text:
            self.last_id = text
        return None

    def _dispatch(self) -> ServerEvent | None:
        kind, data = self._type or "message", self._data
        self._type, self._data, self._size = "", [], 0
        if not data:
            return None
        return ServerEvent(kind, "\n".join(data), self.last_id)


def await_event(
    client: APIClient,
    request: Request,
    types: Iterable[str],
    *,
    timeout: float,
    idle: float,
) -> Plan[ServerEvent | Response | None]:
    """Wait on an event stream with the account's authorization (see :class:`AwaitEvent`).

    A 401 asks the token provider for a new token and opens the stream once more, as
    :func:`~mailsync.protocol.http.call` does; every other reply that is not an event stream
    is returned for the caller to judge.
    """
    wanted = frozenset(types)
    refreshed = False
    while True:
        authorized = yield from _authorized(client, request, refresh=False)
        result = yield AwaitEvent(authorized, wanted, timeout, idle)
        auth = client.auth
        unauthorized = isinstance(result, Response) and result.status == 401
        if unauthorized and not refreshed and auth is not None and auth.refreshable:
            refreshed = True
            yield from auth.header(refresh=True)
            continue
        return result  # type: ignore[no-any-return]
