"""The Gmail API backend: ``gmail://me`` (or ``gmail://alice@example.com``) with ``token=``.

Wiring only: the four classes name :class:`~mailsync.protocol.gmail.GmailAPI`, whose plans
(written once in :mod:`mailsync.protocol.gmail`) the generic API classes of
:mod:`mailsync.backends._api` run over ``httpx.Client`` or ``httpx.AsyncClient``. The sync and
async pairs are therefore the same code and cannot drift.
"""

from __future__ import annotations

from mailsync.backends._api import APIRetriever, APISender, AsyncAPIRetriever, AsyncAPISender
from mailsync.protocol.gmail import GmailAPI

__all__ = ["AsyncGmailRetriever", "AsyncGmailSender", "GmailRetriever", "GmailSender"]


class GmailRetriever(APIRetriever):
    """Reads and changes a Gmail mailbox through the Gmail API (labels are folders)."""

    api_class = GmailAPI


class AsyncGmailRetriever(AsyncAPIRetriever):
    """The asyncio twin of :class:`GmailRetriever`."""

    api_class = GmailAPI


class GmailSender(APISender):
    """Sends through ``users.messages.send``."""

    api_class = GmailAPI


class AsyncGmailSender(AsyncAPISender):
    """The asyncio twin of :class:`GmailSender`."""

    api_class = GmailAPI
