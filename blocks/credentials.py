"""PLACEHOLDER pinned by the skeleton; the foundation issue replaces it."""

from prefect_gcp import GcpCredentials


class AwsWorkloadIdentityCredentials(GcpCredentials):
    """Google credentials from the ECS task role via Workload Identity Federation."""

    _block_type_name = "AWS Workload Identity Credentials"
    _block_type_slug = "aws-workload-identity-credentials"
