"""ZFS images: a container made from an image whose root is a ZFS snapshot gets a clone of that
snapshot as its root directory (the jail's path).

Names: the clone of container ID is POOL/kleenenet/containers/ID, in the pool of the image's
snapshot (a clone is made in its origin's pool: zfs-clone(8)), with mountpoint
/POOL/kleenenet/containers/ID. That is where ZFS would mount it under a pool mounted at /POOL
(its default), but set explicitly, so the jail's path does not depend on the pool's and its
parents' mountpoints. The parents POOL/kleenenet and POOL/kleenenet/containers are created when
missing, with canmount=off: they only hold the clones and are never mounted.

Everything is done through py-libzfs (the devel/py-libzfs port; python module `libzfs`, from
github.com/truenas/py-libzfs), imported only on FreeBSD and only when a ZFS image is used. Plans
print the zfs(8) command each step amounts to; the pool's history (`zpool history`) records the
steps with the prefix `kleenenet:`.

The libzfs calls used (libzfs.pyx): ZFS(history_prefix=...), ZFS.get(pool) -> ZFSPool,
ZFS.get_dataset(name), ZFS.get_snapshot(name) (both raise ZFSException(Error.NOENT) when there is
none), ZFSPool.create(name, props), ZFSSnapshot.clone(name, props), ZFSDataset.mount(),
.umount(), .delete() and .mountpoint (None unless mounted). Tests use a fake of exactly these
(tests/freebsd/fakezfs.py).
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Callable

from kleenenet.errors import HostError, InvalidInput, KleenenetError
from kleenenet.plan import Plan

PARENT = "kleenenet/containers"  # under the pool: POOL/kleenenet/containers/<container id>
HISTORY_PREFIX = "kleenenet:"
# zfs(8) "Naming" (zfsconcepts(7)): components of alphanumerics and _ - : . (kleenenet leaves out
# the space ZFS also allows); a pool name starts with a letter (zpool(8)). At most 255 characters
# (ZFS_MAX_DATASET_NAME_LEN includes the terminating NUL).
_COMPONENT = r"[A-Za-z0-9_.:-]+"
SNAPSHOT_RE = re.compile(rf"[A-Za-z][A-Za-z0-9_.:-]*(?:/{_COMPONENT})+@{_COMPONENT}")
MAX_NAME = 255


def py_libzfs_package() -> str:
    """The package of the devel/py-libzfs port for this Python (pkg names flavours py311-...)."""
    return f"py{sys.version_info.major}{sys.version_info.minor}-libzfs"


def import_libzfs():
    """py-libzfs, imported when it is needed (native FreeBSD only)."""
    try:
        import libzfs
    except ImportError:
        raise HostError(f"ZFS images need py-libzfs: pkg install {py_libzfs_package()} "
                        "(the devel/py-libzfs port)") from None
    return libzfs


def check_snapshot_name(snapshot: str) -> str:
    if (not isinstance(snapshot, str) or len(snapshot) > MAX_NAME or not SNAPSHOT_RE.fullmatch(snapshot)
            or any(part in (".", "..") for part in re.split("[/@]", snapshot))):
        raise InvalidInput(f"invalid image snapshot {snapshot!r}: use POOL/DATASET@SNAPSHOT, "
                           "e.g. zroot/images/base@1")
    return snapshot


def pool_of(name: str) -> str:
    return name.split("/")[0].split("@")[0]


def clone_of(container_id: str, snapshot: str) -> dict[str, str]:
    """The dataset and mountpoint of a container's clone (see the module's docstring)."""
    dataset = f"{pool_of(snapshot)}/{PARENT}/{container_id}"
    return {"dataset": dataset, "root": "/" + dataset}


def _command(*argv: str) -> str:
    """The zfs(8) command a step amounts to, as plans print it."""
    return shlex.join(["zfs", *argv])


class ZFS:
    """What kleenenet asks of ZFS, on a libzfs module that `load()` returns (py-libzfs, the
    preview's stand-in, or a test's fake)."""

    def __init__(self, load: Callable[[], object]):
        self._load = load
        self._lib = None

    @property
    def lib(self):
        if self._lib is None:
            self._lib = self._load()
        return self._lib

    def _handle(self):
        return self.lib.ZFS(history_prefix=HISTORY_PREFIX)

    def _call(self, what: str, fn):
        """fn(handle); a libzfs error becomes a HostError that names what was being done."""
        try:
            return fn(self._handle())
        except self.lib.ZFSException as e:
            raise HostError(f"{what}: {e}") from None

    def _lookup(self, kind: str, name: str):
        """The snapshot or dataset `name`, or None when there is none."""
        def get(z):
            try:
                return z.get_snapshot(name) if kind == "snapshot" else z.get_dataset(name)
            except self.lib.ZFSException as e:
                if e.code == self.lib.Error.NOENT:
                    return None
                raise
        return self._call(f"cannot open {kind} {name}", get)

    # queries

    def snapshot_exists(self, name: str) -> bool:
        return self._lookup("snapshot", name) is not None

    def dataset_exists(self, name: str) -> bool:
        return self._lookup("dataset", name) is not None

    # changes

    def create(self, name: str, props: dict[str, str]) -> None:
        self._call(_command("create", *_options(props), name),
                   lambda z: z.get(pool_of(name)).create(name, dict(props)))

    def clone(self, snapshot: str, name: str, props: dict[str, str]) -> None:
        self._call(_command("clone", "-u", *_options(props), snapshot, name),
                   lambda z: z.get_snapshot(snapshot).clone(name, dict(props)))

    def mount(self, name: str) -> None:
        self._call(_command("mount", name), lambda z: z.get_dataset(name).mount())

    def unmount(self, name: str, force: bool = False) -> None:
        self._call(_command("unmount", *(["-f"] if force else []), name),
                   lambda z: z.get_dataset(name).umount(force=force))

    def destroy(self, name: str) -> None:
        self._call(_command("destroy", name), lambda z: z.get_dataset(name).delete())

    # plans

    def plan_create_root(self, dataset: str, root: str, snapshot: str) -> Plan:
        """Clone `snapshot` as `dataset` mounted at `root`; the parents are created first when
        missing. Undone by destroying what was created."""
        plan = Plan("zfs-root")
        parent = dataset.rpartition("/")[0]
        missing = []
        while parent and "/" in parent and not self.dataset_exists(parent):  # (the pool always is)
            missing.insert(0, parent)
            parent = parent.rpartition("/")[0]
        for name in missing:
            props = {"canmount": "off"}
            plan.add(_command("create", *_options(props), name),
                     lambda name=name, props=props: self.create(name, props),
                     lambda name=name: self.destroy(name))
        props = {"mountpoint": root}
        plan.add(_command("clone", "-u", *_options(props), snapshot, dataset),
                 lambda: self.clone(snapshot, dataset, props), lambda: self.destroy(dataset))
        plan.add(_command("mount", dataset), lambda: self.mount(dataset), lambda: self.unmount(dataset, force=True))
        return plan

    def plan_mount(self, dataset: str) -> Plan:
        """Mount the clone if it is there unmounted (a host whose zfs_enable is off mounts
        nothing at boot). One that is not there yet is being made, mounted, by this plan."""
        plan = Plan("zfs-mount")
        ds = self._lookup("dataset", dataset)
        if ds is not None and ds.mountpoint is None:
            plan.add(_command("mount", dataset), lambda: self.mount(dataset),
                     lambda: self.unmount(dataset, force=True))
        return plan

    def plan_remove_root(self, dataset: str) -> Plan:
        """Unmount and destroy the clone; nothing when it is gone already. The container is
        stopped and its jail removed by then; unmounting is forced (here and in rollbacks)
        because a removed jail can linger, dying, and keep its root busy until its last
        references go (`jls -d`)."""
        plan = Plan("zfs-remove")
        ds = self._lookup("dataset", dataset)
        if ds is None:
            return plan
        if ds.mountpoint is not None:
            plan.add(_command("unmount", "-f", dataset), lambda: self.unmount(dataset, force=True),
                     lambda: self.mount(dataset))
        plan.add(_command("destroy", dataset), lambda: self.destroy(dataset))
        return plan


def _options(props: dict[str, str]) -> list[str]:
    return [arg for key, value in props.items() for arg in ("-o", f"{key}={value}")]


class PreviewLibZFS:
    """A stand-in for py-libzfs where there is no FreeBSD (`--platform freebsd --dry-run`): as a
    host with every snapshot asked about and no kleenenet dataset; it changes nothing."""

    class ZFSException(RuntimeError):
        def __init__(self, code, message):
            super().__init__(message)
            self.code = code

    class Error:
        NOENT = 2009  # EZFS_NOENT (libzfs.h)

    def ZFS(self, **options):
        return self

    def get_snapshot(self, name: str):
        return _PreviewObject()

    def get_dataset(self, name: str):
        if "/" not in name:  # a pool's root dataset
            return _PreviewObject()
        raise self.ZFSException(self.Error.NOENT, f"Dataset {name} not found")

    def get(self, pool: str):
        return _PreviewObject()


class _PreviewObject:
    mountpoint = None

    def __getattr__(self, name):
        def refuse(*args, **kwargs):
            raise KleenenetError("this is not FreeBSD: --platform freebsd only shows plans here (add --dry-run)")
        return refuse
