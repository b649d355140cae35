"""The one place a platform is chosen. Everything that touches the host lives below here."""

from __future__ import annotations

import sys

from kleenenet.errors import InvalidInput

PLATFORMS = ("linux", "freebsd")


def native() -> str:
    return "freebsd" if sys.platform.startswith("freebsd") else "linux"


def get_platform(name: str | None = None):
    name = name or native()
    if name == "linux":
        from kleenenet.platform.linux import LinuxPlatform

        return LinuxPlatform()
    if name == "freebsd":
        from kleenenet.platform.freebsd import FreeBSDPlatform

        return FreeBSDPlatform()
    raise InvalidInput(f"invalid platform {name!r}: choose one of {', '.join(PLATFORMS)}")
