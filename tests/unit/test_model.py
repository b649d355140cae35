import pytest

from kleenenet.errors import InvalidInput
from kleenenet.model import check_choice, check_ifname, check_name


@pytest.mark.parametrize("name", ["a", "testnet", "web-1", "db_2.prod", "A" * 64, "9lives"])
def test_valid_names(name):
    assert check_name("network", name) == name


@pytest.mark.parametrize("name", ["", "-a", ".a", "_a", "a;b", "a b", 'a"b', "a{b", "a/b", "a$b", "x" * 65,
                                  "é", "a\nb"])
def test_invalid_names_say_which_value(name):
    with pytest.raises(InvalidInput) as e:
        check_name("network", name)
    assert repr(name) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["kleene0", "em0", "br-lan", "a" * 15])
def test_valid_interface_names(name):
    assert check_ifname(name) == name


@pytest.mark.parametrize("name", ["", "a" * 16, "0eth", "a b", "a;b", 'a"'])
def test_invalid_interface_names(name):
    with pytest.raises(InvalidInput):
        check_ifname(name)


def test_choice_lists_what_is_valid():
    with pytest.raises(InvalidInput, match="invalid network type 'tunnel': choose one of loopback, bridge"):
        check_choice("network type", "tunnel", ("loopback", "bridge"))
