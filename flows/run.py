"""`python -m flows run`: one run of a pipeline's daily flow, in this process.

It is the deployments' flow (`flows.daily.daily_refresh`) with the catalog's config, so it
writes the same run report and history artifacts to the Prefect API the profile or the
environment points at, and loads its blocks by name from there. The outcome is read back from
that API: the run's state and its `run-report` artifact.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)
from prefect.client.schemas.sorting import ArtifactSort

from flows.catalog import Pipeline
from flows.daily import daily_refresh


@dataclass(frozen=True)
class RunOutcome:
    """How the run ended, as the Prefect API records it."""

    state: str  # Completed, Failed, Crashed, ...
    completed: bool
    flow_run_id: UUID | None
    flow_run_name: str
    report: str | None  # the run-report artifact's markdown; None if none was written
    error: BaseException | None  # what failed the run


def run_pipeline(
    pipeline: Pipeline,
    run_date: date,
    *,
    lookback_days: int | None = None,
    force: bool = False,
    accept_quality_failures: bool = False,
) -> RunOutcome:
    """Run the pipeline's daily flow for `run_date` here and read back what it recorded."""
    state = daily_refresh(
        run_date=run_date,
        config=pipeline.config,
        lookback_days=lookback_days,
        force=force,
        accept_quality_failures=accept_quality_failures,
        return_state=True,
    )
    run_id = state.state_details.flow_run_id
    error = None
    if not state.is_completed():
        result = state.result(raise_on_failure=False)
        error = result if isinstance(result, BaseException) else RuntimeError(state.message)
    name, report = "", None
    if run_id is not None:
        with get_client(sync_client=True) as client:
            name = client.read_flow_run(run_id).name
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(any_=["run-report"]),
                    flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]),
                ),
                sort=ArtifactSort.UPDATED_DESC,
                limit=1,
            )
        if artifacts and isinstance(artifacts[0].data, str):
            report = artifacts[0].data
    return RunOutcome(
        state.name or state.type.value, state.is_completed(), run_id, name, report, error
    )
