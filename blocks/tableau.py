"""PLACEHOLDER pinned by the skeleton; the Hyper/Tableau issue replaces it."""

from prefect.blocks.core import Block


class TableauServer(Block):
    """A Tableau Server or Cloud site and how to sign in to it."""

    _block_type_name = "Tableau Server"
    _block_type_slug = "tableau-server"
