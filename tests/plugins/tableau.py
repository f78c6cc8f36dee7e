"""Fixtures for Tableau: one fake Tableau REST server per session, reset for every test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from blocks.tableau import TableauServer
from standins.tableau import FakeTableauServer


@pytest.fixture(scope="session")
def tableau_server_session() -> Iterator[FakeTableauServer]:
    with FakeTableauServer() as fake:
        yield fake


@pytest.fixture
def tableau_fake(tableau_server_session: FakeTableauServer) -> Iterator[FakeTableauServer]:
    """The session's fake Tableau, empty but for the 'default' project."""
    tableau_server_session.reset()
    yield tableau_server_session
    tableau_server_session.release_jobs()


@pytest.fixture
def tableau_block(tableau_fake: FakeTableauServer) -> TableauServer:
    """A TableauServer block signing in to the fake with its PAT."""
    ((name, secret),) = tableau_fake.pats.items()
    return TableauServer(
        server_url=tableau_fake.url,
        site=tableau_fake.site_content_url,
        token_name=name,
        token_secret=secret,
        http_timeout=30,
    )


@pytest.fixture
def tableau_jwt_block(tableau_fake: FakeTableauServer) -> TableauServer:
    """A TableauServer block signing in to the fake as its connected app."""
    ((client_id, (secret_id, secret_value)),) = tableau_fake.apps.items()
    return TableauServer(
        server_url=tableau_fake.url,
        site=tableau_fake.site_content_url,
        client_id=client_id,
        secret_id=secret_id,
        secret_value=secret_value,
        username=next(iter(tableau_fake.users)),
        http_timeout=30,
    )
