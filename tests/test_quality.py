"""The quality checks on known days: the usual day passes, a third of the rows, a NULL metric
and a 100x sum do not; `warn` reports without failing; a new pipeline warms up."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from flows import catalog
from flows.config import PipelineConfig, QualityConfig
from flows.errors import QualityError
from flows.hyper import DateProfile
from flows.quality import (
    History,
    PublishedDay,
    QualityResult,
    check_columns,
    evaluate,
    format_sums,
    parse_sums,
)

DAY = date(2026, 11, 20)
NOW = datetime(2026, 11, 21, 0, 30, tzinfo=UTC)  # 09:30 in Tokyo, the morning after DAY
USUAL_ROWS = (30_000, 31_000, 29_500, 30_500, 32_000, 28_000, 30_000)
USUAL_COST = (1_000_000.0, 980_000.0, 1_020_000.0, 1_010_000.0, 990_000.0, 1_050_000.0, 970_000.0)

QUALITY = QualityConfig.model_validate(
    {
        "history_days": 7,
        "min_history_days": 5,
        "null_rate": {"columns": {"conversions": 0.2}},
        "sums": {"columns": ["cost"]},
        "freshness": {"column": "updated_at", "max_age_hours": 30, "on_failure": "fail"},
    }
)


def history(days: int = 7) -> History:
    return History(
        {
            DAY - timedelta(days=i + 1): PublishedDay(USUAL_ROWS[i], {"cost": USUAL_COST[i]})
            for i in range(days)
        },
        "test history",
    )


def profile(
    rows: int = 30_200,
    cost: float = 1_005_000.0,
    null_conversions: int | None = None,
    newest: datetime | None = datetime(2026, 11, 20, 18, 0, tzinfo=UTC),
) -> dict[date, DateProfile]:
    nulls = rows // 6 if null_conversions is None else null_conversions  # 1 in 6, as seeded
    return {DAY: DateProfile(rows, {"cost": cost}, {"conversions": nulls}, newest)}


def check(
    profiles: dict[date, DateProfile], quality: QualityConfig = QUALITY, **kwargs: Any
) -> dict[str, Any]:
    results = evaluate(
        profiles,
        [DAY],
        kwargs.pop("history", history()),
        quality,
        run_date=DAY,
        now=kwargs.pop("now", NOW),
        timezone="Asia/Tokyo",
    )
    return {r.label: r for r in results}


def test_the_usual_day_passes_every_check_with_its_figures() -> None:
    results = check(profile())
    assert {label: r.verdict for label, r in results.items()} == {
        "row_count": "pass",
        "null_rate(conversions)": "pass",
        "sums(cost)": "pass",
        "freshness(updated_at)": "pass",
    }
    row_count = results["row_count"]
    assert row_count.observed == "30,200 rows"
    assert row_count.expected == "15,000..60,000"  # 0.5x-2x the median 30,000
    assert "the median 30,000 of 7 published days" in row_count.detail
    assert results["freshness(updated_at)"].observed == "6.5 h old"


def test_a_third_of_the_rows_fails_the_row_count() -> None:
    results = check(profile(rows=10_000, null_conversions=1_600))
    assert results["row_count"].verdict == "fail"
    assert results["row_count"].observed == "10,000 rows"
    assert results["null_rate(conversions)"].verdict == "pass"


def test_a_metric_gone_null_fails_the_null_rate() -> None:
    results = check(profile(null_conversions=30_200))
    assert results["null_rate(conversions)"].verdict == "fail"
    assert results["null_rate(conversions)"].observed == "100.0% NULL"
    assert results["null_rate(conversions)"].expected == "at most 20.0%"


def test_a_sum_100_times_the_usual_fails_and_so_does_a_hundredth() -> None:
    assert check(profile(cost=100_500_000.0))["sums(cost)"].verdict == "fail"
    assert check(profile(cost=10_050.0))["sums(cost)"].verdict == "fail"
    assert "100.50x the median" in check(profile(cost=100_500_000.0))["sums(cost)"].detail


def test_a_check_set_to_warn_warns_instead_of_failing() -> None:
    quality = QUALITY.model_copy(
        update={"row_count": QUALITY.row_count.model_copy(update={"on_failure": "warn"})}
    )
    results = check(profile(rows=10_000), quality)
    assert results["row_count"].verdict == "warn"
    checked = QualityResult(tuple(results.values()), "test history")
    assert not checked.failed
    checked.raise_for_failures(PipelineConfig.model_validate(_config()))  # does not raise
    assert checked.warnings() == [f"quality {results['row_count'].line()}"]


def test_an_off_check_is_not_run() -> None:
    quality = QUALITY.model_copy(
        update={"row_count": QUALITY.row_count.model_copy(update={"on_failure": "off"})}
    )
    assert "row_count" not in check(profile(rows=10), quality)


def test_a_new_pipeline_warms_up_then_its_checks_start() -> None:
    results = check(profile(rows=10_000, cost=1.0), history=history(4))
    assert results["row_count"].verdict == "warming up"
    assert results["sums(cost)"].verdict == "warming up"
    assert results["row_count"].detail == "4 of 5 published days needed on record"
    # The checks that need no history run from the first day.
    assert results["null_rate(conversions)"].verdict == "pass"
    assert check(profile(rows=10_000), history=history(5))["row_count"].verdict == "fail"


def test_only_the_last_k_published_days_with_rows_count() -> None:
    old = {DAY - timedelta(days=30 + i): PublishedDay(1_000_000, {}) for i in range(20)}
    empty = {DAY - timedelta(days=8): PublishedDay(0, {})}
    mixed = History({**history().days, **old, **empty}, "test")
    assert (
        "the median 30,000 of 7 published days"
        in check(profile(), history=mixed)["row_count"].detail
    )
    later = History({**history().days, DAY + timedelta(days=1): PublishedDay(10, {})}, "test")
    assert check(profile(), history=later)["row_count"].verdict == "pass"  # later days ignored


def test_freshness_fails_on_stale_values_and_is_not_judged_on_old_dates() -> None:
    stale = profile(newest=datetime(2026, 11, 19, 12, 0, tzinfo=UTC))
    result = check(stale)["freshness(updated_at)"]
    assert result.verdict == "fail" and result.observed == "36.5 h old"
    assert check(profile(newest=None))["freshness(updated_at)"].observed == "no value"
    backfill = check(profile(), now=NOW + timedelta(days=10))["freshness(updated_at)"]
    assert backfill.verdict == "n/a"
    assert "latest day only" in backfill.detail


def test_a_datetime_column_is_read_in_the_pipelines_time_zone() -> None:
    wall_clock = datetime(2026, 11, 21, 3, 30)  # 03:30 in Tokyo = 18:30Z the day before
    assert check(profile(newest=wall_clock))["freshness(updated_at)"].observed == "6.0 h old"


def test_a_day_without_rows_is_left_to_the_empty_day_setting() -> None:
    assert check({}) == {}
    assert check({DAY: DateProfile(0, {"cost": 0.0}, {"conversions": 0}, None)}) == {}


def test_a_failure_names_the_number_and_the_way_to_accept_it_once() -> None:
    results = check(profile(rows=10_000, cost=100_500_000.0))
    checked = QualityResult(tuple(results.values()), "test history")
    config = PipelineConfig.model_validate(_config())
    with pytest.raises(QualityError) as raised:
        checked.raise_for_failures(config)
    message = str(raised.value)
    first = message.splitlines()[0]
    assert first.startswith("quality check 2026-11-20 row_count: 10,000 rows, expected ")
    assert first.endswith("and 1 more; nothing was published")
    assert "2026-11-20 sums(cost): sum 100,500,000.00" in message
    assert "`campaigns-per-date` deployment" in message
    assert (
        "python -m flows run --pipeline campaigns --date 2026-11-20 --accept-quality-failures"
        in message
    )
    assert not raised.value.retryable

    accepted = QualityResult(tuple(results.values()), "test history", accepted=True)
    accepted.raise_for_failures(config)  # publishes
    assert all("accepted (accept_quality_failures=true)" in w for w in accepted.warnings())
    assert len(accepted.warnings()) == 2


def test_the_history_table_gives_each_date_its_newest_single_day_publish() -> None:
    rows = [  # newest first, as the table artifact holds them
        {"run_date": "2026-11-19", "status": "succeeded", "rows": 300, "republished": "",
         "sums": "cost=12.5"},
        {"run_date": "2026-11-19", "status": "succeeded", "rows": 100, "republished": ""},
        {"run_date": "2026-11-18", "status": "failed", "rows": None, "republished": ""},
        {"run_date": "2026-11-17", "status": "succeeded", "rows": 900,
         "republished": "2026-11-16,2026-11-17"},
        {"run_date": "", "status": "failed", "rows": None},
        {"run_date": "2026-11-15", "status": "succeeded", "rows": 200, "republished": ""},
    ]  # fmt: skip
    found = History.from_history_table(rows)
    assert found.days == {
        date(2026, 11, 19): PublishedDay(300, {"cost": 12.5}),
        date(2026, 11, 15): PublishedDay(200, {}),
    }


def test_sums_round_trip_through_the_history_table_cell() -> None:
    sums = {"cost": 1234567.891, "clicks": 10.0, "tiny": 1e-12}
    assert parse_sums(format_sums(sums)) == sums
    assert parse_sums("cost=1.5 junk clicks=x") == {"cost": 1.5}


def test_the_preflight_names_columns_the_view_cannot_give() -> None:
    schema = (("date", "DATE"), ("cost", "NUMERIC"), ("campaign", "STRING"), ("ts", "DATE"))
    quality = QualityConfig.model_validate(
        {
            "null_rate": {"columns": {"conversions": 0.1}},
            "sums": {"columns": ["cost", "campaign"]},
            "freshness": {"column": "ts"},
        }
    )
    assert check_columns(quality, schema) == [
        "quality.null_rate.columns: the view has no column 'conversions'",
        "quality.sums.columns: 'campaign' is STRING, not a number",
        "quality.freshness.column: 'ts' is DATE, not a TIMESTAMP or DATETIME",
    ]
    assert check_columns(QualityConfig(), schema) == []


@pytest.mark.parametrize(
    ("quality", "message"),
    [
        ({"row_count": {"min_ratio": 1.2}}, "must surround 1"),
        ({"sums": {"max_ratio": 0.9}}, "must surround 1"),
        ({"null_rate": {"columns": {"cost": 1.0}}}, "must be a share from 0"),
        ({"null_rate": {"columns": {"bad name": 0.1}}}, "quality.null_rate.columns 'bad name'"),
        ({"history_days": 3, "min_history_days": 5}, "the checks would never start"),
        ({"row_count": {"on_failure": "ignore"}}, "'fail', 'warn' or 'off'"),
    ],
)
def test_bad_quality_settings_are_refused_with_the_reason(
    quality: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        PipelineConfig.model_validate(_config(quality=quality))


def test_a_catalog_entrys_quality_is_merged_into_the_defaults() -> None:
    document = {
        "defaults": {
            **_config(),
            "quality": {"history_days": 10, "row_count": {"min_ratio": 0.6}},
        },
        "pipelines": [
            {
                "name": "campaigns",
                "view": "ad-mart-prod.ads_mart.v_campaign_daily",
                "datasource": "campaign_daily",
                "quality": {"row_count": {"on_failure": "warn"}, "sums": {"columns": ["cost"]}},
            },
            {"name": "other", "view": "ad-mart-prod.ads_mart.v_other", "datasource": "other"},
        ],
    }
    for key in ("name", "bigquery", "tableau"):
        document["defaults"].pop(key, None)
    document["defaults"]["bigquery"] = {"location": "US"}
    document["defaults"]["tableau"] = {"server_block": "tableau", "project": "Ads"}
    campaigns, other = catalog.parse(document).pipelines
    assert campaigns.config.quality.history_days == 10
    assert campaigns.config.quality.row_count.min_ratio == 0.6  # kept from the defaults
    assert campaigns.config.quality.row_count.on_failure == "warn"
    assert campaigns.config.quality.sums.columns == ("cost",)
    assert other.config.quality.row_count.on_failure == "fail"
    assert other.config.quality.sums.columns == ()


def _config(**extra: Any) -> dict[str, Any]:
    return {
        "name": "campaigns",
        "credentials_block": "gcp-wif",
        "bigquery": {"view": "ad-mart-prod.ads_mart.v_campaign_daily"},
        "gcs": {"bucket": "staging-bucket"},
        "tableau": {"server_block": "tableau", "project": "Ads", "datasource": "campaigns"},
        **extra,
    }
