"""The inbox app: connects the receiver that stores incoming mail."""

from django.apps import AppConfig


class InboxConfig(AppConfig):
    name = "inbox"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from inbox import receivers  # noqa: F401 - connects the signal receiver
