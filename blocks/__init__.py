"""Prefect blocks: keyless Google credentials from the ECS task role, and the Tableau server.

Register them with `prefect block register -m blocks`.
"""

from blocks.credentials import AwsWorkloadIdentityCredentials
from blocks.tableau import TableauServer

__all__ = ["AwsWorkloadIdentityCredentials", "TableauServer"]
