"""The objects kleenenet manages, with Kleene's field names (they go over the wire unchanged)."""

from __future__ import annotations

import os
import re
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict

from kleenenet.errors import InvalidInput
from kleenenet.vocabulary import AUTO, HOST_GATEWAY, NETWORK_DRIVERS, NETWORK_TYPES  # noqa: F401 (the model's words)
from kleenenet.vocabulary import port_pairs

NetworkType = Literal["loopback", "bridge", "custom"]
NetworkDriver = Literal["ipnet", "vnet", "host", "disabled", "pasta", "slirp4netns"]

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# Interface names: IFNAMSIZ is 16 on Linux and FreeBSD, so 15 usable characters.
IFNAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,14}")


def new_id() -> str:
    return os.urandom(6).hex()  # what secrets.token_hex does, without its import cost


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidInput(
            f"invalid {kind} name {name!r}: use 1-64 characters of [A-Za-z0-9_.-], "
            "starting with a letter or digit"
        )
    return name


def check_ifname(name: str) -> str:
    if not IFNAME_RE.fullmatch(name):
        raise InvalidInput(
            f"invalid interface name {name!r}: use 1-15 characters of [A-Za-z0-9_.-], "
            "starting with a letter"
        )
    return name


def check_root(path: str) -> str:
    """A container's root directory: absolute, without `..`."""
    if not isinstance(path, str) or not path.startswith("/") or "\0" in path or ".." in path.split("/"):
        raise InvalidInput(f"invalid root directory {path!r}: give an absolute path without '..'")
    return os.path.normpath(path)


def check_env(env: list[str]) -> list[str]:
    for entry in env:
        key, eq, _ = entry.partition("=")
        if not eq or not key or "\0" in entry:
            raise InvalidInput(f"invalid environment variable {entry!r}: use NAME=VALUE")
    return list(env)


def check_mtu(mtu: int, ipv6: bool) -> int:
    """A network's MTU: IPv4 needs 68 bytes (RFC 791), IPv6 1280 (RFC 8200); 65535 is the most
    a Linux bridge or veth, or a FreeBSD if_bridge or epair, takes."""
    low = 1280 if ipv6 else 68
    if isinstance(mtu, bool) or not isinstance(mtu, int) or not low <= mtu <= 65535:
        need = " (a network with IPv6 needs at least 1280)" if ipv6 and isinstance(mtu, int) and 68 <= mtu < 1280 else ""
        raise InvalidInput(f"invalid MTU {mtu!r}: give {low}-65535{need}")
    return mtu


def check_choice(kind: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise InvalidInput(f"invalid {kind} {value!r}: choose one of {', '.join(choices)}")
    return value


class Network(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    type: NetworkType
    subnet: str = ""
    subnet6: str = ""
    interface: str
    gateway: str = ""
    gateway6: str = ""
    nat: str = ""  # resolved interface name, "" = no NAT
    icc: bool = True
    internal: bool = False
    mtu: int = 1500  # of the bridge and every container interface: the egress's, or --mtu
    nat6: bool = True  # IPv6 masqueraded toward `nat` too; False: the subnet6 is routed
    # Where automatic addresses come from, inside subnet/subnet6 ("": all of it). On a custom
    # network: the part of the LAN kept clear of its DHCP server's pool.
    ip_range: str = ""
    ip_range6: str = ""


class Endpoint(BaseModel):
    id: str
    network_id: str
    container_id: str
    epair: str | None = None  # host-side interface while the container runs
    ip_address: str = ""
    ip_address6: str = ""


class Image(BaseModel):
    """A root for containers: a directory, or (FreeBSD) a ZFS snapshot each container clones."""

    id: str
    name: str
    tag: str = "latest"
    root: str = ""
    snapshot: str = ""
    created: str


class PublishedPort(BaseModel):
    """Kleene's public port: HOST[-HOST] on the host forwarded to CTR[-CTR] in the container.
    No interfaces: the container's network's NAT interface."""

    interfaces: list[str] = []
    host_port: str
    container_port: str
    protocol: Literal["tcp", "udp"] = "tcp"

    def pairs(self) -> list[tuple[int, int]]:
        """(host port, container port) for each port of the range."""
        return port_pairs(self.host_port, self.container_port)


RestartPolicy = Literal["no", "on-startup"]
RESTART_POLICIES = ("no", "on-startup")


class Container(BaseModel):
    id: str
    name: str
    cmd: list[str]
    network_driver: NetworkDriver
    created: str
    running: bool = False
    pid: int | None = None
    # The process start time (clock ticks since boot) guards against PID reuse.
    pid_start: int | None = None
    env: list[str] = []
    user: str = ""
    jail_param: list[str] = []
    image_id: str = ""
    root: str = "/"  # the jail's path; on Linux the container's root directory
    dataset: str = ""  # the ZFS clone that is `root` (FreeBSD), or ""
    persist: bool = False  # kept by `container prune`
    restart_policy: RestartPolicy = "no"  # on-startup: started by the daemon when it starts
    auto_remove: bool = False  # removed when its command exits (run --rm)
    public_ports: list[PublishedPort] = []
    dns: list[str] = []  # nameservers for its resolv.conf; [] = the host's
    network_options: list[str] = []  # the user-mode driver's own options (pasta's)
    # The user-mode driver's helper process (pasta, slirp4netns), guarded against PID reuse as
    # the container's own process is.
    helper_pid: int | None = None
    helper_start: int | None = None
