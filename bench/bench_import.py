"""What the flow image's precompiled bytecode saves: a fresh container importing `flows.daily`.

The flow image runs with PYTHONDONTWRITEBYTECODE=1 (the container does not write into /app), so
without bytecode shipped in the image every flow-run container compiles our modules again. This
lays out two copies of `flows/` and `blocks/` in a temp dir, one compiled as the Dockerfile does
(`compileall --invalidation-mode checked-hash`) and one not (the baseline), and times
the import of our modules in fresh processes, alternating the two. Third-party packages
come from this environment's site-packages, already compiled in both cases (as uv compiles them
in the image), and are imported before the clock starts, so only our code is timed. No network.

    .venv/bin/python bench/bench_import.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _lay_out(root: Path, *, compiled: bool) -> Path:
    app = root / ("compiled" if compiled else "source")
    for package in ("flows", "blocks"):
        shutil.copytree(REPO / package, app / package, ignore=shutil.ignore_patterns("__pycache__"))
    if compiled:
        compile_all = [sys.executable, "-m", "compileall", "-q", "--invalidation-mode"]
        subprocess.run([*compile_all, "checked-hash", "flows", "blocks"], cwd=app, check=True)
    return app


# Third-party modules our code imports, loaded before the clock starts: they are compiled in
# both cases (uv compiles site-packages in the image), so only our own modules are timed.
_THIRD_PARTY = (
    "prefect, prefect_gcp.credentials, google.auth.aws, google.cloud.bigquery, "
    "google.cloud.storage, tableauhyperapi, tableauserverclient, pyarrow.parquet, celpy, "
    "defusedxml, jwt, requests"
)


def _import_seconds(app: Path) -> float:
    """Seconds to import our modules in a fresh process, third-party imports excluded."""
    # -B: write no bytecode (the image's PYTHONDONTWRITEBYTECODE); -I -S: no cwd, user site or
    # .pth files on sys.path (the editable install's would import the repository's copy), so
    # site-packages is added by hand and the copy under test goes first.
    env = {**os.environ, "PREFECT_HOME": str(app / ".prefect")}
    site = next(p for p in sys.path if p.endswith("site-packages"))
    code = (
        f"import sys, time; sys.path[:0] = [{str(app)!r}]; sys.path.append({site!r}); "
        f"import {_THIRD_PARTY}; start = time.perf_counter(); "
        "import flows.daily, flows.backfill; print(time.perf_counter() - start); "
        f"assert flows.daily.__file__.startswith({str(app)!r})"
    )
    done = subprocess.run(
        [sys.executable, "-B", "-I", "-S", "-c", code],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    rounds = parser.parse_args().rounds
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        source = _lay_out(Path(tmp), compiled=False)
        compiled = _lay_out(Path(tmp), compiled=True)
        _import_seconds(source), _import_seconds(compiled)  # warm the OS file cache
        baseline, ours = [], []
        for _ in range(rounds):
            baseline.append(_import_seconds(source))
            ours.append(_import_seconds(compiled))
        assert not list((source / "flows").glob("__pycache__")), "the baseline compiled to disk"
    b, o = statistics.median(baseline), statistics.median(ours)
    print(
        f"import of our modules (flows.daily, flows.backfill and what they import of flows/ and "
        f"blocks/) in a fresh process, third-party imports excluded, {rounds} rounds (median):"
    )
    print(f"  our code compiled at start (no bytecode, as before): {b * 1000:7.0f} ms")
    print(f"  bytecode shipped (checked-hash, as the image now):   {o * 1000:7.0f} ms")
    print(f"  saved per container start: {(b - o) * 1000:.0f} ms = {b / o:.2f}x faster import")


if __name__ == "__main__":
    main()
