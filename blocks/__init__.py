"""Prefect blocks: keyless Google credentials from the ECS task role, and the Tableau server.

Register them with `prefect block register -m blocks`.
"""

from blocks.credentials import AwsWorkloadIdentityCredentials
from blocks.logs import send_to_prefect
from blocks.tableau import TableauServer

send_to_prefect(__name__)

__all__ = ["AwsWorkloadIdentityCredentials", "TableauServer"]
