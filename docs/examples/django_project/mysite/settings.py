"""Settings of the example project: a contact form that mails support, and support's inbox
stored in the database by ``manage.py mailsync_watch support``.

The mail accounts live in mailsync's accounts file (``$MAILSYNC_CONFIG``), not here::

    [accounts.support]
    retrieve = "imaps://support@example.com@imap.example.com"
    send = "smtp://support@example.com@smtp.example.com:587"
    password_env = "SUPPORT_MAIL_PASSWORD"
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = False
ALLOWED_HOSTS = ["localhost", "testserver"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "mailsync.integrations.django",  # the mailsync_watch command
    "inbox",
]
ROOT_URLCONF = "mysite.urls"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("EXAMPLE_DATABASE", BASE_DIR / "db.sqlite3"),
    }
}
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Outbound: every send_mail() goes through mailsync, as the "support" account.
EMAIL_BACKEND = "mailsync.integrations.django.EmailBackend"
MAILSYNC_SEND = "support"
DEFAULT_FROM_EMAIL = os.environ.get("SUPPORT_ADDRESS", "support@example.com")
SUPPORT_ADDRESS = DEFAULT_FROM_EMAIL
# Where the watcher keeps its sync cursors (a postgresql:// URL for several machines).
MAILSYNC_STATE = os.environ.get("MAILSYNC_STATE", str(BASE_DIR / "mailsync-state.sqlite3"))
