"""A container's resolv.conf and hosts text (kleenenet/dns.py), and its files in the state
directory."""

import os
import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kleenenet.dns import (
    COMPACT_AFTER,
    Files,
    HostResolver,
    hosts_files,
    hosts_lines,
    nameservers,
    reachable,
    resolv_conf,
    same_lines,
)
from kleenenet.model import Container, Endpoint

STUB = "# This is /run/systemd/resolve/stub-resolv.conf\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n"


def container(name="web", dns=(), cid="c1") -> Container:
    return Container(id=cid, name=name, cmd=["true"], network_driver="ipnet", created="now", dns=list(dns))


def body(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith("#")]


def test_nameservers_of_resolv_conf_and_of_unbound():
    assert nameservers("; comment\nnameserver 192.0.2.1\nnameserver\tfe80::1%eth0\nsearch x\n") == \
        ["192.0.2.1", "fe80::1%eth0"]
    forward = ("forward-zone:\n\tname: .\n\tforward-addr: 192.0.2.1\n\tforward-addr: 2001:db8::1@53#dns.example\n"
               "\tforward-addr: 192.0.2.9@853#tls.example\n")
    assert nameservers(forward) == ["192.0.2.1", "2001:db8::1"]  # port 853 is not what resolv.conf asks


@pytest.mark.parametrize("addr,ok", [
    ("127.0.0.53", False), ("127.0.0.1", False), ("::1", False), ("0.0.0.0", False), ("fe80::1%eth0", False),
    ("fe80::1", False), ("dns.example", False), ("192.0.2.1", True), ("169.254.169.253", True),
    ("2001:db8::1", True),
])
def test_which_host_nameservers_a_container_reaches(addr, ok):
    assert reachable(addr) is ok


def test_a_stub_is_replaced_by_the_servers_behind_it():
    text, warning = resolv_conf(container(), HostResolver(STUB, ["192.0.2.1", "127.0.0.1", "2001:db8::1"]), [])
    assert body(text) == ["nameserver 192.0.2.1", "nameserver 2001:db8::1", "options edns0 trust-ad", "search lan"]
    assert warning is None and "replaced by the servers behind them" in text.splitlines()[0]


def test_the_fallback_when_the_stubs_servers_are_unknown():
    fallback = ["198.51.100.1", "127.0.0.1"]  # a loopback one in the list would not answer either
    for upstreams in (None, [], ["127.0.0.1"]):
        text, warning = resolv_conf(container(), HostResolver(STUB, upstreams), fallback)
        assert body(text)[0:2] == ["nameserver 198.51.100.1", "options edns0 trust-ad"] and warning is None
        assert "replaced by fallback-resolv.conf" in text.splitlines()[0]


def test_nothing_usable_writes_no_nameserver_and_says_so():
    text, warning = resolv_conf(container("db"), HostResolver(STUB, None), [])
    assert body(text) == ["options edns0 trust-ad", "search lan"]
    assert "container 'db' gets no nameserver" in warning and "127.0.0.53" in warning
    assert "fallback-resolv.conf" in warning and f"# {warning}" in text.splitlines()
    assert text.splitlines()[0] == "# kleenenet: resolver of container db, from /etc/resolv.conf"


def test_the_hosts_own_servers_are_kept_in_order_with_the_stub_replaced_in_place():
    host = HostResolver("nameserver 192.0.2.7\nnameserver 127.0.0.1\nnameserver 192.0.2.8\nnameserver 192.0.2.7\n",
                        ["192.0.2.8", "192.0.2.9"])
    assert body(resolv_conf(container(), host, [])[0]) == [
        "nameserver 192.0.2.7", "nameserver 192.0.2.8", "nameserver 192.0.2.9"]


def test_a_nameserver_on_the_hosts_own_address_is_replaced_as_a_stub_is():
    """dnsmasq on a bridge address, unbound on the LAN address: they answer the host only (no
    container reaches the host's services), so they are replaced as a loopback stub is."""
    host = HostResolver("nameserver 192.168.1.2\nnameserver 2001:DB8::2\nnameserver 192.0.2.7\n", None,
                        own=frozenset({"192.168.1.2", "2001:db8::2", "10.2.3.1"}))
    text, warning = resolv_conf(container(), host, ["198.51.100.1"])
    assert body(text) == ["nameserver 198.51.100.1", "nameserver 192.0.2.7"] and warning is None
    text, warning = resolv_conf(container("db"), host, [])
    assert body(text) == ["nameserver 192.0.2.7"] and warning is None  # one server still answers


def test_no_nameserver_line_means_the_hosts_loopback():
    assert body(resolv_conf(container(), HostResolver("search lan\n", ["192.0.2.1"]), [])[0]) == \
        ["nameserver 192.0.2.1", "search lan"]
    assert body(resolv_conf(container(), HostResolver("", None), ["192.0.2.2"])[0]) == ["nameserver 192.0.2.2"]


def test_dns_option_replaces_every_server_and_keeps_the_rest():
    text, warning = resolv_conf(container(dns=["198.51.100.7", "2001:db8::7"]), HostResolver(STUB, None), [])
    assert body(text) == ["nameserver 198.51.100.7", "nameserver 2001:db8::7", "options edns0 trust-ad",
                          "search lan"]
    assert warning is None and "from --dns" in text.splitlines()[0]


def ep(eid, net, cid, ip="", ip6="", wired=True) -> Endpoint:
    return Endpoint(id=eid, network_id=net, container_id=cid, ip_address=ip, ip_address6=ip6,
                    epair=f"kv{eid}" if wired else None)


def lines(text: str) -> list[str]:
    """The lines after localhost's."""
    return text.splitlines()[7:]


def test_hosts_own_names_and_peers_on_each_shared_network():
    names = {"a": "a", "b": "b", "c": "c", "d": "d"}
    eps = [ep("1", "n1", "a", "10.0.0.2", "fd00::2"), ep("2", "n2", "a", "10.1.0.2"),
           ep("3", "n1", "b", "10.0.0.3"), ep("4", "n2", "c", "10.1.0.3"), ep("5", "n1", "c", "10.0.0.4"),
           ep("6", "n1", "d", "10.0.0.5", wired=False),  # d is stopped
           ep("7", "n3", "b", "10.3.0.2")]  # not a's network
    files = hosts_files(["a", "b"], eps, names)
    assert lines(files["a"]) == ["10.0.0.2\ta", "fd00::2\ta", "10.1.0.2\ta",
                                 "10.0.0.3\tb", "10.0.0.4\tc", "10.1.0.3\tc"]
    assert lines(files["b"]) == ["10.0.0.3\tb", "10.3.0.2\tb", "10.0.0.2\ta", "fd00::2\ta", "10.0.0.4\tc"]
    assert files["a"].splitlines()[1:3] == ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]


def test_hosts_of_a_container_starting_and_of_one_without_addresses():
    eps = [ep("1", "n1", "a", "10.0.0.2", wired=False), ep("2", "n1", "b", "10.0.0.3")]
    files = hosts_files(["a", "x"], eps, {"a": "a", "b": "b", "x": "x"})
    assert lines(files["a"]) == ["10.0.0.2\ta", "10.0.0.3\tb"]  # before it is wired: its peers already
    assert lines(files["x"]) == ["127.0.0.1\tx"]


def naive_hosts(cid: str, endpoints: list[Endpoint], names: dict[str, str]) -> list[str]:
    own = [a for e in endpoints if e.container_id == cid for a in (e.ip_address, e.ip_address6) if a]
    out = [f"{a}\t{names[cid]}" for a in own or ["127.0.0.1"]]
    for mine in (e for e in endpoints if e.container_id == cid):
        peers = sorted((e for e in endpoints if e.network_id == mine.network_id and e.epair
                        and e.container_id != cid), key=lambda e: names[e.container_id])
        out += [f"{a}\t{names[e.container_id]}" for e in peers for a in (e.ip_address, e.ip_address6) if a]
    return out


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcdef"), st.sampled_from(["n1", "n2", "n3"]), st.booleans(),
                          st.booleans()), max_size=14, unique_by=lambda t: (t[0], t[1])))
def test_hosts_match_a_line_by_line_construction(rows):
    """The shared-block construction gives what building each file line by line would."""
    names = {cid: f"ctr-{cid}" for cid in "abcdef"}
    eps = [ep(str(k), net, cid, f"10.{k}.0.1", f"fd00::{k + 1:x}" if v6 else "", wired)
           for k, (cid, net, wired, v6) in enumerate(rows)]
    files = hosts_files(list("abcdef"), eps, names)
    for cid in "abcdef":
        assert lines(files[cid]) == naive_hosts(cid, eps, names)


def test_a_joining_container_is_appended_and_the_file_says_the_same():
    """What a join appends to a peer's file says what rewriting that file would."""
    names = {"a": "a", "b": "b", "c": "ab"}  # it sorts before b
    before = [ep("1", "n1", "a", "10.0.0.2"), ep("2", "n1", "b", "10.0.0.3")]
    joining = ep("3", "n1", "c", "10.0.0.4", "fd00::4")
    appended = hosts_files(["a"], before, names)["a"] + hosts_lines("ab", [joining])
    rewritten = hosts_files(["a"], before + [joining], names)["a"]
    assert appended != rewritten and same_lines(appended, rewritten)
    assert not same_lines(appended, hosts_files(["a"], before, names)["a"]) and not same_lines(None, rewritten)


def test_files_are_rewritten_in_place_readable_by_all(tmp_path):
    files = Files(tmp_path)
    old = os.umask(0o077)
    try:
        files.write("c1", "hosts", "a long first version\n" * 10)
    finally:
        os.umask(old)
    path = files.dir("c1") / "hosts"
    inode = path.stat().st_ino
    files.write("c1", "hosts", "short\n")
    assert path.read_text() == "short\n" and path.stat().st_ino == inode
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert files.read("c1", "hosts") == "short\n" and files.read("c2", "hosts") is None
    files.append("c1", "hosts", "more\n")
    files.append("c2", "hosts", "more\n")  # a container without files gets none
    assert path.read_text() == "short\nmore\n" and path.stat().st_ino == inode
    assert files.ids() == ["c1"]
    files.remove("c1")
    assert files.ids() == [] and not files.dir("c1").exists()


def test_a_leaving_container_is_struck_in_place_and_the_file_says_the_same(tmp_path):
    """What a leave strikes out of a peer's file says what rewriting that file would; a byte or
    so per line, in place; the header counts the lines struck since the file was written."""
    names = {"a": "a", "b": "b", "c": "c"}
    staying = [ep("1", "n1", "a", "10.0.0.2"), ep("2", "n1", "b", "10.0.0.3")]
    leaving = ep("3", "n1", "c", "10.0.0.4", "fd00::4")
    files = Files(tmp_path)
    files.write("a", "hosts", hosts_files(["a"], staying + [leaving], names)["a"])
    path, inode = files.dir("a") / "hosts", (files.dir("a") / "hosts").stat().st_ino
    size = path.stat().st_size
    assert "lines struck since written: 00000000" in path.read_text().splitlines()[0]
    assert files.strike("a", "hosts", hosts_lines("c", [leaving])) is False
    text = path.read_text()
    assert same_lines(text, hosts_files(["a"], staying, names)["a"])
    assert "#0.0.0.4\tc" in text.splitlines() and "#d00::4\tc" in text.splitlines()  # '#' over the first byte
    assert "lines struck since written: 00000002" in text.splitlines()[0]
    assert path.stat().st_ino == inode and path.stat().st_size == size
    # a line that is not there (struck already, or never appended) is left alone
    assert files.strike("a", "hosts", hosts_lines("c", [leaving])) is False
    assert path.read_text() == text
    assert files.strike("x", "hosts", "10.0.0.9\tx\n") is False  # a container without files


def test_a_file_without_the_count_is_to_be_written_anew_once_struck(tmp_path):
    """A hosts file written before the header counted struck lines."""
    files = Files(tmp_path)
    files.write("a", "hosts", "# kleenenet: hosts of container a\n10.0.0.2\ta\n10.0.0.4\tc\n")
    assert files.strike("a", "hosts", "10.0.0.9\tx\n") is False  # nothing struck: nothing to do
    assert files.strike("a", "hosts", "10.0.0.4\tc\n") is True
    assert (files.dir("a") / "hosts").read_text().splitlines()[1:] == ["10.0.0.2\ta", "#0.0.0.4\tc"]


def test_a_file_mostly_struck_is_to_be_written_anew(tmp_path):
    names = {"a": "a", **{f"p{k}": f"p{k}" for k in range(200)}}
    peers = [ep(str(k + 2), "n1", f"p{k}", f"10.0.{k // 200}.{k % 200 + 3}") for k in range(200)]
    files = Files(tmp_path)
    files.write("a", "hosts", hosts_files(["a"], [ep("1", "n1", "a", "10.0.9.2"), *peers], names)["a"])
    said = [files.strike("a", "hosts", hosts_lines(peer.container_id, [peer])) for peer in peers]
    first = said.index(True)
    assert first > COMPACT_AFTER and all(said[first:])  # once more than half the file is struck
    assert 100 <= first <= 120


def test_a_symlink_is_not_followed(tmp_path):
    files = Files(tmp_path)
    files.dir("c1").mkdir(parents=True)
    (tmp_path / "elsewhere").write_text("keep\n")
    (files.dir("c1") / "hosts").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OSError):
        files.write("c1", "hosts", "x\n")
    assert (tmp_path / "elsewhere").read_text() == "keep\n"


def test_the_fallback_list(tmp_path):
    files = Files(tmp_path)
    assert files.fallback() == []
    (tmp_path / "fallback-resolv.conf").write_text("# ours\nnameserver 192.0.2.53\nnameserver 2001:db8::53\n")
    assert files.fallback() == ["192.0.2.53", "2001:db8::53"]
