"""One day of N rows through the local stand-ins: time per stage and orchestration overhead.

    uv run python bench/bench_pipeline.py [--rows 1000000]

Runs the real `daily_refresh` flow (Prefect's embedded server, the real credentials block over
the loopback ECS/STS/IAM fakes, the BigQuery and GCS emulators, the fake Tableau) for one day of
`--rows` rows. Each stage function is timed from inside its task (its "own" time); the
orchestration overhead is the flow's wall time minus the stages' own time: Prefect task and flow
bookkeeping, block loading, the credential exchange, artifacts and cleanup.
Target: overhead under 10% of the run. The emulators' speed is not ours to tune: the figures say
where a run's time goes, not how fast BigQuery or Tableau are.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DAY = date(2026, 11, 20)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    os.environ["PREFECT_HOME"] = str(home / "prefect")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    (home / "prefect").mkdir()

    from google.auth import credentials

    # Offline: google-auth's regional access boundary lookup can only fail; keep it out.
    credentials.CredentialsWithRegionalAccessBoundary._is_regional_access_boundary_lookup_required = (  # noqa: E501
        lambda self: False
    )

    import flows.daily as daily
    from standins.stack import local_stack

    own: dict[str, float] = {}

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*a: Any, **kw: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                own[name] = own.get(name, 0.0) + time.perf_counter() - started

        return wrapper

    for stage, attr in [
        ("export", "export_view"),
        ("download", "download_export"),
        ("build", "build_hyper"),
        ("publish", "publish"),
    ]:
        setattr(daily, attr, timed(stage, getattr(daily, attr)))

    print(f"seeding {args.rows:,} rows for {DAY} ...", flush=True)
    with local_stack(home / "data", (DAY - timedelta(days=1),), 10) as stack:
        _seed_day(stack, args.rows)
        os.environ.update(stack.environ())
        stack.save_blocks()
        config = stack.pipeline_config(work_dir=home / "work")
        # Warm-up on the small day: imports, the embedded server, the first Tableau publish.
        daily.daily_refresh(config=config, run_date=DAY - timedelta(days=1))
        own.clear()
        started = time.perf_counter()
        result = daily.daily_refresh(config=config, run_date=DAY)
        wall = time.perf_counter() - started
        published = stack.tableau.rows_by_date("ad_performance_daily").get(DAY, 0)

    stages = sum(own.values())
    print(f"\nOne day of {result['rows']:,} rows (Tableau holds {published:,} for {DAY})")
    print(f"{'stage':<12}{'own s':>9}{'share':>9}")
    for name, seconds in own.items():
        print(f"{name:<12}{seconds:>9.2f}{seconds / wall:>9.1%}")
    overhead = wall - stages
    print(f"{'overhead':<12}{overhead:>9.2f}{overhead / wall:>9.1%}   (target < 10%)")
    print(f"{'flow wall':<12}{wall:>9.2f}")
    print(f"rows/s end to end: {result['rows'] / wall:,.0f}")
    return 0 if published == args.rows else 1


def _seed_day(stack: Any, rows: int) -> None:
    """Add `rows` rows for DAY to the mart's source table with one INSERT ... SELECT."""
    table = stack.view.replace(".ads_mart.ad_performance_daily", ".ads_mart_src.ad_performance")
    sql = f"""
    INSERT INTO `{table}`
    SELECT DATE '{DAY.isoformat()}', CONCAT('c-', CAST(MOD(i, 50) AS STRING)),
           CONCAT('キャンペーン ', CAST(MOD(i, 50) AS STRING)),
           CONCAT('ag-', CAST(MOD(i, 700) AS STRING)),
           IF(MOD(i, 9) = 4, NULL, CONCAT('広告グループ ', CAST(MOD(i, 7) AS STRING))),
           ['mobile', 'desktop', 'tablet'][OFFSET(MOD(i, 3))],
           MOD(i * 7919, 200000), MOD(i * 104729, 10000),
           CAST(MOD(i * 31, 5000000) AS NUMERIC) / 1000,
           IF(MOD(i, 6) = 3, NULL, MOD(i, 40)), IF(MOD(i, 6) = 3, NULL, MOD(i, 1000) * 1.5),
           MOD(i, 4) = 0,
           TIMESTAMP_ADD(TIMESTAMP '{(DAY + timedelta(days=1)).isoformat()} 03:00:00+00',
                         INTERVAL MOD(i, 3600000) MILLISECOND)
    FROM UNNEST(GENERATE_ARRAY(1, {rows})) AS i
    """
    stack.bigquery_client().query(sql).result()


if __name__ == "__main__":
    sys.exit(main())
