"""What one SMTP send is made of, for :mod:`mailsync.protocol.smtp_session`: the outcome of a
transaction, a ``send_many``'s pipeline (the messages on their way, the next one pulled ahead)
and the errors that say a delivery is uncertain (the end of data went out and no answer came).

Values and pure functions only: the plans that use them are in
:mod:`~mailsync.protocol.smtp_session`. This module must not do I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from mailsync._base import SendResult
from mailsync._envelope import Envelope
from mailsync._errors import DeliveryUncertain
from mailsync.protocol.smtp import DSN, Reply

__all__ = [
    "Chain",
    "Outcome",
    "Pending",
    "Unanswered",
    "Upcoming",
    "not_sent_again",
    "uncertain_many",
    "uncertain_note",
]


@dataclass(slots=True)
class Outcome:
    """What one transaction did."""

    accepted: list[str] = field(default_factory=list)
    refused: dict[str, tuple[int, str]] = field(default_factory=dict)
    deferred: dict[str, tuple[int, str]] = field(default_factory=dict)
    temporary: Reply | None = None


class Unanswered(Exception):
    """The end of data went out and no reply came back (a drop, a timeout, a garbled reply):
    the server may have taken the message. Never leaves a plan: it becomes
    :class:`~mailsync.DeliveryUncertain`, or one resend when the sender allows it."""


def not_sent_again(
    display: str, message_id: str, exc: Unanswered, accepted: list[str] | None = None
) -> DeliveryUncertain:
    """The error a send ends with when its end of data went out unanswered (not resent)."""
    earlier = f"; accepted by an earlier attempt: {', '.join(accepted)}" if accepted else ""
    return DeliveryUncertain(
        f"{display}: the end of data of <{message_id}> went out and no answer came back "
        f"({exc}): the server may have taken it, so it is not sent again (resend_uncertain "
        f"sends it once more){earlier}",
        message_id=message_id,
    )


def uncertain_note(chain: Chain) -> str:
    """What a ``send_many`` that ends with another error adds about its uncertain messages."""
    ids = ", ".join(f"<{exc.message_id}>" for _i, exc in sorted(chain.uncertain.items()))
    return f"delivery uncertain (not sent again): {ids}"


def uncertain_many(display: str, slots: list[SendResult | None], chain: Chain) -> DeliveryUncertain:
    """The error a ``send_many`` ends with when deliveries are uncertain: which ones, and
    the results of the others."""
    uncertain = [exc for _index, exc in sorted(chain.uncertain.items())]
    ids = tuple(exc.message_id for exc in uncertain)
    sent = sum(slot is not None for slot in slots)
    error = DeliveryUncertain(
        f"{display}: {len(ids)} message(s) of this send_many went out with no answer to "
        f"their end of data, and are not sent again: {', '.join(f'<{i}>' for i in ids)}; "
        f"{sent} sent (see .results)",
        message_id=ids[0],
        message_ids=ids,
        results=list(slots),
    )
    error.__cause__ = uncertain[0].__cause__
    return error


@dataclass(slots=True)
class Pending:
    """A message of a ``send_many`` on its way, with the outcome of its envelope if known."""

    index: int
    envelope: Envelope
    dsn: DSN
    outcome: Outcome | None = None
    #: Its end of data went out unanswered once already (it is being sent once more).
    uncertain: bool = False


class Upcoming:
    """``send_many``'s messages, pulled one ahead so that the next one is prepared while the
    server works on the current one (the iterator stays lazy: one message ahead, no more).

    An error from pulling (``prepare()`` refusing a message) is kept and raised by
    :meth:`take` at that message's own turn.
    """

    __slots__ = ("_error", "_item", "_items", "_pulled")

    def __init__(self, items: Iterator[tuple[Envelope, DSN]]) -> None:
        self._items = items
        self._pulled = False
        self._item: tuple[Envelope, DSN] | None = None
        self._error: Exception | None = None

    def prefetch(self) -> None:
        """Pull the next message now, unless it has been pulled already."""
        if self._pulled:
            return
        self._pulled = True
        try:
            self._item = next(self._items, None)
        except Exception as exc:  # raised at its turn, by take()
            self._error = exc

    def take(self) -> tuple[Envelope, DSN] | None:
        """The next message (None at the end), or the error pulling it raised."""
        self.prefetch()
        item, error = self._item, self._error
        self._pulled, self._item, self._error = False, None, None
        if error is not None:
            raise error
        return item


@dataclass(slots=True)
class Chain:
    """``send_many``'s pipeline: the message whose data goes out with the next envelope, and
    those that need the careful path (:meth:`Session.send`) once the chain is finished."""

    waiting: Pending | None = None
    later: list[Pending] = field(default_factory=list)
    #: Messages whose delivery is uncertain, by index (reported when the run ends).
    uncertain: dict[int, DeliveryUncertain] = field(default_factory=dict)
