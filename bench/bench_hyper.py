"""Benchmark: Parquet -> .hyper with this project's build_hyper vs the Hyper API Inserter vs pantab.

Generates ad-like Parquet (16 columns: DATE, TIMESTAMP, DATETIME, NUMERIC(38,9), TEXT, BIGINT,
DOUBLE, with NULLs) split into several files like an EXPORT DATA shard set, then builds the same
extract with each variant, each in a fresh subprocess so that peak memory figures don't mix:

- build_hyper        this project: Hyper reads the Parquet itself (INSERT ... FROM external(ARRAY))
- inserter           tableauhyperapi Inserter, row by row from pyarrow batches (on a subset)
- pantab_table       pantab.frame_to_hyper from a pyarrow Table read whole
- pantab_stream      pantab.frame_to_hyper from a RecordBatchReader (batches streamed)

Python peak RSS is the child's VmHWM ("py +MB": its growth over the RSS after imports, i.e.
what the build itself costs); hyperd's is its VmHWM, read by the parent every 50 ms. "CPU s" is
the CPU time of the child and its hyperd (less sensitive than wall time to a busy machine).
Library imports happen before the clock starts.

`--memory` instead compares hyperd's memory of build_hyper with its loading before issue 11
(`baseline`: one INSERT over all files, i.e. build_hyper with `LOAD_BATCH_BYTES` lifted), in
interleaved rounds: hyperd's peak RSS, its anonymous part (what the kernel cannot reclaim), the
peak of dirty file pages it maps (the extract being written), CPU and wall time.

Run: `.venv/bin/python bench/bench_hyper.py [--sizes 1000000 4000000] [--inserter-rows 200000]`
or `.venv/bin/python bench/bench_hyper.py --memory [--sizes 1000000 4000000 8000000] [--rounds 3]`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:
    import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = ("build_hyper", "inserter", "pantab_table", "pantab_stream")
MEMORY_VARIANTS = ("baseline", "build_hyper")
CAMPAIGNS = [f"キャンペーン {i:03d} / spring sale" for i in range(300)]
AD_GROUPS = [f"ad group {i}" for i in range(2000)]
DEVICES = ["mobile", "desktop", "tablet", "ctv"]
COUNTRIES = ["JP", "US", "DE", "FR", "GB", "KR", "TW", "BR"]


# --- data ------------------------------------------------------------------------------


def _decimal_38_9(unscaled: np.ndarray) -> pa.Array:
    """A decimal128(38,9) array from int64 unscaled values (value * 1e9), sign-extended."""
    import numpy as np

    words = np.empty((len(unscaled), 2), dtype=np.int64)
    words[:, 0] = unscaled
    words[:, 1] = np.where(unscaled < 0, -1, 0)
    return pa.Array.from_buffers(pa.decimal128(38, 9), len(unscaled), [None, pa.py_buffer(words)])


def _with_nulls(array: pa.Array, rng: np.random.Generator, share: float) -> pa.Array:
    import pyarrow.compute as pc

    mask = pa.array(rng.random(len(array)) < share)
    return pc.if_else(mask, pa.scalar(None, array.type), array)


def _choice(rng: np.random.Generator, values: list[str], n: int) -> pa.Array:
    import numpy as np

    indices = pa.array(rng.integers(0, len(values), n, dtype=np.int32))
    return pa.DictionaryArray.from_arrays(indices, pa.array(values)).cast(pa.string())


def ad_batch(rng: np.random.Generator, n: int, start_id: int) -> pa.Table:
    import numpy as np

    day = np.datetime64("2026-11-28")
    seconds = rng.integers(0, 86400 * 1_000_000, n)
    ts = (day.astype("datetime64[us]") + seconds.astype("timedelta64[us]")).astype("int64")
    impressions = rng.integers(0, 100_000, n)
    clicks = (impressions * rng.random(n) * 0.05).astype(np.int64)
    cost_micros = clicks * rng.integers(10, 500_000_000, n) // 1000
    return pa.table(
        {
            "date": pa.array(np.full(n, day.astype("datetime64[D]").astype(np.int32)), pa.date32()),
            "event_ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "local_time": pa.array(ts + 9 * 3600 * 1_000_000, pa.timestamp("us")),
            "row_id": pa.array(np.arange(start_id, start_id + n, dtype=np.int64)),
            "campaign_id": pa.array(rng.integers(1, 300, n, dtype=np.int64)),
            "campaign": _choice(rng, CAMPAIGNS, n),
            "ad_group": _choice(rng, AD_GROUPS, n),
            "creative": _with_nulls(_choice(rng, [f"cr-{i}" for i in range(50)], n), rng, 0.2),
            "device": _choice(rng, DEVICES, n),
            "country": _choice(rng, COUNTRIES, n),
            "impressions": pa.array(impressions),
            "clicks": pa.array(clicks),
            "conversions": _with_nulls(pa.array(clicks // 10), rng, 0.3),
            "cost": _decimal_38_9(cost_micros * 1000),
            "revenue": _with_nulls(_decimal_38_9(cost_micros * 1300), rng, 0.25),
            "ctr": _with_nulls(pa.array(clicks / np.maximum(impressions, 1)), rng, 0.1),
        }
    )


def write_dataset(directory: Path, rows: int, files: int, seed: int = 7) -> list[Path]:
    # numpy only here: the measured children should not carry the generator's imports.
    import numpy as np

    rng = np.random.default_rng(seed)
    paths, start, per_file = [], 0, -(-rows // files)
    for i in range(files):
        n = min(per_file, rows - start)
        path = directory / f"{i:012d}.parquet"
        with pq.ParquetWriter(path, ad_batch(rng, 1, 0).schema, store_schema=False) as writer:
            done = 0
            while done < n:  # generate in slices so the generator itself stays small
                chunk = min(250_000, n - done)
                writer.write_table(ad_batch(rng, chunk, start + done), row_group_size=chunk)
                done += chunk
        paths.append(path)
        start += n
    return paths


# --- variants (run in a child process) -------------------------------------------------


def _status(pid: int) -> dict[str, int]:
    """The byte counts of /proc/<pid>/status (VmHWM: peak RSS; RssAnon: anonymous RSS now)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if value.strip().endswith(" kB"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


def _vm_hwm(pid: int) -> int:
    return _status(pid).get("VmHWM", 0)


def _dirty_file_bytes(pid: int) -> int:
    """Dirty pages of the process's file mappings now (the dirty total less anonymous memory)."""
    rollup = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, value = line.partition(":")
        rollup[key] = int(value.split()[0]) * 1024
    return rollup["Private_Dirty"] + rollup["Shared_Dirty"] - rollup["Anonymous"]


def _batches(files: list[Path], limit: int | None) -> Iterator[pa.RecordBatch]:
    left = limit
    for path in files:
        with pq.ParquetFile(path) as parquet:
            for batch in parquet.iter_batches(batch_size=65_536):
                if left is not None:
                    if left <= 0:
                        return
                    batch = batch.slice(0, left)
                    left -= batch.num_rows
                yield batch


def run_build_hyper(files: list[Path], out: Path, rows: int, work: Path) -> int:
    from flows.config import HyperConfig
    from flows.hyper import build_hyper

    # The footer pass is the download's now; timed here too, as it was when the build did it.
    schema = pq.read_schema(files[0])
    file_rows = sum(pq.read_metadata(path).num_rows for path in files)
    config = HyperConfig()
    return build_hyper(
        files, out, config, schema=schema, file_rows=file_rows, exported_rows=rows, log_dir=work
    ).rows


def run_baseline(files: list[Path], out: Path, rows: int, work: Path) -> int:
    """build_hyper as before issue 11: one INSERT over all files, whatever their size."""
    import flows.hyper

    flows.hyper.LOAD_BATCH_BYTES = sys.maxsize  # type: ignore[misc]  # the bench's baseline only
    return run_build_hyper(files, out, rows, work)


def run_inserter(files: list[Path], out: Path, rows: int, work: Path) -> int:
    from tableauhyperapi import (
        Connection,
        CreateMode,
        HyperProcess,
        Inserter,
        TableName,
        Telemetry,
    )

    from flows.hyper import hyper_columns

    columns = hyper_columns(pq.read_schema(files[0]), file_format_version=3)
    table = TableName("Extract", "Extract")
    definition = ", ".join(f'"{name}" {sql_type}' for name, sql_type in columns)
    params = {"log_dir": str(work), "default_database_version": "3"}
    with (
        HyperProcess(Telemetry.DO_NOT_SEND_USAGE_DATA_TO_TABLEAU, parameters=params) as hyper,
        Connection(hyper.endpoint, out, CreateMode.CREATE_AND_REPLACE) as connection,
    ):
        connection.catalog.create_schema("Extract")
        connection.execute_command(f"CREATE TABLE {table} ({definition})")
        with Inserter(connection, table) as inserter:
            for batch in _batches(files, rows):
                inserter.add_rows(zip(*(col.to_pylist() for col in batch.columns), strict=True))
            inserter.execute()
        return int(connection.execute_scalar_query(f"SELECT COUNT(*) FROM {table}"))


def _pantab(source: object, out: Path, work: Path) -> None:
    import pantab

    pantab.frame_to_hyper(
        source,
        out,
        table=("Extract", "Extract"),
        process_params={"log_dir": str(work), "default_database_version": "3"},
    )


def run_pantab_table(files: list[Path], out: Path, rows: int, work: Path) -> int:
    table = pa.concat_tables(pq.read_table(path) for path in files)
    _pantab(table, out, work)
    return table.num_rows


def run_pantab_stream(files: list[Path], out: Path, rows: int, work: Path) -> int:
    schema = pq.read_schema(files[0])
    _pantab(pa.RecordBatchReader.from_batches(schema, _batches(files, None)), out, work)
    return rows


def _cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _import_for(variant: str) -> None:
    """Import the variant's libraries before timing, so the figures measure the build only."""
    import tableauhyperapi  # noqa: F401

    if variant.startswith("pantab"):
        import pantab  # noqa: F401
    else:
        import flows.hyper  # noqa: F401


def child(variant: str, files: list[Path], rows: int, work: Path) -> None:
    out = work / f"{variant}.hyper"
    _import_for(variant)
    baseline = psutil.Process().memory_info().rss
    cpu_before = _cpu_seconds(resource.RUSAGE_SELF)
    started = time.perf_counter()
    loaded = globals()[f"run_{variant}"](files, out, rows, work)
    seconds = time.perf_counter() - started
    result = {
        "variant": variant,
        "rows": loaded,
        "seconds": seconds,
        "python_baseline": baseline,
        # VmHWM, not ru_maxrss: after fork+exec Linux carries the parent's peak into ru_maxrss.
        "python_peak": _vm_hwm(os.getpid()),
        "python_cpu": _cpu_seconds(resource.RUSAGE_SELF) - cpu_before,
        "hyper_bytes": out.stat().st_size,
    }
    if "flows.hyper" in sys.modules:  # the batch size it ran with (lifted for the baseline)
        result["batch_bytes"] = sys.modules["flows.hyper"].LOAD_BATCH_BYTES
    out.unlink()
    print(json.dumps(result))


# --- driver ----------------------------------------------------------------------------


def _poll_hyperd(
    child: psutil.Process, peaks: dict[str, dict[int, int]], cpu: dict[int, float], *, dirty: bool
) -> None:
    """Record the peak memory and CPU seconds of the child's own children (hyperd)."""
    with contextlib.suppress(psutil.Error):
        for proc in child.children(recursive=True):
            with contextlib.suppress(psutil.Error, OSError, KeyError):
                status = _status(proc.pid)
                now = {"rss": status["VmHWM"], "anon": status["RssAnon"]}
                if dirty:
                    now["dirty"] = _dirty_file_bytes(proc.pid)
                for key, value in now.items():
                    peaks[key][proc.pid] = max(peaks[key].get(proc.pid, 0), value)
                times = proc.cpu_times()
                cpu[proc.pid] = times.user + times.system


def measure(variant: str, files: list[Path], rows: int, work: Path, *, dirty: bool = False) -> dict:
    """Run one variant in a fresh interpreter; poll its hyperd from here (no GIL contention).

    With `dirty`, smaps_rollup is read too, every 250 ms (it walks hyperd's mappings).
    """
    cmd = [sys.executable, __file__, "--child", variant, "--rows", str(rows), "--work", str(work)]
    with subprocess.Popen(
        [*cmd, *map(str, files)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=work,
    ) as proc:
        watched, cpu, polls = psutil.Process(proc.pid), {}, 0
        peaks: dict[str, dict[int, int]] = {"rss": {}, "anon": {}, "dirty": {}}
        while proc.poll() is None:
            _poll_hyperd(watched, peaks, cpu, dirty=dirty and polls % 5 == 0)
            polls += 1
            time.sleep(0.05)
        stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{stderr}")
    result = json.loads(stdout.strip().splitlines()[-1])
    return {
        **result,
        "hyperd_peak": max(peaks["rss"].values(), default=0),
        "hyperd_anon": max(peaks["anon"].values(), default=0),
        "hyperd_dirty": max(peaks["dirty"].values(), default=0),
        "hyperd_cpu": sum(cpu.values()),
    }


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def memory_main(sizes: list[int], files_per_size: int, rounds: int) -> None:
    """hyperd's memory, before (one INSERT) and after (batches), interleaved in each round."""
    mb = 1024 * 1024
    started = time.perf_counter()
    print(
        f"{psutil.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, "
        f"load average {_loadavg()}; {rounds} rounds per size, medians"
    )
    header = (
        f"{'rows':>9} {'variant':<12} {'hyperd MB':>9} {'anon MB':>7} {'dirty MB':>8} "
        f"{'CPU s':>6} {'wall s':>6} {'.hyper MB':>9} {'load':>15}"
    )
    medians: dict[tuple[int, str], dict[str, float]] = {}
    batch_bytes = 0
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="bench_hyper_") as tmp:
            work = Path(tmp)
            files = write_dataset(work, size, files_per_size)
            parquet_mb = sum(p.stat().st_size for p in files) / mb
            print(f"\n{size:,} rows in {len(files)} Parquet files, {parquet_mb:.0f} MB")
            print(header)
            runs: dict[str, list[dict]] = {variant: [] for variant in MEMORY_VARIANTS}
            for round_ in range(rounds):
                # Alternate the order, so neither variant always runs on a warmer cache.
                order = MEMORY_VARIANTS if round_ % 2 == 0 else MEMORY_VARIANTS[::-1]
                for variant in order:
                    r = measure(variant, files, size, work, dirty=True)
                    if r["rows"] != size:
                        raise SystemExit(f"{variant} loaded {r['rows']} rows, not {size}")
                    runs[variant].append(r)
                    if variant == "build_hyper":
                        batch_bytes = r["batch_bytes"]
            for variant, results in runs.items():
                m = {
                    key: statistics.median(r[key] for r in results)
                    for key in ("hyperd_peak", "hyperd_anon", "hyperd_dirty", "seconds")
                }
                m["cpu"] = statistics.median(r["python_cpu"] + r["hyperd_cpu"] for r in results)
                m["hyper_bytes"] = statistics.median(r["hyper_bytes"] for r in results)
                medians[size, variant] = m
                print(
                    f"{size:>9,} {variant:<12} {m['hyperd_peak'] / mb:>9.0f} "
                    f"{m['hyperd_anon'] / mb:>7.0f} {m['hyperd_dirty'] / mb:>8.0f} "
                    f"{m['cpu']:>6.2f} {m['seconds']:>6.2f} {m['hyper_bytes'] / mb:>9.1f} "
                    f"{_loadavg():>15}"
                )
            before, after = medians[size, "baseline"], medians[size, "build_hyper"]
            ratio = {key: after[key] / (before[key] or 1) for key in after}
            print(
                f"{size:>9,} {'after/before':<12} {ratio['hyperd_peak']:>8.2f}x "
                f"{ratio['hyperd_anon']:>6.2f}x {ratio['hyperd_dirty']:>7.2f}x "
                f"{ratio['cpu']:>5.2f}x {ratio['seconds']:>5.2f}x {ratio['hyper_bytes']:>8.3f}x"
            )
    if len(sizes) > 1:
        low, high = min(sizes), max(sizes)
        for variant in MEMORY_VARIANTS:
            growth = (
                (medians[high, variant]["hyperd_peak"] - medians[low, variant]["hyperd_peak"])
                / mb
                / ((high - low) / 1e6)
            )
            print(f"\n{variant}: hyperd's peak grows {growth:.0f} MB per million rows", end="")
        print()
    print(
        f"\nbaseline = one INSERT over all files (before issue 11); build_hyper = batches of "
        f"{batch_bytes // mb} MB of Parquet, a connection each. dirty = peak of hyperd's dirty "
        f"file pages, sampled every 250 ms. Target: CPU within 1.10x.\n"
        f"Load average at the end {_loadavg()}; ran {time.perf_counter() - started:.0f} s."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", help="rows (default 1M 4M; with --memory 1M 4M 8M)"
    )
    parser.add_argument("--files", type=int, default=4, help="Parquet files per size")
    parser.add_argument(
        "--memory", action="store_true", help="hyperd's memory before/after the batched load"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds per size with --memory")
    parser.add_argument(
        "--inserter-rows", type=int, default=200_000, help="rows timed for the slow Inserter"
    )
    parser.add_argument("--child", choices=(*VARIANTS, "baseline"), help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("paths", type=Path, nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.paths, args.rows, args.work)
        return
    if args.memory:
        memory_main(args.sizes or [1_000_000, 4_000_000, 8_000_000], args.files, args.rounds)
        return
    args.sizes = args.sizes or [1_000_000, 4_000_000]

    mb = 1024 * 1024
    print(f"{psutil.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM")
    header = (
        f"{'rows':>9} {'variant':<14} {'timed rows':>10} {'seconds':>8} {'rows/s':>10} "
        f"{'vs ins.':>8} {'vs pantab':>9} {'CPU s':>6} {'cpu ins.':>8} {'cpu pantab':>9} "
        f"{'py peak MB':>10} {'py +MB':>7} "
        f"{'hyperd MB':>9} {'.hyper MB':>9}"
    )
    for size in args.sizes:
        with tempfile.TemporaryDirectory(prefix="bench_hyper_") as tmp:
            work = Path(tmp)
            t0 = time.perf_counter()
            files = write_dataset(work, size, args.files)
            parquet_mb = sum(p.stat().st_size for p in files) / mb
            print(
                f"\n{size:,} rows in {len(files)} Parquet files, {parquet_mb:.0f} MB "
                f"(generated in {time.perf_counter() - t0:.1f} s)"
            )
            results = {}
            for variant in VARIANTS:
                rows = min(size, args.inserter_rows) if variant == "inserter" else size
                results[variant] = measure(variant, files, rows, work)
            for r in results.values():
                r["rate"] = r["rows"] / r["seconds"]
                r["cpu_rate"] = r["rows"] / (r["python_cpu"] + r["hyperd_cpu"])
            ins, ins_cpu = results["inserter"]["rate"], results["inserter"]["cpu_rate"]
            pantab = ("pantab_table", "pantab_stream")
            pantab_best = max(results[v]["rate"] for v in pantab)
            pantab_best_cpu = max(results[v]["cpu_rate"] for v in pantab)
            print(header)
            for variant, r in results.items():
                rate, cpu_rate = r["rate"], r["cpu_rate"]
                print(
                    f"{size:>9,} {variant:<14} {r['rows']:>10,} {r['seconds']:>8.2f} "
                    f"{rate:>10,.0f} {rate / ins:>7.1f}x {rate / pantab_best:>8.2f}x "
                    f"{r['python_cpu'] + r['hyperd_cpu']:>6.1f} "
                    f"{cpu_rate / ins_cpu:>7.1f}x {cpu_rate / pantab_best_cpu:>8.2f}x "
                    f"{r['python_peak'] / mb:>10.0f} "
                    f"{(r['python_peak'] - r['python_baseline']) / mb:>7.0f} "
                    f"{r['hyperd_peak'] / mb:>9.0f} "
                    f"{r['hyper_bytes'] / mb:>9.0f}"
                )
    print(
        f"\nThe Inserter is timed on the first {args.inserter_rows:,} rows only (rows/s is "
        "comparable; its row-by-row cost is linear). 'vs pantab' is against the faster pantab "
        "variant; 'cpu ...' are the same ratios per CPU-second (child + hyperd), steadier than "
        "wall time on a shared machine.\nTargets: build_hyper >= 10x inserter, >= 1.3x pantab, "
        "Python peak < 150 MB."
    )


if __name__ == "__main__":
    main()
