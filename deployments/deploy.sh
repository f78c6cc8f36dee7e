#!/usr/bin/env bash
# Check the catalog, build and push the image, then create or update every deployment of
# prefect.yaml (two per pipeline of deployments/pipelines.yaml, one backfill).
#   export DEPLOY_IMAGE_REPOSITORY=... DEPLOY_TASK_ROLE_ARN=... (see deployments/README.md)
#   deployments/deploy.sh
# Needs: a Prefect profile pointing at your workspace/server, Docker, and `docker login` to the
# registry (create_push_pool.sh logs in to the ECR repository it provisions).
set -euo pipefail
cd "$(dirname "$0")/.."

# Defaults that are safe to assume; everything else must be given (check_env.sh says which).
export DEPLOY_WORK_POOL=${DEPLOY_WORK_POOL:-ecs-push}
if [[ -z "${DEPLOY_IMAGE_TAG:-}" ]]; then
  # Tag = commit, so a deployment says which code it runs. Uncommitted changes get their own tag.
  DEPLOY_IMAGE_TAG=$(git rev-parse --short=12 HEAD)
  if [[ -n "$(git status --porcelain -- flows blocks Dockerfile pyproject.toml uv.lock)" ]]; then
    DEPLOY_IMAGE_TAG="${DEPLOY_IMAGE_TAG}-dirty-$(date -u +%Y%m%d%H%M%S)"
  fi
  export DEPLOY_IMAGE_TAG
fi

bash deployments/check_env.sh
python -m flows catalog check # again as prefect.yaml's build step; here it fails before Prefect starts
prefect --no-prompt deploy --all "$@"
