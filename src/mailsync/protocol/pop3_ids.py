"""Which POP3 message an id names: :class:`Entry` (a message as one session lists it), the ids
of messages without a usable UIDL (a digest of the header block and size, numbered when
several are alike: :class:`Naming`) and the rules that refuse an ambiguous id
(:func:`resolve`, :func:`same_headers`). A UIDL the server gives to several messages names
none of them, so a delete can never reach a message other than the one meant.

Pure: the plans that list and fetch are in :mod:`mailsync.protocol.pop3_session`.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass

from mailsync._errors import MessageNotFound, Unsupported
from mailsync._message import header_block

__all__ = ["Entry", "Naming", "digest_id", "resolve", "same_headers"]


@dataclass(frozen=True, slots=True)
class Entry:
    """One message of the maildrop as listed in this session.

    Attributes:
        number: Its message number in this session.
        uid: Its UIDL, when the server gave one that names only this message.
        size: Its size as LIST said.
        shared_uidl: The UIDL the server gave this message and another one too (then
            ``uid`` is None: the message is known by its header digest).
    """

    number: int
    uid: str | None
    size: int
    shared_uidl: str | None = None


def resolve(context: str, entries: list[Entry], by_id: dict[str, list[Entry]], id: str) -> Entry:
    """The one entry ``id`` names (``by_id`` from :func:`index`).

    Raises:
        MessageNotFound: None does.
        Unsupported: More than one does (a server whose UIDLs look like header digests).
    """
    found = by_id.get(id, [])
    if len(found) == 1:
        return found[0]
    if found:
        raise Unsupported(
            f"{context}: {id!r} names {len(found)} messages of this maildrop; nothing is "
            "done with an ambiguous id"
        )
    sharing = sum(entry.shared_uidl == id for entry in entries)
    if sharing:
        raise MessageNotFound(
            f"{context}: the server now gives UIDL {id!r} to {sharing} messages, so it names "
            "none of them (their ids are now header digests: list the messages again)"
        )
    raise MessageNotFound(f"{context}: no message {id!r} in the maildrop")


def same_headers(by_id: dict[str, list[Entry]], id: str) -> list[str]:
    """The ids of the messages with the same header digest as ``id`` (``id`` itself too)."""
    if not id.startswith("hdr:"):
        return [id]
    base = id.partition("#")[0]
    return [other for other in by_id if other.partition("#")[0] == base]


def digest_id(data: bytes, size: int) -> str:
    """The id/identity of a message on a server without UIDL: its header block and size."""
    digest = hashlib.sha256(header_block(data) + b"\0" + str(size).encode()).hexdigest()
    return "hdr:" + digest[:40]


class Naming:
    """The ids of one listing's messages, taken in maildrop order: the UIDL, else the header
    digest (:func:`digest_id`), with ``#2``, ``#3``... for the second and later messages of
    the same digest, so that ids are unique in the maildrop. The same listing named in the
    same order gives the same ids, in any session: a stream names every message it fetches,
    and :func:`identify` the whole listing."""

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: Counter[str] = Counter()

    def id_of(self, entry: Entry, data: bytes) -> str:
        """The id of ``entry``, whose message (or header block) is ``data``."""
        if entry.uid is not None:
            return entry.uid
        base = digest_id(data, entry.size)
        self._seen[base] += 1
        count = self._seen[base]
        return base if count == 1 else f"{base}#{count}"
