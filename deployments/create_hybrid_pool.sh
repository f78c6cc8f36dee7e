#!/usr/bin/env bash
# Self-hosted alternative to the push pool (no Prefect Cloud): an `ecs` work pool on your own
# Prefect server, and a Prefect worker running as an ECS service that starts one Fargate task
# per flow run, with the same task role, image and job variables as the push pool.
#
#   AWS_REGION=ap-northeast-1 TASK_ROLE_NAME=access2bq PREFECT_API_URL=http://prefect.internal:4200/api \
#   DEPLOY_ECS_CLUSTER=pipelines SUBNETS=subnet-0aa,subnet-0bb SECURITY_GROUP=sg-0cc \
#   deployments/create_hybrid_pool.sh [POOL]
#
# It builds and pushes the worker image (the Dockerfile's `worker` target, with prefect-aws) as
# WORKER_IMAGE (default: <registry>/bq-view-to-tableau-worker:<commit>), and creates the flow
# image's repository that deploy.sh pushes to. The execution role (EXECUTION_ROLE_NAME, default
# ecsTaskExecutionRole) must exist; it is allowed to create the two log groups.
# DRY_RUN=1 prints the commands instead. Needs aws, docker and prefect (this repo's environment).
set -euo pipefail
# shellcheck source=deployments/lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(dirname "$0")/.."

POOL=${1:-${DEPLOY_WORK_POOL:-ecs-hybrid}}
: "${AWS_REGION:?set AWS_REGION, e.g. ap-northeast-1}"
export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-$AWS_REGION}
: "${PREFECT_API_URL:?set PREFECT_API_URL, your Prefect server as the VPC reaches it}"
: "${DEPLOY_ECS_CLUSTER:?set DEPLOY_ECS_CLUSTER, the ECS cluster for the worker and the runs}"
: "${SUBNETS:?set SUBNETS, comma-separated subnet ids for the worker service}"
: "${SECURITY_GROUP:?set SECURITY_GROUP, a security group that allows egress}"
TASK_ROLE_NAME=${TASK_ROLE_NAME:-access2bq}
EXECUTION_ROLE_NAME=${EXECUTION_ROLE_NAME:-ecsTaskExecutionRole}
WORKER_ROLE_NAME=${WORKER_ROLE_NAME:-prefect-ecs-worker}
IMAGE_REPOSITORY_NAME=${IMAGE_REPOSITORY_NAME:-bq-view-to-tableau}
PYTHON=${PYTHON:-python}


if [[ "$DRY_RUN" == 1 ]]; then
  AWS_ACCOUNT_ID=${AWS_ACCOUNT_ID:-123456789012}
else
  AWS_ACCOUNT_ID=$(aws sts get-caller-identity --query Account --output text)
fi
REGISTRY="${AWS_ACCOUNT_ID}.dkr.ecr.${AWS_REGION}.amazonaws.com"
WORKER_IMAGE=${WORKER_IMAGE:-${REGISTRY}/${IMAGE_REPOSITORY_NAME}-worker:$(git rev-parse --short=12 HEAD)}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fill() {
  sed -e "s|AWS_ACCOUNT_ID|${AWS_ACCOUNT_ID}|g" -e "s|AWS_REGION|${AWS_REGION}|g" \
    -e "s|EXECUTION_ROLE_NAME|${EXECUTION_ROLE_NAME}|g" -e "s|WORKER_ROLE_NAME|${WORKER_ROLE_NAME}|g" \
    -e "s|TASK_ROLE_NAME|${TASK_ROLE_NAME}|g" -e "s|WORKER_IMAGE|${WORKER_IMAGE}|g" \
    -e "s|POOL_NAME|${POOL}|g" -e "s|PREFECT_API_URL_VALUE|${PREFECT_API_URL}|g" "$1"
}
fill deployments/iam/task-role-trust.json >"$work/trust.json"
fill deployments/iam/worker-policy.json >"$work/worker-policy.json"
fill deployments/ecs/worker-task-definition.json >"$work/worker-task.json"
fill deployments/iam/execution-role-logs-policy.json >"$work/logs-policy.json"

# 1. The task role of the flow runs (the one Google admits), as for the push pool.
if [[ "$DRY_RUN" != 1 ]] && aws iam get-role --role-name "$TASK_ROLE_NAME" >/dev/null 2>&1; then
  echo "task role ${TASK_ROLE_NAME} exists"
else
  run aws iam create-role --role-name "$TASK_ROLE_NAME" \
    --assume-role-policy-document "file://${work}/trust.json"
fi

# 2. The worker's own role: may register and run task definitions and pass the two roles.
#    It is NOT admitted by Google: only flow-run tasks (task role) reach BigQuery.
run aws iam create-role --role-name "$WORKER_ROLE_NAME" \
  --assume-role-policy-document "file://${work}/trust.json"
run aws iam put-role-policy --role-name "$WORKER_ROLE_NAME" \
  --policy-name prefect-ecs-worker --policy-document "file://${work}/worker-policy.json"

# 3. Logs: the flow runs and the worker send them to /ecs/... groups that ECS creates on first
#    use (awslogs-create-group), which needs logs:CreateLogGroup; AWS's managed execution-role
#    policy has only CreateLogStream and PutLogEvents.
run aws iam put-role-policy --role-name "$EXECUTION_ROLE_NAME" \
  --policy-name bq-view-to-tableau-create-log-groups --policy-document "file://${work}/logs-policy.json"

# 4. The image repositories (flow image for deploy.sh, worker image) and the worker image.
ensure_ecr_repository "$IMAGE_REPOSITORY_NAME"
ensure_ecr_repository "${IMAGE_REPOSITORY_NAME}-worker"
ecr_login "$REGISTRY"
run docker build --platform linux/amd64 --target worker -t "$WORKER_IMAGE" .
run docker push "$WORKER_IMAGE"

# 5. The pool on your server, with the same template as the push pool.
"$PYTHON" deployments/ecs_job_template.py \
  --task-role-arn "arn:aws:iam::${AWS_ACCOUNT_ID}:role/${TASK_ROLE_NAME}" >"$work/template.json"
run prefect work-pool create "$POOL" --type ecs --base-job-template "$work/template.json"

# 6. The worker: one always-on Fargate task polling the pool.
run aws ecs register-task-definition --cli-input-json "file://${work}/worker-task.json"
run aws ecs create-service --cluster "$DEPLOY_ECS_CLUSTER" --service-name prefect-ecs-worker \
  --task-definition prefect-ecs-worker --desired-count 1 --launch-type FARGATE \
  --network-configuration "awsvpcConfiguration={subnets=[${SUBNETS}],securityGroups=[${SECURITY_GROUP}],assignPublicIp=ENABLED}"

echo "Then deploy with DEPLOY_WORK_POOL=${POOL} DEPLOY_IMAGE_REPOSITORY=${REGISTRY}/${IMAGE_REPOSITORY_NAME} deployments/deploy.sh"
