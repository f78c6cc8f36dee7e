"""`python -m flows reconcile`: Tableau's side from the record, against the published extract.

    uv run python bench/bench_reconcile.py [--days 14] [--rows-per-day 5000] [--repeat 3]

Seeds the local BigQuery emulator with `--days` days, publishes them as one window (so the
record of what was published holds every date), then reconciles the same range `--repeat`
times each way, interleaved: `--source record` (one small JSON object read from GCS) and the
baseline `--source extract` (the published datasource downloaded with its extract and counted
with Hyper). Both run the same BigQuery fingerprint query, so the difference is Tableau's side:
the bytes read for it and the wall time. Both must agree on every date.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RUN_DATE = date(2026, 11, 28)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--rows-per-day", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-reconcile-"))
    os.environ["PREFECT_HOME"] = str(home / "prefect")
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    (home / "prefect").mkdir()

    from google.auth import credentials
    from prefect.testing.utilities import prefect_test_harness

    import flows.daily as daily
    from flows.catalog import Pipeline
    from flows.reconcile import reconcile
    from flows.window import state_object
    from standins.stack import BUCKET, local_stack

    # Offline: google-auth's regional access boundary lookup can only fail; keep it out.
    credentials.CredentialsWithRegionalAccessBoundary._is_regional_access_boundary_lookup_required = (  # noqa: E501
        lambda self: False
    )
    days = tuple(RUN_DATE - timedelta(days=args.days - 1 - i) for i in range(args.days))
    print(f"seeding {args.days} days x {args.rows_per_day:,} rows ...", flush=True)
    with (
        prefect_test_harness(server_startup_timeout=240),
        local_stack(home / "data", days, args.rows_per_day) as stack,
    ):
        os.environ.update(stack.environ())
        stack.save_blocks()
        config = stack.catalog_config("ads", work_dir=home / "work").model_copy(
            update={"lookback_days": args.days}
        )
        daily.daily_refresh(config=config, run_date=RUN_DATE)  # every date new: all recorded
        pipeline = Pipeline("ads", config, 6, 0)
        now = _after(RUN_DATE)
        seconds: dict[str, list[float]] = {"record": [], "extract": []}
        tableau_bytes: dict[str, int] = {}
        for _ in range(args.repeat):
            for source in ("record", "extract"):
                requests_before = len(stack.tableau.requests)
                started = time.perf_counter()
                result = reconcile(pipeline, end=RUN_DATE, days=args.days, source=source, now=now)
                seconds[source].append(time.perf_counter() - started)
                assert result.source == source, result.source
                assert not result.disagreeing, result.disagreeing
                tableau_bytes[source] = _downloaded(stack, requests_before)

        blob = stack.gcs.client(stack.project).bucket(BUCKET).get_blob(state_object(config))
        record_read = blob.size if blob is not None else 0

    extract_read = tableau_bytes["extract"]
    rec, ext = statistics.median(seconds["record"]), statistics.median(seconds["extract"])
    print(f"\n{args.days} days x {args.rows_per_day:,} rows, median of {args.repeat}")
    print(f"{'source':<10}{'wall s':>9}{'read for Tableau side':>24}")
    print(f"{'record':<10}{rec:>9.2f}{record_read:>20,} B (the record in GCS)")
    print(f"{'extract':<10}{ext:>9.2f}{extract_read:>20,} B (the .hyper in the .tdsx)")
    print(
        f"\nratios extract / record: wall {ext / rec:.2f}x, bytes read for Tableau's side "
        f"{extract_read / max(record_read, 1):,.0f}x; Tableau requests: record 0, extract "
        "sign-in + lookups + download + sign-out"
    )
    print(
        "Both sides run the same BigQuery fingerprint (the emulator's TO_JSON_STRING is slow: "
        "most of either wall time); the extract's download grows with the datasource's size."
    )
    return 0


def _after(day: date) -> Any:
    from datetime import UTC, datetime

    return datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)


def _downloaded(stack: Any, since: int) -> int:
    """Bytes of the datasource downloads the fake Tableau served since request `since`."""
    total = 0
    for request in stack.tableau.requests[since:]:
        if request.method == "GET" and request.path.endswith("/content"):
            ds_id = request.path.split("/")[-2]
            total += stack.tableau.store.path(ds_id).stat().st_size
    return total


if __name__ == "__main__":
    sys.exit(main())
