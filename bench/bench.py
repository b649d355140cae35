"""kleenenet's speed, side by side with the peers installed here, in throwaway namespaces.

    sudo .venv/bin/python bench/bench.py [--n 10] [--scale 1000] [--no-peers]

Every CLI figure is one whole process call run through `nsenter --net=` (kleenenet and peers
alike). Peers are measured when installed (Debian: netavark, podman + runc). Medians; ratios are
kleenenet / peer from this same run.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.linux.world import KLEENENET, World, sh  # noqa: E402

NETAVARK = "/usr/lib/podman/netavark"
results: dict[str, float] = {}


def timed(args: list[str], **kw) -> float:
    t = time.perf_counter()
    done = subprocess.run(args, capture_output=True, **kw)
    if done.returncode != 0:
        sys.exit(f"{' '.join(args)} exited {done.returncode}: {done.stderr.decode(errors='replace').strip()}")
    return (time.perf_counter() - t) * 1000


def report(label: str, samples: list[float]) -> float:
    med = statistics.median(samples)
    results[label] = med
    print(f"{label:58s} n={len(samples):4d} median {med:8.2f} ms  (min {min(samples):.2f}, max {max(samples):.2f})",
          flush=True)
    return med


def ratio(label: str, ours: str, theirs: str, target: float | None = None) -> None:
    if ours in results and theirs in results:
        r = results[ours] / results[theirs]
        goal = f"  target <= {target:.2f}x: {'met' if r <= target else 'MISSED'}" if target else ""
        print(f"{label:58s} {r:6.2f}x{goal}")


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

        self.svc = Service(Store(w.state_dir), LinuxPlatform(), out=lambda _: None)
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
        at both ends: what grows, if anything, is named by the step (one kernel call each)."""
        from kleenenet import plan

        subnet = "10.60.0.0/16" if type_ == "bridge" else "10.61.0.0/16"
        self.svc.create_network(f"scale-{type_}", type_, subnet=subnet)
        times, steps = [], {"first": defaultdict(list), "last": defaultdict(list)}
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
        a = report(f"  {type_}: attach #1-{window} (in-process)", times[:window])
        b = report(f"  {type_}: attach #{count - window + 1}-{count} (in-process)", times[-window:])
        print(f"  {type_}: attach #{count} / attach #{window}: {b / a:.2f}x  target <= 1.10x: "
              f"{'met' if b / a <= 1.1 else 'MISSED'}", flush=True)
        # every attach counts in a straight-line fit, which medians of the ends' few samples,
        # taken minutes apart, do not
        slope, intercept = statistics.linear_regression(range(count), times)
        print(f"  {type_}: fit over all {count} attaches: {intercept:.2f} ms + {slope * 1000:.2f} us per "
              f"container: #{count} / #1 = {(intercept + slope * count) / intercept:.2f}x", flush=True)
        for key in steps["first"]:
            first, last = statistics.median(steps["first"][key]), statistics.median(steps["last"].get(key, [0]))
            print(f"    step {key:62s} {first:6.3f} -> {last:6.3f} ms ({last - first:+.3f})", flush=True)


def bench_netavark(w: World, n: int) -> None:
    import json

    cfg = tempfile.mkdtemp(prefix="kn-bench-nv.")
    spare = [f"{w.host}-c{i}" for i in range(2)]

    def conf(cid: str, ip: str) -> str:
        return json.dumps({
            "container_id": cid, "container_name": cid,
            "networks": {"nv": {"interface_name": "eth0", "static_ips": [ip]}},
            "network_info": {"nv": {
                "dns_enabled": False, "driver": "bridge", "id": "b" * 64, "internal": False,
                "ipv6_enabled": False, "name": "nv", "network_interface": "nvbr0",
                "subnets": [{"gateway": "10.89.0.1", "subnet": "10.89.0.0/16"}]}},
        })

    def nv(cmd: str, ns: str, cid: str, ip: str) -> float:
        return timed(w.in_host(NETAVARK, "--config", cfg, cmd, f"/run/netns/{ns}"), input=conf(cid, ip).encode())

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
        nv("teardown", spare[0], "c0", "10.89.0.2")
    finally:
        for ns in spare:
            sh("ip", "netns", "del", ns, check=False)
        shutil.rmtree(cfg, ignore_errors=True)


def bench_podman(w: World, n: int) -> None:
    base = Path(tempfile.mkdtemp(prefix="kn-bench-podman."))
    rootfs = base / "rootfs"
    for binary in ("/usr/bin/true",):  # a minimal root: `true` and its libraries
        libs = [line.split()[-2] if "=>" in line else line.split()[0]
                for line in sh("ldd", binary).stdout.splitlines() if "/" in line]
        for f in [binary, *libs]:
            dest = rootfs / f.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dest)
    for d in ("root", "run", "tmp", "net"):
        (base / d).mkdir()
    (base / "containers.conf").write_text(
        f'[network]\nnetwork_backend = "netavark"\nnetwork_config_dir = "{base}/net"\n'
        f'[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
        f'events_logfile_path = "{base}/events.log"\nruntime = "runc"\ntmp_dir = "{base}/tmp"\n')
    env = {**os.environ, "CONTAINERS_CONF": str(base / "containers.conf")}
    podman = w.in_host("podman", "--root", str(base / "root"), "--runroot", str(base / "run"),
                       "--storage-driver", "vfs")
    limits = ["--ulimit", "nofile=1000:1000", "--ulimit", "nproc=1000:1000"]
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
    finally:
        subprocess.run([*podman, "system", "reset", "-f"], env=env, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10, help="samples per figure")
    p.add_argument("--scale", type=int, default=1000, help="containers for the flat-cost check")
    p.add_argument("--no-peers", action="store_true")
    args = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench.py needs root (it builds throwaway network namespaces)")
    ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: reap what podman leaves
    with tempfile.TemporaryDirectory(prefix="kn-bench.") as tmp:
        w = World(Path(tmp))
        inproc = None
        try:
            bench_kleenenet_cli(w, args.n)
            inproc = InProcess(w)
            inproc.attach_detach(args.n)
            for type_ in ("loopback", "bridge"):
                inproc.scale(type_, args.scale)
            inproc.leave()
            inproc = None
            if not args.no_peers and os.path.exists(NETAVARK):
                bench_netavark(w, args.n)
            if not args.no_peers and shutil.which("podman") and shutil.which("runc"):
                bench_podman(w, args.n)
        finally:
            if inproc:
                inproc.leave()
            w.destroy()
    print()
    ratio("CLI attach / netavark setup", "kleenenet attach to a bridge (CLI)",
          "netavark setup, warm bridge (peer)", 1.0)
    ratio("in-process attach / netavark setup", "kleenenet attach to a bridge (in-process)",
          "netavark setup, warm bridge (peer)", 0.3)
    ratio("CLI detach / netavark teardown", "kleenenet detach (CLI)", "netavark teardown (peer)")
    ratio("network create / podman network create", "kleenenet network create (CLI)",
          "podman network create (peer)")
    ratio("run --rm true bridge / podman", "kleenenet run --rm true, bridge (CLI)",
          "podman run --rm true, bridge (peer)", 0.3)
    ratio("run --rm true disabled / podman --network none", "kleenenet run --rm true, disabled (CLI)",
          "podman run --rm true, --network none (peer)")


if __name__ == "__main__":
    main()
