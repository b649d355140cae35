"""The words of `run`: -l DRIVER[:OPTS] and the -n words host, none and private."""

import pytest

from kleenenet.errors import InvalidInput
from kleenenet.vocabulary import AUTO, command_line_networks, parse_driver, parse_publish


@pytest.mark.parametrize("text,expected", [
    ("none", ("disabled", [])),
    ("disabled", ("disabled", [])),
    ("pasta", ("pasta", [])),
    ("pasta:-t,8080", ("pasta", ["-t", "8080"])),
    ("pasta:--map-gw,-T,7890", ("pasta", ["--map-gw", "-T", "7890"])),
    ("slirp4netns", ("slirp4netns", [])),
    ("vnet", ("vnet", [])),
])
def test_drivers(text, expected):
    assert parse_driver(text) == expected


@pytest.mark.parametrize("text,message", [
    ("bogus", "invalid network driver 'bogus': choose one of none, ipnet"),
    ("vnet:x", "invalid network driver 'vnet:x': only pasta takes options"),
    ("slirp4netns:--mtu=1500", "only pasta takes options"),
    ("pasta:", "invalid network driver 'pasta:': give pasta's options comma-separated"),
    ("pasta:-t,,8080", "give pasta's options comma-separated"),
])
def test_bad_drivers(text, message):
    with pytest.raises(InvalidInput) as e:
        parse_driver(text)
    assert message in str(e.value)


def net(name, ip=AUTO, ip6=AUTO):
    return (name, ip, ip6)


@pytest.mark.parametrize("driver,networks,expected", [
    (None, (), ("vnet", (net("private"),))),  # a plain run: private, not the host's namespace
    (None, (net("private"),), ("vnet", (net("private"),))),
    (None, (net("lan"), net("private")), ("vnet", (net("lan"), net("private")))),
    ("ipnet", (net("private"),), ("ipnet", (net("private"),))),
    (None, (net("host"),), ("host", ())),
    ("host", (net("host"),), ("host", ())),
    (None, (net("none"),), ("disabled", ())),
    ("disabled", (net("none"),), ("disabled", ())),
    (None, (net("testnet"),), (None, (net("testnet"),))),  # Kleene's rule decides: ipnet
    ("host", (), ("host", ())),
    ("pasta", (), ("pasta", ())),
])
def test_network_words(driver, networks, expected):
    assert command_line_networks(driver, networks) == expected


@pytest.mark.parametrize("driver,networks,message", [
    (None, (net("host"), net("lan")), "-n host takes no other network"),
    ("vnet", (net("none"),), "-n none and -l vnet disagree"),
    (None, (net("host", "10.0.0.5"),), "--ip and --ip6 do not apply to -n host"),
])
def test_bad_network_words(driver, networks, message):
    with pytest.raises(InvalidInput) as e:
        command_line_networks(driver, networks)
    assert message in str(e.value)


def test_without_root_a_plain_run_is_user_mode():
    assert command_line_networks(None, (), user_mode=True) == ("pasta", ())
    assert command_line_networks(None, (net("private"),), user_mode=True) == ("vnet", (net("private"),))
    assert command_line_networks("disabled", (), user_mode=True) == ("disabled", ())


@pytest.mark.parametrize("spec,expected", [
    ("80", ([], "80", "80", "tcp")),
    ("8080:80/udp", ([], "8080", "80", "udp")),
    ("eth0:8000-8009:9000-9009", (["eth0"], "8000-8009", "9000-9009", "tcp")),
])
def test_published_ports(spec, expected):
    p = parse_publish(spec)
    assert (p["interfaces"], p["host_port"], p["container_port"], p["protocol"]) == expected


@pytest.mark.parametrize("spec,message", [
    ("٨٠", "invalid port '٨٠'"),  # digits, but not ASCII ones: int() would read 80
    ("8080:٨٠", "invalid port '٨٠'"),
    ("80\n", "invalid port '80\\n'"),
    ("+80", "invalid port '+80'"),
    ("0", "invalid port '0'"),
    ("65536", "invalid port '65536'"),
    ("9000-8999", "invalid port '9000-8999'"),
    ("8000-8001:80", "the host and container ranges differ in length"),
    ("80/sctp", "invalid protocol 'sctp'"),
])
def test_bad_published_ports(spec, message):
    with pytest.raises(InvalidInput) as e:
        parse_publish(spec)
    assert message in str(e.value)
