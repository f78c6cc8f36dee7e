"""The daily flow: one day of a BigQuery view into a Tableau datasource, in four steps.

A preflight comes first: it refuses, before BigQuery bills a byte, what would fail later (the
dry run's bytes and types, the Tableau sign-in, project and published columns). The steps are
the tasks of `flows.steps`, with the config's retries; each adds its line to the run report,
which is written however the run ends.
"""

from __future__ import annotations

import logging
from typing import Any, Final
from uuid import UUID

from prefect import flow
from prefect.runtime import flow_run

from blocks import AwsWorkloadIdentityCredentials, TableauServer
from flows.config import PipelineConfig
from flows.dates import RunDate, default_run_date, resolve_run_date
from flows.gcs import delete_staging
from flows.report import RunReport, kept_report, report_invalid_parameters
from flows.steps import Steps, load_block, scratch_dir

logger = logging.getLogger(__name__)

FLOW_NAME: Final[str] = "bq-view-to-tableau"


def _run_name() -> str:
    """`<view>-<date>`: the run is named after the day it processes."""
    params = flow_run.parameters or {}
    try:
        config = PipelineConfig.model_validate(params.get("config"))
        day = params.get("run_date") or default_run_date(
            flow_run.scheduled_start_time, config.timezone
        )
        return f"{config.bigquery.view.rsplit('.', 1)[-1]}-{day}"
    except Exception:  # a bad config fails the run itself with the real message
        return FLOW_NAME


@flow(name=FLOW_NAME, flow_run_name=_run_name, on_failure=[report_invalid_parameters])
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
    with kept_report(report, flow_run.name, _current_run_id()):
        day = report.run_date = resolve_run_date(
            run_date, flow_run.scheduled_start_time, config.timezone, config.earliest_date
        )
        logger.info(
            "Replacing %s of %s in Tableau datasource %s/%s (mode %s)",
            day, config.bigquery.view, config.tableau.project, config.tableau.datasource,
            config.tableau.mode,
        )  # fmt: skip
        credentials = load_block(AwsWorkloadIdentityCredentials, config.credentials_block)
        tableau = load_block(TableauServer, config.tableau.server_block)
        step = Steps.configured(config, report)
        with scratch_dir(config, day) as work_dir:
            dry_run, _ = step.preflight(credentials, tableau, config, day)
            export = step.export(credentials, config, day, dry_run)
            files = step.download(credentials, export, work_dir, config)
            extract = step.build(files, export, work_dir, config)
            result = step.publish(tableau, extract, day, config)
        if config.gcs.delete_after_publish:
            delete_staging(credentials.get_cloud_storage_client(credentials.project), export)
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
