"""The daily flow: one day of a BigQuery view into a Tableau datasource, in four steps.

A preflight comes first: it refuses, before BigQuery bills a byte, what would fail later (the
dry run's bytes and types, the Tableau sign-in, project and published columns). Each step is a
task that retries only transient failures (`flows.errors.is_retryable`) and is never cached:
the files it leaves are local to one container.
"""

from __future__ import annotations

import logging
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final
from uuid import UUID
from zoneinfo import ZoneInfo

from prefect import Flow, flow, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import FlowRun, State
from prefect.runtime import flow_run
from prefect.tasks import Task, exponential_backoff

from blocks import AwsWorkloadIdentityCredentials, TableauServer
from flows.bigquery import DryRun, ExportManifest, dry_run_day, export_view, parquet_schema
from flows.config import PipelineConfig
from flows.dates import RunDate, check_run_date, default_run_date
from flows.errors import ConfigError, PipelineError, is_retryable, retry_if_transient
from flows.gcs import DownloadedExport, delete_export, download_export
from flows.hyper import HyperExtract, build_hyper, hyper_columns
from flows.publish_slot import publish_slot
from flows.report import RunReport, StageLine, human_bytes, publish_report
from flows.tableau import PublishResult, TargetCheck, check_target, publish

logger = logging.getLogger(__name__)

FLOW_NAME: Final[str] = "bq-view-to-tableau"
_LOCAL_STEP_TIMEOUT: Final[float] = 2 * 3600  # download and build of a very large day
_LOCK_WAIT_SECONDS: Final[float] = 3 * 3600  # publishes queued behind other dates (backfills)

_step = task(cache_policy=NO_CACHE, persist_result=False, retry_condition_fn=retry_if_transient)


@dataclass(frozen=True)
class Preflight:
    """Both ends checked before BigQuery bills a byte."""

    dry_run: DryRun
    target: TargetCheck


@_step(name="preflight")
def preflight_step(
    credentials: AwsWorkloadIdentityCredentials,
    server: TableauServer,
    config: PipelineConfig,
    day: date,
) -> Preflight:
    """Refuse now what would fail after the export: the view's dry run (bytes, date column,
    types) and the Tableau target (sign-in, project, the datasource's published columns)."""
    client = credentials.get_bigquery_client(
        project=credentials.project, location=config.bigquery.location
    )
    dry_run = dry_run_day(client, config.bigquery, day)
    columns = hyper_columns(
        parquet_schema(dry_run.schema), file_format_version=config.hyper.file_format_version
    )
    with _session_slot(server):
        target = check_target(
            server, config.tableau, columns, date_column=config.bigquery.date_column
        )
    return Preflight(dry_run, target)


@_step(name="export")
def export_step(
    credentials: AwsWorkloadIdentityCredentials,
    config: PipelineConfig,
    day: date,
    preflight: Preflight,
) -> ExportManifest:
    """Export the day's rows of the view to a GCS prefix unique to this attempt."""
    client = credentials.get_bigquery_client(
        project=credentials.project, location=config.bigquery.location
    )
    attempt = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    return export_view(
        client, config.bigquery, config.gcs, day, attempt=attempt, dry_run=preflight.dry_run
    )


@_step(name="download")
def download_step(
    credentials: AwsWorkloadIdentityCredentials,
    export: ExportManifest,
    work_dir: Path,
    config: PipelineConfig,
) -> DownloadedExport:
    """Download the attempt's Parquet files, checksum- and row-count-verified."""
    dest = work_dir / f"download-{uuid.uuid4().hex[:8]}"  # a retry never sees partial files
    dest.mkdir()
    client = credentials.get_cloud_storage_client(project=credentials.project)
    return download_export(client, export, dest, config.gcs)


@_step(name="build")
def build_step(
    files: DownloadedExport, export: ExportManifest, work_dir: Path, config: PipelineConfig
) -> HyperExtract:
    """Load the Parquet files into a Hyper extract with Hyper's own SQL."""
    return build_hyper(
        files.files,
        work_dir / "extract.hyper",
        config.hyper,
        expected_rows=files.rows,
        log_dir=work_dir,
        empty_schema=parquet_schema(export.schema),  # an empty day without files
    )


@_step(name="publish")
def publish_step(
    server: TableauServer, extract: HyperExtract, day: date, config: PipelineConfig
) -> PublishResult:
    """Publish the extract; runs sharing one personal access token take turns."""
    with _session_slot(server) as waited:
        result = publish(
            server, extract, day, config.tableau, date_column=config.bigquery.date_column
        )
    return replace(result, slot_wait_seconds=waited)


@contextmanager
def _session_slot(server: TableauServer) -> Iterator[float | None]:
    """The token's publish slot (one session per PAT); connected-app sessions need none."""
    if server.auth_method == "jwt":
        yield None
        return
    run_id = _current_run_id()
    with publish_slot(
        server.concurrency_key,
        timeout_seconds=_LOCK_WAIT_SECONDS,
        holder_run=run_id,
        holder_name=flow_run.name or "",
    ) as hold:
        yield hold.waited_seconds


def _run_name() -> str:
    """`<view>-<date>`: the run is named after the day it processes."""
    params = flow_run.parameters or {}
    config, run_date = params.get("config"), params.get("run_date")
    try:
        config = PipelineConfig.model_validate(config)
        day = run_date or default_run_date(flow_run.scheduled_start_time, config.timezone)
        return f"{config.bigquery.view.rsplit('.', 1)[-1]}-{day}"
    except Exception:  # a bad config fails the run itself with the real message
        return FLOW_NAME


def _report_invalid_parameters(flow: Flow, run: FlowRun, state: State) -> None:
    """A run whose parameters fail validation never enters the flow body: report it here."""
    if not (state.message or "").startswith("Validation of flow parameters failed"):
        return  # the body wrote its own report
    params = run.parameters or {}
    config = params.get("config") if isinstance(params.get("config"), dict) else {}
    view = (config.get("bigquery") or {}).get("view") or "(no view)"
    datasource = (config.get("tableau") or {}).get("datasource") or "unknown-datasource"
    report = RunReport(None, str(view), str(datasource), status="failed")
    report.error = (
        f"{state.message}\n\nThe run's parameters are not a valid pipeline config. Fix them in "
        "prefect.yaml (pipeline_config) and deploy again, or correct the custom run's values."
    )
    _leave_report(report, run.name, run.id)


@flow(name=FLOW_NAME, flow_run_name=_run_name, on_failure=[_report_invalid_parameters])
def daily_refresh(
    run_date: RunDate = None,  # first: in the UI a rerun is "pick a date, Submit"
    *,
    config: PipelineConfig,
) -> dict[str, Any]:
    """Add one day of the BigQuery view to the Tableau datasource (replacing that day).

    Args:
        run_date: The day to (re)publish; a custom run must pick it. Scheduled runs leave it
            out and take the day before their scheduled start, in the config's time zone.
        config: The pipeline: view, staging bucket, Tableau datasource and block names.
    """
    report = RunReport(
        run_date, config.bigquery.view, config.tableau.datasource, mode=config.tableau.mode
    )
    try:
        day = report.run_date = resolve_run_date(run_date, config)
        logger.info(
            "Replacing %s of %s in Tableau datasource %s/%s (mode %s)",
            day,
            config.bigquery.view,
            config.tableau.project,
            config.tableau.datasource,
            config.tableau.mode,
        )
        credentials = _load_block(AwsWorkloadIdentityCredentials, config.credentials_block)
        tableau = _load_block(TableauServer, config.tableau.server_block)
        preflight, export, download, build, publish_ = _with_retries(config)
        with _scratch_dir(config, day) as work_dir:
            checked = _timed(report, preflight, credentials, tableau, config, day)
            manifest = _timed(report, export, credentials, config, day, checked)
            files = _timed(report, download, credentials, manifest, work_dir, config)
            extract = _timed(report, build, files, manifest, work_dir, config)
            result = _timed(report, publish_, tableau, extract, day, config)
        if config.gcs.delete_after_publish:
            _delete_staging(credentials, manifest)
    except BaseException as exc:
        notes = "".join(f"\n{note}" for note in getattr(exc, "__notes__", ()))
        report.status, report.error = "failed", f"{type(exc).__name__}: {exc}{notes}"
        raise
    else:
        report.status = "succeeded"
    finally:
        _leave_report(report, flow_run.name, _current_run_id())
    return {
        "run_date": day.isoformat(),
        "rows": result.rows_sent,
        "datasource_id": result.datasource_id,
        "job_id": result.job_id,
        "stage_seconds": round(report.stage_seconds(), 3),
    }


def _current_run_id() -> UUID | None:
    run_id = flow_run.id
    return UUID(run_id) if run_id else None


def _leave_report(report: RunReport, run_name: str | None, run_id: UUID | None) -> None:
    """Write the run report; a failure to write it only warns, never hides the run's outcome."""
    try:
        publish_report(report, run_name, run_id)
    except Exception as exc:
        logger.warning("Could not write the run report artifacts: %s", exc)


def resolve_run_date(run_date: date | None, config: PipelineConfig) -> date:
    """The explicit date, else yesterday of the *scheduled* start; refused if out of bounds."""
    today = datetime.now(ZoneInfo(config.timezone)).date()
    if run_date is None:
        run_date = default_run_date(flow_run.scheduled_start_time, config.timezone)
    return check_run_date(run_date, today=today, earliest=config.earliest_date)


def _with_retries(config: PipelineConfig) -> tuple[Task, Task, Task, Task, Task]:
    """The preflight and the four steps with the configured retry policy and timeouts."""
    retry = config.retry
    options = {
        "retries": retry.retries,
        "retry_delay_seconds": exponential_backoff(backoff_factor=retry.backoff_seconds)
        if retry.retries
        else 0,
        "retry_jitter_factor": 0.5 if retry.backoff_seconds else None,
    }
    return (
        preflight_step.with_options(timeout_seconds=_LOCK_WAIT_SECONDS + 600, **options),
        export_step.with_options(
            timeout_seconds=config.bigquery.job_timeout_seconds + 300, **options
        ),
        download_step.with_options(timeout_seconds=_LOCAL_STEP_TIMEOUT, **options),
        build_step.with_options(timeout_seconds=_LOCAL_STEP_TIMEOUT, **options),
        publish_step.with_options(
            timeout_seconds=config.tableau.job_timeout_seconds + _LOCK_WAIT_SECONDS, **options
        ),
    )


def _timed[R](report: RunReport, step: Task[..., R], *args: Any) -> R:
    """Run a step and add its line (rows, size, duration) to the report."""
    started = time.perf_counter()
    try:
        result = step(*args)
    except Exception as exc:
        if is_retryable(exc) and step.retries:  # it escaped the task: the retries are spent
            _say_retries_are_spent(exc, step)
        raise
    report.stages.append(_describe(result, time.perf_counter() - started))
    if isinstance(result, PublishResult):
        report.datasource_url, report.job_id = result.url, result.job_id
    return result


def _say_retries_are_spent(exc: Exception, step: Task[..., Any]) -> None:
    """Make the final error say that retrying did not help, and what to check next."""
    verdict = (
        f"The {step.name} step was retried {step.retries} time(s) (retry.retries) and failed "
        "each time: the cause persisted. Check that system's status or limits, then rerun the "
        "date; raise retry.retries or retry.backoff_seconds if outages there last longer."
    )
    logger.error(verdict)
    if isinstance(exc, PipelineError):
        exc.args = (f"{exc} {verdict}",)  # what the run's state, report and UI show
    else:
        exc.add_note(verdict)


def _describe(result: object, seconds: float) -> StageLine:
    match result:
        case Preflight():
            target = result.target
            return StageLine(
                "preflight", seconds, None,
                f"{human_bytes(result.dry_run.estimated_bytes)} to scan",
                f"dry run: {len(result.dry_run.schema)} columns; Tableau REST "
                f"{target.rest_version} as {target.signed_in_as}: "
                f"`{target.project_path}/{target.datasource_name}` {target.verdict}",
            )  # fmt: skip
        case ExportManifest():
            return StageLine(
                "export",
                seconds,
                result.rows,
                f"{human_bytes(result.bytes_processed)} processed",
                f"job `{result.job_id}`, {result.files or '?'} file(s) under `{result.uri_prefix}`",
            )
        case DownloadedExport():
            return StageLine(
                "download", seconds, result.rows, human_bytes(result.bytes),
                f"{len(result.files)} file(s), CRC32C verified",
            )  # fmt: skip
        case HyperExtract():
            return StageLine(
                "build", seconds, result.rows, human_bytes(result.path.stat().st_size),
                f"{len(result.columns)} columns, file format v{result.file_format_version}",
            )  # fmt: skip
        case PublishResult():
            action = "created" if result.created else result.mode
            slot = (
                "connected app: no publish slot"
                if result.slot_wait_seconds is None
                else f"waited {result.slot_wait_seconds:.1f} s for the token's publish slot"
            )
            return StageLine(
                "publish", seconds, result.rows_sent, "",
                f"{action} `{result.project_path}/{result.datasource_name}`; {slot}",
            )  # fmt: skip
    raise TypeError(f"no report line for {type(result).__name__}")


def _load_block[B: (AwsWorkloadIdentityCredentials, TableauServer)](kind: type[B], name: str) -> B:
    try:
        return kind.load(name)
    except ValueError as exc:
        raise ConfigError(
            f"No {kind.__name__} block named {name!r}: {exc}. Save it first "
            "(see deployments/README.md) or fix the name in the pipeline config."
        ) from exc


@contextmanager
def _scratch_dir(config: PipelineConfig, day: date) -> Iterator[Path]:
    """The run's work dir, removed at the end whatever happens."""
    if config.work_dir is not None:
        config.work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(
        prefix=f"bq-tableau-{day.isoformat()}-", dir=config.work_dir, ignore_cleanup_errors=True
    ) as path:
        yield Path(path)


def _delete_staging(credentials: AwsWorkloadIdentityCredentials, manifest: ExportManifest) -> None:
    """Remove the attempt's files from GCS; a failure here only warns (Tableau has the day)."""
    try:
        client = credentials.get_cloud_storage_client(project=credentials.project)
        delete_export(client, manifest)  # logs what it deleted
    except Exception as exc:
        logger.warning(
            "Could not delete %s (%s); a bucket lifecycle rule will.", manifest.uri_prefix, exc
        )
