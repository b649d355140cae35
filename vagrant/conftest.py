"""The jail suite's `kn` fixture (tests/jails/conftest.py) for vagrant/test_custom_network.py."""

from tests.jails.conftest import kn, remote_host  # noqa: F401 (fixtures, found here by pytest)
