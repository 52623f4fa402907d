"""Jupyter support: how a :class:`~mailsync.MessageList` shows as a table and becomes a
pandas DataFrame. Imported only when a notebook asks; pandas is optional."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from mailsync._message import Message

__all__ = ["messages_dataframe", "messages_html"]

_MAX_ROWS = 200


def _row(message: Message) -> dict[str, Any]:
    return {
        "date": message.date,
        "from": str(message.from_) if message.from_ else "",
        "to": ", ".join(str(a) for a in message.to),
        "subject": message.subject,
        "size": message.size,
        "flags": " ".join(sorted(message.flags)),
        "folder": message.folder,
        "id": message.id,
    }


def messages_html(messages: Sequence[Message]) -> str:
    """An html table of the messages (the first 200 rows), escaped."""
    columns = ["date", "from", "to", "subject", "size", "flags"]
    head = "".join(f"<th>{c}</th>" for c in columns)
    rows = []
    for message in messages[:_MAX_ROWS]:
        row = _row(message)
        cells = []
        for column in columns:
            value = row[column]
            text = value.strftime("%Y-%m-%d %H:%M") if hasattr(value, "strftime") else str(value)
            cells.append(f"<td>{html.escape(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    more = len(messages) - _MAX_ROWS
    footer = f"<p>… and {more} more</p>" if more > 0 else ""
    return (
        f"<p>{len(messages)} message{'s' if len(messages) != 1 else ''}</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>{footer}"
    )


def messages_dataframe(messages: Sequence[Message]) -> Any:
    """A ``pandas.DataFrame`` with one row per message.

    Raises:
        ImportError: pandas is not installed (``pip install "mailsync[pandas]"``).
    """
    try:
        import pandas as pd
    except ImportError as exc:
        raise ImportError('to_pandas() needs pandas: pip install "mailsync[pandas]"') from exc
    return pd.DataFrame([_row(m) for m in messages], columns=list(_row_columns()))


def _row_columns() -> tuple[str, ...]:
    return ("date", "from", "to", "subject", "size", "flags", "folder", "id")
