"""The JMAP protocol logic without a server: the event-stream parser, URL templates, the
session's checks, mailbox paths, filters, keywords, submission results; then hostile and
malformed replies from a small scripted JMAP server (an ``httpx.MockTransport``), each of
which must end in a mailsync error, never a KeyError or an httpx error."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

import mailsync
from mailsync import Q
from mailsync._envelope import prepare
from mailsync.protocol import jmap_core, jmap_submission, jmap_wire
from mailsync.protocol.events import EventStreamParser, ServerEvent
from tests.contract import make_raw

# -- the event-stream parser -------------------------------------------------------------------


def _events(*chunks: bytes, max_bytes: int = 1024) -> list[ServerEvent]:
    parser = EventStreamParser(max_bytes=max_bytes)
    return [event for chunk in chunks for event in parser.feed(chunk)]


def test_event_stream_lines_fields_and_dispatch() -> None:
    stream = (
        b"\xef\xbb\xbf: a comment\r\n"
        b'event: state\r\nid: 7\r\ndata: {"a":\r\ndata:1}\r\n\r\n'
        b"event: ping\ndata: {}\n\n"
        b"data: no type\rdata\r\r"
        b"event: empty\n\n"  # no data: nothing is dispatched
        b"id\nevent: state\ndata: x\n\n"  # "id" alone clears the id
    )
    expected = [
        ServerEvent("state", '{"a":\n1}', "7"),
        ServerEvent("ping", "{}", "7"),
        ServerEvent("message", "no type\n", "7"),
        ServerEvent("state", "x", ""),
    ]
    assert _events(stream) == expected
    # The same bytes cut anywhere, a CRLF split between two chunks included.
    for cut in range(1, len(stream)):
        assert _events(stream[:cut], stream[cut:]) == expected, cut
    assert _events(*[stream[i : i + 1] for i in range(len(stream))]) == expected


def test_event_stream_bounds() -> None:
    with pytest.raises(mailsync.ProtocolError, match="line longer"):
        _events(b"data: " + b"x" * 2000)  # a line that never ends
    with pytest.raises(mailsync.ProtocolError, match="event of more"):
        _events(*[b"data: " + b"x" * 100 + b"\n" for _ in range(20)])


# -- templates, session, mailboxes -------------------------------------------------------------


def test_url_templates_are_expanded_and_encoded() -> None:
    template = "https://h/download/{accountId}/{blobId}/{name}?accept={type}"
    url = jmap_core.expand_template(
        template, accountId="a@b.example", blobId="G1/..", name="m e", type="message/rfc822"
    )
    assert url == "https://h/download/a%40b.example/G1%2F../m%20e?accept=message%2Frfc822"
    with pytest.raises(mailsync.ProtocolError, match="blobId"):
        jmap_core.expand_template(template, accountId="a")


def _session(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "capabilities": {
            jmap_core.CORE: {
                "maxObjectsInGet": 10,
                "maxCallsInRequest": 0,
                "maxConcurrentRequests": "x",
            },
            jmap_core.MAIL: {},
            jmap_core.SUBMISSION: {},
        },
        "accounts": {
            "u1": {
                "accountCapabilities": {
                    jmap_core.SUBMISSION: {"submissionExtensions": {"DSN": [], "size": ["10"]}}
                }
            }
        },
        "primaryAccounts": {jmap_core.MAIL: "u1", jmap_core.SUBMISSION: "u1"},
        "apiUrl": "/jmap/api/",
        "downloadUrl": "/jmap/download/{accountId}/{blobId}/{name}?accept={type}",
        "uploadUrl": "https://up.example/{accountId}/",
        "eventSourceUrl": "/jmap/es?types={types}&closeafter={closeafter}&ping={ping}",
        "state": "s1",
    }
    data.update(changes)
    return data


def test_the_session_is_read_and_checked() -> None:
    session = jmap_core.parse_session(_session(), "https://mail.example/jmap/session")
    assert session.api_url == "https://mail.example/jmap/api/"
    assert session.upload_url == "https://up.example/{accountId}/"
    assert session.max_objects_in_get == 10
    assert session.max_calls_in_request == 16  # 0 makes no sense: the default
    assert session.max_concurrent_requests == 4
    assert "dsn" in session.submission_extensions
    bad = [
        ("not an object", [1, 2], mailsync.ProtocolError),
        ("no mail", _session(capabilities={jmap_core.CORE: {}}), mailsync.Unsupported),
        ("no account", _session(primaryAccounts={}), mailsync.ProtocolError),
        ("http api", _session(apiUrl="http://mail.example/api"), mailsync.ProtocolError),
        ("no blobId", _session(downloadUrl="/d/{accountId}"), mailsync.ProtocolError),
        ("odd scheme", _session(uploadUrl="ftp://x/{accountId}"), mailsync.ProtocolError),
    ]
    for name, data, error in bad:
        with pytest.raises(error):
            jmap_core.parse_session(data, "https://mail.example/jmap/session")
        assert name
    no_push = jmap_core.parse_session(_session(eventSourceUrl="/es"), "https://m.example/s")
    assert no_push.event_source_url is None
    with pytest.raises(mailsync.ProtocolError, match="https"):  # redirected down to http
        jmap_core.parse_session(_session(), "http://m.example/s", secure=True)


def test_mailbox_paths_survive_loops_and_missing_parents() -> None:
    boxes = jmap_wire.mailboxes_by_id(
        [
            {"id": "i", "name": "Posteingang", "role": "inbox"},
            {"id": "r", "name": "Receipts", "parentId": "i"},
            {"id": "a", "name": "A", "parentId": "b"},
            {"id": "b", "name": "B", "parentId": "a"},
            {"id": "o", "name": "Orphan", "parentId": "gone"},
            {"id": "t", "name": "Bin", "role": "trash"},
        ]
    )
    assert boxes["i"].name == "INBOX"
    assert boxes["r"].name == "INBOX/Receipts"
    assert boxes["i"].folder.flags == {"\\HasChildren"}
    assert {boxes["a"].name, boxes["b"].name} == {"B/A", "A/B"}
    assert boxes["o"].name == "Orphan"
    assert boxes["t"].folder.special_use == "\\Trash"
    with pytest.raises(mailsync.ProtocolError):
        jmap_wire.mailboxes_by_id([{"name": "no id"}])


def test_queries_narrow_only_where_exact_or_a_superset() -> None:
    query = Q(seen=False, larger=100) & ~Q(flagged=True) & Q(subject="x")
    assert jmap_wire.native_filter(query) == [
        {"notKeyword": "$seen"},
        {"minSize": 101},
        {"notKeyword": "$flagged"},
    ]
    assert jmap_wire.native_filter(Q(seen=True) | Q(flagged=True)) == []
    assert jmap_wire.native_filter(~Q(subject="x")) == []
    since = jmap_wire.native_filter(Q(since=datetime(2026, 3, 2, 10, tzinfo=UTC), smaller=9))
    assert since == [{"maxSize": 9}, {"after": "2026-03-01T10:00:00Z"}]


def test_keywords_and_flags() -> None:
    assert jmap_wire.keyword_of("\\Seen") == "$seen"
    assert jmap_wire.keyword_of("\\flagged") == "$flagged"
    assert jmap_wire.keyword_of("$Forwarded") == "$forwarded"
    for flag in ("\\Deleted", "\\Recent"):
        with pytest.raises(mailsync.Unsupported):
            jmap_wire.keyword_of(flag)
    for keyword in ("", "a b", "x(y", "naïve", "a" * 256):
        with pytest.raises(mailsync.ConfigError):
            jmap_wire.keyword_of(keyword)
    flags = jmap_wire.flags_of({"$seen": True, "$draft": True, "work": True, "off": False, "x": 1})
    assert flags == {"\\Seen", "\\Draft", "work"}
    assert jmap_wire.flags_of(None) == frozenset()


# -- submission results ------------------------------------------------------------------------


def _envelope() -> Any:
    message = mailsync.compose(
        from_="me@example.test", to=["a@example.test", "b@example.test"], subject="s", text="t"
    )
    return prepare(message)


def test_delivery_status_becomes_the_result() -> None:
    statuses = {
        "a@example.test": {"smtpReply": "250 2.1.5 OK", "delivered": "queued"},
        "B@example.test": {"smtpReply": "550 5.1.1 <b@example.test>: no such user"},
    }
    result = jmap_submission.send_result(
        _envelope(), {"id": "S1", "deliveryStatus": statuses}, None, "x"
    )
    assert result.accepted == ("a@example.test",)
    assert result.delivery == {"a@example.test": "queued", "b@example.test": "unknown"}
    assert result.refused == {"b@example.test": (550, "5.1.1 <b@example.test>: no such user")}
    none_said = jmap_submission.send_result(_envelope(), {"id": "S2"}, "e1", "x")
    assert none_said.ok
    assert none_said.delivery == {}
    assert none_said.envid == "e1"
    refused = {r: {"smtpReply": "554 no", "delivered": "no"} for r in _envelope().recipients}
    with pytest.raises(mailsync.RecipientsRefused):
        jmap_submission.send_result(_envelope(), {"id": "S3", "deliveryStatus": refused}, None, "x")


def test_refused_submissions() -> None:
    envelope = _envelope()
    invalid = jmap_wire.MethodError(
        "invalidRecipients", "", {"invalidRecipients": ["b@example.test"]}
    )
    error = jmap_submission.submission_error(invalid, envelope, "x")
    assert isinstance(error, mailsync.RecipientsRefused)
    assert list(error.refused) == ["b@example.test"]
    smtp = jmap_wire.MethodError("smtpProtocolError", "4.2.2 <a@example.test>: mailbox full")
    error = jmap_submission.submission_error(smtp, envelope, "x")
    assert isinstance(error, mailsync.RecipientsRefused)
    assert error.refused["a@example.test"][0] == 450
    other = jmap_submission.submission_error(
        jmap_wire.MethodError("forbiddenFrom", "not yours"), envelope, "x"
    )
    assert type(other) is mailsync.SendError
    assert "forbiddenFrom" in str(other)


# -- a scripted server -------------------------------------------------------------------------

Method = Callable[[dict[str, Any]], Any]


class ScriptedJMAP:
    """Just enough of a JMAP server for one test, over ``httpx.MockTransport``: a session, an
    INBOX, messages held as bytes, and methods a test may replace with hostile answers."""

    def __init__(self) -> None:
        self.session = _session(
            apiUrl="/api", downloadUrl="/dl/{accountId}/{blobId}/{name}?t={type}"
        )
        self.session["capabilities"][jmap_core.CORE] = {"maxCallsInRequest": 8}
        self.messages: dict[str, bytes] = {}
        self.seen: set[str] = set()
        self.requests: list[httpx.Request] = []
        self.methods: dict[str, Method] = {
            "Mailbox/get": lambda args: {
                "state": "m1",
                "list": [{"id": "inbox", "name": "Inbox", "role": "inbox"}],
            },
            "Email/query": self._query,
            "Email/get": self._get,
        }
        self.raw_reply: Callable[[dict[str, Any]], httpx.Response] | None = None
        self.event_stream: Iterator[bytes] | None = None

    def add(self, raw: bytes, *, seen: bool = False) -> None:
        key = f"M{len(self.messages)}"
        self.messages[key] = raw
        if seen:
            self.seen.add(key)

    def _query(self, args: dict[str, Any]) -> Any:
        conditions = args["filter"].get("conditions", [args["filter"]])
        ids = list(self.messages)
        for condition in conditions:
            if condition.get("hasKeyword") == "$seen":
                ids = [i for i in ids if i in self.seen]
        start = args.get("position", 0)
        page = ids[start : start + args.get("limit", 50)]
        return {"ids": page, "position": start, "queryState": "q"}

    def _get(self, args: dict[str, Any]) -> Any:
        return {
            "state": "e1",
            "list": [
                {
                    "id": i,
                    "blobId": "B" + i,
                    "mailboxIds": {"inbox": True},
                    "keywords": {"$seen": True} if i in self.seen else {},
                    "size": len(self.messages[i]),
                    "receivedAt": "2026-01-01T00:00:00Z",
                }
                for i in args.get("ids") or []
                if i in self.messages
            ],
        }

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path == "/.well-known/jmap":
            return httpx.Response(200, json=self.session)
        if path.startswith("/dl/"):
            return httpx.Response(200, content=self.messages[path.split("/")[3][1:]])
        if path == "/es":
            assert self.event_stream is not None
            headers = {"content-type": "text/event-stream"}
            return httpx.Response(200, headers=headers, content=self.event_stream)
        body = json.loads(request.content)
        if self.raw_reply is not None:
            return self.raw_reply(body)
        responses: list[Any] = []
        results: dict[str, Any] = {}
        for name, args, call_id in body["methodCalls"]:
            if "#ids" in args:
                reference = args.pop("#ids")
                if reference["resultOf"] not in results:
                    responses.append(["error", {"type": "resultReference"}, call_id])
                    continue
                args["ids"] = results[reference["resultOf"]]["ids"]
            answer = self.methods[name](args)
            if isinstance(answer, list):  # a whole method response, as given
                responses.append(answer)
                continue
            results[call_id] = answer
            responses.append([name, answer, call_id])
        state = self.session["state"]
        return httpx.Response(200, json={"methodResponses": responses, "sessionState": state})


@pytest.fixture
def server() -> ScriptedJMAP:
    return ScriptedJMAP()


def _connect(server: ScriptedJMAP, **options: Any) -> Any:
    options = {"password": "pw", "transport": httpx.MockTransport(server), **options}
    return mailsync.connect(
        "jmap://me@mail.example", state=":memory:", retry_delay=0, retries=0, **options
    )


def test_the_scripted_server_works(server: ScriptedJMAP) -> None:
    server.add(make_raw(1))
    server.add(make_raw(2), seen=True)
    with _connect(server) as box:
        assert [m.subject for m in box.messages()] == ["Message 1", "Message 2"]
        assert [m.subject for m in box.messages(query=Q(seen=True))] == ["Message 2"]
    assert server.requests[0].headers["authorization"].startswith("Basic ")


def test_a_refused_filter_falls_back_to_client_side(server: ScriptedJMAP) -> None:
    server.add(make_raw(1))
    server.add(make_raw(2), seen=True)
    plain = server._query

    def picky(args: dict[str, Any]) -> Any:
        if "conditions" in args["filter"]:
            return ["error", {"type": "unsupportedFilter"}, "0"]
        return plain(args)

    server.methods["Email/query"] = picky
    with _connect(server) as box:
        assert [m.subject for m in box.messages(query=Q(seen=True))] == ["Message 2"]
        assert [m.subject for m in box.messages(query=~Q(seen=True))] == ["Message 1"]


@pytest.mark.parametrize(
    ("answer", "error", "match"),
    [
        (lambda body: httpx.Response(200, content=b"<html>"), mailsync.ProtocolError, "not JSON"),
        (lambda body: httpx.Response(200, json=[1]), mailsync.ProtocolError, "methodResponses"),
        (
            lambda body: httpx.Response(200, json={"methodResponses": [["Mailbox/get"]]}),
            mailsync.ProtocolError,
            "not \\[name, args, id\\]",
        ),
        (
            lambda body: httpx.Response(200, json={"methodResponses": []}),
            mailsync.ProtocolError,
            "no response to Mailbox/get",
        ),
        (
            lambda body: httpx.Response(200, json={"methodResponses": [["Email/get", {}, "0"]]}),
            mailsync.ProtocolError,
            "answered by Email/get",
        ),
        (
            lambda body: httpx.Response(
                200, json={"methodResponses": [["Mailbox/get", {"list": [{"name": 1}]}, "0"]]}
            ),
            mailsync.ProtocolError,
            "'id'",
        ),
        (
            lambda body: httpx.Response(429, headers={"Retry-After": "7"}),
            mailsync.RateLimited,
            "429",
        ),
        (lambda body: httpx.Response(401), mailsync.AuthenticationError, "refused"),
        (
            lambda body: httpx.Response(
                400,
                json={"type": "urn:ietf:params:jmap:error:limit", "limit": "maxSizeRequest"},
            ),
            mailsync.ServerError,
            "limit",
        ),
    ],
)
def test_hostile_replies_are_mailsync_errors(
    server: ScriptedJMAP,
    answer: Callable[[dict[str, Any]], httpx.Response],
    error: type[Exception],
    match: str,
) -> None:
    server.raw_reply = answer
    with _connect(server) as box, pytest.raises(error, match=match):
        box.folders()


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("rateLimit", mailsync.RateLimited),
        ("serverUnavailable", mailsync.TemporaryFailure),
        ("forbidden", mailsync.AuthenticationError),
        ("unknownMethod", mailsync.Unsupported),
        ("accountNotFound", mailsync.ServerError),
    ],
)
def test_method_errors_are_mapped(server: ScriptedJMAP, kind: str, error: type[Exception]) -> None:
    server.methods["Mailbox/get"] = lambda args: ["error", {"type": kind}, "0"]
    with _connect(server) as box, pytest.raises(error, match=kind) as info:
        box.folders()
    if isinstance(info.value, mailsync.ServerError):
        assert info.value.code == kind


def test_email_get_items_without_ids_are_protocol_errors(server: ScriptedJMAP) -> None:
    server.add(make_raw(1))
    server.methods["Email/get"] = lambda args: {"list": [{"blobId": "x"}]}
    with _connect(server) as box, pytest.raises(mailsync.ProtocolError, match="'id'"):
        list(box.messages())


def test_a_changed_session_state_reads_the_session_again(server: ScriptedJMAP) -> None:
    with _connect(server) as box:
        box.folders()
        box.folders()
        server.session["state"] = "s2"  # replies say s2: the session moved on
        box.folders()  # its reply says so: the session is read again before the next
        box.folders()
        box.folders()
    sessions = [r for r in server.requests if r.url.path == "/.well-known/jmap"]
    assert len(sessions) == 2


def test_an_endless_event_line_is_a_protocol_error(server: ScriptedJMAP) -> None:
    def endless() -> Iterator[bytes]:
        yield b"event: state\n"
        while True:
            yield b"x" * 65536

    server.event_stream = endless()
    server.session["eventSourceUrl"] = "/es?types={types}&closeafter={closeafter}&ping={ping}"
    with _connect(server) as box, pytest.raises(mailsync.ProtocolError, match="longer than"):
        box._wait_for_change("INBOX", 30)


def test_a_state_event_for_another_account_keeps_waiting(server: ScriptedJMAP) -> None:
    def events(account: str, state: str, id: str) -> Iterator[bytes]:
        change = {"@type": "StateChange", "changed": {account: {"Email": state}}}
        yield b"event: ping\ndata: {}\n\n"
        yield f"event: state\nid: {id}\ndata: {json.dumps(change)}\n\n".encode()

    streams = iter(
        [
            events("someone-else", "9", "a"),
            events("u1", "e1", "b"),  # the state synced already: nothing new
            events("u1", "e2", "c"),
        ]
    )
    server.session["eventSourceUrl"] = "/es?types={types}&closeafter={closeafter}&ping={ping}"

    def stream_reply(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, content=next(streams)
        )

    with _connect(server, transport=httpx.MockTransport(_routing(server, stream_reply))) as box:
        box._wait_for_change("INBOX", 30)
    opened = [r for r in server.requests if r.url.path == "/es"]
    assert len(opened) == 3
    assert "last-event-id" not in opened[0].headers
    assert opened[1].headers["last-event-id"] == "a"  # resumed after the event before
    assert opened[2].headers["last-event-id"] == "b"
    assert opened[0].url.params["types"] == "Email"
    assert opened[0].url.params["closeafter"] == "no"


def _routing(
    server: ScriptedJMAP, stream: Callable[[httpx.Request], httpx.Response]
) -> Callable[[httpx.Request], httpx.Response]:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/es":
            server.requests.append(request)
            return stream(request)
        return server(request)

    return handle


def test_bearer_tokens_and_plain_http_rules(server: ScriptedJMAP) -> None:
    with _connect(server, password=None, token="t0k") as box:
        box.folders()
    assert server.requests[-1].headers["authorization"] == "Bearer t0k"
    with pytest.raises(mailsync.ConfigError, match="loopback"):
        mailsync.connect("jmap://me@mail.example", password="pw", tls="none")
    with pytest.raises(mailsync.ConfigError, match="STARTTLS"):
        mailsync.connect("jmap://me@mail.example", password="pw", tls="starttls")
    local = mailsync.connect("jmap://me@127.0.0.1", password="pw", tls="none")
    assert local.api.session_url() == "http://127.0.0.1/.well-known/jmap"
    fastmail = mailsync.connect(
        "jmap://me@", token="t", base_url="https://api.fastmail.com/jmap/session"
    )
    assert fastmail.api.session_url() == "https://api.fastmail.com/jmap/session"


def test_dsn_needs_the_servers_dsn_extension(server: ScriptedJMAP) -> None:
    server.session["accounts"]["u1"]["accountCapabilities"][jmap_core.SUBMISSION] = {}
    message = mailsync.compose(from_="me@example.test", to="a@example.test", subject="s", text="t")
    transport = httpx.MockTransport(server)
    with (
        mailsync.sender("jmap://me@mail.example", password="pw", transport=transport) as out,
        pytest.raises(mailsync.Unsupported, match="DSN"),
    ):
        out.send(message, notify=["failure"])


@pytest.mark.parametrize("concurrency", [1, 3])
def test_a_page_is_downloaded_a_batch_at_a_time(server: ScriptedJMAP, concurrency: int) -> None:
    # Memory holds one batch of messages, not the page: the first comes after one batch.
    for n in range(10):
        server.add(make_raw(n))
    with _connect(server, concurrency=concurrency) as box:
        listing = box.messages()
        assert next(listing).subject == "Message 0"
        downloads = [r for r in server.requests if r.url.path.startswith("/dl/")]
        assert len(downloads) == concurrency
        assert [m.subject for m in listing] == [f"Message {n}" for n in range(1, 10)]


def test_headers_only_with_a_text_query_judges_the_whole_message(server: ScriptedJMAP) -> None:
    server.add(make_raw(1, body="the needle is in the body\r\n"))
    server.add(make_raw(2, body="nothing here\r\n"))
    with _connect(server) as box:
        (found,) = box.messages(headers_only=True, query=Q(text="NEEDLE"))
    assert found.subject == "Message 1"
    assert found.headers_only
    assert b"needle" not in found.raw
