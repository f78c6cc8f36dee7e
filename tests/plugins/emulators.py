"""Fixtures for emulators; filled in by its issue."""
