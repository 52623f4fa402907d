"""Provider notifications that arrive as mail in JSON: Amazon SES bounce, delivery and
delivery-delay notifications (``notificationType`` for feedback notifications, ``eventType``
for event publishing), as Amazon SNS mails them, bare or inside the SNS envelope
(``"Type": "Notification"``, the notification as a JSON string in ``Message``).

Complaints are feedback, not delivery (like ARF reports): they give no report. Only a body
that is a JSON object of that published shape counts; the stdlib ``json`` module reads it,
within the notice's size cap.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from mailsync._mime import msg_id
from mailsync._reports._fields import address_of, host_of, status_in_text, status_of
from mailsync._reports._taxonomy import classify, implied_status
from mailsync._reports._tree import Mail, header_map
from mailsync._reports._values import DeliveryReport, Reason, RecipientReport

__all__ = ["parse_json_notification"]

_KINDS = {"bounce": "bounce", "delivery": "delivery", "deliverydelay": "deliveryDelay"}
# SES's own verdicts, where they are more precise than the remote server's words.
_BOUNCE_SUBTYPES: Mapping[str, Reason] = {
    "noemail": "user_unknown",
    "suppressed": "user_unknown",
    "onaccountsuppressionlist": "user_unknown",
    "mailboxfull": "mailbox_full",
    "messagetoolarge": "message_too_large",
    "contentrejected": "spam_detected",
    "attachmentrejected": "policy",
}
_DELAY_TYPES: Mapping[str, Reason] = {
    "internalfailure": "system_error",
    "mailboxfull": "mailbox_full",
    "spamdetected": "spam_detected",
    "recipientservererror": "system_error",
    "ipfailure": "blocked",
    "transientcommunicationfailure": "network_error",
    "byoiphostnamelookupunavailable": "network_error",
    "sendingdeferral": "rate_limited",
}


def parse_json_notification(mail: Mail, notice: str) -> DeliveryReport | None:
    """The SES notification ``notice`` holds; None when it holds none."""
    data = _notification(notice)
    if data is None:
        return None
    kind = str(data.get("notificationType") or data.get("eventType") or "").lower()
    body = data.get(_KINDS.get(kind, ""))
    message = data.get("mail")
    if not isinstance(body, dict) or not isinstance(message, dict):
        return None
    if kind == "bounce":
        recipients = _bounced(body)
    elif kind == "delivery":
        recipients = _delivered(body)
    else:
        recipients = _delayed(body)
    if not recipients:
        return None
    headers = _headers(message)
    common = message.get("commonHeaders")
    common_id = common.get("messageId") if isinstance(common, dict) else None
    return DeliveryReport(
        kind="bounce",
        original_message_id=msg_id(_text(common_id) or headers.get("Message-ID"))
        or _text(message.get("messageId")),
        reporting_mta=host_of(_text(body.get("reportingMTA"))),
        recipients=recipients,
        original_headers=headers,
        subject=mail.header("Subject"),
        arrival_date=_time(message.get("timestamp")),
    )


def _notification(notice: str) -> dict[str, Any] | None:
    text = notice.lstrip()
    if not text.startswith("{"):
        return None
    try:
        # SNS's plain email protocol puts an unsubscribe footer after the object.
        data, _ = json.JSONDecoder().raw_decode(text)
        if isinstance(data, dict) and data.get("Type") == "Notification":
            data = json.loads(data.get("Message", ""))  # the SNS envelope around it
    except (ValueError, TypeError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _items(body: Mapping[str, Any], key: str) -> list[Any]:
    value = body.get(key)
    return value if isinstance(value, list) else []


def _recipients(
    body: Mapping[str, Any], key: str
) -> Iterator[tuple[str, str | None, str | None, Mapping[str, Any]]]:
    """(address, diagnostic, status, item) of each well-formed entry of ``body[key]``."""
    for item in _items(body, key):
        if not isinstance(item, dict):
            continue
        address = address_of(_text(item.get("emailAddress")))
        if address is None:
            continue
        diagnostic = _diagnostic(item.get("diagnosticCode"))
        status = status_of(_text(item.get("status"))) or status_in_text(diagnostic)
        yield address, diagnostic, status, item


def _bounced(body: Mapping[str, Any]) -> tuple[RecipientReport, ...]:
    permanent_type = str(body.get("bounceType", "")).lower() == "permanent"
    verdict = _BOUNCE_SUBTYPES.get(str(body.get("bounceSubType", "")).lower())
    reports = []
    for address, diagnostic, status, item in _recipients(body, "bouncedRecipients"):
        action = (_text(item.get("action")) or "failed").lower()
        reason, permanent = classify(action, status, diagnostic)
        if verdict is not None and reason in ("unknown", "blocked", "policy", "system_error"):
            reason = verdict
        reports.append(
            RecipientReport(
                recipient=address,
                action=action,
                status=status or implied_status(status, action, reason),
                diagnostic=diagnostic,
                final_recipient=address,
                reason=reason,
                # SES's "Permanent" is its advice to stop sending to the address.
                permanent=action == "failed" and (permanent or permanent_type),
            )
        )
    return tuple(reports)


def _delayed(body: Mapping[str, Any]) -> tuple[RecipientReport, ...]:
    verdict = _DELAY_TYPES.get(str(body.get("delayType", "")).lower())
    until = _time(body.get("expirationTime"))
    reports = []
    for address, diagnostic, status, _ in _recipients(body, "delayedRecipients"):
        reason, _ = classify("delayed", status, diagnostic)
        reports.append(
            RecipientReport(
                recipient=address,
                action="delayed",
                status=status,
                diagnostic=diagnostic,
                final_recipient=address,
                will_retry_until=until,
                reason=verdict if verdict is not None and reason == "unknown" else reason,
            )
        )
    return tuple(reports)


def _delivered(body: Mapping[str, Any]) -> tuple[RecipientReport, ...]:
    response = _diagnostic(body.get("smtpResponse"))
    status = status_in_text(response)
    addresses = (address_of(_text(item)) for item in _items(body, "recipients"))
    return tuple(
        RecipientReport(
            recipient=address,
            action="delivered",
            status=status,
            diagnostic=response,
            remote_mta=host_of(_text(body.get("remoteMtaIp"))),
            final_recipient=address,
        )
        for address in addresses
        if address is not None
    )


def _diagnostic(value: object) -> str | None:
    text = _text(value)
    if text is None:
        return None
    kind, semicolon, rest = text.partition(";")
    if semicolon and kind.strip().isalpha():  # "smtp; 550 ..." -> "550 ..."
        text = rest
    return " ".join(text.split()) or None


def _headers(message: Mapping[str, Any]) -> Any:
    pairs = [
        (item["name"], item["value"])
        for item in _items(message, "headers")
        if isinstance(item, dict)
        and isinstance(item.get("name"), str)
        and isinstance(item.get("value"), str)
    ]
    return header_map(pairs)


def _time(value: object) -> datetime | None:
    text = _text(value)
    if text is None:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None
