#!/usr/bin/env bash
# AWS side, for Prefect Cloud: the ECS task role Google admits, the ECS push work pool with its
# infrastructure, and the iam:PassRole the pool's IAM user needs to start tasks with the role.
#
#   AWS_REGION=ap-northeast-1 TASK_ROLE_NAME=access2bq deployments/create_push_pool.sh [POOL]
#
# POOL defaults to $DEPLOY_WORK_POOL or ecs-push. DRY_RUN=1 prints the commands instead.
# Needs: aws CLI signed in as an IAM administrator, prefect logged in to Prefect Cloud
# (push pools exist only there; see README "Self-hosted" otherwise), Docker for the ECR login.
set -euo pipefail
# shellcheck source=deployments/lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(dirname "$0")/.."

POOL=${1:-${DEPLOY_WORK_POOL:-ecs-push}}
: "${AWS_REGION:?set AWS_REGION, e.g. ap-northeast-1}"
export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-$AWS_REGION}
TASK_ROLE_NAME=${TASK_ROLE_NAME:-access2bq}
# Names that `prefect work-pool create --provision-infra` uses (prefect 3.9).
EXECUTION_ROLE_NAME=${EXECUTION_ROLE_NAME:-PrefectEcsTaskExecutionRole}
PROVISIONED_USER=${PROVISIONED_USER:-prefect-ecs-user}
# The image repository deploy.sh pushes to (DEPLOY_IMAGE_REPOSITORY).
IMAGE_REPOSITORY_NAME=${IMAGE_REPOSITORY_NAME:-bq-view-to-tableau}
PYTHON=${PYTHON:-python}


if [[ "$DRY_RUN" == 1 ]]; then
  AWS_ACCOUNT_ID=${AWS_ACCOUNT_ID:-123456789012}
else
  AWS_ACCOUNT_ID=$(aws sts get-caller-identity --query Account --output text)
fi
TASK_ROLE_ARN="arn:aws:iam::${AWS_ACCOUNT_ID}:role/${TASK_ROLE_NAME}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# fill FILE: the JSON template with this account's values.
fill() {
  sed -e "s/AWS_ACCOUNT_ID/${AWS_ACCOUNT_ID}/g" -e "s/AWS_REGION/${AWS_REGION}/g" \
    -e "s/EXECUTION_ROLE_NAME/${EXECUTION_ROLE_NAME}/g" -e "s/TASK_ROLE_NAME/${TASK_ROLE_NAME}/g" "$1"
}
fill deployments/iam/task-role-trust.json >"$work/trust.json"
fill deployments/iam/passrole-policy.json >"$work/passrole.json"

# 1. The task role. It needs no AWS permissions for this pipeline: it only has to exist, be
#    assumable by ECS tasks, and be named in the Workload Identity attribute condition.
if [[ "$DRY_RUN" != 1 ]] && aws iam get-role --role-name "$TASK_ROLE_NAME" >/dev/null 2>&1; then
  echo "task role ${TASK_ROLE_NAME} exists; its trust policy is left as it is"
else
  run aws iam create-role --role-name "$TASK_ROLE_NAME" \
    --assume-role-policy-document "file://${work}/trust.json" \
    --description "ECS task role of bq-view-to-tableau; admitted by the GCP Workload Identity provider"
fi

# 2. The pool: prefect-aws's template plus the ephemeral storage variable, with the task role as
#    default. --provision-infra adds the IAM user (key in an AwsCredentials block), the execution
#    role (allowed to create log groups), cluster, VPC and an ECR repository `prefect-flows`. It
#    creates no task role.
"$PYTHON" deployments/ecs_job_template.py --task-role-arn "$TASK_ROLE_ARN" >"$work/template.json"
run prefect work-pool create "$POOL" --type ecs:push --provision-infra \
  --base-job-template "$work/template.json"

# 3. The provisioned user may pass only the execution role; starting tasks with the task role
#    needs iam:PassRole on it too (else RunTask fails with AccessDenied on iam:PassRole).
run aws iam put-user-policy --user-name "$PROVISIONED_USER" \
  --policy-name bq-view-to-tableau-passrole --policy-document "file://${work}/passrole.json"

# 4. The image repository deploy.sh pushes to, and Docker's login to the registry (the
#    provisioner logs in only when it creates its own repository).
REGISTRY="${AWS_ACCOUNT_ID}.dkr.ecr.${AWS_REGION}.amazonaws.com"
ensure_ecr_repository "$IMAGE_REPOSITORY_NAME"
ecr_login "$REGISTRY"

echo "Policy attached to ${PROVISIONED_USER}:"
cat "$work/passrole.json"
echo
echo "Settings for deployments/deploy.sh (the views and bucket are in deployments/pipelines.yaml):"
if [[ "$DRY_RUN" == 1 ]]; then
  echo "+ $PYTHON deployments/check_pool.py $POOL"
else
  "$PYTHON" deployments/check_pool.py "$POOL"
fi
echo "export DEPLOY_AWS_REGION=${AWS_REGION}"
echo "export DEPLOY_IMAGE_REPOSITORY=${REGISTRY}/${IMAGE_REPOSITORY_NAME}"
