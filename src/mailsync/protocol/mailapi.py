"""The shape of a provider API backend (Gmail, Graph, JMAP): its mail operations as plans.

A provider's protocol module subclasses :class:`MailAPI` and writes each Retriever and Sender
operation once, as a plan (:mod:`mailsync._plans`) that yields HTTP requests
(:class:`~mailsync.protocol.http.Send`, :class:`~mailsync.protocol.http.SendAll`) and builds
:class:`~mailsync.Message` values from the replies. The generic classes in
:mod:`mailsync.backends._api` bind those plans to the blocking and the asyncio HTTP performers,
so a provider's sync and async backends are the same code and cannot drift; the provider's
``backends/`` module only names its :class:`MailAPI` subclass.

Conventions every implementation keeps:

- Streaming plans (``messages``, ``sync_steps``) emit their items with
  :class:`~mailsync._plans.Emit`, download bodies a batch at a time (at most ``concurrency``
  requests, one :class:`~mailsync.protocol.http.SendAll`), and so hold a bounded number of
  messages in memory however large the folder.
- ``known`` (which sync identities were delivered before) reads the state store: plans call it
  through :class:`~mailsync._plans.Call`, never directly, so the async driver runs it on a
  thread.
- The instance may cache what it learnt (label ids, folder ids, a JMAP session) between plans:
  one instance serves one retriever or sender, never two at once.

This module is pure: no I/O, no httpx.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

from mailsync._base import SendResult
from mailsync._config import Endpoint, max_message_size, whole_number_option
from mailsync._envelope import Envelope
from mailsync._errors import MessageTooLarge, Unsupported
from mailsync._message import Folder, Message
from mailsync._plans import Plan, Sleep
from mailsync._query import Q
from mailsync._sync_run import warn_skipped
from mailsync.protocol.http import APIClient, api_root

__all__ = ["MailAPI", "canonical_folder", "chunks", "json_datetime", "whole_number_option"]

#: Options every API backend takes (keyword arguments of the facade, or URL query parameters).
COMMON_OPTIONS = frozenset(
    {"base_url", "transport", "concurrency", "retries", "retry_delay", "max_message_size"}
)


class MailAPI:
    """One provider's mail operations, written once as plans.

    Subclasses set the class attributes and implement the operations their provider has; the
    rest raise :class:`~mailsync.Unsupported`.

    Attributes:
        name: The provider's name in error messages (``"Gmail API"``).
        scheme: The URL scheme (``"gmail"``).
        capabilities: What the retriever offers (see :attr:`mailsync.Retriever.capabilities`).
        default_base_url: The API root when the ``base_url`` option is not given.
        concurrency: Requests in flight at once per account: the class sets the default, the
            ``concurrency`` option may change it per account, never above
            ``max_concurrency`` (a limit the provider documents).
        max_concurrency: The provider's own limit, if it has one.
        max_message_size: The ``max_message_size`` option (bytes; None for no bound): a
            message download past it is refused, and ``sync()`` skips that message
            (:meth:`skip_too_large`).
        options: The backend-specific options this backend accepts.
        recipients_from_headers: See the attribute's comment.
    """

    name: ClassVar[str] = "HTTP API"
    scheme: ClassVar[str] = ""
    capabilities: ClassVar[frozenset[str]] = frozenset()
    default_base_url: ClassVar[str] = ""
    concurrency: int = 4
    max_concurrency: ClassVar[int | None] = None
    options: ClassVar[frozenset[str]] = COMMON_OPTIONS
    #: The send call reads the recipients from the message's own To, Cc and Bcc fields (and
    #: removes Bcc before delivery), so the bytes it gets keep Bcc and no other envelope can
    #: be given (Gmail, Graph). False: the API takes an envelope (JMAP).
    recipients_from_headers: ClassVar[bool] = False

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        wanted = whole_number_option(endpoint.params, "concurrency", type(self).concurrency)
        assert wanted is not None
        limit = type(self).max_concurrency
        self.concurrency = wanted if limit is None else min(wanted, limit)
        self.max_message_size = max_message_size(endpoint.params)

    @property
    def context(self) -> str:
        """How error messages name this account (``"Gmail API (me)"``)."""
        who = self.endpoint.username or self.endpoint.host
        return f"{self.name} ({who})" if who else self.name

    def base_url(self) -> str:
        """The API root the performer resolves relative URLs against: the ``base_url``
        option, else :attr:`default_base_url` (a provider whose root depends on the account,
        such as a JMAP server's, overrides this)."""
        return api_root(self.endpoint, self.default_base_url)

    def skip_too_large(self, message_id: str, error: MessageTooLarge) -> None:
        """How ``sync()`` leaves out a message whose download was refused as larger than
        ``max_message_size``: a warning naming it. It is not recorded as delivered, but the
        change feed's cursor moves past it, so only a full pass (a first sync, an expired
        cursor) warns about it again; ``get(id)`` with a larger limit fetches it."""
        log = logging.getLogger(f"mailsync.{self.scheme}")
        warn_skipped(log, message_id, size=None, limit=self.max_message_size, context=self.context)

    @property
    def client(self) -> APIClient:
        """Authorization, error dialect and retry policy for
        :func:`~mailsync.protocol.http.call`."""
        raise NotImplementedError

    # -- reading ---------------------------------------------------------------------------

    def folders(self) -> Plan[list[Folder]]:
        """Every folder (label, mailbox) of the account."""
        raise Unsupported(f"{self.scheme} has no folders")

    def messages(
        self, folder: str, *, query: Q | None, headers_only: bool, limit: int | None
    ) -> Plan[None]:
        """Emit the folder's messages, oldest first (see :meth:`mailsync.Retriever.messages`)."""
        raise NotImplementedError

    def get(self, id: str) -> Plan[Message]:
        """One message by its id."""
        raise NotImplementedError

    def sync_steps(
        self,
        folder: str,
        cursor: dict[str, Any] | None,
        known: Callable[[Iterable[str]], set[str]],
    ) -> Plan[None]:
        """Emit :class:`~mailsync._base.SyncStep` values: what is new since ``cursor``."""
        raise NotImplementedError

    def wait_for_change(self, folder: str, timeout: float) -> Plan[None]:
        """Return when the folder may have changed, or after ``timeout`` (default: sleep)."""
        yield Sleep(timeout)

    # -- changing --------------------------------------------------------------------------

    def set_flags(
        self, ids: Sequence[str], *, add: Iterable[str], remove: Iterable[str]
    ) -> Plan[None]:
        """Add and remove flags."""
        raise Unsupported(f"{self.scheme} cannot change flags")

    def move(self, ids: Sequence[str], folder: str) -> Plan[None]:
        """Move messages to another folder."""
        raise Unsupported(f"{self.scheme} cannot move messages")

    def move_from(
        self, ids: Sequence[str], sources: Sequence[str | None], folder: str
    ) -> Plan[None]:
        """Move messages, told the folder each was read from (``sources[i]``, None for a
        bare id). Providers where a message sits in several folders at once (Gmail's labels)
        need the source to know what to take away; the default ignores it and calls
        :meth:`move`."""
        return self.move(ids, folder)

    def delete(self, ids: Sequence[str], *, permanent: bool) -> Plan[None]:
        """Delete messages (to the Trash unless ``permanent``)."""
        raise Unsupported(f"{self.scheme} cannot delete messages")

    def append(self, folder: str, raw: bytes, flags: Iterable[str]) -> Plan[str | None]:
        """Store a message in a folder; return its id when the provider says."""
        raise Unsupported(f"{self.scheme} cannot append messages")

    # -- sending ---------------------------------------------------------------------------

    def send(
        self,
        envelope: Envelope,
        *,
        notify: Iterable[str] | str | None,
        ret: str | None,
        envid: str | None,
    ) -> Plan[SendResult]:
        """Send one prepared message (see :meth:`mailsync.Sender.send`)."""
        raise Unsupported(f"{self.scheme} cannot send")

    def close(self) -> Plan[None]:
        """Say goodbye, if the provider wants that (nothing by default)."""
        yield from ()


# -- what every provider's plans use ------------------------------------------------------


def chunks(items: Sequence[Any], size: int) -> Iterator[list[Any]]:
    """``items`` in lists of at most ``size`` (at least one)."""
    step = max(1, size)
    for start in range(0, len(items), step):
        yield list(items[start : start + step])


def json_datetime(value: Any) -> datetime | None:
    """An RFC 3339 date-time from a JSON reply (``2024-05-01T10:00:00Z``), aware (UTC when it
    names no zone); None for anything else."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def canonical_folder(name: str) -> str:
    """``inbox`` and ``Inbox/Receipts`` are the INBOX and its child, in any case, as on IMAP;
    other names as they are."""
    head, sep, rest = name.partition("/")
    return f"INBOX{sep}{rest}" if head.upper() == "INBOX" else name
