"""What the tests of an optional extra (``django``, ``otel``...) need: :func:`require`.

Outside CI a test whose extra is not installed skips and says which extra; under CI (``CI``
set) the extra must be there (the ``dev`` extra that nox installs lists them), so a missing
one fails the run instead of quietly skipping its tests.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest


def require(module: str, extra: str) -> ModuleType:
    """Import ``module``, which ``pip install "mailsync[extra]"`` (or ``[dev]``) brings.

    Skips the calling test (or module) when it is missing, except under CI, where it fails.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        reason = f"needs the {extra} extra ({module}: {exc})"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run every extra's tests, but: {reason}", pytrace=False)
        pytest.skip(reason, allow_module_level=True)
