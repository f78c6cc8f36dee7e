"""`python -m flows plan`: what a run of a pipeline for a date would do, changing nothing.

It makes the run's own checks with the run's own functions, in the run's order, and stops
where the run would stop: the preflight (`flows.steps.preflight`: the dry run over the window,
then the Tableau target, with `plan_only` so that a missing project is reported, not
created), then for a window the fingerprint step's function (`fingerprint_step.fn`: which
dates BigQuery restated since they were recorded), then the dry run of the dates the export
would take. No flow run, no export, no GCS or Tableau write: the fingerprint query and the
dry runs are reads, and the Tableau sign-in holds the token's publish slot, as a run's does.

An error is either a refusal (the run would fail there, for a reason the message says how to
fix: exit 1) or no answer (a system could not be reached or would not let us in: exit 3),
told apart by `cannot_answer`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime
from zoneinfo import ZoneInfo

import httpx
from google.auth import exceptions as gauth

from blocks import AwsWorkloadIdentityCredentials, TableauServer
from flows import progress
from flows.bigquery import DryRun, dry_run_days, fingerprint_days
from flows.catalog import Pipeline
from flows.config import PipelineConfig, with_lookback
from flows.dates import check_run_date
from flows.errors import ConfigError, CredentialsError, PipelineError, is_retryable
from flows.steps import fingerprint_step, load_block, preflight, refuse_empty_run_date
from flows.tableau import SignInError, TargetCheck
from flows.window import DayChange, window_dates

logger = logging.getLogger(__name__)


def cannot_answer(exc: BaseException) -> bool:
    """Whether `exc` means a system could not be asked, rather than that it said no.

    Credentials that Google or Tableau refused, a Prefect API, Google or Tableau that cannot
    be reached, and every transient failure (`flows.errors.is_retryable`) leave the question
    open; a permanent refusal (over the byte limit, schema drift, a missing project, access
    denied on the view) answers it.
    """
    if isinstance(exc, ConfigError):
        return False
    if isinstance(exc, CredentialsError | SignInError | gauth.RefreshError | httpx.TransportError):
        return True
    if isinstance(exc.__cause__, httpx.TransportError):  # Prefect's "Failed to reach API"
        return True
    return is_retryable(exc)


@dataclass
class Plan:
    """What a run would do, filled in as far as the run would get."""

    pipeline: str
    view: str
    target: str  # project/datasource in Tableau
    run_date: date
    window: tuple[date, ...]
    max_bytes_billed: int
    lookback_days: int
    dry_run: DryRun | None = None  # the preflight's, over the window
    target_check: TargetCheck | None = None
    changes: tuple[DayChange, ...] = ()  # a window's dates against the record
    run_date_rows: int | None = None  # one date (lookback 1): its rows in BigQuery now
    export_days: tuple[date, ...] = ()
    export_bytes: int | None = None  # the dry run's estimate for export_days
    refusal: PipelineError | None = None  # why the run would stop
    refused_at: str = ""  # the step that would refuse it
    notes: list[str] = field(default_factory=list)

    @property
    def proceeds(self) -> bool:
        """Whether the run would get past its checks (a window with nothing to republish
        proceeds too: it completes after the fingerprint)."""
        return self.refusal is None


def plan_run(pipeline: Pipeline, run_date: date, *, lookback_days: int | None = None) -> Plan:
    """Check what a run of `pipeline` for `run_date` would do, changing nothing.

    Raises:
        ConfigError: the date or lookback is not one a run accepts, or a block is missing.
        PipelineError, httpx.TransportError: a system could not be asked (`cannot_answer`).
    """
    config = with_lookback(pipeline.config, lookback_days)
    today = datetime.now(ZoneInfo(config.timezone)).date()
    day = check_run_date(run_date, today=today, earliest=config.earliest_date)
    window = window_dates(day, config.lookback_days, config.earliest_date)
    plan = Plan(
        pipeline=pipeline.name,
        view=config.bigquery.view,
        target=pipeline.target,
        run_date=day,
        window=tuple(window),
        max_bytes_billed=config.bigquery.max_bytes_billed,
        lookback_days=config.lookback_days,
    )
    credentials = load_block(AwsWorkloadIdentityCredentials, config.credentials_block)
    tableau = load_block(TableauServer, config.tableau.server_block)
    stage = "preflight"
    try:
        with progress.step(stage):
            dry_run, plan.target_check = preflight(
                credentials, tableau, config, window, plan_only=True
            )
        plan.dry_run = dry_run
        stage = "fingerprint" if config.lookback_days > 1 else "row count"
        with progress.step(stage):
            _which_dates(plan, credentials, config, window, dry_run)
        stage = "export dry run"
        if plan.export_days and list(plan.export_days) != window:
            with progress.step(stage):
                plan.export_bytes = _dry_run_bytes(credentials, config, plan.export_days)
        elif plan.export_days:
            plan.export_bytes = dry_run.estimated_bytes  # the preflight's covered these dates
    except PipelineError as exc:
        if isinstance(exc, ConfigError) or cannot_answer(exc):
            raise
        plan.refusal, plan.refused_at = exc, stage
    return plan


def _which_dates(
    plan: Plan,
    credentials: AwsWorkloadIdentityCredentials,
    config: PipelineConfig,
    window: list[date],
    dry_run: DryRun,
) -> None:
    """The dates the export would take: a window's restated and new ones, as the run's
    fingerprint step finds them; one date after checking that it has rows."""
    if config.lookback_days > 1:
        window_plan = fingerprint_step.fn(credentials, config, window, dry_run, False)
        plan.changes = window_plan.changes
        plan.export_days = tuple(window_plan.republished)
        if not window_plan.state.days:
            plan.notes.append("no record of earlier publishes: every date of the window is new")
        return
    # A run of one date learns that it is empty only from its export; the plan counts the rows
    # with the fingerprint query over the date column alone (a few bytes a row).
    client = credentials.get_bigquery_client(
        project=credentials.project, location=config.bigquery.location
    )
    day = window[-1]
    found = fingerprint_days(
        client,
        config.bigquery,
        day,
        day,
        numeric_columns=(),
        columns=(config.bigquery.date_column,),
    )
    plan.run_date_rows = found.days[day].rows if day in found.days else 0
    refuse_empty_run_date(found.days, day, config)
    plan.export_days = (day,)


def _dry_run_bytes(
    credentials: AwsWorkloadIdentityCredentials, config: PipelineConfig, days: tuple[date, ...]
) -> int:
    client = credentials.get_bigquery_client(
        project=credentials.project, location=config.bigquery.location
    )
    return dry_run_days(client, config.bigquery, days).estimated_bytes
