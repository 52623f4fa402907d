"""The Retriever contract on the Gmail backend, sync and async, against the fake Gmail API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import mailsync
from tests.contract import AsyncRetrieverContract, RetrieverContract
from tests.fakes.gmail import FakeGmail
from tests.gmail.conftest import options


class TestGmail(RetrieverContract):
    @pytest.fixture
    def make_retriever(self, gmail: FakeGmail) -> Callable[..., Any]:
        return lambda state, **extra: mailsync.connect(
            "gmail://me", state=state, **options(gmail, **extra)
        )


class TestAsyncGmail(AsyncRetrieverContract):
    @pytest.fixture
    def make_retriever(self, gmail: FakeGmail) -> Callable[..., Any]:
        return lambda state, **extra: mailsync.connect_async(
            "gmail://me", state=state, **options(gmail, **extra)
        )
