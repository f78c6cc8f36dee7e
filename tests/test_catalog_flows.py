"""The local catalog's two pipelines end to end: two views of one mart, two datasources.

The pipelines of standins/pipelines.yaml (`ads`: one row per ad; `campaigns`: the same day
summed per campaign) run the real daily flow on every stand-in, with the one Tableau block and
so one personal access token between them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import flows.daily as daily
from standins.stack import LocalStack
from tests.plugins.stack import StartStack

pytestmark = [pytest.mark.emulator, pytest.mark.hyper, pytest.mark.prefect]

DAY = date(2026, 11, 20)
SEEDED = tuple(DAY - timedelta(days=2 - i) for i in range(3))


@pytest.fixture(scope="module")
def stack(prefect_server: None, start_stack: StartStack) -> Iterator[LocalStack]:
    with start_stack(SEEDED, 60) as running:
        yield running


def _bigquery(stack: LocalStack, view: str) -> dict[date, tuple[int, Decimal]]:
    rows = stack.bigquery_client().query(
        f"SELECT date, COUNT(*) AS n, SUM(cost) AS cost FROM `{view}` GROUP BY date"
    )
    return {r["date"]: (r["n"], round(Decimal(r["cost"]), 4)) for r in rows}


def _tableau(stack: LocalStack, datasource: str) -> dict[date, tuple[int, Decimal]]:
    rows = stack.tableau.store.query(
        stack.tableau.datasource(datasource).id,
        'SELECT "date", COUNT(*), SUM("cost") FROM {table} GROUP BY "date"',
    )
    return {
        date(d.year, d.month, d.day): (int(n), round(Decimal(str(cost)), 4)) for d, n, cost in rows
    }


def test_each_pipeline_of_the_catalog_feeds_its_own_datasource(
    world: LocalStack, tmp_path: Path
) -> None:
    pipelines = world.catalog().pipelines
    assert [p.name for p in pipelines] == ["ads", "campaigns"]

    for pipeline in pipelines:
        config = world.catalog_config(pipeline.name, work_dir=tmp_path / pipeline.name)
        for day in (SEEDED[0], DAY):
            result = daily.daily_refresh(config=config, run_date=day)
            assert result["run_date"] == day.isoformat()

    ads, campaigns = (p.config for p in pipelines)
    for config in (ads, campaigns):
        expected = _bigquery(world, config.bigquery.view)
        assert _tableau(world, config.tableau.datasource) == {
            d: expected[d] for d in (SEEDED[0], DAY)
        }
    # Two views of one mart: one row per ad, and the same cost summed per campaign.
    per_ad = _tableau(world, ads.tableau.datasource)
    per_campaign = _tableau(world, campaigns.tableau.datasource)
    assert per_campaign[DAY][0] == 5 < per_ad[DAY][0]
    assert per_campaign[DAY][1] == per_ad[DAY][1]


def test_pipelines_sharing_a_token_take_turns_publishing(world: LocalStack, tmp_path: Path) -> None:
    configs = [
        world.catalog_config(p.name, work_dir=tmp_path / p.name) for p in world.catalog().pipelines
    ]
    assert len({c.tableau.server_block for c in configs}) == 1  # one block: one token
    for config in configs:  # both datasources exist: the next publishes are update batches
        daily.daily_refresh(config=config, run_date=SEEDED[0])
    batches = len(world.tableau.update_batches)
    world.tableau.hold_jobs()  # the first publish stays signed in while its job is held
    waiting = _SlotWaits()
    logging.getLogger("flows.publish_slot").addHandler(waiting)
    states: dict[str, Any] = {}

    def run(config: Any) -> None:
        states[config.name] = daily.daily_refresh(config=config, run_date=DAY, return_state=True)

    threads = [threading.Thread(target=run, args=(c,)) for c in configs]
    try:
        for thread in threads:
            thread.start()
        # One run's batch is held by Tableau while the other waits for the token's slot.
        assert _wait_until(lambda: len(world.tableau.update_batches) > batches)
        assert waiting.started.wait(120), "no run waited for the publish slot"
    finally:
        world.tableau.release_jobs()
        for thread in threads:
            thread.join(timeout=300)
        logging.getLogger("flows.publish_slot").removeHandler(waiting)

    assert all(state.is_completed() for state in states.values()), states
    assert waiting.took, "the waiting run never took the slot"
    # A second sign-in of a PAT ends the first session (401002): none ever was.
    assert [s for s in world.tableau.sessions.values() if s.ended == "401002"] == []
    assert world.tableau.peak_pat_sessions == 1
    for config in configs:
        expected = _bigquery(world, config.bigquery.view)
        assert _tableau(world, config.tableau.datasource) == {
            d: expected[d] for d in (SEEDED[0], DAY)
        }


class _SlotWaits(logging.Handler):
    """Notes the publish slot's log lines: a run started waiting, a waiting run took it."""

    def __init__(self) -> None:
        super().__init__()
        self.started, self.took = threading.Event(), False

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Waiting for publish slot"):
            self.started.set()
        elif message.startswith("Took publish slot") and "after waiting" in message:
            self.took = True


def _wait_until(condition: Any, seconds: float = 120) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False
