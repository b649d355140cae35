"""pasta's options as kleenenet builds them from `-l pasta[:OPTS]` and `-p`, and the options it
refuses (the helpers themselves run in tests/linux/test_usermode.py)."""

import pytest

from kleenenet.errors import InvalidInput
from kleenenet.model import Container, PublishedPort
from kleenenet.platform.linux.usermode import check, pasta_options


def pasta(options=(), ports=()) -> Container:
    return Container(id="c1", name="c", cmd=["true"], network_driver="pasta", created="now",
                     network_options=list(options), public_ports=[PublishedPort(**p) for p in ports])


@pytest.mark.parametrize("options, ports, expected", [
    ((), (), ["--config-net", "--no-map-gw", "-t", "none", "-u", "none", "-T", "none", "-U", "none"]),
    (("--map-gw",), (), ["--config-net", "-t", "none", "-u", "none", "-T", "none", "-U", "none"]),
    (("-t", "8080"), (), ["--config-net", "--no-map-gw", "-u", "none", "-T", "none", "-U", "none", "-t", "8080"]),
    (("-T", "7890"), (), ["--config-net", "--no-map-gw", "-t", "none", "-u", "none", "-U", "none", "-T", "7890"]),
    (("--tcp-ports=80",), (), ["--config-net", "--no-map-gw", "-u", "none", "-T", "none", "-U", "none",
                               "--tcp-ports=80"]),
    ((), ({"host_port": "8080", "container_port": "80"}, {"host_port": "53", "container_port": "53",
                                                          "protocol": "udp"}),
     ["--config-net", "--no-map-gw", "-t", "8080:80", "-u", "53", "-T", "none", "-U", "none"]),
    ((), ({"host_port": "9000-9001", "container_port": "8000-8001"},),
     ["--config-net", "--no-map-gw", "-t", "9000-9001:8000-8001", "-u", "none", "-T", "none", "-U", "none"]),
    # a user's -t beside -p: both forwarded, pasta takes several -t
    (("-t", "8081"), ({"host_port": "8080", "container_port": "80"},),
     ["--config-net", "--no-map-gw", "-t", "8080:80", "-u", "none", "-T", "none", "-U", "none", "-t", "8081"]),
])
def test_pasta_options(options, ports, expected):
    c = pasta(options, ports)
    check(c)
    assert pasta_options(c) == expected


@pytest.mark.parametrize("options, ports, message", [
    (("--config-net",), (), "invalid pasta option '--config-net': kleenenet sets it itself"),
    (("--no-map-gw",), (), "invalid pasta option '--no-map-gw': kleenenet sets it itself (give --map-gw"),
    (("--netns", "/run/x"), (), "invalid pasta option '--netns': kleenenet sets it itself"),
    (("-P", "/tmp/pid"), (), "invalid pasta option '-P': kleenenet sets it itself"),
    (("-t", "none"), ({"host_port": "8080", "container_port": "80"},),
     "invalid pasta option '-t none': the container publishes tcp ports (-p)"),
    (("--udp-ports=none",), ({"host_port": "53", "container_port": "53", "protocol": "udp"},),
     "invalid pasta option '--udp-ports=none': the container publishes udp ports (-p)"),
    ((), ({"interfaces": ["eth0"], "host_port": "80", "container_port": "80"},),
     "invalid published port interface 'eth0'"),
])
def test_refused_options(options, ports, message):
    with pytest.raises(InvalidInput, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        check(pasta(options, ports))


def test_a_protocol_not_published_may_be_turned_off_by_hand():
    c = pasta(("-u", "none"), ({"host_port": "8080", "container_port": "80"},))
    check(c)
    assert pasta_options(c).count("-u") == 1
