"""Quality checks between build and publish: does the day look like the usual days?

Structure is checked before (row counts equal across stages, the schema, an empty day); these
checks catch what is well-formed but wrong, each configured per pipeline (`quality` in the
config, `flows.config.QualityConfig`) and set to `fail` (publish nothing), `warn` (publish,
report, notify) or `off`:

- row_count: the day's rows against the median of the last K published days, within a band
  (a day half loaded upstream);
- null_rate: the share of NULLs in listed columns (a metric gone NULL after an upstream change);
- sums: the day's sum of listed numeric columns against its median over the last K days (a
  cost off by 100x when the currency unit changed);
- freshness: how old the newest value of a timestamp column is (a mart not refreshed).

The day's figures come from the built extract, what would be published (one grouped Hyper
query). The history comes from what the pipeline already keeps: the record of published
fingerprints (rows and sums per date, `lookback_days` > 1) or else the datasource's history
table (one row per run). A pipeline with fewer than `min_history_days` days on record is
warming up: its row-count and sum checks report "warming up" and pass; the NULL-rate and
freshness checks need no history.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

from prefect.events import emit_event

from flows.bigquery import NUMERIC_TYPES
from flows.config import OnFailure, PipelineConfig, QualityConfig
from flows.errors import QualityError
from flows.hyper import DateProfile
from flows.window import PublishedState

logger = logging.getLogger(__name__)

Verdict = Literal["pass", "fail", "warn", "warming up", "n/a"]
WARNED_EVENT: Final[str] = "bq-tableau.quality.warned"
"""The Prefect event a `warn` result emits (deployments/alerts.yaml notifies on it)."""


@dataclass(frozen=True)
class PublishedDay:
    """What an earlier publish of one date held: its rows and numeric sums."""

    rows: int
    sums: Mapping[str, float]


@dataclass(frozen=True)
class History:
    """The published days the row-count and sum checks compare with."""

    days: Mapping[date, PublishedDay]
    source: str  # where they come from, for the report
    problem: str | None = None  # why there is none although there should be

    @classmethod
    def unavailable(cls, why: str) -> History:
        """No history, for a reason the report must show: the checks that need it warm up."""
        return cls({}, "none", problem=why)

    @classmethod
    def from_record(cls, state: PublishedState) -> History:
        """The record of published fingerprints (`lookback_days` > 1)."""
        days = {d: PublishedDay(fp.rows, fp.sums) for d, fp in state.days.items()}
        return cls(days, "the record of published fingerprints")

    @classmethod
    def from_history_table(cls, rows: Sequence[Mapping[str, Any]]) -> History:
        """The datasource's history table (newest row first): per date, the newest run that
        published it alone (a window's row counts a batch of dates, not one)."""
        days: dict[date, PublishedDay] = {}
        for row in rows:
            try:
                day = date.fromisoformat(str(row.get("run_date")))
            except ValueError:
                continue
            if row.get("status") != "succeeded" or row.get("republished") or day in days:
                continue
            if isinstance(row.get("rows"), int):
                days[day] = PublishedDay(row["rows"], parse_sums(str(row.get("sums") or "")))
        return cls(days, "the datasource's history table")

    def before(self, day: date, count: int) -> list[tuple[date, PublishedDay]]:
        """The `count` latest days with rows before `day`, newest first (an empty day
        published under gcs.empty_day=allow is not a usual day)."""
        earlier = sorted((d for d, p in self.days.items() if d < day and p.rows > 0), reverse=True)
        return [(d, self.days[d]) for d in earlier[:count]]


@dataclass(frozen=True)
class CheckResult:
    """One check of one date: what was observed, what was expected, and the verdict."""

    check: str  # row_count, null_rate, sums, freshness
    day: date
    observed: str
    expected: str
    verdict: Verdict
    column: str | None = None
    detail: str = ""

    @property
    def label(self) -> str:
        return f"{self.check}({self.column})" if self.column else self.check

    def line(self) -> str:
        detail = f" ({self.detail})" if self.detail else ""
        day = self.day.isoformat()
        return f"{day} {self.label}: {self.observed}, expected {self.expected}{detail}"


@dataclass(frozen=True)
class QualityResult:
    """Every check of the run's dates, and whether the run accepted failures."""

    results: tuple[CheckResult, ...]
    history_source: str
    accepted: bool = False  # accept_quality_failures=true: failures publish, reported
    run_date_sums: dict[str, float] = field(default_factory=dict)  # for the history table
    history_problem: str | None = None  # the history could not be read: checks warmed up

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if r.verdict == "fail"]

    @property
    def warned(self) -> list[CheckResult]:
        return [r for r in self.results if r.verdict == "warn"]

    def count(self, verdict: Verdict) -> int:
        return sum(1 for r in self.results if r.verdict == verdict)

    def warnings(self) -> list[str]:
        """The report's warnings: `warn` results, and failures the run accepted."""
        lines = [f"quality {r.line()}" for r in self.warned]
        if self.history_problem:
            lines.append(
                f"quality: {self.history_problem}; the row-count and sum checks could not "
                "compare the day with earlier ones (they report warming up). Check the Prefect "
                "API, then rerun the date if the day looks wrong."
            )
        if self.accepted:
            lines += [
                f"quality {r.line()} — accepted (accept_quality_failures=true)" for r in self.failed
            ]
        return lines

    def raise_for_failures(self, config: PipelineConfig) -> None:
        """Refuse to publish when a check set to `fail` did not pass, unless accepted.

        Raises:
            QualityError: not retryable; names each number and the way to override once.
        """
        if not self.failed or self.accepted:
            return
        first, others = self.failed[0], len(self.failed) - 1
        more = f" and {others} more" if others else ""
        rerun = (
            f"the `{config.name}-per-date` deployment (or `python -m flows run --pipeline "
            f"{config.name} --date {first.day.isoformat()} --accept-quality-failures`)"
            if config.name
            else "a custom run of the flow"
        )
        raise QualityError(
            f"quality check {first.line()}{more}; nothing was published\n"
            + "\n".join(f"  - {r.line()}" for r in self.failed)
            + "\nIf the data mart is still loading the day, rerun it once it is complete. If "
            f"the numbers are right (a real change), rerun the date from {rerun} with "
            "accept_quality_failures=true, which publishes and records the acceptance in the "
            "run report; if it is the new normal, change quality in the pipeline's config "
            "(deployments/pipelines.yaml).",
            retryable=False,
        )


def evaluate(
    profiles: Mapping[date, DateProfile],
    days: Sequence[date],
    history: History,
    quality: QualityConfig,
    *,
    run_date: date,
    now: datetime,
    timezone: str,
) -> tuple[CheckResult, ...]:
    """Check each of `days` (the dates this run publishes) against its history."""
    results: list[CheckResult] = []
    for day in days:
        profile = profiles.get(day)
        if profile is None or profile.rows == 0:
            continue  # a date without rows is published as a delete; gcs.empty_day judged it
        earlier = history.before(day, quality.history_days)
        results += _row_count(day, profile, earlier, quality)
        results += _null_rates(day, profile, quality)
        results += _sums(day, profile, earlier, quality)
        if day == run_date:
            results += _freshness(day, profile, quality, now=now, timezone=timezone)
    return tuple(results)


def _verdict(passed: bool, on_failure: OnFailure) -> Verdict:
    return "pass" if passed else on_failure  # type: ignore[return-value]  # never "off" here


def _warming_up(
    check: str,
    day: date,
    observed: str,
    earlier: Sequence[Any],
    quality: QualityConfig,
    column: str | None = None,
) -> CheckResult | None:
    if len(earlier) >= quality.min_history_days:
        return None
    return CheckResult(
        check, day, observed, "a band around the median", "warming up", column=column,
        detail=f"{len(earlier)} of {quality.min_history_days} published days needed on record",
    )  # fmt: skip


def _row_count(
    day: date,
    profile: DateProfile,
    earlier: Sequence[tuple[date, PublishedDay]],
    quality: QualityConfig,
) -> list[CheckResult]:
    check = quality.row_count
    if check.on_failure == "off":
        return []
    observed = f"{profile.rows:,} rows"
    if warming := _warming_up("row_count", day, observed, earlier, quality):
        return [warming]
    median = statistics.median(p.rows for _, p in earlier)
    low, high = median * check.min_ratio, median * check.max_ratio
    return [
        CheckResult(
            "row_count", day, observed, f"{low:,.0f}..{high:,.0f}",
            _verdict(low <= profile.rows <= high, check.on_failure),
            detail=f"{check.min_ratio:g}x-{check.max_ratio:g}x the median {median:,.0f} of "
            f"{len(earlier)} published days",
        )
    ]  # fmt: skip


def _null_rates(day: date, profile: DateProfile, quality: QualityConfig) -> list[CheckResult]:
    check = quality.null_rate
    if check.on_failure == "off":
        return []
    results = []
    for column, highest in check.columns.items():
        rate = profile.nulls[column] / profile.rows
        results.append(
            CheckResult(
                "null_rate", day, f"{rate:.1%} NULL", f"at most {highest:.1%}",
                _verdict(rate <= highest, check.on_failure), column=column,
                detail=f"{profile.nulls[column]:,} of {profile.rows:,} rows",
            )
        )  # fmt: skip
    return results


def _sums(
    day: date,
    profile: DateProfile,
    earlier: Sequence[tuple[date, PublishedDay]],
    quality: QualityConfig,
) -> list[CheckResult]:
    check = quality.sums
    if check.on_failure == "off":
        return []
    results = []
    for column in check.columns:
        observed = profile.sums[column]
        known = [p.sums[column] for _, p in earlier if column in p.sums]
        shown = f"sum {observed:,.2f}"
        if warming := _warming_up("sums", day, shown, known, quality, column):
            results.append(warming)
            continue
        median = statistics.median(known)
        if median <= 0:
            results.append(
                CheckResult(
                    "sums", day, shown, "a band around the median", "n/a", column=column,
                    detail=f"the median of {len(known)} days is {median:,.2f}: no ratio to it",
                )
            )  # fmt: skip
            continue
        low, high = median * check.min_ratio, median * check.max_ratio
        results.append(
            CheckResult(
                "sums", day, shown, f"{low:,.2f}..{high:,.2f}",
                _verdict(low <= observed <= high, check.on_failure), column=column,
                detail=f"{observed / median:.2f}x the median {median:,.2f} of {len(known)} "
                "published days",
            )
        )  # fmt: skip
    return results


def _freshness(
    day: date, profile: DateProfile, quality: QualityConfig, *, now: datetime, timezone: str
) -> list[CheckResult]:
    check = quality.freshness
    if check.on_failure == "off" or check.column is None:
        return []
    zone = ZoneInfo(timezone)
    expected = f"at most {check.max_age_hours:g} h old"
    if day < now.astimezone(zone).date() - timedelta(days=1):
        # A backfill of an old date finds old values: freshness is judged on the latest day.
        return [
            CheckResult(
                "freshness", day, "not judged", expected, "n/a", column=check.column,
                detail="the run date is older than yesterday; freshness is checked on the "
                "latest day only",
            )
        ]  # fmt: skip
    newest = profile.newest
    if newest is None:
        return [
            CheckResult(
                "freshness", day, "no value", expected,
                _verdict(False, check.on_failure), column=check.column,
                detail=f"every {check.column} of the day is NULL",
            )
        ]  # fmt: skip
    if newest.tzinfo is None:  # DATETIME: a wall clock, read in the pipeline's time zone
        newest = newest.replace(tzinfo=zone)
    age = (now - newest).total_seconds() / 3600
    return [
        CheckResult(
            "freshness", day, f"{age:.1f} h old", expected,
            _verdict(age <= check.max_age_hours, check.on_failure), column=check.column,
            detail=f"newest {newest.astimezone(UTC):%Y-%m-%d %H:%M}Z",
        )
    ]  # fmt: skip


def emit_warned(checked: QualityResult, config: PipelineConfig, run_date: date) -> None:
    """Emit the event the quality-warn alert notifies on (in a run, Prefect relates it to the
    flow run, whose link the message carries)."""
    name = config.name or config.bigquery.view.rsplit(".", 1)[-1]
    first = checked.warned[0]
    more = f" and {len(checked.warned) - 1} more" if len(checked.warned) > 1 else ""
    emit_event(
        WARNED_EVENT,
        resource={
            "prefect.resource.id": f"bq-tableau.pipeline.{name}",
            "prefect.resource.name": name,
            "bq-tableau.run-date": run_date.isoformat(),
        },
        payload={
            "pipeline": name,
            "run_date": run_date.isoformat(),
            "summary": f"{first.line()}{more}",
            "fix": "The day was published (the check is set to warn). Look at the data mart's "
            "day; if it is wrong, fix it upstream and rerun the date from the "
            f"`{name}-per-date` deployment; the run report lists every check.",
        },
    )


def columns_checked(quality: QualityConfig) -> tuple[list[str], list[str], str | None]:
    """The columns the enabled checks read: (summed, NULL-counted, freshness)."""
    sums = list(quality.sums.columns) if quality.sums.on_failure != "off" else []
    nulls = list(quality.null_rate.columns) if quality.null_rate.on_failure != "off" else []
    fresh = quality.freshness.column if quality.freshness.on_failure != "off" else None
    return sums, nulls, fresh


_TIMESTAMPS: Final = frozenset({"TIMESTAMP", "DATETIME"})


def check_columns(quality: QualityConfig, schema: Sequence[tuple[str, str]]) -> list[str]:
    """What is wrong with the checks' columns for the view's (column, BigQuery type)s: each
    problem one line, empty when none (the preflight refuses before anything is billed)."""
    types = dict(schema)
    sums, nulls, fresh = columns_checked(quality)
    problems = []
    for column in nulls:
        if column not in types:
            problems.append(f"quality.null_rate.columns: the view has no column {column!r}")
    for column in sums:
        if column not in types:
            problems.append(f"quality.sums.columns: the view has no column {column!r}")
        elif types[column] not in NUMERIC_TYPES:
            problems.append(f"quality.sums.columns: {column!r} is {types[column]}, not a number")
    if fresh is not None:
        if fresh not in types:
            problems.append(f"quality.freshness.column: the view has no column {fresh!r}")
        elif types[fresh] not in _TIMESTAMPS:
            problems.append(
                f"quality.freshness.column: {fresh!r} is {types[fresh]}, not a TIMESTAMP or "
                "DATETIME"
            )
    return problems


def format_sums(sums: Mapping[str, float]) -> str:
    """`cost=1234.5 clicks=10`: the history table's cell (readable, and read back)."""
    return " ".join(f"{column}={value!r}" for column, value in sums.items())


def parse_sums(text: str) -> dict[str, float]:
    """The inverse of `format_sums`; what does not parse is left out."""
    sums = {}
    for item in text.split():
        column, _, value = item.partition("=")
        try:
            sums[column] = float(value)
        except ValueError:
            continue
    return sums
