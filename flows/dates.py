"""Which day a run processes, and which days a backfill covers (pure functions).

A scheduled run processes "yesterday" relative to its *scheduled* start in the pipeline's time
zone, so a late or retried run still processes its own date. Explicit dates are validated before
anything touches BigQuery, GCS or Tableau.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo

from pydantic import WithJsonSchema

from flows.errors import ConfigError

RunDate = Annotated[date | None, WithJsonSchema({"type": "string", "format": "date"})]
"""The daily flow's date: in the Prefect UI a plain date picker (no null toggle, which
`date | None` gets) that a custom run must fill; a schedule or `prefect deployment run` without
`--param run_date=...` leaves it out, and the flow takes the day before the scheduled start.
(The UI sends the schema's default, null, for an empty picker, so only a parameter that must be
given in the form can drop the toggle; the backfill's optional start/end/dates keep theirs.)"""


def default_run_date(scheduled_start: datetime, timezone: str) -> date:
    """The day before `scheduled_start`'s calendar date in `timezone`.

    Raises:
        ConfigError: if `scheduled_start` has no time zone (it would be ambiguous).
    """
    if scheduled_start.tzinfo is None:
        raise ConfigError(f"scheduled start {scheduled_start} has no time zone")
    return scheduled_start.astimezone(ZoneInfo(timezone)).date() - timedelta(days=1)


def check_run_date(day: date, *, today: date, earliest: date | None) -> date:
    """Refuse a day that cannot have data: after `today`, or before `earliest`.

    Raises:
        ConfigError: naming the date, the bound and what to do.
    """
    if day > today:
        raise ConfigError(
            f"run_date {day.isoformat()} is in the future (today is {today.isoformat()} in the "
            "pipeline's time zone). Pick a past date."
        )
    if earliest is not None and day < earliest:
        raise ConfigError(
            f"run_date {day.isoformat()} is before earliest_date {earliest.isoformat()}, the "
            "data mart's first day. Pick a later date or lower earliest_date."
        )
    return day


def resolve_run_date(
    run_date: date | None, scheduled_start: datetime, timezone: str, earliest: date | None
) -> date:
    """The explicit date, else yesterday of the *scheduled* start; refused if out of bounds."""
    today = datetime.now(ZoneInfo(timezone)).date()
    if run_date is None:
        run_date = default_run_date(scheduled_start, timezone)
    return check_run_date(run_date, today=today, earliest=earliest)


def backfill_dates(
    *,
    start: date | None,
    end: date | None,
    dates: Iterable[date] | None,
    today: date,
    earliest: date | None,
    max_dates: int,
) -> list[date]:
    """The sorted, de-duplicated days a backfill covers: an inclusive range and/or a list.

    Raises:
        ConfigError: for a half-open or reversed range, no dates, a date out of bounds, or more
            than `max_dates` days.
    """
    if (start is None) != (end is None):
        raise ConfigError("give both start and end for a range (inclusive), or neither")
    days = set(dates or ())
    if start is not None and end is not None:
        if end < start:
            raise ConfigError(f"end {end.isoformat()} is before start {start.isoformat()}")
        span = (end - start).days + 1
        if span > max_dates:
            raise ConfigError(
                f"the range {start.isoformat()}..{end.isoformat()} has {span} days, more than "
                f"max_dates={max_dates}. Split it, or raise max_dates if you mean it."
            )
        days.update(start + timedelta(days=i) for i in range(span))
    if not days:
        raise ConfigError("no dates to backfill: give start and end, or dates")
    if len(days) > max_dates:
        raise ConfigError(
            f"{len(days)} dates is more than max_dates={max_dates}. Split the backfill, or raise "
            "max_dates if you mean it."
        )
    for day in days:
        check_run_date(day, today=today, earliest=earliest)
    return sorted(days)
