"""Delivery tracking: what became of each recipient of the messages we sent.

This module owns :class:`DeliveryTracker`. It records what a sender returned
(:class:`~mailsync._base.SendResult`), reads the DSNs, MDNs and bounces that come back
(:func:`~mailsync._reports.parse_report`), ties each to the message it is about (by ENVID, then
by Message-ID) and moves every recipient along ``sent -> delayed -> delivered/failed ->
displayed``. A hard bounce (``RecipientReport.permanent``: the address does not exist) is
final; a soft one (a full mailbox, a block) may still be followed by a success. A DSN's
``relayed`` (handed to a server that sends no reports, e.g. Postfix handing over to the final
LMTP hop) and ``expanded`` are the last news that will come, so they count as ``delivered``;
the report's own action stays readable through :func:`parse_report`.

State lives in a :class:`~mailsync._state.StateStore`'s key/value area as JSON, so it survives
restarts and can be shared with other processes using the same store. Each report is applied
in one transaction where the store offers ``update_item`` (the SQLite store does), so
processes feeding reports about the same message concurrently lose none of them.

It must not do I/O of its own: mail arrives through the retriever it is handed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message as StdMessage
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias, runtime_checkable

from mailsync._mime import msg_id
from mailsync._reports import (
    DeliveryReport,
    Reason,
    RecipientReport,
    parse_report,
    refusal_outcome,
)

if TYPE_CHECKING:
    from mailsync._base import SendResult

__all__ = ["DeliveryTracker", "ItemStore", "RecipientState", "RecipientStatus", "TrackedMessage"]

#: Where a recipient stands; ``displayed`` comes from a read receipt (MDN).
RecipientState: TypeAlias = Literal["sent", "delayed", "delivered", "failed", "displayed"]

#: States after which the tracker still expects news.
_OPEN_STATES = frozenset({"sent", "delayed"})
# A report may only move a recipient to a state of the same or a higher rank: a late "delayed"
# never undoes "delivered" or "failed". A "relayed" report ranks like "delayed" (see
# _report_rank) so that it never undoes a failure, while a bounce after it still counts.
_RANK: Mapping[str, int] = {
    "sent": 0,
    "delayed": 1,
    "delivered": 2,
    "failed": 2,
    "displayed": 3,
}
_DSN_STATES: Mapping[str, RecipientState] = {
    "failed": "failed",
    "delayed": "delayed",
    "delivered": "delivered",
    "expanded": "delivered",  # delivered to a list, which then forwarded it
    "relayed": "delivered",  # handed to a server that sends no reports: the last news
}

_MESSAGES = "mailsync.delivery"
_ENVIDS = "mailsync.delivery.envid"


class ItemStore(Protocol):
    """The part of :class:`~mailsync._state.StateStore` the tracker uses."""

    def get_item(self, namespace: str, key: str) -> dict[str, Any] | None:
        """A stored JSON object, or None."""
        ...

    def set_item(self, namespace: str, key: str, value: Mapping[str, Any]) -> None:
        """Store a JSON object, replacing any earlier one."""
        ...

    def delete_item(self, namespace: str, key: str) -> None:
        """Remove a stored object if present."""
        ...

    def items(self, namespace: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every ``(key, value)`` in a namespace."""
        ...


@runtime_checkable
class _UpdatingItemStore(Protocol):
    """A store that can read-modify-write one item atomically
    (:meth:`~mailsync._state_sqlite.SQLiteStateStore.update_item`)."""

    def update_item(
        self,
        namespace: str,
        key: str,
        update: Callable[[dict[str, Any] | None], Mapping[str, Any] | None],
    ) -> dict[str, Any] | None: ...


class _RawMessage(Protocol):
    @property
    def raw(self) -> bytes: ...


class _SyncingRetriever(Protocol):
    def sync(self, folder: str = ...) -> Iterator[_RawMessage]: ...


class _WatchingRetriever(Protocol):
    def watch(self, folder: str = ..., *, poll_interval: float = ...) -> Iterator[_RawMessage]: ...


@dataclass(frozen=True, slots=True)
class RecipientStatus:
    """Where one recipient of a tracked message stands.

    Attributes:
        state: ``sent``, ``delayed``, ``relayed``, ``delivered``, ``failed`` or ``displayed``.
        status: The RFC 3463 status of the last report (``"5.1.1"``), if it gave one.
        diagnostic: The server's words from the last report or the refusal.
        updated_at: When the state last changed (the send time for ``sent``).
        reason: Why it failed or is delayed (:attr:`RecipientReport.reason`); ``unknown``
            otherwise.
        permanent: True after a hard bounce (the address is bad: stop sending to it). A
            hard bounce is final; no later report changes it.
    """

    state: RecipientState
    status: str | None = None
    diagnostic: str | None = None
    updated_at: datetime | None = None
    reason: Reason = "unknown"
    permanent: bool = False

    @property
    def pending(self) -> bool:
        """True while news is still expected (``sent`` or ``delayed``)."""
        return self.state in _OPEN_STATES


@dataclass(frozen=True, slots=True)
class TrackedMessage:
    """A sent message and the state of each of its recipients.

    Attributes:
        message_id: The Message-ID, without angle brackets.
        envid: The DSN envelope id it was sent with, if any.
        sent_at: When it was recorded as sent.
        recipients: Address (as sent) -> :class:`RecipientStatus`, read-only.
    """

    message_id: str
    envid: str | None
    sent_at: datetime
    recipients: Mapping[str, RecipientStatus] = field(hash=False)

    @property
    def pending(self) -> tuple[str, ...]:
        """The recipients still waiting for an outcome."""
        return tuple(a for a, s in self.recipients.items() if s.pending)

    @property
    def failed(self) -> tuple[str, ...]:
        """The recipients that could not be reached."""
        return tuple(a for a, s in self.recipients.items() if s.state == "failed")

    @property
    def bounced(self) -> tuple[str, ...]:
        """The recipients that hard-bounced: their address should no longer be sent to."""
        return tuple(a for a, s in self.recipients.items() if s.permanent)


class DeliveryTracker:
    """Follows sent messages through the reports that come back.

    ``record()`` what a sender returned, then ``feed()`` incoming messages (or let ``scan()``
    or ``watch()`` feed a retriever's new mail); ``status()`` and ``pending()`` say where things
    stand. With a store that has ``update_item`` (:class:`~mailsync.SQLiteStateStore`),
    each report is applied in one transaction, so several processes or threads may feed
    reports about the same message at once; with a store that has only ``get_item`` and
    ``set_item``, feed one message's reports from one process at a time.

    Args:
        store: Where the state lives: a :class:`~mailsync._state.StateStore` such as a
            retriever's ``state``, or anything with its ``get_item``, ``set_item``,
            ``delete_item`` and ``items`` (and ``update_item`` for atomic updates).
        clock: Returns the current time; for tests.
    """

    def __init__(self, store: ItemStore, *, clock: Callable[[], datetime] | None = None) -> None:
        self._store = store
        self._clock = clock or _utc_now

    def __repr__(self) -> str:
        return f"DeliveryTracker({self._store!r})"

    def record(
        self,
        result: SendResult,
        *,
        recipients: Iterable[str] | None = None,
        sent_at: datetime | None = None,
    ) -> TrackedMessage:
        """Start tracking a sent message; recording the same Message-ID again starts over.

        Args:
            result: What ``Sender.send`` returned. Refused recipients start as ``failed``.
            recipients: The recipients to track; by default the accepted and refused ones.
            sent_at: When it was sent; now by default.

        Returns:
            The newly tracked message.
        """
        sent_at = sent_at or self._clock()
        addresses = recipients if recipients is not None else (*result.accepted, *result.refused)
        refused = {address.lower(): reply for address, reply in result.refused.items()}
        states: dict[str, dict[str, Any]] = {}
        seen: set[str] = set()
        for address in addresses:
            if address.lower() in seen:
                continue
            seen.add(address.lower())
            reply = refused.get(address.lower())
            states[address] = _refused(reply, sent_at) if reply else _entry("sent", None, sent_at)
        message_id = _bare_message_id(result.message_id)
        data: dict[str, Any] = {
            "message_id": message_id,
            "envid": result.envid,
            "sent_at": sent_at.isoformat(),
            "recipients": states,
        }
        self._store.set_item(_MESSAGES, message_id, data)
        if result.envid:
            self._store.set_item(_ENVIDS, result.envid, {"message_id": message_id})
        return _tracked(data)

    def feed(
        self, message: DeliveryReport | _RawMessage | StdMessage | bytes
    ) -> TrackedMessage | None:
        """Apply a report to the message it is about.

        Args:
            message: A :class:`DeliveryReport`, or a message :func:`parse_report` accepts
                (a ``Message``, an ``EmailMessage``, bytes).

        Returns:
            The message's updated state, or None when ``message`` is not a report or is about
            no tracked message.
        """
        report = message if isinstance(message, DeliveryReport) else parse_report(message)
        if report is None:
            return None
        for key in self._candidate_keys(report):
            record = self._update(key, report)
            if record is not None:
                return _tracked(record)
        return None

    def scan(self, retriever: _SyncingRetriever, folder: str = "INBOX") -> list[TrackedMessage]:
        """Feed every message new since the last ``sync()`` of ``folder``.

        Args:
            retriever: A connected retriever; its sync cursor moves past what is fed.
            folder: Where the reports arrive.

        Returns:
            The tracked messages a report was about, in arrival order.
        """
        return [t for t in map(self.feed, retriever.sync(folder)) if t is not None]

    def watch(
        self, retriever: _WatchingRetriever, folder: str = "INBOX", *, poll_interval: float = 60.0
    ) -> Iterator[TrackedMessage]:
        """Feed new mail as it arrives, forever (``Retriever.watch``), yielding each update.

        Args:
            retriever: A connected retriever.
            folder: Where the reports arrive.
            poll_interval: Seconds between polls where the backend has no push.

        Yields:
            A tracked message each time a report about it arrives.
        """
        for message in retriever.watch(folder, poll_interval=poll_interval):
            tracked = self.feed(message)
            if tracked is not None:
                yield tracked

    def status(self, message_id: str) -> TrackedMessage | None:
        """The tracked state of a message, with or without angle brackets; None if unknown."""
        record = self._store.get_item(_MESSAGES, _bare_message_id(message_id))
        return _tracked(record) if record else None

    def pending(self) -> list[TrackedMessage]:
        """The tracked messages with a recipient still waiting for an outcome."""
        tracked = (_tracked(record) for _, record in self._store.items(_MESSAGES))
        return [t for t in tracked if t.pending]

    def forget(self, message_id: str) -> None:
        """Stop tracking a message."""
        key = _bare_message_id(message_id)
        record = self._store.get_item(_MESSAGES, key)
        if record and record.get("envid"):
            self._store.delete_item(_ENVIDS, record["envid"])
        self._store.delete_item(_MESSAGES, key)

    def _update(self, key: str, report: DeliveryReport) -> dict[str, Any] | None:
        """Apply ``report`` to the message tracked under ``key``; its record as it now is,
        or None when no message is tracked under ``key``."""

        def apply(record: dict[str, Any] | None) -> dict[str, Any] | None:
            if record is None or not self._apply(report, record["recipients"]):
                return None  # nothing to write
            return record

        if isinstance(self._store, _UpdatingItemStore):
            # Read and write in one transaction: another process's report in between would
            # otherwise be overwritten by this one.
            return self._store.update_item(_MESSAGES, key, apply)
        record = self._store.get_item(_MESSAGES, key)
        updated = apply(record)
        if updated is not None:
            self._store.set_item(_MESSAGES, key, updated)
        return record

    def _candidate_keys(self, report: DeliveryReport) -> Iterator[str]:
        """Message-IDs the report may be about, most trustworthy first: the ENVID we chose,
        then the ids the report quotes."""
        if report.envid:
            # Some servers echo the ENVID still xtext-encoded, as it was on the wire.
            for envid in dict.fromkeys((report.envid, _xtext_decode(report.envid))):
                entry = self._store.get_item(_ENVIDS, envid)
                if entry and entry.get("message_id"):
                    yield entry["message_id"]
        if report.original_message_id:
            yield report.original_message_id
        quoted = report.original_headers.get("Message-ID")
        if quoted:
            yield _bare_message_id(quoted)

    def _apply(self, report: DeliveryReport, states: dict[str, dict[str, Any]]) -> bool:
        changed = False
        for entry in report.recipients:
            address = _match_recipient(entry, states)
            new = _new_state(report.kind, entry.action)
            if address is None or new is None:
                continue
            current = states[address].get("state", "sent")
            if states[address].get("permanent"):
                continue  # a hard bounce is final: the address does not exist
            if _report_rank(report.kind, entry.action, new) < _RANK.get(current, 0):
                continue
            states[address] = _entry(new, entry, self._clock())
            changed = True
        return changed


def _report_rank(kind: str, action: str, state: str) -> int:
    if kind == "dsn" and action == "relayed":
        return _RANK["delayed"]
    return _RANK[state]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _entry(state: str, report: RecipientReport | None, when: datetime) -> dict[str, Any]:
    return {
        "state": state,
        "status": report.status if report else None,
        "diagnostic": report.diagnostic if report else None,
        "updated_at": when.isoformat(),
        "reason": report.reason if report else "unknown",
        "permanent": bool(report and report.permanent and state == "failed"),
    }


def _refused(reply: tuple[int, str], when: datetime) -> dict[str, Any]:
    code, text = reply
    status, reason, permanent = refusal_outcome(code, text)
    return {
        "state": "failed",
        "status": status,
        "diagnostic": f"{code} {text}".strip(),
        "updated_at": when.isoformat(),
        "reason": reason,
        "permanent": permanent,
    }


def _new_state(kind: str, action: str) -> RecipientState | None:
    if kind == "mdn":
        # Any disposition other than "displayed" (deleted, processed...) still proves the
        # message reached the recipient's mailbox.
        return "displayed" if action == "displayed" else "delivered"
    return _DSN_STATES.get(action)


def _match_recipient(entry: RecipientReport, states: Mapping[str, Any]) -> str | None:
    """The tracked address a report line is about: Original-Recipient is the address as we
    sent it; Final-Recipient may be where an alias led."""
    by_lower = {address.lower(): address for address in states}
    for candidate in (entry.original_recipient, entry.recipient, entry.final_recipient):
        if candidate and candidate.lower() in by_lower:
            return by_lower[candidate.lower()]
    return None


def _tracked(record: Mapping[str, Any]) -> TrackedMessage:
    recipients = {
        address: RecipientStatus(
            state=entry.get("state", "sent"),
            status=entry.get("status"),
            diagnostic=entry.get("diagnostic"),
            updated_at=_datetime(entry.get("updated_at")),
            reason=entry.get("reason", "unknown"),
            permanent=bool(entry.get("permanent", False)),
        )
        for address, entry in record.get("recipients", {}).items()
    }
    return TrackedMessage(
        message_id=record["message_id"],
        envid=record.get("envid"),
        sent_at=_datetime(record.get("sent_at")) or datetime.fromtimestamp(0, UTC),
        recipients=MappingProxyType(recipients),
    )


def _datetime(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _bare_message_id(value: str) -> str:
    return msg_id(value) or value.strip()


_XTEXT_HEX = re.compile(r"\+([0-9A-Fa-f]{2})")


def _xtext_decode(value: str) -> str:
    """RFC 3461 xtext: ``+2B`` is ``+``."""
    return _XTEXT_HEX.sub(lambda m: chr(int(m.group(1), 16)), value)
