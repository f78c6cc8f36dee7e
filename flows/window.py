"""The restatement window: which dates a run covers, which of them BigQuery restated since they
were published, and the record of what was published (pure functions; `flows.gcs` keeps it).

Ad platforms restate past days for weeks (late conversions, invalid traffic, refunds), so a run
with `lookback_days = N` covers `[run_date - (N - 1), run_date]`. One aggregate query
fingerprints every date of the window (`flows.bigquery.fingerprint_days`: rows, an
order-independent hash of the rows, the numeric columns' sums); a date is republished when its
fingerprint differs from the one recorded when it was last published, or when none is
recorded. A date without rows has the empty fingerprint, so a day restated to nothing is
republished as a delete, and a day that stays empty costs nothing.

The record is written only after Tableau accepted the batch: a failure anywhere leaves the old
record, and the next run republishes. A lost record republishes the whole window (every date
is new); a record that disagrees with Tableau (the datasource edited by hand) is corrected by a
`force` run, which republishes the whole window.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final, Literal

from flows.bigquery import DayFingerprint
from flows.config import PipelineConfig

STATE_VERSION: Final[int] = 1
STATE_DAYS_KEPT: Final[int] = 400
"""Dates the record keeps, newest first (over a year; a window reaches at most 90 back)."""
EMPTY: Final[DayFingerprint] = DayFingerprint(rows=0, digest="", sums={})
"""The fingerprint of a date without rows."""

Verdict = Literal["unchanged", "changed", "new", "forced"]
"""`forced`: unchanged, republished because the run was forced."""


def window_dates(run_date: date, lookback_days: int, earliest: date | None) -> list[date]:
    """The dates a run covers, oldest first: `lookback_days` ending on `run_date`, clipped at
    `earliest` (the data mart's first day). `run_date` itself is checked by the caller, so
    the window never reaches into the future."""
    start = run_date - timedelta(days=lookback_days - 1)
    if earliest is not None:
        start = max(start, earliest)
    return [start + timedelta(days=i) for i in range((run_date - start).days + 1)]


def fingerprint_kind(config: PipelineConfig) -> str:
    """What the digests hash: `row`, or the listed columns. Digests of another kind cannot be
    compared, so a change of `bigquery.fingerprint_columns` republishes the window once."""
    columns = config.bigquery.fingerprint_columns
    return "columns:" + ",".join(columns) if columns else "row"


def state_object(config: PipelineConfig) -> str:
    """The record's object name: one per Tableau datasource, under `gcs.state_prefix`."""
    target = f"{config.tableau.server_block}|{config.tableau.project}|{config.tableau.datasource}"
    slug = re.sub(r"[^a-z0-9]+", "-", config.tableau.datasource.lower()).strip("-")[:60]
    digest = hashlib.sha256(target.encode()).hexdigest()[:10]
    return f"{config.gcs.state_prefix}/{slug or 'datasource'}-{digest}.json"


@dataclass(frozen=True)
class PublishedState:
    """What was last published per date, as the fingerprints BigQuery gave before the export."""

    kind: str
    days: dict[date, DayFingerprint] = field(default_factory=dict)
    generation: int = 0  # of the object it was read from; 0: there was none

    @classmethod
    def parse(cls, payload: Mapping[str, Any] | None, kind: str, generation: int) -> PublishedState:
        """The record read from GCS; an absent, unknown or other-kind record is empty."""
        if not payload or payload.get("version") != STATE_VERSION or payload.get("kind") != kind:
            return cls(kind, {}, generation)
        days = {
            date.fromisoformat(day): DayFingerprint(
                rows=int(entry["rows"]),
                digest=str(entry["digest"]),
                sums={k: float(v) for k, v in (entry.get("sums") or {}).items()},
            )
            for day, entry in (payload.get("days") or {}).items()
        }
        return cls(kind, days, generation)

    def with_published(self, published: Mapping[date, DayFingerprint]) -> PublishedState:
        """This record with `published` recorded, the oldest dates beyond the kept number
        dropped."""
        days = {**self.days, **published}
        kept = sorted(days, reverse=True)[:STATE_DAYS_KEPT]
        return PublishedState(self.kind, {d: days[d] for d in sorted(kept)}, self.generation)

    def payload(self, *, run_id: str | None) -> dict[str, Any]:
        """The JSON document stored in GCS."""
        return {
            "version": STATE_VERSION,
            "kind": self.kind,
            "written_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "flow_run_id": run_id or "",
            "days": {
                day.isoformat(): {"rows": fp.rows, "digest": fp.digest, "sums": fp.sums}
                for day, fp in sorted(self.days.items())
            },
        }


@dataclass(frozen=True)
class DayChange:
    """One date of the window: what Tableau has (as recorded) and what BigQuery has now."""

    day: date
    verdict: Verdict
    before: DayFingerprint | None  # None: nothing recorded (new, or the record was lost)
    after: DayFingerprint

    def sum_changes(self) -> dict[str, float]:
        """Numeric column -> change of its sum, for the columns whose sum moved."""
        before = self.before.sums if self.before else {}
        columns = dict.fromkeys([*before, *self.after.sums])
        moved = {c: self.after.sums.get(c, 0.0) - before.get(c, 0.0) for c in columns}
        return {c: delta for c, delta in moved.items() if abs(delta) > 1e-9}


@dataclass(frozen=True)
class WindowPlan:
    """The window's dates, each compared with the record, and the record itself."""

    changes: tuple[DayChange, ...]
    state: PublishedState
    forced: bool
    job_id: str = ""
    bytes_processed: int | None = None

    @property
    def republished(self) -> list[date]:
        """The dates to export and replace, oldest first."""
        return [c.day for c in self.changes if c.verdict != "unchanged"]

    def recorded_after_publish(self) -> PublishedState:
        """The record once Tableau accepted the republished dates."""
        return self.state.with_published(
            {c.day: c.after for c in self.changes if c.verdict != "unchanged"}
        )


def plan_window(
    dates: Sequence[date],
    current: Mapping[date, DayFingerprint],
    state: PublishedState,
    *,
    force: bool,
) -> tuple[DayChange, ...]:
    """Compare each date's fingerprint now with the recorded one; `force` republishes all."""
    changes = []
    for day in dates:
        after, before = current.get(day, EMPTY), state.days.get(day)
        if before is None:
            verdict: Verdict = "new"
        elif (before.rows, before.digest) != (after.rows, after.digest):
            verdict = "changed"
        else:
            verdict = "forced" if force else "unchanged"
        changes.append(DayChange(day, verdict, before, after))
    return tuple(changes)
