"""Answers that list UIDs on one line, kept within the line a connection takes however large
the folder: ``UID SEARCH`` in windows (a plan, :mod:`mailsync._plans`), and changes in
batches (:func:`change_batches`). Shared by the sync and the async IMAP backends.

IMAP answers a SEARCH on one line (``* SEARCH 1 2 3 ...``), and both backends refuse a line
over ``MAX_LINE`` (1 MiB; :mod:`mailsync.protocol.imap_literals`), as they must against a
hostile server. At up to eleven bytes a UID (ten digits and a space), a search that lists a
folder of some 95,000 messages no longer fits, and ``messages()``, ``sync()`` and queries
would fail on every big archive or long-lived INBOX. So a search that may list more than
:func:`search_window` messages is asked in windows, each a range of UIDs that holds at most
that many messages:

- When the UIDs in question are dense (the folder's UIDNEXT says few were ever given out
  beyond the messages there), the windows are fixed UID ranges (``UID 1:47659``,
  ``UID 47660:95318`` ...): no more than that many UIDs, so no more messages, fit in one.
- Otherwise the UIDs at every window's last position are looked up first, with one
  ``UID SEARCH 47659,95318,...`` (message sequence numbers: one UID each), and the windows
  run between them: ``UID <after>:<that UID> <criteria>``. Messages are numbered densely
  1..EXISTS in UID order, so a window holds at most the positions between two looked-up ones.

The windows are ranges of UIDs, never of sequence numbers, and together they cover every UID
above the start exactly once (the last one is open: ``UID n:*``), which is what keeps the
sync cursor's rules (:mod:`mailsync.protocol.imap_sync`): a message expunged between two
windows shifts the sequence numbers of those after it, but not their UIDs, so no message is
skipped; none is listed twice, as no UID is in two windows; and mail that arrives meanwhile
gets a UID above every window's end but the last, so the open window finds it. Only the
windows' sizes depend on the positions looked up, and each is half of what the line holds,
which leaves the other half for messages expunged or arriving while the windows are asked.
A folder that fits in one window (under ~47,000 messages at 1 MiB) is searched in one round
trip, as before.

ESEARCH (RFC 4731, ``RETURN (ALL)``, answers as ranges) is not used: ranges shrink the answer
only where the UIDs are dense, so the windows would have to be as small for fragmented UIDs,
and plain SEARCH works on every server.

The other answers that list UIDs: the ``COPYUID`` code answering a MOVE or COPY (UIDPLUS)
lists the UIDs the command named, and the command line itself grows with them (servers
refuse long ones: Dovecot past 64 KiB), so a change names at most a batch of UIDs
(:func:`change_batches`); the async ``watch()`` asks whether mail came with ``UID SEARCH *``
(one UID); the sync walk's check of UIDs a FETCH left out is a batch at most. mailsync never
enables QRESYNC, so no server sends it ``VANISHED`` lists, and never searches by MODSEQ.

It must not do I/O or know which library speaks IMAP.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from mailsync._plans import Operation, Plan
from mailsync.protocol import imap_literals
from mailsync.protocol.imap import Criterion, FolderStatus, uid_batches

__all__ = [
    "CHANGE_BATCH",
    "SEARCH_OVERHEAD",
    "UID_WIDTH",
    "Search",
    "change_batches",
    "search_steps",
    "search_window",
]

#: The most bytes one UID takes in a SEARCH answer: ten digits (UIDs are 32-bit), a space.
UID_WIDTH = 11
#: What a SEARCH answer line holds besides its UIDs: ``* SEARCH``, a CONDSTORE
#: ``(MODSEQ n)`` tail, the CRLF; with room to spare.
SEARCH_OVERHEAD = 64
#: The most UIDs one STORE, MOVE, COPY or EXPUNGE names: under 6 KB of command line.
CHANGE_BATCH = 500


@dataclass(frozen=True, slots=True)
class Search(Operation):
    """``UID SEARCH`` in ``folder``, selected again if the connection moved on to another
    folder since, and still with ``uidvalidity`` (:class:`~mailsync.TemporaryFailure`
    otherwise); ``CHARSET charset`` first when one is given. The result is the UIDs,
    ascending.

    ``up_to_now``: the search asks for every message up to the moment it runs (the last,
    open window of an unfiltered search), so mail the server announces after it is newer
    than its answer: the async watch notes when it ran. A search for given UIDs, a
    look-up or a filtered one says nothing about what else arrived.
    """

    folder: str
    uidvalidity: int
    criteria: tuple[Criterion, ...]
    charset: str | None = None
    up_to_now: bool = False


def search_window(line_cap: int | None = None) -> int:
    """How many messages one SEARCH may cover on a connection that takes lines of up to
    ``line_cap`` bytes (by default ``MAX_LINE``, the longest either IMAP backend takes, read
    when called): half of the UIDs such a line holds at the longest (the other half is room
    for mail that comes or goes while the windows are asked)."""
    cap = imap_literals.MAX_LINE if line_cap is None else line_cap
    return max((cap - SEARCH_OVERHEAD) // UID_WIDTH // 2, 1)


def search_steps(
    folder: str,
    status: FolderStatus,
    criteria: Sequence[Criterion] = (),
    *,
    window: int | None = None,
    after: int = 0,
    charset: str | None = None,
    enough: int | None = None,
) -> Plan[list[int]]:
    """The UIDs above ``after`` in ``folder`` (just selected, in ``status``) that match
    ``criteria``, ascending and without repeats, asked in windows of at most ``window``
    messages (see the module docstring).

    Args:
        folder: The folder's name.
        status: What selecting it said (EXISTS and UIDNEXT size the windows).
        criteria: SEARCH keys ANDed with each window's UID range (none: every message).
        window: The most messages one SEARCH may cover (default: :func:`search_window`).
        after: Only UIDs above this one.
        charset: Sent as ``CHARSET`` with every window.
        enough: Stop once this many UIDs are found (the lowest ones): for a query whose
            answer is exact and only its first messages are wanted.
    """
    bounds = yield from _bounds(folder, status, after, window or search_window())
    found: set[int] = set()
    low = after
    for high in [*bounds, None]:
        if high is not None and high <= low:
            continue
        keys: tuple[Criterion, ...] = tuple(criteria)
        if low or high is not None:
            span = f"{low + 1}:{high if high is not None else '*'}"
            keys = (b"UID", span.encode("ascii"), *keys)
        open_ended = high is None and not criteria
        uids: list[int] = yield Search(
            folder, status.uidvalidity, keys or (b"ALL",), charset, up_to_now=open_ended
        )
        # "n:*" always matches the highest UID, even one below n.
        found.update(uid for uid in uids if uid > low and (high is None or uid <= high))
        if enough is not None and len(found) >= enough:
            break
        if high is not None:
            low = high
    return sorted(found)


def change_batches(uids: Iterable[int]) -> Iterator[list[int]]:
    """``uids``, ascending and without repeats, in batches for one STORE, MOVE, COPY or
    EXPUNGE each: at most :data:`CHANGE_BATCH`, and never more than a search window, so that
    the COPYUID code answering a MOVE or COPY (both its UID sets) fits in a line too."""
    return uid_batches(sorted(set(uids)), min(CHANGE_BATCH, search_window()))


def _bounds(folder: str, status: FolderStatus, after: int, window: int) -> Plan[list[int]]:
    """The UIDs that end each window but the last (none: one SEARCH will do)."""
    exists = status.exists
    span = status.uidnext - 1 - after if status.uidnext else None  # UIDs given out above
    count = exists if span is None else max(min(exists, span), 0)  # messages above, at most
    if count <= window:
        return []
    if span is not None and -(-span // window) <= -(-count // window) + 1:
        # Dense: UID ranges take no more searches than positions and their look-up would.
        return [after + window * step for step in range(1, -(-span // window))]
    # Sparse (or UIDNEXT unknown): count is EXISTS here, so the positions are the whole folder.
    positions = list(range(window, exists, window))
    bounds: list[int] = []
    for start in range(0, len(positions), window):
        chunk = positions[start : start + window]
        wire = ",".join(str(position) for position in chunk).encode("ascii")
        # A position past the end (messages expunged meanwhile) just matches nothing.
        bounds += yield Search(folder, status.uidvalidity, (wire,))
    return sorted(uid for uid in set(bounds) if uid > after)
