"""Fixtures for the AWS -> Google exchange: moto, the ECS metadata endpoints, Google STS/IAM, APIs.

The servers start once per session (moto takes ~2 s) and are reset before each test that uses
them. `ecs_environ` is the environment an ECS task sees, pointing at the fakes; `wif_block` is a
ready `AwsWorkloadIdentityCredentials` whose supplier reads that environment and whose STS and
IAM URLs point at the fakes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from google.auth import credentials as google_credentials

from blocks.credentials import AwsWorkloadIdentityCredentials
from blocks.ecs import AwsEcsTaskRoleSupplier
from standins.aws import ACCOUNT_ID, TASK_ROLE, EcsMetadataServer, ManualClock, MotoAws
from standins.google import GoogleApis, GoogleIdentity, Provider

PROJECT_NUMBER = "123456789012"
PROJECT = "ad-datamart"
SERVICE_ACCOUNT = f"bq-exporter@{PROJECT}.iam.gserviceaccount.com"
TASK_ROLE_CONDITION = f"attribute.aws_role == 'arn:aws:sts::{ACCOUNT_ID}:assumed-role/{TASK_ROLE}'"


@dataclass
class Sleeps:
    """A `sleep` that records instead of waiting."""

    calls: list[float] = field(default_factory=list)

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture(scope="session")
def moto_aws() -> Iterator[MotoAws]:
    server = MotoAws()
    yield server
    server.close()


@pytest.fixture(scope="session")
def _ecs_server(moto_aws: MotoAws) -> Iterator[EcsMetadataServer]:
    with EcsMetadataServer(moto_aws) as server:
        yield server


@pytest.fixture(scope="session")
def _google_identity(moto_aws: MotoAws) -> Iterator[GoogleIdentity]:
    with GoogleIdentity(moto_aws.caller_arn) as server:
        yield server


@pytest.fixture(scope="session")
def _google_apis(_google_identity: GoogleIdentity) -> Iterator[GoogleApis]:
    with GoogleApis(_google_identity) as server:
        yield server


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def ecs(_ecs_server: EcsMetadataServer, clock: ManualClock) -> EcsMetadataServer:
    """The ECS credentials/metadata/IMDS fake, reset, sharing the test's clock."""
    _ecs_server.reset()
    _ecs_server.clock = clock
    return _ecs_server


@pytest.fixture(scope="session", autouse=True)
def _no_regional_access_boundary_threads() -> Iterator[None]:
    """No test process looks up a regional access boundary.

    google-auth 2.62 starts a background thread after token refreshes to look one up at the real
    iamcredentials.googleapis.com. Offline it can only fail, and a thread outliving its test
    could refresh credentials against a later test's fakes.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            google_credentials.CredentialsWithRegionalAccessBoundary,
            "_is_regional_access_boundary_lookup_required",
            lambda self: False,
        )
        yield


@pytest.fixture
def no_regional_access_boundary(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stop google-auth 2.62's background lookup to the real iamcredentials.googleapis.com."""
    monkeypatch.setattr(
        google_credentials.CredentialsWithRegionalAccessBoundary,
        "_is_regional_access_boundary_lookup_required",
        lambda self: False,
    )


@pytest.fixture
def google_identity(
    _google_identity: GoogleIdentity, no_regional_access_boundary: None
) -> GoogleIdentity:
    """Google STS + IAM with one AWS provider admitting only the task role, and its grant."""
    _google_identity.reset()
    _google_identity.add_provider(
        Provider(
            project_number=PROJECT_NUMBER,
            pool="bq-pool",
            provider="aws-provider",
            account_id=ACCOUNT_ID,
            condition=TASK_ROLE_CONDITION,
        )
    )
    _google_identity.grant(
        SERVICE_ACCOUNT,
        f"principalSet://iam.googleapis.com/projects/{PROJECT_NUMBER}/locations/global/"
        f"workloadIdentityPools/bq-pool/attribute.aws_role/"
        f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/{TASK_ROLE}",
    )
    return _google_identity


@pytest.fixture
def google_apis(_google_apis: GoogleApis, google_identity: GoogleIdentity) -> GoogleApis:
    _google_apis.reset()
    return _google_apis


@pytest.fixture
def ecs_environ(ecs: EcsMetadataServer) -> dict[str, str]:
    """What ECS puts in a Fargate task's environment (region left to the task metadata)."""
    return {
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": ecs.relative_uri,
        "ECS_CONTAINER_METADATA_URI_V4": ecs.metadata_uri,
    }


@pytest.fixture
def make_supplier(
    ecs: EcsMetadataServer, clock: ManualClock, sleeps: Sleeps
) -> type[AwsEcsTaskRoleSupplier]:
    """Build suppliers aimed at the fake (ECS host and IMDS), with the test's clock and sleep."""

    def make(environ: dict[str, str], **kwargs: object) -> AwsEcsTaskRoleSupplier:
        options: dict[str, object] = {
            "environ": environ,
            "clock": clock,
            "sleep": sleeps,
            "ecs_host": ecs.url,
            "imds_host": ecs.url,
            "timeout_seconds": 2.0,
        }
        options.update(kwargs)
        return AwsEcsTaskRoleSupplier(**options)  # type: ignore[arg-type]

    return make  # type: ignore[return-value]


@pytest.fixture
def credential_config(google_identity: GoogleIdentity) -> dict[str, object]:
    """The console's external_account file, with its URLs pointed at the fakes."""
    return {
        "universe_domain": "googleapis.com",
        "type": "external_account",
        "audience": (
            f"//iam.googleapis.com/projects/{PROJECT_NUMBER}/locations/global/"
            "workloadIdentityPools/bq-pool/providers/aws-provider"
        ),
        "subject_token_type": "urn:ietf:params:aws:token-type:aws4_request",
        "service_account_impersonation_url": google_identity.impersonation_url(SERVICE_ACCOUNT),
        "token_url": google_identity.token_url,
        "credential_source": {
            "environment_id": "aws1",
            "region_url": "http://169.254.169.254/latest/meta-data/placement/availability-zone",
            "url": "http://169.254.169.254/latest/meta-data/iam/security-credentials",
            "regional_cred_verification_url": (
                "https://sts.{region}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15"
            ),
        },
    }


@pytest.fixture
def wif_block(
    credential_config: dict[str, object],
    ecs_environ: dict[str, str],
    make_supplier: type[AwsEcsTaskRoleSupplier],
    sleeps: Sleeps,
) -> AwsWorkloadIdentityCredentials:
    """A ready block: supplier on the fake ECS endpoint, STS/IAM on the fake Google."""
    block = AwsWorkloadIdentityCredentials(credential_config=credential_config, project=PROJECT)
    return block.with_runtime(supplier=make_supplier(ecs_environ), retry_sleep=sleeps)


class LogCapture(logging.Handler):
    """Keeps every record with its extras (google-auth puts HTTP bodies in extras)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.text = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.text += f"{record.getMessage()} {record.__dict__}\n"


@contextmanager
def debug_logs(*names: str) -> Iterator[LogCapture]:
    """Capture the named loggers at DEBUG (google-auth does not propagate to root), then restore."""
    capture = LogCapture()
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(capture)
        lg.setLevel(logging.DEBUG)
    try:
        yield capture
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(capture)
            lg.setLevel(level)
