"""mailsync: one consistent way to push and pull email.

Pull with :func:`connect` (IMAP, POP3, Maildir, mbox, Gmail, Graph, JMAP), push with
:func:`sender` (SMTP, Maildir, mbox, Gmail, Graph, JMAP), and get the same :class:`Message`,
the same errors, the same incremental ``sync()`` cursor and the same ``watch()`` from every
backend.

Everything public is re-exported here; the modules behind it are private.
"""

from __future__ import annotations

from typing import TYPE_CHECKING as _TYPE_CHECKING

from mailsync._errors import (
    AuthenticationError,
    ConfigError,
    ConnectionFailed,
    DeliveryUncertain,
    FolderNotFound,
    InvalidAddress,
    LeaseLost,
    MailsyncError,
    MailTimeout,
    MessageNotFound,
    MessageTooLarge,
    ProtocolError,
    RateLimited,
    RecipientsDeferred,
    RecipientsRefused,
    SendError,
    ServerError,
    StateError,
    StorageError,
    SyncBusy,
    TemporaryFailure,
    Unsupported,
)

# Errors are imported at once (they are small, and ``except mailsync.X`` must always work);
# everything else loads on first use through __getattr__ below, so that ``import mailsync``
# and a sync-only program pay only for what they touch.
from mailsync._lazy import lazy_loader as _lazy_loader

if _TYPE_CHECKING:
    from mailsync._accounts import Account, account, accounts
    from mailsync._base import (
        AsyncRetriever,
        AsyncSender,
        AsyncSyncRun,
        Retriever,
        Sender,
        SendResult,
        SyncRun,
    )
    from mailsync._compose import check_address, compose
    from mailsync._config import Timeout
    from mailsync._facade import connect, connect_async, sender, sender_async
    from mailsync._message import (
        Address,
        Attachment,
        Folder,
        FolderList,
        HeaderMap,
        Message,
        MessageList,
    )
    from mailsync._query import Q
    from mailsync._registry import BackendSpec
    from mailsync._reports import DeliveryReport, RecipientReport, parse_report
    from mailsync._state import CursorLease, StateStore
    from mailsync._state_postgres import PostgresStateStore
    from mailsync._state_sqlite import SQLiteStateStore
    from mailsync._stream import AsyncMessageStream, MessageStream
    from mailsync._tracker import DeliveryTracker, RecipientStatus, TrackedMessage
    from mailsync._watch import (
        AccountStatus,
        AsyncWatchMany,
        RetryPolicy,
        WatchMany,
        watch_many,
        watch_many_async,
    )

__version__ = "0.1.0"

_LAZY = {
    "Account": "mailsync._accounts",
    "AccountStatus": "mailsync._watch",
    "AsyncWatchMany": "mailsync._watch",
    "RetryPolicy": "mailsync._watch",
    "WatchMany": "mailsync._watch",
    "account": "mailsync._accounts",
    "accounts": "mailsync._accounts",
    "Address": "mailsync._message",
    "AsyncMessageStream": "mailsync._stream",
    "AsyncRetriever": "mailsync._base",
    "AsyncSender": "mailsync._base",
    "AsyncSyncRun": "mailsync._base",
    "Attachment": "mailsync._message",
    "CursorLease": "mailsync._state",
    "BackendSpec": "mailsync._registry",
    "check_address": "mailsync._compose",
    "compose": "mailsync._compose",
    "connect": "mailsync._facade",
    "connect_async": "mailsync._facade",
    "DeliveryReport": "mailsync._reports",
    "DeliveryTracker": "mailsync._tracker",
    "Folder": "mailsync._message",
    "FolderList": "mailsync._message",
    "HeaderMap": "mailsync._message",
    "Message": "mailsync._message",
    "MessageList": "mailsync._message",
    "MessageStream": "mailsync._stream",
    "parse_report": "mailsync._reports",
    "PostgresStateStore": "mailsync._state_postgres",
    "Q": "mailsync._query",
    "RecipientReport": "mailsync._reports",
    "RecipientStatus": "mailsync._tracker",
    "Retriever": "mailsync._base",
    "Sender": "mailsync._base",
    "sender": "mailsync._facade",
    "sender_async": "mailsync._facade",
    "SendResult": "mailsync._base",
    "SQLiteStateStore": "mailsync._state_sqlite",
    "StateStore": "mailsync._state",
    "SyncRun": "mailsync._base",
    "Timeout": "mailsync._config",
    "TrackedMessage": "mailsync._tracker",
    "watch_many": "mailsync._watch",
    "watch_many_async": "mailsync._watch",
}


__getattr__, __dir__ = _lazy_loader("mailsync", _LAZY, globals())

__all__ = [
    "Account",
    "AccountStatus",
    "Address",
    "AsyncMessageStream",
    "AsyncRetriever",
    "AsyncSender",
    "AsyncSyncRun",
    "AsyncWatchMany",
    "Attachment",
    "AuthenticationError",
    "BackendSpec",
    "ConfigError",
    "ConnectionFailed",
    "CursorLease",
    "DeliveryReport",
    "DeliveryTracker",
    "DeliveryUncertain",
    "Folder",
    "FolderList",
    "FolderNotFound",
    "HeaderMap",
    "InvalidAddress",
    "LeaseLost",
    "MailTimeout",
    "MailsyncError",
    "Message",
    "MessageList",
    "MessageNotFound",
    "MessageStream",
    "MessageTooLarge",
    "PostgresStateStore",
    "ProtocolError",
    "Q",
    "RateLimited",
    "RecipientReport",
    "RecipientStatus",
    "RecipientsDeferred",
    "RecipientsRefused",
    "Retriever",
    "RetryPolicy",
    "SQLiteStateStore",
    "SendError",
    "SendResult",
    "Sender",
    "ServerError",
    "StateError",
    "StateStore",
    "StorageError",
    "SyncBusy",
    "SyncRun",
    "TemporaryFailure",
    "Timeout",
    "TrackedMessage",
    "Unsupported",
    "WatchMany",
    "__version__",
    "account",
    "accounts",
    "check_address",
    "compose",
    "connect",
    "connect_async",
    "parse_report",
    "sender",
    "sender_async",
    "watch_many",
    "watch_many_async",
]
