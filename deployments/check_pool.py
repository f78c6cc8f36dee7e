"""Print the ECS settings of an existing work pool as `export DEPLOY_...=` lines.

    python deployments/check_pool.py ecs-push

After `prefect work-pool create --provision-infra`, the pool's template holds the cluster, VPC
and execution role it created; deploy.sh needs them as DEPLOY_* variables.
"""

from __future__ import annotations

import shlex
import sys

from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound

_EXPORTS = {
    "cluster": "DEPLOY_ECS_CLUSTER",
    "vpc_id": "DEPLOY_VPC_ID",
    "execution_role_arn": "DEPLOY_EXECUTION_ROLE_ARN",
    "task_role_arn": "DEPLOY_TASK_ROLE_ARN",
}


def main(argv: list[str]) -> int:
    """Print the exports for the pool named in argv[0]; 1 if it is missing or not ECS."""
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(argv[0])
        except ObjectNotFound:
            print(f"error: work pool {argv[0]!r} not found; create it first", file=sys.stderr)
            return 1
    if not pool.type.startswith("ecs"):
        print(f"error: work pool {argv[0]!r} has type {pool.type!r}, not ecs", file=sys.stderr)
        return 1
    properties = pool.base_job_template.get("variables", {}).get("properties", {})
    print(f"export DEPLOY_WORK_POOL={shlex.quote(pool.name)}")
    for variable, env in _EXPORTS.items():
        default = properties.get(variable, {}).get("default")
        if default:
            print(f"export {env}={shlex.quote(str(default))}")
        else:
            print(f"# {env}: the pool has no default {variable}; set it yourself")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
