"""The Celery app the fleet test runs in its worker and watcher processes.

Configured from the environment the test sets (broker, PostgreSQL, the test Dovecot), so the
same module serves ``celery -A tests.fleet_app worker`` and ``python -m tests.fleet_app
watch``. Its ``record`` task is the user's ``on_message``: it writes one row per call into
PostgreSQL, duplicates included, which is what the test counts.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import psycopg
from celery import Celery

import mailsync
from mailsync.integrations.celery import CeleryFleet

app = Celery("fleet_app", broker=os.environ.get("FLEET_BROKER", "memory://"))
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_default_queue=os.environ.get("FLEET_QUEUE", "mailsync-fleet-test"),
    # A killed worker's unacknowledged task comes back after this long (Redis transport).
    broker_transport_options={"visibility_timeout": 5},
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


def _account(name: str) -> mailsync.Account:
    host, port = os.environ["FLEET_IMAP"].rsplit(":", 1)
    return mailsync.Account(
        name=name,
        retrieve=f"imap://{name}@{host}:{port}",
        send=None,
        options={"tls": "none", "timeout": 20, "password": os.environ["FLEET_PASSWORD"]},
    )


fleet = CeleryFleet(
    app,
    state=os.environ.get("FLEET_STATE", "postgresql://unset"),
    on_message="fleet_app.record",
    accounts=_account,
    poll_interval=30.0,
    lease_wait=5.0,
    # Short, so a task the broker lost is sent again well within the test's wait; long enough
    # that the queue's wait on a loaded machine does not pass it (that would duplicate).
    redeliver_after=float(os.environ.get("FLEET_REDELIVER_AFTER", "30")),
)


@app.task(name="fleet_app.record", acks_late=True, reject_on_worker_lost=True)
def record(account: str, raw: str) -> None:
    message = CeleryFleet.message(raw)
    with psycopg.connect(os.environ["FLEET_STATE"], autocommit=True) as conn:
        conn.execute(
            "INSERT INTO handled (account, message_id, pid) VALUES (%s, %s, %s)",
            (account, message.message_id, os.getpid()),
        )


if __name__ == "__main__" and sys.argv[1:] == ["watch"]:
    names = Path(os.environ["FLEET_ACCOUNTS"]).read_text().split()
    fleet.watcher(names, rebalance=1.0, per_host=50).run()
