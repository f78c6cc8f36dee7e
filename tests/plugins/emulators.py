"""Fixtures for the BigQuery and GCS emulators, started once per session on free ports.

`gcs_emulator` (fake-gcs-server) and `bigquery_emulator` (local-bigquery, whose EXPORT DATA
writes into that fake GCS) are child processes; `ad_datamart` seeds the ad data mart once;
`staging_bucket` is a fresh bucket per test. `bigquery_proxy` sits between a real BigQuery
client and the emulator to change what the emulator cannot (a dry run's byte estimate, a 403,
a job that never finishes), so those paths still run over real HTTP.

Off CI a missing emulator skips its tests with the reason; under CI it fails them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import date
from urllib.parse import urlencode

import pytest
import requests
from google.cloud import bigquery, storage

from standins.datamart import SeededMart, seed_ad_datamart
from standins.emulators import (
    BigQueryEmulator,
    EmulatorError,
    GcsEmulator,
    bigquery_client,
    start_bigquery,
    start_gcs,
    storage_client,
)
from standins.loopback import LoopbackServer, Request, Response
from tests.conftest import in_ci

EMULATOR_PROJECT = "test-project"
MART_DATES = tuple(date(2026, 11, d) for d in range(1, 6))
MART_ROWS_PER_DAY = 40
EMPTY_DATE = date(2026, 10, 31)  # before the mart's first day: no rows


def _unavailable(exc: Exception) -> None:
    if in_ci():
        pytest.fail(f"emulator unavailable under CI: {exc}")
    pytest.skip(f"emulator unavailable: {exc}")


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


class BigQueryProxy(LoopbackServer):
    """Forwards BigQuery REST calls to the emulator; `intercept` may answer one instead.

    `dry_run_bytes`, when set, replaces the emulator's byte estimate (always 0) in dry-run
    responses, so the limit check sees a real-looking figure.
    """

    def __init__(self, upstream: str) -> None:
        super().__init__()
        self.upstream = upstream
        self.dry_run_bytes: int | None = None
        self.intercept: Callable[[Request], Response | None] | None = None

    def reset(self) -> None:
        super().reset()
        self.dry_run_bytes = None
        self.intercept = None

    def job_inserts(self, *, dry_run: bool) -> list[dict]:
        """The bodies of jobs.insert requests seen, dry runs or real jobs."""
        bodies = [
            r.json() for r in self.requests if r.method == "POST" and r.path.endswith("/jobs")
        ]
        return [b for b in bodies if bool(b["configuration"].get("dryRun")) is dry_run]

    def handle(self, request: Request) -> Response:
        if self.intercept and (answer := self.intercept(request)):
            return answer
        query = urlencode(request.query, doseq=True)
        upstream = requests.request(
            request.method,
            f"{self.upstream}{request.path}" + (f"?{query}" if query else ""),
            data=request.body,
            headers={"Content-Type": request.headers.get("content-type", "application/json")},
            timeout=60,
        )
        body = upstream.content
        is_insert = request.method == "POST" and request.path.endswith("/jobs")
        if is_insert and self.dry_run_bytes is not None and upstream.ok:
            job = upstream.json()
            if job["configuration"].get("dryRun"):
                stats = job.setdefault("statistics", {})
                stats["totalBytesProcessed"] = str(self.dry_run_bytes)
                stats.setdefault("query", {})["totalBytesProcessed"] = str(self.dry_run_bytes)
                body = json.dumps(job).encode()
        content_type = upstream.headers.get("Content-Type", "application/json")
        return Response(upstream.status_code, body, {"Content-Type": content_type})


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
