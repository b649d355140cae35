"""Kleene's words, and the checks on `run`'s arguments that need no state. Apart from the models
so that the command line and the --host client use them without loading pydantic."""

from __future__ import annotations

import re

from kleenenet.errors import InvalidInput

NETWORK_TYPES = ("loopback", "bridge", "custom")
NETWORK_DRIVERS = ("ipnet", "vnet", "host", "disabled", "pasta", "slirp4netns")
USER_MODE_DRIVERS = ("pasta", "slirp4netns")  # Linux: a helper process is the container's network
# The network `-n private` (and a plain `run`) means: created on first use, NAT toward the host's
# default route. The words `-n host` and `-n none` name drivers, not networks.
PRIVATE_NETWORK = "private"
RESERVED_NETWORK_NAMES = ("host", "none", PRIVATE_NETWORK)
AUTO = "<auto>"
HOST_GATEWAY = "<host-gateway>"
HOST_IMAGE = "FreeBSD"  # the image every state has: the host's root, as in Kleene's walkthrough


def parse_driver(text: str) -> tuple[str, list[str]]:
    """`-l DRIVER[:OPTS]`: the driver and its options (pasta's, comma-separated: `pasta:-t,8080`).
    `none` is `disabled`, as other tools say it."""
    driver, colon, options = text.partition(":")
    driver = "disabled" if driver == "none" else driver
    if driver not in NETWORK_DRIVERS:
        raise InvalidInput(f"invalid network driver {text!r}: choose one of none, {', '.join(NETWORK_DRIVERS)}")
    if colon and driver != "pasta":
        raise InvalidInput(f"invalid network driver {text!r}: only pasta takes options (pasta:OPT,OPT...)")
    if colon and not all(options.split(",")):
        raise InvalidInput(f"invalid network driver {text!r}: give pasta's options comma-separated, e.g. pasta:-t,8080")
    return driver, options.split(",") if colon else []


def command_line_networks(driver: str | None, networks: tuple, user_mode: bool = False) -> tuple[str | None, tuple]:
    """What the command line's `-l`/`-n` mean beyond Kleene's: `-n host` and `-n none` (podman's
    words) choose a driver; a plain `run` (no -l, no -n) and `-n private` mean the container's own
    namespace on the private network, a bridge (vnet unless -l says otherwise) — or, for a plain
    run with `user_mode` (no root), the pasta driver: a namespace of its own just the same."""
    words = [name for name, _, _ in networks if name in ("host", "none")]
    if words:
        word = words[0]
        if len(networks) > 1:
            raise InvalidInput(f"-n {word} takes no other network: it is the {'host' if word == 'host' else 'disabled'} driver")
        if networks[0][1:] != (AUTO, AUTO):
            raise InvalidInput(f"--ip and --ip6 do not apply to -n {word}: it gives the container no address of its own")
        wanted = "host" if word == "host" else "disabled"
        if driver not in (None, wanted):
            raise InvalidInput(f"-n {word} and -l {driver} disagree: give one of them")
        return wanted, ()
    if driver is None and not networks:
        return ("pasta", ()) if user_mode else ("vnet", ((PRIVATE_NETWORK, AUTO, AUTO),))
    if driver is None and any(name == PRIVATE_NETWORK for name, _, _ in networks):
        return "vnet", networks
    return driver, networks


def check_run(cmd: list[str], networks, driver: str | None) -> str:
    """Refuse what `run` cannot do whatever the state; its driver (klee's default: ipnet with
    networks, else host). `networks`: (name, ip, ip6) for each network."""
    if not cmd:
        raise InvalidInput("no command given: kleenenet run [OPTIONS] -- CMD [ARGS...]")
    names = [name for name, _, _ in networks]
    if len(set(names)) != len(names):
        raise InvalidInput("a network is given twice with -n")
    driver = driver or ("ipnet" if networks else "host")
    if networks and driver not in ("ipnet", "vnet"):
        raise InvalidInput(f"driver {driver!r} takes no networks: use -l ipnet or -l vnet with -n")
    return driver


def check_nameserver(addr: str) -> str:
    """A --dns address: an IPv4 or IPv6 address (resolv.conf takes no names, no zones)."""
    import ipaddress

    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        raise InvalidInput(f"invalid --dns {addr!r}: give an IPv4 or IPv6 address") from None
    if ip.version == 6 and ip.scope_id:  # the zone would name one of the host's interfaces
        raise InvalidInput(f"invalid --dns {addr!r}: give the address without a %zone")
    if ip.is_unspecified or ip.is_multicast:
        raise InvalidInput(f"invalid --dns {addr!r}: not a nameserver's address")
    return str(ip)


def _port_range(text: str, spec: str) -> tuple[int, int]:
    # ASCII digits only: int() also reads other scripts' digits ('٨٠'), which no packet filter does
    found = re.fullmatch(r"([0-9]+)(?:-([0-9]+))?", text)
    lo, hi = (int(found[1]), int(found[2] or found[1])) if found else (0, 0)
    if not 1 <= lo <= hi <= 65535:
        raise InvalidInput(f"invalid port {text!r} in {spec!r}: give a port 1-65535 or a range LOW-HIGH")
    return lo, hi


def port_pairs(host_port: str, container_port: str, spec: str = "") -> list[tuple[int, int]]:
    """(host port, container port) for each port of a published range; equal lengths. `spec`:
    what the user wrote, for the messages."""
    spec = spec or f"{host_port}:{container_port}"
    # Kleene writes a range as "LOW:HIGH" on the host and "LOW:*" in the container
    (h1, h2) = _port_range(host_port.replace(":", "-", 1) if ":" in host_port else host_port, spec)
    if container_port.endswith(":*"):
        c1 = _port_range(container_port[:-2], spec)[0]
        container_port = f"{c1}-{c1 + h2 - h1}"
    (c1, c2) = _port_range(container_port, spec)
    if h2 - h1 != c2 - c1:
        raise InvalidInput(f"invalid published ports {spec!r}: the host and container ranges differ in length")
    return [(h1 + k, c1 + k) for k in range(h2 - h1 + 1)]


def parse_publish(spec: str) -> dict:
    """`[IFACE:]HOST[:CTR][/tcp|udp]` as Kleene's public port (klee's reading of -p)."""
    ports, slash, protocol = spec.partition("/")
    if slash and protocol not in ("tcp", "udp"):
        raise InvalidInput(f"invalid protocol {protocol!r} in {spec!r}: use tcp or udp")
    parts = ports.split(":")
    if len(parts) > 3 or not all(parts):
        raise InvalidInput(f"invalid published port {spec!r}: use [IFACE:]HOST[:CTR][/tcp|udp]")
    interfaces = parts[:1] if len(parts) == 3 else []
    host, ctr = (parts[-2], parts[-1]) if len(parts) >= 2 else (parts[0], parts[0])
    port_pairs(host, ctr, spec)
    return {"interfaces": interfaces, "host_port": host, "container_port": ctr, "protocol": protocol or "tcp"}
