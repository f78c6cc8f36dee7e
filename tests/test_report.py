"""The run report's history table: one row per run, none lost when runs finish together."""

from __future__ import annotations

import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from prefect.artifacts import Artifact

from flows import report

pytestmark = pytest.mark.prefect


def _row(n: int) -> dict[str, Any]:
    return {"run_date": "2026-11-20", "flow_run": f"run-{n}", "flow_run_id": str(uuid.uuid4())}


def _finish_together(key: str, rows: list[dict[str, Any]]) -> None:
    start = threading.Barrier(len(rows))

    def finish(row: dict[str, Any]) -> None:
        start.wait()
        report.add_history_row(key, row, description="test history")

    with ThreadPoolExecutor(len(rows)) as pool:
        list(pool.map(finish, rows))


def _history(key: str) -> list[dict[str, Any]]:
    artifact = Artifact.get(key)
    assert artifact is not None
    return json.loads(artifact.data)


def test_five_runs_finishing_at_once_leave_five_rows(prefect_server: None) -> None:
    key = f"history-{uuid.uuid4().hex[:8]}"
    rows = [_row(n) for n in range(5)]

    _finish_together(key, rows)

    assert sorted(r["flow_run_id"] for r in _history(key)) == sorted(r["flow_run_id"] for r in rows)


def test_rows_accumulate_newest_first_and_are_capped(
    prefect_server: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report, "HISTORY_ROWS", 3)
    key = f"history-{uuid.uuid4().hex[:8]}"
    for n in range(4):
        row = _row(n) | {"finished_at": f"2026-11-2{n} 06:00:00Z"}
        report.add_history_row(key, row, description="test history")

    assert [r["flow_run"] for r in _history(key)] == ["run-3", "run-2", "run-1"]
