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

from typing import TYPE_CHECKING as _TYPE_CHECKING

from mailsync._lazy import lazy_loader as _lazy_loader

if _TYPE_CHECKING:
    from mailsync._base import SyncStep, message_refs
    from mailsync._config import Endpoint, Secret, Timeout, TokenProvider
    from mailsync._envelope import Envelope, outgoing_bytes, prepare
    from mailsync._errors import map_exceptions
    from mailsync._message import as_bytes, header_block, message_identity
    from mailsync._threaded import ThreadedAsyncRetriever, ThreadedAsyncSender

# Loaded on first use, like the names of the mailsync package itself: importing one backend
# module (which imports this package first) must not pay for the whole kit.
_LAZY = {
    "SyncStep": "mailsync._base",
    "ThreadedAsyncRetriever": "mailsync._threaded",
    "ThreadedAsyncSender": "mailsync._threaded",
    "message_refs": "mailsync._base",
    "Envelope": "mailsync._envelope",
    "outgoing_bytes": "mailsync._envelope",
    "prepare": "mailsync._envelope",
    "Endpoint": "mailsync._config",
    "Secret": "mailsync._config",
    "Timeout": "mailsync._config",
    "TokenProvider": "mailsync._config",
    "map_exceptions": "mailsync._errors",
    "as_bytes": "mailsync._message",
    "header_block": "mailsync._message",
    "message_identity": "mailsync._message",
}


__getattr__, __dir__ = _lazy_loader("mailsync.backends", _LAZY, globals())

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
    "outgoing_bytes",
    "prepare",
]
