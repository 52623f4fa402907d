"""JMAP backends (``jmap://user@host``: Cyrus, Fastmail, Stalwart, Apache James...): the
generic API retriever and sender bound to :class:`~mailsync.protocol.jmap.JMAPAPI`.

All of the protocol lives in :mod:`mailsync.protocol.jmap`; this module only names it, so the
sync and async classes are the same code.
"""

from __future__ import annotations

from mailsync.backends._api import APIRetriever, APISender, AsyncAPIRetriever, AsyncAPISender
from mailsync.protocol.jmap import JMAPAPI

__all__ = ["AsyncJMAPRetriever", "AsyncJMAPSender", "JMAPRetriever", "JMAPSender"]


class JMAPRetriever(APIRetriever):
    """Reads a mailbox over JMAP (RFC 8620, RFC 8621), with push through the server's event
    source where it has one.

    Options: ``base_url``, ``concurrency`` (default 4, never above the server's
    ``maxConcurrentRequests``), ``retries``, ``retry_delay``, ``max_message_size``. See
    :mod:`mailsync.protocol.jmap`.
    """

    api_class = JMAPAPI


class AsyncJMAPRetriever(AsyncAPIRetriever):
    """The asyncio twin of :class:`JMAPRetriever`."""

    api_class = JMAPAPI


class JMAPSender(APISender):
    """Sends through JMAP ``EmailSubmission`` (kept in Sent, DSN where the server offers it)."""

    api_class = JMAPAPI
    saves_sent_copy = True  # onSuccessUpdateEmail files it in Sent: save_to would add another


class AsyncJMAPSender(AsyncAPISender):
    """The asyncio twin of :class:`JMAPSender`."""

    api_class = JMAPAPI
    saves_sent_copy = True
