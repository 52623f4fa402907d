"""What observability costs: mailsync's operations with nothing listening (the default), with
the ``mailsync`` loggers at DEBUG, and instrumented with OpenTelemetry (the SDK, spans to an
in-memory exporter, metrics to an in-memory reader).

Two measurements:

- the wrapper alone: a sender whose ``send`` does nothing, called through the class (the
  shared layer's wrapper) and as the bare function, so the difference is exactly what every
  call pays when nothing listens;
- real work on a local Maildir (seeded with the stdlib ``mailbox`` module, never mailsync):
  reading every message, a full ``sync()``, and sending to a Maildir.

    python benchmarks/observe_overhead.py                 # 2,000 messages, 5 runs
    python benchmarks/observe_overhead.py --messages 500 --runs 3

Each figure is the median of the runs, in microseconds per message (per call for the
wrapper). Runs in one process, the modes in turn, each run on a fresh state store.
"""

from __future__ import annotations

import argparse
import logging
import mailbox
import statistics
import sys
import tempfile
import time
import timeit
from collections.abc import Callable, Iterable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import mailsync  # noqa: E402
from mailsync import SendResult  # noqa: E402
from mailsync._config import parse_url  # noqa: E402


def _bare_send(self: Any, message: Any, **options: Any) -> SendResult:
    return SendResult("id@example.test", ("b@example.test",))


class NullSender(mailsync.Sender):
    """Sends nothing: the cost measured is mailsync's own."""

    scheme = "null"
    send = _bare_send  # type: ignore[assignment]


def _seed(folder: Path, count: int) -> None:
    box = mailbox.Maildir(folder, create=True)
    for n in range(count):
        message = EmailMessage()
        message["From"] = "Ann <ann@example.test>"
        message["To"] = "bob@example.test"
        message["Subject"] = f"Message {n}"
        message["Date"] = "Mon, 07 Oct 2024 10:00:00 +0000"
        message["Message-ID"] = f"<bench-{n}@example.test>"
        message.set_content("Hello.\n" * 40)
        box.add(message)


class Mode:
    """One way of running: what is listening."""

    def __init__(self, name: str, enter: Callable[[], None], leave: Callable[[], None]) -> None:
        self.name, self.enter, self.leave = name, enter, leave


def _modes() -> list[Mode]:
    logger = logging.getLogger("mailsync")
    handler = logging.NullHandler()

    def debug_on() -> None:
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)

    def debug_off() -> None:
        logger.setLevel(logging.NOTSET)
        logger.removeHandler(handler)

    modes = [
        Mode("nothing listening", lambda: None, lambda: None),
        Mode("loggers at DEBUG", debug_on, debug_off),
    ]
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )

        from mailsync.integrations import otel
    except ImportError:
        print("(the OpenTelemetry SDK is not installed: its row is left out)")
        return modes

    def otel_on() -> None:
        tracing = TracerProvider()
        tracing.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
        meters = MeterProvider(metric_readers=[InMemoryMetricReader()])
        otel.instrument(tracer_provider=tracing, meter_provider=meters)

    modes.append(Mode("OpenTelemetry SDK", otel_on, otel.uninstrument))
    return modes


def _median_us(runs: Iterable[float], per: int) -> float:
    return statistics.median(runs) / per * 1e6


def _time(work: Callable[[], Any], runs: int) -> list[float]:
    found = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        found.append(time.perf_counter() - started)
    return found


def _read_all(url: str) -> Callable[[], None]:
    def work() -> None:
        with mailsync.connect(url, state=":memory:") as box:
            for _ in box.messages():
                pass

    return work


def _sync_all(url: str) -> Callable[[], None]:
    def work() -> None:
        with mailsync.connect(url, state=":memory:") as box:
            for _ in box.sync():
                pass

    return work


def _send_all(url: str, raws: list[bytes]) -> Callable[[], None]:
    def work() -> None:
        with mailsync.sender(url) as out:
            for raw in raws:
                out.send(raw)

    return work


def _wrapper(runs: int) -> tuple[float, float]:
    out = NullSender(parse_url("smtp://127.0.0.1:25"))
    message = b"Subject: x\r\n\r\nx\r\n"
    number = 200_000
    wrapped = min(timeit.repeat(lambda: out.send(message), number=number, repeat=runs))
    bare = min(timeit.repeat(lambda: _bare_send(out, message), number=number, repeat=runs))
    return wrapped / number * 1e9, bare / number * 1e9


def _rows(args: argparse.Namespace, folder: Path) -> Iterator[list[str]]:
    url = f"maildir:{folder}"
    raws = [bytes(m) for m in mailbox.Maildir(folder, create=False)][:500]
    sink = f"maildir:{folder.parent / 'sink'}?create=true"
    for mode in _modes():
        mode.enter()
        try:
            read = _median_us(_time(_read_all(url), args.runs), args.messages)
            synced = _median_us(_time(_sync_all(url), args.runs), args.messages)
            sent = _median_us(_time(_send_all(sink, raws), args.runs), len(raws))
            wrapped, bare = _wrapper(args.runs)
        finally:
            mode.leave()
        yield [
            mode.name,
            f"{read:.1f}",
            f"{synced:.1f}",
            f"{sent:.1f}",
            f"{wrapped - bare:+.0f}",
        ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp) / "box"
        _seed(folder, args.messages)
        header = [
            "listening",
            "messages() µs/msg",
            "sync() µs/msg",
            "send() µs/msg",
            "wrapper ns/call",
        ]
        rows = [header, *_rows(args, folder)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for n, row in enumerate(rows):
        print(" | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if n == 0:
            print("-|-".join("-" * width for width in widths))


if __name__ == "__main__":
    main()
