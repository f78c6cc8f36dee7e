"""The run report a person reads in the Prefect UI: one markdown artifact per run and a keyed
table artifact per datasource that accumulates one row per run (its history)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Final

from prefect.artifacts import Artifact, create_markdown_artifact, create_table_artifact

HISTORY_ROWS: Final[int] = 400
"""History rows kept in the table artifact (over a year of daily runs)."""


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

    run_date: date
    view: str
    datasource: str
    stages: list[StageLine] = field(default_factory=list)
    status: str = "running"
    error: str | None = None
    datasource_url: str | None = None
    job_id: str | None = None
    mode: str = ""

    @property
    def rows_published(self) -> int | None:
        return next((s.rows for s in reversed(self.stages) if s.stage == "publish"), None)

    def stage_seconds(self) -> float:
        return sum(s.seconds for s in self.stages)


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
    lines = [
        f"# {icon} {report.view} → {report.datasource} for {report.run_date.isoformat()}",
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
    return "\n".join(lines) + "\n"


def history_key(datasource: str) -> str:
    """Artifact key for a datasource's history: lowercase letters, digits and dashes only."""
    slug = re.sub(r"[^a-z0-9]+", "-", datasource.lower()).strip("-") or "datasource"
    return f"{slug[:80]}-history"


def history_row(report: RunReport, flow_run_name: str | None) -> dict[str, Any]:
    """The history row one run adds."""
    return {
        "run_date": report.run_date.isoformat(),
        "status": report.status,
        "mode": report.mode,
        "rows": report.rows_published,
        "tableau_job": report.job_id or "",
        "flow_run": flow_run_name or "",
        "finished_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
        "error": (report.error or "")[:200],
    }


def publish_report(report: RunReport, flow_run_name: str | None) -> None:
    """Write the run's markdown artifact and append its row to the datasource history."""
    create_markdown_artifact(
        markdown=render_markdown(report),
        key="run-report",
        description=f"{report.view} for {report.run_date.isoformat()}: {report.status}",
    )
    key = history_key(report.datasource)
    previous = Artifact.get(key)
    rows: list[dict[str, Any]] = []
    if previous is not None and previous.data:
        data = previous.data
        rows = json.loads(data) if isinstance(data, str) else list(data)
    rows = [history_row(report, flow_run_name), *rows][:HISTORY_ROWS]
    create_table_artifact(
        table=rows, key=key, description=f"Runs that fed {report.datasource}, newest first"
    )
