"""Kleene's request bodies, as klee sends them. Unknown fields and wrong types are refused."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from kleenenet.errors import InvalidInput
from kleenenet.model import AUTO, HOST_GATEWAY


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    @classmethod
    def parse(cls, data):
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise InvalidInput(describe(e)) from None


def describe(e: ValidationError) -> str:
    """The first problem in one line, naming the field and the value."""
    err = e.errors()[0]
    field = ".".join(str(part) for part in err["loc"]) or "body"
    if err["type"] == "missing":
        return f"missing field {field!r}"
    if err["type"] == "extra_forbidden":
        return f"unknown field {field!r}"
    value = repr(err["input"])
    value = value if len(value) <= 80 else value[:77] + "..."
    return f"invalid {field} {value}: {err['msg'][:1].lower()}{err['msg'][1:]}"


class NetworkConfig(Body):
    name: str
    type: str
    interface: str = ""
    subnet: str = ""
    subnet6: str = ""
    gateway: str = ""
    gateway6: str = ""
    nat: str = HOST_GATEWAY
    icc: bool = True
    internal: bool = False
    mtu: int | None = None  # kleenenet's: None = the egress interface's
    nat6: bool = True  # kleenenet's: False = the subnet6 is routed, not masqueraded
    ip_range: str = ""  # kleenenet's: automatic addresses only inside this CIDR of the subnet
    ip_range6: str = ""
    force: bool = False  # kleenenet's: a custom network's subnet need not be its interface's


class EndPointConfig(Body):
    container: str
    network: str
    ip_address: str = AUTO
    ip_address6: str = AUTO


class PublishedPortConfig(Body):
    interfaces: list[str]
    host_port: str
    container_port: str
    protocol: Literal["tcp", "udp"] = "tcp"


class MountPointConfig(Body):
    type: str | None = None
    source: str | None = None
    destination: str | None = None
    read_only: bool = False


class ContainerConfig(Body):
    name: str | None = None
    image: str
    cmd: list[str] | None = None
    user: str | None = ""
    env: list[str] | None = None
    mounts: list[MountPointConfig] | None = None
    jail_param: list[str] | None = None
    network_driver: str | None = None
    public_ports: list[PublishedPortConfig] | None = None
    dns: list[str] | None = None  # kleenenet's: nameservers, [] = the host's
    network_options: list[str] | None = None  # kleenenet's: the pasta driver's options
    persist: bool | None = False
    restart_policy: str | None = "no"
    auto_remove: bool = False  # kleenenet's `run --rm`


class ExecConfig(Body):
    container_id: str
    cmd: list[str] = []
    env: list[str] = []
    user: str = ""
    tty: bool = False


class ExecStartConfig(Body):
    exec_id: str
    attach: bool
    start_container: bool

    @field_validator("attach", "start_container", mode="before")
    @classmethod
    def _flag(cls, value):
        """klee's `exec` sends start_container as the string "true"."""
        return {"true": True, "false": False}.get(value, value) if isinstance(value, str) else value
