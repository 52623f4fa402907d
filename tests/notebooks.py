"""Runs the example notebook (docs/examples/mailbox-tour.ipynb) against the test servers.

The notebook reads where to connect from environment variables (``MAILSYNC_EXAMPLE_*``); this
module seeds a fresh account with plain imaplib (never mailsync), starts a kernel with those
variables set and executes every cell with nbclient, as Jupyter would.

``python -m tests.notebooks`` executes it and writes it back with its outputs, which is what
the documentation site shows (the tests check the committed copy has them).
"""

from __future__ import annotations

import os
import struct
import tempfile
import zlib
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from tests.servers import Account, MailServers

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "examples" / "mailbox-tour.ipynb"
SENDERS = [
    "Bob Builder <bob@example.test>",
    "bob@example.test",
    "BOB@Example.TEST",
    "Carol <carol@example.test>",
    "Dan <dan@lists.example.test>",
    '"Eve (billing)" <billing@shop.example.test>',
]


def logo_png(size: int = 48) -> bytes:
    """A small diagonal-gradient PNG, made with zlib (no image library needed)."""
    rows = b"".join(
        b"\x00" + b"".join(bytes((40 + 4 * x, 90 + 3 * y, 200, 255)) for x in range(size))
        for y in range(size)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def sample_mail(recipient: str, now: datetime | None = None) -> list[bytes]:
    """Three weeks of an inbox: several senders (one written three ways), attachments, and a
    newsletter in html with a tracking pixel, a script and an inline logo, last."""
    now = now or datetime.now(UTC).replace(microsecond=0)
    raws = []
    for n in range(30):
        message = EmailMessage()
        message["From"] = SENDERS[(n * 7) % len(SENDERS)]
        message["To"] = recipient
        message["Subject"] = f"Weekly numbers #{n}" if n % 4 else f"Meeting notes {n}"
        message["Date"] = format_datetime(now - timedelta(days=(30 - n) * 0.7, hours=n % 5))
        message["Message-ID"] = f"<tour-{n}@example.test>"
        message.set_content(f"Hello,\n\nthis is message {n}.\n")
        if n % 6 == 0:
            message.add_attachment(
                b"quarter,revenue\nq1,10\nq2,12\n" * (n + 1),
                "text",
                "csv",
                filename=f"numbers-{n}.csv",
            )
        raws.append(bytes(message))
    raws.append(newsletter(recipient, now))
    return raws


def newsletter(recipient: str, now: datetime) -> bytes:
    message = EmailMessage()
    message["From"] = "Shop News <news@shop.example.test>"
    message["To"] = recipient
    message["Subject"] = "Spring sale: everything must go"
    message["Date"] = format_datetime(now)
    message["Message-ID"] = "<tour-newsletter@shop.example.test>"
    message.set_content("Spring sale! Open the html version to see it.\n")
    message.add_alternative(
        '<h2 style="color:#2a6;position:fixed;top:0">Spring sale</h2>'
        '<p><img src="cid:logo@shop.example.test" alt="logo" width="48"> '
        "Everything <b>must</b> go. "
        '<a href="https://shop.example.test/sale" onclick="steal()">See the offers</a></p>'
        '<img src="https://tracker.example.test/open.gif?u=alice" width="1" height="1">'
        "<script>document.title = 'pwned'</script>"
        '<form action="https://shop.example.test/login"><input name="password"></form>',
        subtype="html",
    )
    html_part = message.get_payload()[1]  # type: ignore[index]
    html_part.add_related(logo_png(), "image", "png", cid="<logo@shop.example.test>")
    message.add_attachment(b"%PDF-1.4\n" + b"0" * 40_000, "application", "pdf", filename="cat.pdf")
    return bytes(message)


def environment(servers: MailServers, account: Account) -> dict[str, str]:
    """The ``MAILSYNC_EXAMPLE_*`` variables the notebook reads."""
    host = servers.host
    return {
        "MAILSYNC_EXAMPLE_IMAP": f"imaps://{account.user}@{host}:{servers.imaps_port}",
        "MAILSYNC_EXAMPLE_SMTP": f"smtp://{account.user}@{host}:{servers.submission_port}",
        "MAILSYNC_EXAMPLE_PASSWORD": account.password,
        "MAILSYNC_EXAMPLE_CAFILE": servers.cafile,
        "MAILSYNC_EXAMPLE_ADDRESS": account.email,
    }


def execute(servers: MailServers, account: Account, *, timeout: int = 240) -> Any:
    """Seed ``account``, then execute the notebook against it; returns the executed notebook."""
    import nbformat
    from nbclient import NotebookClient

    servers.append_many(account, sample_mail(account.email))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    with tempfile.TemporaryDirectory(prefix="mailsync-notebook-") as cwd:
        client = NotebookClient(
            notebook,
            timeout=timeout,
            kernel_name="python3",
            resources={"metadata": {"path": cwd}},
            # The rendered docs show text in place of live widgets (no widget JS on the site).
            store_widget_state=False,
        )
        env = {
            **os.environ,
            **environment(servers, account),
            "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        }
        client.execute(env=env)
    return notebook


def main() -> None:
    """Execute the notebook and write it back with its outputs (for the docs site)."""
    import nbformat

    with MailServers() as servers:
        notebook = execute(servers, servers.new_account("alice"))
    nbformat.write(notebook, NOTEBOOK)
    print(f"wrote {NOTEBOOK}")


if __name__ == "__main__":
    main()
