"""100 `kleenenet run -d` processes at once over four networks: the store hands out every address
once, the host gets exactly the interfaces the store says, and removing them all leaves nothing.
(They queue for the state's write lock, which each holds for a few hundred milliseconds on a
loaded 2-CPU machine: 200 came close to the 60 s a command waits for it.)"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

from tests.linux.world import KLEENENET, sh

N = 100
NETWORKS = {  # name: (type, subnet, subnet6)
    "b1": ("bridge", "10.3.1.0/24", "fd00:31::/64"),
    "b2": ("bridge", "10.3.2.0/24", "fd00:32::/64"),
    "l1": ("loopback", "10.3.3.0/24", "fd00:33::/64"),
    "l2": ("loopback", "10.3.4.0/24", "fd00:34::/64"),
}


def _kv_links(world) -> set[str]:
    return {link for link in world.links() if link.startswith("kv")}


def test_concurrent_runs_get_unique_addresses_and_leave_nothing(world):
    for name, (type_, subnet, subnet6) in NETWORKS.items():
        world.kn("network", "create", "-t", type_, "--subnet", subnet, "--subnet6", subnet6, name)
    links_before, nft_before = world.links(), world.nft()

    # all at once: every process races for the store's write lock
    started = time.monotonic()
    nets = list(NETWORKS)
    procs = [subprocess.Popen(world.in_host(*KLEENENET, "run", "-d", "--name", f"c{i}", "-n", nets[i % 4],
                                            "--", "sleep", "600"),
                              env=world.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(N)]
    outcomes = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    print(f"\n{N} concurrent runs: {time.monotonic() - started:.1f} s")
    failed = [(i, code, err) for i, (code, _, err) in enumerate(outcomes) if code != 0]
    assert not failed, failed[:5]
    assert len({out.strip() for _, out, _ in outcomes}) == N  # each printed its own id

    running = world.kn_json("ps", "--json")
    assert len(running) == N and all(c["running"] for c in running)
    by_id = {c["id"]: c["name"] for c in running}
    endpoints = {}  # container name -> (network, endpoint)
    for name, (type_, subnet, subnet6) in NETWORKS.items():
        eps = world.kn_json("network", "inspect", name)["network_endpoints"]
        assert len(eps) == N // 4
        for family, key, net, gateway in ((4, "ip_address", subnet, "1"), (6, "ip_address6", subnet6, "::1")):
            addrs = [ipaddress.ip_address(ep[key]) for ep in eps]
            assert len(set(addrs)) == len(addrs), f"duplicate address on {name}"
            net = ipaddress.ip_network(net)
            unusable = {net.network_address, net.broadcast_address}
            if type_ == "bridge":  # the gateway is the first host address
                unusable.add(net.network_address + 1)
            assert all(a in net and a not in unusable for a in addrs), name
        for ep in eps:
            assert ep["epair"] == "kv" + ep["id"]
            endpoints[by_id[ep["container_id"]]] = (name, ep)
    assert sorted(endpoints) == sorted(by_id.values())  # one endpoint per container

    # exactly one host interface per endpoint, each a member of the firewall's interface set
    assert _kv_links(world) == {ep["epair"] for _, ep in endpoints.values()}
    members = json.loads(sh(*world.in_host("nft", "-j", "list", "set", "inet", "kleenenet", "interfaces")).stdout)
    elems = next(o["set"] for o in members["nftables"] if "set" in o).get("elem", [])
    assert {ep["epair"] for _, ep in endpoints.values()} <= set(elems)

    # inside the containers: the addresses the store says (a sample)
    def addresses_inside(name: str) -> str:
        return world.kn("exec", name, "--", "ip", "-br", "addr", "show", "eth0").stdout
    sample = [f"c{i}" for i in range(0, N, N // 20)]
    with ThreadPoolExecutor(4) as pool:
        for name, inside in zip(sample, pool.map(addresses_inside, sample)):
            net, ep = endpoints[name]
            plen, plen6 = (24, 64) if NETWORKS[net][0] == "bridge" else (32, 128)
            assert f"{ep['ip_address']}/{plen}" in inside and f"{ep['ip_address6']}/{plen6}" in inside, inside

    # remove them all, eight processes in parallel
    started = time.monotonic()
    names = [f"c{i}" for i in range(N)]
    with ThreadPoolExecutor(8) as pool:
        removed = list(pool.map(lambda batch: world.kn("rm", "-f", *batch, timeout=120),
                                [names[k::8] for k in range(8)]))
    print(f"{N} removed: {time.monotonic() - started:.1f} s")
    assert sum(len(r.stdout.split()) for r in removed) == N
    assert world.kn_json("ps", "-a", "--json") == []
    assert _kv_links(world) == set()
    assert world.links() == links_before
    assert world.nft() == nft_before  # no element left in any set or map
    assert world.container_pids() == []
