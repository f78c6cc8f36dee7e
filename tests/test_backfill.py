"""The backfill's plan: which flow runs of a pipeline's per-date deployment it starts (pure, no
server).

One end-to-end backfill through a real worker runs in test_flows.py.
"""

from __future__ import annotations

from datetime import date

import pytest

from flows.backfill import plan_backfill
from flows.config import PipelineConfig
from flows.errors import ConfigError

TODAY = date(2026, 11, 29)
CONFIG = PipelineConfig.model_validate(
    {
        "credentials_block": "gcp-wif",
        "bigquery": {"view": "ad-mart-prod.ads_mart.v_daily_ads"},
        "gcs": {"bucket": "ad-mart-prod-tableau-staging"},
        "tableau": {"server_block": "tableau", "project": "Marketing/Ads", "datasource": "daily"},
        "earliest_date": "2026-01-01",
    }
)


def test_each_day_of_the_range_and_the_list_is_one_named_run_in_date_order() -> None:
    runs = plan_backfill(
        CONFIG,
        start=date(2026, 11, 1),
        end=date(2026, 11, 3),
        dates=[date(2026, 11, 2), date(2026, 10, 15)],
        today=TODAY,
        max_dates=93,
    )

    days = ["2026-10-15", "2026-11-01", "2026-11-02", "2026-11-03"]
    assert [run.run_date.isoformat() for run in runs] == days
    assert [run.name for run in runs] == [f"v_daily_ads-{day}" for day in days]
    assert [run.parameters["run_date"] for run in runs] == days
    for run in runs:  # the config is the per-date deployment's: a child gets only its date
        assert set(run.parameters) == {"run_date"}


def test_runs_are_named_after_the_catalog_pipeline() -> None:
    named = CONFIG.model_copy(update={"name": "campaigns"})
    (run,) = plan_backfill(
        named, start=None, end=None, dates=[date(2026, 11, 2)], today=TODAY, max_dates=93
    )

    assert run.name == "campaigns-2026-11-02"


@pytest.mark.parametrize(
    ("dates", "max_dates", "message"),
    [
        ([date(2025, 12, 31)], 93, "before earliest_date 2026-01-01"),  # the config's bound
        ([date(2026, 11, 30)], 93, "in the future"),
        ([date(2026, 11, 1), date(2026, 11, 2)], 1, "more than max_dates=1"),
    ],
)
def test_a_plan_out_of_bounds_is_refused_before_any_run(
    dates: list[date], max_dates: int, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        plan_backfill(CONFIG, start=None, end=None, dates=dates, today=TODAY, max_dates=max_dates)


def test_windows_group_consecutive_days_and_each_is_one_run_of_its_restated_dates() -> None:
    runs = plan_backfill(
        CONFIG,
        start=date(2026, 11, 1),
        end=date(2026, 11, 10),
        dates=[date(2026, 10, 20)],
        today=TODAY,
        max_dates=93,
        window_days=4,
        force=True,
    )

    assert [run.name for run in runs] == [
        "v_daily_ads-2026-10-20",
        "v_daily_ads-2026-11-01..2026-11-04",
        "v_daily_ads-2026-11-05..2026-11-08",
        "v_daily_ads-2026-11-09..2026-11-10",
    ]
    assert [(r.parameters["run_date"], r.parameters["lookback_days"]) for r in runs] == [
        ("2026-10-20", 1),
        ("2026-11-04", 4),
        ("2026-11-08", 4),
        ("2026-11-10", 2),
    ]
    assert all(r.parameters["force"] is True for r in runs)
    assert sum(len(r.days) for r in runs) == 11  # every date once


def test_windows_need_the_replace_date_mode() -> None:
    append = CONFIG.model_copy(
        update={"tableau": CONFIG.tableau.model_copy(update={"mode": "append"})}
    )
    with pytest.raises(ConfigError, match=r"window_days=7 needs tableau\.mode='replace_date'"):
        plan_backfill(
            append,
            start=date(2026, 11, 1),
            end=date(2026, 11, 3),
            dates=None,
            today=TODAY,
            max_dates=93,
            window_days=7,
        )
