"""Observability: structured log records from every backend, OpenTelemetry spans and metrics
(read back with the SDK's in-memory exporters) against the real servers, and nothing of
OpenTelemetry imported or run unless instrumented."""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import mailsync
from mailsync import _observe
from tests.contract import make_raw
from tests.extras import require
from tests.servers import Account, MailServers

ROOT = Path(__file__).resolve().parents[1]


def _compose(to: str, subject: str = "observed", sender: str = "ann@example.test") -> Any:
    return mailsync.compose(from_=sender, to=to, subject=subject, text="Hello.\n")


def _records(caplog: pytest.LogCaptureFixture, operation: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.__dict__.get("operation") == operation]


# -- structured logging ----------------------------------------------------------------------


def test_every_operation_logs_its_account_operation_and_counts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="mailsync")
    url = f"maildir:{tmp_path / 'box'}?create=true"
    with mailsync.sender(url) as out:
        out.send(_compose("bob@example.test"))
        out.send_many([make_raw(1), make_raw(2)])
    with mailsync.connect(url, state=":memory:") as box:
        ids = [m.id for m in box.messages()]
        box.get(ids[0])
        assert len(box.sync().collect()) == 3
        assert box.sync().collect() == []

    send, many = _records(caplog, "send"), _records(caplog, "send_many")
    assert [(r.levelname, r.messages) for r in send + many] == [("INFO", 1), ("INFO", 2)]
    assert many[0].bytes == len(make_raw(1)) + len(make_raw(2))
    assert many[0].name == "mailsync.send"
    fetch = _records(caplog, "fetch")[0]
    assert (fetch.name, fetch.folder, fetch.messages, fetch.levelname) == (
        "mailsync.fetch",
        "INBOX",
        3,
        "DEBUG",
    )
    assert fetch.account == f"maildir:{(tmp_path / 'box').resolve()}"
    assert fetch.scheme == "maildir"
    assert fetch.duration >= 0
    syncs = _records(caplog, "sync")
    # A run that delivered mail is news (INFO); one that found nothing is not.
    assert [(r.levelname, r.messages) for r in syncs] == [("INFO", 3), ("DEBUG", 0)]
    assert _records(caplog, "get")[0].messages == 1


def test_nothing_is_measured_when_nothing_listens(tmp_path: Path) -> None:
    """With no probe and the loggers quiet, the backend's own iterator is handed back."""
    assert _observe.probe is None
    quiet = logging.getLogger("mailsync")
    previous = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        url = f"maildir:{tmp_path / 'box'}?create=true"
        with mailsync.connect(url, state=":memory:") as box:
            stream = box.messages()
            assert type(stream._iterator).__name__ == "generator"
            quiet.setLevel(logging.DEBUG)
            observed = box.messages()
            assert type(observed._iterator).__name__ == "_ObservedIterator"
            stream.close()
            observed.close()
    finally:
        quiet.setLevel(previous)


def test_a_failed_operation_is_logged_with_its_error_type(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="mailsync")
    with mailsync.connect(f"maildir:{tmp_path}/box?create=true", state=":memory:") as box:
        with pytest.raises(mailsync.MessageNotFound):
            box.get("no-such-id")
    (record,) = _records(caplog, "get")
    assert record.error_type == "MessageNotFound"
    assert "get failed" in record.getMessage()


@pytest.mark.servers
@pytest.mark.parametrize(
    ("scheme", "asynchronous"),
    [("imaps", False), ("imaps", True), ("pop3s", False), ("pop3s", True)],
)
def test_every_protocol_backend_logs_its_connects(
    mail_servers: MailServers,
    account: Account,
    caplog: pytest.LogCaptureFixture,
    scheme: str,
    asynchronous: bool,
) -> None:
    """The shared layer finds each backend's connect method, however the backend is built
    (a plain method, a coroutine, a plan): a backend that renames it loses its connect
    records, and this fails."""
    caplog.set_level(logging.DEBUG, logger="mailsync.connect")
    mail_servers.append(account, make_raw(1))
    port = mail_servers.imaps_port if scheme == "imaps" else mail_servers.pop3s_port
    url = f"{scheme}://{account.user}@{mail_servers.host}:{port}"
    options = {"password": account.password, "verify": mail_servers.ssl_context()}

    async def read_async() -> None:
        async with mailsync.connect_async(url, state=":memory:", **options) as box:
            assert len(await box.messages().collect()) == 1

    if asynchronous:
        asyncio.run(read_async())
    else:
        with mailsync.connect(url, state=":memory:", **options) as box:
            assert len(box.messages().collect()) == 1
    (record,) = _records(caplog, "connect")
    plain = scheme.removesuffix("s")  # the account is the same over TLS or not
    assert (record.scheme, record.host) == (plain, mail_servers.host)
    assert record.account == f"{plain}://{account.user}@{mail_servers.host}"
    assert "error_type" not in record.__dict__
    assert account.password not in record.getMessage()


# -- OpenTelemetry ---------------------------------------------------------------------------


class Telemetry:
    """The SDK's in-memory exporters behind ``instrument()``."""

    def __init__(self) -> None:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )

        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def spans(self, name: str | None = None) -> list[Any]:
        found = list(self.exporter.get_finished_spans())
        return [s for s in found if name is None or s.name == name]

    def points(self, name: str) -> list[tuple[dict[str, Any], Any]]:
        """``(attributes, value)`` of each data point of metric ``name`` (a histogram's value
        is its data point)."""
        data = self.reader.get_metrics_data()
        found: list[tuple[dict[str, Any], Any]] = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name != name:
                        continue
                    for point in metric.data.data_points:
                        value = getattr(point, "value", point)
                        found.append((dict(point.attributes), value))
        return found

    def total(self, name: str, **attributes: Any) -> Any:
        return sum(
            value
            for found, value in self.points(name)
            if all(found.get(k.replace("_", ".")) == v for k, v in attributes.items())
        )


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    require("opentelemetry.sdk", "otel")  # the SDK's in-memory exporters read spans back
    from mailsync.integrations import otel

    world = Telemetry()
    otel.instrument(tracer_provider=world.tracer_provider, meter_provider=world.meter_provider)
    assert otel.is_instrumented()
    try:
        yield world
    finally:
        otel.uninstrument()
        world.meter_provider.shutdown()
    assert _observe.probe is None


def _imap(servers: MailServers, account: Account, **options: Any) -> tuple[str, dict[str, Any]]:
    url = f"imaps://{account.user}@{servers.host}:{servers.imaps_port}"
    options = {"password": account.password, "verify": servers.ssl_context(), **options}
    return url, options


def _no_secret_in(spans: list[Any], secret: str) -> None:
    for span in spans:
        assert secret not in repr(dict(span.attributes or {}))
        for event in span.events:
            assert secret not in repr(dict(event.attributes or {}))


@pytest.mark.servers
def test_spans_and_metrics_of_reading_over_imap(
    mail_servers: MailServers, account: Account, telemetry: Telemetry
) -> None:
    mail_servers.append_many(account, [make_raw(1), make_raw(2, extra=2000)])
    url, options = _imap(mail_servers, account)
    with mailsync.connect(url, state=":memory:", **options) as box:
        messages = box.messages().collect()
        box.get(messages[0].id)
        assert len(box.sync().collect()) == 2

    (fetch,) = telemetry.spans("mailsync.fetch")
    (connect,) = telemetry.spans("mailsync.connect")
    (sync,) = telemetry.spans("mailsync.sync")
    (get,) = telemetry.spans("mailsync.get")
    # The connection is opened while the fetch runs: its span nests under the fetch's.
    assert connect.parent is not None
    assert connect.parent.span_id == fetch.context.span_id
    assert fetch.attributes["mailsync.messages"] == 2
    assert fetch.attributes["mailsync.bytes"] == sum(m.size for m in messages)
    assert fetch.attributes["mailsync.folder"] == "INBOX"
    assert fetch.attributes["server.address"] == mail_servers.host
    assert fetch.attributes["mailsync.account"] == f"imap://{account.user}@{mail_servers.host}"
    assert sync.attributes["mailsync.messages"] == 2
    assert get.attributes["mailsync.messages"] == 1
    _no_secret_in(telemetry.spans(), account.password)

    assert telemetry.total("mailsync.messages.fetched", mailsync_operation="fetch") == 2
    assert telemetry.total("mailsync.messages.fetched", mailsync_operation="sync") == 2
    assert telemetry.total("mailsync.messages.fetched", mailsync_operation="get") == 1
    assert telemetry.total("mailsync.bytes.fetched", mailsync_operation="fetch") == sum(
        m.size for m in messages
    )
    assert telemetry.total("mailsync.connections") == 1
    (lag,) = telemetry.points("mailsync.sync.lag")
    assert lag[1].count == 2
    assert 0 <= lag[1].min <= lag[1].max < 3600  # appended moments ago
    for attributes, _ in telemetry.points("mailsync.messages.fetched"):
        assert "mailsync.account" not in attributes  # one series per host, not per mailbox


@pytest.mark.servers
def test_async_spans_nest_under_the_callers_span(
    mail_servers: MailServers, account: Account, telemetry: Telemetry
) -> None:
    mail_servers.append(account, make_raw(1))
    url, options = _imap(mail_servers, account)
    tracer = telemetry.tracer_provider.get_tracer("the app")

    async def main() -> None:
        with tracer.start_as_current_span("request"):
            async with mailsync.connect_async(url, state=":memory:", **options) as box:
                assert len(await box.messages().collect()) == 1
            # Maildir's async twin runs the sync backend on a worker thread: still nested.
            out = mailsync.sender_async(f"maildir:{mail_servers.root}/dev-box?create=true")
            async with out:
                await out.send(_compose(account.email))

    asyncio.run(main())
    (request,) = telemetry.spans("request")
    (fetch,) = telemetry.spans("mailsync.fetch")
    (send,) = telemetry.spans("mailsync.send")
    (connect,) = telemetry.spans("mailsync.connect")
    assert fetch.parent.span_id == request.context.span_id
    assert send.parent.span_id == request.context.span_id
    assert connect.parent.span_id == fetch.context.span_id
    assert telemetry.total("mailsync.messages.sent") == 1  # the thread adapter is not counted


@pytest.mark.servers
def test_sending_spans_count_messages_refusals_and_connections(
    mail_servers: MailServers, account: Account, telemetry: Telemetry
) -> None:
    url = f"smtp://{account.user}@{mail_servers.host}:{mail_servers.submission_port}"
    with mailsync.sender(url, password=account.password, verify=mail_servers.ssl_context()) as out:
        out.send(_compose(account.email, sender=account.email))
        out.send_many(
            [_compose(account.email, "one", account.email), _compose(account.email, "two")]
        )
    (send,) = telemetry.spans("mailsync.send")
    (many,) = telemetry.spans("mailsync.send_many")
    assert send.attributes["mailsync.messages"] == 1
    assert send.attributes["mailsync.connections_opened"] == 1
    assert many.attributes["mailsync.messages"] == 2
    assert many.attributes["mailsync.connections_opened"] == 0  # the connection was reused
    assert telemetry.total("mailsync.messages.sent") == 3
    assert telemetry.total("mailsync.bytes.sent") > 0
    assert telemetry.total("mailsync.connections") == 1
    _no_secret_in(telemetry.spans(), account.password)


@pytest.mark.servers
def test_a_failed_login_leaks_no_secret_to_records_or_spans(
    mail_servers: MailServers,
    account: Account,
    telemetry: Telemetry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Wrong passwords (in the URL and as keywords) over IMAP, sync and async, and SMTP: the
    failures are recorded with their type, the secrets nowhere (not in a record's message or
    extra fields, not in a span's attributes or its exception event)."""
    caplog.set_level(logging.DEBUG, logger="mailsync")
    secret, in_url = "Wr0ng-S3cret-kw", "Wr0ng-S3cret-url"
    host, verify = mail_servers.host, mail_servers.ssl_context()
    imap = f"imaps://{account.user}:{in_url}@{host}:{mail_servers.imaps_port}"
    with pytest.raises(mailsync.AuthenticationError):
        with mailsync.connect(imap, verify=verify, state=":memory:") as box:
            box.messages().collect()

    async def read_async() -> None:
        url = f"imaps://{account.user}@{host}:{mail_servers.imaps_port}"
        async with mailsync.connect_async(url, password=secret, verify=verify) as box:
            await box.messages().collect()

    with pytest.raises(mailsync.AuthenticationError):
        asyncio.run(read_async())
    smtp = f"smtp://{account.user}@{host}:{mail_servers.submission_port}"
    with pytest.raises(mailsync.AuthenticationError):
        with mailsync.sender(smtp, password=secret, verify=verify) as out:
            out.send(_compose(account.email, sender=account.email))

    failed = [r for r in caplog.records if r.__dict__.get("error_type") == "AuthenticationError"]
    assert {r.__dict__["operation"] for r in failed} >= {"connect", "fetch", "send"}
    for record in caplog.records:
        text = f"{record.getMessage()} {record.__dict__!r}"
        assert secret not in text
        assert in_url not in text
    errors = [s for s in telemetry.spans() if s.attributes.get("error.type")]
    assert {s.name for s in errors} >= {"mailsync.connect", "mailsync.fetch", "mailsync.send"}
    for hidden in (secret, in_url):
        _no_secret_in(telemetry.spans(), hidden)


def test_errors_are_counted_by_type_and_marked_on_the_span(
    tmp_path: Path, telemetry: Telemetry
) -> None:
    with mailsync.connect(f"maildir:{tmp_path}/box?create=true", state=":memory:") as box:
        for _ in range(2):
            with pytest.raises(mailsync.MessageNotFound):
                box.get("missing")
    spans = telemetry.spans("mailsync.get")
    assert [s.status.status_code.name for s in spans] == ["ERROR", "ERROR"]
    assert spans[0].attributes["error.type"] == "MessageNotFound"
    assert spans[0].events[0].name == "exception"
    assert telemetry.total("mailsync.errors", error_type="MessageNotFound") == 2


def test_a_sender_that_delegates_is_counted_once(tmp_path: Path, telemetry: Telemetry) -> None:
    """The Sent-copy sender wraps another; the default send_many calls send: one count each."""
    box = mailsync.connect(f"maildir:{tmp_path}/box?create=true", state=":memory:")
    with mailsync.sender(f"maildir:{tmp_path}/out?create=true", save_to=(box, "INBOX")) as out:
        out.send(_compose("bob@example.test"))
        out.send_many([_compose("bob@example.test"), _compose("carol@example.test")])
    box.close()
    assert [s.name for s in telemetry.spans() if s.name.startswith("mailsync.send")] == [
        "mailsync.send",
        "mailsync.send_many",
    ]
    assert telemetry.total("mailsync.messages.sent") == 3


def _dead_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_watch_reconnects_are_spans_and_counted(
    telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mailsync")
    url = f"imap://ann@127.0.0.1:{_dead_port()}"

    async def main() -> None:
        box = mailsync.connect_async(url, password="x", tls="none", state=":memory:")

        async def consume() -> None:
            async for _ in box.watch():
                pass

        task = asyncio.create_task(consume())
        async with asyncio.timeout(60):
            while not _records(caplog, "reconnect"):
                await asyncio.sleep(0.05)
        await box.aclose()
        await asyncio.wait_for(task, 30)

    asyncio.run(main())
    record = _records(caplog, "reconnect")[0]
    assert (record.levelname, record.error_type) == ("WARNING", "ConnectionFailed")
    assert record.delay > 0
    (span, *_) = telemetry.spans("mailsync.watch.reconnect")
    assert span.attributes["error.type"] == "ConnectionFailed"
    assert span.attributes["mailsync.delay"] == record.delay
    assert telemetry.total("mailsync.reconnects", error_type="ConnectionFailed") >= 1


# -- zero cost without the extra -------------------------------------------------------------


def test_opentelemetry_is_never_imported_unless_instrumented(tmp_path: Path) -> None:
    """A program that reads, syncs and sends (every logger at DEBUG) never imports
    OpenTelemetry: an import hook that fails any attempt proves it, as if the extra were
    absent."""
    script = textwrap.dedent(
        f"""
        import logging, sys

        class NoOpenTelemetry:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "opentelemetry":
                    raise ImportError("the otel extra is not installed")

        sys.meta_path.insert(0, NoOpenTelemetry())
        logging.basicConfig(level=logging.DEBUG, stream=sys.stdout)
        import mailsync, mailsync.integrations
        url = "maildir:{tmp_path}/box?create=true"
        with mailsync.sender(url) as out:
            out.send(mailsync.compose(from_="a@example.test", to="b@example.test",
                                      subject="s", text="t"))
        with mailsync.connect(url, state=":memory:") as box:
            assert len(box.sync().collect()) == 1
        assert not [m for m in sys.modules if m.startswith("opentelemetry")]
        assert "mailsync.integrations.otel" not in sys.modules
        try:
            from mailsync.integrations import otel
        except ImportError as exc:  # asked for without the extra: the error says which
            assert 'pip install "mailsync[otel]"' in str(exc), exc
        else:
            raise AssertionError("imported without OpenTelemetry")
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("ok")
    assert "operation" not in done.stderr


def test_the_observing_wrappers_keep_each_methods_signature_and_kind() -> None:
    import inspect

    from mailsync.backends.imap import IMAPRetriever
    from mailsync.backends.imap_async import AsyncIMAPRetriever
    from mailsync.backends.smtp import AsyncSMTPSender, SMTPSender

    for cls in (SMTPSender, AsyncSMTPSender):
        parameters = list(inspect.signature(cls.send).parameters)
        assert parameters == ["self", "message", "notify", "ret", "envid", "mail_from", "rcpt_to"]
    assert inspect.iscoroutinefunction(AsyncSMTPSender.send)
    assert inspect.iscoroutinefunction(AsyncIMAPRetriever.get)
    assert inspect.iscoroutinefunction(AsyncIMAPRetriever._open)
    assert list(inspect.signature(IMAPRetriever.get).parameters) == ["self", "id"]
    assert inspect.signature(IMAPRetriever.get).return_annotation in ("Message", mailsync.Message)
