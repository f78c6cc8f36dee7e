"""The daily BigQuery view -> GCS -> Hyper -> Tableau pipeline."""
