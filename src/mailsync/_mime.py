"""Best-effort decoding of MIME wire text, shared by the message model and the senders.

Mail in the wild breaks every rule, so everything here takes untrusted text and returns a
usable value, never raising: header unfolding, RFC 2047 encoded words (adjacent words joined
before decoding so a character split across two words survives), raw 8-bit headers, MIME
parameters with RFC 2231 charsets and continuations, charset labels mapped to the codec a
mail client would really use, message ids, Date parsing, and file names made safe to create
on disk. The bodies of parts (transfer decoding, multipart splitting) are
:mod:`mailsync._mime_body`'s.

The stdlib parser hands out header values and bodies as ``str`` in which every non-ASCII byte
is a lone surrogate (``surrogateescape``); :func:`wire_bytes` turns them back into the bytes
that were on the wire. Nothing here does I/O.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import collections
import re
import unicodedata
import urllib.parse
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "MAX_HEADER_FIELDS",
    "MAX_REFERENCES",
    "cr_line_ends",
    "decode_8bit",
    "decode_bytes",
    "decode_encoded_words",
    "decode_header_value",
    "decode_identifier_value",
    "lenient_base64",
    "lf_for_cr_only",
    "message_id_of",
    "msg_id",
    "msg_ids",
    "parse_date",
    "safe_filename",
    "split_header_block",
    "split_params",
    "text_codec",
    "unfold",
    "wire_bytes",
]


def wire_bytes(text: str) -> bytes:
    """The bytes a parsed ``str`` stood for (surrogate-escaped bytes back, the rest UTF-8)."""
    return text.encode("utf-8", "surrogateescape")


# -- charsets ------------------------------------------------------------------------------

# Labels mapped to the codec mail clients really decode them with: supersets (Microsoft's
# code pages, GB18030) so a mislabelled message still decodes, and names Python lacks.
_CHARSET_ALIASES = {
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "l1": "cp1252",
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "ksc5601": "cp949",
    "euc-kr": "cp949",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "windows-31j": "cp932",
    "iso-2022-jp": "iso2022_jp_ext",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "euc-cn": "gb18030",
    "cp936": "gb18030",
    "big5": "cp950",
    "x-x-big5": "cp950",
    "iso-8859-8-i": "iso8859_8",
    "iso-8859-6-i": "iso8859_6",
    "tis-620": "cp874",
    "windows-874": "cp874",
    "x-mac-roman": "mac_roman",
    "macintosh": "mac_roman",
    "utf8": "utf-8",
}
# Labels that mean "we do not know": decoded by the fallback chain (UTF-8, then Windows-1252).
_UNKNOWN_CHARSETS = frozenset(
    {"unknown-8bit", "x-unknown", "unknown", "default", "x-user-defined", "8bit", "binary"}
)
# Codecs that exist in Python but are no mail charset; decoding with them only does harm.
_REFUSED_CODECS = frozenset(
    {"idna", "punycode", "undefined", "unicode-escape", "raw-unicode-escape", "mbcs", "oem"}
)
_NUMBERED_CODEPAGE = re.compile(r"(?:cp|windows|x-cp|ms)[-_]?(\d{3,5})")


def text_codec(charset: str | None) -> str | None:
    """The Python codec for a MIME charset label, or None when it is unknown or unusable."""
    if not charset:
        return None
    name = charset.strip().strip("\"'").strip().lower().split("*", 1)[0]
    if not name or len(name) > 64 or name in _UNKNOWN_CHARSETS:
        return None
    name = _CHARSET_ALIASES.get(name, name)
    numbered = _NUMBERED_CODEPAGE.fullmatch(name)
    if numbered:
        name = "cp" + numbered.group(1)
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError, TypeError):  # unknown, or a NUL in the label
        return None
    if info.name in _REFUSED_CODECS or not getattr(info, "_is_text_encoding", True):
        return None
    return info.name


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode bytes labelled ``charset``, best-effort.

    The declared charset first (as mail clients read it: ``iso-8859-1`` as Windows-1252,
    ``shift_jis`` as CP932...), then UTF-8, then the declared charset with replacement
    characters, then Windows-1252 (Latin-1 for its five unassigned bytes). Never raises.
    """
    codec = text_codec(charset)
    if codec is not None:
        try:
            return data.decode(codec)
        except (UnicodeError, ValueError, LookupError):  # mislabelled; try the usual suspects
            pass
    if data.isascii():
        return data.decode("ascii")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if codec is not None and codec not in ("ascii", "cp1252", "iso8859-1", "utf-7"):
        try:
            return data.decode(codec, "replace")
        except (UnicodeError, ValueError, LookupError):
            pass
    return _decode_windows_1252(data)


def _decode_windows_1252(data: bytes) -> str:
    # Windows-1252 rather than Latin-1: it is what unlabelled Western 8-bit mail really is,
    # and it gives the curly quotes and euro signs Latin-1 would turn into control codes.
    return data.decode("cp1252", "replace")


_NON_ASCII_RUN = re.compile(r"[^\x00-\x7f]+")


def decode_8bit(text: str) -> str:
    """Decode raw 8-bit bytes carried in a parsed ``str``: UTF-8, else Windows-1252.

    Each run of non-ASCII bytes is judged on its own, because headers pasted together by
    different software mix UTF-8 and Latin-1 words in one line.
    """
    if text.isascii():
        return text
    return _NON_ASCII_RUN.sub(lambda m: decode_bytes(wire_bytes(m.group(0)), None), text)


# -- header block --------------------------------------------------------------------------

# A line ends at LF (CRLF being CR + LF), never at a lone CR: that is how Dovecot and Postfix
# read mail, so a CR inside a header value can never start a field of its own ("Subject:
# x\rBcc: carol" is one Subject, not a Bcc recipient). The one exception is a message with
# no LF at all (see cr_line_ends).
_LINE = re.compile(rb"[^\n]*\n?")
_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+:")


#: At most this many fields are read from one header block (a message's or a part's): real
#: mail has tens, rarely hundreds; each field costs some 200 bytes once read and decoded, so
#: 50 MB of tiny fields must not cost gigabytes. The rest of a longer block is skipped.
MAX_HEADER_FIELDS = 10_000


def cr_line_ends(raw: bytes) -> bool:
    """Whether ``raw`` ends its lines with a CR alone: it has CRs and no LF anywhere.

    Old Mac mail and files written by its tools do, and a delivery report saved that way is
    still a report. Such a message mixes no conventions, so reading its CRs as line ends
    cannot make one field out of another; in every other message a lone CR ends no line.
    Callers read the message with each CR taken as an LF (:func:`lf_for_cr_only`).
    """
    return b"\n" not in raw and b"\r" in raw


def lf_for_cr_only(raw: bytes) -> bytes:
    """``raw`` with its CRs made LFs when it ends its lines with a CR alone
    (:func:`cr_line_ends`; the length is kept, so offsets hold), else ``raw`` itself."""
    return raw.replace(b"\r", b"\n") if cr_line_ends(raw) else raw


def split_header_block(
    raw: bytes, start: int = 0, end: int | None = None, *, max_fields: int = MAX_HEADER_FIELDS
) -> tuple[list[tuple[str, str]], int]:
    """Split the header block off raw message (or MIME part) bytes (``raw[start:end]``).

    Returns the fields as ``(name, value)`` with the value unfolded but not decoded (8-bit
    bytes surrogate-escaped, as the stdlib parser gives them), and the offset where the body
    starts. Lines end at LF or CRLF; a lone CR is part of the line it is in, as mail servers
    read it, so it never starts a field. The block ends at the first empty line, or at the
    first line that is neither a field nor a continuation (that line is then the first line
    of the body). A leading ``From `` envelope line and lines with an empty field name are
    skipped. Only the header lines are looked at, so this is cheap for a message of any size.
    Past ``max_fields`` fields the rest of the block is skipped (found with one regex
    search, not read line by line). The body offset is an index into ``raw``.
    """
    fields: list[tuple[str, list[bytes]]] = []
    position = start
    size = len(raw) if end is None else end
    while position < size:
        line_end = _LINE.match(raw, position, size).end()  # type: ignore[union-attr]
        line = _without_line_end(raw[position:line_end])
        if not line:
            return _joined(fields), line_end
        if line[:1] in (b" ", b"\t"):
            if fields:  # a continuation after a skipped line still belongs to the field
                fields[-1][1].append(line)
        elif line.startswith(b":") or (position == start and line.startswith(b"From ")):
            pass
        elif _FIELD_NAME.match(line):
            if len(fields) >= max_fields:
                return _joined(fields), _block_end(raw, position, size)
            # The field and all its continuation lines at once: one search, not a Python
            # step per line, so a header folded a million times costs what one line does.
            stop = _FIELD_END.search(raw, position + len(line), size)
            line_end = stop.end() if stop else size
            name, _, value = raw[position : stop.start() if stop else size].partition(b":")
            # Unfolded: the line breaks go (a CR that ends no line stays, as in a line).
            value = value.lstrip(b" \t").replace(b"\r\n", b"").replace(b"\n", b"")
            fields.append((name.decode("ascii"), [value]))
        else:
            return _joined(fields), position
        position = line_end
    return _joined(fields), size


# A line that ends a header block, at a line start: an empty line (then the body follows
# it), or a line that is neither a continuation, nor a field, nor skipped (":..."; it is the
# body's first line). Each line start is looked at once, so the search is linear.
_BLOCK_END = re.compile(rb"^(?:\r?\n|(?![ \t:]|[\x21-\x39\x3b-\x7e]+:)[^\n])", re.MULTILINE)


def _block_end(raw: bytes, position: int, size: int) -> int:
    """Where the body starts, for a header block whose line at ``position`` is not read."""
    found = _BLOCK_END.search(raw, position, size)
    if found is None:
        return size
    return found.end() if found.group(0).endswith(b"\n") else found.start()


def _without_line_end(line: bytes) -> bytes:
    """The line without its LF or CRLF (a CR anywhere else stays: it ends no line)."""
    if line.endswith(b"\n"):
        line = line[:-1]
        if line.endswith(b"\r"):
            line = line[:-1]
    return line


# The line break that ends a field: an LF or CRLF not followed by a continuation line's
# white space (a lone CR ends no line).
_FIELD_END = re.compile(rb"\r?\n(?![ \t])")


def _joined(fields: list[tuple[str, list[bytes]]]) -> list[tuple[str, str]]:
    return [(name, b"".join(lines).decode("ascii", "surrogateescape")) for name, lines in fields]


# -- header values -------------------------------------------------------------------------

_FOLD = re.compile(r"\r\n|\r|\n")
_FOLDING = re.compile(r"\r?\n")
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?(.*?)\?=")
_WHITESPACE_ONLY = re.compile(r"[ \t]*")


def unfold(value: str) -> str:
    """Undo header folding: line breaks go, the whitespace after them stays (RFC 5322 2.2.3).

    A lone CR is no line break (see :func:`split_header_block`): it stays, and
    :func:`decode_header_value` makes it a space.
    """
    return _FOLDING.sub("", value)


def decode_header_value(value: Any) -> str:
    """Decode one header value best-effort into a single clean line.

    Folding is undone, RFC 2047 encoded words are decoded (unknown charsets, bad base64 and
    multibyte characters split across adjacent words included), raw 8-bit text is read as
    UTF-8 or Windows-1252, line breaks a decoded word smuggled in become spaces, tabs become
    spaces, other control characters are dropped, and the ends are stripped.
    """
    text = _as_text(value)
    return _one_line(decode_encoded_words(unfold(text)))


def decode_identifier_value(value: Any) -> str:
    """:func:`decode_header_value` without RFC 2047 decoding, for fields whose syntax has no
    encoded words (Message-ID, In-Reply-To, References): ``<=?utf-8?q?a?=@x>`` is the id
    every other program sees, so it is the id mailsync reports too."""
    return _one_line(decode_8bit(unfold(_as_text(value))))


def _as_text(value: Any) -> str:
    try:
        return value if isinstance(value, str) else str(value)
    except Exception:  # a broken header object from the stdlib
        return ""


def _one_line(text: str) -> str:
    text = _FOLD.sub(" ", text).replace("\t", " ")
    return _CONTROLS.sub("", text).strip()


def decode_encoded_words(text: str) -> str:
    """Decode RFC 2047 encoded words anywhere in ``text`` and raw 8-bit outside them.

    Whitespace between two encoded words is dropped, and the bytes of adjacent words in the
    same charset are joined before decoding, as RFC 2047 section 6.2 asks.
    """
    if "=?" not in text:
        return decode_8bit(text)
    out: list[str] = []
    run = _Run()  # adjacent encoded words not yet decoded
    position = 0
    for match in _ENCODED_WORD.finditer(text):
        gap = text[position : match.start()]
        between_words = bool(gap and run.words and _WHITESPACE_ONLY.fullmatch(gap))
        if gap and not between_words:
            out.append(run.close())
            out.append(decode_8bit(gap))
        charset, encoding, payload = match.groups()
        decoded = _decode_word(encoding, payload)
        if decoded is None:  # not really an encoded word: keep it as it was, space included
            out.append(run.close())
            out.append(gap if between_words else "")
            out.append(decode_8bit(match.group(0)))
        else:
            run.add(charset, decoded)
        position = match.end()
    out.append(run.close())
    out.append(decode_8bit(text[position:]))
    return "".join(out)


class _Run:
    """Adjacent encoded words: the bytes of consecutive words in one charset are joined
    before decoding. Only the bytes are kept per word (not a tuple with the charset), so
    megabytes of encoded words cost about three times their size, not ten."""

    __slots__ = ("charset", "done", "pending", "words")

    def __init__(self) -> None:
        self.words = 0
        self.charset: str | None = None
        self.pending: list[bytes] = []  # joined once: bytes += bytes is quadratic
        self.done: list[str] = []

    def _reset(self) -> None:
        self.words, self.charset, self.pending, self.done = 0, None, [], []

    def add(self, charset: str | None, data: bytes) -> None:
        self.words += 1
        if self.pending and charset != self.charset:
            self.done.append(decode_bytes(b"".join(self.pending), self.charset))
            self.pending = []
        self.charset = charset
        if data:  # an empty word changes the charset but starts no group of its own
            self.pending.append(data)

    def close(self) -> str:
        """The decoded text of the run so far; the run starts afresh."""
        if self.pending:
            self.done.append(decode_bytes(b"".join(self.pending), self.charset))
        text = "".join(self.done)
        self._reset()
        return text


def _decode_word(encoding: str, payload: str) -> bytes | None:
    data = wire_bytes(payload)
    if encoding in "qQ":
        return _unquote_q(data.replace(b"_", b" "))
    letters = _NOT_BASE64.sub(b"", data).rstrip(b"=")
    if letters and (len(letters) != len(data.rstrip(b"=")) or len(letters) % 4 == 1):
        # Not base64 at all ("=?utf-8?B?!!notbase64?="): decoding what is left would give
        # replacement characters, so the word stays as it was sent.
        return None
    try:
        return lenient_base64(data)
    except (binascii.Error, ValueError):
        return None


_HEX_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")


def _unquote_q(data: bytes) -> bytes:
    return _HEX_ESCAPE.sub(lambda m: bytes((int(m.group(1), 16),)), data)


def _decode_run(run: list[tuple[str | None, bytes]]) -> str:
    """Decode a run of ``(charset, bytes)`` words as :class:`_Run` does (and empty the list)."""
    decoder = _Run()
    for charset, data in run:
        decoder.add(charset, data)
    run.clear()
    return decoder.close()


_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/=]+")
_PADDING = re.compile(rb"=+")


def lenient_base64(data: bytes) -> bytes:
    """Decode base64 that may have junk characters, missing padding, or padding in the middle
    (some mailers concatenate separately encoded blocks)."""
    out: list[bytes] = []
    for chunk in _PADDING.split(_NOT_BASE64.sub(b"", data)):
        if len(chunk) % 4 == 1:  # one dangling character carries no whole byte
            chunk = chunk[:-1]
        if chunk:
            out.append(base64.b64decode(chunk + b"=" * (-len(chunk) % 4)))
    return b"".join(out)


# -- MIME parameters (Content-Type, Content-Disposition) ----------------------------------

_PARAM_PIECE = re.compile(r'(?:"(?:\\.|[^"\\])*"?|[^;"])+')
_PARAM_NAME = re.compile(r"(?P<base>[^*]+)\*(?P<section>\d{1,4})?(?P<encoded>\*)?")


def split_params(value: str) -> tuple[str, dict[str, str]]:
    """Split ``type/subtype; a=b; c="d"`` into the lower-cased main value and its parameters.

    Parameter names are lower-cased; quoted values are unquoted; RFC 2231 values
    (``name*=charset'lang'%XX``, ``name*0*=...; name*1=...``) are joined and decoded and win
    over a plain value of the same name. Plain values are returned as they were on the wire
    (callers decode encoded words where a value is text, such as a file name).
    """
    pieces = _PARAM_PIECE.findall(unfold(value))
    if not pieces:
        return "", {}
    main = pieces[0].strip().lower()
    plain: dict[str, str] = {}
    sections: dict[str, dict[int, tuple[str, bool]]] = {}
    for piece in pieces[1:]:
        name, equals, raw = piece.partition("=")
        name = name.strip().lower()
        if not equals or not name:
            continue
        text = _unquote(raw.strip())
        extended = _PARAM_NAME.fullmatch(name)
        if extended is None:
            plain.setdefault(name, text)
            continue
        number = int(extended.group("section") or 0)
        encoded = extended.group("encoded") is not None or extended.group("section") is None
        sections.setdefault(extended.group("base"), {}).setdefault(number, (text, encoded))
    for base, parts in sections.items():
        plain[base] = _join_rfc2231(parts)
    return main, plain


def _unquote(text: str) -> str:
    if not text.startswith('"'):
        return text
    inner = text[1:-1] if len(text) > 1 and text.endswith('"') else text[1:]
    # Only \\ and \" are unescaped, as the stdlib does: Windows paths in file names keep
    # their backslashes, and safe_filename strips the directories they name.
    return inner.replace('\\"', '"').replace("\\\\", "\\")


def _join_rfc2231(parts: dict[int, tuple[str, bool]]) -> str:
    charset: str | None = None
    pieces: list[bytes] = []  # joined once: sections come by the thousand in hostile mail
    for number in sorted(parts):
        text, encoded = parts[number]
        if not encoded:
            pieces.append(wire_bytes(text))
            continue
        if number == 0 and text.count("'") >= 2:
            charset, _language, text = text.split("'", 2)
        pieces.append(urllib.parse.unquote_to_bytes(wire_bytes(text)))
    return decode_bytes(b"".join(pieces), charset or None)


# -- dates ---------------------------------------------------------------------------------


def parse_date(value: str | None) -> datetime | None:
    """An aware datetime from a Date header value (naive means UTC), or None.

    RFC 5322 dates, their common corruptions that the stdlib reads, and ISO 8601 are
    understood; impossible dates and offsets give None.
    """
    if not value:
        return None
    from email.utils import parsedate_to_datetime  # the email package loads only when used

    text = value.strip()
    parsed: datetime | None
    try:
        parsed = parsedate_to_datetime(text)
    except Exception:  # the stdlib raises assorted errors on garbage
        parsed = None
    if parsed is None:
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# -- file names ----------------------------------------------------------------------------

# Names Windows reserves whatever the extension; harmless elsewhere, but the files we write
# may be copied to a share.
_RESERVED_NAMES = frozenset(
    {"con", "prn", "aux", "nul", "conin$", "conout$", "clock$"}
    | {f"com{n}" for n in "0123456789¹²³"}
    | {f"lpt{n}" for n in "0123456789¹²³"}
)
_UNPORTABLE = re.compile(r'[<>:"|?*]')
_MAX_NAME_BYTES = 200  # leaves room for " (9999)" under the common 255-byte limit
_MAX_SUFFIX_CHARS = 16


def safe_filename(filename: str | None, content_type: str = "application/octet-stream") -> str:
    """Reduce an untrusted attachment file name to one that is safe to create in a directory.

    The name is NFKC-normalised (so look-alike slashes and dots become real ones and are then
    dealt with), directory parts are stripped (both ``/`` and ``\\``), control and invisible
    format characters (bidi overrides) are dropped, characters Windows refuses become ``_``,
    leading and trailing dots and spaces are removed (no hidden files, no ``..``), Windows
    device names get a ``_`` prefix, and the result is cut to 200 UTF-8 bytes keeping the
    extension. An empty result is named from ``content_type``: the parts of delivery reports
    and attached messages by what they are (``delivery-status.txt``, ``original-message.eml``),
    anything else ``attachment`` plus an extension for the type.
    """
    name = unicodedata.normalize("NFKC", filename or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = _UNPORTABLE.sub("_", name).strip(" .")
    if not name:
        return _unnamed(content_type)
    if name.split(".", 1)[0].strip().lower() in _RESERVED_NAMES:
        name = "_" + name
    return _fit(name, _MAX_NAME_BYTES)


def split_suffix(name: str) -> tuple[str, str]:
    """``("report", ".pdf")`` for ``"report.pdf"``; no suffix for ``"README"`` or long ones."""
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or len(ext) + 1 > _MAX_SUFFIX_CHARS:
        return name, ""
    return stem, "." + ext


def _fit(name: str, limit: int) -> str:
    if len(name.encode("utf-8")) <= limit:
        return name
    stem, suffix = split_suffix(name)
    room = limit - len(suffix.encode("utf-8"))
    stem = stem.encode("utf-8")[:room].decode("utf-8", "ignore").rstrip(" .")
    return (stem or "attachment") + suffix


# Parts that come without a name but whose type says what they are: the parts of a delivery
# report (RFC 3464, RFC 6533) and of a read receipt (RFC 8098), and attached messages.
_NAMES_BY_TYPE = {
    "message/delivery-status": "delivery-status.txt",
    "message/global-delivery-status": "delivery-status.txt",
    "message/disposition-notification": "disposition-notification.txt",
    "message/global-disposition-notification": "disposition-notification.txt",
    "message/rfc822": "original-message.eml",
    "message/global": "original-message.eml",
    "text/rfc822-headers": "original-headers.txt",
    "message/global-headers": "original-headers.txt",
}


def _unnamed(content_type: str) -> str:
    bare = content_type.split(";", 1)[0].strip().lower()
    return _NAMES_BY_TYPE.get(bare) or "attachment" + _extension_for(bare)


def _extension_for(content_type: str) -> str:
    import mimetypes

    guessed = mimetypes.guess_extension(content_type.split(";", 1)[0].strip().lower())
    return guessed or ".bin"


# -- message ids ---------------------------------------------------------------------------

_MSGID = re.compile(r"<([^<>\s]+)>")
_WORD = re.compile(r"\S+")

#: At most this many ids are kept from In-Reply-To or References, the last ones (the nearest
#: ancestors): a real References holds tens; millions would cost gigabytes of strings.
MAX_REFERENCES = 100_000


def msg_id(value: str | None) -> str | None:
    """The message id in a header value (``<id@host>``), without angle brackets; a bare id
    without brackets as it is; None when there is none."""
    if not value:
        return None
    match = _MSGID.search(value)
    if match:
        return match.group(1)
    stripped = value.strip().strip("<>").strip()
    return stripped or None


def msg_ids(value: str) -> collections.deque[str]:
    """Every message id in a header value (References, In-Reply-To), in order, without angle
    brackets: the last :data:`MAX_REFERENCES` of them."""
    found = collections.deque(
        (match.group(1) for match in _MSGID.finditer(value)), maxlen=MAX_REFERENCES
    )
    if found:
        return found
    words = (word.group(0).strip("<>") for word in _WORD.finditer(value))
    return collections.deque((word for word in words if word), maxlen=MAX_REFERENCES)


def message_id_of(values: Sequence[str]) -> str | None:
    """The message id of a message whose raw Message-ID header values are ``values`` (the
    first counts), read as on the wire: message ids have no encoded words."""
    return msg_id(decode_identifier_value(values[0])) if values else None
