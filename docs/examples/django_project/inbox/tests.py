"""The example's own tests, run by Django's test runner (``python manage.py test``) against
real servers: the accounts file in ``$MAILSYNC_CONFIG`` names them."""

import time

from django.core.management import call_command
from django.test import TestCase, override_settings

from inbox.models import InboundMessage


def wait_until(condition, seconds=60):
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.2)


# Django's test runner swaps EMAIL_BACKEND for its in-memory one: these tests want the real.
@override_settings(EMAIL_BACKEND="mailsync.integrations.django.EmailBackend")
class ContactToInboxTests(TestCase):
    def fetch(self):
        call_command("mailsync_watch", "support", "--once")
        return InboundMessage.objects.filter(subject="Contact form: Hello")

    def test_the_contact_form_mails_support_and_the_watcher_stores_it_once(self):
        reply = self.client.post(
            "/contact/",
            {"email": "visitor@example.net", "subject": "Hello", "message": "Hi there!"},
        )
        self.assertEqual(reply.json(), {"sent": 1})
        wait_until(lambda: self.fetch().exists())
        stored = self.fetch().get()
        self.assertEqual(stored.text.strip(), "Hi there!")
        self.assertIn(b"Reply-To: visitor@example.net", stored.raw)
        # Running the watcher again (or the same message coming twice) stores nothing more.
        call_command("mailsync_watch", "support", "--once")
        self.assertEqual(InboundMessage.objects.count(), 1)

    def test_a_bad_form_is_refused_and_nothing_is_sent(self):
        reply = self.client.post("/contact/", {"email": "nobody", "message": ""})
        self.assertEqual(reply.status_code, 400)
