"""CPU time of every process a benchmark involves, by group, from psutil snapshots."""

from __future__ import annotations

from dataclasses import dataclass, field

import psutil
import redis
from psutil import Process

GROUPS = ("worker", "sandbox", "postgres", "redis", "postgres_server")


def _family(pids: list[int]) -> list[Process]:
    """Return these processes and their children, skipping those that are gone."""
    found = []
    for pid in pids:
        try:
            parent = psutil.Process(pid)
            found += [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
    return found


def _postgres(database_name: str, skip: set[int]) -> tuple[list[Process], list[Process]]:
    """Return the PostgreSQL backends serving this database, and the server's own processes.

    The server's processes (WAL writer, checkpointer...) serve every database
    on the host, so their figure also holds whatever else runs meanwhile.
    """
    backends, server = [], []
    for proc in psutil.process_iter(["cmdline", "username"]):
        if proc.info["username"] != "postgres" or proc.pid in skip:
            continue
        cmdline = " ".join(proc.info["cmdline"] or [])
        if f" {database_name} " in cmdline:
            backends.append(proc)
        elif "(" not in cmdline:  # not a client's backend: host(port) names a client
            server.append(proc)
    return backends, server


def _redis(redis_url: str) -> list[Process]:
    """Return the redis-server listening on the port of this URL."""
    port = str(redis.connection.parse_url(redis_url).get("port", 6379))
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        # redis-server renames itself "redis-server 127.0.0.1:PORT".
        cmdline = " ".join(proc.info["cmdline"] or []).replace(":", " ").split()
        if cmdline and "redis-server" in cmdline[0] and port in cmdline:
            found.append(proc)
    return found


def _cpu_times(procs: list[Process], *, reaped: bool = False) -> dict[int, float]:
    """Return the CPU seconds (user + system) of each process still alive, by pid.

    With `reaped`, each also counts its children that exited and were waited for.
    """
    times = {}
    for proc in procs:
        try:
            spent = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        times[proc.pid] = spent.user + spent.system
        if reaped:
            times[proc.pid] += spent.children_user + spent.children_system
    return times


@dataclass
class Probe:
    """Which processes to charge a run's CPU time to, by group."""

    sandbox_pid: int
    redis_url: str
    database_name: str
    skip: set[int] = field(default_factory=set)

    def groups(self, workers: list[int]) -> dict[str, list[Process]]:
        """Return the processes of each group as they are now."""
        backends, server = _postgres(self.database_name, self.skip)
        return {
            "worker": _family(workers),
            "sandbox": _family([self.sandbox_pid]),
            "redis": _redis(self.redis_url),
            "postgres": backends,
            "postgres_server": server,
        }

    def snapshot(self, workers: list[int]) -> dict[str, dict[int, float]]:
        """Return the CPU seconds of every process of every group, by group and pid."""
        return {
            name: _cpu_times(procs, reaped=name == "postgres_server")
            for name, procs in self.groups(workers).items()
        }


def spent(before: dict[int, float], after: dict[int, float]) -> float:
    """Return the CPU seconds spent between two snapshots; a new process counts from zero."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())
