"""PLACEHOLDER so prefect.yaml can deploy it; the lead replaces it with the real backfill flow."""

from __future__ import annotations

from datetime import date

from prefect import flow

from flows.config import PipelineConfig


@flow(name="bq-view-to-tableau-backfill")
def backfill(
    config: PipelineConfig,
    start: date | None = None,
    end: date | None = None,
    dates: list[date] | None = None,
    deployment_name: str = "bq-view-to-tableau/per-date",
    max_concurrency: int = 3,
    fail_fast: bool = False,
    dry_run: bool = False,
    max_dates: int = 93,
) -> None:
    """Run the per-date deployment once for each date of a range or list."""
    raise NotImplementedError
