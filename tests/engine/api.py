"""The Docker API over an engine's unix socket: enough to ping it and clear it out at stop,
with no SDK (the SDK client of a running engine is ``PrivateDockerd.client()``)."""
from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path

from .host import DockerdError

# What a request to an engine that is going away can raise (besides DockerdError).
TRANSPORT_ERRORS = (OSError, http.client.HTTPException)


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self._path)
        self.sock = s


def api(sock: Path, method: str, path: str, timeout: float = 10.0):
    """One request; the JSON body decoded (bytes if it is not JSON); DockerdError on 4xx/5xx."""
    conn = _UnixHTTPConnection(str(sock), timeout)
    try:
        conn.request(method, path, headers={"Host": "docker"})
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    if resp.status >= 400:
        raise DockerdError(f"{method} {path}: {resp.status} {body[:300].decode(errors='replace')}")
    return json.loads(body) if body and resp.getheader("Content-Type", "").startswith("application/json") else body


def ping(sock: Path, timeout: float = 1.0) -> bool:
    try:
        return api(sock, "GET", "/_ping", timeout) == b"OK"
    except (*TRANSPORT_ERRORS, DockerdError):
        return False
