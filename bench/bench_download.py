"""Download of many Parquet files from the GCS emulator: sequential vs `download_export`.

Baseline: one thread, `blob.download_to_filename` per object (what naive code does).
Ours: `flows.gcs.download_export` (transfer_manager threads, CRC32C, footer row check).
Prints MB/s for both, the ratio, and the peak RSS growth of this process during each run
(files stream to disk, so it must stay flat whatever the total size).

    .venv/bin/python bench/bench_download.py              # 16 x 32 MB, 8 workers
    .venv/bin/python bench/bench_download.py --small      # 4 x 4 MB, quick check
    .venv/bin/python bench/bench_download.py --files 32 --mb 16 --workers 16
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows.bigquery import ExportManifest
from flows.config import GcsConfig
from flows.gcs import download_export
from standins.emulators import start_gcs, storage_client

BUCKET = "bench-bucket"
PREFIX = "bq-tableau/bench.mart.v/run_date=2026-11-01/attempt-1/"


class PeakRss:
    """Samples this process's RSS every 10 ms; `growth` is the peak minus the start."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._stop = threading.Event()
        self.start = self.peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.start) / 1e6


def _parquet_file(path: Path, megabytes: int) -> int:
    """Write an uncompressed Parquet file of about `megabytes`; return its row count."""
    rows = megabytes * 1_000_000 // 24  # three 8-byte columns
    rng = np.random.default_rng(0)
    table = pa.table(
        {
            "impressions": rng.integers(0, 1 << 40, rows),
            "clicks": rng.integers(0, 1 << 20, rows),
            "ctr": rng.random(rows),
        }
    )
    pq.write_table(table, path, compression="NONE", use_dictionary=False)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--mb", type=int, default=32, help="size of each file in MB")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--small", action="store_true", help="4 files x 4 MB")
    args = parser.parse_args()
    if args.small:
        args.files, args.mb = 4, 4

    with tempfile.TemporaryDirectory(prefix="bench-download-") as tmp:
        work = Path(tmp)
        with start_gcs(work / "gcs") as gcs:
            client = storage_client(gcs)
            bucket = client.create_bucket(BUCKET)
            source = work / "source.parquet"
            rows_each = _parquet_file(source, args.mb)
            pa.default_memory_pool().release_unused()  # so RSS growth shows the downloads
            for i in range(args.files):
                bucket.blob(f"{PREFIX}part-{i:012d}.parquet").upload_from_filename(str(source))
            total_mb = source.stat().st_size * args.files / 1e6
            print(
                f"{args.files} files x {source.stat().st_size / 1e6:.1f} MB = {total_mb:.0f} MB "
                f"in fake-gcs-server; {args.workers} workers; {psutil.cpu_count()} CPUs"
            )

            sequential_dir = work / "sequential"
            sequential_dir.mkdir()
            with PeakRss() as rss_seq:
                started = time.perf_counter()
                for blob in client.list_blobs(BUCKET, prefix=PREFIX):
                    blob.download_to_filename(str(sequential_dir / blob.name.rsplit("/", 1)[1]))
                seq_seconds = time.perf_counter() - started
            shutil.rmtree(sequential_dir)

            manifest = ExportManifest(
                view="bench.mart.v",
                run_date=date(2026, 11, 1),
                days=(date(2026, 11, 1),),
                uri_prefix=f"gs://{BUCKET}/{PREFIX}",
                job_id="bench",
                rows=rows_each * args.files,
                files=args.files,
                estimated_bytes=0,
                bytes_processed=None,
                bytes_billed=None,
                schema=(),
            )
            config = GcsConfig(bucket=BUCKET, download_workers=args.workers)
            with PeakRss() as rss_par:
                started = time.perf_counter()
                result = download_export(client, manifest, work / "parallel", config)
                par_seconds = time.perf_counter() - started
            assert result.rows == manifest.rows

    seq_rate, par_rate = total_mb / seq_seconds, total_mb / par_seconds
    print(f"sequential download_to_filename : {seq_seconds:6.2f} s  {seq_rate:7.1f} MB/s")
    print(
        f"download_export ({args.workers} threads)   : {par_seconds:6.2f} s  {par_rate:7.1f} MB/s"
    )
    print(f"ratio parallel/sequential       : {par_rate / seq_rate:.2f}x")
    print(
        f"peak RSS                        : sequential {rss_seq.peak / 1e6:.0f} MB "
        f"(+{rss_seq.growth_mb:.0f}), parallel {rss_par.peak / 1e6:.0f} MB "
        f"(+{rss_par.growth_mb:.0f}); data {total_mb:.0f} MB"
    )


if __name__ == "__main__":
    main()
