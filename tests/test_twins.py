"""Every sync/async pair offers the same public methods with the same signatures: each
backend's retrievers and senders (every scheme of the registry that is not just planned, so
a backend added there is checked without touching this file), ``SyncRun``/``AsyncSyncRun``
and ``watch_many``/``watch_many_async``.

The only names allowed to differ are the ones the I/O models name differently: ``close`` is
``aclose``, ``__iter__``/``__next__`` are ``__aiter__``/``__anext__``. Parameters must match
in name, kind, default and annotation; return annotations may differ (an iterator and its
async twin), and every public method of an async class must be awaitable or asynchronously
iterable.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

import pytest

import mailsync
from mailsync import _registry

#: Sync name -> async name, where the I/O models name a thing differently.
RENAMED = {"close": "aclose", "__iter__": "__aiter__", "__next__": "__anext__"}


def _pairs() -> list[tuple[str, type, type]]:
    pairs = []
    for scheme, spec in sorted(_registry._BUILTIN.items()):
        if spec.planned:
            continue
        for sync_role, async_role in (("retriever", "async_retriever"), ("sender", "async_sender")):
            if getattr(spec, sync_role) is None and getattr(spec, async_role) is None:
                continue
            sync_class = _registry.load(scheme, sync_role)  # type: ignore[arg-type]
            async_class = _registry.load(scheme, async_role)  # type: ignore[arg-type]
            pairs.append((f"{scheme} {sync_role}", sync_class, async_class))
    pairs.append(("SyncRun", mailsync.SyncRun, mailsync.AsyncSyncRun))
    pairs.append(("Retriever", mailsync.Retriever, mailsync.AsyncRetriever))
    pairs.append(("Sender", mailsync.Sender, mailsync.AsyncSender))
    return pairs


def _public(cls: type) -> dict[str, Any]:
    """Public names (and the iteration dunders) defined on the class or its bases."""
    names: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if klass is object:
            continue
        for name, value in vars(klass).items():
            if not name.startswith("_") or name in RENAMED or name in RENAMED.values():
                names[name] = value
    return names


def _parameters(function: Callable[..., Any]) -> list[tuple[str, Any, Any, Any]]:
    """Name, kind, default and annotation of each parameter; an annotation naming an async
    class (``AsyncRetriever``) is read as its sync twin's."""
    signature = inspect.signature(function)
    return [
        (p.name, p.kind, p.default, re.sub(r"\bAsync(?=[A-Z])", "", str(p.annotation)))
        for p in signature.parameters.values()
        if p.name != "self"
    ]


def _asynchronous(function: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function):
        return True
    returns = str(inspect.signature(function).return_annotation)
    return "Async" in returns  # returns an async iterator (AsyncIterator, AsyncSyncRun)


def differences(sync_class: type, async_class: type) -> list[str]:
    """What makes the two classes of a pair differ, in words (empty: they do not)."""
    found = []
    sync_names = _public(sync_class)
    async_names = _public(async_class)
    expected = {RENAMED.get(name, name) for name in sync_names}
    for name in sorted(expected - set(async_names)):
        found.append(f"{async_class.__name__} lacks {name}")
    for name in sorted(set(async_names) - expected):
        found.append(f"{sync_class.__name__} lacks the twin of {name}")
    for name, value in sorted(sync_names.items()):
        twin = async_names.get(RENAMED.get(name, name))
        if twin is None or not callable(value) or isinstance(value, type):
            continue
        if isinstance(value, staticmethod | classmethod) or isinstance(twin, property):
            continue
        if _parameters(value) != _parameters(twin):
            found.append(
                f"{name}{inspect.signature(value)} != {RENAMED.get(name, name)}"
                f"{inspect.signature(twin)}"
            )
        if not _asynchronous(twin) and name not in ("__iter__", "sync"):
            found.append(f"{async_class.__name__}.{name} is not asynchronous")
        if inspect.iscoroutinefunction(value) or inspect.isasyncgenfunction(value):
            found.append(f"{sync_class.__name__}.{name} is asynchronous")
    return found


@pytest.mark.parametrize(
    ("pair", "sync_class", "async_class"), [pytest.param(*pair, id=pair[0]) for pair in _pairs()]
)
def test_the_twins_offer_the_same_methods(pair: str, sync_class: type, async_class: type) -> None:
    assert differences(sync_class, async_class) == []


def test_watch_many_twins_take_the_same_arguments() -> None:
    assert _parameters(mailsync.watch_many) == _parameters(mailsync.watch_many_async)


def test_every_offered_scheme_is_checked() -> None:
    checked = {pair.split()[0] for pair, _, _ in _pairs()}
    offered = {scheme for scheme, spec in _registry._BUILTIN.items() if not spec.planned}
    assert offered <= checked


def test_a_drifted_pair_is_caught() -> None:
    class Sync(mailsync.Sender):
        def send(self, message: Any, *, notify: Any = None, **kw: Any) -> Any: ...

        def flush(self, *, wait: bool = True) -> None: ...

    class Async(mailsync.AsyncSender):
        async def send(self, message: Any, *, notify: Any = "x", **kw: Any) -> Any: ...

        def flush(self, *, wait: bool = True) -> None: ...

        async def extra(self) -> None: ...

    found = differences(Sync, Async)
    assert "Sync lacks the twin of extra" in found
    assert any(line.startswith("send(") for line in found)
    assert "Async.flush is not asynchronous" in found
