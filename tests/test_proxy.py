"""The lab's TCP proxy: forwarding, latency, cut and heal, and a replica routed through it."""
from __future__ import annotations

import threading
import time

import psycopg2
import pytest

from lab import proxy
from lab.system import ports
from lab.errors import LabError

pytestmark = pytest.mark.integration


def _connect(cluster, port, timeout=3):
    p = cluster.primary._params()
    p["port"] = port
    conn = psycopg2.connect(**p, connect_timeout=timeout)
    conn.autocommit = True
    return conn


def _one(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
        return cur.fetchone()[0]


@pytest.mark.integration
def test_forwards_a_connection_and_counts_bytes(cluster):
    with proxy.Proxy("127.0.0.1", cluster.primary.port, owner=cluster.home.owner) as p:
        assert ports.read_claim(p.port)["lab_home"] == cluster.home.owner
        conn = _connect(cluster, p.port)
        try:
            assert _one(conn) == 1
        finally:
            conn.close()
        s = p.stats()
        assert s["connections"] == 1 and s["bytes_up"] > 0 and s["bytes_down"] > 0
        port = p.port
    assert ports.read_claim(port) is None
    assert not p.running


@pytest.mark.integration
def test_latency_is_added_each_way(cluster):
    with proxy.Proxy("127.0.0.1", cluster.primary.port, owner=cluster.home.owner, latency_ms=25) as p:
        conn = _connect(cluster, p.port)
        try:
            _one(conn)
            took = []
            for _ in range(3):
                t0 = time.perf_counter()
                _one(conn)
                took.append(time.perf_counter() - t0)
        finally:
            conn.close()
    # one round trip crosses the proxy twice: never less than 2 x 25 ms
    assert min(took) >= 0.050


@pytest.mark.integration
def test_cut_closes_and_refuses_then_heal_lets_through(cluster):
    with proxy.Proxy("127.0.0.1", cluster.primary.port, owner=cluster.home.owner) as p:
        conn = _connect(cluster, p.port)
        p.cut()
        assert p.is_cut
        with pytest.raises(psycopg2.OperationalError):
            _one(conn)
        conn.close()
        with pytest.raises(psycopg2.OperationalError):
            _connect(cluster, p.port)
        assert p.stats()["refused"] >= 1
        p.heal()
        conn = _connect(cluster, p.port)
        try:
            assert _one(conn) == 1
        finally:
            conn.close()


@pytest.mark.integration
def test_a_held_cut_delivers_after_heal(cluster):
    with proxy.Proxy("127.0.0.1", cluster.primary.port, owner=cluster.home.owner) as p:
        conn = _connect(cluster, p.port)
        try:
            p.cut(hold=True)
            got = []
            t = threading.Thread(target=lambda: got.append(_one(conn)))
            t.start()
            t.join(0.5)
            assert t.is_alive() and not got          # the query waits inside the partition
            p.heal()
            t.join(10)
            assert got == [1]
        finally:
            conn.close()


@pytest.mark.integration
def test_route_puts_a_replica_behind_the_proxy_and_unroute_puts_it_back(cluster):
    replica = cluster.node("replica1")
    try:
        link = proxy.route(cluster, "replica1", latency_ms=5)
        assert proxy.link(cluster, "replica1") is link
        port = link.proxy.port
        rcv = replica.sql("SELECT status, sender_port FROM pg_stat_wal_receiver", dbname="postgres").iloc[0]
        assert rcv["status"] == "streaming" and int(rcv["sender_port"]) == port
        assert proxy.route(cluster, "replica1", latency_ms=10) is link   # re-routing only sets the latency
        assert link.proxy.latency_ms == {"up": 10, "down": 10}
        cluster.primary.execute("INSERT INTO test_replication (mensaje) VALUES ('via proxy')")
        cluster.wait_replayed()
    finally:
        proxy.unroute(cluster, "replica1")
    assert proxy.link(cluster, "replica1") is None
    assert ports.read_claim(port) is None
    rcv = replica.sql("SELECT sender_port FROM pg_stat_wal_receiver", dbname="postgres").iloc[0]
    assert int(rcv["sender_port"]) == cluster.primary.port


@pytest.mark.integration
def test_route_refuses_the_primary_and_bad_latency(cluster):
    with pytest.raises(LabError, match="only a replica"):
        proxy.route(cluster, cluster.primary.name)
    with proxy.Proxy("127.0.0.1", cluster.primary.port, owner=cluster.home.owner) as p:
        with pytest.raises(LabError, match="latency_ms"):
            p.set_latency(-5)
        with pytest.raises(LabError, match="direction"):
            p.set_latency(5, direction="sideways")


@pytest.mark.integration
def test_unroute_all_repairs_a_replica_left_on_a_dead_port(cluster):
    replica = cluster.node("replica1")
    cluster.backend.retarget(replica.spec, "127.0.0.1", 1)   # as if a kernel died with its proxy
    proxy.unroute_all(cluster)
    rcv = replica.sql("SELECT status, sender_port FROM pg_stat_wal_receiver", dbname="postgres").iloc[0]
    assert rcv["status"] == "streaming" and int(rcv["sender_port"]) == cluster.primary.port


def test_a_port_in_use_on_the_listen_address_moves_the_proxy_to_another(monkeypatch):
    """The port claim checks 127.0.0.1; a proxy on another address whose port is taken there
    (simulated here on 127.0.0.1 itself) tries the next claimed port instead of failing."""
    import socket
    from lab.system import ports
    from lab.proxy import Proxy
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    taken = busy.getsockname()[1]
    real = ports.claim_free_ports
    calls = []

    def first_the_busy_port(n, owner):
        calls.append(n)
        return [taken] if len(calls) == 1 else real(n, owner)
    monkeypatch.setattr(ports, "claim_free_ports", first_the_busy_port)
    try:
        with Proxy("127.0.0.1", 9, owner="test-proxy-retry") as p:
            assert p.port != taken and len(calls) == 2
    finally:
        busy.close()
        ports.release_all("test-proxy-retry")
