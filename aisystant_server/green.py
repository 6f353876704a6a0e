"""Making a process cooperative (gevent), first thing, before anything opens a socket.

Light on purpose: `aisystant-server` imports this before it patches anything.
"""

import errno
import functools
import os
import select

POLL_DEFAULT_MASK = select.POLLIN | select.POLLPRI | select.POLLOUT


def patch_process():
    """The standard library (gevent), then the libraries (`patch_libraries`)."""
    from gevent import monkey

    monkey.patch_all()
    patch_libraries()


def patch_libraries():
    """What gevent's own patching leaves blocking or slow; after `monkey.patch_all()`
    (gunicorn's gevent worker patches the standard library itself)."""
    from psycogreen.gevent import patch_psycopg

    patch_psycopg()
    select.poll = Poll


class Poll:
    """`select.poll` whose `poll(0)`, which waits for nothing, asks the kernel directly.

    gevent's `poll` starts a watcher per descriptor and waits on them in its event loop,
    even for a timeout of 0: 26 us against 1.3 for the kernel's. redis-py polls every
    pooled connection so before each of its commands (a Redis GET: 178 against 109 us of CPU),
    and httpcore every kept-alive connection before it reuses it. A poll that may wait
    still waits in gevent, letting the other greenlets run."""

    def __init__(self):
        self._masks = {}

    def register(self, fd, eventmask=POLL_DEFAULT_MASK):
        self._masks[_fileno(fd)] = eventmask

    def modify(self, fd, eventmask):
        fd = _fileno(fd)
        if fd not in self._masks:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))
        self._masks[fd] = eventmask

    def unregister(self, fd):
        del self._masks[_fileno(fd)]

    def poll(self, timeout=None):
        kernel, green = _polls()
        poller = kernel() if timeout == 0 else green()
        for fd, mask in self._masks.items():
            poller.register(fd, mask)
        return poller.poll(timeout)


@functools.cache
def _polls():
    import gevent.select
    from gevent import monkey

    return monkey.get_original("select", "poll"), gevent.select.poll


def _fileno(fd):
    return fd if isinstance(fd, int) else fd.fileno()
