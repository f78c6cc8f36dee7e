"""One day of N rows through the local stand-ins: time per stage and orchestration overhead.

    uv run python bench/bench_pipeline.py [--rows 1000000] [--server both|embedded|cli]

Runs the real `daily_refresh` flow (the real credentials block over the loopback ECS/STS/IAM
fakes, the BigQuery and GCS emulators, the fake Tableau) for one day of `--rows` rows, on
Prefect's embedded server and on a real `prefect server start` (each in a fresh process). Each
stage function is timed from inside its task (its "own" time); the orchestration overhead is the
flow's wall time minus the stages' own time: Prefect task and flow bookkeeping, block loading,
the credential exchange, artifacts, cleanup and the publish slot, whose share (taking and giving
back the token's slot, twice: preflight and publish) is reported on its own line.
Target: overhead under 10% of the run. The emulators' speed is not ours to tune: the figures say
where a run's time goes, not how fast BigQuery or Tableau are.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DAY = date(2026, 11, 20)
ROUNDS = 3
STAGES = [
    ("preflight", "dry_run_days"),
    ("preflight", "check_target"),
    ("export", "export_view"),
    ("download", "download_export"),
    ("build", "build_hyper"),
    ("publish", "publish"),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--server", choices=["both", "embedded", "cli"], default="both")
    args = parser.parse_args()
    if args.server != "both":
        return _measure(args.rows, args.server)
    results = []
    for server in ("embedded", "cli"):
        child = subprocess.run(
            [sys.executable, __file__, "--rows", str(args.rows), "--server", server],
            capture_output=True,
            text=True,
            check=False,
        )
        print(child.stdout, end="")
        if child.returncode:
            print(child.stderr[-4000:], file=sys.stderr)
            return child.returncode
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))
    print(
        f"\n{'server':<10}{'wall s':>8}{'stages s':>10}{'overhead':>10}{'of wall':>9}"
        f"{'slot s':>8}{'Prefect slot s':>16}{'heartbeat s':>13}{'rest of wall':>14}"
        f"{'overhead/stages':>17}"
    )
    for r in results:
        rest = r["overhead"] - r["heartbeat"]  # without Prefect's heartbeat join
        print(
            f"{r['server']:<10}{r['wall']:>8.2f}{r['stages']:>10.2f}{r['overhead']:>10.2f}"
            f"{r['overhead'] / r['wall']:>9.1%}{r['slot']:>8.3f}{r['prefect_slot']:>16.3f}"
            f"{r['heartbeat']:>13.2f}"
            f"{rest / r['wall']:>14.1%}{r['overhead'] / r['stages']:>17.3f}"
        )
    return 0


def _measure(rows: int, server: str) -> int:
    home = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    os.environ["PREFECT_HOME"] = str(home / "prefect")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    (home / "prefect").mkdir()
    with _prefect_server(home / "server") if server == "cli" else _nothing():
        return _run(rows, server, home)


def _run(rows: int, server: str, home: Path) -> int:
    from google.auth import credentials

    # Offline: google-auth's regional access boundary lookup can only fail; keep it out.
    credentials.CredentialsWithRegionalAccessBoundary._is_regional_access_boundary_lookup_required = (  # noqa: E501
        lambda self: False
    )

    import flows.daily as daily
    import flows.steps as steps
    import flows.tableau as tableau
    from standins.stack import local_stack

    own: dict[str, float] = {}
    running: list[str] = []  # the stage being timed, which the slot's time is taken out of

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*a: Any, **kw: Any) -> Any:
            started = time.perf_counter()
            running.append(name)
            try:
                return fn(*a, **kw)
            finally:
                running.pop()
                own[name] = own.get(name, 0.0) + time.perf_counter() - started

        return wrapper

    for stage, attr in STAGES:
        setattr(steps, attr, timed(stage, getattr(steps, attr)))
    slot = _time_slot(tableau, own, running)
    joins = _time_heartbeat_join()

    print(f"[{server}] seeding {rows:,} rows for {DAY} ...", flush=True)
    with local_stack(home / "data", (DAY - timedelta(days=1),), 10) as stack:
        _seed_day(stack, rows)
        os.environ.update(stack.environ())
        stack.save_blocks()
        config = stack.pipeline_config(work_dir=home / "work")
        # Warm-up on the small day: imports, the server, the slot's limit, the first publish.
        daily.daily_refresh(config=config, run_date=DAY - timedelta(days=1))
        ours, baseline = slot.real, _prefect_concurrency()
        runs: dict[str, list[dict[str, Any]]] = {"ours": [], "prefect": []}
        for _ in range(ROUNDS):  # interleaved, so drift in the machine hits both alike
            for kind, impl in (("ours", ours), ("prefect", baseline)):
                slot.real = impl
                for measured in (own, slot, joins):
                    measured.clear()
                started = time.perf_counter()
                result = daily.daily_refresh(config=config, run_date=DAY)
                wall = time.perf_counter() - started
                runs[kind].append(
                    {"wall": wall, "own": dict(own), "slot": sum(slot), "join": sum(joins),
                     "tasks": result["stage_seconds"], "rows": result["rows"]}
                )  # fmt: skip
        published = stack.tableau.rows_by_date("ad_performance_daily").get(DAY, 0)

    run = _median_run(runs["ours"])
    before = _median_run(runs["prefect"])
    wall, stages, tasks = run["wall"], sum(run["own"].values()), run["tasks"]
    overhead = wall - stages
    print(f"\n[{server}] one day of {run['rows']:,} rows (Tableau holds {published:,}); "
          f"median of {ROUNDS} runs")  # fmt: skip
    print(f"{'stage':<12}{'own s':>9}{'share':>9}")
    for name, seconds in run["own"].items():
        print(f"{name:<12}{seconds:>9.2f}{seconds / wall:>9.1%}")
    print(f"{'overhead':<12}{overhead:>9.2f}{overhead / wall:>9.1%}   (target < 10%)")
    print(
        f"{'  in tasks':<12}{tasks - stages:>9.2f}{(tasks - stages) / wall:>9.1%}   (5 task runs)"
    )
    print(f"{'  in flow':<12}{wall - tasks:>9.2f}{(wall - tasks) / wall:>9.1%}   (the rest)")
    print(f"{'  heartbeat':<12}{run['join']:>9.2f}{run['join'] / wall:>9.1%}   "
          "(Prefect joins its heartbeat thread)")  # fmt: skip
    print(f"{'  slot':<12}{run['slot']:>9.3f}{run['slot'] / wall:>9.1%}   "
          "(taken twice and given back)")  # fmt: skip
    print(f"{'flow wall':<12}{wall:>9.2f}")
    print(f"overhead / stages' own time: {overhead / stages:.3f}")
    print(f"rows/s end to end: {run['rows'] / wall:,.0f}")
    before_overhead = before["wall"] - sum(before["own"].values())
    print(f"baseline, Prefect's concurrency() as the slot: slot {before['slot']:.3f} s, overhead "
          f"{before_overhead:.2f} s ({before_overhead / before['wall']:.1%}); ours takes the slot "
          f"{before['slot'] / max(run['slot'], 1e-9):.1f}x faster")  # fmt: skip
    summary = {"server": server, "wall": wall, "stages": stages, "overhead": overhead,
               "slot": run["slot"], "heartbeat": run["join"], "prefect_slot": before["slot"],
               "prefect_overhead": before_overhead, "prefect_wall": before["wall"]}  # fmt: skip
    print(json.dumps(summary))
    return 0 if published == rows else 1


def _time_heartbeat_join() -> list[float]:
    """Time the end of Prefect's flow-run heartbeat context: it joins a thread that sleeps in
    1 s steps (Prefect 3.9), so every flow run ends up to 1 s late."""
    import prefect.flow_engine as engine

    real = engine._send_heartbeats
    spent: list[float] = []

    @contextmanager
    def timed_heartbeats(*args: Any, **kwargs: Any) -> Iterator[None]:
        with real(*args, **kwargs):
            try:
                yield
            finally:
                leaving = time.perf_counter()
        spent.append(time.perf_counter() - leaving)

    engine._send_heartbeats = timed_heartbeats
    return spent


class _SlotTimes(list[float]):
    """Seconds spent taking and giving back the slot; `real` is the slot being timed."""

    real: Callable[..., Any]


def _time_slot(tableau: Any, own: dict[str, float], running: list[str]) -> _SlotTimes:
    """Time taking and giving back the publish slot, apart from what runs inside it.

    The Tableau step takes the slot inside its own call, so that time is moved out of the
    running stage's own time into the overhead, where the slot belongs.
    """
    spent = _SlotTimes()
    spent.real = tableau.publish_slot

    def count(seconds: float) -> None:
        spent.append(seconds)
        own[running[-1]] = own.get(running[-1], 0.0) - seconds

    @contextmanager
    def timed_slot(*args: Any, **kwargs: Any) -> Iterator[Any]:
        started = time.perf_counter()
        with spent.real(*args, **kwargs) as hold:
            count(time.perf_counter() - started)
            try:
                yield hold
            finally:
                leaving = time.perf_counter()
        count(time.perf_counter() - leaving)

    tableau.publish_slot = timed_slot
    return spent


def _prefect_concurrency() -> Callable[..., Any]:
    """The slot as it was: Prefect's `concurrency()` (300 s lease, silent wait, 2 s retries)."""
    from prefect.concurrency.sync import concurrency

    from flows.publish_slot import SlotHold

    @contextmanager
    def slot(name: str, *, timeout_seconds: float, **_: Any) -> Iterator[SlotHold]:
        with concurrency(name, occupy=1, timeout_seconds=timeout_seconds, strict=True):
            yield SlotHold(name, 0.0, 0.0)

    return slot


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return sorted(runs, key=lambda r: r["wall"])[len(runs) // 2]


@contextmanager
def _nothing() -> Iterator[None]:
    yield


@contextmanager
def _prefect_server(home: Path) -> Iterator[None]:
    """`prefect server start` on a free port; PREFECT_API_URL points at it while inside."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    home.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    prefect = str(Path(sys.executable).parent / "prefect")
    log = (home / "server.log").open("w")
    server = subprocess.Popen(
        [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(
                        f"prefect server start failed: {home / 'server.log'}"
                    ) from None
                time.sleep(0.5)
        os.environ["PREFECT_API_URL"] = url
        yield
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def _seed_day(stack: Any, rows: int) -> None:
    """Add `rows` rows for DAY to the mart's source table with one INSERT ... SELECT."""
    table = stack.source_table
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
