"""The restatement window end to end: only the days BigQuery restated reach Tableau, in one batch.

Every stand-in as in test_flows.py; BigQuery's rows are restated with DML on the table behind
the view, as an ad platform's late conversions would be.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from prefect.artifacts import Artifact

import flows.daily as daily
from flows.config import PipelineConfig
from flows.errors import ConfigError, PublishError
from flows.window import state_object
from standins.datamart import restate, seed_ad_datamart
from standins.stack import BUCKET, DATASOURCE, LocalStack
from tests.plugins.stack import StartStack

pytestmark = [pytest.mark.emulator, pytest.mark.hyper, pytest.mark.prefect]

DAY = date(2026, 11, 20)
WINDOW = tuple(DAY - timedelta(days=6 - i) for i in range(7))
RESTATED = (WINDOW[1], WINDOW[3], WINDOW[6])


@pytest.fixture(scope="module")
def stack(prefect_server: None, start_stack: StartStack) -> Iterator[LocalStack]:
    with start_stack(WINDOW, 30) as running:
        yield running


@pytest.fixture(autouse=True)
def seeded_mart(stack: LocalStack) -> Iterator[None]:
    """Each test's restatements are undone: the mart starts as seeded."""
    yield
    _restore(stack)


@pytest.fixture
def config(world: LocalStack, tmp_path: Path) -> PipelineConfig:
    return world.pipeline_config(work_dir=tmp_path / "work").model_copy(update={"lookback_days": 7})


def _restore(stack: LocalStack) -> None:
    seed_ad_datamart(stack.bigquery_client(), stack.project, "ads_mart", WINDOW, 30)


def _bigquery_days(stack: LocalStack) -> dict[date, tuple[int, Decimal, int]]:
    rows = stack.bigquery_client().query(
        f"SELECT date, COUNT(*) AS n, SUM(cost) AS cost, SUM(conversions) AS conversions "
        f"FROM `{stack.view}` GROUP BY date"
    )
    return {r["date"]: (r["n"], round(Decimal(r["cost"]), 4), r["conversions"]) for r in rows}


def _tableau_days(stack: LocalStack) -> dict[date, tuple[int, Decimal, int]]:
    rows = stack.tableau.store.query(
        stack.tableau.datasource(DATASOURCE).id,
        'SELECT "date", COUNT(*), SUM("cost"), SUM("conversions") FROM {table} GROUP BY "date"',
    )
    return {
        date(d.year, d.month, d.day): (int(n), round(Decimal(str(cost)), 4), int(conv))
        for d, n, cost, conv in rows
    }


def _batches(stack: LocalStack) -> int:
    """Update batches Tableau received (PATCH …/data)."""
    return sum(
        1 for r in stack.tableau.requests if r.method == "PATCH" and r.path.endswith("/data")
    )


def _report() -> str:
    report = Artifact.get("run-report")
    assert report is not None and isinstance(report.data, str)
    return report.data


def test_only_the_restated_days_are_exported_and_replaced_and_tableau_equals_bigquery(
    world: LocalStack, config: PipelineConfig
) -> None:
    first = daily.daily_refresh(config=config, run_date=DAY)
    assert first["republished"] == [d.isoformat() for d in WINDOW]  # nothing recorded: all new
    assert _tableau_days(world) == _bigquery_days(world)

    restate(world.bigquery_client(), world.source_table, RESTATED)
    batches = _batches(world)
    second = daily.daily_refresh(config=config, run_date=DAY)

    assert second["republished"] == [d.isoformat() for d in RESTATED]
    assert second["rows"] == 3 * 30  # only the restated days were exported and sent
    assert _batches(world) == batches + 1  # in one batch
    assert _tableau_days(world) == _bigquery_days(world)  # rows and values, all 7 days
    report = _report()
    assert "## Window: 3 of 7 date(s) republished" in report
    window = report.split("## Window", 1)[1]  # the quality table has lines per date too
    line = next(x for x in window.splitlines() if x.startswith(f"| {RESTATED[0].isoformat()}"))
    assert "| changed | 30 → 30 |" in line and "cost +" in line and "conversions +" in line
    assert f"| {WINDOW[0].isoformat()} | unchanged |" in report


def test_nothing_changed_means_no_export_and_no_batch_and_a_report_that_says_so(
    world: LocalStack, config: PipelineConfig
) -> None:
    daily.daily_refresh(config=config, run_date=DAY)
    batches, staged = _batches(world), world.staged_objects()

    result = daily.daily_refresh(config=config, run_date=DAY)

    assert result["republished"] == [] and result["job_id"] is None
    assert _batches(world) == batches
    assert world.staged_objects() == staged  # no export wrote anything
    report = _report()
    assert "0 of 7 date(s) to republish" in report
    assert "## Window: 0 of 7 date(s) republished" in report
    assert "| export" not in report


def test_a_failed_batch_changes_nothing_and_the_next_run_republishes(
    world: LocalStack, config: PipelineConfig
) -> None:
    daily.daily_refresh(config=config, run_date=DAY)
    before = _tableau_days(world)
    restate(world.bigquery_client(), world.source_table, RESTATED)
    world.tableau.fail_mid_batch()  # the batch's delete runs, then the job breaks off

    with pytest.raises(PublishError, match="failed"):
        daily.daily_refresh(config=config, run_date=DAY)

    assert world.tableau.discarded  # the delete had run ...
    assert _tableau_days(world) == before  # ... and nothing of the batch was kept
    again = daily.daily_refresh(config=config, run_date=DAY)
    assert again["republished"] == [d.isoformat() for d in RESTATED]  # the record was not moved
    assert _tableau_days(world) == _bigquery_days(world)


def test_force_republishes_the_whole_window(world: LocalStack, config: PipelineConfig) -> None:
    daily.daily_refresh(config=config, run_date=DAY)

    forced = daily.daily_refresh(config=config, run_date=DAY, force=True)

    assert forced["republished"] == [d.isoformat() for d in WINDOW]
    assert "| forced |" in _report()
    assert _tableau_days(world) == _bigquery_days(world)


def test_a_lost_record_republishes_the_whole_window(
    world: LocalStack, config: PipelineConfig
) -> None:
    daily.daily_refresh(config=config, run_date=DAY)
    world.gcs.client(world.project).bucket(BUCKET).blob(state_object(config)).delete()

    again = daily.daily_refresh(config=config, run_date=DAY)

    assert again["republished"] == [d.isoformat() for d in WINDOW]
    assert "no record of earlier publishes" in _report()
    assert _tableau_days(world) == _bigquery_days(world)


def test_the_window_is_clipped_at_the_earliest_date_and_never_reaches_the_future(
    world: LocalStack, config: PipelineConfig
) -> None:
    clipped = config.model_copy(update={"earliest_date": WINDOW[4]})

    result = daily.daily_refresh(config=clipped, run_date=DAY)

    assert result["republished"] == [d.isoformat() for d in WINDOW[4:]]
    assert set(world.tableau.rows_by_date(DATASOURCE)) == set(WINDOW[4:])
    with pytest.raises(ConfigError, match="is in the future"):
        tomorrow = datetime.now(ZoneInfo(config.timezone)).date() + timedelta(days=1)
        daily.daily_refresh(config=config, run_date=tomorrow)


def test_a_rerun_of_one_date_inside_a_published_window_stays_exact(
    world: LocalStack, config: PipelineConfig
) -> None:
    daily.daily_refresh(config=config, run_date=DAY)
    restate(world.bigquery_client(), world.source_table, (WINDOW[2],))

    daily.daily_refresh(config=config, run_date=WINDOW[2], lookback_days=1)
    assert _tableau_days(world) == _bigquery_days(world)

    # The record still holds the old fingerprint: the next window republishes that day once more.
    again = daily.daily_refresh(config=config, run_date=DAY)
    assert again["republished"] == [WINDOW[2].isoformat()]
    assert _tableau_days(world) == _bigquery_days(world)


def test_a_window_needs_the_replace_date_mode(world: LocalStack, config: PipelineConfig) -> None:
    append = config.model_copy(
        update={"lookback_days": 1, "tableau": config.tableau.model_copy(update={"mode": "append"})}
    )
    with pytest.raises(ConfigError, match=r"lookback_days=7 does not fit the config.*replace_date"):
        daily.daily_refresh(config=append, run_date=DAY, lookback_days=7)
    assert world.tableau.datasources == {}
