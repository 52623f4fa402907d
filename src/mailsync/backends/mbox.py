"""A local mbox file as a Retriever and a Sender, over the stdlib :mod:`mailbox`.

One file is one folder (``INBOX``). mbox has no stable keys: positions change when a message
is removed. So a message's id is its identity (Message-ID, else a digest of its bytes), with
``#n`` appended for the n-th repeat of the same identity, and ``sync()`` remembers identities.
Flags live in the ``Status``/``X-Status`` headers, as mutt and Thunderbird write them. Writes
hold the mbox lock (fcntl and dot-lock) so other mail programs are not corrupted.

A message over ``max_message_size`` is never read whole (the file is as untrusted as a
server's reply): its size is known from the file's table of contents, its identity is
computed a piece at a time, ``get()`` and ``messages()`` raise
:class:`~mailsync.MessageTooLarge`, and ``sync()`` skips it with a warning. It is not recorded
as delivered, so every sync warns again until one with a larger limit delivers it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import mailbox
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mailsync._base import (
    MessageRef,
    OutgoingMessage,
    Retriever,
    SyncStep,
    message_refs,
)
from mailsync._config import Endpoint
from mailsync._envelope import outgoing_bytes
from mailsync._errors import (
    FolderNotFound,
    MessageNotFound,
    MessageTooLarge,
    TemporaryFailure,
    map_exceptions,
)
from mailsync._message import (
    Folder,
    Message,
    crlf_bytes,
    header_block,
    message_identity,
    read_header_block,
)
from mailsync._query import Q
from mailsync._sync_run import warn_skipped
from mailsync._threaded import ThreadedAsyncRetriever, ThreadedAsyncSender
from mailsync.backends._local import LocalSender, read_bounded, selected

__all__ = ["AsyncMboxRetriever", "AsyncMboxSender", "MboxRetriever", "MboxSender"]

log = logging.getLogger("mailsync.mbox")

_STATUS_FLAGS = {"R": "\\Seen"}
_XSTATUS_FLAGS = {"A": "\\Answered", "F": "\\Flagged", "T": "\\Draft", "D": "\\Deleted"}
_LETTERS = {"\\seen": "R", "\\answered": "A", "\\flagged": "F", "\\draft": "T", "\\deleted": "D"}


#: How much of an oversized message's header block is searched for its Message-ID.
_HEAD_LIMIT = 1024 * 1024
_DIGEST_CHUNK = 1024 * 1024
_FROM_LINE_LIMIT = 4096


def _flags(letters: str) -> frozenset[str]:
    table = {**_STATUS_FLAGS, **_XSTATUS_FLAGS}
    return frozenset(table[c] for c in letters if c in table)


def _status_letters(raw: bytes) -> str:
    # What mailbox.mboxMessage.get_flags() reads, without parsing the whole message.
    head = Message(header_block(raw), id="").headers
    return (head.get("Status") or "") + (head.get("X-Status") or "")


def _stored_size(box: mailbox.mbox, key: Any) -> int:
    """A message's size in the file (its From line aside), found without reading it."""
    file = box.get_file(key)
    file.seek(0, 2)
    return file.tell()


def _letters(flags: Iterable[str]) -> str:
    # "O" (old) marks a message a mail client has already listed; mutt writes it with R.
    letters = {_LETTERS[f.lower()] for f in flags if f.lower() in _LETTERS}
    if "R" in letters:
        letters.add("O")
    return "".join(sorted(letters))


def _strip_status(raw: bytes) -> bytes:
    """The message without the Status/X-Status headers mailsync (or a client) added."""
    head = header_block(raw)
    lines = head.splitlines(keepends=True)
    kept = [line for line in lines if not line.lower().startswith((b"status:", b"x-status:"))]
    return b"".join(kept) + raw[len(head) :]


class _MboxFile:
    """The mbox file and the identity-based ids of its messages.

    A listing is taken under the mbox lock, so a message another program is appending is
    never read half-written. :mod:`mailbox` keeps the file open and writers either append
    or replace the file by rename, so the open handle keeps reading a consistent snapshot.
    """

    def __init__(self, path: Path, lock_timeout: float = 30.0) -> None:
        self.path = path
        self.lock_timeout = lock_timeout

    def open(self, *, create: bool = False) -> mailbox.mbox:
        if not create:
            self.check_exists()
        return mailbox.mbox(self.path, create=create)

    def check_exists(self) -> None:
        # As for a missing Maildir: a path that does not exist is more often a typo than an
        # empty mailbox, and saying so beats an empty listing.
        if not self.path.exists():
            raise FolderNotFound(
                f"no mbox file at {self.path} (the first message sent to mbox:{self.path} "
                "creates it)"
            )

    @contextlib.contextmanager
    def locked(self, box: mailbox.mbox) -> Iterator[None]:
        # mailbox's lock does not wait: another program holding it makes it fail at once.
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                box.lock()
                break
            except mailbox.ExternalClashError:
                if time.monotonic() > deadline:
                    raise TemporaryFailure(
                        f"{self.path} stayed locked by another program"
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            box.unlock()

    def listing(self, box: mailbox.mbox, limit: int | None) -> list[tuple[str, Any]]:
        """``(id, key)`` for every message in file order; those over ``limit`` bytes are
        never held whole."""
        with self.locked(box):
            keys = list(box.keys())
        seen: dict[str, int] = {}
        result = []
        for key in keys:
            if limit is None or _stored_size(box, key) <= limit:
                identity = _identity(box.get_bytes(key))
            else:
                identity = _streamed_identity(box, key)
            count = seen.get(identity, 0)
            seen[identity] = count + 1
            result.append((identity if count == 0 else f"{identity}#{count}", key))
        return result


def _identity(raw: bytes) -> str:
    parsed = Message(header_block(raw), id="")
    return message_identity(parsed.message_id, _strip_status(raw))


def _streamed_identity(box: mailbox.mbox, key: Any) -> str:
    """:func:`_identity` of a message too large to hold, read a piece at a time: the same
    value, except for a header block over ``_HEAD_LIMIT``, whose bytes are digested as they
    are (Status lines included) rather than held to be searched."""
    head = read_header_block(box.get_file(key), _HEAD_LIMIT)
    digest = hashlib.sha256()
    rest = box.get_file(key)
    if head is not None:
        message_id = Message(head, id="").message_id
        if message_id:
            return message_identity(message_id, b"")
        digest.update(_strip_status(head))
        rest.seek(len(head))
    while chunk := rest.read(_DIGEST_CHUNK):
        digest.update(chunk)
    return "sha256:" + digest.hexdigest()


class MboxRetriever(Retriever):
    """Reads an mbox file (``mbox:PATH``)."""

    scheme = "mbox"
    capabilities = frozenset({"flags", "delete", "append", "search"})

    def __init__(self, endpoint: Endpoint, *, state: Any = None) -> None:
        super().__init__(endpoint, state=state)
        self._file = _MboxFile(Path(endpoint.path))

    def _check_folder(self, folder: str) -> None:
        if folder.upper() != "INBOX":
            raise FolderNotFound(f"an mbox file has one folder, INBOX, not {folder!r}")

    def _message(self, box: mailbox.mbox, key: Any, message_id: str, headers_only: bool) -> Message:
        """One message, or its header block; past ``max_message_size`` neither is read
        (:class:`~mailsync.MessageTooLarge`)."""
        size = _stored_size(box, key)
        raw = read_bounded(
            box.get_file(key),
            size=size,
            limit=self.endpoint.max_message_size,
            headers_only=headers_only,
            where=self.endpoint.display,
            id=message_id,
        )
        clean = _strip_status(raw)
        from_line = box.get_file(key, from_=True).readline(_FROM_LINE_LIMIT)
        return Message(
            clean,
            id=message_id,
            folder="INBOX",
            uid=message_id,
            flags=_flags(_status_letters(raw)),
            size=size - (len(raw) - len(clean)),
            headers_only=headers_only,
            internal_date=_from_line_date(from_line[5:].decode("ascii", "replace")),
        )

    def folders(self) -> list[Folder]:
        """Just INBOX: the file itself."""
        self._file.check_exists()
        return [Folder("INBOX")]

    def messages(
        self,
        folder: str = "INBOX",
        *,
        query: Q | None = None,
        headers_only: bool = False,
        limit: int | None = None,
    ) -> Iterator[Message]:
        """The messages of the file in order (see :meth:`Retriever.messages`)."""
        self._check_folder(folder)
        self._file.check_exists()
        return selected(self._read_all, query, headers_only, limit)

    def _read_all(self, headers_only: bool) -> Iterator[Message]:
        with self._open() as (box, listing):
            for message_id, key in listing:
                yield self._message(box, key, message_id, headers_only)

    @contextlib.contextmanager
    def _open(self) -> Iterator[tuple[mailbox.mbox, list[tuple[str, Any]]]]:
        """The open file and its listing (see :meth:`_MboxFile.listing`), closed after."""
        with map_exceptions(context=self.endpoint.display):
            box = self._file.open()
            try:
                yield box, self._file.listing(box, self.endpoint.max_message_size)
            finally:
                box.close()

    def get(self, id: str) -> Message:
        """One message by id."""
        with map_exceptions(context=self.endpoint.display):
            if not self._file.path.exists():
                raise MessageNotFound(f"no message {id!r}")
        with self._open() as (box, listing):
            for message_id, key in listing:
                if message_id == id:
                    return self._message(box, key, message_id, headers_only=False)
        raise MessageNotFound(f"no message {id!r} in {self._file.path}")

    def _sync_steps(
        self,
        folder: str,
        cursor: dict[str, Any] | None,
        known: Callable[[Iterable[str]], set[str]],
    ) -> Iterator[SyncStep]:
        self._check_folder(folder)
        self._file.check_exists()
        state = {"v": 1}
        with self._open() as (box, listing):
            delivered = known([message_id for message_id, _ in listing])
            for message_id, key in listing:
                if message_id in delivered:
                    continue
                try:
                    message = self._message(box, key, message_id, headers_only=False)
                except MessageTooLarge as exc:
                    context = self.endpoint.display
                    warn_skipped(log, message_id, size=exc.size, limit=exc.limit, context=context)
                    continue
                yield SyncStep(message, state, message_id)
        if cursor is None:
            yield SyncStep(None, state)

    def _change(self, msgs: MessageRef | Sequence[MessageRef], change: Callable[..., None]) -> None:
        wanted = set(message_refs(msgs))
        limit = self.endpoint.max_message_size
        with map_exceptions(context=self.endpoint.display):
            box = self._file.open()
            try:
                found = {mid: key for mid, key in self._file.listing(box, limit) if mid in wanted}
                missing = wanted - set(found)
                if missing:
                    raise MessageNotFound(f"no message {sorted(missing)[0]!r} in {self._file.path}")
                with self._file.locked(box):
                    for key in found.values():
                        change(box, key)
                    box.flush()
            finally:
                box.close()

    def set_flags(
        self,
        msgs: MessageRef | Sequence[MessageRef],
        *,
        add: Iterable[str] = (),
        remove: Iterable[str] = (),
    ) -> None:
        """Add and remove flags (Seen, Answered, Flagged, Draft, Deleted)."""
        add, drop = list(add), {f.lower() for f in remove}

        def change(box: mailbox.mbox, key: Any) -> None:
            message = box.get_message(key)
            flags = {f for f in _flags(message.get_flags()) if f.lower() not in drop} | set(add)
            message.set_flags(_letters(flags))
            box[key] = message

        self._change(msgs, change)

    def delete(self, msgs: MessageRef | Sequence[MessageRef], *, permanent: bool = False) -> None:
        """Remove messages from the file (an mbox file has no Trash: always permanent)."""
        self._change(msgs, lambda box, key: box.remove(key))

    def append(
        self, folder: str, message: OutgoingMessage, flags: Iterable[str] = ()
    ) -> str | None:
        """Append a message to the file (created if missing), under the mbox lock."""
        self._check_folder(folder)
        raw = outgoing_bytes(message)
        _append(self._file, raw, _letters(flags))
        return None


def _append(file: _MboxFile, raw: bytes, letters: str = "") -> None:
    # The message's own bytes go in (LF line endings, as mbox files have them), not an
    # email.message the stdlib re-generates, which re-spaces header fields and closes an
    # unterminated multipart: a copy must stay the message it was. mailbox adds the From_
    # line and quotes body lines starting "From " as ">From ", as the format needs.
    data = crlf_bytes(raw).replace(b"\r\n", b"\n")
    if letters:
        data = _with_status(_strip_status(data), letters)
    from_line = f"From MAILER-DAEMON {time.asctime(time.gmtime())}\n".encode()
    with map_exceptions(context=f"mbox:{file.path}"):
        file.path.parent.mkdir(parents=True, exist_ok=True)
        box = file.open(create=True)
        try:
            with file.locked(box):
                box.add(from_line + data)
                box.flush()
        finally:
            box.close()


def _with_status(raw: bytes, letters: str) -> bytes:
    """``raw`` (LF line endings) with the Status and X-Status fields that hold ``letters``
    added at the end of its header block, where mutt and the stdlib put them."""
    head = header_block(raw)
    fields = head[:-1] if head.endswith(b"\n\n") else head
    if fields and not fields.endswith(b"\n"):
        fields += b"\n"  # a header block that ends the message without a line break
    status = "".join(c for c in letters if c in "RO")
    xstatus = "".join(c for c in letters if c not in "RO")
    added = (f"Status: {status}\n" if status else "") + (
        f"X-Status: {xstatus}\n" if xstatus else ""
    )
    return fields + added.encode() + b"\n" + raw[len(head) :]


def _from_line_date(from_line: str) -> datetime | None:
    # "MAILER-DAEMON Thu Nov 26 15:00:00 2026": the delivery time, in the local zone by custom
    parts = from_line.split()
    if len(parts) < 5:
        return None
    try:
        naive = datetime.strptime(" ".join(parts[-5:]), "%a %b %d %H:%M:%S %Y")
    except ValueError:
        return None
    return naive.replace(tzinfo=UTC)


class MboxSender(LocalSender):
    """Appends sent messages to an mbox file (``mbox:PATH``), under the mbox lock."""

    scheme = "mbox"

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(endpoint)
        self._file = _MboxFile(Path(endpoint.path))

    def _store(self, data: bytes) -> None:
        """Append under the mbox lock."""
        _append(self._file, data)


class AsyncMboxRetriever(ThreadedAsyncRetriever):
    """The async mbox retriever (file I/O on a worker thread)."""

    def __init__(self, endpoint: Endpoint, *, state: Any = None) -> None:
        super().__init__(MboxRetriever(endpoint, state=state))


class AsyncMboxSender(ThreadedAsyncSender):
    """The async mbox sender (file I/O on a worker thread)."""

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(MboxSender(endpoint))
