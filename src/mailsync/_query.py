"""Queries: :class:`Q` objects and the client-side evaluator every backend can fall back on.

A ``Q`` is a tree: leaves hold criteria (all of which must hold), inner nodes are ``&``, ``|``
and ``~``. The meaning is fixed here, once, so every backend returns the same messages:

- ``seen``/``flagged``: the ``\\Seen``/``\\Flagged`` flag is present (True) or absent (False).
- ``from_``/``to``/``subject``/``text``: contains, case-insensitively, in the decoded From
  (name or address), To (name or address), Subject, or in subject + text + html body.
- ``since``/``before``: the message date (Date header, else arrival) is ``>= since`` and
  ``< before``; a ``date`` means midnight UTC of that day, a naive datetime is UTC.
- ``larger``/``smaller``: the size in bytes is strictly greater / smaller.

Backends translate what they can natively (IMAP SEARCH, Gmail ``q``, OData ``$filter``) so the
server narrows the set, and then apply :meth:`Q.matches` to what comes back whenever the native
form is not exact. :func:`decide` judges a query on a partial view of a message (its headers,
before the body is downloaded), saying when the answer depends on what the view lacks. This
module does no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any, Literal

from mailsync._errors import ConfigError
from mailsync._message import Message

__all__ = ["Q", "as_datetime", "decide", "parse_query", "parse_size", "parse_when"]

_FIELDS = (
    "seen",
    "flagged",
    "from_",
    "to",
    "subject",
    "text",
    "since",
    "before",
    "larger",
    "smaller",
)


def as_datetime(value: date | datetime) -> datetime:
    """Normalise a query bound: a date is midnight UTC, a naive datetime is UTC."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.combine(value, time(0), tzinfo=UTC)


@dataclass(frozen=True)
class Q:
    """A query over messages, combined with ``&`` (and), ``|`` (or) and ``~`` (not).

    Example:
        ``Q(from_="alice", since=date(2026, 1, 1)) & ~Q(seen=True)``

    Args:
        seen: Only messages with (True) or without (False) ``\\Seen``.
        flagged: Only messages with (True) or without (False) ``\\Flagged``.
        from_: Text contained in the From name or address.
        to: Text contained in a To name or address.
        subject: Text contained in the subject.
        text: Text contained in the subject or the text/html body.
        since: Messages dated at or after this.
        before: Messages dated before this.
        larger: Messages larger than this many bytes.
        smaller: Messages smaller than this many bytes.
    """

    seen: bool | None = None
    flagged: bool | None = None
    from_: str | None = None
    to: str | None = None
    subject: str | None = None
    text: str | None = None
    since: date | datetime | None = None
    before: date | datetime | None = None
    larger: int | None = None
    smaller: int | None = None
    op: Literal["leaf", "and", "or", "not"] = field(default="leaf", repr=False)
    children: tuple[Q, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        for name in ("seen", "flagged"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                raise ConfigError(f"Q({name}=...) takes True or False, not {value!r}")
        for name in ("from_", "to", "subject", "text"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"Q({name}=...) takes a string, not {value!r}")
        for name in ("since", "before"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, date):
                raise ConfigError(f"Q({name}=...) takes a date or datetime, not {value!r}")
        for name in ("larger", "smaller"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ConfigError(f"Q({name}=...) takes a number of bytes, not {value!r}")

    @classmethod
    def parse(cls, text: str) -> Q:
        """A query from text, as the command line's ``--query`` takes it.

        ``Q.parse('from:alice is:unseen since:7d')`` is ``Q(from_="alice") & Q(seen=False)
        & Q(since=<a week ago>)``. Terms side by side must all hold; ``OR`` between terms,
        ``-`` or ``NOT`` before one, and parentheses group; a word without a key searches
        the text. Keys: ``from to subject text``, ``is:seen|unseen|flagged|unflagged``,
        ``since before`` (``2026-01-31``, ``today``, ``yesterday``, ``7d``, ``2w``, ``1y``),
        ``larger smaller`` (``10k``, ``5M``).

        Raises:
            ConfigError: Not a query; the message says which part and why.
        """
        return parse_query(text)

    # -- combining ---------------------------------------------------------------------------

    def __and__(self, other: Q) -> Q:
        if not isinstance(other, Q):
            return NotImplemented
        return Q(op="and", children=(*self._flatten("and"), *other._flatten("and")))

    def __or__(self, other: Q) -> Q:
        if not isinstance(other, Q):
            return NotImplemented
        return Q(op="or", children=(*self._flatten("or"), *other._flatten("or")))

    def __invert__(self) -> Q:
        if self.op == "not":
            return self.children[0]
        return Q(op="not", children=(self,))

    def _flatten(self, op: str) -> tuple[Q, ...]:
        return self.children if self.op == op else (self,)

    # -- inspection --------------------------------------------------------------------------

    def criteria(self) -> dict[str, Any]:
        """The criteria of a leaf that are set, by name (empty for an inner node)."""
        if self.op != "leaf":
            return {}
        return {name: getattr(self, name) for name in _FIELDS if getattr(self, name) is not None}

    def walk(self) -> Iterator[Q]:
        """This node and every node below it, depth first."""
        yield self
        for child in self.children:
            yield from child.walk()

    @property
    def needs_body(self) -> bool:
        """True when evaluating this query client-side needs the message body."""
        return any(node.text is not None for node in self.walk())

    def __repr__(self) -> str:
        if self.op == "leaf":
            inner = ", ".join(f"{k}={v!r}" for k, v in self.criteria().items())
            return f"Q({inner})"
        if self.op == "not":
            return f"~{self.children[0]!r}"
        joiner = " & " if self.op == "and" else " | "
        return "(" + joiner.join(repr(c) for c in self.children) + ")"

    # -- evaluation --------------------------------------------------------------------------

    def matches(self, message: Message) -> bool:
        """Whether ``message`` satisfies this query, by the rules in the module docstring."""
        if self.op == "and":
            return all(child.matches(message) for child in self.children)
        if self.op == "or":
            return any(child.matches(message) for child in self.children)
        if self.op == "not":
            return not self.children[0].matches(message)
        return all(_CHECKS[name](message, value) for name, value in self.criteria().items())


def _contains(haystack: str, needle: str) -> bool:
    return needle.casefold() in haystack.casefold()


def _addresses_contain(addresses: Any, needle: str) -> bool:
    return any(_contains(a.name, needle) or _contains(a.email, needle) for a in addresses)


def _in_range(message: Message, bound: date | datetime, *, lower: bool) -> bool:
    when = message.date
    if when is None:
        return False
    limit = as_datetime(bound)
    return when >= limit if lower else when < limit


_CHECKS: dict[str, Callable[[Message, Any], bool]] = {
    "seen": lambda m, v: ("\\Seen" in m.flags) == v,
    "flagged": lambda m, v: ("\\Flagged" in m.flags) == v,
    "from_": lambda m, v: _addresses_contain((m.from_,) if m.from_ else (), v),
    "to": lambda m, v: _addresses_contain(m.to, v),
    "subject": lambda m, v: _contains(m.subject, v),
    "text": lambda m, v: _contains(m.subject, v) or _contains(m.text, v) or _contains(m.html, v),
    "since": lambda m, v: _in_range(m, v, lower=True),
    "before": lambda m, v: _in_range(m, v, lower=False),
    "larger": lambda m, v: m.size > v,
    "smaller": lambda m, v: m.size < v,
}


def decide(query: Q, message: Message, unknown: Collection[str]) -> bool | None:
    """Judge ``query`` on a partial view of a message, where the criteria named in ``unknown``
    cannot be judged (a header-only view cannot judge ``text``, nor ``larger`` when its size is
    an estimate).

    Returns:
        True or False when the criteria that can be judged settle it either way (``A & B`` is
        False when ``A`` is, whatever ``B``), None when the answer depends on the others.
    """
    if query.op == "not":
        inner = decide(query.children[0], message, unknown)
        return None if inner is None else not inner
    if query.op in ("and", "or"):
        settles = query.op == "or"  # the value that decides an "or" (True) or an "and" (False)
        result: bool | None = not settles
        for child in query.children:
            verdict = decide(child, message, unknown)
            if verdict is settles:
                return settles
            if verdict is None:
                result = None
        return result
    result = True
    for name, value in query.criteria().items():
        if name in unknown:
            result = None
        elif not _CHECKS[name](message, value):
            return False
    return result


# -- the query language of the command line ------------------------------------------------------

_TOKEN = re.compile(r'\s*(?:(\()|(\))|((?:[^\s()"]|"(?:[^"\\]|\\.)*")+))')
_IS = {
    "seen": ("seen", True),
    "read": ("seen", True),
    "unseen": ("seen", False),
    "unread": ("seen", False),
    "flagged": ("flagged", True),
    "starred": ("flagged", True),
    "unflagged": ("flagged", False),
}
_TEXT_KEYS = {"from": "from_", "to": "to", "subject": "subject", "text": "text"}
_DATE_KEYS = ("since", "before")
_SIZE_KEYS = ("larger", "smaller")
_KEYS = ("is", *_TEXT_KEYS, *_DATE_KEYS, *_SIZE_KEYS)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_AGO = re.compile(r"(\d+)([dwy])")


def parse_query(text: str) -> Q:
    """A :class:`Q` from the query language of the command line.

    ``from:alice subject:"quarterly report" is:unseen since:2026-01-01 larger:1M``: terms
    side by side must all hold; ``OR`` between terms, ``-`` or ``NOT`` before one, and
    parentheses group. A word without a key searches the text (subject and bodies). Keys:
    ``from to subject text`` (contains), ``is:seen|unseen|read|unread|flagged|unflagged``,
    ``since before`` (``2026-01-31``, an ISO date-time, ``today``, ``yesterday``, or ``7d``,
    ``2w``, ``1y`` ago), ``larger smaller`` (bytes; ``10k``, ``5M``, ``1G``).

    Raises:
        ConfigError: The text is not a query; the message quotes the part that is wrong and,
            for a misspelled key, the closest valid one.
    """
    tokens = _tokens(text)
    if not tokens:
        raise ConfigError("the query is empty")
    parser = _QueryParser(text, tokens)
    query = parser.expression()
    if parser.position < len(tokens):
        raise parser.error(f"unexpected {tokens[parser.position]!r}")
    return query


def parse_when(value: str) -> date | datetime:
    """A date for ``since``/``before``: ``YYYY-MM-DD``, an ISO date-time, ``today``,
    ``yesterday``, or ``<n>d``/``<n>w``/``<n>y`` ago.

    Raises:
        ConfigError: Anything else.
    """
    from datetime import timedelta

    text = value.strip().lower()
    today = date.today()
    if text == "today":
        return today
    if text == "yesterday":
        return today - timedelta(days=1)
    ago = _AGO.fullmatch(text)
    if ago:
        count, unit = int(ago.group(1)), ago.group(2)
        return today - timedelta(days=count * {"d": 1, "w": 7, "y": 365}[unit])
    try:
        return date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"{value!r} is not a date: use 2026-01-31, 2026-01-31T09:00, today, yesterday, "
            "or 7d / 2w / 1y ago"
        ) from None


def parse_size(value: str) -> int:
    """Bytes from ``1500``, ``10k``, ``5M`` or ``1G`` (powers of 1024).

    Raises:
        ConfigError: Anything else.
    """
    match = re.fullmatch(r"(\d+)([kmg]?)b?", value.strip().lower())
    if match is None:
        raise ConfigError(f"{value!r} is not a size: use 1500, 10k, 5M or 1G")
    return int(match.group(1)) * _UNITS[match.group(2)]


def _tokens(text: str) -> list[str]:
    tokens: list[str] = []
    position = 0
    while position < len(text.rstrip()):
        match = _TOKEN.match(text, position)
        if match is None:
            raise ConfigError(f"query {text!r}: a quote is not closed")
        tokens.append(match.group(match.lastindex or 0))
        position = match.end()
    return tokens


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


class _QueryParser:
    """Recursive descent over the words: or -> and -> not -> term."""

    def __init__(self, text: str, words: list[str]) -> None:
        self.text = text
        self.words = words
        self.position = 0

    def error(self, problem: str) -> ConfigError:
        return ConfigError(f"query {self.text!r}: {problem}")

    def _peek(self) -> str | None:
        return self.words[self.position] if self.position < len(self.words) else None

    def _take(self) -> str:
        word = self._peek()
        if word is None:
            raise self.error("it ends too early")
        self.position += 1
        return word

    def expression(self) -> Q:
        query = self._all()
        while self._peek() == "OR":
            self.position += 1
            query = query | self._all()
        return query

    def _all(self) -> Q:
        parts = [self._negated()]
        while self._peek() not in (None, ")", "OR"):
            if self._peek() == "AND":
                self.position += 1
            parts.append(self._negated())
        query = parts[0]
        for part in parts[1:]:
            query = query & part
        return query

    def _negated(self) -> Q:
        word = self._peek()
        if word == "NOT":
            self.position += 1
            return ~self._negated()
        if word is not None and word.startswith("-") and len(word) > 1:
            self.words[self.position] = word[1:]
            return ~self._negated()
        return self._term()

    def _term(self) -> Q:
        word = self._take()
        if word == "(":
            query = self.expression()
            if self._take() != ")":
                raise self.error("a '(' is not closed")
            return query
        if word == ")":
            raise self.error("a ')' without its '('")
        key, colon, value = word.partition(":")
        if not colon or key.startswith('"'):
            return Q(text=_unquote(word))
        return self._criterion(key.lower(), _unquote(value))

    def _criterion(self, key: str, value: str) -> Q:
        if not value:
            raise self.error(f"{key}: needs a value")
        if key in _TEXT_KEYS:
            return _leaf(_TEXT_KEYS[key], value)
        if key == "is":
            if value.lower() not in _IS:
                raise self.error(f"is:{value} is not one of {', '.join('is:' + k for k in _IS)}")
            name, flag = _IS[value.lower()]
            return _leaf(name, flag)
        if key in _DATE_KEYS:
            return _leaf(key, _rethrow(self, parse_when, value))
        if key in _SIZE_KEYS:
            return _leaf(key, _rethrow(self, parse_size, value))
        import difflib

        close = difflib.get_close_matches(key, _KEYS, n=1)
        guess = f" (did you mean {close[0]!r}?)" if close else ""
        raise self.error(f"unknown key {key!r}{guess}; keys: {', '.join(_KEYS)}")


def _leaf(name: str, value: Any) -> Q:
    criteria: dict[str, Any] = {name: value}
    return Q(**criteria)


def _rethrow(parser: _QueryParser, convert: Callable[[str], Any], value: str) -> Any:
    try:
        return convert(value)
    except ConfigError as exc:
        raise parser.error(str(exc)) from None
