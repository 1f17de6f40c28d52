"""Hosts on one machine: network namespaces joined by a bridge, for runs that must cross a network (bench/cluster.py).

Each host is a network namespace of its own (``ip netns add``) with one veth pair whose other end sits on a bridge in
the root namespace; the bridge holds the first address of the subnet, so the benchmark's own process (the client)
reaches every host, and the hosts reach each other, and nothing else: no namespace has a default route and
forwarding is never turned on.  Each host's programs also get a UTS namespace with the host's name, so
``socket.gethostname()`` differs from host to host as it would on separate machines.  Process ids stay in the
machine's namespace: a host's processes are listed by ``ip netns pids`` and killed from here.

``Network.destroy()`` kills every process left in the run's namespaces and removes them, their links and the bridge;
it is safe to call more than once and after a partial set-up.  Needs root and iproute2.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import shutil
import signal
import subprocess
from dataclasses import dataclass

# The second octet of the subnets a run picks from (10.X.Y.0/24): a run takes one not on any interface here.
SUBNET_SECOND_OCTET = 213


def run_ip(*args: str) -> str:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {(result.stderr or result.stdout).strip()}")
    return result.stdout


def unavailable_reason() -> str | None:
    """Why this machine cannot make hosts of network namespaces, or None when it can."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install iproute2 util-linux)"
    name = f"wxc-probe-{secrets.token_hex(3)}"
    try:
        run_ip("netns", "add", name)
    except RuntimeError as exc:
        return f"cannot create a network namespace: {exc}"
    with contextlib.suppress(RuntimeError):
        run_ip("netns", "del", name)
    return None


@dataclass
class Host:
    """One host: its name (also its hostname), namespace, address and the command prefix that runs on it."""

    name: str
    namespace: str
    address: str
    link: str

    @property
    def wrapper(self) -> tuple[str, ...]:
        """``ip netns exec`` and ``unshare --uts`` exec in place, so the program keeps the pid this starts."""
        return (
            "ip",
            "netns",
            "exec",
            self.namespace,
            "unshare",
            "--uts",
            "--",
            "sh",
            "-c",
            'hostname "$0" && exec "$@"',
            self.name,
        )

    def pids(self) -> list[int]:
        try:
            return [int(pid) for pid in run_ip("netns", "pids", self.namespace).split()]
        except RuntimeError:
            return []

    def kill_all(self) -> int:
        """SIGKILL every process on the host at once (a host that dies: nothing gets to clean up); how many."""
        pids = self.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(pids)


class Network:
    """The run's bridge and hosts; ``add(name)`` makes a host with the next address of the subnet."""

    def __init__(self) -> None:
        self.run_id = secrets.token_hex(2)
        self.bridge = f"wxc{self.run_id}br"
        self.subnet = self._free_subnet()
        self.gateway = str(self.subnet.network_address + 1)
        self.hosts: dict[str, Host] = {}
        self._created_bridge = False

    @staticmethod
    def _free_subnet() -> ipaddress.IPv4Network:
        taken = [ipaddress.ip_interface(word).network for word in run_ip("-4", "-o", "addr").split() if "/" in word]
        for _ in range(100):
            candidate = ipaddress.ip_network(f"10.{SUBNET_SECOND_OCTET}.{secrets.randbelow(254) + 1}.0/24")
            if not any(candidate.overlaps(network) for network in taken):
                return candidate
        raise RuntimeError("no free 10.213.X.0/24 subnet for the run's hosts")

    def create(self) -> None:
        run_ip("link", "add", self.bridge, "type", "bridge")
        self._created_bridge = True
        run_ip("addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge)
        run_ip("link", "set", self.bridge, "up")

    def add(self, name: str) -> Host:
        index = len(self.hosts) + 1
        host = Host(
            name=name,
            namespace=f"wxc-{self.run_id}-{name}",
            address=str(self.subnet.network_address + 10 + index),
            link=f"wxc{self.run_id}h{index}",
        )
        self.hosts[name] = host
        run_ip("netns", "add", host.namespace)
        run_ip("link", "add", host.link, "type", "veth", "peer", "name", "eth0", "netns", host.namespace)
        run_ip("link", "set", host.link, "master", self.bridge, "up")
        run_ip("-n", host.namespace, "addr", "add", f"{host.address}/{self.subnet.prefixlen}", "dev", "eth0")
        run_ip("-n", host.namespace, "link", "set", "eth0", "up")
        run_ip("-n", host.namespace, "link", "set", "lo", "up")
        return host

    def destroy(self) -> None:
        for host in self.hosts.values():
            host.kill_all()
            for args in (("link", "del", host.link), ("netns", "del", host.namespace)):
                with contextlib.suppress(RuntimeError):
                    run_ip(*args)
        self.hosts = {}
        if self._created_bridge:
            with contextlib.suppress(RuntimeError):
                run_ip("link", "del", self.bridge)
            self._created_bridge = False
