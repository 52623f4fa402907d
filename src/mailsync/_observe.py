"""What mailsync tells about its own work: structured log records on the ``mailsync`` logger
hierarchy, and the hook an instrumentation (OpenTelemetry, :mod:`mailsync.integrations.otel`)
plugs into.

The shared layers call this module, never a backend: :mod:`mailsync._stream`'s wrappers
(``messages``, ``get``, ``sync`` steps, ``send``, ``send_many`` and the connect methods of every
backend class) and the watch loops (reconnects). Each operation is an :class:`Activity` that
counts messages and bytes and ends with a log record whose ``extra`` fields are

=============== =============================================================================
``account``     the account's key in the state store (``imap://alice@mail.example.com``)
``host``        the server host (empty for local mailboxes)
``scheme``      ``imap``, ``smtp``, ``maildir``...
``operation``   ``connect``, ``fetch``, ``get``, ``sync``, ``send``, ``send_many``, ``reconnect``
``folder``      the folder, where there is one
``messages``    messages fetched, synced or sent
``bytes``       their size, where known
``duration``    seconds the operation took
``error_type``  the error's class name, when it failed
=============== =============================================================================

and never a secret: the account key holds the user and host only, and error texts are
scrubbed at the backend boundary before they get here. Loggers: ``mailsync.connect``,
``mailsync.fetch``, ``mailsync.sync``, ``mailsync.send``, ``mailsync.watch``. Sends and syncs
that delivered mail are logged at INFO, the rest at DEBUG; reconnects at WARNING.

Cost: nothing is measured unless a probe is installed or the operation's logger is enabled
for its level, checked once per operation (a global and the logger's cached level), never per
message; then the backend's iterator is handed back untouched. This module imports only the
standard library and must not import an instrumentation library: that is the probe's module,
imported only by whoever installs it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from mailsync._config import Endpoint
    from mailsync._message import Message

__all__ = [
    "Activity",
    "Probe",
    "aiterate",
    "enabled",
    "install",
    "iterate",
    "outgoing_size",
    "probe",
    "reconnect",
    "running",
    "sending",
]

CONNECT = logging.getLogger("mailsync.connect")
FETCH = logging.getLogger("mailsync.fetch")
SYNC = logging.getLogger("mailsync.sync")
SEND = logging.getLogger("mailsync.send")
WATCH = logging.getLogger("mailsync.watch")


class Probe(Protocol):
    """What an instrumentation implements (see :mod:`mailsync.integrations.otel`)."""

    def begin(self, activity: Activity) -> Any:
        """An operation starts: return a handle (a span) for the calls below."""

    def activate(self, handle: Any) -> contextlib.AbstractContextManager[Any]:
        """Make the operation current while the backend works (child spans nest under it)."""

    def message(self, activity: Activity, handle: Any, message: Message) -> None:
        """The operation fetched, synced or sent ``message``."""

    def end(self, activity: Activity, handle: Any, error: BaseException | None) -> None:
        """The operation ended (``error``: why it failed)."""


#: The installed probe, or None (the default: nothing is measured for it).
probe: Probe | None = None

#: Set while an observed send is under way, so a sender that delegates (``send_many`` calling
#: ``send``, ``send`` calling ``send_many``) is not counted twice.
sending: ContextVar[bool] = ContextVar("mailsync_sending", default=False)


def install(new: Probe | None) -> Probe | None:
    """Install ``new`` (None: none) and return the probe it replaces."""
    global probe
    previous, probe = probe, new
    return previous


def enabled(logger: logging.Logger, level: int = logging.DEBUG) -> bool:
    """Whether an operation logged on ``logger`` at ``level`` is worth measuring at all."""
    return probe is not None or logger.isEnabledFor(level)


def fields(endpoint: Endpoint, operation: str, **more: Any) -> dict[str, Any]:
    """The ``extra`` fields of a log record about ``endpoint``."""
    found = {
        "account": endpoint.account_key,
        "host": endpoint.host,
        "scheme": endpoint.scheme,
        "operation": operation,
    }
    found.update(more)
    return found


def outgoing_size(message: object) -> int | None:
    """The size of a message about to be sent, where it costs nothing to know (and, with a
    probe installed, by serialising an ``EmailMessage`` once more)."""
    if isinstance(message, bytes | bytearray):
        return len(message)
    size = getattr(message, "size", None)
    if isinstance(size, int):
        return size
    if probe is None:
        return None
    from mailsync._message import as_bytes

    try:
        return len(as_bytes(message))  # type: ignore[arg-type]
    except Exception:  # the send itself will say what is wrong with it
        return None


class Activity:
    """One observed operation: its fields, counts and the probe's handle.

    Args:
        logger: Where its record goes.
        operation: ``connect``, ``fetch``, ``get``, ``sync``, ``send``...
        endpoint: The account it works on.
        folder: The folder, if any.
        lag: Record each message's sync lag (now minus its arrival).
    """

    __slots__ = (
        "_ended",
        "_handle",
        "_probe",
        "bytes",
        "endpoint",
        "extra",
        "folder",
        "lag",
        "logger",
        "messages",
        "operation",
        "started",
    )

    def __init__(
        self,
        logger: logging.Logger,
        operation: str,
        endpoint: Endpoint,
        *,
        folder: str | None = None,
        lag: bool = False,
    ) -> None:
        self.logger = logger
        self.operation = operation
        self.endpoint = endpoint
        self.folder = folder
        self.lag = lag
        self.messages = 0
        self.bytes: int | None = None
        self.extra: dict[str, Any] = {}
        self.started = time.monotonic()
        self._ended = False
        self._probe = probe
        self._handle = None if self._probe is None else self._probe.begin(self)

    def current(self) -> contextlib.AbstractContextManager[Any]:
        """While the backend works: the probe's span is the current one."""
        if self._probe is None:
            return contextlib.nullcontext()
        return self._probe.activate(self._handle)

    def add(self, message: Message) -> None:
        """Count one message fetched or synced."""
        self.messages += 1
        self.add_bytes(message.size)
        if self._probe is not None:
            self._probe.message(self, self._handle, message)

    def add_bytes(self, size: int | None) -> None:
        """Count ``size`` bytes (None: unknown)."""
        if size is not None:
            self.bytes = (self.bytes or 0) + size

    def sync_lag(self, message: Message) -> float | None:
        """Seconds between the message's arrival and now, when the message says when."""
        try:
            arrived = message.internal_date or message.date
        except Exception:  # a Date header that cannot be read says nothing about lag
            return None
        if arrived is None:
            return None
        return max(0.0, time.time() - arrived.timestamp())

    @property
    def duration(self) -> float:
        """Seconds since the operation started."""
        return time.monotonic() - self.started

    def fields(self) -> dict[str, Any]:
        """The ``extra`` fields of its log record."""
        found = fields(self.endpoint, self.operation, duration=round(self.duration, 6))
        if self.folder is not None:
            found["folder"] = self.folder
        if self.messages or self.operation not in ("connect", "reconnect"):
            found["messages"] = self.messages
        if self.bytes is not None:
            found["bytes"] = self.bytes
        found.update(self.extra)
        return found

    def finish(self, error: BaseException | None = None) -> None:
        """End it: the probe hears of it, and its record is logged (once)."""
        if self._ended:
            return
        self._ended = True
        if self._probe is not None:
            self._probe.end(self, self._handle, error)
        self._log(error)

    def _log(self, error: BaseException | None) -> None:
        extra = self.fields()
        where = self.endpoint.display + (f" {self.folder}" if self.folder is not None else "")
        if error is not None:
            extra["error_type"] = type(error).__name__
            if self.logger.isEnabledFor(logging.DEBUG):
                self.logger.debug(
                    "%s: %s failed: %s", where, self.operation, _reason(error), extra=extra
                )
            return
        level = logging.DEBUG
        if self.messages and self.operation in ("sync", "send", "send_many"):
            level = logging.INFO
        if self.logger.isEnabledFor(level):
            self.logger.log(level, "%s: %s", where, self._summary(), extra=extra)

    def _summary(self) -> str:
        size = f" ({self.bytes} bytes)" if self.bytes is not None else ""
        took = f" in {self.duration:.3f}s"
        if self.operation == "connect":
            return f"connected{took}"
        if self.operation in ("send", "send_many"):
            refused = self.extra.get("refused", 0)
            tail = f", {refused} recipient(s) refused" if refused else ""
            return f"sent {self.messages} message(s){size}{took}{tail}"
        verb = "synced" if self.operation == "sync" else "fetched"
        return f"{verb} {self.messages} message(s){size}{took}"


@contextlib.contextmanager
def running(activity: Activity) -> Iterator[Activity]:
    """The block is ``activity``'s work: it finishes when the block ends, with the error that
    ended it (a generator closed before its end is no error)."""
    try:
        yield activity
    except GeneratorExit:
        activity.finish()
        raise
    except BaseException as exc:
        activity.finish(exc)
        raise
    activity.finish()


def _reason(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


@contextlib.contextmanager
def reconnect(
    endpoint: Endpoint, error: BaseException, delay: float, *, state: str | None = None
) -> Iterator[None]:
    """A watch loop rides out ``error``: logged at WARNING now, observed until the block (the
    backoff before the next attempt) ends."""
    extra = fields(endpoint, "reconnect", error_type=type(error).__name__, delay=round(delay, 3))
    if state is None:
        WATCH.warning("%s: %s; reconnecting in %.1fs", endpoint.display, error, delay, extra=extra)
    else:
        extra["state"] = state
        WATCH.warning(
            "%s: %s; %s, retrying in %.1fs",
            endpoint.display,
            _reason(error),
            state,
            delay,
            extra=extra,
        )
    if probe is None:
        yield
        return
    activity = Activity(WATCH, "reconnect", endpoint)
    activity.extra.update(error_type=type(error).__name__, delay=round(delay, 3))
    try:
        yield
    finally:
        # The probe ends it without a record of its own: the warning above said it all.
        activity._ended = True
        if activity._probe is not None:
            activity._probe.end(activity, activity._handle, error)


class _Observed:
    """What :func:`iterate` and :func:`aiterate` return: ``source``'s items, observed as one
    activity from the first item asked for until the source ends or is closed (a stream
    never started is no operation, but closing it still closes ``source``)."""

    __slots__ = ("_activity", "_done", "_make", "_source", "_steps")

    def __init__(self, make: Callable[[], Activity], source: Any, steps: bool) -> None:
        self._make = make
        self._source = source
        self._steps = steps
        self._activity: Activity | None = None
        self._done = False

    def _started(self) -> Activity:
        if self._activity is None:
            self._activity = self._make()
        return self._activity

    def _took(self, item: Any) -> Any:
        message = item.message if self._steps else item
        if message is not None:
            self._started().add(message)
        return item

    def _end(self, error: BaseException | None) -> None:
        self._done = True
        if self._activity is not None:
            self._activity.finish(error)

    def __del__(self) -> None:
        # A stream dropped mid-way still ends its span (and logs) when it is collected.
        if not self._done and self._activity is not None:
            with contextlib.suppress(Exception):
                self._end(None)


class _ObservedIterator(_Observed, Iterator[Any]):
    def __iter__(self) -> _ObservedIterator:
        return self

    def __next__(self) -> Any:
        if self._done:
            raise StopIteration
        activity = self._started()
        try:
            with activity.current():
                item = next(self._source)
        except StopIteration:
            self.close()
            raise
        except BaseException as exc:
            self._close_source()
            self._end(exc)
            raise
        return self._took(item)

    def _close_source(self) -> None:
        close = getattr(self._source, "close", None)
        if close is not None:
            close()

    def close(self) -> None:
        try:
            self._close_source()
        finally:
            if not self._done:
                self._end(None)


class _ObservedAsyncIterator(_Observed, AsyncIterator[Any]):
    def __aiter__(self) -> _ObservedAsyncIterator:
        return self

    async def __anext__(self) -> Any:
        if self._done:
            raise StopAsyncIteration
        activity = self._started()
        try:
            with activity.current():
                item = await anext(self._source)
        except StopAsyncIteration:
            await self.aclose()
            raise
        except BaseException as exc:
            await self._close_source()
            self._end(exc)
            raise
        return self._took(item)

    async def _close_source(self) -> None:
        aclose = getattr(self._source, "aclose", None)
        if aclose is not None:
            await aclose()

    async def aclose(self) -> None:
        try:
            await self._close_source()
        finally:
            if not self._done:
                self._end(None)


def iterate(
    make: Callable[[], Activity], source: Iterator[Any], *, steps: bool = False
) -> Iterator[Any]:
    """``source``'s items observed as one activity made by ``make`` at the first item asked
    for (``steps``: sync steps, whose message may be None). Closing it closes ``source``."""
    return _ObservedIterator(make, source, steps)


def aiterate(
    make: Callable[[], Activity], source: AsyncIterator[Any], *, steps: bool = False
) -> AsyncIterator[Any]:
    """The async twin of :func:`iterate`."""
    return _ObservedAsyncIterator(make, source, steps)
