"""The AWS -> Google exchange end to end: block, supplier, moto, fake STS/IAM, real clients."""

from __future__ import annotations

import logging
from datetime import date, timedelta

import google.auth.transport.requests
import pytest
import requests
from google.api_core.client_options import ClientOptions
from google.auth import exceptions
from google.cloud import bigquery, storage

from blocks.errors import CredentialsError
from flows.bigquery import export_view
from flows.config import BigQueryConfig, GcsConfig
from flows.errors import is_retryable
from standins.aws import ACCOUNT_ID, OTHER_ROLE, TASK_ROLE
from tests.plugins.aws_google import PROJECT, SERVICE_ACCOUNT


def _refresh(credentials) -> None:
    credentials.refresh(google.auth.transport.requests.Request())


def test_first_exchange_gives_the_service_account_token(wif_block, ecs, google_identity):
    credentials = wif_block.get_credentials_from_service_account()
    _refresh(credentials)

    token = google_identity.validate_access_token(f"Bearer {credentials.token}")
    assert token is not None and token.kind == "service_account"
    assert token.subject == SERVICE_ACCOUNT
    assert token.scopes == ("https://www.googleapis.com/auth/cloud-platform",)
    [exchange] = google_identity.exchanges
    assert exchange.outcome == "accepted"
    assert exchange.arn == ecs.issued[0].arn
    assert exchange.arn.startswith(f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/{TASK_ROLE}/")
    assert exchange.access_key_id == ecs.issued[0].access_key_id
    assert wif_block.supplier.last_source.kind == "ecs-relative"


@pytest.fixture
def federated_block(wif_block, credential_config):
    """The block without impersonation: every refresh is an STS exchange."""
    config = {k: v for k, v in credential_config.items() if "impersonation" not in k}
    block = type(wif_block)(credential_config=config, project=PROJECT)
    return block.with_runtime(supplier=wif_block.supplier)


def test_rotation_mid_run_next_exchange_uses_new_keys(federated_block, ecs, google_identity, clock):
    credentials = federated_block.get_credentials_from_service_account()
    _refresh(credentials)
    first_keys = ecs.issued[0].access_key_id

    # ECS rotates well before expiry; our supplier only asks again near Expiration.
    clock.advance(timedelta(hours=6))
    _refresh(credentials)

    assert len(ecs.issued) == 2
    assert [e.outcome for e in google_identity.exchanges] == ["accepted", "accepted"]
    assert google_identity.exchanges[1].access_key_id == ecs.issued[1].access_key_id
    assert google_identity.exchanges[1].access_key_id != first_keys
    assert google_identity.validate_access_token(f"Bearer {credentials.token}") is not None


def test_cached_aws_credentials_are_reused_between_exchanges(federated_block, ecs, google_identity):
    credentials = federated_block.get_credentials_from_service_account()
    _refresh(credentials)
    _refresh(credentials)

    assert len(ecs.requests_to("/v2/credentials")) == 1
    assert len(google_identity.exchanges) == 2


def test_revoked_aws_keys_are_fetched_again_on_the_next_attempt(
    federated_block, ecs, google_identity, moto_aws
):
    credentials = federated_block.get_credentials_from_service_account()
    _refresh(credentials)
    moto_aws.revoke(ecs.issued[0].access_key_id)
    ecs.rotate()

    with pytest.raises(CredentialsError, match="InvalidClientTokenId") as caught:
        _refresh(credentials)
    assert caught.value.retryable is True
    _refresh(credentials)  # the cache was dropped: the rotated keys are used, no clock change

    assert [e.outcome for e in google_identity.exchanges] == [
        "accepted",
        "invalid_grant",
        "accepted",
    ]
    assert google_identity.exchanges[2].access_key_id == ecs.issued[1].access_key_id


def test_condition_rejected_is_one_request_and_names_the_role(
    wif_block, ecs, google_identity, caplog
):
    ecs.role = OTHER_ROLE  # the write-up's ecsTaskExecutionRole, which the condition refuses
    caplog.set_level(logging.DEBUG)

    with pytest.raises(CredentialsError) as caught:
        _refresh(wif_block.get_credentials_from_service_account())

    message = str(caught.value)
    assert "The given credential is rejected by the attribute condition." in message
    assert f"arn:aws:iam::{ACCOUNT_ID}:role/{OTHER_ROLE}" in message
    assert f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/{OTHER_ROLE}" in message
    assert "attribute condition" in message and "doctor" in message
    assert caught.value.retryable is False
    assert len(google_identity.requests_to("sts")) == 1
    assert google_identity.requests_to("iam") == []


def test_missing_workload_identity_user_grant_says_what_to_grant(wif_block, google_identity):
    google_identity.grants.clear()

    with pytest.raises(CredentialsError, match=r"roles/iam\.workloadIdentityUser") as caught:
        _refresh(wif_block.get_credentials_from_service_account())

    assert "iam.serviceAccounts.getAccessToken" in str(caught.value)
    assert SERVICE_ACCOUNT in str(caught.value)
    assert len(google_identity.requests_to("iam")) == 1


def test_wrong_audience_says_to_check_the_provider(wif_block, google_identity):
    google_identity.providers.clear()

    with pytest.raises(CredentialsError, match=r"credential_config\['audience'\]"):
        _refresh(wif_block.get_credentials_from_service_account())


@pytest.mark.parametrize("api", ["sts", "iam"])
def test_transient_5xx_is_retried_then_succeeds(wif_block, google_identity, sleeps, api):
    google_identity.fail_next(api, 503, times=2)

    credentials = wif_block.get_credentials_from_service_account()
    _refresh(credentials)

    assert credentials.token is not None
    assert len(google_identity.requests_to(api)) == 3
    assert sleeps.calls == [1.0, 2.0]


def test_5xx_beyond_the_attempts_is_a_retryable_error(wif_block, google_identity, sleeps):
    google_identity.fail_next("sts", 500, times=3)

    with pytest.raises(CredentialsError, match="after 3 attempts") as caught:
        _refresh(wif_block.get_credentials_from_service_account())

    assert caught.value.retryable is True
    assert len(google_identity.requests_to("sts")) == 3


@pytest.mark.parametrize(
    ("fault", "says", "retryable"),
    [
        ("rejected condition", "The provider's attribute condition rejects", False),
        ("STS down", r"kept failing \(HTTP 503\) after 3 attempts\. Google STS", True),
    ],
)
def test_an_export_whose_token_refresh_fails_raises_the_explained_credentials_error(
    wif_block, ecs, google_identity, google_apis, sleeps, fault, says, retryable
):
    if fault == "rejected condition":
        ecs.role = OTHER_ROLE
    else:
        google_identity.fail_next("sts", 503, times=3)
    client = bigquery.Client(
        project=PROJECT,
        credentials=wif_block.get_credentials_from_service_account(),
        client_options=ClientOptions(api_endpoint=google_apis.url),
    )
    bq = BigQueryConfig(view=f"{PROJECT}.marts.daily_ads", date_column="day")

    with pytest.raises(CredentialsError, match=says) as caught:
        export_view(client, bq, GcsConfig(bucket="exports"), [date(2026, 11, 28)], attempt="run-1")

    assert isinstance(caught.value, exceptions.RefreshError)  # what google-auth callers catch
    assert caught.value.retryable is retryable
    assert is_retryable(caught.value) is retryable  # the export task retries only the outage
    assert google_apis.seen == []  # no BigQuery call went out without a token


def test_real_bigquery_and_storage_clients_send_the_impersonated_token(wif_block, google_apis):
    credentials = wif_block.get_credentials_from_service_account()
    options = ClientOptions(api_endpoint=google_apis.url)

    bq = bigquery.Client(project=PROJECT, credentials=credentials, client_options=options)
    datasets = [d.dataset_id for d in bq.list_datasets()]
    job = bq.query("SELECT 1", job_config=bigquery.QueryJobConfig(dry_run=True))
    gcs = storage.Client(project=PROJECT, credentials=credentials, client_options=options)
    blobs = [b.name for b in gcs.list_blobs("exports")]

    assert datasets == ["marts"]
    assert job.total_bytes_processed == 1024
    assert blobs == ["day=2026-11-28/part-0.parquet"]
    assert {subject for _, subject in google_apis.seen} == {SERVICE_ACCOUNT}
    paths = {path for path, _ in google_apis.seen}
    assert paths >= {
        f"/bigquery/v2/projects/{PROJECT}/datasets",
        f"/bigquery/v2/projects/{PROJECT}/jobs",
        "/storage/v1/b/exports/o",
    }


def test_block_client_helpers_use_the_block_credentials(wif_block, google_apis, monkeypatch):
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", google_apis.url)
    bq = wif_block.get_bigquery_client()
    gcs = wif_block.get_cloud_storage_client()

    assert bq.project == PROJECT and gcs.project == PROJECT
    assert bq._credentials is wif_block.get_credentials_from_service_account()
    assert gcs._credentials is wif_block.get_credentials_from_service_account()
    assert [d.dataset_id for d in bq.list_datasets()] == ["marts"]
    assert google_apis.seen == [(f"/bigquery/v2/projects/{PROJECT}/datasets", SERVICE_ACCOUNT)]


@pytest.mark.parametrize("authorization", [None, "Bearer ya29.forged", "Basic eA=="])
def test_api_fake_refuses_requests_without_a_valid_token(google_apis, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    answer = requests.get(f"{google_apis.url}/storage/v1/b/exports/o", headers=headers, timeout=5)

    assert answer.status_code == 401
    assert google_apis.seen == []


def test_no_aws_source_at_all_is_a_clear_error(wif_block, make_supplier, ecs):
    wif_block.with_runtime(supplier=make_supplier({"AWS_REGION": "us-east-1"}, use_imds=False))

    with pytest.raises(
        exceptions.RefreshError, match="AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"
    ) as caught:
        _refresh(wif_block.get_credentials_from_service_account())
    assert isinstance(caught.value, CredentialsError)  # the supplier's message, as the flow's error
    assert caught.value.retryable is False


def test_prefect_gcp_blocks_built_at_run_time_use_the_keyless_credentials(
    wif_block, google_apis, monkeypatch
):
    # As the README shows: prefect-gcp's GcsBucket with our block, built in the flow (a saved
    # GcsBucket would reload the nested block as a plain GcpCredentials).
    from prefect_gcp.cloud_storage import GcsBucket

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", google_apis.url)
    bucket = GcsBucket(bucket="exports", gcp_credentials=wif_block)

    blobs = [blob.name for blob in bucket.list_blobs()]

    assert blobs == ["day=2026-11-28/part-0.parquet"]
    assert google_apis.seen == [("/storage/v1/b/exports/o", SERVICE_ACCOUNT)]
