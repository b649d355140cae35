"""The one place a platform is chosen. Everything that touches the host lives below here."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from kleenenet.errors import InvalidInput

PLATFORMS = ("linux", "freebsd")


@dataclass
class Check:
    """One finding of `kleenenet doctor`."""

    ok: bool | None  # None: a warning, not a failure
    what: str
    advice: str = ""


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
