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
from dataclasses import FrozenInstanceError, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, TypeAlias

from mailsync._errors import MailsyncError, StorageError
from mailsync._mime import safe_filename, split_suffix
from mailsync._mime_body import decode_transfer, decoded_size

if TYPE_CHECKING:
    from mailsync._parts import Leaf

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


_DECODE_TO_SIZE = 64 * 1024  # parts up to this size are decoded when their size is asked


class Attachment:
    """A part of a message that is not its text or html body.

    The attachments of a retrieved message are listed without decoding anything: ``data``
    is decoded on first use (and kept), and ``size`` is worked out without decoding where
    the encoding allows (see :attr:`size`), so listing the attachments of a 100 MB message
    costs next to nothing.

    Attributes:
        filename: The decoded file name (RFC 2231 and encoded words understood), or None. It
            comes from the sender: use :meth:`save`, never this name, to make a path.
        content_type: e.g. ``"application/pdf"``.
        content_id: The Content-ID without angle brackets, for inline parts.
        inline: True for parts shown inside the body (``Content-Disposition: inline`` or
            referenced by Content-ID), such as images in an html message.
    """

    __slots__ = ("_data", "_encoded", "_size", "content_id", "content_type", "filename", "inline")

    filename: str | None
    content_type: str
    content_id: str | None
    inline: bool
    _data: bytes | None
    _encoded: _Encoded | None
    _size: int | None

    def __init__(
        self,
        filename: str | None,
        content_type: str,
        data: bytes,
        content_id: str | None = None,
        inline: bool = False,
    ) -> None:
        self._init(filename, content_type, content_id, inline, data, None)

    @classmethod
    def _from_part(cls, leaf: Leaf, *, inline: bool) -> Attachment:
        """An attachment whose content is decoded from the part's bytes when first read."""
        attachment = cls.__new__(cls)
        encoded = _Encoded(leaf.raw, leaf.start, leaf.end, leaf.transfer_encoding)
        attachment._init(leaf.filename, leaf.content_type, leaf.content_id, inline, None, encoded)
        return attachment

    def _init(
        self,
        filename: str | None,
        content_type: str,
        content_id: str | None,
        inline: bool,
        data: bytes | None,
        encoded: _Encoded | None,
    ) -> None:
        store = object.__setattr__
        store(self, "filename", filename)
        store(self, "content_type", content_type)
        store(self, "content_id", content_id)
        store(self, "inline", inline)
        store(self, "_data", data)
        store(self, "_encoded", encoded)
        store(self, "_size", None if data is None else len(data))

    @property
    def data(self) -> bytes:
        """The decoded content (decoded on first use, then kept)."""
        data = self._data
        if data is None:
            encoded = self._encoded
            assert encoded is not None
            data = decode_transfer(encoded.raw[encoded.start : encoded.end], encoded.encoding)
            object.__setattr__(self, "_data", data)
            object.__setattr__(self, "_size", len(data))
        return data

    @property
    def size(self) -> int:
        """The decoded size in bytes, ``len(data)``, without decoding a large part.

        A part of up to 64 KiB is decoded (and ``data`` kept: one pass serves both). A
        larger one is sized without keeping its content: base64 (nearly every attachment)
        by counting its characters, without decoding; 7bit/8bit/binary is the part's length;
        quoted-printable is decoded a window at a time and uuencode whole, keeping only the
        length.
        """
        size = self._size
        if size is None:
            encoded = self._encoded
            assert encoded is not None
            if encoded.end - encoded.start <= _DECODE_TO_SIZE:
                return len(self.data)
            size = decoded_size(encoded.raw, encoded.encoding, encoded.start, encoded.end)
            object.__setattr__(self, "_size", size)
        return size

    def _key(self) -> tuple[object, ...]:
        return (self.filename, self.content_type, self.data, self.content_id, self.inline)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Attachment)
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"Attachment(filename={self.filename!r}, content_type={self.content_type!r}, "
            f"content_id={self.content_id!r}, inline={self.inline!r})"
        )

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

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


@dataclass(frozen=True, slots=True)
class _Encoded:
    """Where an attachment's encoded content lies, and how it is encoded."""

    raw: bytes
    start: int
    end: int
    encoding: str
