"""Benchmark: what the quality checks cost a run, against the build they follow.

Generates bench_hyper's ad-like Parquet for one day (default 1M and 4M rows, 4 files), builds
the extract with `flows.hyper.build_hyper` (the baseline: the step before the checks), then
profiles it as the quality step does (`flows.hyper.profile_by_date`: rows, two sums, three
NULL counts and the newest timestamp, one grouped Hyper query over the extract), and, as the
alternative a script would reach for, the same figures with pyarrow over the Parquet files in
Python (read whole, one column at a time). Each variant runs in a fresh subprocess, so its
peak RSS (VmHWM growth over the RSS after imports) is its own; figures are the median of
`--rounds` interleaved rounds.

Run: `.venv/bin/python bench/bench_quality.py [--sizes 1000000 4000000] [--rounds 3]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

SUMS = ("cost", "impressions")
NULLS = ("conversions", "revenue", "creative")
NEWEST = "event_ts"
VARIANTS = ("build", "profile_extract", "pyarrow_files")


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _hwm_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def child(variant: str, work: Path) -> None:
    """One variant in this process; prints seconds and the peak RSS growth as JSON."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from flows.config import HyperConfig
    from flows.hyper import build_hyper, profile_by_date

    files = sorted((work / "parquet").glob("*.parquet"))
    extract = work / "extract.hyper"
    base = _rss_kib()
    started = time.perf_counter()
    if variant == "build":
        rows = sum(pq.read_metadata(f).num_rows for f in files)
        schema = pq.read_schema(files[0])
        build_hyper(
            files, extract, HyperConfig(), schema=schema, file_rows=rows, exported_rows=rows,
            log_dir=work,
        )  # fmt: skip
    elif variant == "profile_extract":
        profiles = profile_by_date(
            extract, "date", sums=SUMS, nulls=NULLS, newest=NEWEST, log_dir=work
        )
        rows = sum(p.rows for p in profiles.values())
    else:  # pyarrow over the files, column by column
        rows = 0
        for f in files:
            table = pq.read_table(f, columns=["date", *SUMS, *NULLS, NEWEST])
            rows += table.num_rows
            for column in SUMS:
                pc.sum(table[column])
            for column in NULLS:
                table[column].null_count  # noqa: B018 - the figure is the point
            pc.max(table[NEWEST])
            del table
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "rss_mib": (_hwm_kib() - base) / 1024, "rows": rows}))


def _run(variant: str, work: Path) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", variant, str(work)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 4_000_000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]))
        return

    from bench_hyper import write_dataset

    print(f"{'rows':>10} {'variant':<16} {'seconds':>8} {'x build':>8} {'py +MiB':>8}")
    for size in args.sizes:
        with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
            work = Path(tmp)
            (work / "parquet").mkdir()
            write_dataset(work / "parquet", size, 4)
            figures: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
            for _ in range(args.rounds):
                for variant in VARIANTS:  # interleaved: a busy moment hits every variant
                    figures[variant].append(_run(variant, work))
            build = statistics.median(f["seconds"] for f in figures["build"])
            for variant in VARIANTS:
                seconds = statistics.median(f["seconds"] for f in figures[variant])
                rss = statistics.median(f["rss_mib"] for f in figures[variant])
                print(
                    f"{size:>10,} {variant:<16} {seconds:>8.2f} {seconds / build:>8.2f} {rss:>8.1f}"
                )


if __name__ == "__main__":
    main()
