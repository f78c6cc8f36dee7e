"""The daily and backfill flows, end to end on every stand-in, under one Prefect test server.

Real flows, real blocks (loaded from the Prefect API), real clients: the only differences from
production are the endpoints in the configuration (`standins.stack`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import suppress
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from prefect.artifacts import Artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    ArtifactFilterType,
)
from prefect.exceptions import ObjectAlreadyExists
from prefect.settings import PREFECT_API_URL

import flows.daily as daily
import flows.report
import flows.steps
from flows.backfill import backfill
from flows.config import PipelineConfig
from flows.errors import BuildError, ConfigError, ExportError, PipelineError, PublishError
from standins.demo import run_logs
from standins.stack import BUCKET, DATASOURCE, LocalStack
from tests.plugins.stack import StartStack

pytestmark = [pytest.mark.emulator, pytest.mark.hyper, pytest.mark.prefect]

ROWS_PER_DAY = 40
# Five days with data and a gap (GAP has no rows: the mart "was not refreshed" that day).
DAY = date(2026, 11, 20)
SEEDED = tuple(DAY - timedelta(days=i) for i in range(7) if i != 4)
GAP = DAY - timedelta(days=4)


@pytest.fixture(scope="module")
def stack(prefect_server: None, start_stack: StartStack) -> Iterator[LocalStack]:
    with start_stack(SEEDED, ROWS_PER_DAY) as running:
        yield running


@pytest.fixture
def config(world: LocalStack, tmp_path: Path) -> PipelineConfig:
    return world.pipeline_config(work_dir=tmp_path / "work")


def bq_rows_by_date(stack: LocalStack) -> dict[date, int]:
    rows = (
        stack.bigquery_client()
        .query(f"SELECT date, COUNT(*) AS n FROM `{stack.view}` GROUP BY date")
        .result()
    )
    return {row["date"]: row["n"] for row in rows}


def fail_once(monkeypatch: pytest.MonkeyPatch, name: str, exc: Exception) -> list[int]:
    """Make `flows.steps.<name>` raise `exc` on its first call, then behave normally."""
    real: Callable[..., Any] = getattr(flows.steps, name)
    calls: list[int] = []

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise exc
        return real(*args, **kwargs)

    monkeypatch.setattr(flows.steps, name, wrapper)
    return calls


def secrets_of(stack: LocalStack) -> list[str]:
    """Every secret the stand-ins handed out: AWS keys, Google tokens, the PAT, the ECS token."""
    aws = [s for c in stack.ecs.issued for s in (c.secret_access_key, c.token)]
    return [*aws, *stack.identity.tokens, *stack.tableau.pats.values(), stack.ecs_token]


def test_daily_run_publishes_exactly_the_days_rows_and_leaves_a_report(
    world: LocalStack, config: PipelineConfig
) -> None:
    expected = bq_rows_by_date(world)

    result = daily.daily_refresh(config=config, run_date=DAY)

    assert world.tableau.rows_by_date(DATASOURCE) == {DAY: expected[DAY]}
    assert result["rows"] == expected[DAY]
    # The staged export is deleted after a successful publish, and the work dir is gone.
    assert world.staged_objects() == []
    assert list(config.work_dir.iterdir()) == []
    report = Artifact.get("run-report")
    assert report is not None and DAY.isoformat() in report.data
    assert f"{expected[DAY]:,}" in report.data and "succeeded" in report.data
    preflight = next(line for line in report.data.splitlines() if line.startswith("| preflight"))
    assert "does not exist yet; the first publish creates it" in preflight
    assert "waited 0.0 s for the token's publish slot" in report.data


@pytest.mark.subprocess
def test_the_runs_logs_in_prefect_say_what_each_step_did_and_hold_no_secret(
    world: LocalStack, config: PipelineConfig
) -> None:
    rows = bq_rows_by_date(world)[DAY]
    daily.daily_refresh(config=config, run_date=DAY)  # creates the datasource
    state = daily.daily_refresh(config=config, run_date=DAY, return_state=True)  # a batch
    assert state.is_completed()

    logs = run_logs(state)
    lines = [f"{log.name} | {log.message}" for log in logs]
    text = "\n".join(lines)
    view, where = world.view, f"Marketing/Ads/{DATASOURCE}"
    expected = [
        rf"flows.daily \| Replacing {DAY} of {view} in Tableau datasource {where} "
        r"\(mode replace_date\)",
        r"blocks.ecs \| AWS credentials from ecs-full \(http://127.0.0.1:\d+/\S+\), expire 20\d\d-",
        rf"flows.bigquery \| Exporting {view} for {DAY} to gs://\S+ \(job bq_tableau_\S+\)",
        rf"flows.bigquery \| Exported {rows} rows in 1 files of {view} for {DAY} "
        r"\(job bq_tableau_\S+, \d+ bytes processed",
        rf"flows.gcs \| Downloaded 1 files, \d+ bytes, {rows} rows of {view} for {DAY}",
        rf"flows.hyper \| Built extract.hyper: {rows} rows, \d+ columns",
        r"blocks.tableau \| Signed in to http://127.0.0.1:\d+ site '\S*' with personal access "
        r"token '\S+' \(REST API 3.\d+\)",
        r"flows.tableau \| Tableau job (\S+) \(.+\) finished: finish code 0",
        rf"flows.tableau \| Published {rows} rows of {DAY} to {where} \(replace_date, job \S+\)",
    ]
    missing = [pattern for pattern in expected if not re.search(pattern, text)]
    assert missing == [], text
    # Each step's lines sit under its task run in the UI; nothing at DEBUG by default.
    export_line = next(log for log in logs if log.name == "flows.bigquery")
    assert export_line.task_run_id is not None
    assert min(log.level for log in logs) >= logging.INFO
    leaked = [secret for secret in secrets_of(world) if secret in text]
    assert leaked == []
    # The README's `prefect flow-run logs ID` shows the same lines.
    cli = subprocess.run(
        [
            str(Path(sys.executable).parent / "prefect"),
            "flow-run",
            "logs",
            str(logs[0].flow_run_id),
        ],
        env={**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert cli.returncode == 0, cli.stderr
    assert f"Published {rows} rows of {DAY}" in cli.stdout


def test_retry_decisions_are_logged_with_the_reason(
    world: LocalStack, config: PipelineConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    fail_once(
        monkeypatch, "export_view", ExportError("BigQuery backendError (injected)", retryable=True)
    )
    retried = run_logs(daily.daily_refresh(config=config, run_date=DAY, return_state=True))
    fail_once(monkeypatch, "build_hyper", OSError("disk full (injected)"))
    failed = run_logs(daily.daily_refresh(config=config, run_date=DAY, return_state=True))

    messages = [log.message for log in retried + failed if log.name == "flows.errors"]
    assert messages == [
        "export attempt 1 of 3 failed with ExportError: BigQuery backendError (injected). "
        "Transient: retrying.",
        "build attempt 1 of 3 failed with OSError: disk full (injected). "
        "Permanent: not retrying; fix the cause.",
    ]


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ExportError("BigQuery backendError (injected)", retryable=True), ExportError),
        (ConnectionResetError("connection reset (injected)"), ConnectionResetError),
    ],
)
def test_once_the_retries_are_spent_the_error_says_so(
    world: LocalStack,
    config: PipelineConfig,
    monkeypatch: pytest.MonkeyPatch,
    exc: Exception,
    expected: type[Exception],
) -> None:
    calls: list[int] = []

    def always_fails(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        raise exc

    monkeypatch.setattr(flows.steps, "export_view", always_fails)

    state = daily.daily_refresh(config=config, run_date=DAY, return_state=True)

    assert len(calls) == config.retry.retries + 1
    with pytest.raises(expected) as raised:
        state.result()
    said = str(raised.value) + "".join(getattr(raised.value, "__notes__", ()))
    assert "The export step was retried 2 time(s) (retry.retries) and failed each time" in said
    report = Artifact.get("run-report")
    assert report is not None and "retried 2 time(s)" in report.data
    assert world.tableau.datasources == {}


def test_a_run_failing_before_its_first_step_leaves_a_report_and_a_history_row(
    world: LocalStack, config: PipelineConfig
) -> None:
    missing_block = config.model_copy(update={"credentials_block": "no-such-block"})

    state = daily.daily_refresh(config=missing_block, run_date=DAY, return_state=True)

    assert state.is_failed()
    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    report = next(a for a in artifacts if a.key == "run-report")
    assert "failed" in report.data and "no-such-block" in report.data
    assert "Save it first" in report.data  # what to do
    history = next(a for a in artifacts if a.key == "ad-performance-daily-history")
    newest = json.loads(history.data)[0]
    assert newest["flow_run_id"] == str(run_id) and newest["status"] == "failed"
    assert newest["run_date"] == DAY.isoformat()


def test_a_run_with_invalid_parameters_leaves_a_report_saying_so(world: LocalStack) -> None:
    bad = world.pipeline_config().model_dump(mode="json")
    bad["bigquery"]["view"] = "not-a-view"  # passes the JSON schema, fails PipelineConfig

    state = daily.daily_refresh(config=bad, run_date=DAY, return_state=True)

    assert state.is_failed()
    with get_client(sync_client=True) as client:
        (report,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
                key=ArtifactFilterKey(any_=["run-report"]),
            )
        )
    assert "Validation of flow parameters failed" in report.data
    assert "must be fully qualified as project.dataset.view" in report.data
    assert "Fix them in prefect.yaml" in report.data


def test_rerun_and_backfilled_days_never_duplicate(
    world: LocalStack, config: PipelineConfig
) -> None:
    expected = bq_rows_by_date(world)
    earlier = SEEDED[2]

    daily.daily_refresh(config=config, run_date=DAY)
    daily.daily_refresh(config=config, run_date=earlier)  # an older day in the middle
    daily.daily_refresh(config=config, run_date=DAY)  # the same day again

    assert world.tableau.rows_by_date(DATASOURCE) == {
        DAY: expected[DAY],
        earlier: expected[earlier],
    }
    history = Artifact.get("ad-performance-daily-history")
    assert history is not None
    rows = json.loads(history.data)
    assert [r["run_date"] for r in rows[:3]] == [
        DAY.isoformat(),
        earlier.isoformat(),
        DAY.isoformat(),
    ]
    assert all(r["status"] == "succeeded" for r in rows[:3])


def test_scheduled_run_processes_yesterday_in_tokyo_of_its_scheduled_time(
    world: LocalStack, config: PipelineConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Scheduled for 06:00 JST on DAY+1 (21:00 UTC on DAY), started late: still DAY.
    scheduled = f"{DAY.isoformat()}T21:00:00+00:00"
    monkeypatch.setenv("PREFECT__RUNTIME__FLOW_RUN__SCHEDULED_START_TIME", scheduled)
    expected = bq_rows_by_date(world)

    daily.daily_refresh(config=config)

    assert world.tableau.rows_by_date(DATASOURCE) == {DAY: expected[DAY]}


@pytest.mark.parametrize(
    ("run_date", "message"),
    [(date(2099, 1, 1), "in the future"), (date(2000, 1, 1), "before earliest_date")],
)
def test_invalid_date_is_refused_before_any_side_effect(
    world: LocalStack, config: PipelineConfig, run_date: date, message: str
) -> None:
    requests_before = len(world.identity.requests)

    with pytest.raises(ConfigError, match=message):
        daily.daily_refresh(config=config, run_date=run_date)

    assert len(world.identity.requests) == requests_before  # no credentials exchanged
    assert world.staged_objects() == []
    assert world.tableau.datasources == {}


@pytest.mark.parametrize(
    ("step", "exc"),
    [
        ("export_view", ExportError("BigQuery backendError (injected)", retryable=True)),
        ("download_export", ConnectionResetError("connection reset (injected)")),
    ],
)
def test_transient_failure_in_a_step_is_retried_within_the_run(
    world: LocalStack,
    config: PipelineConfig,
    monkeypatch: pytest.MonkeyPatch,
    step: str,
    exc: Exception,
) -> None:
    expected = bq_rows_by_date(world)
    calls = fail_once(monkeypatch, step, exc)

    daily.daily_refresh(config=config, run_date=DAY)

    assert len(calls) == 2  # failed once, retried once
    assert world.tableau.rows_by_date(DATASOURCE) == {DAY: expected[DAY]}


def test_permanent_failure_fails_at_once_and_a_rerun_is_exact(
    world: LocalStack, config: PipelineConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = bq_rows_by_date(world)
    calls = fail_once(monkeypatch, "build_hyper", OSError("disk hiccup (injected)"))

    with pytest.raises(OSError, match="injected"):
        daily.daily_refresh(config=config, run_date=DAY)
    assert len(calls) == 1  # an OSError is not transient: no retry
    assert world.tableau.datasources == {}

    daily.daily_refresh(config=config, run_date=DAY)  # the rerun (build works again)

    assert len(calls) == 2
    assert world.tableau.rows_by_date(DATASOURCE) == {DAY: expected[DAY]}


def test_files_that_differ_from_bigquerys_exported_count_fail_the_build_and_change_nothing(
    world: LocalStack, config: PipelineConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = bq_rows_by_date(world)
    daily.daily_refresh(config=config, run_date=DAY)
    rows_before = world.tableau.rows(DATASOURCE, order_by="1, 2, 3, 4")
    real = flows.steps.export_view

    def one_more_row(*args: Any, **kwargs: Any) -> Any:  # BigQuery's count, not the files'
        manifest = real(*args, **kwargs)
        return dataclasses.replace(manifest, rows=manifest.rows + 1)

    monkeypatch.setattr(flows.steps, "export_view", one_more_row)

    with pytest.raises(BuildError) as raised:
        daily.daily_refresh(config=config, run_date=DAY)
    rows = expected[DAY]
    assert f"manifest says {rows + 1} rows but the 1 Parquet files hold {rows}" in str(raised.value)
    assert world.tableau.rows(DATASOURCE, order_by="1, 2, 3, 4") == rows_before
    report = Artifact.get("run-report")
    assert report is not None and "BuildError" in report.data


def test_publish_failures_retry_or_fail_then_a_rerun_is_exact(
    world: LocalStack, config: PipelineConfig
) -> None:
    expected = bq_rows_by_date(world)
    daily.daily_refresh(config=config, run_date=DAY)

    # A 503 from Tableau is transient: the publish task retries and the run succeeds.
    world.tableau.fail("PATCH", r"/datasources/[^/]+/data", status=503, code="503000", times=1)
    daily.daily_refresh(config=config, run_date=DAY)
    assert world.tableau.rows_by_date(DATASOURCE) == {DAY: expected[DAY]}

    # A failed Tableau job is permanent: the run fails, the day is untouched, a rerun fixes it.
    world.tableau.fail_jobs()
    with pytest.raises(PublishError):
        daily.daily_refresh(config=config, run_date=SEEDED[1])
    assert world.tableau.rows_by_date(DATASOURCE) == {DAY: expected[DAY]}
    daily.daily_refresh(config=config, run_date=SEEDED[1])
    assert world.tableau.rows_by_date(DATASOURCE) == {
        DAY: expected[DAY],
        SEEDED[1]: expected[SEEDED[1]],
    }
    report = Artifact.get("run-report")
    assert report is not None and "succeeded" in report.data


def test_a_connected_app_publishes_without_the_tokens_slot(
    world: LocalStack, config: PipelineConfig
) -> None:
    from blocks import TableauServer

    ((client_id, (secret_id, secret_value)),) = world.tableau.apps.items()
    app = TableauServer(
        server_url=world.tableau.url,
        site=world.tableau.site_content_url,
        client_id=client_id,
        secret_id=secret_id,
        secret_value=secret_value,
        username=next(iter(world.tableau.users)),
    )
    app.save("tableau-connected-app", overwrite=True)
    config = config.model_copy(
        update={"tableau": config.tableau.model_copy(
            update={"server_block": "tableau-connected-app"}
        )}
    )  # fmt: skip

    daily.daily_refresh(config=config, run_date=DAY)

    assert world.tableau.rows_by_date(DATASOURCE) == {DAY: bq_rows_by_date(world)[DAY]}
    report = Artifact.get("run-report")
    assert report is not None and "connected app: no publish slot" in report.data
    with get_client(sync_client=True) as client:
        names = {limit.name for limit in client.read_global_concurrency_limits(limit=200)}
    assert app.concurrency_key not in names


# -- refused before BigQuery spends: the preflight ------------------------------------------


def _changed_view(stack: LocalStack) -> str:
    """The mart's view with one more column: a view that changed shape upstream."""
    changed = f"{stack.view}_v2"
    stack.bigquery_client().query(
        f"CREATE OR REPLACE VIEW `{changed}` AS SELECT *, 1 AS extra_clicks FROM `{stack.view}`"
    ).result()
    return changed


@pytest.mark.parametrize(
    ("hole", "message"),
    [
        ({"tableau": {"datasource": ""}}, "tableau.datasource '' must be a name"),
        ({"gcs": {"prefix": "a//b"}}, "gcs.prefix 'a//b' must be a relative path"),
        ({"work_dir": "FILE"}, "is a file, not a directory"),
    ],
)
def test_config_holes_are_refused_before_any_side_effect(
    world: LocalStack, config: PipelineConfig, tmp_path: Path, hole: dict, message: str
) -> None:
    daily.daily_refresh(config=config, run_date=SEEDED[1])  # the datasource exists
    world.clear_staging()
    rows_before = world.tableau.rows(DATASOURCE, order_by="1, 2, 3, 4")
    requests_before = len(world.identity.requests)
    bad = config.model_dump(mode="json")
    for key, value in hole.items():
        if value == "FILE":
            (tmp_path / "scratch").write_text("not a directory")
            value = str(tmp_path / "scratch")
        bad[key] = {**bad[key], **value} if isinstance(value, dict) else value

    state = daily.daily_refresh(config=bad, run_date=DAY, return_state=True)

    assert state.is_failed() and message in (state.message or "")
    assert len(world.identity.requests) == requests_before  # not even a credential exchange
    assert world.staged_objects() == []
    assert world.tableau.rows(DATASOURCE, order_by="1, 2, 3, 4") == rows_before


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("wrong-token", "Tableau rejected the sign-in of personal access token"),
        ("missing-project", "Tableau project 'Elsewhere' not found on site"),
        ("view-changed-shape", "+ extra_clicks: BIGINT (new column)"),
        ("timestamp-date-column", "is a TIMESTAMP, not a DATE"),
        ("key-not-in-view", "tableau.upsert_keys ['no_such_key'] are not columns of the view"),
    ],
)
def test_the_preflight_refuses_before_bigquery_spends_and_changes_nothing(
    world: LocalStack,
    config: PipelineConfig,
    monkeypatch: pytest.MonkeyPatch,
    fault: str,
    message: str,
) -> None:
    daily.daily_refresh(config=config, run_date=SEEDED[1])  # the datasource exists
    world.clear_staging()
    exports = fail_once(monkeypatch, "export_view", AssertionError("no export may run"))
    if fault == "wrong-token":
        world.tableau.fail_signin()
    elif fault == "missing-project":
        config = config.model_copy(
            update={"tableau": config.tableau.model_copy(
                update={"project": "Elsewhere", "create_project": False}
            )}
        )  # fmt: skip
    elif fault == "view-changed-shape":
        config = config.model_copy(
            update={"bigquery": config.bigquery.model_copy(update={"view": _changed_view(world)})}
        )
    elif fault == "timestamp-date-column":
        config = config.model_copy(
            update={"bigquery": config.bigquery.model_copy(update={"date_column": "updated_at"})}
        )
    else:
        config = config.model_copy(
            update={"tableau": config.tableau.model_copy(
                update={"mode": "upsert", "upsert_keys": ("no_such_key",)}
            )}
        )  # fmt: skip
    rows_before = world.tableau.rows(DATASOURCE, order_by="1, 2, 3, 4")
    projects_before = dict(world.tableau.projects)

    state = daily.daily_refresh(config=config, run_date=DAY, return_state=True)

    assert state.is_failed()
    with pytest.raises(PipelineError) as raised:
        state.result()
    assert message in str(raised.value)
    assert exports == []  # no export job: no byte billed
    assert world.staged_objects() == []
    assert world.tableau.rows(DATASOURCE, order_by="1, 2, 3, 4") == rows_before
    assert world.tableau.projects == projects_before
    report = Artifact.get("run-report")
    assert report is not None and message in report.data


def test_empty_day_fails_with_the_reason(world: LocalStack, config: PipelineConfig) -> None:
    with pytest.raises(PipelineError, match="no rows"):
        daily.daily_refresh(config=config, run_date=GAP)
    assert world.tableau.datasources == {}
    report = Artifact.get("run-report")
    assert report is not None and "failed" in report.data and "no rows" in report.data


@pytest.mark.parametrize("export_writes", ["a 0-row file", "no file"])
def test_an_allowed_empty_day_removes_that_dates_rows(
    world: LocalStack, config: PipelineConfig, monkeypatch: pytest.MonkeyPatch, export_writes: str
) -> None:
    expected = bq_rows_by_date(world)
    for day in (SEEDED[1], DAY):
        daily.daily_refresh(config=config, run_date=day)
    # Upstream then removed all of DAY (invalid traffic): the mart has no rows for it any more.
    restated = f"{world.view}_restated"
    world.bigquery_client().query(
        f"CREATE OR REPLACE VIEW `{restated}` AS SELECT * FROM `{world.view}` "
        f"WHERE date != DATE '{DAY.isoformat()}'"
    ).result()
    allow = config.model_copy(
        update={
            "bigquery": config.bigquery.model_copy(update={"view": restated}),
            "gcs": config.gcs.model_copy(update={"empty_day": "allow"}),
        }
    )
    if export_writes == "no file":  # what BigQuery may do for an empty result
        real = flows.steps.export_view

        def export_without_files(*args: Any, **kwargs: Any) -> Any:
            manifest = real(*args, **kwargs)
            for blob in world.gcs.client(world.project).list_blobs(
                BUCKET, prefix=manifest.uri_prefix.split("/", 3)[3]
            ):
                blob.delete()
            return manifest

        monkeypatch.setattr(flows.steps, "export_view", export_without_files)

    result = daily.daily_refresh(config=allow, run_date=DAY)

    assert result["rows"] == 0
    assert world.tableau.rows_by_date(DATASOURCE) == {SEEDED[1]: expected[SEEDED[1]]}
    assert [action["action"] for action in world.tableau.update_batches[-1]] == ["delete"]


# -- backfill through run_deployment on a local process work pool ------------------------------


@pytest.fixture
def process_worker(world: LocalStack, config: PipelineConfig, tmp_path: Path) -> Iterator[str]:
    """Pipeline `local-ads`: its per-date deployment on a process pool, holding its config as
    prefect.yaml's do, and a worker running its flow runs. Yields the pipeline's name."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    pool = "local-process"
    # The pool may exist from an earlier test of this session.
    with get_client(sync_client=True) as client, suppress(ObjectAlreadyExists):
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    repo = Path(__file__).resolve().parents[1]
    named = config.model_copy(update={"name": "local-ads"})
    daily.daily_refresh.from_source(
        source=str(repo), entrypoint="flows/daily.py:daily_refresh"
    ).deploy(
        name="local-ads-per-date",  # not prefect.yaml's: test_deploy's are ECS
        work_pool_name=pool,
        parameters={"config": named.model_dump(mode="json")},
        print_next_steps=False,
    )
    env = {
        **os.environ,
        **world.environ(),
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "1",
    }
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--limit", "2"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=repo,
    )
    try:
        yield "local-ads"
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        log.close()


# Each child is a fresh process (import, load the flow, run): allow for a slow machine. Three
# dates, two at a time; how ranges and lists become runs is test_backfill.py's (no server).
@pytest.mark.subprocess
@pytest.mark.timeout(900)
def test_backfill_runs_each_date_as_its_own_deployment_run(
    world: LocalStack,
    config: PipelineConfig,
    process_worker: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import flows.backfill

    monkeypatch.setattr(flows.backfill, "POLL_SECONDS", 1.0)
    expected = bq_rows_by_date(world)
    dates = [SEEDED[1], GAP, SEEDED[3]]
    listed = sorted(d.isoformat() for d in dates)

    planned = backfill(pipeline=process_worker, dates=dates, dry_run=True, return_state=True)
    plan = planned.result()
    assert [p["run_date"] for p in plan] == listed
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(planned.state_details.flow_run_id)
    assert run.name == f"backfill-local-ads-{','.join(listed)}-plan"
    unknown = backfill(pipeline="local-adz", dates=dates, return_state=True)
    with pytest.raises(ConfigError, match=r"deployed pipelines: .*local-ads.*Fix the name"):
        unknown.result()
    assert world.tableau.datasources == {}

    daily.daily_refresh(config=config, run_date=SEEDED[1])  # the backfill reruns a published day
    state = backfill(pipeline=process_worker, dates=dates, max_concurrency=2, return_state=True)

    with pytest.raises(PipelineError, match=rf"1 date\(s\) failed \({GAP.isoformat()}\)"):
        state.result()
    ok = [d for d in dates if d != GAP]
    assert world.tableau.rows_by_date(DATASOURCE) == {d: expected[d] for d in ok}  # each once
    with get_client(sync_client=True) as client:
        (table,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
                type=ArtifactFilterType(any_=["table"]),
            )
        )
    rows = json.loads(table.data)
    assert [(r["run_date"], r["state"]) for r in rows] == [
        (GAP.isoformat(), "Failed"),
        (SEEDED[3].isoformat(), "Completed"),
        (SEEDED[1].isoformat(), "Completed"),
    ]
    assert "no rows" in rows[0]["message"]
    assert [r["flow_run"] for r in rows] == [f"local-ads-{day}" for day in listed]


def test_a_report_that_cannot_be_written_does_not_fail_the_run(
    world: LocalStack, config: PipelineConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> None:
        raise RuntimeError("artifact API down (injected)")

    monkeypatch.setattr(flows.report, "publish_report", broken)
    expected = bq_rows_by_date(world)

    result = daily.daily_refresh(config=config, run_date=DAY)

    assert result["rows"] == expected[DAY]
    assert world.tableau.rows_by_date(DATASOURCE) == {DAY: expected[DAY]}
