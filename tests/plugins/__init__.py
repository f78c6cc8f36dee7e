"""Fixture modules, registered in tests/conftest.py so every test directory can use them."""
