"""The front door: :func:`connect`, :func:`connect_async`, :func:`sender`, :func:`sender_async`.

Each parses the URL and options into an :class:`~mailsync._config.Endpoint`, finds the class
for its scheme in the registry, and constructs it. Nothing connects here: backends connect on
first use.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mailsync import _registry
from mailsync._base import AsyncRetriever, AsyncSender, Retriever, Sender
from mailsync._config import Endpoint, Timeout, parse_url
from mailsync._state import StateStore

if TYPE_CHECKING:
    from mailsync._sent import AsyncSaveTo, SaveTo

__all__ = ["connect", "connect_async", "sender", "sender_async"]

StateArg = StateStore | str | os.PathLike[str] | None


#: What ``verify=`` takes: True, False, an ``ssl.SSLContext``, or the path of a CA file.
VerifyArg = bool | ssl.SSLContext | str | os.PathLike[str]

# The facade's own keywords: suggested when a backend option is misspelled (``timout=``).
_COMMON = ("password", "token", "tls", "verify", "timeout")


def _endpoint(
    function: str,
    url: str,
    password: str | None,
    token: str | Callable[[], str] | None,
    tls: str | None,
    verify: VerifyArg,
    timeout: float | Timeout | None,
    options: dict[str, Any],
) -> Endpoint:
    endpoint = parse_url(
        url,
        password=password,
        token=token,
        tls=tls,
        verify=verify,
        timeout=timeout,
        options=options,
    )
    common = (*_COMMON, "state" if function.startswith("connect") else "save_to")
    _registry.check_options(endpoint.scheme, options, common=common, where=f"{function}()")
    in_url = [name for name in endpoint.params if name not in options]
    _registry.check_options(endpoint.scheme, in_url, common=(), where=endpoint.url)
    return endpoint


def connect(
    url: str,
    *,
    password: str | None = None,
    token: str | Callable[[], str] | None = None,
    tls: str | None = None,
    verify: VerifyArg = True,
    timeout: float | Timeout | None = 30.0,
    state: StateArg = None,
    **options: Any,
) -> Retriever:
    """A retriever for the account at ``url`` (it connects on first use).

    Args:
        url: ``imaps://user@host``, ``pop3s://user@host``, ``maildir:~/Mail``, ``mbox:PATH``...
        password: The password (overrides one in the URL).
        token: An OAuth2 access token, or a zero-argument callable returning one, called at
            every (re)connect.
        tls: ``"ssl"``, ``"starttls"`` or ``"none"``; by default ``ssl`` for ``imaps``/
            ``pop3s`` and ``starttls`` (required) otherwise.
        verify: Certificate verification: True, False, an ``ssl.SSLContext``, or the path
            of a PEM file (or directory) of CA certificates to trust instead of the system's,
            for a private or self-signed CA.
        timeout: Seconds per network operation, or a :class:`~mailsync.Timeout` (which also
            bounds a whole call: ``total``, ``min_rate``).
        state: Where sync cursors live: None (a SQLite file in the user data dir), a path,
            ``":memory:"``, or a :class:`~mailsync.StateStore`.
        **options: Backend-specific options (e.g. ``base_url`` for HTTP APIs, ``batch_size``
            for IMAP, ``apop`` for POP3), as the scheme's :class:`~mailsync.BackendSpec`
            declares them. Every retriever takes ``max_message_size``: the largest message
            it reads, in bytes (256 MiB by default; None for no limit); past it
            :class:`~mailsync.MessageTooLarge`, and ``sync()`` skips the message with a
            warning.

    Returns:
        A :class:`~mailsync.Retriever`.

    Raises:
        ConfigError: The URL or an option is invalid (an unknown option names the closest
            valid one), or the backend's extra is missing.
    """
    endpoint = _endpoint("connect", url, password, token, tls, verify, timeout, options)
    cls = _registry.load(endpoint.scheme, "retriever")
    retriever: Retriever = cls(endpoint, state=state)
    return retriever


def connect_async(
    url: str,
    *,
    password: str | None = None,
    token: str | Callable[[], str] | None = None,
    tls: str | None = None,
    verify: VerifyArg = True,
    timeout: float | Timeout | None = 30.0,
    state: StateArg = None,
    **options: Any,
) -> AsyncRetriever:
    """An async retriever for the account at ``url``; the arguments are those of
    :func:`connect`.

    Returns:
        An :class:`~mailsync.AsyncRetriever` (use ``async with`` or ``await .aclose()``).
    """
    endpoint = _endpoint("connect_async", url, password, token, tls, verify, timeout, options)
    cls = _registry.load(endpoint.scheme, "async_retriever")
    retriever: AsyncRetriever = cls(endpoint, state=state)
    return retriever


def sender(
    url: str,
    *,
    password: str | None = None,
    token: str | Callable[[], str] | None = None,
    tls: str | None = None,
    verify: VerifyArg = True,
    timeout: float | Timeout | None = 30.0,
    save_to: SaveTo | None = None,
    **options: Any,
) -> Sender:
    """A sender for ``url``: ``smtps://user@host``, ``smtp://host:587``, ``maildir:PATH``...

    The arguments are those of :func:`connect` (without ``state``), and:

    Args:
        save_to: Where to file a copy of every message sent, as mail programs do: a
            :class:`~mailsync.Retriever` (its folder marked ``\\Sent``) or
            ``(retriever, "Sent")``. Skipped for transports that file it themselves.
            ``SendResult.saved_to`` names the folder, None when filing failed (the send
            itself stands; the reason is logged).

    Returns:
        A :class:`~mailsync.Sender`.
    """
    endpoint = _endpoint("sender", url, password, token, tls, verify, timeout, options)
    cls = _registry.load(endpoint.scheme, "sender")
    result: Sender = cls(endpoint)
    if save_to is not None:
        from mailsync._sent import saving_sender

        return saving_sender(result, save_to)
    return result


def sender_async(
    url: str,
    *,
    password: str | None = None,
    token: str | Callable[[], str] | None = None,
    tls: str | None = None,
    verify: VerifyArg = True,
    timeout: float | Timeout | None = 30.0,
    save_to: AsyncSaveTo | None = None,
    **options: Any,
) -> AsyncSender:
    """An async sender for ``url``; the arguments are those of :func:`sender` (``save_to``
    with an :class:`~mailsync.AsyncRetriever`).

    Returns:
        An :class:`~mailsync.AsyncSender`.
    """
    endpoint = _endpoint("sender_async", url, password, token, tls, verify, timeout, options)
    cls = _registry.load(endpoint.scheme, "async_sender")
    result: AsyncSender = cls(endpoint)
    if save_to is not None:
        from mailsync._sent import saving_sender_async

        return saving_sender_async(result, save_to)
    return result
