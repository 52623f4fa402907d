"""Django integration (``pip install "mailsync[django]"``).

- Outbound: ``EMAIL_BACKEND = "mailsync.integrations.django.EmailBackend"`` and a
  ``MAILSYNC_SEND`` URL or account name in settings: ``send_mail``, ``EmailMessage``,
  ``EmailMultiAlternatives`` and ``send_mass_mail`` go through any mailsync sender (see
  :class:`~mailsync.integrations.django.backend.EmailBackend`).
- Inbound: add ``"mailsync.integrations.django"`` to ``INSTALLED_APPS`` and run
  ``manage.py mailsync_watch ACCOUNT``: each new message is sent as the
  :data:`~mailsync.integrations.django.signals.message_received` signal, and committed once
  the receivers return.

Nothing here is imported by ``import mailsync``; this package imports Django's mail module only
when the backend is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailsync.integrations.django.backend import EmailBackend

__all__ = ["EmailBackend"]


def __getattr__(name: str) -> Any:
    # Lazily, so that listing the app in INSTALLED_APPS loads no mail code until it is used.
    if name == "EmailBackend":
        from mailsync.integrations.django.backend import EmailBackend

        return EmailBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
