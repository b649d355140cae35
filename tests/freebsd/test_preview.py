"""`kleenenet --platform freebsd --dry-run ...` shows the FreeBSD plan on any machine."""

from __future__ import annotations

import subprocess
import sys

from kleenenet.platform.freebsd import FreeBSDPlatform
from kleenenet.service import Service
from kleenenet.store import Store
from tests.freebsd.simhost import SimulatedFreeBSD


def kn(state, *args):
    return subprocess.run([sys.executable, "-m", "kleenenet", "--state-dir", str(state), "--platform", "freebsd",
                           *args], capture_output=True, text=True)


def test_network_create_plan(tmp_path):
    r = kn(tmp_path, "--dry-run", "network", "create", "--subnet", "10.2.3.0/24", "testnet")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[:2] == ["ifconfig lo create group kleenenet description kleenenet:testnet up  # prints loN",
                         "ifconfig loN name kleene0"]
    assert lines[2] == "pfctl -n -a kleenenet/testnet -f - <<'EOF'"
    assert "pfctl -a kleenenet/testnet -f - <<'EOF'" in lines
    assert any(line.startswith("nat on em0 inet from <kn_") and line.endswith("-> (em0:0)") for line in lines)
    assert kn(tmp_path, "network", "ls", "--json").stdout.strip() == "[]"  # nothing was kept


def test_changing_a_freebsd_host_from_here_is_refused(tmp_path):
    r = kn(tmp_path, "network", "create", "--subnet", "10.2.3.0/24", "testnet")
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1
    assert "this is not FreeBSD" in r.stderr and "--dry-run" in r.stderr
    assert kn(tmp_path, "network", "ls", "--json").stdout.strip() == "[]"


def test_run_plan(tmp_path):
    store = Store(tmp_path)
    Service(store, FreeBSDPlatform(SimulatedFreeBSD())).create_network("testnet", subnet="10.2.3.0/24")
    store.close()
    r = kn(tmp_path, "--dry-run", "run", "-l", "ipnet", "-n", "testnet", "--", "ifconfig")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("jail -c name=kn") and lines[0].endswith(" persist ip4=new ip6=new")
    assert lines[1:3] == ["ifconfig kleene0 inet 10.2.3.1/32 alias", f"jail -m name={lines[0].split('=')[1].split()[0]} ip4.addr=10.2.3.1"]
    assert lines[3].startswith("pfctl -a kleenenet/testnet -t kn_") and lines[3].endswith(" -T add 10.2.3.1")
    assert lines[4].startswith("# then: env PATH=/sbin:/bin:/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin jexec kn")
    assert lines[4].endswith(" ifconfig")
    assert lines[5:] == ["# and when it exits:", lines[3].replace("-T add", "-T delete"),
                         "ifconfig kleene0 inet 10.2.3.1 -alias", "pfctl -k 10.2.3.1", "pfctl -k 0.0.0.0/0 -k 10.2.3.1",
                         f"jail -r {lines[0].split('=')[1].split()[0]}"]
    assert kn(tmp_path, "ps", "-a", "--json").stdout.strip() == "[]"


def test_run_with_a_published_port_plan(tmp_path):
    """The preview host listens on nothing (sockstat), so the port is free; the plan loads the
    container's port anchor. (What its exit would flush is read from pf then: nothing here.)"""
    store = Store(tmp_path)
    Service(store, FreeBSDPlatform(SimulatedFreeBSD())).create_network("testnet", subnet="10.2.3.0/24")
    store.close()
    r = kn(tmp_path, "--dry-run", "run", "-l", "ipnet", "-n", "testnet", "-p", "8080:80", "--", "true")
    assert r.returncode == 0, r.stderr
    assert any(line.startswith("pfctl -a kleenenet/testnet/ports/") for line in r.stdout.splitlines()), r.stdout
    assert "rdr on em0 inet proto tcp from any to (em0) port 8080 tag kp_" in r.stdout
