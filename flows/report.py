"""The run report a person reads in the Prefect UI: one markdown artifact per run and a keyed
table artifact per datasource that accumulates one row per run (its history)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Final
from uuid import UUID

from prefect import Flow
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import ArtifactCreate
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.objects import FlowRun, State
from prefect.client.schemas.sorting import ArtifactSort

from flows.bigquery import DryRun, ExportManifest
from flows.gcs import DownloadedExport
from flows.hyper import HyperExtract
from flows.quality import QualityResult, format_sums
from flows.tableau import PublishResult, TargetCheck
from flows.window import DayChange, PublishedState, WindowPlan

logger = logging.getLogger(__name__)

HISTORY_ROWS: Final[int] = 400
"""History rows kept in the table artifact (over a year of daily runs)."""
_HISTORY_VERSIONS_READ: Final[int] = 50
"""Recent versions of the history table merged on each write (more than runs finish at once)."""
_HISTORY_WRITES: Final[int] = 5
"""Writes one run may make until the newest history table holds every recent row."""


@dataclass
class StageLine:
    """One row of the report's stage table."""

    stage: str
    seconds: float
    rows: int | None = None
    size: str = ""
    detail: str = ""


@dataclass
class RunReport:
    """What one run did, filled in as the stages finish."""

    run_date: date | None  # None: the run failed before its date was known
    view: str
    datasource: str
    stages: list[StageLine] = field(default_factory=list)
    status: str = "running"
    error: str | None = None
    datasource_url: str | None = None
    job_id: str | None = None
    mode: str = ""
    window: tuple[DayChange, ...] = ()  # a restatement window's dates, when lookback_days > 1
    quality: QualityResult | None = None
    warnings: list[str] = field(default_factory=list)
    """What a person should act on although the run went on (one line each, with the fix)."""

    def warn(self, message: str) -> None:
        """Add a warning to the report and the run's log."""
        logger.warning("%s", message)
        self.warnings.append(message)

    @property
    def rows_published(self) -> int | None:
        return next((s.rows for s in reversed(self.stages) if s.stage == "publish"), None)

    def stage_seconds(self) -> float:
        return sum(s.seconds for s in self.stages)

    def add(self, result: object, seconds: float) -> None:
        """Add the line of a step's result; a publish also gives the datasource's link."""
        self.stages.append(describe(result, seconds))
        match result:  # the preflight saw the Tableau token expire soon
            case (_, TargetCheck(token_warning=str() as warning)):
                self.warn(warning)
        if isinstance(result, WindowPlan):
            self.window = result.changes
        if isinstance(result, PublishResult):
            self.datasource_url, self.job_id = result.url, result.job_id
        if isinstance(result, QualityResult):
            self.quality = result
            for warning in result.warnings():
                self.warn(warning)


def describe(result: object, seconds: float) -> StageLine:
    """The report line of a step's result."""
    match result:
        case (DryRun() as dry_run, TargetCheck() as target):
            return StageLine(
                "preflight", seconds, None,
                f"{human_bytes(dry_run.estimated_bytes)} to scan",
                f"dry run: {len(dry_run.schema)} columns; Tableau REST "
                f"{target.rest_version} as {target.signed_in_as}: "
                f"`{target.project_path}/{target.datasource_name}` {target.verdict}",
            )  # fmt: skip
        case WindowPlan():
            moved = result.republished
            return StageLine(
                "fingerprint", seconds, None,
                f"{human_bytes(result.bytes_processed)} processed",
                f"job `{result.job_id}`: {len(moved)} of {len(result.changes)} date(s) to "
                f"republish{' (forced)' if result.forced else ''}"
                + ("" if result.state.days else "; no record of earlier publishes"),
            )  # fmt: skip
        case PublishedState():
            return StageLine(
                "record", seconds, None, "",
                f"fingerprints of the republished dates written; {len(result.days)} date(s) "
                "on record",
            )  # fmt: skip
        case ExportManifest():
            return StageLine(
                "export",
                seconds,
                result.rows,
                f"{human_bytes(result.bytes_processed)} processed",
                f"job `{result.job_id}`, {result.files or '?'} file(s) under `{result.uri_prefix}`",
            )
        case DownloadedExport():
            return StageLine(
                "download", seconds, result.rows, human_bytes(result.bytes),
                f"{len(result.files)} file(s), CRC32C verified",
            )  # fmt: skip
        case HyperExtract():
            return StageLine(
                "build", seconds, result.rows, human_bytes(result.path.stat().st_size),
                f"{len(result.columns)} columns, file format v{result.file_format_version}",
            )  # fmt: skip
        case QualityResult():
            counts = ", ".join(
                f"{n} {verdict}"
                for verdict in ("pass", "warn", "fail", "warming up", "n/a")
                if (n := result.count(verdict))  # type: ignore[arg-type]
            )
            accepted = (
                "; failures accepted (accept_quality_failures)"
                if result.accepted and result.failed
                else ""
            )
            return StageLine(
                "quality", seconds, None, "",
                f"{len(result.results)} check(s): {counts or 'none configured'}; history: "
                f"{result.history_source}{accepted}",
            )  # fmt: skip
        case PublishResult():
            action = "created" if result.created else result.mode
            slot = (
                "connected app: no publish slot"
                if result.slot_wait_seconds is None
                else f"waited {result.slot_wait_seconds:.1f} s for the token's publish slot"
            )
            return StageLine(
                "publish", seconds, result.rows_sent, "",
                f"{action} `{result.project_path}/{result.datasource_name}`; {slot}",
            )  # fmt: skip
    raise TypeError(f"no report line for {type(result).__name__}")


@contextmanager
def kept_report(report: RunReport, run_name: str | None, run_id: UUID | None) -> Iterator[None]:
    """Record how the block ends (succeeded, or failed with the error and its notes) and
    write the report whatever happens."""
    try:
        yield
    except BaseException as exc:
        notes = "".join(f"\n{note}" for note in getattr(exc, "__notes__", ()))
        report.status, report.error = "failed", f"{type(exc).__name__}: {exc}{notes}"
        raise
    else:
        report.status = "succeeded"
    finally:
        _leave(report, run_name, run_id)


def report_invalid_parameters(flow: Flow, run: FlowRun, state: State) -> None:
    """`on_failure` hook: a run whose parameters fail validation never enters the flow body,
    so it is reported here."""
    if not (state.message or "").startswith("Validation of flow parameters failed"):
        return  # the body wrote its own report
    params = run.parameters or {}
    config = params.get("config") if isinstance(params.get("config"), dict) else {}
    view = (config.get("bigquery") or {}).get("view") or "(no view)"
    datasource = (config.get("tableau") or {}).get("datasource") or "unknown-datasource"
    report = RunReport(None, str(view), str(datasource), status="failed")
    report.error = (
        f"{state.message}\n\nThe run's parameters are not a valid pipeline config. Fix them in "
        "prefect.yaml (pipeline_config) and deploy again, or correct the custom run's values."
    )
    _leave(report, run.name, run.id)


def _leave(report: RunReport, run_name: str | None, run_id: UUID | None) -> None:
    """Write the run report; a failure to write it only warns, never hides the run's outcome."""
    try:
        publish_report(report, run_name, run_id)
    except Exception as exc:
        logger.warning("Could not write the run report artifacts: %s", exc)


def human_bytes(size: int | None) -> str:
    """`1536` -> `1.5 KiB`; None -> ``."""
    if size is None:
        return ""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return ""  # unreachable


def render_markdown(report: RunReport) -> str:
    """The per-run report as markdown."""
    icon = {"succeeded": "✅", "failed": "❌"}.get(report.status, "⏳")
    day = report.run_date.isoformat() if report.run_date else "(date not resolved)"
    lines = [
        f"# {icon} {report.view} → {report.datasource} for {day}",
        "",
        f"**Status:** {report.status}  ",
        f"**Publish mode:** {report.mode or 'n/a'}  ",
    ]
    if report.datasource_url:
        lines.append(f"**Datasource:** [{report.datasource}]({report.datasource_url})  ")
    if report.job_id:
        lines.append(f"**Tableau job:** `{report.job_id}`  ")
    if report.error:
        lines += ["", "## What went wrong", "", "```", report.error, "```"]
    if report.warnings:
        lines += ["", "## Warnings", "", *(f"- ⚠️ {w}" for w in report.warnings)]
    lines += [
        "",
        "## Stages",
        "",
        "| Stage | Rows | Size | Duration | Detail |",
        "|---|---:|---:|---:|---|",
    ]
    for s in report.stages:
        rows = "" if s.rows is None else f"{s.rows:,}"
        lines.append(f"| {s.stage} | {rows} | {s.size} | {s.seconds:.1f} s | {s.detail} |")
    if report.quality and report.quality.results:
        lines += _quality_lines(report.quality)
    if report.window:
        lines += _window_lines(report.window)
    return "\n".join(lines) + "\n"


_VERDICT_MARK: Final = {"pass": "✅", "warn": "⚠️", "fail": "❌", "warming up": "⏳", "n/a": "➖"}


def _quality_lines(quality: QualityResult) -> list[str]:
    """Every check: what was observed, the band expected, the verdict."""
    lines = [
        "",
        "## Quality checks",
        "",
        f"History: {quality.history_source}."
        + (
            " **Failures accepted by accept_quality_failures=true.**"
            if quality.accepted and quality.failed
            else ""
        ),
        "",
        "| Date | Check | Observed | Expected | Verdict | Detail |",
        "|---|---|---:|---:|---|---|",
    ]
    for r in sorted(quality.results, key=lambda r: r.day, reverse=True):
        verdict = f"{_VERDICT_MARK[r.verdict]} {r.verdict}"
        lines.append(
            f"| {r.day.isoformat()} | {r.label} | {r.observed} | {r.expected} | {verdict} "
            f"| {r.detail} |"
        )
    return lines


def _window_lines(changes: tuple[DayChange, ...]) -> list[str]:
    """The window's dates: what moved in BigQuery since each was last published."""
    moved = [c for c in changes if c.verdict != "unchanged"]
    lines = [
        "",
        f"## Window: {len(moved)} of {len(changes)} date(s) republished",
        "",
        "| Date | BigQuery since the last publish | Rows | Sums that moved |",
        "|---|---|---:|---|",
    ]
    for c in reversed(changes):  # newest first, as the history
        before = "" if c.before is None else f"{c.before.rows:,} → "
        sums = ", ".join(f"{col} {delta:+,.2f}" for col, delta in c.sum_changes().items())
        lines.append(
            f"| {c.day.isoformat()} | {c.verdict} | {before}{c.after.rows:,} "
            f"| {sums if c.before is not None else ''} |"
        )
    return lines


def history_key(datasource: str) -> str:
    """Artifact key for a datasource's history: lowercase letters, digits and dashes only."""
    slug = re.sub(r"[^a-z0-9]+", "-", datasource.lower()).strip("-") or "datasource"
    return f"{slug[:80]}-history"


def history_row(
    report: RunReport, flow_run_name: str | None, flow_run_id: UUID | None
) -> dict[str, Any]:
    """The history row one run adds."""
    return {
        "run_date": report.run_date.isoformat() if report.run_date else "",
        "status": report.status,
        "mode": report.mode,
        "rows": report.rows_published,
        "tableau_job": report.job_id or "",
        "flow_run": flow_run_name or "",
        "finished_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
        "error": (report.error or "")[:200],
        "warnings": len(report.warnings),
        "sums": format_sums(report.quality.run_date_sums) if report.quality else "",
        "republished": ",".join(
            c.day.isoformat() for c in report.window if c.verdict != "unchanged"
        ),
        "flow_run_id": str(flow_run_id or ""),
    }


def publish_report(report: RunReport, flow_run_name: str | None, flow_run_id: UUID | None) -> None:
    """Write the run's markdown artifact and add its row to the datasource history.

    `flow_run_id` links both to the run even where no run context exists (a failure hook).
    """
    day = report.run_date.isoformat() if report.run_date else "an unresolved date"
    with get_client(sync_client=True) as client:
        client.create_artifact(
            ArtifactCreate(
                type="markdown",
                key="run-report",
                data=render_markdown(report),
                description=f"{report.view} for {day}: {report.status}",
                flow_run_id=flow_run_id,
            )
        )
        add_history_row(
            history_key(report.datasource),
            history_row(report, flow_run_name, flow_run_id),
            description=f"Runs that fed {report.datasource}, newest first",
            flow_run_id=flow_run_id,
            client=client,
        )


def add_history_row(
    key: str,
    row: dict[str, Any],
    *,
    description: str,
    flow_run_id: UUID | None = None,
    client: SyncPrefectClient | None = None,
) -> None:
    """Add `row` to the table artifact `key` without losing rows of runs finishing meanwhile.

    The table is read, extended and written as a new version. Two runs doing that at once would
    each write a table lacking the other's row, so a run merges the rows of the recent versions
    (every run's own row is in the version it wrote) and writes again until the newest table
    holds all of them. The run that writes last therefore leaves every row in place.
    """
    if client is None:
        with get_client(sync_client=True) as own:
            return add_history_row(
                key, row, description=description, flow_run_id=flow_run_id, client=own
            )
    for _ in range(_HISTORY_WRITES):
        versions = _history_versions(client, key)  # newest (what the UI shows) first
        rows = _merge([row], *versions)[:HISTORY_ROWS]
        shown = versions[0] if versions else []
        if {_row_id(r) for r in rows} <= {_row_id(r) for r in shown}:
            return
        client.create_artifact(
            ArtifactCreate(
                type="table",
                key=key,
                data=json.dumps(rows),
                description=description,
                flow_run_id=flow_run_id,
            )
        )


def read_history_rows(datasource: str) -> list[dict[str, Any]]:
    """The datasource's history table, newest row first (every recent version merged, so a
    row of a run finishing meanwhile is not missed)."""
    with get_client(sync_client=True) as client:
        return _merge(*_history_versions(client, history_key(datasource)))


def _history_versions(client: SyncPrefectClient, key: str) -> list[list[dict[str, Any]]]:
    artifacts = client.read_artifacts(
        artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
        sort=ArtifactSort.UPDATED_DESC,  # as Artifact.get, which reads the newest
        limit=_HISTORY_VERSIONS_READ,
    )
    return [_rows_of(a.data) for a in artifacts]


def _rows_of(data: Any) -> list[dict[str, Any]]:
    rows = json.loads(data) if isinstance(data, str) else data
    return [r for r in rows or [] if isinstance(r, dict)]


def _row_id(row: dict[str, Any]) -> tuple[str, str, str]:
    # Rows written before flow_run_id existed are told apart by name and time.
    return (row.get("flow_run_id", ""), row.get("flow_run", ""), row.get("finished_at", ""))


def _merge(*tables: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every distinct row of the tables, newest first."""
    seen: dict[tuple[str, str, str], dict[str, Any]] = {}
    for table in tables:
        for row in table:
            seen.setdefault(_row_id(row), row)
    return sorted(seen.values(), key=lambda r: r.get("finished_at", ""), reverse=True)
