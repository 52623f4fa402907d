"""Local Maildir (with Maildir++ subfolders) as a Retriever and a Sender: the embedded default.

Written on the filesystem directly rather than with :mod:`mailbox`, because the stdlib class
reads every message to learn its flags, moves mail from ``new/`` to ``cur/`` as a side effect
of some calls, and does not know Maildir++ folder names. Here:

- a folder is the top directory (``INBOX``) or a ``.Name`` subdirectory (delimiter ``.``);
- flags come from the info suffix (``:2,FRS``): reading never renames a file;
- delivery writes to ``tmp/``, syncs, and renames into ``new/`` (or ``cur/``), which is atomic;
- ``sync()`` identities are the unique file keys, so nothing is yielded twice.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
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
from mailsync._errors import FolderNotFound, MessageNotFound, MessageTooLarge, map_exceptions
from mailsync._message import Folder, Message
from mailsync._query import Q
from mailsync._sync_run import warn_skipped
from mailsync._threaded import ThreadedAsyncRetriever, ThreadedAsyncSender
from mailsync.backends._local import LocalSender, read_bounded, selected

__all__ = ["AsyncMaildirRetriever", "AsyncMaildirSender", "MaildirRetriever", "MaildirSender"]

_FLAG_LETTERS = {
    "D": "\\Draft",
    "F": "\\Flagged",
    "R": "\\Answered",
    "S": "\\Seen",
    "T": "\\Deleted",
    "P": "$Forwarded",
}
_LETTER_OF = {flag.lower(): letter for letter, flag in _FLAG_LETTERS.items()}
_SPECIAL_NAMES = {
    "sent": "\\Sent",
    "sent items": "\\Sent",
    "sent messages": "\\Sent",
    "trash": "\\Trash",
    "deleted items": "\\Trash",
    "deleted messages": "\\Trash",
    "drafts": "\\Drafts",
    "junk": "\\Junk",
    "spam": "\\Junk",
    "archive": "\\Archive",
}
_counter = 0
_counter_lock = threading.Lock()

log = logging.getLogger("mailsync.maildir")


def special_use_by_name(name: str) -> str | None:
    """The special use a folder's name suggests, for stores that cannot say."""
    return _SPECIAL_NAMES.get(name.rsplit(".", 1)[-1].rsplit("/", 1)[-1].lower())


def flags_from_info(info: str) -> frozenset[str]:
    """IMAP-spelled flags from a Maildir info suffix (``2,FRS``)."""
    if not info.startswith("2,"):
        return frozenset()
    return frozenset(_FLAG_LETTERS[c] for c in info[2:] if c in _FLAG_LETTERS)


def info_from_flags(flags: Iterable[str]) -> str:
    """The Maildir info suffix for IMAP-spelled flags (flags it cannot store are dropped)."""
    letters = sorted({_LETTER_OF[f.lower()] for f in flags if f.lower() in _LETTER_OF})
    return "2," + "".join(letters)


def _unique_name() -> str:
    global _counter
    with _counter_lock:
        _counter += 1
        count = _counter
    now = time.time()
    host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
    return f"{int(now)}.M{int((now % 1) * 1e6)}P{os.getpid()}Q{count}.{host}"


@dataclass(frozen=True, slots=True)
class _Entry:
    key: str
    path: Path
    info: str

    @property
    def flags(self) -> frozenset[str]:
        return flags_from_info(self.info)

    def order(self) -> tuple[int, int, str]:
        # Delivery names start with the arrival time ("1700000000.M123456P..."): that is the
        # arrival order. Foreign names without it sort by modification time.
        head, _, rest = self.key.partition(".")
        if head.isdigit():
            usec = rest[1:].split("P", 1)[0] if rest.startswith("M") else ""
            return int(head), int(usec) if usec.isdigit() else 0, self.key
        try:
            return int(self.path.stat().st_mtime), 0, self.key
        except OSError:
            return 0, 0, self.key


class _MaildirStore:
    """The filesystem side: folders, entries, atomic delivery and renames."""

    def __init__(self, root: Path, *, create: bool = False) -> None:
        self.root = root
        self.create_missing = create

    def folder_path(self, folder: str) -> Path:
        if folder.upper() == "INBOX":
            return self.root
        name = folder.replace("/", ".").strip(".")
        if not name or ".." in name or "\x00" in name:
            raise FolderNotFound(f"invalid Maildir folder name {folder!r}")
        return self.root / ("." + name)

    def existing(self, folder: str) -> Path:
        path = self.folder_path(folder)
        if (path / "cur").is_dir() and (path / "new").is_dir():
            return path
        if self.create_missing and not (self.root / "cur").is_dir():
            self.create("INBOX")  # the mailbox itself; a subfolder must still exist
            if path == self.root:
                return path
        if not self.root.exists():
            raise FolderNotFound(
                f"no Maildir at {self.root} (the first message sent to maildir:{self.root} "
                f"creates it, as does reading maildir:{self.root}?create=1)"
            )
        raise FolderNotFound(f"no folder {folder!r} in the Maildir at {self.root}")

    def create(self, folder: str) -> Path:
        path = self.folder_path(folder)
        for sub in ("tmp", "new", "cur"):
            (path / sub).mkdir(parents=True, exist_ok=True)
        if path != self.root:
            (path / "maildirfolder").touch()
        return path

    def folder_names(self) -> list[str]:
        if not self.root.exists():
            self.existing("INBOX")  # created, or the error that says how
        names = ["INBOX"] if (self.root / "cur").is_dir() else []
        try:
            children = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return names
        for child in children:
            if (
                child.startswith(".")
                and child not in (".", "..")
                and (self.root / child / "cur").is_dir()
            ):
                names.append(child[1:])
        return names

    def entries(self, folder: str) -> list[_Entry]:
        path = self.existing(folder)
        found: list[_Entry] = []
        for sub in ("new", "cur"):
            for name in os.listdir(path / sub):
                if name.startswith("."):
                    continue
                key, _, info = name.partition(":")
                found.append(_Entry(key, path / sub / name, info if sub == "cur" else ""))
        found.sort(key=_Entry.order)
        return found

    def find(self, folder: str, key: str) -> _Entry:
        path = self.existing(folder)
        for sub in ("cur", "new"):
            try:
                names = os.listdir(path / sub)
            except FileNotFoundError:
                continue
            for name in names:
                if name == key or name.startswith(key + ":"):
                    info = name.partition(":")[2] if sub == "cur" else ""
                    return _Entry(key, path / sub / name, info)
        raise MessageNotFound(f"no message {key!r} in folder {folder!r}")

    def deliver(self, folder: str, data: bytes, flags: Iterable[str] = ()) -> str:
        path = self.create(folder) if folder.upper() == "INBOX" else self.existing(folder)
        key = _unique_name()
        tmp = path / "tmp" / key
        with open(tmp, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        flags = list(flags)
        target = path / "cur" / f"{key}:{info_from_flags(flags)}" if flags else path / "new" / key
        os.rename(tmp, target)
        return key

    def rename(self, entry: _Entry, folder_path: Path, info: str) -> Path:
        target = folder_path / "cur" / f"{entry.key}:{info}"
        os.rename(entry.path, target)
        return target


def _message_id(folder: str, key: str) -> str:
    return f"{folder}/{key}"


def _split_id(message_id: str) -> tuple[str, str]:
    folder, slash, key = message_id.rpartition("/")
    if not slash or not key:
        raise MessageNotFound(f"{message_id!r} is not a Maildir message id")
    return folder, key


class MaildirRetriever(Retriever):
    """Reads a Maildir (``maildir:PATH``); Maildir++ subfolders are its folders.

    A missing Maildir is created on first delivery (``mailsync.sender``); reading a missing
    one raises :class:`~mailsync.FolderNotFound`, as reading a missing mbox file does, unless
    the option ``create=True`` (or ``?create=1`` in the URL) is given: then it is created,
    empty, on first use (the embedded default account does this).
    """

    scheme = "maildir"
    capabilities = frozenset({"folders", "flags", "move", "delete", "append", "search"})

    def __init__(self, endpoint: Endpoint, *, state: Any = None) -> None:
        super().__init__(endpoint, state=state)
        self._store_fs = _MaildirStore(Path(endpoint.path), create=endpoint.flag("create"))

    def _entry_message(self, folder: str, entry: _Entry, *, headers_only: bool) -> Message:
        message_id = _message_id(folder, entry.key)
        with map_exceptions(context=self.endpoint.display), open(entry.path, "rb") as file:
            stat = os.fstat(file.fileno())
            raw = read_bounded(
                file,
                size=stat.st_size,
                limit=self.endpoint.max_message_size,
                headers_only=headers_only,
                where=self.endpoint.display,
                id=message_id,
            )
        return Message(
            raw,
            id=message_id,
            folder=folder,
            uid=entry.key,
            flags=entry.flags,
            size=stat.st_size,
            headers_only=headers_only,
            internal_date=datetime.fromtimestamp(stat.st_mtime, UTC),
        )

    def _canonical(self, folder: str) -> str:
        return "INBOX" if folder.upper() == "INBOX" else folder.replace("/", ".").strip(".")

    def folders(self) -> list[Folder]:
        """The INBOX and every Maildir++ subfolder."""
        with map_exceptions(context=self.endpoint.display):
            names = self._store_fs.folder_names()
        return [
            Folder(
                name,
                delimiter=".",
                special_use=None if name == "INBOX" else special_use_by_name(name),
            )
            for name in names
        ]

    def messages(
        self,
        folder: str = "INBOX",
        *,
        query: Q | None = None,
        headers_only: bool = False,
        limit: int | None = None,
    ) -> Iterator[Message]:
        """The messages of ``folder``, oldest delivery first (see :meth:`Retriever.messages`)."""
        folder = self._canonical(folder)
        with map_exceptions(context=self.endpoint.display):
            entries = self._store_fs.entries(folder)
        read = functools.partial(self._read_all, folder, entries)
        return selected(read, query, headers_only, limit)

    def _read_all(
        self, folder: str, entries: list[_Entry], headers_only: bool
    ) -> Iterator[Message]:
        for entry in entries:
            try:
                message = self._entry_message(folder, entry, headers_only=headers_only)
            except FileNotFoundError:
                continue  # moved or deleted by someone else since the listing
            except Exception as exc:
                if isinstance(exc.__cause__, FileNotFoundError):
                    continue
                raise
            yield message

    def get(self, id: str) -> Message:
        """One message by id (``folder/key``)."""
        folder, key = _split_id(id)
        with map_exceptions(context=self.endpoint.display):
            entry = self._store_fs.find(folder, key)
        return self._entry_message(folder, entry, headers_only=False)

    def _sync_steps(
        self,
        folder: str,
        cursor: dict[str, Any] | None,
        known: Callable[[Iterable[str]], set[str]],
    ) -> Iterator[SyncStep]:
        folder = self._canonical(folder)
        with map_exceptions(context=self.endpoint.display):
            entries = self._store_fs.entries(folder)
        delivered = known("key:" + e.key for e in entries)
        state = {"v": 1}
        for entry in entries:
            identity = "key:" + entry.key
            if identity in delivered:
                continue
            try:
                message = self._entry_message(folder, entry, headers_only=False)
            except MessageTooLarge as exc:
                # Not recorded as delivered: every sync says so again, and one with a larger
                # limit delivers it.
                context = self.endpoint.display
                warn_skipped(log, exc.id, size=exc.size, limit=exc.limit, context=context)
                continue
            except Exception:
                if not entry.path.exists():
                    continue
                raise
            yield SyncStep(message, state, identity)
        if cursor is None:
            yield SyncStep(None, state)

    def _wait_for_change(self, folder: str, timeout: float) -> None:
        # A delivery renames into new/ or cur/, which changes that directory's mtime: checking
        # it is cheap, so look often and return as soon as something changed.
        try:
            path = self._store_fs.existing(self._canonical(folder))
        except FolderNotFound:
            self._stop.wait(timeout)
            return
        before = _mtimes(path)
        deadline = time.monotonic() + timeout
        while not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or _mtimes(path) != before:
                return
            self._stop.wait(min(0.2, remaining))

    def _entries_of(self, msgs: MessageRef | Sequence[MessageRef]) -> list[tuple[str, _Entry]]:
        found = []
        for ref in message_refs(msgs):
            folder, key = _split_id(ref)
            found.append((folder, self._store_fs.find(folder, key)))
        return found

    def set_flags(
        self,
        msgs: MessageRef | Sequence[MessageRef],
        *,
        add: Iterable[str] = (),
        remove: Iterable[str] = (),
    ) -> None:
        """Add and remove flags (those Maildir can store: Seen, Answered, Flagged, Draft,
        Deleted, $Forwarded)."""
        add, remove = list(add), {f.lower() for f in remove}
        with map_exceptions(context=self.endpoint.display):
            for folder, entry in self._entries_of(msgs):
                flags = {f for f in entry.flags if f.lower() not in remove} | set(add)
                self._store_fs.rename(
                    entry, self._store_fs.existing(folder), info_from_flags(flags)
                )

    def move(self, msgs: MessageRef | Sequence[MessageRef], folder: str) -> None:
        """Move messages into another folder of this Maildir (it must exist)."""
        with map_exceptions(context=self.endpoint.display):
            target = self._store_fs.existing(self._canonical(folder))
            for _, entry in self._entries_of(msgs):
                self._store_fs.rename(entry, target, entry.info or "2,")

    def delete(self, msgs: MessageRef | Sequence[MessageRef], *, permanent: bool = False) -> None:
        """Move messages to ``Trash`` (created if missing), or unlink with ``permanent``."""
        with map_exceptions(context=self.endpoint.display):
            entries = self._entries_of(msgs)
            if permanent:
                for _, entry in entries:
                    with contextlib.suppress(FileNotFoundError):
                        entry.path.unlink()
                return
            trash = self._store_fs.create(self._trash_name())
            for folder, entry in entries:
                if self._store_fs.folder_path(folder) == trash:
                    entry.path.unlink()
                else:
                    self._store_fs.rename(entry, trash, entry.info or "2,")

    def _trash_name(self) -> str:
        for folder in self.folders():
            if folder.special_use == "\\Trash":
                return folder.name
        return "Trash"

    def append(
        self, folder: str, message: OutgoingMessage, flags: Iterable[str] = ()
    ) -> str | None:
        """Store a message in a folder (INBOX is created if missing); returns its id."""
        folder = self._canonical(folder)
        with map_exceptions(context=self.endpoint.display):
            key = self._store_fs.deliver(folder, outgoing_bytes(message), flags)
        return _message_id(folder, key)

    def create_folder(self, folder: str) -> None:
        """Create a Maildir++ subfolder (no error if it exists)."""
        with map_exceptions(context=self.endpoint.display):
            self._store_fs.create(self._canonical(folder))


def _mtimes(path: Path) -> tuple[float, ...]:
    try:
        return tuple((path / sub).stat().st_mtime_ns for sub in ("new", "cur"))
    except FileNotFoundError:
        return ()


class MaildirSender(LocalSender):
    """Delivers into a Maildir's INBOX (``maildir:PATH``), creating it if needed.

    Every recipient is accepted: the Maildir is the one mailbox they all land in.
    """

    scheme = "maildir"

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(endpoint)
        self._store_fs = _MaildirStore(Path(endpoint.path))

    def _store(self, data: bytes) -> None:
        """Deliver atomically: written to tmp/, synced, then renamed into new/."""
        with map_exceptions(context=self.endpoint.display):
            self._store_fs.deliver("INBOX", data)


class AsyncMaildirRetriever(ThreadedAsyncRetriever):
    """The async Maildir retriever (file I/O on a worker thread)."""

    inner: MaildirRetriever

    def __init__(self, endpoint: Endpoint, *, state: Any = None) -> None:
        super().__init__(MaildirRetriever(endpoint, state=state))

    async def create_folder(self, folder: str) -> None:
        """Create a Maildir++ subfolder (no error if it exists)."""
        await self._worker.run(self.inner.create_folder, folder)


class AsyncMaildirSender(ThreadedAsyncSender):
    """The async Maildir sender (file I/O on a worker thread)."""

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(MaildirSender(endpoint))
