"""A 28-day restatement window with 2 restated days, against 28 per-date runs, in one run.

    uv run python bench/bench_window.py [--days 28] [--changed 2] [--rows-per-day 5000]

Seeds the local BigQuery emulator with `--days` days, publishes them once (a window run: every
date is new), restates `--changed` of them (cost and conversions change, as late conversions
would), then, on the same stand-ins and the same Prefect server:
- *window*: one `daily_refresh` with `lookback_days = --days`;
- *per-date*: one `daily_refresh` per date (`lookback_days = 1`), today's nightly workaround.

For each it reports the BigQuery bytes (fingerprint and export, as the jobs reported them), the
bytes sent to Tableau (request bodies the fake received), the Tableau update batches and the
wall time, and the ratios. Targets: >= 10x fewer bytes to Tableau, 1 batch instead of 28, the
export's bytes only for the restated days. The emulators' speeds are not BigQuery's or
Tableau's: the bytes and counts carry over to production, the seconds only roughly.
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

RUN_DATE = date(2026, 11, 28)
METRICS = ("impressions", "clicks", "cost", "conversions", "conversion_value")
"""The columns that restate, for the `fingerprint_columns` row."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--changed", type=int, default=2)
    parser.add_argument("--rows-per-day", type=int, default=5000)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-window-"))
    os.environ["PREFECT_HOME"] = str(home / "prefect")
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    (home / "prefect").mkdir()

    from google.auth import credentials
    from prefect.testing.utilities import prefect_test_harness

    import flows.daily as daily
    import flows.steps as steps
    from standins.datamart import SeededMart, restate
    from standins.stack import local_stack

    # Offline: google-auth's regional access boundary lookup can only fail; keep it out.
    credentials.CredentialsWithRegionalAccessBoundary._is_regional_access_boundary_lookup_required = (  # noqa: E501
        lambda self: False
    )
    calls: list[tuple[str, tuple[date, ...], tuple[str, ...] | None]] = []
    steps.fingerprint_days = _recording_fingerprints(steps.fingerprint_days, calls)
    steps.export_view = _recording_exports(steps.export_view, calls)

    days = tuple(RUN_DATE - timedelta(days=args.days - 1 - i) for i in range(args.days))
    changed = days[-args.changed - 3 : -3] if args.changed else ()  # restated a few days back
    print(f"seeding {args.days} days x {args.rows_per_day:,} rows ...", flush=True)
    with (
        prefect_test_harness(server_startup_timeout=240),
        local_stack(home / "data", days, args.rows_per_day) as stack,
    ):
        os.environ.update(stack.environ())
        stack.save_blocks()
        mart = SeededMart(stack.view, stack.source_table, days, args.rows_per_day)
        config = stack.pipeline_config(work_dir=home / "work").model_copy(
            update={"lookback_days": args.days}
        )
        metrics = config.model_copy(
            update={"bigquery": config.bigquery.model_copy(update={"fingerprint_columns": METRICS})}
        )

        def window(setting: Any) -> Callable[[], list[Any]]:
            return lambda: [daily.daily_refresh(config=setting, run_date=RUN_DATE)]

        one_day = config.model_copy(update={"lookback_days": 1})

        def per_date() -> list[Any]:
            return [daily.daily_refresh(config=one_day, run_date=d) for d in days]

        results = {}
        for kind, setting, run in (
            ("window", config, window(config)),
            ("window, metrics hashed", metrics, window(metrics)),
            ("per-date", one_day, per_date),
        ):
            if setting.lookback_days > 1:  # a record of this fingerprint kind, then restatements
                daily.daily_refresh(config=setting, run_date=RUN_DATE)
                restate(stack.bigquery_client(), stack.source_table, changed)
            results[kind] = _measure(stack, mart, calls, run)
            if setting.lookback_days > 1:
                republished = results[kind]["results"][0]["republished"]
                print(f"{kind}: republished {republished}", flush=True)
                assert republished == [d.isoformat() for d in changed], (kind, republished)

    w, p = results["window"], results["per-date"]
    m = results["window, metrics hashed"]
    w_bq, p_bq = w["fingerprint"] + w["export"], p["fingerprint"] + p["export"]
    print(
        f"\n{args.days}-day window, {args.changed} restated day(s), {args.rows_per_day:,} rows/day"
    )
    print(
        f"{'':<24}{'runs':>6}{'BQ fingerprint':>16}{'BQ export':>12}{'BQ total':>12}"
        f"{'to Tableau':>12}{'batches':>9}{'wall s':>9}"
    )
    for kind, r in results.items():
        print(
            f"{kind:<24}{len(r['results']):>6}{_mib(r['fingerprint']):>16}{_mib(r['export']):>12}"
            f"{_mib(r['fingerprint'] + r['export']):>12}{_mib(r['tableau']):>12}"
            f"{r['batches']:>9}{r['wall']:>9.1f}"
        )
    print(
        f"\nratios per-date / window: bytes to Tableau {p['tableau'] / max(w['tableau'], 1):.1f}x "
        f"(target >= 10x), batches {p['batches']} vs {w['batches']}, "
        f"BigQuery bytes {p_bq / max(w_bq, 1):.1f}x, "
        f"wall {p['wall'] / w['wall']:.1f}x; the window's export scanned "
        f"{w['export'] / max(p['export'], 1):.1%} of the per-date exports' bytes "
        f"({args.changed}/{args.days} = {args.changed / args.days:.1%} of the days); with the "
        f"metrics hashed, BigQuery bytes {p_bq / max(m['fingerprint'] + m['export'], 1):.1f}x"
    )
    print(
        "BigQuery bytes are what BigQuery on demand bills for these reads of a date-partitioned "
        "table (standins.datamart.scanned_bytes: the emulator reports none), without the 10 MB "
        "minimum per query."
    )
    return 0


def _recording_fingerprints(fn: Callable[..., Any], calls: list[Any]) -> Callable[..., Any]:
    def wrapper(client: Any, bq: Any, start: date, end: date, **kwargs: Any) -> Any:
        days = tuple(start + timedelta(days=i) for i in range((end - start).days + 1))
        calls.append(("fingerprint", days, kwargs.get("columns")))
        return fn(client, bq, start, end, **kwargs)

    return wrapper


def _recording_exports(fn: Callable[..., Any], calls: list[Any]) -> Callable[..., Any]:
    def wrapper(client: Any, bq: Any, gcs: Any, days: Any, **kwargs: Any) -> Any:
        calls.append(("export", tuple(days), None))
        return fn(client, bq, gcs, days, **kwargs)

    return wrapper


def _measure(
    stack: Any, mart: Any, calls: list[Any], run: Callable[[], list[Any]]
) -> dict[str, Any]:
    from standins.datamart import scanned_bytes

    calls.clear()
    seen = len(stack.tableau.requests)
    started = time.perf_counter()
    results = run()
    wall = time.perf_counter() - started
    sent = stack.tableau.requests[seen:]
    client = stack.bigquery_client()
    billed = {"fingerprint": 0, "export": 0}
    for kind, days, columns in calls:
        billed[kind] += scanned_bytes(client, mart, days, columns)
    return {
        "results": results,
        "wall": wall,
        **billed,
        "tableau": sum(len(r.body) for r in sent),
        "batches": sum(1 for r in sent if r.method == "PATCH" and r.path.endswith("/data")),
    }


def _mib(size: int) -> str:
    return f"{size / 2**20:.2f} MiB"


if __name__ == "__main__":
    sys.exit(main())
