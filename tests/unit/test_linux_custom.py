"""A custom network in the Linux firewall's state: the LAN's subnet and interface are in none of
kleenenet's maps and sets (nothing of the LAN's own traffic is dropped, routed or masqueraded);
its containers' bridge ports are bound as on a bridge network."""

from kleenenet.model import Endpoint, Network
from kleenenet.platform.linux import _fw, _host_mac, _routed, firewall

LAN = Network(id="c1", name="lan", type="custom", subnet="192.168.50.0/24", interface="lanbr0",
              gateway="192.168.50.1")
OWN = Network(id="b1", name="own", type="bridge", subnet="10.2.3.0/24", interface="kleene0",
              gateway="10.2.3.1", nat="uplink")


def ep(net: Network, ip: str) -> Endpoint:
    return Endpoint(id=f"e{net.id}", network_id=net.id, container_id="x", epair=f"kve{net.id}", ip_address=ip)


def test_the_lan_is_in_no_map_or_set_but_its_ports_are_bound():
    els = firewall.elements(_fw([LAN, OWN], [ep(LAN, "192.168.50.130"), ep(OWN, "10.2.3.2")]))
    everything = " ".join(" ".join(v) for v in els.values())
    assert "192.168.50.0/24" not in everything and '"lanbr0"' not in everything
    assert els[("bridge kleenenet", "ports")] == ['"kveb1"', '"kvec1"']
    assert '"kvec1" . 192.168.50.130' in els[("bridge kleenenet", "port_addrs4")]
    assert els[("inet kleenenet", "subnets4")] == ["10.2.3.0/24"]


def test_a_macvlan_network_has_no_ports():
    state = _fw([LAN], [ep(LAN, "192.168.50.130")], portless={LAN.id})
    assert state.ports == []


def test_a_custom_network_alone_still_has_the_tables_for_its_ports():
    text = firewall.render(_fw([LAN], [ep(LAN, "192.168.50.130")]))
    assert "table bridge kleenenet {" in text and "kvec1" in text
    assert "from_c1" not in text and "192.168.50.0/24" not in text


def test_the_lan_is_not_routed_and_its_ports_never_take_the_bridges_mac():
    assert _routed([LAN, OWN]) == [OWN]
    assert _host_mac(LAN, "x").startswith("fe:") and _host_mac(OWN, "x").startswith("02:")
