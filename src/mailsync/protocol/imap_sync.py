"""IMAP's sync rules, shared by the sync and the async IMAP backends: the cursor, when a
resync is needed, how FETCH batches are sized, and the walk a ``sync()`` makes, written once
as a plan (:mod:`mailsync._plans`).

This module owns:

- :class:`SyncCursor` and :func:`plan_sync`: UIDVALIDITY + the highest UID delivered (+
  HIGHESTMODSEQ), and whether a sync is incremental, has nothing to do, or must resync;
- the resync identity of a message (:func:`fetched_identity`: its Message-ID, else a digest);
- :class:`Batching`: how many UIDs one ``UID FETCH`` asks for;
- :func:`sync_steps`: the walk itself. It yields two IMAP operations, :class:`Search` (from
  :mod:`mailsync.protocol.imap_search`, which asks a big folder in windows) and
  :class:`Fetch`, which each backend performs on its own connection (imaplib, aioimaplib),
  and ``Call`` for the state store's ``known()``, which the async driver runs on a thread.

The rules, once for both backends: messages come in UID order, in batches sized by
:class:`Batching`, from UIDs listed by a SEARCH that a big folder answers in windows of UIDs
(:mod:`mailsync.protocol.imap_search`: nothing skipped or listed twice when messages come or
go between two); the cursor moves past a batch once it is complete; a UID the SEARCH listed
and the FETCH left out is never skipped silently (see :func:`sync_steps`); a resync (no cursor, or
UIDVALIDITY changed) first fetches only the Message-ID header of each batch and skips the
messages delivered before, then skips messages without a Message-ID whose very bytes were
delivered before; and a folder whose UIDVALIDITY changes while it is being read ends the walk
with :class:`~mailsync.TemporaryFailure` (the next sync resyncs) rather than mixing two
folders' UIDs. A message over ``max_message_size`` (:class:`~mailsync.MessageTooLarge`, raised
by the backend from the size the server announces, before reading it) is skipped with a
warning naming its id, and the walk goes on with the rest of its batch on a new connection:
the cursor moves past it, so a sync never stalls on it; ``get(id)`` on a retriever with a
larger limit fetches it (:func:`_fetch_skipping`).

It must not do I/O or know which library speaks IMAP.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, TypeAlias

from mailsync._base import SyncStep
from mailsync._errors import ConfigError, MessageTooLarge, ProtocolError
from mailsync._message import Message, header_block, message_identity
from mailsync._plans import Call, Emit, Operation, Plan
from mailsync._sync_run import warn_skipped
from mailsync.protocol.imap import (
    BODY_KEYS,
    FETCH_BODY,
    FolderStatus,
    format_message_id,
    message_from_fetch,
    uid_batches,
    uid_set,
)
from mailsync.protocol.imap_search import Search, search_steps, search_window

__all__ = [
    "MAX_HELD",
    "MESSAGE_ID_ITEMS",
    "BatchSizer",
    "Batching",
    "Fetch",
    "Known",
    "Search",
    "SyncCursor",
    "SyncPlan",
    "fast_message_id",
    "fetched_identity",
    "message_ids",
    "messages_from_fetch",
    "plan_sync",
    "sync_steps",
    "uid_of",
]

log = logging.getLogger("mailsync.imap")

#: FETCH items of a resync's first pass: only the Message-ID header.
MESSAGE_ID_ITEMS = "UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"
#: Which of these identities were delivered before (the state store's ``known``).
Known: TypeAlias = Callable[[Iterable[str]], set[str]]
_BODY_ITEMS = frozenset(BODY_KEYS)
#: At most this many UIDs held back in a cursor (listed by SEARCH, left out by FETCH, still
#: there); past it the cursor stops before the next one instead (see :func:`sync_steps`).
MAX_HELD = 1000


# -- the cursor -------------------------------------------------------------------------------


_MESSAGE_ID_HEADER = re.compile(
    rb"^message-id[ \t]*:[ \t]*(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE
)
_ANGLE_ID = re.compile(rb"<([^<>\s]+)>")


def fast_message_id(raw: bytes) -> str | None:
    """The Message-ID of raw message bytes without angle brackets, read from the header block
    alone (no full parse: a resync computes this for every message in the folder)."""
    head = header_block(raw)
    match = _MESSAGE_ID_HEADER.search(head)
    if match is None:
        return None
    value = match.group(1).strip()
    angle = _ANGLE_ID.search(value)
    found = angle.group(1) if angle else value.strip(b"<>").strip()
    return found.decode("utf-8", "replace") or None


def fetched_identity(raw: bytes) -> str:
    """The identity a resync compares (``mid:<Message-ID>``, else ``sha256:`` of the bytes),
    via :func:`mailsync._message.message_identity`."""
    return message_identity(fast_message_id(raw), raw)


@dataclass(frozen=True, slots=True)
class SyncCursor:
    """Where a folder's ``sync()`` stands: UIDVALIDITY, the highest UID delivered, the
    HIGHESTMODSEQ seen where CONDSTORE is offered, and the UIDs held back: listed by SEARCH,
    left out of every FETCH answer, and still in the folder, to be fetched again by the next
    sync. Stored as a small JSON-able dict (``held`` only when there are some)."""

    uidvalidity: int
    uid: int = 0
    modseq: int | None = None
    held: tuple[int, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The form saved in the state store."""
        data: dict[str, Any] = {"v": 1, "uidvalidity": self.uidvalidity, "uid": self.uid}
        if self.modseq is not None:
            data["modseq"] = self.modseq
        if self.held:
            data["held"] = list(self.held)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> SyncCursor | None:
        """A saved cursor, or None when there is none or it is not one of ours."""
        if not data:
            return None
        try:
            modseq = data.get("modseq")
            return cls(
                int(data["uidvalidity"]),
                int(data.get("uid", 0)),
                int(modseq) if modseq is not None else None,
                tuple(sorted({int(uid) for uid in data.get("held") or ()})),
            )
        except (KeyError, TypeError, ValueError):
            return None

    def after(self, uid: int, status: FolderStatus) -> SyncCursor:
        """The cursor once message ``uid`` of a folder in ``status`` has been delivered."""
        held = tuple(h for h in self.held if h != uid)
        return SyncCursor(status.uidvalidity, max(self.uid, uid), status.highestmodseq, held)

    def holding(self, add: Iterable[int] = (), drop: Iterable[int] = ()) -> SyncCursor:
        """The cursor with UIDs added to, and others taken from, those held back."""
        held = (set(self.held) | set(add)) - set(drop)
        return SyncCursor(self.uidvalidity, self.uid, self.modseq, tuple(sorted(held)))


@dataclass(frozen=True, slots=True)
class SyncPlan:
    """What a ``sync()`` must fetch.

    Attributes:
        mode: ``"incremental"``: only UIDs above ``since_uid``; ``"unchanged"``: nothing can be
            new (UIDNEXT says no UID above the cursor was given out); ``"full"``: first sync,
            everything; ``"resync"``: UIDVALIDITY changed, everything, skipping messages
            whose identity was delivered before.
        since_uid: The highest UID already delivered (fetch ``since_uid + 1:*``).
        cursor: The cursor to start from (UIDVALIDITY of the folder as it is now).
    """

    mode: Literal["incremental", "unchanged", "full", "resync"]
    since_uid: int
    cursor: SyncCursor

    @property
    def checks_identities(self) -> bool:
        """True when messages must be filtered by the delivered identities."""
        return self.mode in ("full", "resync")


def plan_sync(saved: Mapping[str, Any] | None, status: FolderStatus) -> SyncPlan:
    """Decide between an incremental sync and a resync from the saved cursor and the folder's
    current status.

    - No cursor: ``full`` (identities are still checked, so a lost cursor never redelivers).
    - Same UIDVALIDITY: ``incremental`` from the cursor's UID, or ``unchanged`` when UIDNEXT
      shows no newer UID exists (then no SEARCH is needed at all).
    - Different UIDVALIDITY (folder recreated, server migrated): ``resync``.
    """
    cursor = SyncCursor.from_dict(saved)
    fresh = SyncCursor(status.uidvalidity, 0, status.highestmodseq)
    if cursor is None:
        return SyncPlan("full", 0, fresh)
    if cursor.uidvalidity != status.uidvalidity:
        return SyncPlan("resync", 0, fresh)
    current = SyncCursor(status.uidvalidity, cursor.uid, status.highestmodseq, cursor.held)
    if status.uidnext and status.uidnext <= cursor.uid + 1:
        return SyncPlan("unchanged", cursor.uid, current)
    return SyncPlan("incremental", cursor.uid, current)


# -- batches ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Batching:
    """How many UIDs one ``UID FETCH`` asks for.

    A reader that holds a batch in memory (a sync walk, the async backend's ``messages()``)
    sizes each batch by what the previous one weighed, so a folder of large messages never
    sits in memory whole; its first batch is small, so the first message comes quickly and
    the sizing has something to go by. A reader that streams message by message holds one
    message whatever the batch: its batches are sized for round trips only
    (:meth:`streaming`).

    Attributes:
        first: UIDs in the first batch.
        most: UIDs in any batch at most.
        budget: Bytes a batch should bring at most, judged by the previous batch's average
            message (None: no bound).
    """

    first: int = 50
    most: int = 500
    budget: int | None = 8 << 20

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Batching:
        """The default, or fixed batches of ``batch_size`` UIDs (URL query or option).

        Raises:
            ConfigError: ``batch_size`` is not a positive number.
        """
        fixed = params.get("batch_size")
        if fixed is None:
            return cls()
        try:
            size = int(fixed)
        except (TypeError, ValueError) as exc:
            raise ConfigError("batch_size must be a positive number of messages") from exc
        if size < 1:
            raise ConfigError("batch_size must be a positive number of messages")
        return cls(first=size, most=size)

    def streaming(self) -> Batching:
        """The batches of a reader that streams: always the largest, no byte budget."""
        return Batching(first=self.most, most=self.most, budget=None)

    def sizer(self) -> BatchSizer:
        """A sizer for one stream of batches."""
        return BatchSizer(self)


class BatchSizer:
    """Splits one list of UIDs into batches as :class:`Batching` says, learning from the
    messages of each batch how large the next may be."""

    def __init__(self, batching: Batching) -> None:
        self.batching = batching
        self.size = batching.first

    def split(self, uids: Sequence[int]) -> Iterator[list[int]]:
        """``uids`` in consecutive batches, each sized when it is taken."""
        start = 0
        while start < len(uids):
            batch = list(uids[start : start + self.size])
            start += len(batch)
            yield batch

    def learn(self, messages: Sequence[Message]) -> None:
        """Size the next batch from the messages of the last one."""
        batching = self.batching
        if batching.budget is None:
            self.size = batching.most
            return
        if not messages:
            return
        average = max(sum(len(m.raw) for m in messages) // len(messages), 1)
        self.size = max(1, min(batching.most, batching.budget // average))


# -- FETCH results ----------------------------------------------------------------------------


def messages_from_fetch(
    fetched: Iterable[Mapping[bytes, Any]], folder: str, uidvalidity: int, uids: Iterable[int]
) -> list[Message]:
    """The messages of one ``UID FETCH`` answer for ``uids``, in UID order. Unsolicited FETCH
    responses (another client changed a flag) carry no body, or another UID, and are left
    out, as is a second response for one UID, and a message without a UID (:func:`uid_of`)."""
    wanted = set(uids)
    out = []
    for attributes in fetched:
        if not _BODY_ITEMS.intersection(attributes):
            continue
        uid = attributes.get(b"UID")
        if type(uid) is not int:  # rare: uid_of warns or refuses (a call less per message)
            uid = uid_of(attributes)
        if uid not in wanted:
            continue
        wanted.discard(uid)
        out.append(message_from_fetch(attributes, folder=folder, uidvalidity=uidvalidity))
    out.sort(key=lambda message: message.uid or 0)
    return out


def uid_of(attributes: Mapping[bytes, Any]) -> int | None:
    """The UID of a FETCH response that carries a message; None, with a warning, when it has
    none. RFC 3501 makes the UID part of every answer to UID FETCH, so such a response cannot
    be told apart from another message's: both IMAP backends leave it out, as they would a
    response the server left out, and ``sync()`` fetches that UID again (:func:`sync_steps`)
    rather than step over it.

    Raises:
        ProtocolError: The UID is there, and not a number: the response is malformed.
    """
    uid = attributes.get(b"UID")
    if isinstance(uid, int) and not isinstance(uid, bool):
        return uid
    if uid is not None:
        raise ProtocolError(f"a FETCH response has a UID that is not a number: {uid!r:.40}")
    log.warning("a FETCH response carries a message but no UID: it is left out")
    return None


def message_ids(fetched: Iterable[Mapping[bytes, Any]]) -> dict[int, str]:
    """``UID -> "mid:<Message-ID>"`` from the answer to a :data:`MESSAGE_ID_ITEMS` FETCH.
    A response without the header section or a UID (an unsolicited flag update), or a
    message without a Message-ID, gives nothing: such messages are judged by their bytes."""
    identities: dict[int, str] = {}
    for attributes in fetched:
        header = next((v for k, v in attributes.items() if k.startswith(b"BODY[")), None)
        uid = attributes.get(b"UID")
        if not isinstance(header, bytes | bytearray) or not isinstance(uid, int):
            continue
        message_id = fast_message_id(bytes(header) + b"\r\n")
        if message_id:
            identities[uid] = "mid:" + message_id
    return identities


# -- the walk ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fetch(Operation):
    """``UID FETCH`` of ``items`` for ``uids`` in ``folder`` (selected and checked as for
    :class:`Search`). With ``gmail``, Gmail's labels and thread ids are asked for too where
    the server offers them (X-GM-EXT-1). The result is the attributes of every FETCH
    response, in the order they came."""

    folder: str
    uidvalidity: int
    uids: tuple[int, ...]
    items: str
    gmail: bool = False


def sync_steps(
    folder: str,
    cursor: Mapping[str, Any] | None,
    status: FolderStatus,
    known: Known,
    batching: Batching,
    *,
    window: int | None = None,
) -> Plan[SyncCursor]:
    """What is new in ``folder`` (just selected, in ``status``) since ``cursor``, as
    :class:`~mailsync._base.SyncStep` items (see the module docstring). Returns where the
    cursor ends.

    A UID the SEARCH listed and the FETCH answer left out (the FETCH ended OK; or its response
    had no UID) is fetched once more; if it is still left out, a ``UID SEARCH`` of it tells a
    message expunged meanwhile (fine: gone) from one silently missing. The cursor moves past a
    missing message only by holding its UID back (:attr:`SyncCursor.held`), with a warning:
    the next ``sync()`` fetches it again, until it comes or is gone. Past :data:`MAX_HELD`
    held UIDs, the cursor stops before the next missing one instead, and the walk ends there
    (later messages come at the next sync, none twice).

    Args:
        folder: The folder's name.
        cursor: The saved cursor, or None.
        status: What selecting the folder said.
        known: Which identities were delivered before.
        batching: How to size the FETCH batches.
        window: The most messages one ``UID SEARCH`` may cover (default:
            :func:`~mailsync.protocol.imap_search.search_window`): a folder with more is
            searched in windows, so no answer outgrows the line the connection takes.
    """
    plan = plan_sync(cursor, status)
    saved = SyncCursor.from_dict(cursor)
    position = plan.cursor
    uidvalidity = status.uidvalidity
    window = window or search_window()
    uids: list[int] = []
    if plan.mode != "unchanged":
        uids = yield from search_steps(folder, status, window=window, after=plan.since_uid)
    # UIDs held back by an earlier sync come first (they are below the cursor's UID).
    uids = sorted(set(position.held) | set(uids))
    sizes = batching.sizer()
    for batch in sizes.split(uids):
        todo = batch
        if plan.checks_identities:
            todo = yield from _unknown(folder, uidvalidity, batch, known)
        fetched, todo = yield from _fetch_skipping(folder, uidvalidity, todo, FETCH_BODY)
        messages = messages_from_fetch(fetched, folder, uidvalidity, todo)
        missing = sorted(set(todo) - {int(m.uid or 0) for m in messages})
        stop = None
        if missing:
            again, gone, held = yield from _recheck(folder, uidvalidity, missing, window)
            messages = sorted([*messages, *again], key=lambda m: int(m.uid or 0))
            position, stop = _hold(position, gone, held, folder)
        sizes.learn(messages)
        for message in messages:
            assert message.uid is not None
            if stop is not None and int(message.uid) >= stop:
                break
            identity = fetched_identity(message.raw)
            position = position.after(int(message.uid), status)
            digest = plan.checks_identities and identity.startswith("sha256:")
            if digest and (yield Call(partial(known, [identity]))):
                continue  # no Message-ID, and these very bytes were delivered before
            yield Emit(SyncStep(message, position.as_dict(), identity))
        if stop is not None:  # too many held back: the cursor stops before this one
            position = SyncCursor(
                uidvalidity, max(position.uid, stop - 1), *position_tail(position)
            )
            yield Emit(SyncStep(None, position.as_dict()))
            return position
        if batch[-1] > position.uid:  # the batch is complete: the cursor moves past all of it
            position = position.after(batch[-1], status)
            yield Emit(SyncStep(None, position.as_dict()))
    if saved != position:
        yield Emit(SyncStep(None, position.as_dict()))  # e.g. HIGHESTMODSEQ moved on
    return position


def position_tail(position: SyncCursor) -> tuple[int | None, tuple[int, ...]]:
    """A cursor's MODSEQ and held UIDs, to build another cursor from."""
    return position.modseq, position.held


def _recheck(
    folder: str, uidvalidity: int, missing: list[int], window: int
) -> Plan[tuple[list[Message], list[int], list[int]]]:
    """UIDs a FETCH answer left out: fetched once more; those still left out are looked for
    with ``UID SEARCH`` (at most ``window`` at a time, as a batch may be larger). Returns the
    messages that came, the UIDs gone (expunged), and the UIDs still there but not
    delivered."""
    fetched = yield Fetch(folder, uidvalidity, tuple(missing), FETCH_BODY, gmail=True)
    again = messages_from_fetch(fetched, folder, uidvalidity, missing)
    still = sorted(set(missing) - {int(m.uid or 0) for m in again})
    if not still:
        return again, [], []
    there: set[int] = set()
    for chunk in uid_batches(still, window):
        there.update((yield Search(folder, uidvalidity, (b"UID", uid_set(chunk).encode()))))
    return again, [uid for uid in still if uid not in there], [uid for uid in still if uid in there]


def _hold(
    position: SyncCursor, gone: list[int], held: list[int], folder: str
) -> tuple[SyncCursor, int | None]:
    """The cursor holding back ``held`` (and no longer ``gone``), and the UID before which
    the walk must stop when that would hold back more than :data:`MAX_HELD` (else None)."""
    new = [uid for uid in held if uid not in position.held]
    room = max(MAX_HELD - len(position.held), 0)
    stop = new[room] if len(new) > room else None
    if held:
        log.warning(
            "%s: UID FETCH left out UID(s) %s, which SEARCH still lists: not delivered now; "
            "the next sync() fetches them again%s",
            folder,
            ", ".join(str(uid) for uid in held[:10]) + (" ..." if len(held) > 10 else ""),
            f" (too many held back: the cursor stops before UID {stop})" if stop else "",
        )
    return position.holding(add=new[:room], drop=gone), stop


def _unknown(folder: str, uidvalidity: int, uids: list[int], known: Known) -> Plan[list[int]]:
    """The UIDs whose message was not delivered before, judged by Message-ID (only that
    header is fetched); messages without one are fetched and judged by their bytes."""
    fetched, uids = yield from _fetch_skipping(folder, uidvalidity, uids, MESSAGE_ID_ITEMS)
    identities = message_ids(fetched)
    delivered: set[str] = yield Call(partial(known, list(identities.values())))
    return [uid for uid in uids if identities.get(uid) not in delivered]


def _fetch_skipping(
    folder: str, uidvalidity: int, uids: list[int], items: str
) -> Plan[tuple[list[Mapping[bytes, Any]], list[int]]]:
    """``UID FETCH`` of ``items`` for ``uids``, leaving out messages over the size limit:
    what was fetched, and the UIDs it was for.

    A message refused as too large (the backend drops the connection: the rest of the
    message was on the wire) is logged and left out, and the FETCH is asked again for the
    others. When the server did not name the message's UID before its body, the UIDs are
    fetched one by one, so the one to skip is known; each round leaves one out, so this ends.
    """
    todo = list(uids)
    gmail = items == FETCH_BODY  # Gmail's labels come with the bodies, not the first pass
    one_by_one = False
    while todo:
        try:
            if not one_by_one:
                fetched = yield Fetch(folder, uidvalidity, tuple(todo), items, gmail=gmail)
                return fetched, todo
            return (yield from _fetch_each(folder, uidvalidity, todo, items))
        except MessageTooLarge as exc:
            uid = exc.uid if exc.uid in todo else (todo[0] if len(todo) == 1 else None)
            if uid is None:
                one_by_one = True
                continue
            _skipped(folder, uidvalidity, uid, exc)
            todo.remove(uid)
    return [], []


def _fetch_each(
    folder: str, uidvalidity: int, uids: list[int], items: str
) -> Plan[tuple[list[Mapping[bytes, Any]], list[int]]]:
    fetched: list[Mapping[bytes, Any]] = []
    done: list[int] = []
    for uid in uids:
        try:
            fetched += yield Fetch(folder, uidvalidity, (uid,), items, gmail=items == FETCH_BODY)
        except MessageTooLarge as exc:
            _skipped(folder, uidvalidity, uid, exc)
            continue
        done.append(uid)
    return fetched, done


def _skipped(folder: str, uidvalidity: int, uid: int, error: MessageTooLarge) -> None:
    message_id = format_message_id(folder, uidvalidity, uid)
    warn_skipped(log, message_id, size=error.size, limit=error.limit)
