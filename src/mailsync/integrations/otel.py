"""OpenTelemetry for mailsync (``pip install "mailsync[otel]"``): a span for every connect,
fetch, sync, send and watch reconnect, and metrics, from every backend::

    from mailsync.integrations import otel

    otel.instrument()  # the global tracer and meter providers your SDK set up

Spans (the span is current while the backend works, so what it calls nests under it):

=============================== ==============================================================
``mailsync.connect``            connecting and logging in (IMAP, POP3; SMTP counts its
                                connections on the send span, HTTP APIs pool theirs)
``mailsync.fetch``              one ``messages()`` stream, from its first message to its end
``mailsync.get``                one ``get(id)``
``mailsync.sync``               one ``sync()`` run, from its first step to its end
``mailsync.send``               one ``send()``
``mailsync.send_many``          one ``send_many()``
``mailsync.watch.reconnect``    a watch backing off after an error, until the next attempt
=============================== ==============================================================

with the attributes ``mailsync.operation``, ``mailsync.account`` (user and host, never a
secret), ``mailsync.scheme``, ``server.address``, ``server.port``, ``mailsync.folder``,
``mailsync.messages``, ``mailsync.bytes`` and, on failure, ``error.type`` and the exception.

Metrics (attributes ``mailsync.operation``, ``mailsync.scheme``, ``server.address``; never the
account, which would make one series per mailbox):

- ``mailsync.messages.fetched``, ``mailsync.messages.sent`` (counters, ``{message}``)
- ``mailsync.bytes.fetched``, ``mailsync.bytes.sent`` (counters, ``By``)
- ``mailsync.errors`` (counter, by ``error.type``), ``mailsync.reconnects`` (counter, by
  ``error.type``), ``mailsync.connections`` (counter)
- ``mailsync.sync.lag`` (histogram, ``s``): from a message's arrival on the server (its
  internal date, else its Date header) to ``sync()`` handing it over
- ``mailsync.operation.duration`` (histogram, ``s``)

Without :func:`instrument` nothing of this module runs, and ``import mailsync`` never imports
it or OpenTelemetry: the shared layers check one global per operation
(:mod:`mailsync._observe`). Measuring the bytes of an ``EmailMessage`` sent serialises it once
more, only while instrumented.
"""

from __future__ import annotations

import contextlib
from typing import Any

try:
    from opentelemetry import metrics, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError as exc:  # say which extra brings it, not only which module is missing
    raise ImportError(
        f"mailsync.integrations.otel needs OpenTelemetry ({exc.name}): "
        'pip install "mailsync[otel]"',
        name=exc.name,
    ) from exc

from mailsync import _observe
from mailsync._message import Message

__all__ = ["instrument", "is_instrumented", "uninstrument"]

_FETCHING = frozenset({"fetch", "get", "sync"})
_SENDING = frozenset({"send", "send_many"})


class _Handle:
    __slots__ = ("metric_attributes", "span")

    def __init__(self, span: trace.Span, metric_attributes: dict[str, str]) -> None:
        self.span = span
        self.metric_attributes = metric_attributes


class _Probe:
    """The :class:`mailsync._observe.Probe` that speaks OpenTelemetry."""

    def __init__(self, tracer: trace.Tracer, meter: metrics.Meter) -> None:
        self.tracer = tracer
        self.fetched = meter.create_counter(
            "mailsync.messages.fetched", "{message}", "Messages fetched (messages, get, sync)"
        )
        self.sent = meter.create_counter(
            "mailsync.messages.sent", "{message}", "Messages sent (with a recipient accepted)"
        )
        self.bytes_fetched = meter.create_counter(
            "mailsync.bytes.fetched", "By", "Size of the messages fetched"
        )
        self.bytes_sent = meter.create_counter(
            "mailsync.bytes.sent", "By", "Size of the messages sent"
        )
        self.errors = meter.create_counter(
            "mailsync.errors", "{error}", "Operations that failed, by error.type"
        )
        self.reconnects = meter.create_counter(
            "mailsync.reconnects", "{reconnect}", "Watches backing off to reconnect"
        )
        self.connections = meter.create_counter(
            "mailsync.connections", "{connection}", "Connections opened"
        )
        self.lag = meter.create_histogram(
            "mailsync.sync.lag", "s", "From a message's arrival to sync() handing it over"
        )
        self.duration = meter.create_histogram(
            "mailsync.operation.duration", "s", "How long operations took"
        )

    def begin(self, activity: _observe.Activity) -> _Handle:
        endpoint = activity.endpoint
        operation = activity.operation
        attributes: dict[str, Any] = {
            "mailsync.operation": operation,
            "mailsync.account": endpoint.account_key,
            "mailsync.scheme": endpoint.scheme,
        }
        if endpoint.host:
            attributes["server.address"] = endpoint.host
            attributes["server.port"] = endpoint.port
        if activity.folder is not None:
            attributes["mailsync.folder"] = activity.folder
        name = "mailsync.watch.reconnect" if operation == "reconnect" else f"mailsync.{operation}"
        kind = SpanKind.CLIENT if endpoint.host and operation != "reconnect" else SpanKind.INTERNAL
        span = self.tracer.start_span(name, kind=kind, attributes=attributes)
        metric_attributes = {"mailsync.operation": operation, "mailsync.scheme": endpoint.scheme}
        if endpoint.host:
            metric_attributes["server.address"] = endpoint.host
        return _Handle(span, metric_attributes)

    def activate(self, handle: _Handle) -> contextlib.AbstractContextManager[Any]:
        return trace.use_span(
            handle.span, end_on_exit=False, record_exception=False, set_status_on_exception=False
        )

    def message(self, activity: _observe.Activity, handle: _Handle, message: Message) -> None:
        attributes = handle.metric_attributes
        self.fetched.add(1, attributes)
        self.bytes_fetched.add(message.size, attributes)
        if activity.lag:
            lag = activity.sync_lag(message)
            if lag is not None:
                self.lag.record(lag, attributes)

    def end(
        self, activity: _observe.Activity, handle: _Handle, error: BaseException | None
    ) -> None:
        span, attributes = handle.span, handle.metric_attributes
        span.set_attribute("mailsync.messages", activity.messages)
        if activity.bytes is not None:
            span.set_attribute("mailsync.bytes", activity.bytes)
        for key in ("refused", "connections_opened", "delay"):
            value = activity.extra.get(key)
            if value is not None:
                span.set_attribute(f"mailsync.{key}", value)
        self._count(activity, attributes, error)
        if error is not None:
            error_type = type(error).__name__
            span.set_attribute("error.type", error_type)
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, error_type))
            attributes = {**attributes, "error.type": error_type}
        self.duration.record(activity.duration, attributes)
        span.end()

    def _count(
        self,
        activity: _observe.Activity,
        attributes: dict[str, str],
        error: BaseException | None,
    ) -> None:
        operation = activity.operation
        if operation == "reconnect":
            assert error is not None
            self.reconnects.add(1, {**attributes, "error.type": type(error).__name__})
            return
        if error is not None:
            self.errors.add(1, {**attributes, "error.type": type(error).__name__})
        if operation == "connect" and error is None:
            self.connections.add(1, attributes)
        opened = activity.extra.get("connections_opened")
        if opened:
            self.connections.add(opened, attributes)
        if operation in _SENDING:
            self.sent.add(activity.messages, attributes)
            if activity.bytes is not None:
                self.bytes_sent.add(activity.bytes, attributes)


def instrument(
    *, tracer_provider: trace.TracerProvider | None = None, meter_provider: Any = None
) -> None:
    """Observe every mailsync operation from now on (calling it again replaces the providers).

    Args:
        tracer_provider: Where spans go; the global one (``trace.set_tracer_provider``) by
            default.
        meter_provider: Where metrics go; the global one by default.
    """
    from mailsync import __version__

    tracer = trace.get_tracer("mailsync", __version__, tracer_provider=tracer_provider)
    meter = metrics.get_meter("mailsync", __version__, meter_provider=meter_provider)
    _observe.install(_Probe(tracer, meter))


def uninstrument() -> None:
    """Stop observing (operations under way finish their spans)."""
    if isinstance(_observe.probe, _Probe):
        _observe.install(None)


def is_instrumented() -> bool:
    """Whether :func:`instrument` is in force."""
    return isinstance(_observe.probe, _Probe)
