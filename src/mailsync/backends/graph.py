"""Microsoft Graph backends (``graph://me``, ``graph://user@tenant.example``): the generic API
retriever and sender bound to :class:`~mailsync.protocol.graph.GraphAPI`.

All of the protocol lives in :mod:`mailsync.protocol.graph`; this module only names it, so the
sync and async classes are the same code.
"""

from __future__ import annotations

from mailsync.backends._api import APIRetriever, APISender, AsyncAPIRetriever, AsyncAPISender
from mailsync.protocol.graph import GraphAPI

__all__ = ["AsyncGraphRetriever", "AsyncGraphSender", "GraphRetriever", "GraphSender"]


class GraphRetriever(APIRetriever):
    """Reads an Outlook / Microsoft 365 mailbox through Microsoft Graph.

    Options: ``base_url``, ``concurrency`` (default 4, Graph's limit per mailbox),
    ``retries``, ``retry_delay``, ``max_message_size``. See :mod:`mailsync.protocol.graph`.
    """

    api_class = GraphAPI


class AsyncGraphRetriever(AsyncAPIRetriever):
    """The asyncio twin of :class:`GraphRetriever`."""

    api_class = GraphAPI


class GraphSender(APISender):
    """Sends through Microsoft Graph's ``sendMail`` (saved to Sent Items)."""

    api_class = GraphAPI
    saves_sent_copy = True  # sendMail files it in Sent Items: save_to would add a second copy


class AsyncGraphSender(AsyncAPISender):
    """The asyncio twin of :class:`GraphSender`."""

    api_class = GraphAPI
    saves_sent_copy = True
