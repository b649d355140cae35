import multiprocessing
import sqlite3

import pytest

from kleenenet.errors import Conflict, KleenenetError, NotFound
from kleenenet.model import AUTO, Container, Network
from kleenenet.store import MIGRATIONS, Store


def network(**kw):
    base = dict(id="a1b2c3d4e5f6", name="testnet", type="bridge", subnet="10.2.0.0/16", interface="kleene0",
                gateway="10.2.0.1", nat="eth0")
    return Network(**base | kw)


def container(cid, name=None):
    return Container(id=cid, name=name or f"c{cid}", cmd=["true"], network_driver="ipnet", created="now")


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path)
    yield s
    s.close()


def test_schema_is_versioned(store, tmp_path):
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    Store(tmp_path).close()  # opening again migrates nothing and keeps the data
    conn = sqlite3.connect(tmp_path / "kleenenet.db")
    conn.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    conn.commit()
    with pytest.raises(KleenenetError, match="newer than this kleenenet knows"):
        Store(tmp_path)


def test_lookup_by_name_id_and_prefix(store):
    with store.write():
        store.add_network(network())
        store.add_network(network(id="a1ffffffffff", name="other", interface="kleene1", subnet="10.3.0.0/16"))
    assert store.network("testnet").id == "a1b2c3d4e5f6"
    assert store.network("a1b2").name == "testnet"
    with pytest.raises(NotFound, match="network not found: 'a1'"):
        store.network("a1")  # ambiguous prefix
    assert [n.name for n in store.networks()] == ["other", "testnet"]
    assert store.find_network("a1b2", prefix=False) is None  # a new name may look like an id prefix


def test_a_failed_transaction_changes_nothing(store):
    with pytest.raises(RuntimeError):
        with store.write():
            store.add_network(network())
            raise RuntimeError("host step failed")
    assert store.networks() == []


def test_allocation_in_order_and_static(store):
    net = network()
    with store.write():
        store.add_network(net)
        for i in range(3):
            store.save_container(container(f"{i:012d}"))
    eps = [store.allocate_endpoint(net, f"{i:012d}") for i in range(2)]
    assert [e.ip_address for e in eps] == ["10.2.0.2", "10.2.0.3"]
    assert eps[0].ip_address6 == ""  # no IPv6 subnet: <auto> means none
    with pytest.raises(Conflict, match="already connected"):
        store.allocate_endpoint(net, f"{0:012d}")
    with pytest.raises(Conflict, match="10.2.0.3 is already in use"):
        store.allocate_endpoint(net, f"{2:012d}", ip="10.2.0.3")
    with pytest.raises(Conflict, match="10.2.0.1 is already in use"):  # the gateway
        store.allocate_endpoint(net, f"{2:012d}", ip="10.2.0.1")
    store.remove_endpoint(eps[0].id)
    # a freed address is handed out again only after the ring wraps around
    assert store.allocate_endpoint(net, f"{2:012d}").ip_address == "10.2.0.4"


def _allocate_many(state_dir, worker, count, queue):
    s = Store(state_dir)
    net = s.network("testnet")
    got = []
    for i in range(count):
        cid = f"{worker:04d}{i:08d}"
        with s.write():
            s.save_container(container(cid))
            got.append(s.allocate_endpoint(net, cid).ip_address)
    queue.put(got)


def test_parallel_processes_never_get_the_same_address(tmp_path):
    s = Store(tmp_path)
    with s.write():
        s.add_network(network(subnet="10.2.3.0/24", gateway="10.2.3.1"))
    s.close()
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    workers = [ctx.Process(target=_allocate_many, args=(tmp_path, w, 25, queue)) for w in range(8)]
    for w in workers:
        w.start()
    results = [queue.get(timeout=60) for _ in workers]
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0
    addresses = [a for r in results for a in r]
    assert len(addresses) == 200 and len(set(addresses)) == 200
    assert "10.2.3.1" not in addresses and "10.2.3.255" not in addresses


def test_a_store_busy_past_the_timeout_is_a_one_line_error(tmp_path, monkeypatch):
    Store(tmp_path).close()
    holder = sqlite3.connect(tmp_path / "kleenenet.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another kleenenet in the middle of a change
    monkeypatch.setattr("kleenenet.store.LOCK_TIMEOUT", 0.1)
    waiting = Store(tmp_path)
    with pytest.raises(KleenenetError, match="is busy .* try again") as e:
        with waiting.write():
            pass
    assert "\n" not in str(e.value)
    holder.execute("ROLLBACK")
    with waiting.write():  # free again
        pass


def test_allocation_looks_up_addresses_by_index(store):
    """Each lookup of an allocation is one index search, not a scan of the network's endpoints
    (the cost of an attach must not grow with the containers already there)."""
    net = Network(id="n1", name="n", type="bridge", subnet="10.0.0.0/16", subnet6="fd00::/64",
                  interface="kleene0", gateway="10.0.0.1", gateway6="fd00::1", nat="", icc=True, internal=False)
    store.add_network(net)
    statements = []
    for k in range(3):
        store.save_container(Container(id=f"c{k}", name=f"c{k}", cmd=["true"], network_driver="ipnet", created="now"))
        store.db.set_trace_callback(statements.append)
        store.allocate_endpoint(net, f"c{k}", ip="10.0.0.9" if k == 2 else AUTO)
        store.db.set_trace_callback(None)
    statements += ["SELECT * FROM endpoints WHERE container_id = 'c1'"]  # what attach and stop ask
    plans = [row[3] for sql in statements if sql.startswith("SELECT") and "endpoints" in sql
             and "COUNT" not in sql for row in store.db.execute(f"EXPLAIN QUERY PLAN {sql}")]
    assert plans and not [p for p in plans if "SCAN" in p or p.endswith("(network_id=?)")], plans
