"""Progress bars for long operations (``progress=True`` on ``messages()``, ``sync()`` and
``send_many()``): tqdm's widget in Jupyter, tqdm's text bar on a terminal, nothing elsewhere.

This module only decides where a bar can be seen and opens it; the counting is done by
:mod:`mailsync._stream`. tqdm is optional (the ``notebook`` extra): without it a terminal gets a
one-line counter (the CLI's, so a core install still shows progress) and a notebook gets
nothing but one log line saying what to install. Output that is neither a notebook nor a
terminal (a pipe, a log file, a service) never gets a bar.
"""

from __future__ import annotations

import logging
import sys
import time
from functools import cache
from typing import IO, Any, Protocol

__all__ = ["Bar", "Counter", "open_bar"]

log = logging.getLogger("mailsync")


class Bar(Protocol):
    """What :func:`open_bar` returns: tqdm's interface, the part mailsync uses."""

    def update(self, n: float | None = 1) -> object: ...

    def close(self) -> None: ...


class Counter:
    """A one-line counter with a rate, redrawn at most 10 times a second (no tqdm needed).

    Args:
        stream: Where to draw it (a terminal).
        desc: What is counted, shown first.
        unit: The unit counted.
    """

    def __init__(self, stream: IO[str], desc: str = "", unit: str = "messages") -> None:
        self.stream = stream
        self.desc = desc
        self.unit = unit
        self.count = 0
        self.started = time.monotonic()
        self._last = 0.0

    def update(self, n: float | None = 1) -> None:
        """Count ``n`` more and redraw if the last drawing is old enough."""
        self.count += int(n or 0)
        now = time.monotonic()
        if now - self._last < 0.1:
            return
        self._last = now
        rate = self.count / max(now - self.started, 1e-6)
        prefix = f"{self.desc}: " if self.desc else ""
        self.stream.write(f"\r{prefix}{self.count} {self.unit} ({rate:.0f}/s)")
        self.stream.flush()

    def close(self) -> None:
        """Erase the line."""
        if self._last:
            self.stream.write("\r\033[K")
            self.stream.flush()


def in_notebook() -> bool:
    """True inside a Jupyter kernel (IPython with a kernel attached; Colab's shell too)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and getattr(shell, "kernel", None) is not None


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a replaced or closed stderr
        return False


@cache
def _hint_once(where: str) -> None:
    log.warning('progress=True needs tqdm for a bar %s: pip install "mailsync[notebook]"', where)


def open_bar(*, total: int | None = None, desc: str = "", unit: str = "msg") -> Bar | None:
    """A progress bar where someone can see it, or None.

    Args:
        total: The expected count, if known (a ``limit``, the length of a list).
        desc: A short label (a folder name).
        unit: What is counted.
    """
    if in_notebook():
        return _notebook_bar(total, desc, unit)
    if not _is_terminal(sys.stderr):
        return None
    try:
        from tqdm.std import tqdm
    except ImportError:
        return Counter(sys.stderr, desc, "messages" if unit == "msg" else unit)
    bar: Bar = tqdm(total=total, desc=desc or None, unit=unit, file=sys.stderr, leave=False)
    return bar


def _notebook_bar(total: int | None, desc: str, unit: str) -> Bar | None:
    try:
        from tqdm.std import tqdm as text_bar
    except ImportError:
        _hint_once("in a notebook")
        return None
    try:
        from tqdm.notebook import tqdm as widget_bar

        bar: Bar = widget_bar(total=total, desc=desc or None, unit=unit)
    except ImportError:  # no ipywidgets: the text bar still shows in the cell's output
        bar = text_bar(total=total, desc=desc or None, unit=unit, file=sys.stderr)
    return bar
