"""A store and a simulated FreeBSD host for the FreeBSD platform's tests."""

from __future__ import annotations

from pathlib import Path

from kleenenet.platform.freebsd import FreeBSDPlatform
from kleenenet.service import Service
from kleenenet.store import Store
from tests.freebsd.simhost import SimulatedFreeBSD


class Bench:
    """A store and a simulated FreeBSD host, with services that act on them or only plan."""

    def __init__(self, state_dir: Path, host: SimulatedFreeBSD | None = None):
        self.host = host or SimulatedFreeBSD()
        self.store = Store(state_dir)
        self.platform = FreeBSDPlatform(self.host)
        self.lines: list[str] = []

    def svc(self, dry_run: bool = False) -> Service:
        return Service(self.store, self.platform, dry_run=dry_run, out=self.lines.append)

    def plan(self, op) -> str:
        """What `--dry-run` prints for `op(service)`; asserts it changed nothing."""
        before, log = self.host.snapshot(), len(self.host.log)
        self.lines.clear()
        op(self.svc(dry_run=True))
        assert self.host.snapshot() == before and len(self.host.log) == log
        return "\n".join(self.lines) + "\n"
