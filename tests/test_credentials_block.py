"""AwsWorkloadIdentityCredentials: validation, what it builds, Prefect registration and storage."""

from __future__ import annotations

import copy
import json
import logging
import os
import pickle
import subprocess
import sys
from uuid import UUID

import cloudpickle
import google.auth
import google.auth.transport.requests
import pytest
from prefect.blocks.core import Block
from prefect.testing.standard_test_suites import BlockStandardTestSuite
from prefect_gcp import GcpCredentials

from blocks.credentials import AwsWorkloadIdentityCredentials, save_credentials_block
from blocks.federation import WorkloadIdentityCredentials
from tests.plugins.aws_google import PROJECT, SERVICE_ACCOUNT, debug_logs


class TestBlockStandards(BlockStandardTestSuite):
    @pytest.fixture
    def block(self) -> type[Block]:
        return AwsWorkloadIdentityCredentials

    def test_has_a_valid_image(self, block: type[Block]) -> None:
        # The standard check downloads the logo; offline we check it is prefect-gcp's https URL.
        assert str(block._logo_url).startswith("https://")


def test_block_type_has_its_own_slug_and_leaves_prefect_gcps_alone():
    assert AwsWorkloadIdentityCredentials.get_block_type_slug() == (
        "aws-workload-identity-credentials"
    )
    assert AwsWorkloadIdentityCredentials.get_block_type_name() == (
        "AWS Workload Identity Credentials"
    )
    assert GcpCredentials.get_block_type_slug() == "gcp-credentials"
    assert issubclass(AwsWorkloadIdentityCredentials, GcpCredentials)


def test_schema_shows_only_keyless_fields():
    properties = AwsWorkloadIdentityCredentials.model_json_schema()["properties"]
    assert set(properties) == {
        "credential_config",
        "project",
        "scopes",
        "token_lifetime_seconds",
        "quota_project_id",
        "exchange_attempts",
    }
    assert AwsWorkloadIdentityCredentials.model_json_schema()["secret_fields"] == []


def _config(credential_config, **changes):
    config = dict(credential_config)
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    return config


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"type": "service_account"}, r"credential_config\['type'\] is 'service_account'"),
        ({"audience": None}, "credential_config lacks audience"),
        ({"token_url": None}, "credential_config lacks token_url"),
        (
            {"subject_token_type": "urn:ietf:params:oauth:token-type:jwt"},
            "must be an AWS provider",
        ),
        ({"audience": "projects/1/pools/p"}, "is not a provider name"),
        (
            {"token_url": "http://sts.example.com/v1/token"},
            r"credential_config\['token_url'\] 'http://sts.example.com/v1/token' must use https",
        ),
        (
            {"service_account_impersonation_url": "http://10.0.0.5/v1/x:generateAccessToken"},
            r"\['service_account_impersonation_url'\] .* must use https",
        ),
        ({"token_url": "ftp://127.0.0.1/token"}, "must use https"),
    ],
)
def test_bad_credential_config_names_the_field(credential_config, changes, message):
    with pytest.raises(ValueError, match=message):
        AwsWorkloadIdentityCredentials(
            credential_config=_config(credential_config, **changes), project=PROJECT
        )


@pytest.mark.parametrize(
    "url",
    ["https://sts.googleapis.com/v1/token", "http://127.0.0.1:8080/v1/token", "http://[::1]/t"],
)
def test_https_or_loopback_token_urls_are_accepted(credential_config, url):
    block = AwsWorkloadIdentityCredentials(
        credential_config=_config(credential_config, token_url=url), project=PROJECT
    )
    assert block.credential_config["token_url"] == url


def test_save_credentials_refuses_a_plain_http_token_url_and_saves_nothing(
    tmp_path, credential_config
):
    path = tmp_path / "cred-config.json"
    path.write_text(json.dumps(_config(credential_config, token_url="http://sts.example.com/t")))

    with pytest.raises(ValueError, match="must use https"):
        save_credentials_block(path, PROJECT, "never-saved")


def test_credential_config_may_be_a_json_string(credential_config):
    block = AwsWorkloadIdentityCredentials(
        credential_config=json.dumps(credential_config), project=PROJECT
    )
    assert block.credential_config == credential_config

    with pytest.raises(ValueError, match="credential_config is not valid JSON"):
        AwsWorkloadIdentityCredentials(credential_config="{not json", project=PROJECT)


@pytest.mark.parametrize("lifetime", [599, 43201])
def test_token_lifetime_bounds(credential_config, lifetime):
    with pytest.raises(ValueError, match="token_lifetime_seconds"):
        AwsWorkloadIdentityCredentials(
            credential_config=credential_config, project=PROJECT, token_lifetime_seconds=lifetime
        )


def test_token_lifetime_needs_impersonation(credential_config):
    config = _config(credential_config, service_account_impersonation_url=None)
    with pytest.raises(ValueError, match="no service_account_impersonation_url"):
        AwsWorkloadIdentityCredentials(
            credential_config=config, project=PROJECT, token_lifetime_seconds=3600
        )


def test_project_is_required(credential_config):
    with pytest.raises(ValueError, match="project"):
        AwsWorkloadIdentityCredentials(credential_config=credential_config)


def test_keys_are_refused(credential_config):
    with pytest.raises(ValueError, match="service_account_info"):
        AwsWorkloadIdentityCredentials(
            credential_config=credential_config,
            project=PROJECT,
            service_account_info={"type": "service_account"},
        )


def test_initialization_does_not_look_for_default_credentials(credential_config, monkeypatch):
    def no_adc(*args, **kwargs):
        raise AssertionError("google.auth.default() must not be called")

    monkeypatch.setattr(google.auth, "default", no_adc)
    block = AwsWorkloadIdentityCredentials(credential_config=credential_config, project=PROJECT)

    assert block.project == PROJECT
    assert block.service_account_email == SERVICE_ACCOUNT


def test_credentials_are_built_with_the_blocks_supplier_and_no_credential_source(wif_block):
    credentials = wif_block.get_credentials_from_service_account()

    assert isinstance(credentials, WorkloadIdentityCredentials)
    assert isinstance(credentials, google.auth.aws.Credentials)
    assert credentials._credential_source is None
    assert credentials.supplier is wif_block.supplier
    assert credentials.service_account_email == SERVICE_ACCOUNT
    assert credentials.scopes == ["https://www.googleapis.com/auth/cloud-platform"]
    assert wif_block.get_credentials_from_service_account() is credentials  # built once
    assert wif_block.build_credentials().supplier is wif_block.supplier


def test_lifetime_scopes_and_quota_project_reach_google(
    credential_config, ecs_environ, make_supplier, google_identity
):
    block = AwsWorkloadIdentityCredentials(
        credential_config=credential_config,
        project=PROJECT,
        token_lifetime_seconds=43200,
        scopes=["https://www.googleapis.com/auth/bigquery"],
        quota_project_id="billing-project",
    ).with_runtime(supplier=make_supplier(ecs_environ))
    credentials = block.get_credentials_from_service_account()

    credentials.refresh(google.auth.transport.requests.Request())

    [iam] = google_identity.requests_to("iam")
    assert iam.json()["lifetime"] == "43200s"
    assert iam.json()["scope"] == ["https://www.googleapis.com/auth/bigquery"]
    assert credentials.quota_project_id == "billing-project"
    token = google_identity.validate_access_token(f"Bearer {credentials.token}")
    assert token.scopes == ("https://www.googleapis.com/auth/bigquery",)


def test_equality_is_by_fields(credential_config):
    one = AwsWorkloadIdentityCredentials(credential_config=credential_config, project=PROJECT)
    two = AwsWorkloadIdentityCredentials(credential_config=credential_config, project=PROJECT)
    other = AwsWorkloadIdentityCredentials(credential_config=credential_config, project="other")

    assert one == two and hash(one) == hash(two)
    assert one != other


def test_deep_copy_shares_the_supplier_cache(wif_block):
    credentials = wif_block.get_credentials_from_service_account()

    clone = copy.deepcopy(wif_block)

    assert clone == wif_block
    assert clone.supplier is wif_block.supplier
    assert clone.get_credentials_from_service_account() is credentials
    assert clone.credential_config is not wif_block.credential_config


@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps])
def test_pickled_block_starts_with_a_fresh_supplier(wif_block, dumps):
    wif_block.get_credentials_from_service_account()

    restored = pickle.loads(dumps(wif_block))

    assert restored == wif_block
    assert restored.supplier is not wif_block.supplier
    assert restored.supplier.last_source is None


def test_from_config_file(tmp_path, credential_config):
    path = tmp_path / "clientLibraryConfig-aws-provider.json"
    path.write_text(json.dumps(credential_config))

    block = AwsWorkloadIdentityCredentials.from_config_file(
        path, project=PROJECT, token_lifetime_seconds=7200
    )

    assert block.credential_config == credential_config
    assert block.token_lifetime_seconds == 7200


def test_from_config_file_errors_name_the_file(tmp_path):
    missing = tmp_path / "absent.json"
    with pytest.raises(ValueError, match=r"Cannot read credential config .*absent\.json"):
        AwsWorkloadIdentityCredentials.from_config_file(missing, project=PROJECT)
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ValueError, match=r"broken\.json is not valid JSON"):
        AwsWorkloadIdentityCredentials.from_config_file(broken, project=PROJECT)


def _secrets(ecs, google_identity) -> list[str]:
    aws = [s for c in ecs.issued for s in (c.secret_access_key, c.token)]
    return aws + list(google_identity.tokens)


def test_nothing_secret_in_logs_reprs_or_errors(wif_block, ecs, google_identity, caplog):
    # Our code and google-auth; not the root logger, where the fakes' boto3 debug-logs the
    # credentials it is handing out.
    caplog.set_level(logging.DEBUG, logger="blocks")
    with debug_logs("google") as capture:
        credentials = wif_block.get_credentials_from_service_account()
        credentials.refresh(google.auth.transport.requests.Request())
        google_identity.grants.clear()
        with pytest.raises(google.auth.exceptions.RefreshError) as caught:
            wif_block.build_credentials().refresh(google.auth.transport.requests.Request())

    secrets = _secrets(ecs, google_identity)
    assert len(secrets) >= 4  # AWS secret + session token, federated + service-account tokens
    assert "subject_token" in capture.text  # google-auth did log the STS call...
    text = caplog.text + capture.text + repr(wif_block) + str(caught.value)
    text += repr(wif_block.supplier) + repr(wif_block.supplier.last_source)
    leaked = [(s, text[max(0, text.find(s) - 200) : text.find(s)]) for s in secrets if s in text]
    assert leaked == []  # ...but every secret in it was redacted


@pytest.mark.prefect
def test_saved_block_document_holds_no_secret_and_loads_back(
    prefect_server, wif_block, ecs, google_identity, make_supplier, ecs_environ
):
    from prefect.client.orchestration import get_client

    wif_block.get_credentials_from_service_account().refresh(
        google.auth.transport.requests.Request()
    )
    block_id = wif_block.save("wif-saved", overwrite=True)

    with get_client(sync_client=True) as client:
        document = client.read_block_document(block_id, include_secrets=True)
    raw = json.dumps(document.data)
    assert document.block_type.slug == "aws-workload-identity-credentials"
    assert [s for s in _secrets(ecs, google_identity) if s in raw] == []
    assert document.data["credential_config"]["audience"] == wif_block.credential_config["audience"]

    loaded = AwsWorkloadIdentityCredentials.load("wif-saved")
    loaded.with_runtime(supplier=make_supplier(ecs_environ))
    credentials = loaded.get_credentials_from_service_account()
    credentials.refresh(google.auth.transport.requests.Request())
    assert google_identity.validate_access_token(f"Bearer {credentials.token}").subject == (
        SERVICE_ACCOUNT
    )


@pytest.mark.prefect
def test_save_credentials_block_from_a_config_file(prefect_server, tmp_path, credential_config):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(credential_config))

    block_id = save_credentials_block(path, PROJECT, "wif-from-file", overwrite=True)

    assert isinstance(block_id, UUID)
    loaded = AwsWorkloadIdentityCredentials.load("wif-from-file")
    assert loaded.project == PROJECT and loaded.credential_config == credential_config
    with pytest.raises(ValueError, match="already exists; pass overwrite=True"):
        save_credentials_block(path, "other-project", "wif-from-file")
    assert AwsWorkloadIdentityCredentials.load("wif-from-file").project == PROJECT


@pytest.mark.prefect
@pytest.mark.subprocess
def test_prefect_block_register_cli(prefect_server):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    done = subprocess.run(
        [sys.executable, "-m", "prefect", "block", "register", "-m", "blocks"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    with get_client(sync_client=True) as client:
        block_type = client.read_block_type_by_slug("aws-workload-identity-credentials")
        schemas = client.read_block_schemas()
    assert block_type.name == "AWS Workload Identity Credentials"
    assert any(
        s.block_type_id == block_type.id and "credential_config" in s.fields["properties"]
        for s in schemas
    )
