"""Real processes for tests that cross them: the server, workers, the model simulator."""

import os
import re
import signal
import socket
import subprocess
import sys
import time

import requests

BIN = os.path.dirname(sys.executable)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Process:
    """A child process whose output goes to a file, shown when a test fails."""

    def __init__(self, args, env, log_path):
        self.args, self.log_path = args, log_path
        self.log = open(log_path, "wb")
        self.popen = subprocess.Popen(args, env={**os.environ, **env}, cwd=ROOT, stdout=self.log,
                                      stderr=subprocess.STDOUT, start_new_session=True)

    def output(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path, "rb") as log:
            return log.read().decode("utf-8", "replace")

    def wait_for_http(self, url, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.args[0]} exited with {self.popen.returncode}:\n{self.output()}")
            try:
                requests.get(url, timeout=2)
                return
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError(f"{url} did not answer within {timeout} s:\n{self.output()}")

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self.log.close()
        return self.popen.returncode

    def kill(self):
        """SIGKILL the whole process group: no clean-up of any kind runs."""
        os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()


def wait_for_line(process, pattern, timeout=30):
    """The first match of `pattern` in the process's output (its first group, if any)."""
    regex = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = regex.search(process.output())
        if match:
            return match.group(1) if regex.groups else match.group(0)
        if process.popen.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.popen.returncode}:\n{process.output()}")
        time.sleep(0.05)
    raise RuntimeError(f"no {pattern!r} within {timeout} s:\n{process.output()}")


def server_command(*args):
    return [os.path.join(BIN, "aisystant-server"), *args]
