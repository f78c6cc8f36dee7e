#!/usr/bin/env bash
# Fail a deploy early and clearly when a setting prefect.yaml reads from the environment is
# missing or malformed. prefect.yaml runs this as the first build step of every deployment,
# because Prefect renders an unset {{ $VAR }} as '' and would deploy an empty image or role.
#   deployments/check_env.sh        (also run by deployments/deploy.sh)
set -euo pipefail

errors=()

# require NAME REGEX HINT: NAME must be set and match REGEX (bash ERE), else record HINT.
require() {
  local name=$1 regex=$2 hint=$3
  local value=${!name:-}
  if [[ -z "$value" ]]; then
    errors+=("$name is not set: $hint")
  elif [[ ! "$value" =~ $regex ]]; then
    errors+=("$name='$value' is malformed: $hint")
  fi
}

require DEPLOY_WORK_POOL '^[A-Za-z0-9][A-Za-z0-9_. -]*$' \
  "the ECS work pool's name, e.g. ecs-push"
require DEPLOY_IMAGE_REPOSITORY '^[a-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)+$' \
  "the image repository without a tag, e.g. 123456789012.dkr.ecr.ap-northeast-1.amazonaws.com/bq-view-to-tableau"
require DEPLOY_IMAGE_TAG '^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$' \
  "the image tag, e.g. the git commit (deploy.sh sets it)"
require DEPLOY_AWS_REGION '^[a-z]{2}(-gov)?-[a-z]+-[0-9]$' "e.g. ap-northeast-1"
require DEPLOY_TASK_ROLE_ARN '^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]+$' \
  "the ECS task role that the Workload Identity attribute condition admits, e.g. arn:aws:iam::123456789012:role/access2bq"
require DEPLOY_EXECUTION_ROLE_ARN '^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]+$' \
  "the ECS task execution role (pulls the image, writes logs), e.g. arn:aws:iam::123456789012:role/PrefectEcsTaskExecutionRole"
require DEPLOY_ECS_CLUSTER '^(arn:aws[a-z-]*:ecs:[a-z0-9-]+:[0-9]{12}:cluster/)?[A-Za-z0-9_-]{1,255}$' \
  "the ECS cluster name or ARN, e.g. prefect-ecs-cluster"
require DEPLOY_VPC_ID '^vpc-[0-9a-f]{8,17}$' "the VPC the tasks run in, e.g. vpc-0123456789abcdef0"
# The views, the bucket and the datasources are the catalog's (deployments/pipelines.yaml),
# checked by prefect.yaml's next build step with flows/config.py's own rules.

if [[ -n "${DEPLOY_TASK_ROLE_ARN:-}" && "${DEPLOY_TASK_ROLE_ARN:-}" == "${DEPLOY_EXECUTION_ROLE_ARN:-}" ]]; then
  errors+=("DEPLOY_TASK_ROLE_ARN equals DEPLOY_EXECUTION_ROLE_ARN: the task role is the one Google admits; keep it separate")
fi

if ((${#errors[@]})); then
  echo "error: cannot deploy, fix these environment variables (see deployments/README.md):" >&2
  printf '  - %s\n' "${errors[@]}" >&2
  exit 1
fi
echo "deploy settings OK: image ${DEPLOY_IMAGE_REPOSITORY}:${DEPLOY_IMAGE_TAG}, pool ${DEPLOY_WORK_POOL}, task role ${DEPLOY_TASK_ROLE_ARN}"
