"""SMTP submission (``smtp://``, ``smtps://``): :class:`SMTPSender` and :class:`AsyncSMTPSender`.

This module owns mailsync's SMTP client: connecting (implicit TLS, or STARTTLS that fails
closed when the server does not offer it), EHLO, AUTH (PLAIN/LOGIN with a password,
XOAUTH2/OAUTHBEARER with a token), mail transactions with the RFC 3461 DSN parameters, SIZE,
8BITMIME and SMTPUTF8, PIPELINING, the retry policy, reconnects, and ETRN.

Why not smtplib: it sends MAIL, each RCPT and DATA one at a time and waits for each reply (four
round trips per message), offers no pipelining, and cannot be used from asyncio. Pipelining on
smtplib's socket would mean driving its private reply reader behind its back, and an asyncio
sender would still need a second client. So the protocol is written once, sans-I/O in the
style of h11: the wire format in :mod:`mailsync.protocol.smtp`, the client's state machine as
plans in :mod:`mailsync.protocol.smtp_session`. This module only binds them: :class:`SMTPSender`
runs the plans on a blocking socket, :class:`AsyncSMTPSender` on asyncio (the performers of
:mod:`mailsync.backends._socket`). Both senders therefore behave identically, and the async
one never blocks the event loop and never calls ``asyncio.run()`` (it works inside Jupyter).

Behaviour worth knowing:

- With PIPELINING, MAIL, every RCPT and DATA go out in one write, and ``send_many`` sends each
  message's data in the same write as the next message's envelope (RFC 2920 allows message
  content as the first "command" of a group): one round trip per message, against four for
  smtplib. While the server works on a group, the next message is prepared (pulled from the
  caller's iterable, one ahead, no more); one that cannot be prepared still fails at its own
  turn, after the messages before it were sent. Anything but a clean acceptance ends that
  chain and the message goes through the careful one-at-a-time path with its retries.
  ``pipelining=off`` (URL query or keyword) turns all of this off for a server that
  mishandles it.
- The connection opens lazily and stays open between ``send`` calls. A transaction that never
  reached its end of data (recipients or DATA refused) is cleared with RSET before the next
  one, in the same write as MAIL/RCPT/DATA when the server offers PIPELINING. Otherwise no
  RSET is sent: the reply to the end of data already ended the transaction (RFC 5321
  4.1.1.4), and Postfix measurably spends time on each RSET. The first command on a
  reused connection is its liveness check: a connection the server dropped while idle fails
  there, before any message data went out, and the message is sent on a new connection.
- SIZE is declared in MAIL FROM only for messages over 64 KiB (the limit is always checked
  before sending): declaring it makes Postfix look at its free disk space for every message,
  which costs small messages more than an early refusal could save.
- A connection lost in the middle of a transaction, before the end of data went out, is
  reopened (a bounded number of times) and the message sent again. Once the end of data is
  written the outcome is unknown until the reply comes (RFC 1047): a server may read the
  whole message, take it and drop the connection before answering. So a message whose end
  of data got no answer (a drop, a timeout, a garbled reply) is not sent again: ``send``
  raises :class:`~mailsync.DeliveryUncertain` (with its ``message_id``), and ``send_many``
  sends the other messages, then raises it naming every uncertain one, with the results of
  the rest in ``.results``. ``resend_uncertain=True`` (URL query or keyword) sends such a
  message once more instead, on a new connection, accepting that it may arrive twice.
- 4xx replies are retried with exponential backoff and jitter (``retries`` attempts, first
  delay ``retry_delay`` seconds: URL query or keyword options); recipients still deferred after
  that are reported as refused, a whole message still deferred raises
  :class:`~mailsync.TemporaryFailure`, and so does a message whose every recipient is still
  deferred (:class:`~mailsync.RecipientsDeferred`, also a ``RecipientsRefused``). 5xx replies
  are final and never retried.
- AUTH uses the mechanism :mod:`mailsync.protocol.sasl` picks (a token: OAUTHBEARER, then
  XOAUTH2; a password: PLAIN, then LOGIN). Secrets (passwords, tokens) are sent only inside
  AUTH exchanges and never logged or shown.

This module must not import smtplib or any third-party SMTP library.
"""

from __future__ import annotations

import functools
import socket
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, TypeVar

from mailsync._base import AsyncSender, OutgoingMessage, Sender, SendResult
from mailsync._config import Endpoint
from mailsync._envelope import Envelope, prepare
from mailsync._plans import Plan, arun, run
from mailsync.backends._socket import aperform, perform
from mailsync.protocol.smtp import DSN, Reply, RetryPolicy, dsn_options, xtext
from mailsync.protocol.smtp_session import Session

if TYPE_CHECKING:
    import asyncio  # imported on the async paths only: it costs ~20 ms at start-up

__all__ = ["AsyncSMTPSender", "RetryPolicy", "SMTPSender", "xtext"]

T = TypeVar("T")


@functools.cache
def _local_fqdn() -> str:
    # getfqdn() may ask DNS; once per process is enough.
    return socket.getfqdn()


def _envelopes(
    messages: Iterable[OutgoingMessage],
    notify: Iterable[str] | str | None,
    ret: str | None,
) -> Iterator[tuple[Envelope, DSN]]:
    for message in messages:
        # One ENVID per message: each report must name the message it is about.
        yield prepare(message), dsn_options(notify, ret, None)


class SMTPSender(Sender):
    """Sends mail over SMTP (``smtp://user@host:587``, ``smtps://user@host``).

    The connection opens on the first send and stays open until :meth:`close` (or the end of a
    ``with`` block). The sender can be shared between threads; sends are serialised.

    Options (URL query or keyword arguments of :func:`mailsync.sender`): ``retries`` (tries
    for 4xx replies, default 3), ``retry_delay`` (first backoff delay in seconds, default 1),
    ``reconnects`` (per message, default 3), ``local_hostname`` (the EHLO name),
    ``pipelining`` (default on; ``off`` sends one command at a time), ``resend_uncertain``
    (default off; on: a message whose end of data got no answer is sent once more, and may
    arrive twice, instead of raising :class:`~mailsync.DeliveryUncertain`).
    """

    scheme = "smtp"

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(endpoint)
        self._session = Session(endpoint, _local_fqdn)
        self._lock = threading.Lock()

    @property
    def connections_opened(self) -> int:
        """How many connections this sender has opened so far."""
        return self._session.connections

    def _run(self, plan: Plan[T]) -> T:
        with self._lock:
            try:
                return run(plan, perform, context=self.endpoint.display)
            except BaseException as exc:
                self._session.fail(exc)
                raise

    def send(
        self,
        message: OutgoingMessage,
        *,
        notify: Iterable[str] | str | None = None,
        ret: str | None = None,
        envid: str | None = None,
        mail_from: str | None = None,
        rcpt_to: Iterable[str] | None = None,
    ) -> SendResult:
        """Send one message; see :meth:`mailsync.Sender.send`.

        When ``notify`` or ``ret`` asks for delivery reports and no ``envid`` is given, a
        random one is made and returned in the result, so reports can be tied to the message.

        Raises:
            RecipientsRefused: Every recipient was refused.
            RecipientsDeferred: Every recipient got 4xx replies on every attempt (also a
                TemporaryFailure).
            TemporaryFailure: 4xx replies on every attempt.
            DeliveryUncertain: The end of data went out and no answer came: the message may
                have been delivered, and is not sent again (see ``resend_uncertain``).
            SendError: The sender or the message was refused, or the message is too big.
            Unsupported: DSN, SMTPUTF8 or 8BITMIME needed and not offered by the server.
            AuthenticationError: The credentials were refused.
            ConnectionFailed: The server cannot be reached, or STARTTLS is not offered.
        """
        dsn = dsn_options(notify, ret, envid)
        envelope = prepare(message, mail_from=mail_from, rcpt_to=rcpt_to)
        return self._run(self._session.send(envelope, dsn))

    def send_many(
        self,
        messages: Iterable[OutgoingMessage],
        *,
        notify: Iterable[str] | str | None = None,
        ret: str | None = None,
    ) -> list[SendResult]:
        """Send several messages in order over one connection (pipelined where offered).

        A message whose recipients were all refused does not stop the others: its result has
        nothing in ``accepted``. Nor does a message whose delivery is uncertain (its end of
        data got no answer): it is not sent again, the others are sent, and then
        :class:`~mailsync.DeliveryUncertain` names every such message, with the results of
        all in ``.results`` (None for the uncertain ones). Any other error stops the run;
        its notes say how many messages had been sent, and which were uncertain.

        Args:
            messages: The messages.
            notify: DSN NOTIFY for every message (each gets its own ENVID).
            ret: DSN RET for every message.

        Returns:
            One :class:`~mailsync.SendResult` per message, in order.
        """
        return self._run(self._session.send_many(_envelopes(messages, notify, ret)))

    def etrn(self, domain: str) -> str:
        """Ask the server to deliver the mail it holds for ``domain`` now (RFC 1985 ETRN).

        Args:
            domain: A domain, ``@domain`` for it and its subdomains, or ``#queue``.

        Returns:
            The server's reply text.

        Raises:
            Unsupported: The server does not offer ETRN.
            TemporaryFailure: The server cannot do it now (4xx).
            ServerError: The server refused (5xx).
        """
        reply: Reply = self._run(self._session.etrn(domain))
        return reply.text

    def close(self) -> None:
        """Say QUIT and close the connection, if one is open."""
        self._run(self._session.quit())


class AsyncSMTPSender(AsyncSender):
    """The asyncio SMTP sender: same plans and behaviour as :class:`SMTPSender`.

    Runs on asyncio in the caller's event loop (no thread, no ``asyncio.run``). Concurrent
    sends on one sender are serialised; use several senders for parallelism.
    """

    scheme = "smtp"

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(endpoint)
        self._session = Session(endpoint, _local_fqdn)
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def connections_opened(self) -> int:
        """How many connections this sender has opened so far."""
        return self._session.connections

    async def _run(self, plan: Plan[T]) -> T:
        import asyncio

        loop = asyncio.get_running_loop()
        if self._lock is None or self._loop is not loop:
            # First use, or a new event loop (a second asyncio.run): the old loop's
            # connection cannot be used from this one.
            if self._loop is not None:
                self._session.abandon()
            self._loop, self._lock = loop, asyncio.Lock()
        async with self._lock:
            try:
                return await arun(plan, aperform, context=self.endpoint.display)
            except BaseException as exc:
                self._session.fail(exc)
                raise

    async def send(
        self,
        message: OutgoingMessage,
        *,
        notify: Iterable[str] | str | None = None,
        ret: str | None = None,
        envid: str | None = None,
        mail_from: str | None = None,
        rcpt_to: Iterable[str] | None = None,
    ) -> SendResult:
        """Send one message; see :meth:`SMTPSender.send`."""
        dsn = dsn_options(notify, ret, envid)
        envelope = prepare(message, mail_from=mail_from, rcpt_to=rcpt_to)
        return await self._run(self._session.send(envelope, dsn))

    async def send_many(
        self,
        messages: Iterable[OutgoingMessage],
        *,
        notify: Iterable[str] | str | None = None,
        ret: str | None = None,
    ) -> list[SendResult]:
        """Send several messages over one connection; see :meth:`SMTPSender.send_many`."""
        return await self._run(self._session.send_many(_envelopes(messages, notify, ret)))

    async def etrn(self, domain: str) -> str:
        """Ask the server to flush its queue for ``domain``; see :meth:`SMTPSender.etrn`."""
        reply: Reply = await self._run(self._session.etrn(domain))
        return reply.text

    async def aclose(self) -> None:
        """Say QUIT and close the connection, if one is open."""
        await self._run(self._session.quit())
