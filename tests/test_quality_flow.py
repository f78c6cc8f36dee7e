"""The quality checks in the daily flow, on every stand-in: a day unlike the published ones never
reaches Tableau unless a rerun accepts it, and every check lands in the run report.

The published history is a first run's window (the record of fingerprints) or single-day runs
(the history table); the day under test is then broken in BigQuery with DML on the table behind
the view, as an upstream failure would break it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from prefect.artifacts import Artifact
from prefect.client.orchestration import get_client

import flows.daily as daily
from flows.config import PipelineConfig
from flows.errors import ConfigError, QualityError
from flows.quality import WARNED_EVENT
from standins.datamart import seed_ad_datamart
from standins.demo import run_logs
from standins.stack import DATASOURCE, LocalStack
from tests.plugins.stack import StartStack

pytestmark = [pytest.mark.emulator, pytest.mark.hyper, pytest.mark.prefect]

ROWS_PER_DAY = 30  # 3 devices: keeping one is exactly a third of the rows
DAY = date(2026, 11, 20)
HISTORY = tuple(DAY - timedelta(days=7 - i) for i in range(7))  # the 7 days before DAY
SEEDED = (*HISTORY, DAY)


@pytest.fixture(scope="module")
def stack(prefect_server: None, start_stack: StartStack) -> Iterator[LocalStack]:
    with start_stack(SEEDED, ROWS_PER_DAY) as running:
        yield running


@pytest.fixture(autouse=True)
def seeded_mart(stack: LocalStack) -> Iterator[None]:
    yield
    seed_ad_datamart(stack.bigquery_client(), stack.project, "ads_mart", SEEDED, ROWS_PER_DAY)


def _config(world: LocalStack, tmp_path: Path, **quality: Any) -> PipelineConfig:
    base = world.pipeline_config(work_dir=tmp_path / "work").model_dump(mode="json")
    return PipelineConfig.model_validate(
        {
            **base,
            "name": "ads",
            "lookback_days": 7,
            "quality": {
                "history_days": 7,
                "min_history_days": 5,
                "null_rate": {"columns": {"conversions": 0.25}},  # 1 in 6 is NULL as seeded
                "sums": {"columns": ["cost"]},
                **quality,
            },
        }
    )


@pytest.fixture
def config(world: LocalStack, tmp_path: Path) -> PipelineConfig:
    return _config(world, tmp_path)


@pytest.fixture
def published(world: LocalStack, config: PipelineConfig) -> None:
    """The 7 days before DAY, published by one window run: the record holds their rows and
    sums."""
    daily.daily_refresh(config=config, run_date=HISTORY[-1])
    assert set(_tableau_rows(world)) == set(HISTORY)


def _tableau_rows(stack: LocalStack) -> dict[date, int]:
    rows = stack.tableau.store.query(
        stack.tableau.datasource(DATASOURCE).id,
        'SELECT "date", COUNT(*) FROM {table} GROUP BY "date"',
    )
    return {date(d.year, d.month, d.day): int(n) for d, n in rows}


def _break_day(stack: LocalStack, sql: str) -> None:
    stack.bigquery_client().query(
        sql.format(table=stack.source_table, day=f"DATE '{DAY.isoformat()}'")
    ).result()


def _report() -> str:
    report = Artifact.get("run-report")
    assert report is not None and isinstance(report.data, str)
    return report.data


def _quality_row(report: str, label: str) -> str:
    return next(
        line for line in report.splitlines() if line.startswith(f"| {DAY.isoformat()} | {label} |")
    )


def test_the_usual_day_passes_and_publishes_with_every_check_in_the_report(
    world: LocalStack, config: PipelineConfig, published: None
) -> None:
    result = daily.daily_refresh(config=config, run_date=DAY)

    assert result["republished"] == [DAY.isoformat()]
    assert _tableau_rows(world)[DAY] == ROWS_PER_DAY
    report = _report()
    assert "## Quality checks" in report
    assert "History: the record of published fingerprints." in report
    row_count = _quality_row(report, "row_count")
    assert "| 30 rows | 15..60 | ✅ pass |" in row_count
    assert "the median 30 of 7 published days" in row_count
    assert "✅ pass" in _quality_row(report, "null_rate(conversions)")
    assert "✅ pass" in _quality_row(report, "sums(cost)")
    assert "## Warnings" not in report


@pytest.mark.parametrize(
    ("broken", "label", "observed"),
    [
        pytest.param(
            "DELETE FROM `{table}` WHERE date = {day} AND device != 'desktop'",
            "row_count", "10 rows", id="a-third-of-the-rows",
        ),
        pytest.param(
            "UPDATE `{table}` SET conversions = NULL WHERE date = {day}",
            "null_rate(conversions)", "100.0% NULL", id="a-null-metric",
        ),
        pytest.param(
            "UPDATE `{table}` SET cost = cost * 100 WHERE date = {day}",
            "sums(cost)", "sum ", id="a-100x-sum",
        ),
    ],
)  # fmt: skip
def test_a_broken_day_fails_its_check_and_publishes_nothing(
    world: LocalStack,
    config: PipelineConfig,
    published: None,
    broken: str,
    label: str,
    observed: str,
) -> None:
    before = _tableau_rows(world)
    _break_day(world, broken)

    with pytest.raises(QualityError) as raised:
        daily.daily_refresh(config=config, run_date=DAY)

    assert _tableau_rows(world) == before  # DAY never reached Tableau
    first = str(raised.value).splitlines()[0]
    assert first.startswith(f"quality check {DAY.isoformat()} {label}: {observed}")
    assert "accept_quality_failures=true" in str(raised.value)
    report = _report()
    assert "**Status:** failed" in report
    assert "❌ fail" in _quality_row(report, label)
    assert "| publish" not in report


def test_a_rerun_accepting_the_failures_publishes_and_the_report_records_it(
    world: LocalStack, config: PipelineConfig, published: None
) -> None:
    _break_day(world, "DELETE FROM `{table}` WHERE date = {day} AND device != 'desktop'")
    with pytest.raises(QualityError):
        daily.daily_refresh(config=config, run_date=DAY)

    state = daily.daily_refresh(
        config=config, run_date=DAY, accept_quality_failures=True, return_state=True
    )

    assert state.is_completed()
    assert _tableau_rows(world)[DAY] == 10
    report = _report()
    assert "**Failures accepted by accept_quality_failures=true.**" in report
    assert "failures accepted (accept_quality_failures)" in report  # the stage line
    assert "## Warnings" in report
    assert f"quality {DAY.isoformat()} row_count: 10 rows" in report
    assert "accepted (accept_quality_failures=true)" in report
    messages = [log.message for log in run_logs(state)]
    assert any(m.startswith("Quality fail: 2026-11-20 row_count: 10 rows") for m in messages)
    assert any("accepted by accept_quality_failures=true: publishing" in m for m in messages)


def test_a_check_set_to_warn_publishes_reports_and_emits_the_alerts_event(
    world: LocalStack, tmp_path: Path, published: None
) -> None:
    config = _config(world, tmp_path, row_count={"on_failure": "warn"})
    _break_day(world, "DELETE FROM `{table}` WHERE date = {day} AND device != 'desktop'")

    state = daily.daily_refresh(config=config, run_date=DAY, return_state=True)

    assert state.is_completed()
    assert _tableau_rows(world)[DAY] == 10
    report = _report()
    assert "⚠️ warn" in _quality_row(report, "row_count")
    assert f"- ⚠️ quality {DAY.isoformat()} row_count: 10 rows, expected 15..60" in report
    event = _wait_for_event(WARNED_EVENT, "bq-tableau.pipeline.ads")
    assert event["payload"]["run_date"] == DAY.isoformat()
    assert event["payload"]["summary"].startswith(f"{DAY.isoformat()} row_count: 10 rows")
    assert "ads-per-date" in event["payload"]["fix"]
    related = {r["prefect.resource.id"] for r in event["related"]}
    assert f"prefect.flow-run.{state.state_details.flow_run_id}" in related


def test_single_day_runs_take_their_history_from_the_history_table(
    world: LocalStack, tmp_path: Path
) -> None:
    config = _config(world, tmp_path, min_history_days=2).model_copy(update={"lookback_days": 1})
    for day in HISTORY[-2:]:
        daily.daily_refresh(config=config, run_date=day)
    _break_day(world, "DELETE FROM `{table}` WHERE date = {day} AND device != 'desktop'")

    with pytest.raises(QualityError, match=r"row_count: 10 rows, expected 15\.\.60"):
        daily.daily_refresh(config=config, run_date=DAY)

    report = _report()
    assert "History: the datasource's history table." in report
    assert "the median 30 of 2 published days" in _quality_row(report, "row_count")
    assert DAY not in _tableau_rows(world)


def test_a_new_pipeline_warms_up_and_publishes(world: LocalStack, config: PipelineConfig) -> None:
    _break_day(world, "DELETE FROM `{table}` WHERE date = {day} AND device != 'desktop'")

    daily.daily_refresh(config=config, run_date=DAY)  # nothing on record yet

    assert _tableau_rows(world)[DAY] == 10
    row = _quality_row(_report(), "row_count")
    assert "⏳ warming up" in row and "0 of 5 published days needed on record" in row


def test_a_check_on_a_column_the_view_lacks_is_refused_before_the_export(
    world: LocalStack, tmp_path: Path
) -> None:
    config = _config(world, tmp_path, sums={"columns": ["cost", "campaign_name", "spend"]})

    with pytest.raises(ConfigError) as raised:
        daily.daily_refresh(config=config, run_date=DAY)

    assert "quality.sums.columns: 'campaign_name' is STRING, not a number" in str(raised.value)
    assert "quality.sums.columns: the view has no column 'spend'" in str(raised.value)
    assert world.staged_objects() == []  # nothing was exported
    assert not [r for r in world.tableau.requests if "/datasources" in r.path and r.method != "GET"]


def _wait_for_event(name: str, resource_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            response = client.request(
                "POST",
                "/events/filter",
                json={
                    "filter": {
                        "event": {"name": [name]},
                        "resource": {"id": [resource_id]},
                        "occurred": {"since": "2000-01-01T00:00:00Z"},
                    },
                    "limit": 5,
                },
            )
            events = json.loads(response.content)["events"]
            if events or time.monotonic() > deadline:
                assert events, f"no {name} event for {resource_id} within {timeout} s"
                return events[0]
            time.sleep(0.5)


def test_a_history_table_that_cannot_be_read_warns_and_the_day_still_publishes(
    world: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows.steps

    def unreadable(datasource: str) -> list[dict[str, Any]]:
        raise RuntimeError("Prefect API answered 503")

    monkeypatch.setattr(flows.steps, "read_history_rows", unreadable)
    config = _config(world, tmp_path).model_copy(update={"lookback_days": 1})

    daily.daily_refresh(config=config, run_date=DAY)

    assert _tableau_rows(world)[DAY] == ROWS_PER_DAY
    report = _report()
    assert (
        "quality: the history table could not be read (Prefect API answered 503); the row-count "
        "and sum checks could not compare" in report
    )
    assert "⏳ warming up" in _quality_row(report, "row_count")
