"""The restatement window's planning: dates covered, verdicts per date, the record (pure)."""

from __future__ import annotations

from datetime import date, timedelta

from flows.bigquery import DayFingerprint
from flows.config import PipelineConfig
from flows.window import (
    EMPTY,
    STATE_DAYS_KEPT,
    PublishedState,
    fingerprint_kind,
    plan_window,
    state_object,
    window_dates,
)

D = date(2026, 11, 20)
A = DayFingerprint(rows=3, digest="1:2", sums={"cost": 10.0, "clicks": 4.0})
B = DayFingerprint(rows=3, digest="7:9", sums={"cost": 12.5, "clicks": 4.0})


def _config(**changes: object) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {
            "credentials_block": "gcp-wif",
            "bigquery": {"view": "ad-mart-prod.ads_mart.v_daily_ads"},
            "gcs": {"bucket": "ad-mart-prod-tableau-staging"},
            "tableau": {"server_block": "tableau", "project": "Ads", "datasource": "Daily Ads"},
            **changes,
        }
    )


def test_the_window_ends_on_the_run_date_and_is_clipped_at_the_earliest_date() -> None:
    assert window_dates(D, 1, None) == [D]
    assert window_dates(D, 7, None) == [D - timedelta(days=6 - i) for i in range(7)]
    assert window_dates(D, 28, D - timedelta(days=2)) == [
        D - timedelta(days=2 - i) for i in range(3)
    ]


def test_each_date_is_new_changed_or_unchanged_against_the_record() -> None:
    days = [D - timedelta(days=2), D - timedelta(days=1), D]
    state = PublishedState("row", {days[0]: A, days[1]: A}, generation=5)

    changes = plan_window(days, {days[0]: A, days[1]: B, days[2]: A}, state, force=False)

    assert [c.verdict for c in changes] == ["unchanged", "changed", "new"]
    assert changes[1].sum_changes() == {"cost": 2.5}  # clicks did not move
    assert [c.day for c in changes if c.verdict != "unchanged"] == days[1:]


def test_a_day_restated_to_nothing_is_changed_and_one_that_stays_empty_is_not() -> None:
    gone, empty = D - timedelta(days=1), D
    state = PublishedState("row", {gone: A, empty: EMPTY})

    changes = plan_window([gone, empty], {}, state, force=False)

    assert [(c.verdict, c.after.rows) for c in changes] == [("changed", 0), ("unchanged", 0)]


def test_force_republishes_the_unchanged_dates_as_forced() -> None:
    state = PublishedState("row", {D: A})
    (change,) = plan_window([D], {D: A}, state, force=True)
    assert change.verdict == "forced"


def test_the_record_round_trips_and_a_record_of_another_kind_is_lost() -> None:
    state = PublishedState("row", {D: A}, generation=3).with_published({D - timedelta(days=1): B})
    payload = state.payload(run_id="r-1")

    again = PublishedState.parse(payload, "row", generation=4)
    assert again.days == state.days and again.generation == 4
    assert PublishedState.parse(payload, "columns:cost", generation=4).days == {}
    assert PublishedState.parse(None, "row", generation=0).days == {}
    assert PublishedState.parse({"version": 99}, "row", generation=1).days == {}


def test_the_record_keeps_only_the_newest_dates() -> None:
    many = {D - timedelta(days=i): A for i in range(STATE_DAYS_KEPT + 10)}
    kept = PublishedState("row").with_published(many)
    assert len(kept.days) == STATE_DAYS_KEPT and max(kept.days) == D


def test_the_digest_kind_and_the_record_name_follow_the_config() -> None:
    assert fingerprint_kind(_config()) == "row"
    columns = _config(bigquery={"view": "ad-mart-prod.ads_mart.v", "fingerprint_columns": ["cost"]})
    assert fingerprint_kind(columns) == "columns:cost"
    name = state_object(_config())
    assert name.startswith("bq-tableau-state/daily-ads-") and name.endswith(".json")
    other = _config(
        tableau={"server_block": "tableau", "project": "Other", "datasource": "Daily Ads"}
    )
    assert state_object(other) != name
