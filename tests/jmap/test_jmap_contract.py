"""The Retriever contract against the real Cyrus over JMAP, sync and async: the same tests
every backend passes (tests/contract.py), with what Cyrus stores differently stated by
:class:`~tests.contract.OnCyrus`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import mailsync
from tests.contract import AsyncRetrieverContract, OnCyrus, RetrieverContract
from tests.cyrus import CyrusServer
from tests.jmap.conftest import jmap_target
from tests.servers import Account


class TestJMAPContract(OnCyrus, RetrieverContract):
    """The contract through ``mailsync.connect("jmap://...")``."""

    identical_append_merges = True  # one Email per content on Cyrus: alreadyExists

    @pytest.fixture
    def make_retriever(self, mail_store: CyrusServer, account: Account) -> Callable[..., Any]:
        target = jmap_target(mail_store, account)
        return lambda state, **options: mailsync.connect(
            target.url, state=state, **{**target.options, **options}
        )


class TestAsyncJMAPContract(OnCyrus, AsyncRetrieverContract):
    """The contract through ``mailsync.connect_async("jmap://...")``."""

    identical_append_merges = True

    @pytest.fixture
    def make_retriever(self, mail_store: CyrusServer, account: Account) -> Callable[..., Any]:
        target = jmap_target(mail_store, account)
        return lambda state, **options: mailsync.connect_async(
            target.url, state=state, **{**target.options, **options}
        )
