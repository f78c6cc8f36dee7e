"""Fixtures for tableau; filled in by its issue."""
