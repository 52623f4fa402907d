"""The signals mailsync sends in a Django project.

``message_received(sender, account, retriever, message)``
    A new message arrived on a watched account (``manage.py mailsync_watch``). ``sender`` is
    the retriever's class, ``account`` the name (or URL) the command was given, ``message``
    a :class:`mailsync.Message`. Delivery is at least once: the message is committed only
    after every receiver returned, so a receiver that raises gets it again later (after a
    backoff) and a receiver must be idempotent: key what it stores on ``message.id`` (unique
    in the account) or ``message.message_id``.

``message_sent(sender, message, result)``
    The email backend sent a message: ``message`` is Django's ``EmailMessage``, ``result``
    the :class:`mailsync.SendResult` (its ``message_id`` and ``envid`` tie later delivery
    reports to it).
"""

from __future__ import annotations

from django.dispatch import Signal

__all__ = ["message_received", "message_sent"]

message_received = Signal()
message_sent = Signal()
