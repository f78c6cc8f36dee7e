"""The daily BigQuery view -> GCS -> Hyper -> Tableau pipeline."""

from blocks.logs import send_to_prefect

send_to_prefect(__name__)
