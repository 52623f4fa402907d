"""JMAP submission (RFC 8621 section 7) as plans: :class:`JMAPSubmission` sends a prepared
message by uploading it, importing it into Drafts (Sent where there are no Drafts) and
submitting it with the envelope :func:`~mailsync._envelope.prepare` computed (DSN parameters
where the server offers them), the identity whose address is the envelope sender, and
``onSuccessUpdateEmail`` moving it to Sent. A refusal becomes the mailsync error it means and
removes the draft again; the server's ``deliveryStatus`` becomes :attr:`SendResult.delivery`.

Pure: it builds requests and reads replies, and never does I/O itself.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from mailsync._base import SendResult
from mailsync._envelope import Envelope
from mailsync._errors import (
    MailsyncError,
    RateLimited,
    RecipientsRefused,
    SendError,
    Unsupported,
)
from mailsync._plans import Plan
from mailsync.protocol.http import (
    field_of,
    optional_field,
)
from mailsync.protocol.jmap_core import SEND_USING, SUBMISSION, JMAPCore
from mailsync.protocol.jmap_wire import (
    NAME,
    MethodError,
    created_id,
    not_created,
    pointer,
    short,
)
from mailsync.protocol.smtp import dsn_options, xtext

__all__ = [
    "JMAPSubmission",
    "pick_identity",
    "send_result",
    "submission_envelope",
    "submission_error",
]


def pick_identity(identities: Sequence[Mapping[str, Any]], sender: str) -> str | None:
    """The identity whose address is ``sender``, else one for its whole domain
    (``*@example.com``), else the first."""
    address = sender.lower()
    domain = address.rpartition("@")[2]
    for wanted in (address, f"*@{domain}"):
        for identity in identities:
            if str(identity.get("email") or "").lower() == wanted:
                return str(identity["id"])
    return str(identities[0]["id"]) if identities else None


def submission_envelope(
    envelope: Envelope,
    extensions: Mapping[str, Any],
    notify: Iterable[str] | str | None,
    ret: str | None,
    envid: str | None,
    context: str,
) -> tuple[dict[str, Any], str | None]:
    """The submission's envelope (RFC 8621 section 7) with any DSN parameters, and the ENVID
    sent."""
    mail_parameters: dict[str, Any] = {}
    rcpt_parameters: dict[str, Any] = {}
    sent_envid = None
    if notify is not None or ret is not None or envid is not None:
        if "dsn" not in extensions:
            raise Unsupported(
                f"{context}: the server's submission does not offer DSN (RFC 3461), so notify, "
                "ret and envid cannot be given"
            )
        # Shared with the SMTP sender: the same checks, the same ENVID rule.
        dsn = dsn_options(notify, ret, envid)
        if dsn.ret:
            mail_parameters["RET"] = dsn.ret
        if dsn.envid:
            mail_parameters["ENVID"] = xtext(dsn.envid)
            sent_envid = dsn.envid
        if dsn.notify:
            rcpt_parameters["NOTIFY"] = dsn.notify
    if envelope.needs_smtputf8 and "smtputf8" in extensions:
        mail_parameters["SMTPUTF8"] = None
    return {
        "mailFrom": {"email": envelope.mail_from, "parameters": mail_parameters or None},
        "rcptTo": [
            {"email": rcpt, "parameters": dict(rcpt_parameters) or None}
            for rcpt in envelope.recipients
        ],
    }, sent_envid


_REPLY = re.compile(r"^\s*(\d{3})[ -]?\s*(.*)$", re.S)


_ENHANCED = re.compile(r"\b([245])\.\d{1,3}\.\d{1,3}\b")


def _reply_code(text: str, default: int) -> tuple[int, str]:
    """``(code, text)`` from an SMTP reply (``"550 5.1.1 No such user"``), or from an
    enhanced status alone (``"5.7.1 Relay access denied"``: 550)."""
    match = _REPLY.match(text)
    if match:
        return int(match.group(1)), short(match.group(2))
    enhanced = _ENHANCED.search(text)
    if enhanced:
        return (550 if enhanced.group(1) == "5" else 450), short(text)
    return default, short(text)


def submission_error(problem: MethodError, envelope: Envelope, context: str) -> MailsyncError:
    """The error for a refused submission: RecipientsRefused for refused recipients (nothing
    was sent), else what the type says."""
    text = problem.description or problem.type
    named = problem.details.get("invalidRecipients")
    refused: dict[str, tuple[int, str]] = {}
    if isinstance(named, list):
        refused = {str(a): (553, "invalid recipient address") for a in named}
    elif problem.type in ("smtpProtocolError", "forbiddenToSend", "invalidRecipients"):
        lowered = text.lower()
        code = _reply_code(text, 550)
        refused = {r: code for r in envelope.recipients if r.lower() in lowered}
    if refused:
        return RecipientsRefused(
            f"{context}: the submission was refused, nothing was sent: "
            + "; ".join(f"{a}: {c} {t}" for a, (c, t) in refused.items()),
            refused=refused,
        )
    if problem.type == "rateLimit":
        return RateLimited(f"{context}: EmailSubmission/set: {short(text)}", code=problem.type)
    return SendError(f"{context}: EmailSubmission/set: {problem.type}: {short(text)}")


def send_result(
    envelope: Envelope, submission: Mapping[str, Any], envid: str | None, context: str
) -> SendResult:
    """The SendResult of a created submission, with its ``deliveryStatus`` where the server
    gave one (refused recipients go in ``refused``)."""
    statuses = submission.get("deliveryStatus")
    delivery: dict[str, str] = {}
    refused: dict[str, tuple[int, str]] = {}
    if isinstance(statuses, dict):
        lowered = {r.lower(): r for r in envelope.recipients}
        for address, status in statuses.items():
            if not isinstance(status, dict):
                continue
            recipient = lowered.get(str(address).lower(), str(address))
            delivered = str(status.get("delivered") or "unknown")
            delivery[recipient] = delivered
            reply = str(status.get("smtpReply") or "")
            if delivered == "no" or reply[:1] == "5":
                refused[recipient] = _reply_code(reply, 550)
    accepted = tuple(r for r in envelope.recipients if r not in refused)
    if refused and not accepted:
        raise RecipientsRefused(
            f"{context}: every recipient was refused: "
            + "; ".join(f"{a}: {c} {t}" for a, (c, t) in refused.items()),
            refused=refused,
        )
    return SendResult(
        message_id=envelope.message_id,
        accepted=accepted,
        refused=refused,
        envid=envid,
        delivery=delivery,
    )


class JMAPSubmission(JMAPCore):
    """Sending, over the JMAP client core: :class:`~mailsync.protocol.jmap.JMAPAPI` is one."""

    def send(
        self,
        envelope: Envelope,
        *,
        notify: Iterable[str] | str | None,
        ret: str | None,
        envid: str | None,
    ) -> Plan[SendResult]:
        """Import the message into Drafts and submit it (see the module docstring)."""
        session = yield from self._session()
        account = session.submission_account_id
        if account is None:
            raise Unsupported(f"{self.context}: the server offers no submission ({SUBMISSION})")
        envelope_json, sent_envid = submission_envelope(
            envelope, session.submission_extensions, notify, ret, envid, self.context
        )
        boxes = yield from self._load_mailboxes(account)
        roles = {(b.role or "").lower(): b for b in boxes.values() if b.role}
        home = roles.get("drafts") or roles.get("sent")
        if home is None:
            raise Unsupported(f"{self.context}: no Drafts or Sent mailbox to send from")
        identity = yield from self._identity(account, envelope.mail_from)
        blob = yield from self._upload(envelope.data, account)
        sent = roles.get("sent")
        on_success: dict[str, Any] = {"keywords/$draft": None}
        if sent is not None and sent.id != home.id:
            on_success |= {
                f"mailboxIds/{pointer(home.id)}": None,
                f"mailboxIds/{pointer(sent.id)}": True,
            }
        imported, submitted = yield from self._request(
            [
                (
                    "Email/import",
                    {
                        "emails": {
                            "draft": {
                                "blobId": blob,
                                "mailboxIds": {home.id: True},
                                "keywords": {"$draft": True, "$seen": True},
                            }
                        }
                    },
                ),
                (
                    "EmailSubmission/set",
                    {
                        "create": {
                            "send": {
                                "identityId": identity,
                                "emailId": "#draft",
                                "envelope": envelope_json,
                            }
                        },
                        "onSuccessUpdateEmail": {"#send": on_success},
                    },
                ),
            ],
            using=SEND_USING,
            account=account,
            once=True,
        )
        email_id = created_id(imported, "draft", "Email/import", self.context)
        created = optional_field(submitted, "created", dict, "EmailSubmission/set", name=NAME)
        submission = (created or {}).get("send")
        if not isinstance(submission, dict):
            problem = not_created(submitted, "send")
            yield from self._discard(email_id, account)
            raise submission_error(problem, envelope, self.context)
        result = send_result(envelope, submission, sent_envid, self.context)
        kept = sent if sent is not None else home
        return replace(result, saved_to=kept.name)

    def _identity(self, account: str, sender: str) -> Plan[str]:
        if self._identities is None:
            reply = yield from self._invoke(
                "Identity/get", {"ids": None}, using=SEND_USING, account=account
            )
            items = field_of(reply, "list", list, "Identity/get", name=NAME)
            self._identities = [
                i for i in items if isinstance(i, dict) and isinstance(i.get("id"), str)
            ]
        identity = pick_identity(self._identities, sender)
        if identity is None:
            raise SendError(f"{self.context}: the account has no identity to send as")
        return identity

    def _discard(self, email_id: str, account: str) -> Plan[None]:
        """Destroy the draft of a refused submission (best effort: the refusal is what
        matters)."""
        with contextlib.suppress(MailsyncError):
            yield from self._invoke("Email/set", {"destroy": [email_id]}, account=account)
