"""The FreeBSD output parsers, fed real output (tests/freebsd/samples, see SOURCES.md there)."""

import ipaddress
import json
from pathlib import Path

import pytest

from kleenenet.platform.freebsd import parsers
from kleenenet.platform.freebsd.parsers import (
    Jail,
    Socket,
    default_route_interface,
    is_missing_anchor,
    parse_anchor_references,
    parse_anchors,
    parse_entries,
    parse_ifconfig,
    parse_jls,
    parse_routes,
    parse_rule_labels,
    parse_sockstat,
    parse_table_show,
    pf_enabled,
    skipped_interfaces,
)

SAMPLES = Path(__file__).parent / "samples"
v4if = ipaddress.IPv4Interface
v6if = ipaddress.IPv6Interface
net = ipaddress.ip_network


def sample(name: str) -> str:
    return (SAMPLES / name).read_text()


# --- ifconfig ------------------------------------------------------------------------------------


def test_ifconfig_bridge_host():
    ifs = parse_ifconfig(sample("ifconfig_bridge_host.txt"))
    assert list(ifs) == ["vtnet0", "lo0", "bridge0", "bastille0",
                         "e0a_jail01", "e0a_jail02", "e0a_jail03", "e0a_jail04"]

    bridge = ifs["bridge0"]
    assert bridge.up
    assert bridge.flags == {"UP", "BROADCAST", "RUNNING", "PROMISC", "SIMPLEX", "MULTICAST", "LOWER_UP"}
    assert bridge.mtu == 1500
    assert bridge.ether == "58:9c:fc:10:ff:db"
    assert bridge.inet == [v4if("10.2.70.109/24")]  # the gateway address
    assert bridge.inet6 == []
    assert bridge.groups == ["bridge"]
    # in ifconfig's order; the "ifmaxaddr 0 port N ..." continuation lines are not members
    assert bridge.members == ["e0a_jail04", "e0a_jail03", "e0a_jail02", "e0a_jail01", "vtnet0"]

    epair = ifs["e0a_jail01"]
    assert epair.description == "vnet0 host interface for Bastille jail jail01"
    assert epair.groups == ["epair"]
    assert epair.ether == "02:d6:ec:ad:52:0a"
    assert epair.inet == [] and epair.members == []

    loopback_clone = ifs["bastille0"]  # a cloned loopback that is down, without addresses
    assert not loopback_clone.up
    assert loopback_clone.flags == {"LOOPBACK", "MULTICAST"}
    assert loopback_clone.groups == ["lo"]
    assert loopback_clone.inet == [] and loopback_clone.ether is None

    lo0 = ifs["lo0"]
    assert lo0.mtu == 16384
    assert lo0.inet == [v4if("127.0.0.1/8")]
    assert lo0.inet6 == [v6if("::1/128"), v6if("fe80::1/64")]  # the %lo0 scope is dropped
    assert ifs["vtnet0"].description is None and ifs["vtnet0"].inet == []


def test_ifconfig_renamed_loopback_with_host_aliases():
    ifs = parse_ifconfig(sample("ifconfig_loopback_aliases.txt"))
    kleene = ifs["kleene0"]
    assert kleene.up and "LOOPBACK" in kleene.flags
    assert kleene.groups == ["lo"]  # a renamed clone keeps its cloner's group
    assert kleene.inet == [v4if("127.0.2.1/32"), v4if("127.0.2.2/32"), v4if("127.0.2.3/32")]
    assert kleene.inet6 == [v6if("fe80::1/64")]

    em0 = ifs["em0"]  # a primary address followed by /32 aliases
    assert em0.inet == [v4if("10.1.0.73/24"), v4if("10.1.0.51/32"),
                        v4if("10.1.0.52/32"), v4if("10.1.0.53/32")]
    assert em0.ether == "00:a0:98:7a:b6:c7"

    pflog = ifs["pflog0"]
    assert pflog.flags == {"UP", "RUNNING", "PROMISC", "LOWER_UP"}
    assert pflog.mtu == 33152 and pflog.groups == ["pflog"]


def test_ifconfig_inet6_scopes_and_autoconf():
    ifs = parse_ifconfig(sample("ifconfig_inet6.txt"))
    re0 = ifs["re0"]
    assert re0.inet == [v4if("192.168.1.239/24")]
    assert re0.inet6 == [
        v6if("fe80::428d:5cff:fe58:c5f6/64"),
        v6if("2605:59c8:892:2010:428d:5cff:fe58:c5f6/64"),  # "autoconf pltime 90 vltime 241"
        v6if("fd1f:71ae:fb88:10:428d:5cff:fe58:c5f6/64"),
    ]
    assert re0.groups == [] and re0.members == []


def test_ifconfig_inside_a_vnet_jail():
    ifs = parse_ifconfig(sample("ifconfig_vnet_jail.txt"))
    assert not ifs["lo0"].up  # a VNET jail's lo0 before its rc brought it up
    epair = ifs["epair0b"]
    assert epair.up and epair.groups == ["epair"] and epair.inet == []
    vlan = ifs["vlan3"]
    assert vlan.inet == [v4if("172.16.2.1/24")]
    assert vlan.ether == "58:9c:fc:10:03:b7" and vlan.groups == ["vlan"]


def test_ifconfig_single_interface_and_other_address_forms():
    text = (
        "tun0: flags=1008051<UP,POINTOPOINT,RUNNING,MULTICAST,LOWER_UP> metric 0 mtu 1500\n"
        "\tinet 10.8.0.1 --> 10.8.0.2 netmask 0xffffffff\n"
        "\tinet 10.9.0.1/24 broadcast 10.9.0.255\n"  # ifconfig -f inet:cidr
        "\tinet 10.10.0.1 netmask 255.255.0.0\n"
        "\tinet6 fe80::1%tun0/64 scopeid 0x5\n"  # ifconfig -f inet6:cidr
        "\tether 58:9C:FC:00:00:01\n"
        "\tdescription: \n"
        "\tgroups: tun kleenenet\n"
    )
    tun = parse_ifconfig(text)["tun0"]
    assert tun.inet == [v4if("10.8.0.1/32"), v4if("10.9.0.1/24"), v4if("10.10.0.1/16")]
    assert tun.inet6 == [v6if("fe80::1/64")]
    assert tun.ether == "58:9c:fc:00:00:01"  # lower-cased
    assert tun.description == ""
    assert tun.groups == ["tun", "kleenenet"]


def test_ifconfig_without_flag_names_and_without_output():
    ifs = parse_ifconfig("pflog0: flags=0 metric 0 mtu 33152\n\toptions=0\n\tgroups: pflog\n")
    assert ifs["pflog0"].flags == set() and not ifs["pflog0"].up and ifs["pflog0"].mtu == 33152
    assert parse_ifconfig("") == {}


@pytest.mark.parametrize("text,message", [
    ("\tinet 10.0.0.1 netmask 0xffffff00\n", "comes before any interface header"),
    ("ifconfig: interface kleene9 does not exist\n", "expected an interface header"),
    ("em0: flags=8843<UP> mtu 1500\n\tinet 10.0.0.1\n", "cannot parse 'inet 10.0.0.1' of em0: no netmask"),
    ("em0: flags=8843<UP> mtu 1500\n\tinet 10.0.0.300 netmask 0xffffff00\n", "ifconfig line 2"),
    ("em0: flags=8843<UP> mtu 1500\n\tinet6 fe80::1%em0 scopeid 0x1\n", "no prefixlen"),
    ("em0: flags=8843<UP> mtu 1500\n\tinet6 fe80::zz prefixlen 64\n", "of em0"),
    ("em0: flags=8843<UP> mtu 1500\nem0: flags=8843<UP> mtu 1500\n", "appears twice"),
    ("em0: flags=8843<UP> mtu 1500\n\tmember:\n", "cannot parse 'member:'"),
])
def test_ifconfig_malformed(text, message):
    with pytest.raises(ValueError) as e:
        parse_ifconfig(text)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


# --- netstat -rn --libxo json ------------------------------------------------------------------


def test_routes_freebsd14():
    routes = parse_routes(sample("netstat_routes_frr.json"))
    assert len(routes) == 28  # 9 IPv4 + 19 IPv6 entries, nothing skipped
    assert routes[0] == ("r1-eth0", net("10.0.1.0/24"), "U")
    assert routes[1] == ("lo0", net("10.0.1.1/32"), "UHS")  # host route without a prefix
    assert routes[2] == ("r1-eth1", net("10.0.2.0/24"), "UG1")
    assert ("lo0", net("::1/128"), "UHS") in routes
    # the %scope is dropped from link-local destinations
    assert ("lo0", net("fe80::/64"), "U") in routes
    assert ("r1-eth0", net("fe80::/64"), "U") in routes
    assert ("lo0", net("fe80::1/128"), "UHS") in routes
    # a multipath route is one entry per next hop
    assert routes.count(("r1-eth0", net("1::1/128"), "UGH1")) == 4
    assert default_route_interface(sample("netstat_routes_frr.json")) is None
    assert default_route_interface(sample("netstat_routes_frr.json"), 6) is None


def test_routes_with_default_routes():
    text = sample("netstat_routes_default.json")
    routes = parse_routes(text)
    assert routes[0] == ("inet0", net("0.0.0.0/0"), "UGS")
    assert ("inet0", net("::/0"), "UGS") in routes
    assert ("lo0", net("::ffff:0.0.0.0/96"), "UGRS") in routes
    assert ("vnet0.97", net("fe80::/64"), "U") in routes
    assert default_route_interface(text) == "inet0"
    assert default_route_interface(text, version=6) == "inet0"


def test_routes_skip_non_ip_destinations_and_tolerate_single_entries():
    doc = {"statistics": {"route-information": {"route-table": {"rt-family": {
        "address-family": "Internet", "rt-entry": [
            {"destination": "link#3", "gateway": "link#3", "interface-name": "em0"},
            {"destination": "0.0.0.0/0", "gateway": "192.0.2.1", "flags": "UGS", "interface-name": "em0"},
        ]}}}}}
    assert parse_routes(json.dumps(doc)) == [("em0", net("0.0.0.0/0"), "UGS")]
    assert default_route_interface(json.dumps(doc)) == "em0"


@pytest.mark.parametrize("text,message", [
    ("", "not JSON"),
    ("netstat: illegal option -- -", "not JSON"),
    ("[]", "not a JSON object"),
    ('{"statistics": {}}', "no statistics/route-information/route-table/rt-family"),
    ('{"statistics": {"route-information": {"route-table": {"rt-family": [{"address-family": "Internet",'
     ' "rt-entry": [{"gateway": "link#1"}]}]}}}}', "rt-entry without a destination"),
    ('{"statistics": {"route-information": {"route-table": {"rt-family": ["Internet"]}}}}', "not an object"),
])
def test_routes_malformed(text, message):
    with pytest.raises(ValueError, match=message):
        parse_routes(text)


def test_default_route_interface_rejects_other_versions():
    with pytest.raises(ValueError, match="must be 4 or 6"):
        default_route_interface(sample("netstat_routes_default.json"), 5)


# --- jls --libxo json ----------------------------------------------------------------------------


def test_jls_verbose():
    jails = parse_jls(sample("jls_v.json"))
    assert jails == [
        Jail(2, "git7", "/usr/local/bastille/jails/git7/root", "git7", ["172.16.20.98"], []),
        Jail(105, "sto2", "/usr/local/bastille/jails/sto2/root", "sto2",
             ["172.16.20.112"], ["2001:470:e8af:20::532"]),
        Jail(116, "git6", "/usr/local/bastille/jails/git6/root", "git6",
             ["172.16.20.99"], ["2001:470:e8af:20::577"]),
    ]


def test_jls_verbose_with_several_addresses():
    (jail,) = parse_jls(sample("jls_v_two_addresses.json"))
    assert jail == Jail(83, "83", "/zroot/kleene_basejail", "", ["172.17.0.1", "172.17.0.2"], [])


def test_jls_default_format_has_no_name():
    jails = parse_jls(sample("jls_default.json"))
    assert [(j.jid, j.name, j.hostname, j.ipv4, j.ipv6) for j in jails] == [
        (2, "", "git7", ["172.16.20.98"], []),
        (105, "", "sto2", ["172.16.20.112"], []),
        (116, "", "git6", ["172.16.20.99"], []),
    ]
    assert jails[0].path == "/usr/local/bastille/jails/git7/root"
    # a VNET jail has no ip4.addr: the default format prints an empty "ipv4"
    vnet = '{"jail-information": {"jail": [{"jid":3,"ipv4":"","hostname":"v","path":"/j/v"}]}}'
    assert parse_jls(vnet)[0].ipv4 == []


def test_jls_zero_jails_and_named_parameters():
    assert parse_jls(sample("jls_empty.json")) == []
    assert parse_jls('{"__version": "2", "jail-information": {}}') == []
    # `jls --libxo json jid name host.hostname ip4.addr`: values as strings, keys named after the parameter
    named = ('{"__version": "2", "jail-information": {"jail": [{"jid":"8","name":"demo",'
             '"host.hostname":"demo.example","ip4.addr":["192.0.2.8"]}]}}')
    assert parse_jls(named) == [Jail(8, "demo", "", "demo.example", ["192.0.2.8"], [])]


@pytest.mark.parametrize("text,message", [
    ("jls: unknown parameter: foo", "not JSON"),
    ('{"__version": "2"}', "no jail-information"),
    ('{"jail-information": []}', "no jail-information"),
    ('{"jail-information": {"jail": ["web"]}}', "not an object"),
    ('{"jail-information": {"jail": [{"name": "web"}]}}', "without a numeric jid"),
    ('{"jail-information": {"jail": [{"jid": "web"}]}}', "without a numeric jid"),
])
def test_jls_malformed(text, message):
    with pytest.raises(ValueError, match=message):
        parse_jls(text)


# --- pfctl ---------------------------------------------------------------------------------------


def test_anchors():
    assert parse_anchors(sample("pfctl_anchors_v.txt")) == [
        "blacklistd", "blacklistd/22", "rdr", "rdr/jail01", "rdr/jail02"]
    assert parse_anchors("") == []
    assert parse_anchors("No ALTQ support in kernel\nALTQ related functions disabled\n  kleenenet/n1\n") == [
        "kleenenet/n1"]


def test_a_missing_parent_anchor_and_an_anchors_entries():
    # FreeBSD 15.0, pfctl -v -a kleenenet -s Anchors with nothing below kleenenet, as Runner reports it
    assert is_missing_anchor("pfctl -v -a kleenenet -s Anchors: pfctl: Anchor does not exist.")
    assert not is_missing_anchor("pfctl -v -a kleenenet -s Anchors: pfctl: /dev/pf: Permission denied")
    assert parse_entries("No ALTQ support in kernel\nALTQ related functions disabled\n", "-s nat") == []
    assert parse_entries("kn_000000000001\n", "-s Tables") == ["kn_000000000001"]


@pytest.mark.parametrize("text,message", [
    ("pfctl: /dev/pf: Permission denied\n", "is an error"),
    ("Anchor 'kleenenet' not found.\n", "not an anchor path"),
])
def test_anchors_malformed(text, message):
    with pytest.raises(ValueError, match=message):
        parse_anchors(text)


def test_anchor_references_in_rules_and_nat():
    assert parse_anchor_references(sample("pfctl_rules_anchors.txt")) == [
        ("anchor", "relayd/*"), ("anchor", "openvpn/*"), ("anchor", "ipsec/*")]
    # an older pfctl printed these wildcard anchors without their '*' (FreeBSD PR 279225)
    assert parse_anchor_references(sample("pfctl_nat_anchors.txt")) == [
        ("nat-anchor", "natearly/"), ("nat-anchor", "natrules/")]
    assert parse_anchor_references(sample("pfctl_rules_vv.txt")) == []  # -vv counters ignored


def test_anchor_references_skip_nested_blocks():
    # `pfctl -sn -a '*'` prints each anchor's contents; "bar" is relative to "foo"
    assert parse_anchor_references(sample("pfctl_nat_nested.txt")) == [("nat-anchor", "foo")]


def test_anchor_references_every_kind():
    text = (
        'nat-anchor "kleenenet/*" all\n'
        'rdr-anchor "kleenenet/*" all\n'
        'binat-anchor "kleenenet/*" all\n'
        'nat on em0 inet from <kleenenet> to any -> (em0) round-robin\n'
        '@7 anchor "kleenenet/*" all\n'  # `pfctl -v` numbers the rules
        'anchor on em0 all {\n'  # anonymous inline anchor: no path
        '  pass all flags S/SA keep state\n'
        '}\n'
    )
    assert parse_anchor_references(text) == [
        ("nat-anchor", "kleenenet/*"), ("rdr-anchor", "kleenenet/*"),
        ("binat-anchor", "kleenenet/*"), ("anchor", "kleenenet/*")]


@pytest.mark.parametrize("text,message", [
    ('anchor "kleenenet/* all\n', "unterminated anchor name"),
    ('anchor "foo" all {\n  pass all\n', "missing '}'"),
    ("}\n", "without an open anchor block"),
    ("pfctl: DIOCGETRULES: Invalid argument\n", "is an error"),
])
def test_anchor_references_malformed(text, message):
    with pytest.raises(ValueError, match=message):
        parse_anchor_references(text)


def test_pf_enabled():
    assert pf_enabled(sample("pfctl_info_enabled_v.txt")) is True
    assert pf_enabled(sample("pfctl_info_disabled.txt")) is False
    # a pf that was enabled and then disabled says for how long
    assert pf_enabled("Status: Disabled for 0 days 00:03:10           Debug: Urgent\n") is False
    assert pf_enabled("No ALTQ support in kernel\nStatus: Enabled for 0 days 00:00:01\n") is True


@pytest.mark.parametrize("text,message", [
    ("", "no 'Status:' line"),
    ("State Table                          Total             Rate\n", "no 'Status:' line"),
    ("Status: Unknown\n", "unknown status"),
    ("pfctl: /dev/pf: No such file or directory\n", "is an error"),
])
def test_pf_enabled_malformed(text, message):
    with pytest.raises(ValueError, match=message):
        pf_enabled(text)


def test_skipped_interfaces():
    assert skipped_interfaces(sample("pfctl_interfaces_v.txt")) == {"lo0"}
    assert skipped_interfaces(sample("pfctl_interfaces_vv.txt")) == {"lo0"}  # counters ignored
    # `set skip on lo` marks the group and every member
    assert skipped_interfaces("lo (skip)\nlo0 (skip)\nkleene0 (skip)\nem0\n") == {"lo", "lo0", "kleene0"}
    assert skipped_interfaces("") == set()


@pytest.mark.parametrize("text,message", [
    ("em0 (skip) extra\n", "is not 'NAME \\[\\(skip\\)\\]'"),
    ("em0 (sk1p)\n", "is not 'NAME"),
    ("pfctl: /dev/pf: Permission denied\n", "is an error"),
])
def test_skipped_interfaces_malformed(text, message):
    with pytest.raises(ValueError, match=message):
        skipped_interfaces(text)


# --- nd6 options, rule labels, table members ------------------------------------------------------


def test_ifconfig_nd6_options():
    ifs = parse_ifconfig(sample("ifconfig_inet6.txt"))
    assert ifs["re0"].nd6 == {"PERFORMNUD", "ACCEPT_RTADV", "AUTO_LINKLOCAL"}  # a SLAAC host
    assert ifs["lo0"].nd6 == {"PERFORMNUD", "AUTO_LINKLOCAL"}
    assert parse_ifconfig("x0: flags=0 metric 0 mtu 1500\n\tnd6 options=0\n")["x0"].nd6 == set()


def test_rule_labels():
    labels = parse_rule_labels(sample("pfctl_rules_anchors.txt"))
    assert labels[:3] == ["pass IPv6 loopback", "pass IPv6 loopback", "Block all IPv6"]
    assert "Default deny rule IPv6" in labels
    assert parse_rule_labels('block return quick from <kn_1> to (self) label "kleenenet:0a1b"\n') == ["kleenenet:0a1b"]
    assert parse_rule_labels("") == []


def test_table_show():
    assert parse_table_show(sample("pfctl_table_show.txt")) == ["10.2.3.1", "10.2.3.7", "fd00:2:3::1", "10.9.0.0/24"]
    assert parse_table_show("") == []
    with pytest.raises(ValueError, match="not an address"):
        parse_table_show("Table does not exist.\n")
    with pytest.raises(ValueError, match="is an error"):
        parse_table_show("pfctl: Table does not exist.\n")


# --- sockstat ------------------------------------------------------------------------------------

ip = ipaddress.ip_address


def test_sockstat_listening_and_connected_sockets():
    found = parse_sockstat(sample("sockstat_all.txt"))
    assert found[:3] == [Socket("tcp", ip("192.168.5.2"), 22), Socket("tcp", None, 22), Socket("tcp", None, 22)]
    assert Socket("udp", ip("192.168.5.2"), 853) in found and Socket("udp", None, 514) in found
    assert len(found) == 12  # the two UNIX sockets are not Internet sockets


def test_sockstat_4l():
    assert parse_sockstat(sample("sockstat_4l.txt")) == [Socket("tcp", ip("127.0.0.1"), 8080)] * 3 + [
        Socket("tcp", ip("127.0.0.1"), 5432)]


def test_sockstat_ipv6_forms_and_sockets_without_a_descriptor():
    assert parse_sockstat(sample("sockstat_v6_constructed.txt")) == [
        Socket("tcp", None, 80), Socket("tcp", ip("::1"), 631), Socket("udp", ip("fe80::1"), 123),
        Socket("udp", ip("2001:db8::2"), 123), Socket("udp", ip("10.2.3.1"), 5353),
        Socket("tcp", ip("192.0.2.2"), 8080)]


def test_sockstat_without_header_or_sockets():
    assert parse_sockstat("") == []
    assert parse_sockstat("USER     COMMAND    PID   FD PROTO  LOCAL ADDRESS         FOREIGN ADDRESS\n") == []
    assert parse_sockstat("root     nc         5  3  toe4   *:9000                *:*\n") == [Socket("tcp", None, 9000)]


@pytest.mark.parametrize("text, message", [
    ("root     nc         5  3  tcp4   10.0.0.1              *:*\n", "'10.0.0.1' is not ADDRESS:PORT"),
    ("root     nc         5  3  tcp4   10.0.0.1:http         *:*\n", "is not ADDRESS:PORT"),
    ("root     nc         5  3  tcp4   host.example:22       *:*\n", "has no IP address"),
    ("root     nc         5  3  udp6\n", "no local address"),
])
def test_sockstat_malformed(text, message):
    with pytest.raises(ValueError, match=message):
        parse_sockstat(text)


def test_ifconfig_tentative_and_duplicated_ipv6_addresses():
    text = ("em1: flags=8863<UP,BROADCAST,RUNNING,SIMPLEX,MULTICAST> metric 0 mtu 1500\n"
            "\tinet6 fd00:1::100 prefixlen 128 tentative\n"
            "\tinet6 fd00:1::101 prefixlen 128 duplicated\n"
            "\tinet6 fd00:1::10 prefixlen 64\n")
    em1 = parse_ifconfig(text)["em1"]
    assert em1.tentative == {ipaddress.ip_address("fd00:1::100")}
    assert em1.duplicated == {ipaddress.ip_address("fd00:1::101")}
    assert len(em1.inet6) == 3


# Recorded on FreeBSD 15.0-RELEASE (a VM driven through KLEENENET_FREEBSD_REMOTE; SOURCES.md)

def test_ifconfig_of_a_15_0_host_with_a_loopback_network():
    found = parsers.parse_ifconfig(sample("ifconfig_15_0_vm.txt"))
    assert [str(a) for a in parsers.addresses(found["vtnet0"])] == ["203.0.113.2/24", "2001:db8:113::2/64"]
    assert found["kleene0"].description == "kleenenet:pub" and "kleenenet" in found["kleene0"].groups
    assert "LOOPBACK" in found["kleene0"].flags


def test_routes_of_a_15_0_host():
    text = sample("netstat_routes_15_0.json")
    assert parsers.default_route_interface(text) == "vtnet0"
    assert parsers.default_route_interface(text, 6) == "vtnet0"


def test_anchors_of_a_15_0_host_list_emptied_ones():
    """kleenenet/v6 and its ports anchor were removed by `network rm`, and are still listed."""
    assert parsers.parse_anchors(sample("pfctl_anchors_v_15_0.txt")) == [
        "kleenenet/pub", "kleenenet/pub/ports", "kleenenet/pub/ports/ec73c3fedf57", "kleenenet/v6",
        "kleenenet/v6/ports"]


def test_sockstat_of_15_0_in_its_narrower_columns():
    found = [(str(s.address) if s.address else "*", s.port) for s in parsers.parse_sockstat(sample("sockstat_46l_15_0.txt"))]
    assert found == [("10.2.3.1", 5000), ("10.12.0.1", 5000), ("*", 7000)]
