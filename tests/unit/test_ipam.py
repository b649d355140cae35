import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kleenenet import ipam
from kleenenet.errors import Conflict, InvalidInput

net = ipaddress.ip_network
addr = ipaddress.ip_address


@pytest.mark.parametrize("text,version,message", [
    ("10.2.3.1/24", 4, "host bits are set (did you mean 10.2.3.0/24?)"),
    ("10.2.3.0", 4, "give a prefix length"),
    ("10.2.3.0/31", 4, "too small"),
    ("fd00::/127", 6, "too small"),
    ("banana", 4, "invalid --subnet 'banana'"),
    ("fd00::/64", 4, "not an IPv4 subnet"),
    ("10.0.0.0/8", 6, "invalid --subnet6 '10.0.0.0/8': not an IPv6 subnet"),
])
def test_bad_subnets(text, version, message):
    with pytest.raises(InvalidInput) as e:
        ipam.parse_subnet(text, version)
    assert message in str(e.value)


def test_empty_subnet_means_none():
    assert ipam.parse_subnet("", 4) is None
    assert ipam.parse_subnet("10.2.3.0/24", 4) == net("10.2.3.0/24")


def allocate(subnet, used, after=None):
    return ipam.next_free(subnet, after, lambda a: a in used, lambda: len(used))


def test_first_address_and_gateway():
    subnet = net("10.2.3.0/24")
    assert allocate(subnet, set()) == addr("10.2.3.1")  # loopback: no gateway
    gw = ipam.resolve_gateway("<auto>", subnet, "--gw")
    assert gw == addr("10.2.3.1")
    assert allocate(subnet, {gw}) == addr("10.2.3.2")  # bridge: .1 is the gateway


def test_ring_order_skips_taken_and_wraps():
    subnet = net("10.2.3.0/29")  # hosts .1 - .6
    assert allocate(subnet, {addr("10.2.3.4")}, after=addr("10.2.3.3")) == addr("10.2.3.5")
    assert allocate(subnet, {addr("10.2.3.1")}, after=addr("10.2.3.6")) == addr("10.2.3.2")  # wraps, skips .1
    assert allocate(subnet, set(), after=addr("10.9.9.9")) == addr("10.2.3.1")  # cursor from elsewhere


def test_gateway_rules():
    subnet = net("10.2.3.0/24")
    assert ipam.resolve_gateway("", subnet, "--gw") is None
    assert ipam.resolve_gateway("10.2.3.254", subnet, "--gw") == addr("10.2.3.254")
    for bad, message in (("10.2.4.1", "not in subnet"), ("10.2.3.255", "broadcast"),
                         ("10.2.3.0", "network address"), ("x", "not an IP address")):
        with pytest.raises(InvalidInput, match=message):
            ipam.resolve_gateway(bad, subnet, "--gw")
    assert ipam.resolve_gateway("<auto>", None, "--gw6") is None
    with pytest.raises(InvalidInput, match="no subnet of that family"):
        ipam.resolve_gateway("fd00::1", None, "--gw6")


def test_exhaustion_is_a_clear_error():
    subnet = net("10.2.3.0/30")
    used = {addr("10.2.3.1"), addr("10.2.3.2")}
    with pytest.raises(Conflict, match="subnet 10.2.3.0/30 is exhausted: all 2 host addresses are in use"):
        allocate(subnet, used)


def test_ipv6_skips_only_the_subnet_router_anycast():
    subnet = net("fd00::/126")
    got = []
    for _ in range(3):
        got.append(allocate(subnet, set(got), after=got[-1] if got else None))
    assert got == [addr("fd00::1"), addr("fd00::2"), addr("fd00::3")]
    with pytest.raises(Conflict):
        allocate(subnet, set(got))


def test_static_addresses():
    subnet = net("10.2.3.0/24")
    assert ipam.claim("10.2.3.9", subnet, lambda a: False, "--ip") == addr("10.2.3.9")
    with pytest.raises(Conflict, match="10.2.3.9 is already in use"):
        ipam.claim("10.2.3.9", subnet, lambda a: a == addr("10.2.3.9"), "--ip")
    with pytest.raises(InvalidInput, match="not in subnet"):
        ipam.claim("fd00::1", subnet, lambda a: False, "--ip")


def test_overlap_names_the_culprit():
    existing = [("network 'a'", net("10.2.0.0/16")), ("route fd00::/8 via eth0", net("fd00::/8"))]
    assert ipam.find_overlap(net("10.2.3.0/24"), existing) == "network 'a' (10.2.0.0/16)"
    assert ipam.find_overlap(net("10.3.0.0/24"), existing) is None
    assert ipam.find_overlap(net("fd00:1::/64"), existing) == "route fd00::/8 via eth0 (fd00::/8)"


@settings(max_examples=300, deadline=None)
@given(prefix=st.integers(min_value=24, max_value=30), base=st.integers(min_value=0, max_value=2**32 - 1),
       data=st.data())
def test_allocation_properties_ipv4(prefix, base, data):
    subnet = ipaddress.ip_network((base, prefix), strict=False)
    hosts = list(subnet.hosts())
    used = set(data.draw(st.lists(st.sampled_from(hosts), max_size=len(hosts) - 1)))
    after = data.draw(st.one_of(st.none(), st.sampled_from(hosts)))
    got = allocate(subnet, used, after)
    assert got in subnet and got not in used
    assert got not in (subnet.network_address, subnet.broadcast_address)
    # the first free one after the cursor, in ring order
    ring = hosts[hosts.index(after) + 1:] + hosts[:hosts.index(after) + 1] if after else hosts
    assert got == next(a for a in ring if a not in used)


@settings(max_examples=200, deadline=None)
@given(prefix=st.integers(min_value=64, max_value=126), base=st.integers(min_value=0, max_value=2**128 - 1),
       n=st.integers(min_value=0, max_value=50))
def test_allocation_properties_ipv6(prefix, base, n):
    subnet = ipaddress.ip_network((base, prefix), strict=False)
    used = set()
    for _ in range(min(n, subnet.num_addresses - 1)):
        got = allocate(subnet, used)
        assert got in subnet and got != subnet.network_address and got not in used
        used.add(got)


@pytest.mark.parametrize("text,message", [
    ("10.2.3.128", "not a range inside subnet 10.2.3.0/24"),
    ("10.2.4.0/25", "not a range inside subnet 10.2.3.0/24"),
    ("10.2.0.0/16", "not a range inside subnet 10.2.3.0/24"),
    ("10.2.3.129/25", "invalid --ip-range '10.2.3.129/25': expected a CIDR inside 10.2.3.0/24"),
    ("fd00::/64", "not a range inside subnet 10.2.3.0/24"),
    ("10.2.3.255/32", "holds no host address of 10.2.3.0/24"),  # the broadcast address
])
def test_bad_ip_ranges(text, message):
    with pytest.raises(InvalidInput) as e:
        ipam.parse_range(text, net("10.2.3.0/24"), "--ip-range")
    assert message in str(e.value)


def test_ip_range_needs_a_subnet_and_may_be_the_whole_of_it():
    with pytest.raises(InvalidInput, match="no subnet of that family"):
        ipam.parse_range("10.2.3.0/25", None, "--ip-range")
    assert ipam.parse_range("", net("10.2.3.0/24"), "--ip-range") is None
    assert ipam.parse_range("10.2.3.0/24", net("10.2.3.0/24"), "--ip-range") == net("10.2.3.0/24")


@settings(max_examples=300, deadline=None)
@given(pool_prefix=st.integers(min_value=24, max_value=32), data=st.data())
def test_addresses_come_from_the_pool_only(pool_prefix, data):
    subnet = net("192.168.50.0/24")
    pools = [p for p in subnet.subnets(new_prefix=pool_prefix) if p.num_addresses > 1 or p[0] in subnet.hosts()]
    pool = data.draw(st.sampled_from(pools))  # parse_range refuses one without host addresses
    hosts = [a for a in pool if a in list(subnet.hosts())]
    used = set(data.draw(st.lists(st.sampled_from(list(subnet.hosts())), max_size=40)))
    after = data.draw(st.one_of(st.none(), st.sampled_from(list(subnet.hosts()))))
    free = [a for a in hosts if a not in used]
    count = sum(1 for a in used if a in pool)
    if not free:
        with pytest.raises(Conflict, match=f"range {pool} is exhausted"):
            ipam.next_free(subnet, after, lambda a: a in used, lambda: count, pool)
        return
    got = ipam.next_free(subnet, after, lambda a: a in used, lambda: count, pool)
    assert got in free
    ring = hosts[hosts.index(after) + 1:] + hosts[:hosts.index(after) + 1] if after in hosts else hosts
    assert got == next(a for a in ring if a not in used)
