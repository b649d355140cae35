"""nftables: kleenenet's one table, `inet kleenenet`, changed only by atomic batches.

The whole table is a pure function of the state (networks and the host interfaces of running
endpoints), rendered from templates/linux/ruleset.nft.j2. Network changes replace the table in
one batch; attaching a container only adds elements to the interface maps, so its cost does not
grow with the number of containers.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from functools import cache

from kleenenet.errors import HostError
from kleenenet.model import Network

TABLE = "inet kleenenet"
# interface map -> prefix of the per-network chain it jumps to (see the template)
MAPS = {"from_network": "from", "to_network": "to", "input_network": "input"}


@dataclass
class FirewallState:
    networks: list[Network]
    # host interface -> network, for loopback networks' endpoints (a bridge is its own member)
    members: dict[str, Network] = field(default_factory=dict)


@cache
def _templates():
    import jinja2  # only network changes render the table; attaching a container does not

    return jinja2.Environment(
        loader=jinja2.PackageLoader("kleenenet", "templates/linux"),
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
    )


def render(state: FirewallState) -> str:
    members = {n.interface: n for n in state.networks if n.type != "loopback"}
    members.update(state.members)
    return _templates().get_template("ruleset.nft.j2").render(
        networks=state.networks, members=sorted(members.items()),
    )


def add_members(ifname: str, net: Network) -> str:
    return "".join(
        f'add element {TABLE} {m} {{ "{ifname}" : jump {chain}_{net.id} }}\n' for m, chain in MAPS.items()
    )


def delete_members(ifname: str) -> str:
    return "".join(f'delete element {TABLE} {m} {{ "{ifname}" }}\n' for m in MAPS)


class Nft:
    """libnftables in-process: one batch = one transaction, no fork/exec per change."""

    def __init__(self) -> None:
        try:
            lib = ctypes.CDLL("libnftables.so.1")
        except OSError:
            raise HostError("libnftables.so.1 not found: install nftables (Debian: apt install nftables)") from None
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        for name in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
            getattr(lib, name).argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        self.lib = lib
        self.ctx = lib.nft_ctx_new(0)
        lib.nft_ctx_buffer_output(self.ctx)
        lib.nft_ctx_buffer_error(self.ctx)

    def run(self, batch: str) -> str:
        rc = self.lib.nft_run_cmd_from_buffer(self.ctx, batch.encode())
        err = (self.lib.nft_ctx_get_error_buffer(self.ctx) or b"").decode().strip()
        out = (self.lib.nft_ctx_get_output_buffer(self.ctx) or b"").decode()
        if rc != 0:
            first = err.splitlines()[0] if err else "failed"
            raise HostError(f"nft: {first}")
        return out

    def ruleset(self) -> str:
        """Our table as nft lists it, '' when it does not exist."""
        try:
            return self.run(f"list table {TABLE}")
        except HostError:
            return ""
