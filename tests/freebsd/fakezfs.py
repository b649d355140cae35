"""A fake of py-libzfs (the python module `libzfs`, github.com/truenas/py-libzfs libzfs.pyx) for
the simulated FreeBSD host: the calls kleenenet makes, on a model of one host's datasets and
snapshots kept in the host's state (so snapshots and rollback checks of the host cover it).

Modelled as libzfs and the kernel behave (OpenZFS lib/libzfs/libzfs_dataset.c, libzfs_mount.c,
module/zfs/dsl_destroy.c; zfs-create(8), zfs-clone(8), zfs-destroy(8), zfs-mount(8)):
- get_dataset/get_snapshot/get raise ZFSException(Error.NOENT) for what does not exist;
- create and clone need the parent dataset ("parent does not exist", check_parents()) and a free
  name; a clone is made in its origin's pool ("source and target pools differ") and, through
  libzfs, is not mounted (zfs clone mounts it afterwards unless -u);
- mount does nothing for canmount=off or mountpoint=none/legacy (zfs_is_mountable()) and creates
  the mountpoint directory; umount unmounts the dataset and its descendants (zfs_unmountall());
  it is busy while a jail has its root there (the jail holds its root vnode: pr_root in
  sys/kern/kern_jail.c) unless forced (MS_FORCE);
- a dataset cannot be destroyed while mounted (the mounted file system owns it: EBUSY), while it
  has children or snapshots (dsl_destroy_head_check_impl()); a snapshot cannot be destroyed
  while a clone of it exists (ZFSSnapshot.delete in libzfs.pyx: "snapshot has dependent clones").
Every change goes through the host's `changing(text)` with the zfs(8) command it amounts to, so
`fail_at`, `fail_on` and `crash_at` reach it as they reach commands.
"""

from __future__ import annotations

import enum
import shlex


class Error(enum.IntEnum):
    """The zfs_error_t values used (lib/libzfs.h: EZFS_NOMEM = 2000, then one by one)."""

    BUSY = 2007
    EXISTS = 2008
    NOENT = 2009
    CROSSTARGET = 2025


class ZFSException(RuntimeError):
    """libzfs.pyx: the message is libzfs's action and description, "cannot create 'x': ..."."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def _parent(name: str) -> str:
    return name.rpartition("/")[0]


class FakeLibZFS:
    """The module: FakeLibZFS(host).ZFS() is a handle; ZFSException and Error as libzfs has them."""

    ZFSException = ZFSException
    Error = Error

    def __init__(self, host):
        self.host = host

    @staticmethod
    def blank_pool() -> dict:
        """Pool zroot, mounted at /zroot, with an image's dataset and its snapshot."""
        return {"datasets": {"zroot": {"props": {}, "origin": None, "mounted": True},
                             "zroot/images": {"props": {}, "origin": None, "mounted": True},
                             "zroot/images/base": {"props": {}, "origin": None, "mounted": True}},
                "snapshots": ["zroot/images/base@1"]}

    @property
    def state(self) -> dict:
        return self.host.state["zfs"]

    def ZFS(self, history=True, history_prefix="py-libzfs:", mnttab_cache=True):
        return _Handle(self)

    # the model

    def add_snapshot(self, name: str) -> None:
        """What `zfs snapshot NAME` would leave (its dataset must exist)."""
        assert name.partition("@")[0] in self.state["datasets"], name
        self.state["snapshots"].append(name)

    def mountpoint(self, name: str) -> str | None:
        """The mountpoint property: set, or inherited with the name's last component appended;
        a pool's root dataset is at /POOL by default."""
        ds = self.state["datasets"][name]
        if "mountpoint" in ds["props"]:
            value = ds["props"]["mountpoint"]
            return None if value in ("none", "legacy") else value
        if "/" not in name:
            return "/" + name
        parent = self.mountpoint(_parent(name))
        return None if parent is None else parent.rstrip("/") + "/" + name.rpartition("/")[2]

    def mounted_paths(self) -> set[str]:
        return {self.mountpoint(n) for n, ds in self.state["datasets"].items() if ds["mounted"]}

    def clones_of(self, snapshot: str) -> list[str]:
        return [n for n, ds in self.state["datasets"].items() if ds["origin"] == snapshot]

    def _new(self, name: str, props: dict, origin: str | None, action: str) -> None:
        datasets = self.state["datasets"]
        if name in datasets:
            raise ZFSException(Error.EXISTS, f"{action}: dataset already exists")
        if _parent(name) not in datasets:
            raise ZFSException(Error.NOENT, f"{action}: parent does not exist")
        datasets[name] = {"props": {k: str(v) for k, v in props.items()}, "origin": origin, "mounted": False}


def _command(*argv: str) -> str:
    return shlex.join(["zfs", *argv])


def _options(props: dict | None) -> list[str]:
    return [a for k, v in (props or {}).items() for a in ("-o", f"{k}={v}")]


class _Handle:
    """libzfs.ZFS: a libzfs_handle_t."""

    def __init__(self, lib: FakeLibZFS):
        self.lib = lib

    def get(self, name: str) -> _Pool:
        if name not in self.lib.state["datasets"]:
            raise ZFSException(Error.NOENT, f"Pool {name} not found")
        return _Pool(self.lib, name)

    def get_dataset(self, name: str) -> _Dataset:
        if name not in self.lib.state["datasets"]:  # (a snapshot's name is not a dataset's)
            raise ZFSException(Error.NOENT, f"Dataset {name} not found")
        return _Dataset(self.lib, name)

    def get_snapshot(self, name: str) -> _Snapshot:
        if name not in self.lib.state["snapshots"]:
            raise ZFSException(Error.NOENT, f"Snapshot {name} not found")
        return _Snapshot(self.lib, name)


class _Pool:
    def __init__(self, lib: FakeLibZFS, name: str):
        self.lib, self.name = lib, name

    def create(self, name: str, fsopts: dict, fstype=None, sparse_vol=False, create_ancestors=False):
        """ZFSPool.create: zfs_create(), which does not mount (zfs create(8) mounts afterwards)."""
        assert not create_ancestors, "kleenenet creates each parent itself"
        self.lib.host.changing(_command("create", *_options(fsopts), name))
        if name.split("/")[0] != self.name:
            raise ZFSException(Error.NOENT, f"cannot create '{name}': no such pool '{self.name}'")
        self.lib._new(name, fsopts, None, f"cannot create '{name}'")


class _Dataset:
    def __init__(self, lib: FakeLibZFS, name: str):
        self.lib, self.name = lib, name

    @property
    def _ds(self) -> dict:
        return self.lib.state["datasets"][self.name]

    @property
    def mountpoint(self) -> str | None:
        """ZFSDataset.mountpoint: where it is mounted (zfs_is_mounted()), None when it is not."""
        return self.lib.mountpoint(self.name) if self._ds["mounted"] else None

    def mount(self) -> None:
        self.lib.host.changing(_command("mount", self.name))
        path = self.lib.mountpoint(self.name)
        if self._ds["mounted"] or path is None or self._ds["props"].get("canmount") == "off":
            return
        self._ds["mounted"] = True  # zfs_mount_at() makes the directory when it is missing

    def umount(self, force=False) -> None:
        self.lib.host.changing(_command("unmount", *(["-f"] if force else []), self.name))
        datasets = self.lib.state["datasets"]
        inside = [n for n in datasets if n == self.name or n.startswith(self.name + "/")]
        for name in inside:
            path = self.lib.mountpoint(name)
            if datasets[name]["mounted"] and not force and self._jail_root_below(path):
                raise ZFSException(Error.BUSY, f"cannot unmount '{path}': pool or dataset is busy")
        for name in inside:
            datasets[name]["mounted"] = False

    def _jail_root_below(self, path: str) -> bool:
        for jail in self.lib.host.state["jails"].values():
            root = jail["params"].get("path", "/")
            if root == path or root.startswith(path.rstrip("/") + "/"):
                return True
        return False

    def delete(self, defer=False) -> None:
        self.lib.host.changing(_command("destroy", self.name))
        state = self.lib.state
        action = f"cannot destroy '{self.name}'"
        if self._ds["mounted"]:
            raise ZFSException(Error.BUSY, f"{action}: dataset is busy")
        if any(_parent(n) == self.name for n in state["datasets"]):
            raise ZFSException(Error.EXISTS, f"{action}: filesystem has children")
        if any(s.partition("@")[0] == self.name for s in state["snapshots"]):
            raise ZFSException(Error.BUSY, f"{action}: dataset is busy")
        del state["datasets"][self.name]


class _Snapshot:
    def __init__(self, lib: FakeLibZFS, name: str):
        self.lib, self.name = lib, name

    def clone(self, name: str, opts: dict | None = None) -> None:
        """ZFSSnapshot.clone: zfs_clone(), which does not mount."""
        self.lib.host.changing(_command("clone", "-u", *_options(opts), self.name, name))
        action = f"cannot create '{name}'"
        if name.split("/")[0] != self.name.split("/")[0]:
            raise ZFSException(Error.CROSSTARGET, f"{action}: source and target pools differ")
        self.lib._new(name, opts or {}, self.name, action)

    def delete(self, recursive=False, defer=False, recursive_children=False) -> None:
        self.lib.host.changing(_command("destroy", self.name))
        if self.lib.clones_of(self.name):
            raise ZFSException(1, f"Cannot destroy {self.name}: snapshot has dependent clones")
        self.lib.state["snapshots"].remove(self.name)
