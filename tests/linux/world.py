"""A throwaway world for Linux integration tests: a "host" network namespace in which kleenenet
runs, and a "wan" namespace behind it standing in for the internet (TEST-NET-1 addresses).
Nothing here touches the machine's own namespace."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from kleenenet.platform.linux.namespaces import process_alive

WAN_ADDR = "192.0.2.1"  # the fake upstream's address
UPLINK_ADDR = "192.0.2.2"  # the host's address toward it
WAN6_ADDR = "2001:db8:1::1"
UPLINK6_ADDR = "2001:db8:1::2"
KLEENENET = [sys.executable, "-m", "kleenenet"]


def sh(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True, **kw)


def comparable_ruleset(text: str) -> str:
    """An nft listing without what is not state: a counter's values are traffic, and nft lists a
    set's elements in its own order."""
    text = re.sub(r"counter packets \d+ bytes \d+", "counter", text)
    return re.sub(r"elements = \{(.*?)\}", lambda m: "elements = { " + ", ".join(
        sorted(e.strip() for e in m[1].split(","))) + " }", text, flags=re.S)


class World:
    def __init__(self, tmp: Path):
        tag = secrets.token_hex(3)
        self.host, self.wan = f"kn-h-{tag}", f"kn-w-{tag}"
        self.state_dir = tmp / "state"
        self.env = {**os.environ, "KLEENENET_STATE_DIR": str(self.state_dir)}
        self.servers: list[subprocess.Popen] = []
        sh("ip", "netns", "add", self.host)
        sh("ip", "netns", "add", self.wan)
        # Distinct ifindexes: the kernel takes a veth whose index equals its peer's (2 and 2 in two
        # fresh namespaces) for a plain device and reports its carrier up to a second late, so the
        # first packets over it would be lost.
        sh("ip", "-n", self.host, "link", "add", "uplink", "index", "7", "type", "veth",
           "peer", "name", "wan0", "index", "9", "netns", self.wan)
        for ns, dev, addr, addr6 in ((self.host, "uplink", UPLINK_ADDR, UPLINK6_ADDR),
                                     (self.wan, "wan0", WAN_ADDR, WAN6_ADDR)):
            sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            sh("ip", "-n", ns, "addr", "add", f"{addr6}/64", "dev", dev, "nodad")
            # their link-local addresses too: while tentative they take no reply
            sh("ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{dev}.accept_dad=0")
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", self.host, "route", "add", "default", "via", WAN_ADDR)
        sh("ip", "-n", self.host, "-6", "route", "add", "default", "via", WAN6_ADDR)

    def in_host(self, *args: str) -> list[str]:
        # nsenter keeps the mount namespace (ip netns exec would make a private one per call)
        return ["nsenter", f"--net=/run/netns/{self.host}", *args]

    def kn(self, *args: str, check: bool = True, env: dict | None = None,
           timeout: float = 60) -> subprocess.CompletedProcess:
        """Run the kleenenet CLI inside the host namespace."""
        r = subprocess.run(self.in_host(*KLEENENET, *args), capture_output=True, text=True,
                           env={**self.env, **(env or {})}, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"kleenenet {' '.join(args)} exited {r.returncode}: {r.stderr}")
        return r

    def kn_json(self, *args: str):
        return json.loads(self.kn(*args).stdout)

    def ip_of(self, container: str, version: int = 4) -> str:
        ep = self.kn_json("inspect", container)["container_endpoints"][0]
        return ep["ip_address" if version == 4 else "ip_address6"]

    # packets

    def serve(self, where: list[str], port: int, bind: str = "0.0.0.0") -> None:
        """A TCP server that answers each connection with the peer's address."""
        code = ("import socket,sys\n"
                f"s=socket.socket(socket.AF_INET6 if ':' in {bind!r} else socket.AF_INET)\n"
                "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
                f"s.bind(({bind!r},{port})); s.listen(); print('ready',flush=True)\n"
                "while True:\n c,a=s.accept(); c.sendall(a[0].encode()); c.close()\n")
        p = subprocess.Popen([*where, sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        self.servers.append(p)

    def udp_sink(self, port: int) -> Path:
        """A UDP server upstream that writes the source address of every datagram to a file."""
        out = self.state_dir.parent / f"udp-{port}.log"
        code = ("import socket,sys\n"
                "s=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM); s.setsockopt(socket.IPPROTO_IPV6,socket.IPV6_V6ONLY,0)\n"
                f"s.bind(('::',{port})); print('ready',flush=True)\n"
                f"f=open({str(out)!r},'a',buffering=1)\n"
                "while True:\n d,a=s.recvfrom(999); f.write(a[0].removeprefix('::ffff:')+' '+d.decode()+'\\n')\n")
        p = subprocess.Popen(["ip", "netns", "exec", self.wan, sys.executable, "-c", code],
                             stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        self.servers.append(p)
        return out

    def serve_in_container(self, name: str, network: str, port: int, *opts: str) -> str:
        code = ("import socket\n"
                "s=socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
                f"s.bind(('::',{port})); s.listen()\n"
                "while True:\n c,a=s.accept(); c.sendall(a[0].removeprefix('::ffff:').encode()); c.close()\n")
        self.kn("run", "-d", "--name", name, "-n", network, *opts, "--", sys.executable, "-c", code)
        ip = self.ip_of(name)
        deadline = time.monotonic() + 5  # wait until it listens
        while time.monotonic() < deadline:
            if self.kn("exec", name, "--", "ss", "-Htln", check=False).stdout.strip():
                return ip
            time.sleep(0.05)
        raise AssertionError(f"server in {name} did not start")

    def connect_from(self, network: str, addr: str, port: int, timeout: float = 1.0, *opts: str) -> str | None:
        """Connect from a fresh container on `network`; what the server saw, or None if it failed."""
        code = ("import socket,sys\n"
                f"try: s=socket.create_connection(({addr!r},{port}),timeout={timeout})\n"
                "except OSError as e: print('FAIL',e); sys.exit(3)\n"
                "print(s.recv(100).decode())\n")
        r = self.kn("run", "--rm", "-n", network, *opts, "--", sys.executable, "-c", code, check=False)
        if r.returncode == 3:
            return None
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    # what is on the host

    def snapshot(self) -> dict:
        """Everything kleenenet could change in the host namespace, plus its state."""
        def run(*args):
            return sh(*self.in_host(*args)).stdout
        return {
            # in name order: a recreated interface comes back with another index
            "links": sorted(self.links()),
            # Carrier state and IPv6 link-local autoconfiguration follow from ports coming and
            # going (the kernel's doing, not kleenenet's), so they are left out.
            "addrs": sorted([a for a in line.split()[2:] if not a.startswith("fe80:")] + [line.split("@")[0].split()[0]]
                            for line in run("ip", "-br", "addr").splitlines()),
            "routes": sorted(r.replace(" linkdown", "") for r in (run("ip", "route") + run("ip", "-6", "route")).splitlines()
                             if not r.startswith(("fe80:", "multicast"))),
            "nft": self.nft(),
            "forwarding": run("sysctl", "-n", "net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"),
            "store": self.store_dump(),
        }

    def query(self, sql: str) -> list[tuple]:
        """Rows of the state, read directly (a CLI process per look would cost 0.3 s)."""
        db = self.state_dir / "kleenenet.db"
        if not db.exists():
            return []
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return conn.execute(sql).fetchall()

    def store_dump(self) -> dict:
        """Every row of the state."""
        return {table: sorted(map(list, self.query(f"SELECT * FROM {table}")))
                for table in ("networks", "containers", "endpoints", "images")}

    def wired_ports(self) -> set[str]:
        """The host interfaces the store says are wired."""
        return {epair for epair, in self.query("SELECT epair FROM endpoints WHERE epair IS NOT NULL")}

    def links(self) -> list[str]:
        out = sh(*self.in_host("ip", "-br", "link")).stdout
        return [line.split()[0].split("@")[0] for line in out.splitlines()]

    def nft(self) -> str:
        return comparable_ruleset(sh(*self.in_host("nft", "list", "ruleset")).stdout)

    def container_pids(self) -> list[int]:
        """The live processes of the containers the store says are running."""
        rows = self.query("SELECT pid, pid_start FROM containers WHERE pid IS NOT NULL")
        return [pid for pid, start in rows if process_alive(pid, start)]

    def kill_at(self, args: list[str], failpoint: str) -> bool:
        """Run kleenenet until KLEENENET_FAILPOINT=<failpoint> (ending in :stop) stops it, then
        SIGKILL it: the host is left exactly as the dying process left it. False: it finished
        first (the failpoint is past the plan's end)."""
        proc = subprocess.Popen(self.in_host(*KLEENENET, *args), env={**self.env, "KLEENENET_FAILPOINT": failpoint},
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while proc.poll() is None:
            with open(f"/proc/{proc.pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "T":
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    return True
            assert time.monotonic() < deadline, f"{args} neither stopped nor ended"
            time.sleep(0.005)
        assert proc.returncode == 0, proc.stderr.read()
        return False

    def own_processes(self) -> list[int]:
        """Every live process that runs with this world's state: its containers (they inherit the
        environment of the kleenenet that started them), also those a test killed kleenenet
        before it recorded, which live on in namespaces of their own after the world's are gone."""
        mark = f"KLEENENET_STATE_DIR={self.state_dir}".encode()
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != os.getpid():
                try:
                    with open(f"/proc/{entry}/environ", "rb") as f:
                        if mark in f.read().split(b"\0"):
                            found.append(int(entry))
                except OSError:  # gone, or a kernel thread
                    pass
        return found

    def watchers(self) -> list[int]:
        """The processes `kleenenet run -d` leaves to watch their container's command."""
        argv = "\0".join([sys.executable, "-m", "kleenenet.watch"]).encode() + b"\0"
        found = []
        for pid in self.own_processes():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if f.read().startswith(argv):
                        found.append(pid)
            except OSError:
                pass
        return found

    def power_cut(self) -> None:
        """Every process of the world's containers dies at once, their watchers first, as when
        the machine goes down: nothing of kleenenet's sees them go."""
        for pid in self.watchers() + self.container_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def destroy(self) -> None:
        for p in self.servers:
            p.kill()
            p.wait()
        for pid in set(self.container_pids()) | set(self.own_processes()):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for ns in (self.host, self.wan):
            sh("ip", "netns", "del", ns, check=False)


def copy_shell(root: Path) -> None:
    """Into the directory `root`: /bin/sh and the libraries it needs (an image with a shell)."""
    sh = shutil.which("sh")
    libs = [line.split()[-2] if "=>" in line else line.split()[0]
            for line in subprocess.run(["ldd", sh], capture_output=True, text=True).stdout.splitlines()
            if "/" in line]
    for path, where in [(sh, "/bin/sh"), *zip(libs, libs)]:
        target = root / where.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
