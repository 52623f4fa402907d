"""The HTTP side of the backend kit: authorization and token refresh, retries after 429/5xx,
error bodies in each provider's shape, bounded bodies and concurrency, httpx errors translated,
and the generic API retriever wired to both drivers.

A toy provider (``ToyAPI``) served by an in-process handler through ``httpx.MockTransport``
stands in for a real one; the same handler serves the sync and the async client.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar

import httpx
import pytest

from mailsync import (
    AuthenticationError,
    ConfigError,
    ConnectionFailed,
    FolderNotFound,
    MailTimeout,
    MessageNotFound,
    ProtocolError,
    RateLimited,
    ServerError,
    TemporaryFailure,
)
from mailsync._base import SyncStep
from mailsync._config import parse_url
from mailsync._message import Folder, Message
from mailsync._plans import Call, Emit, Plan
from mailsync.backends._api import APIRetriever, AsyncAPIRetriever
from mailsync.backends._http import AsyncHTTPPerformer, HTTPPerformer
from mailsync.protocol.http import (
    APIClient,
    Auth,
    Dialect,
    Request,
    Response,
    RetryPolicy,
    call,
    call_all,
    json_of,
    multipart_related,
    read_error_body,
    retry_after,
)
from mailsync.protocol.mailapi import MailAPI

Handler = Callable[[httpx.Request], httpx.Response]


def _endpoint(handler: Handler, token: Any = "tok-1", **options: Any) -> Any:  # noqa: S107
    return parse_url(
        "toy://me",
        token=token,
        options={"transport": httpx.MockTransport(handler), "retry_delay": 0, **options},
    )


def _client(endpoint: Any, policy: RetryPolicy | None = None) -> APIClient:
    return APIClient(Auth(endpoint), Dialect(), policy or RetryPolicy.from_params(endpoint.params))


def _run_sync(endpoint: Any, plan: Plan[Any], concurrency: int = 4) -> Any:
    from mailsync._plans import run

    performer = HTTPPerformer(
        endpoint, base_url="https://api.test/v1", context="TOY", concurrency=concurrency
    )
    try:
        return run(plan, performer, context="TOY", sleep=lambda s: None)
    finally:
        performer.close()


def _run_async(endpoint: Any, plan: Plan[Any], concurrency: int = 4) -> Any:
    from mailsync._plans import arun

    async def main() -> Any:
        performer = AsyncHTTPPerformer(
            endpoint, base_url="https://api.test/v1", context="TOY", concurrency=concurrency
        )

        async def no_sleep(seconds: float) -> None:
            return None

        try:
            return await arun(plan, performer, context="TOY", sleep=no_sleep)
        finally:
            await performer.aclose()

    return asyncio.run(main())


BOTH = pytest.mark.parametrize("drive", [_run_sync, _run_async], ids=["sync", "async"])


@BOTH
def test_bearer_token_is_sent_and_refreshed_once_after_a_401(drive: Any) -> None:
    tokens = iter(["old", "new"])
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        if request.headers["authorization"] == "Bearer old":
            return httpx.Response(401, json={"error": {"code": 401, "message": "expired"}})
        return httpx.Response(200, json={"ok": True})

    endpoint = _endpoint(handler, token=lambda: next(tokens))
    response = drive(endpoint, call(_client(endpoint), Request("GET", "ping")))
    assert json_of(response, "ping") == {"ok": True}
    assert seen == ["Bearer old", "Bearer new"]


@BOTH
def test_a_second_401_is_an_authentication_error(drive: Any) -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.headers["authorization"])
        return httpx.Response(401, json={"error": {"code": 401, "message": "Invalid Credentials"}})

    endpoint = _endpoint(handler, token=lambda: f"t{len(calls)}")
    with pytest.raises(AuthenticationError, match="Invalid Credentials") as info:
        drive(endpoint, call(_client(endpoint), Request("GET", "ping", what="ping")))
    assert len(calls) == 2
    assert "t0" not in str(info.value)
    assert "t1" not in str(info.value)


@BOTH
def test_a_fixed_token_is_not_asked_again(drive: Any) -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(401)

    endpoint = _endpoint(handler, token="fixed")
    with pytest.raises(AuthenticationError):
        drive(endpoint, call(_client(endpoint), Request("GET", "ping")))
    assert len(calls) == 1


@BOTH
def test_rate_limits_are_retried_after_retry_after_then_raised(drive: Any) -> None:
    answers = [
        httpx.Response(429, headers={"Retry-After": "0"}),
        httpx.Response(503, headers={"Retry-After": "0"}),
        httpx.Response(200, json={"n": 1}),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        return answers.pop(0)

    endpoint = _endpoint(handler)
    assert json_of(drive(endpoint, call(_client(endpoint), Request("GET", "x"))), "x") == {"n": 1}

    def always(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": "7"})

    endpoint = _endpoint(always, retries=2)
    policy = RetryPolicy(attempts=3, base=0, cap=10)
    with pytest.raises(RateLimited) as info:
        drive(endpoint, call(_client(endpoint, policy), Request("GET", "x")))
    assert info.value.retry_after == 7


def test_a_retry_after_longer_than_the_cap_is_raised_at_once() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(429, headers={"Retry-After": "3600"})

    endpoint = _endpoint(handler)
    with pytest.raises(RateLimited) as info:
        _run_sync(endpoint, call(_client(endpoint), Request("GET", "x")))
    assert info.value.retry_after == 3600
    assert len(calls) == 1


def test_server_errors_become_temporary_failures_after_bounded_retries() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(500, json={"error": {"code": 500, "message": "Backend Error"}})

    endpoint = _endpoint(handler, retries=2)
    with pytest.raises(TemporaryFailure, match="Backend Error"):
        _run_sync(endpoint, call(_client(endpoint), Request("GET", "x")))
    assert len(calls) == 3


@pytest.mark.parametrize(
    ("body", "code", "text"),
    [
        (
            {
                "error": {
                    "code": 403,
                    "message": "Rate Limit Exceeded",
                    "errors": [{"reason": "rateLimitExceeded"}],
                    "status": "PERMISSION_DENIED",
                }
            },
            "PERMISSION_DENIED",
            "Rate Limit Exceeded",
        ),
        (
            {"error": {"code": "ErrorItemNotFound", "message": "The item was not found."}},
            "ErrorItemNotFound",
            "The item was not found.",
        ),
        (
            {"type": "urn:ietf:params:jmap:error:limit", "status": 400, "detail": "too many"},
            "urn:ietf:params:jmap:error:limit",
            "too many",
        ),
        ({"error": "invalid_token", "error_description": "bad"}, "invalid_token", "bad"),
    ],
)
def test_error_bodies_in_every_providers_shape(body: Any, code: str, text: str) -> None:
    parsed = read_error_body(Response(400, {}, json.dumps(body).encode()))
    assert parsed.code == code
    assert parsed.message == text
    plain = read_error_body(Response(502, {}, b"<html>Bad   gateway</html>\n"))
    assert plain.code is None
    assert plain.message == "<html>Bad gateway</html>"


def test_status_mapping_and_not_found_kind() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        status = int(request.url.path.rsplit("/", 1)[1])
        return httpx.Response(status, json={"error": {"code": "X", "message": "no"}})

    endpoint = _endpoint(handler, retries=0)
    client = _client(endpoint)
    with pytest.raises(MessageNotFound):
        _run_sync(endpoint, call(client, Request("GET", "s/404")))
    with pytest.raises(FolderNotFound):
        _run_sync(endpoint, call(client, Request("GET", "s/404"), not_found=FolderNotFound))
    with pytest.raises(AuthenticationError, match="scopes"):
        _run_sync(endpoint, call(client, Request("GET", "s/403")))
    with pytest.raises(ServerError) as info:
        _run_sync(endpoint, call(client, Request("GET", "s/409")))
    assert info.value.code == "X"
    assert _run_sync(endpoint, call(client, Request("GET", "s/410"), allow=[410])).status == 410


def test_a_dialects_rate_limit_wins_over_the_403_rule() -> None:
    """A provider that says "slow down" with a 403 (Google) gets RateLimited once retries
    are spent, not an AuthenticationError about scopes."""

    class Slow(Dialect):
        def is_rate_limit(self, response: Response, body: Any) -> bool:
            return response.status == 429 or "rateLimitExceeded" in body.reasons

    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        error = {"code": 403, "message": "slow", "errors": [{"reason": "rateLimitExceeded"}]}
        return httpx.Response(403, json={"error": error})

    endpoint = _endpoint(handler)
    client = APIClient(Auth(endpoint), Slow(), RetryPolicy(attempts=2, base=0))
    with pytest.raises(RateLimited):
        _run_sync(endpoint, call(client, Request("GET", "x")))
    assert len(calls) == 2


def test_multipart_related_parts_come_back_exactly() -> None:
    import email.parser
    import email.policy

    media = b"Subject: hi\r\n\r\n--not-a-boundary\r\n\x00\xff body\r\n"
    content_type, body = multipart_related([("application/json", b'{"a": 1}'), ("x/y", media)])
    assert content_type.startswith("multipart/related; boundary=")
    parsed = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    first, second = parsed.get_payload()
    assert first.get_content_type() == "application/json"
    assert first.get_payload(decode=True) == b'{"a": 1}'
    assert second.get_content_type() == "x/y"
    assert second.get_payload(decode=True) == media


def test_fields_of_a_reply_that_is_not_an_object() -> None:
    from mailsync.protocol.http import field_of, optional_field

    for reply in ([], "x", 3, None):
        with pytest.raises(ProtocolError, match=r"not an object|no 'a'"):
            optional_field(reply, "a", str, "t")  # type: ignore[arg-type]
        with pytest.raises(ProtocolError):
            field_of(reply, "a", str, "t")
    assert optional_field({"a": None}, "a", str, "t") is None


def test_retry_after_as_http_date() -> None:
    from email.utils import format_datetime

    later = format_datetime(
        __import__("datetime").datetime.now(__import__("datetime").UTC), usegmt=True
    )
    assert retry_after(Response(429, {"retry-after": later}, b"")) == pytest.approx(0, abs=2)
    assert retry_after(Response(429, {"retry-after": "soon"}, b"")) is None


@BOTH
def test_call_all_resends_only_what_failed(drive: Any) -> None:
    seen: dict[str, int] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        name = request.url.path.rsplit("/", 1)[1]
        seen[name] = seen.get(name, 0) + 1
        if name == "b" and seen[name] == 1:
            return httpx.Response(429, headers={"Retry-After": "0"})
        return httpx.Response(200, content=name.encode())

    endpoint = _endpoint(handler)
    requests = [Request("GET", f"m/{n}") for n in "abc"]
    responses = drive(endpoint, call_all(_client(endpoint), requests))
    assert [r.content for r in responses] == [b"a", b"b", b"c"]
    assert seen == {"a": 1, "b": 2, "c": 1}


@BOTH
def test_bodies_past_max_bytes_are_refused(drive: Any) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"x" * 5000)

    endpoint = _endpoint(handler)
    with pytest.raises(ProtocolError, match="larger than 1000 bytes"):
        drive(endpoint, call(_client(endpoint), Request("GET", "big", max_bytes=1000)))

    async def chunks() -> Any:
        for _ in range(2):
            yield b"y" * 600

    def streaming(request: httpx.Request) -> httpx.Response:
        # No Content-Length: the limit holds while the body streams in.
        if drive is _run_sync:
            return httpx.Response(200, content=iter([b"y" * 600, b"y" * 600]))
        return httpx.Response(200, content=chunks())

    endpoint = _endpoint(streaming)
    with pytest.raises(ProtocolError, match="larger than 1000 bytes"):
        drive(endpoint, call(_client(endpoint), Request("GET", "big", max_bytes=1000)))


@BOTH
def test_transport_errors_are_translated(drive: Any) -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    endpoint = _endpoint(refused)
    with pytest.raises(ConnectionFailed, match=r"TOY: .*refused") as info:
        drive(endpoint, call(_client(endpoint), Request("GET", "x")))
    assert isinstance(info.value.__cause__, httpx.ConnectError)

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    endpoint = _endpoint(slow)
    with pytest.raises(MailTimeout):
        drive(endpoint, call(_client(endpoint), Request("GET", "x")))


def test_concurrency_is_bounded_in_both_drivers() -> None:
    lock = threading.Lock()
    active = [0, 0]  # now, most

    def handler(request: httpx.Request) -> httpx.Response:
        with lock:
            active[0] += 1
            active[1] = max(active[1], active[0])
        time.sleep(0.02)
        with lock:
            active[0] -= 1
        return httpx.Response(200, content=b"ok")

    endpoint = _endpoint(handler)
    requests = [Request("GET", f"m/{n}") for n in range(12)]
    assert len(_run_sync(endpoint, call_all(_client(endpoint), requests), concurrency=3)) == 12
    assert active[1] == 3

    async_active = [0, 0]

    async def ahandler(request: httpx.Request) -> httpx.Response:
        async_active[0] += 1
        async_active[1] = max(async_active[1], async_active[0])
        await asyncio.sleep(0.01)
        async_active[0] -= 1
        return httpx.Response(200, content=b"ok")

    endpoint = parse_url(
        "toy://me", token="t", options={"transport": httpx.MockTransport(ahandler)}
    )
    assert len(_run_async(endpoint, call_all(_client(endpoint), requests), concurrency=3)) == 12
    assert async_active[1] == 3


def test_basic_auth_and_missing_credentials() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        return httpx.Response(200)

    endpoint = parse_url(
        "jmap://alice%40example.test@host",
        password="s3cret",
        options={"transport": httpx.MockTransport(handler)},
    )
    _run_sync(endpoint, call(APIClient(Auth(endpoint, basic=True)), Request("GET", "x")))
    assert seen == ["Basic " + base64.b64encode(b"alice@example.test:s3cret").decode()]
    with pytest.raises(ConfigError, match="token"):
        Auth(parse_url("gmail://me"))
    with pytest.raises(ConfigError, match="concurrency"):
        ToyAPI(_endpoint(handler, concurrency=0))


# -- the generic retriever, over a toy provider ----------------------------------------------


class ToyAPI(MailAPI):
    """Folders and messages from the toy server, paged two ids at a time."""

    name = "Toy API"
    scheme = "toy"
    capabilities = frozenset({"folders"})
    default_base_url = "https://api.test/v1"

    @property
    def client(self) -> APIClient:
        return APIClient(Auth(self.endpoint), Dialect(), RetryPolicy(base=0))

    def folders(self) -> Plan[list[Folder]]:
        response = yield from call(self.client, Request("GET", "folders"))
        return [Folder(name) for name in json_of(response, "folders")]

    def _ids(self, folder: str) -> Plan[list[str]]:
        ids: list[str] = []
        page: str | None = "0"
        while page is not None:
            request = Request("GET", f"folders/{folder}/ids", params=(("page", page),))
            data = json_of((yield from call(self.client, request, not_found=FolderNotFound)), "")
            ids += data["ids"]
            page = data.get("next")
        return ids

    def messages(
        self, folder: str, *, query: Any, headers_only: bool, limit: int | None
    ) -> Plan[None]:
        ids = (yield from self._ids(folder))[:limit]
        for start in range(0, len(ids), 2):
            batch = ids[start : start + 2]
            replies = yield from call_all(self.client, [Request("GET", f"raw/{i}") for i in batch])
            for id_, reply in zip(batch, replies, strict=True):
                yield Emit(Message(reply.content, id=id_, folder=folder))

    def get(self, id: str) -> Plan[Message]:
        reply = yield from call(self.client, Request("GET", f"raw/{id}"))
        return Message(reply.content, id=id)

    def sync_steps(
        self,
        folder: str,
        cursor: dict[str, Any] | None,
        known: Callable[[Iterable[str]], set[str]],
    ) -> Plan[None]:
        ids = yield from self._ids(folder)
        delivered = yield Call(lambda: known(ids))
        for id_ in ids:
            if id_ not in delivered:
                reply = yield from call(self.client, Request("GET", f"raw/{id_}"))
                yield Emit(SyncStep(Message(reply.content, id=id_), {"n": len(ids)}, id_))


class ToyRetriever(APIRetriever):
    api_class = ToyAPI


class AsyncToyRetriever(AsyncAPIRetriever):
    api_class = ToyAPI


class ToyServer:
    def __init__(self) -> None:
        self.mail: dict[str, list[str]] = {"INBOX": []}
        self.requests: list[str] = []

    def add(self, folder: str, n: int) -> None:
        self.mail[folder].append(f"m{n}")

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request.url.path)
        parts = request.url.path.split("/")[2:]
        if parts == ["folders"]:
            return httpx.Response(200, json=list(self.mail))
        if parts[0] == "folders":
            ids = self.mail.get(parts[1])
            if ids is None:
                return httpx.Response(404, json={"error": {"code": "NotFound", "message": "?"}})
            page = int(request.url.params["page"])
            more = page + 2 < len(ids)
            return httpx.Response(
                200, json={"ids": ids[page : page + 2], "next": str(page + 2) if more else None}
            )
        return httpx.Response(200, content=f"Subject: {parts[1]}\r\n\r\nbody\r\n".encode())


@pytest.fixture
def server() -> ToyServer:
    return ToyServer()


def _toy(server: ToyServer, cls: type[Any]) -> Any:
    return cls(_endpoint(server), state=":memory:")


def test_generic_retriever_sync(server: ToyServer) -> None:
    for n in range(5):
        server.add("INBOX", n)
    with _toy(server, ToyRetriever) as box:
        assert [f.name for f in box.folders()] == ["INBOX"]
        assert [m.subject for m in box.messages()] == [f"m{n}" for n in range(5)]
        assert [m.id for m in box.messages(limit=3)] == ["m0", "m1", "m2"]
        assert box.get("m4").subject == "m4"
        assert [m.id for m in box.sync()] == [f"m{n}" for n in range(5)]
        server.add("INBOX", 5)
        assert [m.id for m in box.sync()] == ["m5"]
        with pytest.raises(FolderNotFound):
            list(box.messages("Nope"))


def test_generic_retriever_async(server: ToyServer) -> None:
    for n in range(5):
        server.add("INBOX", n)

    async def main() -> None:
        async with _toy(server, AsyncToyRetriever) as box:
            assert [f.name for f in await box.folders()] == ["INBOX"]
            assert [m.subject async for m in box.messages()] == [f"m{n}" for n in range(5)]
            assert [m.id async for m in box.messages(limit=3)] == ["m0", "m1", "m2"]
            assert (await box.get("m4")).subject == "m4"
            assert [m.id async for m in box.sync()] == [f"m{n}" for n in range(5)]
            server.add("INBOX", 5)
            assert [m.id async for m in box.sync()] == ["m5"]
            with pytest.raises(FolderNotFound):
                [m async for m in box.messages("Nope")]

    asyncio.run(main())


def test_breaking_out_early_stops_downloading(server: ToyServer) -> None:
    for n in range(10):
        server.add("INBOX", n)
    with _toy(server, ToyRetriever) as box:
        for message in box.messages():
            assert message.id == "m0"
            break
    raw = [path for path in server.requests if "/raw/" in path]
    assert len(raw) == 2  # the first batch only


class MovingToyAPI(ToyAPI):
    capabilities = frozenset({"folders", "move"})
    moved: ClassVar[list[tuple[list[str], str]]] = []

    def move(self, ids: Any, folder: str) -> Plan[None]:
        self.moved.append((list(ids), folder))
        yield from ()


class MovingToyRetriever(APIRetriever):
    api_class = MovingToyAPI


def test_move_from_defaults_to_move(server: ToyServer) -> None:
    with _toy(server, MovingToyRetriever) as box:
        box.move([Message(b"Subject: x\r\n\r\n", id="m1", folder="INBOX"), "m2"], "Archive")
    assert MovingToyAPI.moved == [(["m1", "m2"], "Archive")]


def _watching(box: Any) -> Iterator[Any]:
    yield from box.watch(poll_interval=30)


def test_close_ends_a_polling_watch_at_once(server: ToyServer) -> None:
    box = _toy(server, ToyRetriever)
    done = threading.Event()

    def watch() -> None:
        for _ in _watching(box):
            pass
        done.set()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not any("/ids" in path for path in server.requests):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    started = time.monotonic()
    box.close()
    assert done.wait(5)
    assert time.monotonic() - started < 0.5

    async def main() -> float:
        abox = _toy(server, AsyncToyRetriever)

        async def consume() -> None:
            async for _ in abox.watch(poll_interval=30):
                pass

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.2)
        begun = time.monotonic()
        await abox.aclose()
        await asyncio.wait_for(task, 5)
        return time.monotonic() - begun

    assert asyncio.run(main()) < 0.5


@BOTH
def test_params_are_added_to_a_paging_links_own_query(drive: Any) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200)

    endpoint = _endpoint(handler)
    link = "https://api.test/v1/items?$skiptoken=abc&$top=5"
    drive(endpoint, call(_client(endpoint), Request("GET", link)))
    drive(endpoint, call(_client(endpoint), Request("GET", "items?a=1", params=(("b", "2"),))))
    assert seen[0] == link
    assert seen[1] == "https://api.test/v1/items?a=1&b=2"


def test_concurrency_option_within_the_providers_limit() -> None:
    class Limited(ToyAPI):
        max_concurrency = 4

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200)

    assert ToyAPI(_endpoint(handler)).concurrency == 4
    assert ToyAPI(_endpoint(handler, concurrency=10)).concurrency == 10
    assert Limited(_endpoint(handler, concurrency=10)).concurrency == 4
    assert Limited(_endpoint(handler, concurrency=2)).concurrency == 2


# -- event streams -----------------------------------------------------------------------------


def _event_plan(endpoint: Any, *, timeout: float = 30.0, idle: float = 30.0) -> Plan[Any]:
    from mailsync.protocol.events import await_event

    request = Request("GET", "events")
    return await_event(_client(endpoint), request, ["state"], timeout=timeout, idle=idle)


@BOTH
def test_an_event_stream_gives_the_first_event_of_the_types_asked(drive: Any) -> None:
    from mailsync.protocol.events import ServerEvent

    seen: list[httpx.Request] = []

    def events(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        chunks = [b"event: ping\ndata: {}\n\n", b'id: 4\nevent: state\ndata: {"a"', b":1}\n\n"]
        # Whole bytes: a MockTransport streams only for the client of its own kind.
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, content=b"".join(chunks)
        )

    endpoint = _endpoint(events)
    assert drive(endpoint, _event_plan(endpoint)) == ServerEvent("state", '{"a":1}', "4")
    assert seen[0].headers["accept"] == "text/event-stream"
    assert seen[0].headers["authorization"] == "Bearer tok-1"


@BOTH
def test_an_event_stream_that_ends_or_is_not_one(drive: Any) -> None:
    def ended(request: httpx.Request) -> httpx.Response:
        headers = {"content-type": "text/event-stream; charset=utf-8"}
        return httpx.Response(200, headers=headers, content=b"event: ping\ndata: 1\n\n")

    endpoint = _endpoint(ended)
    assert drive(endpoint, _event_plan(endpoint)) is None  # look again
    for status in (204, 404, 503):
        endpoint = _endpoint(lambda request, status=status: httpx.Response(status, text="no"))
        reply = drive(endpoint, _event_plan(endpoint))
        assert isinstance(reply, Response)
        assert (reply.status, reply.content) == (status, b"no")


@BOTH
def test_an_event_stream_401_asks_for_a_new_token_once(drive: Any) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        return httpx.Response(401)

    tokens = iter(["t1", "t2"])
    endpoint = _endpoint(handler, token=lambda: next(tokens))
    reply = drive(endpoint, _event_plan(endpoint))
    assert reply.status == 401
    assert seen == ["Bearer t1", "Bearer t2"]


def test_a_request_failing_because_close_was_called_is_a_closed_connection() -> None:
    # close() from another thread (stopping a watch) while a request is in flight: whatever
    # httpx raises then is ConnectionFailed, never a stray RuntimeError.
    holder: list[HTTPPerformer] = []

    def handler(request: httpx.Request) -> httpx.Response:
        holder[0].close()
        raise RuntimeError("Cannot send a request, as the client has been closed.")

    endpoint = _endpoint(handler)
    performer = HTTPPerformer(endpoint, base_url="https://api.test/v1", context="TOY")
    holder.append(performer)
    with pytest.raises(ConnectionFailed, match="closed"):
        performer.send(Request("GET", "x"))
