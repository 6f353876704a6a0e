"""Figures every benchmark shares: percentiles, number formatting, CPU time and memory from /proc.

CPU time is what the kernel charged a process (user + system, `/proc/<pid>/stat`), taken
before and after a measured window: it needs no cooperation from the process measured, so
it reads our Python servers, the original Node backend and PostgreSQL's backends alike.
"""

import math
import os

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def percentile(values, fraction):
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def fmt(value, width=8, digits=1):
    return f"{'-':>{width}}" if value is None or math.isnan(value) else f"{value:>{width}.{digits}f}"


def _stat_fields(pid):
    with open(f"/proc/{pid}/stat") as stat:
        # The command name (field 2) may hold spaces and parentheses: split after its last ")".
        return stat.read().rsplit(")", 1)[1].split()


def cpu_seconds(pid):
    """User + system CPU seconds of a process so far (0 once it is gone)."""
    try:
        fields = _stat_fields(pid)
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def children(pid):
    """The live child processes of `pid`."""
    found = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as listing:
                found.extend(int(child) for child in listing.read().split())
        except OSError:
            pass
    return found


def tree_cpu_seconds(pid):
    """CPU seconds of a process, of its children that it has reaped, and of its live
    descendants: a server that forks its workers (`serve --workers N`) counts whole."""
    try:
        fields = _stat_fields(pid)
    except OSError:
        return 0.0
    own = sum(int(field) for field in fields[11:15]) / CLOCK_TICKS  # utime stime cutime cstime
    return own + sum(tree_cpu_seconds(child) for child in children(pid))


def rss_kb(pid):
    """(VmRSS, VmHWM) of a process in kB, from /proc."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                values[key] = int(value.split()[0])
    return values.get("VmRSS", 0), values.get("VmHWM", 0)


class CpuMeter:
    """CPU seconds used by groups of processes inside `with meter.measure(side):` blocks.

    `groups` maps a name to a list of pids, or to a function returning one (for groups
    whose processes come and go, such as PostgreSQL's backends)."""

    def __init__(self, groups):
        self.groups = groups
        self.totals = {}

    def read(self):
        readings = {}
        for name, pids in self.groups.items():
            pids = pids() if callable(pids) else pids
            readings[name] = {pid: tree_cpu_seconds(pid) for pid in pids}
        return readings

    def measure(self, side):
        meter = self

        class Window:
            def __enter__(self):
                self.before = meter.read()

            def __exit__(self, *exc):
                meter.add(side, self.before, meter.read())

        return Window()

    def add(self, side, before, after):
        """Add the CPU used between two `read()`s; a process started in between counts whole."""
        totals = self.totals.setdefault(side, dict.fromkeys(self.groups, 0.0))
        for name in self.groups:
            for pid, seconds in after[name].items():
                totals[name] += seconds - before[name].get(pid, 0.0)


def print_machine(title):
    """The run's header: when, on what, and how busy the machine already was."""
    import platform
    from datetime import datetime

    load = os.getloadavg()
    print(f"{title} - {datetime.now().astimezone():%Y-%m-%d %H:%M:%S %Z}", flush=True)
    print(f"machine: {platform.node()}, {os.cpu_count()} CPU cores, {platform.python_implementation()} "
          f"{platform.python_version()}; load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
          f"(1/5/15 min)")
    print(f"NOTE: these {os.cpu_count()} cores are shared by everything measured here: the simulator, the API "
          f"servers, the workers, Redis, PostgreSQL and the client processes (and whatever else runs on the "
          f"machine).", flush=True)


def print_load_at_end(began):
    import time

    load = os.getloadavg()
    print(f"\nload average at end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; whole run "
          f"{time.monotonic() - began:.0f} s", flush=True)
