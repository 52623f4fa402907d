"""Jupyter support: how a message, a list of messages, folders, headers and delivery reports
show in a notebook (``_repr_html_``), and the pandas view of a list of messages.

The message card renders the sender's html, which is hostile input displayed inside the
notebook's own page (a live cell output is trusted by Jupyter: nothing sandboxes it). That
makes :func:`sanitize_html` a security boundary. It is built on nh3 (the ammonia sanitizer), an
allow-list html5 parser that decodes entities, control characters and malformed markup the way
a browser does before deciding, which hand-written regexes cannot. On top of nh3's allow-lists
this module decides only what ammonia leaves to the caller: which ``src`` and ``href`` values
survive (nothing that loads from the network or the notebook server; ``cid:`` images become
``data:`` URLs from the message's own parts; remote images become a placeholder) and which CSS
declarations stay in a ``style`` attribute (no ``url()``, no functions but colours, no escapes,
nothing that positions an element over the notebook). Without nh3 installed the card shows the
text part and never the html.

Everything else here only escapes text it is given. This module does no I/O; nh3, tqdm and
pandas are optional (the ``notebook`` and ``pandas`` extras) and imported when first needed.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailsync._message import Folder, HeaderMap, Message
    from mailsync._reports import DeliveryReport

__all__ = [
    "DATAFRAME_COLUMNS",
    "folders_html",
    "headers_html",
    "message_html",
    "messages_dataframe",
    "messages_html",
    "report_html",
    "sanitize_html",
]

#: Rows a table shows before "… N more".
MAX_ROWS = 100
#: Body characters a card shows before it cuts (the whole body is on ``message.text``).
MAX_BODY_CHARS = 200_000
#: Largest ``cid:`` image inlined as a ``data:`` URL; larger ones get the placeholder.
MAX_INLINE_IMAGE = 5 * 1024 * 1024

_BORDER = "1px solid rgba(128,128,128,.35)"
_CELL = "text-align:left;vertical-align:top;padding:2px 8px;"
_FONT = "font-family:-apple-system,BlinkMacSystemFont,'Segoe UI',Roboto,sans-serif;"


# -- small formatting helpers ----------------------------------------------------------------


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def local_time(value: datetime | None) -> str:
    """``2026-03-01 14:05 CET``: the time in the local zone, with the zone's name (or offset)."""
    if value is None:
        return ""
    local = value.astimezone() if value.tzinfo is not None else value
    zone = local.tzname() or local.strftime("%z")
    return f"{local:%Y-%m-%d %H:%M} {zone}".rstrip()


def human_size(size: int) -> str:
    """``532 B``, ``12.3 kB``, ``4.1 MB`` (powers of 1000, as mail clients show them)."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"  # pragma: no cover - the loop always returns


def _chip(text: str, *, title: str = "") -> str:
    hint = f' title="{_e(title)}"' if title else ""
    return (
        f'<span{hint} style="display:inline-block;border:{_BORDER};border-radius:10px;'
        f'padding:0 7px;margin:1px 3px 1px 0;font-size:.85em">{_e(text)}</span>'
    )


def _table(head: Sequence[str], rows: Iterable[str], *, caption: str = "") -> str:
    cap = f'<caption style="text-align:left;padding:2px 8px">{caption}</caption>'
    heads = "".join(f'<th style="{_CELL}border-bottom:{_BORDER}">{_e(h)}</th>' for h in head)
    return (
        f'<table style="border-collapse:collapse;{_FONT}font-size:.9em">'
        f"{cap if caption else ''}<thead><tr>{heads}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _row(cells: Iterable[str], *, style: str = "") -> str:
    # On every cell: notebook and docs themes set the weight of table cells themselves.
    tds = "".join(f'<td style="{_CELL}{style}">{cell}</td>' for cell in cells)
    return f"<tr>{tds}</tr>"


def _more(total: int, shown: int, columns: int) -> str:
    if total <= shown:
        return ""
    return _row([f"… {total - shown} more"] + [""] * (columns - 1), style="font-style:italic;")


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


# -- the sanitizer ---------------------------------------------------------------------------


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_TAGS = _words(
    """a abbr acronym address b bdi bdo big blockquote br caption center cite code col colgroup
    dd del dfn div dl dt em font h1 h2 h3 h4 h5 h6 hr i img ins kbd li mark ol p pre q rp rt ruby
    s samp small span strike strong sub summary sup table tbody td tfoot th thead time tr tt u
    ul var wbr"""
)
# Removed with everything inside them (the other unknown tags keep their text).
_DROP_WITH_CONTENT = _words(
    """script style title head svg math iframe frame frameset object embed applet noscript
    noembed noframes template textarea select option button form"""
)
_ATTRIBUTES: dict[str, set[str]] = {
    "*": {"title", "align", "valign", "dir", "lang", "width", "height", "style", "bgcolor"},
    "a": {"href"},
    "img": {"src", "alt"},
    "td": {"colspan", "rowspan", "nowrap"},
    "th": {"colspan", "rowspan", "nowrap"},
    "col": {"span"},
    "colgroup": {"span"},
    "font": {"color", "face", "size"},
    "ol": {"start", "type"},
    "table": {"border", "cellpadding", "cellspacing"},
}
# Appearance only: nothing that positions, transforms or layers an element (a message must not
# draw over the notebook), nothing that takes an image.
_STYLE_PROPERTIES = _words(
    """color background-color font font-family font-size font-style font-weight line-height
    letter-spacing word-spacing text-align text-decoration text-indent text-transform
    vertical-align white-space word-break overflow-wrap direction width height max-width
    min-width padding padding-top padding-right padding-bottom padding-left border border-top
    border-right border-bottom border-left border-color border-style border-width
    border-collapse border-spacing border-radius list-style-type caption-side"""
)
_COLOUR_FUNCTIONS = frozenset({"rgb", "rgba", "hsl", "hsla"})
_FUNCTION = re.compile(r"([a-z0-9_-]*)\s*\(", re.IGNORECASE)
_SAFE_DATA_IMAGE = re.compile(r"data:image/(?:png|gif|jpeg|webp);base64,[a-z0-9+/=\s]*\Z", re.I)
_LINK = re.compile(r"(?:https?://[^\s/?#]|mailto:)", re.IGNORECASE)
# A grey picture frame: what a remote image is replaced with (our own constant, so it may be svg).
_PLACEHOLDER = "data:image/svg+xml;base64," + base64.b64encode(
    b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="40" viewBox="0 0 64 40">'
    b'<rect x=".5" y=".5" width="63" height="39" fill="#8881" stroke="#8888"/>'
    b'<path d="M8 32l14-14 10 10 6-6 18 10" fill="none" stroke="#8888" stroke-width="2"/>'
    b"</svg>"
).decode("ascii")


@cache
def _nh3() -> Any:
    try:
        import nh3
    except ImportError:
        return None
    return nh3


def sanitizer_available() -> bool:
    """True when nh3 is installed, so html bodies can be shown."""
    return _nh3() is not None


def _clean_style(value: str) -> str | None:
    kept = []
    for declaration in value.split(";"):
        if not declaration.strip():
            continue
        lowered = declaration.lower()
        # Escapes, comments and at-rules are how url() and expression() get past a filter.
        if any(mark in lowered for mark in ("\\", "/*", "@", "<", ">", "&")):
            continue
        functions = {name.lower() for name in _FUNCTION.findall(declaration)}
        if functions - _COLOUR_FUNCTIONS:
            continue
        kept.append(declaration.strip())
    return "; ".join(kept) or None


def _image_source(value: str, images: Mapping[str, str]) -> str:
    source = value.strip()
    if source[:4].lower() == "cid:":
        return images.get(_content_id(source[4:]), _PLACEHOLDER)
    if _SAFE_DATA_IMAGE.match(source):
        return source
    return _PLACEHOLDER  # remote, relative (the notebook server!) or an unsafe data: type


def _content_id(value: str) -> str:
    from urllib.parse import unquote

    return unquote(value).strip().strip("<>").lower()


def _attribute_filter(images: Mapping[str, str]) -> Any:
    def keep(tag: str, attribute: str, value: str) -> str | None:
        if attribute == "style":
            return _clean_style(value)
        if tag == "img" and attribute == "src":
            return _image_source(value, images)
        if tag == "a" and attribute == "href":
            return value.strip() if _LINK.match(value.strip()) else None
        return value

    return keep


def sanitize_html(markup: str, images: Mapping[str, str] | None = None) -> str:
    """Make a message's html safe to show inside a notebook.

    Keeps text formatting, tables, links (``http``, ``https``, ``mailto``; opened in a new tab,
    without referrer) and images. Removes scripts, event handlers, ``javascript:`` and other
    URLs, frames, forms, objects, meta refresh, ``<base>``, ``<link>`` and ``<style>``
    (``@import``), and any CSS that loads, runs or positions something. Nothing is loaded from
    the network: an image comes from ``images`` (``cid:`` references, by Content-ID, to
    ``data:`` URLs) or a ``data:`` image already in the html, else a placeholder is shown.

    Args:
        markup: The html, as the sender wrote it.
        images: Lower-cased Content-ID (no angle brackets) -> ``data:`` URL.

    Returns:
        The cleaned html fragment.

    Raises:
        ImportError: nh3 is not installed (``pip install "mailsync[notebook]"``).
    """
    nh3 = _nh3()
    if nh3 is None:
        raise ImportError('showing html mail needs nh3: pip install "mailsync[notebook]"')
    # A lone surrogate (undecodable bytes kept by a lenient decoder) cannot cross into Rust.
    markup = markup.encode("utf-8", "replace").decode("utf-8")
    cleaned: str = nh3.clean(
        markup,
        tags=set(_TAGS),
        clean_content_tags=set(_DROP_WITH_CONTENT),
        attributes={tag: set(names) for tag, names in _ATTRIBUTES.items()},
        # Values get to attribute_filter only with one of these schemes (or none); it decides.
        url_schemes={"http", "https", "mailto", "cid", "data"},
        attribute_filter=_attribute_filter(images or {}),
        filter_style_properties=set(_STYLE_PROPERTIES),
        link_rel="noopener noreferrer nofollow",
        set_tag_attribute_values={"a": {"target": "_blank"}},
        strip_comments=True,
    )
    return cleaned


def inline_images(message: Message) -> dict[str, str]:
    """The message's own images by lower-cased Content-ID, as ``data:`` URLs (small, non-svg)."""
    images: dict[str, str] = {}
    for part in message.attachments:
        if not part.content_id or part.size > MAX_INLINE_IMAGE:
            continue
        kind = part.content_type.lower()
        if kind not in ("image/png", "image/gif", "image/jpeg", "image/webp"):
            continue  # svg can carry script and markup; anything else is not an image
        data = base64.b64encode(part.data).decode("ascii")
        images.setdefault(_content_id(part.content_id), f"data:{kind};base64,{data}")
    return images


# -- one message -----------------------------------------------------------------------------

_FLAG_NAMES = {
    "\\Seen": "read",
    "\\Flagged": "flagged",
    "\\Answered": "answered",
    "\\Draft": "draft",
    "\\Deleted": "deleted",
}


def _addresses(values: Iterable[Any]) -> str:
    return ", ".join(_e(str(a)) for a in values)


def _body(message: Message) -> str:
    if message.headers_only:
        return '<p style="opacity:.7">(headers only: the body was not fetched)</p>'
    markup = message.html
    if markup and sanitizer_available():
        cleaned = sanitize_html(markup[:MAX_BODY_CHARS], inline_images(message))
        return f'<div style="overflow-wrap:anywhere">{cleaned}</div>'
    note = ""
    if markup:
        note = (
            '<p style="opacity:.7">This message has an html part; install nh3 '
            '(<code>pip install "mailsync[notebook]"</code>) to show it, safely. '
            "The text part follows.</p>"
        )
    text = message.text
    cut = "\n… (cut; the whole text is in message.text)" if len(text) > MAX_BODY_CHARS else ""
    if not text:
        return note or '<p style="opacity:.7">(no text)</p>'
    return (
        f'{note}<pre style="white-space:pre-wrap;overflow-wrap:anywhere;margin:0;'
        f'font-family:inherit">{_e(text[:MAX_BODY_CHARS] + cut)}</pre>'
    )


def message_html(message: Message) -> str:
    """A card: subject, from, to, cc, date, folder, flags and labels, attachments, then the
    text or the sanitized html body."""
    rows = [("From", _e(str(message.from_)) if message.from_ else "")]
    rows += [("To", _addresses(message.to)), ("Cc", _addresses(message.cc))]
    rows += [("Date", _e(local_time(message.date))), ("Folder", _e(message.folder))]
    header = "".join(
        f'<tr><th style="{_CELL}opacity:.7;font-weight:normal">{name}</th>'
        f'<td style="{_CELL}">{value}</td></tr>'
        for name, value in rows
        if value
    )
    marks = [_FLAG_NAMES.get(flag, flag) for flag in sorted(message.flags)]
    if "\\Seen" not in message.flags:
        marks.insert(0, "unread")
    chips = "".join(_chip(mark) for mark in marks)
    chips += "".join(_chip(label, title="label") for label in sorted(message.labels))
    files = "".join(
        _chip(f"📎 {part.filename or part.content_type} · {human_size(part.size)}")
        for part in message.attachments
        if not part.inline
    )
    subject = _e(message.subject) if message.subject else '<i style="opacity:.7">(no subject)</i>'
    return (
        f'<div class="mailsync-message" style="border:{_BORDER};border-radius:6px;'
        f'padding:8px 12px;max-width:60em;{_FONT}">'
        f'<div style="font-size:1.15em;font-weight:600">{subject}</div>'
        f'<table style="border-collapse:collapse;font-size:.9em;margin:4px 0">{header}</table>'
        f"<div>{chips}</div><div>{files}</div>"
        # contain: a fixed-position element stays inside the card, whatever CSS got through.
        f'<div style="border-top:{_BORDER};margin-top:6px;padding-top:6px;max-height:36em;'
        f'overflow:auto;contain:content">{_body(message)}</div></div>'
    )


# -- lists of messages -----------------------------------------------------------------------


def has_attachments(message: Message) -> bool | None:
    """Whether the message has a part that is not a body and not inline; None when only the
    headers were fetched and they cannot tell."""
    if message.headers_only:
        kind = message.headers.get("Content-Type", "text/plain").strip().lower()
        return None if kind.startswith("multipart/") else False
    return any(not part.inline for part in message.attachments)


def messages_html(messages: Sequence[Message]) -> str:
    """A table of the messages: unread in bold, flagged and attachment marks, local times with
    their zone, folder and size; the first :data:`MAX_ROWS` rows and "… N more"."""
    head = ["", "Date", "From", "Subject", "Folder", "Size"]
    rows = []
    for message in messages[:MAX_ROWS]:
        marks = ("⚑" if "\\Flagged" in message.flags else "") + (
            "📎" if has_attachments(message) else ""
        )
        sender = message.from_
        who = _e(sender.name or sender.email) if sender else ""
        title = f' title="{_e(sender.email)}"' if sender else ""
        cells = [
            marks,
            f'<span style="white-space:nowrap">{_e(local_time(message.date))}</span>',
            f"<span{title}>{who}</span>",
            _e(_shorten(message.subject, 90)),
            _e(message.folder),
            f'<span style="white-space:nowrap">{_e(human_size(message.size))}</span>',
        ]
        rows.append(_row(cells, style="" if message.seen else "font-weight:bold;"))
    rows.append(_more(len(messages), MAX_ROWS, len(head)))
    unread = sum(1 for message in messages if not message.seen)
    caption = _e(f"{_plural(len(messages), 'message')}, {unread} unread")
    return f'<div class="mailsync-messages">{_table(head, rows, caption=caption)}</div>'


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


#: The columns of :func:`messages_dataframe`, in order.
DATAFRAME_COLUMNS = (
    "date",
    "from_name",
    "from_email",
    "to",
    "cc",
    "subject",
    "size",
    "seen",
    "flagged",
    "answered",
    "flags",
    "has_attachments",
    "folder",
    "labels",
    "id",
    "message_id",
    "thread_id",
)


def _record(message: Message) -> dict[str, Any]:
    sender = message.from_
    return {
        "date": message.date,
        "from_name": sender.name if sender and sender.name else None,
        "from_email": sender.email.lower() if sender and sender.email else None,
        "to": [a.email.lower() for a in message.to if a.email],
        "cc": [a.email.lower() for a in message.cc if a.email],
        "subject": message.subject,
        "size": message.size,
        "seen": "\\Seen" in message.flags,
        "flagged": "\\Flagged" in message.flags,
        "answered": "\\Answered" in message.flags,
        "flags": sorted(message.flags),
        "has_attachments": has_attachments(message),
        "folder": message.folder,
        "labels": sorted(message.labels),
        "id": message.id,
        "message_id": message.message_id,
        "thread_id": message.thread_id,
    }


def messages_dataframe(messages: Sequence[Message]) -> Any:
    """A ``pandas.DataFrame``, one row per message, with typed columns.

    ``date`` is timezone-aware (UTC: one column holds one zone; ``.dt.tz_convert(...)`` for
    another), ``size`` an integer, ``seen``/``flagged``/``answered`` booleans,
    ``has_attachments`` a nullable boolean (unknown for header-only messages), ``from_email``,
    ``to`` and ``cc`` lower-cased addresses (``to``/``cc``/``flags``/``labels`` are lists), and
    the text columns pandas' ``string`` dtype.

    Raises:
        ImportError: pandas is not installed (``pip install "mailsync[pandas]"``).
    """
    try:
        import pandas as pd
    except ImportError as exc:
        raise ImportError('to_pandas() needs pandas: pip install "mailsync[pandas]"') from exc
    records = [_record(message) for message in messages]
    frame = pd.DataFrame.from_records(records, columns=list(DATAFRAME_COLUMNS))
    frame["date"] = pd.to_datetime(frame["date"], utc=True)
    texts = ["from_name", "from_email", "subject", "folder", "id", "message_id", "thread_id"]
    return frame.astype(
        {
            "size": "int64",
            "seen": "bool",
            "flagged": "bool",
            "answered": "bool",
            "has_attachments": "boolean",
            **dict.fromkeys(texts, "string"),
        }
    )


# -- folders, headers, reports ---------------------------------------------------------------


def folders_html(folders: Sequence[Folder]) -> str:
    """A table of folders: name (indented by depth), special use and other attributes."""
    rows = []
    for folder in folders[:MAX_ROWS]:
        depth = folder.name.count(folder.delimiter) if folder.delimiter else 0
        leaf = folder.name.rsplit(folder.delimiter, 1)[-1] if folder.delimiter else folder.name
        name = f'<span title="{_e(folder.name)}" style="padding-left:{depth * 1.2}em">{_e(leaf)}'
        name += "</span>" if folder.selectable else ' <i style="opacity:.6">(no mail)</i></span>'
        use = _e(folder.special_use.lstrip("\\")) if folder.special_use else ""
        rows.append(_row([name, use, _e(" ".join(sorted(folder.flags)))]))
    rows.append(_more(len(folders), MAX_ROWS, 3))
    caption = _e(_plural(len(folders), "folder"))
    return _table(["Folder", "Special use", "Attributes"], rows, caption=caption)


def headers_html(headers: HeaderMap) -> str:
    """A table of every header field in order, repeats included."""
    items = headers.items_all()
    rows = [_row([f"<b>{_e(name)}</b>", _e(value)]) for name, value in items[: MAX_ROWS * 2]]
    rows.append(_more(len(items), MAX_ROWS * 2, 2))
    return _table(["Header", "Value"], rows, caption=_e(_plural(len(items), "field")))


_ACTION_COLOURS = {
    "delivered": "#2e7d32",
    "relayed": "#2e7d32",
    "expanded": "#2e7d32",
    "displayed": "#2e7d32",
    "delayed": "#ef6c00",
    "failed": "#c62828",
}


def report_html(report: DeliveryReport) -> str:
    """The report's kind, what it is about, and one row per recipient."""
    about = [f"<b>{_e(report.kind.upper())}</b>"]
    if report.original_message_id:
        about.append(f"about <code>&lt;{_e(report.original_message_id)}&gt;</code>")
    if report.envid:
        about.append(f"envid <code>{_e(report.envid)}</code>")
    if report.reporting_mta:
        about.append(f"from {_e(report.reporting_mta)}")
    if report.arrival_date:
        about.append(f"received {_e(local_time(report.arrival_date))}")
    rows = []
    for entry in report.recipients:
        colour = _ACTION_COLOURS.get(entry.action, "inherit")
        reason = getattr(entry, "reason", None)
        permanent = getattr(entry, "permanent", None)
        rows.append(
            _row(
                [
                    _e(entry.recipient),
                    f'<span style="color:{colour};font-weight:600">{_e(entry.action)}</span>',
                    _e(entry.status or ""),
                    _e(reason or ""),
                    "yes" if permanent else "",
                    _e(_shorten(entry.diagnostic or "", 200)),
                ]
            )
        )
    head = ["Recipient", "Action", "Status", "Reason", "Permanent", "Diagnostic"]
    return (
        f'<div class="mailsync-report" style="{_FONT}"><div>{" · ".join(about)}</div>'
        f"{_table(head, rows)}</div>"
    )
