"""The SMTP client as plans (:mod:`mailsync._plans`): :class:`Session`, the state machine of
one sender's connection, whose methods are plans that connect, greet, STARTTLS, authenticate,
send (pipelined), retry, reconnect and say QUIT.

The plans yield the stream operations of :mod:`mailsync.protocol.stream` (plus ``Sleep`` for
backoff and ``Call`` for the token callable and the local host name), so the same plans run on
a blocking socket and on asyncio; :mod:`mailsync.backends.smtp` binds them. The wire format is
:mod:`mailsync.protocol.smtp`.

What the plans do (pipelining, RSET only where needed, retries, reconnects, SIZE) is
described for users in :mod:`mailsync.backends.smtp`.

This module must not do I/O, or import smtplib or any third-party SMTP library.
"""

from __future__ import annotations

import base64
import logging
from collections import deque
from collections.abc import Callable, Iterator

from mailsync._base import Backoff, SendResult
from mailsync._config import Endpoint, Secret
from mailsync._envelope import Envelope
from mailsync._errors import (
    AuthenticationError,
    ConfigError,
    ConnectionFailed,
    DeliveryUncertain,
    MailsyncError,
    MailTimeout,
    ProtocolError,
    RecipientsDeferred,
    RecipientsRefused,
    SendError,
    ServerError,
    TemporaryFailure,
    Unsupported,
)
from mailsync._plans import Call, Plan, Sleep
from mailsync.protocol import sasl
from mailsync.protocol.smtp import (
    CRLF,
    DSN,
    Features,
    Lost,
    Reply,
    ReplyParser,
    RetryPolicy,
    check_extensions,
    check_lost,
    data_payload,
    envelope_commands,
    hello_name,
    is_drop,
    on_off,
)
from mailsync.protocol.smtp_transaction import (
    Chain,
    Outcome,
    Pending,
    Unanswered,
    Upcoming,
    not_sent_again,
    uncertain_many,
    uncertain_note,
)
from mailsync.protocol.stream import Channel, Close, Connect, Read, StartTLS, Write

__all__ = ["Session"]

log = logging.getLogger("mailsync.smtp")


# -- the protocol core -----------------------------------------------------------------------


class Session:
    """The SMTP client state machine for one sender (sans-I/O).

    Every public method returns a plan (see the module docstring).

    Args:
        endpoint: The server and the options.
        local_fqdn: Returns this host's name for EHLO (may ask DNS: called through ``Call``).
    """

    def __init__(self, endpoint: Endpoint, local_fqdn: Callable[[], str]) -> None:
        self.endpoint = endpoint
        self._local_fqdn = local_fqdn
        self.channel: Channel | None = None
        self.parser = ReplyParser()
        self._replies: deque[Reply] = deque()
        self.policy = RetryPolicy.from_params(endpoint.params)
        self.display = endpoint.display
        self.hello_name: str | None = endpoint.params.get("local_hostname")
        if self.hello_name is not None and (
            not isinstance(self.hello_name, str)
            or not self.hello_name.isprintable()
            or " " in self.hello_name
            or not self.hello_name.isascii()
        ):
            raise ConfigError("local_hostname must be a host name or an address literal")
        self.connected = False
        self.features = Features()
        self.dirty = False  # a transaction is open that no end of data closed
        self.pipelining = on_off(endpoint.params.get("pipelining", True))
        #: Send a message once more when its end of data got no answer (see
        #: :class:`~mailsync.DeliveryUncertain`): off by default, as it may deliver it twice.
        self.resend_uncertain = on_off(endpoint.params.get("resend_uncertain", False))
        self.connections = 0

    # -- connection ------------------------------------------------------------------------

    def forget(self) -> None:
        """Open a new connection next time."""
        self.connected = False
        self.dirty = False

    def _write(self, data: bytes) -> Write:
        if self.channel is None:
            raise ConnectionFailed(f"{self.display}: not connected")
        return Write(self.channel, data)

    def _reply(self) -> Plan[Reply]:
        """The next reply."""
        if self.channel is None:
            raise ConnectionFailed(f"{self.display}: not connected")
        while not self._replies:
            self._replies.extend((yield Read(self.channel)))
        return self._replies.popleft()

    def _replies_of(self, count: int) -> Plan[list[Reply]]:
        """The next ``count`` replies (a pipelined group's)."""
        replies = []
        for _ in range(count):
            replies.append((yield from self._reply()))
        return replies

    def _start_tls(self) -> Plan[None]:
        assert self.channel is not None
        if self.parser.pending or self._replies:
            # Bytes sent before the handshake must not be read as if they came over TLS.
            raise ProtocolError(f"{self.display} sent data after its STARTTLS reply")
        yield StartTLS(self.channel)

    def _drop(self) -> None:
        """Forget the connection and drop it at once."""
        channel, self.channel = self.channel, None
        self.forget()
        if channel is not None:
            channel.abort()

    def fail(self, exc: BaseException) -> None:
        """A plan of this session stopped on ``exc``. Anything but a clean refusal (which
        leaves the connection in step) leaves it in an unknown state: drop it."""
        if not isinstance(exc, MailsyncError | Lost) or not self.connected:
            self._drop()

    def ensure_open(self) -> Plan[None]:
        """Connect, greet, STARTTLS and authenticate unless a connection is open."""
        if self.connected:
            return
        self._drop()  # whatever is left of an earlier connection
        self.parser = ReplyParser()
        self._replies.clear()
        self.channel = yield Connect(self.endpoint, self.parser)
        fqdn = yield Call(self._local_fqdn)  # may ask DNS: the async driver uses a thread
        local_ip = self.channel.local_address
        self.connected = True
        self.dirty = False
        self.connections += 1
        try:
            yield from self._handshake(hello_name(self.hello_name, local_ip, fqdn))
        except MailsyncError:
            self._drop()
            raise

    def _handshake(self, hello: str) -> Plan[None]:
        try:
            greeting = yield from self._reply()
        except ProtocolError as exc:  # the reply parser cannot know which server it reads
            raise ProtocolError(f"{self.display}: {exc}") from exc
        if greeting.code == 421 or not greeting.positive:
            raise ConnectionFailed(f"{self.display} refused the connection: {greeting}")
        self.features = yield from self._ehlo(hello)
        if self.endpoint.tls == "starttls":
            yield from self._starttls(hello)
        yield from self._authenticate()

    def _ehlo(self, hello: str) -> Plan[Features]:
        yield self._write(f"EHLO {hello}".encode("ascii", "replace") + CRLF)
        reply = yield from self._reply()
        if reply.code == 250:
            return Features.parse(reply)
        if reply.code == 421:
            raise ConnectionFailed(f"{self.display} closed the connection: {reply}")
        # A server from before ESMTP: HELO, and no extensions at all.
        yield self._write(f"HELO {hello}".encode("ascii", "replace") + CRLF)
        reply = yield from self._reply()
        if reply.code != 250:
            raise ProtocolError(f"{self.display} refused EHLO and HELO: {reply}")
        return Features(esmtp=False)

    def _starttls(self, hello: str) -> Plan[None]:
        if "STARTTLS" not in self.features:
            raise ConnectionFailed(
                f"{self.display} does not offer STARTTLS; refusing to continue without TLS "
                "(use tls='ssl' for implicit TLS, or tls='none' to allow plaintext)"
            )
        yield self._write(b"STARTTLS" + CRLF)
        reply = yield from self._reply()
        if reply.code != 220:
            raise ConnectionFailed(f"{self.display} refused STARTTLS: {reply}")
        yield from self._start_tls()
        self.features = yield from self._ehlo(hello)

    # -- AUTH ------------------------------------------------------------------------------

    def _authenticate(self) -> Plan[None]:
        """AUTH with the mechanism :mod:`mailsync.protocol.sasl` picks from what EHLO offered."""
        endpoint = self.endpoint
        if endpoint.token is None and endpoint.password is None:
            return
        user = endpoint.username
        if not user:
            raise ConfigError(
                f"{self.display}: a password or token needs a user name in the URL "
                "(smtp://user@host); a server that takes no login needs no password"
            )
        offered = self.features.auth
        token = endpoint.token is not None
        if endpoint.token is not None:
            secret = Secret((yield Call(endpoint.token.fresh)))
        else:
            assert endpoint.password is not None
            secret = endpoint.password
        mechanism = sasl.choose(offered, token=token)
        if mechanism is None:
            hint = "" if offered else " (is this the submission port, after TLS?)"
            raise sasl.no_mechanism(self.display, offered, token=token, hint=hint)
        exchange = sasl.exchange(
            mechanism, user, secret.reveal(), host=endpoint.host, port=endpoint.port
        )
        initial = exchange.initial()
        line = f"AUTH {mechanism}" + ("" if initial is None else f" {initial}")
        yield self._write(line.encode("ascii") + CRLF)
        reply = yield from self._reply()
        while reply.code == 334:
            try:
                challenge = base64.b64decode(reply.text, validate=True)
            except ValueError as exc:
                raise ProtocolError(f"{self.display} sent a challenge that is not base64") from exc
            yield self._write(sasl.encode(exchange.respond(challenge)).encode("ascii") + CRLF)
            reply = yield from self._reply()
        detail = exchange.error_detail
        self._check_auth(reply, user, " " + detail.decode("utf-8", "replace") if detail else "")

    def _check_auth(self, reply: Reply, user: str, detail: str = "") -> None:
        if reply.code == 235:
            return
        message = f"{self.display} refused the credentials of {user}: {reply}{detail}"
        if reply.transient:
            raise TemporaryFailure(message, code=reply.code)
        raise AuthenticationError(message)

    # -- sending ---------------------------------------------------------------------------

    def send_many(self, items: Iterator[tuple[Envelope, DSN]]) -> Plan[list[SendResult]]:
        """Send each message in turn; a message whose recipients were all refused gives a
        result with nothing accepted instead of stopping the others.

        With PIPELINING, each message's data goes out in the same write as the next message's
        envelope (RFC 2920 allows message content first in a group), so a message costs one
        round trip. Anything but a clean acceptance (a refusal, a 4xx, a dropped connection)
        finishes the chain and goes through :meth:`send`, retries and all.
        """
        slots: list[SendResult | None] = []
        chain = Chain()
        upcoming = Upcoming(items)
        try:
            while True:
                try:
                    item = upcoming.take()
                except Exception:
                    # A message that could not be prepared fails at its own turn: the ones
                    # before it are sent and settled first.
                    yield from self._finish_chain(slots, chain)
                    raise
                if item is None:
                    break
                envelope, dsn = item
                index = len(slots)
                slots.append(None)
                if chain.waiting is None and not self._can_chain():
                    yield from self._send_one(Pending(index, envelope, dsn), slots, chain)
                    continue
                step = Pending(index, envelope, dsn)
                yield from self._chain_step(step, slots, chain, upcoming)
                if chain.later:  # something needs the careful path: finish the chain first
                    yield from self._finish_chain(slots, chain)
            yield from self._finish_chain(slots, chain)
        except MailsyncError as exc:
            done = sum(slot is not None for slot in slots)
            exc.add_note(f"{done} message(s) of this send_many were sent before")
            if chain.uncertain:
                exc.add_note(uncertain_note(chain))
            raise
        if chain.uncertain:
            raise uncertain_many(self.display, slots, chain)
        results = [slot for slot in slots if slot is not None]
        assert len(results) == len(slots), "send_many lost track of a message"
        return results

    def _can_chain(self) -> bool:
        return self.connected and self.pipelining and "PIPELINING" in self.features

    def _send_one(self, item: Pending, slots: list[SendResult | None], chain: Chain) -> Plan[None]:
        """Send one of ``send_many``'s messages the careful way (:meth:`send`): refused
        recipients make a result, an uncertain delivery is noted for the end of the run."""
        envelope, dsn = item.envelope, item.dsn
        try:
            slots[item.index] = yield from self.send(
                envelope, dsn, item.outcome, resend_uncertain=not item.uncertain
            )
        except RecipientsRefused as exc:
            slots[item.index] = SendResult(envelope.message_id, (), exc.refused, dsn.envid)
        except DeliveryUncertain as exc:
            chain.uncertain[item.index] = exc

    def _uncertain(self, waiting: Pending, chain: Chain, exc: Unanswered) -> None:
        """A chained message's end of data got no answer: sent once more later when the
        sender allows it, else noted as uncertain."""
        message_id = waiting.envelope.message_id
        if self.resend_uncertain and not waiting.uncertain:
            log.warning(
                "%s: no answer to the end of data of <%s> (%s); sending it once more "
                "(resend_uncertain): it may arrive twice",
                self.display,
                message_id,
                exc,
            )
            chain.later.append(Pending(waiting.index, waiting.envelope, waiting.dsn, None, True))
            return
        chain.uncertain[waiting.index] = not_sent_again(self.display, message_id, exc)

    def _chain_step(
        self, item: Pending, slots: list[SendResult | None], chain: Chain, upcoming: Upcoming
    ) -> Plan[None]:
        """Write the waiting message's data with this message's envelope; read both answers.

        The next message is prepared between the write and the reads, while the server works.
        """
        envelope, dsn = item.envelope, item.dsn
        try:
            check_extensions(self.features, envelope, dsn, self.display)
        except MailsyncError:
            yield from self._finish_chain(slots, chain)  # the waiting message still goes
            raise
        waiting, chain.waiting = chain.waiting, None
        recipients = list(envelope.recipients)
        mail, rcpts = envelope_commands(self.features, envelope, dsn, recipients)
        carry = b""
        if waiting is not None:
            carry = data_payload(waiting.envelope.data)
            self.dirty = False  # the server ends that transaction before it reads on
        commands = self._group(mail, rcpts)
        outstanding = True  # answers are on their way until the group is read
        try:
            yield self._write(carry + b"".join(command + CRLF for command in commands))
            upcoming.prefetch()
            if waiting is not None:
                final = yield from self._final_reply()
                self._settle(waiting, final, slots, chain)
                waiting = None
            replies = yield from self._read_group(commands, len(rcpts))
            outstanding = False
            outcome, ready = yield from self._after_envelope(envelope, recipients, *replies)
        except Unanswered as exc:
            # The waiting message's data went out unanswered; this envelope got no answer
            # either, and no data of its own went: it is sent again, the careful way.
            assert waiting is not None
            self._uncertain(waiting, chain, exc)
            chain.later.append(item)
            return
        except (Lost, ConnectionFailed) as exc:
            self._drop()
            if isinstance(exc, ConnectionFailed) and not is_drop(exc):
                raise
            log.info("%s: %s; sending again on a new connection", self.display, exc)
            if waiting is not None:  # its data went out but no answer came back
                chain.later.append(Pending(waiting.index, waiting.envelope, waiting.dsn))
            chain.later.append(item)
            return
        except MailsyncError:
            if outstanding:  # the connection is out of step with its answers
                self._drop()
            raise
        if ready:
            chain.waiting = Pending(item.index, envelope, dsn, outcome)
        else:
            chain.later.append(Pending(item.index, envelope, dsn, outcome))

    def _settle(
        self, waiting: Pending, final: Reply, slots: list[SendResult | None], chain: Chain
    ) -> None:
        assert waiting.outcome is not None
        outcome = self._after_data(waiting.outcome, final)
        if outcome.temporary is None and not outcome.deferred:
            slots[waiting.index] = SendResult(
                waiting.envelope.message_id,
                tuple(outcome.accepted),
                outcome.refused,
                waiting.dsn.envid,
            )
        else:
            chain.later.append(Pending(waiting.index, waiting.envelope, waiting.dsn, outcome))

    def _finish_chain(self, slots: list[SendResult | None], chain: Chain) -> Plan[None]:
        """Send the waiting message's data alone, then what needs retries, one by one."""
        waiting, chain.waiting = chain.waiting, None
        if waiting is not None:
            try:
                yield self._write(data_payload(waiting.envelope.data))
                final = yield from self._final_reply()
                self.dirty = False  # any reply to the end of data ends the transaction
                self._settle(waiting, final, slots, chain)
            except Unanswered as exc:
                self._uncertain(waiting, chain, exc)
            except (Lost, ConnectionFailed) as exc:
                self._drop()
                if isinstance(exc, ConnectionFailed) and not is_drop(exc):
                    raise
                chain.later.append(Pending(waiting.index, waiting.envelope, waiting.dsn))
            except (MailTimeout, ProtocolError):
                self._drop()
                raise
        later, chain.later = chain.later, []
        for item in later:
            yield from self._send_one(item, slots, chain)

    def send(
        self,
        envelope: Envelope,
        dsn: DSN,
        first: Outcome | None = None,
        *,
        resend_uncertain: bool = True,
    ) -> Plan[SendResult]:
        """Send one message, retrying 4xx replies and reconnecting after a dropped connection.

        ``first`` is the outcome of a first attempt made elsewhere (by ``send_many``'s chain),
        to be judged, and retried if need be, as if this method had made it. A connection
        lost before the end of data went out is safe to retry; one lost after it, before its
        reply, is not (see :class:`~mailsync.DeliveryUncertain`): the message is sent once
        more only when the sender's ``resend_uncertain`` option and ``resend_uncertain``
        (False for a message that was uncertain once already) both allow it.

        Raises:
            RecipientsRefused: Every recipient was refused.
            RecipientsDeferred: Every recipient got 4xx replies on every attempt.
            DeliveryUncertain: The end of data got no answer.
            TemporaryFailure: The message got 4xx replies on every attempt.
            SendError: The server refused the sender or the message (5xx), or it is too big.
            Unsupported: DSN, SMTPUTF8 or 8BITMIME needed and not offered.
        """
        pending = list(envelope.recipients)
        accepted: list[str] = []
        refused: dict[str, tuple[int, str]] = {}
        backoff = Backoff(self.policy.delay, self.policy.cap)
        attempts = losses = 0
        resends = 1 if self.resend_uncertain and resend_uncertain else 0
        while pending:
            try:
                if first is not None:
                    outcome, first = first, None
                else:
                    outcome = yield from self._attempt(envelope, dsn, pending)
            except Unanswered as exc:
                if not resends:
                    raise not_sent_again(
                        self.display, envelope.message_id, exc, accepted
                    ) from exc.__cause__
                resends -= 1
                log.warning(
                    "%s: no answer to the end of data of <%s> (%s); sending it once more "
                    "(resend_uncertain): it may arrive twice",
                    self.display,
                    envelope.message_id,
                    exc,
                )
                continue
            except Lost as exc:
                losses += 1
                if losses > self.policy.reconnects:
                    raise ConnectionFailed(f"{self.display}: {exc}") from exc
                log.info("%s: %s; reconnecting", self.display, exc)
                if losses > 1:
                    yield Sleep(backoff.next())
                continue
            accepted += outcome.accepted
            refused.update(outcome.refused)
            attempts += 1
            temporary = outcome.temporary
            if temporary is None:
                deferred = outcome.deferred
            else:
                deferred = {
                    a: (temporary.code, temporary.text) for a in pending if a not in refused
                }
            pending = list(deferred)
            if not pending:
                break
            if attempts >= self.policy.attempts:
                if temporary is not None and not accepted:
                    raise TemporaryFailure(
                        f"{self.display} deferred the message {attempts} time(s): {temporary}",
                        code=temporary.code,
                    )
                refused.update(deferred)
                break
            delay = backoff.next()
            log.info("%s: 4xx reply, trying again in %.2fs", self.display, delay)
            yield Sleep(delay)
        if not accepted:
            summary = "; ".join(f"<{a}>: {c} {t}" for a, (c, t) in refused.items())
            if refused and all(400 <= code < 500 for code, _text in refused.values()):
                # Deferred, not refused: the same message may go through later.
                raise RecipientsDeferred(
                    f"{self.display} deferred every recipient {attempts} time(s): {summary}",
                    refused=refused,
                    code=list(refused.values())[-1][0],
                )
            raise RecipientsRefused(
                f"{self.display} refused every recipient: {summary}", refused=refused
            )
        log.debug(
            "%s: sent <%s> to %d recipient(s)", self.display, envelope.message_id, len(accepted)
        )
        return SendResult(envelope.message_id, tuple(accepted), refused, dsn.envid)

    def _attempt(self, envelope: Envelope, dsn: DSN, recipients: list[str]) -> Plan[Outcome]:
        """One transaction on an open connection, with dropped connections turned into Lost."""
        try:
            yield from self.ensure_open()
            check_extensions(self.features, envelope, dsn, self.display)
            return (yield from self._transaction(envelope, dsn, recipients))
        except (Lost, ConnectionFailed) as exc:
            self._drop()
            if isinstance(exc, ConnectionFailed) and not is_drop(exc):
                raise
            raise Lost(str(exc) or "the connection was lost") from exc
        except (MailTimeout, ProtocolError):
            self._drop()
            raise

    def _transaction(self, envelope: Envelope, dsn: DSN, recipients: list[str]) -> Plan[Outcome]:
        mail, rcpts = envelope_commands(self.features, envelope, dsn, recipients)
        replies: tuple[Reply, list[Reply], Reply | None]
        if self.pipelining and "PIPELINING" in self.features:
            commands = self._group(mail, rcpts)
            yield self._write(b"".join(command + CRLF for command in commands))
            replies = yield from self._read_group(commands, len(rcpts))
        else:
            replies = yield from self._lockstep(mail, rcpts)
        outcome, ready = yield from self._after_envelope(envelope, recipients, *replies)
        if not ready:
            return outcome
        yield self._write(data_payload(envelope.data))
        final = yield from self._final_reply()
        self.dirty = False  # any reply to the end of data ends the transaction
        return self._after_data(outcome, final)

    def _final_reply(self) -> Plan[Reply]:
        """The reply to an end of data just written. None coming (the connection dropped,
        the wait timed out, the reply was garbled) is :class:`Unanswered`: the server may
        have read the whole message and taken it."""
        try:
            final = yield from self._reply()
        except MailsyncError as exc:
            self._drop()
            raise Unanswered(str(exc) or type(exc).__name__) from exc
        return final

    def _group(self, mail: bytes, rcpts: list[bytes]) -> list[bytes]:
        """One pipelined group: [RSET,] MAIL, RCPT..., DATA."""
        commands = [mail, *rcpts, b"DATA"]
        if self.dirty:
            commands.insert(0, b"RSET")
        self.dirty = True  # until an end of data is answered
        return commands

    def _read_group(
        self, commands: list[bytes], rcpt_count: int
    ) -> Plan[tuple[Reply, list[Reply], Reply]]:
        replies = yield from self._replies_of(len(commands))
        if len(commands) > rcpt_count + 2:
            check_lost(replies.pop(0))  # RSET
        return replies[0], replies[1:-1], replies[-1]

    def _lockstep(
        self, mail: bytes, rcpts: list[bytes]
    ) -> Plan[tuple[Reply, list[Reply], Reply | None]]:
        if self.dirty:
            yield self._write(b"RSET" + CRLF)
            check_lost((yield from self._reply()))
        self.dirty = True  # until an end of data is answered
        yield self._write(mail + CRLF)
        mail_reply = yield from self._reply()
        if not mail_reply.positive:
            return mail_reply, [], None
        rcpt_replies: list[Reply] = []
        for rcpt in rcpts:
            yield self._write(rcpt + CRLF)
            rcpt_replies.append((yield from self._reply()))
        if not any(reply.positive for reply in rcpt_replies):
            return mail_reply, rcpt_replies, None
        yield self._write(b"DATA" + CRLF)
        return mail_reply, rcpt_replies, (yield from self._reply())

    def _after_envelope(
        self,
        envelope: Envelope,
        recipients: list[str],
        mail_reply: Reply,
        rcpt_replies: list[Reply],
        data_reply: Reply | None,
    ) -> Plan[tuple[Outcome, bool]]:
        """Judge the replies to MAIL, RCPT and DATA; True when the server awaits the data."""
        outcome = Outcome()
        for address, reply in zip(recipients, rcpt_replies, strict=False):
            check_lost(reply)
            if reply.positive:
                outcome.accepted.append(address)
            elif reply.transient:
                outcome.deferred[address] = (reply.code, reply.text)
            else:
                outcome.refused[address] = (reply.code, reply.text)
        check_lost(mail_reply)
        if not mail_reply.positive:
            yield from self._abort_data(data_reply)
            return self._sender_refused(envelope, mail_reply), False
        if data_reply is not None:
            check_lost(data_reply)
        if not outcome.accepted:
            yield from self._abort_data(data_reply)
            return outcome, False
        if data_reply is None or data_reply.code != 354:
            return self._message_refused(outcome, data_reply), False
        return outcome, True

    def _after_data(self, outcome: Outcome, final: Reply) -> Outcome:
        """Judge the reply to the end of data (which ended the transaction either way)."""
        check_lost(final, after_data=True)
        if final.positive:
            return outcome
        return self._message_refused(outcome, final)

    def _abort_data(self, data_reply: Reply | None) -> Plan[None]:
        # A server that said 354 although no recipient was accepted expects a message: give
        # it an empty one, which it must reject for want of recipients.
        if data_reply is not None and data_reply.code == 354:
            yield self._write(b"." + CRLF)
            yield from self._reply()

    def _sender_refused(self, envelope: Envelope, reply: Reply) -> Outcome:
        if reply.transient:
            return Outcome(temporary=reply)
        raise SendError(f"{self.display} refused the sender <{envelope.mail_from}>: {reply}")

    def _message_refused(self, outcome: Outcome, reply: Reply | None) -> Outcome:
        if reply is None:  # pragma: no cover - lockstep always reads DATA's reply here
            raise ProtocolError(f"{self.display}: no reply to DATA")
        if reply.transient:
            return Outcome(refused=outcome.refused, temporary=reply)
        raise SendError(f"{self.display} refused the message: {reply}")

    # -- other commands ----------------------------------------------------------------------

    def etrn(self, domain: str) -> Plan[Reply]:
        """Ask the server to flush its queue for ``domain`` (RFC 1985)."""
        if not domain or any(c.isspace() for c in domain) or not domain.isascii():
            raise ConfigError(f"ETRN needs a domain name (or @domain, #queue), not {domain!r}")
        yield from self.ensure_open()
        if "ETRN" not in self.features:
            raise Unsupported(f"{self.display} does not offer ETRN")
        try:
            if self.dirty:  # ETRN is refused inside a transaction a failed send left open
                yield self._write(b"RSET" + CRLF)
                check_lost((yield from self._reply()))
                self.dirty = False
            yield self._write(f"ETRN {domain}".encode() + CRLF)
            reply = yield from self._reply()
            check_lost(reply)
        except (Lost, ConnectionFailed, MailTimeout, ProtocolError) as exc:
            self._drop()
            if isinstance(exc, Lost):
                raise ConnectionFailed(f"{self.display}: {exc}") from exc
            raise
        if reply.positive:
            return reply
        if reply.transient:
            raise TemporaryFailure(f"{self.display} ETRN {domain}: {reply}", code=reply.code)
        raise ServerError(f"{self.display} ETRN {domain}: {reply}", code=reply.code)

    def quit(self) -> Plan[None]:
        """Say QUIT (ignoring any failure) and close the connection."""
        channel = self.channel
        if not self.connected or channel is None:
            self._drop()
            return
        try:
            yield self._write(b"QUIT" + CRLF)
            yield from self._reply()
        except MailsyncError:
            self._drop()
            return
        except BaseException:
            self._drop()
            raise
        self.channel = None
        self.forget()
        yield Close(channel)

    def abandon(self) -> None:
        """Forget a connection that belongs to an event loop no longer running."""
        self._drop()
