"""Fixtures for aws_google; filled in by its issue."""
