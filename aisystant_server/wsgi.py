"""The whole web app of `aisystant-server serve`: the REST API with Socket.IO in front.

`serve` builds it in its own process; `serve --workers N` hands it to gunicorn, which
forks N processes that each build their own (connections are never shared across a
fork): `gunicorn -k aisystant_server.gunicorn_worker.GunicornWorker 'aisystant_server.wsgi:make_app()'`.
"""

from pyramid.paster import get_app

from aisystant_server import logs, realtime
from aisystant_server.settings import config_path, read_settings


def make_app(ini=None):
    """The app of the config file `ini` (default: AISYSTANT_INI, then development.ini)."""
    path = config_path(ini)
    logs.configure(path, read_settings(path))
    return realtime.wrap(get_app(path))
