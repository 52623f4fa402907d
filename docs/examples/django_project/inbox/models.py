"""Incoming mail, one row per message of an account."""

from django.db import models


class InboundMessage(models.Model):
    """A message ``mailsync_watch`` handed over.

    ``(account, mailsync_id)`` is unique: delivery is at least once, so the receiver stores
    by this key and a message that comes again changes nothing. ``message_id`` (the header)
    finds the same message seen through two accounts.
    """

    account = models.CharField(max_length=200)
    mailsync_id = models.CharField(max_length=500)
    message_id = models.CharField(max_length=998, blank=True, db_index=True)
    from_address = models.CharField(max_length=320, blank=True)
    subject = models.TextField(blank=True)
    text = models.TextField(blank=True)
    received = models.DateTimeField(null=True)
    raw = models.BinaryField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "mailsync_id"], name="inbound_once")
        ]

    def __str__(self) -> str:
        return f"{self.account}: {self.subject}"
