"""kleenenet's speed, side by side with the peers installed here, in throwaway namespaces.

    sudo .venv/bin/python bench/bench.py [--n 10] [--scale 1000] [--seconds 3] [--no-peers]
                                         [--only cli,daemon,ports,throughput,usermode] [--daemon-only]

Every CLI figure is one whole process call run through `nsenter --net=` (kleenenet and peers
alike). Peers are measured when installed (Debian: netavark, podman + runc); the throughput
figures need iperf3 (`apt-get install iperf3`). Medians; ratios are kleenenet / peer from this
same run.

The daemon's figures come from `kleenenet daemon` started in a throwaway host namespace of its
own, on a temporary state and socket, and stopped with SIGTERM at the end: attach + detach and
`run --rm true` as Kleene API requests (aiohttp over the unix socket; the run's container is
started over the exec WebSocket), `kleenenet network connect` as a whole process (direct, and
through the daemon when the CLI has --host), and `klee run` end to end when klee is installed.
Their containers are made from the image `FreeBSD` that every state has (the host's root, as in
Kleene); podman's root is a directory holding `true` and `sleep` (--rootfs), so nothing is pulled.

Published ports (`--only ports`): attaching a running container that publishes one port, then
10 000 (one range), through the daemon, against netavark's setup with one port mapping; each
publish is checked with a connection from the fake upstream. Throughput (`--only throughput`):
iperf3, one TCP stream between two containers on a kleenenet bridge, against a raw veth pair, a
bare Linux bridge and netavark's bridge, all at the same MTU. User-mode networking (`--only
usermode`): iperf3, one TCP stream from a container to the fake upstream through pasta,
slirp4netns and a kleenenet bridge with NAT; `run --rm true` with -l pasta and -l slirp4netns
against `podman run --rm --network pasta true`.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.linux.world import KLEENENET, UPLINK_ADDR, WAN_ADDR, World, sh  # noqa: E402

NETAVARK = "/usr/lib/podman/netavark"
KLEE = Path(sys.executable).parent / "klee"
results: dict[str, float] = {}
samples_of: dict[str, list[float]] = {}
# (kleenenet's figure, the peer's figure, target ratio or None): the closing table, in this order
COMPARISONS: list[tuple[str, str, float | None]] = []
RATES: set[str] = set()  # figures in Gbit/s, where more is better (the rest are times in ms)
LIMITS: list[tuple[str, float]] = []  # (kleenenet's figure, its target in ms)


def timed(args: list[str], **kw) -> float:
    t = time.perf_counter()
    done = subprocess.run(args, capture_output=True, **kw)
    if done.returncode != 0:
        sys.exit(f"{' '.join(args)} exited {done.returncode}: {done.stderr.decode(errors='replace').strip()}")
    return (time.perf_counter() - t) * 1000


def p90(samples: list[float]) -> float:
    """The nearest-rank 90th percentile."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


def report(label: str, samples: list[float]) -> float:
    med = statistics.median(samples)
    results[label] = med
    samples_of[label] = list(samples)
    print(f"{label:58s} n={len(samples):4d} median {med:8.2f} ms  p90 {p90(samples):8.2f}  "
          f"(min {min(samples):.2f}, max {max(samples):.2f})", flush=True)
    return med


def report_rate(label: str, samples: list[float]) -> float:
    med = statistics.median(samples)
    results[label] = med
    samples_of[label] = list(samples)
    RATES.add(label)
    print(f"{label:58s} n={len(samples):4d} median {med:8.2f} Gbit/s  (min {min(samples):.2f}, "
          f"max {max(samples):.2f})", flush=True)
    return med


def tail(label: str) -> float:
    """The bad end: the p90 of a time, the p10 of a rate."""
    if label in RATES:
        return -p90([-x for x in samples_of[label]])
    return p90(samples_of[label])


def table() -> None:
    """Each comparison measured in this run: kleenenet's median and bad-end tail, the peer's
    median, the ratio of the medians and its target (a time: at most; a rate: at least)."""
    rows = [(ours, theirs, target) for ours, theirs, target in COMPARISONS if ours in results and theirs in results]
    if not rows and not any(ours in results for ours, _ in LIMITS):
        return
    a = max([len(ours) for ours, _, _ in rows] + [len(ours) for ours, _ in LIMITS])
    b = max([len(theirs) for _, theirs, _ in rows] + [len("compared with")])
    head = f"{'kleenenet':{a}s} {'median':>8s} {'p90':>8s}  {'compared with':{b}s} {'median':>8s} {'ratio':>6s}  target"
    print("times in ms, p90; rates (Gbit/s) marked *, p10")
    print(head)
    print("-" * len(head))
    for ours, theirs, target in rows:
        r = results[ours] / results[theirs]
        more = ours in RATES
        goal = "-"
        if target:
            met = r >= target if more else r <= target
            goal = f"{'>=' if more else '<='} {target:.2f}x {'met' if met else 'MISSED'}"
        print(f"{ours:{a}s} {results[ours]:8.2f} {tail(ours):8.2f}{'*' if more else ' '} {theirs:{b}s} "
              f"{results[theirs]:8.2f} {r:5.2f}x  {goal}", flush=True)
    for ours, limit in LIMITS:
        if ours in results:
            print(f"{ours:{a}s} {results[ours]:8.2f} {tail(ours):8.2f}  target <= {limit:g} ms "
                  f"{'met' if results[ours] <= limit else 'MISSED'}", flush=True)


def bench_kleenenet_cli(w: World, n: int) -> None:
    kn = w.in_host(*KLEENENET)
    env = w.env
    report("kleenenet network create (CLI)",
           [timed([*kn, "network", "create", "-t", "bridge", "--subnet", f"10.50.{i}.0/24", f"tmp{i}"], env=env)
            for i in range(n)])
    w.kn("network", "prune")
    w.kn("network", "create", "-t", "bridge", "--subnet", "10.88.0.0/16", "bench")
    w.kn("run", "-d", "--name", "holder", "-n", "bench", "--", "sleep", "600")  # the bridge is warm
    for i in range(n):
        w.kn("run", "-d", "-l", "ipnet", "--name", f"idle{i}", "--", "sleep", "600")
    attach, detach = [], []
    for i in range(n):
        attach.append(timed([*kn, "network", "connect", "bench", f"idle{i}"], env=env))
        detach.append(timed([*kn, "network", "disconnect", "bench", f"idle{i}"], env=env))
    report("kleenenet attach to a bridge (CLI)", attach)
    report("kleenenet detach (CLI)", detach)
    report("kleenenet run --rm true, bridge (CLI)",
           [timed([*kn, "run", "--rm", "-n", "bench", "--", "true"], env=env) for _ in range(n)])
    report("kleenenet run --rm true, disabled (CLI)",
           [timed([*kn, "run", "--rm", "-l", "disabled", "--", "true"], env=env) for _ in range(n)])


class InProcess:
    """kleenenet's service layer called directly, from inside the world's host namespace."""

    def __init__(self, w: World):
        from kleenenet.platform.linux.namespaces import CLONE_NEWNET, setns

        self._own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        fd = os.open(f"/run/netns/{w.host}", os.O_RDONLY)
        setns(fd, CLONE_NEWNET)
        os.close(fd)
        from kleenenet.platform.linux import LinuxPlatform
        from kleenenet.service import Service
        from kleenenet.store import Store

        platform = LinuxPlatform()
        # No watcher per container: leave() ends them all at once, and 2000 watchers taking them
        # off their networks would run into the figures measured after.
        platform.watches_detached = False
        self.svc = Service(Store(w.state_dir), platform, out=lambda _: None)
        self.pids: list[int] = []

    def leave(self) -> None:
        from kleenenet.platform.linux.namespaces import CLONE_NEWNET, setns

        for pid in self.pids:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        self.svc.store.close()
        setns(self._own, CLONE_NEWNET)

    def idle_container(self, name: str) -> None:
        self.svc.run(["sleep", "600"], name=name, driver="ipnet", detach=True)
        self.pids.append(self.svc.store.container(name).pid)

    def attach_detach(self, n: int) -> None:
        attach, detach = [], []
        for i in range(n):
            t = time.perf_counter()
            self.svc.connect(f"idle{i}", "bench")
            attach.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            self.svc.disconnect(f"idle{i}", "bench")
            detach.append((time.perf_counter() - t) * 1000)
        report("kleenenet attach to a bridge (in-process)", attach)
        report("kleenenet detach (in-process)", detach)

    def scale(self, type_: str, count: int, window: int = 25) -> None:
        """Attach #1-window against the last `window` of `count`, with the time of each plan step
        at both ends: what grows, if anything, is named by the step (one kernel call each). Then
        a detach among `window` containers against one among `count` (each leave updates the
        hosts files of the peers on the network)."""
        from kleenenet import plan

        subnet = "10.60.0.0/16" if type_ == "bridge" else "10.61.0.0/16"
        self.svc.create_network(f"scale-{type_}", type_, subnet=subnet)
        times, leaves, steps = [], [], {"first": defaultdict(list), "last": defaultdict(list)}
        execute = plan.Plan.execute

        def timed_execute(p, record):
            for k, step in enumerate(p.steps):
                def timed(do=step.do, key=f"#{k} " + re.sub(r"kv\w+|[\d.]+/\d+|[0-9a-f]{12}|s\w+\d+|([0-9a-f]{2}:){5}[0-9a-f]{2}", "X",
                                                            step.text.splitlines()[0])[:60]):
                    t = time.perf_counter()
                    do()
                    record[key].append((time.perf_counter() - t) * 1000)
                step.do = timed
            execute(p)
        for i in range(count):
            self.idle_container(f"s{type_}{i}")
            end = "first" if i < window else "last" if i >= count - window else None
            if end:
                plan.Plan.execute = lambda p, record=steps[end]: timed_execute(p, record)
            t = time.perf_counter()
            self.svc.connect(f"s{type_}{i}", f"scale-{type_}")
            times.append((time.perf_counter() - t) * 1000)
            plan.Plan.execute = execute
            if i < window:  # a leave among few: out and in again
                t = time.perf_counter()
                self.svc.disconnect(f"s{type_}{i}", f"scale-{type_}")
                leaves.append((time.perf_counter() - t) * 1000)
                self.svc.connect(f"s{type_}{i}", f"scale-{type_}")
        for i in range(count - window, count):  # a leave among `count`
            t = time.perf_counter()
            self.svc.disconnect(f"s{type_}{i}", f"scale-{type_}")
            leaves.append((time.perf_counter() - t) * 1000)
        a = report(f"  {type_}: attach #1-{window} (in-process)", times[:window])
        b = report(f"  {type_}: attach #{count - window + 1}-{count} (in-process)", times[-window:])
        print(f"  {type_}: attach #{count} / attach #{window}: {b / a:.2f}x  target <= 1.10x: "
              f"{'met' if b / a <= 1.1 else 'MISSED'}", flush=True)
        c = report(f"  {type_}: detach among {window} (in-process)", leaves[:window])
        d = report(f"  {type_}: detach among {count} (in-process)", leaves[-window:])
        print(f"  {type_}: detach among {count} / among {window}: {d / c:.2f}x", flush=True)
        # every attach counts in a straight-line fit, which medians of the ends' few samples,
        # taken minutes apart, do not
        slope, intercept = statistics.linear_regression(range(count), times)
        print(f"  {type_}: fit over all {count} attaches: {intercept:.2f} ms + {slope * 1000:.2f} us per "
              f"container: #{count} / #1 = {(intercept + slope * count) / intercept:.2f}x", flush=True)
        for key in steps["first"]:
            first, last = statistics.median(steps["first"][key]), statistics.median(steps["last"].get(key, [0]))
            print(f"    step {key:62s} {first:6.3f} -> {last:6.3f} ms ({last - first:+.3f})", flush=True)


def netavark_conf(cid: str, ip: str, ports: list[tuple[int, int]] = (), mtu: int | None = None) -> str:
    """netavark's input for container `cid` at `ip` on the bridge network nv (10.89.0.0/16), with
    (host port, container port) TCP mappings, as podman writes it."""
    info = {"dns_enabled": False, "driver": "bridge", "id": "b" * 64, "internal": False,
            "ipv6_enabled": False, "name": "nv", "network_interface": "nvbr0",
            "subnets": [{"gateway": "10.89.0.1", "subnet": "10.89.0.0/16"}]}
    if mtu:
        info["options"] = {"mtu": str(mtu)}
    return json.dumps({
        "container_id": cid, "container_name": cid,
        "networks": {"nv": {"interface_name": "eth0", "static_ips": [ip]}},
        "network_info": {"nv": info},
        "port_mappings": [{"host_ip": "", "container_port": ctr, "host_port": host, "range": 1,
                           "protocol": "tcp"} for host, ctr in ports],
    })


def netavark(w: World, cfg: str, cmd: str, ns: str, conf: str) -> float:
    """One netavark process in the world's host namespace, for the namespace `ns`; its time."""
    return timed(w.in_host(NETAVARK, "--config", cfg, cmd, f"/run/netns/{ns}"), input=conf.encode())


def bench_netavark(w: World, n: int) -> None:
    cfg = tempfile.mkdtemp(prefix="kn-bench-nv.")
    spare = [f"{w.host}-c{i}" for i in range(2)]

    def nv(cmd: str, ns: str, cid: str, ip: str) -> float:
        return netavark(w, cfg, cmd, ns, netavark_conf(cid, ip))

    try:
        for ns in spare:
            sh("ip", "netns", "add", ns)
        nv("setup", spare[0], "c0", "10.89.0.2")  # keeps the bridge warm
        setup, teardown = [], []
        for _ in range(n):
            setup.append(nv("setup", spare[1], "c1", "10.89.0.3"))
            teardown.append(nv("teardown", spare[1], "c1", "10.89.0.3"))
        report("netavark setup, warm bridge (peer)", setup)
        report("netavark teardown (peer)", teardown)
        report("netavark setup + teardown, warm bridge (peer)", [a + b for a, b in zip(setup, teardown)])
        nv("teardown", spare[0], "c0", "10.89.0.2")
    finally:
        for ns in spare:
            sh("ip", "netns", "del", ns, check=False)
        shutil.rmtree(cfg, ignore_errors=True)


# throughput: iperf3 (Debian: apt-get install iperf3), one TCP stream

VETH = "raw veth pair (floor)"
PLAIN_BRIDGE = "linux bridge, no firewall, ctr<->ctr (floor)"
KN_BRIDGE = "kleenenet bridge, ctr<->ctr"
NV_BRIDGE = "netavark bridge, ctr<->ctr (peer)"


def in_net(pid: int, *args: str) -> list[str]:
    return ["nsenter", f"--net=/proc/{pid}/ns/net", *args]


def in_ns(ns: str, *args: str) -> list[str]:
    return ["nsenter", f"--net=/run/netns/{ns}", *args]


def wait_listening(prefix: list[str], port: int) -> None:
    deadline = time.monotonic() + 10
    while not sh(*prefix, "ss", "-Htln", f"sport = :{port}").stdout.strip():
        if time.monotonic() > deadline:
            sys.exit(f"nothing listens on port {port} in {' '.join(prefix)}")
        time.sleep(0.05)


def iperf(client: list[str], addr: str, seconds: float) -> float:
    """Gbit/s received over one TCP stream of `seconds` from the client's namespace to addr."""
    done = subprocess.run([*client, "iperf3", "-J", "-c", addr, "-t", str(seconds)], capture_output=True, text=True)
    try:
        return json.loads(done.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9
    except (ValueError, KeyError):
        sys.exit(f"iperf3 to {addr} exited {done.returncode}: {done.stdout[-400:]} {done.stderr[-400:]}")


def container_pid(w: World, name: str) -> int:
    (pid,), = w.query(f"SELECT pid FROM containers WHERE name = '{name}'")
    return pid


def bench_throughput(tmp: Path, n: int, seconds: float, peers: bool) -> None:
    """Two kleenenet containers on a bridge network (the server is the container's own command,
    the client runs in the other's network namespace) against the same MTU on a raw veth pair
    between two namespaces, a bare Linux bridge with no firewall, and two netavark containers
    on its bridge. The setups take turns, round after round, so drift in the machine's load
    falls on all of them alike."""
    if not shutil.which("iperf3"):
        print("iperf3 is not installed (apt-get install iperf3): no throughput figures", flush=True)
        return
    (tmp / "kleenenet").mkdir(parents=True)
    w = World(tmp / "kleenenet")
    nvw = None
    spare: list[str] = []  # namespaces made here, deleted by name
    servers: list[subprocess.Popen] = []
    cfg = tempfile.mkdtemp(prefix="kn-bench-nv.")
    setups: list[tuple[str, list[str], str]] = []  # label, client command prefix, server address

    def netns(name: str) -> str:
        spare.append(name)
        sh("ip", "netns", "add", name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def serve(ns: str) -> None:
        servers.append(subprocess.Popen(in_ns(ns, "iperf3", "-s"), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL))
        wait_listening(in_ns(ns), 5201)

    try:
        w.kn("network", "create", "-t", "bridge", "--subnet", "10.72.0.0/24", "tput")
        w.kn("run", "-d", "--name", "tsrv", "-n", "tput", "--", "iperf3", "-s")
        w.kn("run", "-d", "--name", "tcli", "-n", "tput", "--", "sleep", "3600")
        client = container_pid(w, "tcli")
        wait_listening(in_net(container_pid(w, "tsrv")), 5201)
        mtu = int(re.search(r"\bmtu (\d+)", sh(*in_net(client, "ip", "-o", "link", "show", "eth0")).stdout)[1])
        setups.append((KN_BRIDGE, in_net(client), w.ip_of("tsrv")))

        a, b = netns(f"{w.host}-va"), netns(f"{w.host}-vb")
        sh("ip", "-n", a, "link", "add", "eth0", "mtu", str(mtu), "type", "veth", "peer", "name", "eth0",
           "mtu", str(mtu), "netns", b)
        for ns, addr in ((a, "10.73.0.1/24"), (b, "10.73.0.2/24")):
            sh("ip", "-n", ns, "addr", "add", addr, "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
        serve(a)
        setups.append((VETH, in_ns(b), "10.73.0.1"))

        br, ca, cb = netns(f"{w.host}-br"), netns(f"{w.host}-ba"), netns(f"{w.host}-bb")
        sh("ip", "-n", br, "link", "add", "br0", "mtu", str(mtu), "type", "bridge")
        sh("ip", "-n", br, "link", "set", "br0", "up")
        for ns, port, addr in ((ca, "pa", "10.74.0.2/24"), (cb, "pb", "10.74.0.3/24")):
            sh("ip", "-n", br, "link", "add", port, "mtu", str(mtu), "master", "br0", "type", "veth",
               "peer", "name", "eth0", "mtu", str(mtu), "netns", ns)
            sh("ip", "-n", br, "link", "set", port, "up")
            sh("ip", "-n", ns, "addr", "add", addr, "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
        serve(ca)
        setups.append((PLAIN_BRIDGE, in_ns(cb), "10.74.0.2"))

        if peers and os.path.exists(NETAVARK):
            (tmp / "netavark").mkdir()
            nvw = World(tmp / "netavark")  # a host namespace of its own for netavark's rules
            na, nb = netns(f"{nvw.host}-c0"), netns(f"{nvw.host}-c1")
            netavark(nvw, cfg, "setup", na, netavark_conf("c0", "10.89.0.2", mtu=mtu))
            netavark(nvw, cfg, "setup", nb, netavark_conf("c1", "10.89.0.3", mtu=mtu))
            serve(na)
            setups.append((NV_BRIDGE, in_ns(nb), "10.89.0.2"))

        print(f"throughput: {n} rounds of {seconds:g} s per setup, MTU {mtu} everywhere", flush=True)
        rates = defaultdict(list)
        for _ in range(n):
            for label, prefix, addr in setups:
                rates[label].append(iperf(prefix, addr, seconds))
        for label, _, _ in setups:
            report_rate(label, rates[label])
        # the machine's load drifts between rounds: each round's ratio is steadier than the medians'
        for label, _, _ in setups[1:]:
            paired = [a / b for a, b in zip(rates[KN_BRIDGE], rates[label])]
            print(f"  {KN_BRIDGE} / {label}, round by round: median {statistics.median(paired):.2f}x "
                  f"({', '.join(f'{r:.2f}' for r in paired)})", flush=True)
    finally:
        for proc in servers:
            proc.kill()
            proc.wait()
        for ns in spare:
            sh("ip", "netns", "del", ns, check=False)
        if nvw:
            nvw.destroy()
        w.destroy()
        shutil.rmtree(cfg, ignore_errors=True)


# user-mode networking (--only usermode): pasta and slirp4netns against a kleenenet bridge

PASTA_UP = "pasta, ctr->upstream"
SLIRP_UP = "slirp4netns, ctr->upstream"
BRIDGE_UP = "kleenenet bridge (NAT), ctr->upstream"
PASTA_RUN = "kleenenet run --rm -l pasta true (CLI)"
SLIRP_RUN = "kleenenet run --rm -l slirp4netns true (CLI)"
PODMAN_PASTA_RUN = "podman run --rm --network pasta true (peer)"


def bench_usermode(tmp: Path, n: int, seconds: float, peers: bool) -> None:
    """iperf3, one TCP stream from a container to a server in the fake upstream, through pasta,
    slirp4netns and a kleenenet bridge network (NAT), taking turns round after round; then
    `run --rm true` with each user-mode driver, against podman's with pasta."""
    drivers = [d for d in ("pasta", "slirp4netns") if shutil.which(d)]
    if not drivers:
        print("neither pasta nor slirp4netns is installed: no user-mode figures", flush=True)
        return
    tmp.mkdir(parents=True)
    w = World(tmp)
    servers: list[subprocess.Popen] = []
    try:
        if shutil.which("iperf3"):
            servers.append(subprocess.Popen(in_ns(w.wan, "iperf3", "-s"), stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL))
            wait_listening(in_ns(w.wan), 5201)
            w.kn("network", "create", "-t", "bridge", "--subnet", "10.75.0.0/24", "up")
            setups = []
            for label, name, args in ((PASTA_UP, "tpasta", ["-l", "pasta"]), (SLIRP_UP, "tslirp", ["-l", "slirp4netns"]),
                                      (BRIDGE_UP, "tbridge", ["-l", "vnet", "-n", "up"])):
                if args[1] == "vnet" or args[1] in drivers:
                    w.kn("run", "-d", "--name", name, *args, "--", "sleep", "3600")
                    setups.append((label, in_net(container_pid(w, name))))
            print(f"user-mode throughput: {n} rounds of {seconds:g} s per setup", flush=True)
            rates = defaultdict(list)
            for _ in range(n):
                for label, prefix in setups:
                    rates[label].append(iperf(prefix, WAN_ADDR, seconds))
            for label, _ in setups:
                report_rate(label, rates[label])
        else:
            print("iperf3 is not installed (apt-get install iperf3): no user-mode throughput", flush=True)
        for label, driver in ((PASTA_RUN, "pasta"), (SLIRP_RUN, "slirp4netns")):
            if driver in drivers:
                report(label, [timed(w.in_host(*KLEENENET, "run", "--rm", "-l", driver, "--", "true"), env=w.env)
                               for _ in range(n)])
        if peers and shutil.which("podman") and shutil.which("runc") and "pasta" in drivers:
            bench_podman_pasta(w, n)
    finally:
        for proc in servers:
            proc.kill()
            proc.wait()
        w.destroy()


def bench_podman_pasta(w: World, n: int) -> None:
    base, rootfs, env, podman = podman_setup(w)
    try:
        argv = [*podman, "run", "--rm", *PODMAN_LIMITS, "--network", "pasta", "--rootfs", str(rootfs), "true"]
        first = subprocess.run(argv, capture_output=True, text=True, env=env)
        if first.returncode != 0:  # podman 4.3 runs pasta for rootless containers only
            print(f"{PODMAN_PASTA_RUN}: not measured, podman says: {first.stderr.strip().splitlines()[-1:]}",
                  flush=True)
            return
        report(PODMAN_PASTA_RUN, [timed(argv, env=env) for _ in range(n)])
    finally:
        shutil.rmtree(base, ignore_errors=True)


def make_rootfs(root: Path) -> Path:
    """A minimal root: `true` and `sleep` with the libraries they load, at the host's paths."""
    for binary in ("/usr/bin/true", "/usr/bin/sleep"):
        libs = [line.split()[-2] if "=>" in line else line.split()[0]
                for line in sh("ldd", binary).stdout.splitlines() if "/" in line]
        for f in [binary, *libs]:
            dest = root / f.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dest)
    return root


def podman_setup(w: World) -> tuple[Path, Path, dict, list[str]]:
    """A podman of its own (storage, configuration, netavark's directory) in a temporary
    directory, run in the world's host namespace: the directory, a root for --rootfs, the
    environment and the command."""
    base = Path(tempfile.mkdtemp(prefix="kn-bench-podman."))
    rootfs = make_rootfs(base / "rootfs")
    for d in ("root", "run", "tmp", "net"):
        (base / d).mkdir()
    (base / "containers.conf").write_text(
        f'[network]\nnetwork_backend = "netavark"\nnetwork_config_dir = "{base}/net"\n'
        f'[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
        f'events_logfile_path = "{base}/events.log"\nruntime = "runc"\ntmp_dir = "{base}/tmp"\n')
    env = {**os.environ, "CONTAINERS_CONF": str(base / "containers.conf")}
    podman = w.in_host("podman", "--root", str(base / "root"), "--runroot", str(base / "run"),
                       "--storage-driver", "vfs")
    return base, rootfs, env, podman


PODMAN_LIMITS = ["--ulimit", "nofile=1000:1000", "--ulimit", "nproc=1000:1000"]


def bench_podman(w: World, n: int) -> None:
    base, rootfs, env, podman = podman_setup(w)
    limits = PODMAN_LIMITS
    try:
        report("podman network create (peer)",
               [timed([*podman, "network", "create", "--subnet", f"10.67.{i}.0/24", f"pt{i}"], env=env)
                for i in range(n)])
        timed([*podman, "network", "create", "--disable-dns", "--subnet", "10.66.0.0/24", "pbench"], env=env)
        report("podman run --rm true, bridge (peer)",
               [timed([*podman, "run", "--rm", *limits, "--network", "pbench", "--rootfs", str(rootfs), "true"],
                      env=env) for _ in range(n)])
        report("podman run --rm true, --network none (peer)",
               [timed([*podman, "run", "--rm", *limits, "--network", "none", "--rootfs", str(rootfs), "true"],
                      env=env) for _ in range(n)])
        # `podman network connect` on a running container: the peer of `kleenenet network connect`
        timed([*podman, "network", "create", "--disable-dns", "--subnet", "10.65.0.0/24", "pbench2"], env=env)
        timed([*podman, "run", "-d", "--name", "pidle", *limits, "--network", "pbench", "--rootfs", str(rootfs),
               "sleep", "600"], env=env)
        connect, disconnect = [], []
        for i in range(n + 1):  # the first pair warms up
            a = timed([*podman, "network", "connect", "pbench2", "pidle"], env=env)
            b = timed([*podman, "network", "disconnect", "pbench2", "pidle"], env=env)
            if i:
                connect.append(a)
                disconnect.append(b)
        report("podman network connect, running container (peer)", connect)
        report("podman network disconnect (peer)", disconnect)
    finally:
        subprocess.run([*podman, "system", "reset", "-f"], env=env, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


# the daemon: Kleene's API over its unix socket

class Daemon:
    """`kleenenet daemon` inside the world's host namespace, on the world's (temporary) state."""

    def __init__(self, w: World, sock: Path):
        # nsenter without --pid execs the command: the process we start is the daemon itself
        self.proc = subprocess.Popen(w.in_host(*KLEENENET, "daemon", "--socket", str(sock)), env=w.env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        self.log: list[str] = []
        ready = threading.Event()

        def drain():  # its stderr is read to the end, so the daemon never blocks writing to it
            for line in self.proc.stderr:
                self.log.append(line.rstrip())
                if line.startswith("kleenenet: serving"):
                    ready.set()
            ready.set()
        threading.Thread(target=drain, daemon=True).start()
        if not ready.wait(30) or self.proc.poll() is not None:
            self.stop()
            raise SystemExit("kleenenet daemon did not start:\n  " + "\n  ".join(self.log))
        with open(f"/proc/{self.proc.pid}/cmdline", "rb") as f:
            assert b"daemon" in f.read(), "the process started is not the daemon"

    def stop(self) -> int:
        """SIGTERM to the daemon's own PID (SIGKILL if it has not gone within 15 s); its exit code."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                print(f"kleenenet daemon (pid {self.proc.pid}) did not stop within 15 s of SIGTERM: killed",
                      flush=True)
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode

    def stop_and_report(self) -> None:
        """Stop it, and print its stderr if it said more than where it served, or failed."""
        code = self.stop()
        noise = [line for line in self.log if not line.startswith("kleenenet: serving")]
        if code != 0 or noise:
            print(f"kleenenet daemon exited {code}; its stderr:\n  " + "\n  ".join(noise), flush=True)


class Api:
    """A Kleene client over the daemon's unix socket (aiohttp: HTTP/1.1 with keep-alive, and
    the exec WebSocket), as klee uses it."""

    URL = "http://kleenenet"

    def __init__(self, sock: Path):
        self.sock = sock

    async def __aenter__(self):
        import aiohttp

        self.session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(self.sock)),
                                             timeout=aiohttp.ClientTimeout(total=60))
        return self

    async def __aexit__(self, *exc):
        await self.session.close()

    async def call(self, method: str, path: str, body=None, expect: int = 200):
        async with self.session.request(method, self.URL + path, json=body) as r:
            raw = await r.read()
            if r.status != expect:
                raise SystemExit(f"{method} {path} answered {r.status} (expected {expect}): "
                                 f"{raw.decode(errors='replace')}")
            return json.loads(raw) if raw else None

    async def create(self, cmd: list[str], name: str | None = None, public_ports: list[dict] = ()) -> str:
        """A container from the image, as `klee create/run` asks for one."""
        body = {"cmd": cmd, "env": [], "image": IMAGE, "jail_param": [], "mounts": [], "name": name,
                "network_driver": "vnet", "persist": False, "public_ports": list(public_ports),
                "restart_policy": "no", "user": ""}
        return (await self.call("POST", "/containers/create", body, 201))["id"]

    async def connect(self, container: str, network: str) -> None:
        await self.call("POST", "/networks/connect", {"container": container, "network": network,
                                                      "ip_address": "<auto>", "ip_address6": "<auto>"}, 204)

    async def disconnect(self, container: str, network: str) -> None:
        await self.call("POST", f"/networks/{network}/disconnect/{container}", None, 204)

    async def exec_create(self, container: str) -> str:
        body = {"container_id": container, "cmd": [], "env": [], "user": "", "tty": False}
        return (await self.call("POST", "/exec/create", body, 201))["id"]

    async def exec_start(self, exec_id: str, attach: bool,
                         timeout: float = 60) -> tuple[int, str, list[str], float | None]:
        """Start the container over the WebSocket; read frames until the server closes it: the
        close code, its reason, the text frames and when the first one (`starting`) came."""
        import aiohttp

        async with self.session.ws_connect(self.URL + "/exec/start") as ws:
            await ws.send_str(json.dumps({"exec_id": exec_id, "attach": attach, "start_container": True}))
            frames, first = [], None
            while True:
                msg = await ws.receive(timeout=timeout)
                if msg.type == aiohttp.WSMsgType.TEXT:
                    first = first or time.perf_counter()
                    frames.append(msg.data)
                elif msg.type == aiohttp.WSMsgType.CLOSE:
                    return msg.data, msg.extra or "", frames, first
                elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    return ws.close_code, "", frames, first

    async def start_detached(self, container: str, timeout: float = 60) -> None:
        code, reason, _, _ = await self.exec_start(await self.exec_create(container), attach=False, timeout=timeout)
        if code != 1001:
            raise SystemExit(f"starting {container} detached closed with {code}: {reason}")


IMAGE = "FreeBSD"  # in every state: the host's root, as in Kleene
API_NET = "apibr"


async def api_setup(api: Api) -> None:
    """A bridge network kept warm by a running container, and an idle running container off it."""
    # with a gateway, as netavark's network has (Kleene's API: "" is none)
    await api.call("POST", "/networks/create", {"name": API_NET, "type": "bridge", "subnet": "10.70.0.0/16",
                                                "gateway": "<auto>"}, 201)
    holder = await api.create(["sleep", "600"], "holder")
    await api.connect(holder, API_NET)
    await api.start_detached(holder)
    await api.start_detached(await api.create(["sleep", "600"], "idle"))


async def api_attach_detach(api: Api, n: int) -> None:
    """POST /networks/connect and POST /networks/{net}/disconnect/{ctr} on the running `idle`."""
    attach, detach = [], []
    for i in range(n + 1):  # the first pair warms up
        t0 = time.perf_counter()
        await api.connect("idle", API_NET)
        t1 = time.perf_counter()
        await api.disconnect("idle", API_NET)
        t2 = time.perf_counter()
        if i:
            attach.append((t1 - t0) * 1000)
            detach.append((t2 - t1) * 1000)
    report("daemon attach, running container (HTTP)", attach)
    report("daemon detach (HTTP)", detach)
    report("daemon attach + detach (HTTP)", [a + b for a, b in zip(attach, detach)])


async def api_run_rm(api: Api, n: int) -> None:
    """`run --rm true` on the bridge through the API: create, connect, exec create, exec start
    (attached, until the server closes the WebSocket), delete."""
    steps = defaultdict(list)
    total = []
    for i in range(n + 1):  # the first one warms up
        marks = [time.perf_counter()]
        cid = await api.create(["true"])
        marks.append(time.perf_counter())
        await api.connect(cid, API_NET)
        marks.append(time.perf_counter())
        exec_id = await api.exec_create(cid)
        marks.append(time.perf_counter())
        code, reason, frames, starting = await api.exec_start(exec_id, attach=True)
        marks.append(time.perf_counter())
        await api.call("DELETE", f"/containers/{cid}")
        marks.append(time.perf_counter())
        if code != 1000 or "exit-code 0" not in reason:
            raise SystemExit(f"exec/start of `true` closed with {code}: {reason} (frames {frames})")
        if i:
            total.append((marks[-1] - marks[0]) * 1000)
            for k, step in enumerate(("POST /containers/create", "POST /networks/connect", "POST /exec/create",
                                      "GET /exec/start (WebSocket to close)", "DELETE /containers/{id}")):
                steps[step].append((marks[k + 1] - marks[k]) * 1000)
            if starting:  # the container is running and wired when `starting` is sent
                steps["  exec/start: to the `starting` frame"].append((starting - marks[3]) * 1000)
                steps["  exec/start: `starting` to close"].append((marks[4] - starting) * 1000)
    report("daemon run --rm true, bridge (HTTP + WebSocket)", total)
    for step, times in steps.items():
        report(f"  {step}", times)


def client_env(w: World) -> dict:
    """The environment of a command that goes through the daemon: no state dir of its own."""
    return {k: v for k, v in w.env.items() if k != "KLEENENET_STATE_DIR"}


def cli_connect(w: World, n: int, label: str, kn: list[str], env: dict) -> None:
    """`kleenenet network connect` / `disconnect` on the running `idle`, one whole process each."""
    connect, disconnect = [], []
    for i in range(n + 1):  # the first pair warms up
        a = timed([*kn, "network", "connect", API_NET, "idle"], env=env)
        b = timed([*kn, "network", "disconnect", API_NET, "idle"], env=env)
        if i:
            connect.append(a)
            disconnect.append(b)
    report(f"kleenenet network connect (CLI, {label})", connect)
    report(f"kleenenet network disconnect (CLI, {label})", disconnect)


def klee_run(w: World, sock: Path, n: int) -> None:
    """`klee run -l vnet -n NET FreeBSD true`, one whole klee process each; klee has no --rm,
    so each container is removed afterwards, untimed."""
    env = {**os.environ, "KLEE_HOST": f"http://{sock}", "COLUMNS": "300", "NO_COLOR": "1"}
    times = []
    for i in range(n + 1):  # the first one warms up
        args = w.in_host(str(KLEE), "run", "-l", "vnet", "-n", API_NET, "--name", f"klee{i}", IMAGE, "true")
        t = time.perf_counter()
        done = subprocess.run(args, check=False, capture_output=True, text=True, env=env)
        elapsed = (time.perf_counter() - t) * 1000
        out = " ".join(done.stdout.split())
        if done.returncode != 0 or "exit-code 0" not in out:  # klee exits 0 on some errors: read it
            raise SystemExit(f"{' '.join(args)} exited {done.returncode}: {out} {done.stderr.strip()}")
        if i:
            times.append(elapsed)
        asyncio.run(api_once(sock, "DELETE", f"/containers/klee{i}"))
    report("klee run -l vnet -n NET FreeBSD true (daemon)", times)


async def api_once(sock: Path, method: str, path: str, body=None, expect: int = 200):
    async with Api(sock) as api:
        return await api.call(method, path, body, expect)


# published ports, through the daemon

PORTS_NET = "pubbr"
ONE_PORT = "daemon attach, 1 published port (HTTP)"
MANY_PORTS = "daemon attach, 10k published ports (HTTP)"
PORT_10001 = "daemon attach, 1 port with 10k published (HTTP)"
NV_PORT = "netavark setup, warm bridge, 1 port mapping (peer)"
# the container's command: answers `ok` on each TCP port it is given
ANSWER = ("import socket,sys,threading\n"
          "def serve(s):\n"
          " while True: c,_=s.accept(); c.sendall(b'ok'); c.close()\n"
          "for p in sys.argv[1:]: threading.Thread(target=serve,args=(socket.create_server(('',int(p))),)).start()\n")


def reaches(w: World, port: int) -> bool:
    """A connection from the fake upstream to the host's uplink address on `port` is answered."""
    code = ("import socket,sys\n"
            f"try: sys.exit(socket.create_connection(({UPLINK_ADDR!r},{port}),timeout=2).recv(2)!=b'ok')\n"
            "except OSError: sys.exit(1)\n")
    return subprocess.run(in_ns(w.wan, sys.executable, "-c", code), capture_output=True).returncode == 0


def published(w: World, *ports: int) -> None:
    """The figure is of a working publish: each port answers from upstream, or the run stops."""
    closed = [p for p in ports if not reaches(w, p)]
    if closed:
        sys.exit(f"published port(s) {closed} not reachable from upstream after the attach: no figure")


def bench_ports(tmp: Path, n: int, peers: bool) -> None:
    """Attaching a running container that publishes ports to a warm bridge (POST /networks/connect
    to the daemon; its published ports are loaded by that attach): with one port, against
    netavark's setup with one port mapping (a whole process, as podman runs it); with 10 000
    ports (one range), and again the one-port container while those 10 000 are published. Each
    publish is checked once with a connection from upstream. `kleenenet network connect` (a
    whole CLI process) of the one-port container is shown for comparison."""
    tmp.mkdir()
    w = World(tmp)
    sock = tmp / "kleenenet.sock"
    daemon = None

    def port(host: str, ctr: str) -> dict:
        return {"interfaces": [], "host_port": host, "container_port": ctr, "protocol": "tcp"}

    async def http() -> None:
        async with Api(sock) as api:
            # with a gateway (Kleene's API: "" is none), so answers from containers find their way out
            await api.call("POST", "/networks/create", {"name": PORTS_NET, "type": "bridge", "subnet": "10.75.0.0/16",
                                                        "gateway": "<auto>"}, 201)
            holder = await api.create(["sleep", "600"], "pholder")  # keeps the bridge warm
            await api.connect(holder, PORTS_NET)
            await api.start_detached(holder)
            await api.start_detached(await api.create([sys.executable, "-c", ANSWER, "80"], "pub1",
                                                      [port("8080", "80")]))
            many_id = await api.create([sys.executable, "-c", ANSWER, "20000", "29999"], "pub10k",
                                       [port("20000-29999", "20000-29999")])
            t = time.perf_counter()
            await api.start_detached(many_id, timeout=600)
            report("daemon start, 10k published ports, no network yet (WebSocket)",
                   [(time.perf_counter() - t) * 1000])

            async def attach(container: str) -> float:
                t = time.perf_counter()
                await api.connect(container, PORTS_NET)
                return (time.perf_counter() - t) * 1000

            one, many, after = [], [], []
            for i in range(n + 1):  # the first round warms up and checks the ports answer
                a = await attach("pub1")
                if not i:
                    published(w, 8080)
                await api.disconnect("pub1", PORTS_NET)
                b = await attach("pub10k")
                c = await attach("pub1")
                if not i:
                    published(w, 8080, 20000, 29999)
                await api.disconnect("pub1", PORTS_NET)
                await api.disconnect("pub10k", PORTS_NET)
                if i:
                    one.append(a)
                    many.append(b)
                    after.append(c)
            report(ONE_PORT, one)
            report(MANY_PORTS, many)
            report(PORT_10001, after)

    try:
        daemon = Daemon(w, sock)
        asyncio.run(http())
        kn, connect = w.in_host(*KLEENENET), []
        for i in range(n + 1):  # the first pair warms up
            a = timed([*kn, "network", "connect", PORTS_NET, "pub1"], env=w.env)
            timed([*kn, "network", "disconnect", PORTS_NET, "pub1"], env=w.env)
            if i:
                connect.append(a)
        report("kleenenet network connect, 1 published port (CLI)", connect)
    finally:
        if daemon:
            daemon.stop_and_report()
        w.destroy()
        reap()
    if peers and os.path.exists(NETAVARK):
        bench_netavark_port(tmp / "netavark", n)


def bench_netavark_port(tmp: Path, n: int) -> None:
    """netavark setup and teardown of a container with one port mapping on a warm bridge, in a
    world of its own (its iptables-nft rules and kleenenet's tables never share a namespace)."""
    tmp.mkdir()
    w = World(tmp)
    cfg = tempfile.mkdtemp(prefix="kn-bench-nv.")
    spare = [f"{w.host}-c{i}" for i in range(2)]
    try:
        for ns in spare:
            sh("ip", "netns", "add", ns)
        netavark(w, cfg, "setup", spare[0], netavark_conf("c0", "10.89.0.2"))  # keeps the bridge warm
        setup = []
        for i in range(n + 1):  # the first pair warms up
            a = netavark(w, cfg, "setup", spare[1], netavark_conf("c1", "10.89.0.3", [(8080, 80)]))
            netavark(w, cfg, "teardown", spare[1], netavark_conf("c1", "10.89.0.3", [(8080, 80)]))
            if i:
                setup.append(a)
        report(NV_PORT, setup)
    finally:
        for ns in spare:
            sh("ip", "netns", "del", ns, check=False)
        w.destroy()
        shutil.rmtree(cfg, ignore_errors=True)


def bench_daemon(tmp: Path, n: int) -> None:
    """Through `kleenenet daemon`, in a world of its own: attach + detach and `run --rm true` as
    HTTP requests, `kleenenet network connect` as a whole process (direct, and through the daemon
    where the CLI can be sent to one), `klee run` end to end."""
    tmp.mkdir()
    w = World(tmp)
    sock = tmp / "kleenenet.sock"
    daemon = None
    try:
        daemon = Daemon(w, sock)

        async def http() -> None:
            async with Api(sock) as api:
                await api_setup(api)
                await api_attach_detach(api, n)
                await api_run_rm(api, n)
        asyncio.run(http())
        cli_connect(w, n, "direct", w.in_host(*KLEENENET), w.env)
        cli_connect(w, n, "through the daemon", w.in_host(*KLEENENET, "--host", f"unix://{sock}"), client_env(w))
        if KLEE.exists():
            klee_run(w, sock, n)
        else:
            print(f"{KLEE} is not installed: no klee figure", flush=True)
    finally:
        if daemon:
            daemon.stop_and_report()
        w.destroy()  # kills the containers the daemon left running (as a daemon does on SIGTERM)
        reap()


def reap() -> None:
    """Reap what was orphaned onto us (we are a child subreaper): containers, conmon."""
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                return
        except ChildProcessError:
            return


GROUPS = ("cli", "daemon", "ports", "throughput", "usermode")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10, help="samples per figure (more: steadier medians, longer run)")
    p.add_argument("--scale", type=int, default=1000, help="containers for the flat-cost check")
    p.add_argument("--seconds", type=float, default=3, help="length of each throughput sample")
    p.add_argument("--no-peers", action="store_true")
    p.add_argument("--only", default=",".join(GROUPS),
                   help=f"comma-separated figure groups among {', '.join(GROUPS)} (and the peers they "
                        "are compared with); default: all")
    p.add_argument("--daemon-only", action="store_true", help="the same as --only daemon")
    args = p.parse_args()
    only = {"daemon"} if args.daemon_only else set(args.only.split(","))
    if only - set(GROUPS):
        p.error(f"--only: unknown group {', '.join(sorted(only - set(GROUPS)))} (groups: {', '.join(GROUPS)})")
    if os.geteuid() != 0:
        sys.exit("bench.py needs root (it builds throwaway network namespaces)")
    ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: reap what podman leaves
    peers = not args.no_peers
    with tempfile.TemporaryDirectory(prefix="kn-bench.") as tmp:
        w = World(Path(tmp))
        inproc = None
        try:
            if "cli" in only:
                bench_kleenenet_cli(w, args.n)
                inproc = InProcess(w)
                inproc.attach_detach(args.n)
                for type_ in ("loopback", "bridge"):
                    inproc.scale(type_, args.scale)
                inproc.leave()
                inproc = None
            if peers and only & {"cli", "daemon"} and os.path.exists(NETAVARK):
                bench_netavark(w, args.n)
            if peers and only & {"cli", "daemon"} and shutil.which("podman") and shutil.which("runc"):
                bench_podman(w, args.n)
            if "daemon" in only:
                bench_daemon(Path(tmp) / "daemon", args.n)
            if "ports" in only:
                bench_ports(Path(tmp) / "ports", args.n, peers)
            if "throughput" in only:
                bench_throughput(Path(tmp) / "throughput", args.n, args.seconds, peers)
            if "usermode" in only:
                bench_usermode(Path(tmp) / "usermode", args.n, args.seconds, peers)
        finally:
            if inproc:
                inproc.leave()
            w.destroy()
            reap()
    netavark_setup, netavark_teardown = "netavark setup, warm bridge (peer)", "netavark teardown (peer)"
    podman_run = "podman run --rm true, bridge (peer)"
    podman_connect, podman_disconnect = ("podman network connect, running container (peer)",
                                         "podman network disconnect (peer)")
    COMPARISONS.extend([
        ("kleenenet attach to a bridge (CLI)", netavark_setup, 1.0),
        ("kleenenet attach to a bridge (in-process)", netavark_setup, 0.3),
        ("kleenenet detach (CLI)", netavark_teardown, None),
        ("kleenenet network create (CLI)", "podman network create (peer)", None),
        ("kleenenet run --rm true, bridge (CLI)", podman_run, 0.3),
        ("kleenenet run --rm true, disabled (CLI)", "podman run --rm true, --network none (peer)", None),
        ("daemon attach + detach (HTTP)", "netavark setup + teardown, warm bridge (peer)", 0.3),
        ("daemon attach, running container (HTTP)", netavark_setup, None),
        ("daemon detach (HTTP)", netavark_teardown, None),
        ("daemon run --rm true, bridge (HTTP + WebSocket)", podman_run, 0.3),
        ("kleenenet network connect (CLI, direct)", podman_connect, 1.0),
        ("kleenenet network connect (CLI, through the daemon)", podman_connect, 1.0),
        ("kleenenet network disconnect (CLI, direct)", podman_disconnect, None),
        ("kleenenet network disconnect (CLI, through the daemon)", podman_disconnect, None),
        ("klee run -l vnet -n NET FreeBSD true (daemon)", podman_run, None),
        (ONE_PORT, NV_PORT, 0.5),
        (PORT_10001, ONE_PORT, 1.1),
        ("kleenenet network connect, 1 published port (CLI)", NV_PORT, None),
        (KN_BRIDGE, VETH, 0.98),
        (PLAIN_BRIDGE, VETH, None),
        (KN_BRIDGE, NV_BRIDGE, None),
        (PASTA_UP, BRIDGE_UP, None),
        (SLIRP_UP, BRIDGE_UP, None),
        (PASTA_RUN, PODMAN_PASTA_RUN, None),
    ])
    LIMITS.append((MANY_PORTS, 100))
    print()
    table()


if __name__ == "__main__":
    main()
