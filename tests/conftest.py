"""Shared fixtures: a clean environment per test and, once per session, a Prefect test server.

Fixtures for each outside system live in `tests/plugins/` (one module a system), beside
`tests/plugins/ci.py` (under CI a missing tool fails instead of skipping); all are registered
here so that every test directory sees them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

pytest_plugins = [
    "tests.plugins.ci",
    "tests.plugins.aws_google",
    "tests.plugins.emulators",
    "tests.plugins.stack",
    "tests.plugins.tableau",
]

_CLEARED_PREFIXES = ("AWS_", "GOOGLE_", "ECS_CONTAINER_METADATA_URI")

# google-cloud-storage 3.17 fetches bucket metadata in a background thread on bucket calls; such
# a thread outlives its test and calls a later test's fakes. The image sets this too.
os.environ["DISABLE_GCS_PYTHON_CLIENT_OTEL_BUCKET_METADATA"] = "true"
_CLEARED_SUFFIXES = ("_EMULATOR_HOST",)


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's or CI's cloud settings."""
    for name in list(os.environ):
        if name.startswith(_CLEARED_PREFIXES) or name.endswith(_CLEARED_SUFFIXES):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """One Prefect test server for the whole session (~12 s to start; more on a loaded machine).

    Flow-run heartbeats are off in this process: Prefect 3.9 ends every flow run by joining its
    heartbeat thread, which sleeps in 1 s steps, so each run finished up to 1 s late (see
    bench/README.md). They only feed the server's crash detection, which no test reads; the
    publish slot's heartbeat is our own and stays on.
    """
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with (
        temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
        prefect_test_harness(server_startup_timeout=240),
    ):
        yield
        # Events and log lines still queued leave while the server is up; at exit they
        # would retry its closed port, one error a retry.
        EventsWorker.drain_all(timeout=60)
        APILogWorker.drain_all(timeout=60)
