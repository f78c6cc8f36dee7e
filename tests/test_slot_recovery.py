"""A kill -9 of the flow run holding the publish slot, under a real `prefect server start`.

The holder is a real daily run in its own process, killed while Tableau works on its batch (what
an OOM kill or a Fargate Spot interruption does). Its rerun, started right after, must publish
within 90 s (Prefect's default lease kept the slot for 300 s) and say in its logs why it waited.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.client.schemas.sorting import LogSort

import flows.daily as daily
from standins.emulators import free_port
from standins.stack import DATASOURCE, LocalStack
from tests.plugins.prefect_process import prefect_server_process
from tests.plugins.stack import StartStack

pytestmark = [pytest.mark.emulator, pytest.mark.hyper, pytest.mark.prefect, pytest.mark.subprocess]

REPO = Path(__file__).resolve().parents[1]
DAY = date(2026, 11, 20)
DATES = (DAY - timedelta(days=1), DAY)
RUN = textwrap.dedent(
    """
    import sys
    from flows.config import PipelineConfig
    from flows.daily import daily_refresh
    state = daily_refresh(
        config=PipelineConfig.model_validate_json(sys.argv[1]), run_date=sys.argv[2],
        return_state=True,
    )
    print("FLOW_RUN_ID", state.state_details.flow_run_id, state.type.value, flush=True)
    """
)


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`prefect server start`, as an operator runs it (its services, the repossessor included).

    The session's `prefect_server` is Prefect's ephemeral test server, which runs none of those
    services, so this one test keeps a server of its own (test_deploy's CLI needs no services
    and uses the session's).
    """
    home = tmp_path_factory.mktemp("prefect-server")
    with prefect_server_process(home, free_port()) as url:
        yield url


@pytest.fixture(scope="module")
def stack(server_url: str, start_stack: StartStack) -> Iterator[LocalStack]:
    with start_stack(DATES, 40) as running:
        running.reset_tableau()
        running.clear_staging()
        yield running


def _run_daily(stack: LocalStack, server_url: str, config: str, day: date) -> subprocess.Popen:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
        **stack.environ(),
        "PREFECT_API_URL": server_url,
        "PYTHONWARNINGS": "ignore",
    }
    return subprocess.Popen(
        [sys.executable, "-c", RUN, config, day.isoformat()],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _holder_heartbeat() -> dict | None:
    with get_client(sync_client=True) as client:
        variables = [v for v in client.read_variables() if v.name.endswith("-holder")]
    return variables[0].value if variables else None


@pytest.mark.timeout(600)
def test_a_rerun_after_a_kill_9_of_the_slot_holder_publishes_within_90_seconds(
    stack: LocalStack,
    server_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_regional_access_boundary: None,
) -> None:
    config = stack.pipeline_config(work_dir=tmp_path / "work")
    for name, value in stack.environ().items():
        monkeypatch.setenv(name, value)  # the setup run below runs in this process
    # The datasource exists (the holder must be inside an update batch, not a first publish).
    daily.daily_refresh(config=config, run_date=DATES[0])
    expected = stack.tableau.rows_by_date(DATASOURCE)[DATES[0]]

    stack.tableau.hold_jobs()
    holder = _run_daily(stack, server_url, config.model_dump_json(), DAY)
    deadline = time.monotonic() + 180
    while not (stack.tableau._job_threads and _holder_heartbeat()):
        assert holder.poll() is None, holder.stdout.read() if holder.stdout else ""
        assert time.monotonic() < deadline, "the holder never reached Tableau's update job"
        time.sleep(0.2)
    heartbeat = _holder_heartbeat()
    assert heartbeat is not None
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    started = time.monotonic()
    rerun = _run_daily(stack, server_url, config.model_dump_json(), DAY)
    stack.tableau.release_jobs()  # Tableau finishes the dead run's batch on its own

    output, _ = rerun.communicate(timeout=300)
    elapsed = time.monotonic() - started

    assert rerun.returncode == 0, output
    run_id, state = output.split("FLOW_RUN_ID ", 1)[1].split()[:2]
    assert state == "COMPLETED", output
    assert elapsed < 90, f"the rerun took {elapsed:.0f} s:\n{output}"
    # The day is there once, whichever batch Tableau applied last.
    assert stack.tableau.rows_by_date(DATASOURCE)[DAY] == expected
    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(run_id)])),
            sort=LogSort.TIMESTAMP_ASC,
        )
    text = "\n".join(log.message for log in logs)
    holder_run = heartbeat["flow_run_name"]
    assert (
        "Waiting for publish slot tableau-pat-" in text
        and f"held by flow run {holder_run!r} ({heartbeat['flow_run_id']}) since "
        f"{heartbeat['since']}"
        in text
    ), text
    assert f"its holder flow run {holder_run!r}" in text and "heartbeat stopped" in text, text
    print(json.dumps({"rerun_seconds": round(elapsed, 1)}))
