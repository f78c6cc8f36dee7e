"""Backfill: run a pipeline's per-date deployment for each day of a range or list, a few at a
time.

Each date is its own flow run of the pipeline's per-date deployment (on ECS: its own task), so
one date's failure or memory never touches another, and every date gets the same idempotent
publish as a daily run, with the config that deployment holds. `plan_backfill` decides those
runs (pure: dates, names, parameters); the flow starts them a few at a time and reports how
each ended.
"""

from __future__ import annotations

import contextvars
import dataclasses
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any, Final
from zoneinfo import ZoneInfo

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.runtime import flow_run
from pydantic import Field

from flows.catalog import FLOW_NAME as DAILY_FLOW
from flows.catalog import per_date_deployment
from flows.config import MAX_LOOKBACK_DAYS, PipelineConfig
from flows.dates import backfill_dates
from flows.errors import ConfigError, PipelineError

FLOW_NAME: Final[str] = "bq-view-to-tableau-backfill"
POLL_SECONDS: float = 10.0
"""How often a waiting backfill asks the API whether a child run has finished."""


@dataclass(frozen=True)
class DateRun:
    """One flow run of the per-date deployment, as the backfill starts it: one date, or a
    window of consecutive dates ending on `run_date` (one export and one Tableau batch)."""

    run_date: date
    name: str
    parameters: dict[str, Any]
    days: tuple[date, ...] = ()  # the dates it covers; () means just run_date

    @property
    def covers(self) -> str:
        """`YYYY-MM-DD`, or `first..last` for a window."""
        days = self.days or (self.run_date,)
        return days[0].isoformat() if len(days) == 1 else f"{days[0]}..{days[-1]}"


def plan_backfill(
    config: PipelineConfig,
    *,
    start: date | None,
    end: date | None,
    dates: list[date] | None,
    today: date,
    max_dates: int,
    window_days: int = 1,
    force: bool = False,
) -> list[DateRun]:
    """The runs a backfill starts, in date order: one per day of the range and the list, or,
    with `window_days` above 1, one per window of at most that many consecutive days.

    A day runs as `<pipeline>-<day>` with its `run_date` (the per-date deployment holds the
    config); a window as `<pipeline>-<first>..<last>` with `run_date` its last day and
    `lookback_days` its length, so it republishes only the dates BigQuery restated (all of them
    with `force`). A config without a catalog name uses the view's name.

    Raises:
        ConfigError: for a plan `backfill_dates` refuses, or windows with a mode that can only
            publish one date (before any run starts).
    """
    days = backfill_dates(
        start=start,
        end=end,
        dates=dates,
        today=today,
        earliest=config.earliest_date,
        max_dates=max_dates,
    )
    if window_days > 1 and config.tableau.mode != "replace_date":
        raise ConfigError(
            f"window_days={window_days} needs tableau.mode='replace_date' (a window is "
            f"republished by deleting and inserting its dates); mode {config.tableau.mode!r} "
            "publishes one date per run: leave window_days at 1"
        )
    prefix = config.name or config.bigquery.view.rsplit(".", 1)[-1]
    runs = []
    for window in _windows(days, window_days):
        params: dict[str, Any] = {"run_date": window[-1].isoformat()}
        if window_days > 1:
            params |= {"lookback_days": len(window), "force": force}
        run = DateRun(window[-1], "", params, tuple(window))
        runs.append(dataclasses.replace(run, name=f"{prefix}-{run.covers}"))
    return runs


def _windows(days: list[date], size: int) -> list[list[date]]:
    """Consecutive days grouped into windows of at most `size` days, oldest first."""
    windows: list[list[date]] = []
    for day in days:
        current = windows[-1] if windows else None
        if current and len(current) < size and (day - current[-1]).days == 1:
            current.append(day)
        else:
            windows.append([day])
    return windows


@dataclass(frozen=True)
class DateOutcome:
    """How one date's child run ended."""

    run_date: date
    state: str
    flow_run: str
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.state == "Completed"

    def as_row(self) -> dict[str, str]:
        return {
            "run_date": self.run_date.isoformat(),
            "state": self.state,
            "flow_run": self.flow_run,
            "message": self.message,
        }


def _run_name() -> str:
    """`backfill-<pipeline>-<first>..<last>` (or the dates themselves): the run says what it
    covers."""
    params = flow_run.parameters or {}
    covered = []
    if params.get("start") and params.get("end"):
        covered.append(f"{params['start']}..{params['end']}")
    listed = sorted(str(d) for d in params.get("dates") or [])
    if 0 < len(listed) <= 3:
        covered.append(",".join(listed))
    elif listed:
        covered.append(f"{len(listed)}-dates-{listed[0]}..{listed[-1]}")
    pipeline = [str(params["pipeline"])] if params.get("pipeline") else []
    name = "-".join(["backfill", *pipeline, *(["+".join(covered)] if covered else [])])
    return f"{name}-plan" if params.get("dry_run") else name


@flow(name=FLOW_NAME, flow_run_name=_run_name)
def backfill(
    pipeline: str,
    start: date | None = None,
    end: date | None = None,
    dates: list[date] | None = None,
    *,
    max_concurrency: Annotated[int, Field(ge=1, le=20)] = 3,
    fail_fast: bool = False,
    dry_run: bool = False,
    max_dates: Annotated[int, Field(ge=1, le=3660)] = 93,
    window_days: Annotated[int, Field(ge=1, le=MAX_LOOKBACK_DAYS)] = 1,
    force: bool = False,
) -> list[dict[str, Any]]:
    """Replace each given day in Tableau by running the pipeline's per-date deployment for it.

    Args:
        pipeline: The pipeline's name in the catalog (deployments/pipelines.yaml).
        start: First day of an inclusive range (give `end` too).
        end: Last day of the range.
        dates: Single days, instead of or besides the range.
        max_concurrency: Dates running at once (each its own ECS task).
        fail_fast: Stop starting dates after the first failure.
        dry_run: Only show the plan; run nothing.
        max_dates: Refuse larger backfills (a typo guard).
        window_days: Above 1, run consecutive dates as windows of at most this many days,
            each one run with one export and one Tableau batch of only the restated dates.
        force: With windows, republish every date, changed or not.
    """
    deployment_name, config = deployed_pipeline(pipeline)
    today = datetime.now(ZoneInfo(config.timezone)).date()
    runs = plan_backfill(
        config,
        start=start,
        end=end,
        dates=dates,
        today=today,
        max_dates=max_dates,
        window_days=window_days,
        force=force,
    )
    days = [run.run_date for run in runs]
    if dry_run:
        create_markdown_artifact(
            markdown=_plan_markdown(runs, deployment_name, max_concurrency),
            description="Backfill plan (dry run: nothing was run)",
        )
        return [{"run_date": r.run_date.isoformat(), "state": "Planned"} for r in runs]

    outcomes = _run_dates(runs, deployment_name, max_concurrency, fail_fast)
    create_table_artifact(
        table=[o.as_row() for o in sorted(outcomes, key=lambda o: o.run_date)],
        description=f"Backfill of {len(days)} date(s) through {deployment_name}",
    )
    failed = sorted(o.run_date.isoformat() for o in outcomes if not o.ok)
    not_run = sorted(set(days) - {o.run_date for o in outcomes})
    if failed or not_run:
        raise PipelineError(
            f"Backfill incomplete: {len(failed)} date(s) failed ({', '.join(failed) or 'none'})"
            + (f", {len(not_run)} not run after fail_fast" if not_run else "")
            + ". Fix the cause shown in those runs, then backfill just those dates with "
            "dates=[...]; dates that succeeded are already correct in Tableau."
        )
    return [o.as_row() for o in sorted(outcomes, key=lambda o: o.run_date)]


def deployed_pipeline(pipeline: str) -> tuple[str, PipelineConfig]:
    """The pipeline's per-date deployment and the config it runs with, as deployed.

    Raises:
        ConfigError: no such deployment (the message lists the deployed pipelines), or its
            config is not valid.
    """
    name = per_date_deployment(pipeline)
    with get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(name)
        except ObjectNotFound:
            deployed = client.read_deployments(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[DAILY_FLOW]))
            )
            pipelines = sorted(
                d.name.removesuffix("-per-date") for d in deployed if d.name.endswith("-per-date")
            )
            raise ConfigError(
                f"No deployment {name!r} for pipeline {pipeline!r}; deployed pipelines: "
                f"{', '.join(pipelines) or 'none'}. Fix the name, or add the pipeline to "
                "deployments/pipelines.yaml and deploy (deployments/deploy.sh).",
                retryable=False,
            ) from None
    try:
        return name, PipelineConfig.model_validate(deployment.parameters.get("config"))
    except ValueError as exc:
        raise ConfigError(
            f"Deployment {name!r} holds no valid pipeline config ({exc}); redeploy it from the "
            "catalog (deployments/deploy.sh).",
            retryable=False,
        ) from exc


def _run_dates(
    runs: list[DateRun],
    deployment_name: str,
    max_concurrency: int,
    fail_fast: bool,
) -> list[DateOutcome]:
    """Run the child flow runs, at most `max_concurrency` at once, updating a progress bar."""
    logger = get_run_logger()
    progress = create_progress_artifact(
        progress=0.0, description=f"Backfill of {len(runs)} date(s): dates finished"
    )
    outcomes: list[DateOutcome] = []
    with ThreadPoolExecutor(max_workers=max_concurrency) as pool:
        # Each thread gets a copy of the flow-run context, so children are linked as subflows.
        pending: set[Future[DateOutcome]] = {
            pool.submit(contextvars.copy_context().run, _run_one, deployment_name, run)
            for run in runs
        }
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                if future.cancelled():
                    continue
                outcome = future.result()
                outcomes.append(outcome)
                logger.info("%s: %s %s", outcome.run_date, outcome.state, outcome.message)
                update_progress_artifact(progress, progress=100.0 * len(outcomes) / len(runs))
                if fail_fast and not outcome.ok:
                    logger.error("fail_fast: not starting the dates still queued")
                    for queued in pending:
                        queued.cancel()
    return outcomes


def _run_one(deployment_name: str, run: DateRun) -> DateOutcome:
    try:
        child: FlowRun = run_deployment(
            deployment_name,
            parameters=run.parameters,
            flow_run_name=run.name,
            poll_interval=POLL_SECONDS,
            timeout=None,
            tags=["backfill"],
        )
    except Exception as exc:  # e.g. the deployment does not exist: report it for this date
        return DateOutcome(run.run_date, "NotStarted", "", f"{type(exc).__name__}: {exc}")
    state = child.state
    return DateOutcome(
        run.run_date,
        state.name if state else "Unknown",
        child.name,
        (state.message or "") if state and not state.is_completed() else "",
    )


def _plan_markdown(runs: list[DateRun], deployment_name: str, max_concurrency: int) -> str:
    dates = sum(len(r.days) or 1 for r in runs)
    if any(len(r.days) > 1 for r in runs):
        title = f"# Backfill plan: {dates} date(s) in {len(runs)} window(s)"
        each = "window", "replacing its restated dates in one Tableau batch"
    else:
        title, each = f"# Backfill plan: {dates} date(s)", ("date", "replacing that date's rows")
    lines = [
        title,
        "",
        f"Each {each[0]} runs as its own flow run of `{deployment_name}`, {max_concurrency} at "
        f"a time, {each[1]} in Tableau. Nothing was run (dry run).",
        "",
        "| # | run_date | covers |",
        "|---:|---|---|",
        *(f"| {i} | {r.run_date.isoformat()} | {r.covers} |" for i, r in enumerate(runs, 1)),
    ]
    return "\n".join(lines) + "\n"
