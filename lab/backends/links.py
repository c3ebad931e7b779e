"""Links between a replica and its primary that the lab controls: a TCP proxy in between (added
latency and jitter, a cut and its healing, what went through it), and the replicas routed through
one, in this process.  Any backend routes a replica through a proxy with the same three of its
methods: ``proxy_address`` (where the proxy listens), ``retarget`` and ``primary_address``.

The student-facing side is ``lab.proxy`` (route, unroute, link); the local backend also cuts a
replica off through a proxy (``LocalBackend.cut``).
"""
from __future__ import annotations

import asyncio
import errno
import random
import threading
import time

import psycopg2

from ..i18n import _
from ..errors import LabError, NotRunning, Timeout
from ..system import ports
from .sql import query

_CHUNK = 64 * 1024


class _Conn:
    def __init__(self, client_w, server_w):
        self.writers = (client_w, server_w)
        self.opened = time.time()

    def abort(self):
        for w in self.writers:
            try:
                w.transport.abort()
            except Exception:
                pass


class Proxy:
    """Forward 127.0.0.1:``port`` to ``target_host:target_port``.  A context manager; ``close()``
    ends every connection and releases the port.

    >>> with lab.proxy.Proxy("127.0.0.1", cluster.primary.port, owner=cluster.home.owner) as p:  # doctest: +SKIP
    ...     p.set_latency(20, jitter_ms=5)
    """

    def __init__(self, target_host: str, target_port: int, *, owner: str, name: str = "proxy",
                 latency_ms: float = 0, jitter_ms: float = 0, listen: str = "127.0.0.1",
                 port: "int | None" = None):
        self.target = (target_host, int(target_port))
        self._fixed_port = port  # a port the caller has claimed already (the HA relay's); else one is claimed
        self.listen = listen
        self.owner = owner
        self.name = name
        self.port: "int | None" = None
        self._delay = {"up": 0.0, "down": 0.0}      # up: client -> server, down: server -> client
        self._jitter = {"up": 0.0, "down": 0.0}
        self.set_latency(latency_ms, jitter_ms)
        self._cut = False
        self._hold = False
        self._conns: set = set()
        self._stats = dict(connections=0, refused=0, failed_upstream=0, bytes_up=0, bytes_down=0)
        self._loop: "asyncio.AbstractEventLoop | None" = None
        self._thread: "threading.Thread | None" = None
        self._server = None
        self._healed: "asyncio.Event | None" = None
        self.start()

    def __repr__(self):
        state = "cut" if self._cut else "open"
        return (f"<Proxy {self.name} {self.listen}:{self.port} -> {self.target[0]}:{self.target[1]}, {state}, "
                f"latency {self._delay['up'] * 1000:g}+{self._delay['down'] * 1000:g} ms>")

    # --- lifecycle --------------------------------------------------------------------
    def start(self) -> "Proxy":
        """Listen on a claimed port.  The claim checks the port on 127.0.0.1; on another address
        (the compose network's gateway) it may still be taken there: then another port is tried."""
        for attempt in range(5):
            try:
                return self._start_once()
            except OSError as e:
                if e.errno != errno.EADDRINUSE or attempt == 4:
                    raise LabError(_("the proxy could not listen on {listen}: {error}; try again").format(
                        listen=self.listen, error=e)) from None

    def _start_once(self) -> "Proxy":
        if self._thread is not None:
            return self
        self.port = self._fixed_port or ports.claim_free_ports(1, self.owner)[0]
        ready = threading.Event()
        failure: list = []

        def main():
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                self._healed = asyncio.Event()
                self._healed.set()
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._handle, self.listen, self.port, reuse_address=True))
            except OSError as e:
                failure.append(e)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=main, name=f"lab-proxy-{self.name}", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure or not ready.is_set():
            self._thread.join(5)
            self._thread = None
            if not self._fixed_port:
                ports.release([self.port], self.owner)
            if failure and isinstance(failure[0], OSError) and failure[0].errno is not None:
                raise failure[0]  # start() tries another port if this one is in use
            raise LabError(_("the proxy could not listen on {listen}:{port}: {reason}; try again").format(
                listen=self.listen, port=self.port, reason=failure[0] if failure else _("no answer")))
        return self

    def close(self) -> None:
        """End every connection, stop listening and release the port (safe to call twice)."""
        if self._thread is None:
            return
        loop = self._loop

        async def shutdown():
            self._server.close()
            for c in list(self._conns):
                c.abort()
            self._healed.set()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(5)
        except Exception:
            pass
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(5)
        self._thread = None
        if not self._fixed_port:
            ports.release([self.port], self.owner)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # --- knobs ------------------------------------------------------------------------
    def set_latency(self, latency_ms: float = 0, jitter_ms: float = 0, direction: str = "both") -> "Proxy":
        """Delay every chunk by ``latency_ms`` ± up to ``jitter_ms`` (uniform) in ``direction``:
        ``up`` (replica -> primary), ``down`` (primary -> replica) or ``both``."""
        for v, what in ((latency_ms, "latency_ms"), (jitter_ms, "jitter_ms")):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 10_000:
                raise LabError(_("{what} is milliseconds from 0 to 10000, not {value!r}").format(what=what, value=v))
        if direction not in ("up", "down", "both"):
            raise LabError(_("direction is 'up', 'down' or 'both', not {direction!r}").format(direction=direction))
        for d in (("up", "down") if direction == "both" else (direction,)):
            self._delay[d] = latency_ms / 1000
            self._jitter[d] = jitter_ms / 1000
        return self

    @property
    def latency_ms(self) -> dict:
        return {d: self._delay[d] * 1000 for d in self._delay}

    @property
    def is_cut(self) -> bool:
        return self._cut

    def cut(self, hold: bool = False) -> "Proxy":
        """Cut the link: close every connection and refuse new ones; ``hold=True``: keep them open
        but pass no byte (a silent partition) until ``heal()``."""
        self._cut, self._hold = True, bool(hold)

        async def do():
            self._healed.clear()
            if not hold:
                for c in list(self._conns):
                    c.abort()

        asyncio.run_coroutine_threadsafe(do(), self._loop).result(5)
        return self

    def heal(self) -> "Proxy":
        """Let bytes through again (held connections resume where they stopped)."""
        self._cut, self._hold = False, False

        async def do():
            self._healed.set()

        asyncio.run_coroutine_threadsafe(do(), self._loop).result(5)
        return self

    def stats(self) -> dict:
        """Connections made, refused, open now; bytes each way; the link's state and latency."""
        return dict(self._stats, open=len(self._conns), state="cut" if self._cut else "open",
                    latency_up_ms=self._delay["up"] * 1000, latency_down_ms=self._delay["down"] * 1000,
                    jitter_ms=self._jitter["up"] * 1000, port=self.port)

    # --- forwarding -------------------------------------------------------------------
    async def _handle(self, client_r, client_w):
        if self._cut and not self._hold:
            self._stats["refused"] += 1
            client_w.transport.abort()
            return
        try:
            server_r, server_w = await asyncio.wait_for(asyncio.open_connection(*self.target), 5)
        except (OSError, asyncio.TimeoutError):
            self._stats["failed_upstream"] += 1
            client_w.transport.abort()
            return
        conn = _Conn(client_w, server_w)
        self._conns.add(conn)
        self._stats["connections"] += 1
        try:
            await asyncio.gather(self._pump(client_r, server_w, "up"), self._pump(server_r, client_w, "down"))
        except asyncio.CancelledError:  # close(): end quietly (asyncio logs a handler that raises)
            pass
        finally:
            self._conns.discard(conn)
            conn.abort()

    async def _pump(self, reader, writer, direction: str):
        queue: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()

        async def deliver():
            while True:
                at, data = await queue.get()
                if data is None:
                    break
                wait = at - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                await self._healed.wait()
                writer.write(data)
                await writer.drain()
                self._stats["bytes_" + direction] += len(data)
            try:
                writer.write_eof()
            except (OSError, RuntimeError, AttributeError):
                pass

        task = asyncio.ensure_future(deliver())
        last = 0.0
        try:
            while True:
                await self._healed.wait()
                try:
                    data = await reader.read(_CHUNK)
                except (ConnectionError, OSError):
                    data = b""
                if not data:
                    break
                delay = self._delay[direction]
                if self._jitter[direction]:
                    delay = max(0.0, delay + random.uniform(-1, 1) * self._jitter[direction])
                last = max(loop.time() + delay, last)  # in order: never overtake the previous chunk
                queue.put_nowait((last, data))
        finally:
            queue.put_nowait((0, None))
            try:
                await task
            except (ConnectionError, OSError):
                pass


# --- replicas through a proxy ------------------------------------------------------------------
class Link:
    """A replica streaming from the primary through a Proxy (``route`` makes one)."""

    def __init__(self, owner: str, replica: str, proxy: Proxy):
        self.owner = owner  # the lab home's mark (Backend.owner)
        self.replica = replica
        self.proxy = proxy

    def __repr__(self):
        return f"<Link {self.replica} -> primary through {self.proxy!r}>"

    def set_latency(self, latency_ms=0, jitter_ms=0, direction="both") -> "Link":
        self.proxy.set_latency(latency_ms, jitter_ms, direction)
        return self

    def cut(self, hold: bool = False) -> "Link":
        self.proxy.cut(hold)
        return self

    def heal(self) -> "Link":
        self.proxy.heal()
        return self


_links: dict = {}   # (lab home's mark, replica) -> Link, in this process


def link(owner: str, replica: str) -> "Link | None":
    """The running Link of ``replica`` of the lab home marked ``owner``, or None."""
    lk = _links.get((owner, replica))
    return lk if lk is not None and lk.proxy.running else None


def links(owner: "str | None" = None) -> list:
    """The running Links of this process (of one lab home if ``owner`` is given)."""
    return [lk for lk in _links.values() if lk.proxy.running and owner in (None, lk.owner)]


def route(backend, spec: dict, latency_ms: float = 0, jitter_ms: float = 0, timeout: float = 30) -> Link:
    """Put a proxy between the replica ``spec`` and the primary and wait until the replica streams
    through it (a replica routed already only gets the new latency)."""
    name = spec["name"]
    primary_port = backend.state["nodes"][backend.state["primary"]]["port"]
    lk = link(backend.owner, name)
    if lk is not None and lk.proxy.target[1] == primary_port:
        return lk.set_latency(latency_ms, jitter_ms)
    if lk is not None:  # the primary moved (failover): a new proxy towards the new one
        unroute(backend, spec)
    if not backend.pid(spec):
        raise NotRunning(_("{name} is stopped: start it with cluster.node({name!r}).start()").format(name=name))
    proxy = Proxy("127.0.0.1", primary_port, owner=backend.owner, name=name, latency_ms=latency_ms,
                  jitter_ms=jitter_ms, listen=backend.proxy_address())
    try:
        backend.retarget(spec, proxy.listen, proxy.port)
        _wait_through(backend, spec, proxy, timeout)
    except BaseException:
        backend.retarget(spec, *backend.primary_address())
        proxy.close()
        raise
    lk = Link(backend.owner, name, proxy)
    _links[(backend.owner, name)] = lk
    return lk


def unroute(backend, spec: dict, point_back: bool = True) -> "Link | None":
    """Close the replica's proxy (if it has one in this process) and, with ``point_back``, point the
    replica at the primary directly again; the Link it had."""
    lk = _links.pop((backend.owner, spec["name"]), None)
    if point_back:
        backend.retarget(spec, *backend.primary_address())
    if lk is not None:
        lk.proxy.close()
    return lk


def _wait_through(backend, spec: dict, proxy: Proxy, timeout: float) -> None:
    """Wait until the replica's WAL receiver is connected to the proxy's port and streaming."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            row = query(backend.state, spec, "SELECT status, sender_port FROM pg_stat_wal_receiver")
        except psycopg2.Error:
            row = None
        if row and row[0] == "streaming" and int(row[1] or 0) == proxy.port:
            return
        if time.monotonic() > deadline:
            raise Timeout(_("{node} does not stream through the proxy on port {port} after "
                            "{timeout:g} s: see cluster.node({node!r}).logs()").format(
                node=spec['name'], port=proxy.port, timeout=timeout))
        time.sleep(0.02)
