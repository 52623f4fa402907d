"""Which class serves which URL scheme, imported only when first used.

Each scheme maps to up to four classes (sync/async retriever, sync/async sender) named by
``"module:attribute"`` strings, so ``import mailsync`` imports no backend library. A scheme
whose optional dependency is missing raises :class:`~mailsync.ConfigError` saying which
``pip install "mailsync[...]"`` fixes it.

Third-party packages add schemes through the ``mailsync.backends`` entry-point group: the entry
point's name is the scheme and its object a :class:`BackendSpec`. Entry points add new schemes
or fill a planned one (a :class:`BackendSpec` with ``planned=True``); replacing a shipped
backend takes an explicit :func:`register`.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from mailsync._errors import ConfigError, Unsupported

__all__ = ["BackendSpec", "check_options", "load", "register", "schemes", "spec_for"]

Role = Literal["retriever", "async_retriever", "sender", "async_sender"]


@dataclass(frozen=True)
class BackendSpec:
    """Where the classes of one scheme live (``"package.module:Class"``; None: not offered).

    Attributes:
        retriever: The sync :class:`~mailsync.Retriever` class.
        async_retriever: The :class:`~mailsync.AsyncRetriever` class.
        sender: The sync :class:`~mailsync.Sender` class.
        async_sender: The :class:`~mailsync.AsyncSender` class.
        extras: Role -> the extra that provides its dependencies, for the install hint.
        planned: Say "not available yet" rather than "not offered" for missing roles.
        options: The backend-specific keyword options (and URL query parameters) the scheme's
            classes read from ``Endpoint.params``, such as ``base_url`` or ``batch_size``.
            Any other name given to :func:`mailsync.connect` or :func:`mailsync.sender` is a
            :class:`~mailsync.ConfigError` that suggests the closest valid one. None (a spec
            that does not say) accepts any name unchecked.
    """

    retriever: str | None = None
    async_retriever: str | None = None
    sender: str | None = None
    async_sender: str | None = None
    extras: tuple[tuple[str, str], ...] = ()
    planned: bool = False
    options: frozenset[str] | None = None


_IMAP = BackendSpec(
    retriever="mailsync.backends.imap:IMAPRetriever",
    async_retriever="mailsync.backends.imap_async:AsyncIMAPRetriever",
    extras=(("async_retriever", "async"),),
    options=frozenset({"batch_size", "max_message_size"}),
)
_POP3 = BackendSpec(
    retriever="mailsync.backends.pop3:POP3Retriever",
    async_retriever="mailsync.backends.pop3:AsyncPOP3Retriever",
    options=frozenset({"apop", "max_message_size"}),
)
_SMTP = BackendSpec(
    sender="mailsync.backends.smtp:SMTPSender",
    async_sender="mailsync.backends.smtp:AsyncSMTPSender",
    options=frozenset(
        {
            "retries",
            "retry_delay",
            "reconnects",
            "local_hostname",
            "pipelining",
            "resend_uncertain",
        }
    ),
)
_MAILDIR = BackendSpec(
    retriever="mailsync.backends.maildir:MaildirRetriever",
    async_retriever="mailsync.backends.maildir:AsyncMaildirRetriever",
    sender="mailsync.backends.maildir:MaildirSender",
    async_sender="mailsync.backends.maildir:AsyncMaildirSender",
    options=frozenset({"create", "max_message_size"}),
)
_MBOX = BackendSpec(
    retriever="mailsync.backends.mbox:MboxRetriever",
    async_retriever="mailsync.backends.mbox:AsyncMboxRetriever",
    sender="mailsync.backends.mbox:MboxSender",
    async_sender="mailsync.backends.mbox:AsyncMboxSender",
    options=frozenset({"max_message_size"}),
)
_GMAIL = BackendSpec(
    retriever="mailsync.backends.gmail:GmailRetriever",
    async_retriever="mailsync.backends.gmail:AsyncGmailRetriever",
    sender="mailsync.backends.gmail:GmailSender",
    async_sender="mailsync.backends.gmail:AsyncGmailSender",
    # GmailAPI.options, written out so that checking an option imports no backend.
    options=frozenset(
        {
            "base_url",
            "transport",
            "concurrency",
            "retries",
            "retry_delay",
            "upload_url",
            "batch_size",
            "max_message_size",
        }
    ),
)
_GRAPH = BackendSpec(
    retriever="mailsync.backends.graph:GraphRetriever",
    async_retriever="mailsync.backends.graph:AsyncGraphRetriever",
    sender="mailsync.backends.graph:GraphSender",
    async_sender="mailsync.backends.graph:AsyncGraphSender",
    # GraphAPI.options, written out so that checking an option imports no backend.
    options=frozenset(
        {"base_url", "transport", "concurrency", "retries", "retry_delay", "max_message_size"}
    ),
)
_JMAP = BackendSpec(
    retriever="mailsync.backends.jmap:JMAPRetriever",
    async_retriever="mailsync.backends.jmap:AsyncJMAPRetriever",
    sender="mailsync.backends.jmap:JMAPSender",
    async_sender="mailsync.backends.jmap:AsyncJMAPSender",
    # JMAPAPI.options, written out so that checking an option imports no backend.
    options=frozenset(
        {"base_url", "transport", "concurrency", "retries", "retry_delay", "max_message_size"}
    ),
)

_BUILTIN: dict[str, BackendSpec] = {
    "imap": _IMAP,
    "pop3": _POP3,
    "smtp": _SMTP,
    "maildir": _MAILDIR,
    "mbox": _MBOX,
    "gmail": _GMAIL,
    "graph": _GRAPH,
    "jmap": _JMAP,
}
_ALIASES = {"imaps": "imap", "pop3s": "pop3", "smtps": "smtp"}
_registered: dict[str, BackendSpec] = {}
_entry_points_loaded = False


def register(scheme: str, spec: BackendSpec) -> None:
    """Serve ``scheme`` with the classes ``spec`` names (replacing a built-in one)."""
    _registered[scheme.lower()] = spec


def _plugins() -> dict[str, BackendSpec]:
    global _entry_points_loaded
    if not _entry_points_loaded:
        _entry_points_loaded = True
        from importlib.metadata import entry_points  # slow to import; only needed here

        for ep in entry_points(group="mailsync.backends"):
            try:
                spec = ep.load()
            except Exception as exc:  # a broken plugin must not break mailsync itself
                raise ConfigError(f"the mailsync backend plugin {ep.name!r} failed: {exc}") from exc
            if isinstance(spec, BackendSpec):
                _registered.setdefault(ep.name.lower(), spec)
    return _registered


def schemes() -> list[str]:
    """Every scheme mailsync knows, built-in and from plugins."""
    return sorted({*_BUILTIN, *_ALIASES, *_plugins()})


def spec_for(scheme: str) -> BackendSpec:
    """The spec serving ``scheme`` (``imaps`` is ``imap``).

    Raises:
        ConfigError: Unknown scheme.
    """
    base = _ALIASES.get(scheme, scheme)
    # Entry points are scanned only for schemes mailsync does not know: scanning costs ~15 ms
    # per process, and an installed package must not silently take over imap:// or smtp://
    # (register() can, deliberately).
    builtin = _BUILTIN.get(base)
    found = _registered.get(base)
    if found is None and builtin is not None and not builtin.planned:
        found = builtin
    if found is None:
        found = _plugins().get(base) or builtin
    if found is None:
        known = ", ".join(s for s in schemes())
        raise ConfigError(f"unknown URL scheme {scheme!r}; mailsync knows: {known}")
    return found


def load(scheme: str, role: Role) -> Any:
    """The class serving ``role`` for ``scheme``.

    Raises:
        ConfigError: Unknown scheme, or its optional dependency is not installed.
        Unsupported: The scheme does not offer this role (e.g. a POP3 sender).
    """
    spec = spec_for(scheme)
    target = getattr(spec, role)
    if target is None:
        what = role.replace("_", " ")
        if spec.planned:
            raise Unsupported(f"the {scheme} backend is planned but not available in this version")
        raise Unsupported(f"{scheme} has no {what}: it cannot be used for that")
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = dict(spec.extras).get(role)
        if extra is None:
            raise
        raise ConfigError(
            f"{scheme} ({role.replace('_', ' ')}) needs an optional dependency "
            f'({exc.name}): pip install "mailsync[{extra}]"'
        ) from exc
    return getattr(module, attribute)


def check_options(scheme: str, names: Iterable[str], *, common: Iterable[str], where: str) -> None:
    """Refuse option names the scheme's backend does not read, suggesting the closest one.

    Args:
        scheme: The URL scheme.
        names: The backend-specific option names given.
        common: The names every backend takes there (``password``, ``timeout``...), also
            offered as suggestions: a misspelled ``timout`` lands among the backend options.
        where: Who took them, for the message (``"connect()"``, ``"the URL"``).

    Raises:
        ConfigError: An unknown name; the message names it, the closest valid name, and
            every valid one.
    """
    accepted = spec_for(scheme).options
    if accepted is None:
        return
    for name in names:
        if name not in accepted:
            valid = sorted({*common, *accepted})
            raise ConfigError(f"{where}: {unknown_name(name, valid, scheme=scheme)}")


def unknown_name(name: str, valid: Iterable[str], *, scheme: str | None = None) -> str:
    """``"unknown option 'timout' (did you mean 'timeout'?); valid: ..."``."""
    import difflib

    choices = sorted(valid)
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    guess = f" (did you mean {close[0]!r}?)" if close else ""
    for_scheme = f" for {scheme}" if scheme else ""
    return f"unknown option {name!r}{for_scheme}{guess}; valid: {', '.join(choices)}"
