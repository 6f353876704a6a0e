"""gunicorn's gevent worker for `serve --workers N`, serving with our connection handler.

gunicorn imports this class in its master, which gevent must not patch, and patches the
standard library in each worker process before loading the app: so this module imports
nothing of ours at its top, and the handler (serving.py: the same framing checks,
timeouts, caps and websockets as the single-process server) is built once patched.
"""

from gevent import pywsgi
from gunicorn.workers.ggevent import GeventPyWSGIWorker


class GunicornWorker(GeventPyWSGIWorker):
    server_class = pywsgi.WSGIServer

    def patch(self):
        super().patch()
        from aisystant_server import green

        green.patch_libraries()

    def load_wsgi(self):
        from aisystant_server.serving import handler_class, settle_memory
        from aisystant_server.settings import read_settings

        self.wsgi_handler = handler_class(read_settings())
        super().load_wsgi()
        settle_memory()

    def run(self):
        super().run()
        from aisystant_server.events import drain

        # Events the last requests emitted may still be on their way out (events.py).
        drain()
