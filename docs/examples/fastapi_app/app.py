"""A FastAPI app that sends mail from its request handlers and watches a mailbox for as long
as it runs, with mailsync.

Run it with ``uvicorn app:app``. The mail account comes from mailsync's accounts file
(``$MAILSYNC_CONFIG``), named by ``$MAIL_ACCOUNT`` (default ``support``)::

    [accounts.support]
    retrieve = "imaps://support@example.com@imap.example.com"
    send = "smtp://support@example.com@smtp.example.com:587"
    password_env = "SUPPORT_MAIL_PASSWORD"
"""

import os
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel

import mailsync
from mailsync.integrations.asgi import SenderPool, Watcher

# Received mail, newest last. A real app stores it in its database, keyed on message.id
# (delivery is at least once: the same message may come twice).
INBOX: list[dict[str, str]] = []


async def on_message(box: mailsync.AsyncRetriever, message: mailsync.Message) -> None:
    """Called for each new message; the message is committed when this returns."""
    INBOX.append(
        {
            "id": message.id,
            "subject": message.subject or "",
            "from": message.from_.email if message.from_ else "",
        }
    )


@asynccontextmanager
async def lifespan(app: FastAPI):
    account = mailsync.account(os.environ.get("MAIL_ACCOUNT", "support"))
    poll = float(os.environ.get("MAIL_POLL_INTERVAL", "60"))
    async with (
        SenderPool(account.sender_async, size=4) as mail,
        Watcher([account.retriever_async()], on_message, poll_interval=poll) as watcher,
    ):
        app.state.mail, app.state.watcher = mail, watcher
        app.state.address = os.environ.get("SUPPORT_ADDRESS", "support@example.com")
        yield
    # Here the watcher has finished the message in hand and closed its connections.


app = FastAPI(lifespan=lifespan)


class Contact(BaseModel):
    email: str
    subject: str
    message: str


@app.post("/contact")
async def contact(form: Contact, request: Request) -> dict[str, str]:
    """Mail the visitor's message to support."""
    state = request.app.state
    try:
        message = mailsync.compose(
            from_=state.address,
            to=state.address,
            reply_to=form.email,
            subject=f"Contact form: {form.subject}",
            text=form.message,
        )
    except mailsync.InvalidAddress as exc:
        raise HTTPException(422, f"not an email address: {exc.address}") from exc
    try:
        result = await state.mail.send(message)
    except mailsync.MailsyncError as exc:
        raise HTTPException(503, "mail cannot be sent right now") from exc
    return {"message_id": result.message_id}


@app.get("/inbox")
async def inbox() -> list[dict[str, str]]:
    """What the watcher received."""
    return INBOX


@app.get("/health/mail")
async def health(request: Request) -> list[dict[str, object]]:
    """Each watched account's status: watching, backing off (and why)..."""
    return [
        {"account": box.account_key, **status.as_dict()}
        for box, status in request.app.state.watcher.statuses
    ]
