import select
import socket
import subprocess
import sys
import time

import gevent
import pytest

from aisystant_server.green import Poll


@pytest.fixture
def pair():
    left, right = socket.socketpair()
    yield left, right
    left.close()
    right.close()


def test_a_poll_that_waits_for_nothing_answers_at_once_without_running_other_greenlets(pair):
    left, right = pair
    ran = []
    gevent.spawn(ran.append, "other greenlet")
    poller = Poll()
    poller.register(left, select.POLLIN)
    assert poller.poll(0) == []
    right.send(b"x")
    assert poller.poll(0) == [(left.fileno(), select.POLLIN)]
    # The kernel answered: no turn of gevent's loop, so the other greenlet has not run yet.
    assert ran == []
    gevent.sleep(0)
    assert ran == ["other greenlet"]


def test_a_poll_that_may_wait_lets_other_greenlets_run_meanwhile(pair):
    left, right = pair
    poller = Poll()
    poller.register(left.fileno(), select.POLLIN)
    gevent.spawn_later(0.05, right.send, b"x")
    started = time.monotonic()
    assert poller.poll(5000) == [(left.fileno(), select.POLLIN)]
    assert time.monotonic() - started < 2


def test_a_closed_peer_is_seen_as_the_kernel_reports_it(pair):
    left, right = pair
    poller = Poll()
    poller.register(left, select.POLLIN | select.POLLRDHUP)
    right.close()
    [(fd, events)] = poller.poll(0)
    assert fd == left.fileno() and events & select.POLLRDHUP


def test_modify_and_unregister_behave_like_the_standard_librarys(pair):
    left, right = pair
    poller = Poll()
    with pytest.raises(FileNotFoundError):
        poller.modify(left, select.POLLIN)
    poller.register(left, select.POLLIN)
    poller.modify(left, select.POLLOUT)
    assert poller.poll(0) == [(left.fileno(), select.POLLOUT)]
    poller.unregister(left)
    assert poller.poll(0) == []
    with pytest.raises(KeyError):
        poller.unregister(left)


def test_patching_a_process_installs_it():
    code = ("from aisystant_server import green; green.patch_process(); import select, psycopg2.extensions; "
            "assert select.poll is green.Poll; assert psycopg2.extensions.get_wait_callback() is not None")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
