"""The whole local world of `standins.stack.local_stack`, on the session's moto and emulators.

`start_stack(dates, rows_per_day)` starts the loopback fakes, seeds the data mart with those
days and saves the two blocks to the Prefect API current at the call (the session's test server,
or a module's own). A module of flow tests enters it once, from a module-scoped `stack`
fixture; `world` gives each test that stack with Tableau and staging emptied.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import date

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from standins.aws import MotoAws
from standins.emulators import BigQueryEmulator, GcsEmulator
from standins.stack import LocalStack, local_stack

StartStack = Callable[[tuple[date, ...], int], AbstractContextManager[LocalStack]]


@pytest.fixture(scope="session")
def start_stack(
    moto_aws: MotoAws,
    gcs_emulator: GcsEmulator,
    bigquery_emulator: BigQueryEmulator,
    tmp_path_factory: pytest.TempPathFactory,
) -> StartStack:
    """Start a `LocalStack` seeded with `dates`, its blocks saved; stopped on leaving."""

    @contextmanager
    def start(dates: tuple[date, ...], rows_per_day: int) -> Iterator[LocalStack]:
        with local_stack(
            tmp_path_factory.mktemp("stack"),
            dates,
            rows_per_day,
            moto=moto_aws,
            gcs=gcs_emulator,
            bigquery=bigquery_emulator,
        ) as running:
            running.save_blocks()
            yield running

    return start


@pytest.fixture
def world(stack: LocalStack, monkeypatch: pytest.MonkeyPatch, no_regional_access_boundary: None):
    """The module's `stack` as one test finds it: the flow's process sees the ECS task's
    environment; Tableau, the staging bucket (with the window's record) and the datasources'
    history tables (the quality checks' history) start empty."""
    for name, value in stack.environ().items():
        monkeypatch.setenv(name, value)
    stack.reset_tableau()
    stack.clear_staging()
    _delete_history_tables()
    return stack


def _delete_history_tables() -> None:
    history = ArtifactFilter(key=ArtifactFilterKey(like_="-history"))
    with get_client(sync_client=True) as client:
        while artifacts := client.read_artifacts(artifact_filter=history, limit=200):
            for artifact in artifacts:
                client.delete_artifact(artifact.id)
