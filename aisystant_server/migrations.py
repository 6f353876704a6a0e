"""Running the Alembic migrations from code (the server command and the tests)."""

import os

from alembic import command
from alembic.config import Config

SCRIPT_LOCATION = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "alembic")


def alembic_config(url, connection=None):
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.attributes["sqlalchemy.url"] = url
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(url, revision="head"):
    command.upgrade(alembic_config(url), revision)


def downgrade(url, revision):
    command.downgrade(alembic_config(url), revision)
