"""The daily flow's steps: the preflight, the four tasks and the quality checks, with the
config's retry policy and timeouts, each call timed into the run report.

Each task retries only transient failures (`flows.errors.is_retryable`) and is never cached:
the files it leaves are local to one container. The steps' modules (bigquery, gcs, hyper,
tableau) are plain library code; this module makes them Prefect tasks.
"""

from __future__ import annotations

import logging
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path
from typing import Any, Final

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.tasks import exponential_backoff

from blocks import AwsWorkloadIdentityCredentials, TableauServer
from flows import progress
from flows.bigquery import (
    DayFingerprint,
    DryRun,
    ExportManifest,
    Fingerprints,
    dry_run_days,
    export_view,
    fingerprint_days,
    numeric_columns_of,
    parquet_schema,
)
from flows.config import PipelineConfig, RetryConfig
from flows.errors import (
    ConfigError,
    ExportError,
    is_retryable,
    note_retries_spent,
    retry_if_transient,
)
from flows.gcs import DownloadedExport, download_export, read_record, write_record
from flows.hyper import HyperExtract, build_hyper, hyper_columns, profile_by_date
from flows.quality import (
    History,
    QualityResult,
    check_columns,
    columns_checked,
    evaluate,
)
from flows.report import RunReport, read_history_rows
from flows.tableau import SLOT_WAIT_SECONDS, PublishResult, TargetCheck, check_target, publish
from flows.window import (
    PublishedState,
    WindowPlan,
    fingerprint_kind,
    plan_window,
    state_object,
)

logger = logging.getLogger(__name__)

LOCAL_STEP_TIMEOUT: Final[float] = 2 * 3600  # download and build of a very large day


_task = task(cache_policy=NO_CACHE, persist_result=False, retry_condition_fn=retry_if_transient)


@_task(name="preflight")
def preflight_step(
    credentials: AwsWorkloadIdentityCredentials,
    tableau: TableauServer,
    config: PipelineConfig,
    window: list[date],
) -> tuple[DryRun, TargetCheck]:
    """Refuse now what would fail after the export: the view's dry run over the window (bytes,
    date column, types) and the Tableau target (sign-in, project, the published columns)."""
    return preflight(credentials, tableau, config, window)


def preflight(
    credentials: AwsWorkloadIdentityCredentials,
    tableau: TableauServer,
    config: PipelineConfig,
    window: list[date],
    *,
    plan_only: bool = False,
) -> tuple[DryRun, TargetCheck]:
    """The preflight's checks (`preflight_step`; `python -m flows plan` with `plan_only`, which
    reports a Tableau project a run would create instead of creating it)."""
    client = credentials.get_bigquery_client(
        project=credentials.project, location=config.bigquery.location
    )
    dry_run = dry_run_days(client, config.bigquery, window)
    if problems := check_columns(config.quality, dry_run.schema):
        raise ConfigError(
            f"The quality checks name columns {config.bigquery.view} cannot give: "
            + "; ".join(problems)
            + ". Fix quality in the pipeline's config (deployments/pipelines.yaml); nothing "
            "was exported.",
            retryable=False,
        )
    columns = hyper_columns(
        parquet_schema(dry_run.schema), file_format_version=config.hyper.file_format_version
    )
    target = check_target(
        tableau,
        config.tableau,
        columns,
        date_column=config.bigquery.date_column,
        plan_only=plan_only,
    )
    return dry_run, target


@_task(name="fingerprint")
def fingerprint_step(
    credentials: AwsWorkloadIdentityCredentials,
    config: PipelineConfig,
    window: list[date],
    dry_run: DryRun,
    force: bool,
) -> WindowPlan:
    """Fingerprint every date of the window in one query and compare each with the record of
    what was published: only new and restated dates go on (all of them when forced)."""
    state = read_published(credentials, config)
    found = fingerprint(credentials, config, window, dry_run.schema)
    run_date = window[-1]
    refuse_empty_run_date(found.days, run_date, config)
    changes = plan_window(window, found.days, state, force=force)
    plan = WindowPlan(changes, state, force, found.job_id, found.bytes_processed)
    logger.info(
        "Window %s..%s of %s: %d date(s) to republish (%s), %d unchanged; record %s",
        window[0], run_date, config.bigquery.view, len(plan.republished),
        ", ".join(d.isoformat() for d in plan.republished) or "none",
        len(window) - len(plan.republished),
        "lost or new: every date is new" if not state.days else "read",
    )  # fmt: skip
    return plan


def read_published(
    credentials: AwsWorkloadIdentityCredentials, config: PipelineConfig
) -> PublishedState:
    """The record of what was published per date (empty when lost, new, or of another
    fingerprint kind)."""
    storage = credentials.get_cloud_storage_client(project=credentials.project)
    payload, generation = read_record(storage, config.gcs.bucket, state_object(config))
    return PublishedState.parse(payload, fingerprint_kind(config), generation)


def fingerprint(
    credentials: AwsWorkloadIdentityCredentials,
    config: PipelineConfig,
    dates: Sequence[date],
    schema: Sequence[tuple[str, str]],
) -> Fingerprints:
    """One query's fingerprints of `dates[0]..dates[-1]`, hashed as the record's are
    (`bigquery.fingerprint_columns`), with the sums of the view's numeric columns (`schema`)."""
    client = credentials.get_bigquery_client(
        project=credentials.project, location=config.bigquery.location
    )
    return fingerprint_days(
        client,
        config.bigquery,
        dates[0],
        dates[-1],
        numeric_columns=numeric_columns_of(schema, date_column=config.bigquery.date_column),
        columns=config.bigquery.fingerprint_columns or None,
    )


def refuse_empty_run_date(
    found: Mapping[date, DayFingerprint], run_date: date, config: PipelineConfig
) -> None:
    """Under `gcs.empty_day=fail`, refuse a run date the fingerprints found no rows for.

    Raises:
        ExportError: not retryable; the run date has no rows.
    """
    if run_date not in found and config.gcs.empty_day == "fail":
        raise ExportError(
            f"the data mart has no rows for {run_date.isoformat()} in {config.bigquery.view} — "
            "usually it has not been refreshed yet; rerun later or set gcs.empty_day=allow",
            retryable=False,
        )


@_task(name="export")
def export_step(
    credentials: AwsWorkloadIdentityCredentials,
    config: PipelineConfig,
    days: list[date],
    dry_run: DryRun | None,
) -> ExportManifest:
    """Export the rows of these dates of the view to a GCS prefix unique to this attempt
    (`dry_run`: the preflight's, when it covered exactly these dates; else made here)."""
    client = credentials.get_bigquery_client(
        project=credentials.project, location=config.bigquery.location
    )
    attempt = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    return export_view(client, config.bigquery, config.gcs, days, attempt=attempt, dry_run=dry_run)


@_task(name="download")
def download_step(
    credentials: AwsWorkloadIdentityCredentials,
    export: ExportManifest,
    work_dir: Path,
    config: PipelineConfig,
    *,
    empty_days_judged: bool = False,
) -> DownloadedExport:
    """Download the attempt's Parquet files, checksum- and row-count-verified.

    `empty_days_judged`: the fingerprints already applied `gcs.empty_day` to the run date, and
    the other dates of a window may be restated to nothing (their rows are deleted).
    """
    dest = work_dir / f"download-{uuid.uuid4().hex[:8]}"  # a retry never sees partial files
    dest.mkdir()
    client = credentials.get_cloud_storage_client(project=credentials.project)
    gcs = config.gcs.model_copy(update={"empty_day": "allow"}) if empty_days_judged else config.gcs
    return download_export(client, export, dest, gcs)


@_task(name="build")
def build_step(
    files: DownloadedExport, export: ExportManifest, work_dir: Path, config: PipelineConfig
) -> HyperExtract:
    """Load the Parquet files into a Hyper extract with Hyper's own SQL."""
    return build_hyper(
        files.files,
        work_dir / "extract.hyper",
        config.hyper,
        schema=files.schema,  # the download's footer pass, handed on
        file_rows=files.rows,
        exported_rows=export.rows,  # BigQuery's own count
        log_dir=work_dir,
    )


@_task(name="quality")
def quality_step(
    extract: HyperExtract,
    days: list[date],
    config: PipelineConfig,
    plan: WindowPlan | None,
    *,
    accept_failures: bool = False,
) -> QualityResult:
    """Check the built extract's dates against the published history, before anything is
    published."""
    history = read_history(config, plan)
    sums, nulls, newest = columns_checked(config.quality)
    profiles = profile_by_date(
        extract.path,
        config.bigquery.date_column,
        sums=sums,
        nulls=nulls,
        newest=newest,
        log_dir=extract.path.parent,
    )
    run_date = max(days)
    results = evaluate(
        profiles,
        days,
        history,
        config.quality,
        run_date=run_date,
        now=datetime.now(UTC),
        timezone=config.timezone,
    )
    checked = QualityResult(
        results,
        history.source,
        accepted=accept_failures,
        run_date_sums=dict(profiles[run_date].sums) if run_date in profiles else {},
        history_problem=history.problem,
    )
    for result in results:
        log = logger.warning if result.verdict in ("fail", "warn") else logger.info
        log("Quality %s: %s", result.verdict, result.line())
    if checked.failed and accept_failures:
        logger.warning(
            "%d quality failure(s) accepted by accept_quality_failures=true: publishing",
            len(checked.failed),
        )
    return checked


def read_history(config: PipelineConfig, plan: WindowPlan | None) -> History:
    """The published days the checks compare with: the record (a window's run read it
    already) or else the datasource's history table."""
    if plan is not None:
        return History.from_record(plan.state)
    try:
        rows = read_history_rows(config.tableau.datasource)
    except Exception as exc:  # the Prefect API's artifacts: a gap in history, not in the day
        return History.unavailable(f"the history table could not be read ({exc})")
    return History.from_history_table(rows)


@_task(name="publish")
def publish_step(
    tableau: TableauServer, extract: HyperExtract, days: list[date], config: PipelineConfig
) -> PublishResult:
    """Replace these dates with the extract's rows in one batch; runs sharing one personal
    access token take turns."""
    return publish(tableau, extract, days, config.tableau, date_column=config.bigquery.date_column)


@_task(name="record")
def record_step(
    credentials: AwsWorkloadIdentityCredentials, config: PipelineConfig, plan: WindowPlan
) -> PublishedState:
    """Record the republished dates' fingerprints, now that Tableau accepted the batch."""
    recorded = plan.recorded_after_publish()
    ours = {d: recorded.days[d] for d in plan.republished}

    def merge(theirs: dict[str, Any] | None) -> dict[str, Any]:
        other = PublishedState.parse(theirs, recorded.kind, 0)
        return other.with_published(ours).payload(run_id=flow_run.id)

    storage = credentials.get_cloud_storage_client(project=credentials.project)
    write_record(
        storage,
        config.gcs.bucket,
        state_object(config),
        recorded.payload(run_id=flow_run.id),
        generation=plan.state.generation,
        merge=merge,
    )
    return recorded


@dataclass(frozen=True)
class Steps:
    """The preflight and the four steps with the config's retry policy and timeouts, each call
    adding its line to the run report."""

    preflight: TimedStep[..., tuple[DryRun, TargetCheck]]
    fingerprint: TimedStep[..., WindowPlan]
    export: TimedStep[..., ExportManifest]
    download: TimedStep[..., DownloadedExport]
    build: TimedStep[..., HyperExtract]
    check: TimedStep[..., QualityResult]
    publish: TimedStep[..., PublishResult]
    record: TimedStep[..., PublishedState]

    @classmethod
    def configured(cls, config: PipelineConfig, report: RunReport) -> Steps:
        step = partial(with_retries, retry=config.retry, report=report)
        tableau_seconds = config.tableau.job_timeout_seconds + SLOT_WAIT_SECONDS
        bigquery_seconds = config.bigquery.job_timeout_seconds + 300
        return cls(
            step(preflight_step, timeout_seconds=SLOT_WAIT_SECONDS + 600),
            step(fingerprint_step, timeout_seconds=bigquery_seconds),
            step(export_step, timeout_seconds=bigquery_seconds),
            step(download_step, timeout_seconds=LOCAL_STEP_TIMEOUT),
            step(build_step, timeout_seconds=LOCAL_STEP_TIMEOUT),
            step(quality_step, timeout_seconds=LOCAL_STEP_TIMEOUT),
            step(publish_step, timeout_seconds=tableau_seconds),
            step(record_step, timeout_seconds=600),
        )


def with_retries[**P, R](
    step: Task[P, R], retry: RetryConfig, report: RunReport, *, timeout_seconds: float
) -> TimedStep[P, R]:
    """`step` with the config's retry policy and a timeout, adding its line to the report."""
    configured = step.with_options(
        retries=retry.retries,
        retry_delay_seconds=exponential_backoff(backoff_factor=retry.backoff_seconds)
        if retry.retries
        else 0,
        retry_jitter_factor=0.5 if retry.backoff_seconds else None,
        timeout_seconds=timeout_seconds,
    )
    return TimedStep(configured, report)


class TimedStep[**P, R]:
    """Calls a task and adds its line (rows, size, duration) to the run report."""

    def __init__(self, step: Task[P, R], report: RunReport) -> None:
        self.step, self.report = step, report

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        started = time.perf_counter()
        with progress.step(self.step.name):  # the command line's display, if one listens
            try:
                result = self.step(*args, **kwargs)
            except Exception as exc:
                if is_retryable(exc) and self.step.retries:  # it escaped the task: retries spent
                    note_retries_spent(exc, self.step.name, self.step.retries)
                raise
        self.report.add(result, time.perf_counter() - started)
        return result


def load_block[B: (AwsWorkloadIdentityCredentials, TableauServer)](kind: type[B], name: str) -> B:
    """The saved block `name`, or a ConfigError that says to save it."""
    try:
        return kind.load(name)
    except ValueError as exc:
        raise ConfigError(
            f"No {kind.__name__} block named {name!r}: {exc}. Save it first "
            "(see deployments/README.md) or fix the name in the pipeline config."
        ) from exc


@contextmanager
def scratch_dir(config: PipelineConfig, day: date) -> Iterator[Path]:
    """The run's work dir, removed at the end whatever happens."""
    if config.work_dir is not None:
        config.work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(
        prefix=f"bq-tableau-{day.isoformat()}-", dir=config.work_dir, ignore_cleanup_errors=True
    ) as path:
        yield Path(path)
