"""Date resolution for scheduled runs, explicit reruns and backfills."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from flows.dates import backfill_dates, check_run_date, default_run_date
from flows.errors import ConfigError

TOKYO = "Asia/Tokyo"


@pytest.mark.parametrize(
    ("scheduled", "expected"),
    [
        # 06:00 JST on 2026-11-29 is 21:00 UTC on the 28th: the run is for the 28th (JST).
        (datetime(2026, 11, 28, 21, 0, tzinfo=UTC), date(2026, 11, 28)),
        # One second before midnight JST is still the 29th there: yesterday is the 28th.
        (datetime(2026, 11, 29, 14, 59, 59, tzinfo=UTC), date(2026, 11, 28)),
        # Midnight JST: a new day, yesterday is the 29th.
        (datetime(2026, 11, 29, 15, 0, 0, tzinfo=UTC), date(2026, 11, 29)),
        # New year in Tokyo while UTC is still in the old year.
        (datetime(2026, 12, 31, 15, 30, tzinfo=UTC), date(2026, 12, 31)),
    ],
)
def test_default_run_date_is_yesterday_in_tokyo(scheduled: datetime, expected: date) -> None:
    assert default_run_date(scheduled, TOKYO) == expected


def test_late_run_keeps_its_scheduled_date() -> None:
    scheduled = datetime(2026, 11, 28, 21, 0, tzinfo=UTC)  # 06:00 JST on the 29th
    # The run starts two days late; the date comes from the schedule, not the clock.
    assert default_run_date(scheduled, TOKYO) == date(2026, 11, 28)


def test_naive_scheduled_start_is_refused() -> None:
    with pytest.raises(ConfigError, match="no time zone"):
        default_run_date(datetime(2026, 11, 28, 21, 0), TOKYO)


def test_check_run_date_bounds() -> None:
    today = date(2026, 11, 29)
    assert check_run_date(today, today=today, earliest=None) == today
    with pytest.raises(ConfigError, match=r"2026-11-30 is in the future"):
        check_run_date(date(2026, 11, 30), today=today, earliest=None)
    with pytest.raises(ConfigError, match=r"before earliest_date 2026-01-01"):
        check_run_date(date(2025, 12, 31), today=today, earliest=date(2026, 1, 1))


def test_backfill_range_and_list_are_merged_sorted_and_unique() -> None:
    got = backfill_dates(
        start=date(2026, 11, 1),
        end=date(2026, 11, 3),
        dates=[date(2026, 10, 15), date(2026, 11, 2)],
        today=date(2026, 11, 29),
        earliest=None,
        max_dates=10,
    )
    assert got == [date(2026, 10, 15), date(2026, 11, 1), date(2026, 11, 2), date(2026, 11, 3)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start": date(2026, 11, 1), "end": None, "dates": None}, "both start and end"),
        ({"start": date(2026, 11, 3), "end": date(2026, 11, 1), "dates": None}, "before start"),
        ({"start": None, "end": None, "dates": []}, "no dates"),
        ({"start": date(2026, 1, 1), "end": date(2026, 6, 1), "dates": None}, "more than max"),
        ({"start": date(2026, 11, 28), "end": date(2026, 12, 2), "dates": None}, "future"),
        ({"start": None, "end": None, "dates": [date(2019, 1, 1)]}, "earliest_date"),
    ],
)
def test_backfill_refuses_bad_plans(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        backfill_dates(**kwargs, today=date(2026, 11, 29), earliest=date(2020, 1, 1), max_dates=31)


@pytest.mark.parametrize(
    ("parameters", "name"),
    [
        ({"start": "2026-11-01", "end": "2026-11-07"}, "backfill-2026-11-01..2026-11-07"),
        ({"dates": ["2026-11-05", "2026-11-03"]}, "backfill-2026-11-03,2026-11-05"),
        (
            {"dates": [f"2026-11-0{d}" for d in range(1, 6)], "dry_run": True},
            "backfill-5-dates-2026-11-01..2026-11-05-plan",
        ),
        (
            {"start": "2026-11-01", "end": "2026-11-02", "dates": ["2026-11-09"]},
            "backfill-2026-11-01..2026-11-02+2026-11-09",
        ),
        ({}, "backfill"),
    ],
)
def test_backfill_runs_are_named_after_what_they_cover(
    monkeypatch: pytest.MonkeyPatch, parameters: dict, name: str
) -> None:
    from flows import backfill

    monkeypatch.setattr(backfill.flow_run, "parameters", parameters)
    assert backfill._run_name() == name
