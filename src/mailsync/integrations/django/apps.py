"""The Django app (``"mailsync.integrations.django"`` in ``INSTALLED_APPS``): it brings the
``mailsync_watch`` management command. It has no models: where messages are stored is the
project's choice (see docs/integrations/django.md)."""

from __future__ import annotations

from django.apps import AppConfig


class MailsyncConfig(AppConfig):
    """mailsync's Django app, labelled ``mailsync``."""

    name = "mailsync.integrations.django"
    label = "mailsync"
    verbose_name = "mailsync"
    default = True
