"""The message model's small value types: :class:`Address`, :class:`Folder` and
:class:`Attachment`, and what :func:`mailsync.compose` accepts for them (:data:`AddressLike`,
:data:`AttachmentSpec`).

Apart from :mod:`mailsync._message` (which re-exports them) so that the modules the model uses
and the ones that build messages (:mod:`mailsync._compose`) can name them without importing the
model. This module does no I/O except :meth:`Attachment.save`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, TypeAlias

from mailsync._errors import MailsyncError, StorageError
from mailsync._mime import safe_filename, split_suffix

__all__ = ["Address", "AddressLike", "Attachment", "AttachmentSpec", "Folder"]

#: What an attachment can be given as: a path, or ``(filename, data, content_type)``.
AttachmentSpec: TypeAlias = "str | os.PathLike[str] | tuple[str, bytes, str]"
#: One address for :func:`mailsync.compose`: ``"a@example.test"``, ``"Ann <a@example.test>"``,
#: an :class:`Address`, or a ``(name, address)`` pair.
AddressLike: TypeAlias = "str | Address | tuple[str, str]"


class Address(NamedTuple):
    """A mailbox: display name and address.

    Attributes:
        name: The display name, decoded; empty when there is none.
        email: The address itself (``local@domain``); may be empty for a broken header.
    """

    name: str
    email: str

    def __str__(self) -> str:
        # For people, not for the wire: the name stays readable Unicode (``formataddr`` would
        # turn it into an encoded word), quoted when it holds specials.
        if not self.name:
            return self.email
        name = self.name
        if _NEEDS_QUOTES.search(name):
            name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return f"{name} <{self.email}>"


_NEEDS_QUOTES = re.compile(r'[][\\()<>@,:;".]')


@dataclass(frozen=True, slots=True)
class Folder:
    """A folder (IMAP mailbox, Maildir++ subfolder, Gmail label, Graph folder).

    Attributes:
        name: The backend's name for it, decoded (``"INBOX"``, ``"Archive/2024"``).
        delimiter: The hierarchy separator, or None for a flat namespace.
        special_use: ``\\Sent``, ``\\Trash``, ``\\Drafts``, ``\\Junk``, ``\\Archive``, ``\\All``,
            ``\\Flagged``, or None.
        flags: Other attributes the server reports (``\\HasChildren``, ``\\Noselect``).
    """

    name: str
    delimiter: str | None = None
    special_use: str | None = None
    flags: frozenset[str] = frozenset()

    @property
    def selectable(self) -> bool:
        """False for folders that only hold other folders."""
        return not any(f.lower() in ("\\noselect", "\\nonexistent") for f in self.flags)


@dataclass(frozen=True, slots=True)
class Attachment:
    """A part of a message that is not its text or html body.

    Attributes:
        filename: The decoded file name (RFC 2231 and encoded words understood), or None. It
            comes from the sender: use :meth:`save`, never this name, to make a path.
        content_type: e.g. ``"application/pdf"``.
        data: The decoded content.
        content_id: The Content-ID without angle brackets, for inline parts.
        inline: True for parts shown inside the body (``Content-Disposition: inline`` or
            referenced by Content-ID), such as images in an html message.
    """

    filename: str | None
    content_type: str
    data: bytes = field(repr=False)
    content_id: str | None = None
    inline: bool = False

    @property
    def size(self) -> int:
        """Decoded size in bytes."""
        return len(self.data)

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the attachment into ``directory`` and return the path written.

        The file name is made safe with :func:`safe_filename`: directory parts are stripped,
        ``.`` and ``..`` are never used, leading dots are removed so nothing hidden is
        written, control characters are dropped, and an existing file (or symlink) is never
        overwritten or followed (``name (1).pdf`` instead). The file is created exclusively,
        so a concurrent writer cannot be clobbered either.

        A part without a file name is named from its type: ``delivery-status.txt`` and
        ``original-message.eml`` for the parts of a delivery report, ``attachment.pdf`` for
        the rest.

        Args:
            directory: The directory; created (with its parents) when it does not exist.

        Returns:
            The absolute path of the new file, directly inside ``directory``.

        Raises:
            StorageError: The directory cannot be created or written to (also an
                ``OSError``); the message names it and the reason.
        """
        base = Path(directory).expanduser().resolve()
        try:
            base.mkdir(parents=True, exist_ok=True)
            return self._save_into(base)
        except OSError as exc:
            if isinstance(exc, MailsyncError):
                raise
            reason = exc.strerror or str(exc)
            raise StorageError(f"cannot save an attachment into {str(base)!r}: {reason}") from exc

    def _save_into(self, base: Path) -> Path:
        stem, suffix = split_suffix(safe_filename(self.filename, self.content_type))
        for n in range(10_000):
            name = f"{stem}{suffix}" if n == 0 else f"{stem} ({n}){suffix}"
            target = base / name
            if target.parent != base or name in (".", ".."):  # pragma: no cover - defence in depth
                raise ValueError(f"refusing to write {name!r} outside {base}")
            try:
                # "x" is O_CREAT|O_EXCL: it never follows a symlink planted under this name.
                handle = open(target, "xb")  # noqa: SIM115 - closed below, removed on failure
            except FileExistsError:
                continue
            with handle:
                try:
                    handle.write(self.data)
                except BaseException:
                    target.unlink(missing_ok=True)
                    raise
            return target
        raise FileExistsError(f"no free file name for {stem}{suffix} in {base}")
