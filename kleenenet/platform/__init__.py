"""The one place a platform is chosen. Everything that touches the host lives below here."""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass

from kleenenet.errors import InvalidInput

PLATFORMS = ("linux", "freebsd")


@dataclass
class Check:
    """One finding of `kleenenet doctor`."""

    ok: bool | None  # None: a warning, not a failure
    what: str
    advice: str = ""


def stable_mac(*parts: str) -> str:
    """A locally administered unicast MAC derived from ids, so it survives re-creation."""
    digest = hashlib.sha256("/".join(parts).encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))


def digest(text: str) -> str:
    """A short digest of rendered rules: loaded with them (an nft rule comment, a pf label), it
    tells reconcile whether what the host has is what the state renders."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def first_free_name(prefix: str, present: Iterable[str]) -> str:
    """prefix0, prefix1, ...: the first one not in `present`."""
    present = set(present)
    n = 0
    while f"{prefix}{n}" in present:
        n += 1
    return f"{prefix}{n}"


def native() -> str:
    """This machine's platform; FreeBSD also where KLEENENET_FREEBSD_REMOTE names a FreeBSD host
    to manage from here (platform/freebsd/remote.py)."""
    if sys.platform.startswith("freebsd") or os.environ.get("KLEENENET_FREEBSD_REMOTE"):
        return "freebsd"
    return "linux"


def get_platform(name: str | None = None):
    name = name or native()
    if name == "linux":
        from kleenenet.platform.linux import LinuxPlatform

        return LinuxPlatform()
    if name == "freebsd":
        from kleenenet.platform.freebsd import FreeBSDPlatform

        return FreeBSDPlatform()
    raise InvalidInput(f"invalid platform {name!r}: choose one of {', '.join(PLATFORMS)}")
