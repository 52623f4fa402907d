"""``SecretScrubber``: server text quoted in errors loses the secrets sent on the connection,
in every form a server could echo them in. The backends' use of it is tested against a
scripted hostile server in tests/imap/test_hostile.py."""

from __future__ import annotations

import base64

import pytest

from mailsync import ConnectionFailed
from mailsync._errors import SecretScrubber, map_exceptions


def test_every_form_of_a_secret_is_scrubbed() -> None:
    scrubber = SecretScrubber()
    password = 'pa"ss\\word'
    sasl = b"\0alice\0" + password.encode()
    scrubber.add(password)
    scrubber.add(sasl)
    text = (
        f'LOGIN "alice" "pa\\"ss\\\\word" / {password} / '
        f"{base64.b64encode(password.encode()).decode()} / {base64.b64encode(sasl).decode()}"
    )
    assert scrubber.scrub(text) == 'LOGIN "alice" "***" / *** / *** / ***'


def test_nothing_to_scrub_and_empty_secrets() -> None:
    scrubber = SecretScrubber()
    assert scrubber.scrub("NO go away") == "NO go away"
    scrubber.add("")
    scrubber.add(None)
    assert scrubber.scrub("NO go away") == "NO go away"


@pytest.mark.parametrize(
    ("secret", "text"),
    [("a*", "aa* a*a* b"), ("*", "a*b**"), ("**", "****x"), ("ab", "aabb aabbb")],
)
def test_no_secret_survives_the_marks_it_leaves(secret: str, text: str) -> None:
    # Replacing can join what surrounds a mark into the secret again, and a secret of
    # asterisks would hide in its own mark.
    scrubber = SecretScrubber()
    scrubber.add(secret)
    assert secret not in scrubber.scrub(text)


def test_map_exceptions_scrubs_the_library_error_it_describes() -> None:
    scrubber = SecretScrubber()
    scrubber.add("hunter2")
    with pytest.raises(ConnectionFailed) as info:
        with map_exceptions(context="IMAP h:143", secrets=scrubber):
            raise OSError("server said: LOGIN bob hunter2")
    assert str(info.value) == "IMAP h:143: server said: LOGIN bob ***"


def test_a_secret_added_after_a_scrub_is_scrubbed_too() -> None:
    # The pattern is made when first needed: one made for the first secret must not stay.
    scrubber = SecretScrubber()
    scrubber.add("hunter2")
    assert scrubber.scrub("LOGIN bob hunter2") == "LOGIN bob ***"
    scrubber.add("swordfish")
    assert scrubber.scrub("hunter2 swordfish") == "*** ***"
