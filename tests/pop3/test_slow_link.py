"""The read timeout bounds silence, not the length of a reply: a large message streaming over
a slow link must arrive whole, while a server that stops sending still times out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

import mailsync
from tests.contract import make_raw
from tests.proxy import TCPProxy
from tests.servers import Account, MailServers

pytestmark = pytest.mark.servers


@pytest.mark.reliability(
    area="POP3",
    fault="a large message over a link slower than the timeout allows for the whole",
    outcome="read whole: the timeout bounds silence, not the transfer",
)
@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_a_large_message_over_a_slow_link_is_not_cut_off(
    mail_servers: MailServers,
    account: Account,
    tcp_proxy: Callable[[str, int], TCPProxy],
    asynchronous: bool,
) -> None:
    raw = make_raw(1, extra=1_500_000)  # ~1.5 MB: about 2 s at ~0.8 MB/s
    mail_servers.append(account, raw)
    proxy = tcp_proxy(mail_servers.host, mail_servers.pop3_port)
    proxy.throttle(16384, 0.02)
    url = f"pop3://{account.user}@{mail_servers.host}:{proxy.port}"
    options = {"password": account.password, "tls": "none", "timeout": 0.5}
    started = time.monotonic()
    if asynchronous:

        async def fetch() -> list[mailsync.Message]:
            async with mailsync.connect_async(url, state=":memory:", **options) as box:
                return [m async for m in box.messages()]

        messages = asyncio.run(fetch())
    else:
        with mailsync.connect(url, state=":memory:", **options) as box:
            messages = list(box.messages())
    elapsed = time.monotonic() - started
    assert [m.raw for m in messages] == [raw]
    assert elapsed > 1.0, "the proxy did not slow the transfer: the test proves nothing"
