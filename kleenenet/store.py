"""State: one SQLite database in the state directory. The store is the truth for what should exist.

Every changing operation runs inside `Store.write()` (BEGIN IMMEDIATE): the write lock is held
while the host is changed, so concurrent kleenenet processes are serialised and a crash leaves the
store as it was before the operation (SQLite rolls the open transaction back); `reconcile` then
removes whatever the host kept.
"""

from __future__ import annotations

import ipaddress
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from kleenenet import ipam
from kleenenet.errors import Conflict, KleenenetError, NotFound
from kleenenet.model import AUTO, Container, Endpoint, Image, Network, new_id

DB_NAME = "kleenenet.db"
LOCK_TIMEOUT = 60  # seconds a change waits for another kleenenet's transaction

# Each entry migrates from schema version i to i+1; PRAGMA user_version holds the version.
MIGRATIONS = [
    """
    CREATE TABLE networks (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL,
        subnet TEXT NOT NULL,
        subnet6 TEXT NOT NULL,
        interface TEXT NOT NULL UNIQUE,
        gateway TEXT NOT NULL,
        gateway6 TEXT NOT NULL,
        nat TEXT NOT NULL,
        icc INTEGER NOT NULL,
        internal INTEGER NOT NULL,
        last_ip TEXT NOT NULL DEFAULT '',   -- the last addresses handed out automatically:
        last_ip6 TEXT NOT NULL DEFAULT ''   -- the next search starts after them
    );
    CREATE TABLE containers (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        cmd TEXT NOT NULL,
        network_driver TEXT NOT NULL,
        created TEXT NOT NULL,
        running INTEGER NOT NULL,
        pid INTEGER,
        pid_start INTEGER,
        env TEXT NOT NULL,
        user TEXT NOT NULL,
        jail_param TEXT NOT NULL
    );
    CREATE TABLE endpoints (
        id TEXT PRIMARY KEY,
        network_id TEXT NOT NULL REFERENCES networks(id),
        container_id TEXT NOT NULL REFERENCES containers(id),
        epair TEXT,
        ip_address TEXT NOT NULL,
        ip_address6 TEXT NOT NULL,
        UNIQUE (network_id, container_id)
    );
    CREATE UNIQUE INDEX endpoints_ip4 ON endpoints(network_id, ip_address) WHERE ip_address != '';
    CREATE UNIQUE INDEX endpoints_ip6 ON endpoints(network_id, ip_address6) WHERE ip_address6 != '';
    """,
    # a container's endpoints, looked up at every attach and stop, without a scan
    "CREATE INDEX endpoints_container ON endpoints(container_id)",
    # images, and what a container was made from; `FreeBSD` is the host's root, as in Kleene's
    # walkthrough
    """
    CREATE TABLE images (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        tag TEXT NOT NULL,
        root TEXT NOT NULL,      -- a directory, or '' for a ZFS image
        snapshot TEXT NOT NULL,  -- a ZFS snapshot (FreeBSD), or ''
        created TEXT NOT NULL,
        UNIQUE (name, tag)
    );
    INSERT INTO images VALUES (lower(hex(randomblob(6))), 'FreeBSD', 'latest', '/', '',
                               strftime('%Y-%m-%dT%H:%M:%S+00:00', 'now'));
    ALTER TABLE containers ADD COLUMN image_id TEXT NOT NULL DEFAULT '';
    ALTER TABLE containers ADD COLUMN root TEXT NOT NULL DEFAULT '/';
    ALTER TABLE containers ADD COLUMN dataset TEXT NOT NULL DEFAULT '';
    ALTER TABLE containers ADD COLUMN persist INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE containers ADD COLUMN restart_policy TEXT NOT NULL DEFAULT 'no';
    ALTER TABLE containers ADD COLUMN auto_remove INTEGER NOT NULL DEFAULT 0
    """,
    """
    ALTER TABLE networks ADD COLUMN mtu INTEGER NOT NULL DEFAULT 1500;
    ALTER TABLE networks ADD COLUMN nat6 INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE containers ADD COLUMN public_ports TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE containers ADD COLUMN dns TEXT NOT NULL DEFAULT '[]'
    """,
    """
    ALTER TABLE networks ADD COLUMN ip_range TEXT NOT NULL DEFAULT '';
    ALTER TABLE networks ADD COLUMN ip_range6 TEXT NOT NULL DEFAULT '';
    ALTER TABLE containers ADD COLUMN network_options TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE containers ADD COLUMN helper_pid INTEGER;
    ALTER TABLE containers ADD COLUMN helper_start INTEGER
    """,
]

_JSON_FIELDS = ("cmd", "env", "jail_param", "public_ports", "dns", "network_options")

# The daemon's workers (threads) queue here for the write lock, in order, rather than in SQLite's
# busy handler, which polls with growing sleeps; SQLite's lock still orders processes.
_WRITER = threading.Lock()


def default_state_dir() -> Path:
    env = os.environ.get("KLEENENET_STATE_DIR")
    if env:
        return Path(env)
    if os.geteuid() != 0:  # a user's own containers (rootless, user-mode networking)
        data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
        return Path(data) / "kleenenet"
    return Path("/var/db/kleenenet") if os.uname().sysname == "FreeBSD" else Path("/var/lib/kleenenet")


class Store:
    def __init__(self, state_dir: Path | str):
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.db = sqlite3.connect(self.state_dir / DB_NAME, timeout=LOCK_TIMEOUT, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self._depth = 0
        self._migrate()

    def close(self) -> None:
        self.db.close()

    def _migrate(self) -> None:
        if self.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS):
            return  # the common case takes no write lock
        with self.write():
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise KleenenetError(f"the state in {self.state_dir} has schema {version}, newer than "
                                     "this kleenenet knows: upgrade kleenenet")
            for i in range(version, len(MIGRATIONS)):
                for statement in MIGRATIONS[i].split(";"):
                    if statement.strip():
                        self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version={i + 1}")

    @contextmanager
    def write(self) -> Iterator[None]:
        """One write transaction (nested calls join the outer one)."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        busy = KleenenetError(f"the state in {self.state_dir} is busy for more than {LOCK_TIMEOUT} s: "
                              "another kleenenet holds it; try again")
        if not _WRITER.acquire(timeout=LOCK_TIMEOUT):
            raise busy
        try:
            try:
                self.db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:  # another process held the lock past the timeout
                raise busy from None
            self._depth = 1
            try:
                yield
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            else:
                self.db.execute("COMMIT")
            finally:
                self._depth = 0
        finally:
            _WRITER.release()

    # networks

    def networks(self) -> list[Network]:
        rows = self.db.execute("SELECT * FROM networks ORDER BY name").fetchall()
        return [Network(**dict(r)) for r in rows]

    def _find(self, table: str, ident: str, prefix: bool) -> sqlite3.Row | None:
        """By name, full id, or (with `prefix`) unique id prefix, as Kleene does."""
        row = self.db.execute(f"SELECT * FROM {table} WHERE name = ? OR id = ?", (ident, ident)).fetchone()
        if row is None and ident and prefix:
            rows = self.db.execute(
                f"SELECT * FROM {table} WHERE substr(id, 1, ?) = ?", (len(ident), ident)
            ).fetchall()
            row = rows[0] if len(rows) == 1 else None
        return row

    def find_network(self, ident: str, prefix: bool = True) -> Network | None:
        row = self._find("networks", ident, prefix)
        return Network(**dict(row)) if row else None

    def network(self, ident: str) -> Network:
        net = self.find_network(ident)
        if net is None:
            raise NotFound(f"network not found: {ident!r}")
        return net

    def _insert(self, table: str, row: dict, replace: bool = False) -> None:
        """A row from a model's fields (column names are the field names)."""
        self.db.execute(f"INSERT {'OR REPLACE ' if replace else ''}INTO {table} ({', '.join(row)}) "
                        f"VALUES ({', '.join('?' * len(row))})", tuple(row.values()))

    def add_network(self, net: Network) -> None:
        self._insert("networks", net.model_dump())

    def remove_network(self, network_id: str) -> None:
        self.db.execute("DELETE FROM networks WHERE id = ?", (network_id,))

    def interfaces(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT interface FROM networks")}

    # containers

    @staticmethod
    def _container(row: sqlite3.Row) -> Container:
        d = dict(row)
        for f in _JSON_FIELDS:
            d[f] = json.loads(d[f])
        return Container(**d)

    def containers(self) -> list[Container]:
        rows = self.db.execute("SELECT * FROM containers ORDER BY created, name").fetchall()
        return [self._container(r) for r in rows]

    def container_names(self) -> dict[str, str]:
        """id -> name of every container (what a hosts file needs, without the rest)."""
        return dict(self.db.execute("SELECT id, name FROM containers").fetchall())

    def find_container(self, ident: str, prefix: bool = True) -> Container | None:
        row = self._find("containers", ident, prefix)
        return self._container(row) if row else None

    def container(self, ident: str) -> Container:
        c = self.find_container(ident)
        if c is None:
            raise NotFound(f"no such container: {ident!r}")
        return c

    def save_container(self, c: Container) -> None:
        d = c.model_dump()
        for f in _JSON_FIELDS:
            d[f] = json.dumps(d[f])
        self._insert("containers", d, replace=True)

    def remove_container(self, container_id: str) -> None:
        self.db.execute("DELETE FROM endpoints WHERE container_id = ?", (container_id,))
        self.db.execute("DELETE FROM containers WHERE id = ?", (container_id,))

    # images

    def images(self) -> list[Image]:
        return [Image(**dict(r)) for r in self.db.execute("SELECT * FROM images ORDER BY name, tag")]

    def find_image(self, ident: str) -> Image | None:
        """By id, unique id prefix, NAME:TAG, or NAME (tag `latest`), as klee names images."""
        name, _, tag = ident.partition(":")
        row = self.db.execute("SELECT * FROM images WHERE id = ? OR (name = ? AND tag = ?)",
                              (ident, name, tag or "latest")).fetchone()
        if row is None and ident:
            rows = self.db.execute("SELECT * FROM images WHERE substr(id, 1, ?) = ?", (len(ident), ident)).fetchall()
            row = rows[0] if len(rows) == 1 else None
        return Image(**dict(row)) if row else None

    def image(self, ident: str) -> Image:
        img = self.find_image(ident)
        if img is None:
            raise NotFound(f"no such image: {ident!r} (add it with 'kleenenet image add {ident} PATH')")
        return img

    def add_image(self, img: Image) -> None:
        self._insert("images", img.model_dump())

    def remove_image(self, image_id: str) -> None:
        self.db.execute("DELETE FROM images WHERE id = ?", (image_id,))

    # endpoints

    def endpoints(self, network_id: str | None = None, container_id: str | None = None,
                  network_ids: Iterable[str] | None = None) -> list[Endpoint]:
        """Endpoints in the order they were made; of one network, of several, of one container."""
        query, args = "SELECT * FROM endpoints WHERE 1", []
        if network_id is not None:
            query += " AND network_id = ?"
            args.append(network_id)
        if network_ids is not None:
            network_ids = list(network_ids)
            query += f" AND network_id IN ({', '.join('?' * len(network_ids))})"
            args += network_ids
        if container_id is not None:
            query += " AND container_id = ?"
            args.append(container_id)
        rows = self.db.execute(query + " ORDER BY rowid", args).fetchall()
        return [Endpoint(**dict(r)) for r in rows]

    def _is_taken(self, net: Network, column: str, reserved: set):
        def is_taken(addr) -> bool:
            return addr in reserved or self.db.execute(
                # `!= ''` lets SQLite use the partial unique index: one lookup, not a scan
                f"SELECT 1 FROM endpoints WHERE network_id = ? AND {column} = ? AND {column} != ''",
                (net.id, str(addr))
            ).fetchone() is not None
        return is_taken

    def _next_address(self, net: Network, subnet, pool, column: str, cursor: str, reserved: set):
        last = self.db.execute(f"SELECT {cursor} FROM networks WHERE id = ?", (net.id,)).fetchone()[0]

        def count_in_use() -> int:
            if pool is None:
                return len(reserved) + self.db.execute(
                    f"SELECT COUNT(*) FROM endpoints WHERE network_id = ? AND {column} != ''", (net.id,)).fetchone()[0]
            used = {ipaddress.ip_address(a) for (a,) in self.db.execute(
                f"SELECT {column} FROM endpoints WHERE network_id = ? AND {column} != ''", (net.id,))}
            return sum(1 for a in used | reserved if a in pool)
        addr = ipam.next_free(subnet, ipaddress.ip_address(last) if last else None,
                              self._is_taken(net, column, reserved), count_in_use, pool)
        self.db.execute(f"UPDATE networks SET {cursor} = ? WHERE id = ?", (str(addr), net.id))
        return addr

    def allocate_endpoint(self, net: Network, container_id: str, ip: str = AUTO, ip6: str = AUTO,
                          reserved: tuple[str, ...] = ()) -> Endpoint:
        """Insert an endpoint with addresses: AUTO = the next free one (none if the network lacks
        that family; inside its ip range when it has one), '' = none, else a static address that
        must be in the subnet and free. Never the gateway nor a `reserved` address (a custom
        network's interface's own)."""
        with self.write():
            if self.db.execute(
                "SELECT 1 FROM endpoints WHERE network_id = ? AND container_id = ?", (net.id, container_id)
            ).fetchone():
                raise Conflict(f"container is already connected to network {net.name!r}")
            addrs = []
            for want, subnet_text, pool_text, column, cursor, gateway, option in (
                (ip, net.subnet, net.ip_range, "ip_address", "last_ip", net.gateway, "--ip"),
                (ip6, net.subnet6, net.ip_range6, "ip_address6", "last_ip6", net.gateway6, "--ip6"),
            ):
                subnet = ipaddress.ip_network(subnet_text) if subnet_text else None
                taken = {ipaddress.ip_address(a) for a in (gateway, *reserved) if a}
                if want == "" or (want == AUTO and subnet is None):
                    addrs.append("")
                elif want == AUTO:
                    pool = ipaddress.ip_network(pool_text) if pool_text else None
                    addrs.append(str(self._next_address(net, subnet, pool, column, cursor, taken)))
                else:
                    addrs.append(str(ipam.claim(want, subnet, self._is_taken(net, column, taken), option)))
            ep = Endpoint(id=new_id(), network_id=net.id, container_id=container_id,
                          ip_address=addrs[0], ip_address6=addrs[1])
            self._insert("endpoints", ep.model_dump())
        return ep

    def set_epair(self, endpoint_id: str, epair: str | None) -> None:
        self.db.execute("UPDATE endpoints SET epair = ? WHERE id = ?", (epair, endpoint_id))

    def remove_endpoint(self, endpoint_id: str) -> None:
        self.db.execute("DELETE FROM endpoints WHERE id = ?", (endpoint_id,))
