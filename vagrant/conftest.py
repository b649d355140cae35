"""The jail suite's `kn` fixture (tests/jails/conftest.py) for vagrant/test_custom_network.py."""

from tests.jails.conftest import kn  # noqa: F401 (a fixture, found here by pytest)
