"""The fake Gmail API itself: its discovery-document checks catch drift, and it answers as the
published API says (shapes, paging, order, formats, history, errors), spoken to with plain
httpx as any client would."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import pytest

from tests.contract import make_raw
from tests.fakes import gmail_discovery as discovery
from tests.fakes.gmail import FakeGmail


@pytest.fixture
def api(gmail: FakeGmail) -> Iterator[httpx.Client]:
    with httpx.Client(
        transport=gmail.transport(),
        base_url="https://gmail.googleapis.com/gmail/v1/users/me/",
        headers={"Authorization": "Bearer good-token"},
    ) as client:
        yield client


def test_the_validator_catches_what_gmail_would_never_send() -> None:
    assert (
        discovery.validate("Message", {"id": "1a", "labelIds": ["INBOX"], "sizeEstimate": 5}) == []
    )
    assert discovery.validate("Message", {"id": 1})
    assert discovery.validate("Message", {"id": "1a", "labelIds": "INBOX"})
    assert discovery.validate("Message", {"id": "1a", "historyId": "12x"})
    assert discovery.validate("Message", {"id": "1a", "raw": "not base64!"})
    assert discovery.validate("Message", {"id": "1a", "sizeEstimate": "5"})
    assert discovery.validate("Message", {"id": "1a", "uid": "5"})  # not a property
    assert discovery.validate("ListHistoryResponse", {"history": [{"id": 5}]})
    assert discovery.validate("Label", {"id": "L", "type": "folder"})  # not in the enum


def test_routes_and_query_parameters_come_from_the_document() -> None:
    found = discovery.route("POST", "/gmail/v1/users/me/messages/send")
    assert found is not None
    assert found[0].id == "gmail.users.messages.send"
    found = discovery.route("POST", "/upload/gmail/v1/users/me/messages")
    assert found is not None
    assert (found[0].id, found[0].upload, found[0].max_upload) == (
        "gmail.users.messages.insert",
        True,
        157286400,
    )
    found = discovery.route("GET", "/gmail/v1/users/me/messages/18c2")
    assert found is not None
    assert found[1] == {"userId": "me", "id": "18c2"}
    method = found[0]
    assert discovery.check_query(method, [("format", "raw")]) is None
    assert discovery.check_query(method, [("format", "RAW")])
    assert discovery.check_query(method, [("format", "raw"), ("format", "raw")])
    assert (
        discovery.check_query(method, [("metadataHeaders", "a"), ("metadataHeaders", "b")]) is None
    )
    assert discovery.check_query(method, [("fromat", "raw")])
    assert discovery.route("GET", "/gmail/v1/users/me/nothing") is None


def test_listing_is_newest_first_and_paged(gmail: FakeGmail, api: httpx.Client) -> None:
    assert api.get("messages").json() == {"resultSizeEstimate": 0}
    ids = [gmail.deliver(make_raw(n)) for n in range(7)]
    seen: list[str] = []
    token = None
    while True:
        params = {"maxResults": "3", **({"pageToken": token} if token else {})}
        page = api.get("messages", params=params).json()
        seen += [m["id"] for m in page["messages"]]
        assert set(page["messages"][0]) == {"id", "threadId"}
        token = page.get("nextPageToken")
        if not token:
            break
    assert seen == ids[::-1]
    assert api.get("messages", params={"pageToken": "garbage"}).status_code == 400
    assert api.get("messages", params={"labelIds": "Label_99"}).status_code == 400


def test_trash_and_spam_are_left_out_unless_asked_for(gmail: FakeGmail, api: httpx.Client) -> None:
    kept = gmail.deliver(make_raw(0))
    binned = gmail.deliver(make_raw(1), {"INBOX", "TRASH"})
    assert [m["id"] for m in api.get("messages").json()["messages"]] == [kept]
    every = api.get("messages", params={"includeSpamTrash": "true"}).json()["messages"]
    assert [m["id"] for m in every] == [binned, kept]
    trash = api.get("messages", params={"labelIds": "TRASH"}).json()["messages"]
    assert [m["id"] for m in trash] == [binned]


def test_formats(gmail: FakeGmail, api: httpx.Client) -> None:
    raw = make_raw(1)
    message_id = gmail.deliver(raw, {"INBOX", "UNREAD"})
    got = api.get(f"messages/{message_id}", params={"format": "raw"}).json()
    assert base64.urlsafe_b64decode(got["raw"]) == raw
    assert got["sizeEstimate"] == len(raw)
    assert got["labelIds"] == ["INBOX", "UNREAD"]
    assert got["historyId"].isdigit()
    assert got["internalDate"].isdigit()
    meta = api.get(
        f"messages/{message_id}", params={"format": "metadata", "metadataHeaders": ["subject"]}
    ).json()
    assert meta["payload"]["headers"] == [{"name": "Subject", "value": "Message 1"}]
    assert "raw" not in meta
    minimal = api.get(f"messages/{message_id}", params={"format": "minimal"}).json()
    assert "payload" not in minimal
    assert "raw" not in minimal
    full = api.get(f"messages/{message_id}").json()  # format=full is the default
    body = base64.urlsafe_b64decode(full["payload"]["body"]["data"])
    assert body.startswith(b"Body of message 1.")


def test_errors_in_googles_shape(gmail: FakeGmail, api: httpx.Client) -> None:
    missing = api.get("messages/18c2f0a000000001")
    assert missing.status_code == 404
    error = missing.json()["error"]
    assert error["status"] == "NOT_FOUND"
    assert error["errors"][0]["reason"] == "notFound"
    invalid = api.get("messages/not-hex")
    assert invalid.status_code == 400
    assert invalid.json()["error"]["message"] == "Invalid id value"
    unknown = api.get("messages", params={"maxResult": "5"})
    assert unknown.status_code == 400
    assert "Unknown name" in unknown.json()["error"]["message"]
    refused = api.get("labels", headers={"Authorization": "Bearer nope"})
    assert refused.status_code == 401
    assert "invalid_token" in refused.headers["www-authenticate"]
    assert refused.json()["error"]["status"] == "UNAUTHENTICATED"
    gmail.fail_next(429, "rateLimitExceeded", "Too many concurrent requests", retry_after="3")
    busy = api.get("labels")
    assert (busy.status_code, busy.headers["retry-after"]) == (429, "3")
    assert busy.json()["error"]["status"] == "RESOURCE_EXHAUSTED"


def test_history_ids_grow_and_expire(gmail: FakeGmail, api: httpx.Client) -> None:
    start = api.get("profile").json()["historyId"]
    first = gmail.deliver(make_raw(0))
    work = gmail.create_label("Work")
    gmail.relabel(first, add=[work])
    gmail.deliver(make_raw(1), {"SENT"})
    history = api.get("history", params={"startHistoryId": start}).json()
    ids = [int(record["id"]) for record in history["history"]]
    assert ids == sorted(ids)
    assert len(ids) == 3
    assert int(history["historyId"]) == ids[-1]
    inbox = api.get(
        "history",
        params={"startHistoryId": start, "labelId": "INBOX", "historyTypes": "messageAdded"},
    ).json()
    assert [r["messagesAdded"][0]["message"]["id"] for r in inbox["history"]] == [first]
    assert (
        "history" not in api.get("history", params={"startHistoryId": history["historyId"]}).json()
    )
    assert api.get("history").status_code == 400  # startHistoryId is required
    gmail.expire_history()
    gone = api.get("history", params={"startHistoryId": start})
    assert gone.status_code == 404


def test_uploads(gmail: FakeGmail) -> None:
    raw = make_raw(2)
    with httpx.Client(
        transport=gmail.transport(),
        base_url="https://gmail.googleapis.com/upload/gmail/v1/users/me/",
        headers={"Authorization": "Bearer good-token"},
    ) as upload:

        def post(content_type: str, **params: str) -> httpx.Response:
            return upload.post(
                "messages", params=params, content=raw, headers={"Content-Type": content_type}
            )

        media = post("message/rfc822", uploadType="media")
        assert media.status_code == 200
        assert gmail.messages[media.json()["id"]].raw == raw
        assert "labelIds" not in media.json()  # insert adds no label by itself
        assert post("text/plain", uploadType="media").status_code == 400
        assert post("message/rfc822").status_code == 400  # no uploadType
