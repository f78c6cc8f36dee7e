#!/usr/bin/env bash
# Register this project's block types and save the two blocks that prefect.yaml names:
#   gcp-wif  (AwsWorkloadIdentityCredentials) from the credential configuration file
#   tableau  (TableauServer) with a PAT or a connected app; the secret is read from the
#            environment or typed at the prompt, never from a file in the repository.
#
#   GCP_CRED_CONFIG=cred-config.json GCP_PROJECT=ad-mart-prod \
#   TABLEAU_SERVER_URL=https://prod-apnortheast-a.online.tableau.com TABLEAU_SITE=acme \
#   TABLEAU_TOKEN_NAME=bq-view-to-tableau deployments/register_blocks.sh
#
# Connected app instead of a PAT: set TABLEAU_CLIENT_ID, TABLEAU_SECRET_ID, TABLEAU_USERNAME
# (and TABLEAU_SECRET_VALUE or type it). Block names: CREDENTIALS_BLOCK, TABLEAU_BLOCK.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${GCP_CRED_CONFIG:?set GCP_CRED_CONFIG, the file gcp_setup.sh wrote}"
: "${GCP_PROJECT:?set GCP_PROJECT, the project that runs the BigQuery jobs}"
: "${TABLEAU_SERVER_URL:?set TABLEAU_SERVER_URL, e.g. https://prod-apnortheast-a.online.tableau.com}"
export TABLEAU_SITE=${TABLEAU_SITE:-}
export CREDENTIALS_BLOCK=${CREDENTIALS_BLOCK:-gcp-wif}
export TABLEAU_BLOCK=${TABLEAU_BLOCK:-tableau}
PYTHON=${PYTHON:-python}

prefect block register -m blocks

"$PYTHON" -m blocks save-credentials --config "$GCP_CRED_CONFIG" --project "$GCP_PROJECT" \
  --name "$CREDENTIALS_BLOCK" --overwrite

if [[ -n "${TABLEAU_CLIENT_ID:-}" ]]; then
  : "${TABLEAU_SECRET_ID:?set TABLEAU_SECRET_ID (connected app)}"
  : "${TABLEAU_USERNAME:?set TABLEAU_USERNAME, the user the connected app signs in as}"
  if [[ -z "${TABLEAU_SECRET_VALUE:-}" ]]; then
    read -rsp "Connected app secret value: " TABLEAU_SECRET_VALUE
    echo
  fi
  export TABLEAU_SECRET_VALUE
else
  : "${TABLEAU_TOKEN_NAME:?set TABLEAU_TOKEN_NAME (PAT) or TABLEAU_CLIENT_ID (connected app)}"
  if [[ -z "${TABLEAU_TOKEN_SECRET:-}" ]]; then
    read -rsp "Secret of personal access token ${TABLEAU_TOKEN_NAME}: " TABLEAU_TOKEN_SECRET
    echo
  fi
  export TABLEAU_TOKEN_SECRET
fi

"$PYTHON" - <<'PY'
import os

from blocks import TableauServer

env = os.environ.get
auth = (
    {
        "client_id": env("TABLEAU_CLIENT_ID"),
        "secret_id": env("TABLEAU_SECRET_ID"),
        "secret_value": env("TABLEAU_SECRET_VALUE"),
        "username": env("TABLEAU_USERNAME"),
    }
    if env("TABLEAU_CLIENT_ID")
    else {"token_name": env("TABLEAU_TOKEN_NAME"), "token_secret": env("TABLEAU_TOKEN_SECRET")}
)
block = TableauServer(server_url=env("TABLEAU_SERVER_URL"), site=env("TABLEAU_SITE", ""), **auth)
block.save(env("TABLEAU_BLOCK"), overwrite=True)
print(f"saved TableauServer block {env('TABLEAU_BLOCK')!r} ({block.auth_method})")
PY

echo "Check the keyless chain from an ECS task of the pool with:"
echo "  python -m blocks doctor --block ${CREDENTIALS_BLOCK}"
