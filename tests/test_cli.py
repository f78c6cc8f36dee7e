"""`python -m flows run|plan|reconcile` on every stand-in, through a catalog of the stand-ins.

The catalog (written per module) has the real catalog's pipeline names, each reading the
seeded mart's one view into its own datasource: `campaigns` (a 3-day window), `budgets` (one
date) and `conversions` (one date, in a Tableau project that does not exist yet). The CLI finds
it through PIPELINES_CATALOG, so the commands of docs/cli.md and of the README run verbatim.
Most commands run in this process (`flows.cli.main`); one runs as `python -m flows`.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort, FlowRunSort
from prefect.settings import PREFECT_API_URL
from rich.console import Console

from flows import catalog, progress
from flows.bigquery import DayFingerprint
from flows.cli import main
from flows.errors import CredentialsError, ExportError, PublishError, SchemaDriftError
from flows.plan import cannot_answer
from flows.reconcile import DateCheck, compare_day, next_daily_run_date, next_step
from flows.run import run_pipeline
from flows.tableau import SignInError
from flows.window import state_object
from standins.datamart import restate, seed_ad_datamart
from standins.stack import BUCKET, CREDENTIALS_BLOCK, TABLEAU_BLOCK, LocalStack
from tests.plugins.stack import StartStack

REPO = Path(__file__).resolve().parents[1]
ROWS = 200
ZONE = "Asia/Tokyo"
YESTERDAY = datetime.now(ZoneInfo(ZONE)).date() - timedelta(days=1)
RECENT = tuple(YESTERDAY - timedelta(days=i) for i in (2, 1, 0))  # campaigns' default window
DOC_DAYS = (date(2026, 11, 12), date(2026, 11, 13), date(2026, 11, 14))  # the docs' dates
SEEDED = tuple(sorted({*DOC_DAYS, *RECENT}))
UNSEEDED = YESTERDAY - timedelta(days=5)  # between the docs' days and the recent ones: empty
DATASOURCES = {
    "campaigns": "campaign_performance_daily",
    "budgets": "budget_pacing_daily",
    "conversions": "conversions_daily",
}


# -- the pure parts ---------------------------------------------------------------------------


def fp(rows: int, digest: str = "", **sums: float) -> DayFingerprint:
    return DayFingerprint(rows, digest, sums)


def test_the_record_agrees_on_rows_and_digest_only() -> None:
    assert compare_day(fp(3, "1:2"), fp(3, "1:2"), by="record") == ()
    assert compare_day(fp(3, "1:2"), fp(3, "9:9"), by="record") == (
        "same rows, other values (the digest differs)",
    )
    assert compare_day(fp(3, "1:2"), fp(2, "1:1"), by="record") == (
        "rows 3 in BigQuery, 2 in Tableau",
    )
    assert compare_day(fp(0), None, by="record") == ()  # nothing on either side
    assert compare_day(fp(5, "1:2"), None, by="record") == ("rows 5 in BigQuery, 0 in Tableau",)


def test_the_extract_agrees_on_rows_and_sums_within_a_relative_tolerance() -> None:
    ours = fp(3, "x", cost=1234.5678, clicks=10.0)
    assert compare_day(ours, fp(3, cost=1234.5678 * (1 + 1e-12), clicks=10.0), by="extract") == ()
    moved = compare_day(ours, fp(3, cost=1234.0, clicks=10.0), by="extract")
    assert moved == ("cost 1,234.57 in BigQuery, 1,234.00 in Tableau",)
    close = compare_day(ours, fp(3, cost=1234.5678 + 1e-4, clicks=10.0), by="extract")
    assert close == ("cost 1,234.567800 in BigQuery, 1,234.567900 in Tableau",)  # digits shown
    # A column the extract lacks is not compared per date (the command lists it once).
    assert compare_day(ours, fp(3, clicks=10.0), by="extract") == ()
    assert compare_day(fp(0, cost=0.0), None, by="extract") == ()
    assert compare_day(ours, None, by="extract") == ("rows 3 in BigQuery, 0 in Tableau",)


def test_the_next_daily_run_date_is_the_day_before_the_next_scheduled_time() -> None:
    tokyo = ZoneInfo(ZONE)
    before = datetime(2026, 11, 20, 5, 59, tzinfo=tokyo)
    after = datetime(2026, 11, 20, 6, 0, tzinfo=tokyo)
    assert next_daily_run_date(before, ZONE, 6, 0) == date(2026, 11, 19)
    assert next_daily_run_date(after, ZONE, 6, 0) == date(2026, 11, 20)  # tomorrow's run
    # 21:00 UTC on the 19th is 06:00 on the 20th in Tokyo.
    assert next_daily_run_date(datetime(2026, 11, 19, 20, 0, tzinfo=UTC), ZONE, 6, 0) == date(
        2026, 11, 19
    )


def _disagreeing(day: date, rows: int = 5) -> DateCheck:
    return DateCheck(day, fp(rows, "a"), fp(rows - 1, "b"), False, ("rows",))


def test_the_next_step_of_a_date_that_disagrees() -> None:
    window = [date(2026, 11, 18), date(2026, 11, 19), date(2026, 11, 20)]
    kw: dict[str, Any] = {"next_window": window, "empty_day": "fail"}

    restated = next_step(
        "campaigns", _disagreeing(window[0]), lookback_days=3, restated_since_recorded=True, **kw
    )
    assert restated.startswith("the next daily run (for 2026-11-20) republishes it")
    assert restated.endswith("now: python -m flows run --pipeline campaigns --date 2026-11-18")
    # Tableau changed behind the pipeline's back: the record agrees, a window would skip it.
    edited = next_step(
        "campaigns", _disagreeing(window[0]), lookback_days=3, restated_since_recorded=False, **kw
    )
    assert edited == "python -m flows run --pipeline campaigns --date 2026-11-18 --lookback 1"
    old = next_step(
        "campaigns",
        _disagreeing(date(2026, 11, 1)),
        lookback_days=3,
        restated_since_recorded=True,
        **kw,
    )
    assert old == "python -m flows run --pipeline campaigns --date 2026-11-01"
    one = next_step(
        "budgets", _disagreeing(window[-1]), lookback_days=1, restated_since_recorded=False, **kw
    )
    assert one.startswith("the next daily run (for 2026-11-20) publishes it")
    earlier = next_step(
        "budgets",
        _disagreeing(window[0]),
        lookback_days=1,
        restated_since_recorded=False,
        next_window=window[-1:],
        empty_day="fail",
    )
    assert earlier == "python -m flows run --pipeline budgets --date 2026-11-18"
    gone = DateCheck(window[0], fp(0), fp(4, "b"), False, ("rows",))
    empty = next_step("budgets", gone, lookback_days=1, restated_since_recorded=True, **kw)
    assert "gcs.empty_day=fail" in empty and "empty_day: allow" in empty


def test_what_counts_as_no_answer() -> None:
    assert cannot_answer(CredentialsError("the condition rejected it", retryable=False))
    assert cannot_answer(SignInError("Tableau rejected the sign-in", retryable=False))
    assert cannot_answer(httpx.ConnectError("Prefect API down"))
    assert cannot_answer(ConnectionResetError())
    assert cannot_answer(ExportError("BigQuery 503", retryable=True))
    assert not cannot_answer(ExportError("over max_bytes_billed", retryable=False))
    assert not cannot_answer(SchemaDriftError("columns differ", retryable=False))
    assert not cannot_answer(PublishError("project not found", retryable=False))


@dataclass
class Recorder:
    events: list[tuple[str, str]]

    def started(self, step: str) -> None:
        self.events.append(("started", step))

    def finished(self, step: str, seconds: float) -> None:
        self.events.append(("finished", step))

    def failed(self, step: str, seconds: float, error: BaseException) -> None:
        self.events.append(("failed", step))


def test_steps_tell_the_listener_of_their_context_and_nobody_else() -> None:
    recorder = Recorder([])
    with progress.step("unheard"):
        pass
    with progress.listening(recorder):
        with progress.step("export"):
            pass
        with pytest.raises(ValueError), progress.step("publish"):
            raise ValueError("boom")
    with progress.step("after"):
        pass
    assert recorder.events == [
        ("started", "export"),
        ("finished", "export"),
        ("started", "publish"),
        ("failed", "publish"),
    ]


def test_the_display_shares_the_log_handlers_console_and_gives_it_back() -> None:
    from prefect.logging.handlers import PrefectConsoleHandler

    handler = PrefectConsoleHandler()
    theirs = handler.console
    log = __import__("logging").getLogger("tests.cli.display")
    log.addHandler(handler)
    log.propagate = False
    terminal = Console(file=__import__("io").StringIO(), force_terminal=True, width=100)
    try:
        with progress.StepDisplay(terminal) as display, progress.listening(display):
            assert handler.console is terminal  # log lines go above the live display
            with progress.step("download"):
                log.warning("a log line during the step")
        assert handler.console is theirs
    finally:
        log.removeHandler(handler)
    shown = terminal.file.getvalue()  # type: ignore[attr-defined]
    assert "a log line during the step" in shown and "download" in shown and "✓" in shown


# -- on the stand-ins -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(prefect_server: None, start_stack: StartStack) -> Iterator[LocalStack]:
    with start_stack(SEEDED, ROWS) as running:
        yield running


def write_catalog(path: Path, stack: LocalStack, *, create_project: bool = True) -> Path:
    """The stand-ins' catalog: the real one's names, every view the seeded mart's."""
    base = stack.pipeline_config()
    document = {
        "schedule": {"hour": 6, "minute": 0},
        "defaults": {
            "credentials_block": CREDENTIALS_BLOCK,
            "timezone": ZONE,
            "earliest_date": min(SEEDED).isoformat(),
            "bigquery": {"location": base.bigquery.location},
            "gcs": {"bucket": base.gcs.bucket, "prefix": base.gcs.prefix, "download_workers": 4},
            "tableau": {
                "server_block": TABLEAU_BLOCK,
                "project": base.tableau.project,
                "create_project": create_project,
            },
            "retry": {"retries": 1, "backoff_seconds": 0},
        },
        "pipelines": [
            {
                "name": "campaigns",
                "view": stack.view,
                "datasource": DATASOURCES["campaigns"],
                "lookback_days": 3,
            },
            {
                "name": "budgets",
                "view": stack.view,
                "datasource": DATASOURCES["budgets"],
                "lookback_days": 1,
            },
            {
                "name": "conversions",
                "view": stack.view,
                "datasource": DATASOURCES["conversions"],
                "lookback_days": 1,
                "project": "Marketing/Conversions",
            },
        ],
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def catalog_file(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_catalog(tmp_path_factory.mktemp("catalog") / "pipelines.yaml", stack)


@pytest.fixture
def cli_world(world: LocalStack, catalog_file: Path, monkeypatch: pytest.MonkeyPatch) -> LocalStack:
    """The stack with Tableau and staging (and so the records) empty; the CLI reads the
    stand-ins' catalog."""
    monkeypatch.setenv("PIPELINES_CATALOG", str(catalog_file))
    return world


@pytest.fixture
def restated(cli_world: LocalStack) -> Iterator[None]:
    """The test restates rows; the mart is seeded again afterwards."""
    yield
    seed_ad_datamart(cli_world.bigquery_client(), cli_world.project, "ads_mart", SEEDED, ROWS)


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    def run(*argv: str) -> Result:
        capsys.readouterr()
        code = main(list(argv))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def pipeline(name: str) -> catalog.Pipeline:
    return catalog.load(Path(os.environ["PIPELINES_CATALOG"])).get(name)


def tableau_rows(stack: LocalStack, name: str) -> dict[date, int]:
    return stack.tableau.rows_by_date(DATASOURCES[name]) if stack.tableau.datasources else {}


def batches(stack: LocalStack) -> int:
    return len(stack.tableau.update_batches)


def record_generation(stack: LocalStack, name: str) -> int | None:
    blob = (
        stack.gcs.client(stack.project).bucket(BUCKET).get_blob(state_object(pipeline(name).config))
    )
    return None if blob is None else blob.generation


def flow_run_count() -> int:
    with get_client(sync_client=True) as client:
        return client.count_flow_runs()


emulated = [pytest.mark.emulator, pytest.mark.hyper, pytest.mark.prefect]


def test_help_lists_the_commands_exit_codes_and_the_catalog_variable(cli) -> None:
    top = cli("--help")
    assert top.code == 0
    for word in ("run", "plan", "reconcile", "exit codes:", "PIPELINES_CATALOG"):
        assert word in top.out
    for command in ("run", "plan", "reconcile"):
        shown = cli(command, "--help")
        assert shown.code == 0 and "--pipeline" in shown.out and "3  a system could" in shown.out
    assert cli("run").code == 2  # --pipeline is required
    assert cli("plan", "--pipeline", "budgets", "--date", "14/11/2026").code == 2


def test_the_catalog_comes_from_the_variable_unless_given(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PIPELINES_CATALOG", raising=False)
    repos = REPO / "deployments/pipelines.yaml"
    assert f"3 pipeline(s) in {repos}" in cli("pipelines").out  # the catalog beside the code
    other = tmp_path / "other.yaml"
    other.write_text(repos.read_text().replace("- name: budgets", "- name: pacing"))
    monkeypatch.setenv("PIPELINES_CATALOG", str(other))
    listed = cli("pipelines").out
    assert f"in {other}" in listed and "pacing" in listed
    assert f"in {repos}" in cli("--catalog", str(repos), "pipelines").out  # the option wins
    unknown = cli("plan", "--pipeline", "budget")
    assert unknown.code == 2 and f"No pipeline 'budget' in {other}" in unknown.err


@pytest.mark.usefixtures("cli_world")
class TestRun:
    pytestmark = emulated

    def test_a_run_publishes_yesterday_and_prints_its_report(self, cli_world, cli) -> None:
        runs = flow_run_count()
        result = cli("run", "--pipeline", "budgets")

        assert result.code == 0, result.err
        assert f"Date: {YESTERDAY} (yesterday in {ZONE})" in result.out
        assert tableau_rows(cli_world, "budgets") == {YESTERDAY: ROWS}
        assert "Status: succeeded" in result.out and "Stages" in result.out  # the report
        assert f"flow run 'budgets-{YESTERDAY}': Completed" in result.out
        assert flow_run_count() == runs + 1
        with get_client(sync_client=True) as client:
            (report,) = client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["run-report"])),
                limit=1,
                sort=ArtifactSort.UPDATED_DESC,
            )
        assert f"budget_pacing_daily for {YESTERDAY}" in str(report.data)

    def test_accept_quality_failures_reaches_the_flow_run(self, cli_world, cli) -> None:
        result = cli("run", "--pipeline", "budgets", "--accept-quality-failures")

        assert result.code == 0, result.err
        with get_client(sync_client=True) as client:
            (run,) = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)
        assert run.name == f"budgets-{YESTERDAY}"
        assert run.parameters["accept_quality_failures"] is True

    def test_a_run_tells_its_steps_to_the_listener(self, cli_world) -> None:
        recorder = Recorder([])
        with progress.listening(recorder):
            outcome = run_pipeline(pipeline("campaigns"), YESTERDAY)
        assert outcome.completed and outcome.report and "## Window: 3 of 3" in outcome.report
        steps = [
            "preflight", "fingerprint", "export", "download", "build", "quality", "publish",
            "record",
        ]  # fmt: skip
        assert recorder.events == [(e, s) for s in steps for e in ("started", "finished")]

    def test_a_date_in_the_future_is_bad_input(self, cli_world, cli) -> None:
        tomorrow = YESTERDAY + timedelta(days=2)
        result = cli("run", "--pipeline", "budgets", "--date", tomorrow.isoformat())
        assert result.code == 2
        assert f"run_date {tomorrow} is in the future" in result.err
        assert cli_world.tableau.datasources == {}

    def test_a_failed_run_exits_1_with_its_message(self, cli_world, cli) -> None:
        cli_world.tableau.fail_signin()
        result = cli("run", "--pipeline", "budgets", "--date", DOC_DAYS[-1].isoformat())
        assert result.code == 1
        assert "error: Tableau rejected the sign-in of personal access token" in result.err
        assert "Failed" in result.out and "What went wrong" in result.out  # the report
        assert cli_world.tableau.datasources == {}


@pytest.mark.usefixtures("cli_world")
class TestPlan:
    pytestmark = emulated

    def test_a_plan_changes_nothing(self, cli_world, cli) -> None:
        runs = flow_run_count()
        projects = {p.name for p in cli_world.tableau.projects.values()}

        result = cli("plan", "--pipeline", "conversions")

        assert result.code == 0, result.err
        assert f"Plan of conversions for {YESTERDAY}" in result.out
        assert f"rows     {ROWS} in BigQuery for {YESTERDAY}" in result.out
        assert "a run would create project 'Marketing' (tableau.create_project)" in result.out
        assert "✓ the run would proceed" in result.out
        assert {p.name for p in cli_world.tableau.projects.values()} == projects  # not created
        assert cli_world.tableau.datasources == {}
        assert cli_world.staged_objects() == []  # no export, no record
        assert flow_run_count() == runs

    @pytest.mark.usefixtures("restated")
    def test_a_plan_shows_the_dates_a_restatement_changed(self, cli_world, cli) -> None:
        assert cli("run", "--pipeline", "campaigns").code == 0
        generation, staged = record_generation(cli_world, "campaigns"), cli_world.staged_objects()
        sent, rows = batches(cli_world), tableau_rows(cli_world, "campaigns")
        restate(cli_world.bigquery_client(), cli_world.source_table, [RECENT[1]])

        result = cli("plan", "--pipeline", "campaigns")

        assert result.code == 0, result.err
        assert f"window   {RECENT[0]}..{RECENT[2]} (3 dates)" in result.out
        assert re.search(rf"{RECENT[1]}  changed    {ROWS} → {ROWS} rows; .*cost \+", result.out)
        assert f"{RECENT[0]}  unchanged  {ROWS} → {ROWS} rows" in result.out
        assert f"export   1 date ({RECENT[1]}): estimated 0 B of bigquery.max_bytes_billed" in (
            result.out
        )
        assert "Tableau  Marketing/Ads/campaign_performance_daily exists; its 14 published" in (
            result.out
        )
        assert record_generation(cli_world, "campaigns") == generation
        assert cli_world.staged_objects() == staged
        assert (batches(cli_world), tableau_rows(cli_world, "campaigns")) == (sent, rows)

    def test_a_missing_project_without_create_project_is_refused(
        self, cli_world, cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        strict = write_catalog(tmp_path / "strict.yaml", cli_world, create_project=False)
        monkeypatch.setenv("PIPELINES_CATALOG", str(strict))

        result = cli("plan", "--pipeline", "conversions", "--date", DOC_DAYS[-1].isoformat())

        assert result.code == 1
        assert "✗ the run would be refused at its preflight step:" in result.out
        assert "error: Tableau project 'Marketing' not found on site 'acme'" in result.err
        assert "set tableau.create_project=true" in result.err

    def test_an_empty_day_is_refused(self, cli_world, cli) -> None:
        result = cli("plan", "--pipeline", "budgets", "--date", UNSEEDED.isoformat())
        assert result.code == 1
        assert "refused at its row count step" in result.out
        assert f"the data mart has no rows for {UNSEEDED}" in result.err

    def test_a_refused_sign_in_leaves_the_question_open(self, cli_world, cli) -> None:
        cli_world.tableau.fail_signin()
        result = cli("plan", "--pipeline", "budgets")
        assert result.code == 3
        assert "error: could not get an answer: Tableau rejected the sign-in" in result.err


def delete_rows(stack: LocalStack, name: str, device: str) -> None:
    """Someone deletes rows in Tableau (the fake's store, as an update batch would)."""
    condition = {"op": "eq", "target-col": "device", "const": {"type": "string", "v": device}}
    action = {
        "action": "delete",
        "target-schema": "Extract",
        "target-table": "Extract",
        "condition": condition,
    }
    stack.tableau.store.apply(stack.tableau.datasource(DATASOURCES[name]).id, [action], None)


@pytest.mark.usefixtures("cli_world")
class TestReconcile:
    pytestmark = emulated

    @pytest.mark.usefixtures("restated")
    def test_a_published_window_agrees_and_a_restated_date_disagrees(self, cli_world, cli):
        assert cli("run", "--pipeline", "campaigns").code == 0

        auto = cli("reconcile", "--pipeline", "campaigns", "--days", "3")
        assert auto.code == 0, auto.err
        assert "Tableau's side (record): the record gs://" in auto.out
        assert "✓ all 3 date(s) agree" in auto.out
        extract = cli("reconcile", "--pipeline", "campaigns", "--days", "3", "--source", "extract")
        assert extract.code == 0, extract.err
        assert "Tableau's side (extract): the published extract of Marketing/Ads/" in extract.out

        restate(cli_world.bigquery_client(), cli_world.source_table, [RECENT[1]])
        for source in ("record", "extract"):
            result = cli("reconcile", "--pipeline", "campaigns", "--days", "3", "--source", source)
            assert result.code == 1, result.err
            assert "✗ 1 of 3 date(s) disagree:" in result.out
            line = next(x for x in result.out.splitlines() if x.startswith(f"  {RECENT[1]}"))
            why = "the digest differs" if source == "record" else "cost "
            assert why in line
            assert "next: the next daily run (for " in result.out
            assert f"now: python -m flows run --pipeline campaigns --date {RECENT[1]}" in result.out

    def test_rows_deleted_in_tableau_disagree_and_the_next_step_fixes_them(self, cli_world, cli):
        day = DOC_DAYS[-1]
        assert cli("run", "--pipeline", "budgets", "--date", day.isoformat()).code == 0
        delete_rows(cli_world, "budgets", "mobile")

        args = ("reconcile", "--pipeline", "budgets", "--end", day.isoformat(), "--days", "1")
        result = cli(*args)

        assert result.code == 1, result.err
        assert "Tableau's side (extract)" in result.out  # one date a run: no record
        left = tableau_rows(cli_world, "budgets")[day]
        assert f"  {day}  rows {ROWS} in BigQuery, {left} in Tableau" in result.out
        command = f"python -m flows run --pipeline {'budgets'} --date {day}"
        assert f"next: {command}" in result.out
        assert cli(*shlex.split(command)[3:]).code == 0  # the step, verbatim
        assert cli(*args).code == 0

    def test_a_datasource_that_does_not_exist_disagrees_on_every_date_with_rows(
        self, cli_world, cli
    ) -> None:
        result = cli(
            "reconcile", "--pipeline", "budgets", "--end", DOC_DAYS[-1].isoformat(), "--days", "4"
        )
        assert result.code == 1
        assert "budget_pacing_daily: it does not exist" in result.out
        assert "✗ 3 of 3 date(s) disagree:" in result.out  # clipped at earliest_date

    def test_a_refused_sign_in_cannot_check(self, cli_world, cli) -> None:
        cli_world.tableau.fail_signin()
        result = cli("reconcile", "--pipeline", "budgets", "--days", "2")
        assert result.code == 3
        assert "error: could not check: Tableau rejected the sign-in" in result.err

    def test_a_pipeline_of_one_date_has_no_record_to_compare(self, cli_world, cli) -> None:
        result = cli("reconcile", "--pipeline", "budgets", "--source", "record")
        assert result.code == 2 and "keeps no record" in result.err


# -- verbatim: `python -m flows` as a process, and the documented commands --------------------


@pytest.mark.subprocess
@pytest.mark.timeout(600)
@pytest.mark.usefixtures("cli_world")
@pytest.mark.emulator
@pytest.mark.hyper
@pytest.mark.prefect
def test_python_m_flows_run_as_a_process(cli_world: LocalStack, tmp_path: Path) -> None:
    env = {
        **os.environ,
        **cli_world.environ(),
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "PREFECT_HOME": str(tmp_path),
        "PYTHONWARNINGS": "ignore",
    }
    day = DOC_DAYS[0].isoformat()
    done = subprocess.run(
        [sys.executable, "-m", "flows", "run", "--pipeline", "budgets", "--date", day],
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
        cwd=tmp_path,
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert f"flow run 'budgets-{day}': Completed" in done.stdout
    assert "flows.tableau - Published 200 rows" in done.stderr  # the project's log lines
    assert tableau_rows(cli_world, "budgets") == {DOC_DAYS[0]: ROWS}


def documented_commands() -> list[str]:
    """The `python -m flows ...` commands of docs/cli.md and of the README's Command line
    section: the lines of their bash blocks (a VAR=value prefix allowed), then inline ones."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Command line\n", 1)[1].split("\n## ", 1)[0]
    texts = [section, (REPO / "docs/cli.md").read_text()]
    commands = []
    for text in texts:
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                if re.match(r"^([A-Z_]+=\S+ )*python -m flows\b", line):
                    commands.append(" ".join(line.split("#", 1)[0].split()))
        # Inline ones too, but not the bare program name.
        commands += re.findall(r"`(python -m flows [^`]+)`", text)
    return commands


@pytest.mark.timeout(900)
@pytest.mark.emulator
@pytest.mark.hyper
@pytest.mark.prefect
def test_every_documented_command_runs_verbatim(
    cli_world: LocalStack, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    commands = documented_commands()
    assert len(commands) >= 8
    assert any("reconcile --pipeline campaigns --end 2026-11-14" in c for c in commands)
    monkeypatch.chdir(REPO)  # the docs' relative paths are the repository's
    for command in commands:
        words = shlex.split(command)
        with pytest.MonkeyPatch.context() as env:  # VAR=value applies to its command only
            while "=" in words[0]:
                name, value = words.pop(0).split("=", 1)
                env.setenv(name, value)
            assert words[:3] == ["python", "-m", "flows"], command
            result = cli(*words[3:])
        assert result.code in (0, 1), f"{command}: exit {result.code}\n{result.out}\n{result.err}"
        assert result.out.strip(), command
        if "deployments/pipelines.yaml" in command:  # the repository's catalog, not the test's
            assert "3 pipeline(s) in deployments/pipelines.yaml" in result.out
        if "--end 2026-11-14 --days 1" in command:  # the docs' question about the 14th
            assert (
                "BigQuery against Tableau Marketing/Ads/campaign_performance_daily, 2026-11-14"
                in result.out
            )
