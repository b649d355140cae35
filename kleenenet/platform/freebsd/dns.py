"""FreeBSD: the host's resolver configuration, and a jail's resolver files.

FreeBSD has no mount namespaces: every mount is seen by the host and by every jail. So a jail
whose path is the host's root (`/`, the default image) keeps the host's /etc/hosts and
/etc/resolv.conf — covering them would cover the host's own. A jail with a root of its own (a
directory or ZFS image) gets the container's files (kleenenet/dns.py) nullfs-mounted over
<root>/etc/hosts and <root>/etc/resolv.conf, from FreeBSD 13.2 on (nullfs mounts a single file
over a file since then, review D37478, mount_nullfs(8); podman's ocijail gives jails their
resolv.conf and hosts the same way). Only over a regular file that is no symlink, under an
etc that is no symlink, and is not the host's own file: a root's symlink is followed on the
host, outside the root. Where a root lacks the file, or the release is older, the jail keeps
what its root has. The mounts are made before the jail is created and unmounted when it stops
(a ZFS clone cannot be unmounted under them); `reconcile` unmounts those of containers that are
not running.

What a root has is looked at when the start is planned: a ZFS clone that the same `kleenenet
run --image` makes is not there yet, so that first run keeps the image's own files (a created
container, as klee makes them, has its clone before it starts). A directory image shared with
running jails can be changed by one of them between the look and the mount (a symlink swapped in
would take the mount elsewhere on the host): jails that are not trusted get images of their own.
"""

from __future__ import annotations

import re

from kleenenet import dns
from kleenenet.dns import FILES, HostResolver
from kleenenet.model import Container
from kleenenet.plan import Plan
from kleenenet.platform.freebsd.host import command_text

# The servers behind a local resolver: local_unbound (resolvconf
# with local-unbound-setup) keeps them in its forward.conf while resolv.conf says 127.0.0.1.
UPSTREAM_RESOLV_CONF = "/var/unbound/forward.conf"
NULLFS_FILES_RELEASE = 1302000
# A source kleenenet mounts: <state>/containers/<container id>/<file>
OUR_SOURCE = re.compile(r".*/containers/([0-9a-f]{12})/(%s)" % "|".join(re.escape(f) for f in FILES))


def host_resolver(own: frozenset[str]) -> HostResolver:
    return dns.host_resolver(UPSTREAM_RESOLV_CONF, own)


def jail_root(c: Container) -> str:
    """The jail's path: the container's root, unless a `path=` jail parameter says otherwise."""
    return next((p[5:] for p in c.jail_param if p.startswith("path=")), c.root)


def _targets(c: Container) -> list[tuple[str, str]]:
    root = jail_root(c).rstrip("/")
    return [(name, f"{root}/etc/{name}") for name in FILES] if root else []


def mounts(runner) -> list[tuple[str, str, str]]:
    """(source, mount point, type) of every mount, from `mount -p` (fstab(5) lines, where a
    space in a path is written \\040)."""
    found = []
    for line in runner.run(["mount", "-p"]).splitlines():
        fields = line.split()
        if len(fields) >= 3:
            found.append(tuple(f.replace("\\040", " ") for f in fields[:3]))
    return found


def plan_mount(platform, c: Container, etc) -> Plan:
    """Mount the container's files over its root's, where it may (see the module's docstring)."""
    plan = Plan("resolver-files")
    targets = _targets(c)
    if etc is None or not targets or platform.release() < NULLFS_FILES_RELEASE:
        return plan
    root = jail_root(c).rstrip("/")
    if platform.runner.succeeds(["test", root, "-ef", "/"]):
        return plan  # the host's root under another name
    for name, target in targets:
        if platform.runner.succeeds(["test", "-f", target, "-a", "!", "-L", target, "-a", "!", "-L",
                                     f"{root}/etc", "-a", "!", target, "-ef", f"/etc/{name}"]):
            argv, undo = ["mount", "-t", "nullfs", str(etc / name), target], ["umount", target]

            def mount(argv=argv, source=etc / name):
                platform.runner.provide(source)  # (a remote host gets a copy at the same path)
                platform.runner.run(argv)
            plan.add(command_text(argv), mount, lambda undo=undo: platform.runner.run(undo))
    return plan


def plan_unmount(platform, c: Container) -> Plan:
    """Unmount the container's files from its root (when it stops)."""
    plan = Plan("resolver-files")
    if not _targets(c):
        return plan  # nothing is mounted for a jail on the host's root: no need to look
    targets = {target for _, target in _targets(c)}
    for source, target, kind in mounts(platform.runner):
        match = OUR_SOURCE.fullmatch(source)
        if kind == "nullfs" and target in targets and match and match[1] == c.id:
            _umount(platform, plan, target, "")
    return plan


def plan_unmount_leftovers(platform, running: list[Container]) -> Plan:
    """Unmount the files kleenenet mounted for containers that are not running (a crash, or a
    jail that died without kleenenet seeing it)."""
    plan = Plan("resolver-files")
    keep = {(c.id, target) for c in running for _, target in _targets(c)}
    for source, target, kind in mounts(platform.runner):
        match = OUR_SOURCE.fullmatch(source)
        if kind == "nullfs" and match and target.endswith(f"/etc/{match[2]}") and (match[1], target) not in keep:
            _umount(platform, plan, target, "leftover")
    return plan


def _umount(platform, plan: Plan, target: str, note: str) -> None:
    argv = ["umount", target]
    plan.add(command_text(argv) + (f"  # {note}" if note else ""), lambda: platform.runner.run(argv))
