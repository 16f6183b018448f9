"""Hosts for tests as Linux network namespaces: one private subnet on a bridge, nothing else.

`hosts(["db", "s3", ...])` creates a namespace per role, plus a hub namespace holding a bridge;
each role gets a veth pair whose host end (eth0, with 10.A.B.N/24) is in its namespace and whose
other end is on the bridge. The subnet is drawn at random among those the machine has no route
for, so no address a namespace can reach exists anywhere else; namespaces have no default route.
On exit (also after a failure) every process left in the namespaces is killed and the namespaces
are deleted. Needs root (CI runs as root).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

from tests.conftest import unavailable


@dataclass(frozen=True)
class Host:
    """One namespace: its name and address."""

    namespace: str
    address: str

    def run(self, args: list[str]) -> list[str]:
        """`args` as a command run inside this host."""
        return ["ip", "netns", "exec", self.namespace, *args]


def set_link(host: Host, up: bool) -> None:
    """Bring `host`'s network link up or down (down: its peers' packets go unanswered)."""
    _ip("-n", host.namespace, "link", "set", "eth0", "up" if up else "down")


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def _unused_subnet() -> str:
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    for _ in range(100):
        subnet = f"10.{random.randint(64, 250)}.{random.randint(0, 255)}"
        if f"{subnet}." not in routes:
            return subnet
    raise RuntimeError("no unused 10.x.y.0/24 subnet found")


def kill_all(namespace: str) -> None:
    """SIGKILL every process in `namespace` (a host that loses power)."""
    pids = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True)
    for pid in pids.stdout.split():
        with suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)


@contextmanager
def hosts(roles: list[str]) -> Iterator[dict[str, Host]]:
    """A namespace per role on one bridge; yields role -> Host."""
    if os.geteuid() != 0:
        unavailable("network namespaces need root")
    tag = uuid.uuid4().hex[:6]
    subnet, hub = _unused_subnet(), f"mnp{tag}-hub"
    created: list[str] = []
    try:
        _ip("netns", "add", hub)
        created.append(hub)
        _ip("-n", hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", hub, "link", "set", "br0", "up")
        found: dict[str, Host] = {}
        for number, role in enumerate(roles, start=2):
            namespace = f"mnp{tag}-{role}"
            _ip("netns", "add", namespace)
            created.append(namespace)
            port = f"p{number}"
            _ip("link", "add", "eth0", "netns", namespace, "type", "veth",
                "peer", "name", port, "netns", hub)  # fmt: skip
            _ip("-n", hub, "link", "set", port, "master", "br0", "up")
            address = f"{subnet}.{number}"
            _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", namespace, "link", "set", "eth0", "up")
            _ip("-n", namespace, "link", "set", "lo", "up")
            found[role] = Host(namespace, address)
        yield found
    finally:
        for namespace in reversed(created):
            kill_all(namespace)
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=30)
