"""Under CI a missing tool or emulator fails its test; on a developer's machine it skips.

A green CI run must never mean "skipped". `in_ci()` is for helpers outside a test's fixtures
(the emulator and tool finders); the session header says which rule applies.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    """True under CI (`CI=true`, `1` or `yes`, as CI services set it)."""
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def unavailable(what: str, *, under_ci: str) -> NoReturn:
    """Skip because `what` is missing, or fail under CI with `under_ci` (what CI lacks)."""
    if in_ci():
        pytest.fail(under_ci)
    pytest.skip(what)


def pytest_report_header() -> str:
    rule = "fail" if in_ci() else "skip"
    return f"missing emulators and tools: {rule} (CI={os.environ.get('CI', '')!r})"
