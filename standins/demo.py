"""The local demo: the real daily flow of two pipelines, twice for the same day, on stand-ins.

    ./dev demo            (or: uv run python -m standins.demo)

It starts every stand-in on 127.0.0.1 (`standins.stack`), saves the two blocks to Prefect's
embedded server (state kept in .demo/prefect), and, for each pipeline of the local catalog
(standins/pipelines.yaml: two views of one ad mart, each into its own Tableau datasource), runs
`daily_refresh` for four days and reruns the last one; it prints the rows per date of each
datasource before and after the rerun. Then a half-loaded day: yesterday loses two thirds of
its rows in BigQuery, the quality check refuses it (Tableau keeps the day), a rerun with
`accept_quality_failures` publishes it; the mart is restored and republished, and
`python -m flows reconcile` checks the last two days of each pipeline.
Nothing in flows/ or blocks/ knows it is a demo: only the configuration points at loopback.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from prefect.client.schemas.objects import Log, State

    from standins.stack import LocalStack

REPO = Path(__file__).resolve().parents[1]
DEMO_HOME = REPO / ".demo"


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows-per-day", type=int, default=5000, help="rows per day in the mart")
    parser.add_argument("--keep", action="store_true", help="keep the emulators' data dir")
    args = parser.parse_args(argv)

    # Prefect reads PREFECT_HOME when first imported: keep the demo's runs, blocks and
    # artifacts in .demo/prefect, where `prefect server start` below finds them again.
    os.environ.setdefault("PREFECT_HOME", str(DEMO_HOME / "prefect"))
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    # The embedded server shares two cores with the emulators: give it time to start.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    _quiet_offline_noise()

    from standins.stack import CATALOG, local_stack

    today = datetime.now(ZoneInfo("Asia/Tokyo")).date()
    yesterday = today - timedelta(days=1)
    days = tuple(yesterday - timedelta(days=i) for i in range(7))
    data_dir = Path(tempfile.mkdtemp(prefix="bq-tableau-demo-"))
    print(
        f"Starting the local stand-ins (BigQuery, GCS, AWS, Google STS/IAM, Tableau) in {data_dir}"
    )
    try:
        with local_stack(data_dir, days, args.rows_per_day) as stack:
            os.environ.update(stack.environ())  # this process plays the ECS task
            from flows import cli
            from flows.daily import daily_refresh

            stack.save_blocks()
            pipelines = stack.catalog().pipelines
            print(
                f"Seeded {stack.project}.ads_mart: {args.rows_per_day} ad rows on each of "
                f"{len(days)} days; {len(pipelines)} pipelines in standins/pipelines.yaml"
            )
            ok, rerun = True, None
            for pipeline in pipelines:
                config = stack.catalog_config(pipeline.name, work_dir=data_dir / "work")
                datasource = config.tableau.datasource
                print(
                    f"\n=== Pipeline {pipeline.name}: {config.bigquery.view} -> {pipeline.target}"
                )
                for day in (days[3], days[2], days[1], yesterday):  # 3 days of history
                    print(f"\n== Daily run for {day} ==")
                    daily_refresh(config=config, run_date=day)
                before = stack.tableau.rows_by_date(datasource)

                print(f"\n== Rerun of {yesterday} (as from the UI: same date again) ==")
                rerun = daily_refresh(config=config, run_date=yesterday, return_state=True)
                after = stack.tableau.rows_by_date(datasource)
                _print_summary(before, after, pipeline.target)
                ok = ok and before == after and rerun.is_completed()

            ok = (
                _half_loaded_day(stack, pipelines[0].name, yesterday, args.rows_per_day, data_dir)
                and ok
            )
            for pipeline in pipelines:  # the command line's check, on the last two days
                command = ["reconcile", "--pipeline", pipeline.name, "--days", "2"]
                print(f"\n== python -m flows {' '.join(command)} ==")
                ok = cli.main(["--catalog", str(CATALOG), *command]) == cli.OK and ok

            _print_where_to_look()
            assert rerun is not None
            _print_run_logs(rerun)
            return 0 if ok else 1
    finally:
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)


def _half_loaded_day(
    stack: LocalStack, name: str, day: date, rows_per_day: int, data_dir: Path
) -> bool:
    """Upstream loads a third of the day: the row-count check refuses it before Tableau sees
    it; a rerun accepting the failure publishes it. Returns whether both went as they should."""
    from flows.daily import daily_refresh
    from flows.errors import QualityError
    from standins.datamart import seed_ad_datamart
    from standins.stack import DATASET

    config = stack.catalog_config(name, work_dir=data_dir / "work")
    datasource = config.tableau.datasource
    print(f"\n=== A half-loaded day: {day} of {name} loses two thirds of its rows upstream ===")
    stack.bigquery_client().query(
        f"DELETE FROM `{stack.source_table}` WHERE date = DATE '{day.isoformat()}' "
        "AND device != 'desktop'"
    ).result()
    held = stack.tableau.rows_by_date(datasource).get(day, 0)
    refused = daily_refresh(config=config, run_date=day, return_state=True)
    error = refused.result(raise_on_failure=False)
    kept = stack.tableau.rows_by_date(datasource).get(day, 0)
    first = str(error).splitlines()[0] if isinstance(error, QualityError) else repr(error)
    print(f"\n  -> refused: {first}")
    print(f"  -> Tableau still holds {kept:,} rows for {day} (it had {held:,})")

    print(f"\n== Rerun of {day} with accept_quality_failures=true (the change is real) ==")
    accepted = daily_refresh(
        config=config, run_date=day, accept_quality_failures=True, return_state=True
    )
    published = stack.tableau.rows_by_date(datasource).get(day, 0)
    print(f"  -> published {published:,} rows for {day}; the report records the acceptance")

    print(f"\n== The mart is complete again: {day} republished ==")
    seed_ad_datamart(stack.bigquery_client(), stack.project, DATASET, stack.dates, rows_per_day)
    daily_refresh(config=config, run_date=day)
    return (
        isinstance(error, QualityError)
        and kept == held
        and accepted.is_completed()
        and 0 < published < held
    )


def _print_summary(before: dict[date, int], after: dict[date, int], datasource: str) -> None:
    print(f"\nRows per date in the Tableau datasource {datasource}:")
    print(f"  {'date':<12}{'before rerun':>14}{'after rerun':>14}")
    for day in sorted(set(before) | set(after)):
        print(f"  {day.isoformat():<12}{before.get(day, 0):>14,}{after.get(day, 0):>14,}")
    verdict = "no duplicates, nothing lost" if before == after else "MISMATCH"
    print(f"  -> the rerun replaced the day: {verdict}")


def _print_where_to_look() -> None:
    home = os.environ["PREFECT_HOME"]
    prefect_cli = Path(sys.executable).parent / "prefect"  # the synced venv's own CLI
    print(
        "\nEach run left a markdown report ('run-report') and its datasource's history table\n"
        f"(e.g. 'ad-performance-daily-history') as Prefect artifacts, stored in {home}.\n"
        "See them in the Prefect UI:\n"
        f"  PREFECT_HOME={home} {prefect_cli} server start   # then open http://127.0.0.1:4200\n"
        "  (Runs -> a run -> Artifacts, or the Artifacts page)"
    )


def run_logs(state: State) -> list[Log]:
    """A finished run's log lines as the Prefect API returns them (what the UI shows), oldest
    first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # lines still queued in this process
    with get_client(sync_client=True) as client:
        return client.read_logs(
            LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id])),
            sort=LogSort.TIMESTAMP_ASC,
        )


def _print_run_logs(state: State) -> None:
    logs = run_logs(state)
    print(f"\nThe rerun's logs as the Prefect API returns them ({len(logs)} lines):")
    for log in logs:
        level = logging.getLevelName(log.level)
        print(f"  {log.timestamp:%H:%M:%S} {level:<7} {log.name}: {log.message}")


def _quiet_offline_noise() -> None:
    # google-auth 2.62 looks up a "regional access boundary" at the real
    # iamcredentials.googleapis.com after each token refresh. The demo is offline, so that
    # lookup can only fail (harmlessly, but with retry warnings): turn it off in this process.
    from google.auth import credentials

    credentials.CredentialsWithRegionalAccessBoundary._is_regional_access_boundary_lookup_required = (  # noqa: E501
        lambda self: False
    )


if __name__ == "__main__":
    sys.exit(main())
