"""The Linux firewall's published-port elements: what an attach adds, what a change of target
deletes and adds, and how nft's JSON listing reads back (reconcile compares the two)."""

from kleenenet.model import Container, Endpoint, Network, PublishedPort
from kleenenet.platform.linux import firewall
from kleenenet.platform.linux.firewall import FirewallState, _canonical
from kleenenet.ports import Forward, forwards

NET_A = Network(id="a1", name="a", type="bridge", subnet="10.2.3.0/24", subnet6="fd00:3::/64",
                interface="kleene0", gateway="10.2.3.1", nat="uplink")
NET_B = Network(id="b1", name="b", type="loopback", subnet="10.2.4.0/24", interface="kleene1", nat="uplink")


def web(*ports: PublishedPort) -> Container:
    return Container(id="c1", name="web", cmd=["true"], network_driver="ipnet", created="now",
                     public_ports=list(ports))


def ep(net: Network, ip: str, ip6: str = "") -> Endpoint:
    return Endpoint(id=f"e-{net.id}", network_id=net.id, container_id="c1", epair=f"kve-{net.id}",
                    ip_address=ip, ip_address6=ip6)


def test_a_published_port_is_three_elements_per_family():
    """A port that changes its number is exact elements; one that keeps it (53) an interval."""
    c = web(PublishedPort(host_port="8080", container_port="80"),
            PublishedPort(interfaces=["eth1"], host_port="53", container_port="53", protocol="udp"))
    els = firewall.forward_elements(forwards(c, [(NET_A, ep(NET_A, "10.2.3.2", "fd00:3::2"))]))
    assert els == {**published_elements(4, "10.2.3.2"), **published_elements(6, "fd00:3::2")}


def published_elements(family: int, addr: str) -> dict:
    """What test_a_published_port_is_three_elements_per_family publishes, for one family."""
    k, f = "inet kleenenet", family
    return {
        (k, f"published{f}"): [f'"uplink" . tcp . 8080 : {addr} . 80'],
        (k, f"published_local{f}"): [f"tcp . 8080 : {addr} . 80"],
        (k, f"published_targets{f}"): [f"{addr} . tcp . 80"],
        (k, f"published_ranges{f}"): [f'"eth1" . udp . 53 : {addr}'],
        (k, f"published_local_ranges{f}"): [f"udp . 53 : {addr}"],
        (k, f"published_target_ranges{f}"): [f"{addr} . udp . 53"],
    }


def test_ports_that_keep_their_number_are_one_interval_per_run():
    c = web(PublishedPort(host_port="9000-18999", container_port="9000-18999"),
            PublishedPort(host_port="20000", container_port="20000"),
            PublishedPort(host_port="20001", container_port="20001"),
            PublishedPort(host_port="20005-20006", container_port="30005-30006"))
    els = firewall.forward_elements(forwards(c, [(NET_A, ep(NET_A, "10.2.3.2"))]))
    k = "inet kleenenet"
    assert els[(k, "published_ranges4")] == ['"uplink" . tcp . 9000-18999 : 10.2.3.2',
                                             '"uplink" . tcp . 20000-20001 : 10.2.3.2']
    assert els[(k, "published_target_ranges4")] == ["10.2.3.2 . tcp . 9000-18999", "10.2.3.2 . tcp . 20000-20001"]
    assert els[(k, "published4")] == ['"uplink" . tcp . 20005 : 10.2.3.2 . 30005',
                                      '"uplink" . tcp . 20006 : 10.2.3.2 . 30006']
    assert firewall.forwards_batch(forwards(c, [(NET_A, ep(NET_A, "10.2.3.2"))]), []).startswith(
        'delete element inet kleenenet published4 { "uplink" . tcp . 20005, "uplink" . tcp . 20006 }\n')


def test_one_port_on_two_interfaces_is_one_local_element():
    c = web(PublishedPort(interfaces=["eth1", "eth2"], host_port="8080", container_port="80"))
    els = firewall.forward_elements(forwards(c, [(NET_A, ep(NET_A, "10.2.3.2"))]))
    assert len(els[("inet kleenenet", "published4")]) == 2
    assert els[("inet kleenenet", "published_local4")] == ["tcp . 8080 : 10.2.3.2 . 80"]
    assert els[("inet kleenenet", "published_targets4")] == ["10.2.3.2 . tcp . 80"]


def test_attaching_adds_only_the_container_elements_and_a_new_target_replaces_the_old():
    c = web(PublishedPort(host_port="8080", container_port="80"))
    on_a = forwards(c, [(NET_A, ep(NET_A, "10.2.3.2"))])
    assert firewall.forwards_batch([], on_a) == (
        'add element inet kleenenet published4 { "uplink" . tcp . 8080 : 10.2.3.2 . 80 }\n'
        "add element inet kleenenet published_local4 { tcp . 8080 : 10.2.3.2 . 80 }\n"
        "add element inet kleenenet published_targets4 { 10.2.3.2 . tcp . 80 }\n")
    on_b = forwards(c, [(NET_B, ep(NET_B, "10.2.4.1"))])
    assert firewall.forwards_batch(on_a, on_b) == (  # a map element goes by its key
        'delete element inet kleenenet published4 { "uplink" . tcp . 8080 }\n'
        "delete element inet kleenenet published_local4 { tcp . 8080 }\n"
        "delete element inet kleenenet published_targets4 { 10.2.3.2 . tcp . 80 }\n"
        'add element inet kleenenet published4 { "uplink" . tcp . 8080 : 10.2.4.1 . 80 }\n'
        "add element inet kleenenet published_local4 { tcp . 8080 : 10.2.4.1 . 80 }\n"
        "add element inet kleenenet published_targets4 { 10.2.4.1 . tcp . 80 }\n")
    assert firewall.forwards_batch(on_a, on_a) == ""


def test_the_rendered_table_holds_the_forwards():
    f = Forward(4, "tcp", 8080, "uplink", "10.2.3.2", 80, NET_A.id)
    text = firewall.render(FirewallState([NET_A], [], [f]))
    assert 'elements = { "uplink" . tcp . 8080 : 10.2.3.2 . 80 }' in text
    assert "elements = { 10.2.3.2 . tcp . 80 }" in text
    # the elements are not rules: the digest reconcile compares stays the same
    assert firewall.rules_digest(FirewallState([NET_A], [], [f])) == firewall.rules_digest(FirewallState([NET_A]))


def test_nft_json_reads_back_as_rendered():
    """Elements as `nft -j list table` shows them (nftables 1.0.6)."""
    assert _canonical([{"concat": ["uplink", "tcp", 8080]}, {"concat": ["10.2.3.2", 80]}], False) == \
        "uplink . tcp . 8080 : 10.2.3.2 . 80"
    assert _canonical({"concat": ["fd00:3::2", "udp", 53]}, False) == "fd00:3::2 . udp . 53"
    assert _canonical([{"prefix": {"addr": "10.2.3.0", "len": 24}}, {"jump": {"target": "from_a1"}}], False) == \
        "10.2.3.0/24 : jump from_a1"
    assert _canonical({"concat": ["kv1", 1]}, True) == f"kv1 . 0x{1:032x}"
    assert _canonical([{"concat": ["uplink", "tcp", {"range": [9000, 18999]}]}, "10.2.3.2"], False) == \
        "uplink . tcp . 9000-18999 : 10.2.3.2"
