"""The ECS work pool's base job template: prefect-aws's own, plus Fargate ephemeral storage.

prefect-aws's template has no variable for the task's ephemeral storage (Fargate gives 20 GiB;
a large day's Parquet plus its Hyper file can outgrow it), and a deployment's job variables can
only fill variables the pool's template declares: unknown ones are accepted and silently ignored.
So the pool gets prefect-aws's template with one added variable, `ephemeral_storage_gib`, wired
into the task definition's `ephemeralStorage.sizeInGiB`. Nothing else is changed.

    python deployments/ecs_job_template.py [--task-role-arn ARN] > ecs-template.json
    prefect work-pool create NAME --type ecs:push --provision-infra \
        --base-job-template ecs-template.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any, Final

from prefect_aws.workers.ecs_worker import ECSWorker

EPHEMERAL_STORAGE_VARIABLE: Final[str] = "ephemeral_storage_gib"
# Fargate accepts 21-200 GiB; a task definition without the key gets the 20 GiB default.
_MIN_GIB: Final[int] = 21
_MAX_GIB: Final[int] = 200
_ROLE_ARN_RE: Final = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")


def ecs_base_job_template(*, task_role_arn: str | None = None) -> dict[str, Any]:
    """Return prefect-aws's ECS base job template with the ephemeral storage variable added.

    Args:
        task_role_arn: If given, the pool's default `task_role_arn`: the role that the
            Workload Identity provider's attribute condition admits.

    Returns:
        The template as a JSON-ready dict (`job_configuration` + `variables`).

    Raises:
        ValueError: `task_role_arn` is not an IAM role ARN.
    """
    template = ECSWorker.get_default_base_job_template()
    properties = template["variables"]["properties"]
    properties[EPHEMERAL_STORAGE_VARIABLE] = {
        "title": "Ephemeral Storage (GiB)",
        "description": "Fargate task storage for the run's Parquet and Hyper files "
        f"({_MIN_GIB}-{_MAX_GIB} GiB; Fargate's default without it is 20 GiB).",
        "type": "integer",
        "minimum": _MIN_GIB,
        "maximum": _MAX_GIB,
        "default": _MIN_GIB,  # never null: an empty ephemeralStorage is rejected by ECS
    }
    template["job_configuration"]["task_definition"]["ephemeralStorage"] = {
        "sizeInGiB": "{{ " + EPHEMERAL_STORAGE_VARIABLE + " }}"
    }
    if task_role_arn is not None:
        if not _ROLE_ARN_RE.fullmatch(task_role_arn):
            raise ValueError(
                f"task_role_arn {task_role_arn!r} is not an IAM role ARN "
                "(arn:aws:iam::<12-digit account>:role/<name>)"
            )
        properties["task_role_arn"]["default"] = task_role_arn
    return template


def main(argv: list[str] | None = None) -> int:
    """Print the template as JSON for `prefect work-pool create/update --base-job-template`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task-role-arn", help="default task role of the pool")
    args = parser.parse_args(argv)
    try:
        template = ecs_base_job_template(task_role_arn=args.task_role_arn)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    json.dump(template, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
