"""Fixtures for the BigQuery and GCS emulators, started once per session on free ports.

`gcs_emulator` (fake-gcs-server) and `bigquery_emulator` (local-bigquery, whose EXPORT DATA
writes into that fake GCS) are child processes; `ad_datamart` seeds the ad data mart once;
`staging_bucket` is a fresh bucket per test. `bigquery_proxy` (`standins.emulators.BigQueryProxy`)
sits between a real BigQuery client and the emulator to change what the emulator cannot (a dry
run's byte estimate, a 403, a job that never finishes), so those paths still run over real HTTP.

Off CI a missing emulator skips its tests with the reason; under CI it fails them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date

import pytest
from google.cloud import bigquery, storage

from standins.datamart import SeededMart, seed_ad_datamart
from standins.emulators import (
    BigQueryEmulator,
    BigQueryProxy,
    EmulatorError,
    GcsEmulator,
    bigquery_client,
    start_bigquery,
    start_gcs,
    storage_client,
)
from tests.plugins.ci import unavailable

EMULATOR_PROJECT = "test-project"
MART_DATES = tuple(date(2026, 11, d) for d in range(1, 6))
MART_ROWS_PER_DAY = 40
EMPTY_DATE = date(2026, 10, 31)  # before the mart's first day: no rows


def _unavailable(exc: Exception) -> None:
    unavailable(f"emulator unavailable: {exc}", under_ci=f"emulator unavailable under CI: {exc}")


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsEmulator]:
    """fake-gcs-server with its filesystem backend in a temp dir."""
    try:
        emulator = start_gcs(tmp_path_factory.mktemp("gcs") / "root")
    except EmulatorError as exc:
        _unavailable(exc)
    with emulator:
        yield emulator


@pytest.fixture(scope="session")
def bigquery_emulator(
    gcs_emulator: GcsEmulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BigQueryEmulator]:
    """local-bigquery for EMULATOR_PROJECT, exporting into `gcs_emulator`."""
    try:
        emulator = start_bigquery(
            EMULATOR_PROJECT, gcs_emulator.url, tmp_path_factory.mktemp("bq") / "data"
        )
    except EmulatorError as exc:
        _unavailable(exc)
    with emulator:
        yield emulator


@pytest.fixture(scope="session")
def bq_client(bigquery_emulator: BigQueryEmulator) -> Iterator[bigquery.Client]:
    client = bigquery_client(bigquery_emulator)
    yield client
    client.close()


@pytest.fixture(scope="session")
def gcs_client(gcs_emulator: GcsEmulator) -> storage.Client:
    return storage_client(gcs_emulator, project=EMULATOR_PROJECT)


@pytest.fixture(scope="session")
def ad_datamart(bq_client: bigquery.Client) -> SeededMart:
    """The ad data mart: 5 days x 40 rows behind `test-project.mart.ad_performance_daily`."""
    return seed_ad_datamart(bq_client, EMULATOR_PROJECT, "mart", MART_DATES, MART_ROWS_PER_DAY)


@pytest.fixture
def staging_bucket(gcs_client: storage.Client) -> Iterator[str]:
    """A fresh, empty bucket for one test."""
    bucket = gcs_client.create_bucket(f"stage-{uuid.uuid4().hex[:12]}")
    yield bucket.name
    for blob in gcs_client.list_blobs(bucket.name):
        blob.delete()


@pytest.fixture(scope="session")
def _bigquery_proxy_server(bigquery_emulator: BigQueryEmulator) -> Iterator[BigQueryProxy]:
    with BigQueryProxy(bigquery_emulator.url) as proxy:
        yield proxy


@pytest.fixture
def bigquery_proxy(_bigquery_proxy_server: BigQueryProxy) -> BigQueryProxy:
    """The proxy, reset for this test."""
    _bigquery_proxy_server.reset()
    return _bigquery_proxy_server


@pytest.fixture
def proxied_bq_client(bigquery_proxy: BigQueryProxy) -> Iterator[bigquery.Client]:
    """A real BigQuery client talking to the emulator through `bigquery_proxy`."""
    from google.auth.credentials import AnonymousCredentials

    client = bigquery.Client(
        project=EMULATOR_PROJECT,
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": bigquery_proxy.url},
    )
    yield client
    client.close()
