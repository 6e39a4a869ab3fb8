"""A RabbitMQ cluster of the tests' own: three nodes on 127.0.0.1, joined with
`rabbitmqctl join_cluster`, stopped and started at will, always torn down.

Nothing is shared with the machine's broker (5672, node `rabbit@localhost`): the nodes have
names, AMQP and distribution ports, data and log directories of their own, and they register
with an Erlang port mapper (epmd) of their own, on a free port, started and ended here. Their
shared Erlang cookie lives in a temporary HOME, which rabbitmqctl is given too. The machine's
rabbitmq-env.conf is replaced by an empty one, so that its NODENAME does not apply.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from tests.faults.pgserver import free_port

SBIN = Path("/usr/lib/rabbitmq/bin")  # the scripts themselves, not Debian's su wrappers
NODES = 3
COMMAND_TIMEOUT = 120.0


def sbin(program: str) -> str:
    found = SBIN / program
    if found.exists():
        return str(found)
    on_path = shutil.which(program)
    if on_path is None:
        raise FileNotFoundError(f"{program} is not installed (RabbitMQ server)")
    return on_path


@dataclass
class Node:
    name: str  # the Erlang node name, e.g. bo-1a2b3c-1@localhost
    amqp_port: int
    dist_port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def url(self, **query: str) -> str:
        tail = "&".join(f"{k}={v}" for k, v in query.items())
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/" + (f"?{tail}" if tail else "")


class RabbitCluster:
    """`async with RabbitCluster() as cluster:` runs three joined nodes until the block ends;
    `stop(i)`, `start(i)` and `restart(i)` are the faults, `leader_of(queue)` says where a
    quorum queue's leader is."""

    def __init__(self, size: int = NODES) -> None:
        self._size = size
        self.directory = Path()
        self.nodes: list[Node] = []
        self._epmd: subprocess.Popen[bytes] | None = None
        self._env: dict[str, str] = {}

    def url(self, first: int = 0, **query: str) -> str:
        """Every node's URL, comma-separated, starting with node `first` (then in turn)."""
        order = self.nodes[first:] + self.nodes[:first]
        return ",".join(node.url(**query) for node in order)

    async def __aenter__(self) -> Self:
        self.directory = Path(tempfile.mkdtemp(prefix="batchops-rabbit-"))
        try:
            self._prepare()
            for node in self.nodes:
                self._spawn(node)
            for node in self.nodes:
                await self._wait_until_booted(node)
            for node in self.nodes[1:]:
                await self.ctl(node, "stop_app")
                await self.ctl(node, "join_cluster", self.nodes[0].name)
                await self.ctl(node, "start_app")
        except BaseException:
            await self._destroy()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._destroy()

    async def stop(self, index: int) -> None:
        """Stop node `index` gracefully (as for an upgrade), and wait until it is gone."""
        node = self.nodes[index]
        await self.ctl(node, "stop")
        if node.process is not None:
            await asyncio.to_thread(node.process.wait, COMMAND_TIMEOUT)

    async def start(self, index: int) -> None:
        """Start node `index` again; it rejoins the cluster with its data."""
        node = self.nodes[index]
        self._spawn(node)
        await self._wait_until_booted(node)

    async def restart(self, index: int) -> None:
        await self.stop(index)
        await self.start(index)

    async def ensure_running(self) -> None:
        """Start every node that is not running (a test left it stopped)."""
        for index, node in enumerate(self.nodes):
            if not node.running:
                await self.start(index)

    async def await_safe_to_stop(self, index: int) -> None:
        """Until stopping node `index` leaves every quorum queue a majority (RabbitMQ's own
        check for rolling upgrades)."""
        await self.ctl(
            self.nodes[index],
            "await_online_quorum_plus_one",
            "-t",
            "120",
            program="rabbitmq-upgrade",
        )

    async def leader_of(self, queue: str) -> int:
        """The index of the node holding the leader of quorum queue `queue`."""
        running = next(node for node in self.nodes if node.running)
        out = await self.ctl(running, "list_queues", "name", "leader", "--formatter", "json")
        rows: list[dict[str, Any]] = json.loads(out)
        leader = next(row["leader"] for row in rows if row["name"] == queue)
        return next(i for i, node in enumerate(self.nodes) if node.name == leader)

    async def connection_names_on(self, index: int) -> list[str]:
        """The `connection_name` client property of every connection to node `index`."""
        node = self.nodes[index]
        out = await self.ctl(
            node, "list_connections", "port", "client_properties", "--formatter", "json"
        )
        names = []
        for row in json.loads(out):
            if row.get("port") != node.amqp_port:  # the listener's port says which node
                continue
            properties = {p[0]: p[2] for p in row.get("client_properties", []) if len(p) == 3}
            names.append(str(properties.get("connection_name", "")))
        return names

    async def _wait_until_booted(self, node: Node) -> None:
        # `wait` waits for the pid file the node writes early, then for the broker to boot.
        await self.ctl(node, "wait", str(node.directory / "pid"), "--timeout", "90")

    async def ctl(self, node: Node, *args: str, program: str = "rabbitmqctl") -> str:
        process = await asyncio.create_subprocess_exec(
            sbin(program),
            "-n",
            node.name,
            *args,
            env=self._env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), COMMAND_TIMEOUT)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise AssertionError(f"{program} {' '.join(args)} on {node.name} hung") from None
        if process.returncode != 0:
            raise AssertionError(
                f"{program} {' '.join(args)} on {node.name} failed ({process.returncode}):\n"
                f"{out.decode(errors='replace')}{err.decode(errors='replace')}\n"
                f"{self.log_tail(node)}"
            )
        return out.decode()

    def log_tail(self, node: Node, lines: int = 30) -> str:
        logs = sorted((node.directory / "log").glob("*.log"))
        text = "\n".join(p.read_text(errors="replace") for p in logs)
        return "\n".join(text.splitlines()[-lines:])

    def _prepare(self) -> None:
        home = self.directory / "home"
        home.mkdir()
        cookie = home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16))
        cookie.chmod(0o400)
        (self.directory / "rabbitmq-env.conf").write_text("")
        epmd_port = free_port()
        self._env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": str(home),
            "ERL_EPMD_PORT": str(epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_CONF_ENV_FILE": str(self.directory / "rabbitmq-env.conf"),
        }
        epmd = shutil.which("epmd") or "/usr/lib/erlang/bin/epmd"
        self._epmd = subprocess.Popen(
            [epmd, "-port", str(epmd_port), "-address", "127.0.0.1"],
            env=self._env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        prefix = f"bo-{secrets.token_hex(3)}"
        for number in range(1, self._size + 1):
            directory = self.directory / f"node{number}"
            (directory / "log").mkdir(parents=True)
            node = Node(f"{prefix}-{number}@localhost", free_port(), free_port(), directory)
            (directory / "enabled_plugins").write_text("[].\n")
            (directory / "rabbitmq.conf").write_text(
                f"listeners.tcp.1 = 127.0.0.1:{node.amqp_port}\n"
            )
            self.nodes.append(node)

    def _spawn(self, node: Node) -> None:
        env = {
            **self._env,
            "RABBITMQ_NODENAME": node.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(node.amqp_port),
            "RABBITMQ_DIST_PORT": str(node.dist_port),
            "RABBITMQ_MNESIA_BASE": str(node.directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(node.directory / "log"),
            "RABBITMQ_CONFIG_FILE": str(node.directory / "rabbitmq"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(node.directory / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(node.directory / "pid"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            # The script then replaces itself with the Erlang VM instead of keeping a shell in
            # front of it: the process started here is the node, and killing it ends the node.
            "RUNNING_UNDER_SYSTEMD": "true",
        }
        with (node.directory / "out.log").open("ab") as out:
            node.process = subprocess.Popen(
                [sbin("rabbitmq-server")],
                env=env,
                cwd=node.directory,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    async def _destroy(self) -> None:
        for node in self.nodes:
            if node.running and node.process is not None:
                node.process.kill()  # the whole node goes; its data is deleted below
                await asyncio.to_thread(node.process.wait, 30)
        if self._epmd is not None:
            self._epmd.kill()
            self._epmd.wait(10)
            self._epmd = None
        with contextlib.suppress(OSError):
            shutil.rmtree(self.directory)
