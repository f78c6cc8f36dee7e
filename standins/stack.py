"""Every stand-in at once: the local world the demo and the flow tests run the real pipeline in.

`local_stack()` starts moto (AWS STS), the ECS metadata endpoint, Google STS/IAM, the BigQuery
and GCS emulators and the fake Tableau server, all on 127.0.0.1, seeds an ad data mart, and
returns what a deployment would configure: the environment an ECS task sees, the credential
configuration file Google's console produces (pointed at the fake STS/IAM), the blocks to save,
the local catalog of pipelines (standins/pipelines.yaml) and their `PipelineConfig`s. Only
configuration differs from production; `flows/` and `blocks/` run unchanged.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final

import yaml
from google.cloud import bigquery

from blocks import AwsWorkloadIdentityCredentials, TableauServer
from flows import catalog
from flows.catalog import Catalog
from flows.config import PipelineConfig
from standins.aws import ACCOUNT_ID, REGION, TASK_ROLE, EcsMetadataServer, MotoAws
from standins.datamart import TABLE_NAME, VIEW_NAME, seed_ad_datamart
from standins.emulators import BigQueryEmulator, GcsEmulator, start_bigquery, start_gcs
from standins.google import GoogleIdentity, Provider
from standins.tableau import FakeTableauServer

PROJECT: Final = "ad-agency-dwh"
PROJECT_NUMBER: Final = "314159265358"
DATASET: Final = "ads_mart"
BUCKET: Final = "ad-agency-tableau-staging"
SERVICE_ACCOUNT: Final = "bq-to-tableau@ad-agency-dwh.iam.gserviceaccount.com"
POOL, PROVIDER = "aws-ecs", "ad-pipeline-task"
TASK_ROLE_ARN: Final = f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/{TASK_ROLE}"
CREDENTIALS_BLOCK, TABLEAU_BLOCK = "local-wif", "local-tableau"
TABLEAU_PROJECT, DATASOURCE = "Marketing/Ads", "ad_performance_daily"
CATALOG: Final = Path(__file__).with_name("pipelines.yaml")


def _real_clock() -> datetime:
    return datetime.now(UTC)


@dataclass
class LocalStack:
    """Handles to the running stand-ins and the configuration that points at them."""

    moto: MotoAws
    ecs: EcsMetadataServer
    identity: GoogleIdentity
    tableau: FakeTableauServer
    gcs: GcsEmulator
    bigquery: BigQueryEmulator
    dates: tuple[date, ...]
    ecs_token: str
    project: str = PROJECT

    @property
    def view(self) -> str:
        return f"{self.project}.{DATASET}.{VIEW_NAME}"

    @property
    def source_table(self) -> str:
        """The table behind the view, where tests and benchmarks restate rows."""
        return f"{self.project}.{DATASET}_src.{TABLE_NAME}"

    def environ(self) -> dict[str, str]:
        """What the flow's container sees: ECS's variables, plus the emulator endpoints."""
        return {
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": self.ecs.full_uri,
            "AWS_CONTAINER_AUTHORIZATION_TOKEN": self.ecs_token,
            "AWS_REGION": REGION,
            "ECS_CONTAINER_METADATA_URI_V4": self.ecs.metadata_uri,
            "BIGQUERY_EMULATOR_HOST": self.bigquery.url,
            "STORAGE_EMULATOR_HOST": self.gcs.url,
            # As the Dockerfile sets it: no background bucket-metadata fetches.
            "DISABLE_GCS_PYTHON_CLIENT_OTEL_BUCKET_METADATA": "true",
        }

    def credential_config(self) -> dict[str, Any]:
        """The `external_account` file `gcloud ... create-cred-config --aws` writes."""
        return {
            "universe_domain": "googleapis.com",
            "type": "external_account",
            "audience": f"//iam.googleapis.com/projects/{PROJECT_NUMBER}/locations/global/"
            f"workloadIdentityPools/{POOL}/providers/{PROVIDER}",
            "subject_token_type": "urn:ietf:params:aws:token-type:aws4_request",
            "service_account_impersonation_url": self.identity.impersonation_url(SERVICE_ACCOUNT),
            "token_url": self.identity.token_url,
            "credential_source": {
                "environment_id": "aws1",
                "region_url": "http://169.254.169.254/latest/meta-data/placement/availability-zone",
                "url": "http://169.254.169.254/latest/meta-data/iam/security-credentials",
                "regional_cred_verification_url": "https://sts.{region}.amazonaws.com"
                "?Action=GetCallerIdentity&Version=2011-06-15",
            },
        }

    def credentials_block(self) -> AwsWorkloadIdentityCredentials:
        return AwsWorkloadIdentityCredentials(
            credential_config=self.credential_config(), project=self.project
        )

    def tableau_block(self) -> TableauServer:
        ((name, secret),) = self.tableau.pats.items()
        return TableauServer(
            server_url=self.tableau.url,
            site=self.tableau.site_content_url,
            token_name=name,
            token_secret=secret,
        )

    def save_blocks(self) -> None:
        """Save both blocks to the current Prefect API, as deployments/ does in production."""
        self.credentials_block().save(CREDENTIALS_BLOCK, overwrite=True)
        self.tableau_block().save(TABLEAU_BLOCK, overwrite=True)

    def catalog(self) -> Catalog:
        """The local world's catalog (standins/pipelines.yaml), on this stack's emulator
        project (the tests' emulator has its own)."""
        text = CATALOG.read_text(encoding="utf-8").replace(f"{PROJECT}.", f"{self.project}.")
        return catalog.parse(yaml.safe_load(text), source=str(CATALOG))

    def catalog_config(self, name: str, work_dir: Path | None = None) -> PipelineConfig:
        """Pipeline `name` of the local catalog, as a run here needs it: no date before the
        seeded ones, and scratch space in `work_dir`."""
        config = self.catalog().get(name).config
        return config.model_copy(update={"earliest_date": min(self.dates), "work_dir": work_dir})

    def pipeline_config(self, work_dir: Path | None = None, **tableau: Any) -> PipelineConfig:
        return PipelineConfig.model_validate(
            {
                "credentials_block": CREDENTIALS_BLOCK,
                "bigquery": {"view": self.view, "date_column": "date", "location": "US"},
                "gcs": {"bucket": BUCKET, "prefix": "bq-tableau", "download_workers": 4},
                "tableau": {
                    "server_block": TABLEAU_BLOCK,
                    "project": TABLEAU_PROJECT,
                    "datasource": DATASOURCE,
                    "create_project": True,
                    **tableau,
                },
                "retry": {"retries": 2, "backoff_seconds": 0},
                "earliest_date": min(self.dates).isoformat(),
                "work_dir": str(work_dir) if work_dir else None,
            }
        )

    def bigquery_client(self) -> bigquery.Client:
        """An admin client for seeding and checking the emulator (no WIF involved)."""
        return self.bigquery.client(self.project)

    def staged_objects(self) -> list[str]:
        """Names of every object in the staging bucket."""
        return sorted(blob.name for blob in self.gcs.client(self.project).list_blobs(BUCKET))

    def reset_tableau(self) -> None:
        self.tableau.reset()

    def clear_staging(self) -> None:
        """Empty the staging bucket (a failed run leaves its files to a lifecycle rule)."""
        for blob in self.gcs.client(self.project).list_blobs(BUCKET):
            blob.delete()


@contextmanager
def local_stack(
    data_dir: Path,
    dates: tuple[date, ...],
    rows_per_day: int,
    *,
    moto: MotoAws | None = None,
    gcs: GcsEmulator | None = None,
    bigquery: BigQueryEmulator | None = None,
) -> Iterator[LocalStack]:
    """Start every stand-in on 127.0.0.1, seed the data mart, and stop them all on exit.

    Running servers may be passed in (the tests share theirs): moto's state is global to a
    process, so there must be only one `MotoAws` per process; the BigQuery emulator must export
    into the GCS one.
    """
    with ExitStack() as stack:
        if moto is None:
            moto = MotoAws()
            stack.callback(moto.close)
        ecs = stack.enter_context(EcsMetadataServer(moto, clock=_real_clock))  # type: ignore[arg-type]
        ecs_token = secrets.token_urlsafe(24)
        ecs.auth_token = ecs_token
        identity = stack.enter_context(GoogleIdentity(moto.caller_arn))
        identity.add_provider(
            Provider(
                project_number=PROJECT_NUMBER,
                pool=POOL,
                provider=PROVIDER,
                account_id=ACCOUNT_ID,
                condition=f"attribute.aws_role == '{TASK_ROLE_ARN}'",
            )
        )
        identity.grant(
            SERVICE_ACCOUNT,
            f"principalSet://iam.googleapis.com/projects/{PROJECT_NUMBER}/locations/global/"
            f"workloadIdentityPools/{POOL}/attribute.aws_role/{TASK_ROLE_ARN}",
        )
        tableau = stack.enter_context(FakeTableauServer())
        if gcs is None:
            gcs = stack.enter_context(start_gcs(data_dir / "gcs"))
        if bigquery is None:
            bigquery = stack.enter_context(
                start_bigquery(PROJECT, gcs_url=gcs.url, data_dir=data_dir / "bq")
            )
        project = bigquery.project
        gcs.create_bucket(BUCKET, project=project)
        seed_ad_datamart(bigquery.client(project), project, DATASET, dates, rows_per_day)
        yield LocalStack(moto, ecs, identity, tableau, gcs, bigquery, dates, ecs_token, project)
