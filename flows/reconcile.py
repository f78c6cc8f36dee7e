"""`python -m flows reconcile`: does Tableau hold, for each date, what BigQuery holds now?

BigQuery's side is one `fingerprint_days` query over the range (per date: rows, the digest of
the rows, the numeric columns' sums). Tableau's side is one of:

- `record`: the fingerprints the pipeline recorded when it last published each date (the
  record in GCS that a window's fingerprint step reads). Compared on rows AND digest, so a
  restated value shows even when the sums happen to agree. Nothing is downloaded, but it is
  what the pipeline believes it published: an edit made in Tableau by hand does not show.
  Only pipelines with `lookback_days` above 1 keep a record.
- `extract`: the published datasource itself, downloaded with its extract under the token's
  publish slot; Hyper counts the rows and sums the numeric columns per date. Compared on rows
  and sums, with a relative tolerance (floating-point sums depend on the order of addition).
- `auto`: the record when it holds every date of the range, else the extract.

The comparison and the next step of a disagreeing date are pure functions (`compare_day`,
`next_step`), unit-tested apart from the systems.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Final, Literal
from zoneinfo import ZoneInfo

from blocks import AwsWorkloadIdentityCredentials, TableauServer
from flows import progress
from flows.bigquery import DayFingerprint, dry_run_days, numeric_columns_of
from flows.catalog import Pipeline
from flows.config import PipelineConfig
from flows.errors import ConfigError
from flows.hyper import totals_by_date
from flows.steps import fingerprint, load_block, read_published, scratch_dir
from flows.tableau import download_extract
from flows.window import EMPTY, state_object, window_dates

Source = Literal["auto", "record", "extract"]
SOURCES: Final[tuple[str, ...]] = ("auto", "record", "extract")
REL_TOLERANCE: Final[float] = 1e-9
"""Sums agree within this fraction of the larger: float sums differ in their last digits when
added in another order; a restated row moves a sum by far more."""
ABS_TOLERANCE: Final[float] = 1e-6  # sums near zero


@dataclass(frozen=True)
class DateCheck:
    """One date: BigQuery's side, Tableau's, and whether they agree."""

    day: date
    bigquery: DayFingerprint
    tableau: DayFingerprint | None  # None: nothing there (no rows, not on record, no datasource)
    agrees: bool
    differences: tuple[str, ...]  # what differs, one phrase each; empty when they agree
    next_step: str = ""  # for a date that disagrees: what fixes it


@dataclass(frozen=True)
class Reconciliation:
    """The dates of the range, compared, and what Tableau's side was read from."""

    pipeline: str
    view: str
    target: str
    source: Literal["record", "extract"]
    source_detail: str  # where Tableau's side came from, for the output
    dates: tuple[DateCheck, ...]
    unsummed_columns: tuple[str, ...] = ()  # numeric columns the extract lacks

    @property
    def disagreeing(self) -> tuple[DateCheck, ...]:
        return tuple(d for d in self.dates if not d.agrees)


def compare_day(
    bigquery: DayFingerprint,
    tableau: DayFingerprint | None,
    *,
    by: Literal["record", "extract"],
    rel_tol: float = REL_TOLERANCE,
) -> tuple[str, ...]:
    """What differs between BigQuery's date and Tableau's (empty: they agree).

    `record` compares rows and digests (both are fingerprints); `extract` compares rows and
    the sums of the columns both sides summed, within `rel_tol`.
    """
    theirs = tableau or EMPTY
    if bigquery.rows == 0 and theirs.rows == 0:
        return ()
    differences = []
    if bigquery.rows != theirs.rows:
        differences.append(f"rows {bigquery.rows:,} in BigQuery, {theirs.rows:,} in Tableau")
    if by == "record":
        if bigquery.rows == theirs.rows and bigquery.digest != theirs.digest:
            differences.append("same rows, other values (the digest differs)")
        return tuple(differences)
    for column, ours in bigquery.sums.items():
        if column not in theirs.sums and theirs.rows == 0:
            continue  # no rows: the count says it all
        other = theirs.sums.get(column)
        if other is not None and not math.isclose(
            ours, other, rel_tol=rel_tol, abs_tol=ABS_TOLERANCE
        ):
            mine, theirs_text = _sum_text(ours, other)
            differences.append(f"{column} {mine} in BigQuery, {theirs_text} in Tableau")
    return tuple(differences)


def _sum_text(ours: float, theirs: float) -> tuple[str, str]:
    """Two sums that differ, with enough digits to show that they do."""
    for digits in (2, 6):
        texts = f"{ours:,.{digits}f}", f"{theirs:,.{digits}f}"
        if texts[0] != texts[1]:
            return texts
    return repr(ours), repr(theirs)


def next_daily_run_date(now: datetime, timezone: str, hour: int, minute: int) -> date:
    """The run date of the pipeline's next scheduled daily run: the day before the next
    `hour:minute` in `timezone`."""
    local = now.astimezone(ZoneInfo(timezone))
    due = datetime.combine(local.date(), time(hour, minute), local.tzinfo)
    if due <= local:
        due += timedelta(days=1)
    return due.date() - timedelta(days=1)


def next_step(
    pipeline: str,
    check: DateCheck,
    *,
    lookback_days: int,
    next_window: Sequence[date],
    restated_since_recorded: bool,
    empty_day: str,
) -> str:
    """What fixes a date that disagrees: the next daily run, or a command to run now.

    Args:
        pipeline: The catalog name, for the command.
        check: The disagreeing date.
        lookback_days: The pipeline's.
        next_window: The dates the next daily run covers (its run date last).
        restated_since_recorded: BigQuery's fingerprint differs from the record's (or the
            record lacks the date), so a window's fingerprint step would republish it.
        empty_day: The pipeline's `gcs.empty_day`.
    """
    day = check.day
    # A window ending on the date republishes it when BigQuery moved since the record (and
    # records it again); when the record already agrees with BigQuery (Tableau was changed
    # behind the pipeline's back), only a run of that one date replaces it.
    option = " --lookback 1" if lookback_days > 1 and not restated_since_recorded else ""
    command = f"python -m flows run --pipeline {pipeline} --date {day.isoformat()}{option}"
    if check.bigquery.rows == 0 and empty_day == "fail":
        return (
            f"BigQuery has no rows for {day} any more; a run of that date is refused under "
            "gcs.empty_day=fail (it looks like a mart not yet refreshed). If the day is really "
            f"empty, set empty_day: allow for {pipeline} and run: {command}"
        )
    if day in next_window and (lookback_days == 1 or restated_since_recorded):
        if lookback_days == 1:
            return f"the next daily run (for {next_window[-1]}) publishes it; now: {command}"
        return (
            f"the next daily run (for {next_window[-1]}) republishes it, within its "
            f"{lookback_days}-day window; now: {command}"
        )
    return command


def reconcile(
    pipeline: Pipeline,
    *,
    end: date,
    days: int,
    source: Source = "auto",
    now: datetime | None = None,
) -> Reconciliation:
    """Compare each of the `days` dates ending on `end` (clipped at earliest_date) in
    BigQuery and in Tableau; changes nothing.

    Raises:
        ConfigError: a bad range or source, or a missing block.
        PipelineError, httpx.TransportError: a system could not be asked.
    """
    config = pipeline.config
    now = now or datetime.now(UTC)
    dates = _range(config, end, days, now)
    if source == "record" and config.lookback_days == 1:
        raise ConfigError(
            f"Pipeline {pipeline.name!r} publishes one date a run (lookback_days 1) and keeps "
            "no record of what it published; use --source extract (or auto)."
        )
    credentials = load_block(AwsWorkloadIdentityCredentials, config.credentials_block)
    with progress.step(f"BigQuery: fingerprint {dates[0]}..{dates[-1]}"):
        bigquery = _bigquery_side(credentials, config, dates)
    record = read_published(credentials, config) if config.lookback_days > 1 else None
    covered = record is not None and all(d in record.days for d in dates)
    by: Literal["record", "extract"] = (
        "record" if source == "record" or (source == "auto" and covered) else "extract"
    )
    unsummed: tuple[str, ...] = ()
    if by == "record":
        assert record is not None
        tableau_side: Mapping[date, DayFingerprint] = record.days
        detail = (
            f"the record gs://{config.gcs.bucket}/{state_object(config)} (the fingerprints of "
            f"what the pipeline published; {len(record.days)} date(s) on it)"
        )
    else:
        with progress.step(f"Tableau: download {pipeline.target} with its extract"):
            tableau_side, unsummed, detail = _extract_side(config, dates, bigquery, end)
    checks = []
    zone_window = window_dates(
        next_daily_run_date(now, config.timezone, pipeline.schedule_hour, pipeline.schedule_minute),
        config.lookback_days,
        config.earliest_date,
    )
    for day in dates:
        ours = bigquery[day]
        theirs = tableau_side.get(day)
        differences = compare_day(ours, theirs, by=by)
        check = DateCheck(day, ours, theirs, not differences, differences)
        if differences:
            recorded = record.days.get(day) if record is not None else None
            moved = recorded is None or (recorded.rows, recorded.digest) != (ours.rows, ours.digest)
            step = next_step(
                pipeline.name,
                check,
                lookback_days=config.lookback_days,
                next_window=zone_window,
                restated_since_recorded=by == "record" or moved,
                empty_day=config.gcs.empty_day,
            )
            check = dataclasses.replace(check, next_step=step)
        checks.append(check)
    return Reconciliation(
        pipeline.name, config.bigquery.view, pipeline.target, by, detail, tuple(checks), unsummed
    )


def _range(config: PipelineConfig, end: date, days: int, now: datetime) -> list[date]:
    today = now.astimezone(ZoneInfo(config.timezone)).date()
    if end > today:
        raise ConfigError(
            f"--end {end} is in the future (today is {today} in {config.timezone}); pick a "
            "past date."
        )
    if config.earliest_date is not None and end < config.earliest_date:
        raise ConfigError(
            f"--end {end} is before earliest_date {config.earliest_date}, the data mart's first "
            "day: there is nothing to compare."
        )
    if not 1 <= days <= 400:
        raise ConfigError(f"--days {days}: give 1 to 400 days.")
    return window_dates(end, days, config.earliest_date)


def _bigquery_side(
    credentials: AwsWorkloadIdentityCredentials, config: PipelineConfig, dates: list[date]
) -> dict[date, DayFingerprint]:
    """The fingerprints of the range, hashed as the record's are (`fingerprint_columns`)."""
    client = credentials.get_bigquery_client(
        project=credentials.project, location=config.bigquery.location
    )
    # The view's columns, from the dry run of one date: a run's preflight makes the same,
    # and it stays below the byte limit that a dry run of the whole range might exceed.
    schema = dry_run_days(client, config.bigquery, dates[-1:]).schema
    found = fingerprint(credentials, config, dates, schema)
    numeric = numeric_columns_of(schema, date_column=config.bigquery.date_column)
    empty = DayFingerprint(0, "", dict.fromkeys(numeric, 0.0))
    return {day: found.days.get(day, empty) for day in dates}


def _extract_side(
    config: PipelineConfig,
    dates: list[date],
    bigquery: Mapping[date, DayFingerprint],
    end: date,
) -> tuple[dict[date, DayFingerprint], tuple[str, ...], str]:
    """Tableau's rows and sums per date, from the published extract; nothing when the
    datasource does not exist."""
    tableau = load_block(TableauServer, config.tableau.server_block)
    target = f"{config.tableau.project}/{config.tableau.datasource}"
    numeric = tuple(next(iter(bigquery.values()), EMPTY).sums)
    with scratch_dir(config, end) as work:
        extract = download_extract(tableau, config.tableau, work)
        if extract is None:
            return {}, (), f"Tableau datasource {target}: it does not exist"
        totals, missing = totals_by_date(
            extract, config.bigquery.date_column, numeric, dates[0], dates[-1], log_dir=work
        )
        size = extract.stat().st_size
    side = {day: DayFingerprint(t.rows, "", t.sums) for day, t in totals.items()}
    return side, missing, f"the published extract of {target} (downloaded, {size:,} bytes)"
