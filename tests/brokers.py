"""RabbitMQ for tests: a vhost of this run's on the machine's server, and a private node.

The machine's RabbitMQ (127.0.0.1:5672, `rabbitmqctl`) holds one vhost per test
run, named after its process id, so two runs never meet. A test that stops the
broker runs a node of its own (`RabbitServer`), on ports of its own, as the
`rabbitmq` user in a folder it owns.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from kombu import Connection

from api.dev import free_port, wait_for_port
from shared.settings import Settings
from worker.factory import task_queues

RABBITMQ_HOST = os.environ.get("TEST_RABBITMQ_HOST", "127.0.0.1:5672")
CTL = "rabbitmqctl"


def rabbitmqctl(*args: str, node: str | None = None, env: dict[str, str] | None = None) -> str:
    """Run rabbitmqctl (as the `rabbitmq` user when root, so the Erlang cookie matches)."""
    command = [CTL, *(["-n", node] if node else []), *args]
    if env is not None and os.geteuid() == 0:
        command = [
            "runuser",
            "-u",
            "rabbitmq",
            "--",
            "env",
            *(f"{k}={v}" for k, v in env.items()),
            "/usr/lib/rabbitmq/bin/rabbitmqctl",
            *command[1:],
        ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=90)
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {done.stdout}{done.stderr}")
    return done.stdout


def create_vhost(name: str) -> str:
    """Create a vhost on the machine's RabbitMQ for `guest`; return its URL."""
    delete_abandoned_vhosts()
    rabbitmqctl("add_vhost", name)
    rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    return f"amqp://guest:guest@{RABBITMQ_HOST}/{name}"


def delete_vhost(name: str) -> None:
    """Delete a vhost and everything in it."""
    rabbitmqctl("delete_vhost", name)


def delete_abandoned_vhosts() -> None:
    """Delete the vhosts of earlier test runs whose process is gone."""
    names = rabbitmqctl("list_vhosts", "--quiet", "--no-table-headers").split()
    for name in names:
        pid = name.rsplit("_", 1)[-1]
        if name.startswith("smsgw_") and pid.isdigit() and not Path(f"/proc/{pid}").exists():
            delete_vhost(name)


def purge_queues(settings: Settings) -> None:
    """Declare the gateway's queues on the settings' RabbitMQ and empty them."""
    with Connection(settings.broker, connect_timeout=5) as connection:
        channel = connection.channel()
        for queue in task_queues(settings):
            bound = queue.bind(channel)
            bound.declare()
            bound.purge()


def queue_length(settings: Settings, name: str) -> int:
    """Return how many tasks wait (ready, not held by a consumer) in a queue."""
    with Connection(settings.broker, connect_timeout=5) as connection:
        channel = connection.channel()
        return channel.queue_declare(name, passive=True).message_count


class RabbitServer:
    """A private RabbitMQ node on a fixed port, stopped and started as an operator would."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.dist_port = free_port()
        self.node = f"smsgw{port}@localhost"
        self.folder: Path | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def _env(self) -> dict[str, str]:
        assert self.folder is not None
        return {
            "HOME": "/var/lib/rabbitmq",
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.folder / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.folder / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.folder / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.folder / "pid"),
        }

    def start(self) -> None:
        """Start the node and wait until it takes connections; its data survives a restart."""
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix="smsgw-rabbit-"))
            (self.folder / "rabbitmq.conf").write_text(
                f"listeners.tcp.local = 127.0.0.1:{self.port}\nloopback_users = none\n"
            )
            (self.folder / "enabled_plugins").write_text("[].\n")
            if os.geteuid() == 0:
                for path in (self.folder, *self.folder.iterdir()):
                    shutil.chown(path, "rabbitmq", "rabbitmq")
        env = self._env()
        server = "/usr/lib/rabbitmq/bin/rabbitmq-server"
        if os.geteuid() == 0:
            command = ["runuser", "-u", "rabbitmq", "--", "env"]
            command += [f"{k}={v}" for k, v in env.items()] + [server, "-detached"]
            subprocess.run(command, check=True, timeout=30, capture_output=True)
        else:
            subprocess.run([server, "-detached"], env={**os.environ, **env}, check=True)
        rabbitmqctl("wait", env["RABBITMQ_PID_FILE"], "--timeout", "60", node=self.node, env=env)
        wait_for_port(self.port)

    def stop(self) -> None:
        """Stop the node (its durable queues and their tasks are kept)."""
        if self.folder is not None and (self.folder / "pid").exists():
            env = self._env()
            rabbitmqctl("stop", env["RABBITMQ_PID_FILE"], node=self.node, env=env)
            (self.folder / "pid").unlink(missing_ok=True)

    def remove(self) -> None:
        """Stop the node and delete its files."""
        try:
            self.stop()
        finally:
            if self.folder is not None:
                shutil.rmtree(self.folder, ignore_errors=True)
                self.folder = None
