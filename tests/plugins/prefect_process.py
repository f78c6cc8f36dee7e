"""`prefect server start` as an operator runs it (its services on), for the tests that need
what the in-process test server lacks: automations firing, the lease repossessor, a kill -9."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_URL, temporary_settings


@contextmanager
def prefect_server_process(
    home: Path, port: int, env: Mapping[str, str] | None = None
) -> Iterator[str]:
    """Start the server on 127.0.0.1:`port` with its own PREFECT_HOME (`home`, its log in
    `home/server.log`) and `env` added; yield its API URL, with this process pointed at it.

    Prefect keeps one events worker per client type whatever the API URL, so the workers are
    drained on the way in (one made earlier would send this server's events elsewhere) and on
    the way out (a backlog would retry a closed port until the process exits).
    """
    base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    log_path = home / "server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                *(str(Path(sys.executable).parent / "prefect"), "server", "start", "--no-ui"),
                *("--host", "127.0.0.1", "--port", str(port)),
            ],
            env={
                **base,
                "PREFECT_HOME": str(home),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                **(env or {}),
            },
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}/api"
        try:
            _wait_healthy(url, process, log_path)
            with temporary_settings({PREFECT_API_URL: url}):
                EventsWorker.drain_all(timeout=30)
                try:
                    yield url
                finally:
                    EventsWorker.drain_all(timeout=30)
                    APILogWorker.drain_all(timeout=30)
        finally:
            process.terminate()
            process.wait(timeout=30)


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"prefect server start did not come up:\n{log_path.read_text()}")
        time.sleep(0.3)
