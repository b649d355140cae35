"""The objects kleenenet manages, with Kleene's field names (they go over the wire unchanged)."""

from __future__ import annotations

import os
import re
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict

from kleenenet.errors import InvalidInput

NetworkType = Literal["loopback", "bridge", "custom"]
NETWORK_TYPES = ("loopback", "bridge", "custom")
NetworkDriver = Literal["ipnet", "vnet", "host", "disabled"]
NETWORK_DRIVERS = ("ipnet", "vnet", "host", "disabled")

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# Interface names: IFNAMSIZ is 16 on Linux and FreeBSD, so 15 usable characters.
IFNAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,14}")

# Kleene's sentinels.
AUTO = "<auto>"
HOST_GATEWAY = "<host-gateway>"


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


class Endpoint(BaseModel):
    id: str
    network_id: str
    container_id: str
    epair: str | None = None  # host-side interface while the container runs
    ip_address: str = ""
    ip_address6: str = ""


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
