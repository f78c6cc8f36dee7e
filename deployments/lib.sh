# shellcheck shell=bash
# Sourced by the setup scripts. `run CMD...` prints the command (shell-quoted), then runs it
# unless DRY_RUN=1, so every script can show exactly what it would do before doing it.
DRY_RUN=${DRY_RUN:-0}

run() {
  printf '+'
  printf ' %q' "$@"
  printf '\n'
  if [[ "$DRY_RUN" != 1 ]]; then "$@"; fi
}

# ensure_ecr_repository NAME: create the image repository unless it exists (deploy.sh pushes
# there; --provision-infra only creates one named prefect-flows).
ensure_ecr_repository() {
  if [[ "$DRY_RUN" != 1 ]] && aws ecr describe-repositories --repository-names "$1" >/dev/null 2>&1; then
    echo "ECR repository $1 exists"
  else
    run aws ecr create-repository --repository-name "$1" --image-scanning-configuration scanOnPush=true
  fi
}

# ecr_login REGISTRY: docker login to an ECR registry (the password is piped, never printed).
ecr_login() {
  printf '+ aws ecr get-login-password --region %q | docker login --username AWS --password-stdin %q\n' \
    "$AWS_REGION" "$1"
  if [[ "$DRY_RUN" != 1 ]]; then
    aws ecr get-login-password --region "$AWS_REGION" | docker login --username AWS --password-stdin "$1"
  fi
}
