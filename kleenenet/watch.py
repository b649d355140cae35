"""The process `kleenenet run -d` leaves behind for a detached container, as podman leaves conmon:
it waits for the container's command to exit, then does what the service does when a command
exits (the container leaves its networks, its user-mode helper ends, its peers' hosts files drop
it, a --rm container is removed).

    python -m kleenenet.watch STATE_DIR PLATFORM CONTAINER_ID PID START

It waits with a pidfd (Linux 5.3), which works for a process that is not its child, and imports
the rest of kleenenet only once the command has exited: an idle watcher is a bare interpreter.
"""

from __future__ import annotations

import os
import select
import sys


def _start_time(pid: int) -> int | None:
    """The start time of process `pid` (clock ticks since boot), None when there is none. (As
    platform/linux/namespaces.process_stat reads it; importing that package would load pydantic
    and pyroute2 into every idle watcher.)"""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2:].split()[19])


def wait_for_exit(pid: int, start: int) -> None:
    """Return once process `pid`, started at `start`, has exited."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        if _start_time(pid) == start:  # the pidfd is that process's, not a later one's
            select.select([pidfd], [], [])  # readable once it has exited
    finally:
        os.close(pidfd)


def main(state_dir: str, platform: str, container_id: str, pid: str, start: str) -> None:
    wait_for_exit(int(pid), int(start))
    from kleenenet.platform import get_platform
    from kleenenet.service import Service
    from kleenenet.store import Store

    Service(Store(state_dir), get_platform(platform), out=lambda _: None).exited(container_id, int(pid))


if __name__ == "__main__":
    main(*sys.argv[1:])
