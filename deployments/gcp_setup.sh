#!/usr/bin/env bash
# Google Cloud side of the keyless setup: a Workload Identity pool and AWS provider that admit
# only the ECS task role, a service account with just the roles the pipeline uses, and the
# credential configuration file (no secret inside) for the credentials block.
#
#   GCP_PROJECT=ad-mart-prod AWS_ACCOUNT_ID=123456789012 TASK_ROLE_NAME=access2bq \
#   MART_DATASET=ads_mart STAGING_BUCKET=ad-mart-prod-tableau-staging \
#   deployments/gcp_setup.sh
#
# Optional: SOURCE_DATASETS="raw_ads other" (datasets the view reads, when it is not an
# authorized view), STAGING_LOCATION (the bucket's location: the dataset's, default
# asia-northeast1), STAGING_PREFIX (gcs.prefix, default bq-tableau), POOL_ID, PROVIDER_ID,
# SA_NAME, CRED_CONFIG (output path), DRY_RUN=1 (print the commands instead of running them).
# Needs gcloud and bq, signed in as a project owner.
set -euo pipefail
# shellcheck source=deployments/lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

: "${GCP_PROJECT:?set GCP_PROJECT, the project that runs the BigQuery jobs}"
: "${AWS_ACCOUNT_ID:?set AWS_ACCOUNT_ID, the 12-digit account of the ECS tasks}"
: "${TASK_ROLE_NAME:?set TASK_ROLE_NAME, the ECS task role name (e.g. access2bq)}"
: "${MART_DATASET:?set MART_DATASET, the dataset holding the data-mart view}"
: "${STAGING_BUCKET:?set STAGING_BUCKET, the GCS bucket for the Parquet export}"
POOL_ID=${POOL_ID:-aws-ecs}
PROVIDER_ID=${PROVIDER_ID:-aws-provider}
SA_NAME=${SA_NAME:-bq-view-to-tableau}
SOURCE_DATASETS=${SOURCE_DATASETS:-}
CRED_CONFIG=${CRED_CONFIG:-cred-config.json}
STAGING_LOCATION=${STAGING_LOCATION:-asia-northeast1}
STAGING_PREFIX=${STAGING_PREFIX:-bq-tableau}

if [[ ! "$AWS_ACCOUNT_ID" =~ ^[0-9]{12}$ ]]; then
  echo "error: AWS_ACCOUNT_ID='$AWS_ACCOUNT_ID' must be 12 digits" >&2
  exit 1
fi


if [[ "$DRY_RUN" == 1 ]]; then
  PROJECT_NUMBER=${PROJECT_NUMBER:-000000000000}
else
  PROJECT_NUMBER=$(gcloud projects describe "$GCP_PROJECT" --format='value(projectNumber)')
fi
SA_EMAIL="${SA_NAME}@${GCP_PROJECT}.iam.gserviceaccount.com"
# What the task's credentials look like to Google after the mapping below: the assumed-role
# ARN without the session name (ECS uses the task id as session name, so it changes per task).
AWS_ROLE="arn:aws:sts::${AWS_ACCOUNT_ID}:assumed-role/${TASK_ROLE_NAME}"
MAPPING="google.subject=assertion.arn,attribute.aws_role=assertion.arn.contains('assumed-role') ? assertion.arn.extract('{account_arn}assumed-role/') + 'assumed-role/' + assertion.arn.extract('assumed-role/{role_name}/') : assertion.arn"
CONDITION="attribute.aws_role == '${AWS_ROLE}'"
POOL="projects/${PROJECT_NUMBER}/locations/global/workloadIdentityPools/${POOL_ID}"

run gcloud services enable --project "$GCP_PROJECT" \
  iam.googleapis.com iamcredentials.googleapis.com sts.googleapis.com \
  bigquery.googleapis.com storage.googleapis.com

# 1. Pool and provider. The condition admits the task role only: any other role of the
#    account (the execution role, an EC2 instance role) is rejected by Google STS.
run gcloud iam workload-identity-pools create "$POOL_ID" --project "$GCP_PROJECT" \
  --location global --display-name "AWS ECS tasks"
run gcloud iam workload-identity-pools providers create-aws "$PROVIDER_ID" \
  --project "$GCP_PROJECT" --location global --workload-identity-pool "$POOL_ID" \
  --account-id "$AWS_ACCOUNT_ID" \
  --attribute-mapping "$MAPPING" \
  --attribute-condition "$CONDITION"

# 2. The service account the task becomes, with only what the pipeline does:
#    run jobs (project), read the view (mart dataset; and the source tables' datasets when the
#    view is not authorized), write/list/delete the export (staging bucket).
run gcloud iam service-accounts create "$SA_NAME" --project "$GCP_PROJECT" \
  --display-name "BigQuery view to Tableau (from AWS ECS)"
run gcloud projects add-iam-policy-binding "$GCP_PROJECT" \
  --member "serviceAccount:${SA_EMAIL}" --role roles/bigquery.jobUser --condition None
for dataset in "$MART_DATASET" $SOURCE_DATASETS; do
  run bq query --project_id "$GCP_PROJECT" --nouse_legacy_sql \
    "GRANT \`roles/bigquery.dataViewer\` ON SCHEMA \`${GCP_PROJECT}.${dataset}\` TO \"serviceAccount:${SA_EMAIL}\""
done
# The staging bucket, in the dataset's location. Soft delete off: BigQuery's export docs advise
# it (and no Bucket Lock) for export buckets, whose rewrites would otherwise be charged. The
# lifecycle rule deletes what failed runs leave under the prefix after 3 days.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed -e "s|STAGING_PREFIX|${STAGING_PREFIX}|g" "$(dirname "${BASH_SOURCE[0]}")/gcs/staging-lifecycle.json" \
  >"$work/lifecycle.json"
if [[ "$DRY_RUN" != 1 ]] && gcloud storage buckets describe "gs://${STAGING_BUCKET}" >/dev/null 2>&1; then
  run gcloud storage buckets update "gs://${STAGING_BUCKET}" --clear-soft-delete \
    --lifecycle-file="$work/lifecycle.json"
else
  run gcloud storage buckets create "gs://${STAGING_BUCKET}" --project "$GCP_PROJECT" \
    --location "$STAGING_LOCATION" --uniform-bucket-level-access --soft-delete-duration=0 \
    --lifecycle-file="$work/lifecycle.json"
fi
echo "Lifecycle rule of gs://${STAGING_BUCKET}:"
cat "$work/lifecycle.json"
run gcloud storage buckets add-iam-policy-binding "gs://${STAGING_BUCKET}" \
  --member "serviceAccount:${SA_EMAIL}" --role roles/storage.objectAdmin

# 3. Let identities of the pool whose aws_role is the task role impersonate the account.
run gcloud iam service-accounts add-iam-policy-binding "$SA_EMAIL" --project "$GCP_PROJECT" \
  --role roles/iam.workloadIdentityUser \
  --member "principalSet://iam.googleapis.com/${POOL}/attribute.aws_role/${AWS_ROLE}"

# 4. The credential configuration: audience, token and impersonation URLs. No secret inside;
#    register_blocks.sh stores it in the credentials block.
run gcloud iam workload-identity-pools create-cred-config "${POOL}/providers/${PROVIDER_ID}" \
  --service-account "$SA_EMAIL" --aws --output-file "$CRED_CONFIG"

echo "done: credential configuration in ${CRED_CONFIG}; next: deployments/register_blocks.sh"
