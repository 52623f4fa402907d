"""The generic provider-API backends: a Retriever and a Sender, sync and async, that run a
:class:`~mailsync.protocol.mailapi.MailAPI`'s plans over the HTTP performers.

A provider backend is a one-line subclass naming its ``MailAPI``::

    class GmailRetriever(APIRetriever):
        api_class = GmailAPI

Everything here is wiring: create the performer lazily (connecting on first use), run each
operation's plan with the blocking or the asyncio driver, let ``close()``/``aclose()`` cut a
poll wait or a backoff short. The sync and async classes differ only in ``await``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any, ClassVar, TypeVar

from mailsync._base import (
    AsyncRetriever,
    AsyncSender,
    MessageRef,
    OutgoingMessage,
    Retriever,
    Sender,
    SendResult,
    SyncStep,
    message_refs,
)
from mailsync._config import Endpoint
from mailsync._envelope import Envelope, outgoing_bytes, prepare
from mailsync._errors import Unsupported
from mailsync._message import Folder, Message
from mailsync._plans import Plan, arun, astream, run, stream
from mailsync._query import Q
from mailsync.backends._http import AsyncHTTPPerformer, HTTPPerformer
from mailsync.protocol.events import AwaitEvent
from mailsync.protocol.mailapi import MailAPI

__all__ = ["APIRetriever", "APISender", "AsyncAPIRetriever", "AsyncAPISender"]

T = TypeVar("T")


def _performer_args(api: MailAPI) -> dict[str, Any]:
    return {
        "base_url": api.base_url(),
        "context": api.context,
        "concurrency": api.concurrency,
    }


class _Blocking:
    """Runs one MailAPI's plans on an ``httpx.Client`` made on first use."""

    api: MailAPI
    _performer: HTTPPerformer | None
    _stop_wait: Callable[[float], Any]

    def _http(self) -> HTTPPerformer:
        if self._performer is None:
            self._performer = HTTPPerformer(self.api.endpoint, **_performer_args(self.api))
        return self._performer

    def _perform(self, op: Any) -> Any:
        return self._http()(op)

    def _run(self, plan: Plan[T]) -> T:
        return run(plan, self._perform, context=self.api.context, sleep=self._stop_wait)

    def _stream(self, plan: Plan[Any]) -> Iterator[Any]:
        return stream(plan, self._perform, context=self.api.context, sleep=self._stop_wait)

    def _drop(self) -> None:
        performer, self._performer = self._performer, None
        if performer is not None:
            performer.close()


class _Async:
    """Runs one MailAPI's plans on an ``httpx.AsyncClient`` made on first use."""

    api: MailAPI
    _performer: AsyncHTTPPerformer | None
    _stop_wait: Callable[[float], Awaitable[Any]]

    def _http(self) -> AsyncHTTPPerformer:
        if self._performer is None:
            self._performer = AsyncHTTPPerformer(self.api.endpoint, **_performer_args(self.api))
        return self._performer

    async def _perform(self, op: Any) -> Any:
        return await self._http()(op)

    async def _run(self, plan: Plan[T]) -> T:
        return await arun(plan, self._perform, context=self.api.context, sleep=self._stop_wait)

    def _stream(self, plan: Plan[Any]) -> AsyncIterator[Any]:
        return astream(plan, self._perform, context=self.api.context, sleep=self._stop_wait)

    async def _drop(self) -> None:
        performer, self._performer = self._performer, None
        if performer is not None:
            await performer.aclose()


class APIRetriever(_Blocking, Retriever):
    """A Retriever over a provider's HTTP API; subclasses set :attr:`api_class`."""

    api_class: ClassVar[type[MailAPI]] = MailAPI

    def __init__(self, endpoint: Endpoint, *, state: Any = None) -> None:
        super().__init__(endpoint, state=state)
        self.api = self.api_class(endpoint)
        self.scheme = self.api.scheme  # type: ignore[misc]
        self.capabilities = self.api.capabilities
        self._performer = None
        self._stop_wait = self._stop.wait

    def folders(self) -> list[Folder]:
        """Every folder (label, mailbox) of the account."""
        return self._run(self.api.folders())

    def messages(
        self,
        folder: str = "INBOX",
        *,
        query: Q | None = None,
        headers_only: bool = False,
        limit: int | None = None,
    ) -> Iterator[Message]:
        """The folder's messages, oldest first, streamed (see :meth:`Retriever.messages`)."""
        if limit is not None and limit <= 0:
            return iter(())
        plan = self.api.messages(folder, query=query, headers_only=headers_only, limit=limit)
        return self._stream(plan)

    def get(self, id: str) -> Message:
        """One message by its id."""
        return self._run(self.api.get(id))

    def _sync_steps(
        self,
        folder: str,
        cursor: dict[str, Any] | None,
        known: Callable[[Iterable[str]], set[str]],
    ) -> Iterator[SyncStep]:
        return self._stream(self.api.sync_steps(folder, cursor, known))

    def _wait_for_change(self, folder: str, timeout: float) -> None:
        self._run(self.api.wait_for_change(folder, timeout))

    def _perform(self, op: Any) -> Any:
        if isinstance(op, AwaitEvent) and self._stop.is_set():
            return None  # closed while the plan got there: no new wait on a new client
        return super()._perform(op)

    def _disconnect(self) -> None:
        self._drop()

    def set_flags(
        self,
        msgs: MessageRef | Sequence[MessageRef],
        *,
        add: Iterable[str] = (),
        remove: Iterable[str] = (),
    ) -> None:
        """Add and remove flags (see :meth:`Retriever.set_flags`)."""
        ids = message_refs(msgs)
        if ids:
            self._run(self.api.set_flags(ids, add=tuple(add), remove=tuple(remove)))

    def move(self, msgs: MessageRef | Sequence[MessageRef], folder: str) -> None:
        """Move messages to another folder (see :meth:`Retriever.move`)."""
        ids = message_refs(msgs)
        if ids:
            self._run(self.api.move_from(ids, _sources(msgs), folder))

    def delete(self, msgs: MessageRef | Sequence[MessageRef], *, permanent: bool = False) -> None:
        """Delete messages, to the Trash unless ``permanent`` (see :meth:`Retriever.delete`)."""
        ids = message_refs(msgs)
        if ids:
            self._run(self.api.delete(ids, permanent=permanent))

    def append(
        self, folder: str, message: OutgoingMessage, flags: Iterable[str] = ()
    ) -> str | None:
        """Store a message in a folder; return its id when the provider says."""
        return self._run(self.api.append(folder, outgoing_bytes(message), tuple(flags)))


class AsyncAPIRetriever(_Async, AsyncRetriever):
    """The asyncio twin of :class:`APIRetriever`; subclasses set :attr:`api_class`."""

    api_class: ClassVar[type[MailAPI]] = MailAPI

    def __init__(self, endpoint: Endpoint, *, state: Any = None) -> None:
        super().__init__(endpoint, state=state)
        self.api = self.api_class(endpoint)
        self.scheme = self.api.scheme  # type: ignore[misc]
        self.capabilities = self.api.capabilities
        self._performer = None
        self._stop_wait = self._sleep_unless_stopped

    async def folders(self) -> list[Folder]:
        """Every folder (label, mailbox) of the account."""
        return await self._run(self.api.folders())

    async def messages(
        self,
        folder: str = "INBOX",
        *,
        query: Q | None = None,
        headers_only: bool = False,
        limit: int | None = None,
    ) -> AsyncIterator[Message]:
        """The folder's messages, oldest first (see :meth:`Retriever.messages`)."""
        if limit is not None and limit <= 0:
            return
        plan = self.api.messages(folder, query=query, headers_only=headers_only, limit=limit)
        items = self._stream(plan)
        try:
            async for message in items:
                yield message
        finally:
            await items.aclose()  # type: ignore[attr-defined]

    async def get(self, id: str) -> Message:
        """One message by its id."""
        return await self._run(self.api.get(id))

    async def _sync_steps(
        self,
        folder: str,
        cursor: dict[str, Any] | None,
        known: Callable[[Iterable[str]], set[str]],
    ) -> AsyncIterator[SyncStep]:
        items = self._stream(self.api.sync_steps(folder, cursor, known))
        try:
            async for step in items:
                yield step
        finally:
            await items.aclose()  # type: ignore[attr-defined]

    async def _wait_for_change(self, folder: str, timeout: float) -> None:
        # aclose() from another task must end the wait at once, whatever the plan waits on (a
        # sleep, or an event stream that is only read again when the server sends something).
        import asyncio

        waiting = asyncio.ensure_future(self._run(self.api.wait_for_change(folder, timeout)))
        stopping = asyncio.ensure_future(self._stop_event.wait())
        try:
            await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiting, stopping):
                if not task.done():
                    task.cancel()
            await asyncio.gather(waiting, stopping, return_exceptions=True)
        if not self._stop_event.is_set():
            waiting.result()

    async def _disconnect(self) -> None:
        await self._drop()

    async def set_flags(
        self,
        msgs: MessageRef | Sequence[MessageRef],
        *,
        add: Iterable[str] = (),
        remove: Iterable[str] = (),
    ) -> None:
        """Add and remove flags (see :meth:`Retriever.set_flags`)."""
        ids = message_refs(msgs)
        if ids:
            await self._run(self.api.set_flags(ids, add=tuple(add), remove=tuple(remove)))

    async def move(self, msgs: MessageRef | Sequence[MessageRef], folder: str) -> None:
        """Move messages to another folder (see :meth:`Retriever.move`)."""
        ids = message_refs(msgs)
        if ids:
            await self._run(self.api.move_from(ids, _sources(msgs), folder))

    async def delete(
        self, msgs: MessageRef | Sequence[MessageRef], *, permanent: bool = False
    ) -> None:
        """Delete messages, to the Trash unless ``permanent`` (see :meth:`Retriever.delete`)."""
        ids = message_refs(msgs)
        if ids:
            await self._run(self.api.delete(ids, permanent=permanent))

    async def append(
        self, folder: str, message: OutgoingMessage, flags: Iterable[str] = ()
    ) -> str | None:
        """Store a message in a folder; return its id when the provider says."""
        return await self._run(self.api.append(folder, outgoing_bytes(message), tuple(flags)))


class APISender(_Blocking, Sender):
    """A Sender over a provider's HTTP API; subclasses set :attr:`api_class`."""

    api_class: ClassVar[type[MailAPI]] = MailAPI

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(endpoint)
        self.api = self.api_class(endpoint)
        self.scheme = self.api.scheme  # type: ignore[misc]
        self._performer = None
        self._stop_wait = _sleep

    def send(
        self,
        message: OutgoingMessage,
        *,
        notify: Iterable[str] | str | None = None,
        ret: str | None = None,
        envid: str | None = None,
        mail_from: str | None = None,
        rcpt_to: Iterable[str] | None = None,
    ) -> SendResult:
        """Send one message (see :meth:`Sender.send`)."""
        envelope = _prepare(self.api, message, mail_from, rcpt_to)
        return self._run(self.api.send(envelope, notify=notify, ret=ret, envid=envid))

    def close(self) -> None:
        """Close the HTTP client."""
        self._drop()


class AsyncAPISender(_Async, AsyncSender):
    """The asyncio twin of :class:`APISender`."""

    api_class: ClassVar[type[MailAPI]] = MailAPI

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(endpoint)
        self.api = self.api_class(endpoint)
        self.scheme = self.api.scheme  # type: ignore[misc]
        self._performer = None
        self._stop_wait = _asleep

    async def send(
        self,
        message: OutgoingMessage,
        *,
        notify: Iterable[str] | str | None = None,
        ret: str | None = None,
        envid: str | None = None,
        mail_from: str | None = None,
        rcpt_to: Iterable[str] | None = None,
    ) -> SendResult:
        """Send one message (see :meth:`Sender.send`)."""
        envelope = _prepare(self.api, message, mail_from, rcpt_to)
        return await self._run(self.api.send(envelope, notify=notify, ret=ret, envid=envid))

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._drop()


def _prepare(
    api: MailAPI,
    message: OutgoingMessage,
    mail_from: str | None,
    rcpt_to: Iterable[str] | None,
) -> Envelope:
    """The envelope and bytes to hand to ``api.send``."""
    if not api.recipients_from_headers:
        return prepare(message, mail_from=mail_from, rcpt_to=rcpt_to)
    envelope = prepare(message, keep_bcc=True)
    if rcpt_to is not None and set(rcpt_to) != set(envelope.recipients):
        raise Unsupported(
            f"{api.name} sends to the recipients the message names (To, Cc, Bcc); it cannot "
            "take other envelope recipients (rcpt_to)"
        )
    if mail_from is not None and mail_from.strip("<> ") != envelope.mail_from:
        raise Unsupported(
            f"{api.name} sends as the account (or an address it may send as, named in From); "
            "it cannot take another envelope sender (mail_from)"
        )
    return envelope


def _sources(msgs: MessageRef | Sequence[MessageRef]) -> list[str | None]:
    """The folder each message was read from, None for a bare id (in ``message_refs`` order)."""
    if isinstance(msgs, Message | str):
        msgs = [msgs]
    return [m.folder if isinstance(m, Message) else None for m in msgs]


def _sleep(seconds: float) -> None:
    import time

    time.sleep(seconds)


async def _asleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)
