"""Gmail fixtures: a fresh fake Gmail account per test, and how to reach it.

- ``gmail``: the :class:`~tests.fakes.gmail.FakeGmail` account (``me@example.test``, token
  ``good-token``);
- ``options(gmail, **more)``: the keyword arguments that point mailsync at it;
- ``seed`` / ``make_folder``: deliver messages and create labels on the fake's mail-system
  side, never through mailsync.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest

from tests.fakes.gmail import FakeGmail

TOKEN = "good-token"


def options(gmail: FakeGmail, **more: Any) -> dict[str, Any]:
    """``mailsync.connect("gmail://me", **options(gmail))`` talks to the fake."""
    return {"token": TOKEN, "transport": gmail.transport(), "retry_delay": 0, **more}


def deposit(gmail: FakeGmail, raw: bytes, folder: str = "INBOX", flags: Iterable[str] = ()) -> str:
    """Deliver ``raw`` into ``folder`` with IMAP-spelled ``flags``; returns the Gmail id."""
    labels = {"INBOX" if folder.upper() == "INBOX" else gmail.label_id(folder)}
    if "\\Seen" not in flags:
        labels.add("UNREAD")
    if "\\Flagged" in flags:
        labels.add("STARRED")
    return gmail.deliver(raw, labels)


@pytest.fixture
def gmail() -> FakeGmail:
    return FakeGmail()


@pytest.fixture
def seed(gmail: FakeGmail) -> Callable[..., None]:
    def seed(raw: bytes, folder: str = "INBOX", flags: Iterable[str] = ()) -> None:
        deposit(gmail, raw, folder, flags)

    return seed


@pytest.fixture
def make_folder(gmail: FakeGmail) -> Callable[[str], None]:
    def make(name: str) -> None:
        gmail.label_id(name)

    return make
