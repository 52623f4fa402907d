"""Sync cursors are keyed by the mailbox (protocol family, user, host), not by the way to it,
and cursors saved under the older host:port keys are taken over on first use."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import mailsync
from mailsync._base import SyncStep
from mailsync._config import parse_url
from mailsync._state_sqlite import SQLiteStateStore
from tests.servers import Account, MailServers


def test_one_key_for_one_mailbox_whatever_the_port_or_tls() -> None:
    keys = {
        parse_url(url).account_key
        for url in (
            "imaps://alice@example.test@Mail.Example.test",
            "imap://alice@example.test@mail.example.test",
            "imap://alice@example.test@mail.example.test.:10143",
            "imaps://alice@example.test@mail.example.test:1993",
        )
    }
    assert keys == {"imap://alice@example.test@mail.example.test"}
    assert parse_url("pop3s://alice@h").account_key != parse_url("imaps://alice@h").account_key
    assert parse_url("imaps://alice@h").account_key != parse_url("imaps://bob@h").account_key
    assert parse_url("imaps://u@[::1]:1993").account_key == "imap://u@[::1]"


def test_legacy_keys_try_this_port_first() -> None:
    assert parse_url("imaps://u@H:1993").legacy_account_keys == (
        "imap://u@h:1993",
        "imap://u@h:993",
        "imap://u@h:143",
    )
    assert parse_url("maildir:/tmp/x").legacy_account_keys == ()


class _Listing(mailsync.Retriever):
    """A retriever over a fixed list, to drive sync() without a server."""

    messages_by_uid: dict[int, bytes] = {}

    def folders(self) -> list[mailsync.Folder]:
        return [mailsync.Folder("INBOX")]

    def messages(self, folder: str = "INBOX", **_: object) -> Iterator[mailsync.Message]:  # type: ignore[override]
        return iter(())

    def get(self, id: str) -> mailsync.Message:
        raise mailsync.MessageNotFound(id)

    def _sync_steps(
        self,
        folder: str,
        cursor: dict[str, Any] | None,
        known: Callable[[Iterable[str]], set[str]],
    ) -> Iterator[SyncStep]:
        last = (cursor or {}).get("uid", 0)
        if cursor is not None and cursor.get("uidvalidity") != 2:  # the server reset UIDs
            last = 0
        fresh = {uid: raw for uid, raw in self.messages_by_uid.items() if uid > last}
        delivered = known(f"mid:{uid}" for uid in fresh)
        for uid, raw in sorted(fresh.items()):
            if f"mid:{uid}" in delivered:
                continue
            message = mailsync.Message(raw, id=str(uid))
            yield SyncStep(message, {"uidvalidity": 2, "uid": uid}, f"mid:{uid}")


def test_cursors_under_the_old_key_are_taken_over_with_their_delivered_set() -> None:
    store = SQLiteStateStore(":memory:")
    legacy = "imap://u@mail.example.test:993"  # how mailsync 0.1 keyed imaps://u@host
    store.save_cursor(legacy, "INBOX", {"uidvalidity": 1, "uid": 2}, ["mid:1", "mid:2"])
    _Listing.messages_by_uid = {uid: f"Subject: m{uid}\r\n\r\n".encode() for uid in (1, 2, 3)}
    box = _Listing(parse_url("imaps://u@mail.example.test"), state=store)
    # The cursor's UIDVALIDITY is stale: a resync, which must skip what 0.1 delivered.
    assert [m.subject for m in box.sync()] == ["m3"]
    assert store.load_cursor(box.account_key, "INBOX") == {"uidvalidity": 2, "uid": 3}
    assert store.known(box.account_key, "INBOX", ["mid:1", "mid:2"]) == {"mid:1", "mid:2"}
    assert store.load_cursor(legacy, "INBOX") is not None  # kept, for a downgrade
    again = _Listing(parse_url("imap://u@mail.example.test"), state=store)  # STARTTLS now
    assert list(again.sync()) == []


def test_imaps_and_starttls_share_one_cursor(mail_servers: MailServers, account: Account) -> None:
    for n in range(2):
        mail_servers.deliver(account, f"Subject: shared {n}\r\n\r\nx\r\n".encode())
    store = SQLiteStateStore(":memory:")
    host, options = mail_servers.host, {"password": account.password, "state": store}
    implicit = f"imaps://{account.user}@{host}:{mail_servers.imaps_port}"
    starttls = f"imap://{account.user}@{host}:{mail_servers.imap_port}"
    with mailsync.connect(implicit, verify=mail_servers.cafile, **options) as box:
        assert [m.subject for m in box.sync()] == ["shared 0", "shared 1"]
    mail_servers.deliver(account, b"Subject: shared 2\r\n\r\nx\r\n")
    with mailsync.connect(starttls, verify=mail_servers.cafile, **options) as box:
        assert [m.subject for m in box.sync()] == ["shared 2"]
