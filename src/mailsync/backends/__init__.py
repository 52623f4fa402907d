"""Backends, and the kit for writing one.

The modules in this package (``imap``, ``pop3``, ``smtp``, ``maildir``...) are private:
applications use :func:`mailsync.connect` and :func:`mailsync.sender`, which find them by URL
scheme. Pure protocol logic that does no I/O lives in :mod:`mailsync.protocol`, shared by the
sync and async backends of the same protocol.

What this package itself exports is the public kit for third-party backends (registered
through the ``mailsync.backends`` entry-point group with a :class:`mailsync.BackendSpec`):
the parsed :class:`Endpoint` a backend is constructed from, :class:`SyncStep` for
``_sync_steps``, the thread adapters that give a sync backend its async twin,
:func:`map_exceptions` for translating errors at the boundary, and small message helpers.
"""

from mailsync._base import SyncStep, ThreadedAsyncRetriever, ThreadedAsyncSender, message_refs
from mailsync._compose import Envelope, prepare
from mailsync._config import Endpoint, Secret, Timeout, TokenProvider
from mailsync._errors import map_exceptions
from mailsync._message import as_bytes, header_block, message_identity

__all__ = [
    "Endpoint",
    "Envelope",
    "Secret",
    "SyncStep",
    "ThreadedAsyncRetriever",
    "ThreadedAsyncSender",
    "Timeout",
    "TokenProvider",
    "as_bytes",
    "header_block",
    "map_exceptions",
    "message_identity",
    "message_refs",
    "prepare",
]
