"""The ports a deployment takes (MII's layout) and the check that they are free before anything starts.

- each front end: gRPC on ``port_number`` (MII's load balancer), REST on ``restful_api_port``, others
  from ``transport_ports``;
- replica i: ``port_number + 1 + i * tensor_parallel`` (MII: the replica's ranks take the following
  ports), on 127.0.0.1, or for a replica on another host on that host's address (its port is checked
  there, by the replica, when it binds);
- the router's link for Python clients: the port after the last replica's, on 127.0.0.1;
- under tensor parallelism, replica i's ranks meet on ``torch_dist_port + 100·i`` (MII's rule).
"""
from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Optional

from mii_core.config.replicas import replica_dist_port, replica_ports

LINK_HOST = "127.0.0.1"  # the deployment's own links on this machine never leave it


@dataclass
class PortPlan:
    front_ends: dict[str, tuple[str, int]] = field(default_factory=dict)
    replica_links: list[int] = field(default_factory=list)
    router_link: int = 0
    rank_rendezvous: list[int] = field(default_factory=list)  # tensor parallel: replica i's master port
    replica_hosts: list[str] = field(default_factory=list)  # where replica i is reached: LINK_HOST or its host

    def replica_host(self, index: int) -> str:
        return self.replica_hosts[index] if self.replica_hosts else LINK_HOST

    def replica_addresses(self) -> list[tuple[str, int]]:
        """(host, port) of each replica's link, as the router reaches it."""
        return [(self.replica_host(i), port) for i, port in enumerate(self.replica_links)]

    def roles(self) -> list[tuple[str, str, int]]:
        """(what, host, port) for every port the deployment binds."""
        roles = [(f"the {name} front end", host, port) for name, (host, port) in self.front_ends.items()]
        roles += [(f"replica {i}'s link", host, port) for i, (host, port) in enumerate(self.replica_addresses())]
        roles.append(("the router's client link", LINK_HOST, self.router_link))
        roles += [(f"replica {i}'s rank rendezvous (torch_dist_port + 100·{i})", self.replica_host(i), port)
                  for i, port in enumerate(self.rank_rendezvous)]
        return roles

    def local_roles(self) -> list[tuple[str, str, int]]:
        """The roles on this machine: those whose ports can be checked here."""
        remote = {host for host in self.replica_hosts if host != LINK_HOST}
        return [role for role in self.roles() if role[1] not in remote]


def plan_ports(config, transports: list[str], remote_hosts: Optional[list[Optional[str]]] = None) -> PortPlan:
    """``remote_hosts[i]``: the host replica i runs on when that is another machine, else None."""
    model = config.model_conf
    tp, indices = model.tensor_parallel, range(model.replica_num)
    replicas = [replica_ports(config.port_number, i, tp)[0] for i in indices]  # rank 0's port is the link
    rendezvous = [replica_dist_port(model.torch_dist_port, i) for i in indices] if tp > 1 else []
    router_link = replica_ports(config.port_number, model.replica_num, tp)[0]  # the port after the last replica's
    hosts = [host or LINK_HOST for host in (remote_hosts or [None] * len(replicas))]
    plan = PortPlan({name: config.transport_endpoint(name) for name in transports}, replicas, router_link,
                    rendezvous, hosts)
    _check_distinct(plan)
    return plan


def _check_distinct(plan: PortPlan) -> None:
    seen: dict[int, str] = {}
    for what, _host, port in plan.roles():
        if not 0 < port < 65536:
            raise ValueError(f"{what} would use port {port}, outside 1..65535; choose a lower port_number")
        if port in seen:
            raise ValueError(f"{what} and {seen[port]} would both use port {port}; choose other ports "
                             "(replica i uses port_number + 1 + i * tensor_parallel, the router's client link "
                             "the next one)")
        seen[port] = what


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could listen there now (SO_REUSEADDR as servers set it, so only a live
    listener counts, not connections lingering in TIME_WAIT)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return True  # an unknown host fails later, with the server's own message
    for family, kind, proto, _name, address in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(address)
            except OSError:
                return False
    return True


def check_ports_free(plan: PortPlan) -> None:
    for what, host, port in plan.local_roles():
        if not port_is_free(host, port):
            raise ValueError(f"port {port} on {host} ({what}) is already in use; stop what holds it or choose "
                             "other ports (port_number, restful_api_port, transport_ports)")
