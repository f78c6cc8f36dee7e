"""The daily flow: one day of a BigQuery view into a Tableau datasource, in four steps.

A preflight comes first: it refuses, before BigQuery bills a byte, what would fail later (the
dry run's bytes and types, the Tableau sign-in, project and published columns). The steps are
the tasks of `flows.steps`, with the config's retries; each adds its line to the run report,
which is written however the run ends.
"""

from __future__ import annotations

import logging
from datetime import date
from typing import Any
from uuid import UUID

from prefect import flow
from prefect.runtime import flow_run

from blocks import AwsWorkloadIdentityCredentials, TableauServer
from flows.catalog import FLOW_NAME
from flows.config import LookbackDays, PipelineConfig, with_lookback
from flows.dates import RunDate, default_run_date, resolve_run_date
from flows.gcs import delete_staging
from flows.quality import emit_warned
from flows.report import RunReport, kept_report, report_invalid_parameters
from flows.steps import Steps, load_block, scratch_dir
from flows.tableau import PublishResult
from flows.window import window_dates

logger = logging.getLogger(__name__)


def _run_name() -> str:
    """`<pipeline>-<date>` (`<view>-<date>` without a catalog name): the run is named after the
    day it processes."""
    params = flow_run.parameters or {}
    try:
        config = PipelineConfig.model_validate(params.get("config"))
        day = params.get("run_date") or default_run_date(
            flow_run.scheduled_start_time, config.timezone
        )
        return f"{config.name or config.bigquery.view.rsplit('.', 1)[-1]}-{day}"
    except Exception:  # a bad config fails the run itself with the real message
        return FLOW_NAME


@flow(name=FLOW_NAME, flow_run_name=_run_name, on_failure=[report_invalid_parameters])
def daily_refresh(
    run_date: RunDate = None,  # first: in the UI a rerun is "pick a date, Submit"
    *,
    config: PipelineConfig,
    lookback_days: LookbackDays = None,
    force: bool = False,
    accept_quality_failures: bool = False,
) -> dict[str, Any]:
    """Replace one day (or the restated days of a window ending on it) in the Tableau
    datasource with the BigQuery view's rows.

    Args:
        run_date: The day to (re)publish; a custom run must pick it. Scheduled runs leave it
            out and take the day before their scheduled start, in the config's time zone.
        config: The pipeline: view, staging bucket, Tableau datasource and block names.
        lookback_days: Days covered, ending on run_date; empty: the config's lookback_days.
            Above 1, only the dates BigQuery restated since they were published are replaced.
        force: Republish every date of the window, changed or not.
        accept_quality_failures: Publish although a quality check set to `fail` did not pass
            (a real change, confirmed); the report records the acceptance.
    """
    report = RunReport(
        run_date, config.bigquery.view, config.tableau.datasource, mode=config.tableau.mode
    )
    with kept_report(report, flow_run.name, _current_run_id()):
        config = with_lookback(config, lookback_days)
        day = report.run_date = resolve_run_date(
            run_date, flow_run.scheduled_start_time, config.timezone, config.earliest_date
        )
        window = window_dates(day, config.lookback_days, config.earliest_date)
        logger.info(
            "Replacing %s of %s in Tableau datasource %s/%s (mode %s)",
            f"{window[0]}..{day}" if len(window) > 1 else day, config.bigquery.view,
            config.tableau.project, config.tableau.datasource, config.tableau.mode,
        )  # fmt: skip
        credentials = load_block(AwsWorkloadIdentityCredentials, config.credentials_block)
        tableau = load_block(TableauServer, config.tableau.server_block)
        step = Steps.configured(config, report)
        with scratch_dir(config, day) as work_dir:
            dry_run, target = step.preflight(credentials, tableau, config, window)
            plan = None
            if config.lookback_days > 1:  # one day is published without a fingerprint
                plan = step.fingerprint(credentials, config, window, dry_run, force)
                if not plan.republished:
                    return _summary(day, report, datasource_id=target.datasource_id)
            days = plan.republished if plan else [day]
            export = step.export(credentials, config, days, dry_run if days == window else None)
            files = step.download(
                credentials, export, work_dir, config, empty_days_judged=bool(plan)
            )
            extract = step.build(files, export, work_dir, config)
            checked = step.check(
                extract, days, config, plan, accept_failures=accept_quality_failures
            )
            checked.raise_for_failures(config)  # a day unlike the usual ones publishes nothing
            result = step.publish(tableau, extract, days, config)
            if checked.warned:  # published, with a check set to warn: the alert's event
                emit_warned(checked, config, day)
            if plan:
                step.record(credentials, config, plan)
        if config.gcs.delete_after_publish:
            delete_staging(credentials.get_cloud_storage_client(credentials.project), export)
    return _summary(day, report, result.datasource_id, result, days)


def _summary(
    day: date,
    report: RunReport,
    datasource_id: str | None,
    result: PublishResult | None = None,
    days: list[date] | None = None,
) -> dict[str, Any]:
    """The run's result, as the API and a parent backfill read it."""
    return {
        "run_date": day.isoformat(),
        "republished": [d.isoformat() for d in days or ()],
        "rows": result.rows_sent if result else 0,
        "datasource_id": datasource_id,
        "job_id": result.job_id if result else None,
        "stage_seconds": round(report.stage_seconds(), 3),
    }


def _current_run_id() -> UUID | None:
    run_id = flow_run.id
    return UUID(run_id) if run_id else None
