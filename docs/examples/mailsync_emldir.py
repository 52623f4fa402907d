"""mailsync_emldir: a directory of .eml files as a read-only mailsync account."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import mailsync
from mailsync import Folder, Message, Q
from mailsync.backends import (
    Endpoint,
    SyncStep,
    ThreadedAsyncRetriever,
    header_block,
    map_exceptions,
)


class EmlDirRetriever(mailsync.Retriever):
    """Reads ``emldir://localhost/PATH``: every ``*.eml`` file in PATH is a message of INBOX."""

    scheme = "emldir"
    capabilities = frozenset()  # one folder, no flags, read-only

    def __init__(self, endpoint: Endpoint, *, state: Any = None) -> None:
        super().__init__(endpoint, state=state)
        self.root = Path("/" + endpoint.path)  # the URL path, without its leading "/"

    def folders(self) -> list[Folder]:
        return [Folder("INBOX")]

    def messages(
        self,
        folder: str = "INBOX",
        *,
        query: Q | None = None,
        headers_only: bool = False,
        limit: int | None = None,
    ) -> Iterator[Message]:
        files = self._files(folder)  # raise FolderNotFound now, not at the first next()
        found = (m for m in map(self._read, files) if query is None or query.matches(m))
        if headers_only:
            found = (m.replace(raw=header_block(m.raw), headers_only=True) for m in found)
        return itertools.islice(found, limit)

    def get(self, id: str) -> Message:
        path = self.root / id
        if "/" in id or not path.is_file():
            raise mailsync.MessageNotFound(f"no message {id!r} in {self.root}")
        return self._read(path)

    def _sync_steps(
        self,
        folder: str,
        cursor: dict[str, Any] | None,
        known: Callable[[Iterable[str]], set[str]],
    ) -> Iterator[SyncStep]:
        files = self._files(folder)
        delivered = known(path.name for path in files)
        for path in files:
            if path.name not in delivered:
                yield SyncStep(self._read(path), cursor={"v": 1}, identity=path.name)

    def _files(self, folder: str) -> list[Path]:
        if folder.upper() != "INBOX":
            raise mailsync.FolderNotFound(f"{self.root} has only the INBOX, not {folder!r}")
        with map_exceptions(context=self.endpoint.display):  # OSError -> ConnectionFailed...
            files = [p for p in self.root.glob("*.eml") if p.is_file()]
            return sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))

    def _read(self, path: Path) -> Message:
        with map_exceptions(context=self.endpoint.display):
            raw = path.read_bytes()
        return Message(raw, id=path.name, folder="INBOX", uid=path.name)


class AsyncEmlDirRetriever(ThreadedAsyncRetriever):
    """The async API: the same calls, run on a worker thread."""

    def __init__(self, endpoint: Endpoint, *, state: Any = None) -> None:
        super().__init__(EmlDirRetriever(endpoint, state=state))


SPEC = mailsync.BackendSpec(
    retriever="mailsync_emldir:EmlDirRetriever",
    async_retriever="mailsync_emldir:AsyncEmlDirRetriever",
    options=frozenset(),  # it reads no option: a misspelled one is an error
)
