"""Store each message ``mailsync_watch`` hands over, idempotently."""

from django.db import transaction
from django.dispatch import receiver

from inbox.models import InboundMessage
from mailsync.integrations.django.signals import message_received


@receiver(message_received)
def store(sender, account, message, **kwargs):
    """Keep the message once, however often it comes (at-least-once delivery)."""
    with transaction.atomic():
        InboundMessage.objects.get_or_create(
            account=account,
            mailsync_id=message.id,
            defaults={
                "message_id": message.message_id or "",
                "from_address": message.from_.email if message.from_ else "",
                "subject": message.subject or "",
                "text": message.text or "",
                "received": message.internal_date or message.date,
                "raw": message.raw,
            },
        )
    # Returning commits the message; raising here would have it handed over again later.
