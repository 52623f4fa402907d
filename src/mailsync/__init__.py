"""mailsync: one consistent way to push and pull email.

Pull with :func:`connect` (IMAP, POP3, Maildir, mbox; Gmail, Graph and JMAP are planned), push
with :func:`sender` (SMTP, Maildir, mbox), and get the same :class:`Message`, the same errors,
the same incremental ``sync()`` cursor and the same ``watch()`` from every backend.

Everything public is re-exported here; the modules behind it are private.
"""

from __future__ import annotations

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
from mailsync._errors import (
    AuthenticationError,
    ConfigError,
    ConnectionFailed,
    FolderNotFound,
    InvalidAddress,
    MailsyncError,
    MailTimeout,
    MessageNotFound,
    ProtocolError,
    RateLimited,
    RecipientsRefused,
    SendError,
    ServerError,
    TemporaryFailure,
    Unsupported,
)
from mailsync._facade import connect, connect_async, sender, sender_async
from mailsync._message import Address, Attachment, Folder, HeaderMap, Message, MessageList
from mailsync._query import Q
from mailsync._registry import BackendSpec
from mailsync._reports import DeliveryReport, RecipientReport, parse_report
from mailsync._state import SQLiteStateStore, StateStore
from mailsync._tracker import DeliveryTracker, RecipientStatus, TrackedMessage
from mailsync._watch import watch_many, watch_many_async

__version__ = "0.1.0"

__all__ = [
    "Account",
    "Address",
    "AsyncRetriever",
    "AsyncSender",
    "AsyncSyncRun",
    "Attachment",
    "AuthenticationError",
    "BackendSpec",
    "ConfigError",
    "ConnectionFailed",
    "DeliveryReport",
    "DeliveryTracker",
    "Folder",
    "FolderNotFound",
    "HeaderMap",
    "InvalidAddress",
    "MailTimeout",
    "MailsyncError",
    "Message",
    "MessageList",
    "MessageNotFound",
    "ProtocolError",
    "Q",
    "RateLimited",
    "RecipientReport",
    "RecipientStatus",
    "RecipientsRefused",
    "Retriever",
    "SQLiteStateStore",
    "SendError",
    "SendResult",
    "Sender",
    "ServerError",
    "StateStore",
    "SyncRun",
    "TemporaryFailure",
    "Timeout",
    "TrackedMessage",
    "Unsupported",
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
