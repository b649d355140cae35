"""kleenenet: container network manager for FreeBSD jails and Linux network namespaces."""

__version__ = "0.1.0"
